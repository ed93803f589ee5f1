"""The wire format of docs/protocol.md §2: one parser for client frames, one builder per server
frame, and the close and error codes.

Nothing else in the project builds a frame's JSON shape or writes a code as a literal.
"""

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any

from django.conf import settings
from django.urls import reverse

from .. import rendering
from ..models import Attachment, Message


class CloseCode(IntEnum):
    """Why the server closed a socket (docs/protocol.md §2)."""

    NOT_LOGGED_IN = 4401  # no logged-in user, or the session ended
    FORBIDDEN = 4403  # banned from the room (or, §4, removed from it)
    NO_SUCH_ROOM = 4404  # unknown, archived, or (§4) not visible to the user
    TOO_MANY_SOCKETS = 4429  # the per-user socket cap across processes


class ErrorCode(StrEnum):
    """The `code` of an `error` frame (docs/protocol.md §2, Errors)."""

    INVALID = "invalid"
    EMPTY = "empty"
    TOO_LONG = "too_long"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    MUTED = "muted"
    UNAVAILABLE = "unavailable"
    TOO_MANY = "too_many"  # §6: a message's 21st distinct reaction


class ChatError(Exception):
    """A refused frame: answered with an `error` frame, the connection stays open. Views answer
    the same errors as HTTP statuses (chat.views)."""

    def __init__(
        self,
        code: ErrorCode,
        detail: str,
        *,
        ref: Any = None,
        retry_after: float | None = None,
        close: "CloseCode | None" = None,
        status: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.ref = ref
        self.retry_after = retry_after
        # When the socket may not stay open either (banned, the room gone): its close code.
        self.close = close
        # The HTTP status a view answers it with, when the code alone does not say (409).
        self.status = status


def encode(frame: dict[str, Any]) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# §6: a reply quotes this much of the original's body; each reaction names this many people.
EXCERPT_CHARS = 100
REACTION_USERS = 20


def message_object(message: Message) -> dict[str, Any]:
    """The Message object (§2, §6). A tombstone never carries its text, nor anything made from
    it (`html`, `mentions`), nor its reactions (kept, and shown again if a moderator restores
    it). Read with chat.selectors' message queries, which fetch what this needs in bulk."""
    deleted = message.deleted_at is not None
    return {
        "id": message.pk,
        "author": message.author.username,
        "body": "" if deleted else message.body,
        "created": iso(message.created),
        "edited": iso(message.edited),
        "deleted": deleted,
        "deleted_by": message.deleted_by.username if deleted and message.deleted_by else None,
        "system": message.system,
        "html": "" if deleted else _html(message),
        "mentions": [] if deleted else list(message.mentions),
        "reply_to": _reply_object(message),
        "reactions": [] if deleted else reactions(message),
        "attachments": [] if deleted else [attachment_object(a) for a in attachments(message)],
    }


def attachment_object(attachment: Attachment) -> dict[str, Any]:
    """The Attachment object (§8), and our addition: an image's `width` and `height` as served
    (upright), so a page reserves its place before it loads (null for other files)."""
    thumbnail = attachment.thumbnail_key
    return {
        "id": attachment.pk,
        "name": attachment.name,
        "size": attachment.size,
        "content_type": attachment.content_type,
        "url": reverse("chat:file", args=[attachment.pk, attachment.name]),
        "thumbnail_url": reverse("chat:thumbnail", args=[attachment.pk]) if thumbnail else None,
        "width": attachment.width,
        "height": attachment.height,
    }


def attachments(message: Message) -> list[Attachment]:
    prefetched = getattr(message, "_prefetched_objects_cache", {})
    if "attachments" in prefetched:  # chat.selectors' queries fetch them for a whole page
        return list(prefetched["attachments"])
    if message._state.adding:
        return []
    return list(message.attachments.all())


def _html(message: Message) -> str:
    if message.html_version == rendering.RENDERER_VERSION:
        return message.html
    # Stored by an older renderer and not yet made again (`manage.py render_messages`).
    if message.system:
        return rendering.plain(message.body)
    return rendering.render(message.body, message.mentions)


def _reply_object(message: Message) -> dict[str, Any] | None:
    if message.reply_to_id is None:
        return None
    original = message.reply_to
    return {
        "id": original.pk,
        "author": original.author.username,
        "excerpt": "" if original.deleted_at is not None else original.body[:EXCERPT_CHARS],
    }


def reactions(message: Message) -> list[dict[str, Any]]:
    """`[{emoji, count, users}]` in order of each emoji's first use (rows come by id)."""
    grouped: dict[str, list[str]] = {}
    prefetched = getattr(message, "_prefetched_objects_cache", {})
    if "reactions" in prefetched:  # chat.selectors' queries fetch them for a whole page
        rows = prefetched["reactions"]
    elif message._state.adding:  # built in memory, never stored: nobody reacted to it
        rows = []
    else:
        rows = message.reactions.select_related("user")
    for reaction in rows:
        grouped.setdefault(reaction.emoji, []).append(reaction.user.username)
    return [
        {"emoji": emoji, "count": len(users), "users": users[:REACTION_USERS]}
        for emoji, users in grouped.items()
    ]


def message_frame(message: Message, cursor: int, *, created: bool) -> str:
    """The frame of one change. Only the change that created the message echoes the sender's
    `client_id` (its acknowledgement); edits, deletions and restores carry null."""
    return encode(
        {
            "type": "message",
            "message": message_object(message),
            "cursor": cursor,
            "client_id": (message.client_id or None) if created else None,
        }
    )


def encode_messages(messages: list[Message]) -> str:
    """A list of Message objects as the JSON array a frame carries."""
    return encode([message_object(m) for m in messages])  # type: ignore[arg-type]


def ready_frame(
    *,
    room: dict[str, str],  # {slug, name, kind, topic} (chat.selectors.room_object)
    username: str,
    messages: str,  # the `messages` array, encoded (encode_messages; a page may be shared)
    has_more: bool,
    cursor: int,
    online: list[str],
    reset: bool,
) -> str:
    head = encode({"type": "ready", "room": room, "user": {"username": username}})
    tail = encode({"has_more": has_more, "cursor": cursor, "online": online, "reset": reset})
    return f'{head[:-1]},"messages":{messages},{tail[1:]}'


def history_frame(messages: list[Message], has_more: bool, has_newer: bool | None = None) -> str:
    """A `history` answer; `has_newer` only for an `around` request (§6)."""
    frame: dict[str, Any] = {
        "type": "history",
        "messages": [message_object(m) for m in messages],
        "has_more": has_more,
    }
    if has_newer is not None:
        frame["has_newer"] = has_newer
    return encode(frame)


def ack_frame(client_id: str, message_id: int) -> str:
    return encode({"type": "ack", "client_id": client_id, "id": message_id})


def presence_frame(online: list[str], joined: str | None = None, left: str | None = None) -> str:
    return encode({"type": "presence", "online": online, "joined": joined, "left": left})


def typing_frame(username: str) -> str:
    return encode({"type": "typing", "user": username})


def reported_frame(message_id: int) -> str:
    """The answer to a `report` (§9), to the reporter only: the report is on file."""
    return encode({"type": "reported", "id": message_id})


# --- the inbox socket (§5) ------------------------------------------------------------------
# A RoomSummary: {slug, name, kind, topic, unread, mentions, last_activity, notifications}, the
# last one our addition (the member's notification setting, so every device shows it).


def inbox_frame(rooms: list[dict[str, Any]]) -> str:
    return encode({"type": "inbox", "rooms": rooms})


def room_frame(summary: dict[str, Any]) -> str:
    return encode({"type": "room", "room": summary})


def room_removed_frame(slug: str) -> str:
    return encode({"type": "room_removed", "slug": slug})


# Why a `notify` was sent: §5's two, and ours for a room whose setting is "all messages".
NOTIFY_REASONS = ("mention", "direct", "message")


def notify_frame(room: dict[str, str], message: Message, reason: str) -> str:
    """`room`: {slug, name, kind} as the notified user sees it."""
    assert reason in NOTIFY_REASONS
    return encode(
        {"type": "notify", "room": room, "message": message_object(message), "reason": reason}
    )


def error_frame(error: ChatError) -> str:
    frame: dict[str, Any] = {
        "type": "error",
        "code": error.code,
        "detail": error.detail,
        "ref": error.ref,
    }
    if error.retry_after is not None:
        frame["retry_after"] = error.retry_after
    return encode(frame)


# --- client frames -------------------------------------------------------------------------


# Each frame's `ref`: what an `error` about it refers to (PROTOCOL.md §2, Errors).


@dataclass(frozen=True)
class Post:
    body: str
    client_id: str | None
    reply_to: int | None = None
    attachments: tuple[int, ...] = ()  # upload ids (§8)

    @property
    def ref(self) -> str | None:
        return self.client_id


@dataclass(frozen=True)
class Edit:
    id: int
    body: str

    @property
    def ref(self) -> int:
        return self.id


@dataclass(frozen=True)
class Delete:
    id: int

    @property
    def ref(self) -> int:
        return self.id


@dataclass(frozen=True)
class React:
    id: int
    emoji: str

    @property
    def ref(self) -> int:
        return self.id


@dataclass(frozen=True)
class History:
    """Older messages `before` an id (§2), or the messages `around` one (§6): one of the two."""

    before: int | None
    limit: int
    around: int | None = None

    ref = None


@dataclass(frozen=True)
class Typing:
    ref = None


@dataclass(frozen=True)
class Report:
    id: int
    reason: str

    @property
    def ref(self) -> int:
        return self.id


# Attachments on one message, at most (PROTOCOL.md §8).
MAX_ATTACHMENTS = 10

# A report's reason, at most (PROTOCOL.md §9).
REPORT_REASON_MAX = 500

ClientFrame = Post | Edit | Delete | React | History | Typing | Report

MAX_ID = 2**63 - 1
CLIENT_ID = re.compile(r"[!-~]+")


def _invalid(detail: str, ref: Any = None) -> ChatError:
    return ChatError(ErrorCode.INVALID, detail, ref=ref)


def _string(data: dict[str, Any], field: str, ref: Any) -> str:
    value = data.get(field)
    if not isinstance(value, str):
        raise _invalid(f"`{field}` must be a string.", ref)
    return value


def _message_id(data: dict[str, Any], field: str, ref: Any = None) -> int:
    value = data.get(field)
    # bool is an int in Python; JSON true is not an id.
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_ID:
        raise _invalid(f"`{field}` must be a positive integer message id.", ref)
    return value


def _client_id(data: dict[str, Any]) -> str | None:
    value = data.get("client_id")
    if value is None:
        return None
    # Printable ASCII only: it is echoed to every client and used in keys.
    if not isinstance(value, str) or not 0 < len(value) <= 64 or not CLIENT_ID.fullmatch(value):
        raise _invalid("`client_id` must be 1 to 64 printable ASCII characters.")
    return value


def _attachment_ids(data: dict[str, Any], ref: Any) -> tuple[int, ...]:
    value = data.get("attachments")
    if value is None:
        return ()
    ids = value if isinstance(value, list) else None
    valid = ids is not None and all(
        isinstance(i, int) and not isinstance(i, bool) and 0 < i <= MAX_ID for i in ids
    )
    if not valid or len(ids) > MAX_ATTACHMENTS or len(set(ids)) != len(ids):
        raise _invalid(
            f"`attachments` must be a list of at most {MAX_ATTACHMENTS} different upload ids.", ref
        )
    return tuple(ids)


def parse(text: str) -> ClientFrame:
    """Turn one text frame into a typed client frame, or raise ChatError('invalid'|'too_long')."""
    if len(text.encode("utf-8", "surrogatepass")) > settings.CHAT_MAX_FRAME_BYTES:
        raise ChatError(
            ErrorCode.TOO_LONG, f"A frame may be at most {settings.CHAT_MAX_FRAME_BYTES} bytes."
        )
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise _invalid("The frame is not valid JSON.") from None
    if not isinstance(data, dict):
        raise _invalid("A frame must be a JSON object.")
    kind = data.get("type")
    if kind == "post":
        client_id = _client_id(data)
        reply_to = None
        if data.get("reply_to") is not None:
            reply_to = _message_id(data, "reply_to", client_id)
        return Post(
            body=_string(data, "body", client_id),
            client_id=client_id,
            reply_to=reply_to,
            attachments=_attachment_ids(data, client_id),
        )
    if kind == "edit":
        message_id = _message_id(data, "id")
        return Edit(id=message_id, body=_string(data, "body", message_id))
    if kind == "delete":
        return Delete(id=_message_id(data, "id"))
    if kind == "react":
        message_id = _message_id(data, "id")
        return React(id=message_id, emoji=_string(data, "emoji", message_id))
    if kind == "history":
        limit = data.get("limit", settings.CHAT_HISTORY_PAGE)
        if (
            not isinstance(limit, int)
            or isinstance(limit, bool)
            or not 1 <= limit <= settings.CHAT_HISTORY_MAX
        ):
            raise _invalid(f"`limit` must be an integer from 1 to {settings.CHAT_HISTORY_MAX}.")
        if "around" in data:
            if "before" in data:
                raise _invalid("Ask for `history` `before` a message or `around` one, not both.")
            return History(before=None, around=_message_id(data, "around"), limit=limit)
        return History(before=_message_id(data, "before"), limit=limit)
    if kind == "typing":
        return Typing()
    if kind == "report":
        message_id = _message_id(data, "id")
        reason = data.get("reason", "")
        if not isinstance(reason, str):
            raise _invalid("`reason` must be a string.", message_id)
        if len(reason) > REPORT_REASON_MAX:
            raise _invalid(
                f"A report's reason may be at most {REPORT_REASON_MAX} characters.", message_id
            )
        return Report(id=message_id, reason=reason)
    if isinstance(kind, str) and len(kind) <= 32:
        raise _invalid(f"Unknown frame type {kind!r}.")
    raise _invalid("A frame needs a string `type`.")
