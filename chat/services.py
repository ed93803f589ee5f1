"""Every change to chat state: ask the policy, validate, commit, then ring the room's doorbell.

The consumer, the views and the admin call these functions and nothing else, so a change made
from any door reaches every open socket. Each function is synchronous and runs in one
transaction, except the section for the sockets (`submit_post` ...), which counts the rate
limits on the event loop, parses a body on a render thread, and then runs the synchronous one
on the database thread.
"""

import asyncio
import logging
import math
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Length
from django.utils import timezone
from django.utils.text import slugify

from . import (
    attachments,
    limits,
    metrics,
    policy,
    reactions,
    rendering,
    search,
    selectors,
    text,
    throttle,
)
from .models import (
    Attachment,
    Change,
    Membership,
    Mention,
    Message,
    MessageRevision,
    ModerationAction,
    Reaction,
    Report,
    Room,
    RoomRestriction,
)
from .realtime import events, protocol
from .realtime.events import publish_change, publish_now
from .realtime.protocol import ChatError, CloseCode, ErrorCode

logger = logging.getLogger(__name__)


ROOM_ARCHIVED = "This room has been archived."


@dataclass(frozen=True)
class Posted:
    message: Message
    created: bool


def clean_body(body: str, *, ref: object = None) -> str:
    """The body as stored (stripped), or ChatError: `invalid` for text the database cannot hold
    or that draws over its neighbours, `empty` when nothing would show, `too_long`."""
    body = body.strip()
    problem = text.unstorable(body)
    if problem:
        raise ChatError(ErrorCode.INVALID, problem, ref=ref)
    if text.is_blank(body):
        raise ChatError(ErrorCode.EMPTY, "A message needs some visible text.", ref=ref)
    if len(body) > settings.CHAT_MAX_BODY:
        raise ChatError(
            ErrorCode.TOO_LONG,
            f"A message may be at most {settings.CHAT_MAX_BODY} characters.",
            ref=ref,
        )
    problem = text.too_many_marks(body)
    if problem:
        raise ChatError(ErrorCode.INVALID, problem, ref=ref)
    return body


def clean_post_body(body: str, *, attached: bool, ref: object = None) -> str:
    """A post's body as stored: `clean_body`'s rule, except that a post with attachments (§8)
    may leave it empty."""
    if attached and not body.strip():
        return ""
    return clean_body(body, ref=ref)


def _lock_room(room_id: int) -> None:
    """Take the room's row lock for the rest of the transaction (writers queue here)."""
    Room.objects.select_for_update().only("id").get(pk=room_id)


def _next_cursor(room_id: int, *, archived_ok: bool = False) -> tuple[int, int]:
    """Move the room's cursor one step and return it, with the room's members epoch.

    One statement: the UPDATE also takes the room's row lock for the rest of the transaction,
    so writers to one room queue here and cursors are handed out in commit order. It also
    checks that the room is not archived, so no change slips in beside an archiving.
    """
    table, column, archived, epoch = map(
        connection.ops.quote_name, (Room._meta.db_table, "cursor", "archived_at", "members_epoch")
    )
    condition = "" if archived_ok else f" AND {archived} IS NULL"
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {column} = {column} + 1 WHERE id = %s{condition} "
            f"RETURNING {column}, {epoch}",
            [room_id],
        )
        row = cursor.fetchone()
    if row is None:
        if Room.objects.filter(pk=room_id).exists():
            raise ChatError(ErrorCode.FORBIDDEN, ROOM_ARCHIVED)
        raise Room.DoesNotExist(f"room {room_id}")
    return row[0], row[1]


def _record(
    room_id: int,
    message: Message,
    kind: str,
    *,
    archived_ok: bool = False,
    attach: tuple[int, ...] = (),
) -> None:
    """Move the room's cursor by one for this change, log it, and broadcast after commit.

    Refuses a change in an archived room unless `archived_ok` (a moderator's hide or restore).
    A new message takes the uploads `attach` (§8), or the transaction fails with `invalid`.
    """
    cursor, epoch = _next_cursor(room_id, archived_ok=archived_ok)
    message.cursor = cursor
    if message.pk is None:
        message.save()
        # A new message has no reactions, and only the files it attaches now: its frame need
        # not ask the database.
        message._prefetched_objects_cache = {
            "reactions": _empty(Reaction.objects.none()),
            "attachments": attachments.attach(message=message, ids=attach),
        }
    else:
        message.save(
            update_fields=[
                "body",
                "edited",
                "deleted_at",
                "deleted_by",
                "cursor",
                "html",
                "html_version",
                "mentions",
            ]
        )
    if kind in (Change.Kind.CREATE, Change.Kind.EDIT):
        _keep_mentions(room_id, message, created=kind == Change.Kind.CREATE)
    if kind != Change.Kind.REACT:  # searchable exactly while live, by its current text
        search.index(message)
    Change.objects.create(room_id=room_id, cursor=cursor, message=message, kind=kind)
    frame = protocol.message_frame(message, cursor, created=kind == Change.Kind.CREATE)
    transaction.on_commit(lambda: publish_change(room_id, cursor, frame, epoch))


def _empty(queryset):
    """`queryset` already evaluated to nothing, as a prefetch leaves it: iterating a bare
    `none()` still compiles its query (1.5 ms of a post's frame)."""
    queryset._result_cache = []
    queryset._prefetch_done = True
    return queryset


def _keep_mentions(room_id: int, message: Message, *, created: bool) -> None:
    """The message's Mention rows, as its `mentions` now stand (the inbox counts them)."""
    if not created:
        Mention.objects.filter(message=message).delete()
    if not message.mentions:
        return
    User = get_user_model()
    ids = User._default_manager.filter(
        **{f"{User.USERNAME_FIELD}__in": message.mentions}
    ).values_list("pk", flat=True)
    Mention.objects.bulk_create(
        [Mention(message=message, user_id=user_id, room_id=room_id) for user_id in ids]
    )


def _tell_inbox(user_id: int, room_id: int) -> None:
    """After commit: the user's inboxes read their summary of the room again (§5)."""
    transaction.on_commit(lambda: publish_now(events.InboxChanged(user=user_id, room=room_id)))


