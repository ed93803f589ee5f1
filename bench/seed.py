"""Make the bench's users, rooms and sessions in the database our server uses.

Run with the server's settings and environment (`DATABASE_URL`, `DJANGO_SECRET_KEY`):
`python -m bench.seed --users 1005 --rooms a b c` migrates, creates the users `bench00000`, ...
and the rooms, and prints JSON with one session cookie per user.

The cookies are minted with Django's own session engine (the same rows and signed data a login
through the form writes: user id, auth backend, session auth hash), not by posting the login
form: a thousand PBKDF2 checks would take minutes on two cores and measure nothing about fan-out.
"""

import argparse
import json
import os
import sys
from datetime import timedelta
from importlib import import_module


def main() -> None:
    parser = argparse.ArgumentParser(description="create bench users, rooms and sessions")
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--rooms", nargs="+", required=True)
    parser.add_argument(
        "--spread",
        nargs="*",
        default=[],
        help="KEY:USERS: the first USERS users become members of the rooms KEY-0, KEY-1, ..., "
        "user i of room i mod their number (as the bench's sockets are spread)",
    )
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    import django

    django.setup()

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import User
    from django.contrib.sessions.models import Session
    from django.core.management import call_command
    from django.db import transaction
    from django.utils import timezone
    from django.utils.crypto import get_random_string

    from chat import services
    from chat.models import Membership, Room

    call_command("migrate", verbosity=0, interactive=False)
    store = import_module(settings.SESSION_ENGINE).SessionStore()
    backend = "django.contrib.auth.backends.ModelBackend"
    expires = timezone.now() + timedelta(seconds=settings.SESSION_COOKIE_AGE)
    names = [f"bench{i:05d}" for i in range(args.users)]
    with transaction.atomic():
        User.objects.bulk_create(
            [User(username=name, password="!bench-unusable") for name in names], batch_size=500
        )
        users = list(User.objects.filter(username__in=names).order_by("username"))
        sessions = [
            Session(
                session_key=get_random_string(32, "abcdefghijklmnopqrstuvwxyz0123456789"),
                session_data=store.encode(
                    {
                        SESSION_KEY: str(user.pk),
                        BACKEND_SESSION_KEY: backend,
                        HASH_SESSION_KEY: user.get_session_auth_hash(),
                    }
                ),
                expire_date=expires,
            )
            for user in users
        ]
        Session.objects.bulk_create(sessions, batch_size=500)
        rooms = {
            # Seeding, not a user at the form: the per-user room limit does not apply.
            name: services.create_room(
                name=f"bench {name}", created_by=users[0], enforce_limit=False
            ).slug
            for name in args.rooms
        }
        for spread in args.spread:
            key, _, count = spread.partition(":")
            spread_rooms = [name for name in args.rooms if name.startswith(f"{key}-")]
            slugs = {name: rooms[name] for name in spread_rooms}
            ids = dict(Room.objects.filter(slug__in=slugs.values()).values_list("slug", "id"))
            ordered = [ids[slugs[f"{key}-{n}"]] for n in range(len(spread_rooms))]
            Membership.objects.bulk_create(
                [
                    Membership(room_id=ordered[i % len(ordered)], user=user)
                    for i, user in enumerate(users[: int(count)])
                ],
                batch_size=1000,
                ignore_conflicts=True,
            )
    json.dump(
        {
            "cookie_name": settings.SESSION_COOKIE_NAME,
            "cookies": [s.session_key for s in sessions],
            "rooms": rooms,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
