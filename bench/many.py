"""Scenario M: many small rooms (issue 21). One socket per user, spread round-robin over the
rooms; connect time, then what the server costs while every socket is idle (its CPU, Redis
commands/s, database transactions/s), then posts to random rooms from a random member of each,
with latency from the send to every member of the room (the author's own copy included: our
server and both peers echo a post to its author).
"""

import asyncio
import json
import random
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .loadgen import MARK, PAD, Target, percentile
from .servers import cpu_seconds, machine_busy_seconds, rss_kib


class RedisCounter:
    """Commands a redis-server has served, from INFO commandstats (its own INFO calls left out)."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)

    def calls(self) -> dict[str, int]:
        stats = self.client.info("commandstats")
        return {
            name.removeprefix("cmdstat_"): int(value["calls"])
            for name, value in stats.items()
            if name != "cmdstat_info"
        }

    def close(self) -> None:
        self.client.close()


class DatabaseCounter:
    """Transactions committed or rolled back in our PostgreSQL database (pg_stat_database).
    PostgreSQL flushes a backend's counters when it goes idle, at most once a second, so read it
    over windows of tens of seconds; this reader's own transactions are left out."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.connection = psycopg.connect(url, autocommit=True)
        self.reads = 0

    def transactions(self) -> int:
        self.reads += 1
        row = self.connection.execute(
            "SELECT pg_stat_force_next_flush(), xact_commit + xact_rollback"
            " FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        return int(row[1]) - self.reads

    def close(self) -> None:
        self.connection.close()


class ManyRooms:
    """`sockets` sockets over `urls` (socket i in room `room_of(i)`: i mod len(urls)), one user
    each."""

    def __init__(self, target: Target, urls: list[str]) -> None:
        self.target = target
        self.urls = urls
        self.members: list[list[int]] = [[] for _ in urls]
        self.sockets: list[ClientConnection] = []
        self.tasks: list[asyncio.Task] = []
        self.seen: list[set[int]] = []
        self.latencies: list[int] = []
        self.delivered = 0
        self.duplicates = 0
        self.closed = 0
        self.other_frames = 0
        self.last_frame = time.monotonic()
        # Told of every post: (room index, author index, when sent) (scenario N's inboxes).
        self.observers: list = []

    def room_of(self, index: int) -> int:
        return index % len(self.urls)

    async def _open(self, index: int) -> ClientConnection:
        headers = {"Origin": self.target.origin}
        if self.target.cookies:
            headers["Cookie"] = f"{self.target.cookie_name}={self.target.cookies[index]}"
        connection = await connect(
            self.urls[self.room_of(index)],
            additional_headers=headers,
            compression=None,
            proxy=None,
            open_timeout=60,
            ping_interval=None,
            max_size=2**22,
        )
        if self.target.ready_frame:
            first = await asyncio.wait_for(connection.recv(decode=False), 60)
            if not first.startswith(b'{"type":"ready"'):
                await connection.close()
                raise RuntimeError(f"expected ready, got {first[:200]!r}")
        return connection

    async def open(self, count: int, concurrency: int = 50) -> dict[str, Any]:
        gate = asyncio.Semaphore(concurrency)
        failures: list[str] = []
        handshakes: list[float] = []
        self.seen = [set() for _ in range(count)]

        async def one(index: int) -> ClientConnection:
            for attempt in range(4):
                async with gate:
                    started = time.monotonic()
                    try:
                        connection = await self._open(index)
                    except Exception as error:
                        failures.append(f"{type(error).__name__}: {error}"[:200])
                        await asyncio.sleep(0.2 * (attempt + 1))
                        continue
                    handshakes.append(time.monotonic() - started)
                    self.tasks.append(asyncio.create_task(self._read(index, connection)))
                    return connection
            raise RuntimeError(f"socket {index} could not connect: {failures[-1]}")

        started = time.monotonic()
        self.sockets = list(await asyncio.gather(*(one(i) for i in range(count))))
        seconds = time.monotonic() - started
        for index in range(count):
            self.members[self.room_of(index)].append(index)
        handshakes.sort()
        return {
            "sockets": count,
            "rooms": len(self.urls),
            "concurrency": concurrency,
            "seconds": round(seconds, 3),
            "handshake_p50_ms": round(percentile(handshakes, 50) * 1000, 1),
            "handshake_p99_ms": round(percentile(handshakes, 99) * 1000, 1),
            "failed_attempts": len(failures),
            "first_failure": failures[0] if failures else None,
        }

    async def _read(self, index: int, connection: ClientConnection) -> None:
        seen = self.seen[index]
        clock = time.monotonic_ns
        try:
            while True:
                data = await connection.recv(decode=False)
                now = clock()
                self.last_frame = time.monotonic()
                found = MARK.search(data)
                if found is None:
                    self.other_frames += 1
                    continue
                seq = int(found[1])
                if seq in seen:
                    self.duplicates += 1
                    continue
                seen.add(seq)
                self.delivered += 1
                self.latencies.append(now - int(found[2]))
        except ConnectionClosed:
            self.closed += 1

    def server_rss(self) -> int:
        return sum(rss_kib(pid) for pid in self.target.server_pids)

    def _cpu(self) -> dict[str, float]:
        result = {"machine": machine_busy_seconds(), "client": time.process_time()}
        for pid in self.target.server_pids + self.target.helper_pids:
            try:
                result[pid] = cpu_seconds(pid)
            except OSError:
                result[pid] = 0.0
        return result

    async def idle(
        self, seconds: float, redis: RedisCounter | None, database: DatabaseCounter | None
    ) -> dict[str, Any]:
        """What the servers cost while nobody says anything for `seconds`."""
        frames = self.other_frames
        calls = redis.calls() if redis else None
        xacts = database.transactions() if database else None
        cpu = self._cpu()
        started = time.monotonic()
        await asyncio.sleep(seconds)
        wall = time.monotonic() - started
        after = self._cpu()
        spent = {k: after[k] - cpu[k] for k in cpu}
        server = sum(spent[p] for p in self.target.server_pids)
        helpers = sum(spent[p] for p in self.target.helper_pids)
        other = max(0.0, spent["machine"] - sum(v for k, v in spent.items() if k != "machine"))
        result: dict[str, Any] = {
            "seconds": round(wall, 1),
            "server_cpu_percent": round(100 * server / wall, 2),
            "helper_cpu_percent": round(100 * helpers / wall, 2),
            "other_cpu_percent": round(100 * other / wall, 1),
            "frames": self.other_frames - frames,
        }
        if redis is not None:
            now = redis.calls()
            by_command = {k: v - calls.get(k, 0) for k, v in now.items() if v > calls.get(k, 0)}
            result["redis_commands_per_s"] = round(sum(by_command.values()) / wall, 1)
            result["redis_commands"] = dict(sorted(by_command.items(), key=lambda kv: -kv[1]))
        if database is not None:
            result["db_transactions_per_s"] = round((database.transactions() - xacts) / wall, 2)
        return result

    async def post(self, rate: float, duration: float, drain: float, seed: int = 21) -> dict:
        """Post `rate` messages/s for `duration` s, each to a random room from a random member
        (open loop), then wait up to `drain` s for every member of each room to have it."""
        rng = random.Random(seed)
        loop = asyncio.get_running_loop()
        count = max(1, round(rate * duration))
        self.latencies = []
        self.delivered = 0
        expected = 0
        posts: list[tuple[int, int]] = []  # (seq, room)
        start = loop.time()
        cpu = self._cpu()
        clock = time.monotonic_ns
        first = clock()
        for seq in range(count):
            delay = start + seq / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            room = rng.randrange(len(self.urls))
            members = self.members[room]
            author = rng.choice(members)
            sent = clock()
            body = f"[bench {seq} {sent}] {PAD}"
            for observer in self.observers:
                observer(room, author, sent)
            await self.sockets[author].send(
                json.dumps({"type": "post", "body": body, "client_id": f"m{seq}"})
            )
            posts.append((seq, room))
            expected += len(members)
        deadline = loop.time() + drain
        while self.delivered < expected and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        wall = (clock() - first) / 1e9
        after = self._cpu()
        server = sum(after[p] - cpu[p] for p in self.target.server_pids)
        missing = sum(
            1
            for seq, room in posts
            for member in self.members[room]
            if seq not in self.seen[member]
        )
        latencies = sorted(self.latencies)
        ms = 1e6
        return {
            "rate": rate,
            "sent": count,
            "expected": expected,
            "delivered": self.delivered,
            "lost": missing,
            "duplicates": self.duplicates,
            "p50_ms": round(percentile(latencies, 50) / ms, 2),
            "p99_ms": round(percentile(latencies, 99) / ms, 2),
            "max_ms": round(latencies[-1] / ms, 2) if latencies else None,
            "server_cpu_percent": round(100 * server / wall, 1),
        }

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for connection in self.sockets:
            connection.transport.abort()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def drive_many(
    target: Target,
    urls: list[str],
    *,
    sockets: int,
    idle: float,
    rate: float | None,
    duration: float,
    drain: float,
    redis_url: str | None,
    database_url: str | None,
    inbox_url: str | None = None,
) -> dict[str, Any]:
    """Connect, measure the idle cost, then post `rate` posts/s (no posting when None)."""
    load = ManyRooms(target, urls)
    redis = RedisCounter(redis_url) if redis_url else None
    database = DatabaseCounter(database_url) if database_url else None
    result: dict[str, Any] = {}
    inboxes = None
    try:
        rss_before = load.server_rss()
        result["connect"] = await load.open(sockets)
        if inbox_url is not None:
            from .inbox import Inboxes

            slugs = [url.rstrip("/").rsplit("/", 1)[-1] for url in urls]
            inboxes = Inboxes(target, inbox_url, slugs, load.members)
            result["inbox_connect"] = await inboxes.open(sockets)
            load.observers.append(inboxes.posted_to)
        # Let the connect's presence frames and the first upkeep pass go by, then measure idle.
        quiet_since = time.monotonic()
        while time.monotonic() - load.last_frame < 1.0 and time.monotonic() - quiet_since < 30:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        # Memory per socket: the servers' growth from before the first socket to now, over every
        # socket (the inbox sockets too, when there are some).
        rss_idle = load.server_rss()
        opened = sockets * (2 if inboxes is not None else 1)
        result["memory"] = {
            "rss_before_kib": rss_before,
            "rss_idle_kib": rss_idle,
            "kib_per_socket": round((rss_idle - rss_before) / opened, 1),
        }
        result["idle"] = await load.idle(idle, redis, database)
        if rate is not None:
            result["posts"] = await load.post(rate, duration, drain)
        if inboxes is not None:
            await inboxes.settle(drain)
            result["inbox"] = inboxes.result()
        result["sockets_closed_by_server"] = load.closed
    finally:
        if inboxes is not None:
            await inboxes.close()
        await load.close()
        if redis is not None:
            redis.close()
        if database is not None:
            database.close()
    return result
