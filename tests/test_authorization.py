"""Who may do what: every action by every role, checked at the moment of the action."""

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.test import Client

from chat import services
from chat.models import Message
from tests.helpers import create_room, create_user, open_socket
from tests.test_moderation import make_moderator

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sockets_closed")]

ROLES = ["author", "member", "banned", "muted", "staff", "moderator", "anonymous"]

# What each role gets for each action. "ok" means the action took effect (or, for reads, was
# answered); other values are the error code, the close code, or the admin's HTTP answer.
EXPECTED = {
    #             read     post      edit        delete      history  typing  hide
    "author": ["ok", "ok", "ok", "ok", "ok", "ok", "login"],
    "member": ["ok", "ok", "forbidden", "forbidden", "ok", "ok", "login"],
    "banned": [4403, 4403, 4403, 4403, 4403, 4403, "login"],
    "muted": ["ok", "muted", "muted", "ok", "ok", "silent", "login"],
    "staff": ["ok", "ok", "forbidden", "forbidden", "ok", "ok", 403],
    "moderator": ["ok", "ok", "forbidden", "forbidden", "ok", "ok", "ok"],
    "anonymous": [4401, 4401, 4401, 4401, 4401, 4401, "login"],
}
ACTIONS = ["read", "post", "edit", "delete", "history", "typing", "hide"]


@database_sync_to_async
def world():
    author = create_user("author")
    users = {
        "author": author,
        "member": create_user("member"),
        "banned": create_user("banned"),
        "muted": create_user("muted"),
        "staff": create_user("staff", is_staff=True),
        "moderator": make_moderator("moderator"),
        "anonymous": None,
    }
    room = create_room("Matrix", author)
    services.restrict_user(room=room, user=users["banned"], kind="ban", by=users["moderator"])
    services.restrict_user(room=room, user=users["muted"], kind="mute", by=users["moderator"])
    message = services.post_message(room=room, author=author, body="the author's words").message
    # The muted user's own message from before the mute, for their edit and delete.
    muted_message = Message.objects.create(
        room=room, author=users["muted"], body="said before the mute", cursor=10_000
    )
    return users, room, message, muted_message


async def socket_answer(user, room, frame: dict | None, watcher=None) -> object:
    """Open a socket as `user`, send `frame`, and describe what came back."""
    communicator, _ = await open_socket(user, room.slug)
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
            import json

            answer = json.loads(output["text"])
            if answer["type"] == "error":
                return answer["code"]
            if answer["type"] in ("message", "history", "ack"):
                return "ok"
            if answer["type"] == "typing":
                continue
    finally:
        await communicator.disconnect()


def admin_hide(user, message) -> object:
    client = Client()
    if user is not None:
        client.force_login(user)
    response = client.post(
        "/admin/chat/message/",
        {"action": "hide_messages", "_selected_action": [str(message.pk)], "index": "0"},
    )
    if response.status_code == 302 and "/admin/login/" in response["Location"]:
        return "login"
    if response.status_code == 403:
        return 403
    hidden = Message.objects.filter(pk=message.pk, deleted_at__isnull=False).exists()
    if hidden:
        services.unhide_message(message=message, by=user)
    return "ok" if hidden else response.status_code


@pytest.mark.parametrize("role", ROLES)
async def test_authorization_matrix(role):
    users, room, message, muted_message = await world()
    user = users[role]
    own = muted_message if role == "muted" else message
    got = []
    for action in ACTIONS:
        if action == "read":
            got.append(await socket_answer(user, room, None))
        elif action == "post":
            got.append(await socket_answer(user, room, {"type": "post", "body": f"hi from {role}"}))
        elif action == "edit":
            got.append(
                await socket_answer(user, room, {"type": "edit", "id": own.pk, "body": "changed"})
            )
        elif action == "delete":
            target = own if role in ("author", "muted") else message
            got.append(await socket_answer(user, room, {"type": "delete", "id": target.pk}))
            if got[-1] == "ok":  # put it back for the next rows of this role
                await database_sync_to_async(services.restore_message)(
                    room=room, message_id=target.pk, by=users["moderator"]
                )
        elif action == "history":
            got.append(await socket_answer(user, room, {"type": "history", "before": 10**9}))
        elif action == "typing":
            # The typist gets nothing back; someone else in the room must see it (or not).
            other = users["member"] if role == "author" else users["author"]
            watcher, _ = await open_socket(other, room.slug)
            await watcher.connect()
            await watcher.receive_output(timeout=5)
            got_close = await socket_answer(user, room, {"type": "typing"})
            seen = "silent"
            while not await watcher.receive_nothing(timeout=0.7):
                frame = await watcher.receive_json_from()
                if frame["type"] == "typing":
                    seen = "ok"
            await watcher.disconnect()
            got.append(
                got_close if isinstance(got_close, int) else seen if role != "member" else "ok"
            )
        elif action == "hide":
            got.append(await sync_to_async(admin_hide)(user, message))
    assert dict(zip(ACTIONS, got, strict=True)) == dict(
        zip(ACTIONS, EXPECTED[role], strict=True)
    ), role
