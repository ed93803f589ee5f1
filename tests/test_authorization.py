"""Who may do what, at every door: one matrix of doors by roles (chat/policy.py decides).

Each row of MATRIX is a door through which someone reads or changes a room; each column a role.
A cell is what that role gets at that door: "ok" (answered, or the change took effect), an error
frame's code, a close code, an HTTP status, "login" (sent to the login page), "silent" (nothing
comes back and nothing happens, as for a muted user's typing), or "listed"/"absent" for the
lobby. A new door is one function and one row; a new role one column. Every check runs against
the real consumer, views and admin on a real Redis, at the moment of the action (a ban or mute
made after the socket opened applies to it).
"""

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.test import Client

from chat import services
from chat.models import Message, Room, RoomRestriction
from tests.helpers import INBOX, create_room, create_user, inbox, make_moderator, open_socket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sockets_closed")]

ROLES = ["anonymous", "member", "author", "banned", "muted", "moderator", "staff"]

# fmt: off
MATRIX: dict[str, tuple] = {
    #                       anonymous member     author  banned  muted     moderator  staff
    # A banned reader gets the ban's own page (reason, end, the way back), status 403.
    "room page":            ("login", 200,        200,    403,    200,      200,       200),
    "room page, archived":  ("login", 404,        404,    404,    404,      404,       404),
    "lobby":                ("login", "listed",   "listed", "listed", "listed", "listed", "listed"),
    "read marker":          (401,     200,        200,    200,    200,      200,       200),
    "own restrictions":     (401,     200,        200,    200,    200,      200,       200),
    "socket":               (4401,    "ok",       "ok",   4403,   "ok",     "ok",      "ok"),
    "socket, archived":     (4401,    4404,       4404,   4404,   4404,     4404,      4404),
    "resume with since":    (4401,    "ok",       "ok",   4403,   "ok",     "ok",      "ok"),
    "post":                 (4401,    "ok",       "ok",   4403,   "muted",  "ok",      "ok"),
    "edit own":             (4401,    "ok",       "ok",   4403,   "muted",  "ok",      "ok"),
    "edit another's":       (4401,    "forbidden", "forbidden", 4403, "forbidden", "forbidden", "forbidden"),  # noqa: E501
    "delete own":           (4401,    "ok",       "ok",   4403,   "ok",     "ok",      "ok"),
    "delete another's":     (4401,    "forbidden", "forbidden", 4403, "forbidden", "forbidden", "forbidden"),  # noqa: E501
    "history":              (4401,    "ok",       "ok",   4403,   "ok",     "ok",      "ok"),
    "typing":               (4401,    "ok",       "ok",   4403,   "silent", "ok",      "ok"),
    "admin: hide":          ("login", "login",    "login", "login", "login", "ok",     403),
    "admin: ban":           ("login", "login",    "login", "login", "login", "ok",     403),
    "report another's":     (4401,    "ok",       "ok",   4403,   "ok",     "ok",      "ok"),
    "report own":           (4401,    "forbidden", "forbidden", 4403, "forbidden", "forbidden", "forbidden"),  # noqa: E501
    # Per-room moderation is for a private room's owners: the author owns this public room.
    "hide (room owner)":    (401,     403,        403,    403,    403,      403,       403),
    "admin: report queue":  ("login", "login",    "login", "login", "login", "ok",     403),
    "inbox lists the room": (4401,    "listed",   "listed", "absent", "listed", "listed",  "listed"),  # noqa: E501
    "inbox hears a mention": (4401,   "notify",   "summary", "nothing", "notify", "notify", "notify"),  # noqa: E501
    "notification setting": (401,     200,        200,    403,    200,      200,       200),
    "search":               (401,     "found",    "found", "absent", "found", "found",   "found"),
    "search page":          ("login", "found",    "found", "absent", "found", "found",   "found"),
    # Earlier versions (issue 17): the author's own, and anyone's for moderators; 404 otherwise.
    "versions of own":      (401,     200,        200,    404,    200,      200,       200),
    "versions of another's": (401,    404,        404,    404,    404,      200,       404),
    # Files (§8): whoever may post uploads; a posted file is for the room's readers.
    "upload":               (401,     201,        201,    403,    403,      201,       201),
    "file":                 (404,     200,        200,    404,    200,      200,       200),
}
# fmt: on


