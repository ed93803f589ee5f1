"""The terminal client (`chat-client`, chat_client/) in a pseudo-terminal against real daphne.

The other side of every conversation is a plain protocol client (tests/wsclient.py), so what the
terminal client sends is checked on the wire, and what it prints is checked on its screen.
"""

import asyncio
import io
import os
import re
import subprocess
import sys

import pexpect
import pytest
from channels.db import database_sync_to_async

from tests.conftest import ROOT, free_port
from tests.helpers import create_room, create_user, password_for, session_cookie_for
from tests.wsclient import Client

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 10
ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])")


def client_env(password: str | None) -> dict[str, str]:
    env = {
        **os.environ,
        "TERM": "xterm-256color",
        # Nobody in a pexpect pseudo-terminal answers prompt_toolkit's cursor position request.
        "PROMPT_TOOLKIT_NO_CPR": "1",
        "PYTHONIOENCODING": "utf-8",
    }
    env.pop("CHAT_PASSWORD", None)
    if password is not None:
        env["CHAT_PASSWORD"] = password
    return env


class Terminal:
    """`python -m chat_client` in a pseudo-terminal; blocking pexpect calls run in a thread."""

    def __init__(self, url: str, slug: str, user: str, password: str | None) -> None:
        self.transcript = io.StringIO()
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "chat_client", url, slug, "--user", user],
            cwd=str(ROOT),
            env=client_env(password),
            encoding="utf-8",
            codec_errors="replace",
            timeout=TIMEOUT,
            dimensions=(50, 220),
        )
        self.child.logfile_read = self.transcript

    async def expect(self, pattern: str) -> re.Match:
        await asyncio.to_thread(self.child.expect, pattern)
        return self.child.match

    async def expect_exact(self, text: str) -> None:
        await asyncio.to_thread(self.child.expect_exact, text)

    async def sendline(self, text: str) -> None:
        await asyncio.to_thread(self.child.sendline, text)

    async def exit_status(self) -> int:
        await asyncio.to_thread(self.child.expect, pexpect.EOF)
        await asyncio.to_thread(self.child.close)
        return self.child.exitstatus

    def screen(self) -> str:
        """Everything printed so far, without terminal control sequences."""
        return ANSI.sub("", self.transcript.getvalue()).replace("\r", "")

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)


@pytest.fixture
def terminals():
    opened: list[Terminal] = []

    def open_terminal(url: str, slug: str, user: str, password: str | None = "default") -> Terminal:
        if password == "default":
            password = password_for(user)
        terminal = Terminal(url, slug, user, password)
        opened.append(terminal)
        return terminal

    yield open_terminal
    for terminal in opened:
        terminal.close()


@database_sync_to_async
def seed_room():
    """A room with history: bob's greeting, omkar's deleted typo, omkar's edited question."""
    from chat import services

    omkar, bob = create_user("omkar"), create_user("bob")
    room = create_room("General", omkar)
    hello = services.post_message(room=room, author=bob, body="Hello omkar").message
    typo = services.post_message(room=room, author=omkar, body="secret typo").message
    services.delete_message(room=room, message_id=typo.pk, by=omkar)
    question = services.post_message(room=room, author=omkar, body="How are you").message
    services.edit_message(room=room, message_id=question.pk, by=omkar, body="How are you?")
    return room.slug, (hello.pk, typo.pk, question.pk), session_cookie_for(bob)


@database_sync_to_async
def post_as(username: str, slug: str, body: str) -> int:
    from django.contrib.auth import get_user_model

    from chat import services
    from chat.models import Room

    author = get_user_model().objects.get(username=username)
    room = Room.objects.get(slug=slug)
    return services.post_message(room=room, author=author, body=body).message.pk


@database_sync_to_async
def stored(body: str) -> int:
    from chat.models import Message

    return Message.objects.filter(body=body).count()


@database_sync_to_async
def end_sessions_of(username: str) -> int:
    from django.contrib.auth import SESSION_KEY, get_user_model
    from django.contrib.sessions.models import Session

    user = get_user_model().objects.get(username=username)
    ended = [s for s in Session.objects.all() if s.get_decoded().get(SESSION_KEY) == str(user.pk)]
    for session in ended:
        session.delete()
    return len(ended)


