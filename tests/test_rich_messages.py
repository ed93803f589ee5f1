"""Rich messages (PROTOCOL.md §6) through the services and the room socket on real Redis:
`html` and `mentions`, `reply_to`, reactions and the `react` frame, `history around`, the
re-render command, and every Message-object field on every message."""

import asyncio
import threading

import pytest
from channels.db import database_sync_to_async
from django.core.management import call_command
from django.test import override_settings

from chat import rendering, services
from chat.models import Message, Reaction, Room
from chat.realtime.protocol import ChatError
from tests.helpers import (
    create_room,
    create_user,
    join,
    make_moderator,
    make_user,
    session_cookie_for,
)
from tests.wsclient import Client as WsClient

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sockets_closed")]

FIELDS = {
    "id", "author", "body", "created", "edited", "deleted", "deleted_by", "system", "html",
    "mentions", "reply_to", "reactions", "attachments",
}  # fmt: skip

post = database_sync_to_async(services.post_message)
edit = database_sync_to_async(services.edit_message)
delete = database_sync_to_async(services.delete_message)


@database_sync_to_async
def room_cursor(room: Room) -> int:
    return Room.objects.get(pk=room.pk).cursor


@database_sync_to_async
def stored(message_id: int) -> Message:
    return Message.objects.get(pk=message_id)


@database_sync_to_async
def reaction_rows() -> list[tuple[int, str, str]]:
    return list(Reaction.objects.values_list("message_id", "user__username", "emoji"))


def private_room(owner, *members) -> Room:
    room = services.create_room(
        name="Secret", created_by=owner, kind=Room.Kind.PRIVATE, enforce_limit=False
    )
    for user in members:
        services.add_member(room=room, by=owner, username=user.get_username())
    return room


# --- html and mentions ---------------------------------------------------------------------------


async def test_a_post_carries_its_html_and_mentions_and_every_field(alice, bob, room):
    await make_user("carol", is_active=False)
    a = await join(alice, room.slug)
    await a.send({"type": "post", "body": "**hi** @bob and @carol and @nobody `@bob`"})
    message = (await a.receive_type("message"))["message"]
    assert set(message) == FIELDS
    assert message["mentions"] == ["bob"]  # carol cannot log in; nobody does not exist
    assert message["html"] == (
        '<p><strong>hi</strong> <span class="mention">@bob</span> and @carol and @nobody '
        "<code>@bob</code></p>\n"
    )
    assert message["reply_to"] is None
    assert message["reactions"] == [] and message["attachments"] == []
    row = await stored(message["id"])
    assert (row.html, row.mentions, row.html_version) == (
        message["html"],
        ["bob"],
        rendering.RENDERER_VERSION,
    )


def test_in_a_private_room_only_members_can_be_mentioned(db):
    alice, bob, _carol = (create_user(name) for name in ("alice", "bob", "carol"))
    room = private_room(alice, bob)
    message = services.post_message(room=room, author=alice, body="@bob @carol @Alice").message
    assert message.mentions == ["bob", "alice"]  # any case; stored as the username is
    assert '<span class="mention">@alice</span>' in message.html
    assert "@carol" in message.html and 'mention">@carol' not in message.html


async def test_an_edit_renders_again_and_reads_mentions_again(alice, bob, room):
    a = await join(alice, room.slug)
    await a.send({"type": "post", "body": "plain"})
    posted = (await a.receive_type("message"))["message"]
    await a.send({"type": "edit", "id": posted["id"], "body": "_now_ with @bob"})
    edited = (await a.receive_type("message"))["message"]
    assert edited["html"] == '<p><em>now</em> with <span class="mention">@bob</span></p>\n'
    assert edited["mentions"] == ["bob"]
    assert edited["edited"] is not None


async def test_a_sockets_post_and_edit_are_parsed_once_each_and_off_the_database_thread(
    alice, bob, room, monkeypatch
):
    """The costly part of a render (tens of ms for a hostile body) must not hold the one
    database thread every socket of the process shares; the readers question stays there."""
    threads: list[str] = []
    parse = rendering.parse

    def parse_noting_the_thread(body: str) -> rendering.Document:
        threads.append(threading.current_thread().name)
        return parse(body)

    monkeypatch.setattr(rendering, "parse", parse_noting_the_thread)
    a = await join(alice, room.slug)
    await a.send({"type": "post", "body": "*hi* @bob"})
    posted = (await a.receive_type("message"))["message"]
    await a.send({"type": "edit", "id": posted["id"], "body": "**bye** @bob @alice"})
    edited = (await a.receive_type("message"))["message"]
    assert posted["html"] == '<p><em>hi</em> <span class="mention">@bob</span></p>\n'
    assert edited["mentions"] == ["bob", "alice"]
    assert len(threads) == 2, threads
    assert all(name.startswith("render") for name in threads), threads


