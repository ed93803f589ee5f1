"""The site's own pages for the first hour: 404 and 500 in the site's look (under `make run`'s
DEBUG too), and the account page with its password change."""

import urllib.request
from urllib.error import HTTPError

import pytest
from django.conf import settings
from django.test import Client, override_settings

from tests.helpers import create_room, create_user, session_cookie_for

pytestmark = pytest.mark.django_db

SITE_PAGE = b'class="site-header"'
DJANGO_DEBUG_PAGE = b"because you have <code>DEBUG = True</code>"


@pytest.fixture
def alice():
    return create_user("alice")


@pytest.fixture
def logged_in(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


# --- 404 and 500 -----------------------------------------------------------------------------


def assert_site_not_found(response) -> None:
    assert response.status_code == 404
    assert SITE_PAGE in response.content
    assert b"Nothing here" in response.content
    assert b'href="/"' in response.content  # the way back to the rooms
    assert DJANGO_DEBUG_PAGE not in response.content


@pytest.mark.parametrize("debug", [False, True], ids=["debug-off", "debug-on"])
def test_a_missing_room_shows_the_sites_404_page_with_debug_on_and_off(logged_in, settings, debug):
    settings.DEBUG = debug
    assert_site_not_found(logged_in.get("/rooms/nowhere/"))


def test_an_archived_room_shows_the_sites_404_page_under_debug(logged_in, alice, settings):
    from chat import services

    settings.DEBUG = True
    room = create_room("General Chat", alice)
    services.archive_room(room=room, by=create_user("root", is_staff=True, is_superuser=True))
    assert_site_not_found(logged_in.get(f"/rooms/{room.slug}/"))


def test_a_missing_room_under_make_runs_settings_shows_the_sites_404_page(daphne_factory, alice):
    """`make run` serves with DJANGO_DEBUG=1 through daphne (the async handler)."""
    server = daphne_factory(DJANGO_DEBUG="1")
    request = urllib.request.Request(
        f"{server.url}/rooms/nowhere/",
        headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={session_cookie_for(alice)}"},
    )
    with pytest.raises(HTTPError) as answer:
        urllib.request.urlopen(request, timeout=10)
    assert answer.value.code == 404
    body = answer.value.read()
    assert SITE_PAGE in body and b"Nothing here" in body
    assert DJANGO_DEBUG_PAGE not in body


@override_settings(ROOT_URLCONF="tests.error_urls", DEBUG=False)
def test_a_server_error_shows_the_sites_500_page(alice):
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    response = client.get("/fail/")
    assert response.status_code == 500
    assert SITE_PAGE in response.content
    assert b"Something went wrong" in response.content
    assert b'href="/"' in response.content
    assert b"a bug in a view" not in response.content
    assert b"Traceback" not in response.content


# --- the account page and the password change ------------------------------------------------

NEW_PASSWORD = "a-new-Passphrase-42"


def change_password(client: Client, old: str, new: str = NEW_PASSWORD):
    return client.post(
        "/accounts/password_change/",
        {"old_password": old, "new_password1": new, "new_password2": new},
    )


@pytest.mark.parametrize(
    "path",
    ["/", "/rooms/general-chat/", "/accounts/", "/accounts/password_change/", "/rooms/nowhere/"],
)
def test_every_page_links_to_the_account_page_from_its_header(logged_in, alice, path):
    create_room("General Chat", alice)
    response = logged_in.get(path)
    header = response.content.split(b'<header class="site-header">', 1)[1].split(b"</header>")[0]
    assert b'href="/accounts/"' in header


def test_the_account_page_offers_the_password_change_in_the_sites_look(logged_in):
    assert b'href="/accounts/password_change/"' in logged_in.get("/accounts/").content
    page = logged_in.get("/accounts/password_change/")
    assert page.status_code == 200
    assert SITE_PAGE in page.content
    assert b"django-admin" not in page.content and b'id="site-name"' not in page.content
    for field in (b"old_password", b"new_password1", b"new_password2"):
        assert b'name="' + field + b'"' in page.content


def test_changing_the_password_keeps_this_session_and_takes_the_new_password(logged_in, alice):
    from tests.helpers import password_for

    response = change_password(logged_in, password_for("alice"))
    assert response.status_code == 302
    assert response["Location"] == "/accounts/password_change/done/"
    done = logged_in.get(response["Location"])
    assert done.status_code == 200 and SITE_PAGE in done.content
    assert b"Password changed" in done.content
    assert logged_in.get("/").status_code == 200  # still logged in
    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)


def test_a_wrong_old_password_changes_nothing(logged_in, alice):
    from tests.helpers import password_for

    response = change_password(logged_in, "not-my-password")
    assert response.status_code == 400
    assert b"Your old password was entered incorrectly" in response.content
    alice.refresh_from_db()
    assert alice.check_password(password_for("alice"))


def test_the_password_change_counts_and_obeys_the_login_throttle(logged_in, alice, settings):
    """Guessing the old password on a stolen session is a login attempt like any other."""
    from tests.helpers import password_for

    settings.CHAT_LOGIN_FAILURES_PER_USER = 3
    Client().post("/accounts/login/", {"username": "alice", "password": "guess-1"})
    for n in (2, 3):
        assert change_password(logged_in, f"guess-{n}").status_code == 400
    # The limit is reached: the right old password is refused too, with the reason.
    response = change_password(logged_in, password_for("alice"))
    assert response.status_code == 429
    assert b"Too many failed logins" in response.content
    alice.refresh_from_db()
    assert alice.check_password(password_for("alice"))
    # And the site's login counts the password change's failures.
    login = Client().post(
        "/accounts/login/", {"username": "alice", "password": password_for("alice")}
    )
    assert b"Too many failed logins" in login.content


def test_the_admins_password_change_is_the_sites_throttled_one(alice):
    staff = create_user("root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(staff)
    response = client.get("/admin/password_change/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/password_change/"
    assert client.get("/admin/password_change/done/")["Location"] == (
        "/accounts/password_change/done/"
    )
