"""`python -m chatsite.serve [daphne options]`: daphne serving the site, set up for fan-out.

Every place that runs the site (`make run`, the Docker image, the tests, the bench) starts it
through here, so they all run the same server:

- a frame is written to the socket at once when nothing is queued before it, as asyncio's own
  transports do. Twisted instead queues every write and asks the event loop to report the socket
  writable (one `epoll_ctl` to register, one `send` on the next pass, one `epoll_ctl` to
  unregister): three system calls per frame. Undoing this costs about a fifth of the deliveries
  per second in the bench (docs/performance.md);
- redis-py's version is looked up once: it reads it from the installed package's metadata for
  every new connection (a scan of site-packages, on the event loop: 1 to 100 ms each time a
  connection pool grows, seen as stalls in the bench);
- the application and daphne's limit on WebSocket frames (2 MiB: daphne applies it to the frames
  it sends too, and a resume replay may be up to `CHAT_MAX_REPLAY_BYTES`) are filled in.

Any daphne option can be given (`-b`, `-p`, `--proxy-headers`, `-v` ...); see `daphne --help`.
The measurements behind each step are in docs/performance.md.
"""

import sys

APPLICATION = "chatsite.asgi:application"
MAX_MESSAGE_BYTES = 2 * 1024 * 1024


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


def main(argv: list[str] | None = None, *, direct_writes: bool = True) -> None:
    """Run daphne with these arguments (default: the command line's).

    `direct_writes` is on in production; the bench turns it off to measure what it is worth
    (bench/variants.py).
    """
    args = sys.argv[1:] if argv is None else argv
    # Before daphne.server is imported: it installs the reactor.
    if direct_writes:
        write_at_once()
    cache_redis_version()
    from daphne.cli import CommandLineInterface

    CommandLineInterface().run(
        [
            "--websocket-max-message-size",
            str(MAX_MESSAGE_BYTES),
            "--no-server-name",  # no `Server: daphne` banner on responses and handshakes
            *args,
            APPLICATION,
        ]
    )


if __name__ == "__main__":
    main()
