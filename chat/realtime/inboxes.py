"""The inbox sockets of one process (PROTOCOL.md §5): which rooms they watch, and their summaries.

An inbox watches every room its user belongs to through the hub's feeds, the same room groups
the room sockets use: a change in a room rings this process's doorbell once, however many
inboxes here watch it. What only concerns one user (their read marker moved in another tab,
they joined or were removed, their notification setting, a ban) comes on the user's own group
(`events.InboxChanged`), as do their `notify` frames.

Summaries are read, never counted up from frames: a changed room (or user and room) is marked
due, and one query reads the summaries of every due room for every user watching it here
(`selectors.summaries`), then each socket gets a `room` frame where its summary differs from the
one it was last sent. A room is read at most once per CHAT_INBOX_INTERVAL: the first change
after a quiet spell goes out at once, the rest of a burst waits for the interval's end and goes
out as one frame with the latest state. A room with 50 messages a second costs each inbox a few
frames a second and this process a few queries, not 50 per member.

A summary that is no longer there (the membership went, the room was archived, a ban) is
`room_removed`, whichever event said so or even if none did: the next change in that room reads
it.
"""

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from channels.db import database_sync_to_async
from django.conf import settings

from .. import metrics, policy, selectors
from . import protocol
from .transport import Outgoing

if TYPE_CHECKING:
    from .hub import Hub

logger = logging.getLogger(__name__)


class InboxSocket(Protocol):
    """What the hub and the inboxes need of an inbox socket (consumers.InboxConsumer)."""

    user_id: int
    username: str
    conn_id: str
    session_key: str | None
    present: bool  # never: inboxes are not presence
    counted: bool  # counted against its user's socket cap
    # Whether the `inbox` frame has gone out; changes seen before that are kept in `missed`.
    ready: bool
    missed: set[int]
    # The rooms it watches: room id -> (slug, a hash of the summary it was last sent).
    rooms: dict[int, tuple[str, int]]

    async def send_frame(self, frame: Outgoing) -> None: ...

    async def close(self, code: int) -> None: ...


Key = int | tuple[int, int]  # a room, or a (user, room) pair


def signature(summary: dict) -> int:
    return hash(tuple(summary.values()))


def read_summaries(pairs: set[tuple[int, int]]) -> dict[tuple[int, int], tuple[int, dict]]:
    """{(user, room): (room cursor, summary)} for the pairs whose user may read the room now."""
    users = {user for user, _ in pairs}
    rooms = {room for _, room in pairs}
    memberships = policy.readable_memberships().filter(user_id__in=users, room_id__in=rooms)
    return {
        (user, room): (cursor, summary)
        for user, room, cursor, summary in selectors.summaries(memberships)
        if (user, room) in pairs
    }


def opening(user) -> tuple[list[dict], dict[int, int]]:
    """A new inbox's rooms: the summaries in inbox order, and {room id: cursor} when read."""
    rows = selectors.summaries(policy.readable_memberships().filter(user=user))
    cursors = {room: cursor for _, room, cursor, _ in rows}
    ids = {summary["slug"]: room for _, room, _, summary in rows}
    ordered = selectors.inbox_order([summary for *_, summary in rows])
    return [(ids[summary["slug"]], summary) for summary in ordered], cursors


class Inboxes:
    """This process's inbox sockets by user, and the summaries due to be read and sent."""

    def __init__(self, hub: "Hub") -> None:
        self.hub = hub
        self.users: dict[int, set[InboxSocket]] = {}
        # When each due key is to be read (loop time), and when each was last read.
        self.due: dict[Key, float] = {}
        self.last: dict[Key, float] = {}
        self.task: asyncio.Task | None = None
        self.wake = asyncio.Event()

    def sockets(self) -> list[InboxSocket]:
        return [socket for sockets in self.users.values() for socket in sockets]

    # --- what changed ----------------------------------------------------------------------

    def room_changed(self, room_id: int) -> None:
        """Something in the room moved: every watcher's summary of it is read again."""
        self._mark(room_id)

    def user_changed(self, user_id: int, room_id: int) -> None:
        """One user's summary of one room (their marker, membership, setting, a ban)."""
        if user_id in self.users:
            self._mark((user_id, room_id))

    async def notify(self, user_id: int, frame: str) -> None:
        outgoing = Outgoing(frame)
        for socket in list(self.users.get(user_id, ())):
            if socket.ready:
                await socket.send_frame(outgoing)
                metrics.FRAMES_SENT.inc()

    def _mark(self, key: Key) -> None:
        if key in self.due:
            return  # already due: it will read the latest state
        now = asyncio.get_running_loop().time()
        self.due[key] = max(now, self.last.get(key, now - 1e9) + settings.CHAT_INBOX_INTERVAL)
        if self.task is None:
            self.task = asyncio.create_task(self._run(), name="inbox-summaries")
        self.wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.due:
                now = loop.time()
                wait = min(self.due.values()) - now
                if wait > 0:
                    self.wake.clear()
                    try:
                        await asyncio.wait_for(self.wake.wait(), wait)
                    except TimeoutError:
                        pass
                    continue
                keys = [key for key, at in self.due.items() if at <= now]
                for key in keys:
                    del self.due[key]
                    self.last[key] = now
                try:
                    await self.flush(keys)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # The next change reads these again; a room that stays quiet is read on
                    # the next resync that finds it behind (the hub) or the next reconnect.
                    logger.warning("inbox summaries could not be read", exc_info=True)
                self._forget(now)
        finally:
            self.task = None

    def _forget(self, now: float) -> None:
        """Drop the read times that no longer hold anything back."""
        if len(self.last) > 256:
            horizon = now - settings.CHAT_INBOX_INTERVAL
            self.last = {key: at for key, at in self.last.items() if at > horizon}

    # --- reading and sending ---------------------------------------------------------------

    async def flush(self, keys: Iterable[Key]) -> None:
        pairs: set[tuple[int, int]] = set()
        for key in keys:
            if isinstance(key, tuple):
                if key[0] in self.users:
                    pairs.add(key)
                continue
            feed = self.hub.feeds.get(key)
            if feed is not None:
                pairs.update((socket.user_id, key) for socket in feed.watchers)
        if not pairs:
            return
        found = await database_sync_to_async(read_summaries)(pairs)
        metrics.INBOX_READS.inc()
        for user_id, room_id in sorted(pairs):
            entry = found.get((user_id, room_id))
            for socket in list(self.users.get(user_id, ())):
                await self.send_summary(socket, room_id, None if entry is None else entry[1])

    async def send_summary(self, socket: InboxSocket, room_id: int, summary: dict | None) -> None:
        """Bring one socket up to date on one room: `room`, `room_removed`, or nothing."""
        if not socket.ready:
            socket.missed.add(room_id)
            return
        known = socket.rooms.get(room_id)
        if summary is None:
            if known is not None:
                del socket.rooms[room_id]
                await self.hub.unwatch(socket, room_id)
                await socket.send_frame(Outgoing(protocol.room_removed_frame(known[0])))
                metrics.FRAMES_SENT.inc()
            return
        mark = signature(summary)
        if known is not None and known[1] == mark:
            return
        if known is None:
            await self.hub.watch(socket, [room_id])
        socket.rooms[room_id] = (summary["slug"], mark)
        await socket.send_frame(Outgoing(protocol.room_frame(summary)))
        metrics.FRAMES_SENT.inc()