def _notify(room: Room, message: Message) -> None:
    """After a new message commits, a `notify` (§5) to each reader who wants one: the people
    it mentions (members or, in a public room, not), the other people of a direct room, and
    members whose setting is "all messages"; never the author, never someone whose setting
    for the room is "nothing", never someone who may not read it (a ban). A constant number
    of queries, whatever the room's size: members are read only for those it concerns."""
    if message.system:
        return
    Level = Membership.Notifications
    mentioned = set()
    if message.mentions:
        mentioned = set(Mention.objects.filter(message=message).values_list("user_id", flat=True))
    mentioned.discard(message.author_id)
    levels = selectors.notification_levels(
        room.pk, message.author_id, among=None if room.kind == Room.Kind.DIRECT else mentioned
    )
    for user_id in policy.banned_among(room, list(levels)):
        del levels[user_id]  # may not read the room now
    reasons = {}
    for user_id in mentioned | set(levels):
        level = levels.get(user_id, Level.MENTIONS)  # not a member: a public room's reader
        if level == Level.NONE:
            continue
        if user_id in mentioned:
            reasons[user_id] = "mention"
        elif room.kind == Room.Kind.DIRECT:
            reasons[user_id] = "direct"
        elif level == Level.ALL:
            reasons[user_id] = "message"
    if not reasons:
        return
    names = selectors.room_names(room, list(reasons))
    frames = [
        (
            user_id,
            protocol.notify_frame(
                {"slug": room.slug, "name": names[user_id], "kind": room.kind}, message, reason
            ),
        )
        for user_id, reason in sorted(reasons.items())
    ]

    def send() -> None:
        for user_id, frame in frames:
            publish_now(events.Notified(user=user_id, frame=frame))

    transaction.on_commit(send)


def _get_message(room: Room, message_id: int, *, ref: object = None) -> Message:
    queryset = Message.objects.select_related(*selectors.MESSAGE_RELATED)
    try:
        return queryset.get(pk=message_id, room_id=room.pk)
    except Message.DoesNotExist:
        raise ChatError(
            ErrorCode.NOT_FOUND,
            "There is no such message in this room.",
            ref=message_id if ref is None else ref,
        ) from None


@dataclass(frozen=True)
class Rendered:
    html: str
    mentions: list[str]

    def apply_to(self, message: Message) -> None:
        message.html, message.mentions = self.html, self.mentions
        message.html_version = rendering.RENDERER_VERSION


def _render(room: Room, body: str, parsed: rendering.Document | None) -> Rendered:
    """A body's HTML and mentions (§6), made at every create and edit from one parse.

    The parse (milliseconds for a long body: bench/render.py) is `parsed` when the caller made
    it elsewhere (the sockets' services, on a render thread); here only the question of which
    `@name`s are readers is asked, and the spans put in. Before the room's lock is taken.
    """
    if parsed is None or parsed.body != body:
        parsed = rendering.parse(body)
    mentions = parsed.mentions(selectors.readers_named(room, parsed.candidates))
    return Rendered(parsed.html(mentions), mentions)


def post_message(
    *,
    room: Room,
    author,
    body: str,
    client_id: str | None = None,
    reply_to: int | None = None,
    parsed: rendering.Document | None = None,
    attach: tuple[int, ...] = (),
) -> Posted:
    """Store a new message, answering the message `reply_to` (an id in this room) if given, with
    the author's uploads `attach` (§8: then the body may be empty). A retry of a stored post
    (same `client_id`) stores nothing and returns the stored message with `created=False`, even
    if the author can no longer post. `parsed`: the body already parsed (`rendering.parse`),
    else it is parsed here."""
    body = clean_post_body(body, attached=bool(attach), ref=client_id)
    try:
        access = policy.access(author, room)
        policy.require(access.can_post(), ref=client_id)
        message = Message(room_id=room.pk, author=author, body=body, client_id=client_id or "")
        if reply_to is not None:
            original = _get_message(room, reply_to, ref=client_id)
            policy.require(access.can_reply(original), ref=client_id, action="reply to")
            message.reply_to = original
        _render(room, body, parsed).apply_to(message)
        with transaction.atomic():
            if not access.is_member:
                # Posting in a public room joins it (§4), quietly: a v1 client posting for the
                # first time sees its own message and nothing else.
                Membership.objects.bulk_create(
                    [Membership(room=room, user=author)], ignore_conflicts=True
                )
                _tell_inbox(author.pk, room.pk)
            _record(room.pk, message, Change.Kind.CREATE, attach=attach)
            _notify(room, message)
    except (ChatError, IntegrityError):
        # The common path does not look the client_id up first: the unique constraint on
        # (room, author, client_id) refuses a second copy and rolls the attempt back.
        stored = client_id and selectors.post_by_client_id(room, author, client_id)
        if not stored:
            raise
        return Posted(stored, created=False)
    metrics.POSTS_STORED.inc()
    return Posted(message, created=True)


def edit_message(
    *, room: Room, message_id: int, by, body: str, parsed: rendering.Document | None = None
) -> Message:
    """Replace a message's text (its author only), keeping the text it had as a revision.
    `parsed`: the body already parsed (`rendering.parse`), else it is parsed here."""
    body = clean_body(body, ref=message_id)
    rendered = _render(room, body, parsed)
    with transaction.atomic():
        _lock_room(room.pk)
        message = _get_message(room, message_id)
        access = policy.access(by, room)
        policy.require(access.can_edit(message), ref=message_id, action="edit")
        now = timezone.now()
        MessageRevision.objects.create(
            message=message,
            body=message.body,
            html=message.html,
            html_version=message.html_version,
            mentions=message.mentions,
            written=message.edited or message.created,
            replaced=now,
        )
        message.body = body
        message.edited = now
        rendered.apply_to(message)
        _record(room.pk, message, Change.Kind.EDIT)
    return message


