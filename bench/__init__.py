"""Fan-out benchmark: our chat server against a tutorial Channels consumer and a raw ceiling.

`python -m bench` (or `make bench`) runs the standard scenarios of issue 9 and writes
docs/performance.md and docs/performance.png. See docs/performance.md for what is measured.
"""
