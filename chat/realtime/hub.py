"""One hub per server process: the only member of each room's channel-layer group here.

The channel layer is a doorbell. A `room.change` event says "room R reached cursor N" and
carries the frame, serialized once by the writer. The hub keeps, per room, the highest cursor it
has delivered and a short buffer of recent frames; an event that skips cursors (out of order
from two writers, or lost by the layer) makes it read the missing changes from the database.
A resync tick compares every room's cursor with the database too, so a doorbell that never rang
(Redis restarted and forgot the group, or was down) costs at most one tick of latency.

Presence frames carry the room's whole online list, so in a crowd they are batched: up to
CHAT_PRESENCE_BURST presence frames per CHAT_PRESENCE_WINDOW go out as they come; the joins and
leaves beyond that wait for the window's end and go out as one frame with the new online list
(as is, if only one waited; with neither `joined` nor `left` if several did). A reconnect storm
of a thousand users costs each socket a few frames a second, not a thousand frames.

Sockets (`RoomConsumer`) register with the hub and each keeps its own `sent` cursor: frames reach
a socket strictly as sent+1, sent+2, ... whatever order the layer delivers in.
"""

import asyncio
import json
import logging
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from .. import selectors
from ..shared_state import shared_state
from .events import group_name, publish
from .protocol import presence_frame
from .transport import Outgoing

if TYPE_CHECKING:
    from .consumers import RoomConsumer

logger = logging.getLogger(__name__)

BUFFER_FRAMES = 1024


class Feed:
    """A room as this process sees it: delivered cursor, recent frames, local sockets."""

    def __init__(self, room_id: int, cursor: int) -> None:
        self.room_id = room_id
        self.cursor = cursor
        self.frames: deque[tuple[int, Outgoing]] = deque(maxlen=BUFFER_FRAMES)
        self.sockets: set[RoomConsumer] = set()
        self.lock = asyncio.Lock()
        # Presence batching: when the last few presence frames went out, and those waiting.
        self.presence_sent: deque[float] = deque(maxlen=max(1, settings.CHAT_PRESENCE_BURST))
        self.presence_waiting: list[str] | None = None
        self.presence_task: asyncio.Task | None = None

    def frames_after(self, cursor: int) -> list[tuple[int, Outgoing]] | None:
        """Buffered frames after `cursor` up to the feed's cursor; None if the buffer is short."""
        if cursor >= self.cursor:
            return []
        if not self.frames or self.frames[0][0] > cursor + 1:
            return None
        start = cursor + 1 - self.frames[0][0]
        return [self.frames[i] for i in range(start, len(self.frames))]

    def extend(self, frames: list[tuple[int, Outgoing]]) -> None:
        for cursor, frame in frames:
            if cursor == self.cursor + 1:
                self.frames.append((cursor, frame))
                self.cursor = cursor

    async def push(self) -> None:
        for socket in list(self.sockets):
            await socket.deliver()

    async def push_live(self, frame: Outgoing, *, skip: str | None = None) -> None:
        for socket in list(self.sockets):
            if socket.username != skip:
                await socket.send_live(frame)


