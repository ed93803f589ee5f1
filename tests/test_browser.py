"""The room page in a real browser: Debian's Chromium through Playwright, against real daphne
processes sharing the test database and a real Redis.

Playwright's sync API leaves its event loop "running" in this thread while a test body runs, so
Django refuses ORM calls made here (SynchronousOnlyOperation). Rather than setting
DJANGO_ALLOW_ASYNC_UNSAFE (the daphne subprocesses copy os.environ, and the flag would hide real
async-safety bugs in the server), ORM work runs in a worker thread (`orm`), and Playwright is
started per test by a fixture that depends on the server, so it has stopped before the
transactional database is flushed.
"""

import re
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connections
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from chat import services
from chat.models import Message, ModerationAction, ReadMarker, Report, Room
from tests.helpers import create_room, create_user, make_moderator, password_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
WAIT = 5_000  # ms: how long a page may take to show what the server sent
# After a server restart the page reconnects with exponential backoff (up to 10 s between tries).
RECONNECT_WAIT = 25_000
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}

MESSAGES = "#messages li.message[data-id]"

T = TypeVar("T")


def orm(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run database code in a worker thread, which has no running event loop."""

    def call() -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call).result()


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's `chromium` package "
            "(apt-get install chromium); the browser tests use it and do not skip."
        )
    return CHROMIUM


@pytest.fixture
def server_env() -> dict[str, str]:
    """Extra environment for the test's daphne (a test may parametrize it)."""
    return {}


@pytest.fixture
def server(static_files, daphne_factory, server_env) -> Iterator:
    server = daphne_factory(**server_env)
    # The page loads the hashed name from the manifest; both names must be served.
    for name in ("chat/room.js", static_files["chat/room.js"]):
        with urllib.request.urlopen(f"{server.url}{settings.STATIC_URL}{name}", timeout=5) as r:
            assert r.status == 200, name
            assert b"window.chatDebug" in r.read(), name
    yield server
    # Shown by pytest only when the test fails.
    print(f"--- daphne log ({server.url}) ---\n{server.output()}")


@pytest.fixture
def browser(chromium, server) -> Iterator[Browser]:
    """One Chromium per test. Depends on `server` (so on the transactional database): it is
    closed, and Playwright's event loop with it, before the database is flushed."""
    expect.set_options(timeout=WAIT)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@dataclass
class Person:
    """One user, logged in through the login page in their own browser context."""

    name: str
    page: Page
    base_url: str
    dialogs: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def goto(self, path: str) -> None:
        self.page.goto(f"{self.base_url}{path}")

    def open_room(self, slug: str) -> None:
        self.goto(f"/rooms/{slug}/")
        self.expect_connected()

    def expect_connected(self, timeout: float = WAIT) -> None:
        state = self.page.locator("#conn-state")
        expect(state).to_have_attribute("data-state", "connected", timeout=timeout)
        expect(state).to_have_text("connected")

    def send(self, text: str) -> None:
        box = self.page.locator("#composer-input")
        box.fill(text)
        box.press("Enter")
        expect(box).to_have_value("")

    @property
    def messages(self) -> Locator:
        """Every stored message shown (tombstones included), not pending posts."""
        return self.page.locator(MESSAGES)

    def message(self, body: str) -> Locator:
        """The stored message(s) whose body is exactly `body`."""
        return self.messages.filter(
            has=self.page.locator(".body", has_text=re.compile(f"^{re.escape(body)}$"))
        )

    def shown(self) -> list[dict[str, Any]]:
        """The rows of the message list as the user sees them, in page order."""
        return self.messages.evaluate_all(
            """rows => rows.map(li => ({
                id: Number(li.dataset.id),
                author: li.querySelector('.author')?.textContent,
                body: li.querySelector('.body')?.textContent ?? null,
                tombstone: li.classList.contains('tombstone'),
            }))"""
        )

    def cursor(self) -> int | None:
        return self.page.evaluate("window.chatDebug.cursor()")


@pytest.fixture
def people(browser, server) -> Iterator[Callable[..., Person]]:
    """`people("alice", next="/rooms/x/", **context_options)`: log in, land on `next`.
    `people("mod", next="/admin/", admin=True)` logs in through the admin's own login form."""
    made: list[Person] = []

    def login(
        username: str, next: str = "/", admin: bool = False, **context_options: Any
    ) -> Person:
        context = browser.new_context(**{**DESKTOP, **context_options})
        context.set_default_timeout(WAIT)
        page = context.new_page()
        person = Person(username, page, server.url)
        made.append(person)

        def on_dialog(dialog) -> None:
            person.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        page.on("dialog", on_dialog)
        page.on("pageerror", lambda error: person.page_errors.append(str(error)))
        page.on("console", lambda msg: person.console.append(f"{msg.type}: {msg.text}"))

        if admin:
            # The admin sends an anonymous visitor to its own login form.
            person.goto(next)
            expect(page).to_have_url(f"{server.url}/admin/login/?next={quote(next)}")
        else:
            person.goto(f"/accounts/login/?next={quote(next)}")
        page.locator("input[name=username]").fill(username)
        page.locator("input[name=password]").fill(password_for(username))
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(f"{server.url}{next}")
        if admin:
            expect(page.locator("#user-tools strong")).to_have_text(username)
            return person
        expect(page.locator(".whoami .username")).to_have_text(username)
        if next.startswith("/rooms/"):
            person.expect_connected()
        return person

    yield login
    for person in made:
        print(f"--- {person.name}'s console ---", *person.console, sep="\n")
        person.page.context.close()
    problems = {
        person.name: person.dialogs + person.page_errors
        for person in made
        if person.dialogs or person.page_errors
    }
    assert not problems, f"dialogs or uncaught page errors: {problems}"


@pytest.fixture
def alice():
    return orm(create_user, "alice")


@pytest.fixture
def bob():
    return orm(create_user, "bob")


@pytest.fixture
def mod():
    """A moderator: staff, in the Moderators group (made again after each flush)."""
    return orm(make_moderator, "mod")


@pytest.fixture
def room(alice) -> Room:
    return orm(create_room, "General Chat", alice)


def room_state(slug: str) -> tuple[int, list[tuple[int, str, str, bool]]]:
    """The room's cursor and its messages as the database has them: (id, author, body, deleted)."""
    room = Room.objects.get(slug=slug)
    rows = [
        (m.id, m.author.username, m.body, m.deleted_at is not None)
        for m in Message.objects.filter(room=room).select_related("author").order_by("id")
    ]
    return room.cursor, rows


def admin_row(person: Person, message_id: int | str) -> Locator:
    """The admin changelist's row for one message."""
    return person.page.locator(
        "#result_list tbody tr",
        has=person.page.locator(f'input.action-select[value="{message_id}"]'),
    )


def run_admin_action(person: Person, message_id: int | str, action: str) -> None:
    """On the changelist: tick the message, pick the action by its label, press Go."""
    admin_row(person, message_id).locator("input.action-select").check()
    person.page.locator("select[name=action]").select_option(label=action)
    person.page.get_by_role("button", name="Go").click()


def load_all_history(person: Person) -> None:
    """Scroll to the top until the page says it holds the beginning of the room."""
    log = person.page.locator("#messages")
    for _ in range(10):
        if "complete" in (log.get_attribute("class") or "").split():
            return
        before = person.messages.count()
        log.evaluate("el => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); }")
        person.page.wait_for_function(
            """([selector, before]) => document.querySelectorAll(selector).length > before
                || document.getElementById('messages').classList.contains('complete')""",
            arg=[MESSAGES, before],
            timeout=WAIT,
        )
    raise AssertionError("the page never reached the beginning of the room")


# --- tests -----------------------------------------------------------------------------------


def test_two_users_chat_delete_and_script_stays_text(people, alice, bob):
    # Alice starts a room from the lobby form; Bob finds it in the lobby's list.
    a = people("alice")
    a.page.locator("form#create-room input[name=name]").fill("General Chat")
    a.page.locator("form#create-room button[type=submit]").click()
    expect(a.page).to_have_url(f"{a.base_url}/rooms/general-chat/")
    a.expect_connected()

    b = people("bob")
    b.page.locator("#rooms a", has_text="General Chat").click()
    expect(b.page).to_have_url(f"{b.base_url}/rooms/general-chat/")
    b.expect_connected()
    expect(a.page.locator("#online li")).to_have_text(["alice", "bob"])

    a.send("Hello bob")
    expect(b.message("Hello bob").locator(".author")).to_have_text("alice")
    b.send("Hi alice, got it")
    expect(a.message("Hi alice, got it").locator(".author")).to_have_text("bob")

    # Markup in a message is text, never markup.
    img = "<img src=x onerror=alert(1)>"
    script = "<script>window.pwned=1</script>"
    a.send(img)
    a.send(script)
    bodies = ["Hello bob", "Hi alice, got it", img, script]
    for person in (a, b):
        expect(person.messages.locator(".body")).to_have_text(bodies)
        assert [row["body"] for row in person.shown()] == bodies
        expect(person.page.locator("#messages img")).to_have_count(0)
        expect(person.page.locator("#messages script")).to_have_count(0)
        assert person.page.evaluate("typeof window.pwned") == "undefined"
        assert person.dialogs == []

    # Only your own messages carry edit and delete buttons.
    expect(b.message("Hello bob").locator("button.edit, button.delete")).to_have_count(0)
    expect(b.message("Hi alice, got it").locator("button.delete")).to_have_count(1)

    # A URL becomes a link that neither leaks the referrer nor hands over window.opener.
    a.send("Docs at https://example.com/a?b=1.")
    link = b.message("Docs at https://example.com/a?b=1.").locator(".body a")
    expect(link).to_have_count(1)
    expect(link).to_have_text("https://example.com/a?b=1")
    expect(link).to_have_attribute("href", "https://example.com/a?b=1")
    rel = link.evaluate("a => [...a.relList]")
    assert "noopener" in rel and "noreferrer" in rel, rel

    # Alice deletes "Hello bob": Bob sees a tombstone, and the text is gone from his page.
    hello = a.message("Hello bob")
    hello_id = hello.get_attribute("data-id")
    hello.locator("button.delete").click()
    # It asks once, in the message's own toolbar.
    expect(hello.locator(".actions .confirm-question")).to_have_text("Delete this message?")
    hello.locator("button.delete-confirm").click()
    for person in (a, b):
        tombstone = person.page.locator(f'#messages li.message.tombstone[data-id="{hello_id}"]')
        expect(tombstone).to_contain_text("deleted by alice")
        expect(tombstone.locator(".body")).to_have_count(0)
        expect(person.page.locator("#messages")).not_to_contain_text("Hello bob")
        assert "Hello bob" not in person.page.locator("#messages").inner_html()
    expect(b.messages).to_have_count(5)
    _, rows = orm(room_state, "general-chat")
    assert [(author, deleted) for _, author, _, deleted in rows] == [
        ("alice", True),
        ("bob", False),
        ("alice", False),
        ("alice", False),
        ("alice", False),
    ]


@pytest.mark.parametrize("server_env", [{"CHAT_PRESENCE_BURST": "1", "CHAT_PRESENCE_WINDOW": "20"}])
def test_a_crowd_joining_at_once_is_one_line(people, alice, bob, room):
    """Presence batched in a crowd (one frame, neither `joined` nor `left`): the page tells it
    as the difference in who is online, and the online list holds everyone."""
    carol, dan = orm(create_user, "carol"), orm(create_user, "dan")
    a = people("alice", next=f"/rooms/{room.slug}/")  # alice's own join uses the burst
    for name in (bob, carol, dan):
        people(name.username, next=f"/rooms/{room.slug}/")  # held until the window ends
    system = a.page.locator("#messages li.system")
    expect(system).to_have_text(["bob, carol, dan joined"], timeout=30_000)
    expect(a.page.locator("#online li")).to_have_text(["alice", "bob", "carol", "dan"])


def test_edit_reaches_the_other_user(people, alice, bob, room):
    a = people("alice", next=f"/rooms/{room.slug}/")
    b = people("bob", next=f"/rooms/{room.slug}/")
    a.send("Meet at 5")
    expect(b.message("Meet at 5")).to_have_count(1)
    message_id = a.message("Meet at 5").get_attribute("data-id")

    mine = a.page.locator(f'{MESSAGES}[data-id="{message_id}"]')
    mine.locator("button.edit").click()
    editor = mine.locator("textarea")
    expect(editor).to_be_focused()
    expect(editor).to_have_value("Meet at 5")
    editor.fill("Meet at 6 instead")
    editor.press("Enter")

    for person in (b, a):
        row = person.page.locator(f'{MESSAGES}[data-id="{message_id}"]')
        expect(row.locator(".body")).to_have_text("Meet at 6 instead")
        expect(row.locator(".edited")).to_have_text(re.compile(r"^edited \d"))
        expect(row).not_to_have_class(re.compile(r"\bsaving\b"))
        expect(person.messages).to_have_count(1)
        expect(person.page.locator("#messages")).not_to_contain_text("Meet at 5")
    expect(a.page.locator("#messages textarea")).to_have_count(0)

    _, rows = orm(room_state, room.slug)
    assert rows == [(int(message_id), "alice", "Meet at 6 instead", False)]


def test_history_comes_back_after_reload(people, alice, bob, room):
    # More than one page of history (the server sends the latest 50), with a tombstone in it.
    def seed() -> None:
        for n in range(1, 61):
            posted = services.post_message(room=room, author=alice, body=f"old message {n}")
            if n == 7:
                services.delete_message(room=room, message_id=posted.message.id, by=alice)

    orm(seed)
    a = people("alice", next=f"/rooms/{room.slug}/")
    b = people("bob", next=f"/rooms/{room.slug}/")
    a.send("fresh one")
    a.send("fresh two")
    b.send("fresh three")
    expect(b.messages.last.locator(".body")).to_have_text("fresh three")
    expect(b.message("fresh one")).to_have_count(1)

    load_all_history(b)
    before = b.shown()

    b.page.reload()
    b.expect_connected()
    load_all_history(b)
    after = b.shown()

    ids = [row["id"] for row in after]
    assert len(ids) == len(set(ids)), "a message is shown twice"
    assert ids == sorted(ids), "messages are out of order"
    assert after == before
    _, rows = orm(room_state, room.slug)
    assert len(rows) == 63
    assert after == [
        {
            "id": id_,
            "author": author,
            "body": None if deleted else body,
            "tombstone": deleted,
        }
        for id_, author, body, deleted in rows
    ]
    expect(b.message("old message 7")).to_have_count(0)
    tombstones = b.page.locator("#messages li.message.tombstone")
    expect(tombstones).to_have_count(1)
    expect(tombstones).to_contain_text("deleted by alice")


def test_page_reconnects_after_server_restart(server, people, alice, bob, room):
    a = people("alice", next=f"/rooms/{room.slug}/")
    b = people("bob", next=f"/rooms/{room.slug}/")
    a.send("before the restart")
    expect(b.message("before the restart")).to_have_count(1)

    server.stop(kill=True)
    state = a.page.locator("#conn-state")
    expect(state).to_have_attribute("data-state", "reconnecting")
    expect(state).to_have_text("reconnecting")

    # The composer looks offline but still takes posts: they wait, marked pending.
    composer = a.page.locator("#composer")
    expect(composer).to_have_class(re.compile(r"\boffline\b"))
    expect(composer.locator("#composer-hint")).to_contain_text("Not connected")
    a.send("sent while down")
    pending = a.page.locator("#messages li.message.pending")
    expect(pending).to_have_count(1)
    expect(pending.locator(".body")).to_have_text("sent while down")
    expect(pending.locator(".status")).to_have_text("waiting for connection…")
    expect(a.message("sent while down")).to_have_count(0)

    server.start()
    for person in (a, b):
        person.expect_connected(timeout=RECONNECT_WAIT)
        expect(person.message("sent while down")).to_have_count(1)
    expect(pending).to_have_count(0)
    expect(composer).not_to_have_class(re.compile(r"\boffline\b"))
    expect(composer.locator("#composer-hint")).to_have_text(
        "Enter to send · Shift+Enter for a new line"
    )
    assert orm(Message.objects.filter(body="sent while down").count) == 1

    # A fresh page load shows it once too, and nothing was replayed twice on the live pages.
    b.page.reload()
    b.expect_connected()
    cursor, rows = orm(room_state, room.slug)
    expected = [body for _, _, body, _ in rows]
    assert expected == ["before the restart", "sent while down"]
    for person in (a, b):
        expect(person.messages.locator(".body")).to_have_text(expected)
        assert person.cursor() == cursor
    assert orm(Message.objects.filter(body="sent while down").count) == 1


def test_screenshots(people, alice, bob):
    def seed() -> int:
        general = create_room("General Chat", alice)
        random = create_room("Random", bob)
        create_room("Release planning for the spring launch", alice)
        services.post_message(room=general, author=alice, body="Morning all! Coffee's on.")
        notes = services.post_message(
            room=general,
            author=bob,
            body="Morning. The notes from yesterday are at https://example.com/notes/42",
        )
        gone = services.post_message(room=general, author=bob, body="oops, wrong room")
        services.delete_message(room=general, message_id=gone.message.id, by=bob)
        edited = services.post_message(room=general, author=alice, body="Standup at 9:30?")
        services.edit_message(
            room=general, message_id=edited.message.id, by=alice, body="Standup at 9:45?"
        )
        services.post_message(
            room=general,
            author=bob,
            body="Works for me.\nI'll bring the release checklist and the numbers.",
        )
        services.post_message(room=random, author=bob, body="Lunch at noon, anyone?")
        # Alice's own rooms, listed first in her lobby: a private room and a direct one.
        design = private_room("Design review", alice, bob)
        services.post_message(room=design, author=bob, body="Mock-ups are up.")
        direct = services.open_direct(by=bob, usernames=["alice"])
        services.post_message(room=direct, author=bob, body="Got a minute?")
        return notes.message.id

    read_to = orm(seed)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    b = people("bob", next="/rooms/general-chat/")

    def alice_has_read_to_the_notes() -> None:
        ReadMarker.objects.update_or_create(
            user=alice,
            room=Room.objects.get(slug="general-chat"),
            defaults={"last_read_id": read_to},
        )

    for size, options in (("desktop", DESKTOP), ("phone", PHONE)):
        width = options["viewport"]["width"]
        # Alice has read General Chat up to Bob's notes; Random not at all.
        orm(alice_has_read_to_the_notes)
        a = people("alice", **options)
        expect(a.page.locator("#rooms a")).to_have_count(3)
        expect(a.page.locator("#my-rooms li")).to_have_count(4)
        expect(a.page.locator("#my-rooms li").first).to_have_attribute("data-kind", "direct")
        expect(a.page.locator("#rooms .unread-count")).to_have_text(["1", "1"])
        # Bob is in the room; on the second round, Alice's desktop page is too.
        online = "1 online" if size == "desktop" else "2 online"
        expect(lobby_row(a, "general-chat").locator(".room-online")).to_have_text(online)
        a.page.mouse.move(0, 0)
        a.page.screenshot(path=SCREENSHOTS / f"lobby-{size}.png")
        assert a.page.evaluate("document.documentElement.scrollWidth") <= width, (
            f"the lobby scrolls sideways at {width}px: {wider_than(a.page, width)}"
        )

        a.open_room("general-chat")
        expect(a.messages).to_have_count(5)
        # Bob's deleted message is not news; his last one is.
        divider = a.page.locator("#messages li.sep.new-divider")
        expect(divider).to_have_count(1)
        assert divider.evaluate("d => d.nextElementSibling.querySelector('.body').textContent") == (
            "Works for me.\nI'll bring the release checklist and the numbers."
        )
        expect(a.page.locator("#online li")).to_have_text(["alice", "bob"])
        a.page.mouse.move(0, 0)
        a.page.evaluate("document.activeElement?.blur()")
        a.page.screenshot(path=SCREENSHOTS / f"room-{size}.png")
        assert a.page.evaluate("document.documentElement.scrollWidth") <= width, (
            f"the room scrolls sideways at {width}px: {wider_than(a.page, width)}"
        )
        composer = a.page.locator("#composer-input").bounding_box()
        assert composer is not None
        assert composer["y"] + composer["height"] <= options["viewport"]["height"]

    for name in ("lobby-desktop", "room-desktop", "lobby-phone", "room-phone"):
        data = (SCREENSHOTS / f"{name}.png").read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n"), name
    assert b.dialogs == []


def test_moderator_hides_a_message_in_the_admin_and_the_open_page_shows_the_tombstone(
    people, alice, mod, room
):
    a = people("alice", next=f"/rooms/{room.slug}/")
    a.send("something rude")
    rude = a.message("something rude")
    expect(rude).to_have_count(1)
    message_id = rude.get_attribute("data-id")
    assert message_id
    # Set on this page only: still there at the end means the page was never reloaded.
    a.page.evaluate("window.notReloaded = true")

    # The moderator, in a second browser context, logs in through the admin's login form and
    # goes from the admin index to the message changelist.
    m = people("mod", next="/admin/", admin=True)
    m.page.locator("#content-main a", has_text=re.compile("^Messages$")).click()
    expect(m.page).to_have_url(f"{m.base_url}/admin/chat/message/")
    row = admin_row(m, message_id)
    expect(row.locator("td.field-state")).to_have_text("live")

    run_admin_action(m, message_id, "Hide selected messages")
    expect(m.page.locator("ul.messagelist li.success")).to_have_text("Hid 1 message(s).")
    expect(row.locator("td.field-state")).to_have_text("deleted by mod")

    log = a.page.locator("#messages")
    tombstone = a.page.locator(f'#messages li.message.tombstone[data-id="{message_id}"]')
    expect(tombstone).to_contain_text("deleted by mod")
    expect(tombstone.locator(".body")).to_have_count(0)
    expect(log).not_to_contain_text("something rude")
    assert "something rude" not in log.inner_html()
    expect(a.messages).to_have_count(1)
    _, rows = orm(room_state, room.slug)
    assert rows == [(int(message_id), "alice", "something rude", True)]

    run_admin_action(m, message_id, "Restore selected hidden messages")
    expect(m.page.locator("ul.messagelist li.success")).to_have_text("Restored 1 message(s).")
    expect(row.locator("td.field-state")).to_have_text("live")

    restored = a.page.locator(f'{MESSAGES}[data-id="{message_id}"]')
    expect(restored.locator(".body")).to_have_text("something rude")
    expect(restored).not_to_have_class(re.compile(r"\btombstone\b"))
    expect(a.page.locator("#messages li.message.tombstone")).to_have_count(0)
    expect(a.messages).to_have_count(1)
    a.expect_connected()
    assert a.page.evaluate("window.notReloaded") is True

    _, rows = orm(room_state, room.slug)
    assert rows == [(int(message_id), "alice", "something rude", False)]
    audit = orm(
        lambda: list(
            ModerationAction.objects.order_by("id").values_list(
                "actor__username", "action", "target__username", "message_id"
            )
        )
    )
    assert audit == [
        ("mod", "hide", "alice", int(message_id)),
        ("mod", "restore", "alice", int(message_id)),
    ]


def test_admin_screenshot(people, alice, bob, mod):
    def seed() -> None:
        general = create_room("General Chat", alice)
        random = create_room("Random", bob)
        services.post_message(room=general, author=alice, body="Morning all! Coffee's on.")
        rude = services.post_message(room=general, author=bob, body="something rude")
        services.hide_message(message=rude.message, by=mod)
        edited = services.post_message(room=general, author=alice, body="Standup at 9:30?")
        services.edit_message(
            room=general, message_id=edited.message.id, by=alice, body="Standup at 9:45?"
        )
        services.post_message(room=random, author=bob, body="Anyone up for lunch at noon?")
        spam = services.post_message(
            room=random, author=alice, body="Cheap watches at https://spam.example/deal"
        )
        services.hide_message(message=spam.message, by=mod)
        typo = services.post_message(room=random, author=bob, body="Thai place on Mian Street")
        services.edit_message(
            room=random, message_id=typo.message.id, by=bob, body="Thai place on Main Street"
        )
        services.post_message(room=general, author=bob, body="Works for me.")

    orm(seed)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    m = people("mod", next="/admin/chat/message/", admin=True)
    rows = m.page.locator("#result_list tbody tr")
    expect(rows).to_have_count(7)
    states = m.page.locator("#result_list tbody td.field-state")
    # Newest first: today's messages are on the first page.
    expect(states).to_have_text(
        ["live", "edited", "deleted by mod", "live", "edited", "deleted by mod", "live"]
    )
    # At 1280 px with the navigation sidebar open, as the admin opens, every row's ban and mute
    # links are in sight: not scrolled out of the table, not past the window's edge.
    expect(m.page.locator("#nav-sidebar")).to_be_visible()
    results = m.page.locator("#changelist .results").bounding_box()
    links = m.page.locator("#result_list tbody td.field-restrict_author a")
    expect(links).to_have_count(14)
    for box in (links.nth(i).bounding_box() for i in range(14)):
        assert box is not None
        assert box["x"] >= results["x"]
        assert box["x"] + box["width"] <= results["x"] + results["width"], "a link is clipped"
        assert box["x"] + box["width"] <= DESKTOP["viewport"]["width"]
    # And the whole row fits: nothing scrolls inside the table.
    assert m.page.locator("#changelist .results").evaluate(
        "el => el.scrollWidth <= el.clientWidth"
    ), "the table is clipped"
    m.page.mouse.move(0, 0)
    m.page.screenshot(path=SCREENSHOTS / "admin-messages.png")
    assert m.page.evaluate("document.documentElement.scrollWidth") <= DESKTOP["viewport"]["width"]
    data = (SCREENSHOTS / "admin-messages.png").read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")


def test_admin_author_filter_suggests_usernames_and_ban_asks_first(people, alice, bob, mod):
    def seed() -> None:
        general = create_room("General Chat", alice)
        services.post_message(room=general, author=alice, body="hello from alice")
        services.post_message(room=general, author=bob, body="ask alice about it")

    orm(seed)
    m = people("mod", next="/admin/chat/message/", admin=True)
    m.page.context.add_init_script(RECORD_VIOLATIONS)
    m.goto("/admin/chat/message/")
    box = m.page.locator("#author-filter-input")
    box.press_sequentially("ali")
    expect(m.page.locator("#author-filter-names option")).to_have_count(1)
    assert m.page.locator("#author-filter-names option").get_attribute("value") == "alice"
    box.fill("alice")
    box.press("Enter")
    expect(m.page).to_have_url(re.compile(r"[?&]author=alice"))
    bodies = m.page.locator("#result_list tbody td.field-short_body")
    expect(bodies).to_have_text(["hello from alice"])

    m.page.locator("#result_list tbody td.field-restrict_author a", has_text="ban").click()
    expect(m.page.locator("h1")).to_have_text("Ban alice from General Chat?")
    expect(m.page.locator(".restrict-message")).to_have_text("hello from alice")
    m.page.locator("select[name=duration]").select_option("1h")
    m.page.locator("input[name=reason]").fill("spam")
    m.page.get_by_role("button", name="Yes, ban alice").click()
    expect(m.page.locator("ul.messagelist li.success")).to_have_text(
        "Banned alice in General Chat for 1 hour."
    )
    kinds = orm(lambda: list(ModerationAction.objects.values_list("action", "target__username")))
    assert kinds == [("ban", "alice")]
    assert violations(m) == []


def test_markup_in_room_names_is_text_in_the_lobby_and_the_room(people, alice):
    """Usernames cannot hold markup (Django's validator); room names can, and stay text."""
    name = "<img src=x onerror=alert(1)><script>window.pwned=1</script>"
    a = people("alice")
    a.page.locator("form#create-room input[name=name]").fill(name)
    a.page.locator("form#create-room button[type=submit]").click()
    a.expect_connected()
    expect(a.page.locator("h1")).to_have_text(name)
    a.page.goto(f"{a.base_url}/")
    expect(a.page.locator("#rooms a", has_text="<img")).to_have_count(1)
    for page_url in (f"{a.base_url}/", a.page.locator("#rooms a").first.get_attribute("href")):
        a.page.goto(page_url if page_url.startswith("http") else f"{a.base_url}{page_url}")
        expect(a.page.locator("main img, main script")).to_have_count(0)
        assert a.page.evaluate("typeof window.pwned") == "undefined"
    assert a.dialogs == []


def test_a_right_to_left_override_cannot_turn_a_link_around(people, alice, room):
    """An RLO before a URL and one inside it (`…/\u202egpj.exe` shows as `…/exe.jpg`): the link's
    text and href hold no bidi control, and it reads left to right on screen."""
    rlo = "\u202e"
    orm(
        services.post_message,
        room=room,
        author=alice,
        body=f"see {rlo}https://example.com/{rlo}gpj.exe now",
    )
    a = people("alice", next=f"/rooms/{room.slug}/")
    link = a.messages.locator(".body a")
    expect(link).to_have_count(1)
    expect(link).to_have_text("https://example.com/gpj.exe")
    expect(link).to_have_attribute("href", "https://example.com/gpj.exe")
    # On screen: each character of the link to the right of the one before it.
    lefts = link.evaluate(
        """a => {
            const text = a.firstChild, range = document.createRange(), lefts = [];
            for (let i = 0; i < text.length; i++) {
                range.setStart(text, i);
                range.setEnd(text, i + 1);
                lefts.push(range.getBoundingClientRect().left);
            }
            return lefts;
        }"""
    )
    assert lefts == sorted(lefts) and lefts[0] < lefts[-1], lefts
    # The message text is isolated with its own direction: its controls end with it.
    body = a.messages.locator(".body")
    assert body.get_attribute("dir") == "auto"
    assert body.evaluate("b => getComputedStyle(b).unicodeBidi") == "isolate"


# --- unread counts, read markers, scroll-back, keyboard --------------------------------------


def lobby_row(person: Person, slug: str) -> Locator:
    return person.page.locator(f'#rooms li[data-slug="{slug}"]')


def wait_read(person: Person, message_id: int) -> None:
    """Until the page's read marker reached `message_id` on the server."""
    person.page.wait_for_function(
        "id => window.chatDebug.readSent() >= id", arg=message_id, timeout=WAIT
    )


def marker(username: str, slug: str) -> int | None:
    return (
        ReadMarker.objects.filter(user__username=username, room__slug=slug)
        .values_list("last_read_id", flat=True)
        .first()
    )


def post(room: Room, author, body: str) -> int:
    return services.post_message(room=room, author=author, body=body).message.id


def test_lobby_unread_count_rises_and_clears(people, alice, bob, room):
    b = people("bob")
    row = lobby_row(b, room.slug)
    expect(row.locator(".room-name")).to_have_text("General Chat")
    expect(row.locator(".unread")).to_have_count(0)
    expect(row.locator(".room-online")).to_have_text("0 online")

    a = people("alice", next=f"/rooms/{room.slug}/")
    a.send("one")
    expect(a.message("one")).to_have_count(1)  # stored
    b.page.reload()
    expect(row.locator(".unread-count")).to_have_text("1")
    expect(row.locator(".unread")).to_have_text("1 unread")
    expect(row).to_have_class("has-unread")
    expect(row.locator(".room-online")).to_have_text("1 online")
    expect(row.locator(".room-activity")).to_have_text("active just now")

    a.send("two")
    a.send("three")
    expect(a.messages).to_have_count(3)
    # No reload: the open lobby fetches its list again when its tab comes back into view.
    b.page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    expect(row.locator(".unread-count")).to_have_text("3")
    # Alice's own messages are never unread for her.
    a.goto("/")
    expect(lobby_row(a, room.slug).locator(".unread")).to_have_count(0)

    # Bob opens the room from the lobby: he has read it all.
    row.locator("a").click()
    b.expect_connected()
    expect(b.messages.locator(".body")).to_have_text(["one", "two", "three"])
    last = int(b.messages.last.get_attribute("data-id") or 0)
    wait_read(b, last)
    assert orm(marker, "bob", room.slug) == last
    b.page.locator("a.back").click()
    expect(b.page).to_have_url(f"{b.base_url}/")
    expect(row.locator(".room-name")).to_have_text("General Chat")
    expect(row.locator(".unread")).to_have_count(0)
    expect(row).not_to_have_class("has-unread")


def test_new_messages_divider_where_the_reader_left_off(people, alice, bob, room):
    orm(post, room, alice, "one")
    two = orm(post, room, alice, "two")
    b = people("bob", next=f"/rooms/{room.slug}/")
    expect(b.messages).to_have_count(2)
    # A first visit has no "where you left off": no divider.
    expect(b.page.locator("#messages li.sep.new-divider")).to_have_count(0)
    wait_read(b, two)
    b.goto("/")

    # While Bob is away: a message of his own from another device, then two from Alice.
    orm(post, room, bob, "from my phone")
    three = orm(post, room, alice, "three")
    orm(post, room, alice, "four")
    b.page.reload()
    expect(lobby_row(b, room.slug).locator(".unread-count")).to_have_text("2")

    b.open_room(room.slug)
    divider = b.page.locator("#messages li.sep.new-divider")
    expect(divider).to_have_count(1)
    expect(divider).to_have_text("New messages")
    expect(divider).to_be_in_viewport()
    # Right before Alice's first new message, after Bob's own one.
    after = divider.evaluate("d => d.nextElementSibling.dataset.id")
    before = divider.evaluate(
        "d => { let p = d.previousElementSibling;"
        " while (p && !p.matches('li.message')) p = p.previousElementSibling;"
        " return p.querySelector('.body').textContent; }"
    )
    assert int(after) == three
    assert before == "from my phone"
    # Messages arriving while the page is open and read are not "new": the divider stays put.
    a = people("alice", next=f"/rooms/{room.slug}/")
    a.send("five")
    expect(b.message("five")).to_have_count(1)
    expect(divider).to_have_count(1)
    assert int(divider.evaluate("d => d.nextElementSibling.dataset.id")) == three
    five = int(b.message("five").get_attribute("data-id") or 0)
    wait_read(b, five)

    # Read to the end: after a reload there is no divider.
    b.page.reload()
    b.expect_connected()
    expect(b.messages).to_have_count(6)
    expect(divider).to_have_count(0)

    # Many new messages, more than the first page: the page opens at the divider, not the bottom,
    # and the marker only moves as far as Bob has looked.
    b.goto("/")
    orm(lambda: [post(room, alice, f"news {n}") for n in range(1, 71)])
    b.page.reload()
    expect(lobby_row(b, room.slug).locator(".unread-count")).to_have_text("70")
    b.page.locator("#rooms a", has_text="General Chat").click()
    b.expect_connected()
    # The first page holds the latest 50; older ones load above until the divider finds its
    # place, right before "news 1", and the view shows it.
    expect(divider).to_have_count(1)
    expect(b.message("news 1")).to_have_count(1)
    expect(divider).to_be_in_viewport()
    expect(b.message("news 1")).to_be_in_viewport()
    assert divider.evaluate("d => d.nextElementSibling.querySelector('.body').textContent") == (
        "news 1"
    )
    expect(b.message("news 70")).not_to_be_in_viewport()
    expect(b.page.locator("#jump")).to_be_visible()
    read_so_far = b.page.evaluate("window.chatDebug.readSent()")
    assert read_so_far < int(b.message("news 70").get_attribute("data-id") or 0)
    b.page.locator("#jump").click()
    expect(b.message("news 70")).to_be_in_viewport()
    last = int(b.message("news 70").get_attribute("data-id") or 0)
    wait_read(b, last)
    assert orm(marker, "bob", room.slug) == last


def test_scroll_back_through_200_messages_without_jumps_or_duplicates(people, alice, bob, room):
    """Runs of three by one author, two minutes apart, over three days: the page groups the
    runs, draws one line per day, and loads history page by page without the view moving."""
    start = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0) - timedelta(days=3)

    def seed() -> list[tuple[int, str, datetime, bool]]:
        rows = []
        for n in range(200):
            author = alice if (n // 3) % 2 == 0 else bob
            message_id = post(room, author, f"message {n}")
            created = start + timedelta(days=n // 70, minutes=2 * (n % 70))
            Message.objects.filter(pk=message_id).update(created=created)
            if n in (40, 120):
                services.delete_message(room=room, message_id=message_id, by=author)
            rows.append((message_id, author.username, created, n in (40, 120)))
        return rows

    seeded = orm(seed)
    b = people("bob", next=f"/rooms/{room.slug}/", timezone_id="UTC")
    expect(b.messages).to_have_count(50)
    log = b.page.locator("#messages")

    loads = 0
    while "complete" not in (log.get_attribute("class") or "").split():
        count = b.messages.count()
        # Scroll to the top; remember where the top message ends on screen. (Its own header may
        # fold away once older messages by the same author come above it; what is below stays.)
        anchor = log.evaluate(
            """el => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll'));
                const row = el.querySelector('li.message[data-id]');
                return { id: row.dataset.id,
                         y: row.getBoundingClientRect().bottom - el.getBoundingClientRect().top };
            }"""
        )
        b.page.wait_for_function(
            "n => document.querySelectorAll('#messages li.message[data-id]').length > n",
            arg=count,
            timeout=WAIT,
        )
        expect(log.locator("li.message[data-id]").first).not_to_have_attribute(
            "data-id", anchor["id"]
        )
        b.page.wait_for_function(
            "() => document.getElementById('history-status').hidden", timeout=WAIT
        )
        y = log.evaluate(
            """(el, id) => el.querySelector(`li.message[data-id="${id}"]`)
                .getBoundingClientRect().bottom - el.getBoundingClientRect().top""",
            anchor["id"],
        )
        assert abs(y - anchor["y"]) <= 1, f"the view jumped by {y - anchor['y']}px"
        ids = [row["id"] for row in b.shown()]
        assert len(ids) == len(set(ids)), "a message is shown twice"
        assert ids == sorted(ids), "messages are out of order"
        loads += 1
        assert loads <= 5
    assert loads == 3  # 50 + 50 + 50 + 50

    shown = b.shown()
    assert [row["id"] for row in shown] == [row[0] for row in seeded]
    assert [row["author"] for row in shown] == [row[1] for row in seeded]
    assert [row["tombstone"] for row in shown] == [row[3] for row in seeded]
    assert [row["body"] for row in shown if not row["tombstone"]] == [
        f"message {n}" for n in range(200) if n not in (40, 120)
    ]

    # One day line before the first message of each day, and nowhere else.
    days = log.locator("li.sep.day").evaluate_all(
        """seps => seps.map(s => [s.querySelector('time').getAttribute('datetime'),
                                   Number(s.nextElementSibling.dataset.id)])"""
    )
    assert days == [
        [(start + timedelta(days=d)).date().isoformat(), seeded[70 * d][0]] for d in range(3)
    ]
    # Grouped: same author as the message before, same day (no day line between).
    grouped = b.messages.evaluate_all("rows => rows.map(li => li.classList.contains('grouped'))")
    assert grouped == [n % 3 != 0 and n % 70 != 0 for n in range(200)]
    # A grouped row keeps its author for screen readers, hidden from view.
    hidden_author = b.messages.nth(1).locator(".author")
    expect(hidden_author).to_have_text("alice")
    assert hidden_author.evaluate("a => a.getBoundingClientRect().width") <= 1
    expect(b.messages.nth(0).locator(".author")).to_be_visible()
    # The full date of a message on hover.
    title = b.messages.nth(0).locator("time").get_attribute("title") or ""
    assert str(start.year) in title and ":00" in title, title


def wider_than(page: Page, width: int) -> list[str]:
    """The visible elements reaching past `width` px (what makes a page scroll sideways)."""
    return page.evaluate(
        """width => [...document.querySelectorAll("body *")]
            .filter(el => el.getBoundingClientRect().right > width + 0.5
                          && el.getClientRects().length)
            .slice(0, 8)
            .map(el => `${el.tagName.toLowerCase()}#${el.id}.${el.className}`
                       + ` ${Math.round(el.getBoundingClientRect().right)}`)""",
        width,
    )


def focus_info(page: Page) -> dict[str, Any]:
    return page.evaluate(
        """() => { const el = document.activeElement; const style = getComputedStyle(el);
            return { tag: el.tagName.toLowerCase(), cls: el.className,
                     href: el.getAttribute('href'), name: el.getAttribute('name'), id: el.id,
                     visible: el.matches(':focus-visible') && style.outlineStyle !== 'none'
                              && parseFloat(style.outlineWidth) > 0 }; }"""
    )


def tab_to(page: Page, matches: Callable[[dict[str, Any]], bool], back: bool = False) -> int:
    """Press Tab (Shift+Tab) until the focused element `matches`; every stop shows its focus."""
    for presses in range(1, 41):
        page.keyboard.press("Shift+Tab" if back else "Tab")
        info = focus_info(page)
        if info["tag"] != "body":
            assert info["visible"], f"no visible focus on {info}"
        if matches(info):
            return presses
    raise AssertionError("never reached by keyboard")


@pytest.mark.parametrize("server_env", [{"CHAT_MAX_BODY": "40"}])
def test_the_composer_refuses_to_send_over_the_limit(people, alice, room):
    """Over CHAT_MAX_BODY the counter turns red, Send is off and Enter does nothing: nothing is
    sent to fail with `too_long`; back within the limit, Enter sends."""
    a = people("alice", next=f"/rooms/{room.slug}/")
    box = a.page.locator("#composer-input")
    counter = a.page.locator("#char-count")
    box.fill("x" * 41)
    expect(counter).to_have_class(re.compile(r"\bover\b"))
    expect(counter).to_have_text("41 / 40 — too long")
    expect(a.page.locator("#composer button[type=submit]")).to_be_disabled()
    box.press("Enter")
    box.press("Enter")
    expect(box).to_have_value("x" * 41)  # kept, to be shortened
    expect(a.page.locator("#messages li.pending, #messages li.failed")).to_have_count(0)
    expect(a.page.locator("#alerts > *")).to_have_count(0)

    # White space around the text is not counted, as the server strips it.
    box.fill("  " + "y" * 40 + "  ")
    expect(counter).not_to_have_class(re.compile(r"\bover\b"))
    expect(a.page.locator("#composer button[type=submit]")).to_be_enabled()
    box.press("Enter")
    expect(a.message("y" * 40)).to_have_count(1)
    expect(box).to_have_value("")
    _, rows = orm(room_state, room.slug)
    assert [body for _, _, body, _ in rows] == ["y" * 40]


def test_keyboard_only_login_send_edit_delete(browser, server, alice, bob, room):
    context = browser.new_context(**DESKTOP)
    context.set_default_timeout(WAIT)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: (errors.append(dialog.message), dialog.dismiss()))
    page.goto(f"{server.url}/")
    expect(page).to_have_url(f"{server.url}/accounts/login/?next=/")

    # Log in: the username field has the focus; Tab to the password; Enter submits.
    expect(page.locator("input[name=username]")).to_be_focused()
    page.keyboard.type("alice")
    tab_to(page, lambda info: info["name"] == "password")
    page.keyboard.type(password_for("alice"))
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{server.url}/")

    # The lobby: search its rooms (past the sidebar's message search), then Tab to the room.
    tab_to(page, lambda info: info["id"] == "room-search-input")
    page.keyboard.type("general")
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{server.url}/?q=general")
    tab_to(page, lambda info: info["href"] == f"/rooms/{room.slug}/")
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{server.url}/rooms/{room.slug}/")
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "connected")

    # The room starts in the composer. Send with Enter.
    box = page.locator("#composer-input")
    expect(box).to_be_focused()
    page.keyboard.type("typed without a mouse")
    page.keyboard.press("Enter")
    sent = page.locator(MESSAGES).filter(has_text="typed without a mouse")
    expect(sent).to_have_count(1)
    expect(box).to_be_focused()
    message_id = int(sent.get_attribute("data-id") or 0)
    row = page.locator(f'{MESSAGES}[data-id="{message_id}"]')

    # Back from the composer to the message's own Edit button; its buttons show while focused.
    tab_to(page, lambda info: "edit" in info["cls"].split(), back=True)
    actions = row.locator(".actions")
    page.wait_for_function(
        "el => getComputedStyle(el).opacity === '1'", arg=actions.element_handle()
    )
    page.keyboard.press("Enter")
    editor = row.locator("textarea")
    expect(editor).to_be_focused()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("edited by keyboard")
    page.keyboard.press("Enter")
    expect(row.locator(".body")).to_have_text("edited by keyboard")
    expect(row.locator(".edited")).to_have_text(re.compile(r"^edited \d"))
    expect(row).not_to_have_class(re.compile(r"\bsaving\b"))

    # The focus stays on the message: Tab reaches its Delete button.
    tab_to(page, lambda info: "delete" in info["cls"].split())
    page.keyboard.press("Enter")
    # Delete asks once: the focus is on the toolbar's second Delete; Escape puts it back.
    expect(row.locator("button.delete-confirm")).to_be_focused()
    page.keyboard.press("Escape")
    expect(row.locator("button.delete")).to_be_focused()
    expect(row.locator("button.delete-confirm")).to_have_count(0)
    page.keyboard.press("Enter")
    expect(row.locator("button.delete-confirm")).to_be_focused()
    page.keyboard.press("Enter")
    expect(row).to_have_class(re.compile(r"\btombstone\b"))
    expect(row).to_contain_text("deleted by alice")

    # Back up to the page's first stop, the skip link: it leads straight to the message box.
    tab_to(page, lambda info: info["href"] == "#composer-input", back=True)
    page.keyboard.press("Enter")
    expect(box).to_be_focused()

    _, rows = orm(room_state, room.slug)
    assert rows == [(message_id, "alice", "edited by keyboard", True)]
    assert errors == []
    context.close()


