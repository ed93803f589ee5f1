from django.conf import settings
from django.db import models
from django.db.models import Q


class Room(models.Model):
    """A conversation. Its `kind` says who may read it (chat.policy): anyone logged in (public),
    its members (private), or a fixed set of 2 to 9 people (direct, no name of its own)."""

    class Kind(models.TextChoices):
        PUBLIC = "public"
        PRIVATE = "private"
        DIRECT = "direct"

    # A direct room's name is its slug: readers see the other participants' names instead.
    name = models.CharField(max_length=80, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    kind = models.CharField(max_length=7, choices=Kind.choices, default=Kind.PUBLIC)
    topic = models.CharField(max_length=200, blank=True)
    # Moves by one whenever someone is removed from (or leaves) a private or direct room. Every
    # change's doorbell carries it, so a server process re-checks its sockets' membership
    # before it delivers anything newer, even if the removal's own event was lost.
    members_epoch = models.BigIntegerField(default=0, editable=False)
    # A direct room's participants as their sorted user ids ("3,8,21"): one room per set.
    direct_key = models.CharField(
        max_length=120, unique=True, null=True, blank=True, editable=False
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="rooms_created"
    )
    created = models.DateTimeField(auto_now_add=True)
    # The room's change counter: every create, edit, delete or restore moves it forward by one.
    cursor = models.BigIntegerField(default=0, editable=False)
    # Archived by a moderator (chat.services.archive_room): gone for users, kept for the record.
    archived_at = models.DateTimeField(null=True, blank=True, editable=False)
    archived_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        editable=False,
    )

    class Meta:
        ordering = ["name"]
        permissions = [("archive_room", "Can archive and unarchive rooms")]

    def __str__(self) -> str:
        return self.name

    @property
    def is_direct(self) -> bool:
        return self.kind == self.Kind.DIRECT


class Membership(models.Model):
    """One user in one room, with a role. Private and direct rooms are readable by their members
    only; a public room's members are the people who joined it (posting joins)."""

    class Role(models.TextChoices):
        OWNER = "owner"
        MEMBER = "member"

    class Notifications(models.TextChoices):
        """Which messages raise a `notify` on the member's inbox (PROTOCOL.md §5)."""

        ALL = "all", "All messages"
        MENTIONS = "mentions", "Mentions and direct messages"
        NONE = "none", "Nothing"

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=6, choices=Role.choices, default=Role.MEMBER)
    joined = models.DateTimeField(auto_now_add=True)
    # Set by the member on any device; every device's inbox follows it.
    notifications = models.CharField(
        max_length=8, choices=Notifications.choices, default=Notifications.MENTIONS
    )

    class Meta:
        ordering = ["room", "joined", "id"]
        constraints = [
            models.UniqueConstraint(fields=["room", "user"], name="membership_room_user_uniq"),
        ]
        indexes = [models.Index(fields=["user", "room"], name="membership_user_room")]
        permissions = [("remove_member", "Can remove members from rooms")]

    def __str__(self) -> str:
        return f"{self.user} in {self.room} ({self.role})"


class Message(models.Model):
    room = models.ForeignKey(Room, on_delete=models.PROTECT, related_name="messages")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="messages"
    )
    body = models.TextField()
    created = models.DateTimeField(auto_now_add=True)
    edited = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    # A membership notice ("alice added bob"): drawn as a quiet line, never edited or deleted.
    system = models.BooleanField(default=False)
    # The body rendered (chat.rendering) at each change, and the renderer's version that made it:
    # `manage.py render_messages` renders again what an older version made.
    html = models.TextField(blank=True, default="", editable=False)
    html_version = models.PositiveSmallIntegerField(default=0, editable=False)
    # The usernames the body mentions (§6): readers of the room when it was last written.
    mentions = models.JSONField(default=list, blank=True, editable=False)
    # The message this one answers (§6 `reply_to`), in the same room. Messages are never removed
    # (PROTECT everywhere), so SET_NULL only guards against a hand-made deletion.
    reply_to = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="replies",
        editable=False,
    )
    # The sender's idempotency key (PROTOCOL.md: post.client_id); empty when none was given.
    client_id = models.CharField(max_length=64, blank=True, default="")
    # The room cursor of this message's latest change.
    cursor = models.BigIntegerField(editable=False)

    class Meta:
        ordering = ["id"]
        permissions = [("moderate_message", "Can hide and restore messages")]
        indexes = [
            # History pages: newest first within a room, paged by id.
            models.Index(fields=["room", "-id"], name="message_room_id_desc"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["room", "cursor"], name="message_room_cursor_uniq"),
            models.UniqueConstraint(
                fields=["room", "author", "client_id"],
                condition=~Q(client_id=""),
                name="message_client_id_uniq",
            ),
        ]

    def __str__(self) -> str:
        return f"Id{self.pk}: {self.body[:40]}"

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None


