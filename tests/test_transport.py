"""chat/transport.py: a broadcast frame is framed once and written straight to daphne's connection.

The sockets here are daphne's own protocol objects on Twisted's in-memory transport; the
end-to-end path (daphne, Redis, many sockets) is covered by the delivery tests and the bench.
"""

import base64
import os
from functools import partial

import pytest
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from daphne.ws_protocol import WebSocketProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from chat.transport import Outgoing, connection_of, write


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