# --- Content-Security-Policy -----------------------------------------------------------------

# Before any page script runs: every CSP violation the page reports, as text.
RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  const where = `${event.sourceFile}:${event.lineNumber}`;
  window.cspViolations.push(`${event.effectiveDirective} blocked ${event.blockedURI} (${where})`);
});
"""


def violations(person: Person) -> list[str]:
    return person.page.evaluate("window.cspViolations")


def test_pages_pass_the_content_security_policy_in_chromium(people, alice, bob, mod, room):
    post_id = orm(post, room, bob, "hello from bob")
    a = people("alice")
    a.page.context.add_init_script(RECORD_VIOLATIONS)
    b = people("bob", next=f"/rooms/{room.slug}/")

    # The lobby, with its periodic refresh.
    response = a.page.goto(f"{a.base_url}/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    expect(lobby_row(a, room.slug).locator(".unread-count")).to_have_text("1")
    a.page.evaluate("window.lobbyDebug.refresh()")
    expect(lobby_row(a, room.slug).locator(".room-online")).to_have_text("1 online")
    assert violations(a) == []

    # A room while chatting: the WebSocket (connect-src), sending, editing, the read marker.
    lobby_row(a, room.slug).locator("a").click()
    a.expect_connected()
    a.send("hello from alice")
    expect(b.message("hello from alice")).to_have_count(1)
    b.send("and back")
    expect(a.message("and back")).to_have_count(1)
    wait_read(a, post_id)
    assert violations(a) == []

    # The admin: the message list, an action run from it, and the message it reports.
    m = people("mod", next="/admin/", admin=True)
    m.page.context.add_init_script(RECORD_VIOLATIONS)
    m.goto("/admin/chat/message/")
    run_admin_action(m, post_id, "Hide selected messages")
    expect(m.page.locator("ul.messagelist li.success")).to_have_text("Hid 1 message(s).")
    assert violations(m) == []
    m.page.locator("#toggle-nav-sidebar").click()  # the admin's own scripts run
    expect(m.page.locator("#nav-sidebar")).to_be_hidden()
    assert violations(m) == []
    expect(a.page.locator(f'#messages li.message.tombstone[data-id="{post_id}"]')).to_have_count(1)
    assert violations(a) == []
    refused = [line for p in (a, m) for line in p.console if "Content Security Policy" in line]
    assert refused == []

    # The listener has teeth: an inline script is refused and reported.
    a.page.evaluate(
        "() => { const s = document.createElement('script');"
        " s.textContent = 'window.inlineRan = true'; document.body.append(s); }"
    )
    a.page.wait_for_function("window.cspViolations.length > 0")
    assert violations(a)[0].startswith("script-src-elem blocked inline")
    assert a.page.evaluate("window.inlineRan") is None


# --- private rooms and direct messages (PROTOCOL.md §4) --------------------------------------


@pytest.fixture
def carol():
    return orm(create_user, "carol")


def private_room(name: str, owner, *others, topic: str = "") -> Room:
    """A private room made by `owner`, who adds `others` (each a notice in its history)."""
    room = services.create_room(
        name=name, created_by=owner, kind=Room.Kind.PRIVATE, topic=topic, enforce_limit=False
    )
    for person in others:
        services.add_member(room=room, by=owner, username=person.username)
    return room


def members_shown(person: Person) -> Locator:
    return person.page.locator("#members li .person-name")


def notices(person: Person) -> Locator:
    return person.page.locator("#messages li.message.notice .notice-text")


def message_person(person: Person, name_button: Locator, name: str) -> str:
    """Click a username, then "Message <name>" in its menu: the direct room's slug."""
    name_button.click()
    item = person.page.get_by_role("menuitem", name=f"Message {name}")
    expect(item).to_be_focused()
    item.click()
    expect(person.page).to_have_url(re.compile(r"/rooms/dm-[0-9a-f]+/$"))
    person.expect_connected()
    return person.page.url.rstrip("/").rsplit("/", 1)[1]


