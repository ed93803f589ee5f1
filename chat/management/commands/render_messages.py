"""Render again the messages whose stored HTML an older renderer made (chat.rendering's
RENDERER_VERSION). Safe to run at any time; the container's entrypoint runs it at start, after
the migrations."""

from django.core.management.base import BaseCommand, CommandError

from chat import rendering, services


class Command(BaseCommand):
    help = "Re-render stored messages whose HTML an older renderer version made, in batches."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args, batch_size: int, **options) -> None:
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        done = services.render_stale_messages(batch_size=batch_size)
        self.stdout.write(
            f"render_messages: rendered {done} message(s) with renderer version "
            f"{rendering.RENDERER_VERSION}."
        )
