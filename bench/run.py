"""`python -m bench`: run the scenarios against the three peers and write the report.

For each scenario the peers run back to back (ours, the tutorial consumer, the raw server), each
with a redis-server and server processes of its own, started and stopped here, on 127.0.0.1.
"""

import argparse
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from .cost import Cost, Metered
from .loadgen import Load, Target
from .many import drive_many
from .servers import (
    PYTHON,
    ROOT,
    SITE_SECRET,
    Database,
    Nginx,
    Ours,
    Raw,
    Redis,
    Site,
    Tutorial,
    machine,
    open_sockets,
    raise_open_files,
)
from .storm import drive_storm

PEERS = ("ours", "tutorial", "raw")
WARMUP_RATE = 10.0  # messages per second, for
WARMUP_SECONDS = 1.0


@dataclass(frozen=True)
class Ladder:
    """Step the rate up until a step misses p99 ≤ limit with no loss, then bisect."""

    start: float
    step: float = 5.0  # seconds of posting per step
    drain: float = 3.0
    factor: float = 1.5
    bisections: int = 2
    max_steps: int = 12
    p99_limit_ms: float = 100.0


@dataclass(frozen=True)
class Spec:
    key: str
    title: str
    receivers: int
    senders: int
    rate: float | None = None  # a fixed-rate phase, when set
    duration: float = 10.0
    drain: float = 8.0
    ladder: Ladder | None = None  # a saturation search (after the fixed phase, if any)
    peers: tuple[str, ...] = PEERS
    processes: tuple[int, ...] = (1,)  # our daphne processes (behind nginx when `nginx`)
    nginx: bool = False
    # Scenario E (issue 21): the fixed phase, after a warm-up at its rate, also measures CPU per
    # delivery for the servers, nginx and Redis, and Redis commands per post (bench/cost.py).
    cost: bool = False
    memory: bool = False  # report idle RSS per socket (scenario D)
    time_limit: float = 300.0  # seconds for one peer's run, connect to close
    # Many rooms (scenario M): `receivers` sockets, one user each, round-robin over `rooms`
    # rooms; `idle` seconds of measuring while nobody posts, then `rate` posts/s to random rooms.
    rooms: int = 1
    idle: float = 0.0
    inboxes: bool = False  # scenario N: each user also has an inbox socket (ours only)
    # Scenario S: `senders` more users in one more room, posting `rate` posts/s round-robin
    # throughout; after `idle` s the server is killed and restarted, and `duration` s after
    # every socket is back the chat stops.
    restart: bool = False


STANDARD = [
    Spec("A", "100 receivers, 20 msg/s", receivers=100, senders=6, rate=20, duration=10),
    Spec(
        "B",
        "1,000 receivers, 5 msg/s (then the rate stepped up for the saturation point)",
        receivers=1000,
        senders=6,
        rate=5,
        duration=15,
        memory=True,
        ladder=Ladder(start=7.5, step=4, max_steps=5, bisections=1),
    ),
    Spec(
        "C",
        "highest rate at 100 receivers with p99 ≤ 100 ms and no loss",
        receivers=100,
        senders=6,
        ladder=Ladder(start=20),
    ),
    Spec(
        "E",
        "scenario C through nginx over 1, 2 and 3 of our daphne processes: the cost of a "
        "delivery at 30 msg/s, then the rate stepped up",
        receivers=100,
        senders=6,
        rate=30,  # 3,000 deliveries/s: every process count passes it with p99 near 15 ms
        duration=10,
        drain=5,
        ladder=Ladder(start=30),  # the fixed phase is its first step
        peers=("ours",),
        processes=(1, 2, 3),
        nginx=True,
        cost=True,
    ),
    Spec(
        "M",
        "many small rooms: 2,000 users, one socket each, over 400 rooms; idle, then 20 posts/s",
        receivers=2000,
        senders=0,
        rooms=400,
        idle=30,
        rate=20,
        duration=10,
        drain=8,
    ),
    Spec(
        "N",
        "the inbox: 1,000 users over 200 rooms, each with a room socket and an inbox socket; "
        "idle, then 20 posts/s",
        receivers=1000,
        senders=0,
        rooms=200,
        idle=20,
        rate=20,
        duration=10,
        drain=8,
        peers=("ours",),
        inboxes=True,
    ),
    Spec(
        "S",
        "reconnect storm: M's 2,000 sockets plus a chat room of 10 posting 5 posts/s; the server "
        "killed and restarted, every socket back with `since`",
        receivers=2000,
        senders=10,
        rooms=400,
        idle=5,
        rate=5,
        duration=10,
        drain=10,
        peers=("ours",),  # the tutorial and raw peers keep no history to resume from
        restart=True,
        time_limit=600,
    ),
    Spec(
        "I",
        "idle capacity: 10,000 idle sockets on one process, one user each, over 2,000 rooms",
        receivers=10000,
        senders=0,
        rooms=2000,
        idle=30,
        time_limit=900,
    ),
]

