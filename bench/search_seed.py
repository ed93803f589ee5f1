"""The search bench's database side (bench/search.py runs it with the server's environment).

`seed`: migrate, then 1,000 private rooms, 100 authors and a reader who belongs to 50 of the
rooms, and the messages (written with COPY, not one post at a time): bodies of 4 to 30 words
drawn from a Zipf distribution over an English-like vocabulary, spread over 90 days; then the
search index built once (index dropped, vectors computed, index made again). Prints JSON: the
reader's session cookie, query words by frequency band, phrases from real messages, timings.

`posting`: posts through services.post_message in a room of the seeded table, alternating
blocks with the index kept and with its upkeep skipped; prints posts/s each way.

`explain QUERY`: EXPLAIN (ANALYZE, BUFFERS) of the reader's search for QUERY, as the API runs it.
"""

import argparse
import io
import json
import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from importlib import import_module

SYLLABLES = (
    "ka ro mi ten sa lo ver dan pre con ex in al te ri on us ma de ly ing ed er ti ca po ne "
    "bu ra sto gra fe li mo ta vi ne ol an ur em ap ob sub tra per"
).split()
COMMON = (
    "the a to and of is in it you that for on this i we be with have are not but at was can "
    "deploy release build test fix bug issue merge branch review server database query cache "
    "meeting lunch today tomorrow friday monday week please thanks sorry great good idea plan "
    "customer ticket report error crash log metric alert page slow fast link doc design api"
).split()


def vocabulary(size: int, rng: random.Random) -> list[str]:
    words = list(dict.fromkeys(COMMON))
    seen = set(words)
    while len(words) < size:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 2, 3, 3, 4))))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    import django

    django.setup()


def reader_cookie(user) -> str:
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.save()
    return store.session_key