class Hub:
    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.feeds: dict[int, Feed] = {}
        self.channel: str | None = None
        self.subscribed: set[int] = set()
        self.tasks: list[asyncio.Task] = []
        self.lock = asyncio.Lock()

    # --- sockets -------------------------------------------------------------------------

    async def attach(self, room_id: int, socket: "RoomConsumer") -> Feed:
        async with self.lock:
            feed = self.feeds.get(room_id)
            if feed is None:
                if not self.tasks:
                    self.channel = await self.layer.new_channel()
                    self.tasks = [
                        asyncio.create_task(self._read(), name="hub-read"),
                        asyncio.create_task(self._tick(), name="hub-tick"),
                        asyncio.create_task(self._watch_sessions(), name="hub-sessions"),
                    ]
                await self._subscribe(room_id)
                # Read after joining the group: any change after this cursor rings our bell.
                cursor = await database_sync_to_async(selectors.room_cursor)(room_id)
                feed = self.feeds[room_id] = Feed(room_id, cursor)
            feed.sockets.add(socket)
            return feed

    async def detach(self, room_id: int, socket: "RoomConsumer") -> None:
        # Only bookkeeping under the lock: a new socket's attach must never wait on Redis here.
        async with self.lock:
            feed = self.feeds.get(room_id)
            if feed is None:
                return
            feed.sockets.discard(socket)
            if feed.sockets:
                return
            del self.feeds[room_id]
            subscribed = room_id in self.subscribed
            self.subscribed.discard(room_id)
            channel = self.channel
            tasks = self._stop() if not self.feeds else []
        if subscribed:
            try:
                await self.layer.group_discard(group_name(room_id), channel)
            except Exception:
                logger.warning("could not leave group of room %s", room_id, exc_info=True)
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    def _stop(self) -> list[asyncio.Task]:
        """Cancel the hub's tasks (no room left here); the next attach starts fresh ones."""
        tasks, self.tasks = self.tasks, []
        for task in tasks:
            task.cancel()
        return tasks

    async def _subscribe(self, room_id: int) -> None:
        try:
            await self.layer.group_add(group_name(room_id), self.channel)
        except Exception:
            # Degraded, not broken: the resync tick delivers from the database and retries.
            self.subscribed.discard(room_id)
            logger.warning("channel layer unavailable; room %s on resync only", room_id)
        else:
            self.subscribed.add(room_id)

    # --- the doorbell --------------------------------------------------------------------

    async def _read(self) -> None:
        while True:
            try:
                event = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("channel layer receive failed; retrying", exc_info=True)
                await asyncio.sleep(1)
                continue
            try:
                await self.handle(event)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("hub could not handle %s", event.get("type"))

    async def handle(self, event: dict[str, Any]) -> None:
        feed = self.feeds.get(event.get("room"))
        if feed is None:
            return
        kind = event["type"]
        if kind == "room.change":
            await self.advance(feed, event["cursor"], event["frame"])
        elif kind == "room.presence":
            await self.presence(feed, event["frame"])
        elif kind == "room.typing":
            await feed.push_live(Outgoing(event["frame"]), skip=event["user"])
        elif kind == "room.kick":
            for socket in list(feed.sockets):
                if socket.username == event["user"]:
                    await socket.close(code=event["code"])
        elif kind == "room.close":
            # The room was archived: every socket in it closes (sockets leave the feed as
            # they close, so close a copy of the set).
            for socket in list(feed.sockets):
                await socket.close(code=event["code"])

    async def advance(self, feed: Feed, cursor: int, frame: str | None = None) -> None:
        """Bring the feed up to `cursor`, from the event's frame or from the database."""
        if cursor <= feed.cursor:
            return
        if frame is not None and cursor == feed.cursor + 1 and not feed.lock.locked():
            feed.extend([(cursor, Outgoing(frame))])
        else:
            async with feed.lock:
                if cursor <= feed.cursor:
                    return
                frames = await database_sync_to_async(selectors.change_frames)(
                    feed.room_id, feed.cursor, cursor
                )
                feed.extend([(c, Outgoing(text)) for c, text in frames])
        await feed.push()

    # --- presence in a crowd -------------------------------------------------------------

    async def presence(self, feed: Feed, text: str) -> None:
        """Send a presence frame now, or hold it if the window's burst has gone out already."""
        if feed.presence_waiting is not None:
            feed.presence_waiting.append(text)
            return
        now = asyncio.get_running_loop().time()
        sent = feed.presence_sent
        if len(sent) < sent.maxlen or now - sent[0] >= settings.CHAT_PRESENCE_WINDOW:
            sent.append(now)
            await feed.push_live(Outgoing(text))
            return
        feed.presence_waiting = [text]
        wait = sent[0] + settings.CHAT_PRESENCE_WINDOW - now
        feed.presence_task = asyncio.create_task(self._flush_presence(feed, wait))

    async def _flush_presence(self, feed: Feed, wait: float) -> None:
        await asyncio.sleep(wait)
        waiting, feed.presence_waiting = feed.presence_waiting or [], None
        feed.presence_sent.append(asyncio.get_running_loop().time())
        try:
            if len(waiting) == 1:
                frame = waiting[0]
            else:
                try:
                    online = await shared_state().online(feed.room_id)
                except Exception:
                    online = json.loads(waiting[-1])["online"]  # the latest list heard here
                frame = presence_frame(online)
            await feed.push_live(Outgoing(frame))
        except Exception:
            logger.exception("room %s: could not send presence", feed.room_id)

    # --- resync, group refresh and presence upkeep ---------------------------------------

    async def _tick(self) -> None:
        interval = settings.CHAT_RESYNC_INTERVAL
        beats = max(1, int(settings.CHAT_PRESENCE_TTL / 3 / interval))
        tick = 0
        while True:
            await asyncio.sleep(interval)
            tick += 1
            try:
                await self.resync()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("resync failed", exc_info=True)
            if tick % beats == 0:
                try:
                    await self.keep_presence()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.warning("presence upkeep failed", exc_info=True)

    async def resync(self) -> None:
        for room_id in list(self.feeds):
            # group_add is idempotent; repeating it restores a membership that Redis forgot.
            if room_id in self.feeds:
                await self._subscribe(room_id)
        held = list(self.feeds)
        cursors = await database_sync_to_async(selectors.room_cursors)(held)
        for room_id in held:
            feed = self.feeds.get(room_id)
            if room_id not in cursors and feed is not None:
                # Archived, and the event that said so never came (Redis was down): close now.
                logger.info("room %s: archived; closing its sockets", room_id)
                for socket in list(feed.sockets):
                    await socket.close(code=4404)
        for room_id, cursor in cursors.items():
            feed = self.feeds.get(room_id)
            if feed is not None and cursor > feed.cursor:
                logger.info(
                    "room %s: filling %s..%s from the database", room_id, feed.cursor, cursor
                )
                await self.advance(feed, cursor)

    async def _watch_sessions(self) -> None:
        """Channels checks the session only at connect: close sockets whose session ended."""
        while True:
            await asyncio.sleep(settings.CHAT_SESSION_CHECK_INTERVAL)
            try:
                await self.close_revoked_sessions()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("session check failed", exc_info=True)

    async def close_revoked_sessions(self) -> None:
        sockets = [s for feed in self.feeds.values() for s in feed.sockets if s.session_key]
        if not sockets:
            return
        revoked = await database_sync_to_async(selectors.revoked_sessions)(
            [(s.session_key, s.user.pk) for s in sockets]
        )
        for socket in sockets:
            if socket.session_key in revoked:
                await socket.close(code=4401)

    async def keep_presence(self) -> None:
        state = shared_state()
        entries = [
            (feed.room_id, socket.username, socket.conn_id, socket.user.pk)
            for feed in self.feeds.values()
            for socket in feed.sockets
            if socket.present
        ]
        if entries:
            await state.heartbeat(entries)
        for room_id in list(self.feeds):
            for username in await state.sweep(room_id):
                online = await state.online(room_id)
                await publish(
                    room_id,
                    {"type": "room.presence", "frame": presence_frame(online, left=username)},
                )


_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub]" = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub
