"""Erase the text of messages their authors deleted more than CHAT_DELETED_TEXT_RETENTION_DAYS
ago (moderators' hides keep theirs). Safe to run at any time, as often as you like.

The container's entrypoint runs it at start and then once a day (docker/entrypoint.sh).
"""

from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from chat import services


class Command(BaseCommand):
    help = (
        "Erase the text of author-deleted messages older than CHAT_DELETED_TEXT_RETENTION_DAYS; "
        "tombstones stay, moderators' hides keep their text."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument(
            "--days",
            type=int,
            default=None,
            help="retention in days (default: CHAT_DELETED_TEXT_RETENTION_DAYS)",
        )

    def handle(self, *args, batch_size: int, days: int | None, **options) -> None:
        days = settings.CHAT_DELETED_TEXT_RETENTION_DAYS if days is None else days
        if days < 0 or batch_size < 1:
            raise CommandError("--days must be 0 or more and --batch-size at least 1.")
        older_than = timezone.now() - timedelta(days=days)
        erased = services.erase_deleted_text(older_than=older_than, batch_size=batch_size)
        self.stdout.write(
            f"purge_deleted_text: erased the text of {erased} message(s) deleted by their "
            f"authors more than {days} day(s) ago."
        )
