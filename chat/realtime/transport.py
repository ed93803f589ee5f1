"""One frame to many sockets: encoded and framed once, then one write per socket.

A broadcast puts the same bytes on every socket in the room. Sent through the ASGI `send`, each
copy would pass channels' consumer, daphne's reply handling, a UTF-8 encode and autobahn's
framing: at 1,000 receivers that was most of the time a message took to reach everyone. Autobahn
(daphne's WebSocket implementation) has prepared messages for exactly this: frame once, then
`sendPreparedMessage` is a single write on each connection.

The hub hands `Outgoing` frames to sockets; a socket served by daphne writes the prepared frame
to its connection, any other server (or a test's communicator) gets the text through ASGI.
Ordering is kept: daphne's ASGI `send` also writes synchronously, so frames sent either way
reach the connection in the order they were sent.

This leans on how daphne builds `send` (below) and on autobahn's prepared messages, both pinned in
requirements.lock; tests/test_transport.py runs the real daphne to prove the path is taken. If a
daphne under `chatsite.serve` ever hands a socket no connection, frames go through ASGI (slower,
still in order) and the process logs one warning.
"""

import logging
from functools import partial

from autobahn.websocket.protocol import PreparedMessage, WebSocketProtocol

logger = logging.getLogger(__name__)

# Set by chatsite.serve: this process is daphne's, so every socket's `send` should lead to its
# connection, and one that does not is worth a warning (once: it would be every socket's).
daphne_serves = False
_warned = False


class FrameCounts:
    """Broadcast frames written prepared (reported by chatsite.serve with CHAT_TRANSPORT_STATS)."""

    __slots__ = ("prepared",)

    def __init__(self) -> None:
        self.prepared = 0


frames = FrameCounts()


class Outgoing:
    """A server frame for many sockets: its text, and its wire bytes once someone needs them."""

    __slots__ = ("_prepared", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._prepared: PreparedMessage | None = None

    @property
    def prepared(self) -> PreparedMessage:
        if self._prepared is None:
            # Unmasked (server to client) and never compressed: daphne does not offer
            # permessage-deflate, and an uncompressed message is valid on a connection that has it.
            self._prepared = PreparedMessage(
                self.text.encode(), isBinary=False, applyMask=False, doNotCompress=True
            )
        return self._prepared

    def __repr__(self) -> str:
        return f"Outgoing({self.text[:60]!r})"


def connection_of(send) -> WebSocketProtocol | None:
    """The autobahn connection behind an ASGI `send` that daphne made, else None.

    Daphne gives each connection `partial(Server.handle_reply, protocol)` as its `send`. Anything
    else (another server, channels' test communicator, a middleware wrapping `send`) is None,
    and frames go through `send` as usual.
    """
    if isinstance(send, partial) and send.args and isinstance(send.args[0], WebSocketProtocol):
        return send.args[0]
    if daphne_serves:
        _warn_no_connection()
    return None


def _warn_no_connection() -> None:
    global _warned
    if not _warned:
        _warned = True
        logger.warning(
            "daphne's send does not lead to its connection: broadcast frames go through ASGI "
            "(slower, still in order); check chat/realtime/transport.py against the daphne version"
        )


def write(connection: WebSocketProtocol, frame: Outgoing) -> None:
    """Write a prepared frame if the connection is open; a closing one gets nothing more, as
    daphne drops replies to a connection that has gone."""
    if connection.state == WebSocketProtocol.STATE_OPEN:
        connection.sendPreparedMessage(frame.prepared)
        frames.prepared += 1
