"""The HTTP surface of PROTOCOL.md §1."""

import json
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from chat import policy, selectors, services
from chat.models import ReadMarker, Room
from tests.helpers import create_room, create_user, password_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice():
    return create_user("alice")


@pytest.fixture
def logged_in(client, alice):
    client.force_login(alice)
    return client


@pytest.mark.parametrize("path", ["/", "/rooms/general/"])
def test_pages_need_a_login(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


def test_create_room_needs_a_login(client):
    response = client.post("/rooms/", {"name": "General Chat"})
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert not Room.objects.exists()


def test_lobby_lists_rooms_and_offers_the_create_form(logged_in, alice):
    create_room("General Chat", alice)
    response = logged_in.get("/")
    assert response.status_code == 200
    assert b"General Chat" in response.content
    assert b'href="/rooms/general-chat/"' in response.content
    assert b'name="name"' in response.content


def test_create_room_redirects_to_its_page(logged_in, alice):
    response = logged_in.post("/rooms/", {"name": "General Chat"})
    assert response.status_code == 302
    assert response["Location"] == "/rooms/general-chat/"
    room = Room.objects.get()
    assert (room.name, room.slug, room.created_by) == ("General Chat", "general-chat", alice)


@pytest.mark.parametrize("name", ["General Chat", "general chat", "General-Chat"])
def test_taken_room_name_answers_the_form_with_an_error(logged_in, alice, name):
    create_room("General Chat", alice)
    response = logged_in.post("/rooms/", {"name": name})
    assert response.status_code == 400
    assert b"already exists" in response.content
    assert Room.objects.count() == 1


@pytest.mark.parametrize("name", ["", "   ", "!!!", "x" * 81])
def test_bad_room_names_answer_the_form_with_an_error(logged_in, name):
    response = logged_in.post("/rooms/", {"name": name})
    assert response.status_code == 400
    assert not Room.objects.exists()


def test_room_creation_is_limited_per_user(logged_in, client, alice, bob, settings):
    settings.CHAT_ROOMS_PER_USER = 3
    settings.CHAT_ROOMS_PER_USER_WINDOW = 600
    for n in range(3):
        assert logged_in.post("/rooms/", {"name": f"Room {n}"}).status_code == 302
    response = logged_in.post("/rooms/", {"name": "One too many"})
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 600
    page = response.content.decode()
    assert "You can create at most 3 rooms in 10 minutes" in page
    assert 'name="name"' in page and 'value="One too many"' in page  # the form, as typed
    assert not Room.objects.filter(name="One too many").exists()
    assert Room.objects.count() == 3
    # Another user is not held back by alice's rooms.
    client.force_login(bob)
    assert client.post("/rooms/", {"name": "Bob's room"}).status_code == 302


def test_create_room_is_csrf_protected(alice):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post("/rooms/", {"name": "General Chat"}).status_code == 403
    assert not Room.objects.exists()


def test_room_page_and_unknown_room(logged_in, alice):
    create_room("General Chat", alice)
    response = logged_in.get("/rooms/general-chat/")
    assert response.status_code == 200
    assert b'data-room-slug="general-chat"' in response.content
    assert logged_in.get("/rooms/nowhere/").status_code == 404


def test_signup_logs_the_new_user_in(client):
    response = client.post(
        "/accounts/signup/",
        {"username": "omkar", "password1": "a-Long-pass-42", "password2": "a-Long-pass-42"},
    )
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/").status_code == 200
    assert get_user_model().objects.filter(username="omkar").exists()


def test_signup_with_mismatched_passwords_shows_the_form_again(client):
    response = client.post(
        "/accounts/signup/",
        {"username": "omkar", "password1": "a-Long-pass-42", "password2": "other-Pass-43"},
    )
    assert response.status_code == 200
    assert not get_user_model().objects.exists()


def test_login_and_logout(client, alice):
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    assert b'name="username"' in page.content and b'name="password"' in page.content
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": password_for("alice")}
    )
    assert response.status_code == 302
    assert client.get("/").status_code == 200
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_healthz_reports_both_parts(client):
    response = client.get(reverse("chat:healthz"))
    assert response.status_code == 200
    assert response.json() == {"database": "ok", "channel_layer": "ok"}


