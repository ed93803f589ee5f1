"""Rate limits for synchronous code (views, forms, the admin).

The same sliding window as the sockets' limits (`chat.shared_state`), in the same Redis keys, so a
limit counts every process. Without Redis (one local process) it counts in memory.
"""

import threading
import time
import uuid
from collections import defaultdict, deque
from functools import lru_cache

from . import redis_connections
from .shared_state import HIT_SCRIPT, PEEK_SCRIPT, limit_key


@lru_cache(maxsize=8)
def _script(client, source: str = HIT_SCRIPT):
    return client.register_script(source)


_lock = threading.Lock()
_hits: dict[str, deque[float]] = defaultdict(deque)


def _count_locally(key: str, limit: int, window: float, *, use: bool) -> float:
    """The in-memory window: the wait before `key` may be used again (0: now), counting a use
    when `use` and it is allowed."""
    now = time.monotonic()
    with _lock:
        hits = _hits[key]
        while hits and hits[0] <= now - window:
            hits.popleft()
        if len(hits) >= limit:
            return round(max(0.001, hits[0] + window - now), 3)
        if use:
            hits.append(now)
        return 0.0


def hit(key: str, limit: int, window: float) -> float:
    """Count one use of `key`: 0 when allowed, else the seconds until the next use is allowed.

    Raises redis' errors when Redis does not answer; callers decide whether to fail open.
    """
    if not redis_connections.configured():
        return _count_locally(key, limit, window, use=True)
    wait_ms = _script(redis_connections.sync_client())(
        keys=[limit_key(key)],
        args=[int(time.time() * 1000), int(window * 1000), limit, uuid.uuid4().hex],
    )
    return round(int(wait_ms) / 1000, 3)


def peek(key: str, limit: int, window: float) -> float:
    """Like `hit`, without counting a use: 0 when a use would be allowed now, else the wait.

    For limits on failures (logins): check before trying, `hit` after a failure.
    """
    if not redis_connections.configured():
        return _count_locally(key, limit, window, use=False)
    wait_ms = _script(redis_connections.sync_client(), PEEK_SCRIPT)(
        keys=[limit_key(key)], args=[int(time.time() * 1000), int(window * 1000), limit]
    )
    return round(int(wait_ms) / 1000, 3)


def reset_local() -> None:
    """Forget the in-memory counts (tests)."""
    with _lock:
        _hits.clear()
