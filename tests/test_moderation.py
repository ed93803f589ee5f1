"""Moderation in the admin reaches live sockets (real Redis), and only moderators can do it."""

import logging
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chat import services
from chat.models import Message, ModerationAction, Room, RoomRestriction
from chat.realtime.protocol import ChatError
from tests.helpers import (
    create_room,
    create_user,
    join,
    make_moderator,
    moderators_group,
    open_socket,
    session_cookie_for,
)
from tests.wsclient import Client as WsClient

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sockets_closed")]


def admin_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@database_sync_to_async
def scene():
    alice, bob = create_user("alice"), create_user("bob")
    room = create_room("General Chat", alice)
    mod = make_moderator()
    message = services.post_message(room=room, author=alice, body="rude words").message
    return alice, bob, room, admin_client(mod), message


def changelist_action(client: Client, model: str, action: str, ids: list[int]):
    return client.post(
        f"/admin/chat/{model}/",
        {"action": action, "_selected_action": [str(i) for i in ids], "index": "0"},
    )


async def test_hide_and_restore_from_the_admin_reach_live_sockets():
    alice, bob, room, mod_client, message = await scene()
    b = await join(bob, room.slug)
    start = b.ready["cursor"]

    response = await sync_to_async(changelist_action)(
        mod_client, "message", "hide_messages", [message.pk]
    )
    assert response.status_code == 302
    frame = await b.receive_type("message")
    assert frame["cursor"] == start + 1
    assert frame["message"] == {
        **frame["message"],
        "id": message.pk,
        "deleted": True,
        "deleted_by": "mod",
        "body": "",
    }

    # Moderators still read the hidden text in the admin; clients never get it again.
    page = await sync_to_async(mod_client.get)(f"/admin/chat/message/{message.pk}/change/")
    assert b"rude words" in page.content
    late = await join(alice, room.slug)
    assert "rude words" not in str(late.ready)

    response = await sync_to_async(changelist_action)(
        mod_client, "message", "restore_messages", [message.pk]
    )
    assert response.status_code == 302
    frame = await b.receive_type("message")
    assert frame["cursor"] == start + 2
    assert frame["message"]["deleted"] is False
    assert frame["message"]["body"] == "rude words"

    actions = await database_sync_to_async(
        lambda: list(
            ModerationAction.objects.order_by("at").values_list("action", "actor__username")
        )
    )()
    assert actions == [("hide", "mod"), ("restore", "mod")]


async def test_ban_closes_the_users_open_sockets_with_4403_and_refuses_new_ones():
    alice, bob, room, mod_client, _ = await scene()
    a = await join(alice, room.slug)
    b = await join(bob, room.slug)
    response = await sync_to_async(mod_client.post)(
        "/admin/chat/roomrestriction/add/",
        {"room": room.pk, "user": alice.pk, "kind": "ban", "until": "", "reason": "spam"},
    )
    assert response.status_code == 302, response.content[:2000]
    closed = await a.communicator.receive_output(timeout=5)
    while closed["type"] != "websocket.close":
        closed = await a.communicator.receive_output(timeout=5)
    assert closed["code"] == 4403
    # Bob stays.
    await b.send({"type": "post", "body": "still here"})
    assert (await b.receive_type("message"))["message"]["body"] == "still here"

    communicator, _ = await open_socket(alice, room.slug)
    assert (await communicator.connect())[0]
    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 4403}
    record = await database_sync_to_async(ModerationAction.objects.get)()
    assert (record.action, record.reason) == ("ban", "spam")


async def test_mute_answers_posts_with_muted_and_stores_nothing():
    alice, _, room, mod_client, _ = await scene()
    a = await join(alice, room.slug)
    response = await sync_to_async(mod_client.post)(
        "/admin/chat/roomrestriction/add/",
        {"room": room.pk, "user": alice.pk, "kind": "mute", "until": "", "reason": ""},
    )
    assert response.status_code == 302
    await a.send({"type": "post", "body": "can I talk?", "client_id": "m-1"})
    error = await a.receive_type("error")
    assert (error["code"], error["ref"]) == ("muted", "m-1")
    assert await database_sync_to_async(Message.objects.count)() == 1