async def test_a_notice_is_plain_text_html_and_mentions_nobody(alice, bob):
    room = await database_sync_to_async(private_room)(alice, bob)
    a = await join(alice, room.slug)
    notice = a.ready["messages"][-1]
    assert notice["system"] is True
    assert notice["html"] == "<p>alice added bob</p>\n" and notice["mentions"] == []


async def test_a_tombstone_has_every_field_and_nothing_made_from_its_text(alice, bob, room):
    a = await join(alice, room.slug)
    await a.send({"type": "post", "body": "secret @bob"})
    posted = (await a.receive_type("message"))["message"]
    await a.send({"type": "react", "id": posted["id"], "emoji": "👍"})
    await a.receive_type("message")
    await a.send({"type": "delete", "id": posted["id"]})
    tombstone = (await a.receive_type("message"))["message"]
    assert set(tombstone) == FIELDS
    assert tombstone["html"] == "" and tombstone["mentions"] == [] and tombstone["body"] == ""
    assert tombstone["reactions"] == []  # kept in the database, not shown
    assert len(await reaction_rows()) == 1


def test_a_moderators_restore_brings_the_reactions_back(db):
    alice, mod = create_user("alice"), make_moderator()
    room = create_room("General", alice)
    message = services.post_message(room=room, author=alice, body="hi").message
    services.toggle_reaction(room=room, message_id=message.pk, by=alice, emoji="🎉")
    services.hide_message(message=message, by=mod)
    services.restore_message(message=message, by=mod)
    from chat import selectors
    from chat.realtime.protocol import message_object

    restored = message_object(selectors.message(room, message.pk))
    assert restored["reactions"] == [{"emoji": "🎉", "count": 1, "users": ["alice"]}]
    assert restored["html"] == "<p>hi</p>\n"


def test_erasing_deleted_text_erases_its_render_and_mentions(db):
    from django.utils import timezone

    alice, _bob = create_user("alice"), create_user("bob")
    room = create_room("General", alice)
    message = services.post_message(room=room, author=alice, body="secret @bob").message
    services.delete_message(room=room, message_id=message.pk, by=alice)
    services.erase_deleted_text(older_than=timezone.now() + timezone.timedelta(seconds=1))
    message.refresh_from_db()
    assert (message.body, message.html, message.mentions) == ("", "", [])


def test_render_messages_renders_again_only_what_an_older_renderer_made(db):
    alice = create_user("alice")
    room = create_room("General", alice)
    old = services.post_message(room=room, author=alice, body="**old**").message
    current = services.post_message(room=room, author=alice, body="*current*").message
    Message.objects.filter(pk=old.pk).update(html="<p>stale</p>", html_version=0)
    Message.objects.filter(pk=current.pk).update(html="<p>kept</p>")
    cursor = Room.objects.get(pk=room.pk).cursor
    # Until it runs, readers get a fresh render anyway.
    from chat import selectors
    from chat.realtime.protocol import message_object

    assert message_object(selectors.message(room, old.pk))["html"] == (
        "<p><strong>old</strong></p>\n"
    )
    call_command("render_messages", "--batch-size", "1")
    old.refresh_from_db()
    current.refresh_from_db()
    assert (old.html, old.html_version) == ("<p><strong>old</strong></p>\n", 1)
    assert current.html == "<p>kept</p>"
    assert Room.objects.get(pk=room.pk).cursor == cursor  # not a change


# --- replies -------------------------------------------------------------------------------------


