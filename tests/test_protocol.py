"""chat/realtime/protocol.py and chat/realtime/events.py on their own: every client frame parsed
or refused, every server frame's exact shape, the codes, and the channel-layer events."""

import json
import logging
from datetime import UTC, datetime, timedelta, timezone

import msgpack
import pytest
from django.contrib.auth.models import User
from django.test import override_settings

from chat.models import Message
from chat.realtime import events, protocol
from chat.realtime.protocol import ChatError, CloseCode, ErrorCode

CREATED = datetime(2026, 11, 25, 10, 21, 53, 123456, tzinfo=UTC)


def message(**fields) -> Message:
    """A Message as the builders see it (nothing here needs the database)."""
    values = {
        "id": 42,
        "author": User(username="omkar"),
        "body": "How are you",
        "created": CREATED,
        "client_id": "c-1",
    }
    return Message(**{**values, **fields})


def tombstone(by: str = "omkar") -> Message:
    return message(
        body="the words that were deleted",
        deleted_at=CREATED + timedelta(seconds=5),
        deleted_by=User(username=by),
    )


def refused(text: str) -> ChatError:
    with pytest.raises(ChatError) as raised:
        protocol.parse(text)
    return raised.value


def frame(**fields) -> str:
    return json.dumps(fields)


# --- parse: valid frames ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        (frame(type="post", body="hi", client_id="c-1"), protocol.Post(body="hi", client_id="c-1")),
        (frame(type="post", body="hi"), protocol.Post(body="hi", client_id=None)),
        (frame(type="post", body="hi", client_id=None), protocol.Post(body="hi", client_id=None)),
        (
            frame(type="post", body="x", client_id="!" + "~" * 63),
            protocol.Post("x", "!" + "~" * 63),
        ),
        (frame(type="edit", id=7, body="new"), protocol.Edit(id=7, body="new")),
        (frame(type="edit", id=2**63 - 1, body=""), protocol.Edit(id=2**63 - 1, body="")),
        (frame(type="delete", id=7), protocol.Delete(id=7)),
        (frame(type="history", before=9, limit=100), protocol.History(before=9, limit=100)),
        (frame(type="history", before=9, limit=1), protocol.History(before=9, limit=1)),
        # §6: replies, reactions, history around a message.
        (
            frame(type="post", body="re", reply_to=5),
            protocol.Post(body="re", client_id=None, reply_to=5),
        ),
        (frame(type="post", body="x", reply_to=None), protocol.Post(body="x", client_id=None)),
        (frame(type="react", id=7, emoji="👍"), protocol.React(id=7, emoji="👍")),
        (
            frame(type="history", around=9, limit=5),
            protocol.History(before=None, around=9, limit=5),
        ),
        (frame(type="typing"), protocol.Typing()),
        (frame(type="typing", extra="ignored"), protocol.Typing()),
    ],
)
def test_each_client_frame_type_parses_to_its_typed_frame(text, parsed):
    assert protocol.parse(text) == parsed


@override_settings(CHAT_HISTORY_PAGE=37)
def test_a_history_request_without_a_limit_asks_for_one_page():
    assert protocol.parse(frame(type="history", before=9)) == protocol.History(before=9, limit=37)


def test_each_frame_refers_to_what_an_error_about_it_names():
    assert protocol.parse(frame(type="post", body="b", client_id="k")).ref == "k"
    assert protocol.parse(frame(type="edit", id=5, body="b")).ref == 5
    assert protocol.parse(frame(type="delete", id=6)).ref == 6
    assert protocol.parse(frame(type="react", id=8, emoji="x")).ref == 8
    assert protocol.parse(frame(type="history", before=9)).ref is None
    assert protocol.parse(frame(type="typing")).ref is None


# --- parse: refused frames ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "",
        "{",
        "[1, 2]",
        '"post"',
        "null",
        "42",
        "[" * 30_000 + "]" * 30_000,  # nesting deeper than the parser recurses
        frame(body="no type"),
        frame(type=None),
        frame(type=7),
        frame(type=["post"]),
        frame(type="shout"),
        frame(type="x" * 33),
        frame(type="POST", body="hi"),
    ],
)
def test_a_frame_that_is_not_a_known_json_object_is_invalid(text):
    error = refused(text)
    assert error.code == ErrorCode.INVALID
    assert error.detail and error.ref is None