@database_sync_to_async
def ban(username: str, slug: str) -> None:
    from django.contrib.auth import get_user_model

    from chat import services
    from chat.models import Room

    users = get_user_model().objects
    services.restrict_user(
        room=Room.objects.get(slug=slug),
        user=users.get(username=username),
        kind="ban",
        by=users.get(username="bob"),
    )


async def next_message(client: Client, **expected) -> dict:
    """The next `message` frame whose message has the `expected` fields."""
    while True:
        frame = await client.receive_type("message")
        if all(frame["message"].get(k) == v for k, v in expected.items()):
            return frame


async def test_chat_from_the_terminal_through_a_server_restart(daphne_factory, terminals):
    server = daphne_factory()
    slug, (hello, typo, question), bob_cookie = await seed_room()
    bob = await Client.open(server.url, bob_cookie, slug)

    term = terminals(server.url, slug, "omkar")
    # History, with ids and local times; the deleted message is a tombstone, its text never shown.
    await term.expect(rf"\[\d\d:\d\d\] Id{hello} bob: Hello omkar")
    await term.expect(rf"\[\d\d:\d\d\] Id{typo} deleted by omkar")
    await term.expect(rf"\[\d\d:\d\d\] Id{question} omkar: How are you\? \(edited\)")
    await term.expect_exact("online: bob, omkar")
    assert "secret typo" not in term.screen()

    # A line typed is a post: bob receives it, with a fresh client_id; the terminal shows it.
    await term.sendline("hi from the terminal")
    frame = await next_message(bob, body="hi from the terminal")
    assert frame["message"]["author"] == "omkar"
    assert re.fullmatch(r"[0-9a-f]{32}", frame["client_id"])
    mine = frame["message"]["id"]
    await term.expect(rf"Id{mine} omkar: hi from the terminal")

    # /delete: bob gets the tombstone.
    await term.sendline(f"/delete {mine}")
    frame = await next_message(bob, id=mine)
    assert frame["message"]["deleted"] is True
    assert frame["message"]["deleted_by"] == "omkar"
    assert frame["message"]["body"] == ""
    await term.expect_exact(f"Id{mine} deleted by omkar")

    # /edit, and a refused edit comes back as a readable error line.
    await term.sendline(f"/edit Id{question} How are you today?")
    frame = await next_message(bob, id=question)
    assert frame["message"]["body"] == "How are you today?"
    await term.expect_exact(f"Id{question} edited by omkar: How are you today?")
    await term.sendline(f"/edit {hello} not mine")
    await term.expect_exact("! forbidden: You can only edit your own messages.")

    # Bob's messages appear; /who lists who is online.
    await bob.send({"type": "post", "body": "hello from bob", "client_id": "b1"})
    bobs = (await next_message(bob, body="hello from bob"))["message"]["id"]
    await term.expect(rf"\[\d\d:\d\d\] Id{bobs} bob: hello from bob")
    await term.sendline("/who")
    await term.expect_exact("* online: bob, omkar")

    # The server dies, maybe just as a post is on its way; more is typed while it is down, and
    # bob's message is stored meanwhile. After the restart, all of it is there exactly once.
    await term.sendline("racing the kill")
    await asyncio.to_thread(server.stop, kill=True)
    await term.expect_exact("* reconnecting…")
    await term.sendline("typed while offline")
    await term.expect_exact("* not connected: the message will be sent once reconnected")
    during = await post_as("bob", slug, "posted during the restart")
    await asyncio.to_thread(server.start)
    await term.expect_exact("* reconnected")
    await term.expect(rf"Id{during} bob: posted during the restart")
    await term.expect(r"Id\d+ omkar: typed while offline")

    bob = await Client.open(server.url, bob_cookie, slug)
    await bob.send({"type": "post", "body": "after the restart"})
    after = (await next_message(bob, body="after the restart"))["message"]["id"]
    await term.expect(rf"Id{after} bob: after the restart")
    for body in ("racing the kill", "typed while offline"):
        assert await stored(body) == 1, body
    # Bob sees the terminal's posts (the page of ready, or live frames), each once.
    seen = {m["id"]: m for m in bob.ready["messages"]}
    for frame in await bob.drain(0.5):
        if frame["type"] == "message":
            seen[frame["message"]["id"]] = frame["message"]
    bodies = [m["body"] for m in seen.values()]
    assert bodies.count("racing the kill") == 1
    assert bodies.count("typed while offline") == 1

    # /quit exits 0, and nothing was printed twice.
    await term.sendline("/quit")
    assert await term.exit_status() == 0
    screen = term.screen()
    for line in (
        f"Id{hello} bob: Hello omkar",
        f"Id{typo} deleted by omkar",
        f"Id{mine} omkar: hi from the terminal",
        f"Id{mine} deleted by omkar",
        f"Id{bobs} bob: hello from bob",
        f"Id{during} bob: posted during the restart",
        f"Id{after} bob: after the restart",
        "omkar: racing the kill",
        "omkar: typed while offline",
    ):
        assert screen.count(line) == 1, (line, screen)
    await bob.close()