def confirm(person: Person, answer: str) -> None:
    """Answer the page's own confirmation dialog (never a browser dialog)."""
    dialog = person.page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name=answer).click()
    expect(dialog).to_be_hidden()


def test_private_room_from_the_lobby_is_seen_by_its_members_only(people, alice, bob, carol):
    # Alice starts a private room with a topic from the lobby's form.
    a = people("alice")
    a.page.context.add_init_script(RECORD_VIOLATIONS)
    a.goto("/")
    form = a.page.locator("form#create-room")
    form.get_by_label("Room name").fill("Secret plans")
    form.get_by_label("Private: members only").check()
    form.get_by_label("Topic").fill("The surprise party")
    form.get_by_role("button", name="Create").click()
    expect(a.page).to_have_url(f"{a.base_url}/rooms/secret-plans/")
    a.expect_connected()
    expect(a.page.locator(".room-title-name")).to_have_text("Secret plans")
    expect(a.page.locator(".room-title .kind-icon")).to_have_count(1)
    expect(a.page.locator(".room-title")).to_contain_text("Private room")  # for screen readers
    expect(a.page.locator("#room-topic")).to_have_text("The surprise party")
    expect(members_shown(a)).to_have_text(["alice"])
    expect(a.page.locator("#members li.me .member-role")).to_have_text("owner")

    # She adds Bob with the type-ahead, by keyboard: the suggestions are a listbox.
    box = a.page.get_by_role("combobox", name="Add people")
    box.press_sequentially("bo")
    option = a.page.get_by_role("option", name="bob")
    expect(option).to_have_attribute("aria-selected", "true")
    expect(box).to_have_attribute("aria-expanded", "true")
    box.press("Enter")
    expect(members_shown(a)).to_have_text(["alice", "bob"])
    expect(box).to_have_value("")
    # The notice is part of the history: a quiet line with its time, nothing to edit or delete.
    notice = a.page.locator("#messages li.message.notice")
    expect(notice.locator(".notice-text")).to_have_text("alice added bob")
    expect(notice.locator("time")).to_have_count(1)
    expect(notice.locator("button, .author, .actions")).to_have_count(0)
    assert notice.evaluate("n => getComputedStyle(n).textAlign") == "center"
    # An unknown name is refused with the server's sentence and stays in the box.
    box.fill("nobody-here")
    box.press("Enter")
    expect(a.page.locator("#add-people-error")).to_have_text("There is no user called nobody-here.")
    expect(members_shown(a)).to_have_text(["alice", "bob"])

    # Bob's lobby lists it under his rooms (after a reload: the inbox issue makes it live).
    b = people("bob")
    mine = b.page.locator('#my-rooms li[data-slug="secret-plans"]')
    expect(mine.locator(".room-name")).to_contain_text("Secret plans")
    expect(mine).to_have_attribute("data-kind", "private")
    expect(b.page.locator('#rooms li[data-slug="secret-plans"]')).to_have_count(0)
    mine.locator("a").click()
    b.expect_connected()
    expect(notices(b)).to_have_text(["alice added bob"])
    expect(b.page.locator("#add-people-input")).to_be_visible()  # any member adds people
    expect(b.page.locator("#members .member-remove")).to_have_count(0)  # only owners remove

    # Carol's lobby does not show it; its address is the site's 404 page, as for no room at all.
    c = people("carol")
    expect(c.page.locator("#rooms li")).to_have_count(0)
    expect(c.page.locator('#my-rooms li[data-slug="secret-plans"]')).to_have_count(0)
    response = c.page.goto(f"{c.base_url}/rooms/secret-plans/")
    assert response is not None and response.status == 404
    expect(c.page.get_by_role("heading", level=1)).to_have_text("Nothing here")
    hidden_page = c.page.locator("main").inner_html()
    never = c.page.goto(f"{c.base_url}/rooms/never-was/")
    assert never is not None and never.status == 404
    assert c.page.locator("main").inner_html() == hidden_page

    # Alice messages Bob from his name in the Online list: both land in one direct room, named
    # for the other person.
    a.send("party on Friday?")
    expect(a.page.locator("#online li")).to_have_text(["alice", "bob"])
    expect(a.page.locator("#online li.me button")).to_have_count(0)  # no menu for yourself
    bob_online = a.page.locator("#online").get_by_role("button", name="bob")
    # By keyboard: Enter opens the menu on its one item, Escape closes it and gives back focus.
    bob_online.focus()
    bob_online.press("Enter")
    expect(a.page.get_by_role("menuitem", name="Message bob")).to_be_focused()
    expect(bob_online).to_have_attribute("aria-expanded", "true")
    a.page.keyboard.press("Escape")
    expect(a.page.locator("#person-menu")).to_be_hidden()
    expect(bob_online).to_be_focused()
    dm = message_person(a, bob_online, "bob")
    expect(a.page.locator(".room-title-name")).to_have_text("bob")
    expect(a.page.locator(".room-title")).to_contain_text("Direct message")
    expect(a.page.locator("#leave-room, #join-room, #add-people")).to_have_count(0)
    expect(members_shown(a)).to_have_text(["alice", "bob"])
    a.send("psst, about the party")

    # Bob gets there from Alice's name on her message, and finds it in his lobby as "alice".
    author = b.message("party on Friday?").locator("button.author")
    assert message_person(b, author, "alice") == dm
    expect(b.page.locator(".room-title-name")).to_have_text("alice")
    expect(b.message("psst, about the party")).to_have_count(1)
    b.goto("/")
    row = b.page.locator(f'#my-rooms li[data-slug="{dm}"]')
    expect(row.locator(".room-name")).to_have_text("Direct message: alice")
    expect(row).to_have_attribute("data-kind", "direct")
    assert orm(Room.objects.filter(kind=Room.Kind.DIRECT).count) == 1
    assert violations(a) == []