@pytest.mark.parametrize(
    ("fields", "ref"),
    [
        ({"body": None, "client_id": "c-1"}, "c-1"),  # the body's error names the post
        ({"client_id": "c-1"}, "c-1"),
        ({"body": 5}, None),
        ({"body": ["hi"]}, None),
        ({"body": "hi", "client_id": ""}, None),
        ({"body": "hi", "client_id": "x" * 65}, None),
        ({"body": "hi", "client_id": "has space"}, None),
        ({"body": "hi", "client_id": "ünïcode"}, None),
        ({"body": "hi", "client_id": "tab\there"}, None),
        ({"body": "hi", "client_id": 12}, None),
        ({"body": "hi", "client_id": True}, None),
    ],
)
def test_a_post_with_a_bad_field_is_invalid(fields, ref):
    error = refused(frame(type="post", **fields))
    assert (error.code, error.ref) == (ErrorCode.INVALID, ref)


BAD_IDS = [None, 0, -1, 2**63, 1.5, "7", True, False, [7], {"id": 7}]


@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.parametrize("kind", ["edit", "delete"])
def test_an_edit_or_delete_needs_a_positive_integer_id(kind, bad):
    error = refused(frame(type=kind, id=bad, body="b"))
    assert error.code == ErrorCode.INVALID


def test_an_edit_without_a_string_body_is_invalid_and_names_the_message():
    for body in (None, 3, {"text": "x"}):
        error = refused(frame(type="edit", id=5, body=body))
        assert (error.code, error.ref) == (ErrorCode.INVALID, 5)
    assert refused(frame(type="edit", id=5)).ref == 5


@pytest.mark.parametrize("bad", BAD_IDS)
def test_a_history_request_needs_a_positive_integer_before(bad):
    assert refused(frame(type="history", before=bad)).code == ErrorCode.INVALID


@pytest.mark.parametrize("limit", [0, -1, 101, 1.0, "5", True, None])
def test_a_history_limit_outside_1_to_the_maximum_is_invalid(limit):
    assert refused(frame(type="history", before=9, limit=limit)).code == ErrorCode.INVALID


@override_settings(CHAT_MAX_FRAME_BYTES=100)
def test_a_frame_over_the_byte_limit_is_too_long_before_it_is_read():
    # Counted in UTF-8 bytes, not characters: 34 three-byte characters are 102 bytes.
    text = '{"type":"post","body":"' + "€" * 34 + '"}'
    assert len(text) < 100
    error = refused(text)
    assert error.code == ErrorCode.TOO_LONG
    # Even one that is not JSON at all: the size is checked first.
    assert refused("x" * 101).code == ErrorCode.TOO_LONG
    assert protocol.parse('{"type":"post","body":"' + "é" * 30 + '"}') == protocol.Post(
        "é" * 30, None
    )


def test_a_frame_with_a_lone_surrogate_is_refused_not_raised():
    # A browser cannot send one, but a raw client can; it must be an error frame, not a crash.
    text = '{"type":"post","body":"\ud800"}'
    parsed = protocol.parse(text)  # the JSON escape is legal; the body check is the service's
    assert parsed == protocol.Post(body="\ud800", client_id=None)
    assert refused('{"type":"post","body":"x"}\ud800').code == ErrorCode.INVALID


# --- server frames: exact shapes ----------------------------------------------------------------


def test_encode_is_compact_utf8_not_ascii_escapes():
    assert protocol.encode({"a": "é 😀", "b": [1, None]}) == '{"a":"é 😀","b":[1,null]}'


def test_times_are_iso_8601_utc_with_milliseconds():
    assert protocol.iso(CREATED) == "2026-11-25T10:21:53.123Z"
    east = datetime(2026, 11, 25, 12, 21, 53, 999999, tzinfo=timezone(timedelta(hours=2)))
    assert protocol.iso(east) == "2026-11-25T10:21:53.999Z"
    assert protocol.iso(None) is None


def test_the_message_object_has_exactly_the_contract_fields():
    assert protocol.message_object(message(edited=CREATED + timedelta(minutes=1))) == {
        "id": 42,
        "author": "omkar",
        "body": "How are you",
        "created": "2026-11-25T10:21:53.123Z",
        "edited": "2026-11-25T10:22:53.123Z",
        "deleted": False,
        "deleted_by": None,
        "system": False,  # §4 membership notices
        # §6 (a message built in memory: rendered on the fly, nobody reacted to it)
        "html": "<p>How are you</p>\n",
        "mentions": [],
        "reply_to": None,
        "reactions": [],
        "attachments": [],  # §8 is not built: always empty
    }


