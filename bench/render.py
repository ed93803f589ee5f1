"""How long one message takes to render (chat/rendering.py), for 4,000-character bodies.

`python -m bench.render` (also the first step of `make bench`): prints the median and the 95th
percentile per body kind, for the two parts of a render. `parse` (Markdown, HTML, sanitizer) runs
on a render thread before the database is asked (chat.services.submit_post/submit_edit);
`mentions + html` (which `@name`s are readers, the spans put in) runs on the database thread.
A figure to read, not a test: the target is under 2 ms for an ordinary 4,000-character message
(issue 17); hostile shapes may take longer and are listed beside it.
"""

import argparse
import statistics
import time
from collections.abc import Callable

from chat import rendering

LENGTH = 4000


def _fill(unit: str) -> str:
    return (unit * (LENGTH // len(unit) + 1))[:LENGTH]


BODIES: dict[str, str] = {
    # What people write: paragraphs with some emphasis, a link, a list, a quote, a code span.
    "chat prose with Markdown": _fill(
        "Deploy went out at *10:42*; the **queue** drained in `3 s`. Notes: "
        "[runbook](https://example.com/runbook) and https://example.com/status.\n"
        "- first check the logs\n- then the metrics\n\n> quoting the last incident\n\n"
    ),
    "plain text, no Markdown": _fill("just some words typed into the box without markup "),
    "one fenced code block": "```python\n"
    + _fill("for item in items:\n    total += item\n")[: LENGTH - 16]
    + "\n```",
    "mentions (10 users)": _fill("ping @alice and @bob about it, "),
    # Hostile shapes: each makes one part of the pipeline work hardest.
    "hostile: bare links": _fill("www.example.com "),
    "hostile: unclosed emphasis": _fill("*a "),
    "hostile: nested brackets": _fill("[a]("),
    "hostile: quotes 1,000 deep": _fill("> "),
    "hostile: 4,000 backticks": "`" * LENGTH,
    "hostile: 1,333 @names": _fill("@a "),
}
MENTIONS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]


def measure(render: Callable[[], object], runs: int) -> tuple[float, float]:
    for _ in range(3):
        render()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        render()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.render", description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args(argv)
    print(f"Rendering one {LENGTH:,}-character body (renderer v{rendering.RENDERER_VERSION}):")
    print(f"{'':<28} {'parse (render thread)':>22} {'mentions + html (db)':>22}")
    print(f"{'body':<28} {'median ms':>10} {'p95 ms':>11} {'median ms':>10} {'p95 ms':>11}")
    readers = {name: name for name in MENTIONS}
    for name, body in BODIES.items():
        assert len(body) <= LENGTH, name
        document = rendering.parse(body)

        def finish(document: rendering.Document = document) -> str:
            return document.html(document.mentions(readers))

        parse_median, parse_p95 = measure(lambda body=body: rendering.parse(body), args.runs)
        finish_median, finish_p95 = measure(finish, args.runs)
        print(
            f"{name:<28} {parse_median:>10.2f} {parse_p95:>11.2f}"
            f" {finish_median:>10.3f} {finish_p95:>11.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
