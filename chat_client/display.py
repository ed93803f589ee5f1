"""What the client prints: messages and changes as lines, text from the server made safe."""

from __future__ import annotations

import html
import re
from datetime import datetime
from typing import Any

HELP = """\
Commands:
  /msg NAME[,NAME…] text   message people directly (opens the conversation; no text: just go)
  /rooms            your rooms: kind, name, slug, unread
  /search WORDS     search every room you can read ("a phrase" in double quotes)
  /join SLUG        go to another room (also /switch SLUG or /j SLUG)
  /invite NAME      add NAME to this private room
  /kick NAME        remove NAME from this room (owners)
  /leave            leave this room (a private one: back to the room before, or exit)
  /delete ID        delete your message ID (e.g. /delete 3 or /delete Id3)
  /edit ID text     replace the text of your message ID
  /reply ID text    answer message ID (shown as "↳ reply to IdN author: …")
  /upload PATH [caption]   send a file (an image, a PDF…) with an optional caption
  /react ID EMOJI   add your reaction to message ID, or take it back (e.g. /react Id12 👍)
  /who              who is online
  /history          print the page of messages before the oldest one shown
  /help             this help
  /quit             leave (Ctrl-D too)
Anything else is sent as a message; start it with // to send a line beginning with /."""

# Control characters (but tab and newline) would let a message drive the terminal: escape
# sequences, carriage returns over earlier text. They are shown as "?".
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def clean(text: Any) -> str:
    """Text from the server made safe to print: no control characters, continuation lines
    indented under the message."""
    return _CONTROL.sub("?", str(text)).replace("\n", "\n    ")


def clock(iso: str | None) -> str:
    """`HH:MM` in local time for an ISO 8601 UTC timestamp."""
    try:
        return (
            datetime.fromisoformat(str(iso).replace("Z", "+00:00")).astimezone().strftime("%H:%M")
        )
    except ValueError:
        return "--:--"


def deleter(message: dict[str, Any]) -> str:
    return clean(message.get("deleted_by") or "a moderator")


EXCERPT = 60  # of a replied-to message, in the reply's line


def reply_line(message: dict[str, Any]) -> str | None:
    """`    ↳ reply to Id12 alice: the first words…` for a reply (PROTOCOL.md §6), else None."""
    quoted = message.get("reply_to")
    if not isinstance(quoted, dict):
        return None
    excerpt = " ".join(str(quoted.get("excerpt") or "").split())
    if len(excerpt) > EXCERPT:
        excerpt = excerpt[:EXCERPT] + "…"
    excerpt = clean(excerpt) if excerpt else "(deleted)"
    return f"    ↳ reply to Id{quoted.get('id')} {clean(quoted.get('author'))}: {excerpt}"


def reactions_text(message: dict[str, Any]) -> str:
    """` [👍 3] [🎉 1]` (PROTOCOL.md §6 `reactions`), or "" for none."""
    chips = []
    for reaction in message.get("reactions") or ():
        if isinstance(reaction, dict):
            chips.append(f"[{clean(reaction.get('emoji'))} {reaction.get('count')}]")
    return (" " + " ".join(chips)) if chips else ""


def message_line(message: dict[str, Any]) -> str:
    """A message as first shown: `[12:01] Id3 omkar: How are you [👍 2]`, a reply's quote on
    the line above it, or its tombstone. The body is shown as written (Markdown source)."""
    if message.get("system") and not message.get("deleted"):
        # A membership notice ("alice added bob"): part of the history, never editable.
        return f"[{clock(message.get('created'))}] -- {clean(message.get('body', ''))} --"
    head = f"[{clock(message.get('created'))}] Id{message['id']}"
    if message.get("deleted"):
        return f"{head} deleted by {deleter(message)}"
    line = f"{head} {clean(message.get('author'))}: {clean(message.get('body', ''))}"
    if message.get("edited"):
        line += " (edited)"
    line += reactions_text(message)
    line += "".join(f"\n    {file}" for file in attachment_lines(message))
    quote = reply_line(message)
    return f"{quote}\n{line}" if quote else line


def attachment_lines(message: dict[str, Any]) -> list[str]:
    """`[file: photo.jpg (1.2 MB)]` for each of a message's attachments (PROTOCOL.md §8)."""
    lines = []
    for item in message.get("attachments") or ():
        if isinstance(item, dict):
            lines.append(f"[file: {clean(item.get('name'))} ({size_text(item.get('size'))})]")
    return lines


def size_text(size: Any) -> str:
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return "?"
    if size < 1000:
        return f"{size} B"
    for unit in ("kB", "MB", "GB"):
        size /= 1000
        if size < 1000 or unit == "GB":
            return f"{size:.1f} {unit}"
    return "?"


def change_line(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """What to print when an already-shown message changes, or None if nothing visible did."""
    fields = ("author", "body", "edited", "deleted", "deleted_by")
    if all(old.get(f) == new.get(f) for f in fields):
        if new.get("deleted") or old.get("reactions") == new.get("reactions"):
            return None
        reactions = reactions_text(new) or " no reactions"
        return f"Id{new['id']} reactions:{reactions}"
    who, body = clean(new.get("author")), clean(new.get("body", ""))
    if new.get("deleted"):
        return None if old.get("deleted") else f"Id{new['id']} deleted by {deleter(new)}"
    if old.get("deleted"):
        return f"Id{new['id']} restored: {who}: {body}"
    return f"Id{new['id']} edited by {who}: {body}"


KIND_WORDS = {"public": "public room", "private": "private room", "direct": "direct messages with"}


def typing_line(user: str) -> str:
    """`* alice is typing…` (PROTOCOL.md §2 `typing`)."""
    return f"* {clean(user)} is typing…"


def room_title(kind: str, name: str, slug: str) -> str:
    """`private room Plans (plans)`, `direct messages with alice (dm-…)`: kind and name as seen."""
    words = KIND_WORDS.get(kind)
    title = f"{clean(name)} ({clean(slug)})"
    return f"{words} {title}" if words else title


def rooms_table(rooms: list[dict[str, Any]], current: str) -> str:
    """The `/rooms` listing: one room a line, `>` marking the current one."""
    rows = [
        (
            ">" if room.get("slug") == current else " ",
            clean(room.get("kind", "")),
            clean(room.get("name", "")),
            clean(room.get("slug", "")),
            f"{room['unread']} unread"
            if isinstance(room.get("unread"), int) and room["unread"]
            else "",
        )
        for room in rooms
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        (
            " ".join(value.ljust(width) for value, width in zip(row[:4], widths, strict=True))
            + "  "
            + row[4]
        ).rstrip()
        for row in rows
    )


_MARK = re.compile(r"</?mark>")


def search_line(result: dict[str, Any]) -> str:
    """`[12:01] general Id42 alice: …the *deploy* failed…`: a search result (§7), its matched
    words between asterisks."""
    room = result.get("room") if isinstance(result.get("room"), dict) else {}
    message = result.get("message") if isinstance(result.get("message"), dict) else {}
    snippet = html.unescape(_MARK.sub("*", str(result.get("snippet") or "")))
    return (
        f"[{clock(message.get('created'))}] {clean(room.get('slug'))} Id{message.get('id')} "
        f"{clean(message.get('author'))}: {clean(snippet)}"
    )


def say(line: str) -> None:
    # Under prompt_toolkit's patch_stdout, this goes above the line being typed.
    print(line, flush=True)
