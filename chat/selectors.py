"""Reads: history pages, replays since a cursor, and the changes that fill a gap."""

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.db.models import Count, Exists, F, OuterRef, Prefetch, Q, Subquery
from django.db.models.functions import Coalesce

from . import rendering
from .models import (
    Change,
    Membership,
    Mention,
    Message,
    MessageRevision,
    Reaction,
    ReadMarker,
    Room,
    RoomRestriction,
)
from .realtime import protocol

# What a Message object (protocol.message_object) reads besides the row: authors, the replied-to
# message, the reactions and who made them, the attachments; in a fixed number of queries for a
# whole page.
MESSAGE_RELATED = ("author", "deleted_by", "reply_to__author")


def _reactions(prefix: str = "") -> Prefetch:
    return Prefetch(f"{prefix}reactions", queryset=Reaction.objects.select_related("user"))


def _messages():
    return Message.objects.select_related(*MESSAGE_RELATED).prefetch_related(
        _reactions(), "attachments"
    )


def message(room: Room, message_id: int) -> Message | None:
    """One message of the room as a Message object needs it, or None."""
    return _messages().filter(room=room, pk=message_id).first()


@dataclass(frozen=True)
class Version:
    """One text a message has had (issue 17), and when it was written."""

    body: str
    html: str
    at: datetime


# A message edited thousands of times answers with its newest versions only.
VERSIONS_SHOWN = 100


def message_versions(message: Message) -> list[Version]:
    """The texts `message` has had, oldest first, the current one last: the texts its edits
    replaced (MessageRevision) and its own, at most the newest VERSIONS_SHOWN."""
    older = list(message.revisions.order_by("-id")[: VERSIONS_SHOWN - 1])
    texts = [*reversed(older), message]
    return [
        Version(
            body=text.body,
            html=_stored_html(text.body, text.html, text.html_version, text.mentions),
            at=text.written
            if isinstance(text, MessageRevision)
            else message.edited or message.created,
        )
        for text in texts
    ]


def _stored_html(body: str, html: str, version: int, mentions: list[str]) -> str:
    # Made by an older renderer and not yet again (`manage.py render_messages`): made now.
    return html if version == rendering.RENDERER_VERSION else rendering.render(body, mentions)


def _unread(room, reader, seen):
    """How many messages others wrote in `room` after message id `seen`, tombstones and
    notices left out (0 for none): unread, as the lobby and the inbox count it. Each argument
    may be an outer reference."""
    count = (
        Message.objects.filter(room=room, deleted_at__isnull=True, system=False, id__gt=seen)
        .filter(~Q(author_id=reader))
        .order_by()
        .values("room")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(count), 0)


def _last_activity(room):
    """When `room`'s newest message was written (None for none)."""
    return Subquery(Message.objects.filter(room=room).order_by("-id").values("created")[:1])


def lobby_rooms(rooms, user, query: str = "", sort: str = "active"):
    """Of `rooms` (those the user can see: chat.policy.visible_rooms), those matching `query`,
    with `unread` for `user`, `last_activity` and `joined` (the user is a member), in one
    query.

    Unread: messages not deleted, by someone else, after the user's read marker in that room
    (no marker: every such message).
    """
    marker = ReadMarker.objects.filter(room=OuterRef(OuterRef("pk")), user=user).values(
        "last_read_id"
    )[:1]
    if query:
        rooms = rooms.filter(name__icontains=query)
    rooms = rooms.annotate(
        unread=_unread(OuterRef("pk"), user.pk, Coalesce(Subquery(marker), 0)),
        last_activity=_last_activity(OuterRef("pk")),
        joined=Exists(Membership.objects.filter(room=OuterRef("pk"), user=user)),
    )
    if sort == "name":
        return rooms.order_by("name")
    return rooms.order_by(F("last_activity").desc(nulls_last=True), "name")


