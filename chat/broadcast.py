"""Ringing a room's doorbell on the channel layer.

The layer only says "room R reached cursor N" (with the frame, so receivers need not read the
database on the common path). Every process's hub checks the cursor against what it has and
fills any gap from the database, so a lost or late event costs latency, never a message.
"""

import logging
from typing import Any

import redis
from asgiref.sync import async_to_sync
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
    """Send an event to the room's group from synchronous code; failures are logged."""
    send = async_to_sync(get_channel_layer().group_send)
    event = {**event, "room": room_id}
    try:
        try:
            send(group_name(room_id), event)
        except (ConnectionError, redis.ConnectionError):
            # After a Redis restart the first pooled connection is stale; a second try
            # usually gets a fresh one.
            send(group_name(room_id), event)
    except Exception:
        # The change is stored; hubs find it on their next resync with the database.
        logger.warning(
            "channel layer unavailable: %s for room %s not sent (changes arrive by resync)",
            event["type"],
            room_id,
            exc_info=True,
        )


async def publish(room_id: int, event: dict[str, Any]) -> None:
    """Presence, typing and kicks: events with no record behind them."""
    await get_channel_layer().group_send(group_name(room_id), {**event, "room": room_id})