def test_healthz_names_the_failing_part(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"database": "ok", "channel_layer": "unavailable"}


def test_failed_logins_are_throttled_per_account(client, alice, settings):
    from django.core.cache import cache

    cache.clear()
    settings.CHAT_LOGIN_FAILURES_PER_USER = 3
    for _ in range(3):
        response = client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
        assert response.status_code == 200
        assert b"Too many failed logins" not in response.content
    # Even the right password is refused now, with a clear message.
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": password_for("alice")}
    )
    assert b"Too many failed logins" in response.content
    assert client.get("/").status_code == 302
    cache.clear()


def test_failed_logins_are_throttled_per_address(client, settings):
    from django.core.cache import cache

    cache.clear()
    settings.CHAT_LOGIN_FAILURES_PER_ADDRESS = 4
    for i in range(4):
        client.post("/accounts/login/", {"username": f"guess{i}", "password": "wrong"})
    response = client.post("/accounts/login/", {"username": "another", "password": "wrong"})
    assert b"Too many failed logins" in response.content
    cache.clear()


# --- read markers and the lobby ------------------------------------------------------------


def _read(client, slug: str, body, **extra):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(f"/rooms/{slug}/read", data=data, content_type="application/json", **extra)


def _marker(user, room) -> int | None:
    return (
        ReadMarker.objects.filter(user=user, room=room)
        .values_list("last_read_id", flat=True)
        .first()
    )


@pytest.fixture
def bob():
    return create_user("bob")


@pytest.fixture
def general(alice):
    return create_room("General Chat", alice)


def _post(room, author, body: str) -> int:
    return services.post_message(room=room, author=author, body=body).message.id


def test_read_marker_moves_forward_only(logged_in, alice, bob, general):
    ids = [_post(general, bob, f"m{n}") for n in range(4)]
    response = _read(logged_in, "general-chat", {"last_read_id": ids[2]})
    assert response.status_code == 200
    assert response.json() == {"last_read_id": ids[2]}
    assert _marker(alice, general) == ids[2]

    # Backwards (an older tab reporting late) changes nothing and says where the marker is.
    response = _read(logged_in, "general-chat", {"last_read_id": ids[0]})
    assert response.status_code == 200
    assert response.json() == {"last_read_id": ids[2]}
    assert _marker(alice, general) == ids[2]

    assert _read(logged_in, "general-chat", {"last_read_id": ids[3]}).json() == {
        "last_read_id": ids[3]
    }
    assert ReadMarker.objects.count() == 1


def test_read_marker_stops_at_the_rooms_latest_message(logged_in, alice, bob, general):
    other = create_room("Other", bob)
    first = _post(general, bob, "one")
    elsewhere = _post(other, bob, "in another room")
    # An id from the future (or another room) cannot mark messages not written yet as read.
    response = _read(logged_in, "general-chat", {"last_read_id": elsewhere + 1000})
    assert response.json() == {"last_read_id": first}
    assert _marker(alice, general) == first
    later = _post(general, bob, "two")
    assert later > elsewhere
    rooms = selectors.lobby_rooms(policy.visible_rooms(alice), alice)
    assert next(r for r in rooms if r.slug == "general-chat").unread == 1


def test_read_marker_at_zero_is_kept_for_an_empty_room(logged_in, alice, general):
    # A page opened on an empty room says "seen nothing": the marker exists, at 0.
    assert _read(logged_in, "general-chat", {"last_read_id": 0}).json() == {"last_read_id": 0}
    assert _marker(alice, general) == 0


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        "[]",
        "null",
        {},
        {"last_read_id": None},
        {"last_read_id": "5"},
        {"last_read_id": 5.0},
        {"last_read_id": 1.5},
        {"last_read_id": True},
        {"last_read_id": -1},
        {"last_read_id": 2**63},
        {"id": 5},
    ],
)
def test_read_marker_refuses_bad_input(logged_in, alice, bob, general, body):
    _post(general, bob, "one")
    response = _read(logged_in, "general-chat", body)
    assert response.status_code == 400
    assert "last_read_id" in response.json()["error"]
    assert not ReadMarker.objects.exists()


