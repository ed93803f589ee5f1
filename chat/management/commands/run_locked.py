"""Run another management command while holding a lock shared by every server process.

Replicas started together (`docker compose up --scale web=3`) each run the entrypoint: on
PostgreSQL they take turns, so one applies the migrations and creates the admin and the others
find nothing left to do instead of racing to create the same tables and rows.
"""

import argparse

from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import DEFAULT_DB_ALIAS, connections

# A PostgreSQL advisory lock id of our own ("chat" in ASCII).
LOCK_ID = 0x63686174


class Command(BaseCommand):
    help = "Run a management command under a database-wide lock: run_locked migrate --noinput"

    def add_arguments(self, parser) -> None:
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS)
        parser.add_argument("command", help="the management command to run")
        parser.add_argument("arguments", nargs=argparse.REMAINDER)

    def handle(self, *args, database: str, command: str, arguments: list[str], **options):
        connection = connections[database]
        if connection.vendor != "postgresql":
            call_command(command, *arguments)
            return
        # Its own connection: the command may close the default one, which would drop the lock.
        holder = connection.copy()
        try:
            with holder.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_ID])
                if not cursor.fetchone()[0]:
                    self.stdout.write(
                        f"run_locked: waiting for another process to finish {command}"
                    )
                    cursor.execute("SELECT pg_advisory_lock(%s)", [LOCK_ID])
                try:
                    call_command(command, *arguments)
                finally:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_ID])
        finally:
            holder.close()