def summaries(memberships) -> list[tuple[int, int, int, dict]]:
    """A RoomSummary (PROTOCOL.md §5) for each of `memberships` (a Membership queryset, those the
    policy says may be read: chat.policy.readable_memberships), as (user id, room id, room
    cursor, summary), in one query, plus one for the names of direct rooms among them.

    `unread`: messages by others after the member's read marker, tombstones and notices
    excluded; `mentions`: the unread ones that mention the member (Mention rows).
    """
    marker = ReadMarker.objects.filter(room=OuterRef("room_id"), user=OuterRef("user_id")).values(
        "last_read_id"
    )[:1]
    mentioned = (
        Mention.objects.filter(
            user=OuterRef("user_id"),
            room=OuterRef("room_id"),
            message_id__gt=OuterRef("seen"),
            message__deleted_at__isnull=True,
        )
        .filter(~Q(message__author_id=OuterRef("user_id")))
        .order_by()
        .values("room")
        .annotate(n=Count("pk"))
        .values("n")
    )
    rows = list(
        memberships.order_by()
        .annotate(seen=Coalesce(Subquery(marker), 0))
        .annotate(
            unread=_unread(OuterRef("room_id"), OuterRef("user_id"), OuterRef("seen")),
            mentioned=Coalesce(Subquery(mentioned), 0),
            last_activity=_last_activity(OuterRef("room_id")),
        )
        .values_list(
            "user_id",
            "room_id",
            "room__cursor",
            "room__slug",
            "room__name",
            "room__kind",
            "room__topic",
            "unread",
            "mentioned",
            "last_activity",
            "notifications",
        )
    )
    people = _people({row[1] for row in rows if row[5] == Room.Kind.DIRECT})
    result = []
    for user_id, room_id, cursor, slug, name, kind, topic, unread_n, mention_n, at, level in rows:
        if kind == Room.Kind.DIRECT:
            name = _direct_name(people[room_id], user_id)
        summary = {
            "slug": slug,
            "name": name,
            "kind": kind,
            "topic": topic,
            "unread": unread_n,
            "mentions": mention_n,
            "last_activity": protocol.iso(at),
            "notifications": level,
        }
        result.append((user_id, room_id, cursor, summary))
    return result


def inbox_order(summaries: list[dict]) -> list[dict]:
    """An inbox's order (§5): most recent activity first, rooms with none last, then by name."""
    by_name = sorted(summaries, key=lambda summary: summary["name"].casefold())
    # ISO times in one format sort as text; the sort is stable, so names order the ties.
    return sorted(by_name, key=lambda summary: summary["last_activity"] or "", reverse=True)


def members(room: Room) -> list[dict[str, str]]:
    """The room's members as PROTOCOL.md §4 lists them: owners first, then by name."""
    rows = Membership.objects.filter(room=room).values_list("user__username", "role")
    ordered = sorted(rows, key=lambda row: (row[1] != Membership.Role.OWNER, row[0].casefold()))
    return [{"username": username, "role": role} for username, role in ordered]


def readers_named(room: Room, names: list[str]) -> dict[str, str]:
    """Of these names (any case), the active users who can read the room (a public room: any
    active user; a private or direct one: its members; nobody banned from it), as {casefolded
    name: username}."""
    if not names:
        return {}
    from django.contrib.auth import get_user_model

    User = get_user_model()
    field = User.USERNAME_FIELD
    wanted = Q()
    for name in names:
        wanted |= Q(**{f"{field}__iexact": name})
    users = User._default_manager.filter(wanted, is_active=True).exclude(
        pk__in=RoomRestriction.objects.bans().filter(room=room).values("user_id")
    )
    if room.kind != Room.Kind.PUBLIC:
        users = users.filter(memberships__room=room)
    return {username.casefold(): username for username in users.values_list(field, flat=True)}


def _people(room_ids) -> dict[int, list[tuple[int, str]]]:
    """{room id: [(user id, username)]} of these rooms' members, in one query (none for none)."""
    people: dict[int, list[tuple[int, str]]] = {room_id: [] for room_id in room_ids}
    if people:
        rows = Membership.objects.filter(room_id__in=people).values_list(
            "room_id", "user_id", "user__username"
        )
        for room_id, user_id, username in rows:
            people[room_id].append((user_id, username))
    return people


