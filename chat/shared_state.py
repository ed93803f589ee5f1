"""State shared by every server process: presence, rate limits, throttles.

With Redis configured (`REDIS_URL` or `REDIS_SENTINELS`) it lives in Redis, so a user's two tabs
on two processes join once and a rate limit counts all their connections. Without it (one local
process) it lives in memory.
"""

import asyncio
import json
import logging
import time
import uuid
import weakref
from collections import defaultdict, deque
from collections.abc import Callable

from django.conf import settings

from . import redis_connections

logger = logging.getLogger(__name__)

# Presence and the per-user socket cap are kept per process, not per connection: each process
# registers in "chat:processes" (process id -> expiry) and lists what it holds in a set of its
# own ("chat:process:<id>"), so that its upkeep is one script per interval however many rooms
# and sockets it holds. A process whose entry expired died without saying goodbye: the first
# living process to notice removes what it held (`_BEAT`) and announces the users who left.
#
# Keys: a room's presence set (username -> +inf, so the lobby's ZCOUNT now..+inf counts it), a
# user's connections in a room (connection -> +inf), a user's sockets for the cap (connection ->
# +inf), and each process's set of entries, fields separated by SEP:
#   s SEP user id SEP connection                a socket counted against the cap
#   p SEP room id SEP connection SEP username   a connection present in a room
#   !                                           the set is complete (see `_BEAT`)
# The scripts name the keys of other processes' entries themselves, as one Redis server (or a
# Sentinel-managed primary) allows; the site does not run on Redis Cluster.
SEP = "\x1f"
DEAD_PER_BEAT = 10  # dead processes cleared by one beat; the next beat takes the rest

_HELPERS = r"""
local function split(entry)
  local parts = {}
  for part in string.gmatch(entry, '[^\31]+') do parts[#parts + 1] = part end
  return parts
end
local function leave(room, username, conn)
  local user_key = 'chat:presence:' .. room .. ':' .. username
  redis.call('ZREM', user_key, conn)
  if redis.call('ZCARD', user_key) == 0 then
    return redis.call('ZREM', 'chat:presence:' .. room, username)
  end
  return 0
end
local function online(room)
  local names = redis.call('ZRANGE', 'chat:presence:' .. room, 0, -1)
  if #names == 0 then return '[]' end
  return cjson.encode(names)
end
"""

# KEYS: room set, user set, process set. ARGV: username, connection, entry, room, process id,
# process expiry. Returns {1 when the user was not online before, the online list as JSON}.
_JOIN = (
    _HELPERS
    + """
local before = redis.call('ZCARD', KEYS[2])
redis.call('ZADD', KEYS[2], 'inf', ARGV[2])
redis.call('ZADD', KEYS[1], 'inf', ARGV[1])
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('ZADD', 'chat:processes', 'NX', ARGV[6], ARGV[5])
return {before == 0 and 1 or 0, online(ARGV[4])}
"""
)

# KEYS: process set. ARGV: room, username, connection, entry. Returns {1 when this call removed
# the user's last connection in the room (that caller announces `left`), the online list}.
_LEAVE = (
    _HELPERS
    + """
redis.call('SREM', KEYS[1], ARGV[4])
if leave(ARGV[1], ARGV[2], ARGV[3]) == 1 then return {1, online(ARGV[1])} end
return {0, ''}
"""
)

# Per-user socket cap. KEYS: the user's socket set, process set. ARGV: connection, cap, entry,
# process id, process expiry.
_OPEN = """
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], 'inf', ARGV[1])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('ZADD', 'chat:processes', 'NX', ARGV[5], ARGV[4])
return 1
"""

# KEYS: the user's socket set, process set. ARGV: connection, entry.
_CLOSE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[2])
return 1
"""

# Upkeep, once per interval per process, whatever it holds. KEYS: this process's set. ARGV:
# process id, now, expiry, how many dead processes to clear in one call. Renews this process,
# clears dead ones and returns {1 if this process's set is complete, else 0 (Redis restarted or
# was flushed, or another process took this one for dead after a long stall: the caller
# registers everything it holds again), then room, username, room, username, ...: the users
# whose last connection was a dead process's}.
_BEAT = (
    _HELPERS
    + """
