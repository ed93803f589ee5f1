"""The room WebSocket against a real Redis channel layer (PROTOCOL.md §2)."""

import asyncio
import json

import pytest
from channels.db import database_sync_to_async

from chat.models import Message, Room
from tests.helpers import join, make_room, make_user, open_socket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sockets_closed")]


@database_sync_to_async
def stored_messages(room):
    return list(Message.objects.filter(room=room).order_by("id").values("id", "body", "deleted_at"))


@database_sync_to_async
def count_messages():
    return Message.objects.count()


async def test_two_users_exchange_messages(alice, bob, room):
    a = await join(alice, room.slug)
    b = await join(bob, room.slug)
    assert a.ready["room"] == {
        "slug": "general-chat",
        "name": "General Chat",
        "kind": "public",
        "topic": "",
    }
    assert a.ready["user"] == {"username": "alice"}
    assert a.ready["reset"] is True
    start = a.ready["cursor"]

    await a.send({"type": "post", "body": "How are you", "client_id": "c-1"})
    for socket in (a, b):
        frame = await socket.receive_type("message")
        assert frame["cursor"] == start + 1
        assert frame["client_id"] == "c-1"
        assert frame["message"]["author"] == "alice"
        assert frame["message"]["body"] == "How are you"
        assert frame["message"]["deleted"] is False
        assert frame["message"]["created"].endswith("Z")

    await b.send({"type": "post", "body": "Fine, thanks"})
    for socket in (a, b):
        frame = await socket.receive_type("message")
        assert frame["cursor"] == start + 2
        assert frame["client_id"] is None
        assert frame["message"]["author"] == "bob"
    await a.close()
    await b.close()


async def test_replay_on_reconnect_has_tombstones_and_no_deleted_text(alice, bob, room):
    a = await join(alice, room.slug)
    for body in ["one", "secret two", "three"]:
        await a.send({"type": "post", "body": body})
        await a.receive_type("message")
    secret = (await stored_messages(room))[1]["id"]
    await a.send({"type": "delete", "id": secret})
    await a.receive_type("message")
    await a.close()

    b = await join(bob, room.slug)
    messages = b.ready["messages"]
    assert [m["body"] for m in messages] == ["one", "", "three"]
    tombstone = messages[1]
    assert tombstone == {**tombstone, "id": secret, "deleted": True, "deleted_by": "alice"}
    assert "secret" not in json.dumps(b.ready)
    await b.close()


async def test_author_deletes_and_the_other_user_sees_the_tombstone(alice, bob, room):
    a = await join(alice, room.slug)
    b = await join(bob, room.slug)
    await a.send({"type": "post", "body": "oops"})
    posted = (await b.receive_type("message"))["message"]
    await a.send({"type": "delete", "id": posted["id"]})
    frame = await b.receive_type("message")
    assert frame["message"]["id"] == posted["id"]
    assert frame["message"]["deleted"] is True
    assert frame["message"]["deleted_by"] == "alice"
    assert frame["message"]["body"] == ""
    # Deleting a tombstone again is a no-op answered with nothing.
    await a.receive_type("message")
    await a.receive_type("message")
    await a.send({"type": "delete", "id": posted["id"]})
    assert await a.nothing()
    await a.close()
    await b.close()