def test_leaving_and_being_removed_from_a_private_room(people, alice, bob, carol):
    orm(private_room, "Project X", alice, bob, carol)
    a = people("alice", next="/rooms/project-x/")
    b = people("bob", next="/rooms/project-x/")
    c = people("carol", next="/rooms/project-x/")
    expect(members_shown(a)).to_have_text(["alice", "bob", "carol"])
    expect(notices(a)).to_have_text(["alice added bob", "alice added carol"])

    # Bob leaves: asked first (Cancel keeps him), then he is back in the lobby.
    b.page.get_by_role("button", name="Leave room").click()
    confirm(b, "Cancel")
    expect(b.page).to_have_url(f"{b.base_url}/rooms/project-x/")
    b.page.get_by_role("button", name="Leave room").click()
    confirm(b, "Leave")
    expect(b.page).to_have_url(f"{b.base_url}/")
    expect(b.page.locator('#my-rooms li[data-slug="project-x"]')).to_have_count(0)
    # Alice's page shows the notice, and its member list follows without a reload.
    expect(notices(a)).to_have_text(["alice added bob", "alice added carol", "bob left"])
    expect(members_shown(a)).to_have_text(["alice", "carol"])

    # Alice, the owner, removes Carol: Carol's open page says so and stops.
    a.page.get_by_role("button", name="Remove carol").click()
    confirm(a, "Remove")
    expect(members_shown(a)).to_have_text(["alice"])
    expect(notices(a).last).to_have_text("alice removed carol")
    alert = c.page.locator("#alerts .alert.fatal")
    expect(alert).to_have_text("You were removed from this room — back to the rooms")
    expect(alert.get_by_role("link", name="back to the rooms")).to_have_attribute("href", "/")
    expect(c.page.locator("#composer button[type=submit]")).to_be_disabled()
    expect(c.page.locator("#leave-room")).to_be_hidden()
    assert c.page.goto(f"{c.base_url}/rooms/project-x/").status == 404

    # The last owner cannot leave while others remain: the server's sentence, nothing changes.
    orm(
        lambda: services.add_member(
            room=Room.objects.get(slug="project-x"), by=alice, username="bob"
        )
    )
    expect(members_shown(a)).to_have_text(["alice", "bob"])
    a.page.get_by_role("button", name="Leave room").click()
    confirm(a, "Leave")
    expect(a.page.locator("#members-status")).to_contain_text("last owner cannot leave")
    expect(a.page).to_have_url(f"{a.base_url}/rooms/project-x/")


