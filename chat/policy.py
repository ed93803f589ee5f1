"""The access policy: who may see, read, post in, change or moderate a room, and why not.

Every door asks here, and only here: the room socket (when it opens, for each frame, on resume),
the pages (room page, read marker, lobby), the admin, and the services behind all of them. A
rule changes in one place, and a new door that asks the same questions cannot leak what the
others hide (the authorization matrix, tests/test_authorization.py, walks every door for every
role).

- A room a user may not **see** (unknown, archived, or a private or direct room they are not a
  member of) does not exist for them: every door answers as for a slug that never existed.
- **Reading** needs seeing and no ban; **posting** needs reading and no mute; authors **edit**
  their own messages (not tombstones) under the same rule as posting, and **delete** them while
  they may read (a mute does not stop deleting one's own words). **Reacting** follows posting;
  nobody reacts to a tombstone or a notice, or replies to a notice (§6).
- **Members** (PROTOCOL.md §4): any member of a private room adds people; anyone joins a public
  room (themselves only); nobody joins or leaves a direct room. Owners remove members, anyone
  leaves; a private room's last owner stays while others remain.
- **Moderating** (hide, restore, ban, mute, archive, removing members) is for staff with the
  moderation permissions; a staff account is banned or muted only by a superuser. The owners of
  a private room moderate it too, on the site: they hide messages and remove members there.
- **Files** (PROTOCOL.md §8): whoever may post uploads; a file is fetched by whoever may read
  its room while its message stands (by its uploader alone before it is posted); a hidden
  message's files by moderators only.
- **Reporting** (PROTOCOL.md §9): any reader reports a message, not a room notice, not their
  own; moderators read reports in the admin.
- **Earlier versions** of an edited message: its author, and the room's moderators (site
  moderators, a private room's owners), while it is not deleted; then the admin only.

The answers are `Denial`s (or None for "allowed"); `require` turns one into the ChatError the
frame's answer needs, and `CLOSE_CODES`/`HTTP_STATUS` say how a socket or a page answers it.
"""

from dataclasses import dataclass
from enum import StrEnum

from django.db import connection
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone

from .models import Membership, Message, Room, RoomRestriction
from .realtime.protocol import ChatError, CloseCode, ErrorCode


class Denial(StrEnum):
    """Why an action is refused."""

    NOT_LOGGED_IN = "not_logged_in"
    NO_SUCH_ROOM = "no_such_room"  # unknown, archived, or not visible to this user
    BANNED = "banned"
    MUTED = "muted"
    NOT_AUTHOR = "not_author"
    TOMBSTONE = "tombstone"
    NOT_MODERATOR = "not_moderator"
    STAFF_TARGET = "staff_target"
    SYSTEM_MESSAGE = "system_message"  # membership notices are never changed
    # Membership (§4).
    NOT_ALLOWED = "not_allowed"  # adding someone else to a public room, anything in a direct one
    NOT_OWNER = "not_owner"
    ALREADY_MEMBER = "already_member"
    NOT_MEMBER = "not_member"
    LAST_OWNER = "last_owner"
    NO_SUCH_USER = "no_such_user"
    OWN_MESSAGE = "own_message"  # reporting one's own words


# How a refused frame is answered (its error code and sentence).
ERRORS: dict[Denial, tuple[ErrorCode, str]] = {
    Denial.NOT_LOGGED_IN: (ErrorCode.FORBIDDEN, "Log in first."),
    Denial.NO_SUCH_ROOM: (ErrorCode.NOT_FOUND, "There is no such room."),
    Denial.BANNED: (ErrorCode.FORBIDDEN, "You are banned from this room."),
    Denial.MUTED: (ErrorCode.MUTED, "A moderator has muted you in this room."),
    Denial.NOT_AUTHOR: (ErrorCode.FORBIDDEN, "You can only {action} your own messages."),
    Denial.TOMBSTONE: (ErrorCode.FORBIDDEN, "You cannot {action} a deleted message."),
    Denial.NOT_MODERATOR: (ErrorCode.FORBIDDEN, "Only moderators can do that."),
    Denial.STAFF_TARGET: (
        ErrorCode.FORBIDDEN,
        "That is a staff account: only an administrator can ban or mute it.",
    ),
    Denial.SYSTEM_MESSAGE: (ErrorCode.FORBIDDEN, "You cannot {action} a room notice."),
    Denial.NOT_ALLOWED: (ErrorCode.FORBIDDEN, "You cannot {action} here."),
    Denial.NOT_OWNER: (ErrorCode.FORBIDDEN, "Only the room's owners can remove members."),
    Denial.ALREADY_MEMBER: (ErrorCode.INVALID, "{ref} is already a member."),
    Denial.NOT_MEMBER: (ErrorCode.NOT_FOUND, "{ref} is not a member of this room."),
    Denial.LAST_OWNER: (
        ErrorCode.FORBIDDEN,
        "The room's last owner cannot leave while others remain; make someone else an owner.",
    ),
    Denial.NO_SUCH_USER: (ErrorCode.INVALID, "There is no user called {ref}."),
    Denial.OWN_MESSAGE: (ErrorCode.FORBIDDEN, "You cannot {action} your own message."),
}