class Mention(models.Model):
    """One user mentioned by one message (Message.mentions as rows), so an inbox counts a
    room's unread mentions with an index instead of reading JSON. Kept by the services in the
    transaction that writes the message; the room is repeated for that index."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="mention_rows")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "user"], name="mention_message_user_uniq"),
        ]
        indexes = [models.Index(fields=["user", "room", "message"], name="mention_user_room")]

    def __str__(self) -> str:
        return f"Id{self.message_id} mentions {self.user_id}"


class MessageRevision(models.Model):
    """A text an edit replaced (issue 17: "the author and moderators can see earlier versions").

    Written in the edit's transaction. Its author reads it back while the message stands; once
    the message is deleted only moderators do, in the admin (PROTOCOL.md §2), and it is erased
    with the message's text (services.erase_deleted_text).
    """

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="revisions")
    body = models.TextField()
    # As the message had them (rendered by the renderer of `html_version`).
    html = models.TextField(blank=True, default="", editable=False)
    html_version = models.PositiveSmallIntegerField(default=0, editable=False)
    mentions = models.JSONField(default=list, blank=True, editable=False)
    # When this text was written (the message's posting or an earlier edit) and replaced.
    written = models.DateTimeField()
    replaced = models.DateTimeField()

    class Meta:
        ordering = ["message", "id"]

    def __str__(self) -> str:
        return f"Id{self.message_id} as of {self.written:%Y-%m-%d %H:%M:%S}"


class Change(models.Model):
    """One step of a room's cursor: which message changed at that step.

    Message.cursor only keeps a message's latest change; this log keeps every step, so a socket
    that missed steps can be filled in with cursors +1, +2, ... and no gap.
    """

    class Kind(models.TextChoices):
        CREATE = "create"
        EDIT = "edit"
        DELETE = "delete"
        RESTORE = "restore"
        REACT = "react"  # a reaction added or taken back (§6)

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="changes")
    cursor = models.BigIntegerField()
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="changes")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["room", "cursor"]
        constraints = [
            models.UniqueConstraint(fields=["room", "cursor"], name="change_room_cursor_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.room_id}#{self.cursor} {self.kind} {self.message_id}"


class Reaction(models.Model):
    """One user's emoji on one message (§6 `react` toggles it). The Message object lists them
    grouped by emoji in order of each emoji's first use: the lowest id among its rows."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="reactions")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reactions"
    )
    emoji = models.CharField(max_length=32)  # one emoji grapheme, at most 32 UTF-8 bytes
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["message", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["message", "user", "emoji"], name="reaction_message_user_emoji_uniq"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.emoji} on Id{self.message_id}"


class RestrictionQuerySet(models.QuerySet):
    def active(self, now=None):
        from django.utils import timezone

        now = now or timezone.now()
        return self.filter(lifted_at__isnull=True).filter(Q(until__isnull=True) | Q(until__gt=now))

    def bans(self):
        """The bans in force (a banned user may not read the room)."""
        return self.active().filter(kind=RoomRestriction.Kind.BAN)


class RoomRestriction(models.Model):
    """A ban (no entry) or mute (no posting) of one user in one room, until a time or for good."""

    class Kind(models.TextChoices):
        BAN = "ban", "ban"
        MUTE = "mute", "mute"

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="restrictions")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="restrictions"
    )
    kind = models.CharField(max_length=4, choices=Kind.choices)
    until = models.DateTimeField(
        null=True, blank=True, help_text="Leave empty for a restriction without end."
    )
    reason = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", editable=False
    )
    created = models.DateTimeField(auto_now_add=True)
    lifted_at = models.DateTimeField(null=True, blank=True, editable=False)
    lifted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        editable=False,
    )

    objects = RestrictionQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["room", "user", "kind"], name="restriction_lookup")]

    def __str__(self) -> str:
        return f"{self.kind} {self.user} in {self.room}"


