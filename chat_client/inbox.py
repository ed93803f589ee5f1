"""The terminal client's inbox socket (PROTOCOL.md §5): a status line of the other rooms' unread
counts, and a bell with a line for mentions and direct messages.

It runs beside the room's socket and never stops the client: if the inbox cannot connect (an
older server, a network hiccup) it retries in the background with backoff, silently.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from .display import clean, say
from .login import USER_AGENT

BELL = "\a"
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
# The status line is printed when the other rooms' counts change, at most this often.
STATUS_EVERY = 5.0
EXCERPT = 60


def status_line(rooms: dict[str, dict[str, Any]], current: str) -> str | None:
    """`* unread: general 3, alice 1 (@1)`: the other rooms with unread messages, most recent
    first, or None when there are none."""
    others = [
        summary
        for slug, summary in rooms.items()
        if slug != current and isinstance(summary.get("unread"), int) and summary["unread"] > 0
    ]
    if not others:
        return None
    others.sort(key=lambda summary: summary.get("last_activity") or "", reverse=True)
    parts = []
    for summary in others:
        part = f"{clean(summary.get('name', summary.get('slug')))} {summary['unread']}"
        mentions = summary.get("mentions")
        if isinstance(mentions, int) and mentions > 0:
            part += f" (@{mentions})"
        parts.append(part)
    return "* unread: " + ", ".join(parts) + "  (/j SLUG to go)"


def notify_line(frame: dict[str, Any]) -> str:
    """`🔔 alice mentioned you in general (general): text…`, with the terminal's bell."""
    room = frame.get("room") if isinstance(frame.get("room"), dict) else {}
    message = frame.get("message") if isinstance(frame.get("message"), dict) else {}
    body = " ".join(str(message.get("body") or "").split())
    if len(body) > EXCERPT:
        body = body[:EXCERPT] + "…"
    who = clean(message.get("author"))
    where = f"{clean(room.get('name'))} ({clean(room.get('slug'))})"
    reason = frame.get("reason")
    if reason == "mention":
        head = f"{who} mentioned you in {where}"
    elif reason == "direct":
        head = f"{who} wrote to you ({clean(room.get('slug'))})"
    else:
        head = f"{who} in {where}"
    return f"{BELL}🔔 {head}: {clean(body)}"


class Inbox:
    """The user's inbox socket, reconnecting by itself; `current()` names the room on screen."""

    def __init__(
        self, url: str, origin: str, cookie: Callable[[], str], current: Callable[[], str]
    ) -> None:
        self.url, self.origin = url, origin
        self.cookie, self.current = cookie, current
        self.rooms: dict[str, dict[str, Any]] = {}
        self.shown: str | None = None  # the status line last printed
        self.last_status = 0.0
        self.timer: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        attempts = 0
        while True:
            if attempts:
                ceiling = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(attempts - 1, 10))
                await asyncio.sleep(ceiling / 2 + random.random() * ceiling / 2)
            try:
                async with connect(
                    self.url,
                    origin=self.origin,
                    additional_headers={"Cookie": self.cookie()},
                    user_agent_header=USER_AGENT,
                    open_timeout=10,
                    ping_interval=15,
                    ping_timeout=15,
                ) as ws:
                    async for raw in ws:
                        attempts = 0
                        self.on_frame(raw)
            except (OSError, TimeoutError, EOFError, InvalidHandshake, ConnectionClosed):
                pass
            attempts += 1

    def on_frame(self, raw: str | bytes) -> None:
        try:
            frame = json.loads(raw)
        except ValueError:
            return
        if not isinstance(frame, dict):
            return
        kind = frame.get("type")
        if kind == "inbox" and isinstance(frame.get("rooms"), list):
            self.rooms = {
                room["slug"]: room
                for room in frame["rooms"]
                if isinstance(room, dict) and isinstance(room.get("slug"), str)
            }
            self.shown = status_line(self.rooms, self.current())  # no line for the first state
        elif kind == "room" and isinstance(frame.get("room"), dict):
            room = frame["room"]
            if isinstance(room.get("slug"), str):
                self.rooms[room["slug"]] = room
                self.status_changed()
        elif kind == "room_removed":
            self.rooms.pop(frame.get("slug"), None)
            self.status_changed()
        elif kind == "notify":
            room = frame.get("room") if isinstance(frame.get("room"), dict) else {}
            if room.get("slug") != self.current() or frame.get("reason") == "mention":
                say(notify_line(frame))

    def status_changed(self) -> None:
        """Print the status line if it changed, at most once per STATUS_EVERY seconds."""
        if self.timer is not None:
            return
        loop = asyncio.get_running_loop()
        wait = self.last_status + STATUS_EVERY - loop.time()
        if wait > 0:
            self.timer = loop.call_later(wait, self._print_status)
        else:
            self._print_status()

    def _print_status(self) -> None:
        self.timer = None
        line = status_line(self.rooms, self.current())
        if line == self.shown:
            return
        self.shown = line
        self.last_status = asyncio.get_running_loop().time()
        say(line or "* no unread messages in your other rooms")
