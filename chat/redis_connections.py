"""Every Redis client the site makes, from one place (the channel layer's excepted: channels-redis
builds its own pools from CHANNEL_LAYERS, which chatsite/settings.py fills from the same settings).

Which Redis (README, "Settings" and "Redis that survives its host"):
- REDIS_SENTINELS set: the primary named REDIS_SENTINEL_MASTER, as the sentinels report it. The
  clients come from redis-py's Sentinel-managed pools: a connection that fails is dropped, and
  the next one asks the sentinels again, so after a failover the clients find the new primary
  by themselves. REDIS_URL's host and port are then ignored; its user, password and database
  number (if any) apply to the primary.
- else REDIS_URL: that one server.
- neither: no Redis; callers keep their in-memory fallbacks (one process).
"""

from functools import lru_cache
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from django.conf import settings
from django.core.cache.backends.redis import RedisCache, RedisCacheClient


def configured() -> bool:
    """Whether the site runs on Redis (else on its in-memory fallbacks)."""
    return bool(settings.REDIS_SENTINELS or settings.REDIS_URL)


def _target() -> tuple:
    """The settings that pick the server, hashable: clients are cached per target, so a test
    that overrides the settings gets a client of its own."""
    return (
        settings.REDIS_URL,
        tuple(tuple(sentinel) for sentinel in settings.REDIS_SENTINELS),
        settings.REDIS_SENTINEL_MASTER,
        settings.REDIS_SENTINEL_PASSWORD,
    )


def master_options(url: str) -> dict[str, Any]:
    """What REDIS_URL says about the primary besides where it is: user, password, database."""
    if not url:
        return {}
    options = redis.connection.parse_url(url)
    return {key: options[key] for key in ("username", "password", "db") if key in options}


def _sentinel_kwargs(timeout: float) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if settings.REDIS_SENTINEL_PASSWORD:
        kwargs["password"] = settings.REDIS_SENTINEL_PASSWORD
    return kwargs


def new_sync_client(timeout: float = 2, **options: Any) -> redis.Redis:
    """A new client (the caller closes it). Prefer `sync_client`, which is shared."""
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout, **options}
    if settings.REDIS_SENTINELS:
        sentinel = redis.sentinel.Sentinel(
            settings.REDIS_SENTINELS, sentinel_kwargs=_sentinel_kwargs(timeout)
        )
        return sentinel.master_for(
            settings.REDIS_SENTINEL_MASTER, **master_options(settings.REDIS_URL), **options
        )
    if not settings.REDIS_URL:
        raise RuntimeError("no Redis configured (REDIS_URL, REDIS_SENTINELS)")
    return redis.Redis.from_url(settings.REDIS_URL, **options)


@lru_cache(maxsize=16)
def _shared_sync_client(target: tuple, timeout: float) -> redis.Redis:
    return new_sync_client(timeout)


def sync_client(timeout: float = 2) -> redis.Redis:
    """This process's client for synchronous code (thread-safe: redis-py pools connections)."""
    return _shared_sync_client(_target(), timeout)


def async_client(timeout: float = 3, **options: Any) -> redis.asyncio.Redis:
    """A new asyncio client: it belongs to the running event loop; the caller closes it."""
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout, **options}
    if settings.REDIS_SENTINELS:
        sentinel = redis.asyncio.sentinel.Sentinel(
            settings.REDIS_SENTINELS, sentinel_kwargs=_sentinel_kwargs(timeout)
        )
        return sentinel.master_for(
            settings.REDIS_SENTINEL_MASTER, **master_options(settings.REDIS_URL), **options
        )
    if not settings.REDIS_URL:
        raise RuntimeError("no Redis configured (REDIS_URL, REDIS_SENTINELS)")
    return redis.asyncio.Redis.from_url(settings.REDIS_URL, **options)


class _SharedCacheClient(RedisCacheClient):
    def get_client(self, key=None, *, write=False) -> redis.Redis:
        return sync_client()


class SharedRedisCache(RedisCache):
    """Django's Redis cache on `sync_client()`, so it follows REDIS_SENTINELS to the primary
    (Django's own RedisCache takes only URLs). Nothing in the site uses the cache today; it is
    kept so that whatever does (a third-party app) shares the site's Redis. LOCATION is unused."""

    def __init__(self, server, params) -> None:
        super().__init__(server or "unused", params)
        self._class = _SharedCacheClient
