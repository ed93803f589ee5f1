"""Summarise py-spy's raw (collapsed) stacks: where a server process spent its samples.

`python -m bench.hotspots profile.txt [--top 30] [--thread-main]` prints, per function, the share
of samples in which it was on the stack (inclusive) and at the top (self). Record profiles with
`python -m bench --profile DIR ...` (py-spy record attached to each of our daphne processes).
"""

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<name>.+?) \((?P<where>[^()]*)\)$")


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for frame in stack.split(";"):
            found = FRAME.match(frame)
            if found:
                where = found["where"].rsplit(":", 1)[0]
                frames.append(f"{found['name']} ({where})")
            else:
                frames.append(frame)
        stacks.append((frames, int(count)))
    return stacks


def summarise(stacks: list[tuple[list[str], int]], top: int) -> str:
    total = sum(count for _, count in stacks)
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for frames, count in stacks:
        for name in set(frames):
            inclusive[name] += count
        if frames:
            own[frames[-1]] += count
    lines = [f"{total} samples"]
    lines.append("inclusive (on the stack):")
    for name, count in inclusive.most_common(top):
        lines.append(f"  {100 * count / total:5.1f}%  {name}")
    lines.append("self (at the top):")
    for name, count in own.most_common(top):
        lines.append(f"  {100 * count / total:5.1f}%  {name}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--grep", help="only stacks through a frame containing this text (e.g. Hub._read)"
    )
    args = parser.parse_args()
    stacks = load(args.profile)
    if args.grep:
        stacks = [(f, c) for f, c in stacks if any(args.grep in x for x in f)]
    print(summarise(stacks, args.top))


if __name__ == "__main__":
    main()
