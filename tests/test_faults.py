"""Delivery across real processes under stress and faults: the database is the record.

Two daphne processes, several writers, a reader that stalls, Redis restarted under open sockets,
and a soak run through a Redis restart and a killed server.
"""

import asyncio
import itertools
import time

import pytest
from channels.db import database_sync_to_async

from chat.models import Message
from tests.helpers import create_room, create_user, session_cookie_for
from tests.wsclient import Client

pytestmark = pytest.mark.django_db(transaction=True)

FAST = {"CHAT_RATE_LIMIT_POSTS": "100000", "CHAT_RESYNC_INTERVAL": "1"}


@database_sync_to_async
def make_people(*names: str):
    users = [create_user(name) for name in names]
    room = create_room("Stress", users[0])
    return room.slug, [session_cookie_for(user) for user in users]


@database_sync_to_async
def stored_bodies() -> list[str]:
    return list(Message.objects.order_by("id").values_list("body", flat=True))


def assert_contiguous(frames: list[dict], start: int, count: int) -> None:
    cursors = [f["cursor"] for f in frames]
    assert cursors == list(range(start + 1, start + count + 1)), cursors[:20]


async def collect(client: Client, count: int, timeout: float = 60) -> list[dict]:
    frames = []
    while len(frames) < count:
        frames.append(await client.receive_type("message", timeout=timeout))
    return frames


async def post_until_stored(client: Client, body: str, client_id: str) -> dict:
    """Post, retrying while the server answers `unavailable`; the frame that acknowledges it."""
    await client.send({"type": "post", "body": body, "client_id": client_id})
    while True:
        frame = await client.receive_type("message", "ack", "error", timeout=15)
        if frame["type"] == "error" and frame["ref"] == client_id:
            assert frame["code"] == "unavailable", frame
            await asyncio.sleep(frame["retry_after"])
            await client.send({"type": "post", "body": body, "client_id": client_id})
        elif frame.get("client_id") == client_id:
            return frame


async def test_concurrent_writers_on_two_processes_give_every_reader_a_gapless_stream(
    daphne_factory,
):
    # A tiny layer capacity makes Redis drop doorbells, as it does for slow readers.
    one = daphne_factory(CHANNEL_LAYER_CAPACITY="5", **FAST)
    two = daphne_factory(CHANNEL_LAYER_CAPACITY="5", **FAST)
    names = ["r1", "r2", "stall", "w1", "w2", "w3", "w4"]
    slug, cookies = await make_people(*names)
    cookie = dict(zip(names, cookies, strict=True))

    r1 = await Client.open(one.url, cookie["r1"], slug)
    r2 = await Client.open(two.url, cookie["r2"], slug)
    stall = await Client.open(two.url, cookie["stall"], slug)
    writers = [
        await Client.open(server.url, cookie[name], slug)
        for server, name in zip(itertools.cycle([one, two]), ["w1", "w2", "w3", "w4"])
    ]
    per_writer = 60
    total = per_writer * len(writers)

    async def write(client: Client, name: str) -> None:
        for i in range(per_writer):
            await client.send({"type": "post", "body": f"{name}-{i}", "client_id": f"{name}-{i}"})
        own = 0
        while own < per_writer:
            frame = await client.receive_type("message", timeout=60)
            own += frame["client_id"] is not None and frame["client_id"].startswith(name)

    # `stall` reads nothing while the writers run: its frames wait for it.
    results = await asyncio.gather(
        collect(r1, total),
        collect(r2, total),
        *(
            write(client, name)
            for client, name in zip(writers, ["w1", "w2", "w3", "w4"], strict=True)
        ),
    )
    for frames in results[:2]:
        assert_contiguous(frames, 0, total)
        assert len({f["message"]["id"] for f in frames}) == total
    stalled = await collect(stall, total)
    assert_contiguous(stalled, 0, total)
    assert len(await stored_bodies()) == total
    for client in [r1, r2, stall, *writers]:
        await client.close()


async def test_sockets_open_through_a_redis_restart_hear_new_messages(daphne_factory, redis_server):
    one = daphne_factory(**FAST)
    two = daphne_factory(**FAST)
    slug, (alice_cookie, bob_cookie) = await make_people("alice", "bob")
    alice = await Client.open(one.url, alice_cookie, slug)
    bob = await Client.open(two.url, bob_cookie, slug)
    await alice.send({"type": "post", "body": "before"})
    assert (await bob.receive_type("message"))["cursor"] == 1

    redis_server.restart()  # every group membership is gone

    await asyncio.sleep(0.5)
    sent_at = time.monotonic()
    for i in range(5):
        await post_until_stored(alice, f"after {i}", f"after-{i}")
    frames = await collect(bob, 5, timeout=15)
    assert time.monotonic() - sent_at < 15
    assert_contiguous(frames, 1, 5)
    assert [f["message"]["body"] for f in frames] == [f"after {i}" for i in range(5)]
    # And the doorbell works again, not only the resync: a post now arrives quickly.
    await asyncio.sleep(2.5)
    started = time.monotonic()
    await alice.send({"type": "post", "body": "quick"})
    assert (await bob.receive_type("message"))["message"]["body"] == "quick"
    assert time.monotonic() - started < 0.9
    await alice.close()
    await bob.close()


async def test_while_redis_is_down_posts_get_a_clear_error_and_nothing_is_stored(
    daphne_factory, redis_server
):
    server = daphne_factory(**FAST)
    slug, (alice_cookie, bob_cookie) = await make_people("alice", "bob")
    alice = await Client.open(server.url, alice_cookie, slug)
    bob = await Client.open(server.url, bob_cookie, slug)

    redis_server.stop()
    try:
        await alice.send({"type": "post", "body": "into the void", "client_id": "v-1"})
        error = await alice.receive_type("error", timeout=15)
        assert (error["code"], error["ref"]) == ("unavailable", "v-1")
        assert error["retry_after"] > 0
        assert await stored_bodies() == []
        # The server stays up: pages and health answer, the health check names Redis.
        import urllib.error
        import urllib.request

        with pytest.raises(urllib.error.HTTPError) as unhealthy:
            await asyncio.to_thread(urllib.request.urlopen, f"{server.url}/healthz", timeout=10)
        assert unhealthy.value.code == 503
        assert b'"channel_layer": "unavailable"' in unhealthy.value.read()
    finally:
        redis_server.start()

    await post_until_stored(alice, "back again", "v-2")
    frame = await bob.receive_type("message", timeout=15)
    assert (frame["cursor"], frame["message"]["body"]) == (1, "back again")
    await alice.close()
    await bob.close()