async def test_a_session_that_ends_is_renewed_by_logging_in_again(daphne_factory, terminals):
    server = daphne_factory(CHAT_SESSION_CHECK_INTERVAL="0.3")
    slug, _, bob_cookie = await seed_room()
    bob = await Client.open(server.url, bob_cookie, slug)
    term = terminals(server.url, slug, "omkar")
    await term.expect_exact("/help for commands")

    assert await end_sessions_of("omkar") >= 1  # logged out elsewhere: the server closes 4401
    await term.expect_exact("* session ended: logging in again")
    await term.expect_exact("* reconnected")
    await term.sendline("still here")
    frame = await next_message(bob, body="still here")
    await term.expect_exact(f"Id{frame['message']['id']} omkar: still here")
    await term.sendline("/quit")
    assert await term.exit_status() == 0
    await bob.close()


async def test_a_ban_ends_the_client_with_status_5(daphne_factory, terminals):
    server = daphne_factory()
    slug, _, _ = await seed_room()
    term = terminals(server.url, slug, "omkar")
    await term.expect_exact("/help for commands")
    await ban("omkar", slug)
    # 4403 is a ban or (§4) a removal: the words fit both.
    await term.expect_exact("You were removed from the room General (or banned from it).")
    assert await term.exit_status() == 5
    # And a banned user who starts the client is told at once.
    again = terminals(server.url, slug, "omkar")
    await again.expect_exact("You are banned from this room.")
    assert await again.exit_status() == 5


async def test_wrong_password_and_unknown_room_and_no_server(daphne_factory, terminals):
    server = daphne_factory()
    slug, _, _ = await seed_room()

    # The password is asked for when CHAT_PASSWORD is not set.
    wrong = terminals(server.url, slug, "omkar", password=None)
    await wrong.expect_exact("Password for omkar:")
    await wrong.sendline("not the password")
    await wrong.expect_exact("Login failed: wrong username or password.")
    assert await wrong.exit_status() == 2

    nowhere = terminals(server.url, "no-such-room", "omkar")
    await nowhere.expect_exact("No such room: no-such-room")
    assert await nowhere.exit_status() == 3

    absent = f"http://127.0.0.1:{free_port()}"
    unreachable = terminals(absent, slug, "omkar")
    await unreachable.expect_exact(f"Cannot reach {absent}")
    assert await unreachable.exit_status() == 4


async def test_lines_piped_into_the_client_are_sent_through_the_rate_limit(daphne_factory):
    server = daphne_factory(CHAT_RATE_LIMIT_POSTS="4", CHAT_RATE_LIMIT_WINDOW="1")
    slug, _, bob_cookie = await seed_room()
    bob = await Client.open(server.url, bob_cookie, slug)
    burst = [f"burst {n}" for n in range(10)]
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "chat_client", server.url, slug, "--user", "omkar"],
        input="".join(f"{line}\n" for line in ["piped in", *burst, "/who"]),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=client_env(password_for("omkar")),
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    frame = await next_message(bob, body="piped in")
    assert f"Id{frame['message']['id']} omkar: piped in" in result.stdout
    assert "* online: bob, omkar" in result.stdout
    # Past the limit, posts are refused with a readable line and go again after retry_after:
    # every one is stored and shown exactly once.
    assert re.search(r"! rate_limited: .+ \(retry in \d+\.\ds\)", result.stdout)
    for body in ["piped in", *burst]:
        assert await stored(body) == 1, body
        assert len(re.findall(rf"Id\d+ omkar: {body}\n", result.stdout)) == 1, body
    await bob.close()


