"""A throw-away PostgreSQL 15 server for tests that need one of their own (Debian's binaries)."""

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

from tests.conftest import ROOT, free_port, need

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PostgresCluster:
    """A throw-away PostgreSQL 15 (Debian's binaries) in a temp directory on a free port."""

    def __init__(self) -> None:
        self.initdb = need(str(PG_BIN / "initdb"), "postgresql")
        self.postgres = need(str(PG_BIN / "postgres"), "postgresql")
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self.dir = Path(tempfile.mkdtemp(prefix="chat-postgres-"))
        self.process: subprocess.Popen | None = None
        # PostgreSQL refuses to run as root: as root, run it as Debian's `postgres` user.
        self.user = None
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("no `postgres` user: install Debian's `postgresql` package")
            self.user = "postgres"
            os.chown(self.dir, account.pw_uid, account.pw_gid)

    def url(self, database: str = "postgres") -> str:
        return f"postgres://chat:{self.password}@127.0.0.1:{self.port}/{database}"

    def start(self, **server_settings: object) -> None:
        """Start the server; `server_settings` are postgres `-c` options (max_connections=30)."""
        password_file = self.dir / "password"
        password_file.write_text(self.password)
        if self.user:
            shutil.chown(password_file, self.user)
        subprocess.run(
            [
                self.initdb,
                "--pgdata",
                str(self.dir / "data"),
                "--username",
                "chat",
                f"--pwfile={password_file}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
            ],
            user=self.user,
            check=True,
            capture_output=True,
            timeout=120,
        )
        self.log = open(self.dir / "postgres.log", "wb")  # closed in stop()
        self.process = subprocess.Popen(
            [
                self.postgres,
                "-D",
                str(self.dir / "data"),
                "-p",
                str(self.port),
                "-k",
                str(self.dir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                *(f"-c{name}={value}" for name, value in server_settings.items()),
            ],
            user=self.user,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                assert self.process.poll() is None, (self.dir / "postgres.log").read_text()
                assert time.monotonic() < deadline, "postgres did not start"
                time.sleep(0.1)

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def query(self, database: str, sql: str) -> list[tuple]:
        with psycopg.connect(self.url(database)) as connection:
            return connection.execute(sql).fetchall()

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown
            self.process.wait(30)
            self.process = None
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def running(**server_settings: object) -> Iterator[PostgresCluster]:
    """A cluster started with `server_settings` for the block, stopped and removed after."""
    cluster = PostgresCluster()
    try:
        cluster.start(**server_settings)
        yield cluster
    finally:
        cluster.stop()


def manage(database_url: str, *args: str) -> str:
    """Run a management command against `database_url` (as the production settings would);
    its output. Fails the test with the output if the command fails."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "DJANGO_DEBUG": "0",
        "DATABASE_URL": database_url,
    }
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout
