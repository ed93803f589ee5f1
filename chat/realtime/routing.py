from django.urls import path, re_path

from .consumers import InboxConsumer, NoSuchRoom, RoomConsumer

websocket_urlpatterns = [
    path("ws/rooms/<slug:slug>/", RoomConsumer.as_asgi()),
    path("ws/inbox/", InboxConsumer.as_asgi()),
    # Last: any other path (daphne has decoded `%2e%2e` and `%C3%BC` by now) is no room.
    re_path(r"", NoSuchRoom.as_asgi()),
]
