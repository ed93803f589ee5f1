"""chat/services.py and chat/limits.py on their own: each service's rule and its effect (the
message, the room's cursor, the Change log, the audit), the limits the socket services count in
the real Redis, and the broadcast that only a commit sends."""

import asyncio
import typing

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import transaction
from django.test import override_settings

from chat import limits, services
from chat.models import Change, Message, ModerationAction, ReadMarker, Room
from chat.realtime import events, protocol
from chat.realtime.protocol import ChatError, ErrorCode
from tests.helpers import create_room, create_user, make_moderator

db = database_sync_to_async


def refused(code: ErrorCode, change) -> ChatError:
    with pytest.raises(ChatError) as raised:
        change()
    assert raised.value.code == code, raised.value.detail
    return raised.value


def cursor_of(room: Room) -> int:
    return Room.objects.get(pk=room.pk).cursor


def changes(room: Room) -> list[tuple[int, int, str]]:
    rows = Change.objects.filter(room=room).order_by("cursor")
    return list(rows.values_list("cursor", "message_id", "kind"))


@pytest.fixture
def scene(db):
    alice, bob = create_user("alice"), create_user("bob")
    mod = make_moderator("mod")
    room = create_room("General Chat", alice)
    return alice, bob, mod, room


# --- post_message -------------------------------------------------------------------------------


def test_a_post_is_stored_moves_the_cursor_by_one_and_logs_one_change(scene):
    alice, _, _, room = scene
    posted = services.post_message(room=room, author=alice, body="  How are you  ", client_id="c-1")
    assert posted.created
    message = Message.objects.get()
    assert (message.pk, message.body, message.client_id) == (
        posted.message.pk,
        "How are you",
        "c-1",
    )
    assert (message.author, message.room, message.cursor) == (alice, room, 1)
    assert cursor_of(room) == 1
    assert changes(room) == [(1, message.pk, Change.Kind.CREATE)]

    second = services.post_message(room=room, author=alice, body="again").message
    assert (cursor_of(room), second.cursor) == (2, 2)
    assert changes(room)[-1] == (2, second.pk, Change.Kind.CREATE)


@pytest.mark.parametrize(
    ("kind", "code"), [("ban", ErrorCode.FORBIDDEN), ("mute", ErrorCode.MUTED)]
)
def test_a_restricted_user_is_refused_by_the_policy_and_nothing_is_stored(scene, kind, code):
    _, bob, mod, room = scene
    services.restrict_user(room=room, user=bob, kind=kind, by=mod)
    error = refused(
        code,
        lambda: services.post_message(room=room, author=bob, body="hello", client_id="b-1"),
    )
    assert error.ref == "b-1"
    assert (Message.objects.count(), cursor_of(room), changes(room)) == (0, 0, [])


@pytest.mark.parametrize(
    ("body", "code"),
    [("", ErrorCode.EMPTY), ("   \n", ErrorCode.EMPTY), ("x" * 4001, ErrorCode.TOO_LONG)],
)
def test_a_bad_body_is_refused_before_anything_is_stored(scene, body, code):
    alice, _, _, room = scene
    refused(code, lambda: services.post_message(room=room, author=alice, body=body))
    assert (Message.objects.count(), cursor_of(room)) == (0, 0)


def test_a_retried_client_id_returns_the_stored_message_even_after_a_mute(scene):
    alice, bob, mod, room = scene
    first = services.post_message(room=room, author=alice, body="once", client_id="c-1")
    retry = services.post_message(room=room, author=alice, body="once", client_id="c-1")
    assert (retry.created, retry.message.pk) == (False, first.message.pk)
    services.restrict_user(room=room, user=alice, kind="mute", by=mod)
    late = services.post_message(room=room, author=alice, body="once", client_id="c-1")
    assert (late.created, late.message.pk) == (False, first.message.pk)
    # A new client_id is a new post, and the mute refuses it.
    refused(
        ErrorCode.MUTED,
        lambda: services.post_message(room=room, author=alice, body="more", client_id="c-2"),
    )
    assert (Message.objects.count(), cursor_of(room), len(changes(room))) == (1, 1, 1)
    # The same client_id from someone else is their own post.
    other = services.post_message(room=room, author=bob, body="mine", client_id="c-1")
    assert other.created and other.message.pk != first.message.pk


