"""Experiments on our server: chatsite/serve.py with one of its steps undone, or instrumented.

`python -m bench.variants NAMES -- <daphne arguments>` applies the comma-separated variants and
then runs the site as `python -m chatsite.serve` does. `python -m bench --ours-variant NAMES`
uses it to put a number on each step of the server's tuning (docs/performance.md); none of this
is meant for production.

Undo one step of the product's tuning:
- `twistedwrite`: Twisted's own write path (buffer, wait for writable) instead of writing at once.
- `gcdefault`: Python's default garbage collection (no `gc.freeze()`, thresholds 700, 10, 10).
- `asgisend`: every frame through the ASGI `send` (daphne encodes and autobahn frames it for
  each socket) instead of chat/realtime/transport.py's frame-once path.
- `authstack`: channels' AuthMiddlewareStack and origin validator instead of chat/security.py's
  WebSocketGate (the session wrapper runs on every frame sent).

Try:
- `uvloop`: daphne's reactor on a uvloop event loop (`pip install uvloop`). It gave +50% before
  broadcast frames were framed once and written at once; after, no measurable difference.

Instrument:
- `gcstats`: log every garbage collection over 5 ms to $BENCH_GC_LOG.
- `stalls`: log every event-loop stall over 20 ms to $BENCH_STALL_LOG (a watchdog thread).
- `tracemalloc`: trace allocations; SIGUSR1 dumps a snapshot (where per-socket memory goes).
"""

import sys

SERVE_STEPS = {"twistedwrite": "direct_writes"}


def uvloop() -> None:
    import asyncio

    import uvloop as _uvloop

    asyncio.set_event_loop_policy(_uvloop.EventLoopPolicy())  # before daphne makes its loop


def gcdefault() -> None:
    import gc

    import chatsite.asgi  # noqa: F401  (its import tunes the collector: undo that)

    gc.unfreeze()
    gc.set_threshold(700, 10, 10)


def asgisend() -> None:
    import importlib

    import chatsite.asgi  # noqa: F401  (sets Django up before chat's models are imported)

    consumers = importlib.import_module("chat.realtime.consumers")
    consumers.connection_of = lambda send: None


def authstack() -> None:
    """The WebSocket stack as channels' tutorial builds it, with our origin rule."""
    from channels.auth import AuthMiddlewareStack
    from channels.routing import URLRouter

    import chatsite.asgi
    from chat import security
    from chat.realtime.routing import websocket_urlpatterns

    class SameOriginValidator:
        def __init__(self, application) -> None:
            self.application = application

        async def __call__(self, scope, receive, send):
            headers = dict(scope.get("headers", []))
            origin = headers.get(b"origin", b"").decode("latin-1") or None
            host = headers.get(b"host", b"").decode("latin-1") or None
            if security.allowed_origin(origin, host, scope.get("scheme", "ws")):
                return await self.application(scope, receive, send)
            return await security.WebsocketDenier()(scope, receive, send)

    class SessionKey:
        """The consumer reads `session_key`; the stack gives it the session."""

        def __init__(self, application) -> None:
            self.application = application

        async def __call__(self, scope, receive, send):
            key = scope["session"].session_key if scope["user"].is_authenticated else None
            return await self.application({**scope, "session_key": key}, receive, send)

    stack = SameOriginValidator(AuthMiddlewareStack(SessionKey(URLRouter(websocket_urlpatterns))))
    chatsite.asgi.application.application_mapping["websocket"] = stack


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


def stalls() -> None:
    """A watchdog thread asks daphne's loop for a callback every 5 ms; late answers are logged,
    with what the loop's thread was running 30 ms into the stall."""
    import os
    import threading
    import time
    import traceback

    path = os.environ.get("BENCH_STALL_LOG", "/tmp/bench-stalls.log")
    main_thread = threading.main_thread().ident

    def running() -> str:
        frame = sys._current_frames().get(main_thread)
        stack = traceback.extract_stack(frame)[-12:] if frame else []
        return " < ".join(
            f"{f.name} ({os.path.basename(f.filename)}:{f.lineno})" for f in stack[::-1]
        )

    def watch() -> None:
        while "daphne.server" not in sys.modules:
            time.sleep(0.1)
        loop = sys.modules["daphne.server"].twisted_loop
        while not loop.is_running():
            time.sleep(0.1)
        answered = threading.Event()
        while True:
            answered.clear()
            asked = time.perf_counter()
            loop.call_soon_threadsafe(answered.set)
            where = "" if answered.wait(0.03) else running()
            answered.wait()
            late = (time.perf_counter() - asked) * 1000
            if late > 20:
                with open(path, "a") as log:
                    log.write(f"{time.time():.3f} {os.getpid()} stall {late:.1f} ms {where}\n")
            time.sleep(0.005)

    threading.Thread(target=watch, daemon=True, name="stall-watch").start()


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
    "asgisend": asgisend,
    "gcdefault": gcdefault,
    "authstack": authstack,
    "gcstats": gcstats,
    "stalls": stalls,
    "tracemalloc": tracemalloc,
}


def main() -> None:
    names, separator, *daphne_args = sys.argv[1:]
    assert separator == "--", "usage: python -m bench.variants NAMES -- daphne arguments"
    steps = {}
    for name in filter(None, names.split(",")):
        if name in SERVE_STEPS:
            steps[SERVE_STEPS[name]] = False
        else:
            PATCHES[name]()
    from chatsite.serve import main as serve

    serve(daphne_args, **steps)


if __name__ == "__main__":
    main()
