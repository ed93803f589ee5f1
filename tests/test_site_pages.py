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
