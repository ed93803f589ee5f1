"""Wait until the database (and Redis, when the site uses it) answer, for a bounded time.

The container's entrypoint runs this first. Compose starts `web` once `db` and `redis` report
healthy, but not every engine honours that (podman-compose 1.x ignores `condition:
service_healthy`), a managed database may still be starting, and a Kubernetes pod has no such
ordering at all: without the wait, the migrations crash on the first connection and the
container restarts until the database is up.
"""

import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections

from chat import redis_connections


def _database_error(alias: str) -> str | None:
    """Why a fresh connection to the database fails, or None when it answers.

    A connection of its own, outside the server's pool: the pool would retry in the background
    and make this wait its timeout before saying anything.
    """
    base = connections[alias]
    params = {**base.settings_dict}
    options = {key: value for key, value in params.get("OPTIONS", {}).items() if key != "pool"}
    if base.vendor == "postgresql":
        options.setdefault("connect_timeout", 5)
    params["OPTIONS"] = options
    connection = type(base)(params, alias=f"{alias}-wait")
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:
        text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        return text or type(error).__name__
    finally:
        connection.close()
    return None


def _redis_error() -> str | None:
    if not redis_connections.configured():
        return None
    # A client of its own each time: with REDIS_SENTINELS this asks the sentinels afresh.
    client = redis_connections.new_sync_client(timeout=2)
    try:
        client.ping()
    except Exception as error:
        return str(error) or type(error).__name__
    finally:
        client.close()
    return None


def _redis_where() -> str:
    if settings.REDIS_SENTINELS:
        return f"REDIS_SENTINELS, primary {settings.REDIS_SENTINEL_MASTER!r}"
    return "REDIS_URL"


def _where(alias: str) -> str:
    params = connections[alias].settings_dict
    if params["ENGINE"].endswith("sqlite3"):
        return f"SQLite {params['NAME']}"
    return f"{params.get('HOST') or 'localhost'}:{params.get('PORT') or 5432}/{params['NAME']}"


class Command(BaseCommand):
    help = "Wait (at most --timeout seconds) until the database and Redis accept connections."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS)
        parser.add_argument(
            "--timeout",
            type=float,
            default=60.0,
            help="give up after this many seconds (default 60)",
        )

    def handle(self, *args, database: str, timeout: float, **options) -> None:
        deadline = time.monotonic() + timeout
        reported: dict[str, str] = {}
        while True:
            problems = {
                f"the database ({_where(database)})": _database_error(database),
                f"Redis ({_redis_where()})": _redis_error(),
            }
            problems = {name: error for name, error in problems.items() if error}
            if not problems:
                if reported:
                    self.stdout.write("wait_for_services: the database and Redis answer.")
                return
            for name, error in problems.items():
                if reported.get(name) != error:
                    self.stdout.write(f"wait_for_services: waiting for {name}: {error}")
                    self.stdout.flush()  # seen now, not when the wait is over
                    reported[name] = error
            if time.monotonic() >= deadline:
                names = " and ".join(problems)
                raise CommandError(
                    f"gave up after {timeout:g} s: {names} did not answer. Check DATABASE_URL "
                    "and REDIS_URL (or REDIS_SENTINELS), and that those servers are running and "
                    "reachable from here."
                )
            time.sleep(1)
