"""chat/realtime/hub.py on its own, with fake sockets behind its `Socket` interface: the feed's
lifecycle, each event's handling, gap fill from the database, presence batching, resync and the
session watcher. Real Redis (the layer and presence), real database, no WebSocket."""

import asyncio
import json
import time
import uuid

import pytest
from channels.db import database_sync_to_async
from django.contrib.sessions.models import Session
from django.utils import timezone

from chat import services
from chat.models import Room
from chat.realtime import events, protocol, sessions
from chat.realtime.events import group_name
from chat.realtime.hub import Hub
from chat.realtime.protocol import CloseCode
from chat.realtime.transport import Outgoing
from chat.shared_state import shared_state
from tests.helpers import create_room, session_cookie_for

pytestmark = pytest.mark.django_db(transaction=True)

db = database_sync_to_async


class FakeSocket:
    """A socket as the hub sees it: records the frames it is sent and how it is closed.

    `deliver` reads from its feed exactly as RoomConsumer.deliver does: strictly sent+1, sent+2,
    ... from the feed's buffer, or from the database when it is behind the buffer.
    """

    def __init__(self, user, *, session_key: str | None = None) -> None:
        self.user_id = user.pk
        self.username = user.get_username()
        self.conn_id = uuid.uuid4().hex
        self.session_key = session_key
        self.present = False
        self.counted = False
        self.epoch = 0
        self.room_id: int | None = None
        self.feed = None
        self.sent: int | None = None
        self.delivering = False
        self.frames: list[dict] = []
        self.texts: list[str] = []
        self.closes: list[int] = []

    async def open(self, hub: Hub, room_id: int, *, ready_cursor: int | None = None):
        """Attach as the consumer does, with `ready` having told the client `ready_cursor`
        (default: the feed's cursor), then send what came after it."""
        self.room_id = room_id
        self.feed = await hub.attach(room_id, self)
        self.sent = self.feed.cursor if ready_cursor is None else ready_cursor
        await self.deliver()
        return self

    async def deliver(self) -> None:
        # The consumer's own path: the feed's delivery loop, this socket's send_frame.
        await self.feed.deliver_to(self)

    async def send_frame(self, frame: Outgoing) -> None:
        self._record(frame)

    async def send_live(self, frame: Outgoing) -> None:
        if self.sent is not None:
            self._record(frame)

    async def close(self, code: int) -> None:
        # The real socket leaves the hub later, from its own task (disconnect); so does this one
        # (the hub fixture detaches every socket at the end).
        self.closes.append(int(code))
        self.sent = None

    def _record(self, frame: Outgoing) -> None:
        self.texts.append(frame.text)
        self.frames.append(json.loads(frame.text))

    def of_type(self, kind: str) -> list[dict]:
        return [frame for frame in self.frames if frame["type"] == kind]

    @property
    def cursors(self) -> list[int]:
        return [frame["cursor"] for frame in self.of_type("message")]


@pytest.fixture
async def hub(settings):
    # The periodic tasks stay out of the way; tests call resync and the watcher themselves.
    settings.CHAT_RESYNC_INTERVAL = 60
    settings.CHAT_SESSION_CHECK_INTERVAL = 60
    hub = Hub()
    yield hub
    for room_id, feed in list(hub.feeds.items()):
        for socket in list(feed.sockets):
            await hub.detach(room_id, socket)
    assert not hub.tasks


@pytest.fixture
def doorbells(monkeypatch) -> list[events.RoomChanged]:
    """The RoomChanged events services would publish after each commit, kept here instead, so
    each test rings them in the order it wants (or never)."""
    rung: list[events.RoomChanged] = []
    monkeypatch.setattr(
        "chat.services.publish_change",
        lambda room, cursor, frame, epoch=0: rung.append(
            events.RoomChanged(room, cursor, frame, epoch=epoch)
        ),
    )
    return rung