def _direct_name(people: list[tuple[int, str]], user_id: int) -> str:
    """A direct room's name as one of its people sees it: the others' usernames,
    comma-separated, in alphabetical order."""
    others = sorted((name for other, name in people if other != user_id), key=str.casefold)
    return ", ".join(others) or "just you"


def direct_names(rooms, user) -> dict[int, str]:
    """For the direct rooms among `rooms`, their name as `user` sees it (one query for all)."""
    people = _people(room.pk for room in rooms if room.kind == Room.Kind.DIRECT)
    return {room_id: _direct_name(members, user.pk) for room_id, members in people.items()}


def room_names(room: Room, user_ids: list[int]) -> dict[int, str]:
    """The room's name as each of these users sees it (a direct room: the other people; one
    query for a direct room, none otherwise)."""
    if room.kind != Room.Kind.DIRECT:
        return {user_id: room.name for user_id in user_ids}
    people = _people([room.pk])[room.pk]
    return {user_id: _direct_name(people, user_id) for user_id in user_ids}


def display_names(rooms, user) -> dict[int, str]:
    """{room id: name as `user` sees it} for these rooms (one query if any is direct)."""
    names = {room.pk: room.name for room in rooms}
    names.update(direct_names(rooms, user))
    return names


def messages_by_id(ids: list[int]) -> dict[int, Message]:
    """{id: message} as Message objects need them, with their rooms, in a fixed number of
    queries."""
    return {m.pk: m for m in _messages().select_related("room").filter(pk__in=ids).order_by()}


def display_name(room: Room, user) -> str:
    if room.kind == Room.Kind.DIRECT:
        return direct_names([room], user)[room.pk]
    return room.name


def room_object(room: Room, user) -> dict[str, str]:
    """The room object of PROTOCOL.md §4 as `user` sees it: {slug, name, kind, topic}."""
    return {
        "slug": room.slug,
        "name": display_name(room, user),
        "kind": room.kind,
        "topic": room.topic,
    }


def last_read(user, room: Room) -> int | None:
    """Where the user's read marker stands in the room (None: never read there)."""
    return (
        ReadMarker.objects.filter(user=user, room=room)
        .values_list("last_read_id", flat=True)
        .first()
    )


def notification_levels(room_id: int, author_id: int, among: set[int] | None) -> dict[int, str]:
    """{user id: notification setting} of the room's members but the author who want to hear of
    a new message: those whose setting is "all", and those `among` (the people it mentions);
    every member when `among` is None (a direct room). Bans are the caller's to leave out
    (policy.banned_among). Written out, as it runs for every post: the ORM's compiling was most
    of its cost (issue 21)."""
    quote = connection.ops.quote_name
    sql = (
        f"SELECT {quote('user_id')}, {quote('notifications')} "
        f"FROM {quote(Membership._meta.db_table)} "
        f"WHERE {quote('room_id')} = %s AND {quote('user_id')} <> %s"
    )
    params: list = [room_id, author_id]
    if among is not None:
        wanted = f"{quote('notifications')} = %s"
        params.append(Membership.Notifications.ALL)
        if among:
            wanted += f" OR {quote('user_id')} IN ({', '.join(['%s'] * len(among))})"
            params += sorted(among)
        sql += f" AND ({wanted})"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return dict(cursor.fetchall())


def room_positions(room_ids: list[int]) -> list[tuple[int, int] | Exception]:
    """Each room's cursor and members epoch (Room.DoesNotExist for a room gone), in one query."""
    rows = Room.objects.filter(pk__in=set(room_ids)).values_list("pk", "cursor", "members_epoch")
    found = {pk: (cursor, epoch) for pk, cursor, epoch in rows}
    return [found.get(pk) or Room.DoesNotExist(f"room {pk}") for pk in room_ids]


