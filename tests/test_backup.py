"""`make backup` and `make restore` (deploy/backup.sh, deploy/restore.sh) on a real PostgreSQL.

A chat is stored through a real server, dumped, restored into a fresh database, and a server on
that database serves the same history to the same user, who can go on chatting.
"""

import asyncio
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, Daphne, need
from tests.pg import PG_BIN, PostgresCluster, manage, running
from tests.webclient import Browser
from tests.wsclient import Client

PASSWORD = "Backup-Secret-Pass-123"


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    with running() as cluster:
        yield cluster


def make(*args: str, **env: str) -> subprocess.CompletedProcess:
    # This machine's PostgreSQL 15 client tools first, as on a Debian host with the server.
    path = f"{PG_BIN}:{Path(sys.executable).parent}:{os.environ['PATH']}"
    return subprocess.run(
        ["make", "-s", *args],
        cwd=ROOT,
        env={**os.environ, "PATH": path, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def serve(redis_url: str, database_url: str) -> Daphne:
    server = Daphne(redis_url, DATABASE_URL=database_url)
    server.start()
    return server


async def chat(server: Daphne, posts: list[str]) -> list[str]:
    """Log in as omkar, post `posts` in the room `kept`; the bodies the room then holds."""
    browser = Browser(server.url)
    await asyncio.to_thread(browser.log_in, "omkar", PASSWORD)
    client = await Client.open(server.url, browser.session, "kept")
    try:
        for n, body in enumerate(posts):
            await client.send({"type": "post", "body": body, "client_id": f"p{n}-{uuid.uuid4()}"})
            frame = await client.receive_type("message")
            assert frame["message"]["body"] == body
    finally:
        await client.close()
    client = await Client.open(server.url, browser.session, "kept")
    await client.close()
    return [message["body"] for message in client.ready["messages"]]


async def test_a_backup_restored_into_a_fresh_database_serves_the_same_history(
    cluster: PostgresCluster, redis_server, static_files, tmp_path: Path
):
    need(str(PG_BIN / "pg_dump"), "postgresql-client")
    original = cluster.create_database(f"live_{uuid.uuid4().hex[:6]}")
    manage(original, "migrate", "--noinput")
    manage(
        original,
        "shell",
        "-c",
        "from django.contrib.auth.models import User; from chat import services; "
        f"u = User.objects.create_user('omkar', password='{PASSWORD}'); "
        "services.create_room(name='Kept', created_by=u)",
    )
    server = serve(redis_server.url, original)
    try:
        before = await chat(server, ["Id1 before the backup", "How are you"])
    finally:
        server.stop()
    assert before == ["Id1 before the backup", "How are you"]

    backups = tmp_path / "backups"
    result = make("backup", DATABASE_URL=original, BACKUP_DIR=str(backups))
    assert result.returncode == 0, result.stderr
    (dump,) = backups.iterdir()
    assert result.stdout.strip() == str(dump)
    assert dump.name.startswith("chat-") and dump.suffix == ".dump"
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600  # a dump holds every message

    fresh = cluster.create_database(f"restored_{uuid.uuid4().hex[:6]}")
    result = make("restore", f"FILE={dump}", DATABASE_URL=fresh)
    assert result.returncode == 0, result.stderr
    assert f"restored {dump}" in result.stdout

    server = serve(redis_server.url, fresh)
    try:
        after = await chat(server, ["and after the restore"])
    finally:
        server.stop()
    assert after == [*before, "and after the restore"]


def test_restore_without_a_file_says_how_and_changes_nothing():
    result = make("restore", "FILE=backups/no-such.dump")
    assert result.returncode != 0
    assert "usage: make restore FILE=" in result.stderr