redis.call('ZADD', 'chat:processes', ARGV[3], ARGV[1])
local result = {redis.call('SISMEMBER', KEYS[1], '!')}
local dead = redis.call('ZRANGEBYSCORE', 'chat:processes', '-inf', ARGV[2], 'LIMIT', 0, ARGV[4])
for _, process in ipairs(dead) do
  redis.call('ZREM', 'chat:processes', process)
  local key = 'chat:process:' .. process
  for _, entry in ipairs(redis.call('SMEMBERS', key)) do
    local parts = split(entry)
    if parts[1] == 's' then
      redis.call('ZREM', 'chat:sockets:' .. parts[2], parts[3])
    elseif parts[1] == 'p' and leave(parts[2], parts[4], parts[3]) == 1 then
      result[#result + 1] = parts[2]
      result[#result + 1] = parts[4]
    end
  end
  redis.call('DEL', key)
end
return result
"""
)

# Everything this process holds, again (when `_BEAT` found its set incomplete). KEYS: the
# process set. ARGV: process id, expiry, then the entries.
_REGISTER = (
    _HELPERS
    + """
for i = 3, #ARGV do
  local parts = split(ARGV[i])
  if parts[1] == 's' then
    redis.call('ZADD', 'chat:sockets:' .. parts[2], 'inf', parts[3])
  elseif parts[1] == 'p' then
    redis.call('ZADD', 'chat:presence:' .. parts[2] .. ':' .. parts[4], 'inf', parts[3])
    redis.call('ZADD', 'chat:presence:' .. parts[2], 'inf', parts[4])
  end
  redis.call('SADD', KEYS[1], ARGV[i])
end
redis.call('SADD', KEYS[1], '!')
redis.call('ZADD', 'chat:processes', ARGV[2], ARGV[1])
return 1
"""
)

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


def socket_entry(user_id: int, conn_id: str) -> str:
    """A process's record of one socket counted against its user's cap."""
    return SEP.join(("s", str(user_id), conn_id))


def presence_entry(room_id: int, username: str, conn_id: str) -> str:
    """A process's record of one connection present in a room."""
    return SEP.join(("p", str(room_id), conn_id, username))


def _process_key(process: str) -> str:
    return f"chat:process:{process}"


class RedisState:
    def __init__(self) -> None:
        self.client = redis_connections.async_client(timeout=3, health_check_interval=10)
        self.process = uuid.uuid4().hex
        self.key = _process_key(self.process)
        self._join = self.client.register_script(_JOIN)
        self._leave = self.client.register_script(_LEAVE)
        self._hit = self.client.register_script(HIT_SCRIPT)
        self._open = self.client.register_script(_OPEN)
        self._close = self.client.register_script(_CLOSE)
        self._beat = self.client.register_script(_BEAT)
        self._register = self.client.register_script(_REGISTER)
        # Leaves and closes that failed (Redis unreachable): sent again with the next beat, so
        # that a living process never leaves a ghost behind.
        self.unsent: list[tuple[str, ...]] = []

    def _expiry(self) -> float:
        return time.time() + settings.CHAT_PRESENCE_TTL

    async def open_socket(self, user_id: int, conn_id: str, cap: int) -> bool:
        entry = socket_entry(user_id, conn_id)
        return bool(
            await self._open(
                keys=[_sockets_key(user_id), self.key],
                args=[conn_id, cap, entry, self.process, self._expiry()],
            )
        )

    async def close_socket(self, user_id: int, conn_id: str) -> None:
        try:
            await self._close_socket(str(user_id), conn_id)
        except Exception:
            self.unsent.append(("s", str(user_id), conn_id))
            raise

    async def _close_socket(self, user_id: str, conn_id: str) -> None:
        await self._close(
            keys=[f"chat:sockets:{user_id}", self.key],
            args=[conn_id, SEP.join(("s", user_id, conn_id))],
        )

    async def join(self, room_id: int, username: str, conn_id: str) -> tuple[bool, list[str]]:
        """Record the connection; returns whether it is the user's first in the room, and the
        room's online list (one round trip, the list parsed by the C JSON decoder)."""
        first, online = await self._join(
            keys=[presence_key(room_id), _user_key(room_id, username), self.key],
            args=[
                username,
                conn_id,
                presence_entry(room_id, username, conn_id),
                room_id,
                self.process,
                self._expiry(),
            ],
        )
        return bool(first), sorted(json.loads(online))

    async def leave(self, room_id: int, username: str, conn_id: str) -> list[str] | None:
        """Forget the connection; returns the room's online list if it was the user's last
        there (the caller announces `left`), else None."""
        try:
            return await self._send_leave(str(room_id), username, conn_id)
        except Exception:
            self.unsent.append(("p", str(room_id), conn_id, username))
            raise

    async def _send_leave(self, room: str, username: str, conn_id: str) -> list[str] | None:
        last, online = await self._leave(
            keys=[self.key],
            args=[room, username, conn_id, SEP.join(("p", room, conn_id, username))],
        )
        return sorted(json.loads(online)) if last else None

    async def beat(self, held: Callable[[], list[str]]) -> list[tuple[int, str]]:
        """This process's upkeep (one script, whatever it holds): renew it, clear dead processes'
        connections, register again everything it holds (`held()`: socket_entry and
        presence_entry strings) if Redis forgot it, send again leaves that failed. Returns the
        (room, username) pairs whose last connection just went: the caller announces them."""
        gone: list[tuple[int, str]] = []
        unsent, self.unsent = self.unsent, []
        for kind, *fields in unsent:
            if kind == "s":
                await self._close_socket(*fields)
            elif await self._send_leave(fields[0], fields[2], fields[1]) is not None:
                gone.append((int(fields[0]), fields[2]))
        now = time.time()
        result = await self._beat(
            keys=[self.key],
            args=[self.process, now, now + settings.CHAT_PRESENCE_TTL, DEAD_PER_BEAT],
        )
        if not int(result[0]):
            await self._register(
                keys=[self.key], args=[self.process, now + settings.CHAT_PRESENCE_TTL, *held()]
            )
        left = result[1:]
        gone += [(int(left[i]), left[i + 1].decode()) for i in range(0, len(left) - 1, 2)]
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

    async def join(self, room_id: int, username: str, conn_id: str) -> tuple[bool, list[str]]:
        conns = self.connections[room_id][username]
        conns.add(conn_id)
        return len(conns) == 1, sorted(self.connections[room_id])

    async def leave(self, room_id: int, username: str, conn_id: str) -> list[str] | None:
        users = self.connections[room_id]
        conns = users.get(username)
        if not conns or conn_id not in conns:
            return None
        conns.discard(conn_id)
        if conns:
            return None
        del users[username]
        return sorted(users)

    async def beat(self, held: Callable[[], list[str]]) -> list[tuple[int, str]]:
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
