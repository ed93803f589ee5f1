"""Search (PROTOCOL.md §7): `GET /api/search` on the database in use (PostgreSQL in CI) and, from
the same file, on SQLite's FTS5 in a second pytest process."""

import os
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client

from chat import search, services
from chat.models import Room, RoomRestriction
from tests.conftest import ROOT
from tests.helpers import create_user, make_moderator, private_room

pytestmark = pytest.mark.django_db(transaction=True)


def post(room: Room, author, body: str):
    return services.post_message(room=room, author=author, body=body).message


def searching(user, **params):
    client = Client()
    if user is not None:
        client.force_login(user)
    return client.get("/api/search", params)


def found(user, q: str, **params) -> list[str]:
    response = searching(user, q=q, **params)
    assert response.status_code == 200, response.content
    return [result["message"]["body"] for result in response.json()["results"]]


@pytest.fixture
def people():
    return create_user("alice"), create_user("bob"), create_user("carol")


def test_a_search_finds_words_in_any_order_newest_first_with_the_room_and_a_snippet(people):
    alice, bob, _ = people
    room = services.create_room(name="Town Square", created_by=alice)
    post(room, alice, "the deploy failed again on friday")
    post(room, bob, "lunch anyone?")
    post(room, bob, "Friday's deploy is fixed now")
    response = searching(alice, q="deploy friday")
    assert response.status_code == 200
    data = response.json()
    assert [r["message"]["body"] for r in data["results"]] == [
        "Friday's deploy is fixed now",
        "the deploy failed again on friday",
    ]
    assert data["has_more"] is False
    first = data["results"][0]
    assert first["room"] == {"slug": room.slug, "name": "Town Square", "kind": "public"}
    assert first["message"]["author"] == "bob"
    assert "<mark>deploy</mark>" in first["snippet"]


def test_a_phrase_in_double_quotes_matches_as_a_phrase(people):
    alice, *_ = people
    room = services.create_room(name="Town Square", created_by=alice)
    post(room, alice, "the red car is fast")
    post(room, alice, "a car that is red")
    assert found(alice, '"red car"') == ["the red car is fast"]
    assert sorted(found(alice, "red car")) == ["a car that is red", "the red car is fast"]


def test_stemming_on_postgresql_and_prefixes_on_sqlite(people):
    alice, *_ = people
    room = services.create_room(name="Town Square", created_by=alice)
    post(room, alice, "we are deploying the new release")
    if connection.vendor == "postgresql":
        assert found(alice, "deploys") == ["we are deploying the new release"]
    else:
        assert found(alice, "deplo") == ["we are deploying the new release"]


def test_only_rooms_the_user_can_read_now(people):
    alice, bob, carol = people
    secret = private_room(alice, members=[bob])
    post(secret, alice, "the launch code is banana")
    direct = services.open_direct(by=alice, usernames=["carol"])
    post(direct, alice, "banana between alice and carol")
    public = services.create_room(name="Town Square", created_by=carol)
    post(public, carol, "banana bread recipe")

    assert sorted(found(bob, "banana")) == ["banana bread recipe", "the launch code is banana"]
    assert found(carol, "launch") == []  # not a member of the private room
    # A direct room between others is never found, even by a moderator.
    assert found(make_moderator(), "between") == []

    services.remove_member(room=secret, by=alice, username="bob")
    assert found(bob, "banana") == ["banana bread recipe"]  # at once after removal

    services.restrict_user(
        room=public, user=bob, kind=RoomRestriction.Kind.BAN, by=make_moderator("m2")
    )
    assert found(bob, "banana") == []  # banned from the public room


def test_tombstones_hidden_and_system_messages_never_match_and_an_edit_by_its_new_text(people):
    alice, bob, _ = people
    room = private_room(alice, members=[bob])  # "alice added bob" is a notice
    gone = post(room, alice, "zebra one")
    services.delete_message(room=room, message_id=gone.pk, by=alice)
    hidden = post(room, bob, "zebra two")
    services.hide_message(message=hidden, by=make_moderator())
    edited = post(room, alice, "giraffe three")
    services.edit_message(room=room, message_id=edited.pk, by=alice, body="zebra three")
    assert found(alice, "zebra") == ["zebra three"]
    assert found(alice, "giraffe") == []
    assert found(alice, "added") == []  # the notice
    services.restore_message(message=hidden, by=make_moderator("m2"))
    assert found(alice, "zebra") == ["zebra three", "zebra two"]


def test_filters_room_author_and_paging_back(people):
    alice, bob, _ = people
    one = services.create_room(name="One", created_by=alice)
    two = services.create_room(name="Two", created_by=alice)
    for n in range(25):
        post(one if n % 2 else two, alice if n % 3 else bob, f"otter number {n}")
    assert len(found(alice, "otter", room=two.slug)) == 13
    assert set(found(alice, "otter", **{"from": "BOB"})) == {
        f"otter number {n}" for n in range(25) if n % 3 == 0
    }
    first = searching(alice, q="otter").json()
    assert len(first["results"]) == 20 and first["has_more"] is True
    oldest = first["results"][-1]["message"]["id"]
    rest = searching(alice, q="otter", before=oldest).json()
    assert [r["message"]["body"] for r in rest["results"]] == [
        f"otter number {n}" for n in (4, 3, 2, 1, 0)
    ]
    assert rest["has_more"] is False
    assert found(alice, "otter", **{"from": "nobody-at-all"}) == []