def room_cursors(room_ids: list[int]) -> dict[int, tuple[int, int]]:
    """The cursors and members epochs of those of these rooms that are open (not archived)."""
    rooms = Room.objects.filter(pk__in=room_ids, archived_at__isnull=True)
    return {
        pk: (cursor, epoch)
        for pk, cursor, epoch in rooms.values_list("pk", "cursor", "members_epoch")
    }


def members_among(room_id: int, user_ids: list[int]) -> set[int]:
    """Which of these users may still read the room: all of them in a public room, its members
    in a private or direct one, none in an archived one."""
    room = Room.objects.filter(pk=room_id, archived_at__isnull=True).values("kind").first()
    if room is None:
        return set()
    if room["kind"] == Room.Kind.PUBLIC:
        return set(user_ids)
    found = Membership.objects.filter(room_id=room_id, user_id__in=user_ids)
    return set(found.values_list("user_id", flat=True))


def post_by_client_id(room: Room, author, client_id: str) -> Message | None:
    return Message.objects.filter(room=room, author=author, client_id=client_id).first()


def latest_messages(room: Room, limit: int) -> tuple[list[Message], bool]:
    """The newest `limit` messages, oldest first, and whether older ones exist."""
    rows = list(_messages().filter(room=room).order_by("-id")[: limit + 1])
    return rows[:limit][::-1], len(rows) > limit


def messages_before(room: Room, before: int, limit: int) -> tuple[list[Message], bool]:
    rows = list(_messages().filter(room=room, id__lt=before).order_by("-id")[: limit + 1])
    return rows[:limit][::-1], len(rows) > limit


def messages_around(room: Room, message_id: int, limit: int):
    """§6 `history around`: the message, up to `limit // 2` older ones and the rest newer (fewer
    at either end), oldest first; whether older and newer ones exist beyond them. None when the
    message is not in the room."""
    if not Message.objects.filter(room=room, pk=message_id).exists():
        return None
    older_count = limit // 2
    newer_count = limit - 1 - older_count
    older = list(
        _messages().filter(room=room, id__lt=message_id).order_by("-id")[: older_count + 1]
    )
    rest = list(_messages().filter(room=room, id__gte=message_id).order_by("id")[: newer_count + 2])
    messages = older[:older_count][::-1] + rest[: newer_count + 1]
    return messages, len(older) > older_count, len(rest) > newer_count + 1


def messages_changed_since(room: Room, since: int) -> list[Message]:
    """Every message whose latest change is after `since`, in change order."""
    return list(_messages().filter(room=room, cursor__gt=since).order_by("cursor"))


def _frame_size(message: Message) -> int:
    """About how many bytes a message takes in a frame (a bound, not a measure)."""
    reactions = sum(40 + len(r.emoji.encode()) for r in message.reactions.all())
    return len(message.body.encode()) + len(message.html.encode()) + reactions + 400


@dataclass(frozen=True)
class Ready:
    messages: str  # the `messages` array, encoded (protocol.encode_messages)
    has_more: bool
    cursor: int
    reset: bool


# The latest page of a room as a `ready` frame carries it, encoded, kept per process for the
# rooms connected to most recently. Every change moves the room's cursor (and the page is read
# after the cursor), so the page read at cursor c serves every connect that finds the room at c:
# a crowd opening sockets to a room after a deploy reads and encodes it once, not once each.
# The key holds the room's creation time too, so a room id used again (a restored or a test
# database) never meets another room's page. Bounded by rooms and by characters: a workspace's
# rooms are mostly small and quiet (a few hundred characters a page), a busy room's page can be
# half a megabyte. Replays from a `since` cursor are kept here too (ready_state).
LATEST_PAGES_KEPT = 4096
LATEST_PAGES_CHARACTERS = 32 * 1024 * 1024
_latest_pages: "OrderedDict[tuple, tuple[str | None, bool]]" = OrderedDict()
_latest_pages_characters = 0


def forget_latest_pages() -> None:
    """Empty the cache (tests that count a cold start's queries)."""
    global _latest_pages_characters
    _latest_pages.clear()
    _latest_pages_characters = 0