@pytest.mark.parametrize(
    "text",
    [
        frame(type="react", id=7),
        frame(type="react", id=7, emoji=1),
        frame(type="react", id="7", emoji="👍"),
        frame(type="react", emoji="👍"),
        frame(type="post", body="x", reply_to="5"),
        frame(type="post", body="x", reply_to=0),
        frame(type="history", around=True),
        frame(type="history", around=9, before=9),
        frame(type="history", around=9, limit=0),
    ],
)
def test_a_malformed_section_6_frame_is_invalid(text):
    assert refused(text).code == ErrorCode.INVALID


@pytest.mark.parametrize("by", ["omkar", "mod"])
def test_a_tombstone_never_carries_its_text(by):
    gone = tombstone(by)
    obj = protocol.message_object(gone)
    assert obj["body"] == ""
    assert (obj["deleted"], obj["deleted_by"]) == (True, by)
    for text in (
        protocol.message_frame(gone, 3, created=False),
        protocol.history_frame([gone], has_more=False),
        protocol.ready_frame(
            room={"slug": "r", "name": "R"},
            username="u",
            messages=protocol.encode_messages([gone]),
            has_more=False,
            cursor=3,
            online=[],
            reset=True,
        ),
    ):
        assert "deleted" in text and "the words" not in text


def test_only_the_creating_change_echoes_the_client_id():
    created = json.loads(protocol.message_frame(message(), 1, created=True))
    assert created == {
        "type": "message",
        "message": protocol.message_object(message()),
        "cursor": 1,
        "client_id": "c-1",
    }
    later = json.loads(protocol.message_frame(message(), 2, created=False))
    assert (later["cursor"], later["client_id"]) == (2, None)
    # A post sent without a client_id is stored with "" and echoes null, not "".
    anonymous = json.loads(protocol.message_frame(message(client_id=""), 1, created=True))
    assert anonymous["client_id"] is None


def test_the_ready_frame():
    text = protocol.ready_frame(
        room={"slug": "general-chat", "name": "General Chat"},
        username="alice",
        messages=protocol.encode_messages([message(), tombstone()]),
        has_more=True,
        cursor=17,
        online=["alice", "bob"],
        reset=False,
    )
    assert json.loads(text) == {
        "type": "ready",
        "room": {"slug": "general-chat", "name": "General Chat"},
        "user": {"username": "alice"},
        "messages": [protocol.message_object(message()), protocol.message_object(tombstone())],
        "has_more": True,
        "cursor": 17,
        "online": ["alice", "bob"],
        "reset": False,
    }


def test_the_ack_history_presence_and_typing_frames():
    assert json.loads(protocol.ack_frame("c-1", 42)) == {
        "type": "ack",
        "client_id": "c-1",
        "id": 42,
    }
    assert json.loads(protocol.history_frame([message()], has_more=False)) == {
        "type": "history",
        "messages": [protocol.message_object(message())],
        "has_more": False,
    }
    assert json.loads(protocol.history_frame([], has_more=False))["messages"] == []
    assert json.loads(protocol.presence_frame(["a", "b"], joined="b")) == {
        "type": "presence",
        "online": ["a", "b"],
        "joined": "b",
        "left": None,
    }
    assert json.loads(protocol.presence_frame(["a"], left="b"))["left"] == "b"
    # A batch of joins and leaves: the list only.
    assert json.loads(protocol.presence_frame(["a", "c"])) == {
        "type": "presence",
        "online": ["a", "c"],
        "joined": None,
        "left": None,
    }
    assert json.loads(protocol.typing_frame("ünï")) == {"type": "typing", "user": "ünï"}
    assert "ünï" in protocol.typing_frame("ünï")


def test_an_error_frame_carries_retry_after_only_when_the_error_has_one():
    plain = ChatError(ErrorCode.FORBIDDEN, "You can only edit your own messages.", ref=7)
    assert json.loads(protocol.error_frame(plain)) == {
        "type": "error",
        "code": "forbidden",
        "detail": "You can only edit your own messages.",
        "ref": 7,
    }
    slow = ChatError(ErrorCode.RATE_LIMITED, "Slow down.", ref="c-9", retry_after=1.25)
    assert json.loads(protocol.error_frame(slow)) == {
        "type": "error",
        "code": "rate_limited",
        "detail": "Slow down.",
        "ref": "c-9",
        "retry_after": 1.25,
    }
    assert json.loads(protocol.error_frame(ChatError(ErrorCode.INVALID, "x")))["ref"] is None


