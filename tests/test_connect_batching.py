"""Sockets opening at once are answered in batches (issue 21): the same answers as one socket at
a time (the policy's, channels' get_user), in a fixed number of queries whatever their number."""

import asyncio
import json
from datetime import timedelta
from importlib import import_module

import pytest
from asgiref.sync import async_to_sync
from channels.auth import get_user
from django.conf import settings
from django.contrib.sessions.models import Session
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chat import policy, selectors, services
from chat.models import RoomRestriction
from chat.realtime.consumers import openings
from chat.realtime.protocol import CloseCode
from chat.security import ASK_ALONE, session_users
from tests.helpers import (
    create_room,
    create_user,
    join,
    open_socket,
    private_room,
    session_cookie_for,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _one_at_a_time(user, slug: str):
    """What a socket was told before batching: policy.room_for, then access(...).can_read()."""
    room = policy.room_for(user, slug)
    if room is None:
        return policy.Denial.NO_SUCH_ROOM
    return policy.access(user, room).can_read()


def test_a_batch_of_openings_gives_each_socket_the_policys_own_answer():
    owner, member, stranger, banned = (create_user(n) for n in ("owner", "member", "out", "ban"))
    public = create_room("Town Square", owner)
    secret = private_room(owner, members=[member])
    closed = create_room("Old Room", owner)
    services.archive_room(room=closed, by=owner)
    closed.refresh_from_db()
    RoomRestriction.objects.create(
        room=public, user=banned, kind=RoomRestriction.Kind.BAN, created_by=owner
    )
    requests = [
        (user, slug, None)
        for user in (owner, member, stranger, banned)
        for slug in (public.slug, secret.slug, closed.slug, "no-such-room")
    ]
    answers = openings(requests)
    for (user, slug, _), opening in zip(requests, answers, strict=True):
        assert opening.denial == _one_at_a_time(user, slug), (user.username, slug)
        if opening.denial is None:
            assert opening.room.slug == slug
            assert opening.ready.cursor == opening.room.cursor
        if opening.denial is policy.Denial.NO_SUCH_ROOM:
            assert opening.room is None  # a private room's existence never shows
    assert answers[requests.index((banned, public.slug, None))].denial is policy.Denial.BANNED
    assert answers[requests.index((stranger, secret.slug, None))].denial is (
        policy.Denial.NO_SUCH_ROOM
    )


def test_openings_take_the_same_queries_for_fifty_sockets_as_for_ten():
    owner = create_user("owner")
    users = [create_user(f"user{i}") for i in range(50)]
    rooms = [create_room(f"Room {i}", owner) for i in range(10)]
    for room in rooms:
        services.post_message(room=room, author=owner, body=f"hello {room.slug}")

    def queries(count: int) -> int:
        selectors.forget_latest_pages()
        requests = [(users[i], rooms[i % len(rooms)].slug, None) for i in range(count)]
        with CaptureQueriesContext(connection) as captured:
            assert all(o.denial is None for o in openings(requests))
        return len(captured)

    few, many = queries(10), queries(50)  # the same ten rooms
    assert many == few
    if connection.vendor == "postgresql":
        # The rooms, the policy's facts, the latest pages' ids, the messages and their
        # reactions and attachments: whatever the number of rooms.
        assert many <= 6


def test_session_users_find_what_channels_get_user_finds():
    alice, bob, carol = create_user("alice"), create_user("bob"), create_user("carol")
    keys = {name: session_cookie_for(user) for name, user in [("alice", alice), ("bob", bob)]}
    keys["carol"] = session_cookie_for(carol)
    keys["alice again"] = session_cookie_for(alice)
    keys["expired"] = session_cookie_for(create_user("dave"))
    Session.objects.filter(session_key=keys["expired"]).update(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    keys["inactive"] = session_cookie_for(create_user("erin"))
    type(alice).objects.filter(username="erin").update(is_active=False)
    keys["logged out"] = session_cookie_for(create_user("frank"))
    Session.objects.filter(session_key=keys["logged out"]).delete()
    keys["tampered"] = session_cookie_for(create_user("grace"))
    Session.objects.filter(session_key=keys["tampered"]).update(session_data="bm90IHNpZ25lZA==")
    keys["password changed"] = session_cookie_for(create_user("heidi"))
    heidi = type(alice).objects.get(username="heidi")
    heidi.set_password("a new password for heidi")
    heidi.save()
    keys["unknown"] = "x" * 32

    with CaptureQueriesContext(connection) as captured:
        found = dict(zip(keys, session_users(list(keys.values())), strict=True))
    assert len(captured) == 2  # the sessions, their users

    assert found["alice"] == alice and found["alice again"] == alice
    assert found["alice"] is not found["alice again"]  # each socket its own instance
    assert found["bob"] == bob and found["carol"] == carol
    for gone in ("expired", "inactive", "logged out", "tampered", "unknown"):
        assert found[gone] is None, gone
    # A stale session hash is left to get_user, which flushes the session: never let in.
    assert found["password changed"] is ASK_ALONE
    store = import_module(settings.SESSION_ENGINE).SessionStore
    for name, key in keys.items():
        expected = async_to_sync(get_user)({"session": store(key)})
        answer = found[name]
        if answer is ASK_ALONE:
            assert not expected.is_authenticated
        elif answer is None:
            assert not expected.is_authenticated, name
        else:
            assert expected.is_authenticated and expected.pk == answer.pk, name


@pytest.mark.usefixtures("sockets_closed")
async def test_fifty_sockets_opening_at_once_each_get_their_own_ready():
    """Through the real door (WebSocketGate, the consumer, the hub) on real Redis: fifty users
    over ten rooms, one of them private with a non-member among the fifty."""
    users, rooms, secret = await _workspace()
    stranger = users[-1]
    sockets = await asyncio.gather(
        *(join(user, rooms[i % len(rooms)].slug) for i, user in enumerate(users[:-1]))
    )
    for i, socket in enumerate(sockets):
        ready = socket.ready
        assert ready["user"]["username"] == users[i].username
        assert ready["room"]["slug"] == rooms[i % len(rooms)].slug
        assert ready["messages"][-1]["body"] == f"hello {ready['room']['slug']}"
    communicator, _ = await open_socket(stranger, secret.slug)
    await communicator.connect(timeout=5)
    assert (await communicator.receive_output(timeout=5))["code"] == CloseCode.NO_SUCH_ROOM
    await communicator.disconnect()


async def _workspace():
    from channels.db import database_sync_to_async

    def make():
        owner = create_user("owner")
        users = [create_user(f"user{i}") for i in range(51)]
        rooms = [create_room(f"Room {i}", owner) for i in range(9)]
        rooms.append(private_room(owner, members=users[9:50:10]))
        for room in rooms:
            services.post_message(room=room, author=owner, body=f"hello {room.slug}")
        return users, rooms, rooms[-1]

    return await database_sync_to_async(make)()


@pytest.mark.usefixtures("sockets_closed")
async def test_a_crowd_joining_many_rooms_sends_presence_in_a_few_channel_layer_messages(
    monkeypatch,
):
    """Each first socket of a user in a room announces `joined` to every process. One
    channel-layer message per join was most of a crowd's connect cost in Redis; the joins of a
    moment now go together (events.PresenceBatch) and still reach every room's sockets."""
    from chat.realtime import events

    sent: list = []
    send = events._send

    async def counting(event):
        sent.append(event)
        await send(event)

    monkeypatch.setattr(events, "_send", counting)
    users, rooms, _ = await _workspace()
    first = await asyncio.gather(*(join(users[i], rooms[i].slug) for i in range(9)))
    sent.clear()
    crowd = await asyncio.gather(
        *(join(user, rooms[i % 9].slug) for i, user in enumerate(users[9:45], start=9))
    )
    names = {user.username for user in users[9:45]}

    def announced() -> list[str]:
        return [
            json.loads(frame)["joined"]
            for event in sent
            if isinstance(event, events.PresenceBatch)
            for _, frame in event.changes
            if json.loads(frame)["joined"] in names
        ]

    # `joined` goes out after `ready`: wait for the crowd's last announcement.
    for _ in range(100):
        if len(announced()) >= len(crowd):
            break
        await asyncio.sleep(0.05)
    batches = [event for event in sent if isinstance(event, events.PresenceBatch)]
    assert sorted(announced()) == sorted(names)
    assert len(batches) < len(crowd) / 3, [len(batch.changes) for batch in batches]
    # Each room's first socket hears its room's joins, and nobody else's.
    for i, socket in enumerate(first):
        room_users = {users[j].username for j in range(9, 45) if j % 9 == i}
        room_users.add(users[i].username)
        online: set[str] = set()
        while online != room_users:
            frame = await socket.receive_type("presence")
            assert frame["joined"] is None or frame["joined"] in room_users, frame
            online = set(frame["online"])
