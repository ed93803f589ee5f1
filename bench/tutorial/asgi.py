"""ASGI entry point for the tutorial peer: WebSockets only, through Channels' URL router."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.tutorial.settings")
django.setup()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from bench.tutorial.consumers import ChatConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {"websocket": URLRouter([path("ws/chat/<str:room_name>/", ChatConsumer.as_asgi())])}
)