def test_the_close_and_error_codes_are_those_of_the_contract():
    assert {code.name: int(code) for code in CloseCode} == {
        "NOT_LOGGED_IN": 4401,
        "FORBIDDEN": 4403,
        "NO_SUCH_ROOM": 4404,
        "TOO_MANY_SOCKETS": 4429,
    }
    assert {str(code) for code in ErrorCode} == {
        "invalid",
        "empty",
        "too_long",
        "not_found",
        "forbidden",
        "rate_limited",
        "muted",
        "unavailable",
        "too_many",  # §6: a message's 21st distinct reaction
    }
    # Encoded as plain JSON values, not enum reprs.
    assert protocol.encode({"code": ErrorCode.MUTED, "close": CloseCode.FORBIDDEN}) == (
        '{"code":"muted","close":4403}'
    )


# --- channel-layer events (chat/realtime/events.py) ---------------------------------------------


def presence_frame_left() -> str:
    return protocol.presence_frame([], left="ünï")


EVENTS = [
    events.RoomChanged(
        room=3, cursor=17, frame=protocol.message_frame(message(), 17, created=True)
    ),
    events.PresenceChanged(room=3, frame=protocol.presence_frame(["a"], joined="a")),
    events.UserTyping(room=3, user="ünï", frame=protocol.typing_frame("ünï")),
    events.UserKicked(room=3, user="bob", code=CloseCode.FORBIDDEN),
    events.RoomClosed(room=3, code=CloseCode.NO_SUCH_ROOM),
    events.InboxChanged(user=3, room=3),
    events.Notified(user=3, frame=protocol.room_removed_frame("r")),
    events.SessionsChanged(user=3),
    events.PresenceBatch(
        changes=[[3, protocol.presence_frame(["a"], joined="a")], [4, presence_frame_left()]]
    ),
]


def test_every_event_type_is_in_the_samples():
    assert {type(event) for event in EVENTS} == set(events.EVENTS.values())


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.type)
def test_an_event_survives_the_redis_layers_msgpack_round_trip(event):
    sent = events.message(event)
    assert sent["type"] == event.type
    assert (sent.get("room") or sent.get("user") or sent["changes"][0][0]) == 3
    # channels-redis packs with msgpack, which carries no datetime or object: only primitives.
    assert _primitives_only(sent), sent
    received = msgpack.unpackb(msgpack.packb(sent), raw=False)
    assert events.parse(received) == event
    assert events.parse(sent) == event


@pytest.mark.parametrize(
    "received",
    [
        {"type": "room.rename", "room": 3},
        {"room": 3, "cursor": 1, "frame": "{}"},
        {"type": None},
        # Unhashable: one such message (a foreign or future publisher on the same Redis) used to
        # raise out of parse() and end the hub's reader task for the whole process.
        {"type": ["room.change"], "room": 3},
        {"type": "room.change", "room": 3, "frame": "{}"},  # no cursor
        {"type": "room.kick", "room": 3, "user": "bob"},  # no code
    ],
)
def test_an_unknown_or_incomplete_event_is_none_with_a_warning(received, caplog):
    with caplog.at_level(logging.WARNING, logger="chat.realtime.events"):
        assert events.parse(received) is None
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


def test_each_event_goes_to_its_rooms_group():
    assert events.group_name(3) == "room.3"


def _primitives_only(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _primitives_only(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_primitives_only(v) for v in value)
    return value is None or isinstance(value, str | int | float | bool)


def test_connects_at_the_same_cursor_share_one_read_of_the_latest_page(db):
    """selectors.latest_page: a crowd connecting to a quiet room reads and encodes its latest
    page once; any change (it moves the cursor) makes the next connect read it again."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from chat import selectors, services
    from tests.helpers import create_room, create_user

    alice = create_user("alice")
    room = create_room("Crowd", alice)
    services.post_message(room=room, author=alice, body="first")
    room.refresh_from_db()
    first = selectors.ready_state(room, None)
    with CaptureQueriesContext(connection) as queries:
        again = selectors.ready_state(room, None)
    assert again == first and len(queries) == 0
    services.post_message(room=room, author=alice, body="second")
    room.refresh_from_db()
    moved = selectors.ready_state(room, None)
    assert [m["body"] for m in json.loads(moved.messages)] == ["first", "second"]
