"""Accounts: one login throttle for every door, sign-up and reset limits, look-alike names,
erasing an account, and erasing deleted messages' text after the retention period."""

import logging
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client, override_settings
from django.utils import timezone

from chat import services
from chat.forms import AdminUserCreationForm
from chat.models import Message, ModerationAction
from tests.helpers import close_all, create_room, create_user, join, password_for

User = get_user_model()
THROTTLED = b"Too many failed logins"


def site_login(client: Client, username: str, password: str):
    return client.post("/accounts/login/", {"username": username, "password": password})


def admin_login(client: Client, username: str, password: str):
    return client.post(
        "/admin/login/", {"username": username, "password": password, "next": "/admin/"}
    )


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


# --- one login throttle for every door ------------------------------------------------------


@pytest.mark.django_db
def test_admin_login_is_throttled_like_the_site_login(client, settings):
    settings.CHAT_LOGIN_FAILURES_PER_USER = 3
    create_user("boss", is_staff=True, is_superuser=True)
    for _ in range(3):
        response = admin_login(client, "boss", "wrong")
        assert response.status_code == 200 and THROTTLED not in response.content
    response = admin_login(client, "boss", password_for("boss"))
    assert THROTTLED in response.content
    assert not logged_in(client)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fail", "then"), [(site_login, admin_login), (admin_login, site_login)], ids=["site", "admin"]
)
def test_failed_logins_on_one_door_count_on_the_other(client, settings, fail, then):
    settings.CHAT_LOGIN_FAILURES_PER_USER = 3
    create_user("boss", is_staff=True, is_superuser=True)
    for _ in range(3):
        fail(client, "boss", "wrong")
    response = then(client, "boss", password_for("boss"))
    assert THROTTLED in response.content
    assert not logged_in(client)


@pytest.mark.django_db
def test_look_alike_spellings_of_a_name_count_against_one_account(client, settings):
    # Django logs fullwidth and mathematical-bold `dave` in as `dave` (NFKC); they were three
    # counters.
    settings.CHAT_LOGIN_FAILURES_PER_USER = 3
    create_user("dave")
    fullwidth, bold = "\uff44\uff41\uff56\uff45", "\U0001d41d\U0001d41a\U0001d42f\U0001d41e"
    for spelling in [fullwidth, bold, "DAVE"]:
        assert THROTTLED not in site_login(client, spelling, "wrong").content
    assert THROTTLED in site_login(client, "dave", password_for("dave")).content
    assert not logged_in(client)


@pytest.mark.django_db
def test_a_refused_attempt_is_not_counted_as_another_failure(client, settings):
    settings.CHAT_LOGIN_FAILURES_PER_USER = 2
    settings.CHAT_LOGIN_FAILURES_PER_ADDRESS = 4
    create_user("dave")
    create_user("erin")
    for _ in range(2):
        site_login(client, "dave", "wrong")
    for _ in range(5):  # refused before any password is checked
        assert THROTTLED in site_login(client, "dave", "wrong").content
    # Had those counted, the address would be over its 4 by now.
    assert site_login(client, "erin", password_for("erin")).status_code == 302
    assert logged_in(client)


# --- sign-up ---------------------------------------------------------------------------------


def signup(client: Client, username: str):
    return client.post(
        "/accounts/signup/",
        {"username": username, "password1": "a-Long-pass-42", "password2": "a-Long-pass-42"},
    )


@pytest.mark.django_db
def test_signups_are_limited_per_address(settings):
    settings.CHAT_SIGNUPS_PER_ADDRESS = 3
    for i in range(3):
        assert signup(Client(), f"user{i}").status_code == 302
    response = signup(Client(), "one-too-many")
    assert response.status_code == 429
    assert b"Too many new accounts from your address" in response.content
    assert b'name="username"' in response.content  # the form again
    assert not User.objects.filter(username="one-too-many").exists()
    # Another address is not held back.
    assert signup(Client(REMOTE_ADDR="10.9.8.7"), "elsewhere").status_code == 302


