"""WebSocket origin checking: scheme, host and port, like Django's CSRF origin check.

Channels' AllowedHostsOriginValidator compares host names only, so with
ALLOWED_HOSTS=["example.com"] it lets `http://example.com:9999` in. Here the Origin must be the
site's own origin (the Host the socket was opened on, with the matching scheme, and that host
allowed by ALLOWED_HOSTS) or one listed in CSRF_TRUSTED_ORIGINS. No Origin, or `null`, is refused.
"""

import logging
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

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


class SameOriginValidator:
    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope, receive, send):
        headers = dict(scope.get("headers", []))
        origin = headers.get(b"origin", b"").decode("latin-1") or None
        host = headers.get(b"host", b"").decode("latin-1") or None
        if allowed_origin(origin, host, scope.get("scheme", "ws")):
            return await self.application(scope, receive, send)
        logger.info("websocket refused: origin %r on host %r", origin, host)
        return await WebsocketDenier()(scope, receive, send)
