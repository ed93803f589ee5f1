"""Private rooms and direct messages (PROTOCOL.md §4): the rules through the services and the JSON
doors, notices in the history, a room nobody outside can tell exists, and removal closing
sockets on every server process."""

import json
import re
import statistics
import time

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from websockets.exceptions import ConnectionClosed

from chat import services
from chat.models import Membership, Message, Room
from chat.realtime.protocol import ChatError
from tests.helpers import create_user, open_socket, private_room, session_cookie_for
from tests.wsclient import Client as WsClient

pytestmark = pytest.mark.django_db(transaction=True)


def http(user, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    if user is not None:
        client.force_login(user)
    return client


def post_json(client: Client, path: str, data: object, **headers):
    return client.post(path, json.dumps(data), content_type="application/json", **headers)


def notices(room: Room) -> list[str]:
    return list(Message.objects.filter(room=room, system=True).values_list("body", flat=True))


def roles(room: Room) -> dict[str, str]:
    return dict(Membership.objects.filter(room=room).values_list("user__username", "role"))


# --- the rules, through the services --------------------------------------------------------------


def test_the_creator_owns_a_private_room_and_members_add_people_with_a_notice_each():
    alice, bob = create_user("alice"), create_user("bob")
    create_user("carol")
    room = private_room(alice, members=[bob])
    services.add_member(room=room, by=bob, username="carol")  # any member may add
    assert roles(room) == {"alice": "owner", "bob": "member", "carol": "member"}
    assert notices(room) == ["alice added bob", "bob added carol"]
    notice = Message.objects.get(room=room, body="alice added bob")
    assert notice.author == alice and notice.system
    assert room.__class__.objects.get(pk=room.pk).cursor == 2  # each notice is a change
    with pytest.raises(ChatError) as again:
        services.add_member(room=room, by=alice, username="carol")
    assert again.value.status == 409
    with pytest.raises(ChatError) as nobody:
        services.add_member(room=room, by=alice, username="nobody")
    assert nobody.value.status == 400
    assert len(notices(room)) == 2


def test_a_notice_cannot_be_edited_or_deleted_even_by_its_author():
    alice, bob = create_user("alice"), create_user("bob")
    room = private_room(alice, members=[bob])
    notice = Message.objects.get(room=room, system=True)
    for change in (
        lambda: services.edit_message(room=room, message_id=notice.pk, by=alice, body="x"),
        lambda: services.delete_message(room=room, message_id=notice.pk, by=alice),
    ):
        with pytest.raises(ChatError) as refused:
            change()
        assert refused.value.code == "forbidden"
    assert Message.objects.get(pk=notice.pk).body == "alice added bob"


def test_owners_remove_members_remove_nobody_and_the_last_owner_stays():
    alice, bob, carol = create_user("alice"), create_user("bob"), create_user("carol")
    room = private_room(alice, members=[bob, carol])
    with pytest.raises(ChatError) as not_owner:
        services.remove_member(room=room, by=bob, username="carol")
    assert not_owner.value.status == 403
    with pytest.raises(ChatError) as last_owner:
        services.remove_member(room=room, by=alice, username="alice")
    assert last_owner.value.status == 409
    services.remove_member(room=room, by=alice, username="carol")
    services.remove_member(room=room, by=bob, username="bob")  # leaving
    assert roles(room) == {"alice": "owner"}
    assert notices(room)[-2:] == ["alice removed carol", "bob left"]
    with pytest.raises(ChatError) as gone:
        services.remove_member(room=room, by=alice, username="bob")
    assert gone.value.status == 404
    services.remove_member(room=room, by=alice, username="alice")  # the last one: it stays, empty
    assert roles(room) == {} and Room.objects.filter(pk=room.pk).exists()


def test_public_rooms_are_joined_by_oneself_posting_joins_quietly_and_leaving_closes_nothing():
    alice, bob, carol = create_user("alice"), create_user("bob"), create_user("carol")
    room = services.create_room(name="Lounge", created_by=alice, enforce_limit=False)
    assert roles(room) == {"alice": "owner"}
    with pytest.raises(ChatError) as others:
        services.add_member(room=room, by=alice, username="bob")
    assert others.value.status == 403
    services.add_member(room=room, by=bob, username="bob")
    services.post_message(room=room, author=carol, body="hello")  # joins, without a notice
    assert roles(room) == {"alice": "owner", "bob": "member", "carol": "member"}
    assert notices(room) == ["bob joined"]
    services.remove_member(room=room, by=carol, username="carol")
    assert notices(room) == ["bob joined", "carol left"]
    assert Room.objects.get(pk=room.pk).members_epoch == 0  # anyone may still read it


def test_the_same_people_always_land_in_the_same_direct_room_from_every_side():
    alice, bob, carol = create_user("alice"), create_user("bob"), create_user("carol")
    one = services.open_direct(by=alice, usernames=["bob"])
    assert services.open_direct(by=bob, usernames=["alice"]) == one
    assert services.open_direct(by=alice, usernames=["bob", "bob", "alice"]) == one
    group = services.open_direct(by=carol, usernames=["bob", "alice"])
    assert group != one
    assert services.open_direct(by=alice, usernames=["carol", "bob"]) == group
    assert one.kind == "direct" and roles(one) == {"alice": "member", "bob": "member"}
    from chat import selectors

    assert selectors.room_object(group, alice)["name"] == "bob, carol"
    assert selectors.room_object(group, bob)["name"] == "alice, carol"
    for wrong in ([], ["alice"], [f"u{n}" for n in range(9)], "bob", [3], ["nobody"]):
        with pytest.raises(ChatError) as refused:
            services.open_direct(by=alice, usernames=wrong)
        assert refused.value.status in (None, 400), wrong
    with pytest.raises(ChatError) as leave:
        services.remove_member(room=one, by=alice, username="alice")
    assert leave.value.status == 403
    with pytest.raises(ChatError) as add:
        services.add_member(room=one, by=alice, username="carol")
    assert add.value.status == 403


def test_nine_people_may_share_a_direct_room_and_ten_may_not():
    people = [create_user(f"p{n}") for n in range(10)]
    room = services.open_direct(by=people[0], usernames=[p.username for p in people[1:9]])
    assert Membership.objects.filter(room=room).count() == 9
    with pytest.raises(ChatError):
        services.open_direct(by=people[0], usernames=[p.username for p in people[1:]])


# --- the JSON doors ------------------------------------------------------------------------------


def test_the_member_doors_answer_as_the_contract_says():
    alice, bob, carol = create_user("alice"), create_user("bob"), create_user("carol")
    room = private_room(alice)
    url = f"/rooms/{room.slug}/members"
    added = post_json(http(alice), url, {"username": "bob"})
    assert added.status_code == 200
    assert added.json() == {
        "members": [{"username": "alice", "role": "owner"}, {"username": "bob", "role": "member"}]
    }
    assert http(bob).get(url).json() == added.json()
    assert post_json(http(alice), url, {"username": "bob"}).status_code == 409
    assert post_json(http(alice), url, {"username": "ghost"}).status_code == 400
    assert post_json(http(alice), url, {"name": "bob"}).status_code == 400
    assert post_json(http(alice), url, ["bob"]).status_code == 400
    assert http(carol).get(url).status_code == 404
    assert post_json(http(carol), url, {"username": "carol"}).status_code == 404
    assert http(None).get(url).status_code == 401
    assert http(bob).delete(f"{url}/alice").status_code == 403
    assert http(alice).delete(f"{url}/alice").status_code == 409
    assert http(alice).delete(f"{url}/carol").status_code == 404
    assert http(alice).delete(f"{url}/bob").status_code == 200
    assert http(bob).get(url).status_code == 404  # gone for him

    lounge = services.create_room(name="Lounge", created_by=alice, enforce_limit=False)
    lounge_url = f"/rooms/{lounge.slug}/members"
    assert post_json(http(carol), lounge_url, {"username": "bob"}).status_code == 403
    assert post_json(http(carol), lounge_url, {"username": "carol"}).status_code == 200
    assert http(carol).delete(f"{lounge_url}/carol").status_code == 200


def test_posts_and_deletes_need_the_csrf_header():
    alice = create_user("alice")
    create_user("bob")
    room = private_room(alice)
    client = http(alice, csrf=True)
    client.get(f"/rooms/{room.slug}/")  # the page sets the csrftoken cookie
    url = f"/rooms/{room.slug}/members"
    assert post_json(client, url, {"username": "bob"}).status_code == 403
    assert post_json(client, "/direct", {"usernames": ["bob"]}).status_code == 403
    token = client.cookies["csrftoken"].value
    assert post_json(client, url, {"username": "bob"}, HTTP_X_CSRFTOKEN=token).status_code == 200
    assert client.delete(f"{url}/bob").status_code == 403
    assert client.delete(f"{url}/bob", HTTP_X_CSRFTOKEN=token).status_code == 200


def test_direct_door_gives_one_slug_for_one_set_of_people():
    alice, bob = http(create_user("alice")), http(create_user("bob"))
    first = post_json(alice, "/direct", {"usernames": ["bob"]})
    assert first.status_code == 200
    assert post_json(bob, "/direct", {"usernames": ["alice"]}).json() == first.json()
    assert post_json(alice, "/direct", {"usernames": []}).status_code == 400
    assert post_json(alice, "/direct", {"usernames": ["ghost"]}).status_code == 400
    assert post_json(alice, "/direct", {"people": ["bob"]}).status_code == 400
    assert post_json(http(None), "/direct", {"usernames": ["bob"]}).status_code == 401
    slug = first.json()["slug"]
    assert alice.get(f"/rooms/{slug}/").status_code == 200
    assert http(create_user("carol")).get(f"/rooms/{slug}/").status_code == 404


def test_membership_changes_are_rate_limited(settings):
    settings.CHAT_RATE_LIMIT_MEMBERSHIP = 3
    alice = create_user("alice")
    for name in ("b1", "b2", "b3", "b4"):
        create_user(name)
    room = private_room(alice)
    url = f"/rooms/{room.slug}/members"
    answers = [post_json(http(alice), url, {"username": n}).status_code for n in ("b1", "b2")]
    answers += [post_json(http(alice), "/direct", {"usernames": ["b3"]}).status_code]
    refused = post_json(http(alice), url, {"username": "b4"})
    assert answers == [200, 200, 200] and refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    assert "b4" not in roles(room)


def test_the_people_type_ahead_finds_active_usernames_only(settings):
    alice = create_user("alice")
    for name in ("albert", "al", "bob"):
        create_user(name)
    create_user("alfred", is_active=False)
    answer = http(alice).get("/api/users", {"q": "AL"})
    assert answer.json() == {"users": ["al", "alice", "albert"]}
    assert http(alice).get("/api/users", {"q": ""}).json() == {"users": []}
    assert http(None).get("/api/users", {"q": "al"}).status_code == 401
    settings.CHAT_RATE_LIMIT_LOOKUPS = 1
    assert http(alice).get("/api/users", {"q": "b"}).status_code == 429


def test_my_rooms_lists_direct_and_private_first_and_never_anothers_room():
    alice, bob, carol = create_user("alice"), create_user("bob"), create_user("carol")
    lounge = services.create_room(name="Lounge", created_by=alice, enforce_limit=False)
    services.post_message(room=lounge, author=bob, body="hi")
    private_room(alice, members=[bob])
    private_room(carol, "Carol Only")
    services.open_direct(by=alice, usernames=["bob"])
    listed = http(bob).get("/api/rooms").json()["rooms"]
    assert [(room["kind"], room["name"]) for room in listed][-1] == ("public", "Lounge")
    assert {room["name"] for room in listed} == {"Lounge", "Secret Plans", "alice"}
    assert all(room["name"] != "Carol Only" for room in listed)
    response = http(bob).get("/")
    assert "Carol Only" not in response.content.decode()
    assert [room.display_name for room in response.context["my_rooms"]][-1] == "Lounge"
    assert {room.display_name for room in response.context["my_rooms"]} == {
        "Lounge",
        "Secret Plans",
        "alice",
    }


# --- invisible: a non-member's answers are a never-existing slug's --------------------------------


def _answers(client: Client, slug: str) -> list[tuple]:
    got = []
    for method, path, body in (
        ("get", f"/rooms/{slug}/", None),
        ("get", f"/rooms/{slug}/members", None),
        ("post", f"/rooms/{slug}/members", {"username": "carol"}),
        ("delete", f"/rooms/{slug}/members/alice", None),
        ("post", f"/rooms/{slug}/read", {"last_read_id": 1}),
    ):
        if body is None:
            response = getattr(client, method)(path)
        else:
            response = post_json(client, path, body)
        content = response.content.decode().replace(slug, "SLUG")
        # Django masks the CSRF token afresh for every page (the header's logout form).
        content = re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "TOKEN", content)
        got.append((path.replace(slug, "SLUG"), response.status_code, content))
    return got


