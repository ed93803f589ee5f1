"""Floods, oversized frames and slow readers against a real daphne process."""

import asyncio
import json
import time

import pytest
from channels.db import database_sync_to_async
from websockets.exceptions import ConnectionClosed

from chat.models import Message
from tests.helpers import create_room, create_user, session_cookie_for
from tests.wsclient import Client

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def people(*names: str):
    users = [create_user(name) for name in names]
    room = create_room("Abuse", users[0])
    return room.slug, {
        name: session_cookie_for(user) for name, user in zip(names, users, strict=True)
    }


@database_sync_to_async
def stored_by(username: str) -> int:
    return Message.objects.filter(author__username=username).count()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def test_a_flood_is_rate_limited_and_others_keep_flowing(daphne_factory):
    server = daphne_factory()
    slug, cookies = await people("flooder", "calm", "watcher")
    flood = [await Client.open(server.url, cookies["flooder"], slug) for _ in range(2)]
    calm = await Client.open(server.url, cookies["calm"], slug)
    watcher = await Client.open(server.url, cookies["watcher"], slug)
    loop = asyncio.get_running_loop()
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    answers = {"stored": 0, "rate_limited": 0}

    flood_time = {}

    async def flooder() -> None:
        start = loop.time()
        for i in range(300):  # 300 posts in 10 s over two sockets
            await flood[i % 2].send({"type": "post", "body": f"spam {i}", "client_id": f"s{i}"})
            await asyncio.sleep(10 / 300)
        flood_time["seconds"] = loop.time() - start

    async def read_flood(client: Client) -> None:
        try:
            while True:
                frame = await client.receive(timeout=3)
                if frame["type"] == "error":
                    assert frame["code"] == "rate_limited" and frame["retry_after"] > 0, frame
                    answers["rate_limited"] += 1
                elif frame["type"] == "message" and frame["message"]["author"] == "flooder":
                    if (frame["client_id"] or "").startswith("s") and client is flood[0]:
                        answers["stored"] += 1
        except TimeoutError:
            return

    async def calm_talker() -> None:
        for i in range(20):  # within the limit: 2 a second
            key = f"c{i}"
            sent_at[key] = loop.time()
            await calm.send({"type": "post", "body": f"calm {i}", "client_id": key})
            await asyncio.sleep(0.5)

    async def watch() -> None:
        while len(latencies) < 20:
            frame = await watcher.receive(timeout=10)
            if frame["type"] == "message" and frame["client_id"] in sent_at:
                latencies.append(loop.time() - sent_at[frame["client_id"]])

    started = time.monotonic()
    await asyncio.gather(flooder(), calm_talker(), watch(), *(read_flood(c) for c in flood))
    elapsed = time.monotonic() - started

    stored = await stored_by("flooder")
    # 10 posts per 5 s (sliding): what gets through is bounded by the windows the flood spans.
    allowed = 10 * (int(flood_time["seconds"] // 5) + 1)
    assert 10 <= stored <= allowed, (stored, flood_time)
    assert answers["stored"] == stored
    assert answers["rate_limited"] == 300 - stored
    assert await stored_by("calm") == 20
    p99 = percentile(latencies, 0.99)
    print(
        f"\nflood: {stored} of 300 stored, {answers['rate_limited']} rate_limited in "
        f"{elapsed:.1f} s; calm user's latency p50 {percentile(latencies, 0.5) * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms"
    )
    assert p99 < 0.25


async def test_oversized_frames_are_refused_and_memory_stays_flat(daphne_factory):
    server = daphne_factory()
    slug, cookies = await people("big")
    before = rss_kib(server.process.pid)
    # One 10 MB frame: past daphne's message limit (2 MiB), the socket is closed (1009).
    client = await Client.open(server.url, cookies["big"], slug)
    try:
        await asyncio.wait_for(client.connection.send("x" * 10_000_000), 10)
    except ConnectionClosed:
        pass
    await asyncio.wait_for(client.connection.wait_closed(), 10)
    assert client.connection.close_code in (1009, 1006), client.connection.close_code
    # Twenty 1 MB frames: each answered `too_long` (over 64 KiB), the socket stays open.
    client = await Client.open(server.url, cookies["big"], slug)
    for _ in range(20):
        await client.connection.send(json.dumps({"type": "post", "body": "y" * 1_000_000}))
        assert (await client.receive_type("error", timeout=10))["code"] == "too_long"
    await client.close()
    await asyncio.sleep(1)
    grown = rss_kib(server.process.pid) - before
    print(f"\noversized frames: server RSS grew {grown} KiB")
    assert grown < 20 * 1024
    assert await stored_by("big") == 0


async def test_a_slow_reader_costs_others_nothing_and_misses_nothing(daphne_factory):
    from tests.wsclient import Resilient

    server = daphne_factory(CHAT_RATE_LIMIT_POSTS="100000")
    slug, cookies = await people("sender", "reader", "sloth")
    sender = await Client.open(server.url, cookies["sender"], slug)
    reader = await Client.open(server.url, cookies["reader"], slug)
    sloth = Resilient(server.url, cookies["sloth"], slug)
    deadline = asyncio.get_running_loop().time() + 150
    await sloth.connect(deadline)  # ... and then does not read for a minute
    before = rss_kib(server.process.pid)
    loop = asyncio.get_running_loop()
    total, pause = 500, 60.0
    sent_at: dict[str, float] = {}
    latencies: list[float] = []

    async def send() -> None:
        for i in range(total):
            sent_at[f"k{i}"] = loop.time()
            await sender.send({"type": "post", "body": f"n{i} " + "z" * 200, "client_id": f"k{i}"})
            await asyncio.sleep((pause - 5) / total)

    async def read() -> None:
        while len(latencies) < total:
            frame = await reader.receive(timeout=20)
            if frame["type"] == "message" and frame["client_id"] in sent_at:
                latencies.append(loop.time() - sent_at[frame["client_id"]])

    async def drain_sender() -> None:  # the sender reads its own echoes, as any client does
        try:
            while True:
                await sender.receive(timeout=pause + 30)
        except (TimeoutError, ConnectionClosed):
            return

    started = loop.time()
    draining = asyncio.create_task(drain_sender())
    await asyncio.gather(send(), read())
    await asyncio.sleep(max(0.0, pause - (loop.time() - started)))
    grown = rss_kib(server.process.pid) - before
    draining.cancel()

    # The sloth reads again: every change, in order (from its buffer, or the database after a
    # reconnect with `since` if the server gave up on it).
    bodies: set[str] = set()
    while len(bodies) < total:
        try:
            frame = await sloth.client.receive(timeout=20)
        except ConnectionClosed:
            await sloth.connect(deadline)
            bodies.update(m["body"].split()[0] for m in sloth.messages.values())
            continue
        sloth.take(frame)
        if frame["type"] == "message":
            bodies.add(frame["message"]["body"].split()[0])
    p99 = percentile(latencies, 0.99)
    print(
        f"\nslow reader: others' p99 {p99 * 1000:.0f} ms over {total} messages; server RSS grew "
        f"{grown} KiB while one socket did not read for {pause:.0f} s; it then got all "
        f"{len(bodies)} (reconnects: {sloth.reconnects})"
    )
    assert bodies == {f"n{i}" for i in range(total)}
    assert p99 < 0.25
    assert grown < 20 * 1024
