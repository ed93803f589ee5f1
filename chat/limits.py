"""Rate limits on what people do through the sockets: one table, one counter.

Each limit counts per user (posts per user per room) across all their connections and server
processes, in the shared state (a Redis sliding window). Its numbers are settings, read at each
use. A refused action changes nothing and is answered `rate_limited` with `retry_after`; when
the shared state does not answer, `unavailable` (nothing was done, so sending again is safe).
"""

import logging
from dataclasses import dataclass

from django.conf import settings

from . import metrics
from .realtime.protocol import ChatError, ErrorCode
from .shared_state import shared_state

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limit:
    name: str
    count_setting: str
    window_setting: str
    what: str  # for the error's sentence: "at most 20 {what} in 10 seconds"
    per_room: bool = False

    @property
    def count(self) -> int:
        return getattr(settings, self.count_setting)

    @property
    def window(self) -> float:
        return getattr(settings, self.window_setting)

    def key(self, user_id: int, room_id: int | None) -> str:
        return f"{self.name}:{room_id}:{user_id}" if self.per_room else f"{self.name}:{user_id}"


POSTS = Limit("post", "CHAT_RATE_LIMIT_POSTS", "CHAT_RATE_LIMIT_WINDOW", "messages", per_room=True)
CHANGES = Limit(
    "changes", "CHAT_RATE_LIMIT_CHANGES", "CHAT_RATE_LIMIT_CHANGES_WINDOW", "edits and deletions"
)
HISTORY = Limit(
    "history", "CHAT_RATE_LIMIT_HISTORY", "CHAT_RATE_LIMIT_HISTORY_WINDOW", "history requests"
)
# Reports count like posts (the same numbers, per user per room), on a counter of their own.
REPORTS = Limit(
    "report", "CHAT_RATE_LIMIT_POSTS", "CHAT_RATE_LIMIT_WINDOW", "reports", per_room=True
)

MEMBERSHIP = Limit(
    "members",
    "CHAT_RATE_LIMIT_MEMBERSHIP",
    "CHAT_RATE_LIMIT_MEMBERSHIP_WINDOW",
    "membership changes or new conversations",
)
LOOKUPS = Limit(
    "lookups", "CHAT_RATE_LIMIT_LOOKUPS", "CHAT_RATE_LIMIT_LOOKUPS_WINDOW", "user lookups"
)
UPLOADS = Limit("upload", "CHAT_RATE_LIMIT_UPLOADS", "CHAT_RATE_LIMIT_UPLOADS_WINDOW", "uploads")
SEARCHES = Limit("search", "CHAT_RATE_LIMIT_SEARCH", "CHAT_RATE_LIMIT_SEARCH_WINDOW", "searches")


def unavailable(ref: object = None) -> ChatError:
    return ChatError(
        ErrorCode.UNAVAILABLE,
        "The chat service is briefly unavailable; try again in a moment.",
        ref=ref,
        retry_after=1,
    )


def _shared_state_down(ref) -> ChatError:
    metrics.REDIS_ERRORS.labels("limit").inc()
    logger.warning("shared state unavailable", exc_info=True)
    return unavailable(ref)


def _refuse_past(limit: Limit, wait: float, ref) -> None:
    """Raise `rate_limited` when the counter said to wait."""
    if wait:
        raise ChatError(
            ErrorCode.RATE_LIMITED,
            f"Slow down: at most {limit.count} {limit.what} in {limit.window:g} seconds.",
            ref=ref,
            retry_after=wait,
        )


async def hit(limit: Limit, *, user_id: int, room_id: int | None = None, ref=None) -> None:
    """Count one use; raise `rate_limited` past the limit, `unavailable` without Redis."""
    try:
        wait = await shared_state().hit(limit.key(user_id, room_id), limit.count, limit.window)
    except Exception:
        raise _shared_state_down(ref) from None
    _refuse_past(limit, wait, ref)


def hit_now(limit: Limit, *, user_id: int, room_id: int | None = None, ref=None) -> None:
    """`hit` for synchronous callers (the views' JSON endpoints), on the same counters."""
    from . import throttle

    try:
        wait = throttle.hit(limit.key(user_id, room_id), limit.count, limit.window)
    except Exception:
        raise _shared_state_down(ref) from None
    _refuse_past(limit, wait, ref)


async def once_per(key: str, seconds: float, *, ref=None) -> bool:
    """True the first time in `seconds` (typing notices), across processes."""
    try:
        return await shared_state().once_per(key, seconds)
    except Exception:
        logger.warning("shared state unavailable", exc_info=True)
        raise unavailable(ref) from None