@dataclass
class World:
    users: dict[str, object]
    room: Room
    archived: Room
    # Each role's own message (written before any ban or mute), and one by someone else.
    own: dict[str, Message]
    theirs: Message
    victim: object


@database_sync_to_async
def world() -> World:
    author = create_user("author")
    moderator = make_moderator("moderator")
    users = {
        "anonymous": None,
        "member": create_user("member"),
        "author": author,
        "banned": create_user("banned"),
        "muted": create_user("muted"),
        "moderator": moderator,
        "staff": create_user("staff", is_staff=True),
    }
    room = create_room("Matrix", author)
    archived = create_room("Archived", author)
    services.archive_room(room=archived, by=moderator)
    own = {
        role: services.post_message(room=room, author=user, body=f"{role}'s own words").message
        for role, user in users.items()
        if user is not None
    }
    theirs = services.post_message(room=room, author=author, body="someone else's").message
    services.restrict_user(room=room, user=users["banned"], kind="ban", by=moderator)
    services.restrict_user(room=room, user=users["muted"], kind="mute", by=moderator)
    victim = create_user("victim")
    return World(users, room, archived, own, theirs, victim)


# --- how a door is knocked on -------------------------------------------------------------------


async def inbox_lists(user, room: Room):
    """Open `user`'s inbox socket: its close code, or whether `room` is in its first frame."""
    communicator, _ = await open_socket(user, INBOX)
    await communicator.connect(timeout=5)
    output = await communicator.receive_output(timeout=5)
    await communicator.disconnect()
    if output["type"] == "websocket.close":
        return output["code"]
    slugs = [summary["slug"] for summary in json.loads(output["text"])["rooms"]]
    return "listed" if room.slug in slugs else "absent"


async def inbox_hears(user, room: Room, poster):
    """`poster` mentions `user` in `room`: what reaches `user`'s inbox (a `notify`, only a
    summary, or nothing), or its close code."""
    if user is None:
        return await inbox_lists(None, room)
    socket = await inbox(user)
    await database_sync_to_async(services.post_message)(
        room=room, author=poster, body=f"@{user.get_username()} look at this"
    )
    kinds = {frame["type"] for frame in await socket.drain(0.8)}
    await socket.close()
    return "notify" if "notify" in kinds else "summary" if "room" in kinds else "nothing"


def search_finds(user, words: str):
    """`GET /api/search` for `words`: its status, or whether a result has exactly that body."""
    response = http_client(user).get("/api/search", {"q": words})
    if response.status_code != 200:
        return response.status_code
    bodies = [result["message"]["body"] for result in response.json()["results"]]
    return "found" if words in bodies else "absent"


def search_page_finds(user, message_id: int, words: str):
    """The search page for `words`: whether it links to that message, or where it sent us."""
    response = http_client(user).get("/search", {"q": words})
    if response.status_code == 302:
        return "login"
    if response.status_code != 200:
        return response.status_code
    return "found" if f"?message={message_id}" in response.content.decode() else "absent"


def upload_door(user, room: Room) -> int:
    """`POST /rooms/<slug>/uploads` with a small file: its status."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    file = SimpleUploadedFile("matrix.txt", b"matrix")
    return http_client(user).post(f"/rooms/{room.slug}/uploads", {"file": file}).status_code


def file_door(user, room: Room, author) -> int:
    """`author` posts a file in `room`; `GET` its URL as `user`: the status."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from chat.realtime.protocol import attachment_object

    file = SimpleUploadedFile("matrix.txt", b"matrix")
    attachment = services.upload_attachment(room=room, by=author, file=file)
    services.post_message(room=room, author=author, body="a file", attach=(attachment.pk,))
    return http_client(user).get(attachment_object(attachment)["url"]).status_code


def choose_notifications(user, room: Room) -> int:
    return _json(user, "post", f"/rooms/{room.slug}/notifications", {"level": "all"})


async def socket_answer(user, slug: str, frame: dict | None, *, since: int | None = None):
    """Open a socket as `user`, send `frame`, and describe what came back."""
    communicator, _ = await open_socket(user, slug, since=since)
    assert (await communicator.connect())[0]
    first = await communicator.receive_output(timeout=5)
    if first["type"] == "websocket.close":
        return first["code"]
    try:
        if frame is None:
            return "ok"
        await communicator.send_json_to(frame)
        while True:
            if await communicator.receive_nothing(timeout=1.5):
                return "silent"
            output = await communicator.receive_output(timeout=1)
            if output["type"] == "websocket.close":
                return output["code"]
            answer = json.loads(output["text"])
            if answer["type"] == "error":
                return answer["code"]
            if answer["type"] in ("message", "history", "ack", "reported"):
                return "ok"
    finally:
        await communicator.disconnect()