async def test_a_reply_carries_the_originals_author_and_excerpt(alice, bob, room):
    a = await join(alice, room.slug)
    b = await join(bob, room.slug)
    long_body = "x" * 150
    await a.send({"type": "post", "body": long_body})
    original = (await b.receive_type("message"))["message"]
    await a.receive_type("message")
    await b.send({"type": "post", "body": "agreed", "client_id": "r1", "reply_to": original["id"]})
    for socket in (a, b):
        reply = (await socket.receive_type("message"))["message"]
        assert reply["reply_to"] == {"id": original["id"], "author": "alice", "excerpt": "x" * 100}

    # The original deleted: its excerpt is empty wherever the reply is read again.
    await a.send({"type": "delete", "id": original["id"]})
    await a.receive_type("message")
    c = await join(bob, room.slug)
    reply = c.ready["messages"][-1]
    assert reply["reply_to"] == {"id": original["id"], "author": "alice", "excerpt": ""}


@pytest.mark.parametrize("target", ["unknown", "other_room"])
async def test_a_reply_to_an_unknown_or_foreign_message_is_not_found(alice, room, target):
    other = await database_sync_to_async(create_room)("Elsewhere", alice)
    elsewhere = (await post(room=other, author=alice, body="over there")).message
    message_id = elsewhere.pk if target == "other_room" else elsewhere.pk + 100
    a = await join(alice, room.slug)
    cursor = await room_cursor(room)
    await a.send({"type": "post", "body": "re", "client_id": "k", "reply_to": message_id})
    error = await a.receive_type("error")
    assert (error["code"], error["ref"]) == ("not_found", "k")
    assert await room_cursor(room) == cursor


async def test_a_reply_to_a_notice_is_forbidden(alice, bob):
    room = await database_sync_to_async(private_room)(alice, bob)
    a = await join(alice, room.slug)
    notice = a.ready["messages"][-1]
    await a.send({"type": "post", "body": "re", "reply_to": notice["id"]})
    error = await a.receive_type("error")
    assert error["code"] == "forbidden"
    assert await a.nothing()


@pytest.mark.parametrize("value", ["1", 0, -1, True, 1.5, [1]])
async def test_a_malformed_reply_to_is_invalid(alice, room, value):
    a = await join(alice, room.slug)
    await a.send({"type": "post", "body": "re", "client_id": "k", "reply_to": value})
    error = await a.receive_type("error")
    assert (error["code"], error["ref"]) == ("invalid", "k")


# --- reactions -----------------------------------------------------------------------------------


async def test_reactions_toggle_for_everyone_and_move_the_cursor_once_each(alice, bob, room):
    a = await join(alice, room.slug)
    b = await join(bob, room.slug)
    await a.send({"type": "post", "body": "ship it"})
    message_id = (await b.receive_type("message"))["message"]["id"]
    await a.receive_type("message")
    start = await room_cursor(room)

    toggles = [
        (a, "👍", [{"emoji": "👍", "count": 1, "users": ["alice"]}]),
        (b, "🎉", [{"emoji": "👍", "count": 1, "users": ["alice"]},
                   {"emoji": "🎉", "count": 1, "users": ["bob"]}]),
        (b, "👍", [{"emoji": "👍", "count": 2, "users": ["alice", "bob"]},
                   {"emoji": "🎉", "count": 1, "users": ["bob"]}]),
        # First use among the reactions standing: bob's 👍 came after his 🎉.
        (a, "👍", [{"emoji": "🎉", "count": 1, "users": ["bob"]},
                   {"emoji": "👍", "count": 1, "users": ["bob"]}]),
        (b, "👍", [{"emoji": "🎉", "count": 1, "users": ["bob"]}]),
    ]  # fmt: skip
    for step, (sender, emoji, expected) in enumerate(toggles, start=1):
        await sender.send({"type": "react", "id": message_id, "emoji": emoji})
        for socket in (a, b):
            frame = await socket.receive_type("message")
            assert frame["cursor"] == start + step
            assert frame["client_id"] is None
            assert frame["message"]["id"] == message_id
            assert frame["message"]["reactions"] == expected
    assert await room_cursor(room) == start + len(toggles)
    # A resume sees the message once, as it stands.
    c = await join(alice, room.slug, since=start)
    assert [m["reactions"] for m in c.ready["messages"]] == [toggles[-1][2]]


@pytest.mark.parametrize("emoji", ["a", "1", "", "👍👍", "👍 ", "<b>", "👨‍👩‍👧‍👦👨‍👩‍👧‍👦", 7, None])
async def test_a_reaction_that_is_not_one_emoji_is_invalid(alice, room, emoji):
    message = (await post(room=room, author=alice, body="hi")).message
    a = await join(alice, room.slug)
    cursor = await room_cursor(room)
    await a.send({"type": "react", "id": message.pk, "emoji": emoji})
    error = await a.receive_type("error")
    assert (error["code"], error["ref"]) == ("invalid", message.pk)
    assert await room_cursor(room) == cursor and await reaction_rows() == []


