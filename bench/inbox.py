"""Scenario N: the inbox (issue 16). Scenario M's users, each with an inbox socket (PROTOCOL.md
§5) beside their room socket: what an idle inbox costs in server memory, and how long after a
post each other member's inbox shows it (a `room` frame whose `unread` has counted it).

The bench never moves a read marker, so a member's unread count in a room only grows: the post
that made it reach N is known, and the first `room` frame with `unread` ≥ N is that post's
arrival (a coalesced frame counts every post it covers, each with its own latency).
"""

import asyncio
import json
import time
from collections import defaultdict, deque
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .loadgen import Target, percentile
from .servers import rss_kib


class Inboxes:
    """One inbox socket per user 0..count-1; `members[r]` are room r's users, `slugs[r]` its
    slug (as ManyRooms spreads them)."""

    def __init__(self, target: Target, url: str, slugs: list[str], members: list[list[int]]):
        self.target, self.url, self.slugs, self.members = target, url, slugs, members
        self.sockets: list[ClientConnection] = []
        self.tasks: list[asyncio.Task] = []
        # Per (user, slug): unread when the inbox opened, posts by others since, and the posts
        # still waiting for a frame: (unread that shows it, when it was sent).
        self.unread: dict[tuple[int, str], int] = {}
        self.posted: dict[tuple[int, str], int] = defaultdict(int)
        self.waiting: dict[tuple[int, str], deque] = defaultdict(deque)
        self.latencies: list[int] = []
        self.frames = 0
        self.notify = 0

    def rss(self) -> int:
        return sum(rss_kib(pid) for pid in self.target.server_pids)

    async def open(self, count: int, concurrency: int = 50) -> dict[str, Any]:
        gate = asyncio.Semaphore(concurrency)

        async def one(index: int) -> ClientConnection:
            async with gate:
                connection = await connect(
                    self.url,
                    additional_headers={
                        "Origin": self.target.origin,
                        "Cookie": f"{self.target.cookie_name}={self.target.cookies[index]}",
                    },
                    compression=None,
                    proxy=None,
                    open_timeout=60,
                    ping_interval=None,
                )
                first = json.loads(await asyncio.wait_for(connection.recv(), 60))
                if first.get("type") != "inbox":
                    raise RuntimeError(f"expected inbox, got {str(first)[:200]}")
                for summary in first["rooms"]:
                    self.unread[(index, summary["slug"])] = summary["unread"]
                self.tasks.append(asyncio.create_task(self._read(index, connection)))
                return connection

        before = self.rss()
        started = time.monotonic()
        self.sockets = list(await asyncio.gather(*(one(i) for i in range(count))))
        seconds = time.monotonic() - started
        await asyncio.sleep(2)  # let the server settle before reading its memory
        grown = self.rss() - before
        return {
            "sockets": count,
            "seconds": round(seconds, 2),
            "server_rss_growth_kib": grown,
            "kib_per_inbox": round(grown / count, 2),
        }

    def posted_to(self, room: int, author: int, sent_ns: int) -> None:
        """ManyRooms.post's observer: every member but the author will count it as unread."""
        slug = self.slugs[room]
        for member in self.members[room]:
            if member == author or member >= len(self.sockets):
                continue
            key = (member, slug)
            self.posted[key] += 1
            self.waiting[key].append((self.unread.get(key, 0) + self.posted[key], sent_ns))

    async def _read(self, index: int, connection: ClientConnection) -> None:
        clock = time.monotonic_ns
        try:
            while True:
                frame = json.loads(await connection.recv())
                now = clock()
                kind = frame.get("type")
                if kind == "notify":
                    self.notify += 1
                if kind != "room":
                    continue
                self.frames += 1
                waiting = self.waiting.get((index, frame["room"]["slug"]))
                unread = frame["room"]["unread"]
                while waiting and waiting[0][0] <= unread:
                    self.latencies.append(now - waiting.popleft()[1])
        except ConnectionClosed:
            pass

    async def settle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(self.waiting.values()) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    def result(self) -> dict[str, Any]:
        latencies = sorted(self.latencies)
        ms = 1e6
        return {
            "room_frames": self.frames,
            "notify_frames": self.notify,
            "shown": len(latencies),
            "never_shown": sum(len(waiting) for waiting in self.waiting.values()),
            "p50_ms": round(percentile(latencies, 50) / ms, 2),
            "p99_ms": round(percentile(latencies, 99) / ms, 2),
            "max_ms": round(latencies[-1] / ms, 2) if latencies else None,
        }

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for connection in self.sockets:
            connection.transport.abort()
        await asyncio.gather(*self.tasks, return_exceptions=True)