def http_client(user) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def page(user, path: str):
    response = http_client(user).get(path)
    if response.status_code == 302 and "/accounts/login/" in response["Location"]:
        return "login"
    return response.status_code


def admin_answer(user, response, took_effect: bool):
    if response.status_code == 302 and "/admin/login/" in response["Location"]:
        return "login"
    if response.status_code == 403:
        return 403
    return "ok" if took_effect else response.status_code


Door = Callable[[World, str], Awaitable[object]]


async def room_page(w: World, role: str):
    return await sync_to_async(page)(w.users[role], f"/rooms/{w.room.slug}/")


async def archived_page(w: World, role: str):
    return await sync_to_async(page)(w.users[role], f"/rooms/{w.archived.slug}/")


async def lobby(w: World, role: str):
    def look():
        response = http_client(w.users[role]).get("/")
        if response.status_code == 302:
            return "login"
        html = response.content.decode()
        assert w.archived.name not in html  # archived rooms are listed for nobody
        return "listed" if f"/rooms/{w.room.slug}/" in html else "absent"

    return await sync_to_async(look)()


async def read_marker(w: World, role: str):
    def mark():
        response = http_client(w.users[role]).post(
            f"/rooms/{w.room.slug}/read",
            {"last_read_id": w.theirs.pk},
            content_type="application/json",
        )
        return response.status_code

    return await sync_to_async(mark)()


async def own_restrictions(w: World, role: str):
    return await sync_to_async(page)(w.users[role], f"/rooms/{w.room.slug}/restrictions")


async def socket(w: World, role: str):
    return await socket_answer(w.users[role], w.room.slug, None)


async def archived_socket(w: World, role: str):
    return await socket_answer(w.users[role], w.archived.slug, None)


async def resume(w: World, role: str):
    return await socket_answer(w.users[role], w.room.slug, None, since=1)


async def post(w: World, role: str):
    return await socket_answer(w.users[role], w.room.slug, {"type": "post", "body": "hello"})


def own_message(w: World, role: str) -> Message:
    return w.own.get(role, w.theirs)


def anothers_message(w: World, role: str) -> Message:
    return w.own["member"] if role == "author" else w.theirs


async def edit_own(w: World, role: str):
    frame = {"type": "edit", "id": own_message(w, role).pk, "body": "changed"}
    return await socket_answer(w.users[role], w.room.slug, frame)


async def edit_anothers(w: World, role: str):
    frame = {"type": "edit", "id": anothers_message(w, role).pk, "body": "changed"}
    return await socket_answer(w.users[role], w.room.slug, frame)


async def delete_own(w: World, role: str):
    frame = {"type": "delete", "id": own_message(w, role).pk}
    return await socket_answer(w.users[role], w.room.slug, frame)


async def delete_anothers(w: World, role: str):
    frame = {"type": "delete", "id": anothers_message(w, role).pk}
    return await socket_answer(w.users[role], w.room.slug, frame)


async def history(w: World, role: str):
    frame = {"type": "history", "before": 10**9}
    return await socket_answer(w.users[role], w.room.slug, frame)


async def typing(w: World, role: str):
    """The typist gets nothing back; someone else in the room sees it, or not."""
    other = w.users["member" if role != "member" else "author"]
    watcher, _ = await open_socket(other, w.room.slug)
    await watcher.connect()
    await watcher.receive_output(timeout=5)  # ready
    try:
        answer = await socket_answer(w.users[role], w.room.slug, {"type": "typing"})
        if isinstance(answer, int) or answer not in ("silent",):
            return answer
        while not await watcher.receive_nothing(timeout=0.7):
            frame = await watcher.receive_json_from()
            if frame["type"] == "typing":
                return "ok"
        return "silent"
    finally:
        await watcher.disconnect()


async def admin_hide(w: World, role: str):
    def hide():
        response = http_client(w.users[role]).post(
            "/admin/chat/message/",
            {"action": "hide_messages", "_selected_action": [str(w.theirs.pk)], "index": "0"},
        )
        hidden = Message.objects.filter(pk=w.theirs.pk, deleted_at__isnull=False).exists()
        return admin_answer(w.users[role], response, hidden)

    return await sync_to_async(hide)()


