"""The load generator: N receivers and S senders on one room, in one asyncio process.

Each post's body carries `[bench <seq> <send time, ns>]`; every receiver finds that mark in the
raw frame (no JSON decoding on the hot path) and records the latency from the send to its own
receipt, so latency is send → every receiver. Loss and duplicates come from a per-receiver table
of the sequence numbers it has seen. Server CPU and RSS are read from /proc while a phase runs.
"""

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .servers import cpu_seconds, machine_busy_seconds, rss_kib

MARK = re.compile(rb"\[bench (\d+) (\d+)\]")
# A message of ordinary length: the mark plus a line of chat.
PAD = "How are you? Fine, thanks; the bench is running its next phase now."
PERCENTILES = [*range(0, 100), 99.5, 99.9, 100]


@dataclass
class Target:
    peer: str  # "ours", "tutorial" or "raw"
    ws_url: str
    origin: str
    server_pids: list[int]  # RSS and CPU are reported for these (summed)
    helper_pids: list[int] = field(default_factory=list)  # CPU only: redis, nginx
    cookies: list[str] = field(default_factory=list)  # one per socket, ours only
    cookie_name: str = "sessionid"
    ready_frame: bool = False  # ours answers every connect with `ready` first


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


class Phase:
    """One stretch of posting at a fixed rate, and what the receivers saw of it."""

    def __init__(self, base: int, capacity: int, receivers: int) -> None:
        self.base = base
        self.capacity = capacity
        self.seen = [bytearray(capacity) for _ in range(receivers)]
        self.latencies: list[int] = []
        self.delivered = 0
        self.duplicates = 0
        self.sent = 0
        self.errors: dict[str, int] = {}
        self.first_send = 0
        self.last_send = 0
        self.last_delivery = 0
        self.max_send_lag = 0.0


