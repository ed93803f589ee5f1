"""Full-text search over messages (PROTOCOL.md §7) on the database the site already has.

PostgreSQL: a `search_vector` tsvector column on chat_message, made of the body in each of the
CHAT_SEARCH_CONFIGS text-search configurations (default `simple` and `english`: a word matches
as written or by its English stem), with a GIN index on (room, vector) so a query filters by
room inside the index. Queries go through `websearch_to_tsquery` (words in any order, "a phrase"
in double quotes, -word), one per configuration, OR-ed.

SQLite (the embedded default): an FTS5 table `chat_message_fts` (rowid = message id), with each
query word matched as a prefix and "a phrase" as a phrase.

Either way only live messages are indexed: the services call `index` in the transaction that
creates, edits or restores a message, and `unindex` in the one that deletes (or hides) it, so a
message is searchable exactly while its `message` frame says it is live, and an edit is found by
its new text only. System notices are never indexed. `manage.py rebuild_search_index` makes the
index again from the messages (after changing CHAT_SEARCH_CONFIGS, or to repair it).
"""

import html
import re
from dataclasses import dataclass

from django.conf import settings
from django.db import connection

from .models import Message

FTS_TABLE = "chat_message_fts"
# What the database puts around matched words in a snippet: two control characters, taken out of
# the text the snippet is cut from, so escaping the snippet leaves them for <mark> alone.
START, STOP = "\x01", "\x02"
SNIPPET_WORDS = 24


def postgres() -> bool:
    return connection.vendor == "postgresql"


def configs() -> list[str]:
    names = [name.strip() for name in settings.CHAT_SEARCH_CONFIGS.split(",") if name.strip()]
    return [name for name in names if re.fullmatch(r"[a-z_]+", name)] or ["simple"]


def _vector_sql() -> str:
    return " || ".join(f"to_tsvector('{name}', body)" for name in configs())


def _query_sql() -> str:
    return " || ".join(f"websearch_to_tsquery('{name}', %s)" for name in configs())


def searchable(message: Message) -> bool:
    return not message.system and message.deleted_at is None


# --- upkeep (in the transaction that changes the message) ----------------------------------


def index(message: Message) -> None:
    """Index a live message's current text (or drop it from the index if it is not live)."""
    if not searchable(message):
        unindex(message.pk)
        return
    with connection.cursor() as cursor:
        if postgres():
            cursor.execute(
                f"UPDATE chat_message SET search_vector = {_vector_sql()} WHERE id = %s",
                [message.pk],
            )
        else:
            cursor.execute(f"DELETE FROM {FTS_TABLE} WHERE rowid = %s", [message.pk])
            cursor.execute(
                f"INSERT INTO {FTS_TABLE} (rowid, body, room_id) VALUES (%s, %s, %s)",
                [message.pk, _without_marks(message.body), message.room_id],
            )


def _without_marks(body: str) -> str:
    return body.replace(START, "").replace(STOP, "")


def unindex(message_id: int) -> None:
    with connection.cursor() as cursor:
        if postgres():
            cursor.execute(
                "UPDATE chat_message SET search_vector = NULL WHERE id = %s", [message_id]
            )
        else:
            cursor.execute(f"DELETE FROM {FTS_TABLE} WHERE rowid = %s", [message_id])


def rebuild() -> int:
    """Index every live message again; returns how many are indexed."""
    with connection.cursor() as cursor:
        if postgres():
            cursor.execute("UPDATE chat_message SET search_vector = NULL")
            cursor.execute(
                f"UPDATE chat_message SET search_vector = {_vector_sql()} "
                "WHERE deleted_at IS NULL AND NOT system"
            )
        else:
            cursor.execute(f"DELETE FROM {FTS_TABLE}")
            cursor.execute(
                f"INSERT INTO {FTS_TABLE} (rowid, body, room_id) "
                "SELECT id, replace(replace(body, char(1), ''), char(2), ''), room_id "
                "FROM chat_message "
                "WHERE deleted_at IS NULL AND NOT system"
            )
        return cursor.rowcount


# --- queries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    message_id: int
    snippet: str  # HTML-escaped, matched words in <mark>


_TOKEN = re.compile(r'"([^"]*)"|(\S+)')
_WORD = re.compile(r"\w+")