class ModerationAction(models.Model):
    """The audit log: who did what to whom, when, and why. Written only by the services."""

    class Action(models.TextChoices):
        HIDE = "hide"
        RESTORE = "restore"
        BAN = "ban"
        MUTE = "mute"
        LIFT = "lift"
        ARCHIVE = "archive"
        UNARCHIVE = "unarchive"
        REMOVE = "remove"  # a member removed from a room
        DISMISS = "dismiss"  # a report closed without acting on it
        # A moderator read a direct room's reported message and its context (PROTOCOL.md §9).
        VIEW = "view"

    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=10, choices=Action.choices)
    room = models.ForeignKey(Room, on_delete=models.PROTECT, related_name="+")
    target = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", null=True
    )
    message = models.ForeignKey(Message, on_delete=models.PROTECT, related_name="+", null=True)
    reason = models.CharField(max_length=200, blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.actor} {self.action} {self.target or self.message_id}"


class Report(models.Model):
    """One user's report of one message (PROTOCOL.md §9): open until a moderator closes it by
    hiding the message, muting or banning its author, or dismissing it."""

    class State(models.TextChoices):
        OPEN = "open"
        CLOSED = "closed"

    class Resolution(models.TextChoices):
        HIDDEN = "hidden", "message hidden"
        MUTED = "muted", "author muted"
        BANNED = "banned", "author banned"
        DISMISSED = "dismissed", "dismissed"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="reports")
    reporter = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reports"
    )
    reason = models.CharField(max_length=500, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    state = models.CharField(max_length=6, choices=State.choices, default=State.OPEN)
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    closed_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=9, choices=Resolution.choices, blank=True)
    # The reporter has been told (quietly, on their next page) that it was handled.
    reporter_notified = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["message", "reporter"], name="report_message_reporter_uniq"
            ),
        ]
        indexes = [
            models.Index(fields=["state", "-created"], name="report_queue"),
            models.Index(fields=["reporter", "reporter_notified"], name="report_notices"),
        ]

    def __str__(self) -> str:
        return f"Report {self.pk} of Id{self.message_id} by {self.reporter}"


class ReadMarker(models.Model):
    """How far one user has read in one room: the id of the latest message they have seen.

    It only moves forward (chat.services.mark_read). The lobby counts the messages after it as
    unread, and the room page draws its "new messages" divider there.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="read_markers"
    )
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="read_markers")
    last_read_id = models.BigIntegerField(default=0)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "room"], name="readmarker_user_room_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.user} read {self.room} to Id{self.last_read_id}"


class UsernameSkeleton(models.Model):
    """Each account's username as Unicode TR39 reduces look-alikes (chat.accounts.skeleton).

    Kept by a signal whenever a user is saved; sign-up refuses a name whose skeleton is here.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="username_skeleton",
    )
    skeleton = models.CharField(max_length=1000, db_index=True)

    def __str__(self) -> str:
        return self.skeleton


class Attachment(models.Model):
    """A file uploaded to a room (PROTOCOL.md §8): first on its own, then attached to one message
    by a `post` of its uploader's. Its bytes are in the "attachments" storage (chat.attachments)
    under `key`, an image's thumbnail under `thumbnail_key`; served only through the view that
    asks the access policy."""

    uploader = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="attachments"
    )
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="attachments")
    # Empty until a post attaches it. A message is never removed (only made a tombstone, whose
    # files are erased); should one be removed by hand, its files fall to the unattached purge.
    message = models.ForeignKey(
        Message, on_delete=models.SET_NULL, null=True, blank=True, related_name="attachments"
    )
    name = models.CharField(max_length=200)  # cleaned (chat.attachments.clean_name)
    size = models.BigIntegerField()  # bytes as served (an image re-encoded)
    content_type = models.CharField(max_length=100)  # an image's from its content
    key = models.CharField(max_length=200, unique=True)
    thumbnail_key = models.CharField(max_length=200, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["uploader", "room"], name="attachment_uploader_room"),
            models.Index(
                fields=["created"], condition=Q(message__isnull=True), name="attachment_unattached"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.size} bytes)"

    @property
    def is_image(self) -> bool:
        return bool(self.thumbnail_key)
