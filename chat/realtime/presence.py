"""Who is online in a room, as the process's sockets see it: batching and upkeep.

Presence frames carry the room's whole online list, so in a crowd they are batched: up to
CHAT_PRESENCE_BURST presence frames per CHAT_PRESENCE_WINDOW go out as they come; the joins and
leaves beyond that wait for the window's end and go out as one frame with the new online list
(as is, if only one waited; with neither `joined` nor `left` if several did). A reconnect storm
of a thousand users costs each socket a few frames a second, not a thousand frames.

Upkeep: the shared state (Redis) lists each process's connections under that process, which
renews its own entry every CHAT_PRESENCE_TTL / 3 seconds with one script (however many rooms and
sockets it holds). The same script clears the connections of processes whose entry expired (they
died without saying goodbye) and this process announces those users as gone.
"""

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from django.conf import settings

from ..shared_state import shared_state
from . import events
from .protocol import presence_frame
from .transport import Outgoing

logger = logging.getLogger(__name__)


class PresenceBatch:
    """One room's presence frames on their way to its sockets here (`send` hands one out)."""

    def __init__(self, room_id: int, send: Callable[[Outgoing], Awaitable[None]]) -> None:
        self.room_id = room_id
        self.send = send
        # When the last few presence frames went out, and those waiting for the window's end.
        self.sent: deque[float] = deque(maxlen=max(1, settings.CHAT_PRESENCE_BURST))
        self.waiting: list[str] | None = None
        self.task: asyncio.Task | None = None

    async def add(self, text: str) -> None:
        """Send a presence frame now, or hold it if the window's burst has gone out already."""
        if self.waiting is not None:
            self.waiting.append(text)
            return
        now = asyncio.get_running_loop().time()
        if len(self.sent) < self.sent.maxlen or now - self.sent[0] >= settings.CHAT_PRESENCE_WINDOW:
            self.sent.append(now)
            await self.send(Outgoing(text))
            return
        self.waiting = [text]
        wait = self.sent[0] + settings.CHAT_PRESENCE_WINDOW - now
        self.task = asyncio.create_task(self._flush(wait))

    async def _flush(self, wait: float) -> None:
        await asyncio.sleep(wait)
        waiting, self.waiting = self.waiting or [], None
        self.sent.append(asyncio.get_running_loop().time())
        try:
            if len(waiting) == 1:
                frame = waiting[0]
            else:
                try:
                    online = await shared_state().online(self.room_id)
                except Exception:
                    online = json.loads(waiting[-1])["online"]  # the latest list heard here
                frame = presence_frame(online)
            await self.send(Outgoing(frame))
        except Exception:
            logger.exception("room %s: could not send presence", self.room_id)


async def keep_alive(held: Callable[[], list[str]]) -> None:
    """This process's upkeep in the shared state, one script whatever it holds (`held()` lists
    its sockets and connections, for when Redis forgot them); then announce the users whose last
    connection was a dead process's (it died without saying goodbye)."""
    state = shared_state()
    for room_id, username in await state.beat(held):
        online = await state.online(room_id)
        events.announce_presence(room_id, presence_frame(online, left=username))
