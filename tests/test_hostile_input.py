"""What an outside probe sent (issue 14) and what each now gets: a clear refusal, nothing stored,
nothing broadcast, no traceback in the log. Runs on whichever database the suite uses."""

import asyncio
import logging

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.test import Client
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chat import services
from chat.models import Change, Message, Room
from chat.realtime.consumers import RoomConsumer
from tests.helpers import create_room, create_user, join, session_cookie_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sockets_closed")]


@pytest.fixture
def no_errors_logged(caplog):
    """Fails the test if anything logged an ERROR (a traceback, a 500) while it ran."""
    caplog.set_level(logging.WARNING)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


@database_sync_to_async
def counts() -> tuple[int, int]:
    return Message.objects.count(), Change.objects.count()


@database_sync_to_async
def body_of(message_id: int) -> str:
    return Message.objects.get(pk=message_id).body


async def post(socket, body: str, client_id: str = "c-1") -> dict:
    """Post and return the answer meant for this post: its `message` frame or an `error`."""
    await socket.send({"type": "post", "body": body, "client_id": client_id})
    return await socket.receive_type("message", "error")


# --- edits and deletions are rate-limited ----------------------------------------------------


async def test_edits_beyond_the_change_limit_are_rate_limited_and_change_nothing(
    alice, bob, room, settings
):
    settings.CHAT_RATE_LIMIT_CHANGES = 5
    settings.CHAT_RATE_LIMIT_CHANGES_WINDOW = 10
    a = await join(alice, room.slug)
    a2 = await join(alice, room.slug)  # the limit counts all of a user's connections
    b = await join(bob, room.slug)
    posted = (await post(a, "draft"))["message"]
    await b.receive_type("message")
    for i in range(5):
        await (a if i % 2 else a2).send({"type": "edit", "id": posted["id"], "body": f"v{i}"})
        assert (await b.receive_type("message"))["message"]["body"] == f"v{i}"
    await b.drain()
    before = await counts()

    await a.send({"type": "edit", "id": posted["id"], "body": "3.9 KB of spam " * 260})
    error = await a.receive_type("error")
    assert error["code"] == "rate_limited"
    assert error["ref"] == posted["id"]
    assert 0 < error["retry_after"] <= 10
    assert "edits and deletions" in error["detail"]
    # Deleting counts against the same limit.
    await a.send({"type": "delete", "id": posted["id"]})
    assert (await a.receive_type("error"))["code"] == "rate_limited"

    assert await counts() == before  # no Change row, no message touched
    assert await body_of(posted["id"]) == "v4"
    assert await b.nothing(0.5)  # nothing broadcast
    # Posts have their own limit (per room, CHAT_RATE_LIMIT_POSTS) and still flow.
    assert (await post(a, "still talking", "c-2"))["type"] == "message"


def test_every_frame_a_client_sends_counts_against_a_rate_limit():
    """A new client frame (react, report) must name its limit in services.RATE_LIMITS (typing
    has its own once-per-3-s rule)."""
    frames = {cls.__name__.lower() for cls in RoomConsumer.handlers} - {"typing"}
    assert {"post", "edit", "delete", "history"} <= frames
    assert frames <= set(services.RATE_LIMITS), frames - set(services.RATE_LIMITS)


# --- text the database cannot hold -----------------------------------------------------------


@pytest.mark.parametrize("body", ["a\x00b", "\x00", "lone \ud800 high", "lone \udfff low"])
async def test_nul_or_a_lone_surrogate_in_a_body_is_invalid_and_stores_nothing(
    alice, room, body, no_errors_logged
):
    a = await join(alice, room.slug)
    error = await post(a, body, "bad-1")
    assert (error["type"], error["code"], error["ref"]) == ("error", "invalid", "bad-1")
    assert "NUL" in error["detail"]
    assert await counts() == (0, 0)

    posted = (await post(a, "fine", "ok-1"))["message"]  # the socket stays open and usable
    await a.send({"type": "edit", "id": posted["id"], "body": body})
    error = await a.receive_type("error")
    assert (error["code"], error["ref"]) == ("invalid", posted["id"])
    assert await body_of(posted["id"]) == "fine"
    assert await counts() == (1, 1)


def test_a_room_name_with_nul_is_refused_by_the_form(no_errors_logged):
    client = Client()
    client.force_login(create_user("alice"))
    response = client.post("/rooms/", {"name": "bad\x00name"})
    assert response.status_code == 400
    assert not Room.objects.exists()


def test_a_lobby_search_with_nul_is_answered_not_a_500(no_errors_logged):
    alice = create_user("alice")
    create_room("General Chat", alice)
    client = Client()
    client.force_login(alice)
    response = client.get("/", {"q": "Gene\x00ral"})
    assert response.status_code == 200
    assert b"General Chat" in response.content


# --- invisible, stacked and direction-changing characters ------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "\u200b",  # zero-width space
        "\u200b\u200c\u200d\u2060\ufeff",  # ZWSP, ZWNJ, ZWJ, word joiner, BOM
        " \u200b\n\u2063\t\u00a0",  # with white space and an invisible separator
        "\u202e\u2066\u200f",  # bidi controls only
        "\U000e0041\U000e007f",  # tag characters
        "\u3164\u115f",  # Hangul fillers
        "\u2800",  # Braille blank
        "\ufe0f\u034f",  # a variation selector and the combining grapheme joiner
    ],
)
async def test_a_body_of_only_invisible_characters_is_empty(alice, room, body):
    a = await join(alice, room.slug)
    error = await post(a, body)
    assert (error["type"], error["code"], error["ref"]) == ("error", "empty", "c-1")
    assert await counts() == (0, 0)


