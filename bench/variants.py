"""Experiments on our server without touching chat/: daphne with patches applied at start.

`python -m bench.variants PATCHES -- <daphne arguments>` applies the comma-separated patches and
then runs daphne's command line. Used by `python -m bench --ours-variant ...` to put a number on
each recommendation in docs/performance.md; none of this is meant for production as it is.

- `uvloop`: daphne's Twisted reactor on a uvloop event loop instead of asyncio's default.
- `fastsend`: channels' session middleware wraps every `send` to save a modified session before
  `http.response.start`; WebSocket frames skip the wrapper's checks (what a consumer that keeps
  the raw ASGI `send` for broadcasts would get).
- `directwrite`: Twisted buffers every write and registers the socket with the event loop
  (two epoll_ctl calls per frame); write at once when nothing is buffered, as asyncio does.
- `gcstats`: log every garbage collection over 5 ms to $BENCH_GC_LOG.
- `gcthreshold`: collect less often (gc.set_threshold(50_000, 20, 100)).
- `gcfreeze`: gc.freeze() three seconds after start.
- `tracemalloc`: trace allocations; SIGUSR1 dumps a snapshot (where per-socket memory goes).
"""

import sys


def uvloop() -> None:
    import asyncio

    import uvloop as _uvloop

    asyncio.set_event_loop_policy(_uvloop.EventLoopPolicy())


def fastsend() -> None:
    from channels.sessions import InstanceSessionWrapper

    wrapped = InstanceSessionWrapper.send

    async def send(self, message):
        if message["type"] == "websocket.send":
            return await self.real_send(message)
        return await wrapped(self, message)

    InstanceSessionWrapper.send = send


def directwrite() -> None:
    from twisted.internet import abstract, tcp

    buffered = abstract.FileDescriptor.write

    def write(self, data: bytes) -> None:
        if (
            data
            and isinstance(self, tcp.Connection)
            and self.connected
            and not self._writeDisconnected
            and not self.dataBuffer
            and not self._tempDataBuffer
            and not getattr(self, "TLS", False)
        ):
            sent = self.writeSomeData(data)
            if isinstance(sent, int) and sent >= 0:
                if sent == len(data):
                    return
                data = data[sent:]
        buffered(self, data)

    abstract.FileDescriptor.write = write


def gcstats() -> None:
    """Append every garbage collection over 5 ms to $BENCH_GC_LOG: generation, ms, objects."""
    import gc
    import os
    import time

    path = os.environ.get("BENCH_GC_LOG", "/tmp/bench-gc.log")
    started = [0.0]

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - started[0]) * 1000
        if ms > 5:
            with open(path, "a") as log:
                log.write(
                    f"{time.time():.3f} gen{info['generation']} {ms:.1f} ms "
                    f"{info['collected']} collected\n"
                )

    gc.callbacks.append(callback)


def gcthreshold() -> None:
    """Fewer full collections: gen2 only after 100 gen1 runs (default 10), gen0 at 50,000."""
    import gc

    gc.set_threshold(50_000, 20, 100)


def gcfreeze() -> None:
    """gc.freeze() once the application is loaded: Django's and the app's start-up objects
    (most of the heap) move to the permanent generation; full collections stop traversing them."""
    import gc
    import threading

    threading.Timer(3, gc.freeze).start()  # the bench waits for /healthz before connecting


def tracemalloc() -> None:
    """Trace allocations; each SIGUSR1 dumps a snapshot to $BENCH_TRACEMALLOC.<n>."""
    import os
    import signal
    import tracemalloc as _tracemalloc

    _tracemalloc.start(4)
    path = os.environ.get("BENCH_TRACEMALLOC", "/tmp/bench-tracemalloc")
    count = [0]

    def dump(signum, frame) -> None:
        count[0] += 1
        _tracemalloc.take_snapshot().dump(f"{path}.{count[0]}")

    signal.signal(signal.SIGUSR1, dump)


PATCHES = {
    "uvloop": uvloop,
    "fastsend": fastsend,
    "directwrite": directwrite,
    "gcstats": gcstats,
    "gcthreshold": gcthreshold,
    "gcfreeze": gcfreeze,
    "tracemalloc": tracemalloc,
}


def main() -> None:
    names, separator, *daphne_args = sys.argv[1:]
    assert separator == "--", "usage: python -m bench.variants PATCHES -- daphne arguments"
    # Before daphne.server is imported: it creates its event loop (uvloop's, once the policy is
    # set) and installs the reactor on import.
    for name in filter(None, names.split(",")):
        PATCHES[name]()
    from daphne.cli import CommandLineInterface

    sys.argv = ["daphne", *daphne_args]
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