async def admin_ban(w: World, role: str):
    def ban():
        response = http_client(w.users[role]).post(
            "/admin/chat/roomrestriction/add/",
            {"room": w.room.pk, "user": w.victim.pk, "kind": "ban", "reason": "matrix"},
        )
        banned = RoomRestriction.objects.filter(user=w.victim, kind="ban").exists()
        return admin_answer(w.users[role], response, banned)

    return await sync_to_async(ban)()


async def report_anothers(w: World, role: str):
    frame = {"type": "report", "id": anothers_message(w, role).pk, "reason": "matrix"}
    return await socket_answer(w.users[role], w.room.slug, frame)


async def report_own(w: World, role: str):
    frame = {"type": "report", "id": own_message(w, role).pk, "reason": "matrix"}
    return await socket_answer(w.users[role], w.room.slug, frame)


def _hide_door(user, room: Room, message: Message) -> int:
    client = http_client(user)
    path = f"/rooms/{room.slug}/messages/{message.pk}/hide"
    return client.post(path, "{}", content_type="application/json").status_code


async def hide_as_room_owner(w: World, role: str):
    return await sync_to_async(_hide_door)(w.users[role], w.room, w.theirs)


def _report_queue(user, report) -> object:
    """The queue lists the report and its page opens (as `admin_answer` reads a refusal)."""
    client = http_client(user)
    listed = client.get("/admin/chat/report/")
    if listed.status_code != 200:
        return admin_answer(user, listed, False)
    opened = client.get(f"/admin/chat/report/{report.pk}/change/")
    ok = f"/admin/chat/report/{report.pk}/change/" in listed.content.decode()
    return admin_answer(user, opened, ok and opened.status_code == 200)


async def admin_report_queue(w: World, role: str):
    def look():
        from chat.models import Report

        report = Report.objects.get_or_create(message=w.theirs, reporter=w.users["member"])[0]
        return _report_queue(w.users[role], report)

    return await sync_to_async(look)()


def _versions_door(user, room: Room, message: Message) -> int:
    path = f"/rooms/{room.slug}/messages/{message.pk}/versions"
    return http_client(user).get(path).status_code


async def versions_of_own(w: World, role: str):
    return await sync_to_async(_versions_door)(w.users[role], w.room, own_message(w, role))


async def versions_of_anothers(w: World, role: str):
    return await sync_to_async(_versions_door)(w.users[role], w.room, anothers_message(w, role))


DOORS: dict[str, Door] = {
    "room page": room_page,
    "room page, archived": archived_page,
    "lobby": lobby,
    "read marker": read_marker,
    "own restrictions": own_restrictions,
    "socket": socket,
    "socket, archived": archived_socket,
    "resume with since": resume,
    "post": post,
    "edit own": edit_own,
    "edit another's": edit_anothers,
    "delete own": delete_own,
    "delete another's": delete_anothers,
    "history": history,
    "typing": typing,
    "admin: hide": admin_hide,
    "admin: ban": admin_ban,
    "report another's": report_anothers,
    "report own": report_own,
    "hide (room owner)": hide_as_room_owner,
    "admin: report queue": admin_report_queue,
    "inbox lists the room": lambda w, role: inbox_lists(w.users[role], w.room),
    "inbox hears a mention": lambda w, role: inbox_hears(w.users[role], w.room, w.users["author"]),
    "notification setting": lambda w, role: sync_to_async(choose_notifications)(
        w.users[role], w.room
    ),
    "search": lambda w, role: sync_to_async(search_finds)(w.users[role], "someone else's"),
    "search page": lambda w, role: sync_to_async(search_page_finds)(
        w.users[role], w.theirs.pk, "someone else"
    ),
    "versions of own": versions_of_own,
    "versions of another's": versions_of_anothers,
    "upload": lambda w, role: sync_to_async(upload_door)(w.users[role], w.room),
    "file": lambda w, role: sync_to_async(file_door)(w.users[role], w.room, w.users["author"]),
}


def test_every_door_has_a_row_and_every_row_a_door():
    assert set(DOORS) == set(MATRIX)
    assert all(len(row) == len(ROLES) for row in MATRIX.values())


@pytest.mark.parametrize("door", list(MATRIX))
async def test_authorization_matrix(door: str):
    w = await world()
    got = {role: await DOORS[door](w, role) for role in ROLES}
    assert got == dict(zip(ROLES, MATRIX[door], strict=True)), door