async def test_no_reaction_on_a_tombstone_a_notice_or_a_foreign_message(alice, bob):
    room = await database_sync_to_async(private_room)(alice, bob)
    other = await database_sync_to_async(create_room)("Elsewhere", alice)
    gone = (await post(room=room, author=alice, body="bye")).message
    await delete(room=room, message_id=gone.pk, by=alice)
    foreign = (await post(room=other, author=alice, body="there")).message
    a = await join(alice, room.slug)
    notice = next(m for m in a.ready["messages"] if m["system"])
    for message_id, code in [(gone.pk, "forbidden"), (notice["id"], "forbidden")]:
        await a.send({"type": "react", "id": message_id, "emoji": "👍"})
        assert (await a.receive_type("error"))["code"] == code
    await a.send({"type": "react", "id": foreign.pk, "emoji": "👍"})
    assert (await a.receive_type("error"))["code"] == "not_found"
    assert await reaction_rows() == []


def test_a_muted_user_cannot_react(db):
    alice, bob, mod = create_user("alice"), create_user("bob"), make_moderator()
    room = create_room("General", alice)
    message = services.post_message(room=room, author=alice, body="hi").message
    services.restrict_user(room=room, user=bob, kind="mute", by=mod)
    with pytest.raises(ChatError) as refused:
        services.toggle_reaction(room=room, message_id=message.pk, by=bob, emoji="👍")
    assert refused.value.code == "muted"


def test_the_21st_distinct_emoji_is_too_many_but_existing_ones_still_toggle(db):
    alice, bob = create_user("alice"), create_user("bob")
    room = create_room("General", alice)
    message = services.post_message(room=room, author=alice, body="hi").message
    emoji = ["😀", "😃", "😄", "😁", "😆", "😅", "🤣", "😂", "🙂", "🙃",
             "😉", "😊", "😇", "🥰", "😍", "🤩", "😘", "😗", "😚", "😙"]  # fmt: skip
    for each in emoji:
        services.toggle_reaction(room=room, message_id=message.pk, by=alice, emoji=each)
    cursor = Room.objects.get(pk=room.pk).cursor
    with pytest.raises(ChatError) as refused:
        services.toggle_reaction(room=room, message_id=message.pk, by=bob, emoji="🥲")
    assert (refused.value.code, refused.value.ref) == ("too_many", message.pk)
    assert Room.objects.get(pk=room.pk).cursor == cursor
    # Joining an emoji already there is no new one; taking one back makes room for another.
    services.toggle_reaction(room=room, message_id=message.pk, by=bob, emoji="😀")
    services.toggle_reaction(room=room, message_id=message.pk, by=alice, emoji="😙")
    services.toggle_reaction(room=room, message_id=message.pk, by=bob, emoji="🥲")
    assert Reaction.objects.filter(message=message).values("emoji").distinct().count() == 20


def test_a_reactions_users_list_stops_at_20_and_its_count_does_not(db):
    people = [create_user(f"user{i:02}") for i in range(23)]
    room = create_room("General", people[0])
    message = services.post_message(room=room, author=people[0], body="hi").message
    for person in people:
        services.toggle_reaction(room=room, message_id=message.pk, by=person, emoji="❤")
    from chat import selectors
    from chat.realtime.protocol import message_object

    (entry,) = message_object(selectors.message(room, message.pk))["reactions"]
    assert entry["emoji"] == "❤️" and entry["count"] == 23
    assert entry["users"] == [f"user{i:02}" for i in range(20)]


async def test_reactions_are_rate_limited_as_changes(alice, room):
    message = (await post(room=room, author=alice, body="hi")).message
    with override_settings(CHAT_RATE_LIMIT_CHANGES=3):
        a = await join(alice, room.slug)
        for _ in range(3):
            await a.send({"type": "react", "id": message.pk, "emoji": "👍"})
            await a.receive_type("message")
        await a.send({"type": "react", "id": message.pk, "emoji": "👍"})
        error = await a.receive_type("error")
        assert error["code"] == "rate_limited" and error["retry_after"] > 0


# --- history around ------------------------------------------------------------------------------


