"""Scenario S: a reconnect storm (issue 21). Scenario M's sockets (one user each over many small
rooms) plus one chat room whose members keep posting; once every socket is connected and idle,
our server process is killed (SIGKILL) and started again on the same port.

Every socket then does what the page does (chat/static/chat/room.js): reconnect with exponential
backoff from 0.5 s, capped at 10 s, with jitter (a wait between half the ceiling and the
ceiling), handing back `?since=<the highest cursor it saw>`, and must get `ready` with
`reset: false` and the changes it missed. A poster keeps its unacknowledged posts, as the page
does, and sends them again with the same `client_id` after every reconnect (the server answers a
repeat with `ack`, creating nothing); posts made while its socket is down wait for the reconnect.

Checked on every socket: cursors contiguous (each `message` frame's cursor is one past the last
it saw; a resume's `ready` brings exactly the changes in between), every acknowledged post
received exactly once, live or in a resume's `ready`. Only our server resumes with `since`: the
tutorial consumer and the raw server keep no history, so the scenario is ours only.
"""

import asyncio
import json
import random
import re
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .loadgen import MARK, PAD, Target, percentile
from .many import ManyRooms
from .servers import Ours, cpu_seconds, listen_overflows

FATAL_CLOSES = {4401, 4403, 4404}  # the page stops reconnecting after these