@pytest.mark.parametrize(
    "body",
    [
        "e" + "\u0301" * 9,  # nine acute accents on one letter
        "zalgo " + "\u0336\u0337" * 1900,  # the probe: thousands of marks on one letter
        "a" + "\u0301\u200d" * 9,  # joiners between the marks do not reset the count
    ],
)
async def test_more_stacked_combining_marks_than_allowed_are_invalid(alice, room, body):
    a = await join(alice, room.slug)
    error = await post(a, body)
    assert (error["type"], error["code"], error["ref"]) == ("error", "invalid", "c-1")
    assert "combining marks" in error["detail"]
    assert await counts() == (0, 0)


@pytest.mark.parametrize(
    "body",
    [
        "Ti\u1ebfng Vi\u1ec7t c\u00f3 d\u1ea5u",  # Vietnamese (precomposed)
        "Tie\u0302\u0301ng Vie\u0323\u0302t",  # Vietnamese (decomposed: two marks)
        "\u0928\u092e\u0938\u094d\u0924\u0947",  # Hindi
        "\u05d1\u05bc\u05b0\u05e8\u05b5\u05d0\u05e9\u05b4\u05c1\u0596\u05d9\u05ea",  # Hebrew
        "\u0e01\u0e34\u0e48\u0e07",  # Thai
        "\U0001f468\u200d\U0001f469\u200d\U0001f467 1\ufe0f\u20e3 \u2764\ufe0f",  # emoji
        "e" + "\u0301" * 8,  # exactly the limit
        "a\u200bb",  # visible text with a zero-width space
        "\u05e9\u05dc\u05d5\u05dd \u202bquoted\u202c",  # right-to-left text with an embedding
    ],
)
async def test_real_scripts_and_emoji_are_stored_unchanged(alice, room, body):
    a = await join(alice, room.slug)
    frame = await post(a, body)
    assert frame["type"] == "message", frame
    assert frame["message"]["body"] == body
    assert await body_of(frame["message"]["id"]) == body


@pytest.mark.parametrize(
    "name",
    [
        "invoice\u202egpj.exe",  # right-to-left override
        "left\u2067right\u2069",  # isolate
        "mark\u200fed",  # right-to-left mark
        "arabic\u061cmark",
        "o" + "\u0308" * 9,
    ],
)
def test_room_names_with_bidi_controls_or_stacked_marks_are_refused(name, no_errors_logged):
    client = Client()
    client.force_login(create_user("alice"))
    response = client.post("/rooms/", {"name": name})
    assert response.status_code == 400
    assert not Room.objects.exists()
    assert b"text-direction" in response.content or b"combining marks" in response.content


# --- inputs that answered 500 ----------------------------------------------------------------


def test_a_room_name_that_expands_past_the_slug_column_gets_a_cut_slug(no_errors_logged):
    """80 x U+FB03 is 80 characters; its slug (NFKD: "ffi") would be 240, the column holds 100."""
    client = Client()
    client.force_login(create_user("alice"))
    response = client.post("/rooms/", {"name": "\ufb03" * 80})
    assert response.status_code == 302
    room = Room.objects.get()
    assert room.slug == "ffi" * 33 + "f"
    assert response["Location"] == f"/rooms/{room.slug}/"
    # Another name with the same first 100 slug characters is answered on the form.
    response = client.post("/rooms/", {"name": "\ufb03" * 79 + "x"})
    assert response.status_code == 400
    assert b"already exists" in response.content
    assert Room.objects.count() == 1


def test_deeply_nested_json_to_the_read_marker_is_a_400(no_errors_logged):
    alice = create_user("alice")
    room = create_room("General Chat", alice)
    client = Client(enforce_csrf_checks=False)
    client.force_login(alice)
    for body in ["[" * 100_000, '{"last_read_id": ' + "[" * 50_000 + "]" * 50_000 + "}"]:
        response = client.post(f"/rooms/{room.slug}/read", body, content_type="application/json")
        assert response.status_code == 400


@pytest.mark.parametrize(
    "path",
    ["/ws/rooms/%2e%2e/", "/ws/rooms/%C3%BCn%C3%AF/", "/ws/rooms/a/b/", "/ws/elsewhere"],
)
async def test_socket_paths_that_name_no_room_close_with_4404_without_a_traceback(
    daphne_factory, path
):
    server = daphne_factory(DJANGO_LOG_LEVEL="INFO")
    cookie = await database_sync_to_async(lambda: session_cookie_for(create_user("alice")))()
    async with connect(
        f"{server.ws_url}{path}",
        additional_headers={
            "Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}",
            "Origin": server.url,
        },
        open_timeout=10,
    ) as connection:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(connection.recv(), 10)
    assert closed.value.rcvd.code == 4404
    await asyncio.sleep(0.2)  # let the server write its log
    log = server.output()
    assert "Traceback" not in log and "No route found" not in log, log
    assert '"level": "ERROR"' not in log, log
