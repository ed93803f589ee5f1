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
- the listen backlog is 2,048 connections, not Twisted's 50: a reconnect storm after a restart
  overflows 50 at once, and each overflowed client waits seconds to try again;
- the application and daphne's limit on WebSocket frames (2 MiB: daphne applies it to the frames
  it sends too, and a resume replay may be up to `CHAT_MAX_REPLAY_BYTES`) are filled in.

Any daphne option can be given (`-b`, `-p`, `--proxy-headers`, `-v` ...); see `daphne --help`.
The measurements behind each step are in docs/performance.md.

With `CHAT_TRANSPORT_STATS=1` the process logs at exit (INFO, `transport stats`) how its writes
went: TCP writes sent whole at once, in part, or queued by Twisted, and broadcast frames written
prepared (chat/realtime/transport.py). tests/test_transport.py runs the real daphne with it to
prove the fast paths are taken, in order, on the pinned Twisted, autobahn and daphne. The counts
are plain integer increments, always kept; only the report is switched on. A report at exit
rather than an endpoint: nothing more is served or needs guarding, and nothing more runs in a
normal process.
"""

import atexit
import logging
import os
import sys

APPLICATION = "chatsite.asgi:application"
MAX_MESSAGE_BYTES = 2 * 1024 * 1024
HANDSHAKE_TIMEOUT = 20


class WriteCounts:
    """TCP writes by the way they went (see `write_at_once`)."""

    __slots__ = ("at_once", "in_part", "queued")

    def __init__(self) -> None:
        self.at_once = self.in_part = self.queued = 0


writes = WriteCounts()


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
                    writes.at_once += 1
                    return
                writes.in_part += 1
                data = data[sent:]
        writes.queued += 1
        buffered(self, data)

    write.writes_at_once = True
    abstract.FileDescriptor.write = write


# Connections the kernel holds for daphne before it accepts them. Twisted's default is 50: when
# every page reconnects at once after a restart (a deploy), the rest of the SYNs overflow and
# their clients wait 1, 3, 7 s to try again (the bench's scenario S saw 11,000 overflows for
# 2,000 sockets). Linux caps it at net.core.somaxconn (4,096 by default).
LISTEN_BACKLOG = 2048


def listen_backlog(size: int = LISTEN_BACKLOG) -> None:
    """Listen with this backlog on daphne's TCP endpoints (`-b`/`-p` and `tcp:` strings), unless
    the endpoint string names its own (`-e tcp:8000:backlog=N`)."""
    from twisted.internet import endpoints

    parse = endpoints._serverParsers["tcp"]
    if getattr(parse, "backlog", None) == size:
        return

    def parse_tcp(factory, port, interface="", backlog=None):
        return parse(factory, port, interface, size if backlog is None else backlog)

    parse_tcp.backlog = size
    endpoints._serverParsers["tcp"] = parse_tcp


def cache_redis_version() -> None:
    import functools

    import redis.utils

    if not hasattr(redis.utils.get_lib_version, "cache_info"):
        redis.utils.get_lib_version = functools.cache(redis.utils.get_lib_version)


def report_transport_stats() -> None:
    """Log how this process's writes went (once, at exit)."""
    from chat.realtime import transport

    counts = {name: getattr(writes, name) for name in WriteCounts.__slots__}
    counts |= {name: getattr(transport.frames, name) for name in transport.FrameCounts.__slots__}
    logging.getLogger("chatsite.serve").info("transport stats", extra=counts)


def main(argv: list[str] | None = None, *, direct_writes: bool = True) -> None:
    """Run daphne with these arguments (default: the command line's).

    `direct_writes` is on in production; the bench turns it off to measure what it is worth
    (bench/variants.py).
    """
    args = sys.argv[1:] if argv is None else argv
    # Before daphne.server is imported: it installs the reactor.
    if direct_writes:
        write_at_once()
    if os.environ.get("CHAT_TRANSPORT_STATS") == "1":
        atexit.register(report_transport_stats)
    cache_redis_version()
    listen_backlog()
    from daphne.cli import CommandLineInterface

    from chat.realtime import transport  # after daphne.cli: daphne installs its reactor first

    transport.daphne_serves = True

    CommandLineInterface().run(
        [
            "--websocket-max-message-size",
            str(MAX_MESSAGE_BYTES),
            "--no-server-name",  # no `Server: daphne` banner on responses and handshakes
            # A handshake may take this long (daphne's Server default; its command line's is
            # 5 s): in a reconnect storm a handshake waits its turn for seconds, and one cut off
            # at 5 s is only made again (scenario S: 649 of 3,265 failed attempts).
            "--websocket_connect_timeout",
            str(HANDSHAKE_TIMEOUT),
            *args,
            APPLICATION,
        ]
    )


if __name__ == "__main__":
    main()