@pytest.mark.django_db
def test_a_rejected_signup_does_not_count_against_the_limit(client, settings):
    settings.CHAT_SIGNUPS_PER_ADDRESS = 1
    create_user("root")
    for _ in range(3):
        assert signup(client, "root").status_code == 200  # taken
    assert signup(client, "newcomer").status_code == 302


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name",
    ["r\u043e\u043et", "ROOT", "r00t", "\uff52\uff4f\uff4f\uff54"],
    ids=["cyrillic-o", "case", "zeros", "fullwidth"],
)
def test_signup_refuses_a_look_alike_of_an_existing_name(client, name):
    create_user("root")
    response = signup(client, name)
    assert response.status_code == 200
    assert (
        b"looks too much like an existing one" in response.content
        or b"already exists" in response.content
    )
    assert User.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("ro\u202eot", b"right-to-left or left-to-right control"),
        ("admin\u2066x", b"right-to-left or left-to-right control"),
        ("root\u3164", b"invisible characters"),  # a Hangul filler: a letter that draws nothing
        ("ro\u200bot", b"invisible characters"),
        ("deleted-abc", b"are reserved"),
    ],
    ids=["rlo", "isolate", "hangul-filler", "zero-width-space", "reserved"],
)
def test_signup_refuses_bidi_controls_invisible_characters_and_reserved_names(client, name, error):
    response = signup(client, name)
    assert response.status_code == 200
    assert error in response.content
    assert not User.objects.exists()


@pytest.mark.django_db
def test_a_plain_new_name_and_other_scripts_sign_up(client):
    create_user("root")
    assert signup(client, "\u0444\u0451\u0434\u043e\u0440").status_code == 302  # фёдор


@pytest.mark.django_db
def test_the_admin_user_creation_form_refuses_look_alikes():
    create_user("root")
    password = "a-Long-pass-42"
    form = AdminUserCreationForm(
        {"username": "r\u043e\u043et", "password1": password, "password2": password}
    )
    assert not form.is_valid()
    assert "looks too much like an existing one" in str(form.errors["username"])


# --- password reset --------------------------------------------------------------------------


def reset(client: Client, email: str):
    return client.post("/accounts/password_reset/", {"email": email})


@pytest.mark.django_db
def test_a_password_reset_sends_one_mail_and_the_next_over_the_limit_none(
    client, settings, mailoutbox, caplog
):
    settings.CHAT_PASSWORD_RESETS_PER_EMAIL = 2
    create_user("dave", email="dave@example.com")
    caplog.set_level(logging.INFO)
    for expected in (1, 2):
        response = reset(client, "dave@example.com")
        assert response.status_code == 302
        assert len(mailoutbox) == expected
    assert mailoutbox[0].to == ["dave@example.com"]
    assert "/accounts/reset/" in mailoutbox[0].body
    response = reset(client, "DAVE@example.com")
    assert response.status_code == 429
    assert b"Too many password reset requests" in response.content
    assert len(mailoutbox) == 2
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.django_db
def test_password_resets_are_limited_per_address(client, settings, mailoutbox):
    settings.CHAT_PASSWORD_RESETS_PER_ADDRESS = 3
    for i in range(3):
        assert reset(client, f"nobody{i}@example.com").status_code == 302
    assert reset(client, "dave@example.com").status_code == 429
    assert mailoutbox == []


# --- deleting an account ---------------------------------------------------------------------