def read_versions(*, room: Room, message_id: int, by) -> list[selectors.Version]:
    """A message's texts, oldest first, the current one last (issue 17), for those the policy
    lets see them; `not_found` for everyone else, so the door tells nothing about a message
    they may not see this way. Counted against the history limit, refusals included."""
    limits.hit_now(limits.HISTORY, user_id=by.pk, ref=message_id)
    message = _get_message(room, message_id)
    if policy.access(by, room).can_see_versions(message) is not None:
        raise ChatError(
            ErrorCode.NOT_FOUND, "There is no such message in this room.", ref=message_id
        )
    return selectors.message_versions(message)


def toggle_reaction(*, room: Room, message_id: int, by, emoji: str) -> Message:
    """Add `by`'s reaction `emoji` to a message, or take it back if it is there (§6). Either way
    one change: the cursor moves by one and the room gets the whole message."""
    cleaned = reactions.clean(emoji)
    if cleaned is None:
        raise ChatError(
            ErrorCode.INVALID, "A reaction is one emoji (not a letter or digit).", ref=message_id
        )
    with transaction.atomic():
        _lock_room(room.pk)
        message = _get_message(room, message_id)
        access = policy.access(by, room)
        policy.require(access.can_react(message), ref=message_id, action="react to")
        mine = Reaction.objects.filter(message=message, user=by, emoji=cleaned)
        if not mine.delete()[0]:
            present = set(Reaction.objects.filter(message=message).values_list("emoji", flat=True))
            most = settings.CHAT_MAX_REACTIONS
            if cleaned not in present and len(present) >= most:
                raise ChatError(
                    ErrorCode.TOO_MANY,
                    f"A message can have at most {most} different reactions.",
                    ref=message_id,
                )
            Reaction.objects.create(message=message, user=by, emoji=cleaned)
        _record(room.pk, message, Change.Kind.REACT)
    return message


def delete_message(*, room: Room, message_id: int, by, moderator: bool = False) -> Message:
    """Soft-delete: the message stays as a tombstone naming who deleted it.

    Authors delete their own messages, and its files are erased (§8); `moderator=True` (the
    admin) deletes anyone's, and its files stay for moderators. Deleting a tombstone again
    changes nothing.
    """
    with transaction.atomic():
        _lock_room(room.pk)
        message = _get_message(room, message_id)
        if not moderator:
            access = policy.access(by, room)
            policy.require(access.can_delete(message), ref=message_id, action="delete")
        if message.is_deleted:
            return message
        message.deleted_at = timezone.now()
        message.deleted_by = by
        if not moderator:
            attachments.erase(Attachment.objects.filter(message=message))
        _record(room.pk, message, Change.Kind.DELETE, archived_ok=moderator)
    return message


def _undelete(*, room: Room, message_id: int, by) -> Message:
    """Undo a deletion (for `restore_message`): live clients get the message back."""
    with transaction.atomic():
        _lock_room(room.pk)
        message = _get_message(room, message_id)
        if not message.is_deleted:
            return message
        message.deleted_at = None
        message.deleted_by = None
        _record(room.pk, message, Change.Kind.RESTORE, archived_ok=True)
    return message


# --- moderation (the admin) ------------------------------------------------------------------


def _audit(*, actor, action: str, room: Room, target=None, message=None, reason: str = "") -> None:
    ModerationAction.objects.create(
        actor=actor, action=action, room=room, target=target, message=message, reason=reason
    )


def hide_message(*, message: Message, by, reason: str = "") -> bool:
    """A moderator soft-deletes a message: live sockets get the tombstone naming them.

    Returns whether anything changed (hiding a hidden message does nothing).
    """
    with transaction.atomic():
        _lock_room(message.room_id)
        if Message.objects.filter(pk=message.pk, deleted_at__isnull=False).exists():
            return False
        delete_message(room=message.room, message_id=message.pk, by=by, moderator=True)
        _audit(
            actor=by,
            action=ModerationAction.Action.HIDE,
            room=message.room,
            target=message.author,
            message=message,
            reason=reason,
        )
    return True


def restore_message(*, message: Message, by, reason: str = "") -> bool:
    """A moderator restores a message a moderator hid: live sockets get it back. Returns
    whether anything changed. A live message, and one its author deleted (their choice, and
    its text is erased after CHAT_DELETED_TEXT_RETENTION_DAYS), are left as they are."""
    with transaction.atomic():
        _lock_room(message.room_id)
        hidden = Message.objects.filter(pk=message.pk, deleted_at__isnull=False).exclude(
            deleted_by=F("author")
        )
        if not hidden.exists():
            return False
        _undelete(room=message.room, message_id=message.pk, by=by)
        _audit(
            actor=by,
            action=ModerationAction.Action.RESTORE,
            room=message.room,
            target=message.author,
            message=message,
            reason=reason,
        )
    return True


def check_can_restrict(*, user, by) -> None:
    """The policy's rule for banning or muting `user` (chat.policy.can_restrict)."""
    policy.require(policy.can_restrict(actor=by, target=user))


def restrict_user(
    *, room: Room, user, kind: str, by, until=None, reason: str = ""
) -> RoomRestriction:
    """Ban or mute a user in a room. A ban closes their open sockets there (4403) at once."""
    check_can_restrict(user=user, by=by)
    with transaction.atomic():
        restriction = RoomRestriction.objects.create(
            room=room, user=user, kind=kind, until=until, reason=reason, created_by=by
        )
        _audit(actor=by, action=kind, room=room, target=user, reason=reason)
        if kind == RoomRestriction.Kind.BAN:  # the room leaves their inbox
            _tell_inbox(user.pk, room.pk)
    if kind == RoomRestriction.Kind.BAN:
        username = user.get_username()
        transaction.on_commit(
            lambda: publish_now(
                events.UserKicked(room=room.pk, user=username, code=CloseCode.FORBIDDEN)
            )
        )
    return restriction


def lift_restriction(*, restriction: RoomRestriction, by, reason: str = "") -> bool:
    with transaction.atomic():
        updated = RoomRestriction.objects.filter(pk=restriction.pk, lifted_at__isnull=True).update(
            lifted_at=timezone.now(), lifted_by=by
        )
        if updated:
            if restriction.kind == RoomRestriction.Kind.BAN:  # back in their inbox
                _tell_inbox(restriction.user_id, restriction.room_id)
            _audit(
                actor=by,
                action=ModerationAction.Action.LIFT,
                room=restriction.room,
                target=restriction.user,
                reason=reason or f"lifted {restriction.kind}",
            )
    return bool(updated)