# How a page or a JSON endpoint answers a refusal (PROTOCOL.md §1, §4).
HTTP_STATUS: dict[Denial, int] = {
    Denial.NOT_LOGGED_IN: 401,
    Denial.NO_SUCH_ROOM: 404,
    Denial.BANNED: 403,
    Denial.MUTED: 403,
    Denial.NOT_AUTHOR: 403,
    Denial.TOMBSTONE: 403,
    Denial.NOT_MODERATOR: 403,
    Denial.STAFF_TARGET: 403,
    Denial.SYSTEM_MESSAGE: 403,
    Denial.NOT_ALLOWED: 403,
    Denial.NOT_OWNER: 403,
    Denial.ALREADY_MEMBER: 409,
    Denial.NOT_MEMBER: 404,
    Denial.LAST_OWNER: 409,
    Denial.NO_SUCH_USER: 400,
    Denial.OWN_MESSAGE: 403,
}

# How a socket closes when it may no longer be open at all.
CLOSE_CODES: dict[Denial, CloseCode] = {
    Denial.NOT_LOGGED_IN: CloseCode.NOT_LOGGED_IN,
    Denial.NO_SUCH_ROOM: CloseCode.NO_SUCH_ROOM,
    Denial.BANNED: CloseCode.FORBIDDEN,
}

MODERATION_PERMISSIONS = ("chat.moderate_message",)


def require(denial: Denial | None, *, ref: object = None, action: str = "change") -> None:
    """Raise the ChatError for a refusal (`action` names it: "edit", "delete"; `ref` is what it
    is about: a message id, a username); nothing when allowed."""
    if denial is not None:
        code, detail = ERRORS[denial]
        raise ChatError(
            code,
            detail.format(action=action, ref=ref),
            ref=ref,
            close=CLOSE_CODES.get(denial),
            status=HTTP_STATUS[denial],
        )


def _logged_in(user) -> bool:
    return user is not None and user.is_authenticated


def is_moderator(user) -> bool:
    return _logged_in(user) and user.is_staff and user.has_perms(MODERATION_PERMISSIONS)


# --- rooms a user can see ----------------------------------------------------------------------


def visible_rooms(user) -> QuerySet[Room]:
    """Every room this user can see: open public rooms, and the private and direct rooms they are
    a member of. Every door finds rooms among these (the same rule as `Access.can_see`)."""
    if not _logged_in(user):
        return Room.objects.none()
    member = Exists(Membership.objects.filter(room=OuterRef("pk"), user=user))
    return Room.objects.filter(archived_at__isnull=True).filter(Q(kind=Room.Kind.PUBLIC) | member)


def member_rooms(user) -> QuerySet[Room]:
    """The rooms this user belongs to (joined public, private, direct) and can see."""
    if not _logged_in(user):
        return Room.objects.none()
    return Room.objects.filter(archived_at__isnull=True, memberships__user=user)


def _banned(room, user) -> Exists:
    """Whether a ban in force keeps `user` out of `room` (either may be an OuterRef): one
    subquery for every query here that leaves banned readers out or marks them."""
    return Exists(RoomRestriction.objects.bans().filter(room=room, user=user))