def test_the_client_imports_neither_django_nor_the_server():
    code = (
        "import sys, chat_client.cli, chat_client.room;"
        "print(*sorted({m.split('.')[0] for m in sys.modules} & {'django', 'chat', 'chatsite'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == []


def test_a_batched_presence_frame_is_told_as_who_joined_and_left(capsys):
    """A crowd's joins and leaves in one frame (neither `joined` nor `left`): the difference."""
    from chat_client.room import ChatClient

    client = ChatClient("http://127.0.0.1:1", "general", "omkar", "-")
    client.on_presence({"type": "presence", "online": ["omkar", "ann"], "joined": "ann"})
    crowd = ["omkar", "bob", "cy", "di", "ed"]
    client.on_presence({"type": "presence", "online": crowd, "joined": None, "left": None})
    fewer = ["omkar", "bob"]
    client.on_presence({"type": "presence", "online": fewer, "joined": None, "left": None})
    assert capsys.readouterr().out.splitlines() == [
        "* ann joined",
        "* 4 people joined",
        "* ann left",
        "* cy, di, ed left",
    ]
    assert client.online == ["omkar", "bob"]


# --- private rooms and direct messages (PROTOCOL.md §4) -----------------------------------------


@database_sync_to_async
def seed_people(*private: tuple[str, str, list[str]]) -> dict[str, str]:
    """omkar, bob and carol; a public room General; each `(name, owner, members)` a private
    room. The session cookies by username."""
    from chat import services
    from chat.models import Membership

    people = {name: create_user(name) for name in ("omkar", "bob", "carol")}
    create_room("General", people["omkar"])
    for name, owner, members in private:
        room = services.create_room(
            name=name, created_by=people[owner], kind="private", enforce_limit=False
        )
        for member in members:
            Membership.objects.create(room=room, user=people[member])
    return {name: session_cookie_for(user) for name, user in people.items()}


def web_json(server_url: str, session: str, method: str, path: str, body=None) -> tuple[int, dict]:
    """A JSON door of §4 called as the page calls it: the session cookie, and the csrftoken
    cookie a page sets sent back as X-CSRFToken."""
    import http.cookies
    import json
    import urllib.error
    import urllib.request

    from django.conf import settings

    with urllib.request.urlopen(f"{server_url}/accounts/login/", timeout=TIMEOUT) as page:
        jar = http.cookies.SimpleCookie(page.headers["Set-Cookie"])
    token = jar["csrftoken"].value
    request = urllib.request.Request(
        f"{server_url}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={
            "Cookie": f"{settings.SESSION_COOKIE_NAME}={session}; csrftoken={token}",
            "X-CSRFToken": token,
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@database_sync_to_async
def bodies_in(slug: str) -> list[tuple[str, bool]]:
    from chat.models import Message

    return list(
        Message.objects.filter(room__slug=slug).order_by("id").values_list("body", "system")
    )


async def test_msg_from_the_terminal_reaches_the_direct_room_the_web_gives_the_other_side(
    daphne_factory, terminals
):
    server = daphne_factory()
    cookies = await seed_people(("Plans", "omkar", []))
    term = terminals(server.url, "general", "omkar")
    await term.expect_exact("* public room General (general), logged in as omkar")

    await term.sendline("/msg bob hello bob")
    dm = (await term.expect(r"\* now in direct messages with bob \((dm-[0-9a-f]+)\)")).group(1)
    await term.expect(r"Id\d+ omkar: hello bob")
    # Bob, from the web, asks for the conversation of the same two people: the same room.
    status, answer = await asyncio.to_thread(
        web_json, server.url, cookies["bob"], "POST", "/direct", {"usernames": ["omkar"]}
    )
    assert (status, answer) == (200, {"slug": dm})
    bob = await Client.open(server.url, cookies["bob"], dm)
    assert bob.ready["room"]["kind"] == "direct"
    assert bob.ready["room"]["name"] == "omkar"
    assert [m["body"] for m in bob.ready["messages"]] == ["hello bob"]
    await bob.send({"type": "post", "body": "hi omkar", "client_id": "b1"})
    await term.expect(r"Id\d+ bob: hi omkar")

    # /rooms: the user's rooms, the private one among them, the current one marked.
    await term.sendline("/rooms")
    await term.expect_exact("* your rooms")
    await term.expect(r"  public\s+General\s+general")
    screen = term.screen()
    assert re.search(rf"> direct\s+bob\s+{dm}", screen), screen
    assert re.search(r"  private\s+Plans\s+plans", screen), screen

    # Back to the public room: what happened there meanwhile, and only that.
    meanwhile = await post_as("bob", "general", "meanwhile in general")
    await term.sendline("/join general")
    await term.expect_exact("* back in public room General (general)")
    await term.expect(rf"Id{meanwhile} bob: meanwhile in general")
    # /msg again reuses the conversation.
    await term.sendline("/msg bob again")
    await term.expect_exact(f"* back in direct messages with bob ({dm})")
    frame = await next_message(bob, body="again")
    assert frame["message"]["author"] == "omkar"

    # Refusals are the server's sentences; the client stays where it is.
    await term.sendline("/msg nobody hi")
    await term.expect_exact("! There is no user called nobody.")
    await term.sendline("/join plans-of-someone-else")
    await term.expect_exact("! No such room.")
    await term.sendline("/leave")
    await term.expect_exact("! You cannot leave here.")
    await term.sendline("/who")
    await term.expect_exact("* online: bob, omkar")
    await term.sendline("/quit")
    assert await term.exit_status() == 0
    screen = term.screen()
    for line in ("omkar: hello bob", "bob: hi omkar", "bob: meanwhile in general", "omkar: again"):
        assert screen.count(line) == 1, (line, screen)
    assert "not connected" not in screen  # a switch is not a lost connection
    assert await bodies_in(dm) == [("hello bob", False), ("hi omkar", False), ("again", False)]
    await bob.close()


async def test_a_switch_never_takes_an_unconfirmed_post_to_another_room(daphne_factory, terminals):
    # The second post is held back by the rate limit for 10 s: longer than a switch waits.
    server = daphne_factory(CHAT_RATE_LIMIT_POSTS="1", CHAT_RATE_LIMIT_WINDOW="10")
    await seed_people(("Plans", "omkar", []))
    term = terminals(server.url, "general", "omkar")
    await term.expect_exact("/help for commands")
    await term.sendline("one")
    await term.expect(r"Id\d+ omkar: one")
    await term.sendline("two")
    await term.expect_exact("! rate_limited")
    await term.sendline("/join plans")
    await term.expect_exact("! 1 message not confirmed yet in general: try again once sent")
    # It goes out in its own room when the limit allows; then the switch is free.
    await term.expect(r"Id\d+ omkar: two")
    await term.sendline("/join plans")
    await term.expect_exact("* now in private room Plans (plans)")
    await term.sendline("three")
    await term.expect(r"Id\d+ omkar: three")
    assert await bodies_in("general") == [("one", False), ("two", False)]
    assert await bodies_in("plans") == [("three", False)]


async def test_invite_and_kick_from_the_terminal_with_notices_as_quiet_lines(
    daphne_factory, terminals
):
    server = daphne_factory()
    await seed_people(("Plans", "omkar", []))
    owner = terminals(server.url, "plans", "omkar")
    await owner.expect_exact("* private room Plans (plans), logged in as omkar")

    await owner.sendline("/invite bob")
    await owner.expect(r"\[\d\d:\d\d\] -- omkar added bob --")
    await owner.sendline("/invite bob")
    await owner.expect_exact("! bob is already a member.")
    await owner.sendline("/invite nobody")
    await owner.expect_exact("! There is no user called nobody.")

    # Bob can now open the room; the notice is in its history, as a quiet line.
    bob = terminals(server.url, "plans", "bob")
    await bob.expect_exact("* private room Plans (plans), logged in as bob")
    await bob.expect(r"\[\d\d:\d\d\] -- omkar added bob --")
    await bob.sendline("/kick omkar")
    await bob.expect_exact("! Only the room's owners can remove members.")

    await owner.sendline("/kick bob")
    await owner.expect(r"-- omkar removed bob --")
    await bob.expect_exact("You were removed from the room Plans (or banned from it).")
    assert await bob.exit_status() == 5
    assert await bodies_in("plans") == [("omkar added bob", True), ("omkar removed bob", True)]
    for screen in (owner.screen(), bob.screen()):
        assert "omkar: omkar added bob" not in screen


async def test_leave_goes_back_to_the_room_before_or_ends_the_client(daphne_factory, terminals):
    server = daphne_factory()
    cookies = await seed_people(("Plans", "carol", ["omkar"]), ("Ideas", "omkar", ["carol"]))
    carol = await Client.open(server.url, cookies["carol"], "plans")
    term = terminals(server.url, "general", "omkar")
    await term.expect_exact("/help for commands")
    await term.sendline("/join plans")
    await term.expect_exact("* now in private room Plans (plans)")

    await term.sendline("/leave")
    await term.expect_exact("* You left Plans.")
    await term.expect_exact("* back in public room General (general)")
    frame = await next_message(carol, body="omkar left")
    assert frame["message"]["system"] is True
    await term.sendline("/join plans")  # gone for him now, like a room that never existed
    await term.expect_exact("! No such room.")
    await term.sendline("/quit")
    assert await term.exit_status() == 0

    # Started in a private room it owns: the last owner cannot leave while others remain; after
    # removing them it can, and with no room to go back to the client ends (status 0).
    alone = terminals(server.url, "ideas", "omkar")
    await alone.expect_exact("* private room Ideas (ideas), logged in as omkar")
    await alone.sendline("/leave")
    await alone.expect_exact("! The room's last owner cannot leave while others remain")
    await alone.sendline("/kick carol")
    await alone.expect(r"-- omkar removed carol --")
    await alone.sendline("/leave")
    await alone.expect_exact("You left Ideas.")
    assert await alone.exit_status() == 0
    await carol.close()


async def test_reactions_and_replies_from_the_terminal(daphne_factory, terminals):
    """PROTOCOL.md §6 in the terminal: `/reply` and `/react`, replies shown as `↳ reply to …`
    above the reply, reactions as `[👍 2]`; the body as written (Markdown source), not html."""
    server = daphne_factory()
    slug, (hello, _typo, _question), bob_cookie = await seed_room()
    omkar = terminals(server.url, slug, "omkar")
    await omkar.expect_exact("logged in as omkar")
    web = await Client.open(server.url, bob_cookie, slug)
    try:
        await omkar.sendline(f"/reply Id{hello} **hi** bob")
        frame = await next_message(web, body="**hi** bob")
        assert frame["message"]["reply_to"]["id"] == hello
        reply = frame["message"]["id"]
        await omkar.expect_exact(f"    ↳ reply to Id{hello} bob: Hello omkar")
        await omkar.expect(rf"Id{reply} omkar: \*\*hi\*\* bob")

        await omkar.sendline(f"/react Id{hello} 👍")
        await next_message(web, id=hello)
        await omkar.expect_exact(f"Id{hello} reactions: [👍 1]")
        await web.send({"type": "react", "id": hello, "emoji": "👍"})
        await omkar.expect_exact(f"Id{hello} reactions: [👍 2]")
        await omkar.sendline(f"/react Id{hello} 👍")
        await omkar.expect_exact(f"Id{hello} reactions: [👍 1]")
        await omkar.sendline(f"/react Id{hello}")
        await omkar.expect_exact("! usage: /react ID emoji")
        await omkar.sendline(f"/react Id{hello} a")
        await omkar.expect_exact("! invalid: A reaction is one emoji (not a letter or digit).")
    finally:
        await web.connection.close()


async def test_the_other_rooms_unread_counts_and_a_bell_for_mentions(daphne_factory, terminals):
    """PROTOCOL.md §5 in the terminal: a status line of the other rooms' unread counts (the room
    on screen is read: its marker moves), a bell and a line for a mention or a direct message,
    and `/j` to go to the room."""
    server = daphne_factory()
    slug, _ids, _cookie = await seed_room()

    @database_sync_to_async
    def other_room() -> str:
        from django.contrib.auth import get_user_model

        from chat import services

        User = get_user_model()
        omkar, bob = User.objects.get(username="omkar"), User.objects.get(username="bob")
        room = create_room("Random", bob)
        services.add_member(room=room, by=omkar, username="omkar")
        return room.slug

    random_slug = await other_room()
    omkar = terminals(server.url, slug, "omkar")
    await omkar.expect_exact("logged in as omkar")
    await asyncio.sleep(1)  # the inbox socket opens beside the room's
    await post_as("bob", random_slug, "anyone around?")
    await omkar.expect_exact("* unread: Random 1")
    await post_as("bob", random_slug, "@omkar are you there")
    await omkar.expect_exact(f"\a🔔 bob mentioned you in Random ({random_slug}): @omkar are you")
    await omkar.sendline(f"/j {random_slug}")
    await omkar.expect_exact("now in public room Random")
    await post_as("bob", slug, "back in general")
    await omkar.expect(r"\* unread: General \d")


async def test_search_from_the_terminal(daphne_factory, terminals):
    """`/search words` (PROTOCOL.md §7): results with their room and id, matched words marked."""
    server = daphne_factory()
    slug, (hello, _typo, _question), _cookie = await seed_room()
    omkar = terminals(server.url, slug, "omkar")
    await omkar.expect_exact("logged in as omkar")
    await omkar.sendline("/search omkar")
    await omkar.expect_exact("* 1 found (newest first):")
    await omkar.expect(rf"{slug} Id{hello} bob: Hello \*omkar\*")
    await omkar.sendline("/search typo")  # deleted: never found
    await omkar.expect_exact("* nothing found for typo")
    await omkar.sendline("/search")
    await omkar.expect_exact("! usage: /search words")


# --- typing notices (PROTOCOL.md §2 `typing`) ---------------------------------------------------


def test_typing_is_shown_at_most_once_per_3_seconds_per_user_and_never_for_oneself(
    capsys, monkeypatch
):
    import chat_client.room as room_module
    from chat_client.room import ChatClient

    now = [1000.0]
    monkeypatch.setattr(room_module.time, "monotonic", lambda: now[0])
    client = ChatClient("http://127.0.0.1:1", "general", "omkar", "-")
    for user in ("bob", "bob", "omkar", "ann", "\x1b[2Jeve"):
        asyncio.run(client.on_frame({"type": "typing", "user": user}))
    now[0] += 2.9
    asyncio.run(client.on_frame({"type": "typing", "user": "bob"}))  # within 3 s: quiet
    now[0] += 0.2
    asyncio.run(client.on_frame({"type": "typing", "user": "bob"}))
    for malformed in ({"type": "typing"}, {"type": "typing", "user": 5}):
        asyncio.run(client.on_frame(malformed))
    assert capsys.readouterr().out.splitlines() == [
        "* bob is typing…",
        "* ann is typing…",
        "* ?[2Jeve is typing…",
        "* bob is typing…",
    ]


async def test_the_terminal_sends_and_shows_typing_notices(daphne_factory, terminals):
    server = daphne_factory()
    slug, _, bob_cookie = await seed_room()
    omkar = terminals(server.url, slug, "omkar")
    await omkar.expect_exact("/help for commands")
    web = await Client.open(server.url, bob_cookie, slug)
    try:
        # Typing in the terminal (no Enter yet) tells the room.
        await asyncio.to_thread(omkar.child.send, "half a thou")
        frame = await web.receive_type("typing")
        assert frame == {"type": "typing", "user": "omkar"}
        await asyncio.to_thread(omkar.child.sendline, "ght")
        await next_message(web, body="half a thought")

        # Someone else typing shows as a line above the prompt.
        await web.send({"type": "typing"})
        await omkar.expect_exact("* bob is typing…")
    finally:
        await web.close()
    assert "omkar is typing" not in omkar.screen()


async def test_upload_from_the_terminal_posts_the_file_with_its_caption(
    daphne_factory, terminals, tmp_path
):
    """`/upload PATH [caption]` (PROTOCOL.md §8): the file goes up, then a post attaches it;
    every client shows it as `[file: name (size)]`."""
    server = daphne_factory()
    slug, _ids, bob_cookie = await seed_room()
    notes = tmp_path / "meeting notes.txt"
    notes.write_bytes(b"x" * 2048)
    omkar = terminals(server.url, slug, "omkar")
    await omkar.expect_exact("logged in as omkar")
    web = await Client.open(server.url, bob_cookie, slug)
    try:
        await omkar.sendline(f'/upload "{notes}" the notes')
        frame = await next_message(web, body="the notes")
        (attachment,) = frame["message"]["attachments"]
        assert (attachment["name"], attachment["size"]) == ("meeting notes.txt", 2048)
        await omkar.expect_exact("    [file: meeting notes.txt (2.0 kB)]")
        await omkar.sendline(f"/upload {tmp_path}/missing.txt")
        await omkar.expect_exact("! cannot read")
        await omkar.sendline("/upload")
        await omkar.expect_exact("! usage: /upload PATH [caption]")
    finally:
        await web.connection.close()