async def post(room, author, body: str, client_id: str | None = None):
    return (
        await db(services.post_message)(room=room, author=author, body=body, client_id=client_id)
    ).message


async def until(condition, timeout: float = 5) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


# --- attach and detach ----------------------------------------------------------------------------


async def test_the_hubs_tasks_start_with_its_first_room_and_stop_with_its_last(hub, alice, room):
    other = await db(create_room)("Other", alice)
    assert hub.tasks == []
    a = await FakeSocket(alice).open(hub, room.pk)
    tasks = list(hub.tasks)
    assert sorted(task.get_name() for task in tasks) == ["hub-read", "hub-sessions", "hub-tick"]
    # The room's group, and every hub's group for events about sockets anywhere (sessions).
    assert hub.subscribed == {group_name(room.pk), events.HUBS_GROUP} and hub.channel

    b = await FakeSocket(alice).open(hub, other.pk)
    c = await FakeSocket(alice).open(hub, room.pk)
    assert hub.tasks == tasks and not any(task.done() for task in tasks)
    assert a.feed is c.feed and a.feed.sockets == {a, c}
    assert hub.subscribed == {group_name(room.pk), group_name(other.pk), events.HUBS_GROUP}

    await hub.detach(room.pk, a)
    assert room.pk in hub.feeds
    await hub.detach(room.pk, c)
    assert room.pk not in hub.feeds
    assert hub.subscribed == {group_name(other.pk), events.HUBS_GROUP}
    assert hub.tasks == tasks  # another room still here

    await hub.detach(other.pk, b)
    assert (hub.feeds, hub.subscribed, hub.tasks) == ({}, set(), [])
    assert all(task.done() for task in tasks)
    await hub.detach(other.pk, b)  # twice: nothing

    again = await FakeSocket(alice).open(hub, room.pk)
    assert hub.tasks and not set(hub.tasks) & set(tasks)
    assert again.feed.sockets == {again}


async def test_the_hubs_tasks_end_when_its_last_room_goes_even_mid_read(hub, alice, room):
    """A room that empties just after it filled, until the reader is cancelled in the middle of
    its blocking read. redis-py's asyncio client then keeps reading to the end of that read
    (up to channels-redis's 5 s) and may raise its own TimeoutError instead of the cancel: the
    reader once took that for a failed read and went on reading for the life of the process."""
    loop = asyncio.get_running_loop()
    for attempt in range(100):
        socket = await FakeSocket(alice).open(hub, room.pk)
        tasks = list(hub.tasks)
        await asyncio.sleep(0.001 * (attempt % 5))  # the reader is in its blocking read
        started = loop.time()
        await hub.detach(room.pk, socket)
        if loop.time() - started > 1:  # the cancel landed in the read: detach waited for it
            await asyncio.wait(tasks, timeout=10)
            assert [task.get_name() for task in tasks if not task.done()] == []
            break
        assert all(task.done() for task in tasks)


async def test_a_feed_starts_at_the_rooms_cursor_and_a_socket_catches_up_from_its_ready(
    hub, doorbells, alice, room
):
    for i in range(3):
        await post(room, alice, f"m{i}")
    late = await FakeSocket(alice).open(hub, room.pk, ready_cursor=1)
    assert late.feed.cursor == 3
    assert late.cursors == [2, 3]  # behind the empty buffer: read from the database
    assert [f["message"]["body"] for f in late.of_type("message")] == ["m1", "m2"]


# --- the doorbell: RoomChanged --------------------------------------------------------------------