# --- edit_message / delete_message ----------------------------------------------------------------


def test_an_author_edits_their_message_and_the_edit_is_one_change(scene):
    alice, _, _, room = scene
    message = services.post_message(room=room, author=alice, body="frist").message
    edited = services.edit_message(room=room, message_id=message.pk, by=alice, body="first")
    assert edited.edited is not None
    stored = Message.objects.get()
    assert (stored.body, stored.cursor, stored.edited) == ("first", 2, edited.edited)
    assert changes(room) == [
        (1, message.pk, Change.Kind.CREATE),
        (2, message.pk, Change.Kind.EDIT),
    ]


def test_only_the_author_edits_or_deletes_and_a_refusal_changes_nothing(scene):
    alice, bob, _, room = scene
    message = services.post_message(room=room, author=alice, body="mine").message
    error = refused(
        ErrorCode.FORBIDDEN,
        lambda: services.edit_message(room=room, message_id=message.pk, by=bob, body="theirs"),
    )
    assert error.ref == message.pk and "edit" in error.detail
    error = refused(
        ErrorCode.FORBIDDEN,
        lambda: services.delete_message(room=room, message_id=message.pk, by=bob),
    )
    assert "delete" in error.detail
    assert (Message.objects.get().body, Message.objects.get().deleted_at) == ("mine", None)
    assert cursor_of(room) == 1


def test_a_message_of_another_room_is_not_found(scene):
    alice, _, _, room = scene
    elsewhere = create_room("Elsewhere", alice)
    message = services.post_message(room=elsewhere, author=alice, body="there").message
    for change in (
        lambda: services.edit_message(room=room, message_id=message.pk, by=alice, body="x"),
        lambda: services.delete_message(room=room, message_id=message.pk, by=alice),
    ):
        assert refused(ErrorCode.NOT_FOUND, change).ref == message.pk
    assert (cursor_of(room), cursor_of(elsewhere)) == (0, 1)


def test_deleting_leaves_a_tombstone_that_cannot_be_edited_and_deleting_it_again_does_nothing(
    scene,
):
    alice, _, _, room = scene
    message = services.post_message(room=room, author=alice, body="oops").message
    services.delete_message(room=room, message_id=message.pk, by=alice)
    stored = Message.objects.get()
    assert (stored.deleted_by, stored.cursor, stored.body) == (alice, 2, "oops")
    assert stored.deleted_at is not None
    assert changes(room)[-1] == (2, message.pk, Change.Kind.DELETE)

    refused(
        ErrorCode.FORBIDDEN,
        lambda: services.edit_message(room=room, message_id=message.pk, by=alice, body="undo"),
    )
    again = services.delete_message(room=room, message_id=message.pk, by=alice)
    assert again.deleted_at == stored.deleted_at
    assert (cursor_of(room), len(changes(room))) == (2, 2)


def test_a_muted_author_cannot_edit_but_can_still_delete(scene):
    alice, _, mod, room = scene
    message = services.post_message(room=room, author=alice, body="regret").message
    services.restrict_user(room=room, user=alice, kind="mute", by=mod)
    refused(
        ErrorCode.MUTED,
        lambda: services.edit_message(room=room, message_id=message.pk, by=alice, body="x"),
    )
    services.delete_message(room=room, message_id=message.pk, by=alice)
    assert Message.objects.get().deleted_at is not None


# --- hide_message / restore_message (moderators) ------------------------------------------------