# --- room kinds by membership roles by every door (PROTOCOL.md §4) -----------------------------
# The same doors for a public, a private and a direct room, for people by their place in the
# room: never in it (outsider), a member, its owner (in a direct room: the one who opened it),
# removed from it (in a public room: left it; a direct room removes nobody, so: an outsider),
# and a moderator who is not in it. "ok", codes and statuses as above; "listed"/"absent" for the
# lobby and the admin's message list.

KINDS = ["public", "private", "direct"]
PLACES = ["anonymous", "outsider", "member", "owner", "removed", "moderator"]

# fmt: off
KIND_MATRIX: dict[str, dict[str, tuple]] = {
    #                          anonymous outsider member   owner    removed  moderator
    "room page": {
        "public":              ("login", 200,     200,     200,     200,     200),
        "private":             ("login", 404,     200,     200,     404,     404),
        "direct":              ("login", 404,     200,     200,     404,     404),
    },
    "lobby": {
        "public":              ("login", "listed", "listed", "listed", "listed", "listed"),
        "private":             ("login", "absent", "listed", "listed", "absent", "absent"),
        "direct":              ("login", "absent", "listed", "listed", "absent", "absent"),
    },
    "read marker": {
        "public":              (401,     200,     200,     200,     200,     200),
        "private":             (401,     404,     200,     200,     404,     404),
        "direct":              (401,     404,     200,     200,     404,     404),
    },
    "socket": {
        "public":              (4401,    "ok",    "ok",    "ok",    "ok",    "ok"),
        "private":             (4401,    4404,    "ok",    "ok",    4404,    4404),
        "direct":              (4401,    4404,    "ok",    "ok",    4404,    4404),
    },
    "resume with since": {
        "public":              (4401,    "ok",    "ok",    "ok",    "ok",    "ok"),
        "private":             (4401,    4404,    "ok",    "ok",    4404,    4404),
        "direct":              (4401,    4404,    "ok",    "ok",    4404,    4404),
    },
    "post": {
        "public":              (4401,    "ok",    "ok",    "ok",    "ok",    "ok"),
        "private":             (4401,    4404,    "ok",    "ok",    4404,    4404),
        "direct":              (4401,    4404,    "ok",    "ok",    4404,    4404),
    },
    "history": {
        "public":              (4401,    "ok",    "ok",    "ok",    "ok",    "ok"),
        "private":             (4401,    4404,    "ok",    "ok",    4404,    4404),
        "direct":              (4401,    4404,    "ok",    "ok",    4404,    4404),
    },
    "own restrictions": {
        "public":              (401,     200,     200,     200,     200,     200),
        "private":             (401,     404,     200,     200,     404,     404),
        "direct":              (401,     404,     200,     200,     404,     404),
    },
    "members list": {
        "public":              (401,     200,     200,     200,     200,     200),
        "private":             (401,     404,     200,     200,     404,     404),
        "direct":              (401,     404,     200,     200,     404,     404),
    },
    "join (add yourself)": {
        "public":              (401,     200,     409,     409,     200,     200),
        "private":             (401,     404,     409,     409,     404,     404),
        "direct":              (401,     404,     403,     403,     404,     404),
    },
    "add someone": {
        "public":              (401,     403,     403,     403,     403,     403),
        "private":             (401,     404,     200,     200,     404,     404),
        "direct":              (401,     404,     403,     403,     404,     404),
    },
    "remove someone": {
        "public":              (401,     403,     403,     200,     403,     403),
        "private":             (401,     404,     403,     200,     404,     404),
        "direct":              (401,     404,     403,     403,     404,     404),
    },
    "leave": {
        "public":              (401,     404,     200,     200,     404,     404),
        "private":             (401,     404,     200,     409,     404,     404),
        "direct":              (401,     404,     403,     403,     404,     404),
    },
    "open direct room": {
        "public":              (401,     200,     200,     200,     200,     200),
        "private":             (401,     200,     200,     200,     200,     200),
        "direct":              (401,     "new",   "same",  "same",  "new",   "new"),
    },
    "admin: message list": {
        "public":              ("login", "login", "login", "login", "login", "listed"),
        "private":             ("login", "login", "login", "login", "login", "listed"),
        "direct":              ("login", "login", "login", "login", "login", "absent"),
    },
    "admin: remove member": {
        "public":              ("login", "login", "login", "login", "login", "ok"),
        "private":             ("login", "login", "login", "login", "login", "ok"),
        "direct":              ("login", "login", "login", "login", "login", "refused"),
    },
    # Reports (§9): any reader reports (not their own words: the message is the owner's).
    "report": {
        "public":              (4401,    "ok",    "ok",    "forbidden", "ok", "ok"),
        "private":             (4401,    4404,    "ok",    "forbidden", 4404, 4404),
        "direct":              (4401,    4404,    "ok",    "forbidden", 4404, 4404),
    },
    # Per-room moderators: a private room's owners hide messages there (site staff do it in the
    # admin); anyone else who can see the room is refused, and the rest see no room.
    "hide (room owner)": {
        "public":              (401,     403,     403,     403,     403,     403),
        "private":             (401,     404,     403,     200,     404,     404),
        "direct":              (401,     404,     403,     403,     404,     404),
    },
    # The admin's page of one message: a direct room's messages are not there at all...
    "admin: message page": {
        "public":              ("login", "login", "login", "login", "login", "ok"),
        "private":             ("login", "login", "login", "login", "login", "ok"),
        "direct":              ("login", "login", "login", "login", "login", "absent"),
    },
    # ...except the reported one, with its context, on its report's page (audited).
    "admin: report page": {
        "public":              ("login", "login", "login", "login", "login", "ok"),
        "private":             ("login", "login", "login", "login", "login", "ok"),
        "direct":              ("login", "login", "login", "login", "login", "ok"),
    },
    # The inbox (§5): members' rooms only; a mention reaches any reader of the room.
    "inbox lists the room": {
        "public":              (4401,    "absent", "listed", "listed", "absent", "absent"),
        "private":             (4401,    "absent", "listed", "listed", "absent", "absent"),
        "direct":              (4401,    "absent", "listed", "listed", "absent", "absent"),
    },
    "inbox hears a mention": {
        "public":              (4401,    "notify", "notify", "summary", "notify", "notify"),
        "private":             (4401,    "nothing", "notify", "summary", "nothing", "nothing"),
        "direct":              (4401,    "nothing", "notify", "summary", "nothing", "nothing"),
    },
    "notification setting": {
        "public":              (401,     404,     200,     200,     404,     404),
        "private":             (401,     404,     200,     200,     404,     404),
        "direct":              (401,     404,     200,     200,     404,     404),
    },
    # Search (§7): every room the user can read, members or not for a public one.
    "search": {
        "public":              (401,     "found", "found", "found", "found", "found"),
        "private":             (401,     "absent", "found", "found", "absent", "absent"),
        "direct":              (401,     "absent", "found", "found", "absent", "absent"),
    },
    "search page": {
        "public":              ("login", "found", "found", "found", "found", "found"),
        "private":             ("login", "absent", "found", "found", "absent", "absent"),
        "direct":              ("login", "absent", "found", "found", "absent", "absent"),
    },
    # Earlier versions (issue 17): the author's, and the room's moderators' (site moderators
    # where they can see the room, a private room's owners); 404 for everyone else.
    "versions of the owner's message": {
        "public":              (401,     404,     404,     200,     404,     200),
        "private":             (401,     404,     404,     200,     404,     404),
        "direct":              (401,     404,     404,     200,     404,     404),
    },
    "versions of a member's message": {
        "public":              (401,     404,     200,     404,     404,     200),
        "private":             (401,     404,     200,     200,     404,     404),
        "direct":              (401,     404,     200,     404,     404,     404),
    },
    # Files (§8): uploads where one may post; a file for the room's readers, and for site
    # moderators in the rooms the admin shows them (not direct ones).
    "upload": {
        "public":              (401,     201,     201,     201,     201,     201),
        "private":             (401,     404,     201,     201,     404,     404),
        "direct":              (401,     404,     201,     201,     404,     404),
    },
    "file": {
        "public":              (404,     200,     200,     200,     200,     200),
        "private":             (404,     404,     200,     200,     404,     200),
        "direct":              (404,     404,     200,     200,     404,     404),
    },
}
# fmt: on