def readable_memberships() -> QuerySet[Membership]:
    """Memberships whose member can read the room now: not archived, no ban in force. An inbox
    (§5) summarizes these rooms and no others; a membership that drops out of it is
    `room_removed`."""
    return Membership.objects.filter(room__archived_at__isnull=True).exclude(
        _banned(OuterRef("room_id"), OuterRef("user_id"))
    )


def readable_rooms(user) -> QuerySet[Room]:
    """Every room this user can read now: the visible ones without a ban in force (search, §7,
    looks in these and no others)."""
    return visible_rooms(user).exclude(_banned(OuterRef("pk"), user))


def room_for(user, slug: str) -> Room | None:
    """The room at `slug` if this user can see it; None for unknown and invisible alike."""
    return visible_rooms(user).filter(slug=slug).first()


# --- what one user may do in one room ------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    """One user in one room, as the database says now (one query): asked per action."""

    user: object
    room: Room
    restrictions: frozenset[str]
    role: str | None = None  # Membership.Role, or None for someone not a member

    def can_see(self) -> Denial | None:
        if not _logged_in(self.user):
            return Denial.NOT_LOGGED_IN
        if self.room.archived_at is not None:
            return Denial.NO_SUCH_ROOM
        if self.room.kind != Room.Kind.PUBLIC and self.role is None:
            return Denial.NO_SUCH_ROOM
        return None

    def can_read(self) -> Denial | None:
        if denial := self.can_see():
            return denial
        if RoomRestriction.Kind.BAN in self.restrictions:
            return Denial.BANNED
        return None

    def can_post(self) -> Denial | None:
        if denial := self.can_read():
            return denial
        if RoomRestriction.Kind.MUTE in self.restrictions:
            return Denial.MUTED
        return None

    def can_edit(self, message: Message) -> Denial | None:
        if message.system:
            return Denial.SYSTEM_MESSAGE
        if message.author_id != self.user.pk:
            return Denial.NOT_AUTHOR
        if denial := self.can_post():
            return denial
        if message.is_deleted:
            return Denial.TOMBSTONE
        return None

    def can_reply(self, message: Message) -> Denial | None:
        """Replying to `message` (§6): not to a notice; posting's own rule still applies."""
        if message.system:
            return Denial.SYSTEM_MESSAGE
        return None

    def can_react(self, message: Message) -> Denial | None:
        """Reacting (§6) is speaking: the posting rule, and not on a notice or a tombstone."""
        if message.system:
            return Denial.SYSTEM_MESSAGE
        if denial := self.can_post():
            return denial
        if message.is_deleted:
            return Denial.TOMBSTONE
        return None

    def can_delete(self, message: Message) -> Denial | None:
        if message.system:
            return Denial.SYSTEM_MESSAGE
        if message.author_id != self.user.pk:
            return Denial.NOT_AUTHOR
        return self.can_read()

    def can_fetch_file(self, *, uploader_id: int, message: Message | None) -> Denial | None:
        """A file (§8) is for those who may read its room while its message stands; before it
        is posted, for its uploader alone. A message's files after a moderator hid it (an
        author's deletion erases them) are for moderators, who read the files of every room
        the admin shows them (public and private) as they read the messages there."""
        if message is not None and is_moderator(self.user) and not self.room.is_direct:
            return None
        if denial := self.can_read():
            return denial
        if message is None:
            return None if uploader_id == self.user.pk else Denial.NO_SUCH_ROOM
        if message.is_deleted:
            return Denial.TOMBSTONE
        return None

    def can_choose_notifications(self) -> Denial | None:
        """A member who may read the room chooses which of its messages notify them (§5)."""
        if denial := self.can_read():
            return denial
        return None if self.is_member else Denial.NOT_MEMBER

    def can_report(self, message: Message) -> Denial | None:
        """Any reader reports a message (§9), but not a room notice and not their own words;
        a tombstone has nothing left to report."""
        if denial := self.can_read():
            return denial
        if message.system:
            return Denial.SYSTEM_MESSAGE
        if message.author_id == self.user.pk:
            return Denial.OWN_MESSAGE
        if message.is_deleted:
            return Denial.TOMBSTONE
        return None

    def can_hide(self, message: Message) -> Denial | None:
        """A private room's owners moderate it on the site: they hide anyone's messages there
        (not room notices; hiding a tombstone changes nothing)."""
        if denial := self.can_read():
            return denial
        if not self.moderates_room:
            return Denial.NOT_MODERATOR
        if message.system:
            return Denial.SYSTEM_MESSAGE
        return None

    def can_see_versions(self, message: Message) -> Denial | None:
        """A message's earlier versions (issue 17): its author's, and every message's for the
        room's moderators; never a tombstone's (deleted text never reaches a client again, §2:
        moderators read it in the admin), never a notice's (never edited)."""
        if denial := self.can_read():
            return denial
        if message.system:
            return Denial.SYSTEM_MESSAGE
        if message.author_id != self.user.pk and not self.moderates_messages:
            return Denial.NOT_AUTHOR
        if message.is_deleted:
            return Denial.TOMBSTONE
        return None

    @property
    def moderates_messages(self) -> bool:
        """Site moderators, and the owners of a private room there: they read every message's
        earlier versions."""
        return is_moderator(self.user) or self.moderates_room

    # --- membership (§4): the service looks the target up and says what it found ----------

    @property
    def is_member(self) -> bool:
        return self.role is not None

    @property
    def is_owner(self) -> bool:
        return self.role == Membership.Role.OWNER

    @property
    def moderates_room(self) -> bool:
        """The owners of a private room are its moderators on the site."""
        return self.room.kind == Room.Kind.PRIVATE and self.is_owner

    def can_add(self, *, yourself: bool) -> Denial | None:
        """Adding someone (or, `yourself`, joining): members add people to a private room;
        anyone who may read a public room joins it; a direct room's people are fixed."""
        if denial := self.can_read():
            return denial
        if self.room.kind == Room.Kind.DIRECT:
            return Denial.NOT_ALLOWED
        if self.room.kind == Room.Kind.PUBLIC and not yourself:
            return Denial.NOT_ALLOWED
        return None

    def can_remove(
        self, *, yourself: bool, target_role: str | None, owners: int, members: int
    ) -> Denial | None:
        """Removing a member (or, `yourself`, leaving): owners remove anyone, anyone leaves, the
        last owner of a private room stays while others remain; nobody leaves a direct room.
        `owners` and `members` are counted as the room stands (the target included)."""
        if denial := self.can_see():  # a banned member may still leave
            return denial
        if self.room.kind == Room.Kind.DIRECT:
            return Denial.NOT_ALLOWED
        if not yourself and not self.is_owner:
            return Denial.NOT_OWNER
        return _removable(self.room, target_role, owners=owners, members=members)

    def moderator_can_remove(
        self, *, target_role: str | None, owners: int, members: int
    ) -> Denial | None:
        """A moderator in the admin removes anyone from a public or private room (not a direct
        one), but not a private room's last owner while others remain."""
        if denial := self.can_moderate():
            return denial
        if self.room.kind == Room.Kind.DIRECT:
            return Denial.NOT_ALLOWED
        return _removable(self.room, target_role, owners=owners, members=members)

    def can_moderate(self) -> Denial | None:
        if not _logged_in(self.user):
            return Denial.NOT_LOGGED_IN
        return None if is_moderator(self.user) else Denial.NOT_MODERATOR


