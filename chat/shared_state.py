"""State shared by every server process: presence, rate limits, throttles.

With Redis configured (`REDIS_URL` or `REDIS_SENTINELS`) it lives in Redis, so a user's two tabs
on two processes join once and a rate limit counts all their connections. Without it (one local
process) it lives in memory.
"""

import asyncio
import logging
import time
import uuid
import weakref
from collections import defaultdict, deque

from django.conf import settings

from . import redis_connections

logger = logging.getLogger(__name__)

# KEYS: room set (user -> latest expiry), user set (connection -> expiry).
# ARGV: user, connection ('' when only sweeping expired ones), now.
# Returns 1 when this call removed the user's last connection: that caller announces `left`.
_LEAVE = """
if ARGV[2] ~= '' then redis.call('ZREM', KEYS[2], ARGV[2]) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
if redis.call('ZCARD', KEYS[2]) == 0 then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('ZADD', KEYS[1], top[2], ARGV[1])
return 0
"""

# ARGV: user, connection, now, expiry, key ttl. Returns 1 when the user was not online before.
_JOIN = """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
local before = redis.call('ZCARD', KEYS[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
redis.call('ZADD', KEYS[1], 'GT', ARGV[4], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[5])
if before == 0 then return 1 end
return 0
"""

# Sliding-window limit. KEYS: the window. ARGV: now (ms), window (ms), limit[, unique member].
# Both scripts return 0 when a use is allowed, else the milliseconds until the oldest use leaves
# the window; HIT_SCRIPT also counts the use, PEEK_SCRIPT only looks (chat.throttle.peek).
_FULL_WINDOW = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + tonumber(ARGV[2]) - tonumber(ARGV[1]))
end
"""
HIT_SCRIPT = (
    _FULL_WINDOW
    + """redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0
"""
)
PEEK_SCRIPT = _FULL_WINDOW + "return 0\n"


# Per-user socket cap. KEYS: the user's socket set. ARGV: connection, now, expiry, cap, key ttl.
_OPEN = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


def limit_key(key: str) -> str:
    """The Redis key of one rate limit's sliding window."""
    return f"chat:limit:{key}"


def _sockets_key(user_id: int) -> str:
    return f"chat:sockets:{user_id}"


def presence_key(room_id: int) -> str:
    """The room's presence set: username -> expiry of their latest connection."""
    return f"chat:presence:{room_id}"


def _user_key(room_id: int, username: str) -> str:
    return f"chat:presence:{room_id}:{username}"