def test_joining_a_public_room_from_the_directory_and_leaving_it(people, alice, bob, room):
    b = people("bob")
    row = lobby_row(b, room.slug)
    row.get_by_role("button", name="Join General Chat").click()
    expect(b.page).to_have_url(f"{b.base_url}/rooms/{room.slug}/")
    b.expect_connected()
    expect(members_shown(b)).to_have_text(["alice", "bob"])
    expect(notices(b)).to_have_text(["bob joined"])
    b.goto("/")
    expect(b.page.locator(f'#my-rooms li[data-slug="{room.slug}"]')).to_have_count(1)
    expect(row.locator(".joined-tag")).to_have_text("Joined")

    # Leaving a public room keeps the page: anyone may read it, and Join is offered again.
    b.open_room(room.slug)
    b.page.get_by_role("button", name="Leave room").click()
    confirm(b, "Leave")
    expect(b.page.get_by_role("button", name="Join this room")).to_be_visible()
    expect(members_shown(b)).to_have_text(["alice"])
    b.expect_connected()
    b.page.get_by_role("button", name="Join this room").click()
    expect(members_shown(b)).to_have_text(["alice", "bob"])


def test_new_direct_message_from_the_lobby_picker(people, alice, bob, carol):
    a = people("alice")
    box = a.page.get_by_role("combobox", name="People")
    box.press_sequentially("b")
    expect(a.page.get_by_role("option")).to_have_text(["bob"])  # not alice herself
    box.press("Enter")
    box.press_sequentially("car")
    a.page.get_by_role("option", name="carol").click()
    chips = a.page.locator("#direct-chips .chip span")
    expect(chips).to_have_text(["bob", "carol"])
    a.page.get_by_role("button", name="Remove carol").click()
    expect(chips).to_have_text(["bob"])
    box.press_sequentially("carol")
    box.press("Enter")
    a.page.get_by_role("button", name="Start").click()
    expect(a.page).to_have_url(re.compile(r"/rooms/dm-[0-9a-f]+/$"))
    a.expect_connected()
    expect(a.page.locator(".room-title-name")).to_have_text("bob, carol")
    expect(a.page).to_have_title("bob, carol · Chatroom")

    c = people("carol", next=a.page.url.removeprefix(a.base_url))
    expect(c.page.locator(".room-title-name")).to_have_text("alice, bob")
    expect(members_shown(c)).to_have_text(["alice", "bob", "carol"])


