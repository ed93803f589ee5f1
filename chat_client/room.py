"""One room's WebSocket: reconnecting with `?since=`, frames in and out, pending posts, commands."""

from __future__ import annotations

import asyncio
import json
import random
import re
import sys
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from . import api
from .display import (
    HELP,
    change_line,
    clean,
    message_line,
    room_title,
    rooms_table,
    say,
    search_line,
    size_text,
    typing_line,
)
from .inbox import Inbox
from .login import USER_AGENT, login
from .status import (
    EXIT_BANNED,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_LOGIN,
    EXIT_NO_ROOM,
    EXIT_OK,
    EXIT_UNREACHABLE,
    Fatal,
)

# Close codes of docs/protocol.md §2.
CLOSE_NOT_LOGGED_IN = 4401
CLOSE_BANNED = 4403
CLOSE_NO_SUCH_ROOM = 4404

# A post larger than this could never be sent (the server refuses frames over 64 KiB without
# saying which post it was, or closes the socket), so it would be re-sent forever: refuse it here.
MAX_FRAME_BYTES = 60 * 1024
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0
TYPING_EVERY = 2.0
# Someone else's typing is told at most this often (s) per person (the server's own pace).
TYPING_SHOWN_EVERY = 3.0

_MESSAGE_ID = re.compile(r"(?i)^(?:id)?(\d+)$")


# How long a room switch waits for the old room's unconfirmed posts before refusing.
SWITCH_WAIT = 5.0
# The read marker (what the other rooms' unread counts start from) moves at most this often.
READ_EVERY = 2.0


@dataclass
class Pending:
    """A post the server has not confirmed yet (no `message` frame with its client_id, no ack)."""

    body: str
    slug: str  # the room it was typed in: it is only ever sent there
    sent_on: int | None = None  # the socket generation it was last sent on
    reply_to: int | None = None  # the message it answers (/reply)
    attachments: tuple[int, ...] = ()  # upload ids (/upload, PROTOCOL.md §8)


def split_path(rest: str) -> tuple[str, str]:
    """`PATH caption…` or `"PATH with spaces" caption…`: (path, caption)."""
    rest = rest.strip()
    if rest[:1] in ('"', "'"):
        end = rest.find(rest[0], 1)
        if end > 0:
            return rest[1:end], rest[end + 1 :].strip()
    path, _, caption = rest.partition(" ")
    return path, caption.strip()


@dataclass
class Visited:
    """What the client remembers of a room it switched away from, to resume it with `since`."""

    cursor: int | None = None
    shown: dict[int, dict[str, Any]] = field(default_factory=dict)
    has_more: bool = False
    name: str = ""
    kind: str = ""
    was_ready: bool = False


