"""The channel-layer events between processes, typed, and the publisher that sends them.

The layer is a doorbell: `RoomChanged` says "room R reached cursor N" (with the frame, so
receivers need not read the database on the common path). Every process's hub checks the cursor
against what it has and fills any gap from the database, so a lost or late event costs latency,
never a message. The other events carry what has no record behind it (presence, typing) or ask
a process to close sockets (a ban, an archived room).

Each event is a frozen dataclass with its `type`; nothing else builds or reads an event's dict:
`message()` makes the dict channels-redis sends (JSON primitives only: msgpack cannot carry a
datetime, and the in-memory layer would not notice), `parse()` turns a received one back into
its class, or None for one this version does not know.
"""

import asyncio
import dataclasses
import logging
import os
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar

import redis
from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import get_channel_layer

from .. import metrics

logger = logging.getLogger(__name__)


def group_name(room_id: int) -> str:
    return f"room.{room_id}"


def user_group(user_id: int) -> str:
    """One user's group: the processes holding that user's inbox sockets are in it (§5)."""
    return f"user.{user_id}"


@dataclass(frozen=True)
class RoomChanged:
    """A change was committed: the room's cursor reached `cursor`; `frame` is its message frame."""

    type: ClassVar[str] = "room.change"
    room: int
    cursor: int
    frame: str
    at: float = 0.0  # when it was committed (time.time()), for the hub's lag metric
    epoch: int = 0  # the room's members epoch at this change (Room.members_epoch)


@dataclass(frozen=True)
class PresenceChanged:
    """Someone's first socket opened or last one closed: `frame` is the presence frame. Sent to
    the room's group by earlier versions (still handled, for a rolling deploy); this version
    sends presence in PresenceBatch."""

    type: ClassVar[str] = "room.presence"
    room: int
    frame: str


@dataclass(frozen=True)
class UserTyping:
    """`user` is typing: every socket in the room but theirs gets `frame`."""

    type: ClassVar[str] = "room.typing"
    room: int
    user: str
    frame: str


@dataclass(frozen=True)
class UserKicked:
    """Close `user`'s sockets in the room with `code` (a ban: CloseCode.FORBIDDEN)."""

    type: ClassVar[str] = "room.kick"
    room: int
    user: str
    code: int


@dataclass(frozen=True)
class RoomClosed:
    """Close every socket in the room with `code` (archived: CloseCode.NO_SUCH_ROOM)."""

    type: ClassVar[str] = "room.close"
    room: int
    code: int


@dataclass(frozen=True)
class InboxChanged:
    """`user`'s summary of `room` may have changed in a way the room's doorbell does not ring
    for (their read marker moved, they joined, left or were removed, their notification setting
    changed, a ban): their inboxes read it again. Sent to the user's group."""

    type: ClassVar[str] = "inbox.change"
    user: int
    room: int


@dataclass(frozen=True)
class Notified:
    """A `notify` frame for `user`'s inboxes (a mention, a direct message). Sent to the user's
    group; nothing stores it, so a lost one is lost (the message itself is not)."""

    type: ClassVar[str] = "inbox.notify"
    user: int
    frame: str


# Every hub is in this group while it holds sockets: events about sockets anywhere (sessions
# that ended, presence batches).
HUBS_GROUP = "hubs"


@dataclass(frozen=True)
class PresenceBatch:
    """Presence frames of many rooms from one process (`announce_presence`), as one channel-layer
    message to every hub: a crowd connecting after a deploy costs a message per batch, not one
    per socket. `changes` is [[room id, frame], ...]; each hub keeps those of its rooms."""

    type: ClassVar[str] = "hubs.presence"
    changes: list


@dataclass(frozen=True)
class SessionsChanged:
    """`user`'s sessions may have ended (logged out, password changed, deactivated): every
    process checks that user's sockets now instead of at its next periodic session check."""

    type: ClassVar[str] = "user.sessions"
    user: int


Event = (
    RoomChanged
    | PresenceChanged
    | UserTyping
    | UserKicked
    | RoomClosed
    | InboxChanged
    | Notified
    | SessionsChanged
    | PresenceBatch
)
EVENTS: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        RoomChanged,
        PresenceChanged,
        UserTyping,
        UserKicked,
        RoomClosed,
        InboxChanged,
        Notified,
        SessionsChanged,
        PresenceBatch,
    )
}
# The events addressed to a user rather than a room.
USER_EVENTS = (InboxChanged, Notified)


def group_of(event: Event) -> str:
    if isinstance(event, SessionsChanged | PresenceBatch):
        return HUBS_GROUP
    if isinstance(event, USER_EVENTS):
        return user_group(event.user)
    return group_name(event.room)


def message(event: Event) -> dict[str, Any]:
    """The channel-layer message for an event."""
    return {"type": event.type, **dataclasses.asdict(event)}