@dataclass
class KindWorld:
    kind: str
    room: Room
    users: dict[str, object]
    victim: object  # a member whom the "remove someone" door removes
    newcomer: object  # someone the "add someone" door adds
    message: Message


@database_sync_to_async
def kind_world(kind: str) -> KindWorld:
    owner, member, victim = create_user("owner"), create_user("member"), create_user("victim")
    removed, outsider = create_user("removed"), create_user("outsider")
    moderator = make_moderator("moderator")
    if kind == "direct":
        room = services.open_direct(by=owner, usernames=["member", "victim"])
    else:
        room = services.create_room(
            name=f"{kind} room", created_by=owner, kind=kind, enforce_limit=False
        )
        for user in (member, victim, removed):
            if kind == "public":
                services.add_member(room=room, by=user, username=user.username)
            else:
                services.add_member(room=room, by=owner, username=user.username)
        services.remove_member(room=room, by=removed, username="removed")
    message = services.post_message(room=room, author=owner, body="owner's words").message
    users = {
        "anonymous": None,
        "outsider": outsider,
        "member": member,
        "owner": owner,
        "removed": removed,
        "moderator": moderator,
    }
    return KindWorld(kind, room, users, victim, create_user("newcomer"), message)


def _json(user, method: str, path: str, data=None) -> int:
    client = http_client(user)
    if method == "get":
        return client.get(path).status_code
    if method == "delete":
        return client.delete(path).status_code
    return client.post(path, json.dumps(data), content_type="application/json").status_code