SMOKE = [
    Spec(
        "A",
        "smoke: 10 receivers, 10 msg/s for 2 s",
        receivers=10,
        senders=2,
        rate=10,
        duration=2,
        drain=3,
        memory=True,
        time_limit=45,
    ),
    Spec(
        "E",
        "smoke: through nginx over 1 and 2 processes, 10 receivers, 10 msg/s for 2 s",
        receivers=10,
        senders=2,
        rate=10,
        duration=2,
        drain=3,
        peers=("ours",),
        processes=(1, 2),
        nginx=True,
        cost=True,
        time_limit=45,
    ),
    Spec(
        "M",
        "smoke: 40 users over 8 rooms; 2 s idle, then 10 posts/s for 2 s",
        receivers=40,
        senders=0,
        rooms=8,
        idle=2,
        rate=10,
        duration=2,
        drain=3,
        peers=("ours",),
        time_limit=45,
    ),
    Spec(
        "N",
        "smoke: 40 users over 8 rooms, each with an inbox socket; 10 posts/s for 2 s",
        receivers=40,
        senders=0,
        rooms=8,
        idle=2,
        rate=10,
        duration=2,
        drain=3,
        peers=("ours",),
        inboxes=True,
        time_limit=45,
    ),
    Spec(
        "S",
        "smoke: 40 users over 8 rooms and a chat room of 4 posting 5 posts/s; the server "
        "killed and restarted",
        receivers=40,
        senders=4,
        rooms=8,
        idle=2,
        rate=5,
        duration=2,
        drain=5,
        peers=("ours",),
        restart=True,
        time_limit=60,
    ),
    Spec(
        "I",
        "smoke: 40 idle sockets over 8 rooms",
        receivers=40,
        senders=0,
        rooms=8,
        idle=2,
        peers=("ours",),
        time_limit=45,
    ),
]


class Noise:
    """This machine is shared. Other processes' CPU can only make a phase look worse, so a
    phase is run again (after waiting, at most 20 s, for a quieter moment) only when others used
    more than `limit` of a core during it and it failed (rate steps) or it is a reported fixed
    phase; until the run's budget of seconds for waiting and repeating is spent.

    A rate step that lost nothing and failed on p99 alone is also run once more, for every peer
    alike: one stall of a fraction of a second (a page fault storm, another process's burst) is
    enough to fail 5 seconds of posting, and would end the search far below the saturation
    point. The search's p99 limit itself is not relaxed."""

    def __init__(self, budget: float, limit: float = 0.4) -> None:
        self.left = budget
        self.limit = limit
        self.repeats = 0

    async def run(
        self,
        load: Load,
        rate: float,
        duration: float,
        drain: float,
        *,
        judge=None,
        attempts: int = 3,
        **kw,
    ) -> dict:
        result = await load.run(rate, duration, drain, **kw)
        attempt = 1
        tail_retried = False
        while attempt < attempts and self.left > 0 and (judge is None or not judge(result)):
            noisy = result["other_cpu_percent"] > 100 * self.limit
            tail = (
                judge is not None
                and not tail_retried
                and result["lost"] == 0
                and not result["refused"]
            )
            if not (noisy or tail):
                break
            tail_retried = True
            started = time.monotonic()
            await load.settle(quiet=0.5, timeout=15)
            await load.quiet_machine(limit=self.limit * 0.75, max_wait=min(20, self.left))
            result = await load.run(rate, duration, drain, **kw)
            attempt += 1
            self.repeats += 1
            self.left -= time.monotonic() - started
        result["attempt"] = attempt
        return result


