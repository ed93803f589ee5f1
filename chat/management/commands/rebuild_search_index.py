"""Make the search index (chat/search.py) again from the messages: after changing
CHAT_SEARCH_CONFIGS, or to repair an index. One statement each way, in one transaction: searches
go on meanwhile and see the old index until it commits."""

from django.core.management.base import BaseCommand

from chat import services


class Command(BaseCommand):
    help = "Index every live message again for search (PROTOCOL.md §7)."

    def handle(self, *args, **options) -> None:
        indexed = services.rebuild_search_index()
        self.stdout.write(f"rebuild_search_index: {indexed} message(s) indexed.")