async def test_a_change_in_order_extends_the_feed_with_the_events_own_frame(
    hub, doorbells, alice, bob, room
):
    a = await FakeSocket(alice).open(hub, room.pk)
    b = await FakeSocket(bob).open(hub, room.pk)
    await post(room, alice, "hello", client_id="c-1")
    (rung,) = doorbells
    # The writer serialized the frame once; the hub hands out that text, unread from the database.
    marked = events.RoomChanged(rung.room, rung.cursor, rung.frame.replace("hello", "hello (bell)"))
    await hub.handle(marked)
    for socket in (a, b):
        assert socket.texts == [marked.frame]
        assert (socket.cursors, socket.frames[0]["client_id"]) == ([1], "c-1")
    assert a.feed.cursor == 1 and [c for c, _ in a.feed.frames] == [1]


async def test_a_skipped_cursor_is_filled_from_the_database_without_a_gap(
    hub, doorbells, alice, bob, room
):
    a = await FakeSocket(alice).open(hub, room.pk)
    b = await FakeSocket(bob).open(hub, room.pk)
    first = await post(room, alice, "frist", client_id="c-1")
    await db(services.edit_message)(room=room, message_id=first.pk, by=alice, body="first")
    await post(room, bob, "second", client_id="c-2")
    await db(services.delete_message)(room=room, message_id=first.pk, by=alice)
    assert [bell.cursor for bell in doorbells] == [1, 2, 3, 4]

    await hub.handle(doorbells[-1])  # cursors 1..3 never rang
    for socket in (a, b):
        assert socket.cursors == [1, 2, 3, 4]
        created, edit, second, delete = socket.of_type("message")
        # Read from the database, each message is in its current state: "first" is a tombstone.
        assert (created["client_id"], created["message"]["deleted"]) == ("c-1", True)
        assert (edit["client_id"], edit["message"]["body"]) == (None, "")
        assert (second["client_id"], second["message"]["body"]) == ("c-2", "second")
        assert delete["message"]["deleted_by"] == "alice"

    # The late doorbells of changes already delivered change nothing.
    for bell in doorbells[:3]:
        await hub.handle(bell)
    await hub.handle(doorbells[-1])
    assert a.cursors == b.cursors == [1, 2, 3, 4]

    # A socket that opens now from an old `ready` gets the feed's buffer, in order.
    c = await FakeSocket(bob).open(hub, room.pk, ready_cursor=0)
    assert c.texts == a.texts


async def test_doorbells_out_of_order_still_give_every_socket_one_ordered_stream(
    hub, doorbells, alice, room
):
    a = await FakeSocket(alice).open(hub, room.pk)
    for i in range(5):
        await post(room, alice, f"m{i}")
    for index in (1, 0, 4, 2, 3):
        await hub.handle(doorbells[index])
    assert a.cursors == [1, 2, 3, 4, 5]
    assert [f["message"]["body"] for f in a.of_type("message")] == [f"m{i}" for i in range(5)]


async def test_an_event_for_a_room_not_held_here_is_ignored(hub, doorbells, alice, room):
    other = await db(create_room)("Other", alice)
    a = await FakeSocket(alice).open(hub, room.pk)
    await post(other, alice, "elsewhere")
    await hub.handle(doorbells[0])
    await hub.handle(events.RoomClosed(room=other.pk, code=CloseCode.NO_SUCH_ROOM))
    assert (a.frames, a.closes, other.pk in hub.feeds) == ([], [], False)


async def test_a_real_doorbell_on_the_redis_layer_reaches_the_socket(hub, alice, room):
    a = await FakeSocket(alice).open(hub, room.pk)
    await post(room, alice, "rung for real")
    await until(lambda: a.cursors == [1])
    assert a.frames[0]["message"]["body"] == "rung for real"


# --- typing, kicks, closed rooms ------------------------------------------------------------------


async def test_typing_reaches_everyone_in_the_room_but_the_typist(hub, alice, bob, room):
    a, a2 = FakeSocket(alice), FakeSocket(alice)
    b = FakeSocket(bob)
    for socket in (a, a2, b):
        await socket.open(hub, room.pk)
    await hub.handle(
        events.UserTyping(room=room.pk, user="alice", frame=protocol.typing_frame("alice"))
    )
    assert b.frames == [{"type": "typing", "user": "alice"}]
    assert a.frames == a2.frames == []