def test_a_private_room_answers_a_non_member_exactly_as_a_slug_that_never_existed():
    alice, bob = create_user("alice"), create_user("bob")
    carol = create_user("carol")
    room = private_room(alice, members=[bob])
    services.post_message(room=room, author=alice, body="the plans")
    client = http(carol)
    assert _answers(client, room.slug) == _answers(client, "never-was")
    page = client.get(f"/rooms/{room.slug}/").content.decode()
    assert "Secret Plans" not in page and "the plans" not in page

    def queries(slug: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            _answers(client, slug)
        return len(captured)

    assert queries(room.slug) == queries("never-was")

    def timing(slug: str) -> float:
        runs = []
        for _ in range(15):
            start = time.perf_counter()
            client.get(f"/rooms/{slug}/members")
            runs.append(time.perf_counter() - start)
        return statistics.median(runs)

    for slug in (room.slug, "never-was"):  # warm both
        timing(slug)
    hidden, never = timing(room.slug), timing("never-was")
    # Within noise: the same queries answer both, so no early exit tells them apart.
    assert abs(hidden - never) < max(0.005, 0.5 * min(hidden, never)), (hidden, never)


async def _close_code(user, slug: str, *, since: int | None = None) -> int | str:
    communicator, _ = await open_socket(user, slug, since=since)
    assert (await communicator.connect())[0]
    first = await communicator.receive_output(timeout=5)
    await communicator.disconnect()
    return first["code"] if first["type"] == "websocket.close" else "ready"


@pytest.mark.usefixtures("sockets_closed")
async def test_a_non_members_socket_and_resume_close_like_a_never_existing_rooms():
    def world():
        alice, carol = create_user("alice"), create_user("carol")
        room = private_room(alice)
        direct = services.open_direct(by=alice, usernames=["carol"])
        dave = create_user("dave")
        return alice, carol, dave, room, direct

    alice, carol, dave, room, direct = await database_sync_to_async(world)()
    assert await _close_code(alice, room.slug) == "ready"
    assert await _close_code(carol, room.slug) == 4404
    assert await _close_code(carol, room.slug, since=0) == 4404
    assert await _close_code(carol, "never-was") == 4404
    assert await _close_code(dave, direct.slug) == 4404
    assert await _close_code(carol, direct.slug) == "ready"


# --- removal closes sockets ----------------------------------------------------------------------


@pytest.mark.usefixtures("sockets_closed")
async def test_removal_closes_the_members_sockets_and_nothing_newer_reaches_them():
    def world():
        alice, bob = create_user("alice"), create_user("bob")
        return alice, bob, private_room(alice, members=[bob])

    alice, bob, room = await database_sync_to_async(world)()
    watcher, _ = await open_socket(bob, room.slug)
    await watcher.connect()
    ready = await watcher.receive_json_from(timeout=5)
    assert ready["room"]["kind"] == "private"
    await database_sync_to_async(services.remove_member)(room=room, by=alice, username="bob")
    await database_sync_to_async(services.post_message)(room=room, author=alice, body="after")
    seen = []
    while True:
        output = await watcher.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            break
        seen.append(json.loads(output["text"]))
    assert output["code"] == 4403
    assert all(frame.get("message", {}).get("body") != "after" for frame in seen)
    await watcher.disconnect()
    assert await _close_code(bob, room.slug, since=ready["cursor"]) == 4404


@pytest.mark.usefixtures("sockets_closed")
async def test_a_removal_whose_event_was_lost_still_stops_delivery_at_the_next_change():
    """The backstop: the removal's own event never reached this process (a full channel, a
    Redis blip), but every later change carries the room's members epoch, and the hub checks
    membership again before delivering it."""

    def world():
        alice, bob = create_user("alice"), create_user("bob")
        return alice, bob, private_room(alice, members=[bob])

    alice, bob, room = await database_sync_to_async(world)()
    watcher, _ = await open_socket(bob, room.slug)
    await watcher.connect()
    await watcher.receive_json_from(timeout=5)

    def remove_behind_the_hubs_back():
        from django.db.models import F

        Membership.objects.filter(room=room, user=bob).delete()
        Room.objects.filter(pk=room.pk).update(members_epoch=F("members_epoch") + 1)

    await database_sync_to_async(remove_behind_the_hubs_back)()
    await database_sync_to_async(services.post_message)(room=room, author=alice, body="secret")
    while True:
        output = await watcher.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            break
        assert "secret" not in output.get("text", "")
    assert output["code"] == 4403
    await watcher.disconnect()


async def test_removal_closes_sockets_on_two_server_processes_within_a_second(daphne_factory):
    one, two = daphne_factory(), daphne_factory()

    def world():
        alice, bob = create_user("alice"), create_user("bob")
        room = private_room(alice, members=[bob])
        return room, session_cookie_for(bob), alice

    room, bob_cookie, alice = await database_sync_to_async(world)()
    tabs = [await WsClient.open(server.url, bob_cookie, room.slug) for server in (one, two)]
    cursor = tabs[0].ready["cursor"]
    start = time.monotonic()
    await database_sync_to_async(services.remove_member)(room=room, by=alice, username="bob")
    for tab in tabs:
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await tab.receive(timeout=2)
        assert closed.value.rcvd.code == 4403
    assert time.monotonic() - start < 1.0
    for server in (one, two):
        with pytest.raises(ConnectionClosed) as refused:
            again = await WsClient.open(server.url, bob_cookie, room.slug, since=cursor)
            await again.receive(timeout=5)
        assert refused.value.rcvd.code == 4404


# --- the data migration --------------------------------------------------------------------------


def test_the_migration_makes_existing_rooms_public_with_posters_and_readers_as_members():
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("chat", "0006_room_archive")])
    old = executor.loader.project_state([("chat", "0006_room_archive")]).apps
    User = old.get_model("auth", "User")
    OldRoom, OldMessage = old.get_model("chat", "Room"), old.get_model("chat", "Message")
    Marker = old.get_model("chat", "ReadMarker")
    alice, bob, carol, dave = (
        User.objects.create(username=name) for name in ("alice", "bob", "carol", "dave")
    )
    general = OldRoom.objects.create(name="General", slug="general", created_by=alice)
    OldRoom.objects.create(name="Quiet", slug="quiet", created_by=dave)
    for n, author in enumerate((alice, bob, bob)):
        OldMessage.objects.create(room=general, author=author, body="hi", cursor=n + 1)
    Marker.objects.create(room=general, user=carol, last_read_id=1)

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert set(Room.objects.values_list("slug", "kind")) == {
        ("general", "public"),
        ("quiet", "public"),
    }
    assert roles(Room.objects.get(slug="general")) == {
        "alice": "owner",
        "bob": "member",
        "carol": "member",
    }
    assert roles(Room.objects.get(slug="quiet")) == {}  # its creator never posted nor read
