"""The search index (PROTOCOL.md §7, chat/search.py), made for the database in use.

PostgreSQL: a `search_vector` tsvector column on chat_message and a GIN index on (room_id,
search_vector) (btree_gin, a trusted extension; without it, on the vector alone). SQLite: an
FTS5 table. Existing live messages are indexed. The column is not on the model: only chat.search
reads and writes it.
"""

from django.db import migrations, transaction


def create(apps, schema_editor):
    from chat import search

    with schema_editor.connection.cursor() as cursor:
        if schema_editor.connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE chat_message ADD COLUMN search_vector tsvector")
            try:
                with transaction.atomic():
                    cursor.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
                    cursor.execute(
                        "CREATE INDEX chat_message_search ON chat_message "
                        "USING gin (room_id, search_vector)"
                    )
            except Exception:
                cursor.execute(
                    "CREATE INDEX chat_message_search ON chat_message USING gin (search_vector)"
                )
        else:
            cursor.execute(
                f"CREATE VIRTUAL TABLE {search.FTS_TABLE} USING fts5(body, room_id UNINDEXED)"
            )
    search.rebuild()


def drop(apps, schema_editor):
    from chat import search

    with schema_editor.connection.cursor() as cursor:
        if schema_editor.connection.vendor == "postgresql":
            cursor.execute("DROP INDEX IF EXISTS chat_message_search")
            cursor.execute("ALTER TABLE chat_message DROP COLUMN IF EXISTS search_vector")
        else:
            cursor.execute(f"DROP TABLE IF EXISTS {search.FTS_TABLE}")


class Migration(migrations.Migration):
    dependencies = [("chat", "0012_inbox")]

    operations = [migrations.RunPython(create, drop)]
