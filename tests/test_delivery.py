"""Delivery guarantees on one socket: resume with `since`, idempotent posts, edits."""

import pytest
from channels.db import database_sync_to_async
from django.test import override_settings

from chat import services
from chat.models import Message
from tests.helpers import join

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sockets_closed")]


post = database_sync_to_async(services.post_message)
edit = database_sync_to_async(services.edit_message)
delete = database_sync_to_async(services.delete_message)


async def test_resume_with_since_replays_exactly_the_missed_changes_once(alice, bob, room):
    old = (await post(room=room, author=alice, body="before")).message
    a = await join(alice, room.slug)
    since = a.ready["cursor"]
    await a.close()

    first = (await post(room=room, author=bob, body="one")).message
    second = (await post(room=room, author=bob, body="two")).message
    await edit(room=room, message_id=first.pk, by=bob, body="one, edited")
    await delete(room=room, message_id=second.pk, by=bob)
    await edit(room=room, message_id=old.pk, by=alice, body="before, edited")
    third = (await post(room=room, author=bob, body="three")).message

    a = await join(alice, room.slug, since=since)
    ready = a.ready
    assert ready["reset"] is False
    assert ready["cursor"] == since + 6
    # Each changed message once, in its current state, in the order of its latest change.
    assert [(m["id"], m["body"], m["deleted"]) for m in ready["messages"]] == [
        (first.pk, "one, edited", False),
        (second.pk, "", True),
        (old.pk, "before, edited", False),
        (third.pk, "three", False),
    ]
    assert ready["messages"][0]["edited"] is not None
    assert ready["messages"][1]["deleted_by"] == "bob"
    assert ready["has_more"] is False  # no message is older than the cursor and unchanged
    # The live stream carries on from the ready cursor.
    await post(room=room, author=bob, body="live")
    frame = await a.receive_type("message")
    assert frame["cursor"] == ready["cursor"] + 1
    assert frame["message"]["body"] == "live"


@pytest.mark.parametrize("since", ["-1", "999", "abc", ""])
async def test_an_unservable_cursor_gets_a_fresh_ready(alice, room, since):
    await post(room=room, author=alice, body="hello")
    a = await join(alice, room.slug, since=since)
    assert a.ready["reset"] is True
    assert [m["body"] for m in a.ready["messages"]] == ["hello"]


async def test_a_cursor_too_far_behind_gets_a_fresh_ready(alice, room):
    with override_settings(CHAT_RESUME_MAX_CHANGES=3):
        for i in range(5):
            await post(room=room, author=alice, body=f"m{i}")
        a = await join(alice, room.slug, since=1)
        assert a.ready["reset"] is True
        assert a.ready["cursor"] == 5
        b = await join(alice, room.slug, since=2)
        assert b.ready["reset"] is False
        assert [m["body"] for m in b.ready["messages"]] == ["m2", "m3", "m4"]


async def test_a_repeated_client_id_creates_nothing_and_is_acked(alice, room):
    a = await join(alice, room.slug)
    await a.send({"type": "post", "body": "once", "client_id": "k-1"})
    created = await a.receive_type("message")
    assert created["client_id"] == "k-1"
    await a.close()
    # A retry after a reconnect, as a client does when it never saw the frame.
    a = await join(alice, room.slug)
    await a.send({"type": "post", "body": "once", "client_id": "k-1"})
    ack = await a.receive_type("ack")
    assert ack == {"type": "ack", "client_id": "k-1", "id": created["message"]["id"]}
    assert await database_sync_to_async(Message.objects.count)() == 1
    assert "message" not in [f["type"] for f in await a.drain(0.3)]


async def test_the_same_client_id_from_another_user_is_a_new_message(alice, bob, room):
    a = await join(alice, room.slug)
    b = await join(bob, room.slug)
    await a.send({"type": "post", "body": "alice's", "client_id": "same"})
    await b.send({"type": "post", "body": "bob's", "client_id": "same"})
    bodies = {(await a.receive_type("message"))["message"]["body"] for _ in range(2)}
    assert bodies == {"alice's", "bob's"}


async def test_a_retry_past_the_rate_limit_is_still_acked(alice, room):
    a = await join(alice, room.slug)
    with override_settings(CHAT_RATE_LIMIT_POSTS=1):
        await a.send({"type": "post", "body": "first", "client_id": "r-1"})
        await a.receive_type("message")
        await a.send({"type": "post", "body": "first", "client_id": "r-1"})
        assert (await a.receive_type("ack", "error"))["type"] == "ack"
        await a.send({"type": "post", "body": "second", "client_id": "r-2"})
        assert (await a.receive_type("ack", "error"))["code"] == "rate_limited"


async def test_author_edits_and_everyone_sees_the_edit(alice, bob, room):
    a = await join(alice, room.slug)
    b = await join(bob, room.slug)
    await a.send({"type": "post", "body": "teh typo"})
    posted = (await b.receive_type("message"))["message"]
    assert posted["edited"] is None
    await a.send({"type": "edit", "id": posted["id"], "body": "the typo"})
    frame = await b.receive_type("message")
    assert frame["message"]["body"] == "the typo"
    assert frame["message"]["edited"] is not None
    assert frame["cursor"] == 2


async def test_a_tombstone_cannot_be_edited(alice, room):
    a = await join(alice, room.slug)
    await a.send({"type": "post", "body": "gone soon"})
    posted = (await a.receive_type("message"))["message"]
    await a.send({"type": "delete", "id": posted["id"]})
    await a.receive_type("message")
    await a.send({"type": "edit", "id": posted["id"], "body": "back?"})
    error = await a.receive_type("error")
    assert (error["code"], error["ref"]) == ("forbidden", posted["id"])
    stored = await database_sync_to_async(Message.objects.get)(pk=posted["id"])
    assert stored.body == "gone soon" and stored.deleted_at is not None


async def test_restore_brings_a_message_back_to_live_sockets(alice, bob, room):
    b = await join(bob, room.slug)
    message = (await post(room=room, author=alice, body="hidden then back")).message
    await delete(room=room, message_id=message.pk, by=bob, moderator=True)
    await database_sync_to_async(services.restore_message)(message=message, by=bob)
    frames = [await b.receive_type("message") for _ in range(3)]
    assert [f["cursor"] for f in frames] == [1, 2, 3]
    assert [f["message"]["deleted"] for f in frames] == [False, True, False]
    assert frames[-1]["message"]["body"] == "hidden then back"


async def test_changes_the_layer_never_announced_still_arrive_in_order(alice, room, monkeypatch):
    """A doorbell lost by the channel layer costs latency, not the message."""
    a = await join(alice, room.slug)
    monkeypatch.setattr("chat.services.publish_change", lambda *args: None)
    for i in range(3):
        await post(room=room, author=alice, body=f"silent {i}")
    frames = [await a.receive_type("message", timeout=10) for _ in range(3)]
    assert [f["cursor"] for f in frames] == [1, 2, 3]
    assert [f["message"]["body"] for f in frames] == ["silent 0", "silent 1", "silent 2"]