class Load:
    def __init__(self, target: Target) -> None:
        self.target = target
        self.receivers: list[ClientConnection] = []
        self.senders: list[ClientConnection] = []
        self.tasks: list[asyncio.Task] = []
        self.phase: Phase | None = None
        self.next_seq = 0
        self.frames_other = 0  # frames without a bench mark: presence, ready, ...
        self.stale = 0  # marked frames of an earlier phase
        self.closed = 0
        self.last_frame = time.monotonic()

    # --- connecting ----------------------------------------------------------------------

    async def _open(self, index: int) -> ClientConnection:
        headers = {"Origin": self.target.origin}
        if self.target.cookies:
            headers["Cookie"] = f"{self.target.cookie_name}={self.target.cookies[index]}"
        connection = await connect(
            self.target.ws_url,
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

    async def open_senders(self, senders: int) -> None:
        self.senders = [await self._open(i) for i in range(senders)]
        for index, connection in enumerate(self.senders):
            self.tasks.append(asyncio.create_task(self._read_sender(connection), name=f"s{index}"))

    async def open_receivers(self, receivers: int, concurrency: int = 50) -> dict[str, Any]:
        """Open `receivers` sockets with at most `concurrency` handshakes at a time (each retried
        up to 3 times); the clock runs from the first handshake to the last `ready`."""
        gate = asyncio.Semaphore(concurrency)
        failures: list[str] = []
        handshakes: list[float] = []
        offset = len(self.senders)

        async def one(index: int) -> ClientConnection:
            for attempt in range(4):
                async with gate:
                    started = time.monotonic()
                    try:
                        connection = await self._open(offset + index)
                    except Exception as error:  # refused handshakes, 500s, timeouts
                        failures.append(f"{type(error).__name__}: {error}"[:200])
                        await asyncio.sleep(0.2 * (attempt + 1))
                        continue
                    handshakes.append(time.monotonic() - started)
                    self.tasks.append(
                        asyncio.create_task(self._read(index, connection), name=f"r{index}")
                    )
                    return connection
            raise RuntimeError(f"socket {index} could not connect: {failures[-1]}")

        started = time.monotonic()
        self.receivers = list(await asyncio.gather(*(one(i) for i in range(receivers))))
        seconds = time.monotonic() - started
        handshakes.sort()
        return {
            "sockets": receivers,
            "concurrency": concurrency,
            "seconds": round(seconds, 3),
            "handshake_p50_ms": round(percentile(handshakes, 50) * 1000, 1),
            "handshake_p99_ms": round(percentile(handshakes, 99) * 1000, 1),
            "failed_attempts": len(failures),
            "first_failure": failures[0] if failures else None,
        }

    # --- reading ----------------------------------------------------------------------------

    async def _read(self, index: int, connection: ClientConnection) -> None:
        recv = connection.recv
        search = MARK.search
        clock = time.monotonic_ns
        try:
            while True:
                data = await recv(decode=False)
                now = clock()
                found = search(data)
                if found is None:
                    self.frames_other += 1
                    self.last_frame = time.monotonic()
                    continue
                phase = self.phase
                offset = int(found[1]) - phase.base if phase else -1
                if phase is None or not 0 <= offset < phase.capacity:
                    self.stale += 1
                    continue
                seen = phase.seen[index]
                if seen[offset]:
                    phase.duplicates += 1
                    continue
                seen[offset] = 1
                phase.latencies.append(now - int(found[2]))
                phase.delivered += 1
                phase.last_delivery = now
        except ConnectionClosed:
            self.closed += 1

    async def _read_sender(self, connection: ClientConnection) -> None:
        """Senders are in the room too: read (and drop) what they get, tally refusals."""
        try:
            while True:
                data = await connection.recv(decode=False)
                self.last_frame = time.monotonic()
                if data.startswith(b'{"type":"error"') and self.phase is not None:
                    code = json.loads(data).get("code", "?")
                    self.phase.errors[code] = self.phase.errors.get(code, 0) + 1
        except ConnectionClosed:
            self.closed += 1

    # --- phases -----------------------------------------------------------------------------

    def _cpu(self) -> dict[str, float]:
        pids = {f"s{p}": p for p in self.target.server_pids}
        pids.update({f"h{p}": p for p in self.target.helper_pids})
        result = {"client": time.process_time(), "machine": machine_busy_seconds()}
        for name, pid in pids.items():
            try:
                result[name] = cpu_seconds(pid)
            except OSError:
                result[name] = 0.0
        return result

    @staticmethod
    def _other(before: dict[str, float], after: dict[str, float]) -> float:
        """CPU seconds used between two `_cpu` readings by processes that are not the bench's."""
        ours = sum(after[k] - before[k] for k in before if k != "machine")
        return max(0.0, after["machine"] - before["machine"] - ours)

    async def quiet_machine(self, limit: float = 0.3, max_wait: float = 15.0) -> float:
        """Wait, at most `max_wait` s, until other processes on the machine (someone's tests)
        use less than `limit` of a core over a second. Returns the last reading."""
        started = time.monotonic()
        while True:
            before = self._cpu()
            await asyncio.sleep(1.0)
            other = self._other(before, self._cpu())
            if other < limit or time.monotonic() - started >= max_wait:
                return other

    def server_rss(self) -> int:
        total = 0
        for pid in self.target.server_pids:
            try:
                total += rss_kib(pid)
            except OSError:
                pass
        return total

    async def settle(self, quiet: float = 1.0, timeout: float = 30.0) -> float:
        """Wait until no frame has arrived for `quiet` seconds and the servers are nearly idle
        (under 20% of a core each: the hubs' resync and session ticks keep them above zero)."""
        pids = self.target.server_pids
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            before = sum(cpu_seconds(p) for p in pids)
            await asyncio.sleep(quiet)
            busy = (sum(cpu_seconds(p) for p in pids) - before) / quiet / len(pids)
            if time.monotonic() - self.last_frame >= quiet and busy < 0.2:
                break
        return round(time.monotonic() - started, 2)

    async def run(
        self, rate: float, duration: float, drain: float, *, keep_latencies: bool = False
    ) -> dict[str, Any]:
        """Post `rate` messages/s for `duration` s round-robin from the senders (open loop: a
        late send goes out at once, it does not shift the schedule), then wait up to `drain`
        seconds for every receiver to have every message."""
        count = max(1, round(rate * duration))
        phase = Phase(self.next_seq, count, len(self.receivers))
        self.next_seq += count
        self.phase = phase
        rss_max = self.server_rss()
        cpu_before = self._cpu()
        loop = asyncio.get_running_loop()

        async def sample_rss() -> None:
            nonlocal rss_max
            while True:
                await asyncio.sleep(0.25)
                rss_max = max(rss_max, self.server_rss())

        sampler = asyncio.create_task(sample_rss())
        clock = time.monotonic_ns
        start = loop.time()
        phase.first_send = clock()
        try:
            for i in range(count):
                delay = start + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    phase.max_send_lag = max(phase.max_send_lag, -delay)
                seq = phase.base + i
                body = f"[bench {seq} {clock()}] {PAD}"
                await self.senders[i % len(self.senders)].send(
                    json.dumps({"type": "post", "body": body, "client_id": f"b{seq}"})
                )
                phase.sent += 1
            phase.last_send = clock()
            expected = phase.sent * len(self.receivers)
            deadline = loop.time() + drain
            while phase.delivered < expected and loop.time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)  # polling counters that 1,000 reader tasks bump
            ended = clock()
        finally:
            sampler.cancel()
        cpu_after = self._cpu()
        return self._summary(
            phase, rate, cpu_before, cpu_after, ended, rss_max, keep_latencies=keep_latencies
        )

    def _summary(self, phase, rate, cpu_before, cpu_after, ended, rss_max, *, keep_latencies):
        receivers = len(self.receivers)
        expected = phase.sent * receivers
        latencies = sorted(phase.latencies)
        span = max(phase.last_delivery, phase.last_send) - phase.first_send
        wall = (ended - phase.first_send) / 1e9
        cpu = {name: cpu_after[name] - cpu_before[name] for name in cpu_before}
        server_cpu = sum(v for k, v in cpu.items() if k.startswith("s"))
        helper_cpu = sum(v for k, v in cpu.items() if k.startswith("h"))
        # Whatever else ran on the machine meanwhile (another engineer's tests, say).
        other_cpu = self._other(cpu_before, cpu_after)
        ms = 1e6
        incomplete = sum(1 for i in range(phase.sent) if any(not seen[i] for seen in phase.seen))
        result = {
            "rate": rate,
            "receivers": receivers,
            "sent": phase.sent,
            "expected": expected,
            "delivered": phase.delivered,
            "lost": expected - phase.delivered,
            "messages_not_everywhere": incomplete,
            "duplicates": phase.duplicates,
            "refused": dict(phase.errors),
            "offered_per_s": round(rate * receivers, 1),
            "deliveries_per_s": round(phase.delivered / (span / 1e9), 1) if span > 0 else 0,
            "p50_ms": round(percentile(latencies, 50) / ms, 2),
            "p90_ms": round(percentile(latencies, 90) / ms, 2),
            "p99_ms": round(percentile(latencies, 99) / ms, 2),
            "max_ms": round(latencies[-1] / ms, 2) if latencies else None,
            "max_send_lag_ms": round(phase.max_send_lag * 1000, 1),
            "server_cpu_percent": round(100 * server_cpu / wall, 1),
            "helper_cpu_percent": round(100 * helper_cpu / wall, 1),
            "client_cpu_percent": round(100 * cpu["client"] / wall, 1),
            "other_cpu_percent": round(100 * other_cpu / wall, 1),
            "server_cpu_us_per_delivery": (
                round(1e6 * server_cpu / phase.delivered, 1) if phase.delivered else None
            ),
            "rss_load_kib": rss_max,
        }
        if keep_latencies and latencies:
            result["latency_percentiles_ms"] = [
                round(percentile(latencies, q) / ms, 3) for q in PERCENTILES
            ]
        return result

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for connection in self.senders + self.receivers:
            connection.transport.abort()
        await asyncio.gather(*self.tasks, return_exceptions=True)