def latest_page(room: Room, cursor: int) -> tuple[str, bool]:
    """The encoded latest page of the room at `cursor` and whether older messages exist."""
    key = _page_key(room, cursor)
    page = _latest_pages.get(key)
    if page is not None:
        _latest_pages.move_to_end(key)
        return page
    return _keep_page(room, cursor, *latest_messages(room, settings.CHAT_HISTORY_PAGE))


def read_latest_pages(rooms: list[Room]) -> None:
    """Put the latest pages of these rooms (at the cursors just read with them) in the cache,
    in a fixed number of queries on PostgreSQL: many sockets opening at once to many rooms
    (chat.realtime.consumers.openings). SQLite reads them one room at a time (`latest_page`)."""
    missing = {room.pk: room for room in rooms if _page_key(room, room.cursor) not in _latest_pages}
    if len(missing) < 2 or connection.vendor != "postgresql":
        return
    limit = settings.CHAT_HISTORY_PAGE
    with connection.cursor() as cursor:
        # Each room's newest limit + 1 message ids through the (room, id) index, never a scan
        # of a long history.
        cursor.execute(
            "SELECT newest.id FROM unnest(%s::bigint[]) AS wanted(room_id) CROSS JOIN LATERAL "
            "(SELECT id FROM chat_message WHERE room_id = wanted.room_id ORDER BY id DESC "
            "LIMIT %s) AS newest",
            [list(missing), limit + 1],
        )
        ids = [row[0] for row in cursor.fetchall()]
    by_room: dict[int, list[Message]] = {pk: [] for pk in missing}
    for message in _messages().filter(pk__in=ids).order_by("-id"):
        by_room[message.room_id].append(message)
    for pk, rows in by_room.items():
        room = missing[pk]
        _keep_page(room, room.cursor, rows[:limit][::-1], len(rows) > limit)


def _page_key(room: Room, cursor: int) -> tuple:
    return (room.pk, room.created, cursor)


def _keep_page(room: Room, cursor: int, messages: list[Message], has_more: bool):
    return _keep(_page_key(room, cursor), (protocol.encode_messages(messages), has_more))


def _keep(key: tuple, page: tuple[str | None, bool]) -> tuple[str | None, bool]:
    global _latest_pages_characters
    if key in _latest_pages:
        _latest_pages_characters -= len(_latest_pages.pop(key)[0] or "")
    _latest_pages[key] = page
    _latest_pages_characters += len(page[0] or "")
    while len(_latest_pages) > 1 and (
        len(_latest_pages) > LATEST_PAGES_KEPT or _latest_pages_characters > LATEST_PAGES_CHARACTERS
    ):
        _latest_pages_characters -= len(_latest_pages.popitem(last=False)[1][0] or "")
    return page


def ready_state(room: Room, since: int | None) -> Ready:
    """What a new connection is told first: a replay since its cursor, or the latest page.

    `room` must have just been read (chat.policy.room_for, in the same trip to the database):
    its cursor is read before the messages, so the replay can only be ahead of it, never behind,
    and a change the replay misses is one the live stream will still send."""
    cursor = room.cursor
    servable = (
        since is not None
        and 0 <= since <= cursor
        and cursor - since <= settings.CHAT_RESUME_MAX_CHANGES
    )
    if servable:
        # Kept like the latest pages: after a restart a room's sockets all resume from the
        # cursor they last saw, mostly the same one, and the replay from it is the same.
        key = ("since", *_page_key(room, cursor), since)
        replay = _latest_pages.get(key)
        if replay is not None:
            _latest_pages.move_to_end(key)
        else:
            replay = _keep(key, _replay(room, since))
        if replay[0] is not None:
            return Ready(replay[0], replay[1], cursor, reset=False)
    messages, has_more = latest_page(room, cursor)
    return Ready(messages, has_more, cursor, reset=True)


