"""One hub per server process: the only member of each room's channel-layer group here.

The channel layer is a doorbell. A `RoomChanged` event says "room R reached cursor N" and
carries the frame, serialized once by the writer. The hub keeps, per room, the highest cursor it
has delivered and a short buffer of recent frames; an event that skips cursors (out of order
from two writers, or lost by the layer) makes it read the missing changes from the database.
A resync tick compares every room's cursor with the database too (one query for all rooms), so a
doorbell that never rang (Redis restarted and forgot the group, or was down) costs at most one
tick of latency. Group memberships are not renewed on that tick: the hub keeps a marker key on
each channel-layer server and joins its groups again only when a server forgot the marker (it
restarted without persistence, was flushed, or failed over and lost writes), when a room's cursor
moved without its doorbell ringing, or twice per `group_expiry`. Idle, a tick costs one query and
one Redis command per channel-layer server, however many rooms the process holds.

Sockets register with the hub through the `Socket` interface below and each keeps its own `sent`
cursor: frames reach a socket strictly as sent+1, sent+2, ... whatever order the layer delivers
in. The hub never imports the consumer. Presence batching and upkeep (`presence`) and the
session watcher (`sessions`) are their own modules; the hub runs their periodic tasks while it
holds any room or inbox.

Inbox sockets (§5, `inboxes`) watch feeds rather than join them: a feed with watchers and no
room socket keeps only its cursor (nothing to deliver, no gap to fill from the database) and
tells the inboxes that the room moved. The hub also joins each inbox user's own group, for the
events that concern one user (`InboxChanged`, `Notified`).
"""

import asyncio
import logging
import time
import weakref
from collections import deque
from typing import Protocol

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from .. import metrics, selectors
from ..shared_state import presence_entry, socket_entry
from . import events, inboxes, presence, sessions
from .batching import Batched
from .events import group_name, user_group
from .protocol import CloseCode
from .transport import Outgoing

logger = logging.getLogger(__name__)


class Socket(Protocol):
    """What the hub and its helpers need of a socket (chat.realtime.consumers.RoomConsumer)."""

    user_id: int
    username: str
    conn_id: str
    session_key: str | None
    present: bool  # counted in the shared presence state
    counted: bool  # counted against its user's socket cap in the shared state
    # The cursor of the last change frame sent (None: not ready, or closing), and whether a
    # delivery to it is under way (Feed.deliver_to).
    sent: int | None
    delivering: bool
    # The room's members epoch when this socket's right to read was last confirmed.
    epoch: int

    async def deliver(self) -> None:
        """Send every change after the socket's cursor up to its feed's (Feed.deliver_to)."""

    async def send_frame(self, frame: Outgoing) -> None:
        """Write one frame to the client."""

    async def send_live(self, frame: Outgoing) -> None:
        """A frame outside the change stream (presence, typing)."""

    async def close(self, code: int) -> None: ...


BUFFER_FRAMES = 1024


class Feed:
    """A room as this process sees it: delivered cursor, recent frames, local sockets."""

    def __init__(self, room_id: int, cursor: int) -> None:
        self.room_id = room_id
        self.cursor = cursor
        self.frames: deque[tuple[int, Outgoing]] = deque(maxlen=BUFFER_FRAMES)
        self.sockets: set[Socket] = set()
        # The inbox sockets here that watch this room (§5); they get no frames from the feed.
        self.watchers: set[inboxes.InboxSocket] = set()
        self.lock = asyncio.Lock()
        # The room's members epoch its sockets have been checked against (Hub.recheck).
        self.epoch = 0
        self.presence = presence.PresenceBatch(room_id, self.push_live)

    def idle(self) -> bool:
        return not self.sockets and not self.watchers

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

    async def deliver_to(self, socket: Socket) -> int:
        """Send `socket` every change after its `sent` cursor up to the feed's, strictly in
        cursor order: from the buffer, or from the database when the socket is behind it (a
        resume from an old cursor). Returns how many frames went out."""
        if socket.sent is None or socket.delivering:
            return 0
        socket.delivering = True
        sent = 0
        try:
            while socket.sent is not None and socket.sent < self.cursor:
                frames = self.frames_after(socket.sent)
                if frames is None:
                    rows = await database_sync_to_async(selectors.change_frames)(
                        self.room_id, socket.sent, self.cursor
                    )
                    frames = [(cursor, Outgoing(text)) for cursor, text in rows]
                progressed = False
                for cursor, frame in frames:
                    if socket.sent is None or cursor != socket.sent + 1:
                        break
                    socket.sent = cursor
                    progressed = True
                    sent += 1
                    await socket.send_frame(frame)
                if not progressed:
                    logger.error("room %s: no progress past cursor %s", self.room_id, socket.sent)
                    break
        finally:
            socket.delivering = False
        return sent

    async def push(self) -> None:
        for socket in list(self.sockets):
            await socket.deliver()

    async def push_live(self, frame: Outgoing, *, skip: str | None = None) -> None:
        for socket in list(self.sockets):
            if socket.username != skip:
                await socket.send_live(frame)


