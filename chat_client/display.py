"""What the client prints: messages and changes as lines, text from the server made safe."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

HELP = """\
Commands:
  /delete ID        delete your message ID (e.g. /delete 3 or /delete Id3)
  /edit ID text     replace the text of your message ID
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


def message_line(message: dict[str, Any]) -> str:
    """A message as first shown: `[12:01] Id3 omkar: How are you`, or its tombstone."""
    head = f"[{clock(message.get('created'))}] Id{message['id']}"
    if message.get("deleted"):
        return f"{head} deleted by {deleter(message)}"
    line = f"{head} {clean(message.get('author'))}: {clean(message.get('body', ''))}"
    return line + " (edited)" if message.get("edited") else line


def change_line(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """What to print when an already-shown message changes, or None if nothing visible did."""
    fields = ("author", "body", "edited", "deleted", "deleted_by")
    if all(old.get(f) == new.get(f) for f in fields):
        return None
    who, body = clean(new.get("author")), clean(new.get("body", ""))
    if new.get("deleted"):
        return None if old.get("deleted") else f"Id{new['id']} deleted by {deleter(new)}"
    if old.get("deleted"):
        return f"Id{new['id']} restored: {who}: {body}"
    return f"Id{new['id']} edited by {who}: {body}"


def say(line: str) -> None:
    # Under prompt_toolkit's patch_stdout, this goes above the line being typed.
    print(line, flush=True)