def _replay(room: Room, since: int) -> tuple[str | None, bool]:
    """The changes after `since`, encoded, and whether older messages exist; (None, False)
    when they would not fit in one frame the server may send (daphne's message limit)."""
    changed = messages_changed_since(room, since)
    size = sum(_frame_size(m) for m in changed)
    if size > settings.CHAT_MAX_REPLAY_BYTES:
        return None, False
    older = Message.objects.filter(room=room, cursor__lte=since).exists()
    return protocol.encode_messages(changed), older


def change_frames(room_id: int, after: int, upto: int) -> list[tuple[int, str]]:
    """The `message` frames for cursors after..upto, each message in its current state."""
    changes = (
        Change.objects.filter(room_id=room_id, cursor__gt=after, cursor__lte=upto)
        .select_related(*(f"message__{related}" for related in MESSAGE_RELATED))
        .prefetch_related(_reactions("message__"), "message__attachments")
        .order_by("cursor")
    )
    return [
        (
            change.cursor,
            protocol.message_frame(
                change.message, change.cursor, created=change.kind == Change.Kind.CREATE
            ),
        )
        for change in changes
    ]


def revoked_sessions(
    pairs: list[tuple[str, int]], known: dict[str, tuple] | None = None
) -> set[str]:
    """Which of these (session key, user id) pairs no longer stand for a logged-in user.

    A session is revoked when it is gone (logout), expired, belongs to someone else, was made
    before a password change (Django's session auth hash), or its user was deactivated.

    `known` (kept by the caller between calls) remembers the sessions found standing, with the
    session data and password hash they were judged on: a session is decoded again only when
    either changed, so a check of many unchanged sessions is two plain queries.
    """
    from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.models import Session
    from django.utils import timezone
    from django.utils.crypto import constant_time_compare

    User = get_user_model()
    keys = {key for key, _ in pairs}
    sessions = dict(
        Session.objects.filter(session_key__in=keys, expire_date__gt=timezone.now()).values_list(
            "session_key", "session_data"
        )
    )
    users = {
        pk: (password, is_active)
        for pk, password, is_active in User.objects.filter(
            pk__in={user_id for _, user_id in pairs}
        ).values_list("pk", "password", "is_active")
    }
    standing = {}
    revoked = set()
    for key, user_id in pairs:
        data, user = sessions.get(key), users.get(user_id)
        if data is None or user is None or not user[1]:
            revoked.add(key)
            continue
        fingerprint = (data, user_id, user[0])
        if known is not None and known.get(key) == fingerprint:
            standing[key] = fingerprint
            continue
        decoded = Session(session_key=key, session_data=data).get_decoded()
        session_hash = User(pk=user_id, password=user[0]).get_session_auth_hash()
        if str(decoded.get(SESSION_KEY)) != str(user_id) or not constant_time_compare(
            decoded.get(HASH_SESSION_KEY, ""), session_hash
        ):
            revoked.add(key)
        else:
            standing[key] = fingerprint
    if known is not None:
        known.clear()
        known.update(standing)
    return revoked


# The most report marks a room page starts with (its own reports, the newest first).
REPORTED_IDS_MAX = 500


def reported_ids(user, room: Room) -> list[int]:
    """The ids of messages in `room` that `user` has reported: the page marks them "reported by
    you" (a `reported` frame marks the ones reported later)."""
    from .models import Report

    rows = Report.objects.filter(reporter=user, message__room=room).order_by("-message_id")
    return list(rows.values_list("message_id", flat=True)[:REPORTED_IDS_MAX])


def report_context(message: Message, each_side: int = 5) -> list[Message]:
    """The message with up to `each_side` older and newer ones in its room, oldest first: what
    a moderator reads with a report (PROTOCOL.md §9: the ten messages around it)."""
    room = _messages().filter(room_id=message.room_id)
    older = list(room.filter(id__lt=message.pk).order_by("-id")[:each_side])
    newer = list(room.filter(id__gt=message.pk).order_by("id")[:each_side])
    return [*reversed(older), message, *newer]