def test_a_moderator_hides_and_restores_with_an_audit_row_and_one_cursor_step_each(scene):
    alice, _, mod, room = scene
    message = services.post_message(room=room, author=alice, body="rude").message
    assert services.hide_message(message=message, by=mod, reason="rude")
    hidden = Message.objects.get()
    assert (hidden.deleted_by, hidden.body, cursor_of(room)) == (mod, "rude", 2)
    assert not services.hide_message(message=message, by=mod)  # hidden already: nothing
    assert cursor_of(room) == 2

    assert services.restore_message(message=message, by=mod, reason="on appeal")
    back = Message.objects.get()
    assert (back.deleted_at, back.deleted_by, back.cursor) == (None, None, 3)
    assert not services.restore_message(message=message, by=mod)  # live already: nothing
    assert changes(room) == [
        (1, message.pk, Change.Kind.CREATE),
        (2, message.pk, Change.Kind.DELETE),
        (3, message.pk, Change.Kind.RESTORE),
    ]
    audit = ModerationAction.objects.order_by("at", "pk")
    assert list(audit.values_list("actor", "action", "room", "target", "message", "reason")) == [
        (mod.pk, "hide", room.pk, alice.pk, message.pk, "rude"),
        (mod.pk, "restore", room.pk, alice.pk, message.pk, "on appeal"),
    ]


def test_an_archived_room_refuses_changes_but_moderators_may_hide_and_restore(scene):
    alice, _, mod, room = scene
    message = services.post_message(room=room, author=alice, body="kept").message
    services.archive_room(room=room, by=mod)
    # `room` as a door found it before the archiving: the commit itself refuses.
    for change in (
        lambda: services.post_message(room=room, author=alice, body="late", client_id="l-1"),
        lambda: services.edit_message(room=room, message_id=message.pk, by=alice, body="x"),
        lambda: services.delete_message(room=room, message_id=message.pk, by=alice),
    ):
        refused(ErrorCode.FORBIDDEN, change)
    # Found afresh, the room is gone for its users (the policy: as if it never existed).
    fresh = Room.objects.get(pk=room.pk)
    refused(ErrorCode.NOT_FOUND, lambda: services.post_message(room=fresh, author=alice, body="x"))
    assert (Message.objects.count(), cursor_of(room), Message.objects.get().body) == (1, 1, "kept")

    assert services.hide_message(message=message, by=mod)
    assert services.restore_message(message=message, by=mod)
    assert cursor_of(room) == 3
    assert [kind for _, _, kind in changes(room)] == ["create", "delete", "restore"]


# --- mark_read ------------------------------------------------------------------------------------


def test_the_read_marker_only_moves_forward_and_never_past_the_latest_message(scene):
    alice, bob, _, room = scene
    elsewhere = create_room("Elsewhere", alice)
    m1 = services.post_message(room=room, author=bob, body="1").message
    m2 = services.post_message(room=room, author=bob, body="2").message
    other = services.post_message(room=elsewhere, author=bob, body="there").message
    m3 = services.post_message(room=room, author=bob, body="3").message

    assert services.mark_read(user=alice, room=room, message_id=m2.pk) == m2.pk
    assert services.mark_read(user=alice, room=room, message_id=m1.pk) == m2.pk  # never back
    # An id between this room's messages stops at the latest one at or before it.
    assert services.mark_read(user=alice, room=room, message_id=other.pk) == m2.pk
    # An id from the future stops at the latest message, so later ones still count as unread.
    assert services.mark_read(user=alice, room=room, message_id=10**12) == m3.pk
    assert ReadMarker.objects.get(user=alice, room=room).last_read_id == m3.pk
    m4 = services.post_message(room=room, author=bob, body="4").message
    assert services.mark_read(user=alice, room=room, message_id=10**12) == m4.pk
    # A marker in an empty room stands at 0; one user's marker is not another's.
    assert services.mark_read(user=bob, room=create_room("Empty", bob), message_id=5) == 0
    assert not ReadMarker.objects.filter(user=bob, room=room).exists()


# --- the sockets' services: limits in the real Redis ---------------------------------------------


