"""The access policy: who may see, read, post in, change or moderate a room, and why not.

Every door asks here, and only here: the room socket (when it opens, for each frame, on resume),
the pages (room page, read marker, lobby), the admin, and the services behind all of them. A
rule changes in one place, and a new door that asks the same questions cannot leak what the
others hide (the authorization matrix, tests/test_authorization.py, walks every door for every
role).

- A room a user may not **see** (unknown, archived; later, a private room they are not in) does
  not exist for them: every door answers as for a slug that never existed.
- **Reading** needs seeing and no ban; **posting** needs reading and no mute; authors **edit**
  their own messages (not tombstones) under the same rule as posting, and **delete** them while
  they may read (a mute does not stop deleting one's own words).
- **Moderating** (hide, restore, ban, mute, archive) is for staff with the moderation
  permissions; a staff account is banned or muted only by a superuser.

The answers are `Denial`s (or None for "allowed"); `require` turns one into the ChatError the
frame's answer needs, and `CLOSE_CODES`/`HTTP_STATUS` say how a socket or a page answers it.
"""

from dataclasses import dataclass
from enum import StrEnum

from django.db.models import QuerySet

from .models import Message, Room, RoomRestriction
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


# How a refused frame is answered (its error code and sentence).
ERRORS: dict[Denial, tuple[ErrorCode, str]] = {
    Denial.NOT_LOGGED_IN: (ErrorCode.FORBIDDEN, "Log in first."),
    Denial.NO_SUCH_ROOM: (ErrorCode.NOT_FOUND, "There is no such room."),
    Denial.BANNED: (ErrorCode.FORBIDDEN, "You are banned from this room."),
    Denial.MUTED: (ErrorCode.MUTED, "A moderator has muted you in this room."),
    Denial.NOT_AUTHOR: (ErrorCode.FORBIDDEN, "You can only {action} your own messages."),
    Denial.TOMBSTONE: (ErrorCode.FORBIDDEN, "A deleted message cannot be changed."),
    Denial.NOT_MODERATOR: (ErrorCode.FORBIDDEN, "Only moderators can do that."),
    Denial.STAFF_TARGET: (
        ErrorCode.FORBIDDEN,
        "That is a staff account: only an administrator can ban or mute it.",
    ),
}

# How a socket closes when it may no longer be open at all.
CLOSE_CODES: dict[Denial, CloseCode] = {
    Denial.NOT_LOGGED_IN: CloseCode.NOT_LOGGED_IN,
    Denial.NO_SUCH_ROOM: CloseCode.NO_SUCH_ROOM,
    Denial.BANNED: CloseCode.FORBIDDEN,
}

MODERATION_PERMISSIONS = ("chat.moderate_message",)


def require(denial: Denial | None, *, ref: object = None, action: str = "change") -> None:
    """Raise the ChatError for a refusal (`action` names it: "edit", "delete"); nothing when
    allowed."""
    if denial is not None:
        code, detail = ERRORS[denial]
        raise ChatError(code, detail.format(action=action), ref=ref, close=CLOSE_CODES.get(denial))


def _logged_in(user) -> bool:
    return user is not None and user.is_authenticated


def is_moderator(user) -> bool:
    return _logged_in(user) and user.is_staff and user.has_perms(MODERATION_PERMISSIONS)


# --- rooms a user can see ----------------------------------------------------------------------


def visible_rooms(user) -> QuerySet[Room]:
    """Every room this user can see: the lobby lists these, every door finds rooms among them."""
    if not _logged_in(user):
        return Room.objects.none()
    return Room.objects.filter(archived_at__isnull=True)


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

    def can_see(self) -> Denial | None:
        if not _logged_in(self.user):
            return Denial.NOT_LOGGED_IN
        if self.room.archived_at is not None:
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
        if message.author_id != self.user.pk:
            return Denial.NOT_AUTHOR
        if denial := self.can_post():
            return denial
        if message.is_deleted:
            return Denial.TOMBSTONE
        return None

    def can_delete(self, message: Message) -> Denial | None:
        if message.author_id != self.user.pk:
            return Denial.NOT_AUTHOR
        return self.can_read()

    def can_moderate(self) -> Denial | None:
        if not _logged_in(self.user):
            return Denial.NOT_LOGGED_IN
        return None if is_moderator(self.user) else Denial.NOT_MODERATOR


def restrictions_in_force(room: Room, user) -> frozenset[str]:
    if not _logged_in(user):
        return frozenset()
    kinds = RoomRestriction.objects.active().filter(room=room, user=user)
    return frozenset(kinds.values_list("kind", flat=True))


def access(user, room: Room) -> Access:
    """What `user` may do in `room` now (one query)."""
    return Access(user=user, room=room, restrictions=restrictions_in_force(room, user))


def can_restrict(*, actor, target) -> Denial | None:
    """Banning or muting `target`: a staff account only a superuser may. (Who may restrict at
    all is the admin's permission, `chat.add_roomrestriction`.)"""
    if (target.is_staff or target.is_superuser) and not actor.is_superuser:
        return Denial.STAFF_TARGET
    return None