@database_sync_to_async
def fill(room: Room, author, count: int) -> list[int]:
    return [
        services.post_message(room=room, author=author, body=f"m{i}").message.pk
        for i in range(count)
    ]


async def test_history_around_a_message_pages_both_ways(alice, room):
    ids = await fill(room, alice, 30)
    a = await join(alice, room.slug)

    async def around(message_id, limit):
        await a.send({"type": "history", "around": message_id, "limit": limit})
        return await a.receive_type("history")

    middle = await around(ids[15], 10)
    assert [m["id"] for m in middle["messages"]] == ids[10:20]  # 5 older, itself, 4 newer
    assert (middle["has_more"], middle["has_newer"]) == (True, True)

    first = await around(ids[0], 10)
    assert [m["id"] for m in first["messages"]] == ids[0:5]
    assert (first["has_more"], first["has_newer"]) == (False, True)

    last = await around(ids[-1], 10)
    assert [m["id"] for m in last["messages"]] == ids[-6:]
    assert (last["has_more"], last["has_newer"]) == (True, False)

    near_end = await around(ids[-3], 10)
    assert [m["id"] for m in near_end["messages"]] == ids[-8:]
    assert (near_end["has_more"], near_end["has_newer"]) == (True, False)

    edge = await around(ids[-5], 10)  # exactly the last 4 newer: none beyond
    assert [m["id"] for m in edge["messages"]] == ids[-10:]
    assert edge["has_newer"] is False

    one = await around(ids[3], 1)
    assert [m["id"] for m in one["messages"]] == [ids[3]]
    assert (one["has_more"], one["has_newer"]) == (True, True)

    # `before` answers as in v1, without has_newer.
    await a.send({"type": "history", "before": ids[2]})
    before = await a.receive_type("history")
    assert "has_newer" not in before and [m["id"] for m in before["messages"]] == ids[:2]


async def test_history_around_a_message_not_in_the_room_is_not_found(alice, room):
    other = await database_sync_to_async(create_room)("Elsewhere", alice)
    foreign = (await post(room=other, author=alice, body="there")).message
    a = await join(alice, room.slug)
    for message_id in (foreign.pk, foreign.pk + 1000):
        await a.send({"type": "history", "around": message_id})
        error = await a.receive_type("error")
        assert (error["code"], error["ref"]) == ("not_found", message_id)
    await a.send({"type": "history", "around": foreign.pk, "before": foreign.pk})
    assert (await a.receive_type("error"))["code"] == "invalid"


# --- across two server processes ------------------------------------------------------------------


async def test_reactions_and_replies_reach_a_socket_on_another_process(daphne_factory):
    one, two = daphne_factory(), daphne_factory()

    @database_sync_to_async
    def setup():
        alice, bob = create_user("alice"), create_user("bob")
        room = create_room("Across", alice)
        return room, session_cookie_for(alice), session_cookie_for(bob)

    room, alice_cookie, bob_cookie = await setup()
    a = await WsClient.open(one.url, alice_cookie, room.slug)
    b = await WsClient.open(two.url, bob_cookie, room.slug)
    start = a.ready["cursor"]
    try:
        await a.send({"type": "post", "body": "**plan** for @bob", "client_id": "p1"})
        original = (await b.receive_type("message"))["message"]
        await a.receive_type("message")
        assert original["mentions"] == ["bob"] and "<strong>plan</strong>" in original["html"]
        await b.send({"type": "post", "body": "ok", "client_id": "p2", "reply_to": original["id"]})
        reply = await a.receive_type("message")
        assert reply["cursor"] == start + 2
        assert reply["message"]["reply_to"] == {
            "id": original["id"],
            "author": "alice",
            "excerpt": "**plan** for @bob",
        }
        for client in (a, b):  # the change stream: one cursor per toggle, in order, everywhere
            await client.send({"type": "react", "id": original["id"], "emoji": "👍"})
        for client in (a, b):
            seen = []
            while len(seen) < 2:
                frame = await client.receive_type("message")
                if frame["message"]["id"] == original["id"] and frame["cursor"] > start + 2:
                    seen.append(frame)
            assert [f["cursor"] for f in seen] == [start + 3, start + 4]
            (entry,) = seen[-1]["message"]["reactions"]
            assert (entry["emoji"], entry["count"], sorted(entry["users"])) == (
                "👍",
                2,
                ["alice", "bob"],
            )
    finally:
        await asyncio.gather(a.connection.close(), b.connection.close())