def _removable(room: Room, target_role: str | None, *, owners: int, members: int) -> Denial | None:
    if target_role is None:
        return Denial.NOT_MEMBER
    last_owner = target_role == Membership.Role.OWNER and owners <= 1
    if room.kind == Room.Kind.PRIVATE and last_owner and members > 1:
        return Denial.LAST_OWNER
    return None


ROLE_PREFIX = "role:"


def access(user, room: Room) -> Access:
    """What `user` may do in `room` now: their restrictions in force and their role, in one
    query (a UNION of both), as every frame asks it."""
    return accesses([(user, room)])[0]


def accesses(pairs: list[tuple[object, Room]], *, always: bool = False) -> list[Access]:
    """`access(user, room)` for each pair, in one query whatever their number (sockets opening
    at once: chat.realtime.consumers.openings). The same facts, the same Access. `always`: run
    the query even for no pairs (it finds nothing), so that costs what a refusal costs."""
    logged_in = [(user, room) for user, room in pairs if _logged_in(user)]
    facts: dict[tuple[int, int], list[str]] = {}
    if logged_in or always:
        # No room id is negative: with no pairs the query runs and finds nothing.
        rooms = {room.pk for _, room in logged_in} or {-1}
        users = {user.pk for user, _ in logged_in} or {-1}
        for room_id, user_id, kind in _facts(sorted(rooms), sorted(users)):
            facts.setdefault((room_id, user_id), []).append(kind)
    answers = []
    for user, room in pairs:
        rows = facts.get((room.pk, user.pk), []) if _logged_in(user) else []
        roles = [row.removeprefix(ROLE_PREFIX) for row in rows if row.startswith(ROLE_PREFIX)]
        answers.append(
            Access(
                user=user,
                room=room,
                restrictions=frozenset(row for row in rows if not row.startswith(ROLE_PREFIX)),
                role=roles[0] if roles else None,
            )
        )
    return answers