async def test_expired_and_lifted_restrictions_stop_applying():
    alice, bob, room, mod_client, _ = await scene()
    mod = await database_sync_to_async(lambda: mod_client.session["_auth_user_id"])()
    await database_sync_to_async(RoomRestriction.objects.create)(
        room=room,
        user=alice,
        kind="mute",
        until=timezone.now() - timedelta(seconds=1),
        created_by_id=mod,
    )
    ban = await database_sync_to_async(services.restrict_user)(
        room=room, user=bob, kind="ban", by=alice
    )
    a = await join(alice, room.slug)
    await a.send({"type": "post", "body": "free again"})
    assert (await a.receive_type("message"))["message"]["body"] == "free again"

    response = await sync_to_async(changelist_action)(
        mod_client, "roomrestriction", "lift", [ban.pk]
    )
    assert response.status_code == 302
    b = await join(bob, room.slug)  # no longer banned
    assert b.ready["type"] == "ready"


def test_the_admin_cannot_delete_messages_only_hide_them():
    alice = create_user("alice")
    room = create_room("General Chat", alice)
    message = services.post_message(room=room, author=alice, body="keep me").message
    client = admin_client(make_moderator())
    response = changelist_action(client, "message", "delete_selected", [message.pk])
    assert Message.objects.filter(pk=message.pk, deleted_at__isnull=True).exists()
    assert client.post(f"/admin/chat/message/{message.pk}/delete/").status_code == 403
    superuser = create_user("root", is_staff=True, is_superuser=True)
    response = changelist_action(
        admin_client(superuser), "message", "delete_selected", [message.pk]
    )
    assert response.status_code in (200, 302)
    assert Message.objects.filter(pk=message.pk).exists()