@pytest.mark.django_db
def test_deleting_an_account_needs_the_password_and_a_csrf_post(settings):
    settings.CHAT_LOGIN_FAILURES_PER_USER = 2
    dave = create_user("dave")
    client = Client(enforce_csrf_checks=True)
    client.force_login(dave)
    page = client.get("/accounts/delete/")
    assert page.status_code == 200 and b'name="password"' in page.content
    assert client.post("/accounts/delete/", {"password": password_for("dave")}).status_code == 403
    token = client.cookies["csrftoken"].value
    for _ in range(2):
        response = client.post(
            "/accounts/delete/", {"password": "wrong", "csrfmiddlewaretoken": token}
        )
        assert response.status_code == 400 and b"not your password" in response.content
    # The password check is a login like any other: throttled after the limit, right or not.
    response = client.post(
        "/accounts/delete/", {"password": password_for("dave"), "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 429 and THROTTLED in response.content
    dave.refresh_from_db()
    assert dave.username == "dave" and dave.is_active
    # The page is linked from the account page, which the header links to.
    assert b'href="/accounts/"' in client.get("/").content
    assert b'href="/accounts/delete/"' in client.get("/accounts/").content


@pytest.mark.django_db(transaction=True)
@override_settings(CHAT_SESSION_CHECK_INTERVAL=0.3)
async def test_deleting_an_account_tombstones_its_messages_live_and_closes_its_sockets():
    def setup():
        dave, bob = create_user("dave", email="dave@example.com"), create_user("bob")
        room, other = create_room("General Chat", dave), create_room("Other", bob)
        for body in ("one", "two"):
            services.post_message(room=room, author=dave, body=body)
        services.post_message(room=other, author=dave, body="three")
        services.post_message(room=room, author=bob, body="bob's")
        # dave moderated once: the audit row must stay valid.
        services.hide_message(message=Message.objects.get(body="bob's"), by=dave)
        client = Client()
        client.force_login(dave)
        return dave, bob, room, client

    dave, bob, room, client = await database_sync_to_async(setup)()
    try:
        watcher = await join(bob, room.slug)
        own = await join(dave, room.slug)
        response = await database_sync_to_async(client.post)(
            "/accounts/delete/", {"password": password_for("dave")}
        )
        assert response.status_code == 200 and b"account is deleted" in response.content

        await database_sync_to_async(dave.refresh_from_db)()
        placeholder = dave.username
        assert placeholder.startswith("deleted-")
        assert (dave.email, dave.is_active, dave.has_usable_password()) == ("", False, False)

        # Open pages see the tombstones at once, by the placeholder.
        seen = [await watcher.receive_type("message") for _ in range(2)]
        assert {frame["message"]["body"] for frame in seen} == {""}
        assert {frame["message"]["deleted_by"] for frame in seen} == {placeholder}
        assert {frame["message"]["author"] for frame in seen} == {placeholder}
        # Their own socket closes as a logged-out one.
        while (output := await own.communicator.receive_output(timeout=5))[
            "type"
        ] != "websocket.close":
            pass
        assert output["code"] == 4401
    finally:
        await close_all()

    def check():
        assert not Message.objects.filter(author=dave, deleted_at__isnull=True).exists()
        assert Message.objects.filter(author=dave).count() == 3
        action = ModerationAction.objects.get()
        assert action.actor_id == dave.pk and action.actor.username == placeholder
        # The session is gone, and neither name nor password opens the account again.
        assert Client().get("/").status_code == 302
        assert not Client().login(username="dave", password=password_for("dave"))
        # The old name is free again; the placeholder's prefix is not.
        assert signup(Client(), "dave").status_code == 302

    await database_sync_to_async(check)()


# --- erasing deleted messages' text ----------------------------------------------------------


@pytest.mark.django_db
def test_purge_erases_author_deleted_text_after_the_retention_period(settings):
    settings.CHAT_DELETED_TEXT_RETENTION_DAYS = 30
    dave, mod = create_user("dave"), create_user("mod", is_staff=True)
    room = create_room("General Chat", dave)

    def posted(body: str) -> Message:
        return services.post_message(room=room, author=dave, body=body).message

    old, young, hidden, live = (posted(b) for b in ("old", "young", "hidden", "live"))
    for message in (old, young):
        services.delete_message(room=room, message_id=message.pk, by=dave)
    services.hide_message(message=hidden, by=mod)
    now = timezone.now()
    Message.objects.filter(pk__in=[old.pk, hidden.pk]).update(deleted_at=now - timedelta(days=31))
    Message.objects.filter(pk=young.pk).update(deleted_at=now - timedelta(days=29))
    Message.objects.filter(pk=live.pk).update(created=now - timedelta(days=90))

    call_command("purge_deleted_text")
    bodies = dict(Message.objects.values_list("pk", "body"))
    assert bodies == {old.pk: "", young.pk: "young", hidden.pk: "hidden", live.pk: "live"}
    old.refresh_from_db()
    assert old.is_deleted and old.deleted_by == dave  # the tombstone stays


@pytest.mark.django_db
def test_purge_is_idempotent_and_works_in_batches(settings, capsys):
    dave = create_user("dave")
    room = create_room("General Chat", dave)
    for i in range(7):
        message = services.post_message(room=room, author=dave, body=f"m{i}").message
        services.delete_message(room=room, message_id=message.pk, by=dave)
    Message.objects.update(deleted_at=timezone.now() - timedelta(days=31))
    call_command("purge_deleted_text", "--batch-size", "3")
    assert "erased the text of 7 message(s)" in capsys.readouterr().out
    call_command("purge_deleted_text", "--batch-size", "3")
    assert "erased the text of 0 message(s)" in capsys.readouterr().out
    assert set(Message.objects.values_list("body", flat=True)) == {""}