async def test_deleting_someone_elses_message_is_forbidden_and_changes_nothing(alice, bob, room):
    a = await join(alice, room.slug)
    b = await join(bob, room.slug)
    await a.send({"type": "post", "body": "mine"})
    posted = (await b.receive_type("message"))["message"]
    before = await stored_messages(room)
    await b.send({"type": "delete", "id": posted["id"]})
    error = await b.receive_type("error")
    assert error["code"] == "forbidden"
    assert error["ref"] == posted["id"]
    assert await stored_messages(room) == before
    await b.send({"type": "edit", "id": posted["id"], "body": "hijacked"})
    assert (await b.receive_type("error"))["code"] == "forbidden"
    assert await stored_messages(room) == before
    await a.close()
    await b.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid"),
        ("[1, 2]", "invalid"),
        ('"post"', "invalid"),
        ("{}", "invalid"),
        ('{"type": "shout"}', "invalid"),
        ('{"type": 7}', "invalid"),
        ('{"type": "post"}', "invalid"),
        ('{"type": "post", "body": 5}', "invalid"),
        ('{"type": "post", "body": "hi", "client_id": 9}', "invalid"),
        ('{"type": "post", "body": "hi", "client_id": "' + "x" * 65 + '"}', "invalid"),
        ('{"type": "delete", "id": "1"}', "invalid"),
        ('{"type": "delete", "id": true}', "invalid"),
        ('{"type": "delete", "id": -3}', "invalid"),
        ('{"type": "delete", "id": 1e400}', "invalid"),
        ('{"type": "history", "before": 10, "limit": 0}', "invalid"),
        ('{"type": "history", "before": 10, "limit": 101}', "invalid"),
        ('{"type": "post", "body": ""}', "empty"),
        ('{"type": "post", "body": "  \\n\\t "}', "empty"),
        ('{"type": "post", "body": "' + "a" * 4001 + '"}', "too_long"),
        ('{"type": "post", "body": "' + "a" * 70000 + '"}', "too_long"),
        ('{"type": "delete", "id": 999999}', "not_found"),
        ('{"type": "edit", "id": 999999, "body": "x"}', "not_found"),
    ],
)
async def test_bad_frames_get_an_error_and_the_socket_stays_usable(alice, room, frame, code):
    a = await join(alice, room.slug)
    await a.send_text(frame)
    error = await a.receive_type("error")
    assert error["code"] == code
    assert error["detail"]
    assert "ref" in error
    assert await count_messages() == 0
    await a.send({"type": "post", "body": "still here"})
    assert (await a.receive_type("message"))["message"]["body"] == "still here"
    await a.close()


async def test_binary_frames_are_invalid(alice, room):
    a = await join(alice, room.slug)
    await a.communicator.send_to(bytes_data=b"\x00\x01")
    assert (await a.receive_type("error"))["code"] == "invalid"
    await a.close()


async def test_message_of_another_room_is_not_found(alice, room):
    other = await make_room("Elsewhere", alice)
    a = await join(alice, other.slug)
    await a.send({"type": "post", "body": "over here"})
    posted = (await a.receive_type("message"))["message"]
    await a.close()
    a = await join(alice, room.slug)
    await a.send({"type": "delete", "id": posted["id"]})
    assert (await a.receive_type("error"))["code"] == "not_found"
    await a.close()


async def test_posting_too_fast_is_rate_limited_with_retry_after(alice, room):
    a = await join(alice, room.slug)
    a2 = await join(alice, room.slug)  # the limit counts all of a user's connections
    for i in range(10):
        await (a if i % 2 else a2).send({"type": "post", "body": f"m{i}"})
        await a.receive_type("message")
    await a.send({"type": "post", "body": "one too many", "client_id": "late"})
    error = await a.receive_type("error")
    assert error["code"] == "rate_limited"
    assert error["ref"] == "late"
    assert 0 < error["retry_after"] <= 5
    assert await count_messages() == 10
    await a.close()
    await a2.close()


async def test_anonymous_socket_is_closed_with_4401(room):
    communicator, _ = await open_socket(None, room.slug)
    connected, _ = await communicator.connect()
    assert connected
    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}


async def test_unknown_room_is_closed_with_4404(alice):
    communicator, _ = await open_socket(alice, "no-such-room")
    connected, _ = await communicator.connect()
    assert connected
    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 4404}


@pytest.mark.parametrize(
    "origin",
    [
        b"http://evil.example",  # foreign site
        b"http://localhost:9999",  # right host, wrong port
        b"https://localhost",  # right host, wrong scheme
        b"http://localhost.evil.example",
        b"null",  # sandboxed frames and file: pages
        b"",
        None,  # no Origin at all
    ],
)
async def test_cross_site_or_missing_origin_is_refused(alice, room, origin):
    communicator, _ = await open_socket(alice, room.slug, origin=origin)
    connected, _ = await communicator.connect()
    assert not connected