def test_private_and_direct_screenshots(people, alice, bob, carol):
    def seed() -> str:
        design = private_room("Design review", alice, bob, carol, topic="Mock-ups for the launch")
        post(design, alice, "The new lobby mock-ups are up: https://example.com/mockups/7")
        post(design, bob, "Looks great. Can the kind marker be a little larger?")
        post(design, carol, "+1, and the topic line could wrap on phones.")
        services.remove_member(room=design, by=carol, username="carol")
        post(design, alice, "Noted, thanks both.")
        direct = services.open_direct(by=alice, usernames=["bob"])
        post(direct, alice, "Have you got a minute for the budget?")
        post(direct, bob, "Sure, call in five?")
        post(direct, alice, "Calling you then.")
        return direct.slug

    dm = orm(seed)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    people("bob", next="/rooms/design-review/")
    people("bob", next=f"/rooms/{dm}/")
    for size, options in (("desktop", DESKTOP), ("phone", PHONE)):
        width = options["viewport"]["width"]
        a = people("alice", next="/rooms/design-review/", **options)
        expect(a.messages).to_have_count(7)
        expect(notices(a)).to_have_text(["alice added bob", "alice added carol", "carol left"])
        if size == "desktop":
            expect(members_shown(a)).to_have_text(["alice", "bob"])
        a.page.mouse.move(0, 0)
        a.page.evaluate("document.activeElement?.blur()")
        a.page.screenshot(path=SCREENSHOTS / f"private-room-{size}.png")
        assert a.page.evaluate("document.documentElement.scrollWidth") <= width

        if size == "phone":
            # On a phone the member list is a drawer opened from the header.
            toggle = a.page.get_by_role("button", name="Members", exact=True)
            expect(a.page.locator("#members-panel")).to_be_hidden()
            toggle.click()
            expect(toggle).to_have_attribute("aria-expanded", "true")
            expect(members_shown(a)).to_have_text(["alice", "bob"])
            a.page.screenshot(path=SCREENSHOTS / "private-room-members-phone.png")
            a.page.keyboard.press("Escape")
            expect(a.page.locator("#members-panel")).to_be_hidden()
            expect(toggle).to_be_focused()

        a.open_room(dm)
        expect(a.messages).to_have_count(3)
        expect(a.page.locator(".room-title-name")).to_have_text("bob")
        a.page.mouse.move(0, 0)
        a.page.evaluate("document.activeElement?.blur()")
        a.page.screenshot(path=SCREENSHOTS / f"direct-{size}.png")
        assert a.page.evaluate("document.documentElement.scrollWidth") <= width
        composer = a.page.locator("#composer-input").bounding_box()
        assert composer is not None
        assert composer["y"] + composer["height"] <= options["viewport"]["height"]

    for name in ("private-room-desktop", "private-room-phone", "direct-desktop", "direct-phone"):
        assert (SCREENSHOTS / f"{name}.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), name


# --- rich messages (PROTOCOL.md §6) ---------------------------------------------------------------


def test_formatting_reactions_and_a_reply_show_on_both_pages(people, alice, bob, room):
    a = people("alice", next=f"/rooms/{room.slug}/")
    b = people("bob", next=f"/rooms/{room.slug}/")
    a.send("**ship** it, `make deploy`, @bob\n\n> quoted\n\n- one\n- two")
    for person in (a, b):
        row = person.messages.last
        expect(row.locator(".body strong")).to_have_text("ship")
        expect(row.locator(".body code")).to_have_text("make deploy")
        expect(row.locator(".body blockquote")).to_have_text("quoted")
        expect(row.locator(".body li")).to_have_text(["one", "two"])
        expect(row.locator(".body span.mention")).to_have_text("@bob")
    expect(b.messages.last.locator("span.mention.me")).to_have_count(1)

    # Bob reacts from the picker's common emoji: his page shows it at once, alice's from the frame.
    row = b.messages.last
    row.hover()
    row.locator("button.react").click()
    b.page.locator("#emoji-common button", has_text="👍").click()
    expect(row.locator("button.reaction")).to_have_text("👍 1")
    expect(row.locator("button.reaction")).to_have_attribute("aria-pressed", "true")
    theirs = a.messages.last.locator("button.reaction")
    expect(theirs).to_have_text("👍 1")
    expect(theirs).to_have_attribute("title", "bob reacted with 👍")
    # Alice finds one by name and joins bob's.
    a.messages.last.hover()
    a.messages.last.locator("button.react").click()
    a.page.locator("#emoji-search").fill("party popper")
    a.page.locator("#emoji-results button", has_text="🎉").first.click()
    a.messages.last.locator("button.reaction", has_text="👍").click()
    for person in (a, b):
        expect(person.messages.last.locator("button.reaction")).to_have_text(["👍 2", "🎉 1"])

    # Bob replies: a chip in his composer, then the quote on both pages.
    b.messages.last.hover()
    b.messages.last.locator("button.reply").click()
    expect(b.page.locator("#reply-chip")).to_contain_text("Replying to alice")
    b.send("On it")
    expect(b.page.locator("#reply-chip")).to_be_hidden()
    for person in (a, b):
        quote = person.messages.last.locator(".reply-quote")
        expect(quote).to_contain_text("alice: **ship** it")
    a.page.screenshot(path=SCREENSHOTS / "rich-messages-1280.png")


def test_a_reply_jumps_to_its_original_in_a_500_message_room(people, alice, bob, room):
    def seed() -> tuple[int, int]:
        original = services.post_message(room=room, author=alice, body="the original plan")
        for i in range(498):
            services.post_message(room=room, author=bob, body=f"filler {i}")
        reply = services.post_message(
            room=room, author=bob, body="about that", reply_to=original.message.id
        )
        return original.message.id, reply.message.id

    original, reply = orm(seed)
    a = people("alice", next=f"/rooms/{room.slug}/")
    row = a.page.locator(f'{MESSAGES}[data-id="{reply}"]')
    row.locator(".reply-quote").click()
    target = a.page.locator(f'{MESSAGES}[data-id="{original}"]')
    expect(target).to_have_class(re.compile(r"\bhighlight\b"))
    expect(target).to_be_in_viewport()
    # Scrolling down from the window of the past reaches the latest message again.
    for _ in range(20):
        if a.page.locator(f'{MESSAGES}[data-id="{reply}"]').count():
            break
        a.page.evaluate("document.getElementById('messages').scrollTop = 1e9")
        a.page.wait_for_timeout(300)
    expect(a.page.locator(f'{MESSAGES}[data-id="{reply}"]')).to_have_count(1)
    ids = [m["id"] for m in a.shown()]
    assert ids == sorted(ids) and len(ids) == len(set(ids))


def test_a_permalink_opens_the_room_at_its_message(people, alice, room):
    ids = orm(lambda: [post(room, alice, f"line {i}") for i in range(200)])
    a = people("alice", next=f"/rooms/{room.slug}/?message={ids[20]}")
    target = a.page.locator(f'{MESSAGES}[data-id="{ids[20]}"]')
    expect(target).to_have_class(re.compile(r"\bhighlight\b"))
    expect(target).to_be_in_viewport()
    # "Copy link" gives the same address.
    a.page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    target.hover()
    target.locator("button.copy-link").click()
    copied = a.page.evaluate("navigator.clipboard.readText()")
    assert copied == f"{a.base_url}/rooms/{room.slug}/?message={ids[20]}"


XSS = [
    "<script>window.pwned = 1</script>",
    '<img src=x onerror="window.pwned = 2">',
    "<svg onload=window.pwned=3>",
    "[click](javascript:window.pwned=4)",
    "[click](JaVaScRiPt:window.pwned=5)",
    "<javascript:window.pwned=6>",
    "[data](data:text/html,<script>window.pwned=7</script>)",
    '<a href="javascript:window.pwned=8">a</a>',
    "![x](javascript:window.pwned=9)",
    '[x](https://e.com" onmouseover="window.pwned=10)',
    "```\n</code><script>window.pwned=11</script>\n```",
    "`<img src=x onerror=window.pwned=12>`",
    "@alice<img src=x onerror=window.pwned=13>",
]


def test_hostile_markdown_executes_nothing(people, alice, room):
    orm(lambda: [post(room, alice, body) for body in XSS])
    a = people("alice")
    a.page.context.add_init_script(RECORD_VIOLATIONS)
    a.open_room(room.slug)
    expect(a.messages).to_have_count(len(XSS))
    for row in a.messages.all():
        row.hover()
        for link in row.locator(".body a").all():
            link.click(modifiers=["ControlOrMeta"])  # a new tab, if anything
    a.page.wait_for_timeout(300)
    assert a.page.evaluate("window.pwned") is None
    assert violations(a) == []
    hrefs = a.page.locator("#messages .body a").evaluate_all("links => links.map(l => l.href)")
    assert all(href.startswith(("http:", "https:", "mailto:")) for href in hrefs), hrefs
    assert a.page.locator("#messages .body script, #messages .body img").count() == 0


# --- reports (PROTOCOL.md §9) and per-room moderators ---------------------------------------------


def test_a_report_from_the_page_reaches_the_queue_and_its_closing_reaches_the_room(
    people, alice, bob, mod, room
):
    orm(lambda: services.post_message(room=room, author=alice, body="something rude"))
    b = people("bob", next=f"/rooms/{room.slug}/")
    rude = b.message("something rude")
    expect(rude).to_have_count(1)
    message_id = int(rude.get_attribute("data-id"))

    # Bob reports it with a reason, from the message's own "Report" action and the dialog.
    rude.hover()
    rude.get_by_role("button", name=f"Report message Id{message_id}").click()
    dialog = b.page.locator("dialog#report-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#report-quote")).to_have_text("something rude")
    dialog.get_by_label("Why?").fill("It insults me")
    b.page.screenshot(path=SCREENSHOTS / "report-dialog.png")
    dialog.get_by_role("button", name="Report").click()
    expect(dialog).to_be_hidden()
    expect(rude.locator(".reported-mark")).to_have_text("Reported by you")
    expect(rude.get_by_role("button", name=re.compile("^Report"))).to_have_count(0)
    reports = orm(lambda: list(Report.objects.values_list("reporter__username", "reason")))
    assert reports == [("bob", "It insults me")]
    # The mark is still there after a reload (the page learns its reports from the server).
    b.page.reload()
    b.expect_connected()
    expect(b.message("something rude").locator(".reported-mark")).to_have_text("Reported by you")

    # The moderator finds it in the queue, reads it with its context, and hides it.
    m = people("mod", next="/admin/chat/report/", admin=True)
    row = m.page.locator("#result_list tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator("td.field-reason")).to_have_text("It insults me")
    row.locator("th a").click()
    expect(m.page.locator(".report-message")).to_have_text("something rude")
    expect(m.page.locator(".report-reason")).to_have_text("It insults me")
    m.page.screenshot(path=SCREENSHOTS / "admin-report.png", full_page=True)
    m.page.get_by_role("button", name="Hide the message").click()
    expect(m.page.locator("ul.messagelist li.success")).to_contain_text("message hidden")
    expect(m.page.locator("#result_list tbody tr")).to_have_count(0)

    # Bob's open page shows the tombstone at once; the next room page he opens tells him,
    # quietly, once.
    tombstone = b.page.locator(f'#messages li.message.tombstone[data-id="{message_id}"]')
    expect(tombstone).to_contain_text("deleted by mod")
    b.open_room(room.slug)
    expect(b.page.locator(".report-notice")).to_have_text(
        "A report you made was handled by the moderators. Thank you."
    )
    b.open_room(room.slug)
    expect(b.page.locator(".report-notice")).to_have_count(0)


def test_a_private_rooms_owner_hides_a_message_from_the_page(people, alice, bob, carol):
    secret = orm(private_room, "Owners only", alice, bob)
    orm(lambda: services.post_message(room=secret, author=bob, body="off topic"))
    a = people("alice", next=f"/rooms/{secret.slug}/")
    b = people("bob", next=f"/rooms/{secret.slug}/")
    # Members other than owners get no "Hide".
    theirs = b.page.locator(MESSAGES).filter(has_text="off topic")
    expect(theirs).to_have_count(1)
    expect(b.page.get_by_role("button", name=re.compile("^Hide"))).to_have_count(0)

    message = a.message("off topic")
    message_id = message.get_attribute("data-id")
    message.hover()
    message.get_by_role("button", name=f"Hide message Id{message_id}").click()
    confirm(a, "Hide")
    for person in (a, b):
        tombstone = person.page.locator(f'#messages li.message.tombstone[data-id="{message_id}"]')
        expect(tombstone).to_contain_text("deleted by alice")
    audit = orm(lambda: list(ModerationAction.objects.values_list("actor__username", "action")))
    assert audit == [("alice", "hide")]


# --- the inbox sidebar, mentions and desktop notifications (PROTOCOL.md §5, §6) ---------------

# PROTOCOL.md §5: a `room` frame within 1 s of a change; the rest is the page drawing it.
INBOX_WAIT = 1_500

# Before any page script: a stand-in for the browser's Notification API that records what the
# page gives it (permission persists for the tab, as the browser's would), and a switch that makes
# the tab look hidden (document.hidden / visibilityState) without leaving it.
NOTIFICATION_STUB = """
(() => {
  window.notifications = [];
  window.shownNotifications = [];
  window.permissionAsked = Number(sessionStorage.getItem("permissionAsked") || 0);
  window.tabHidden = false;
  Object.defineProperty(Document.prototype, "hidden", {
    configurable: true, get() { return window.tabHidden; },
  });
  Object.defineProperty(Document.prototype, "visibilityState", {
    configurable: true, get() { return window.tabHidden ? "hidden" : "visible"; },
  });
  class StubNotification {
    static get permission() { return sessionStorage.getItem("permission") || "default"; }
    static requestPermission() {
      window.permissionAsked += 1;
      sessionStorage.setItem("permissionAsked", String(window.permissionAsked));
      sessionStorage.setItem("permission", "granted");
      return Promise.resolve("granted");
    }
    constructor(title, options = {}) {
      this.title = title;
      this.options = options;
      this.onclick = null;
      window.notifications.push({ title, body: options.body, tag: options.tag });
      window.shownNotifications.push(this);
    }
    close() { this.closed = true; }
  }
  window.Notification = StubNotification;
})();
"""


def sidebar_entry(person: Person, slug: str) -> Locator:
    return person.page.locator(f'#inbox li.inbox-entry[data-slug="{slug}"]')


def join(room: Room, user) -> None:
    services.add_member(room=room, by=user, username=user.username)


def notifications(person: Person) -> list[dict[str, Any]]:
    return person.page.evaluate("window.notifications")


def wait_notifications(person: Person, count: int) -> list[dict[str, Any]]:
    person.page.wait_for_function(
        "count => window.notifications.length >= count", arg=count, timeout=WAIT
    )
    return notifications(person)


def set_level(person: Person, slug: str, label: str) -> None:
    """The per-room setting, from the menu on the room's sidebar entry."""
    entry = sidebar_entry(person, slug)
    entry.hover()
    entry.locator("button.inbox-menu-button").click()
    menu = person.page.get_by_role("menu")
    expect(menu).to_be_visible()
    menu.get_by_role("menuitemradio", name=label, exact=True).click()
    expect(menu).to_be_hidden()
    level = {"All messages": "all", "Mentions and direct messages": "mentions", "Nothing": "none"}
    expect(entry).to_have_attribute("data-notifications", level[label])


def test_sidebar_badge_rises_with_a_message_elsewhere_and_clears_when_the_room_is_opened(
    people, alice, bob, room
):
    random = orm(create_room, "Random", alice)
    orm(join, room, bob)
    orm(join, random, bob)
    b = people("bob", next=f"/rooms/{room.slug}/")
    expect(sidebar_entry(b, room.slug)).to_have_class(re.compile(r"\bcurrent\b"))
    expect(sidebar_entry(b, room.slug).locator("a")).to_have_attribute("aria-current", "page")
    expect(sidebar_entry(b, "random").locator(".badge")).to_have_count(0)
    expect(b.page).to_have_title("General Chat · Chatroom")
    icon = b.page.locator('link[rel="icon"]')
    assert "circle" not in (icon.get_attribute("href") or "")

    # Alice writes in the other room: Bob's sidebar shows it without a reload.
    orm(post, random, alice, "anyone for lunch?")
    entry = sidebar_entry(b, "random")
    expect(entry.locator(".badge-unread .badge-count")).to_have_text("1", timeout=INBOX_WAIT)
    expect(entry.locator(".badge-unread")).to_have_text("1, 1 unread")
    expect(entry).to_have_class(re.compile(r"\bhas-unread\b"))
    expect(entry.locator(".badge-mention")).to_have_count(0)
    expect(b.page).to_have_title("(1) General Chat · Chatroom")
    expect(icon).to_have_attribute("href", re.compile("circle"))
    # The most recent activity first.
    expect(b.page.locator("#inbox-rooms li.inbox-entry").first).to_have_attribute(
        "data-slug", "random"
    )

    # A mention of Bob: a mention badge beside the unread count.
    orm(post, random, alice, "@bob you in?")
    expect(entry.locator(".badge-mention .badge-count")).to_have_text("@1", timeout=INBOX_WAIT)
    expect(entry.locator(".badge-unread .badge-count")).to_have_text("2")
    expect(b.page).to_have_title("(2) General Chat · Chatroom")

    # Activity in General Chat brings it back to the top.
    orm(post, room, alice, "meanwhile, here")
    expect(b.page.locator("#inbox-rooms li.inbox-entry").first).to_have_attribute(
        "data-slug", room.slug, timeout=INBOX_WAIT
    )

    # Bob switches rooms from the sidebar: he has read Random, and the badge goes.
    entry.locator("a").click()
    expect(b.page).to_have_url(f"{b.base_url}/rooms/random/")
    b.expect_connected()
    expect(b.page.locator(f"{MESSAGES}:not(.notice)")).to_have_count(2)
    mention = b.message("@bob you in?")
    expect(mention).to_have_class(re.compile(r"\bmentions-me\b"))
    expect(mention.locator(".body .mention.me")).to_have_text("@bob")
    expect(b.message("anyone for lunch?")).not_to_have_class(re.compile(r"\bmentions-me\b"))
    entry = sidebar_entry(b, "random")
    expect(entry).to_have_class(re.compile(r"\bcurrent\b"))
    expect(entry.locator(".badge")).to_have_count(0)
    expect(entry).not_to_have_class(re.compile(r"\bhas-unread\b"))
    # General Chat, read while Bob had it open, has news again now that he is elsewhere.
    expect(sidebar_entry(b, room.slug).locator(".badge")).to_have_count(0)
    orm(post, room, alice, "back here")
    expect(sidebar_entry(b, room.slug).locator(".badge-unread .badge-count")).to_have_text(
        "1", timeout=INBOX_WAIT
    )
    expect(b.page).to_have_title("(1) Random · Chatroom")
    b.open_room(room.slug)
    expect(sidebar_entry(b, room.slug).locator(".badge")).to_have_count(0)
    expect(b.page).to_have_title("General Chat · Chatroom")
    expect(icon).not_to_have_attribute("href", re.compile("circle"))


def test_a_hidden_tab_gets_one_desktop_notification_per_conversation(people, alice, bob, room):
    def seed() -> Room:
        join(room, bob)
        return services.open_direct(by=alice, usernames=["bob"])

    direct = orm(seed)
    dm = direct.slug
    b = people("bob")
    b.page.context.add_init_script(NOTIFICATION_STUB)
    b.goto("/")
    expect(sidebar_entry(b, room.slug)).to_have_count(1)
    expect(sidebar_entry(b, dm)).to_have_count(1)
    # The browser is asked only after a click on the control.
    enable = b.page.get_by_role("button", name="Enable notifications")
    expect(enable).to_be_visible()
    assert b.page.evaluate("window.permissionAsked") == 0
    enable.click()
    expect(enable).to_be_hidden()
    expect(b.page.locator("#notify-state")).to_have_text("Desktop notifications are on.")
    assert b.page.evaluate("window.permissionAsked") == 1

    b.page.evaluate("window.tabHidden = true")
    mention_id = orm(post, room, alice, "@bob can you   look at\nthe release notes?")
    assert wait_notifications(b, 1) == [
        {
            "title": "General Chat",
            "body": "alice: @bob can you look at the release notes?",
            "tag": room.slug,
        }
    ]
    # Without a mention nothing is raised by default; a direct message is.
    orm(post, room, alice, "just chatting")
    orm(post, direct, alice, "x" * 150)
    found = wait_notifications(b, 2)
    assert found[1:] == [{"title": "alice", "body": f"alice: {'x' * 99}…", "tag": dm}]

    # A visible tab shows the badge and raises nothing.
    b.page.evaluate("window.tabHidden = false")
    orm(post, room, alice, "@bob seen this?")
    expect(sidebar_entry(b, room.slug).locator(".badge-mention .badge-count")).to_have_text(
        "@2", timeout=INBOX_WAIT
    )
    b.page.evaluate("window.tabHidden = true")
    orm(post, direct, alice, "ping")
    found = wait_notifications(b, 3)
    assert [n["body"] for n in found[2:]] == ["alice: ping"]
    # Notifications of one conversation share its tag: each replaces the one before.
    assert [n["tag"] for n in found] == [room.slug, dm, dm]

    # Clicking one opens its room at its message.
    b.page.evaluate("window.shownNotifications[0].onclick()")
    expect(b.page).to_have_url(f"{b.base_url}/rooms/{room.slug}/?message={mention_id}")
    expect(b.page.locator(f'{MESSAGES}[data-id="{mention_id}"]')).to_have_class(
        re.compile(r"\bmentions-me\b")
    )


def test_the_per_room_notification_setting_is_kept_by_the_server(people, alice, bob, room):
    def seed() -> Room:
        join(room, bob)
        return services.open_direct(by=alice, usernames=["bob"])

    direct = orm(seed)
    dm = direct.slug
    b = people("bob")
    b.page.context.add_init_script(NOTIFICATION_STUB)
    b.goto("/")
    b.page.get_by_role("button", name="Enable notifications").click()
    expect(sidebar_entry(b, room.slug)).to_have_attribute("data-notifications", "mentions")

    set_level(b, room.slug, "Nothing")
    # Kept on the server: a fresh page (another device) shows it too.
    b.page.reload()
    expect(sidebar_entry(b, room.slug)).to_have_attribute("data-notifications", "none")
    expect(sidebar_entry(b, room.slug)).to_have_class(re.compile(r"\bmuted\b"))
    b.page.evaluate("window.tabHidden = true")
    orm(post, room, alice, "@bob muted mention")
    orm(post, direct, alice, "direct one")
    assert [n["tag"] for n in wait_notifications(b, 1)] == [dm]

    b.page.evaluate("window.tabHidden = false")
    set_level(b, room.slug, "All messages")
    b.page.evaluate("window.tabHidden = true")
    orm(post, room, alice, "no mention at all")
    found = wait_notifications(b, 2)
    assert found[1:] == [
        {"title": "General Chat", "body": "alice: no mention at all", "tag": room.slug}
    ]


def test_the_mention_type_ahead_inserts_a_members_name(people, alice, bob, carol, room):
    def seed() -> None:
        join(room, bob)
        join(room, carol)

    orm(seed)
    a = people("alice", next=f"/rooms/{room.slug}/")
    expect(members_shown(a)).to_have_count(3)
    posts = a.page.locator(f"{MESSAGES}:not(.notice)")
    box = a.page.locator("#composer-input")
    listbox = a.page.get_by_role("listbox", name="People to mention")
    expect(listbox).to_be_hidden()
    expect(box).to_have_attribute("aria-expanded", "false")

    box.press_sequentially("Hi @b")
    expect(listbox).to_be_visible()
    expect(listbox.get_by_role("option")).to_have_text(["bob"])
    expect(box).to_have_attribute("aria-expanded", "true")
    active = listbox.get_by_role("option", selected=True)
    expect(active).to_have_text("bob")
    expect(box).to_have_attribute("aria-activedescendant", active.get_attribute("id") or "")
    box.press("Enter")  # picks, does not send
    expect(box).to_have_value("Hi @bob ")
    expect(listbox).to_be_hidden()

    # "@" alone lists everyone but yourself; the arrows move, Tab picks.
    box.press_sequentially("and @")
    expect(listbox.get_by_role("option")).to_have_text(["bob", "carol"])
    box.press("ArrowDown")
    expect(listbox.get_by_role("option", selected=True)).to_have_text("carol")
    box.press("Tab")
    expect(box).to_have_value("Hi @bob and @carol ")
    expect(box).to_be_focused()

    # Escape closes the list and keeps the text; an e-mail address is not a mention.
    box.press_sequentially("@c")
    expect(listbox).to_be_visible()
    box.press("Escape")
    expect(listbox).to_be_hidden()
    expect(box).to_have_value("Hi @bob and @carol @c")
    box.press("Backspace")
    box.press("Backspace")
    box.press_sequentially("mail me@c")
    expect(listbox).to_be_hidden()
    assert posts.count() == 0

    box.press("Enter")
    sent = a.message("Hi @bob and @carol mail me@c")
    expect(sent).to_have_count(1)
    expect(sent.locator(".body .mention")).to_have_text(["@bob", "@carol"])
    b = people("bob", next=f"/rooms/{room.slug}/")
    expect(b.message("Hi @bob and @carol mail me@c")).to_have_class(re.compile(r"\bmentions-me\b"))
    expect(b.message("Hi @bob and @carol mail me@c").locator(".mention.me")).to_have_text("@bob")


def test_inbox_screenshots(people, alice, bob, carol):
    def seed() -> None:
        general = create_room("General Chat", bob)
        launch = create_room("Spring launch", bob)
        random = create_room("Random", carol)
        support = create_room("Customer support rota", carol)
        quiet = create_room("Book club", bob)
        for public in (general, launch, random, support, quiet):
            join(public, alice)
        design = private_room("Design review", bob, alice, carol, topic="Mock-ups for the launch")
        post(quiet, bob, "Next month: The Left Hand of Darkness")
        post(support, carol, "Who can take Friday afternoon?")
        post(design, carol, "The new header is in the mock-ups")
        post(design, bob, "@alice could you check the sidebar spacing?")
        post(random, carol, "Cake in the kitchen")
        post(random, bob, "Already gone, sorry")
        for n in range(4):
            post(launch, bob, f"Checklist item {n + 1} done")
        post(launch, carol, "@alice the press release is ready for you")
        dm_bob = services.open_direct(by=bob, usernames=["alice"])
        dm_group = services.open_direct(by=carol, usernames=["alice", "bob"])
        dm_carol = services.open_direct(by=carol, usernames=["alice"])
        post(dm_carol, carol, "lunch?")
        post(dm_group, bob, "Standup moved to 9:45")
        post(dm_group, carol, "Thanks!")
        post(general, alice, "Morning all! Coffee's on.")
        post(general, bob, "Morning. The notes are at https://example.com/notes/42")
        post(dm_bob, bob, "Got a minute?")

    orm(seed)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    a = people("alice", next="/rooms/general-chat/")
    expect(a.page.locator("#inbox-direct li.inbox-entry")).to_have_count(3)
    expect(a.page.locator("#inbox-rooms li.inbox-entry")).to_have_count(6)
    set_level(a, "book-club", "Nothing")
    set_level(a, "spring-launch", "All messages")
    expect(sidebar_entry(a, "spring-launch").locator(".badge-mention .badge-count")).to_have_text(
        "@1"
    )
    expect(sidebar_entry(a, "design-review").locator(".badge-unread .badge-count")).to_have_text(
        "2"
    )
    a.page.mouse.move(0, 0)
    a.page.evaluate("document.activeElement?.blur()")
    a.page.screenshot(path=SCREENSHOTS / "inbox-1280.png")
    assert a.page.evaluate("document.documentElement.scrollWidth") <= 1280

    # On a phone the sidebar is a screen of its own, opened from the header.
    p = people("alice", next="/rooms/general-chat/", **PHONE)
    toggle = p.page.get_by_role("button", name=re.compile(r"^Chats"))
    sidebar = p.page.locator("#inbox")
    expect(sidebar).to_be_hidden()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(p.page.locator("#inbox-total-count")).to_have_text(re.compile(r"^\d+$"))
    expect(toggle).to_have_accessible_name(re.compile(r"^Chats\s*\d+ unread$"))
    toggle.click()
    expect(sidebar).to_be_visible()
    expect(p.page.locator("#chat")).to_be_hidden()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(p.page.locator("#inbox-rooms li.inbox-entry")).to_have_count(6)
    p.page.evaluate("document.activeElement?.blur()")
    p.page.screenshot(path=SCREENSHOTS / "inbox-390.png")
    assert p.page.evaluate("document.documentElement.scrollWidth") <= 390
    toggle.click()
    expect(sidebar).to_be_hidden()
    expect(p.page.locator("#composer-input")).to_be_visible()
    for name in ("inbox-1280", "inbox-390"):
        assert (SCREENSHOTS / f"{name}.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), name


def test_the_author_edits_a_message_and_opens_its_earlier_versions(people, alice, bob, room):
    a = people("alice", next=f"/rooms/{room.slug}/")
    b = people("bob", next=f"/rooms/{room.slug}/")
    a.send("Meet at *5*")
    expect(b.message("Meet at 5")).to_have_count(1)
    message_id = a.message("Meet at 5").get_attribute("data-id")
    mine = a.page.locator(f'{MESSAGES}[data-id="{message_id}"]')
    mine.locator("button.edit").click()
    editor = mine.locator("textarea")
    editor.fill("Meet at **6** instead")
    editor.press("Enter")
    expect(mine.locator(".body")).to_have_text("Meet at 6 instead")

    # Bob reads "edited <time>" as a label; Alice, the author, gets a button.
    theirs = b.page.locator(f'{MESSAGES}[data-id="{message_id}"]')
    expect(theirs.locator("span.edited")).to_have_text(re.compile(r"^edited \d"))
    expect(theirs.locator("button.edited")).to_have_count(0)
    mine.locator("button.edited").click()
    panel = a.page.locator("#versions-dialog")
    expect(panel).to_be_visible()
    versions = panel.locator("li.version")
    expect(versions).to_have_count(2)
    expect(versions.nth(0).locator(".body")).to_have_text("Meet at 5")
    expect(versions.nth(0).locator(".body em")).to_have_text("5")  # the server's render
    expect(versions.nth(0).locator(".version-time")).to_contain_text("was")
    expect(versions.nth(1).locator(".body strong")).to_have_text("6")
    expect(versions.nth(1).locator(".version-time")).to_contain_text("now")
    panel.get_by_role("button", name="Close").click()
    expect(panel).to_be_hidden()
    expect(mine.locator("button.edited")).to_be_focused()


# --- search (PROTOCOL.md §7) ---------------------------------------------------------------------


def test_search_from_the_sidebar_opens_the_room_at_the_highlighted_message(people, alice, bob):
    """Search from the box on every page, open a result, land on the message, highlighted; a
    private room bob is not in is never among the results."""

    def world():
        room = services.create_room(name="Launch", created_by=alice, kind=Room.Kind.PRIVATE)
        services.add_member(room=room, by=alice, username="bob")
        secret = services.create_room(name="Secret", created_by=alice, kind=Room.Kind.PRIVATE)
        post(secret, alice, "the zeppelin budget, alice only")
        for n in range(40):
            post(room, alice, f"filler {n}")
        target = post(room, alice, "the zeppelin has landed at **dawn**")
        for n in range(40):
            post(room, alice, f"after {n}")
        return room, target

    room, target = orm(world)
    b = people("bob")
    box = b.page.locator("#inbox-q")
    box.fill("zeppelin")
    box.press("Enter")
    expect(b.page).to_have_url(re.compile(r"/search\?q=zeppelin"))
    results = b.page.locator(".search-result")
    expect(results).to_have_count(1)
    expect(results.first.locator("mark")).to_have_text("zeppelin")
    expect(results.first).to_contain_text("Launch")
    b.page.set_viewport_size({"width": 1280, "height": 800})
    b.page.screenshot(path=SCREENSHOTS / "search-1280.png")
    results.first.locator("a").click()
    expect(b.page).to_have_url(f"{b.base_url}/rooms/{room.slug}/?message={target}")
    message = b.page.locator(f'{MESSAGES}[data-id="{target}"]')
    expect(message).to_have_class(re.compile(r"\bhighlight\b"))
    expect(message).to_be_in_viewport()


# --- a new user's first hour (issue 20) --------------------------------------------------------


def restrict(room: Room, user, kind: str, *, seconds: float | None = None, reason: str = ""):
    """A moderator's ban or mute of `user` in `room`, ending in `seconds` (None: until lifted)."""
    from django.utils import timezone

    until = None if seconds is None else timezone.now() + timedelta(seconds=seconds)
    from django.contrib.auth import get_user_model

    by = get_user_model().objects.filter(username="judge").first() or make_moderator("judge")
    return services.restrict_user(
        room=room, user=user, kind=kind, by=by, until=until, reason=reason
    )


def lift(restriction) -> None:
    services.lift_restriction(restriction=restriction, by=restriction.created_by)


def reconnect(person: Person) -> None:
    """The network goes away and comes back (a phone in a tunnel): the page reconnects."""
    person.page.context.set_offline(True)
    expect(person.page.locator("#conn-state")).to_have_attribute("data-state", "offline")
    person.page.context.set_offline(False)
    person.expect_connected(timeout=RECONNECT_WAIT)


@pytest.mark.parametrize(
    "server_env", [{"CHAT_RATE_LIMIT_POSTS": "2", "CHAT_RATE_LIMIT_WINDOW": "3"}]
)
def test_alerts_replace_their_kind_and_clear_when_their_condition_ends(people, alice, room):
    """One alert per kind, never a pile: a rate-limit alert goes when retry_after has passed
    (its post then goes through), a "not connected" one when the connection is back."""
    a = people("alice", next=f"/rooms/{room.slug}/")
    alerts = a.page.locator("#alerts .alert")
    for n in range(1, 5):
        a.send(f"quick {n}")
    expect(alerts).to_have_count(1)
    expect(alerts).to_contain_text("Slow down")
    # retry_after (at most the 3 s window) passes: the alert goes, every post is stored once.
    expect(alerts).to_have_count(0, timeout=8_000)
    for n in range(1, 5):
        expect(a.message(f"quick {n}")).to_have_count(1, timeout=8_000)

    # Offline, a reaction is refused on the page; twice is still one alert, gone on reconnect.
    a.page.context.set_offline(True)
    expect(a.page.locator("#conn-state")).to_have_attribute("data-state", "offline")
    row = a.message("quick 1")
    for _ in range(2):
        row.hover()
        row.locator("button.react").click()
        a.page.locator("#emoji-common button.emoji").first.click()
    expect(alerts).to_have_count(1)
    expect(alerts).to_have_text(re.compile("^Not connected: the reaction was not saved"))
    a.page.context.set_offline(False)
    a.expect_connected(timeout=RECONNECT_WAIT)
    expect(alerts).to_have_count(0)


def test_a_muted_user_sees_the_mute_in_place_of_the_composer_until_it_ends(
    people, alice, bob, room
):
    """Muted before opening the room: the notice (reason, until) instead of the composer, which
    comes back at `until`. Muted while the page is open: the post bounces, the alert and the
    notice show; a moderator's lift is learned on reconnect, and the alert goes with it."""
    orm(restrict, room, bob, "mute", seconds=6, reason="spam")
    b = people("bob", next=f"/rooms/{room.slug}/")
    notice = b.page.locator("#muted-notice")
    composer = b.page.locator("#composer")
    expect(notice).to_be_visible()
    expect(notice.locator("#muted-text")).to_have_text(
        re.compile(r"^You are muted in this room until \d{1,2}:\d\d.* \(reason: spam\)\.$")
    )
    expect(composer).to_be_hidden()
    # At `until`, the page's timer brings the composer back (the server agrees: a post goes).
    expect(composer).to_be_visible(timeout=12_000)
    expect(notice).to_be_hidden()
    b.send("free again")
    expect(b.message("free again")).to_have_count(1)

    # Muted while the page is open: the post bounces `muted`; the notice takes the composer.
    mute = orm(restrict, room, bob, "mute")
    b.send("can I still talk?")
    alert = b.page.locator('#alerts .alert[data-key="muted"]')
    expect(alert).to_have_text(re.compile("muted you"))
    expect(notice.locator("#muted-text")).to_have_text(
        "You are muted in this room until a moderator lifts it."
    )
    expect(composer).to_be_hidden()

    # Lifted: the open page learns it when it reconnects; the alert goes, the composer is back.
    orm(lift, mute)
    reconnect(b)
    expect(composer).to_be_visible()
    expect(notice).to_be_hidden()
    expect(b.page.locator("#alerts .alert")).to_have_count(0)
    b.send("thank you")
    expect(b.message("thank you")).to_have_count(1)


def test_a_banned_user_sees_why_and_the_lobby_marks_the_room(people, alice, bob, room):
    """Banned with the room open: the page says until when and why, and leads back; the lobby
    marks the room; opening it again shows the ban's own page."""
    b = people("bob", next=f"/rooms/{room.slug}/")
    orm(post, room, alice, "unread for bob")
    orm(restrict, room, bob, "ban", seconds=3600, reason="flooding")
    alert = b.page.locator("#alerts .alert.fatal")
    expect(alert).to_have_text(
        re.compile(
            r"^You are banned from this room until \d{1,2}:\d\d.* \(reason: flooding\)"
            r" — back to the rooms$"
        )
    )
    alert.get_by_role("link", name="back to the rooms").click()
    expect(b.page).to_have_url(f"{b.base_url}/")
    row = lobby_row(b, room.slug)
    expect(row.locator(".banned-tag")).to_have_text("banned from this room")
    expect(row.locator(".unread")).to_have_count(0)
    expect(row.locator("button.join")).to_have_count(0)

    row.locator("a").click()
    expect(b.page).to_have_url(f"{b.base_url}/rooms/{room.slug}/")
    expect(b.page.locator("h1")).to_have_text("You are banned from General Chat")
    # The end in the reader's own time (local-times.js), the reason, and the way back.
    expect(b.page.locator("#ban-end")).to_have_text(
        re.compile(r"^A moderator banned you from this room until \d{1,2}:\d\d.*\.$")
    )
    expect(b.page.locator("#ban-reason")).to_have_text("Reason: flooding")
    b.page.get_by_role("link", name="Back to your rooms").click()
    expect(b.page).to_have_url(f"{b.base_url}/")


def test_a_reload_makes_no_left_and_joined_pair_and_the_lines_can_be_hidden(
    people, alice, bob, room
):
    a = people("alice", next=f"/rooms/{room.slug}/")
    b = people("bob", next=f"/rooms/{room.slug}/")
    lines = a.page.locator("#messages li.join-leave")
    expect(lines).to_have_text(["bob joined"])

    # Bob reloads: his socket drops and comes back within the grace period: no lines.
    b.page.reload()
    b.expect_connected()
    a.page.wait_for_timeout(6_500)  # past the 5 s grace a held "left" line would wait
    expect(lines).to_have_text(["bob joined"])
    expect(a.page.locator("#online li")).to_have_text(["alice", "bob"])

    # Bob goes for good: the line comes after the grace period.
    b.page.goto(f"{b.base_url}/")
    expect(lines).to_have_text(["bob joined", "bob left"], timeout=10_000)

    # The setting hides the lines (those shown too) and is kept in this browser.
    toggle = a.page.get_by_label("Show who joins and leaves")
    toggle.uncheck()
    expect(lines).to_have_count(0)
    b.open_room(room.slug)
    expect(a.page.locator("#online li")).to_have_text(["alice", "bob"])
    a.page.wait_for_timeout(500)
    expect(lines).to_have_count(0)
    a.page.reload()
    a.expect_connected()
    expect(a.page.get_by_label("Show who joins and leaves")).not_to_be_checked()
    assert a.page.evaluate("localStorage.getItem('chat.showJoinLeave')") == "0"


def test_delete_asks_once_in_the_toolbar_and_the_phone_screenshot(people, alice, bob, room):
    """At 390 px: the toolbar of a long message sits in its own row, covering no text; Delete
    asks in the toolbar (Cancel keeps the message). docs/screenshots/toolbar-phone.png."""
    long = (
        "A long message to see where the buttons go on a phone: the agenda for Thursday, "
        "the notes from the last meeting, and who brings what to the launch."
    )
    orm(post, room, bob, long)
    a = people("alice", next=f"/rooms/{room.slug}/", **PHONE)
    a.send("a typo I will delete")
    mine = a.message("a typo I will delete")
    theirs = a.message(long)

    expect(mine).to_have_count(1)
    for row in (theirs, mine):
        # Both boxes in one go: the list may still be scrolling to the new message.
        toolbar, text = row.evaluate(
            """li => [".actions", ".body"].map((s) => {
                const r = li.querySelector(s).getBoundingClientRect();
                return { top: r.top, bottom: r.bottom };
            })"""
        )
        overlap = min(toolbar["bottom"], text["bottom"]) - max(toolbar["top"], text["top"])
        assert overlap <= 0, f"the toolbar covers the text: {toolbar} over {text}"

    mine.locator("button.delete").tap()
    expect(mine.locator(".confirm-question")).to_have_text("Delete this message?")
    expect(mine.locator("button.delete-confirm")).to_be_focused()
    assert a.page.evaluate("document.documentElement.scrollWidth") <= 390
    a.page.screenshot(path=SCREENSHOTS / "toolbar-phone.png")
    mine.locator("button.delete-cancel").tap()
    expect(mine.locator("button.delete")).to_be_visible()
    assert not orm(Message.objects.get, body="a typo I will delete").deleted_at

    mine.locator("button.delete").tap()
    mine.locator("button.delete-confirm").tap()
    expect(mine).to_have_count(0)  # a tombstone now: its body is gone
    expect(a.page.locator("#messages li.tombstone")).to_contain_text("deleted by alice")


# --- files and images (PROTOCOL.md §8) -----------------------------------------------------------


def _png(width: int, height: int) -> bytes:
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (53, 82, 200))
    ImageDraw.Draw(image).ellipse(
        (width // 4, height // 4, width * 3 // 4, height * 3 // 4), "#fff"
    )
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


PASTE_FILE = """([name, type, bytes]) => {
  const data = new DataTransfer();
  data.items.add(new File([new Uint8Array(bytes)], name, { type }));
  const box = document.getElementById("composer-input");
  box.focus();
  const init = { clipboardData: data, bubbles: true, cancelable: true };
  box.dispatchEvent(new ClipboardEvent("paste", init));
}"""


def test_a_pasted_image_shows_on_the_other_page_and_a_pdf_downloads(people, alice, bob, room):
    a = people("alice", next=f"/rooms/{room.slug}/")
    b = people("bob", next=f"/rooms/{room.slug}/")
    # Paste a screenshot: it uploads with a progress bar, then goes with an empty message.
    a.page.evaluate(PASTE_FILE, ["screenshot.png", "image/png", list(_png(1200, 800))])
    expect(a.page.locator("#upload-tray li.upload.done")).to_have_count(1)
    a.page.locator("#composer-input").press("Enter")
    image = b.page.locator("#messages .attachment-image img")
    expect(image).to_have_count(1)
    # Its box is reserved before it loads (no jump), and it loads through the permission check.
    assert (image.get_attribute("width"), image.get_attribute("height")) == ("400", "267")
    b.page.wait_for_function(
        "() => document.querySelector('#messages .attachment-image img').naturalWidth > 0"
    )
    expect(a.page.locator("#upload-tray")).to_be_hidden()

    # A PDF from the file picker, with a caption: a card on bob's page that downloads.
    a.page.locator("#upload-input").set_input_files(
        files=[{"name": "report.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4\n%..."}]
    )
    expect(a.page.locator("#upload-tray li.upload.done")).to_have_count(1)
    a.send("the quarterly report")
    card = b.message("the quarterly report").locator(".attachment-file")
    expect(card).to_contain_text("report.pdf")
    with b.page.expect_download() as download:
        card.click()
    assert download.value.suggested_filename == "report.pdf"
    b.page.set_viewport_size({"width": 1280, "height": 800})
    b.page.screenshot(path=SCREENSHOTS / "attachments-1280.png")