def seed(messages: int, rooms: int, member_of: int, seed_value: int) -> dict:
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection

    from chat import rendering, search
    from chat.models import Membership, Room

    timings = {}
    started = time.monotonic()
    call_command("migrate", verbosity=0, interactive=False)
    rng = random.Random(seed_value)
    words = vocabulary(30_000, rng)
    weights = [1 / (rank + 1) ** 1.07 for rank in range(len(words))]
    authors = User.objects.bulk_create(
        [User(username=f"author{n:03d}", password="!") for n in range(100)]
    )
    reader = User.objects.create(username="reader", password="!")
    room_rows = Room.objects.bulk_create(
        [
            Room(name=f"search {n}", slug=f"search-{n}", kind=Room.Kind.PRIVATE, created_by=reader)
            for n in range(rooms)
        ]
    )
    Membership.objects.bulk_create(
        [Membership(room=room, user=reader) for room in room_rows[:member_of]]
        + [Membership(room=room, user=rng.choice(authors)) for room in room_rows]
    )
    timings["users_rooms_s"] = round(time.monotonic() - started, 1)

    started = time.monotonic()
    lengths = [rng.randint(4, 30) for _ in range(messages)]
    drawn = rng.choices(words, cum_weights=_cumulative(weights), k=sum(lengths))
    cursors = [0] * rooms
    start = datetime.now(UTC) - timedelta(days=90)
    step = timedelta(days=90) / messages
    buffer = io.StringIO()
    position = 0
    phrases = []
    for n, length in enumerate(lengths):
        body = " ".join(drawn[position : position + length])
        position += length
        room_index = rng.randrange(rooms)
        cursors[room_index] += 1
        author = authors[rng.randrange(len(authors))]
        created = (start + step * n).isoformat()
        buffer.write(
            f"{room_rows[room_index].pk}\t{author.pk}\t{body}\t{created}\tf\t<p>{body}</p>\t"
            f"{rendering.RENDERER_VERSION}\t[]\t\t{cursors[room_index]}\n"
        )
        if room_index < member_of and len(phrases) < 400 and rng.random() < 0.01:
            at = rng.randrange(length - 1)
            phrases.append(" ".join(body.split()[at : at + 2]))
    timings["generate_s"] = round(time.monotonic() - started, 1)

    started = time.monotonic()
    raw = connection.connection
    with raw.cursor() as cursor:
        cursor.execute("DROP INDEX IF EXISTS chat_message_search")
        with cursor.copy(
            "COPY chat_message (room_id, author_id, body, created, system, html, html_version,"
            " mentions, client_id, cursor) FROM STDIN"
        ) as copy:
            copy.write(buffer.getvalue())
    for room, cursor_value in zip(room_rows, cursors, strict=True):
        Room.objects.filter(pk=room.pk).update(cursor=cursor_value)
    timings["copy_s"] = round(time.monotonic() - started, 1)

    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE chat_message SET search_vector = {search._vector_sql()} "
            "WHERE deleted_at IS NULL AND NOT system"
        )
        timings["vectors_s"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        cursor.execute(
            "CREATE INDEX chat_message_search ON chat_message USING gin (room_id, search_vector)"
        )
        cursor.execute("VACUUM ANALYZE chat_message")
    timings["index_s"] = round(time.monotonic() - started, 1)

    bands = {
        "common": words[20:200],
        "middle": words[200:3000],
        "rare": words[3000:20000],
    }
    from django.conf import settings

    return {
        "cookie": reader_cookie(reader),
        "cookie_name": settings.SESSION_COOKIE_NAME,
        "words": {band: rng.sample(pool, min(len(pool), 400)) for band, pool in bands.items()},
        "phrases": phrases,
        "messages": messages,
        "rooms": rooms,
        "member_of": member_of,
        "timings": timings,
    }


def _cumulative(weights: list[float]) -> list[float]:
    total, out = 0.0, []
    for weight in weights:
        total += weight
        out.append(total)
    return out


def posting(rounds: int, per_round: int) -> dict:
    from django.contrib.auth.models import User

    from chat import search, services
    from chat.models import Room

    author = User.objects.create(username=f"poster{os.getpid()}", password="!")
    room = services.create_room(name=f"posting {os.getpid()}", created_by=author)
    index, unindex = search.index, search.unindex
    rng = random.Random(7)
    words = vocabulary(5000, rng)
    seconds = {"with_index": 0.0, "without_index": 0.0}
    for round_number in range(rounds * 2):
        keep = round_number % 2 == 0
        search.index = index if keep else (lambda message: None)
        search.unindex = unindex if keep else (lambda message_id: None)
        started = time.perf_counter()
        for _ in range(per_round):
            body = " ".join(rng.choices(words, k=rng.randint(4, 30)))
            services.post_message(room=Room.objects.get(pk=room.pk), author=author, body=body)
        seconds["with_index" if keep else "without_index"] += time.perf_counter() - started
    search.index, search.unindex = index, unindex
    posts = rounds * per_round
    result = {key: round(posts / value, 1) for key, value in seconds.items()}
    result["posts_each_way"] = posts
    result["slowdown_percent"] = round(
        100 * (seconds["with_index"] / seconds["without_index"] - 1), 1
    )
    return result


def explain(query: str) -> str:
    from django.contrib.auth.models import User
    from django.db import connection

    from chat import policy, search

    reader = User.objects.get(username="reader")
    rooms = list(policy.readable_rooms(reader).order_by().values_list("id", flat=True))
    sql, params = search.statement(query, rooms, limit=21)
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    seeding = sub.add_parser("seed")
    seeding.add_argument("--messages", type=int, default=1_000_000)
    seeding.add_argument("--rooms", type=int, default=1000)
    seeding.add_argument("--member-of", type=int, default=50)
    seeding.add_argument("--seed", type=int, default=18)
    posts = sub.add_parser("posting")
    posts.add_argument("--rounds", type=int, default=5)
    posts.add_argument("--per-round", type=int, default=200)
    explaining = sub.add_parser("explain")
    explaining.add_argument("query")
    args = parser.parse_args()
    setup()
    if args.command == "seed":
        out = seed(args.messages, args.rooms, args.member_of, args.seed)
    elif args.command == "posting":
        out = posting(args.rounds, args.per_round)
    else:
        out = {"plan": explain(args.query)}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