def passes(result: dict[str, Any], ladder: Ladder) -> bool:
    return result["lost"] == 0 and not result["refused"] and result["p99_ms"] <= ladder.p99_limit_ms


async def saturate(
    load: Load, noise: Noise, ladder: Ladder, known: dict | None = None
) -> dict[str, Any]:
    """The highest passing rate: xfactor up from `start` (or ÷2 down while failing), then
    `bisections` geometric bisections between the best pass and the first failure."""
    steps: list[dict] = []
    best = fail = None

    def judge(result: dict) -> bool:
        return passes(result, ladder)

    rate = ladder.start
    if known is not None:  # a fixed phase that already ran at the same receivers
        steps.append(known)
        if passes(known, ladder):
            best = known
            rate = max(ladder.start, known["rate"] * ladder.factor)
        else:
            fail = known
            rate = known["rate"] / 2
    while len(steps) < ladder.max_steps and rate >= 0.5:
        result = await noise.run(load, rate, ladder.step, ladder.drain, judge=judge)
        steps.append(result)
        await load.settle(quiet=0.5, timeout=15)
        if passes(result, ladder):
            best = result
            if fail is not None:
                break
            rate *= ladder.factor
        else:
            fail = result
            if best is not None:
                break
            rate /= 2
    for _ in range(ladder.bisections):
        if best is None or fail is None or fail["rate"] / best["rate"] < 1.08:
            break
        rate = round(math.sqrt(best["rate"] * fail["rate"]), 1)
        result = await noise.run(load, rate, ladder.step, ladder.drain, judge=judge)
        steps.append(result)
        await load.settle(quiet=0.5, timeout=15)
        if passes(result, ladder):
            best = result
        elif result["rate"] < fail["rate"]:
            fail = result
    return {"best": best, "first_fail": fail, "steps": steps}


async def drive(
    target: Target, spec: Spec, noise: Noise, cost: Cost | None = None
) -> dict[str, Any]:
    """Connect, measure idle memory, post, and step the rate, on one set of server processes.
    With `cost`, the fixed phase also reports what a delivery and a post cost (scenario E)."""
    load = Load(target)
    metered = None
    result: dict[str, Any] = {}
    try:
        await load.open_senders(spec.senders)
        await load.settle(quiet=0.5, timeout=10)
        result["rss_base_kib"] = load.server_rss()
        result["connect"] = await load.open_receivers(spec.receivers)
        result["settle_s"] = await load.settle(quiet=1.0, timeout=60)
        result["rss_idle_kib"] = load.server_rss()
        result["per_socket_kib"] = round(
            (result["rss_idle_kib"] - result["rss_base_kib"]) / spec.receivers, 1
        )
        result["sockets_per_process"] = [
            open_sockets(pid) for pid in target.server_pids
        ]  # listeners, Redis and database connections included
        # Warm-up, not reported in the tables: a fresh process's first posts pay one-off costs
        # (connection pools growing, lazy imports, first queries) that are not fan-out.
        warmup = await load.run(WARMUP_RATE, WARMUP_SECONDS, drain=3)
        result["warmup"] = {k: warmup[k] for k in ("sent", "lost", "p99_ms", "max_ms")}
        await load.settle(quiet=0.5, timeout=15)
        known = None
        if spec.rate is not None and cost is not None:
            # A longer warm-up at the phase's own rate: every process has served posts before
            # its cost is measured, however the sockets fell over the processes.
            warm = await load.run(spec.rate, min(3.0, spec.duration), drain=3)
            result["warmup_at_rate"] = {k: warm[k] for k in ("sent", "lost", "p99_ms", "max_ms")}
            await load.settle(quiet=0.5, timeout=15)
            metered = Metered(load, cost)
        if spec.rate is not None:
            known = await noise.run(
                metered or load,
                spec.rate,
                spec.duration,
                spec.drain,
                attempts=2,
                keep_latencies=True,
            )
            result["fixed"] = known
            await load.settle(quiet=0.5, timeout=15)
        if spec.ladder is not None:
            result["ladder"] = await saturate(load, noise, spec.ladder, known)
        result["frames_without_mark"] = load.frames_other
        result["stale_frames"] = load.stale
        result["sockets_closed_by_server"] = load.closed
    finally:
        if metered is not None:
            metered.close()
        await load.close()
    return result