# --- from the sockets: the same changes, with their rate limits ------------------------------
# Async: a limit is counted in the shared state (Redis) on the event loop, a body is parsed on a
# render thread, then the change runs on the database thread. The consumer parses a frame, calls
# one of these, and answers.

db = database_sync_to_async

# Parsing a body (Markdown, HTML, sanitizer) takes milliseconds, tens for a hostile 4,000
# characters (bench/render.py): it runs here, never on the database thread every socket of the
# process shares. Two threads at most, so a flood of long bodies queues behind itself.
_render_threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="render")


async def _parse(body: str) -> rendering.Document:
    return await asyncio.get_running_loop().run_in_executor(_render_threads, rendering.parse, body)


# Every frame a client sends, and the limit it counts against (typing has its own once-per rule).
RATE_LIMITS: dict[str, limits.Limit] = {
    "post": limits.POSTS,
    "edit": limits.CHANGES,
    "delete": limits.CHANGES,
    "react": limits.CHANGES,
    "history": limits.HISTORY,
    "report": limits.REPORTS,
}


async def submit_post(
    *,
    room: Room,
    author,
    body: str,
    client_id: str | None,
    reply_to: int | None = None,
    attach: tuple[int, ...] = (),
) -> Posted:
    """A post from a socket. A retry of a stored post (same `client_id`) is answered with the
    stored message (`created=False`), past the limit or not: the client must learn it landed."""
    body = clean_post_body(body, attached=bool(attach), ref=client_id)
    try:
        await limits.hit(RATE_LIMITS["post"], user_id=author.pk, room_id=room.pk, ref=client_id)
    except ChatError:
        stored = client_id and await db(selectors.post_by_client_id)(room, author, client_id)
        if not stored:
            raise
        return Posted(stored, created=False)
    parsed = await _parse(body)
    return await db(post_message)(
        room=room,
        author=author,
        body=body,
        client_id=client_id,
        reply_to=reply_to,
        parsed=parsed,
        attach=attach,
    )


async def submit_edit(*, room: Room, message_id: int, by, body: str) -> Message:
    await limits.hit(RATE_LIMITS["edit"], user_id=by.pk, ref=message_id)
    body = clean_body(body, ref=message_id)
    parsed = await _parse(body)
    return await db(edit_message)(room=room, message_id=message_id, by=by, body=body, parsed=parsed)


async def submit_delete(*, room: Room, message_id: int, by) -> Message:
    await limits.hit(RATE_LIMITS["delete"], user_id=by.pk, ref=message_id)
    return await db(delete_message)(room=room, message_id=message_id, by=by)


async def submit_reaction(*, room: Room, message_id: int, by, emoji: str) -> Message:
    await limits.hit(RATE_LIMITS["react"], user_id=by.pk, ref=message_id)
    return await db(toggle_reaction)(room=room, message_id=message_id, by=by, emoji=emoji)


async def read_history(*, room: Room, user, before: int, limit: int):
    """Messages older than `before` (a page), for a reader the policy still lets read."""
    await limits.hit(RATE_LIMITS["history"], user_id=user.pk)
    return await db(_history_page)(room, user, before, limit)


async def submit_report(*, room: Room, message_id: int, by, reason: str) -> Report:
    await limits.hit(RATE_LIMITS["report"], user_id=by.pk, room_id=room.pk, ref=message_id)
    return await db(report_message)(room=room, message_id=message_id, by=by, reason=reason)


def _history_page(room: Room, user, before: int, limit: int):
    policy.require(policy.access(user, room).can_read())
    return selectors.messages_before(room, before, limit)


async def read_around(*, room: Room, user, around: int, limit: int):
    """§6 `history around`: (messages, has_more, has_newer) around a message of the room."""
    await limits.hit(RATE_LIMITS["history"], user_id=user.pk)
    return await db(_page_around)(room, user, around, limit)


def _page_around(room: Room, user, around: int, limit: int):
    policy.require(policy.access(user, room).can_read())
    page = selectors.messages_around(room, around, limit)
    if page is None:
        raise ChatError(ErrorCode.NOT_FOUND, "There is no such message in this room.", ref=around)
    return page


async def announce_typing(*, room: Room, user) -> None:
    """Tell the room `user` is typing: at most once per CHAT_TYPING_INTERVAL, not for a muted
    user (typing has no answer, so a refusal is silent), refused for a banned one."""
    key = f"typing:{room.pk}:{user.pk}"
    if not await limits.once_per(key, settings.CHAT_TYPING_INTERVAL):
        return
    access = await db(policy.access)(user, room)
    policy.require(access.can_read())
    if access.can_post() is not None:
        return
    username = user.get_username()
    try:
        await events.publish(
            events.UserTyping(room=room.pk, user=username, frame=protocol.typing_frame(username))
        )
    except Exception:  # a typing notice is worth no error: it is gone in 3 s anyway
        logger.warning("typing: channel layer unavailable", exc_info=True)


def mark_read(*, user, room: Room, message_id: int) -> int:
    """Move the user's read marker in the room forward to `message_id`; never back.

    The marker stops at the room's latest message at or before `message_id`, so an id from the
    future cannot hide messages not written yet. Returns where the marker stands.
    """
    from django.db.models import Max

    from .models import ReadMarker

    seen = Message.objects.filter(room=room, id__lte=message_id).aggregate(top=Max("id"))["top"]
    seen = seen or 0
    with transaction.atomic():
        marker, created = ReadMarker.objects.get_or_create(
            user=user, room=room, defaults={"last_read_id": seen}
        )
        moved = created or (
            seen > marker.last_read_id
            and ReadMarker.objects.filter(pk=marker.pk, last_read_id__lt=seen).update(
                last_read_id=seen, updated=timezone.now()
            )
        )
        if moved:  # every tab and device of this user: the room's unread count changed
            _tell_inbox(user.pk, room.pk)
    return max(marker.last_read_id, seen)


