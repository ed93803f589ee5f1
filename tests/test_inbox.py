"""The inbox socket (PROTOCOL.md §5) and mentions (§6), on real Redis (and real daphne processes
where another process matters)."""

import asyncio
import json
import time

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from chat import metrics, services
from chat.models import Membership, Mention, Message, Room, RoomRestriction
from chat.realtime import inboxes
from chat.realtime.protocol import CloseCode
from tests.helpers import (
    INBOX,
    create_user,
    inbox,
    make_moderator,
    open_socket,
    private_room,
    session_cookie_for,
)
from tests.wsclient import Client as WsClient

db = database_sync_to_async

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sockets_closed")]


def post(room: Room, author, body: str) -> Message:
    return services.post_message(room=room, author=author, body=body).message


def summaries(frame: dict) -> dict[str, dict]:
    return {summary["slug"]: summary for summary in frame["rooms"]}


async def next_summary(socket, slug: str, timeout: float = 3) -> dict:
    """The next `room` frame about `slug` (skipping others)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        frame = await socket.receive(timeout=max(0.01, deadline - loop.time()))
        if frame["type"] == "room" and frame["room"]["slug"] == slug:
            return frame["room"]


async def frames_of(socket, kind: str, quiet: float = 0.6) -> list[dict]:
    return [frame for frame in await socket.drain(quiet) if frame["type"] == kind]


# --- the first frame -----------------------------------------------------------------------------


async def test_the_inbox_lists_every_room_of_the_user_most_recent_first():
    def world():
        alice, bob, carol = create_user("alice"), create_user("bob"), create_user("carol")
        quiet = private_room(alice, "Quiet", members=[bob])
        public = services.create_room(name="Town Square", created_by=carol)
        services.add_member(room=public, by=bob, username="bob")
        direct = services.open_direct(by=alice, usernames=["bob"])
        elsewhere = services.create_room(name="Elsewhere", created_by=carol)
        post(elsewhere, carol, "not bob's room")
        post(public, carol, "older")
        post(direct, alice, "newest, and for bob")
        return bob, quiet, public, direct

    bob, quiet, public, direct = await db(world)()
    socket = await inbox(bob)
    rooms = socket.ready["rooms"]
    assert [summary["slug"] for summary in rooms] == [direct.slug, public.slug, quiet.slug]
    assert rooms[0] == {
        "slug": direct.slug,
        "name": "alice",  # a direct room is named for the other people
        "kind": "direct",
        "topic": "",
        "unread": 1,
        "mentions": 0,
        "last_activity": rooms[0]["last_activity"],
        "notifications": "mentions",
    }
    assert rooms[1]["unread"] == 1 and rooms[1]["kind"] == "public"
    # Membership notices move activity but are never unread.
    assert rooms[2]["unread"] == 0 and rooms[2]["last_activity"] is not None


async def test_an_inbox_needs_a_login_and_counts_toward_the_socket_cap(settings):
    communicator, _ = await open_socket(None, INBOX)
    await communicator.connect(timeout=5)
    assert (await communicator.receive_output(timeout=5))["code"] == CloseCode.NOT_LOGGED_IN
    await communicator.disconnect()

    settings.CHAT_MAX_SOCKETS_PER_USER = 2
    bob = await db(create_user)("bob")
    await inbox(bob)
    await inbox(bob)
    third, _ = await open_socket(bob, INBOX)
    await third.connect(timeout=5)
    assert (await third.receive_output(timeout=5))["code"] == CloseCode.TOO_MANY_SOCKETS
    await third.disconnect()


async def test_the_inbox_takes_no_frames():
    bob = await db(create_user)("bob")
    socket = await inbox(bob)
    await socket.send({"type": "post", "body": "hello"})
    assert (await socket.receive())["code"] == "invalid"


# --- counts that move ----------------------------------------------------------------------------


async def test_counts_move_with_messages_from_another_server_process(daphne_factory):
    one, two = daphne_factory(), daphne_factory()

    def world():
        alice, bob = create_user("alice"), create_user("bob")
        room = private_room(alice, members=[bob])
        return room, session_cookie_for(alice), session_cookie_for(bob)

    room, alice_cookie, bob_cookie = await db(world)()
    bobs_inbox = await WsClient.inbox(two.url, bob_cookie)
    assert summaries(bobs_inbox.ready)[room.slug]["unread"] == 0
    writer = await WsClient.open(one.url, alice_cookie, room.slug)
    start = time.monotonic()
    await writer.send({"type": "post", "body": "hello @bob", "client_id": "c1"})
    summary = await next_summary(bobs_inbox, room.slug, timeout=5)
    assert time.monotonic() - start < 1.0
    assert (summary["unread"], summary["mentions"]) == (1, 1)
    await writer.close()
    await bobs_inbox.close()


async def test_a_read_marker_moved_in_another_tab_clears_the_count_in_every_inbox():
    def world():
        alice, bob = create_user("alice"), create_user("bob")
        room = private_room(alice, members=[bob])
        message = post(room, alice, "hello @bob")
        return bob, room, message

    bob, room, message = await db(world)()
    first, second = await inbox(bob), await inbox(bob)
    assert summaries(first.ready)[room.slug]["unread"] == 1

    def read():
        client = Client(enforce_csrf_checks=False)
        client.force_login(bob)
        return client.post(
            f"/rooms/{room.slug}/read",
            json.dumps({"last_read_id": message.pk}),
            content_type="application/json",
        )

    assert (await db(read)()).status_code == 200
    for socket in (first, second):
        summary = await next_summary(socket, room.slug)
        assert (summary["unread"], summary["mentions"]) == (0, 0)


async def test_membership_adds_a_room_and_removal_sends_room_removed_then_silence():
    def world():
        alice, bob = create_user("alice"), create_user("bob")
        return alice, bob, private_room(alice)

    alice, bob, room = await db(world)()
    socket = await inbox(bob)
    assert socket.ready["rooms"] == []
    await db(services.add_member)(room=room, by=alice, username="bob")
    added = await next_summary(socket, room.slug)
    assert added["kind"] == "private" and added["name"] == "Secret Plans"

    await db(services.remove_member)(room=room, by=alice, username="bob")
    assert await socket.receive_type("room_removed", timeout=3) == {
        "type": "room_removed",
        "slug": room.slug,
    }
    await db(post)(room, alice, "after bob left: @bob")
    assert await frames_of(socket, "room") == []
    assert await frames_of(socket, "notify") == []


async def test_joining_a_public_room_by_posting_adds_it_and_archiving_removes_it():
    def world():
        alice, bob = create_user("alice"), create_user("bob")
        return alice, bob, services.create_room(name="Town Square", created_by=alice)

    _alice, bob, room = await db(world)()
    socket = await inbox(bob)
    await db(post)(room, bob, "hi all")
    assert (await next_summary(socket, room.slug))["unread"] == 0
    moderator = await db(make_moderator)()
    await db(services.archive_room)(room=room, by=moderator)
    assert (await socket.receive_type("room_removed", timeout=3))["slug"] == room.slug


async def test_a_ban_removes_the_room_from_the_inbox_and_lifting_it_brings_it_back():
    def world():
        alice, bob = create_user("alice"), create_user("bob")
        room = services.create_room(name="Town Square", created_by=alice)
        services.add_member(room=room, by=bob, username="bob")
        return alice, bob, room, make_moderator()

    alice, bob, room, moderator = await db(world)()
    socket = await inbox(bob)
    ban = await db(services.restrict_user)(
        room=room, user=bob, kind=RoomRestriction.Kind.BAN, by=moderator
    )
    assert (await socket.receive_type("room_removed", timeout=3))["slug"] == room.slug
    await db(post)(room, alice, "said while bob is banned: @bob")
    assert await frames_of(socket, "notify") == []
    await db(services.lift_restriction)(restriction=ban, by=moderator)
    assert (await next_summary(socket, room.slug))["unread"] == 1


async def test_a_burst_is_coalesced_into_a_few_frames_with_the_latest_state():
    def world():
        alice, bob = create_user("alice"), create_user("bob")
        return alice, bob, private_room(alice, members=[bob])

    alice, bob, room = await db(world)()
    socket = await inbox(bob)

    def burst():
        for n in range(50):
            post(room, alice, f"message {n}")

    start = time.monotonic()
    await db(burst)()
    took = time.monotonic() - start
    frames = await frames_of(socket, "room", quiet=1.0)
    # At most one read per CHAT_INBOX_INTERVAL (0.25 s) while the burst lasts, plus the first
    # and the last: not one per message.
    assert 1 <= len(frames) <= took / 0.25 + 3, (len(frames), took)
    assert frames[-1]["room"]["unread"] == 50


# --- mentions and notify -------------------------------------------------------------------------


async def test_notify_for_mentions_and_direct_messages_never_for_ones_own():
    def world():
        alice, bob, carol = create_user("alice"), create_user("bob"), create_user("carol")
        public = services.create_room(name="Town Square", created_by=carol)
        direct = services.open_direct(by=alice, usernames=["bob"])
        return alice, bob, carol, public, direct

    alice, bob, carol, public, direct = await db(world)()
    bobs, alices = await inbox(bob), await inbox(alice)
    # bob is not a member of the public room: a mention reaches him anyway (§5).
    await db(post)(public, carol, "@bob have a look")
    notify = await bobs.receive_type("notify", timeout=3)
    assert notify["reason"] == "mention"
    assert notify["room"] == {"slug": public.slug, "name": "Town Square", "kind": "public"}
    assert notify["message"]["body"] == "@bob have a look"
    assert notify["message"]["mentions"] == ["bob"]

    await db(post)(direct, alice, "just between us")
    notify = await bobs.receive_type("notify", timeout=3)
    assert (notify["reason"], notify["room"]["name"]) == ("direct", "alice")
    # alice wrote it: her inbox gets the summary, never a notify.
    assert await frames_of(alices, "notify") == []
    await db(post)(public, bob, "mentioning myself, @bob")
    assert await frames_of(bobs, "notify") == []


async def test_the_notification_setting_is_stored_and_followed_by_every_device():
    def world():
        alice, bob = create_user("alice"), create_user("bob")
        return alice, bob, private_room(alice, members=[bob])

    alice, bob, room = await db(world)()
    phone, laptop = await inbox(bob), await inbox(bob)

    def choose(level):
        client = Client()
        client.force_login(bob)
        return client.post(
            f"/rooms/{room.slug}/notifications",
            json.dumps({"level": level}),
            content_type="application/json",
        )

    response = await db(choose)("all")
    assert (response.status_code, response.json()) == (200, {"level": "all"})
    for socket in (phone, laptop):
        assert (await next_summary(socket, room.slug))["notifications"] == "all"
    await db(post)(room, alice, "no mention at all")
    for socket in (phone, laptop):
        assert (await socket.receive_type("notify", timeout=3))["reason"] == "message"

    await db(choose)("none")
    await db(post)(room, alice, "@bob even a mention stays quiet")
    assert await frames_of(phone, "notify") == []
    assert (await db(choose)("loud")).status_code == 400
    membership = await db(Membership.objects.get)(room=room, user=bob)
    assert membership.notifications == "none"


async def test_hiding_a_mention_takes_it_out_of_the_counts():
    def world():
        alice, bob = create_user("alice"), create_user("bob")
        room = services.create_room(name="Town Square", created_by=alice)
        services.add_member(room=room, by=bob, username="bob")
        return alice, bob, room, make_moderator()

    alice, bob, room, moderator = await db(world)()
    message = await db(post)(room, alice, "@bob rude words")
    socket = await inbox(bob)
    assert (summaries(socket.ready)[room.slug]["mentions"]) == 1
    await db(services.hide_message)(message=message, by=moderator)
    summary = await next_summary(socket, room.slug)
    assert (summary["unread"], summary["mentions"]) == (0, 0)


def test_mentions_never_list_someone_who_cannot_read_the_room():
    alice, bob, carol = create_user("alice"), create_user("bob"), create_user("carol")
    secret = private_room(alice, members=[bob])
    message = post(secret, alice, "@bob and @carol")
    assert message.mentions == ["bob"]  # carol is not a member
    public = services.create_room(name="Town Square", created_by=alice)
    moderator = make_moderator()
    services.restrict_user(room=public, user=carol, kind=RoomRestriction.Kind.BAN, by=moderator)
    message = post(public, alice, "@bob and @carol")
    assert message.mentions == ["bob"]  # carol is banned there
    assert list(Mention.objects.filter(message=message).values_list("user__username", flat=True))
    edited = services.edit_message(room=public, message_id=message.pk, by=alice, body="no one")
    assert edited.mentions == [] and not Mention.objects.filter(message=message).exists()


# --- cost ----------------------------------------------------------------------------------------


def _crowd(size: int):
    owner = create_user("owner")
    room = services.create_room(name="Crowd", created_by=owner)
    from django.contrib.auth import get_user_model

    User = get_user_model()
    users = User.objects.bulk_create([User(username=f"member{n}") for n in range(size)])
    Membership.objects.bulk_create(Membership(room=room, user=user) for user in users)
    return owner, room, users


def test_a_message_costs_the_writer_the_same_queries_in_a_room_of_1000_as_of_10():
    owner, crowd, users = _crowd(1000)
    post(crowd, owner, "the first message of a room reads a little more")
    with CaptureQueriesContext(connection) as queries:
        post(crowd, owner, "hello everyone")
    crowded = len(queries)
    Membership.objects.filter(room=crowd, user__in=users[10:]).delete()
    with CaptureQueriesContext(connection) as queries:
        post(crowd, owner, "hello the ten of you")
    assert crowded == len(queries), [query["sql"] for query in queries]


def test_reading_the_summaries_of_1000_members_is_one_query():
    owner, crowd, users = _crowd(1000)
    post(crowd, owner, "hello @member7")
    pairs = {(user.pk, crowd.pk) for user in users}
    with CaptureQueriesContext(connection) as queries:
        found = inboxes.read_summaries(pairs)
    assert len(queries) == 1
    assert len(found) == 1000
    assert {summary["unread"] for _, summary in found.values()} == {1}
    assert sum(summary["mentions"] for _, summary in found.values()) == 1


async def test_one_message_is_one_summary_read_here_for_all_the_inboxes_watching():
    def world():
        owner, room, users = _crowd(20)
        return owner, room, users

    owner, room, users = await db(world)()
    sockets = [await inbox(user) for user in users]
    before = metrics.INBOX_READS._value.get()
    await db(post)(room, owner, "hello everyone")
    for socket in sockets:
        assert (await next_summary(socket, room.slug))["unread"] == 1
    assert metrics.INBOX_READS._value.get() - before == 1
