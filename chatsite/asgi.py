"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

import gc
import logging
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

# Build Django's app first: it loads the apps that the WebSocket routing imports.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from chat.metrics import serve_from_environment  # noqa: E402
from chat.realtime.routing import websocket_urlpatterns  # noqa: E402
from chat.security import WebSocketGate  # noqa: E402

# CHAT_METRICS_PORT: this process's Prometheus metrics on a port of their own (chat/metrics.py).
serve_from_environment()

if not (settings.REDIS_URL or settings.REDIS_SENTINELS):
    logging.getLogger("chatsite").warning(
        "Neither REDIS_URL nor REDIS_SENTINELS is set: "
        "using the in-memory channel layer (one process only)"
    )

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Same origin (scheme, host and port), then the session's user: chat/security.py.
        "websocket": WebSocketGate(URLRouter(websocket_urlpatterns)),
    }
)

# Garbage collection. With a thousand sockets the heap is large, and every full collection walks
# all of it: ~150 ms pauses every few seconds in a room of 1,000, the whole of the delivery
# latency's tail. Django's and the site's start-up objects live for the process's life, so they
# move to the permanent generation, and full collections run a tenth as often (docs/performance.md).
gc.freeze()
gc.set_threshold(50_000, 20, 100)