# --- accounts: erasure and retention ----------------------------------------------------------
# The rules for logging in and signing up are in chat/accounts.py; these change stored data.


def delete_account(*, user) -> str:
    """Erase an account at its owner's request; returns the name it now has.

    The row stays (messages, rooms and the moderation log point at it with PROTECT), anonymized:
    renamed `deleted-<random>`, no email or name, an unusable password, inactive, no staff
    rights. Its sessions end with it, so its open sockets close with 4401 within
    CHAT_SESSION_CHECK_INTERVAL (the hub's session watcher). Then every message of theirs
    becomes a tombstone deleted by that name, announced to open pages like any deletion; each
    room is its own transaction, so a long history holds no lock for long. Their files are
    erased, posted or not, hidden or not (§8). Running it again finishes an erasure that was
    interrupted.
    """
    from .accounts import DELETED_PREFIX
    from .models import ReadMarker

    with transaction.atomic():
        user = get_user_model()._default_manager.select_for_update().get(pk=user.pk)
        if not (user.get_username().startswith(DELETED_PREFIX) and not user.is_active):
            setattr(user, user.USERNAME_FIELD, f"{DELETED_PREFIX}{secrets.token_hex(6)}")
            user.email = ""
            user.first_name = user.last_name = ""
            user.set_unusable_password()
            user.is_active = user.is_staff = user.is_superuser = False
            user.save()
            user.groups.clear()
            user.user_permissions.clear()
            ReadMarker.objects.filter(user=user).delete()
    live = Message.objects.filter(author=user, deleted_at__isnull=True)
    room_ids = set(live.order_by().values_list("room_id", flat=True).distinct())
    for room_id in sorted(room_ids):
        with transaction.atomic():
            _lock_room(room_id)
            now = timezone.now()
            for message in live.filter(room_id=room_id).order_by("id"):
                message.author = message.deleted_by = user  # frames carry the new name
                message.deleted_at = now
                _record(room_id, message, Change.Kind.DELETE)
    with transaction.atomic():
        attachments.erase(Attachment.objects.filter(uploader=user))
    return user.get_username()


