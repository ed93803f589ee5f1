"""Thousands of generated malformed frames against a live consumer (Hypothesis)."""

import json
import logging

import pytest
from channels.db import database_sync_to_async
from django.test.utils import override_settings
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from chat.models import Message, Room
from tests.helpers import close_all, create_room, create_user, join

pytestmark = pytest.mark.django_db(transaction=True)

FRAMES = 2000

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
not_an_id = st.one_of(
    st.text(max_size=20),
    st.floats(),
    st.booleans(),
    st.integers(max_value=0),
    st.integers(min_value=2**63),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
no_such_id = st.integers(min_value=10**12, max_value=2**63 - 1)
not_a_client_id = st.one_of(
    st.integers(),
    st.booleans(),
    st.just(""),
    st.text(alphabet=st.characters(codec="ascii", min_codepoint=33), min_size=65, max_size=200),
    st.text(alphabet=st.characters(min_codepoint=128), min_size=1, max_size=10),
    st.text(alphabet=" \t\n", min_size=1, max_size=5),
)
blank = st.text(alphabet=" \t\n\r\u00a0\u2003", max_size=20)
invisible = "\u200b\u200c\u200d\u2060\ufeff\u2063\u202e\u2066\u3164 \t"
known = {"post", "edit", "delete", "history", "typing"}


def obj(**fields):
    return st.fixed_dictionaries(fields).map(json.dumps)


def not_a_frame(text: str) -> bool:
    try:
        value = json.loads(text)
    except ValueError:
        return True
    return not isinstance(value, dict)


malformed = st.one_of(
    st.text(min_size=1, max_size=200).filter(not_a_frame),
    json_values.filter(lambda v: not isinstance(v, dict)).map(json.dumps),
    st.dictionaries(st.text(max_size=8).filter(lambda k: k != "type"), json_values, max_size=3).map(
        json.dumps
    ),
    obj(type=st.text(max_size=40).filter(lambda t: t not in known)),
    obj(type=st.one_of(st.integers(), st.none(), st.booleans(), st.lists(st.text(), max_size=2))),
    obj(type=st.just("post"), body=json_values.filter(lambda v: not isinstance(v, str))),
    obj(type=st.just("post"), body=blank),
    obj(type=st.just("post"), body=st.just("x" * 4001)),
    # NUL or a lone surrogate (PostgreSQL cannot store either), only invisible characters, or
    # marks stacked past CHAT_MAX_COMBINING.
    obj(
        type=st.just("post"),
        body=st.tuples(
            st.text(max_size=10), st.sampled_from(["\x00", "\ud800", "\udbff", "\udfff"])
        ).map("".join),
    ),
    obj(type=st.just("post"), body=st.text(alphabet=invisible, min_size=1, max_size=10)),
    obj(
        type=st.just("post"),
        body=st.text(alphabet="\u0300\u0336\u20dd", min_size=9).map("a".__add__),
    ),
    obj(type=st.just("post"), body=st.text(min_size=1, max_size=20), client_id=not_a_client_id),
    obj(type=st.just("edit"), id=not_an_id, body=st.text(max_size=10)),
    obj(type=st.just("edit"), id=no_such_id, body=st.text(min_size=1, max_size=10)),
    obj(type=st.just("edit"), id=no_such_id),
    obj(type=st.just("delete"), id=not_an_id),
    obj(type=st.just("delete"), id=no_such_id),
    obj(type=st.just("history"), before=not_an_id),
    obj(
        type=st.just("history"),
        before=st.integers(min_value=1, max_value=10**6),
        limit=st.one_of(st.integers(max_value=0), st.integers(min_value=101), st.text(max_size=3)),
    ),
    st.integers(min_value=1, max_value=20000).map(lambda n: "[" * n + "]" * n),
    st.just('{"type": "post", "body": "' + "y" * 70000 + '"}'),
)


def generate(strategy, count: int) -> list:
    found = []

    @settings(
        max_examples=count,
        phases=[Phase.generate],
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(strategy)
    def collect(value):
        found.append(value)

    collect()
    return found


@database_sync_to_async
def state():
    return Message.objects.count(), list(Room.objects.values_list("cursor", flat=True))


# Edits and deletions of missing messages would soon be answered `rate_limited` (the change
# limit); this test is about validation, so the limit is out of its way.
@override_settings(CHAT_RATE_LIMIT_CHANGES=10 * FRAMES)
async def test_malformed_frames_each_get_an_error_and_change_nothing(caplog):
    frames = generate(malformed, FRAMES)
    assert len(frames) >= FRAMES
    alice = await database_sync_to_async(create_user)("alice")
    room = await database_sync_to_async(create_room)("Fuzz", alice)
    socket = await join(alice, room.slug)
    before = await state()
    caplog.set_level(logging.WARNING)
    codes: dict[str, int] = {}
    try:
        for text in frames:
            await socket.send_text(text)
            answer = await socket.receive_type("error", "message", "history", "ack", "ready")
            assert answer["type"] == "error", (text[:200], answer)
            codes[answer["code"]] = codes.get(answer["code"], 0) + 1
        for blob in (b"\x00", b"\xff" * 100, json.dumps({"type": "post"}).encode()):
            await socket.communicator.send_to(bytes_data=blob)
            assert (await socket.receive_type("error"))["code"] == "invalid"
        assert await state() == before
        assert set(codes) <= {"invalid", "empty", "too_long", "not_found"}
        assert codes.get("invalid", 0) > FRAMES // 2
        problems = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        assert not problems, [r.getMessage() for r in problems[:5]]
        # The socket is still open and a valid post goes through.
        await socket.send({"type": "post", "body": "still fine", "client_id": "after-fuzz"})
        frame = await socket.receive_type("message")
        assert frame["message"]["body"] == "still fine"
        print(f"\nfuzz: {len(frames)} frames, answers {dict(sorted(codes.items()))}")
    finally:
        await close_all()
