"""Hostile input and stale sessions on long-lived sockets."""

import pytest
from channels.db import database_sync_to_async
from django.contrib.sessions.models import Session
from django.test import Client, override_settings
from django.utils import timezone

from tests.helpers import close_all, create_room, create_user, join

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def _close_sockets():
    with override_settings(CHAT_SESSION_CHECK_INTERVAL=0.3):
        yield
    await close_all()


async def closed_code(socket, timeout: float = 5) -> int:
    while True:
        output = await socket.communicator.receive_output(timeout=timeout)
        if output["type"] == "websocket.close":
            return output["code"]


def logout(user):
    for session in Session.objects.all():
        if session.get_decoded().get("_auth_user_id") == str(user.pk):
            session.delete()


def change_password(user):
    user.set_password("A-brand-new-secret-99")
    user.save()


def expire_sessions(user):
    Session.objects.update(expire_date=timezone.now())


def deactivate(user):
    user.is_active = False
    user.save()


@pytest.mark.parametrize("revoke", [logout, change_password, expire_sessions, deactivate])
async def test_a_socket_closes_with_4401_when_its_session_ends(revoke):
    alice, bob = await database_sync_to_async(lambda: (create_user("alice"), create_user("bob")))()
    room = await database_sync_to_async(create_room)("General Chat", alice)
    a = await join(alice, room.slug)
    b = await join(bob, room.slug)
    await database_sync_to_async(revoke)(alice)
    assert await closed_code(a) == 4401
    # Others are not touched (expiring every session is the exception by design).
    if revoke is not expire_sessions:
        await b.send({"type": "post", "body": "still here"})
        assert (await b.receive_type("message"))["message"]["body"] == "still here"


async def test_logging_out_through_the_site_closes_the_socket():
    alice = await database_sync_to_async(create_user)("alice")
    room = await database_sync_to_async(create_room)("General Chat", alice)

    def client_for(user):
        client = Client()
        client.force_login(user)
        return client

    client = await database_sync_to_async(client_for)(alice)
    from chatsite.asgi import application
    from tests.helpers import Socket, WebsocketCommunicator

    cookie = client.cookies["sessionid"].value
    communicator = WebsocketCommunicator(
        application,
        f"/ws/rooms/{room.slug}/",
        headers=[
            (b"host", b"localhost"),
            (b"origin", b"http://localhost"),
            (b"cookie", f"sessionid={cookie}".encode()),
        ],
    )
    assert (await communicator.connect())[0]
    socket = Socket(communicator)
    assert (await socket.receive())["type"] == "ready"
    response = await database_sync_to_async(client.post)("/accounts/logout/")
    assert response.status_code == 302
    assert await closed_code(socket) == 4401


@pytest.mark.parametrize("trusted", [False, True])
async def test_an_https_page_behind_a_trusted_tls_proxy_may_open_its_socket(trusted):
    """Behind TLS the socket reaches daphne as ws:// with X-Forwarded-Proto: https, and its
    origin is the https page's. Only a trusted proxy's header counts (DJANGO_TRUST_PROXY_HEADERS);
    otherwise anyone could claim https and an http page's origin check would change."""
    from tests.helpers import open_socket

    user = await database_sync_to_async(create_user)("tls")
    room = await database_sync_to_async(create_room)("Behind TLS", user)
    proxy = ("HTTP_X_FORWARDED_PROTO", "https") if trusted else None
    with override_settings(SECURE_PROXY_SSL_HEADER=proxy):
        communicator, _ = await open_socket(user, room.slug, origin=b"https://localhost")
        communicator.scope["headers"].append((b"x-forwarded-proto", b"https"))
        connected, _ = await communicator.connect()
        assert connected is trusted
        if connected:
            await communicator.disconnect()