class Storm(ManyRooms):
    """`sockets` sockets over the small rooms `urls[:-1]` (as ManyRooms spreads them), then
    `chatters` more in the chat room `urls[-1]`, all reconnecting like the page."""

    def __init__(self, target: Target, urls: list[str], sockets: int, seed: int = 21) -> None:
        super().__init__(target, urls)
        self.small = sockets
        self.rng = random.Random(seed)
        self.live: dict[int, ClientConnection] = {}
        self.cursor: dict[int, int] = {}
        self.stopping = False
        self.killed_at: float | None = None  # monotonic time of the kill
        self.down: set[int] = set()  # sockets closed by the kill and not yet resumed
        self.resumed_at: dict[int, float] = {}
        self.resets = 0  # a resume answered with `reset: true` (the cursor was not servable)
        self.fatal: dict[int, int] = {}  # socket → close code that ended its reconnecting
        self.failed: list[str] = []  # reconnection attempts that did not reach `ready`
        self.gaps = 0  # changes a socket never got (a cursor skipped)
        self.repeats = 0  # changes a socket got twice (a cursor not past the last one)
        self.replayed = 0  # deliveries that came in a resume's `ready`
        self.errors: dict[str, int] = {}
        self.sending: set[asyncio.Task] = set()
        # The chat: per poster, its posts not yet acknowledged (client_id → (seq, frame)), in
        # order; when each post first went onto a socket; which were acknowledged.
        self.outbox: dict[int, dict[str, tuple[int, str]]] = {}
        self.wire: dict[int, int] = {}  # seq → monotonic_ns of its first send
        self.acked: set[int] = set()
        self.deduped = 0  # repeats answered with `ack`: stored before the kill, echo lost
        # Posts sent again after a reconnect: sent before (to the dying server, or to a socket
        # already dead but not yet seen closed) and not acknowledged.
        self.resent = 0
        self.queued = 0  # posts made while their poster's socket was down
        self.live_latency: list[tuple[int, int]] = []  # (first send ns, latency ns)

    def room_of(self, index: int) -> int:
        return index % (len(self.urls) - 1) if index < self.small else len(self.urls) - 1

    # --- connecting, as the page does -----------------------------------------------------

    async def _open(self, index: int) -> ClientConnection:
        headers = {"Origin": self.target.origin}
        headers["Cookie"] = f"{self.target.cookie_name}={self.target.cookies[index]}"
        url = self.urls[self.room_of(index)]
        since = self.cursor.get(index)
        if since is not None:
            url += f"?since={since}"
        connection = await connect(
            url,
            additional_headers=headers,
            compression=None,
            proxy=None,
            open_timeout=30,
            ping_interval=None,
            max_size=2**22,
        )
        try:
            ready = json.loads(await asyncio.wait_for(connection.recv(), 30))
        except BaseException:
            connection.transport.abort()
            raise
        if ready.get("type") != "ready":
            connection.transport.abort()
            raise RuntimeError(f"expected ready, got {str(ready)[:200]}")
        self.live[index] = connection
        self._ready(index, since, ready)
        return connection

    def _ready(self, index: int, since: int | None, ready: dict) -> None:
        messages = ready["messages"]
        if since is not None:
            if ready["reset"]:
                self.resets += 1
            else:
                # Bench rooms only ever get new posts: one change, one message.
                missing = ready["cursor"] - since - len(messages)
                self.gaps += max(0, missing)
                self.repeats += max(0, -missing)
            seen = self.seen[index]
            for message in messages:
                found = MARK.search(message["body"].encode())
                if found is None:
                    continue
                seq = int(found[1])
                if seq in seen:
                    self.duplicates += 1
                else:
                    seen.add(seq)
                    self.replayed += 1
            if index in self.down:
                self.down.discard(index)
                self.resumed_at[index] = time.monotonic()
        self.cursor[index] = ready["cursor"]
        outbox = self.outbox.get(index)
        if outbox:  # the page sends its pending posts again once `ready` has come
            for seq, frame in list(outbox.values()):
                if seq in self.wire:
                    self.resent += 1
                else:
                    self.queued += 1
                    self.wire[seq] = time.monotonic_ns()
                self._send_soon(index, frame)

    def _send_soon(self, index: int, frame: str, delay: float = 0.0) -> None:
        async def send() -> None:
            await asyncio.sleep(delay)
            await self._send(index, frame)

        task = asyncio.create_task(send())
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    async def _send(self, index: int, frame: str) -> None:
        connection = self.live.get(index)
        if connection is None:
            return
        try:
            await connection.send(frame)
        except ConnectionClosed:
            pass  # still in the outbox: sent again after the reconnect

    async def _reconnect(self, index: int) -> ClientConnection | None:
        attempts = 0
        while not self.stopping:
            attempts += 1
            ceiling = min(10.0, 0.5 * 2 ** min(attempts - 1, 10))
            await asyncio.sleep(ceiling / 2 + self.rng.random() * ceiling / 2)
            try:
                return await self._open(index)
            except ConnectionClosed as error:
                code = error.rcvd.code if error.rcvd else None
                self.failed.append(f"closed {code}")
                if code in FATAL_CLOSES:
                    self.fatal[index] = code
                    return None
            except Exception as error:
                self.failed.append(f"{type(error).__name__}: {error}"[:200])
        return None

    # --- reading ----------------------------------------------------------------------------

    async def _read(self, index: int, connection: ClientConnection) -> None:
        while True:
            try:
                while True:
                    self._frame(index, await connection.recv(), time.monotonic_ns())
            except ConnectionClosed:
                self.closed += 1
            self.live.pop(index, None)
            if self.stopping:
                return
            if self.killed_at is not None and index not in self.resumed_at:
                self.down.add(index)
            connection = await self._reconnect(index)
            if connection is None:
                return

    def _frame(self, index: int, data: str, now: int) -> None:
        self.last_frame = time.monotonic()
        frame = json.loads(data)
        kind = frame.get("type")
        if kind == "message":
            cursor, last = frame["cursor"], self.cursor[index]
            if cursor <= last:
                self.repeats += 1
                return
            self.gaps += cursor - last - 1
            self.cursor[index] = cursor
            client_id = frame.get("client_id")
            if client_id is not None:
                self._acked(index, client_id)
            found = MARK.search(frame["message"]["body"].encode())
            if found is None:
                return
            seq = int(found[1])
            seen = self.seen[index]
            if seq in seen:
                self.duplicates += 1
                return
            seen.add(seq)
            self.delivered += 1
            sent = self.wire.get(seq)
            if sent is not None:
                self.live_latency.append((sent, now - sent))
        elif kind == "ack":
            self.deduped += 1
            self._acked(index, frame["client_id"])
        elif kind == "error":
            code = frame.get("code", "?")
            self.errors[code] = self.errors.get(code, 0) + 1
            entry = self.outbox.get(index, {}).get(frame.get("ref"))
            if entry is not None and frame.get("retry_after") is not None:
                # rate_limited or unavailable: the page sends it again after retry_after.
                self._send_soon(index, entry[1], float(frame["retry_after"]))
        else:
            self.other_frames += 1

    def _acked(self, index: int, client_id: str) -> None:
        entry = self.outbox.get(index, {}).pop(client_id, None)
        if entry is not None:
            self.acked.add(entry[0])

    # --- the chat ---------------------------------------------------------------------------

    async def chat(self, rate: float, until: asyncio.Event) -> int:
        """Post `rate` posts/s round-robin from the chat room's members until `until` is set."""
        posters = self.members[-1]
        for poster in posters:
            self.outbox[poster] = {}
        loop = asyncio.get_running_loop()
        start = loop.time()
        seq = 0
        while not until.is_set():
            delay = start + seq / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            poster = posters[seq % len(posters)]
            client_id = f"s{seq}"
            body = f"[bench {seq} {time.monotonic_ns()}] {PAD}"
            frame = json.dumps({"type": "post", "body": body, "client_id": client_id})
            self.outbox[poster][client_id] = (seq, frame)
            if poster in self.live:
                self.wire[seq] = time.monotonic_ns()
                await self._send(poster, frame)
            seq += 1
        return seq

    def killed(self) -> None:
        self.killed_at = time.monotonic()

    def lost(self) -> int:
        """(Acknowledged post, member of its room) pairs never received."""
        members = self.members[-1]
        return sum(1 for seq in self.acked for m in members if seq not in self.seen[m])

    async def close(self) -> None:
        self.stopping = True
        for task in [*self.tasks, *self.sending]:
            task.cancel()
        for connection in self.live.values():
            connection.transport.abort()
        await asyncio.gather(*self.tasks, *self.sending, return_exceptions=True)


