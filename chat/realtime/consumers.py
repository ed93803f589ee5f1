"""The room WebSocket (PROTOCOL.md §2): an adapter between frames and the services."""

import logging
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError

from .. import metrics, policy, selectors, services
from ..models import Room
from ..shared_state import shared_state
from . import events, inboxes, protocol
from .batching import Batched
from .hub import Feed, get_hub
from .protocol import ChatError, CloseCode, ErrorCode
from .transport import Outgoing, connection_of, write

logger = logging.getLogger(__name__)

db = database_sync_to_async


def parse_since(query_string: bytes) -> int | None:
    values = parse_qs(query_string.decode("latin-1")).get("since")
    if not values:
        return None
    try:
        return int(values[0])
    except ValueError:
        return None


@dataclass(frozen=True)
class Opening:
    """What a new socket reads from the database, in one trip to the database thread."""

    room: Room | None  # None when the user cannot see a room at that slug
    denial: "policy.Denial | None"  # why the policy refuses the socket, if it does
    ready: "selectors.Ready | None" = None
    seen_as: dict[str, str] | None = None  # the room object as this user sees it
    epoch: int = 0  # the room's members epoch, read before the check (Hub.recheck)


def openings(requests: list[tuple[object, str, int | None]]) -> list[Opening]:
    """For each new socket (user, slug, since): its room, the policy's answer and its `ready`
    state. One call for every socket opening at once (`open_room`, batched): the rooms, the
    policy's facts and the rooms' latest pages in a fixed number of queries, not per socket.

    Reading `ready` before the socket joins the hub's feed loses nothing: the socket then sends
    every change after the `ready` cursor, from the feed's buffer or from the database.
    """
    rooms = policy.rooms_at([slug for _, slug, _ in requests])
    found = [(user, rooms[slug]) for user, slug, _ in requests if slug in rooms]
    # Asked even when no room was found: a slug nobody has costs the same queries as a private
    # room one may not see, so no early answer tells them apart (as policy.room_for).
    access = dict(zip(found, policy.accesses(found, always=True), strict=True))
    # Each socket's room and the policy's answer there (None: it may read it).
    decided = [
        (rooms[slug], access[user, rooms[slug]].can_read())
        if slug in rooms
        else (None, policy.Denial.NO_SUCH_ROOM)
        for user, slug, _ in requests
    ]
    selectors.read_latest_pages([room for room, denial in decided if denial is None])
    answers = []
    for (user, _, since), (room, denial) in zip(requests, decided, strict=True):
        if denial is not None:
            # Unknown and invisible alike (policy.room_for): a private room's name never shows.
            seen = denial is not policy.Denial.NO_SUCH_ROOM
            answers.append(Opening(room if seen else None, denial))
            continue
        answers.append(
            Opening(
                room,
                None,
                selectors.ready_state(room, since),
                selectors.room_object(room, user),
                room.members_epoch,
            )
        )
    return answers


open_room = Batched(openings)


class Consumer(AsyncWebsocketConsumer):
    """What the site's sockets share: no channel of their own (the process's hub is the member
    of the channel-layer groups), close codes sent as plain ints (autobahn refuses an IntEnum
    such as CloseCode, and the client would get 1011), the per-user socket cap, and frames many
    sockets get written straight to daphne's connection."""

    channel_layer_alias = None
    closed = False
    counted = False  # counted against the user's socket cap in the shared state
    present = False  # counted in a room's presence (room sockets only)
    session_key: str | None = None
    # daphne's connection, for broadcast frames written without the ASGI path (transport.py).
    connection = None

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        self.closed = True
        await super().close(code=None if code is None else int(code), reason=reason)

    def _identify(self, user) -> None:
        self.user = user
        self.user_id = user.pk
        self.username = user.get_username()
        self.session_key = self.scope["session_key"]
        self.connection = connection_of(self.base_send)
        self.conn_id = uuid.uuid4().hex
        self.state = shared_state()

    async def _open_slot(self) -> bool:
        """Count this socket against the user's cap (all rooms, all processes)."""
        try:
            allowed = await self.state.open_socket(
                self.user.pk, self.conn_id, settings.CHAT_MAX_SOCKETS_PER_USER
            )
        except Exception:
            logger.warning("socket count unavailable", exc_info=True)
            return True  # degrade open: Redis being down must not lock everyone out
        self.counted = allowed
        return allowed

    async def _close_slot(self) -> None:
        if self.counted:
            self.counted = False
            try:
                await self.state.close_socket(self.user.pk, self.conn_id)
            except Exception:
                logger.warning("socket count: could not record a close", exc_info=True)

    async def send_frame(self, frame: Outgoing) -> None:
        """A frame many sockets get: straight to daphne's connection when there is one."""
        if self.connection is not None:
            write(self.connection, frame)
        else:
            await self.send(text_data=frame.text)


