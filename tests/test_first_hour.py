"""A new user's first hour (issue 20): what the pages say about a ban or a mute in force.

The room page of a banned reader (403, in the site's look, reason, end, the way back), the mute
said in place of the composer, the lobby's "banned" mark, the restrictions door the page asks,
and the policy's reading of the restriction in force behind all of them.
"""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chat import policy, services
from chat.models import RoomRestriction
from tests.helpers import create_room, create_user, make_moderator

pytestmark = pytest.mark.django_db


@pytest.fixture
def scene(client):
    alice, bob, mod = create_user("alice"), create_user("bob"), make_moderator("mod")
    room = create_room("General Chat", alice)
    services.post_message(room=room, author=alice, body="hello")
    client.force_login(bob)
    return client, bob, mod, room


def later(**delta) -> dt.datetime:
    return timezone.now() + dt.timedelta(**delta)


# --- the policy's reading ----------------------------------------------------------------------


def test_the_restriction_in_force_is_the_one_that_lasts_longest(scene):
    _, bob, mod, room = scene
    assert policy.restrictions_in_force(bob, room) == {}
    services.restrict_user(room=room, user=bob, kind="mute", by=mod, until=later(hours=1))
    services.restrict_user(
        room=room, user=bob, kind="mute", by=mod, until=later(days=2), reason="long"
    )
    services.restrict_user(room=room, user=bob, kind="ban", by=mod, until=later(hours=-1))
    in_force = policy.restrictions_in_force(bob, room)
    assert list(in_force) == ["mute"]  # the expired ban is not in force
    assert in_force["mute"].reason == "long"
    without_end = services.restrict_user(room=room, user=bob, kind="mute", by=mod, reason="x")
    assert policy.restrictions_in_force(bob, room)["mute"] == without_end
    services.lift_restriction(restriction=without_end, by=mod)
    assert policy.restrictions_in_force(bob, room)["mute"].reason == "long"


# --- the room page of a banned reader ----------------------------------------------------------


def test_a_banned_reader_gets_a_page_with_the_reason_the_end_and_the_way_back(scene):
    client, bob, mod, room = scene
    until = later(days=3)
    services.restrict_user(room=room, user=bob, kind="ban", by=mod, until=until, reason="spam")
    response = client.get(f"/rooms/{room.slug}/")
    assert response.status_code == 403
    page = response.content.decode()
    assert "You are banned from" in page and "General Chat" in page
    assert f'datetime="{timezone.localtime(until):%Y-%m-%dT%H:%M:%S}' in page
    assert "Reason: <span" in page and "spam" in page
    assert 'href="/">Back to your rooms</a>' in page
    # In the site's look (the base template), not Django's or a bare 403, and no room script.
    assert 'class="site-header' in page
    assert "chat/room.js" not in page and "hello" not in page


def test_a_ban_without_end_says_until_a_moderator_lifts_it(scene):
    client, bob, mod, room = scene
    services.restrict_user(room=room, user=bob, kind="ban", by=mod)
    page = client.get(f"/rooms/{room.slug}/").content.decode()
    assert "until a moderator lifts it." in page
    assert "Reason:" not in page


def test_the_ban_page_escapes_the_reason(scene):
    client, bob, mod, room = scene
    services.restrict_user(room=room, user=bob, kind="ban", by=mod, reason="<b>x</b>")
    page = client.get(f"/rooms/{room.slug}/").content.decode()
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page


def test_a_lifted_or_expired_ban_opens_the_room_again(scene):
    client, bob, mod, room = scene
    ban = services.restrict_user(room=room, user=bob, kind="ban", by=mod)
    services.restrict_user(room=room, user=bob, kind="ban", by=mod, until=later(seconds=-1))
    assert client.get(f"/rooms/{room.slug}/").status_code == 403
    services.lift_restriction(restriction=ban, by=mod)
    assert client.get(f"/rooms/{room.slug}/").status_code == 200


# --- the mute in place of the composer ---------------------------------------------------------


def test_a_muted_user_sees_the_mute_in_place_of_the_composer(scene):
    client, bob, mod, room = scene
    until = later(hours=2)
    services.restrict_user(room=room, user=bob, kind="mute", by=mod, until=until, reason="spam")
    response = client.get(f"/rooms/{room.slug}/")
    assert response.status_code == 200
    page = response.content.decode()
    assert '<div id="muted-notice" class="muted-notice" role="status" data-until=' in page
    assert "You are muted in this room until <time" in page
    assert "(reason: <span" in page and ">spam</span>)." in page
    assert '<form id="composer" class="composer" autocomplete="off" hidden>' in page