def fts5_query(text: str) -> str:
    """The user's words as an FTS5 query: each word a prefix, "a phrase" a phrase, all of them
    required; nothing of FTS5's own syntax gets through. Empty if there is no word."""
    parts = []
    for phrase, word in _TOKEN.findall(text):
        words = _WORD.findall(phrase if phrase else word)
        if not words:
            continue
        if phrase:
            parts.append('"' + " ".join(words) + '"')
        else:
            parts.extend(f'"{w}"*' for w in words)
    return " AND ".join(parts)


def _conditions(author_id, before, after_time, until_time, has_link, has_file) -> tuple[str, list]:
    where, params = [], []
    if author_id is not None:
        where.append("m.author_id = %s")
        params.append(author_id)
    if before is not None:
        where.append("m.id < %s")
        params.append(before)
    if after_time is not None:
        where.append("m.created >= %s")
        params.append(after_time)
    if until_time is not None:
        where.append("m.created < %s")
        params.append(until_time)
    if has_link:
        where.append("m.html LIKE %s")
        params.append("%<a href=%")
    if has_file:
        where.append("EXISTS (SELECT 1 FROM chat_attachment a WHERE a.message_id = m.id)")
    return "".join(f" AND {condition}" for condition in where), params


def statement(
    text: str,
    room_ids: list[int],
    *,
    author_id: int | None = None,
    before: int | None = None,
    after_time=None,
    until_time=None,
    has_link: bool = False,
    has_file: bool = False,
    limit: int = 20,
) -> tuple[str, list] | None:
    """The SQL (and parameters) of a search in these rooms: rows of (message id, snippet),
    newest first. None when there is nothing to search (no room; SQLite: no word).

    The rooms and the query are constants in the statement, not subqueries: so PostgreSQL can
    estimate the query's matches and take them from the GIN index on (room, vector), instead
    of walking every message newest first and testing each (what it chose for a subquery)."""
    if not room_ids:
        return None
    extra, params = _conditions(author_id, before, after_time, until_time, has_link, has_file)
    if postgres():
        query = f"({_query_sql()})"
        words = [text] * len(configs())
        return (
            f"SELECT m.id, ts_headline(%s, translate(m.body, E'\\x01\\x02', ''), {query}, %s) "
            "FROM ("
            "  SELECT m.id FROM chat_message m"
            f"  WHERE m.room_id = ANY(%s) AND m.search_vector @@ {query}{extra}"
            "  ORDER BY m.id DESC LIMIT %s"
            ") found JOIN chat_message m ON m.id = found.id ORDER BY m.id DESC",
            [
                configs()[-1],
                *words,
                f"StartSel={START}, StopSel={STOP}, MaxWords={SNIPPET_WORDS}, MinWords=8, "
                "ShortWord=2, HighlightAll=false, MaxFragments=2, FragmentDelimiter= … ",
                list(room_ids),
                *words,
                *params,
                limit,
            ],
        )
    match = fts5_query(text)
    if not match:
        return None
    slots = ",".join(["%s"] * len(room_ids))
    return (
        f"SELECT m.id, snippet({FTS_TABLE}, 0, %s, %s, ' … ', 16) "
        f"FROM {FTS_TABLE} JOIN chat_message m ON m.id = {FTS_TABLE}.rowid "
        f"WHERE {FTS_TABLE} MATCH %s AND m.room_id IN ({slots}){extra} "
        f"ORDER BY {FTS_TABLE}.rowid DESC LIMIT %s",
        [START, STOP, match, *room_ids, *params, limit],
    )


def find(text: str, room_ids: list[int], **filters) -> list[Hit]:
    """The newest live messages matching `text` in these rooms, with their snippets (see
    `statement` for the filters). The caller decides the rooms (the access policy); this only
    searches."""
    query = statement(text, room_ids, **filters)
    if query is None:
        return []
    with connection.cursor() as cursor:
        cursor.execute(*query)
        return [Hit(row[0], marked(row[1])) for row in cursor.fetchall()]


def marked(snippet: str) -> str:
    """A snippet from the database as HTML: escaped, its matched words in <mark>."""
    escaped = html.escape(snippet, quote=False)
    return escaped.replace(START, "<mark>").replace(STOP, "</mark>")