def test_every_client_frame_type_but_typing_counts_against_a_limit():
    frame_types = {cls.__name__.lower() for cls in typing.get_args(protocol.ClientFrame)}
    assert frame_types == {"post", "edit", "delete", "react", "history", "typing", "report"}
    assert set(services.RATE_LIMITS) == frame_types - {"typing"}
    assert services.RATE_LIMITS["post"] is limits.POSTS and limits.POSTS.per_room
    # Reports count like posts (the same settings, per room) on a counter of their own.
    report = services.RATE_LIMITS["report"]
    assert report is limits.REPORTS and report.per_room and report.name != limits.POSTS.name
    assert (report.count_setting, report.window_setting) == (
        limits.POSTS.count_setting,
        limits.POSTS.window_setting,
    )
    assert services.RATE_LIMITS["edit"] is services.RATE_LIMITS["delete"] is limits.CHANGES
    assert services.RATE_LIMITS["history"] is limits.HISTORY
    assert not limits.CHANGES.per_room and not limits.HISTORY.per_room


@pytest.mark.django_db(transaction=True)
@override_settings(CHAT_RATE_LIMIT_POSTS=2, CHAT_RATE_LIMIT_WINDOW=60)
async def test_posts_are_limited_per_user_per_room_and_a_refused_one_stores_nothing(
    alice, bob, room
):
    elsewhere = await db(create_room)("Elsewhere", alice)
    for i in range(2):
        await services.submit_post(room=room, author=alice, body=f"{i}", client_id=f"c-{i}")
    with pytest.raises(ChatError) as raised:
        await services.submit_post(room=room, author=alice, body="third", client_id="c-2")
    error = raised.value
    assert (error.code, error.ref) == (ErrorCode.RATE_LIMITED, "c-2")
    assert 0 < error.retry_after <= 60
    assert "2 messages in 60 seconds" in error.detail
    # Another room, and another user in this room, have their own counts.
    assert (
        await services.submit_post(room=elsewhere, author=alice, body="x", client_id=None)
    ).created
    assert (await services.submit_post(room=room, author=bob, body="y", client_id=None)).created
    assert await db(lambda: sorted(Message.objects.values_list("body", flat=True)))() == [
        "0",
        "1",
        "x",
        "y",
    ]


@pytest.mark.django_db(transaction=True)
@override_settings(CHAT_RATE_LIMIT_POSTS=1, CHAT_RATE_LIMIT_WINDOW=60)
async def test_a_retried_post_past_the_limit_is_answered_with_the_stored_message(alice, room):
    first = await services.submit_post(room=room, author=alice, body="once", client_id="c-1")
    retry = await services.submit_post(room=room, author=alice, body="once", client_id="c-1")
    assert (retry.created, retry.message.pk) == (False, first.message.pk)
    with pytest.raises(ChatError) as raised:
        await services.submit_post(room=room, author=alice, body="new", client_id="c-2")
    assert raised.value.code == ErrorCode.RATE_LIMITED
    assert await db(Message.objects.count)() == 1


@pytest.mark.django_db(transaction=True)
@override_settings(CHAT_RATE_LIMIT_CHANGES=2, CHAT_RATE_LIMIT_CHANGES_WINDOW=60)
async def test_edits_and_deletions_share_one_limit_across_rooms(alice, room):
    elsewhere = await db(create_room)("Elsewhere", alice)
    here = (await db(services.post_message)(room=room, author=alice, body="a")).message
    there = (await db(services.post_message)(room=elsewhere, author=alice, body="b")).message
    await services.submit_edit(room=room, message_id=here.pk, by=alice, body="a2")
    await services.submit_delete(room=elsewhere, message_id=there.pk, by=alice)
    for refused_change in (
        services.submit_edit(room=room, message_id=here.pk, by=alice, body="a3"),
        services.submit_delete(room=room, message_id=here.pk, by=alice),
    ):
        with pytest.raises(ChatError) as raised:
            await refused_change
        assert (raised.value.code, raised.value.ref) == (ErrorCode.RATE_LIMITED, here.pk)
        assert 0 < raised.value.retry_after <= 60
    stored = await db(Message.objects.get)(pk=here.pk)
    assert (stored.body, stored.deleted_at) == ("a2", None)
    assert await db(cursor_of)(room) == 2