def test_a_mute_without_end_and_reason_reads_plainly(scene):
    client, bob, mod, room = scene
    services.restrict_user(room=room, user=bob, kind="mute", by=mod)
    page = client.get(f"/rooms/{room.slug}/").content.decode()
    assert "You are muted in this room until a moderator lifts it.</p>" in page


def test_without_a_mute_the_composer_is_shown_and_the_notice_hidden(scene):
    client, bob, mod, room = scene
    services.restrict_user(room=room, user=bob, kind="mute", by=mod, until=later(minutes=-1))
    other = create_room("Elsewhere", bob)
    services.restrict_user(room=other, user=bob, kind="mute", by=mod)  # another room's mute
    page = client.get(f"/rooms/{room.slug}/").content.decode()
    assert '<div id="muted-notice" class="muted-notice" role="status" hidden' in page
    assert '<form id="composer" class="composer" autocomplete="off">' in page


def test_the_room_page_reads_restrictions_only_when_there_are_some(scene):
    client, bob, mod, room = scene
    client.get(f"/rooms/{room.slug}/")  # the session is warm
    with CaptureQueriesContext(connection) as plain:
        client.get(f"/rooms/{room.slug}/")
    services.restrict_user(room=room, user=bob, kind="mute", by=mod)
    with CaptureQueriesContext(connection) as muted:
        client.get(f"/rooms/{room.slug}/")
    assert len(muted) == len(plain) + 1


# --- the lobby ---------------------------------------------------------------------------------


def _row(page: str, slug: str) -> str:
    start = page.index(f'<li data-slug="{slug}"')
    return page[start : page.index("</li>", start)]


def test_the_lobby_marks_a_room_the_user_is_banned_from_without_its_unread_count(scene):
    client, bob, mod, room = scene
    services.add_member(room=room, by=bob, username="bob")
    services.restrict_user(room=room, user=bob, kind="ban", by=mod, reason="spam")
    free = create_room("Free", mod)
    services.post_message(room=free, author=mod, body="hi")
    page = client.get("/").content.decode()
    for listed in (page[: page.index('id="rooms"')], page[page.index('id="rooms"') :]):
        # Once in "Your rooms", once in the directory: marked, no unread count, no Join.
        row = _row(listed, room.slug)
        assert 'class="banned-tag">banned' in row
        assert "is-banned" in row
        assert 'class="unread"' not in row and "has-unread" not in row
        assert 'class="button-quiet join"' not in row
    free_row = _row(page[page.index('id="rooms"') :], free.slug)
    assert "banned" not in free_row and 'class="unread"' in free_row


def test_a_mute_is_not_marked_in_the_lobby(scene):
    client, bob, mod, room = scene
    services.restrict_user(room=room, user=bob, kind="mute", by=mod)
    assert "banned-tag" not in client.get("/").content.decode()


# --- the restrictions door the page asks -------------------------------------------------------


def test_the_restrictions_door_answers_the_callers_own_ban_and_mute(scene):
    client, bob, mod, room = scene
    url = f"/rooms/{room.slug}/restrictions"
    assert client.get(url).json() == {"ban": None, "mute": None}
    services.restrict_user(
        room=room,
        user=bob,
        kind="mute",
        by=mod,
        reason="spam",
        until=dt.datetime(2999, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    )
    assert client.get(url).json() == {
        "ban": None,
        "mute": {"reason": "spam", "until": "2999-01-02T03:04:05.000Z"},
    }
    services.restrict_user(room=room, user=bob, kind="ban", by=mod)
    assert client.get(url).json()["ban"] == {"reason": "", "until": None}
    # Somebody else's restrictions are theirs only.
    client.force_login(mod)
    assert client.get(url).json() == {"ban": None, "mute": None}


def test_the_restrictions_door_needs_a_login_and_a_visible_room(scene):
    client, _, mod, room = scene
    private = services.create_room(
        name="Hidden", created_by=mod, kind="private", enforce_limit=False
    )
    assert client.get(f"/rooms/{private.slug}/restrictions").status_code == 404
    assert client.get("/rooms/nowhere/restrictions").status_code == 404
    assert client.post(f"/rooms/{room.slug}/restrictions").status_code == 405
    client.logout()
    response = client.get(f"/rooms/{room.slug}/restrictions")
    assert response.status_code == 401 and response.json() == {"error": "Log in first."}
    assert RoomRestriction.objects.count() == 0