# The cursors and members epochs of rooms whose feeds are being made, read for all at once.
positions = Batched(selectors.room_positions)


class Hub:
    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.feeds: dict[int, Feed] = {}
        # Rooms whose feed one attach is making (joining the group, reading the cursor).
        self.making: dict[int, asyncio.Future] = {}
        self.channel: str | None = None
        # The channel-layer groups this process is in: rooms' and (for inboxes) users'.
        self.subscribed: set[str] = set()
        self.tasks: list[asyncio.Task] = []
        self.lock = asyncio.Lock()
        # When every group membership was last added (loop time): renewed before group_expiry.
        self.joined_all = 0.0
        self.inbox = inboxes.Inboxes(self)

    # --- sockets -------------------------------------------------------------------------

    async def attach(self, room_id: int, socket: Socket) -> Feed:
        """Add a socket to its room's feed, making the feed if it is the room's first here.

        A new feed joins the room's group and then reads the room's cursor: any change after
        that cursor rings this process's bell. Many rooms' feeds are made at once (a crowd
        connecting after a deploy): only bookkeeping is under the hub's lock, the joins and the
        reads (batched, `positions`) are not, and a room's later sockets wait for its feed."""
        while True:
            async with self.lock:
                await self._start()
                feed = self.feeds.get(room_id)
                if feed is not None:
                    feed.sockets.add(socket)
                    break
                making = self.making.get(room_id)
                if making is None:
                    making = self.making[room_id] = asyncio.get_running_loop().create_future()
                    maker = True
                else:
                    maker = False
            if not maker:
                await asyncio.shield(making)  # then take the feed under the lock, above
                continue
            position = None
            try:
                await self._subscribe(group_name(room_id))
                position = await positions(room_id)
            finally:
                async with self.lock:
                    del self.making[room_id]
                    making.set_result(None)
                    if position is not None:
                        feed = self.feeds.get(room_id)  # an inbox's watch made it meanwhile
                        if feed is None:
                            feed = self.feeds[room_id] = Feed(room_id, position[0])
                            feed.epoch = position[1]
                        feed.sockets.add(socket)
            break
        if socket.epoch < feed.epoch:
            # Someone was removed between this socket's check and now: is it still in?
            async with feed.lock:
                await self.recheck(feed, feed.epoch)
        return feed

    async def detach(self, room_id: int, socket: Socket) -> None:
        # Only bookkeeping under the lock: a new socket's attach must never wait on Redis here.
        async with self.lock:
            feed = self.feeds.get(room_id)
            if feed is None:
                return
            feed.sockets.discard(socket)
            leaving = self._drop_idle([room_id])
            channel, tasks = self.channel, self._stop_if_idle()
        await self._leave(leaving, channel, tasks)

    # --- inbox sockets (§5) --------------------------------------------------------------

    async def attach_inbox(self, socket: inboxes.InboxSocket) -> None:
        """Count an inbox socket here and join its user's group (their own events)."""
        async with self.lock:
            await self._start()
            sockets = self.inbox.users.setdefault(socket.user_id, set())
            sockets.add(socket)
            if len(sockets) == 1:
                await self._subscribe(user_group(socket.user_id))

    async def watch(self, socket: inboxes.InboxSocket, room_ids: list[int]) -> dict[int, int]:
        """Let an inbox socket watch these rooms (their feeds are made when missing, joining
        their groups first); returns each watched room's cursor as the feed has it."""
        leaving: list[str] = []
        async with self.lock:
            if socket not in self.inbox.users.get(socket.user_id, ()):
                return {}  # closed meanwhile
            new = [room_id for room_id in room_ids if room_id not in self.feeds]
            for room_id in new:
                await self._subscribe(group_name(room_id))
            if new:
                # Read after joining the groups: any change after these cursors rings our bell.
                positions = await database_sync_to_async(selectors.room_cursors)(new)
                for room_id in new:
                    if room_id in positions:
                        cursor, epoch = positions[room_id]
                        feed = self.feeds[room_id] = Feed(room_id, cursor)
                        feed.epoch = epoch
                    else:  # archived meanwhile
                        leaving.append(group_name(room_id))
                        self.subscribed.discard(group_name(room_id))
            watched = {}
            for room_id in room_ids:
                feed = self.feeds.get(room_id)
                if feed is not None:
                    feed.watchers.add(socket)
                    watched[room_id] = feed.cursor
            channel = self.channel
        await self._leave(leaving, channel, [])
        return watched

    async def unwatch(self, socket: inboxes.InboxSocket, room_id: int) -> None:
        async with self.lock:
            feed = self.feeds.get(room_id)
            if feed is None:
                return
            feed.watchers.discard(socket)
            leaving = self._drop_idle([room_id])
            channel = self.channel
        await self._leave(leaving, channel, [])

    async def detach_inbox(self, socket: inboxes.InboxSocket) -> None:
        async with self.lock:
            sockets = self.inbox.users.get(socket.user_id, set())
            if socket not in sockets:
                return
            sockets.discard(socket)
            leaving = []
            if not sockets:
                del self.inbox.users[socket.user_id]
                if user_group(socket.user_id) in self.subscribed:
                    self.subscribed.discard(user_group(socket.user_id))
                    leaving.append(user_group(socket.user_id))
            watched = [room_id for room_id, feed in self.feeds.items() if socket in feed.watchers]
            for room_id in watched:
                self.feeds[room_id].watchers.discard(socket)
            leaving += self._drop_idle(watched)
            channel, tasks = self.channel, self._stop_if_idle()
        await self._leave(leaving, channel, tasks)

    # --- feeds and groups ----------------------------------------------------------------

    async def _start(self) -> None:
        """Start the hub's tasks if it holds nothing yet (under the lock)."""
        if self.tasks:
            return
        self.channel = await self.layer.new_channel()
        self.joined_all = asyncio.get_running_loop().time()
        await self._mark()
        await self._subscribe(events.HUBS_GROUP)
        try:
            # Registers this process while it holds little or nothing: the first upkeep beat
            # would otherwise find its set incomplete and register every socket again.
            await self.keep_presence()
        except Exception:
            logger.warning("presence upkeep failed", exc_info=True)
        self.tasks = [
            asyncio.create_task(self._read(), name="hub-read"),
            asyncio.create_task(self._tick(), name="hub-tick"),
            asyncio.create_task(self._watch_sessions(), name="hub-sessions"),
        ]

    def _drop_idle(self, room_ids: list[int]) -> list[str]:
        """Forget the feeds of these rooms that nothing here uses any more (under the lock);
        returns the groups to leave."""
        leaving = []
        for room_id in room_ids:
            feed = self.feeds.get(room_id)
            if feed is None or not feed.idle():
                continue
            del self.feeds[room_id]
            if group_name(room_id) in self.subscribed:
                self.subscribed.discard(group_name(room_id))
                leaving.append(group_name(room_id))
        return leaving

    def _stop_if_idle(self) -> list[asyncio.Task]:
        idle = not self.feeds and not self.inbox.users and not self.making
        return self._stop() if idle else []

    async def _leave(self, groups: list[str], channel: str | None, tasks: list) -> None:
        """Leave groups and wait for stopped tasks, outside the lock."""
        if tasks:  # the hub stopped: out of the process-wide group too
            groups = [*groups, events.HUBS_GROUP]
        for group in groups:
            try:
                await self.layer.group_discard(group, channel)
            except Exception:
                logger.warning("could not leave group %s", group, exc_info=True)
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    def _stop(self) -> list[asyncio.Task]:
        """Cancel the hub's tasks (no room left here); the next attach starts fresh ones."""
        self.subscribed.discard(events.HUBS_GROUP)
        tasks, self.tasks = self.tasks, []
        for task in tasks:
            task.cancel()
        return tasks

    def _running(self) -> bool:
        """Whether the calling task is still one of the hub's. `_stop` cancels them, but
        redis-py's asyncio client can turn a cancel that lands in a blocking read into its own
        TimeoutError, which the loops would take for a failed read and go on."""
        return asyncio.current_task() in self.tasks

    async def _subscribe(self, group: str) -> None:
        try:
            await self.layer.group_add(group, self.channel)
        except Exception:
            # Degraded, not broken: the resync tick delivers from the database and retries.
            self.subscribed.discard(group)
            metrics.REDIS_ERRORS.labels("group_add").inc()
            logger.warning("channel layer unavailable; %s on resync only", group)
        else:
            self.subscribed.add(group)

    def groups(self) -> list[str]:
        """The groups this process should be in: its rooms' and its inbox users'."""
        return [group_name(room_id) for room_id in self.feeds] + [
            user_group(user_id) for user_id in self.inbox.users
        ]

    # --- the doorbell --------------------------------------------------------------------

    async def _read(self) -> None:
        while self._running():
            try:
                received = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                if not self._running():
                    return
                metrics.REDIS_ERRORS.labels("receive").inc()
                logger.warning("channel layer receive failed; retrying", exc_info=True)
                await asyncio.sleep(1)
                continue
            event = events.parse(received)
            if event is None:
                continue
            try:
                await self.handle(event)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("hub could not handle %s", event.type)

    async def handle(self, event: events.Event) -> None:
        match event:
            case events.InboxChanged(user=user, room=room):
                self.inbox.user_changed(user, room)
                return
            case events.Notified(user=user, frame=frame):
                await self.inbox.notify(user, frame)
                return
            case events.SessionsChanged(user=user):
                await sessions.close_revoked([s for s in self.sockets() if s.user_id == user])
                return
            case events.PresenceBatch(changes=changes):
                for room_id, frame in changes:
                    feed = self.feeds.get(room_id)
                    if feed is not None:
                        await feed.presence.add(frame)
                return
        feed = self.feeds.get(event.room)
        if feed is None:
            return
        match event:
            case events.RoomChanged(cursor=cursor, frame=frame, at=at, epoch=epoch):
                if at:
                    metrics.HUB_LAG.observe(max(0.0, time.time() - at))
                await self.advance(feed, cursor, frame, epoch=epoch)
            case events.PresenceChanged(frame=frame):
                await feed.presence.add(frame)
            case events.UserTyping(user=user, frame=frame):
                await feed.push_live(Outgoing(frame), skip=user)
            case events.UserKicked(user=user, code=code):
                for socket in list(feed.sockets):
                    if socket.username == user:
                        await socket.close(code=code)
            case events.RoomClosed(code=code):
                # Archived: every socket in it closes (sockets leave the feed as they close, so
                # close a copy of the set); inboxes read that it is gone.
                for socket in list(feed.sockets):
                    await socket.close(code=code)
                if feed.watchers:
                    self.inbox.room_changed(feed.room_id)

    async def advance(
        self, feed: Feed, cursor: int, frame: str | None = None, *, epoch: int = 0
    ) -> None:
        """Bring the feed up to `cursor`, from the event's frame or from the database. When the
        room's members epoch moved (someone was removed), first close the sockets of whoever
        may no longer read it: nothing newer reaches them."""
        if cursor <= feed.cursor:
            return
        if epoch > feed.epoch:
            async with feed.lock:
                await self.recheck(feed, epoch)
        if feed.watchers:
            self.inbox.room_changed(feed.room_id)
        if not feed.sockets:
            # Watched by inboxes only: they read summaries, not frames. No gap to fill.
            feed.frames.clear()
            feed.cursor = cursor
            return
        if frame is not None and cursor == feed.cursor + 1 and not feed.lock.locked():
            feed.extend([(cursor, Outgoing(frame))])
        else:
            async with feed.lock:
                if cursor <= feed.cursor:
                    return
                try:
                    frames = await database_sync_to_async(selectors.change_frames)(
                        feed.room_id, feed.cursor, cursor
                    )
                except Exception:
                    metrics.DATABASE_ERRORS.labels("gap_fill").inc()
                    raise
                metrics.GAP_FILLS.inc(len(frames))
                feed.extend([(c, Outgoing(text)) for c, text in frames])
        await feed.push()

    async def recheck(self, feed: Feed, epoch: int) -> None:
        """Confirm the feed's sockets checked before `epoch` may still read the room; close the
        others with 4403 (removed). Called under the feed's lock, before any frame newer than
        the removal is added to the feed."""
        stale = [socket for socket in feed.sockets if socket.epoch < epoch]
        if stale:
            allowed = await database_sync_to_async(selectors.members_among)(
                feed.room_id, sorted({socket.user_id for socket in stale})
            )
            for socket in stale:
                if socket.user_id in allowed:
                    socket.epoch = max(socket.epoch, epoch)
                else:
                    logger.info("room %s: %s no longer a member", feed.room_id, socket.username)
                    socket.sent = None  # no frame more, whatever is under way
                    await socket.close(code=CloseCode.FORBIDDEN)
        feed.epoch = max(feed.epoch, epoch)

    # --- resync, group refresh and presence upkeep ---------------------------------------

    async def _tick(self) -> None:
        interval = settings.CHAT_RESYNC_INTERVAL
        beats = max(1, int(settings.CHAT_PRESENCE_TTL / 3 / interval))
        tick = 0
        while self._running():
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
        await self.recover_groups()
        held = list(self.feeds)
        cursors = await database_sync_to_async(selectors.room_cursors)(held)
        for room_id in held:
            feed = self.feeds.get(room_id)
            if room_id not in cursors and feed is not None:
                # Archived, and the event that said so never came (Redis was down): close now.
                logger.info("room %s: archived; closing its sockets", room_id)
                for socket in list(feed.sockets):
                    await socket.close(code=CloseCode.NO_SUCH_ROOM)
        for room_id, (cursor, epoch) in cursors.items():
            feed = self.feeds.get(room_id)
            if feed is not None and epoch > feed.epoch:
                async with feed.lock:
                    await self.recheck(feed, epoch)
            if feed is not None and cursor > feed.cursor:
                metrics.RESYNC_FILLS.inc()
                logger.info(
                    "room %s: filling %s..%s from the database", room_id, feed.cursor, cursor
                )
                # The doorbell did not ring: make sure the group still has this process in it.
                await self._subscribe(group_name(room_id))
                await self.advance(feed, cursor, epoch=epoch)

    async def recover_groups(self) -> None:
        """Join again the groups a channel-layer server forgot; retry the ones that failed."""
        now = asyncio.get_running_loop().time()
        expiry = getattr(self.layer, "group_expiry", 86400)
        if not await self._marked() or now - self.joined_all > expiry / 2:
            logger.info("channel layer forgot this process (or its memberships are old): rejoining")
            self.joined_all = now
            self.subscribed.clear()
        missing = [group for group in self.groups() if group not in self.subscribed]
        for group in missing:
            await self._subscribe(group)
        if missing and all(group in self.subscribed for group in self.groups()):
            await self._mark()

    def _marker(self) -> str:
        return f"chat:hub:{self.channel}"

    def _servers(self) -> list:
        """The channel layer's Redis clients (none for the in-memory layer)."""
        return [self.layer.connection(i) for i in range(getattr(self.layer, "ring_size", 0))]

    async def _mark(self) -> None:
        """Leave the marker on every channel-layer server (after joining every group there)."""
        ttl = int(getattr(self.layer, "group_expiry", 86400))
        for server in self._servers():
            try:
                await server.set(self._marker(), 1, ex=ttl)
            except Exception:
                logger.warning("channel layer unavailable; marker not set", exc_info=True)

    async def _marked(self) -> bool:
        """Whether every channel-layer server still has the marker (renewing it): one command
        per server."""
        ttl = int(getattr(self.layer, "group_expiry", 86400))
        marked = True
        for server in self._servers():
            try:
                marked = bool(await server.expire(self._marker(), ttl)) and marked
            except Exception:
                metrics.REDIS_ERRORS.labels("group_add").inc()
                marked = False
        return marked

    async def _watch_sessions(self) -> None:
        """Channels checks the session only at connect: close sockets whose session ended."""
        while self._running():
            await asyncio.sleep(settings.CHAT_SESSION_CHECK_INTERVAL)
            try:
                await self.close_revoked_sessions()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("session check failed", exc_info=True)

    def sockets(self) -> list[Socket | inboxes.InboxSocket]:
        room_sockets = [socket for feed in self.feeds.values() for socket in feed.sockets]
        return room_sockets + self.inbox.sockets()

    async def close_revoked_sessions(self) -> None:
        await sessions.close_revoked(self.sockets())

    async def keep_presence(self) -> None:
        await presence.keep_alive(self.held)

    def held(self) -> list[str]:
        """What this process's sockets hold in the shared state (for re-registering)."""
        entries = []
        for feed in self.feeds.values():
            for socket in feed.sockets:
                if socket.present:
                    entries.append(presence_entry(feed.room_id, socket.username, socket.conn_id))
                if socket.counted:
                    entries.append(socket_entry(socket.user_id, socket.conn_id))
        for socket in self.inbox.sockets():
            if socket.counted:
                entries.append(socket_entry(socket.user_id, socket.conn_id))
        return entries


_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub]" = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub
