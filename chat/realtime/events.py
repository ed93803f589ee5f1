"""Ringing a room's doorbell on the channel layer.

The layer only says "room R reached cursor N" (with the frame, so receivers need not read the
database on the common path). Every process's hub checks the cursor against what it has and
fills any gap from the database, so a lost or late event costs latency, never a message.
"""

import asyncio
import logging
import os
import weakref
from collections import deque
from typing import Any

import redis
from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)


def group_name(room_id: int) -> str:
    return f"room.{room_id}"


def change_event(room_id: int, cursor: int, frame: str) -> dict[str, Any]:
    return {"type": "room.change", "room": room_id, "cursor": cursor, "frame": frame}


def publish_change(room_id: int, cursor: int, frame: str) -> None:
    """Called after the commit that stored the change (synchronous callers: services, admin)."""
    publish_now(room_id, change_event(room_id, cursor, frame))


def publish_now(room_id: int, event: dict[str, Any]) -> None:
    """Send an event to the room's group from synchronous code; failures are logged.

    From a thread that an event loop is waiting on (the database calls of consumers and views)
    the event goes to that loop's publisher and this returns at once: the thread, which serves
    every database call of the process in turn, does not wait on Redis. Elsewhere (management
    commands, tests) it is sent before this returns.
    """
    event = {**event, "room": room_id}
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

    def __init__(self) -> None:
        self.pending: deque[dict[str, Any]] = deque()
        self.task: asyncio.Task | None = None

    def put(self, event: dict[str, Any]) -> None:
        self.pending.append(event)
        if self.task is None or self.task.done():
            # Runs only while there is something to send: no task outlives its loop's work.
            self.task = asyncio.get_running_loop().create_task(self._drain(), name="publisher")

    async def _drain(self) -> None:
        while self.pending:
            await _send(self.pending.popleft())


_publishers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Publisher]" = (
    weakref.WeakKeyDictionary()
)


def _enqueue(event: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    publisher = _publishers.get(loop)
    if publisher is None:
        publisher = _publishers[loop] = Publisher()
    publisher.put(event)


async def _send(event: dict[str, Any]) -> None:
    layer = get_channel_layer()
    group = group_name(event["room"])
    try:
        try:
            await layer.group_send(group, event)
        except (ConnectionError, redis.ConnectionError):
            # After a Redis restart the first pooled connection is stale; a second try
            # usually gets a fresh one.
            await layer.group_send(group, event)
    except Exception:
        # The change is stored; hubs find it on their next resync with the database.
        logger.warning(
            "channel layer unavailable: %s for room %s not sent (changes arrive by resync)",
            event["type"],
            event["room"],
            exc_info=True,
        )


async def publish(room_id: int, event: dict[str, Any]) -> None:
    """Presence, typing and kicks: events with no record behind them."""
    await get_channel_layer().group_send(group_name(room_id), {**event, "room": room_id})