@pytest.mark.django_db(transaction=True)
@override_settings(CHAT_RATE_LIMIT_HISTORY=2, CHAT_RATE_LIMIT_HISTORY_WINDOW=60)
async def test_history_requests_are_limited_per_user(alice, bob, room):
    for i in range(3):
        await db(services.post_message)(room=room, author=alice, body=f"m{i}")
    messages, has_more = await services.read_history(room=room, user=alice, before=10**9, limit=2)
    assert ([m.body for m in messages], has_more) == (["m1", "m2"], True)
    await services.read_history(room=room, user=alice, before=10**9, limit=2)
    with pytest.raises(ChatError) as raised:
        await services.read_history(room=room, user=alice, before=10**9, limit=2)
    assert raised.value.code == ErrorCode.RATE_LIMITED and raised.value.retry_after > 0
    await services.read_history(room=room, user=bob, before=10**9, limit=2)


@pytest.mark.django_db(transaction=True)
async def test_without_redis_every_counted_change_is_unavailable_and_nothing_is_stored(
    alice, room, redis_server
):
    message = (await db(services.post_message)(room=room, author=alice, body="kept")).message
    redis_server.stop()
    try:
        for change, ref in (
            (services.submit_post(room=room, author=alice, body="lost", client_id="v-1"), "v-1"),
            (
                services.submit_edit(room=room, message_id=message.pk, by=alice, body="x"),
                message.pk,
            ),
            (services.submit_delete(room=room, message_id=message.pk, by=alice), message.pk),
            (services.read_history(room=room, user=alice, before=10**9, limit=5), None),
        ):
            with pytest.raises(ChatError) as raised:
                await change
            assert (raised.value.code, raised.value.ref) == (ErrorCode.UNAVAILABLE, ref)
            assert raised.value.retry_after == 1
    finally:
        redis_server.start()
    stored = await db(lambda: list(Message.objects.values_list("body", "deleted_at")))()
    assert stored == [("kept", None)]
    assert await db(cursor_of)(room) == 1
    # Back again: the same post goes through.
    assert (
        await services.submit_post(room=room, author=alice, body="back", client_id="v-1")
    ).created


# --- the broadcast follows the commit -------------------------------------------------------------


class Abort(Exception):
    pass


ROLLED_BACK = {
    "post": lambda s: services.post_message(room=s.room, author=s.alice, body="never"),
    "edit": lambda s: services.edit_message(
        room=s.room, message_id=s.message.pk, by=s.alice, body="never"
    ),
    "delete": lambda s: services.delete_message(room=s.room, message_id=s.message.pk, by=s.alice),
    "hide": lambda s: services.hide_message(message=s.message, by=s.mod),
    "ban": lambda s: services.restrict_user(room=s.room, user=s.bob, kind="ban", by=s.mod),
    "archive": lambda s: services.archive_room(room=s.room, by=s.mod),
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("change", list(ROLLED_BACK))
async def test_a_change_whose_transaction_rolls_back_publishes_nothing(alice, bob, room, change):
    """Listen to the room's group on the real Redis layer, as a hub does: the event of a change
    rolled back with its transaction (the admin's views run in one) is never sent."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(events.group_name(room.pk), channel)

    async def next_event(timeout: float = 5):
        return events.parse(await asyncio.wait_for(layer.receive(channel), timeout))

    scene = type("Scene", (), {})()
    scene.alice, scene.bob, scene.room = alice, bob, room
    scene.mod = await db(make_moderator)("mod")
    scene.message = (await db(services.post_message)(room=room, author=alice, body="hi")).message
    assert (await next_event()).cursor == 1

    def rolled_back():
        with transaction.atomic():
            ROLLED_BACK[change](scene)
            raise Abort

    with pytest.raises(Abort):
        await db(rolled_back)()
    await db(services.post_message)(room=room, author=alice, body="committed")

    # One publisher per event loop sends in order: a rolled-back event would come first.
    event = await next_event()
    assert isinstance(event, events.RoomChanged), event
    assert event.cursor == 2
    assert '"body":"committed"' in event.frame
    with pytest.raises(asyncio.TimeoutError):
        await next_event(timeout=0.3)
    assert await db(cursor_of)(room) == 2
    await layer.group_discard(events.group_name(room.pk), channel)