def parse(received: dict[str, Any]) -> Event | None:
    """The event a received message holds; None (and a warning) for an unknown or bad one."""
    kind = received.get("type")
    cls = EVENTS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        logger.warning("unknown channel-layer event %r", received.get("type"))
        return None
    try:
        return cls(**{f.name: received[f.name] for f in dataclasses.fields(cls)})
    except (KeyError, TypeError):
        logger.warning("malformed channel-layer event %r", received.get("type"))
        return None


def publish_change(room_id: int, cursor: int, frame: str, epoch: int = 0) -> None:
    """Called after the commit that stored the change (synchronous callers: services, admin)."""
    publish_now(RoomChanged(room=room_id, cursor=cursor, frame=frame, at=time.time(), epoch=epoch))


def publish_now(event: Event) -> None:
    """Send an event to its room's group from synchronous code; failures are logged.

    From a thread that an event loop is waiting on (the database calls of consumers and views)
    the event goes to that loop's publisher and this returns at once: the thread, which serves
    every database call of the process in turn, does not wait on Redis. Elsewhere (management
    commands, tests) it is sent before this returns.
    """
    loop = _waiting_loop()
    if loop is not None:
        try:
            loop.call_soon_threadsafe(_enqueue, event)
            return
        except RuntimeError:  # the loop closed meanwhile
            pass
    async_to_sync(_send)(event)


def _waiting_loop() -> asyncio.AbstractEventLoop | None:
    """The running event loop that called this thread through sync_to_async, if any."""
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    if loop is None or loop.is_closed() or not loop.is_running():
        return None
    if getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None) != os.getpid():
        return None
    return loop


class Publisher:
    """Sends one event loop's events to the channel layer one at a time, in the order given."""

    name = "publisher"

    def __init__(self) -> None:
        self.pending: deque = deque()
        self.task: asyncio.Task | None = None

    def put(self, item) -> None:
        self.pending.append(item)
        if self.task is None or self.task.done():
            # Runs only while there is something to send: no task outlives its loop's work.
            self.task = asyncio.get_running_loop().create_task(self._drain(), name=self.name)

    async def _drain(self) -> None:
        while self.pending:
            await _send(self.pending.popleft())


def _of_loop(registry: weakref.WeakKeyDictionary, kind: type[Publisher]) -> Publisher:
    """The running loop's publisher of this kind (made on first use, gone with its loop)."""
    loop = asyncio.get_running_loop()
    publisher = registry.get(loop)
    if publisher is None:
        publisher = registry[loop] = kind()
    return publisher


_publishers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Publisher]" = (
    weakref.WeakKeyDictionary()
)


def _enqueue(event: Event) -> None:
    _of_loop(_publishers, Publisher).put(event)


async def _send(event: Event) -> None:
    layer = get_channel_layer()
    group = group_of(event)
    sent = message(event)
    try:
        try:
            await layer.group_send(group, sent)
        except (ConnectionError, redis.ConnectionError):
            # After a Redis restart the first pooled connection is stale; a second try
            # usually gets a fresh one.
            await layer.group_send(group, sent)
    except Exception:
        # The change is stored; hubs find it on their next resync with the database.
        metrics.REDIS_ERRORS.labels("publish").inc()
        logger.warning(
            "channel layer unavailable: %s for %s not sent (changes arrive by resync)",
            event.type,
            group,
            exc_info=True,
        )


# At most this many characters of frames in one PresenceBatch (a frame lists its room's online
# users: up to ~13 KB in a room of 1,000).
PRESENCE_BATCH_CHARACTERS = 256 * 1024


class PresenceOut(Publisher):
    """One event loop's presence frames ([room id, frame]) on their way to every hub: the first
    goes at once, those that come while it is being sent go together next, and so on."""

    name = "presence-out"

    async def _drain(self) -> None:
        while self.pending:
            changes, size = [], 0
            while self.pending and (not changes or size < PRESENCE_BATCH_CHARACTERS):
                change = self.pending.popleft()
                changes.append(change)
                size += len(change[1])
            await _send(PresenceBatch(changes=changes))


_presence_out: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, PresenceOut]" = (
    weakref.WeakKeyDictionary()
)


def announce_presence(room_id: int, frame: str) -> None:
    """From the event loop: a room's presence frame for its sockets on every process, sent with
    the others of this moment (PresenceBatch). Best effort, as presence is: a batch the layer
    does not take is logged and dropped."""
    _of_loop(_presence_out, PresenceOut).put([room_id, frame])


async def publish(event: Event) -> None:
    """From the event loop: presence and typing, events with no record behind them. Raises
    when the layer does not take it (the caller decides whether that matters)."""
    await get_channel_layer().group_send(group_of(event), message(event))
