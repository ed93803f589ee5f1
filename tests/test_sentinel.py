"""Redis that survives its host: a Sentinel failover mid-chat, and the channel layer on shards.

Debian's `redis-server` and `redis-sentinel` on loopback ports: a primary, a replica and three
sentinels (quorum 2); two daphne processes find the primary through the sentinels
(REDIS_SENTINELS, no REDIS_URL). The primary is killed (SIGKILL) in the middle of a chat.
"""

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
import redis
from channels.db import database_sync_to_async
from channels_redis.utils import _consistent_hash

from bench.servers import free_port, redis_command
from chat.models import Message
from chat.realtime.events import group_name
from tests.conftest import RedisServer, need
from tests.helpers import create_room, create_user, session_cookie_for
from tests.wsclient import Client, Poster, Resilient, read_until

pytestmark = pytest.mark.django_db(transaction=True)

MASTER = "mymaster"
TOTAL = 300  # posts, half from a user on each server process
WINDOW = 5  # posts in flight at once, per poster


def _wait(what: str, check, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


class SentinelSet:
    """A primary, a replica of it and three sentinels watching them, each on a free port."""

    def __init__(self) -> None:
        self.server = need("redis-server", "redis-server")
        self.sentinel = need("redis-sentinel", "redis-sentinel")
        self.dir = Path(tempfile.mkdtemp(prefix="chat-sentinel-"))
        self.primary_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.processes: dict[str, subprocess.Popen] = {}

    @property
    def sentinels_setting(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.dir / f"{name}.log", "wb")
        self.processes[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def start(self) -> None:
        for name, port, extra in (
            ("primary", self.primary_port, []),
            ("replica", self.replica_port, ["--replicaof", "127.0.0.1", str(self.primary_port)]),
        ):
            (self.dir / name).mkdir()
            self._spawn(name, [*redis_command(self.server, port, str(self.dir / name)), *extra])
        replica = redis.Redis(port=self.replica_port)
        _wait(
            "the replica's first sync",
            lambda: replica.info("replication")["master_link_status"] == "up",
        )
        replica.close()
        for index, port in enumerate(self.sentinel_ports):
            # A sentinel rewrites its config file (what it learns of peers and failovers).
            config = self.dir / f"sentinel-{index}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.primary_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 5000\n"
                f"sentinel parallel-syncs {MASTER} 1\n"
            )
            self._spawn(f"sentinel-{index}", [self.sentinel, str(config)])
        # Ready when every sentinel knows the other two and the replica (hello messages go out
        # every 2 s through the primary).
        for port in self.sentinel_ports:
            client = redis.Redis(port=port, decode_responses=True)
            _wait(
                f"sentinel {port} to see its peers and the replica",
                lambda client=client: (
                    (state := client.sentinel_master(MASTER))["num-other-sentinels"] == 2
                    and state["num-slaves"] == 1
                ),
            )
            client.close()

    def wait_for_promotion(self) -> None:
        """Until a sentinel names the replica as the primary."""
        clients = [redis.Redis(port=port, socket_timeout=1) for port in self.sentinel_ports]
        _wait(
            "the sentinels to promote the replica",
            lambda: any(
                int(client.sentinel_get_master_addr_by_name(MASTER)[1]) == self.replica_port
                for client in clients
            ),
        )
        for client in clients:
            client.close()

    def kill_primary(self) -> None:
        process = self.processes.pop("primary")
        process.kill()
        process.wait(10)

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def sentinels():
    ha = SentinelSet()
    try:
        ha.start()
        yield ha
    finally:
        ha.stop()


def test_every_redis_client_finds_the_primary_through_the_sentinels_and_after_a_failover(
    sentinels, settings
):
    from django.core.management import call_command

    from chat import redis_connections, throttle, views
    from chat.redis_connections import SharedRedisCache

    settings.REDIS_URL = ""
    settings.REDIS_SENTINELS = [("127.0.0.1", port) for port in sentinels.sentinel_ports]
    settings.REDIS_SENTINEL_MASTER = MASTER
    cache = SharedRedisCache(None, {})
    primary = redis.Redis(port=sentinels.primary_port)

    def every_use(key: str) -> None:
        assert throttle.hit(key, 5, 60) == 0  # the sync rate limits
        assert views.online_counts([1]) == {1: 0}  # the lobby
        assert views._channel_layer_ok()  # /healthz
        cache.set(key, "cached")
        assert cache.get(key) == "cached"
        call_command("wait_for_services", "--timeout", "5")

        async def shared_state() -> None:
            client = redis_connections.async_client()
            assert await client.exists(f"chat:limit:{key}")
            await client.aclose()

        asyncio.run(shared_state())

    every_use("before")
    assert primary.exists("chat:limit:before", ":1:before") == 2  # the keys are on the primary
    primary.close()
    sentinels.kill_primary()
    sentinels.wait_for_promotion()
    # The same (cached) clients find the new primary: a failed connection asks the sentinels
    # again. Calls fail while the failover completes (the sentinels report no healthy primary).
    _wait("the site's client to reach the new primary", lambda: throttle.hit("probe", 5, 60) == 0)
    every_use("after")
    assert redis.Redis(port=sentinels.replica_port).exists("chat:limit:after")


@database_sync_to_async
def setup_room():
    users = [create_user(name) for name in ("poster1", "poster2", "reader1", "reader2")]
    room = create_room("Failover", users[0])
    return room.slug, [session_cookie_for(user) for user in users]


@database_sync_to_async
def stored_posts(slug: str) -> list[tuple[int, str, str, datetime]]:
    return list(
        Message.objects.filter(room__slug=slug)
        .order_by("id")
        .values_list("id", "client_id", "body", "created")
    )


async def test_a_sentinel_failover_mid_chat_loses_no_acknowledged_message(
    daphne_factory, sentinels
):
    env = {
        "REDIS_URL": "",
        "REDIS_SENTINELS": sentinels.sentinels_setting,
        "REDIS_SENTINEL_MASTER": MASTER,
        "CHAT_RATE_LIMIT_POSTS": "100000",
        "CHAT_RESYNC_INTERVAL": "1",
    }
    one, two = daphne_factory(**env), daphne_factory(**env)
    slug, (poster1_cookie, poster2_cookie, reader1_cookie, reader2_cookie) = await setup_room()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 50
    half = TOTAL // 2
    posters = [
        Poster(
            Resilient(server.url, cookie, slug),
            {f"{tag}-{i}": f"{tag} post {i}" for i in range(half)},
            WINDOW,
        )
        for server, cookie, tag in ((one, poster1_cookie, "p1"), (two, poster2_cookie, "p2"))
    ]
    readers = [Resilient(one.url, reader1_cookie, slug), Resilient(two.url, reader2_cookie, slug)]
    failover: dict[str, float] = {}

    def acked() -> int:
        return sum(len(poster.acked) for poster in posters)

    async def kill_the_primary() -> None:
        while acked() < TOTAL // 3:  # noqa: ASYNC110 (polling counters the posters own)
            await asyncio.sleep(0.01)
        failover["acked"] = acked()
        failover["wall"] = time.time()
        failover["kill"] = loop.time()
        await asyncio.to_thread(sentinels.kill_primary)
        # The sentinels agree the primary is down (down-after 1 s) and promote the replica.
        await asyncio.to_thread(sentinels.wait_for_promotion)
        failover["promoted"] = loop.time() - failover["kill"]
        # The replica had the room's group memberships (replicated), unless they were written in
        # the last moments before the kill. Take the worst case: forget them, as a restart
        # would; the hubs' resync tick joins again and fills from the database.
        new_primary = redis.asyncio.Redis(port=sentinels.replica_port)
        groups = await new_primary.keys("asgi:group:*")
        failover["groups"] = len(groups)
        if groups:
            await new_primary.delete(*groups)
        await new_primary.aclose()

    async with asyncio.timeout(55):
        await asyncio.gather(
            *(poster.run(deadline) for poster in posters),
            *(read_until(reader, TOTAL, deadline) for reader in readers),
            kill_the_primary(),
        )

    assert failover["acked"] < TOTAL, "the primary died mid-chat"
    assert "promoted" in failover, "the sentinels promoted the replica"
    # Every acknowledged post stored exactly once; every post acknowledged in the end.
    stored = await stored_posts(slug)
    assert Counter(key for _, key, _, _ in stored) == Counter(
        key for poster in posters for key in poster.acked
    )
    assert sorted((key, body) for _, key, body, _ in stored) == sorted(
        item for poster in posters for item in poster.bodies.items()
    )
    # Every socket saw a gapless cursor stream (Resilient.take asserts cursor + 1 on each frame,
    # across reconnects with `since`): the readers hold exactly the database's messages, the
    # posters (who stop reading once their own posts are acknowledged) a beginning of them.
    expected = [(pk, body) for pk, _, body, _ in stored]
    for me in [*readers, *(poster.me for poster in posters)]:
        received = [(key, me.messages[key]["body"]) for key in sorted(me.messages)]
        assert received == expected[: len(received)]
        assert len(received) == TOTAL or me not in readers
    # Recovery: posts that had passed their rate-limit check before the kill may still be
    # stored in its first milliseconds; then nothing until the shared state and the channel
    # layer reach the new primary. The first post stored after that gap is the recovery.
    kill = failover["wall"]
    after = sorted(t for *_, created in stored if (t := created.timestamp()) > kill)
    first_after_gap = next(
        (t for previous, t in zip([kill, *after], after, strict=False) if t - previous > 0.3),
        after[0],
    )
    print(
        f"\nsentinel failover: primary killed after {failover['acked']}/{TOTAL} acked; replica "
        f"promoted {failover['promoted']:.1f} s after the kill; "
        f"{sum(1 for t in after if t < first_after_gap)} post(s) stored just after the kill; "
        f"first post stored after the failover {first_after_gap - kill:.1f} s after the kill; "
        f"{failover['groups']} channel-layer group(s) replicated to the new primary (deleted); "
        f"resends {sum(p.resends for p in posters)}, reader reconnects "
        f"{[r.reconnects for r in readers]}, poster reconnects "
        f"{[p.me.reconnects for p in posters]}; 0 lost, 0 duplicated, no gap"
    )


# --- the channel layer over two Redis servers (CHANNEL_LAYER_URLS) ------------------------------


def _exists(port: int, key: str) -> bool:
    client = redis.Redis(port=port)
    try:
        return bool(client.exists(key))
    finally:
        client.close()


@database_sync_to_async
def rooms_on_both_shards(owner_name: str, guest_name: str):
    """Two rooms whose groups channels-redis hashes onto different shards (as it would place
    them: crc32 of the group name over the ring of hosts), and the two users' cookies."""
    owner, guest = create_user(owner_name), create_user(guest_name)
    by_shard: dict[int, str] = {}
    for n in range(20):
        room = create_room(f"Sharded {n}", owner)
        by_shard.setdefault(_consistent_hash(group_name(room.pk), 2), room)
        if len(by_shard) == 2:
            break
    return (
        [(shard, room.slug, group_name(room.pk)) for shard, room in sorted(by_shard.items())],
        session_cookie_for(owner),
        session_cookie_for(guest),
    )


async def test_two_redis_shards_carry_a_chat_between_two_server_processes(daphne_factory):
    shards = [RedisServer(), RedisServer()]
    for shard in shards:
        shard.start()
    try:
        urls = ",".join(shard.url for shard in shards)
        one = daphne_factory(CHANNEL_LAYER_URLS=urls)
        two = daphne_factory(CHANNEL_LAYER_URLS=urls)
        rooms, alice_cookie, bob_cookie = await rooms_on_both_shards("alice", "bob")
        assert [shard for shard, _, _ in rooms] == [0, 1]
        for home, slug, group in rooms:
            alice = await Client.open(one.url, alice_cookie, slug)
            bob = await Client.open(two.url, bob_cookie, slug)
            for n in range(6):
                sender = (alice, bob)[n % 2]
                await sender.send({"type": "post", "body": f"hello {n}", "client_id": f"c{n}"})
                for client in (alice, bob):
                    frame = await client.receive_type("message")
                    assert frame["message"]["body"] == f"hello {n}"
                    assert frame["cursor"] == n + 1
            # The room's group (both processes' hubs are members) lives on its shard only.
            held = [_exists(shard.port, f"asgi:group:{group}") for shard in shards]
            assert held == [index == home for index in range(2)], (group, held)
            await alice.close()
            await bob.close()
    finally:
        for shard in shards:
            shard.stop()
            shutil.rmtree(shard.dir, ignore_errors=True)