@pytest.mark.parametrize(
    ("origin", "host"),
    [(b"http://localhost", b"localhost"), (b"http://127.0.0.1:8000", b"127.0.0.1:8000")],
)
async def test_the_sites_own_origin_is_accepted(alice, room, origin, host):
    communicator, headers = await open_socket(alice, room.slug, origin=origin)
    communicator.scope["headers"] = [(b"host", host)] + [h for h in headers if h[0] != b"host"]
    connected, _ = await communicator.connect()
    assert connected
    await communicator.disconnect()


async def test_history_pages_back_through_older_messages(alice, room):
    await database_sync_to_async(_seed)(room, alice, 120)
    a = await join(alice, room.slug)
    assert len(a.ready["messages"]) == 50
    assert a.ready["has_more"] is True
    assert a.ready["messages"][-1]["body"] == "m119"
    oldest = a.ready["messages"][0]["id"]
    await a.send({"type": "history", "before": oldest})
    page = await a.receive_type("history")
    assert [m["body"] for m in page["messages"]] == [f"m{i}" for i in range(20, 70)]
    assert page["has_more"] is True
    await a.send({"type": "history", "before": page["messages"][0]["id"], "limit": 100})
    page = await a.receive_type("history")
    assert [m["body"] for m in page["messages"]] == [f"m{i}" for i in range(20)]
    assert page["has_more"] is False
    await a.close()


def _seed(room, author, count):
    from chat import services

    for i in range(count):
        services.post_message(room=room, author=author, body=f"m{i}")


async def test_presence_counts_a_user_with_two_tabs_once(alice, bob, room):
    b = await join(bob, room.slug)
    assert b.ready["online"] == ["bob"]
    assert (await b.receive_type("presence"))["joined"] == "bob"
    a1 = await join(alice, room.slug)
    assert a1.ready["online"] == ["alice", "bob"]
    joined = await b.receive_type("presence")
    assert joined["joined"] == "alice"
    assert joined["online"] == ["alice", "bob"]
    a2 = await join(alice, room.slug)
    await a2.close()
    assert await b.nothing(0.5)
    await a1.close()
    left = await b.receive_type("presence")
    assert left == {"type": "presence", "online": ["bob"], "joined": None, "left": "alice"}
    await b.close()


async def test_presence_in_a_crowd_is_batched_into_one_frame(alice, room, settings):
    """Up to CHAT_PRESENCE_BURST presence frames per window go out at once; the joins beyond
    wait for the window's end and become one frame with neither `joined` nor `left`."""
    settings.CHAT_PRESENCE_WINDOW = 3.0
    settings.CHAT_PRESENCE_BURST = 3
    crowd = [await make_user(f"user{i}") for i in range(6)]
    late = await make_user("late")
    a = await join(alice, room.slug)
    sockets = [await join(user, room.slug) for user in crowd]  # well within the window
    names = sorted(["alice", *(user.username for user in crowd)])
    # The room's hub was just made (its burst allowance follows the setting).
    joined = [(await a.receive_type("presence", timeout=1))["joined"] for _ in range(3)]
    assert joined == ["alice", "user0", "user1"]
    assert await a.receive_type("presence", timeout=5) == {
        "type": "presence",
        "online": names,
        "joined": None,
        "left": None,
    }
    assert await a.nothing(0.5)

    # A quiet window later, a join is its own frame again, sent at once.
    await asyncio.sleep(3.0)
    b = await join(late, room.slug)
    assert (await a.receive_type("presence", timeout=1))["joined"] == "late"
    for socket in [*sockets, b, a]:
        await socket.close()


async def test_typing_reaches_others_once_per_interval_but_not_the_typist(alice, bob, room):
    a = await join(alice, room.slug)
    b = await join(bob, room.slug)
    await a.send({"type": "typing"})
    await a.send({"type": "typing"})
    assert await b.receive_type("typing") == {"type": "typing", "user": "alice"}
    assert "typing" not in [frame["type"] for frame in await b.drain(0.5)]
    assert "typing" not in [frame["type"] for frame in await a.drain(0.2)]
    await a.close()
    await b.close()


async def test_room_slug_and_cursor_start_at_zero(room):
    assert room.slug == "general-chat"
    assert await database_sync_to_async(lambda: Room.objects.get().cursor)() == 0
