"""The session watcher: sockets whose session ended close with 4401.

Channels checks the session only when a socket opens. Logging out, changing the password, the
session expiring or the account being deactivated must close that user's open sockets too, on
every process: each process checks its own sockets' sessions against the database every
CHAT_SESSION_CHECK_INTERVAL seconds, in one query for all of them; a session is decoded again
only when its data or its user's password changed since it was last found standing.
"""

from collections.abc import Iterable
from typing import TYPE_CHECKING

from channels.db import database_sync_to_async

from .. import selectors
from .protocol import CloseCode

if TYPE_CHECKING:
    from .hub import Socket


# Sessions found standing, with what they were judged on (selectors.revoked_sessions): one map
# for the process (the verdict depends only on those values), used from the database thread.
_standing: dict[str, tuple] = {}


async def close_revoked(sockets: Iterable["Socket"]) -> int:
    """Close the sockets whose session no longer stands; returns how many."""
    sockets = [socket for socket in sockets if socket.session_key]
    if not sockets:
        return 0
    revoked = await database_sync_to_async(selectors.revoked_sessions)(
        [(socket.session_key, socket.user_id) for socket in sockets], _standing
    )
    closed = 0
    for socket in sockets:
        if socket.session_key in revoked:
            await socket.close(code=CloseCode.NOT_LOGGED_IN)
            closed += 1
    return closed