class ChatClient:
    """One user in one room at a time: run() logs in, keeps the socket open and reads the typed
    lines. /msg, /join and going back after leaving a room move the socket to another room."""

    def __init__(self, server: str, slug: str, username: str, password: str) -> None:
        self.server = server
        self.slug = slug
        self.username = username
        self.password = password
        parts = urllib.parse.urlsplit(server)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        scheme = "wss" if parts.scheme == "https" else "ws"
        self.ws_root = f"{scheme}://{parts.netloc}{parts.path}/ws/rooms/"

        self.cookie = ""
        self.ws: ClientConnection | None = None
        self.generation = 0  # bumped for every socket
        self.ready = False  # `ready` received on the current socket
        self.ever_ready = False
        self.reconnecting = False
        self.quitting = False
        self.me = username
        # The current room; rooms switched away from are remembered in `visited`.
        self.room_name = slug
        self.kind = ""  # from `ready`: public, private or direct
        self.room_ready = False  # this room has sent `ready` on some socket
        self.announce = True  # say which room this is at its next `ready`
        self.previous: str | None = None  # the room to go back to when this one is left
        self.visited: dict[str, Visited] = {}
        self.leaving: str | None = None  # /leave of this slug is under way
        self.left = False  # /leave succeeded: the socket was closed by us
        self.cursor: int | None = None
        self.shown: dict[int, dict[str, Any]] = {}
        self.pending: dict[str, Pending] = {}
        self.online: list[str] = []
        self.has_more = False
        self.history_wanted = False
        self.paused_until = 0.0
        self.flush_timer: asyncio.TimerHandle | None = None
        self.last_typing = 0.0
        self.typing_shown: dict[str, float] = {}  # username -> when their notice was last shown
        self.first_ready = asyncio.Event()
        self.all_sent = asyncio.Event()  # set whenever nothing is pending
        self.all_sent.set()
        self.background: set[asyncio.Future[Any]] = set()
        # The other rooms' unread counts and the bell (PROTOCOL.md §5).
        self.inbox = Inbox(
            f"{scheme}://{parts.netloc}{parts.path}/ws/inbox/",
            self.origin,
            cookie=lambda: self.cookie,
            current=lambda: self.slug,
        )
        self.read_sent: dict[str, int] = {}  # slug -> the read marker last sent
        self.read_timer: asyncio.TimerHandle | None = None

    # --- running --------------------------------------------------------------------------

    async def run(self) -> int:
        self.cookie = await asyncio.to_thread(login, self.server, self.username, self.password)
        self.spawn(self.inbox.run())
        connection = asyncio.create_task(self.connection_loop())
        joined = asyncio.create_task(self.first_ready.wait())
        await asyncio.wait({connection, joined}, return_when=asyncio.FIRST_COMPLETED)
        if connection.done():
            joined.cancel()
            connection.result()  # raises the Fatal that ended it
            return EXIT_ERROR

        interactive = sys.stdin.isatty() and sys.stdout.isatty()
        typing_in = asyncio.create_task(self.read_terminal() if interactive else self.read_pipe())
        await asyncio.wait({connection, typing_in}, return_when=asyncio.FIRST_COMPLETED)
        if not typing_in.done():
            # The connection ended for good (a Fatal): put the terminal back first.
            typing_in.cancel()
            await asyncio.gather(typing_in, return_exceptions=True)
            connection.result()
            return EXIT_ERROR
        status = typing_in.result()
        # A piped script expects its lines to be sent: wait through a reconnect for them.
        await self.finish(wait=15 if not interactive else 5 if self.ready else 0)
        self.quitting = True
        if self.ws is not None:
            await self.ws.close()
        for task in list(self.background):
            task.cancel()
        connection.cancel()
        await asyncio.gather(connection, return_exceptions=True)
        return status

    async def finish(self, wait: float) -> None:
        """Give unconfirmed posts a moment to be confirmed before leaving."""
        try:
            await asyncio.wait_for(self.all_sent.wait(), wait)
        except TimeoutError:
            pass
        if self.pending:
            count = len(self.pending)
            say(f"* {count} message{'s' if count > 1 else ''} not sent")

    async def read_terminal(self) -> int:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.patch_stdout import patch_stdout

        session: PromptSession[str] = PromptSession(erase_when_done=True)
        session.default_buffer.on_text_changed += self._typed
        with patch_stdout():
            while True:
                try:
                    line = await session.prompt_async(self.prompt)
                except EOFError:
                    return EXIT_OK
                except KeyboardInterrupt:
                    return EXIT_INTERRUPTED
                if not await self.handle_line(line):
                    return EXIT_OK

    async def read_pipe(self) -> int:
        """Lines from a stdin that is not a terminal; its end is /quit."""
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str | None] = asyncio.Queue()

        def put(line: str | None) -> None:
            try:
                loop.call_soon_threadsafe(lines.put_nowait, line)
            except RuntimeError:  # the loop has closed: the client is leaving
                pass

        def reader() -> None:
            for line in sys.stdin:
                put(line)
            put(None)

        # A daemon thread: a read that never returns must not keep the process alive.
        threading.Thread(target=reader, name="stdin", daemon=True).start()
        while True:
            line = await lines.get()
            if line is None or not await self.handle_line(line.rstrip("\r\n")):
                return EXIT_OK

    def _typed(self, buffer: Any) -> None:
        text = buffer.text
        now = asyncio.get_running_loop().time()
        if text.strip() and not text.startswith("/") and now - self.last_typing >= TYPING_EVERY:
            self.last_typing = now
            self.spawn(self.send({"type": "typing"}))

    def spawn(self, work: Any) -> None:
        """Run a coroutine in the background, keeping a reference until it is done."""
        task = asyncio.ensure_future(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def confirmed(self, client_id: Any) -> Pending | None:
        """The server has this post (or refused it for good): it is no longer pending."""
        entry = self.pending.pop(client_id, None) if isinstance(client_id, str) else None
        if not self.pending:
            self.all_sent.set()
        return entry

    # --- the connection -------------------------------------------------------------------

    def prompt(self) -> str:
        return f"{self.room_name if self.kind == 'direct' else self.slug}> "

    def ws_url(self) -> str:
        base = f"{self.ws_root}{api.quote(self.slug)}/"
        return base if self.cursor is None else f"{base}?since={self.cursor}"

    async def connection_loop(self) -> None:
        attempts = 0
        relogged = False  # logged in again after a 4401, and no `ready` since
        need_login = False
        while True:
            if attempts:
                if not self.reconnecting:
                    self.reconnecting = True
                    say("* reconnecting…")
                ceiling = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(attempts - 1, 10))
                await asyncio.sleep(ceiling / 2 + random.random() * ceiling / 2)
            if need_login:
                try:
                    self.cookie = await asyncio.to_thread(
                        login, self.server, self.username, self.password
                    )
                    need_login = False
                except Fatal as error:
                    if error.status != EXIT_UNREACHABLE:
                        raise
                    attempts += 1
                    continue
            slug = self.slug
            try:
                ws = await connect(
                    self.ws_url(),
                    origin=self.origin,
                    additional_headers={"Cookie": self.cookie},
                    user_agent_header=USER_AGENT,
                    open_timeout=10,
                    ping_interval=15,
                    ping_timeout=15,
                    max_size=2**22,
                )
            except InvalidURI as error:
                raise Fatal(f"Bad server URL: {error}", EXIT_ERROR) from None
            except InvalidStatus as error:
                status = error.response.status_code
                if 400 <= status < 500 and status not in (408, 429):
                    raise Fatal(
                        f"{self.server} refused the room's WebSocket (HTTP {status}).",
                        EXIT_UNREACHABLE,
                    ) from None
                if not self.ever_ready:
                    raise Fatal(f"Cannot reach {self.server}", EXIT_UNREACHABLE) from None
                attempts += 1
                continue
            except (OSError, TimeoutError, EOFError, InvalidHandshake):
                if not self.ever_ready:
                    raise Fatal(f"Cannot reach {self.server}", EXIT_UNREACHABLE) from None
                attempts += 1
                continue

            if slug != self.slug:  # switched to another room while connecting
                await ws.close()
                attempts = 0
                continue
            got_ready = await self.serve(ws, slug)
            if got_ready:
                attempts, relogged = 0, False
            code = ws.close_code
            if self.quitting:
                return
            if slug != self.slug:  # the socket was closed to switch rooms: open the new one
                attempts = 0
                continue
            ending = self.room_closed(code)
            if ending is not None:
                text, status = ending
                self.drop_pending()
                if self.previous is None:
                    raise Fatal(text, status)
                say(f"* {text}")
                self.enter(self.previous, remember=False)
                attempts = 0
                continue
            if code == CLOSE_NOT_LOGGED_IN:
                if relogged:
                    raise Fatal(
                        "The server does not accept the session even after logging in again.",
                        EXIT_LOGIN,
                    )
                # The session is gone (logged out elsewhere, expired): log in again, once.
                relogged = need_login = True
                if self.ever_ready and not self.reconnecting:
                    self.reconnecting = True
                    say("* session ended: logging in again")
                attempts = 0
                continue
            if not self.ever_ready:
                raise Fatal(
                    f"Cannot reach {self.server}: the room's WebSocket closed (code {code}).",
                    EXIT_UNREACHABLE,
                )
            if not self.reconnecting:
                self.reconnecting = True
                say("* reconnecting…")
            attempts += 1

    def room_closed(self, code: int | None) -> tuple[str, int] | None:
        """If the close means the user may not stay in this room: what to say, and the exit
        status if there is no room to go back to."""
        name = clean(self.room_name)
        if self.left or (self.leaving == self.slug and code in (CLOSE_BANNED, CLOSE_NO_SUCH_ROOM)):
            return f"You left {name}.", EXIT_OK
        if code == CLOSE_BANNED:
            # The same code for a ban and (§4) a removal; at the door it can only be a ban.
            if self.room_ready:
                return f"You were removed from the room {name} (or banned from it).", EXIT_BANNED
            return "You are banned from this room.", EXIT_BANNED
        if code == CLOSE_NO_SUCH_ROOM:
            if self.room_ready:  # e.g. removed from a private room while disconnected
                return f"The room {name} is gone, or you were removed from it.", EXIT_NO_ROOM
            return f"No such room: {clean(self.slug)}", EXIT_NO_ROOM
        return None

    def enter(self, slug: str, remember: bool = True) -> None:
        """Make `slug` the current room (the connection loop opens its socket): remember where
        the current one stood (`remember`) so coming back resumes it with `since`."""
        if remember:
            self.visited[self.slug] = Visited(
                self.cursor, self.shown, self.has_more, self.room_name, self.kind, self.room_ready
            )
            self.previous = self.slug
        else:
            self.visited.pop(self.slug, None)
            self.previous = None if self.previous in (self.slug, slug) else self.previous
        memory = self.visited.pop(slug, None) or Visited(name=slug)
        self.slug = slug
        self.cursor, self.shown, self.has_more = memory.cursor, memory.shown, memory.has_more
        self.room_name, self.kind, self.room_ready = memory.name, memory.kind, memory.was_ready
        self.online = []
        self.ready = self.history_wanted = self.left = False
        self.leaving = None
        self.announce = True

    async def switch(self, slug: str) -> bool:
        """Move to room `slug`: refused while posts typed here are unconfirmed, so that none is
        lost or sent to the wrong room. True once the switch is under way."""
        if slug == self.slug:
            return True
        if self.pending:
            if self.ready:
                try:
                    await asyncio.wait_for(self.all_sent.wait(), SWITCH_WAIT)
                except TimeoutError:
                    pass
            if self.pending:
                count = len(self.pending)
                say(
                    f"! {count} message{'s' if count > 1 else ''} not confirmed yet in "
                    f"{clean(self.slug)}: try again once sent (or /quit)"
                )
                return False
        ws = self.ws
        self.enter(slug)
        if ws is not None:
            await ws.close()
        return True

    def drop_pending(self) -> None:
        """The current room is being left for good: its unconfirmed posts will never be sent."""
        dropped = [key for key, entry in self.pending.items() if entry.slug == self.slug]
        for key in dropped:
            self.confirmed(key)
        if dropped:
            count = len(dropped)
            say(f"* {count} message{'s' if count > 1 else ''} not sent")

    async def serve(self, ws: ClientConnection, slug: str) -> bool:
        """Read frames until the socket closes or the client switches to another room; True
        if it got as far as `ready`."""
        self.ws = ws
        self.generation += 1
        got_ready = False
        try:
            async for raw in ws:
                if slug != self.slug:
                    break  # switched away: nothing more of this room is shown
                frame = self._decode(raw)
                if frame is None:
                    continue
                if frame.get("type") == "ready":
                    got_ready = True
                await self.on_frame(frame)
        except ConnectionClosed:
            pass
        finally:
            self.ws = None
            if slug == self.slug:
                self.ready = False
                self.history_wanted = False
        return got_ready

    @staticmethod
    def _decode(raw: str | bytes) -> dict[str, Any] | None:
        try:
            frame = json.loads(raw)
        except ValueError:
            return None
        return frame if isinstance(frame, dict) else None

    async def send(self, frame: dict[str, Any]) -> bool:
        ws = self.ws
        if ws is None or not self.ready:
            return False
        try:
            await ws.send(json.dumps(frame))
        except ConnectionClosed:
            return False
        return True

    # --- frames from the server -----------------------------------------------------------

    async def on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        try:
            if kind == "ready":
                await self.on_ready(frame)
            elif kind == "message":
                self.on_message(frame)
            elif kind == "ack":
                self.confirmed(frame.get("client_id"))
            elif kind == "history":
                self.on_history(frame)
            elif kind == "presence":
                self.on_presence(frame)
            elif kind == "error":
                self.on_error(frame)
            elif kind == "typing":
                self.on_typing(frame)
            # Anything unknown: ignored.
        except (KeyError, TypeError, ValueError, AttributeError):
            say(f"! ignored a malformed {clean(kind)} frame from the server")

    def see_cursor(self, value: Any) -> None:
        if isinstance(value, int) and (self.cursor is None or value > self.cursor):
            self.cursor = value

    def upsert(self, message: dict[str, Any]) -> None:
        """Show a message once; a later change to it prints an edit/delete line."""
        old = self.shown.get(message["id"])
        self.shown[message["id"]] = message
        if old is None:
            say(message_line(message))
        else:
            line = change_line(old, message)
            if line:
                say(line)

    async def on_ready(self, frame: dict[str, Any]) -> None:
        self.me = frame["user"]["username"]
        self.room_name = frame["room"].get("name") or self.slug
        self.kind = str(frame["room"].get("kind") or "")
        if frame.get("reset"):
            # The server's whole current view: its cursor replaces ours, even if ours was higher.
            self.cursor = frame["cursor"]
            self.has_more = bool(frame.get("has_more"))
        else:
            self.see_cursor(frame["cursor"])
        title = room_title(self.kind, self.room_name, self.slug)
        if not self.ever_ready:
            say(f"* {title}, logged in as {clean(self.me)}")
        elif self.announce:
            say(f"* {'back in' if self.room_ready else 'now in'} {title}")
        if self.reconnecting:
            self.reconnecting = False
            say("* reconnected")
        for message in frame["messages"]:
            self.upsert(message)
        self.online = [str(name) for name in frame.get("online") or []]
        self.ready = self.room_ready = True
        if not self.ever_ready:
            self.ever_ready = True
            say(f"* online: {self.who()} · /help for commands")
            self.first_ready.set()
        elif self.announce:
            say(f"* online: {self.who()}")
        self.announce = False
        self.read_soon()
        await self.flush()

    def on_message(self, frame: dict[str, Any]) -> None:
        self.see_cursor(frame.get("cursor"))
        message = frame["message"]
        client_id = frame.get("client_id")
        if client_id and message.get("author") == self.me:
            self.confirmed(client_id)
        self.upsert(message)
        self.read_soon()

    def read_soon(self) -> None:
        """Move the room's read marker to the newest message shown (what is on screen has been
        read), at most once per READ_EVERY seconds."""
        if self.read_timer is None:
            self.read_timer = asyncio.get_running_loop().call_later(READ_EVERY, self._send_read)

    def _send_read(self) -> None:
        self.read_timer = None
        newest = max(self.shown, default=0)
        if newest > self.read_sent.get(self.slug, 0):
            self.read_sent[self.slug] = newest
            path = f"/rooms/{api.quote(self.slug)}/read"
            self.spawn(self._post_read(path, newest))

    async def _post_read(self, path: str, newest: int) -> None:
        try:
            await asyncio.to_thread(
                api.call, self.server, self.cookie, "POST", path, {"last_read_id": newest}
            )
        except api.ApiError:
            pass  # a marker is worth no error line: the next one catches up

    def on_history(self, frame: dict[str, Any]) -> None:
        self.history_wanted = False
        self.has_more = bool(frame.get("has_more"))
        older = [m for m in frame["messages"] if m["id"] not in self.shown]
        say(f"* {len(older)} older message{'' if len(older) == 1 else 's'}:")
        for message in frame["messages"]:
            self.upsert(message)
        say("* (older messages above)" if self.has_more else "* (the start of the room)")

    def on_presence(self, frame: dict[str, Any]) -> None:
        before = set(self.online)
        self.online = [str(name) for name in frame.get("online") or []]
        joined, left = frame.get("joined"), frame.get("left")
        if not joined and not left:
            # A batched frame (a crowd joined or left at once): tell the difference.
            for verb, names in (
                ("joined", set(self.online) - before),
                ("left", before - set(self.online)),
            ):
                names.discard(self.me)
                if names:
                    shown = ", ".join(sorted(names)) if len(names) <= 3 else f"{len(names)} people"
                    say(f"* {clean(shown)} {verb}")
        if joined and joined != self.me:
            say(f"* {clean(joined)} joined")
        if left and left != self.me:
            say(f"* {clean(left)} left")

    def on_typing(self, frame: dict[str, Any]) -> None:
        """`alice is typing…`, at most once per TYPING_SHOWN_EVERY per user, never for oneself
        (the server sends none back to the typist; a second session of one's own could)."""
        user = frame.get("user")
        if not isinstance(user, str) or not user or user == self.me:
            return
        now = time.monotonic()
        if now - self.typing_shown.get(user, -TYPING_SHOWN_EVERY) < TYPING_SHOWN_EVERY:
            return
        self.typing_shown[user] = now
        say(typing_line(user))

    def on_error(self, frame: dict[str, Any]) -> None:
        line = f"! {clean(frame.get('code'))}: {clean(frame.get('detail') or 'refused')}"
        retry = frame.get("retry_after")
        if isinstance(retry, int | float):
            line += f" (retry in {retry:.1f}s)"
        # A burst of posts refused for one pause is said once.
        repeat = retry is not None and asyncio.get_running_loop().time() < self.paused_until
        ref = frame.get("ref")
        entry = self.pending.get(ref) if isinstance(ref, str) else None
        if entry is not None and retry is not None:
            # rate_limited / unavailable: the post stays pending and goes again later.
            entry.sent_on = None
            self.pause(retry)
        elif entry is not None:
            self.confirmed(ref)
            line += f' — not sent: "{clean(entry.body[:60])}"'
        elif retry is not None and self.pending:
            # Refused without naming a post: send them all again later (repeats answer `ack`).
            for waiting in self.pending.values():
                waiting.sent_on = None
            self.pause(retry)
        if not repeat:
            say(line)

    # --- posting --------------------------------------------------------------------------

    def pause(self, seconds: Any) -> None:
        loop = asyncio.get_running_loop()
        try:
            seconds = max(0.2, float(seconds))
        except (TypeError, ValueError):
            seconds = 1.0
        self.paused_until = max(self.paused_until, loop.time() + seconds)
        if self.flush_timer is not None:
            self.flush_timer.cancel()
        self.flush_timer = loop.call_later(
            self.paused_until - loop.time() + 0.05, lambda: self.spawn(self.flush())
        )

    async def flush(self) -> None:
        """Send every pending post not yet sent on this socket, oldest first."""
        if not self.ready or asyncio.get_running_loop().time() < self.paused_until:
            return
        generation = self.generation
        for client_id, entry in list(self.pending.items()):
            if entry.sent_on == generation or entry.slug != self.slug:
                continue
            if client_id not in self.pending:
                continue
            entry.sent_on = generation
            frame = {"type": "post", "body": entry.body, "client_id": client_id}
            if entry.reply_to is not None:
                frame["reply_to"] = entry.reply_to
            if entry.attachments:
                frame["attachments"] = list(entry.attachments)
            if not await self.send(frame):
                entry.sent_on = None
                return

    async def post(
        self, body: str, reply_to: int | None = None, attachments: tuple[int, ...] = ()
    ) -> None:
        if len(body.encode("utf-8", "replace")) > MAX_FRAME_BYTES:
            say("! too_long: that message is far too long to send")
            return
        self.pending[uuid.uuid4().hex] = Pending(
            body, self.slug, reply_to=reply_to, attachments=attachments
        )
        self.all_sent.clear()
        if not self.ready and not (self.announce and self.ever_ready and not self.reconnecting):
            # (Just after a switch the new room's socket is opening: it goes out there.)
            say("* not connected: the message will be sent once reconnected")
        await self.flush()

    # --- commands -------------------------------------------------------------------------

    async def handle_line(self, line: str) -> bool:
        """Act on one typed line; False to leave."""
        text = line.strip()
        if not text:
            return True
        if text.startswith("//"):
            await self.post(line.lstrip()[1:])
            return True
        if not text.startswith("/"):
            await self.post(line)
            return True
        command, _, rest = text.partition(" ")
        command, rest = command.lower(), rest.strip()
        if command in ("/quit", "/exit"):
            return False
        if command == "/help":
            say(HELP)
        elif command == "/who":
            say(f"* online: {self.who()}" + ("" if self.ready else " (when last connected)"))
        elif command == "/history":
            await self.ask_history()
        elif command == "/delete":
            message_id = self.parse_id(rest)
            if message_id is not None and rest.split()[1:]:
                say("! usage: /delete ID")
            elif message_id is not None:
                await self.act({"type": "delete", "id": message_id})
        elif command == "/edit":
            target, _, body = rest.partition(" ")
            message_id = self.parse_id(target)
            if message_id is not None and not body.strip():
                say("! usage: /edit ID new text")
            elif message_id is not None:
                await self.act({"type": "edit", "id": message_id, "body": body.strip()})
        elif command == "/reply":
            target, _, body = rest.partition(" ")
            message_id = self.parse_id(target)
            if message_id is not None and not body.strip():
                say("! usage: /reply ID text")
            elif message_id is not None:
                await self.post(body.strip(), reply_to=message_id)
        elif command == "/react":
            target, _, emoji = rest.partition(" ")
            message_id = self.parse_id(target)
            if message_id is not None and len(emoji.split()) != 1:
                say("! usage: /react ID emoji (e.g. /react Id12 👍)")
            elif message_id is not None:
                await self.act({"type": "react", "id": message_id, "emoji": emoji.strip()})
        elif command == "/msg":
            await self.message_people(rest)
        elif command in ("/join", "/switch", "/j"):
            await self.join(rest)
        elif command == "/rooms":
            await self.list_rooms()
        elif command == "/search":
            await self.search(rest)
        elif command == "/upload":
            await self.upload(rest)
        elif command == "/invite":
            await self.invite(rest)
        elif command == "/kick":
            await self.kick(rest)
        elif command == "/leave":
            await self.leave(rest)
        else:
            say(f"! unknown command {clean(command)} (/help lists them)")
        return True

    @staticmethod
    def parse_id(text: str) -> int | None:
        match = _MESSAGE_ID.match(text.split()[0] if text.split() else "")
        if match is None:
            say("! give a message id, e.g. 3 or Id3")
            return None
        return int(match.group(1))

    async def act(self, frame: dict[str, Any]) -> None:
        if not await self.send(frame):
            say("! not connected: try again once reconnected")

    async def ask_history(self) -> None:
        if not self.shown:
            say("* no messages yet")
        elif not self.has_more:
            say("* no older messages")
        elif self.history_wanted:
            say("* already loading older messages")
        elif await self.send({"type": "history", "before": min(self.shown)}):
            self.history_wanted = True
        else:
            say("! not connected: try again once reconnected")

    def who(self) -> str:
        return ", ".join(clean(name) for name in sorted(set(self.online))) or "nobody"

    # --- rooms and people: the JSON doors (§4) ---------------------------------------------

    async def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        file: tuple[str, bytes] | None = None,
    ) -> dict[str, Any] | None:
        """A JSON request as the logged-in user (or, `file`, an upload of that name and
        content); None after printing the server's refusal."""
        for attempt in (1, 2):
            try:
                if file is not None:
                    return await asyncio.to_thread(
                        api.upload, self.server, self.cookie, path, *file
                    )
                return await asyncio.to_thread(
                    api.call, self.server, self.cookie, method, path, body
                )
            except api.ApiError as error:
                if error.status == 401 and attempt == 1:
                    # The session has ended (logged out elsewhere): log in again, once.
                    try:
                        self.cookie = await asyncio.to_thread(
                            login, self.server, self.username, self.password
                        )
                    except Fatal as failed:
                        say(f"! {clean(failed.message)}")
                        return None
                    continue
                say(f"! {clean(error.message)}")
                return None
        return None

    async def upload(self, rest: str) -> None:
        """`/upload PATH [caption]` (a PATH with spaces in quotes): upload the file to this room
        (PROTOCOL.md §8), then post it with the caption, if any."""
        path, caption = split_path(rest)
        if not path:
            say('! usage: /upload PATH [caption] (a path with spaces in "quotes")')
            return
        file = await asyncio.to_thread(lambda: Path(path).expanduser())
        try:
            data = await asyncio.to_thread(file.read_bytes)
        except OSError as error:
            say(f"! cannot read {clean(path)}: {clean(error.strerror or error)}")
            return
        say(f"* uploading {clean(file.name)} ({size_text(len(data))})…")
        answer = await self.call(
            "POST", f"/rooms/{api.quote(self.slug)}/uploads", file=(file.name, data)
        )
        if answer is None:
            return
        attachment = answer.get("id")
        if not isinstance(attachment, int):
            say("! the server did not say which upload it stored")
            return
        await self.post(caption, attachments=(attachment,))

    async def message_people(self, rest: str) -> None:
        """`/msg alice,bob text`: the direct room of those people (made on first use), and the
        text sent there; without text, just go there."""
        people, _, text = rest.partition(" ")
        names = [name for name in people.split(",") if name]
        if not names:
            say("! usage: /msg NAME[,NAME…] [text]")
            return
        answer = await self.call("POST", "/direct", {"usernames": names})
        slug = answer.get("slug") if answer else None
        if not isinstance(slug, str) or not slug:
            if answer is not None:
                say("! the server answered /direct without a room")
            return
        if not await self.switch(slug):
            return
        if text.strip():
            await self.post(text.strip())

    async def join(self, rest: str) -> None:
        """`/join SLUG`: go to another room the user can read."""
        slug = rest.split()[0] if rest.split() else ""
        if not slug or rest.split()[1:]:
            say("! usage: /join SLUG (the last part of the room's address)")
            return
        if slug == self.slug:
            say(f"* already in {clean(self.room_name)}")
            return
        # Asked first, so that a typo is an error line, not a closed socket.
        if await self.call("GET", f"/rooms/{api.quote(slug)}/members") is not None:
            await self.switch(slug)

    async def search(self, rest: str) -> None:
        """`/search words`: messages of every room you can read (PROTOCOL.md §7), newest
        first, with their ids and rooms."""
        if not rest:
            say('! usage: /search words (a "quoted phrase" matches as a phrase)')
            return
        answer = await self.call("GET", "/api/search?" + urllib.parse.urlencode({"q": rest}))
        if answer is None:
            return
        results = answer.get("results") or []
        if not results:
            say(f"* nothing found for {clean(rest)}")
            return
        say(f"* {len(results)}{'+' if answer.get('has_more') else ''} found (newest first):")
        for result in results:
            say(search_line(result))

    async def list_rooms(self) -> None:
        answer = await self.call("GET", "/api/rooms")
        if answer is None:
            return
        rooms = [room for room in answer.get("rooms") or [] if isinstance(room, dict)]
        if not rooms:
            say("* you are in no rooms yet (/join SLUG, /msg NAME)")
            return
        say("* your rooms (/join SLUG to go to one):")
        say(rooms_table(rooms, self.slug))

    def one_name(self, rest: str, command: str) -> str | None:
        names = rest.split()
        if len(names) != 1:
            say(f"! usage: {command} USERNAME")
            return None
        return names[0]

    async def invite(self, rest: str) -> None:
        """`/invite bob`: add bob to this room; the room's notice line confirms it."""
        name = self.one_name(rest, "/invite")
        if name is not None:
            await self.call("POST", f"/rooms/{api.quote(self.slug)}/members", {"username": name})

    async def kick(self, rest: str) -> None:
        """`/kick bob` (owners): remove bob from this room; the notice line confirms it."""
        name = self.one_name(rest, "/kick")
        if name is None:
            return
        if name == self.me:
            await self.leave("")
            return
        path = f"/rooms/{api.quote(self.slug)}/members/{api.quote(name)}"
        await self.call("DELETE", path)

    async def leave(self, rest: str) -> None:
        """`/leave`: stop being a member of this room. A private room is then gone for the user:
        back to the room before it, or exit if there was none."""
        if rest:
            say("! usage: /leave (leaves the room you are in)")
            return
        slug = self.slug
        self.leaving = slug
        answer = await self.call("DELETE", f"/rooms/{api.quote(slug)}/members/{api.quote(self.me)}")
        if self.slug != slug:
            return  # the server's close (4403) came first: the room is already left
        if answer is None:
            self.leaving = None
            return
        if self.kind == "public":
            # Anyone may read a public room: the socket stays; posting here joins it again.
            self.leaving = None
            say(f"* you left {clean(self.room_name)}; you can still read it here")
            return
        # The server closes the socket (4403); do not wait for it.
        self.left = True
        ws = self.ws
        if ws is not None:
            await ws.close()


# --- the command line -----------------------------------------------------------------------
