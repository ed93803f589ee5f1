"""Two daphne processes sharing one Redis and one database: one chat."""

import pytest
from channels.db import database_sync_to_async

from tests.helpers import create_room, create_user, session_cookie_for
from tests.wsclient import Client

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def setup_room():
    alice, bob = create_user("alice"), create_user("bob")
    room = create_room("General Chat", alice)
    return room.slug, session_cookie_for(alice), session_cookie_for(bob)


async def test_messages_and_presence_cross_two_server_processes(daphne_factory):
    one, two = daphne_factory(), daphne_factory()
    slug, alice_cookie, bob_cookie = await setup_room()

    alice = await Client.open(one.url, alice_cookie, slug)
    assert alice.ready["online"] == ["alice"]
    assert (await alice.receive_type("presence"))["joined"] == "alice"
    bob = await Client.open(two.url, bob_cookie, slug)
    assert bob.ready["online"] == ["alice", "bob"]
    joined = await alice.receive_type("presence")
    assert joined == {"type": "presence", "online": ["alice", "bob"], "joined": "bob", "left": None}

    await alice.send({"type": "post", "body": "from process one", "client_id": "a1"})
    for client in (alice, bob):
        frame = await client.receive_type("message")
        assert frame["message"]["body"] == "from process one"
        assert frame["cursor"] == 1
    await bob.send({"type": "post", "body": "from process two"})
    for client in (alice, bob):
        frame = await client.receive_type("message")
        assert frame["message"]["body"] == "from process two"
        assert frame["cursor"] == 2

    # Bob's second tab, on the other process, does not join him twice ...
    bob_tab = await Client.open(one.url, bob_cookie, slug)
    assert bob_tab.ready["online"] == ["alice", "bob"]
    await bob.close()
    assert [f for f in await alice.drain(1.0) if f["type"] == "presence"] == []
    # ... and he leaves when his last tab closes, wherever it was.
    await bob_tab.close()
    left = await alice.receive_type("presence")
    assert left == {"type": "presence", "online": ["alice"], "joined": None, "left": "bob"}
    await alice.close()


async def test_a_ban_closes_the_users_socket_on_another_server_process(daphne_factory):
    from django.contrib.auth import get_user_model
    from websockets.exceptions import ConnectionClosed

    from chat import services
    from chat.models import Room

    server = daphne_factory()
    slug, alice_cookie, _ = await setup_room()
    alice = await Client.open(server.url, alice_cookie, slug)

    @database_sync_to_async
    def ban():
        users = get_user_model().objects
        services.restrict_user(
            room=Room.objects.get(slug=slug),
            user=users.get(username="alice"),
            kind="ban",
            by=users.get(username="bob"),
        )

    await ban()  # from this process (as the admin would be), over Redis to the daphne one
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await alice.receive(timeout=5)
    assert closed.value.rcvd.code == 4403
    with pytest.raises(ConnectionClosed) as refused:
        again = await Client.open(server.url, alice_cookie, slug)
        await again.receive(timeout=5)
    assert refused.value.rcvd.code == 4403


async def test_a_killed_processs_users_leave_and_free_their_socket_slots(daphne_factory):
    """PROTOCOL.md §2: a process that dies without closing its sockets has its users leave
    (within 60 s by default; here the presence expiry is 3 s), announced by a living process,
    and their sockets stop counting against the per-user cap."""
    fast = {"CHAT_PRESENCE_TTL": "3", "CHAT_RESYNC_INTERVAL": "1", "CHAT_MAX_SOCKETS_PER_USER": "1"}
    one, two = daphne_factory(**fast), daphne_factory(**fast)
    slug, alice_cookie, bob_cookie = await setup_room()
    alice = await Client.open(one.url, alice_cookie, slug)
    bob = await Client.open(two.url, bob_cookie, slug)
    assert bob.ready["online"] == ["alice", "bob"]
    await alice.receive_type("presence")  # alice joined
    await alice.receive_type("presence")  # bob joined

    two.stop(kill=True)
    left = await alice.receive_type("presence", timeout=15)
    assert left == {"type": "presence", "online": ["alice"], "joined": None, "left": "bob"}
    # Bob's one allowed socket went with the dead process: he can open one again.
    bob = await Client.open(one.url, bob_cookie, slug)
    assert bob.ready["online"] == ["alice", "bob"]
    await bob.close()
    await alice.close()
