"""Building blocks for the tests: users, rooms, logged-in WebSocket clients."""

import functools
import json
from typing import Any

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.test import Client

from chat import services
from chat.models import Room
from tests.wsclient import FrameReader

ORIGIN = b"http://localhost"


def password_for(username: str) -> str:
    return "Test-Secret-Pass-123"


@functools.cache
def _password_hash() -> str:
    # Hashing once per run keeps the suite fast with the real (slow) hasher that daphne
    # subprocesses check logins with.
    return make_password(password_for(""))


def create_user(username: str, **extra: Any):
    user = get_user_model()(username=username, password=_password_hash(), **extra)
    user.save()
    return user


def moderators_group():
    """The group the data migration made (transactional tests flush it; make it again)."""
    import importlib

    from django.apps import apps
    from django.contrib.auth.models import Group

    migration = importlib.import_module("chat.migrations.0003_moderators_group")
    if not Group.objects.filter(name="Moderators").exists():
        migration.create_group(apps, None)
        archive = importlib.import_module("chat.migrations.0006_room_archive")
        archive.grant_archive_to_moderators(apps, None)
        members = importlib.import_module("chat.migrations.0009_membership_moderation")
        members.grant_members_to_moderators(apps, None)
        reports = importlib.import_module("chat.migrations.0011_reports")
        reports.grant_reports_to_moderators(apps, None)
    return Group.objects.get(name="Moderators")


def make_moderator(username: str = "mod"):
    """A staff account in the Moderators group (the permissions moderation needs, no more)."""
    user = create_user(username, is_staff=True)
    user.groups.add(moderators_group())
    return user


def session_cookie_for(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def create_room(name: str, by) -> Room:
    """A room made for a test's set-up (the per-user limit is for the site's form)."""
    return services.create_room(name=name, created_by=by, enforce_limit=False)


def private_room(owner, name: str = "Secret Plans", *, members=()) -> Room:
    """A private room `owner` made, with `members` added by them (each a notice in it)."""
    room = services.create_room(
        name=name, created_by=owner, kind=Room.Kind.PRIVATE, enforce_limit=False
    )
    for user in members:
        services.add_member(room=room, by=owner, username=user.get_username())
    return room


make_user = database_sync_to_async(create_user)
make_room = database_sync_to_async(create_room)
session_cookie = database_sync_to_async(session_cookie_for)


OPEN: list["Socket"] = []


class Socket(FrameReader):
    """A WebsocketCommunicator speaking JSON, for one user in one room."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.communicator = communicator
        self.ready: dict[str, Any] | None = None
        OPEN.append(self)

    async def send(self, frame: dict[str, Any]) -> None:
        await self.communicator.send_to(text_data=json.dumps(frame))

    async def send_text(self, text: str) -> None:
        await self.communicator.send_to(text_data=text)

    async def receive(self, timeout: float = 5) -> dict[str, Any]:
        return json.loads(await self.communicator.receive_from(timeout=timeout))

    async def drain(self, timeout: float = 0.3) -> list[dict[str, Any]]:
        """Every frame that arrives until the socket has been quiet for `timeout`."""
        frames = []
        while not await self.communicator.receive_nothing(timeout=timeout):
            frames.append(await self.receive())
        return frames

    async def nothing(self, timeout: float = 0.3) -> bool:
        return await self.communicator.receive_nothing(timeout=timeout)

    async def close(self) -> None:
        if self in OPEN:
            OPEN.remove(self)
            await self.communicator.disconnect()


async def close_all() -> None:
    """Close what a failed test left open, so its event loop can end."""
    for socket in list(OPEN):
        await socket.close()


async def open_socket(
    user, slug: str, *, since: int | None = None, origin: bytes | None = ORIGIN
) -> tuple[WebsocketCommunicator, list[tuple[bytes, bytes]]]:
    from chatsite.asgi import application

    headers = [(b"host", b"localhost")]
    if origin is not None:
        headers.append((b"origin", origin))
    if user is not None:
        cookie = await session_cookie(user)
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    path = f"/ws/rooms/{slug}/" + (f"?since={since}" if since is not None else "")
    if slug == INBOX:
        path = "/ws/inbox/"
    return WebsocketCommunicator(application, path, headers=headers), headers


# open_socket(user, INBOX) opens the user's inbox socket (§5) instead of a room's.
INBOX = object()


async def inbox(user) -> Socket:
    """Connect an inbox socket and read its first frame (`inbox`) into `ready`."""
    communicator, _ = await open_socket(user, INBOX)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    socket = Socket(communicator)
    socket.ready = await socket.receive()
    assert socket.ready["type"] == "inbox", socket.ready
    return socket


async def join(user, slug: str, *, since: int | None = None) -> Socket:
    """Connect and read `ready`."""
    communicator, _ = await open_socket(user, slug, since=since)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    socket = Socket(communicator)
    socket.ready = await socket.receive()
    assert socket.ready["type"] == "ready", socket.ready
    return socket