class RedisState:
    def __init__(self) -> None:
        self.client = redis_connections.async_client(timeout=3, health_check_interval=10)
        self._join = self.client.register_script(_JOIN)
        self._leave = self.client.register_script(_LEAVE)
        self._hit = self.client.register_script(HIT_SCRIPT)
        self._open = self.client.register_script(_OPEN)

    async def open_socket(self, user_id: int, conn_id: str, cap: int) -> bool:
        now = time.time()
        ttl = settings.CHAT_PRESENCE_TTL
        return bool(
            await self._open(
                keys=[_sockets_key(user_id)], args=[conn_id, now, now + ttl, cap, ttl * 4]
            )
        )

    async def close_socket(self, user_id: int, conn_id: str) -> None:
        await self.client.zrem(_sockets_key(user_id), conn_id)

    async def join(self, room_id: int, username: str, conn_id: str) -> bool:
        now = time.time()
        ttl = settings.CHAT_PRESENCE_TTL
        first = await self._join(
            keys=[presence_key(room_id), _user_key(room_id, username)],
            args=[username, conn_id, now, now + ttl, ttl * 4],
        )
        return bool(first)

    async def leave(self, room_id: int, username: str, conn_id: str) -> bool:
        last = await self._leave(
            keys=[presence_key(room_id), _user_key(room_id, username)],
            args=[username, conn_id, time.time()],
        )
        return bool(last)

    async def heartbeat(self, entries: list[tuple[int, str, str, int]]) -> None:
        """Keep this process's connections alive (a dead process's ones expire)."""
        expiry = time.time() + settings.CHAT_PRESENCE_TTL
        ttl = settings.CHAT_PRESENCE_TTL * 4
        async with self.client.pipeline(transaction=False) as pipe:
            for room_id, username, conn_id, user_id in entries:
                pipe.zadd(_sockets_key(user_id), {conn_id: expiry})
                pipe.expire(_sockets_key(user_id), ttl)
                pipe.zadd(_user_key(room_id, username), {conn_id: expiry})
                pipe.expire(_user_key(room_id, username), ttl)
                pipe.zadd(presence_key(room_id), {username: expiry}, gt=True)
                pipe.expire(presence_key(room_id), ttl)
            await pipe.execute()

    async def sweep(self, room_id: int) -> list[str]:
        """Users whose every connection expired (their server died): the ones this call removed."""
        now = time.time()
        gone = []
        for raw in await self.client.zrangebyscore(presence_key(room_id), "-inf", now):
            username = raw.decode()
            if await self._leave(
                keys=[presence_key(room_id), _user_key(room_id, username)],
                args=[username, "", now],
            ):
                gone.append(username)
        return gone

    async def online(self, room_id: int) -> list[str]:
        names = await self.client.zrangebyscore(presence_key(room_id), time.time(), "+inf")
        return sorted(name.decode() for name in names)

    async def hit(self, key: str, limit: int, window: float) -> float:
        wait_ms = await self._hit(
            keys=[limit_key(key)],
            args=[int(time.time() * 1000), int(window * 1000), limit, uuid.uuid4().hex],
        )
        return round(int(wait_ms) / 1000, 3)

    async def once_per(self, key: str, seconds: float) -> bool:
        return bool(await self.client.set(f"chat:once:{key}", 1, nx=True, px=int(seconds * 1000)))


class LocalState:
    """The same contract in memory, for a single process without Redis."""

    def __init__(self) -> None:
        self.connections: dict[int, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        self.hits: dict[str, deque[float]] = defaultdict(deque)
        self.until: dict[str, float] = {}
        self.sockets: dict[int, set[str]] = defaultdict(set)

    async def open_socket(self, user_id: int, conn_id: str, cap: int) -> bool:
        if len(self.sockets[user_id]) >= cap:
            return False
        self.sockets[user_id].add(conn_id)
        return True

    async def close_socket(self, user_id: int, conn_id: str) -> None:
        self.sockets[user_id].discard(conn_id)

    async def join(self, room_id: int, username: str, conn_id: str) -> bool:
        conns = self.connections[room_id][username]
        conns.add(conn_id)
        return len(conns) == 1

    async def leave(self, room_id: int, username: str, conn_id: str) -> bool:
        users = self.connections[room_id]
        conns = users.get(username)
        if not conns or conn_id not in conns:
            return False
        conns.discard(conn_id)
        if conns:
            return False
        del users[username]
        return True

    async def heartbeat(self, entries: list[tuple[int, str, str, int]]) -> None:
        return None

    async def sweep(self, room_id: int) -> list[str]:
        return []

    async def online(self, room_id: int) -> list[str]:
        return sorted(self.connections[room_id])

    async def hit(self, key: str, limit: int, window: float) -> float:
        now = time.monotonic()
        hits = self.hits[key]
        while hits and hits[0] <= now - window:
            hits.popleft()
        if len(hits) >= limit:
            return round(max(0.001, hits[0] + window - now), 3)
        hits.append(now)
        return 0.0

    async def once_per(self, key: str, seconds: float) -> bool:
        now = time.monotonic()
        if self.until.get(key, 0) > now:
            return False
        self.until[key] = now + seconds
        return True


_states: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RedisState | LocalState]" = (
    weakref.WeakKeyDictionary()
)


def shared_state() -> RedisState | LocalState:
    """This event loop's handle on the shared state (Redis clients belong to one loop)."""
    loop = asyncio.get_running_loop()
    state = _states.get(loop)
    if state is None:
        state = RedisState() if redis_connections.configured() else LocalState()
        _states[loop] = state
    return state