def latency(pairs: list[tuple[int, int]], start: float, end: float) -> dict[str, Any]:
    """p50/p99 of the live deliveries of posts first sent between `start` and `end` (monotonic
    seconds)."""
    values = sorted(v for sent, v in pairs if start * 1e9 <= sent < end * 1e9)
    ms = 1e6
    return {
        "deliveries": len(values),
        "p50_ms": round(percentile(values, 50) / ms, 2),
        "p99_ms": round(percentile(values, 99) / ms, 2),
        "max_ms": round(values[-1] / ms, 2) if values else None,
    }


async def drive_storm(
    target: Target,
    server: Ours,
    urls: list[str],
    *,
    sockets: int,
    chatters: int,
    idle: float,
    rate: float,
    duration: float,
    drain: float,
    storm_limit: float = 180.0,
) -> dict[str, Any]:
    """Connect, chat, kill and restart the server, and follow every socket back."""
    load = Storm(target, urls, sockets)
    result: dict[str, Any] = {}
    stop_chat = asyncio.Event()
    chat = None
    try:
        result["connect"] = await load.open(sockets + chatters)
        chat = asyncio.create_task(load.chat(rate, stop_chat))
        await asyncio.sleep(idle)

        overflows = listen_overflows()
        load.killed()
        server.kill()
        killed = time.monotonic()
        await asyncio.to_thread(server.start)  # the same port; returns when /healthz answers
        back = time.monotonic()
        target.server_pids[:] = [server.pid]
        cpu = cpu_seconds(server.pid)
        everyone = sockets + chatters
        while (  # noqa: ASYNC110
            len(load.resumed_at) + len(load.fatal) < everyone
            and time.monotonic() - back < storm_limit
        ):
            await asyncio.sleep(0.05)
        resumed = time.monotonic()
        storm_cpu = cpu_seconds(server.pid) - cpu
        await asyncio.sleep(duration)  # the chat goes on with everyone back
        stop_chat.set()
        posts = await chat
        chat = None
        deadline = time.monotonic() + drain
        while time.monotonic() < deadline and (  # noqa: ASYNC110
            any(load.outbox.values()) or load.lost()
        ):
            await asyncio.sleep(0.05)
        last = max(load.resumed_at.values(), default=back)
        result["storm"] = {
            "sockets": everyone,
            "server_down_s": round(back - killed, 2),  # SIGKILL → the new process's /healthz
            "resumed": len(load.resumed_at),
            "back_s": round(last - back, 2),  # /healthz → the last socket's `ready`
            "all_back": len(load.resumed_at) == everyone,
            "limit_s": storm_limit,  # how long the bench waited for them
            "resumed_by_s": {
                f"{s}": sum(1 for t in load.resumed_at.values() if t - back <= s)
                for s in (1, 2, 5, 10, 20, 30, 60, 120)
            },
            "resets": load.resets,
            "fatal_closes": sorted(load.fatal.values()),
            "failed_attempts": len(load.failed),
            "failures": top(load.failed),
            "listen_overflows": listen_overflows() - overflows,
            "server_cpu_percent": round(100 * storm_cpu / max(resumed - back, 1e-3), 1),
            "server_cpu_s": round(storm_cpu, 2),
            "boot_cpu_s": round(cpu, 2),  # the new process's CPU until /healthz
        }
        result["chat"] = {
            "rate": rate,
            "members": chatters,
            "posts": posts,
            "acked": len(load.acked),
            "unacked": sum(len(outbox) for outbox in load.outbox.values()),
            "resent": load.resent,
            "deduped": load.deduped,
            "queued_while_down": load.queued,
            "lost": load.lost(),
            "duplicates": load.duplicates,
            "gaps": load.gaps,
            "repeats": load.repeats,
            "replayed": load.replayed,
            "errors": load.errors,
            "during_storm": latency(load.live_latency, back, resumed),
            "posts_sent_during_storm": sum(
                1 for t in load.wire.values() if back * 1e9 <= t < resumed * 1e9
            ),
            "after_storm": latency(load.live_latency, resumed, time.monotonic()),
            "before_kill": latency(load.live_latency, 0, killed),
        }
        if not result["storm"]["all_back"]:
            result["storm"]["server_log"] = server.output(3000)
    finally:
        stop_chat.set()
        if chat is not None:
            chat.cancel()
        await load.close()
    return result


def top(failures: list[str], count: int = 5) -> dict[str, int]:
    """The most common failures, numbers (ports, counts) replaced by N but close codes and HTTP
    statuses kept."""
    kinds: dict[str, int] = {}
    for failure in failures:
        key = (
            failure
            if failure.startswith("closed")
            else re.sub(r"(?<!\d)(?<!HTTP )\d+", "N", failure)
        )
        kinds[key] = kinds.get(key, 0) + 1
    return dict(sorted(kinds.items(), key=lambda kv: -kv[1])[:count])