async def test_a_kick_closes_only_that_users_sockets_in_that_room(hub, alice, bob, room):
    other = await db(create_room)("Other", alice)
    a, a2, b = FakeSocket(alice), FakeSocket(alice), FakeSocket(bob)
    for socket in (a, a2, b):
        await socket.open(hub, room.pk)
    elsewhere = await FakeSocket(alice).open(hub, other.pk)
    await hub.handle(events.UserKicked(room=room.pk, user="alice", code=CloseCode.FORBIDDEN))
    assert a.closes == a2.closes == [4403]
    assert b.closes == elsewhere.closes == []


async def test_a_closed_room_closes_every_socket_in_it_with_the_given_code(hub, alice, bob, room):
    other = await db(create_room)("Other", alice)
    inside = [await FakeSocket(user).open(hub, room.pk) for user in (alice, alice, bob)]
    elsewhere = await FakeSocket(bob).open(hub, other.pk)
    await hub.handle(events.RoomClosed(room=room.pk, code=CloseCode.NO_SUCH_ROOM))
    assert [socket.closes for socket in inside] == [[4404]] * 3
    assert elsewhere.closes == []


# --- presence batching ----------------------------------------------------------------------------


async def join_presence(room, names: list[str]) -> list[bytes]:
    frames = []
    for name in names:
        await shared_state().join(room.pk, name, uuid.uuid4().hex)
        online = await shared_state().online(room.pk)
        frames.append(protocol.presence_frame(online, joined=name))
    return frames


async def test_a_presence_burst_beyond_the_limit_goes_out_as_one_frame(hub, settings, alice, room):
    settings.CHAT_PRESENCE_BURST = 3
    settings.CHAT_PRESENCE_WINDOW = 0.2
    a = await FakeSocket(alice).open(hub, room.pk)
    names = [f"user{i}" for i in range(6)]
    for frame in await join_presence(room, names):
        await hub.handle(events.PresenceChanged(room=room.pk, frame=frame))
    # The first three as they came; the other three wait for the window's end.
    assert [f["joined"] for f in a.of_type("presence")] == ["user0", "user1", "user2"]
    await until(lambda: len(a.of_type("presence")) == 4)
    assert a.of_type("presence")[-1] == {
        "type": "presence",
        "online": sorted(names),
        "joined": None,
        "left": None,
    }
    await asyncio.sleep(0.3)
    assert len(a.of_type("presence")) == 4


async def test_one_presence_frame_held_past_the_burst_goes_out_as_it_was(
    hub, settings, alice, room
):
    settings.CHAT_PRESENCE_BURST = 3
    settings.CHAT_PRESENCE_WINDOW = 0.2
    a = await FakeSocket(alice).open(hub, room.pk)
    frames = await join_presence(room, [f"user{i}" for i in range(4)])
    for frame in frames:
        await hub.handle(events.PresenceChanged(room=room.pk, frame=frame))
    await until(lambda: len(a.of_type("presence")) == 4)
    assert a.texts == frames


# --- resync -------------------------------------------------------------------------------------


async def test_resync_delivers_changes_whose_doorbell_never_rang(hub, doorbells, alice, room):
    a = await FakeSocket(alice).open(hub, room.pk)
    await post(room, alice, "one")
    await post(room, alice, "two")
    assert a.frames == []
    await hub.resync()
    assert a.cursors == [1, 2]
    await hub.resync()
    assert a.cursors == [1, 2]


async def test_resync_rejoins_the_group_redis_forgot(hub, alice, bob, room, redis_server):
    a = await FakeSocket(alice).open(hub, room.pk)
    redis_server.flush()  # as a restart without persistence: every group membership gone
    await hub.resync()
    await events.publish(
        events.UserTyping(room=room.pk, user="bob", frame=protocol.typing_frame("bob"))
    )
    await until(lambda: a.of_type("typing"))