def banned_among(room: Room, user_ids: list[int]) -> set[int]:
    """Which of these users a ban in force keeps out of the room (one query; none for none)."""
    if not user_ids:
        return set()
    facts = _facts([room.pk], sorted(set(user_ids)))
    return {user_id for _, user_id, kind in facts if kind == RoomRestriction.Kind.BAN}


def _facts(rooms: list[int], users: list[int]) -> list[tuple[int, int, str]]:
    """(room, user, kind) for these users' restrictions in force in these rooms (kind `ban` or
    `mute`) and their memberships (kind `role:<role>`): one statement.

    Written out rather than through the ORM: every frame a socket sends asks it, and compiling
    the ORM's UNION took 1.7 ms of its 3.2 (issue 21). "In force" is
    RestrictionQuerySet.active()'s rule (not lifted, no end or an end still ahead); a test holds
    the two to the same answers (tests/test_policy.py)."""
    restriction, membership = RoomRestriction._meta, Membership._meta
    quote = connection.ops.quote_name
    in_rooms = ", ".join(["%s"] * len(rooms))
    in_users = ", ".join(["%s"] * len(users))
    room_id, user_id = quote("room_id"), quote("user_id")
    sql = (
        f"SELECT {room_id}, {user_id}, {quote('kind')} FROM {quote(restriction.db_table)} "
        f"WHERE {room_id} IN ({in_rooms}) AND {user_id} IN ({in_users}) "
        f"AND {quote('lifted_at')} IS NULL AND ({quote('until')} IS NULL OR {quote('until')} > %s) "
        f"UNION ALL SELECT {room_id}, {user_id}, %s || {quote('role')} "
        f"FROM {quote(membership.db_table)} "
        f"WHERE {room_id} IN ({in_rooms}) AND {user_id} IN ({in_users})"
    )
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(sql, [*rooms, *users, now, ROLE_PREFIX, *rooms, *users])
        return cursor.fetchall()


def rooms_at(slugs: list[str]) -> dict[str, Room]:
    """The rooms at these slugs, whoever asks: only with `accesses` (whose `can_see` is the rule
    `room_for` applies), for a batch of sockets opening at once."""
    return {room.slug: room for room in Room.objects.filter(slug__in=set(slugs))}


def restrictions_in_force(user, room: Room) -> dict[str, RoomRestriction]:
    """This user's ban and mute in force in `room`, by kind, each with its `reason` and `until`
    (of several that overlap, the one that lasts longest: without end, else the latest `until`).
    A kind not in the answer is not in force. What the room page shows a banned or muted user."""
    if not _logged_in(user):
        return {}
    rows = (
        RoomRestriction.objects.active()
        .filter(room=room, user=user)
        .order_by(F("until").desc(nulls_first=True), "-created")
    )
    in_force: dict[str, RoomRestriction] = {}
    for row in rows:
        in_force.setdefault(row.kind, row)
    return in_force


def mark_banned(rooms: QuerySet[Room], user) -> QuerySet[Room]:
    """`rooms`, each with `banned`: a ban in force keeps this user out of it (the lobby marks
    such a room rather than offer its unread count). One subquery, not a query per room."""
    return rooms.annotate(banned=_banned(OuterRef("pk"), user))


def can_restrict(*, actor, target) -> Denial | None:
    """Banning or muting `target`: a staff account only a superuser may. (Who may restrict at
    all is the admin's permission, `chat.add_roomrestriction`.)"""
    if (target.is_staff or target.is_superuser) and not actor.is_superuser:
        return Denial.STAFF_TARGET
    return None
