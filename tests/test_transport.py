"""chat/realtime/transport.py and chatsite/serve.py: a broadcast frame is framed once and written
straight to daphne's connection, and a TCP write goes out at once when nothing waits before it.

The first tests use daphne's own protocol objects on Twisted's in-memory transport. Then the real
daphne (`python -m chatsite.serve`, on the locked Twisted, autobahn and daphne) proves both paths
are taken and keep every socket's frames in order through a burst, and the fallback when daphne
hands a socket no connection.
"""

import asyncio
import base64
import json
import logging
import os
import socket as sockets
from functools import partial

import pytest
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from channels.db import database_sync_to_async
from daphne.ws_protocol import WebSocketProtocol
from django.conf import settings
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from websockets.asyncio.client import connect

from chat.realtime import transport
from chat.realtime.transport import Outgoing, connection_of, write
from tests.helpers import close_all, create_room, create_user, join, session_cookie_for
from tests.wsclient import Client


def connection() -> WebSocketServerProtocol:
    """An autobahn server connection (daphne's base class) after a real opening handshake,
    writing into memory."""
    factory = WebSocketServerFactory("ws://127.0.0.1:8000")
    factory.protocol = WebSocketServerProtocol
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    key = base64.b64encode(os.urandom(16)).decode()
    protocol.dataReceived(
        (
            "GET /ws/rooms/lobby/ HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    assert protocol.state == protocol.STATE_OPEN, transport.value()
    transport.clear()
    return protocol


@pytest.mark.parametrize("length", [0, 5, 125, 126, 65535, 65536, 300_000])
def test_a_prepared_frame_is_byte_for_byte_what_daphne_would_send(length: int):
    text = ('{"type":"message","body":"' + "é" * length)[: length or 1]
    frame = Outgoing(text)
    fast, asgi = connection(), connection()

    write(fast, frame)
    asgi.sendMessage(text.encode())  # daphne's serverSend for {"type": "websocket.send", ...}

    assert fast.transport.value() == asgi.transport.value()
    assert fast.transport.value().endswith(text.encode())


def test_one_frame_is_encoded_once_for_every_socket():
    frame = Outgoing('{"type":"presence"}')
    sockets = [connection() for _ in range(3)]
    for socket in sockets:
        write(socket, frame)
    assert frame.prepared is frame.prepared
    assert len({socket.transport.value() for socket in sockets}) == 1


def test_a_closing_or_closed_connection_gets_nothing_more():
    closing = connection()
    closing.sendClose(code=4403)
    closing.transport.clear()
    write(closing, Outgoing("{}"))
    assert closing.state == closing.STATE_CLOSING
    assert closing.transport.value() == b""

    closed = connection()
    closed.connectionLost(Failure(ConnectionDone()))
    assert closed.state == closed.STATE_CLOSED
    write(closed, Outgoing("{}"))
    assert closed.transport.value() == b""


def test_only_daphnes_send_leads_to_its_connection():
    class Server:
        async def handle_reply(self, protocol, message):
            pass

    socket = WebSocketProtocol()  # daphne's own connection class
    assert connection_of(partial(Server().handle_reply, socket)) is socket

    async def wrapped_send(message):
        pass

    assert connection_of(wrapped_send) is None  # e.g. channels' test communicator
    assert connection_of(partial(Server().handle_reply, object())) is None
    assert connection_of(partial(print)) is None


# --- the real daphne -----------------------------------------------------------------------

BURST = 120
# Each frame carries the body twice (`body` and its rendered `html`): 120 frames of about 50 KB
# are 6 MB for each socket, more than the kernel buffers of a stalled one.
BODY = 25_000


@database_sync_to_async
def burst_room() -> tuple[str, dict[str, str]]:
    users = {name: create_user(name) for name in ("omkar", "bob", "cy")}
    room = create_room("Burst", users["omkar"])
    return room.slug, {name: session_cookie_for(user) for name, user in users.items()}


async def open_stalled(server_url: str, cookie: str, slug: str) -> Client:
    """A socket that reads `ready` and then nothing until asked: a tiny receive buffer, and the
    client stops reading the connection once one frame waits, so daphne's writes back up."""
    sock = sockets.socket()
    sock.setsockopt(sockets.SOL_SOCKET, sockets.SO_RCVBUF, 4096)  # before connecting: the window
    sock.setblocking(False)
    port = int(server_url.rsplit(":", 1)[1])
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    connection = await connect(
        f"{server_url.replace('http://', 'ws://')}/ws/rooms/{slug}/",
        sock=sock,
        additional_headers={
            "Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}",
            "Origin": server_url,
        },
        max_size=2**22,
        max_queue=1,
    )
    client = Client(connection)
    client.ready = await client.receive()
    return client


async def messages_in_order(client, start: int, bodies: list[str]) -> None:
    """The burst's `message` frames, each once, as cursors start+1, start+2, ... in post order."""
    for n, body in enumerate(bodies, start=1):
        frame = await client.receive_type("message", timeout=30)
        assert frame["cursor"] == start + n
        assert frame["message"]["body"] == body


def transport_stats(output: str) -> dict:
    for line in output.splitlines():
        if line.startswith("{") and json.loads(line)["message"] == "transport stats":
            return json.loads(line)
    raise AssertionError(f"no transport stats in the server's log:\n{output[-2000:]}")


async def test_the_real_daphne_writes_broadcasts_prepared_and_at_once_in_order(daphne_factory):
    server = daphne_factory(
        CHAT_TRANSPORT_STATS="1",
        DJANGO_LOG_LEVEL="INFO",
        CHAT_MAX_BODY=str(BODY),
        CHAT_RATE_LIMIT_POSTS="1000",
    )
    slug, cookies = await burst_room()
    poster = await Client.open(server.url, cookies["omkar"], slug)
    readers = [await Client.open(server.url, cookies["bob"], slug) for _ in range(2)]
    stalled = await open_stalled(server.url, cookies["cy"], slug)
    start = poster.ready["cursor"]
    bodies = [f"{n:03d} " + "x" * (BODY - 4) for n in range(BURST)]

    for n, body in enumerate(bodies):
        await poster.send({"type": "post", "body": body, "client_id": f"burst-{n}"})
    for client in (poster, *readers):
        await messages_in_order(client, start, bodies)
    # The stalled socket's frames waited in Twisted's buffer behind the kernel's: still in order.
    await messages_in_order(stalled, start, bodies)
    for client in (poster, *readers, stalled):
        await client.close()
    server.stop()

    stats = transport_stats(server.output())
    # Every message frame on every socket went out prepared (none through the ASGI `send`) ...
    assert stats["prepared"] >= 4 * BURST
    # ... and written at once, but for the stalled socket's: once the kernel's buffers were full
    # (4 MiB at most here), the kernel took part of one and Twisted queued the rest, and later
    # frames queued behind them: far more writes than the few HTTP answers that may queue.
    assert stats["at_once"] >= 3 * BURST
    assert stats["in_part"] + stats["queued"] >= BURST // 4


class Warnings(logging.Handler):
    """chat.realtime.transport's warnings. Not pytest's caplog: importing the ASGI application sets
    Django's logging up again, which removes the handlers on the root logger."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def transport_warnings():
    import chatsite.asgi  # noqa: F401  (its logging set-up would remove a handler added before)

    handler = Warnings()
    logging.getLogger("chat.realtime.transport").addHandler(handler)
    yield handler.messages
    logging.getLogger("chat.realtime.transport").removeHandler(handler)


@pytest.mark.django_db(transaction=True)
async def test_without_daphnes_connection_frames_go_through_asgi_in_order_and_it_is_said_once(
    monkeypatch, transport_warnings, sockets_closed
):
    """A socket whose `send` is not daphne's partial (here channels' communicator) in a process
    that runs daphne: one warning for the process, and frames still arrive, in order."""
    monkeypatch.setattr(transport, "daphne_serves", True)
    monkeypatch.setattr(transport, "_warned", False)
    alice = await database_sync_to_async(create_user)("alice")
    bob = await database_sync_to_async(create_user)("bob")
    room = await database_sync_to_async(create_room)("Fallback", alice)
    sockets_open = [await join(user, room.slug) for user in (alice, bob, bob)]
    start = sockets_open[0].ready["cursor"]
    bodies = [f"in order {n}" for n in range(8)]
    for body in bodies:
        await sockets_open[0].send({"type": "post", "body": body})
    for socket in sockets_open:
        await messages_in_order(socket, start, bodies)
    assert len(transport_warnings) == 1, transport_warnings
    assert "does not lead to its connection" in transport_warnings[0]
    await close_all()


def test_a_socket_outside_daphne_takes_the_asgi_path_without_a_warning(
    monkeypatch, transport_warnings
):
    monkeypatch.setattr(transport, "daphne_serves", False)
    monkeypatch.setattr(transport, "_warned", False)

    async def send(message):
        pass

    assert connection_of(send) is None
    assert transport_warnings == []


def test_daphne_listens_with_a_backlog_for_a_reconnect_storm():
    """Twisted's default backlog is 50: 2,000 pages reconnecting at once after a restart overflow
    it and wait seconds to retry (scenario S). chatsite.serve raises it; an endpoint string's own
    `backlog=` still wins. In a subprocess: the test process's reactor is not daphne's."""
    import subprocess
    import sys

    script = (
        "from chatsite.serve import listen_backlog, LISTEN_BACKLOG; listen_backlog()\n"
        "from twisted.internet import reactor, endpoints\n"
        "from twisted.internet.protocol import Factory\n"
        "ports = []\n"
        "for text in ('tcp:port=0:interface=127.0.0.1', 'tcp:0:interface=127.0.0.1:backlog=7'):\n"
        "    endpoint = endpoints.serverFromString(reactor, text)\n"
        "    endpoint.listen(Factory()).addCallback(ports.append)\n"
        "print(LISTEN_BACKLOG, *(port.backlog for port in ports))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    size, default, named = map(int, result.stdout.split())
    assert size >= 1024 and default == size and named == 7
