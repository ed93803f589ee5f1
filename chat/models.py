from django.conf import settings
from django.db import models
from django.db.models import Q


class Room(models.Model):
    name = models.CharField(max_length=80, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="rooms_created"
    )
    created = models.DateTimeField(auto_now_add=True)
    # The room's change counter: every create, edit, delete or restore moves it forward by one.
    cursor = models.BigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def group_name(self) -> str:
        return f"room.{self.pk}"


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
    # The sender's idempotency key (PROTOCOL.md: post.client_id); empty when none was given.
    client_id = models.CharField(max_length=64, blank=True, default="")
    # The room cursor of this message's latest change.
    cursor = models.BigIntegerField(editable=False)

    class Meta:
        ordering = ["id"]
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