def test_staff_outside_moderators_users_and_anonymous_visitors_cannot_moderate():
    alice = create_user("alice")
    room = create_room("General Chat", alice)
    message = services.post_message(room=room, author=alice, body="hello").message
    staff = create_user("staff", is_staff=True)
    assert admin_client(staff).get("/admin/chat/message/").status_code == 403
    changelist_action(admin_client(staff), "message", "hide_messages", [message.pk])
    response = admin_client(alice).get("/admin/chat/message/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    changelist_action(admin_client(alice), "message", "hide_messages", [message.pk])
    anonymous = Client()
    response = anonymous.get("/admin/chat/message/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    changelist_action(anonymous, "message", "hide_messages", [message.pk])
    assert not Message.objects.get(pk=message.pk).deleted_at
    assert not ModerationAction.objects.exists()


def test_moderators_group_has_exactly_the_moderation_permissions():
    group = moderators_group()
    assert sorted(f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()) == [
        "auth.view_user",
        "chat.add_roomrestriction",
        "chat.archive_room",
        "chat.change_report",
        "chat.change_roomrestriction",
        "chat.moderate_message",
        "chat.remove_member",
        "chat.view_membership",
        "chat.view_message",
        "chat.view_moderationaction",
        "chat.view_report",
        "chat.view_room",
        "chat.view_roomrestriction",
    ]


def test_audit_log_is_readable_not_editable():
    alice = create_user("alice")
    room = create_room("General Chat", alice)
    message = services.post_message(room=room, author=alice, body="hello").message
    mod = make_moderator()
    services.hide_message(message=message, by=mod, reason="test")
    record = ModerationAction.objects.get()
    client = admin_client(mod)
    assert client.get("/admin/chat/moderationaction/").status_code == 200
    page = client.get(f"/admin/chat/moderationaction/{record.pk}/change/")
    assert page.status_code == 200
    client.post(f"/admin/chat/moderationaction/{record.pk}/change/", {"reason": "rewritten"})
    assert ModerationAction.objects.get().reason == "test"
    assert client.post(f"/admin/chat/moderationaction/{record.pk}/delete/").status_code == 403


@pytest.mark.parametrize("url", ["/admin/chat/message/", "/admin/chat/roomrestriction/"])
def test_changelists_make_no_query_per_row(url):
    alice = create_user("alice")
    mod = make_moderator()
    client = admin_client(mod)

    def queries_for_rows(count: int) -> int:
        for i in range(count):
            author = create_user(f"user-{url.count('/')}-{count}-{i}")
            room = create_room(f"Room {count}-{i}", alice)
            message = services.post_message(room=room, author=author, body=f"m{i}").message
            services.hide_message(message=message, by=mod)
            services.restrict_user(room=room, user=author, kind="mute", by=mod)
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200
        return len(captured)

    few = queries_for_rows(3)
    many = queries_for_rows(40)
    assert many == few, f"{few} queries for 3 rows, {many} for 43"


# --- archiving rooms -------------------------------------------------------------------------


async def closed_with(socket) -> int:
    """The code a socket's server closed it with (frames before the close are skipped)."""
    output = await socket.communicator.receive_output(timeout=5)
    while output["type"] != "websocket.close":
        output = await socket.communicator.receive_output(timeout=5)
    return output["code"]


async def test_archiving_from_the_admin_closes_every_socket_in_the_room_on_every_process(
    daphne_factory,
):
    from websockets.exceptions import ConnectionClosed

    alice, bob, room, mod_client, message = await scene()
    other = await database_sync_to_async(create_room)("Random", bob)
    server = daphne_factory()
    cookie = await database_sync_to_async(session_cookie_for)(bob)
    a = await join(alice, room.slug)
    b_elsewhere = await WsClient.open(server.url, cookie, room.slug)  # another server process
    b_other_room = await join(bob, other.slug)

    response = await sync_to_async(changelist_action)(
        mod_client, "room", "archive_rooms", [room.pk]
    )
    assert response.status_code == 302
    assert await closed_with(a) == 4404
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await b_elsewhere.receive(timeout=5)
    assert closed.value.rcvd.code == 4404
    # Other rooms go on.
    await b_other_room.send({"type": "post", "body": "still here"})
    assert (await b_other_room.receive_type("message"))["message"]["body"] == "still here"

    # New sockets are refused as for a room that does not exist, on every process.
    communicator, _ = await open_socket(alice, room.slug)
    assert (await communicator.connect())[0]
    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 4404}
    with pytest.raises(ConnectionClosed) as refused:
        again = await WsClient.open(server.url, cookie, room.slug)
        await again.receive(timeout=5)
    assert refused.value.rcvd.code == 4404

    record = await database_sync_to_async(
        lambda: ModerationAction.objects.values_list("action", "actor__username", "room_id").get()
    )()
    assert record == ("archive", "mod", room.pk)
    # The history is kept, and moderators still read it in the admin.
    page = await sync_to_async(mod_client.get)(f"/admin/chat/message/?room__id__exact={room.pk}")
    assert b"rude words" in page.content
    assert await database_sync_to_async(Message.objects.filter(pk=message.pk).exists)()


def test_an_archived_room_takes_no_changes_from_any_door():
    alice = create_user("alice")
    room = create_room("General Chat", alice)
    kept = services.post_message(room=room, author=alice, body="before").message
    mod = make_moderator()
    assert services.archive_room(room=room, by=mod, reason="spam room")
    assert not services.archive_room(room=room, by=mod)  # once

    cursor = Room.objects.get(pk=room.pk).cursor
    with pytest.raises(ChatError) as error:
        services.post_message(room=room, author=alice, body="after", client_id="late-1")
    assert error.value.code == "forbidden"
    for change in (
        lambda: services.edit_message(room=room, message_id=kept.pk, by=alice, body="rewritten"),
        lambda: services.delete_message(room=room, message_id=kept.pk, by=alice),
    ):
        with pytest.raises(ChatError):
            change()
    assert list(Message.objects.values_list("body", "deleted_at")) == [("before", None)]
    assert Room.objects.get(pk=room.pk).cursor == cursor
    # The read marker is a door too: the room is gone for users.
    client = Client()
    client.force_login(alice)
    response = client.post(
        f"/rooms/{room.slug}/read", {"last_read_id": kept.pk}, content_type="application/json"
    )
    assert response.status_code == 404
    # Moderators may still hide what is there (the record stays theirs to keep).
    assert services.hide_message(message=kept, by=mod)

    assert services.unarchive_room(room=room, by=mod)
    services.post_message(room=room, author=alice, body="open again")
    assert list(ModerationAction.objects.order_by("at").values_list("action", "reason")) == [
        ("archive", "spam room"),
        ("hide", ""),
        ("unarchive", ""),
    ]


async def test_a_socket_whose_archiving_event_was_lost_closes_at_the_next_resync():
    """Redis down when the room was archived: the `room.close` event never came. The hub's
    resync with the database finds the room archived and closes its sockets."""
    alice, _, room, _, _ = await scene()
    with override_settings(CHAT_RESYNC_INTERVAL=0.2):
        a = await join(alice, room.slug)
        await database_sync_to_async(
            lambda: Room.objects.filter(pk=room.pk).update(archived_at=timezone.now())
        )()
        assert await closed_with(a) == 4404


async def test_unarchiving_lets_sockets_in_again():
    alice, _, room, mod_client, _ = await scene()
    await sync_to_async(changelist_action)(mod_client, "room", "archive_rooms", [room.pk])
    communicator, _ = await open_socket(alice, room.slug)
    assert (await communicator.connect())[0]
    assert await communicator.receive_output(timeout=5) == {"type": "websocket.close", "code": 4404}

    response = await sync_to_async(changelist_action)(
        mod_client, "room", "unarchive_rooms", [room.pk]
    )
    assert response.status_code == 302
    a = await join(alice, room.slug)
    await a.send({"type": "post", "body": "back"})
    assert (await a.receive_type("message"))["message"]["body"] == "back"
    actions = await database_sync_to_async(
        lambda: list(ModerationAction.objects.order_by("at").values_list("action", flat=True))
    )()
    assert actions == ["archive", "unarchive"]


def test_only_moderators_archive_rooms():
    alice = create_user("alice")
    room = create_room("General Chat", alice)
    staff = create_user("staff", is_staff=True)
    changelist_action(admin_client(staff), "room", "archive_rooms", [room.pk])
    changelist_action(admin_client(alice), "room", "archive_rooms", [room.pk])
    assert Room.objects.get(pk=room.pk).archived_at is None
    assert not ModerationAction.objects.exists()
    changelist_action(admin_client(make_moderator()), "room", "archive_rooms", [room.pk])
    assert Room.objects.get(pk=room.pk).archived_at is not None


def test_rooms_added_in_the_admin_follow_the_sites_name_rule():
    alice = create_user("alice")
    create_room("General Chat", alice)
    root = admin_client(create_user("root", is_staff=True, is_superuser=True))
    for name, error in [
        ("general chat", "already exists"),
        ("General-Chat", "already exists"),
        ("!!!", "at least one letter or digit"),
        ("x" * 81, "at most 80 characters"),
        ("bad \u202e name", "text-direction"),
    ]:
        response = root.post("/admin/chat/room/add/", {"name": name})
        assert response.status_code == 200, name
        assert error in response.content.decode(), name
    assert Room.objects.count() == 1

    response = root.post("/admin/chat/room/add/", {"name": "  Release Planning "})
    assert response.status_code == 302
    room = Room.objects.get(slug="release-planning")
    assert (room.name, room.created_by.username) == ("Release Planning", "root")
    # Made, then only archived or unarchived: the change page writes nothing.
    root.post(f"/admin/chat/room/{room.pk}/change/", {"name": "Renamed", "slug": "renamed"})
    assert Room.objects.get(pk=room.pk).slug == "release-planning"


# --- what moderators see of users, and whom they may restrict --------------------------------


def people_with_secrets():
    """A moderator's client, and accounts whose email, flags and hash must not reach them."""
    mod = make_moderator()
    alice = create_user("alice", email="alice@secret.example", first_name="Alice")
    staff = create_user("staffer", email="staffer@secret.example", is_staff=True)
    root = create_user("root", email="root@secret.example", is_staff=True, is_superuser=True)
    return admin_client(mod), mod, alice, staff, root


def test_moderators_see_usernames_only_in_the_user_list_and_pages():
    client, _, alice, staff, _ = people_with_secrets()
    page = client.get("/admin/auth/user/")
    assert page.status_code == 200
    for username in (b"alice", b"staffer", b"root"):
        assert username in page.content
    for secret in (b"secret.example", b"Alice", b"Staff status", b"is_staff", b"is_superuser"):
        assert secret not in page.content, secret

    for user in (alice, staff):
        page = client.get(f"/admin/auth/user/{user.pk}/change/")
        assert page.status_code == 200
        assert user.username.encode() in page.content
        for secret in (b"secret.example", b"pbkdf2", b"Staff status", b"Superuser status"):
            assert secret not in page.content, secret
        assert user.password.split("$")[2][:6].encode() not in page.content  # the salt


def test_moderators_cannot_search_or_filter_users_by_hidden_fields(caplog):
    client, _, alice, _, _ = people_with_secrets()
    found = client.get("/admin/auth/user/", {"q": "secret.example"})
    assert found.status_code == 200
    assert b"alice" not in found.content
    # A filter in the URL would read a hash out one character at a time.
    for params in (
        {"password__startswith": "pbkdf2"},
        {"email__contains": "secret"},
        {"is_staff__exact": "1"},
    ):
        assert client.get("/admin/auth/user/", params).status_code == 400, params
    # The restriction form's user field searches usernames and shows usernames.
    field = {"app_label": "chat", "model_name": "roomrestriction", "field_name": "user"}
    found = client.get("/admin/autocomplete/", {**field, "term": "secret.example"})
    assert found.json()["results"] == []
    found = client.get("/admin/autocomplete/", {**field, "term": "ali"})
    assert found.json()["results"] == [{"id": str(alice.pk), "text": "alice"}]
    room = create_room("General Chat", alice)
    page = client.get("/admin/chat/roomrestriction/add/", {"room": room.pk, "user": alice.pk})
    assert page.status_code == 200
    assert b"alice" in page.content and b"secret.example" not in page.content
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_superusers_still_see_and_filter_everything():
    _, _, _, _, root = people_with_secrets()
    client = admin_client(root)
    assert b"alice@secret.example" in client.get("/admin/auth/user/").content
    assert client.get("/admin/auth/user/", {"is_staff__exact": "1"}).status_code == 200


def test_moderators_cannot_ban_or_mute_staff_from_any_door(caplog):
    client, mod, alice, staff, root = people_with_secrets()
    room = create_room("General Chat", alice)
    for target in (staff, root):
        for kind in ("ban", "mute"):
            page = client.post(
                "/admin/chat/roomrestriction/add/",
                {"room": room.pk, "user": target.pk, "kind": kind, "until": "", "reason": ""},
            )
            assert page.status_code == 200  # the form again, with the reason
            assert b"only an administrator can ban or mute it" in page.content
        with pytest.raises(ChatError) as refused:
            services.restrict_user(room=room, user=target, kind="ban", by=mod)
        assert refused.value.code == "forbidden"
    assert not RoomRestriction.objects.exists()
    assert not ModerationAction.objects.exists()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

    # Other users still can be restricted by moderators; staff by a superuser.
    response = client.post(
        "/admin/chat/roomrestriction/add/",
        {"room": room.pk, "user": alice.pk, "kind": "mute", "until": "", "reason": ""},
    )
    assert response.status_code == 302
    response = admin_client(root).post(
        "/admin/chat/roomrestriction/add/",
        {"room": room.pk, "user": staff.pk, "kind": "mute", "until": "", "reason": ""},
    )
    assert response.status_code == 302
    assert RoomRestriction.objects.count() == 2


def test_moderators_restore_what_moderators_hid_not_what_authors_deleted():
    alice = create_user("alice")
    room = create_room("General Chat", alice)
    message = services.post_message(room=room, author=alice, body="I take it back").message
    services.delete_message(room=room, message_id=message.pk, by=alice)
    cursor = Room.objects.get(pk=room.pk).cursor
    mod = make_moderator()
    assert not services.restore_message(message=message, by=mod)
    message.refresh_from_db()
    assert message.deleted_at is not None and message.deleted_by == alice
    assert Room.objects.get(pk=room.pk).cursor == cursor
    assert not ModerationAction.objects.filter(action="restore").exists()


# --- the message list, as a moderator uses it ------------------------------------------------


def changelist_ids(client: Client, **params) -> list[int]:
    response = client.get("/admin/chat/message/", params)
    assert response.status_code == 200
    return [row.pk for row in response.context["cl"].result_list]


def test_the_message_list_shows_the_newest_first():
    alice = create_user("alice")
    room = create_room("General Chat", alice)
    ids = [
        services.post_message(room=room, author=alice, body=f"m{n}").message.id for n in range(3)
    ]
    assert changelist_ids(admin_client(make_moderator())) == ids[::-1]


def test_search_matches_message_text_only_and_the_author_filter_finds_a_person():
    """Searching "alice" used to list messages that mention her beside hers, and a moderator
    muted the wrong person from such a result."""
    alice, bob = create_user("alice"), create_user("bob")
    room = create_room("General Chat", alice)
    by_alice = services.post_message(room=room, author=alice, body="hello all").message
    about_alice = services.post_message(room=room, author=bob, body="ask alice").message
    client = admin_client(make_moderator())

    assert changelist_ids(client, q="alice") == [about_alice.pk]
    assert changelist_ids(client, author="alice") == [by_alice.pk]
    assert changelist_ids(client, author="alice", q="hello") == [by_alice.pk]
    assert changelist_ids(client, author="nobody") == []
    assert changelist_ids(client, author="alice", _facets="") == [by_alice.pk]  # "Show counts"
    page = client.get("/admin/chat/message/", {"author": "alice", "q": "hello"})
    assert b"Searches the text of messages only" in page.content
    # The filter's form keeps the search; the search form keeps the filter.
    assert b'<input type="hidden" name="q" value="hello">' in page.content
    assert b'name="author" value="alice"' in page.content
    # Its suggestions: the admin's user autocomplete, usernames only.
    field = {"app_label": "chat", "model_name": "message", "field_name": "author"}
    found = client.get("/admin/autocomplete/", {**field, "term": "ali"})
    assert found.json()["results"] == [{"id": str(alice.pk), "text": "alice"}]


def restrict_url(message, kind: str) -> str:
    return f"/admin/chat/message/{message.pk}/restrict/{kind}/"


async def test_ban_from_a_message_asks_first_naming_the_author_the_room_and_the_message():
    alice, _, room, mod_client, message = await scene()
    a = await join(alice, room.slug)
    changelist = await sync_to_async(mod_client.get)("/admin/chat/message/")
    assert restrict_url(message, "ban").encode() in changelist.content
    assert restrict_url(message, "mute").encode() in changelist.content

    page = await sync_to_async(mod_client.get)(restrict_url(message, "ban"))
    assert page.status_code == 200
    assert b"Ban alice from General Chat?" in page.content
    assert b"rude words" in page.content
    assert b'value="Yes, ban alice"' in page.content
    assert not await database_sync_to_async(RoomRestriction.objects.exists)()

    before = timezone.now()
    response = await sync_to_async(mod_client.post)(
        restrict_url(message, "ban"), {"duration": "1d", "reason": "insults"}
    )
    assert response.status_code == 302
    assert response["Location"] == "/admin/chat/message/"
    assert await closed_with(a) == 4403
    restriction = await database_sync_to_async(
        RoomRestriction.objects.select_related("user", "room", "created_by").get
    )()
    assert (restriction.user, restriction.room, restriction.kind) == (alice, room, "ban")
    assert (restriction.reason, restriction.created_by.username) == ("insults", "mod")
    assert before + timedelta(days=1) <= restriction.until <= timezone.now() + timedelta(days=1)
    record = await database_sync_to_async(
        ModerationAction.objects.values_list("action", "target__username", "reason").get
    )()
    assert record == ("ban", "alice", "insults")


def test_mute_from_a_message_for_good_refuses_the_authors_posts():
    alice = create_user("alice")
    room = create_room("General Chat", alice)
    message = services.post_message(room=room, author=alice, body="again").message
    client = admin_client(make_moderator())
    page = client.get(restrict_url(message, "mute"))
    assert b"Mute alice in General Chat?" in page.content
    response = client.post(restrict_url(message, "mute"), {"duration": "forever", "reason": ""})
    assert response.status_code == 302
    restriction = RoomRestriction.objects.get()
    assert (restriction.kind, restriction.until) == ("mute", None)
    with pytest.raises(ChatError) as refused:
        services.post_message(room=room, author=alice, body="hello?")
    assert refused.value.code == "muted"


def test_moderators_cannot_ban_or_mute_staff_from_the_message_list(caplog):
    client, _, alice, staff, root = people_with_secrets()
    room = create_room("General Chat", alice)
    for target in (staff, root):
        message = services.post_message(room=room, author=target, body="staff talk").message
        for kind in ("ban", "mute"):
            page = client.get(restrict_url(message, kind))
            assert page.status_code == 200
            assert b"only an administrator can ban or mute it" in page.content
            assert b'type="submit"' not in page.content.split(b'id="content-main"')[1]
            response = client.post(restrict_url(message, kind), {"duration": "", "reason": ""})
            assert response.status_code == 403
            assert b"only an administrator can ban or mute it" in response.content
    assert not RoomRestriction.objects.exists()
    assert not ModerationAction.objects.exists()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_the_ban_page_refuses_bad_input_and_people_without_the_permission():
    alice = create_user("alice")
    room = create_room("General Chat", alice)
    message = services.post_message(room=room, author=alice, body="hi").message
    client = admin_client(make_moderator())
    assert client.get(f"/admin/chat/message/{message.pk}/restrict/kick/").status_code == 400
    assert client.get("/admin/chat/message/999999/restrict/ban/").status_code == 404
    bad = client.post(restrict_url(message, "ban"), {"duration": "always", "reason": ""})
    assert bad.status_code == 400
    staff = admin_client(create_user("staff", is_staff=True))
    assert staff.post(restrict_url(message, "ban"), {"duration": ""}).status_code == 403
    anonymous = Client().post(restrict_url(message, "ban"), {"duration": ""})
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]
    assert not RoomRestriction.objects.exists()
