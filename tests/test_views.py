"""The HTTP surface of PROTOCOL.md §1."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from chat.models import Room
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
