"""Write the reaction picker's names (chat/static/chat/emoji.json) from the `emoji` package."""

from pathlib import Path

from django.core.management.base import BaseCommand

from chat.reactions import picker_json

TARGET = Path(__file__).resolve().parents[2] / "static" / "chat" / "emoji.json"


class Command(BaseCommand):
    help = "Write chat/static/chat/emoji.json (the reaction picker's names) from the emoji package."

    def handle(self, *args, **options) -> None:
        TARGET.write_text(picker_json() + "\n", encoding="utf-8")
        self.stdout.write(f"wrote {TARGET}")
