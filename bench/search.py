"""`python -m bench.search`: search (issue 18) on PostgreSQL with 1,000,000 messages in 1,000
rooms, for a reader who belongs to 50 of them.

Through our server as deployed (chatsite.serve on a database of its own, Redis for the limits,
the per-user search limit raised): one-word, two-word and phrase queries, 200 of each, one at a
time and then 10 at once, p50 / p95 of `GET /api/search` as the client sees it; posting speed
with the index kept against with its upkeep skipped; and the EXPLAIN (ANALYZE) of the slowest
query. Prints the figures and writes them into docs/performance.md (its search section).

Needs DATABASE_URL naming a PostgreSQL server whose role may CREATE DATABASE.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .loadgen import percentile
from .servers import ROOT, Database, Ours, Redis, Site

PYTHON = sys.executable
TARGET_P95_MS = 50
MARK_BEGIN = "<!-- search bench: begin -->"
MARK_END = "<!-- search bench: end -->"


def run_seed(env: dict, *args: str, timeout: float = 1800) -> dict:
    out = subprocess.run(
        [PYTHON, "-m", "bench.search_seed", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench.search_seed {args[0]} failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(out.stdout)


class Searcher:
    def __init__(self, url: str, cookie_name: str, cookie: str) -> None:
        self.url, self.cookie = url, f"{cookie_name}={cookie}"
        self.local = threading.local()

    def ask(self, query: str) -> tuple[float, int]:
        request = urllib.request.Request(
            f"{self.url}/api/search?" + urllib.parse.urlencode({"q": query}),
            headers={"Cookie": self.cookie, "Accept": "application/json"},
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as answer:
            data = json.loads(answer.read())
        return time.perf_counter() - started, len(data["results"])


def measure(searcher: Searcher, queries: list[str], concurrency: int) -> dict:
    with ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(searcher.ask, queries))
    latencies = sorted(seconds for seconds, _ in answers)
    slowest = max(range(len(queries)), key=lambda i: answers[i][0])
    return {
        "queries": len(queries),
        "concurrency": concurrency,
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p95_ms": round(percentile(latencies, 95) * 1000, 1),
        "max_ms": round(latencies[-1] * 1000, 1),
        "mean_results": round(sum(n for _, n in answers) / len(answers), 1),
        "slowest": queries[slowest],
    }


def queries_of(seeded: dict, count: int, rng: random.Random) -> dict[str, list[str]]:
    words = seeded["words"]
    pool = words["common"] + words["middle"] + words["rare"]
    return {
        "one word": [rng.choice(pool) for _ in range(count)],
        "two words": [f"{rng.choice(pool)} {rng.choice(pool)}" for _ in range(count)],
        "phrase": [f'"{rng.choice(seeded["phrases"])}"' for _ in range(count)],
    }


def report(result: dict) -> str:
    rows = []
    for name, runs in result["queries"].items():
        for run in runs:
            rows.append(
                f"| {name} | {run['concurrency']} | {run['p50_ms']} | **{run['p95_ms']}** | "
                f"{run['max_ms']} | {run['mean_results']} |"
            )
    posting = result["posting"]
    seeded = result["seeded"]
    met = all(
        run["p95_ms"] <= TARGET_P95_MS
        for name in ("one word", "two words")
        for run in result["queries"][name]
    )
    lines = [
        MARK_BEGIN,
        "## Search (issue 18)",
        "",
        f"`python -m bench.search` (part of `make bench`) on {result['started']}: PostgreSQL with "
        f"{seeded['messages']:,} messages in {seeded['rooms']:,} private rooms, searched by a "
        f"reader who belongs to {seeded['member_of']} of them, through our server "
        "(`GET /api/search`, timed by the client over loopback). Bodies of 4 to 30 words from a "
        "Zipf distribution over a 30,000-word vocabulary; queries drawn from its common, middle "
        "and rare words, phrases from real messages of the reader's rooms. Seeding "
        f"(COPY, then the vectors and the GIN index): {json.dumps(seeded['timings'])}. "
        f"Load average before / after: {result['load_before']} / {result['load_after']}.",
        "",
        "| query | at once | p50 ms | p95 ms | max ms | results (of 20) |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        f"Target p95 ≤ {TARGET_P95_MS} ms for one- and two-word queries: "
        f"**{'met' if met else 'not met'}**. "
        f"Posting with the index kept: {posting['with_index']} posts/s against "
        f"{posting['without_index']} with its upkeep skipped ({posting['slowdown_percent']} % "
        f"slower; target ≤ 10 %), {posting['posts_each_way']} posts each way in alternating "
        "blocks, one transaction each, in a room of the seeded table.",
        "",
        f"The slowest query (`{result['slowest']}`), EXPLAIN (ANALYZE, BUFFERS):",
        "",
        "```",
        result["plan"],
        "```",
        MARK_END,
    ]
    return "\n".join(lines)


def write_docs(section: str, docs: Path) -> None:
    path = docs / "performance.md"
    text = path.read_text() if path.exists() else "# Performance\n"
    if MARK_BEGIN in text and MARK_END in text:
        before, rest = text.split(MARK_BEGIN, 1)
        after = rest.split(MARK_END, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rooms", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--posting-rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="where to write the raw results")
    parser.add_argument("--docs", type=Path, help="update performance.md in this directory")
    parser.add_argument("--smoke", action="store_true", help="10,000 messages, 20 queries")
    args = parser.parse_args(argv)
    if args.smoke:
        args.messages, args.rooms, args.queries, args.posting_rounds = 10_000, 100, 20, 1
    base = os.environ.get("DATABASE_URL", "")
    if not base.startswith(("postgres://", "postgresql://")):
        print("bench.search needs DATABASE_URL naming a PostgreSQL server; skipped.")
        return 0 if not args.smoke else 1
    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    database = Database(base)
    redis = Redis().start()
    server = None
    try:
        site = Site(database, redis.url, {"CHAT_RATE_LIMIT_SEARCH": "100000000"})
        started = time.monotonic()
        seeded = run_seed(
            site.env,
            "seed",
            "--messages",
            str(args.messages),
            "--rooms",
            str(args.rooms),
        )
        print(f"seeded in {time.monotonic() - started:.0f} s: {seeded['timings']}", flush=True)
        server = Ours(site).start()
        searcher = Searcher(server.url, seeded["cookie_name"], seeded["cookie"])
        rng = random.Random(18)
        result: dict = {"queries": {}, "seeded": {k: v for k, v in seeded.items() if k != "cookie"}}
        for name, queries in queries_of(seeded, args.queries, rng).items():
            searcher.ask(queries[0])  # warm
            result["queries"][name] = [
                measure(searcher, queries, 1),
                measure(searcher, queries, 10),
            ]
            for run in result["queries"][name]:
                print(f"{name:9} x{run['concurrency']:<2}: p50 {run['p50_ms']} ms, "
                      f"p95 {run['p95_ms']} ms, max {run['max_ms']} ms", flush=True)  # fmt: skip
        slowest = max(
            (run for runs in result["queries"].values() for run in runs if run["concurrency"] == 1),
            key=lambda run: run["max_ms"],
        )["slowest"]
        result["slowest"] = slowest
        result["plan"] = run_seed(site.env, "explain", slowest)["plan"]
        server.stop()
        server = None
        result["posting"] = run_seed(
            site.env, "posting", "--rounds", str(args.posting_rounds), "--per-round", "200"
        )
        print(f"posting: {result['posting']}", flush=True)
        result["started"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        result["load_before"] = load_before
        result["load_after"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
        section = report(result)
        print(section)
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
        if args.docs:
            write_docs(section, args.docs)
    finally:
        if server is not None:
            server.stop()
        redis.stop()
        database.drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