def test_read_marker_unknown_room_is_404(logged_in):
    response = _read(logged_in, "nowhere", {"last_read_id": 1})
    assert response.status_code == 404
    assert not ReadMarker.objects.exists()


def test_read_marker_needs_a_login_and_a_post(client, logged_in, alice, bob, general):
    message_id = _post(general, bob, "one")
    anonymous = _read(client.__class__(), "general-chat", {"last_read_id": message_id})
    assert anonymous.status_code == 401
    assert logged_in.get("/rooms/general-chat/read").status_code == 405
    assert not ReadMarker.objects.exists()


def test_read_marker_is_csrf_protected(alice, bob, general):
    from django.test import Client

    message_id = _post(general, bob, "one")
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert _read(client, "general-chat", {"last_read_id": message_id}).status_code == 403
    assert not ReadMarker.objects.exists()

    # As the page does it: the room page sets the csrftoken cookie; its value goes back as
    # X-CSRFToken.
    assert client.get("/rooms/general-chat/").status_code == 200
    token = client.cookies[settings.CSRF_COOKIE_NAME].value
    wrong = _read(client, "general-chat", {"last_read_id": message_id}, HTTP_X_CSRFTOKEN="x" * 32)
    assert wrong.status_code == 403
    response = _read(client, "general-chat", {"last_read_id": message_id}, HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200
    assert _marker(alice, general) == message_id


def test_room_page_carries_the_read_marker(logged_in, alice, bob, general):
    response = logged_in.get("/rooms/general-chat/")
    assert b'data-last-read-id=""' in response.content
    assert b'data-read-url="/rooms/general-chat/read"' in response.content
    message_id = _post(general, bob, "one")
    services.mark_read(user=alice, room=general, message_id=message_id)
    response = logged_in.get("/rooms/general-chat/")
    assert f'data-last-read-id="{message_id}"'.encode() in response.content


def _lobby_rooms(client, path: str = "/") -> dict[str, Any]:
    response = client.get(path)
    assert response.status_code == 200
    return {room.slug: room for room in response.context["rooms"]}


def test_lobby_counts_unread_messages_per_user(logged_in, client, alice, bob, general):
    random = create_room("Random", bob)
    quiet = create_room("Quiet", bob)
    _post(general, alice, "mine are never unread")
    first = _post(general, bob, "one")
    gone = _post(general, bob, "two")
    services.delete_message(room=general, message_id=gone, by=bob)  # a tombstone is not unread
    _post(general, bob, "three")
    _post(random, bob, "hello")

    rooms = _lobby_rooms(logged_in)
    # No marker: every live message by someone else.
    assert {slug: room.unread for slug, room in rooms.items()} == {
        "general-chat": 2,
        "random": 1,
        "quiet": 0,
    }
    page = logged_in.get("/").content.decode()
    # The directory of public rooms (alice's own rooms are listed above it again, as hers).
    directory = page[page.index('id="rooms"') :]
    assert '<span class="unread-count">2</span>' in directory
    assert directory.count('class="unread"') == 2

    services.mark_read(user=alice, room=general, message_id=first)
    assert _lobby_rooms(logged_in)["general-chat"].unread == 1
    services.mark_read(user=alice, room=general, message_id=10**9)
    assert _lobby_rooms(logged_in)["general-chat"].unread == 0
    _post(general, bob, "four")
    assert _lobby_rooms(logged_in)["general-chat"].unread == 1

    # Bob's own view: alice's one message in General Chat, nothing of his own.
    client.force_login(bob)
    assert {slug: room.unread for slug, room in _lobby_rooms(client).items()} == {
        "general-chat": 1,
        "random": 0,
        "quiet": 0,
    }
    assert quiet.pk


def test_lobby_shows_last_activity(logged_in, alice, bob, general):
    create_room("Quiet", bob)
    _post(general, bob, "one")
    latest = services.post_message(room=general, author=bob, body="two").message
    rooms = _lobby_rooms(logged_in)
    assert rooms["general-chat"].last_activity == latest.created
    assert rooms["quiet"].last_activity is None
    page = logged_in.get("/").content.decode()
    assert "active just now" in page and "no messages yet" in page


def test_lobby_searches_rooms_by_name(logged_in, alice):
    for name in ("General Chat", "Random", "Release planning", "general support"):
        create_room(name, alice)
    assert set(_lobby_rooms(logged_in, "/?q=general")) == {"general-chat", "general-support"}
    # Case-insensitive, anywhere in the name, surrounding spaces ignored.
    assert set(_lobby_rooms(logged_in, "/?q=+PLAN+")) == {"release-planning"}
    assert set(_lobby_rooms(logged_in, "/?q=")) == {
        "general-chat",
        "random",
        "release-planning",
        "general-support",
    }
    response = logged_in.get("/?q=<b>nothing</b>")
    assert response.status_code == 200
    assert response.context["rooms"] == []
    page = response.content.decode()
    assert "No room matches “&lt;b&gt;nothing&lt;/b&gt;”" in page
    assert 'value="&lt;b&gt;nothing&lt;/b&gt;"' in page


def test_lobby_uses_the_same_few_queries_however_many_rooms(logged_in, alice, bob):
    def lobby_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert logged_in.get("/").status_code == 200
        return len(queries)

    def add_rooms(first: int, count: int) -> None:
        for n in range(first, first + count):
            room = create_room(f"Room {n}", alice)
            last = 0
            for body in ("a", "b", "c"):
                last = _post(room, bob, body)
            if n % 2:
                services.mark_read(user=alice, room=room, message_id=last - 1)

    add_rooms(0, 1)
    one = lobby_queries()
    add_rooms(1, 9)
    ten = lobby_queries()
    assert ten == one, (one, ten)
    # The session, the user, the directory page and the user's own rooms, each room with its
    # unread count and last activity.
    assert one <= 4, one
    rooms = _lobby_rooms(logged_in)
    assert [rooms[f"room-{n}"].unread for n in range(10)] == [3, 1] * 5


def _set_online(room, *names: str, expired: tuple[str, ...] = ()) -> None:
    import time

    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    now = time.time()
    mapping = {name: now + 45 for name in names} | {name: now - 5 for name in expired}
    client.zadd(f"chat:presence:{room.pk}", mapping)
    client.close()


def test_lobby_shows_who_is_online_from_redis(logged_in, alice, bob, general):
    create_room("Quiet", bob)
    _set_online(general, "alice", "bob", expired=("carol",))
    page = logged_in.get("/").content.decode()
    assert '<span class="room-online some" data-count="2">2 online</span>' in page
    assert '<span class="room-online" data-count="0">0 online</span>' in page


def test_lobby_without_redis_shows_no_online_count(logged_in, settings, general):
    settings.REDIS_URL = ""
    page = logged_in.get("/").content.decode()
    assert "online</span>" not in page
    # Redis configured but down: the lobby still answers, without the count.
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = logged_in.get("/")
    assert response.status_code == 200
    assert "online</span>" not in response.content.decode()


# --- the lobby as a directory: pages, order, archived rooms --------------------------------


def _many_rooms(owner, count: int, start: int = 0) -> None:
    Room.objects.bulk_create(
        Room(name=f"Room {n:04}", slug=f"room-{n:04}", created_by=owner)
        for n in range(start, start + count)
    )


def _listed(response) -> list[str]:
    return [room.slug for room in response.context["rooms"]]


def test_lobby_with_500_rooms_serves_one_bounded_page(logged_in, alice, bob, settings):
    assert settings.CHAT_LOBBY_PAGE_SIZE == 50

    def lobby() -> tuple[int, int, Any]:
        with CaptureQueriesContext(connection) as queries:
            response = logged_in.get("/")
        assert response.status_code == 200
        return len(response.content), len(queries), response

    _many_rooms(alice, 50)
    for room in Room.objects.all()[:10]:
        _post(room, bob, "x" * 100)
    size_50, queries_50, _ = lobby()
    _many_rooms(alice, 450, start=50)
    size_500, queries_500, response = lobby()
    assert len(_listed(response)) == 50
    # The page holds 50 rooms whether there are 50 or 500 (names differ in length by nothing).
    assert size_500 <= size_50 + 200, (size_50, size_500)
    assert size_500 < 60_000
    assert queries_500 == queries_50 <= 4
    assert 'rel="next" href="/?page=2"' in response.content.decode()

    last = logged_in.get("/?page=10")
    assert len(_listed(last)) == 50 and 'rel="next"' not in last.content.decode()
    assert 'rel="prev" href="/?page=9"' in last.content.decode()
    beyond = logged_in.get("/?page=11")
    assert _listed(beyond) == [] and "No more rooms" in beyond.content.decode()
    # Every room is on exactly one page.
    slugs = [slug for n in range(1, 11) for slug in _listed(logged_in.get(f"/?page={n}"))]
    assert sorted(slugs) == sorted(Room.objects.values_list("slug", flat=True))
    for junk in ("0", "-3", "x", "9" * 40):
        assert logged_in.get(f"/?page={junk}").status_code == 200


def test_lobby_lists_recently_active_rooms_first_or_by_name(logged_in, alice, bob):
    quiet = create_room("A quiet room", alice)
    older = create_room("B older chat", alice)
    newer = create_room("C newer chat", alice)
    _post(older, bob, "first")
    _post(newer, bob, "second")
    assert _listed(logged_in.get("/")) == [newer.slug, older.slug, quiet.slug]
    assert _listed(logged_in.get("/?sort=name")) == [quiet.slug, older.slug, newer.slug]
    assert _listed(logged_in.get("/?sort=nonsense")) == [newer.slug, older.slug, quiet.slug]


def test_lobby_pages_keep_the_search_and_the_order(logged_in, alice, settings):
    settings.CHAT_LOBBY_PAGE_SIZE = 2
    for name in ("General Chat", "general support", "General Planning", "Random"):
        create_room(name, alice)
    first = logged_in.get("/?q=general&sort=name")
    assert _listed(first) == ["general-chat", "general-planning"]
    page = first.content.decode()
    assert 'rel="next" href="/?q=general&amp;sort=name&amp;page=2"' in page
    assert 'data-refresh-url="/?q=general&amp;sort=name"' in page
    assert '<input type="hidden" name="sort" value="name">' in page
    second = logged_in.get("/?q=general&sort=name&page=2")
    assert _listed(second) == ["general-support"]
    assert 'data-refresh-url="/?q=general&amp;sort=name&amp;page=2"' in second.content.decode()


def test_an_archived_room_leaves_the_lobby_and_its_page_is_gone(logged_in, alice, general):
    mod = create_user("mod", is_staff=True)
    create_room("Random", alice)
    services.archive_room(room=general, by=mod)
    assert set(_lobby_rooms(logged_in)) == {"random"}
    assert set(_lobby_rooms(logged_in, "/?q=general")) == set()
    assert logged_in.get("/rooms/general-chat/").status_code == 404
    # Its name stays taken: the room and its history are kept.
    assert logged_in.post("/rooms/", {"name": "General Chat"}).status_code == 400

    services.unarchive_room(room=general, by=mod)
    assert set(_lobby_rooms(logged_in)) == {"general-chat", "random"}
    assert logged_in.get("/rooms/general-chat/").status_code == 200


# --- Content-Security-Policy ----------------------------------------------------------------


def _policy(response) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    return dict(part.strip().split(" ", 1) for part in header.split(";"))


@pytest.mark.parametrize("path", ["/", "/rooms/general-chat/", "/accounts/login/", "/admin/"])
def test_every_page_carries_the_content_security_policy(client, alice, general, path):
    client.force_login(create_user("root", is_staff=True, is_superuser=True))
    response = client.get(path)
    assert response.status_code == 200
    policy = _policy(response)
    for directive in ("default-src", "script-src", "style-src"):
        assert policy[directive] == "'self'"
    assert policy["object-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    # The page's own WebSocket origin, and no other.
    assert policy["connect-src"] == "'self' ws://testserver"
    assert _policy(client.get(path, secure=True))["connect-src"] == "'self' wss://testserver"


def test_templates_have_no_inline_script_style_or_handlers():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    for template in [*root.glob("templates/**/*.html"), *root.glob("chat/templates/**/*.html")]:
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), template
        assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=", text), template
