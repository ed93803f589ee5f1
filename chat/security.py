"""The WebSocket's door: the origin check, then the session's user, in one middleware.

Origins are compared as scheme, host and port, like Django's CSRF origin check. Channels'
AllowedHostsOriginValidator compares host names only, so with
ALLOWED_HOSTS=["example.com"] it lets `http://example.com:9999` in. Here the Origin must be the
site's own origin (the Host the socket was opened on, with the matching scheme, and that host
allowed by ALLOWED_HOSTS) or one listed in CSRF_TRUSTED_ORIGINS. No Origin, or `null`, is refused.
"""

import copy
import logging
from importlib import import_module
from urllib.parse import urlsplit

from channels.auth import get_user
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.core.exceptions import ValidationError
from django.http.cookie import parse_cookie
from django.http.request import split_domain_port, validate_host
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from .realtime.batching import Batched

logger = logging.getLogger(__name__)


def _origin(value: str) -> str | None:
    """Normalise an origin to scheme://host[:port] with the default port left out."""
    try:
        parts = urlsplit(value.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    default = {"http": 80, "https": 443}[parts.scheme]
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def allowed_origin(origin: str | None, host: str | None, scheme: str) -> bool:
    if not origin or origin == "null":
        return False
    normalised = _origin(origin)
    if normalised is None:
        return False
    trusted = {_origin(o) for o in settings.CSRF_TRUSTED_ORIGINS}
    if normalised in trusted:
        return True
    if not host:
        return False
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    own = _origin(f"{'https' if scheme == 'wss' else 'http'}://{host}")
    return normalised == own


class WebSocketGate:
    """Admit a WebSocket from the site's own origin, with `user` and `session_key` in its scope.

    It stands in for channels' `AuthMiddlewareStack` (cookie, session and auth middleware) and
    their origin validator. That stack wraps every frame the server *sends* to see whether the
    session needs saving, which only an HTTP response can do, and each of its layers copies the
    scope and keeps it for the connection's life; at 1,000 sockets in a room those are a fifth of
    the fan-out's CPU and 6 KiB per socket (docs/performance.md). Here the scope is copied once
    and the consumer gets the ASGI `send` itself. The consumer reads the session key, not the
    session: nothing on a socket writes to the session, and the hub re-checks the key against
    the database every few seconds (logout, password change, expiry).
    """

    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope, receive, send):
        admitted = await admit(scope)
        if admitted is None:
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(admitted, receive, send)


def _proxy_ssl_header() -> tuple[bytes, str] | None:
    """SECURE_PROXY_SSL_HEADER as an ASGI header name and the value that means HTTPS."""
    setting = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if not setting:
        return None
    name, value = setting
    return name.removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1"), value


async def admit(scope) -> dict | None:
    """The scope to hand on (with `user` and `session_key`), or None to refuse the socket.

    A function of its own so that nothing it reads (the headers, the session) stays referenced
    by the middleware's frame while the connection lasts.
    """
    origin = host = cookie = forwarded_proto = None
    proxy_header = _proxy_ssl_header()
    for name, value in scope.get("headers", ()):
        if name == b"origin":
            origin = value.decode("latin-1")
        elif name == b"host":
            host = value.decode("latin-1")
        elif name == b"cookie":
            cookie = value.decode("latin-1")
        elif proxy_header and name == proxy_header[0]:
            forwarded_proto = value.decode("latin-1").strip()
    scheme = scope.get("scheme", "ws")
    # Behind a TLS-terminating proxy the socket reaches daphne as ws://, and daphne leaves the
    # forwarded scheme out of a WebSocket's scope: believe the proxy's header as Django does for
    # pages (DJANGO_TRUST_PROXY_HEADERS), so the https page's origin is the socket's own.
    if proxy_header and forwarded_proto == proxy_header[1]:
        scheme = "wss"
    if not allowed_origin(origin, host, scheme):
        logger.info("websocket refused: origin %r on host %r", origin, host)
        return None
    key = parse_cookie(cookie).get(settings.SESSION_COOKIE_NAME) if cookie else None
    user = session_key = None
    if key:
        # With every socket opening now, in one call (session_users).
        user = await session_user(key)
        if user is ASK_ALONE:
            session = import_module(settings.SESSION_ENGINE).SessionStore(key)
            # channels' get_user: verifies the session's auth hash, flushes a stale session.
            user = await get_user({"session": session})
        if user is not None and user.is_authenticated:
            session_key = key
    if user is None:
        from django.contrib.auth.models import AnonymousUser

        user = AnonymousUser()
    return {**scope, "user": user, "session_key": session_key}


# A session `session_users` leaves to channels' get_user, one socket at a time.
ASK_ALONE = object()
DATABASE_SESSIONS = "django.contrib.sessions.backends.db"


def session_users(keys: list[str]) -> list:
    """For each session key, what channels' `get_user` would find, for every socket opening at
    once in two queries (the sessions, their users): the user, or None for no one (no such
    session, expired, no user in it, the user gone or inactive). `ASK_ALONE` where that takes
    more than reading: a session whose auth hash no longer matches its user's password (get_user
    flushes it), a backend other than the site's own, a session engine other than the database.
    """
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
        load_backend,
    )
    from django.contrib.auth.backends import ModelBackend
    from django.contrib.sessions.models import Session

    from .accounts import LoginThrottleBackend

    if settings.SESSION_ENGINE != DATABASE_SESSIONS:
        return [ASK_ALONE] * len(keys)
    User = get_user_model()
    store = import_module(settings.SESSION_ENGINE).SessionStore()
    rows = Session.objects.filter(session_key__in=set(keys), expire_date__gt=timezone.now())
    found: dict[str, tuple] = {}
    for key, data in rows.values_list("session_key", "session_data"):
        data = store.decode(data)  # {} when the signature does not hold
        try:
            user_id = User._meta.pk.to_python(data[SESSION_KEY])
            backend = data[BACKEND_SESSION_KEY]
        except (KeyError, ValidationError):
            continue
        if backend in settings.AUTHENTICATION_BACKENDS:
            found[key] = (user_id, backend, data.get(HASH_SESSION_KEY))
    users = User._default_manager.in_bulk({user_id for user_id, _, _ in found.values()})
    answers: list = []
    handed: set[int] = set()
    for key in keys:
        if key not in found:
            answers.append(None)
            continue
        user_id, backend, session_hash = found[key]
        finder = getattr(load_backend(backend).get_user, "__func__", None)
        if finder not in (ModelBackend.get_user, LoginThrottleBackend.get_user):
            answers.append(ASK_ALONE)
            continue
        user = users.get(user_id)
        if user is None or not ModelBackend().user_can_authenticate(user):
            answers.append(None)
        elif not session_hash or not constant_time_compare(
            session_hash, user.get_session_auth_hash()
        ):
            answers.append(ASK_ALONE)
        else:
            # Each socket its own instance, as one get_user each would give.
            answers.append(copy.copy(user) if user.pk in handed else user)
            handed.add(user.pk)
    return answers


session_user = Batched(session_users)
