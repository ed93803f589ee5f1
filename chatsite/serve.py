"""`python -m chatsite.serve [daphne options]`: daphne serving the site, set up for fan-out.

Every place that runs the site (`make run`, the Docker image, the tests, the bench) starts it
through here, so they all run the same server:

- daphne's Twisted reactor runs on a uvloop event loop (about +50% deliveries per second);
- a frame is written to the socket at once when nothing is queued before it, as asyncio's own
  transports do. Twisted instead queues every write and asks the event loop to report the socket
  writable (one `epoll_ctl` to register, one `send` on the next pass, one `epoll_ctl` to
  unregister): three system calls per frame, and at 1,000 receivers per message that was the
  largest single cost of a broadcast (+84% deliveries per second without it);
- redis-py's version is looked up once: it reads it from the installed package's metadata for
  every new connection (a scan of site-packages, on the event loop: 1 to 100 ms each time a
  connection pool grows, seen as stalls in the bench);
- the application and daphne's limit on WebSocket frames (2 MiB: daphne applies it to the frames
  it sends too, and a resume replay may be up to `CHAT_MAX_REPLAY_BYTES`) are filled in.

Any daphne option can be given (`-b`, `-p`, `--proxy-headers`, `-v` ...); see `daphne --help`.
The measurements behind each step are in docs/performance.md.
"""

import asyncio
import sys

APPLICATION = "chatsite.asgi:application"
MAX_MESSAGE_BYTES = 2 * 1024 * 1024


def use_uvloop() -> None:
    """Make new event loops uvloop's; daphne creates its loop when `daphne.server` is imported."""
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def write_at_once() -> None:
    """Send a TCP connection's data straight away when nothing is waiting before it.

    Whatever the kernel does not take (or an error) goes through Twisted's own buffered path, so
    ordering, flow control (producers) and error handling stay Twisted's.
    """
    from twisted.internet import abstract, tcp

    buffered = abstract.FileDescriptor.write
    if getattr(buffered, "writes_at_once", False):
        return

    def write(self, data: bytes) -> None:
        if (
            data
            and isinstance(self, tcp.Connection)
            and self.connected
            and not self.disconnecting
            and not self._writeDisconnected
            and not self.dataBuffer
            and not self._tempDataBuffer
            and not getattr(self, "TLS", False)
        ):
            sent = self.writeSomeData(data)
            if isinstance(sent, int) and sent > 0:
                if sent == len(data):
                    return
                data = data[sent:]
        buffered(self, data)

    write.writes_at_once = True
    abstract.FileDescriptor.write = write


def cache_redis_version() -> None:
    import functools

    import redis.utils

    if not hasattr(redis.utils.get_lib_version, "cache_info"):
        redis.utils.get_lib_version = functools.cache(redis.utils.get_lib_version)


def main(argv: list[str] | None = None, *, uvloop: bool = True, direct_writes: bool = True):
    """Run daphne with these arguments (default: the command line's).

    `uvloop` and `direct_writes` are on in production; the bench turns them off one at a time
    to measure what each is worth (bench/variants.py).
    """
    args = sys.argv[1:] if argv is None else argv
    # Both before daphne.server is imported: it makes its event loop and installs the reactor.
    if uvloop:
        use_uvloop()
    if direct_writes:
        write_at_once()
    cache_redis_version()
    from daphne.cli import CommandLineInterface

    CommandLineInterface().run(
        ["--websocket-max-message-size", str(MAX_MESSAGE_BYTES), *args, APPLICATION]
    )


if __name__ == "__main__":
    main()