async def test_resync_closes_the_sockets_of_a_room_archived_behind_its_back(hub, alice, room):
    other = await db(create_room)("Other", alice)
    inside = [await FakeSocket(alice).open(hub, room.pk) for _ in range(2)]
    elsewhere = await FakeSocket(alice).open(hub, other.pk)
    # Archived with no event (Redis was down when it happened).
    await db(lambda: Room.objects.filter(pk=room.pk).update(archived_at=timezone.now()))()
    await hub.resync()
    assert [socket.closes for socket in inside] == [[4404], [4404]]
    assert elsewhere.closes == []


# --- the session watcher --------------------------------------------------------------------------


async def test_the_session_watcher_closes_only_sockets_whose_session_ended(hub, alice, bob, room):
    alice_key, bob_key = await db(session_cookie_for)(alice), await db(session_cookie_for)(bob)
    a = await FakeSocket(alice, session_key=alice_key).open(hub, room.pk)
    b = await FakeSocket(bob, session_key=bob_key).open(hub, room.pk)
    keyless = await FakeSocket(bob).open(hub, room.pk)  # no session: not the watcher's to judge

    assert await sessions.close_revoked(hub.sockets()) == 0
    await db(lambda: Session.objects.filter(session_key=alice_key).delete())()  # logged out
    assert await sessions.close_revoked(hub.sockets()) == 1
    assert (a.closes, b.closes, keyless.closes) == ([4401], [], [])

    await hub.detach(room.pk, a)  # as the closed socket does
    await db(lambda: Session.objects.filter(session_key=bob_key).delete())()
    await hub.close_revoked_sessions()  # what the hub's watcher task runs
    assert (a.closes, b.closes, keyless.closes) == ([4401], [4401], [])


# --- idle cost (issue 21) -------------------------------------------------------------------------


def redis_calls(redis_server) -> int:
    """Commands the test Redis has served so far (those run inside scripts included)."""
    import redis

    client = redis.Redis(port=redis_server.port)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


async def present_sockets(hub, users, room_ids) -> list[FakeSocket]:
    """One socket per user in each room, counted in presence and the socket cap as the
    consumer counts them."""
    state = shared_state()
    sockets = []
    for room_id in room_ids:
        for user in users:
            socket = await FakeSocket(user).open(hub, room_id)
            assert await state.open_socket(socket.user_id, socket.conn_id, 20)
            await state.join(room_id, socket.username, socket.conn_id)
            socket.present = socket.counted = True
            sockets.append(socket)
    return sockets


async def test_idle_upkeep_costs_the_same_redis_commands_however_many_rooms_are_held(
    hub, alice, bob, room, redis_server
):
    redis_server.flush()
    await present_sockets(hub, [alice], [room.pk])
    await hub.keep_presence()  # the first beat registers the process
    await hub.resync()
    before = redis_calls(redis_server)
    await hub.keep_presence()
    await hub.resync()
    one_room = redis_calls(redis_server) - before

    rooms = [(await db(create_room)(f"Quiet {i}", alice)).pk for i in range(12)]
    await present_sockets(hub, [alice, bob], rooms)
    await hub.keep_presence()
    await hub.resync()
    before = redis_calls(redis_server)
    await hub.keep_presence()
    await hub.resync()
    many_rooms = redis_calls(redis_server) - before
    # One upkeep script (renew the process, look for dead ones), one EXPIRE of the channel-layer
    # marker: a handful of commands, however many rooms and sockets.
    assert many_rooms == one_room <= 8


