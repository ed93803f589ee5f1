"""Erase uploads never attached to a message, made more than CHAT_UPLOAD_MAX_AGE_HOURS ago
(PROTOCOL.md §8: 24 hours). Safe to run at any time, as often as you like.

The container's entrypoint runs it at start and then every CHAT_UPLOAD_PURGE_INTERVAL seconds
(an hour; docker/entrypoint.sh).
"""

from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from chat import services


class Command(BaseCommand):
    help = "Erase uploads never attached to a message older than CHAT_UPLOAD_MAX_AGE_HOURS."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--hours",
            type=float,
            default=None,
            help="age in hours (default: CHAT_UPLOAD_MAX_AGE_HOURS)",
        )

    def handle(self, *args, hours: float | None, **options) -> None:
        hours = settings.CHAT_UPLOAD_MAX_AGE_HOURS if hours is None else hours
        if hours < 0:
            raise CommandError("--hours must be 0 or more.")
        erased = services.purge_uploads(older_than=timezone.now() - timedelta(hours=hours))
        self.stdout.write(
            f"purge_uploads: erased {erased} upload(s) never attached, "
            f"older than {hours:g} hour(s)."
        )