class NoSuchRoom(Consumer):
    """Every socket path that names no room (`/ws/rooms/%2e%2e/`, `/ws/rooms/ünï/`): closed like
    an unknown room's socket, instead of the router's "No route found" traceback."""

    async def connect(self) -> None:
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CloseCode.NOT_LOGGED_IN)
        else:
            await self.close(code=CloseCode.NO_SUCH_ROOM)

    async def receive(self, text_data=None, bytes_data=None) -> None:
        pass  # closing; nothing to answer


class RoomConsumer(Consumer):
    # No channel of its own: the process's hub is the room group's member and hands frames to
    # its sockets, so a broadcast costs one channel-layer message per process, not per socket.
    channel_layer_alias = None

    room: Room | None = None
    feed: Feed | None = None
    # The cursor of the last change frame sent; None until `ready` has gone out.
    sent: int | None = None
    delivering = False
    open_counted = False  # in the open-sockets gauge
    epoch = 0  # the room's members epoch when this socket's membership was last confirmed

    async def connect(self) -> None:
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CloseCode.NOT_LOGGED_IN)
            return
        slug = self.scope["url_route"]["kwargs"]["slug"]
        opening = await open_room((user, slug, parse_since(self.scope["query_string"])))
        if opening.denial is not None:
            await self.close(code=policy.CLOSE_CODES[opening.denial])
            return
        room, ready = opening.room, opening.ready
        self._identify(user)
        self.room = room
        if not await self._open_slot():
            await self.close(code=CloseCode.TOO_MANY_SOCKETS)
            return

        self.epoch = opening.epoch
        self.feed = await get_hub().attach(room.pk, self)
        if self.closed:  # removed from the room while it opened (Hub.recheck)
            return
        joined, online = await self._join_presence()
        await self.send(
            text_data=protocol.ready_frame(
                room=opening.seen_as,
                username=self.username,
                messages=ready.messages,
                has_more=ready.has_more,
                cursor=ready.cursor,
                online=online,
                reset=ready.reset,
            )
        )
        self.sent = ready.cursor
        self.open_counted = True
        metrics.OPEN_SOCKETS.inc()
        logger.info("websocket connect", extra={"room": room.slug, "user": self.username})
        await self.deliver()
        if joined:
            await self._announce(protocol.presence_frame(online, joined=self.username))

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Also when the connection ends without a disconnect event (an exception, a
            # cancelled task): the hub, the socket cap and presence must not keep a dead socket.
            await self._release()

    async def disconnect(self, code: int) -> None:
        if self.room is not None:
            logger.info(
                "websocket disconnect",
                extra={"room": self.room.slug, "user": self.username, "code": code},
            )
        await self._release()

    async def _release(self) -> None:
        """Give back everything this socket holds; safe to call more than once."""
        self.sent = None
        if self.open_counted:
            self.open_counted = False
            metrics.OPEN_SOCKETS.dec()
        if self.room is None:
            return
        await self._close_slot()
        if self.feed is not None:
            self.feed = None
            await get_hub().detach(self.room.pk, self)
        if self.present:
            self.present = False
            try:
                online = await self.state.leave(self.room.pk, self.username, self.conn_id)
                if online is not None:  # the user's last connection here
                    await self._announce(protocol.presence_frame(online, left=self.username))
            except Exception:
                logger.warning(
                    "presence: could not record %s leaving", self.username, exc_info=True
                )

    # --- frames from the client ----------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Parse the frame, let a service act on it (the services ask the policy and count the
        limits), answer. A refused frame changes nothing and is answered with an `error`; one
        the user may no longer send at all also closes the socket (banned, the room gone)."""
        if self.sent is None:
            return
        try:
            if text_data is None:
                raise ChatError(ErrorCode.INVALID, "Frames must be JSON text, not binary.")
            frame = protocol.parse(text_data)
            await self.handlers[type(frame)](self, frame)
        except DatabaseError:
            # The service's transaction rolled back: nothing was stored, sending again is safe.
            metrics.DATABASE_ERRORS.labels("frame").inc()
            logger.warning("database unavailable for a frame", exc_info=True)
            error = ChatError(
                ErrorCode.UNAVAILABLE,
                "The chat service is briefly unavailable; try again in a moment.",
                retry_after=1,
            )
            await self.send(text_data=protocol.error_frame(error))
        except ChatError as error:
            await self.send(text_data=protocol.error_frame(error))
            if error.close is not None:
                await self.close(code=error.close)

    async def on_post(self, frame: protocol.Post) -> None:
        posted = await services.submit_post(
            room=self.room,
            author=self.user,
            body=frame.body,
            client_id=frame.client_id,
            reply_to=frame.reply_to,
            attach=frame.attachments,
        )
        if not posted.created:
            await self.send(text_data=protocol.ack_frame(frame.client_id, posted.message.pk))
        # A new message's `message` frame reaches this socket through the hub: that is its ack.

    async def on_edit(self, frame: protocol.Edit) -> None:
        await services.submit_edit(
            room=self.room, message_id=frame.id, by=self.user, body=frame.body
        )

    async def on_delete(self, frame: protocol.Delete) -> None:
        await services.submit_delete(room=self.room, message_id=frame.id, by=self.user)

    async def on_react(self, frame: protocol.React) -> None:
        await services.submit_reaction(
            room=self.room, message_id=frame.id, by=self.user, emoji=frame.emoji
        )

    async def on_history(self, frame: protocol.History) -> None:
        if frame.around is not None:
            messages, has_more, has_newer = await services.read_around(
                room=self.room, user=self.user, around=frame.around, limit=frame.limit
            )
            await self.send(text_data=protocol.history_frame(messages, has_more, has_newer))
            return
        messages, has_more = await services.read_history(
            room=self.room, user=self.user, before=frame.before, limit=frame.limit
        )
        await self.send(text_data=protocol.history_frame(messages, has_more))

    async def on_typing(self, frame: protocol.Typing) -> None:
        await services.announce_typing(room=self.room, user=self.user)

    async def on_report(self, frame: protocol.Report) -> None:
        await services.submit_report(
            room=self.room, message_id=frame.id, by=self.user, reason=frame.reason
        )
        await self.send(text_data=protocol.reported_frame(frame.id))

    handlers = {
        protocol.Post: on_post,
        protocol.Edit: on_edit,
        protocol.Delete: on_delete,
        protocol.React: on_react,
        protocol.History: on_history,
        protocol.Typing: on_typing,
        protocol.Report: on_report,
    }

    # --- frames to the client (called by the hub) ----------------------------------------

    async def deliver(self) -> None:
        """Send every change after `sent` up to the feed's cursor, strictly in cursor order."""
        if self.feed is not None:
            sent = await self.feed.deliver_to(self)
            if sent:
                metrics.FRAMES_SENT.inc(sent)

    async def send_live(self, frame: Outgoing) -> None:
        """Presence and typing: frames outside the change stream, for ready sockets only."""
        if self.sent is not None:
            metrics.FRAMES_SENT.inc()
            await self.send_frame(frame)

    # --- helpers -------------------------------------------------------------------------

    async def _join_presence(self) -> tuple[bool, list[str]]:
        """Count this socket in the room's presence: whether it is the user's first connection
        there, and the room's online list (one round trip)."""
        try:
            joined, online = await self.state.join(self.room.pk, self.username, self.conn_id)
        except Exception:
            logger.warning("presence unavailable for %s", self.username, exc_info=True)
            return False, [self.username]
        self.present = True
        return joined, online

    async def _announce(self, frame: str) -> None:
        events.announce_presence(self.room.pk, frame)