async def test_a_dead_processs_users_leave_at_a_living_processs_next_upkeep(
    hub, alice, bob, room, redis_server
):
    from chat.shared_state import RedisState

    redis_server.flush()
    (watcher,) = await present_sockets(hub, [alice], [room.pk])
    dead = RedisState()  # another process: bob joins there, then it dies without a word
    await dead.open_socket(bob.pk, "bob-conn", 20)
    assert await dead.join(room.pk, "bob", "bob-conn") == (True, ["alice", "bob"])
    await hub.keep_presence()
    assert await shared_state().online(room.pk) == ["alice", "bob"]  # still within its expiry

    await dead.client.zadd("chat:processes", {dead.process: time.time() - 1})  # expired
    await hub.keep_presence()
    assert await shared_state().online(room.pk) == ["alice"]
    await until(lambda: watcher.of_type("presence"))
    assert watcher.of_type("presence") == [
        {"type": "presence", "online": ["alice"], "joined": None, "left": "bob"}
    ]
    assert await dead.client.zcard(f"chat:sockets:{bob.pk}") == 0  # its socket cap freed too
    await dead.client.aclose()


async def test_presence_comes_back_at_the_next_upkeep_after_redis_forgot_it(
    hub, alice, bob, room, redis_server
):
    redis_server.flush()
    await present_sockets(hub, [alice, bob], [room.pk])
    await hub.keep_presence()
    redis_server.flush()  # as a restart without persistence
    assert await shared_state().online(room.pk) == []
    await hub.keep_presence()
    assert await shared_state().online(room.pk) == ["alice", "bob"]
    assert await shared_state().client.zcard(f"chat:sockets:{alice.pk}") == 1


async def test_resync_joins_no_group_again_while_the_channel_layer_remembers_this_process(
    hub, alice, room, redis_server
):
    rooms = [room.pk] + [(await db(create_room)(f"Quiet {i}", alice)).pk for i in range(5)]
    for room_id in rooms:
        await FakeSocket(alice).open(hub, room_id)
    await hub.resync()
    client = hub.layer.connection(0)
    groups = {room_id: hub.layer._group_key(events.group_name(room_id)) for room_id in rooms}
    added = {room_id: await client.zscore(key, hub.channel) for room_id, key in groups.items()}
    await asyncio.sleep(0.01)
    await hub.resync()
    # Not added again (the score is when it was added).
    assert {room_id: await client.zscore(key, hub.channel) for room_id, key in groups.items()} == (
        added
    )


async def test_a_session_found_standing_is_judged_again_when_its_password_changes(hub, alice, room):
    key = await db(session_cookie_for)(alice)
    a = await FakeSocket(alice, session_key=key).open(hub, room.pk)
    assert await hub.close_revoked_sessions() is None and a.closes == []
    await hub.close_revoked_sessions()  # judged from what it remembers
    assert a.closes == []

    def change_password():
        # Behind Django's back (no post_save, so no SessionsChanged): the periodic check alone.
        alice.set_password("a new password 123")
        type(alice).objects.filter(pk=alice.pk).update(password=alice.password)

    await db(change_password)()
    await hub.close_revoked_sessions()
    assert a.closes == [4401]


@pytest.mark.parametrize("how", ["password", "deactivated", "logged out"])
async def test_a_session_ended_through_django_closes_its_sockets_without_waiting_for_the_check(
    hub, alice, room, how
):
    """The periodic check is 60 s here: the signal's SessionsChanged closes the socket at once,
    on every process (it goes through the channel layer to every hub)."""
    from django.contrib.auth import user_logged_out

    key = await db(session_cookie_for)(alice)
    a = await FakeSocket(alice, session_key=key).open(hub, room.pk)

    def end():
        if how == "password":
            alice.set_password("a new password 123")
            alice.save()
        elif how == "deactivated":
            alice.is_active = False
            alice.save()
        else:  # what django.contrib.auth.logout does: flush the session, send the signal
            Session.objects.filter(session_key=key).delete()
            user_logged_out.send(sender=type(alice), request=None, user=alice)

    await db(end)()
    for _ in range(100):
        if a.closes:
            break
        await asyncio.sleep(0.05)
    assert a.closes == [4401]