def _listed_in_lobby(w: KindWorld, role: str):
    response = http_client(w.users[role]).get("/")
    if response.status_code == 302:
        return "login"
    return "listed" if f"/rooms/{w.room.slug}/" in response.content.decode() else "absent"


def _admin_message_list(w: KindWorld, role: str):
    response = http_client(w.users[role]).get(f"/admin/chat/message/?room__id__exact={w.room.pk}")
    if response.status_code == 302:
        return "login"
    if response.status_code != 200:
        return response.status_code
    return "listed" if "owner&#x27;s words" in response.content.decode() else "absent"


def _admin_remove(w: KindWorld, role: str):
    from chat.models import Membership

    membership = Membership.objects.get(room=w.room, user=w.victim)
    response = http_client(w.users[role]).post(
        "/admin/chat/membership/",
        {"action": "remove_members", "_selected_action": [str(membership.pk)], "index": "0"},
    )
    if response.status_code == 302 and "/admin/login/" in response["Location"]:
        return "login"
    gone = not Membership.objects.filter(pk=membership.pk).exists()
    return "ok" if gone else "refused"


def _open_direct(w: KindWorld, role: str):
    user = w.users[role]
    if user is None:
        return _json(None, "post", "/direct", {"usernames": ["member"]})
    others = ["member", "victim", "owner"]
    client = http_client(user)
    response = client.post(
        "/direct",
        json.dumps({"usernames": [name for name in others if name != user.username]}),
        content_type="application/json",
    )
    if w.kind != "direct" or response.status_code != 200:
        return response.status_code
    return "same" if response.json()["slug"] == w.room.slug else "new"


def _admin_message_page(w: KindWorld, role: str):
    response = http_client(w.users[role]).get(f"/admin/chat/message/{w.message.pk}/change/")
    if response.status_code == 302 and "/admin/login/" in response["Location"]:
        return "login"
    if response.status_code == 200 and "owner&#x27;s words" in response.content.decode():
        return "ok"
    return "absent"  # the admin's "doesn't exist" redirect


def _admin_report_page(w: KindWorld, role: str):
    from chat.models import Report

    report = Report.objects.get_or_create(message=w.message, reporter=w.users["member"])[0]
    response = http_client(w.users[role]).get(f"/admin/chat/report/{report.pk}/change/")
    if response.status_code == 302 and "/admin/login/" in response["Location"]:
        return "login"
    if response.status_code == 200 and "owner&#x27;s words" in response.content.decode():
        return "ok"
    return response.status_code


def _members_message(w: KindWorld) -> Message:
    member = w.users["member"]
    mine = Message.objects.filter(room=w.room, author=member, system=False).first()
    return mine or services.post_message(room=w.room, author=member, body="member's").message