class InboxConsumer(Consumer):
    """`/ws/inbox/` (PROTOCOL.md §5): every room of the user at once. It sends and takes no
    change frames; the process's inboxes (inboxes.py) send it summaries and notifications."""

    user_id = 0
    ready = False  # the `inbox` frame has gone out
    attached = False

    async def connect(self) -> None:
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CloseCode.NOT_LOGGED_IN)
            return
        self._identify(user)
        self.rooms: dict[int, tuple[str, int]] = {}
        self.missed: set[int] = set()
        if not await self._open_slot():
            await self.close(code=CloseCode.TOO_MANY_SOCKETS)
            return
        hub = get_hub()
        # The user's group first: a membership or read-marker change from here on reaches us
        # (kept in `missed` until the `inbox` frame is out).
        await hub.attach_inbox(self)
        self.attached = True
        summaries, cursors = await db(inboxes.opening)(user)
        watched = await hub.watch(self, [room_id for room_id, _ in summaries])
        self.rooms = {
            room_id: (summary["slug"], inboxes.signature(summary)) for room_id, summary in summaries
        }
        await self.send(text_data=protocol.inbox_frame([summary for _, summary in summaries]))
        self.ready = True
        metrics.OPEN_SOCKETS.inc()
        self.open_counted = True
        logger.info("inbox connect", extra={"user": self.username})
        # A room that moved between reading the summaries and watching it is read again.
        moved = {room_id for room_id, cursor in watched.items() if cursor > cursors[room_id]}
        moved |= set(self.rooms) - set(watched)  # archived meanwhile
        for room_id in moved | self.missed:
            hub.inbox.user_changed(self.user_id, room_id)
        self.missed.clear()

    open_counted = False

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._release()

    async def disconnect(self, code: int) -> None:
        await self._release()

    async def _release(self) -> None:
        self.ready = False
        if self.open_counted:
            self.open_counted = False
            metrics.OPEN_SOCKETS.dec()
        if self.attached:
            self.attached = False
            await get_hub().detach_inbox(self)
        if self.user_id:
            await self._close_slot()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """The inbox takes no frames (§5): anything sent is answered `invalid`."""
        if not self.ready:
            return
        error = ChatError(ErrorCode.INVALID, "The inbox socket takes no frames.")
        await self.send(text_data=protocol.error_frame(error))