def test_bad_requests_are_answered_and_change_nothing(people):
    alice, bob, _ = people
    secret = private_room(alice)
    assert searching(None, q="x").status_code == 401
    for q in ("", "   ", "\t\n"):
        assert searching(alice, q=q).status_code == 400
    assert searching(alice).status_code == 400
    assert searching(bob, q="x", room=secret.slug).status_code == 404  # as for an unknown slug
    assert searching(bob, q="x", room="never-was").status_code == 404
    assert searching(alice, q="x", before="ten").status_code == 400
    assert searching(alice, q="x", after="yesterday").status_code == 400
    # The database's own query syntax is text here.
    for q in ('"', "a OR", "NEAR(a b)", "x:*", "!!!", "' OR 1=1 --", "col:word", "*"):
        assert searching(alice, q=q).status_code == 200, q


def test_snippets_are_escaped(people):
    alice, *_ = people
    room = services.create_room(name="Town Square", created_by=alice)
    post(room, alice, "<script>alert('pwned')</script> kiwi & <b>bold</b> \x01sneaky\x02")
    snippet = searching(alice, q="kiwi").json()["results"][0]["snippet"]
    assert "<script>" not in snippet and "<b>" not in snippet
    # PostgreSQL's ts_headline drops tags from the text it cuts; SQLite keeps them, escaped.
    assert "&amp;" in snippet and "<mark>kiwi</mark>" in snippet
    assert snippet.count("<mark>") == snippet.count("</mark>") == 1


def test_searches_are_rate_limited(people, settings):
    alice, *_ = people
    settings.CHAT_RATE_LIMIT_SEARCH = 3
    assert [searching(alice, q="x").status_code for _ in range(4)] == [200, 200, 200, 429]


def test_the_rebuild_command_makes_the_index_again(people):
    alice, *_ = people
    room = services.create_room(name="Town Square", created_by=alice)
    post(room, alice, "walrus")
    with connection.cursor() as cursor:
        if search.postgres():
            cursor.execute("UPDATE chat_message SET search_vector = NULL")
        else:
            cursor.execute(f"DELETE FROM {search.FTS_TABLE}")
    assert found(alice, "walrus") == []
    call_command("rebuild_search_index", stdout=open(os.devnull, "w"))
    assert found(alice, "walrus") == ["walrus"]


@pytest.mark.skipif(os.environ.get("SEARCH_OTHER_ENGINE") == "1", reason="the inner run")
def test_the_same_tests_on_the_other_database_engine():
    """CI runs the suite on PostgreSQL; this runs this file on SQLite's FTS5 too (and on
    PostgreSQL when the suite runs on SQLite and a DATABASE_URL for it is in TEST_POSTGRES_URL)."""
    env = {**os.environ, "SEARCH_OTHER_ENGINE": "1"}
    if connection.vendor == "postgresql":
        env.pop("DATABASE_URL", None)
    elif os.environ.get("TEST_POSTGRES_URL"):
        env["DATABASE_URL"] = os.environ["TEST_POSTGRES_URL"]
    else:
        pytest.skip("the suite runs on SQLite and no TEST_POSTGRES_URL names a PostgreSQL")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-x"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


def test_the_search_page_lists_results_that_open_the_room_at_the_message(people):
    alice, bob, _ = people
    room = private_room(alice, "Plans", members=[bob])
    message = post(room, alice, "the <b>quarterly</b> numbers are in: https://example.com/q3")
    post(room, alice, "quarterly lunch")
    client = Client()
    client.force_login(bob)
    page = client.get("/search", {"q": "quarterly", "has": "link"})
    assert page.status_code == 200
    html = page.content.decode()
    assert f"/rooms/{room.slug}/?message={message.pk}" in html
    assert "<mark>quarterly</mark>" in html and "<b>quarterly" not in html
    assert "quarterly lunch" not in html  # has=link
    assert 'value="link" checked' in html and f'<option value="{room.slug}"' in html
    assert client.get("/search", {"q": "x", "after": "soon"}).status_code == 400
    assert client.get("/search", {"q": "x", "room": "never-was"}).status_code == 404
    assert client.get("/search").status_code == 200  # the empty form
    assert Client().get("/search", {"q": "x"}).status_code == 302  # to the login page


def test_has_a_file_finds_only_messages_with_attachments(people):
    from django.core.files.uploadedfile import SimpleUploadedFile

    alice, *_ = people
    room = services.create_room(name="Town Square", created_by=alice)
    post(room, alice, "budget without a file")
    upload = services.upload_attachment(
        room=room, by=alice, file=SimpleUploadedFile("budget.txt", b"1,2,3")
    )
    services.post_message(room=room, author=alice, body="budget attached", attach=(upload.pk,))
    assert found(alice, "budget", has="file") == ["budget attached"]
    assert len(found(alice, "budget")) == 2