KIND_DOORS = {
    "room page": lambda w, r: page(w.users[r], f"/rooms/{w.room.slug}/"),
    "lobby": _listed_in_lobby,
    "read marker": lambda w, r: _json(
        w.users[r], "post", f"/rooms/{w.room.slug}/read", {"last_read_id": w.message.pk}
    ),
    "own restrictions": lambda w, r: page(w.users[r], f"/rooms/{w.room.slug}/restrictions"),
    "members list": lambda w, r: _json(w.users[r], "get", f"/rooms/{w.room.slug}/members"),
    "join (add yourself)": lambda w, r: _json(
        w.users[r],
        "post",
        f"/rooms/{w.room.slug}/members",
        {"username": w.users[r].username if w.users[r] else "x"},
    ),
    "add someone": lambda w, r: _json(
        w.users[r], "post", f"/rooms/{w.room.slug}/members", {"username": "newcomer"}
    ),
    "remove someone": lambda w, r: _json(
        w.users[r], "delete", f"/rooms/{w.room.slug}/members/victim"
    ),
    "leave": lambda w, r: _json(
        w.users[r],
        "delete",
        f"/rooms/{w.room.slug}/members/{w.users[r].username if w.users[r] else 'x'}",
    ),
    "open direct room": _open_direct,
    "admin: message list": _admin_message_list,
    "admin: remove member": _admin_remove,
    "hide (room owner)": lambda w, r: _hide_door(w.users[r], w.room, w.message),
    "admin: message page": _admin_message_page,
    "admin: report page": _admin_report_page,
    "notification setting": lambda w, r: choose_notifications(w.users[r], w.room),
    "search": lambda w, r: search_finds(w.users[r], "owner's words"),
    "search page": lambda w, r: search_page_finds(w.users[r], w.message.pk, "owner words"),
    "versions of the owner's message": lambda w, r: _versions_door(w.users[r], w.room, w.message),
    "versions of a member's message": lambda w, r: _versions_door(
        w.users[r], w.room, _members_message(w)
    ),
    "upload": lambda w, r: upload_door(w.users[r], w.room),
    "file": lambda w, r: file_door(w.users[r], w.room, w.users["owner"]),
}
KIND_SOCKET_DOORS = {
    "socket": lambda w, r: socket_answer(w.users[r], w.room.slug, None),
    "resume with since": lambda w, r: socket_answer(w.users[r], w.room.slug, None, since=1),
    "post": lambda w, r: socket_answer(w.users[r], w.room.slug, {"type": "post", "body": "hi"}),
    "history": lambda w, r: socket_answer(
        w.users[r], w.room.slug, {"type": "history", "before": 10**9}
    ),
    "report": lambda w, r: socket_answer(
        w.users[r], w.room.slug, {"type": "report", "id": w.message.pk, "reason": "matrix"}
    ),
    "inbox lists the room": lambda w, r: inbox_lists(w.users[r], w.room),
    "inbox hears a mention": lambda w, r: inbox_hears(w.users[r], w.room, w.users["owner"]),
}


# Doors whose knock changes the room: each role gets a fresh world after one of these.
CHANGING_DOORS = {
    "join (add yourself)",
    "add someone",
    "remove someone",
    "leave",
    "admin: remove member",
    "hide (room owner)",
}


def test_every_kind_door_has_a_row_and_every_row_a_door():
    assert set(KIND_DOORS) | set(KIND_SOCKET_DOORS) == set(KIND_MATRIX)
    assert all(set(row) == set(KINDS) for row in KIND_MATRIX.values())
    assert all(len(cells) == len(PLACES) for row in KIND_MATRIX.values() for cells in row.values())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("door", list(KIND_MATRIX))
async def test_kind_matrix(door: str, kind: str):
    w = await kind_world(kind)
    got = {}
    for role in PLACES:
        # Each role knocks on a world of its own making: one role's change (a leave, a removal)
        # must not decide the next one's answer.
        if door in KIND_SOCKET_DOORS:
            got[role] = await KIND_SOCKET_DOORS[door](w, role)
        else:
            got[role] = await sync_to_async(KIND_DOORS[door])(w, role)
        if door in CHANGING_DOORS:
            await database_sync_to_async(_flush_world)()
            w = await kind_world(kind)
    assert got == dict(zip(PLACES, KIND_MATRIX[door][kind], strict=True)), (door, kind)


def _flush_world() -> None:
    from django.contrib.auth import get_user_model

    from chat.models import Attachment, Change, Membership, ModerationAction, ReadMarker, Report

    Attachment.objects.all().delete()
    Report.objects.all().delete()
    ModerationAction.objects.all().delete()
    Change.objects.all().delete()
    ReadMarker.objects.all().delete()
    Membership.objects.all().delete()
    Message.objects.all().delete()
    Room.objects.all().delete()
    get_user_model().objects.all().delete()