class Profiler:
    """py-spy record attached to a running server process (raw collapsed stacks)."""

    def __init__(self, pid: int, path: Path) -> None:
        binary = Path(PYTHON).parent / "py-spy"
        self.process = subprocess.Popen(
            [
                str(binary),
                "record",
                "--pid",
                str(pid),
                "--rate",
                "250",
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Bench:
    def __init__(
        self,
        specs: list[Spec],
        *,
        profile_dir: Path | None,
        noise_budget: float,
        variant: str = "",
        tutorial_layer: str = "core",
        log=print,
    ) -> None:
        self.specs = specs
        self.variant = variant
        self.tutorial_layer = tutorial_layer
        self.noise = Noise(noise_budget)
        self.profile_dir = profile_dir
        self.log = log
        receivers = max(s.receivers + s.senders for s in specs)
        self.rooms = [
            *(f"{s.key}{n}" for s in specs if s.rooms == 1 for n in s.processes),
            *(f"{s.key}-{n}" for s in specs if s.rooms > 1 for n in range(s.rooms)),
            *(f"{s.key}-chat" for s in specs if s.restart),
        ]
        self.database = Database(os.environ.get("DATABASE_URL"))
        seed_env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "chatsite.settings",
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": SITE_SECRET,
            "DATABASE_URL": self.database.url,
        }
        seed_env.pop("REDIS_URL", None)
        try:
            self._seed(seed_env, receivers)
        except BaseException:
            self.database.drop()
            raise

    def _seed(self, seed_env: dict[str, str], receivers: int) -> None:
        started = time.monotonic()
        out = subprocess.run(
            [
                PYTHON,
                "-m",
                "bench.seed",
                "--users",
                str(receivers),
                "--rooms",
                *self.rooms,
                "--spread",
                *(f"{s.key}:{s.receivers}" for s in self.specs if s.inboxes),
            ],
            cwd=ROOT,
            env=seed_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if out.returncode != 0:
            raise RuntimeError(f"seeding failed:\n{out.stdout}\n{out.stderr}")
        self.seed = json.loads(out.stdout)
        self.log(
            f"seeded {receivers} users and {len(self.rooms)} rooms in {self.database.kind} "
            f"({time.monotonic() - started:.1f} s)"
        )

    def close(self) -> None:
        self.database.drop()

    def _on_one_server(self, start, drive, time_limit: float) -> dict[str, Any]:
        """Start a Redis and a server (`start(redis)`), then run `drive(server, redis)` (a
        coroutine) within `time_limit`: its result, or the error with the server's last log."""
        redis = Redis().start()
        server = None
        try:
            server = start(redis)
            started = time.monotonic()
            result = asyncio.run(asyncio.wait_for(drive(server, redis), time_limit))
            result["seconds"] = round(time.monotonic() - started, 1)
            if server.process.poll() is not None:
                raise RuntimeError(f"server exited during the run: {server.name}")
            return result
        except Exception as error:
            logs = server.output(3000) if server is not None and server.process else ""
            return {"error": f"{type(error).__name__}: {error}", "log": logs}
        finally:
            if server is not None:
                server.stop()
            redis.stop()

    def run_many(self, spec: Spec, peer: str) -> dict[str, Any]:
        """Scenario M: `spec.receivers` sockets over `spec.rooms` rooms on one server process."""

        def start(redis: Redis):
            if peer == "ours":
                return Ours(Site(self.database, redis.url, {}), self.variant).start()
            server = Tutorial(redis.url, self.tutorial_layer) if peer == "tutorial" else Raw()
            server.start()
            return server

        def drive(server, redis: Redis):
            if peer == "ours":
                base = f"ws://127.0.0.1:{server.port}/ws/rooms"
                inbox_url = f"ws://127.0.0.1:{server.port}/ws/inbox/" if spec.inboxes else None
                urls = [
                    f"{base}/{self.seed['rooms'][f'{spec.key}-{n}']}/" for n in range(spec.rooms)
                ]
                cookies, ready = self.seed["cookies"], True
            else:
                base = f"ws://127.0.0.1:{server.port}/ws/chat"
                inbox_url = None
                urls = [f"{base}/{spec.key}{n}/" for n in range(spec.rooms)]
                cookies, ready = [], False
            target = Target(
                peer,
                urls[0],
                f"http://127.0.0.1:{server.port}",
                [server.pid],
                [redis.pid],
                cookies=cookies,
                cookie_name=self.seed["cookie_name"],
                ready_frame=ready,
            )
            database = self.database.url if peer == "ours" and self.database.admin_url else None
            return drive_many(
                target,
                urls,
                sockets=spec.receivers,
                idle=spec.idle,
                rate=spec.rate,
                duration=spec.duration,
                drain=spec.drain,
                redis_url=redis.url,
                database_url=database,
                inbox_url=inbox_url,
            )

        return self._on_one_server(start, drive, spec.time_limit)

    def run_storm(self, spec: Spec) -> dict[str, Any]:
        """Scenario S: our server killed and restarted under `receivers` + `senders` sockets."""

        def start(redis: Redis):
            return Ours(Site(self.database, redis.url, {}), self.variant).start()

        def drive(server, redis: Redis):
            base = f"ws://127.0.0.1:{server.port}/ws/rooms"
            names = [*(f"{spec.key}-{n}" for n in range(spec.rooms)), f"{spec.key}-chat"]
            urls = [f"{base}/{self.seed['rooms'][name]}/" for name in names]
            target = Target(
                "ours",
                urls[0],
                server.url,
                [server.pid],
                [redis.pid],
                cookies=self.seed["cookies"],
                cookie_name=self.seed["cookie_name"],
                ready_frame=True,
            )
            return drive_storm(
                target,
                server,
                urls,
                sockets=spec.receivers,
                chatters=spec.senders,
                idle=spec.idle,
                rate=spec.rate or 1.0,
                duration=spec.duration,
                drain=spec.drain,
            )

        return self._on_one_server(start, drive, spec.time_limit)

    def run_one(self, spec: Spec, peer: str, processes: int) -> dict[str, Any]:
        if spec.restart:
            return self.run_storm(spec)
        if spec.rooms > 1:
            return self.run_many(spec, peer)
        redis = Redis().start()
        servers: list = []
        nginx = None
        profilers: list[Profiler] = []
        cost = None
        try:
            if peer == "ours":
                site = Site(self.database, redis.url, {})
                servers = [Ours(site, self.variant) for _ in range(processes)]
                for server in servers:
                    server.start()
                port = servers[0].port
                helpers = [redis.pid]
                roles = {"redis": [redis.pid]}
                if spec.nginx:
                    nginx = Nginx().start([s.port for s in servers])
                    port = nginx.port
                    helpers += [nginx.pid, *nginx.worker_pids()]
                    roles["nginx"] = [nginx.pid, *nginx.worker_pids()]
                if spec.cost:
                    cost = Cost(redis.url, roles)
                slug = self.seed["rooms"][f"{spec.key}{processes}"]
                target = Target(
                    peer,
                    f"ws://127.0.0.1:{port}/ws/rooms/{slug}/",
                    f"http://127.0.0.1:{port}",
                    [s.pid for s in servers],
                    helpers,
                    cookies=self.seed["cookies"],
                    cookie_name=self.seed["cookie_name"],
                    ready_frame=True,
                )
                if self.profile_dir is not None:
                    self.profile_dir.mkdir(parents=True, exist_ok=True)
                    for i, server in enumerate(servers):
                        path = self.profile_dir / f"{spec.key}-x{processes}-{i}.txt"
                        profilers.append(Profiler(server.pid, path))
            elif peer == "tutorial":
                servers = [Tutorial(redis.url, self.tutorial_layer).start()]
                port = servers[0].port
                target = Target(
                    peer,
                    f"ws://127.0.0.1:{port}/ws/chat/{spec.key}/",
                    f"http://127.0.0.1:{port}",
                    [servers[0].pid],
                    [redis.pid],
                )
            else:
                servers = [Raw().start()]
                port = servers[0].port
                target = Target(
                    peer,
                    f"ws://127.0.0.1:{port}/ws/chat/{spec.key}/",
                    f"http://127.0.0.1:{port}",
                    [servers[0].pid],
                )
            started = time.monotonic()
            result = asyncio.run(
                asyncio.wait_for(drive(target, spec, self.noise, cost), spec.time_limit)
            )
            result["seconds"] = round(time.monotonic() - started, 1)
            dead = [s.name for s in servers if s.process.poll() is not None]
            if dead:
                raise RuntimeError(f"server exited during the run: {dead}")
            return result
        except Exception as error:
            logs = "\n".join(s.output(2000) for s in servers)
            return {"error": f"{type(error).__name__}: {error}", "log": logs[-3000:]}
        finally:
            for profiler in profilers:
                profiler.stop()
            if nginx is not None:
                nginx.stop()
            for server in servers:
                server.stop()
            redis.stop()

    def run(self) -> dict[str, Any]:
        results: dict[str, Any] = {}
        for spec in self.specs:
            runs: dict[str, Any] = {}
            for processes in spec.processes:
                for peer in spec.peers:
                    name = peer if not spec.nginx else f"{peer} x{processes}"
                    self.log(f"[{spec.key}] {name}: {spec.title} ...")
                    started = time.monotonic()
                    runs[name] = self.run_one(spec, peer, processes)
                    runs[name]["processes"] = processes
                    self.log(f"[{spec.key}] {name}: {brief(runs[name])}")
                    self.log(f"    ({time.monotonic() - started:.0f} s)")
            results[spec.key] = {"spec": asdict(spec), "runs": runs}
        return results


def brief(run: dict[str, Any]) -> str:
    if "error" in run:
        return f"ERROR {run['error']}"
    if "storm" in run:
        s, c = run["storm"], run["chat"]
        d = c["during_storm"]
        return (
            f"down {s['server_down_s']} s; {s['resumed']} of {s['sockets']} back in "
            f"{s['back_s']} s ({s['failed_attempts']} failed attempts, {s['resets']} resets); "
            f"chat lost {c['lost']} dup {c['duplicates']} gaps {c['gaps']}, resent "
            f"{c['resent']} (deduped {c['deduped']}); p50 {d['p50_ms']} p99 {d['p99_ms']} ms "
            f"during the storm; server CPU {s['server_cpu_percent']} %"
        )
    if "idle" in run and "posts" not in run:
        i, m = run["idle"], run["memory"]
        return (
            f"connect {run['connect']['seconds']} s; {m['kib_per_socket']} KiB/socket; idle CPU "
            f"{i['server_cpu_percent']} %, Redis {i.get('redis_commands_per_s')}/s, database "
            f"{i.get('db_transactions_per_s')}/s"
        )
    if "idle" in run:
        i, p = run["idle"], run["posts"]
        return (
            f"connect {run['connect']['seconds']} s; idle CPU {i['server_cpu_percent']} %, "
            f"Redis {i.get('redis_commands_per_s')}/s, database {i.get('db_transactions_per_s')}"
            f"/s; {p['rate']} posts/s p50 {p['p50_ms']} p99 {p['p99_ms']} ms lost {p['lost']}"
        )
    parts = [f"connect {run['connect']['seconds']} s", f"{run['per_socket_kib']} KiB/socket"]
    if "fixed" in run:
        f = run["fixed"]
        parts.append(
            f"{f['deliveries_per_s']}/s p50 {f['p50_ms']} p99 {f['p99_ms']} ms "
            f"lost {f['lost']} dup {f['duplicates']}"
        )
        if "cost" in f:
            c = f["cost"]
            parts.append(
                f"server {c['server_us_per_delivery']} µs/delivery, nginx "
                f"{c.get('nginx_us_per_delivery')}, Redis {c['redis_us_per_delivery']}; "
                f"{c['redis_commands_per_post']} Redis commands/post"
            )
    if "ladder" in run and run["ladder"]["best"]:
        b = run["ladder"]["best"]
        parts.append(f"saturation {b['rate']} msg/s = {b['deliveries_per_s']}/s p99 {b['p99_ms']}")
    return "; ".join(parts)


def versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    packages = ("Django", "channels", "daphne", "channels-redis", "websockets", "Twisted")
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "?"
    commands = {"redis-server": ["redis-server", "--version"], "nginx": ["/usr/sbin/nginx", "-v"]}
    for name, command in commands.items():
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=10)
            found[name] = (out.stdout + out.stderr).strip().split("\n")[0]
        except OSError:
            found[name] = "?"
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run of scenario A only")
    parser.add_argument("--scenarios", help="comma-separated subset, e.g. A,C")
    parser.add_argument("--peers", help="comma-separated subset of ours,tutorial,raw")
    parser.add_argument("--json", type=Path, help="where to write the raw results")
    parser.add_argument("--docs", type=Path, help="write performance.md and .png into this dir")
    parser.add_argument("--report-only", type=Path, help="re-render docs from a results file")
    parser.add_argument("--profile", type=Path, help="py-spy record our servers into this dir")
    parser.add_argument(
        "--ours-variant",
        default="",
        help="experiment: bench/variants.py (asgisend,twistedwrite,gcdefault,authstack,uvloop,"
        "stalls) "
        "or uvicorn[+uvloop]",
    )
    parser.add_argument(
        "--tutorial-layer",
        choices=("core", "pubsub"),
        default="core",
        help="the tutorial peer's channel layer: RedisChannelLayer (default) or the pub/sub one",
    )
    args = parser.parse_args(argv)

    from . import report

    if args.report_only:
        data = json.loads(args.report_only.read_text())
        report.write(data, args.docs or ROOT / "docs")
        return 0

    specs = SMOKE if args.smoke else STANDARD
    if args.scenarios:
        wanted = set(args.scenarios.upper().split(","))
        specs = [s for s in specs if s.key in wanted]
    if args.peers:
        peers = tuple(p for p in PEERS if p in args.peers.split(","))
        specs = [replace(s, peers=tuple(p for p in s.peers if p in peers)) for s in specs]
        specs = [s for s in specs if s.peers]
    if not specs:
        parser.error("no scenario left to run")
    if not args.smoke and args.json is None:
        args.json = ROOT / "bench" / "results" / "latest.json"
    if not args.smoke and args.docs is None:
        args.docs = ROOT / "docs"

    open_files = raise_open_files()
    started = time.monotonic()
    data: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_before": os.getloadavg(),
        "open_files_limit": open_files,
        "versions": versions(),
        "smoke": args.smoke,
        "ours_variant": args.ours_variant,
        "tutorial_layer": args.tutorial_layer,
    }
    bench = Bench(
        specs,
        profile_dir=args.profile,
        noise_budget=0 if args.smoke else 400,
        variant=args.ours_variant,
        tutorial_layer=args.tutorial_layer,
    )
    try:
        data["database"] = bench.database.kind
        data["scenarios"] = bench.run()
    except Exception:
        traceback.print_exc()
        raise
    finally:
        bench.close()
    data["seconds"] = round(time.monotonic() - started, 1)
    data["noise_repeats"] = bench.noise.repeats
    data["noise_budget_left"] = round(bench.noise.left, 1)
    data["load_average_after"] = os.getloadavg()
    print(f"bench finished in {data['seconds']} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.docs:
        for path in report.write(data, args.docs):
            print(f"wrote {path}")
    runs = [run for scenario in data["scenarios"].values() for run in scenario["runs"].values()]
    return 0 if all("error" not in run for run in runs) else 1