def erase_deleted_text(*, older_than, batch_size: int = 500) -> int:
    """Empty the text of messages their authors deleted before `older_than`; returns how many.

    Tombstones stay (clients never had the text again anyway). Messages a moderator hid keep
    their text for the audit. Idempotent, and in batches of `batch_size` rows, each its own
    statement, so a large backlog never holds a long transaction.
    """
    from django.db.models import Exists, F, OuterRef

    hidden = ModerationAction.objects.filter(
        message=OuterRef("pk"), action=ModerationAction.Action.HIDE
    )
    due = (
        Message.objects.filter(deleted_at__lt=older_than, deleted_by=F("author"))
        .exclude(body="")
        .exclude(Exists(hidden))
    )
    erased = 0
    while True:
        ids = list(due.order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not ids:
            return erased
        # The conditions again: a moderator may have restored one in between. What was made
        # from the text (its render, its mentions, the texts its edits replaced) goes with it.
        erased += due.filter(pk__in=ids).update(body="", html="", mentions=[])
        MessageRevision.objects.filter(message__in=ids, message__body="").delete()


def purge_uploads(*, older_than) -> int:
    """Erase uploads never attached to a message made before `older_than` (§8); how many."""
    return attachments.erase_unattached(older_than=older_than)


def upload_attachment(*, room: Room, by, file) -> Attachment:
    """An upload to a room (§8): chat.attachments.upload, the policy and limits included."""
    return attachments.upload(room=room, by=by, file=file)


def render_stale_messages(*, batch_size: int = 500) -> int:
    """Render again every message whose stored `html` an older renderer made (chat.rendering's
    RENDERER_VERSION moved); returns how many. Mentions stay as they were read when written.

    Not a change: the cursor does not move and no frame goes out; readers get the new render
    with their next `ready` or `history`, and until then the protocol renders a stale row on the
    fly. Batches of `batch_size`, each row written only if its body and version are still the
    ones rendered (an edit meanwhile wins), so it never holds a lock for long.
    """
    done, last = 0, 0
    stale = Message.objects.filter(html_version__lt=rendering.RENDERER_VERSION)
    while True:
        rows = list(
            stale.filter(pk__gt=last)
            .order_by("pk")
            .values_list("pk", "body", "mentions", "system", "html_version")[:batch_size]
        )
        if not rows:
            return done
        for pk, body, mentions, system, version in rows:
            html = rendering.plain(body) if system else rendering.render(body, mentions)
            done += Message.objects.filter(pk=pk, body=body, html_version=version).update(
                html=html, html_version=rendering.RENDERER_VERSION
            )
        last = rows[-1][0]


# --- rooms: creating, archiving ----------------------------------------------------------------

ROOM_NAME_MAX = Room._meta.get_field("name").max_length
ROOM_SLUG_MAX = Room._meta.get_field("slug").max_length


def clean_room_name(name: str) -> tuple[str, str]:
    """The room-name rule, for every door (the lobby's form, the admin): the name as stored and
    its slug. Raises ChatError `invalid` with a sentence for the form."""
    name = name.strip()
    problem = text.name_problem(name)  # bidi controls, NUL, stacked marks
    if problem:
        raise ChatError(ErrorCode.INVALID, problem)
    if len(name) > ROOM_NAME_MAX:
        raise ChatError(
            ErrorCode.INVALID, f"A room name may be at most {ROOM_NAME_MAX} characters."
        )
    # The slug can outgrow the name ("ﬃ" becomes "ffi": 80 of them make 240): cut to the column.
    slug = slugify(name)[:ROOM_SLUG_MAX].strip("-_")
    if not slug:
        raise ChatError(ErrorCode.INVALID, "A room name needs at least one letter or digit.")
    if Room.objects.filter(Q(name__iexact=name) | Q(slug=slug)).exists():
        raise ChatError(ErrorCode.INVALID, "A room with this name already exists.")
    return name, slug


TOPIC_MAX = Room._meta.get_field("topic").max_length


def clean_topic(topic: str) -> str:
    topic = " ".join(topic.split())
    problem = text.name_problem(topic)
    if problem:
        raise ChatError(ErrorCode.INVALID, problem.replace("Names", "Topics"))
    if len(topic) > TOPIC_MAX:
        raise ChatError(ErrorCode.INVALID, f"A topic may be at most {TOPIC_MAX} characters.")
    return topic


def create_room(
    *,
    name: str,
    created_by,
    kind: str = Room.Kind.PUBLIC,
    topic: str = "",
    enforce_limit: bool = True,
) -> Room:
    """A new public or private room named `name`, its creator its first owner. At most
    CHAT_ROOMS_PER_USER rooms per user per CHAT_ROOMS_PER_USER_WINDOW seconds (`rate_limited`,
    with `retry_after`); staff creating rooms in the admin pass `enforce_limit=False`. Nothing is
    created when it raises. (Direct rooms come from `open_direct`.)"""
    if kind not in (Room.Kind.PUBLIC, Room.Kind.PRIVATE):
        raise ChatError(ErrorCode.INVALID, "A room is public or private.")
    name, slug = clean_room_name(name)
    topic = clean_topic(topic)
    if enforce_limit:
        limit, window = settings.CHAT_ROOMS_PER_USER, settings.CHAT_ROOMS_PER_USER_WINDOW
        try:
            wait = throttle.hit(f"rooms:{created_by.pk}", limit, window)
        except Exception:
            logger.warning("room limit unavailable", exc_info=True)
            raise ChatError(
                ErrorCode.UNAVAILABLE,
                "Rooms cannot be created right now; try again.",
                retry_after=1,
            ) from None
        if wait:
            raise ChatError(
                ErrorCode.RATE_LIMITED,
                f"You can create at most {limit} rooms in {_duration(window)}; "
                f"try again in {_duration(wait)}.",
                retry_after=wait,
            )
    try:
        with transaction.atomic():
            room = Room.objects.create(
                name=name, slug=slug, kind=kind, topic=topic, created_by=created_by
            )
            Membership.objects.create(room=room, user=created_by, role=Membership.Role.OWNER)
            _tell_inbox(created_by.pk, room.pk)
            return room
    except IntegrityError:  # created by someone else between the check and the insert
        raise ChatError(ErrorCode.INVALID, "A room with this name already exists.") from None


def _duration(seconds: float) -> str:
    seconds = max(1, math.ceil(seconds))
    if seconds < 120:
        return f"{seconds} seconds"
    if seconds < 7200:
        return f"{math.ceil(seconds / 60)} minutes"
    return f"{math.ceil(seconds / 3600)} hours"


def archive_room(*, room: Room, by, reason: str = "") -> bool:
    """A moderator archives a room: it leaves the lobby, its page answers 404, its open sockets
    close with 4404 at once on every process, and no change can be made in it. Its messages
    stay (moderators read them in the admin). Returns whether anything changed."""
    with transaction.atomic():
        updated = Room.objects.filter(pk=room.pk, archived_at__isnull=True).update(
            archived_at=timezone.now(), archived_by=by
        )
        if updated:
            _audit(actor=by, action=ModerationAction.Action.ARCHIVE, room=room, reason=reason)
            # For its users the room is gone.
            transaction.on_commit(
                lambda: publish_now(events.RoomClosed(room=room.pk, code=CloseCode.NO_SUCH_ROOM))
            )
    return bool(updated)


def unarchive_room(*, room: Room, by, reason: str = "") -> bool:
    """Undo an archiving: the room is back in the lobby, open to sockets and posts."""
    with transaction.atomic():
        updated = Room.objects.filter(pk=room.pk, archived_at__isnull=False).update(
            archived_at=None, archived_by=None
        )
        if updated:
            _audit(actor=by, action=ModerationAction.Action.UNARCHIVE, room=room, reason=reason)
    return bool(updated)


# --- membership and direct rooms (PROTOCOL.md §4) -------------------------------------------------
# Each change is a system message in the room's history ("alice added bob"), moving the cursor
# like any change. A removal from a private room closes the removed user's sockets there (4403)
# on every process; leaving a public room closes nothing, since anyone may still read it.


def _notice(room: Room, actor, body: str) -> Message:
    """A membership notice in the room's history, authored by whoever acted."""
    message = Message(room_id=room.pk, author=actor, body=body, system=True)
    message.html = rendering.plain(body)
    message.html_version = rendering.RENDERER_VERSION
    _record(room.pk, message, Change.Kind.CREATE)
    return message


def _target(username: object, *, active: bool = True):
    """The account called `username` (`active`: only one that can log in), or `invalid`."""
    name = username if isinstance(username, str) else ""
    users = get_user_model()._default_manager.filter(**{get_user_model().USERNAME_FIELD: name})
    if active:
        users = users.filter(is_active=True)
    user = users.first() if name and "\x00" not in name else None
    if user is None:
        policy.require(policy.Denial.NO_SUCH_USER, ref=str(username)[:150])
    return user


def add_member(*, room: Room, by, username: str) -> list[dict[str, str]]:
    """Add `username` to a private room (any member may), or join a public room (for oneself).
    Returns the members as they stand."""
    limits.hit_now(limits.MEMBERSHIP, user_id=by.pk)
    target = _target(username)
    yourself = target.pk == by.pk
    with transaction.atomic():
        _lock_room(room.pk)
        access = policy.access(by, room)
        policy.require(access.can_add(yourself=yourself), action="add people")
        if Membership.objects.filter(room=room, user=target).exists():
            policy.require(policy.Denial.ALREADY_MEMBER, ref=target.get_username())
        Membership.objects.create(room=room, user=target)
        _tell_inbox(target.pk, room.pk)
        name = target.get_username()
        _notice(room, by, f"{name} joined" if yourself else f"{by.get_username()} added {name}")
    return selectors.members(room)


def remove_member(*, room: Room, by, username: str, reason: str = "", moderator: bool = False):
    """An owner removes a member, or a member leaves (`username` is their own). A moderator in
    the admin passes `moderator=True` (audited). Returns the members as they stand."""
    if not moderator:
        limits.hit_now(limits.MEMBERSHIP, user_id=by.pk)
    target = _target(username, active=False)  # an erased account can still be removed
    yourself = target.pk == by.pk
    with transaction.atomic():
        _lock_room(room.pk)
        roles = dict(Membership.objects.filter(room=room).values_list("user_id", "role"))
        counts = {
            "target_role": roles.get(target.pk),
            "owners": sum(role == Membership.Role.OWNER for role in roles.values()),
            "members": len(roles),
        }
        access = policy.access(by, room)
        if moderator:
            denial = access.moderator_can_remove(**counts)
        else:
            denial = access.can_remove(yourself=yourself, **counts)
        policy.require(denial, ref=target.get_username(), action="leave")
        Membership.objects.filter(room=room, user=target).delete()
        _tell_inbox(target.pk, room.pk)
        if room.kind != Room.Kind.PUBLIC:
            # Every doorbell from here on tells the processes to re-check their sockets.
            Room.objects.filter(pk=room.pk).update(members_epoch=F("members_epoch") + 1)
        name = target.get_username()
        _notice(room, by, f"{name} left" if yourself else f"{by.get_username()} removed {name}")
        if moderator or not yourself:  # a moderator's or an owner's removal is audited
            _audit(
                actor=by,
                action=ModerationAction.Action.REMOVE,
                room=room,
                target=target,
                reason=reason,
            )
        if room.kind != Room.Kind.PUBLIC:  # the room is gone for them: close what they hold
            transaction.on_commit(
                lambda: publish_now(
                    events.UserKicked(room=room.pk, user=name, code=CloseCode.FORBIDDEN)
                )
            )
    return selectors.members(room)


# A direct conversation is between 2 and 9 people (PROTOCOL.md §4).
DIRECT_MAX_PEOPLE = 9


def open_direct(*, by, usernames: object) -> Room:
    """The direct room of exactly `by` and `usernames` (1 to 8 others), made on first use: the
    same set of people always lands in the same room."""
    most = DIRECT_MAX_PEOPLE - 1
    if not isinstance(usernames, list) or not all(isinstance(u, str) for u in usernames):
        raise ChatError(ErrorCode.INVALID, 'Send {"usernames": [...]}, a list of usernames.')
    names = sorted({u for u in usernames if u != by.get_username()})
    if not 1 <= len(names) <= most:
        raise ChatError(
            ErrorCode.INVALID, f"A direct conversation is with 1 to {most} other people."
        )
    limits.hit_now(limits.MEMBERSHIP, user_id=by.pk)
    people = [by] + [_target(name) for name in names]
    key = ",".join(str(pk) for pk in sorted({user.pk for user in people}))
    room = Room.objects.filter(direct_key=key).first()
    if room is not None:
        return room
    for _ in range(3):
        slug = f"dm-{secrets.token_hex(6)}"
        try:
            with transaction.atomic():
                room = Room.objects.create(
                    name=slug, slug=slug, kind=Room.Kind.DIRECT, direct_key=key, created_by=by
                )
                Membership.objects.bulk_create(
                    Membership(room=room, user=user, role=Membership.Role.MEMBER) for user in people
                )
                for user in people:
                    _tell_inbox(user.pk, room.pk)
            return room
        except IntegrityError:  # the same people, opened at the same moment by someone else
            room = Room.objects.filter(direct_key=key).first()
            if room is not None:
                return room
    raise ChatError(ErrorCode.UNAVAILABLE, "Try again.", retry_after=1)


def set_notifications(*, room: Room, user, level: object) -> str:
    """A member chooses which messages of the room notify them (§5): every device's inbox
    follows. Rate limited like membership changes."""
    choices = Membership.Notifications.values
    if level not in choices:
        raise ChatError(ErrorCode.INVALID, f"The level is one of: {', '.join(choices)}.")
    limits.hit_now(limits.MEMBERSHIP, user_id=user.pk)
    with transaction.atomic():
        access = policy.access(user, room)
        policy.require(access.can_choose_notifications(), ref=user.get_username())
        Membership.objects.filter(room=room, user=user).update(notifications=level)
        _tell_inbox(user.pk, room.pk)
    return level


# --- search (PROTOCOL.md §7) --------------------------------------------------------------------


@dataclass(frozen=True)
class SearchPage:
    results: list[dict]  # {"room": {slug, name, kind}, "message": Message, "snippet"}
    has_more: bool


SEARCH_PAGE = 20
SEARCH_MAX_QUERY = 200


def search_messages(
    *,
    user,
    query: str,
    room: Room | None = None,
    author: str | None = None,
    before: int | None = None,
    after_time=None,
    until_time=None,
    has_link: bool = False,
    has_file: bool = False,
) -> SearchPage:
    """Messages the user can read right now (the policy's rooms, `room` among them if given)
    matching `text`, newest first, SEARCH_PAGE at a time. Rate limited per user."""
    cleaned = " ".join(query.split())[:SEARCH_MAX_QUERY]
    if not cleaned:
        raise ChatError(ErrorCode.INVALID, "Type something to search for.")
    if problem := text.unstorable(cleaned):
        raise ChatError(ErrorCode.INVALID, problem)
    limits.hit_now(limits.SEARCHES, user_id=user.pk)
    rooms = policy.readable_rooms(user)
    if room is not None:
        rooms = rooms.filter(pk=room.pk)
    author_id = None
    if author:
        field = get_user_model().USERNAME_FIELD
        author_id = (
            get_user_model()
            ._default_manager.filter(**{f"{field}__iexact": author})
            .values_list("pk", flat=True)
            .first()
        )
        if author_id is None:
            return SearchPage([], False)
    hits = search.find(
        cleaned,
        list(rooms.order_by().values_list("id", flat=True)),
        author_id=author_id,
        before=before,
        after_time=after_time,
        until_time=until_time,
        has_link=has_link,
        has_file=has_file,
        limit=SEARCH_PAGE + 1,
    )
    has_more = len(hits) > SEARCH_PAGE
    hits = hits[:SEARCH_PAGE]
    messages = selectors.messages_by_id([hit.message_id for hit in hits])
    names = selectors.display_names([message.room for message in messages.values()], user)
    results = [
        {
            "room": {
                "slug": messages[hit.message_id].room.slug,
                "name": names[messages[hit.message_id].room_id],
                "kind": messages[hit.message_id].room.kind,
            },
            "message": protocol.message_object(messages[hit.message_id]),
            "snippet": hit.snippet,
        }
        for hit in hits
        if hit.message_id in messages
    ]
    return SearchPage(results, has_more)


def rebuild_search_index() -> int:
    with transaction.atomic():
        return search.rebuild()


def find_usernames(*, by, prefix: str, limit: int) -> list[str]:
    """Active usernames starting with `prefix` (case-insensitive), shortest first: the people
    type-ahead. Rate limited per user; an empty prefix finds nobody."""
    limits.hit_now(limits.LOOKUPS, user_id=by.pk)
    if not prefix:
        return []
    field = get_user_model().USERNAME_FIELD
    found = (
        get_user_model()
        ._default_manager.filter(is_active=True, **{f"{field}__istartswith": prefix})
        .values_list(field, flat=True)
        .order_by(Length(field), field)[:limit]
    )
    return list(found)


# --- reports (PROTOCOL.md §9) --------------------------------------------------------------------
# Readers report messages from the socket; moderators close them in the admin's report queue by
# hiding the message, muting or banning its author, or dismissing them. Each closure is audited
# through the same services as any moderation, and reaches live sockets the same way.


def clean_report_reason(reason: str, *, ref: object = None) -> str:
    reason = reason.strip()
    problem = text.unstorable(reason) or text.too_many_marks(reason)
    if problem:
        raise ChatError(ErrorCode.INVALID, problem, ref=ref)
    if len(reason) > protocol.REPORT_REASON_MAX:
        raise ChatError(
            ErrorCode.INVALID,
            f"A report's reason may be at most {protocol.REPORT_REASON_MAX} characters.",
            ref=ref,
        )
    return reason


def report_message(*, room: Room, message_id: int, by, reason: str = "") -> Report:
    """File `by`'s report of a message in `room`. Once per user per message: a second report
    returns the first and changes nothing (its reason included)."""
    reason = clean_report_reason(reason, ref=message_id)
    message = _get_message(room, message_id)
    access = policy.access(by, room)
    existing = Report.objects.filter(message=message, reporter=by).first()
    if existing is not None:
        # Still only for someone who may read the room now (a ban closes that door too).
        policy.require(access.can_read(), ref=message_id)
        return existing
    policy.require(access.can_report(message), ref=message_id, action="report")
    try:
        with transaction.atomic():
            return Report.objects.create(message=message, reporter=by, reason=reason)
    except IntegrityError:  # the same report from another tab at the same moment
        return Report.objects.get(message=message, reporter=by)


def close_reports(
    *,
    message: Message,
    by,
    resolution: str,
    until=None,
    reason: str = "",
) -> int:
    """Close every open report of `message` with one action: hide the message, mute or ban its
    author in its room (until `until`, or for good), or dismiss. The action goes through the
    same service as from anywhere else (hide_message, restrict_user), so it is audited and
    reaches live sockets; a dismissal is audited here. Returns how many reports it closed
    (0: none were open, and nothing was done). Raises ChatError when the action is refused
    (a staff author), and then closes nothing."""
    if resolution not in Report.Resolution.values:
        raise ChatError(ErrorCode.INVALID, "Hide, mute, ban or dismiss.")
    with transaction.atomic():
        open_reports = Report.objects.select_for_update().filter(
            message=message, state=Report.State.OPEN
        )
        ids = list(open_reports.values_list("pk", flat=True))
        if not ids:
            return 0
        room = message.room
        if resolution == Report.Resolution.HIDDEN:
            hide_message(message=message, by=by, reason=reason)
        elif resolution in (Report.Resolution.MUTED, Report.Resolution.BANNED):
            kind = (
                RoomRestriction.Kind.MUTE
                if resolution == Report.Resolution.MUTED
                else RoomRestriction.Kind.BAN
            )
            restrict_user(
                room=room, user=message.author, kind=kind, by=by, until=until, reason=reason
            )
        else:
            _audit(
                actor=by,
                action=ModerationAction.Action.DISMISS,
                room=room,
                target=message.author,
                message=message,
                reason=reason,
            )
        Report.objects.filter(pk__in=ids).update(
            state=Report.State.CLOSED,
            closed_by=by,
            closed_at=timezone.now(),
            resolution=resolution,
        )
    return len(ids)


def record_report_view(*, message: Message, by) -> None:
    """A moderator read a direct room's reported message and its context in the admin: the
    only way they see a direct conversation, and each time it is in the audit log."""
    _audit(
        actor=by,
        action=ModerationAction.Action.VIEW,
        room=message.room,
        target=message.author,
        message=message,
        reason="read a reported message and its context",
    )


def take_report_notices(*, user) -> int:
    """How many of `user`'s reports were closed since they were last told, and mark them told:
    the quiet "your report was handled" notice on the next room page they open (never who did
    what)."""
    return Report.objects.filter(
        reporter=user, state=Report.State.CLOSED, reporter_notified=False
    ).update(reporter_notified=True)


def hide_in_room(*, room: Room, message_id: int, by, reason: str = "") -> Message:
    """An owner of a private room hides a message there (a per-room moderator, not site staff):
    the same soft-delete and audit as a moderator's hide in the admin."""
    reason = reason.strip()
    if text.unstorable(reason):
        raise ChatError(ErrorCode.INVALID, text.unstorable(reason), ref=message_id)
    reason = reason[: ModerationAction._meta.get_field("reason").max_length]
    with transaction.atomic():
        _lock_room(room.pk)
        message = _get_message(room, message_id)
        access = policy.access(by, room)
        policy.require(access.can_hide(message), ref=message_id, action="hide")
        hide_message(message=message, by=by, reason=reason)
    message.refresh_from_db()
    return message
