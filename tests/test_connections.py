"""Database connections: a server process holds a bounded number, whatever the traffic (issue 14).

Under daphne every HTTP request runs in a thread of its own. With persistent connections each of
those threads left its connection open until the garbage collector found it: 300 anonymous
requests in 2.5 s held 97 of PostgreSQL's 100 connections, and after that every request, from
anyone, failed. The pool (chatsite/settings.py) bounds them per process.

These tests run the real server on a PostgreSQL of their own, with few connections to spare, so
that a leak shows as refused connections and 5xx answers.
"""

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tests.conftest import ROOT, Daphne
from tests.pg import PostgresCluster, manage, running
from tests.webclient import Browser
from tests.wsclient import Client

# What the server may hold at most: its pool. PostgreSQL gets a few more than that and no more,
# so a server that leaks runs PostgreSQL out of connections within the burst.
POOL = 6
MAX_CONNECTIONS = 30
APPLICATION = "chat-burst"
PASSWORD = "Burst-Secret-Pass-123"


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    with running(max_connections=MAX_CONNECTIONS) as cluster:
        yield cluster


@pytest.fixture
def server(cluster: PostgresCluster, redis_server, static_files) -> Iterator[Daphne]:
    """One server process on a fresh database (migrated, with the user `burst`)."""
    database = cluster.create_database(f"burst_{uuid.uuid4().hex[:8]}")
    url = f"{database}?application_name={APPLICATION}"
    manage(database, "migrate", "--noinput")
    manage(
        database,
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        f"User.objects.create_user('burst', password='{PASSWORD}')",
    )
    daphne = Daphne(
        redis_server.url,
        DATABASE_URL=url,
        DATABASE_POOL_MAX_SIZE=str(POOL),
        DJANGO_LOG_LEVEL="INFO",
    )
    daphne.start()
    try:
        yield daphne
    finally:
        daphne.stop()
        os.unlink(daphne.log.name)


def anonymous_get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


class ConnectionWatch:
    """Samples how many connections the server holds (its application_name), until stopped."""

    def __init__(self, cluster: PostgresCluster) -> None:
        self.url = cluster.url()
        self.peak = 0
        self.samples = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as connection:
            while not self.stopped.is_set():
                (count,) = connection.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                    [APPLICATION],
                ).fetchone()
                self.peak = max(self.peak, count)
                self.samples += 1
                time.sleep(0.01)

    def __enter__(self) -> "ConnectionWatch":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(10)


async def chat_during(server: Daphne, cookie: str, slug: str, stop: asyncio.Event) -> list[str]:
    """Post a message every 0.6 s (within the rate limit) until `stop`; the texts heard back."""
    client = await Client.open(server.url, cookie, slug)
    sent, heard = [], []
    try:
        while not stop.is_set():
            body = f"during the burst {len(sent)}"
            await client.send({"type": "post", "body": body, "client_id": f"b{len(sent)}"})
            sent.append(body)
            frame = await client.receive_type("message", "error", timeout=30)
            assert frame["type"] == "message", frame
            heard.append(frame["message"]["body"])
            await asyncio.sleep(0.6)
    finally:
        await client.close()
    assert heard == sent
    return heard


async def test_a_burst_of_requests_holds_no_more_connections_than_the_pool(
    server: Daphne, cluster: PostgresCluster
):
    """500 anonymous requests and 100 logged-in page loads and room creations, at 40 at once,
    while a chat goes on: no 5xx, the chat loses nothing, the connections stay within the pool."""
    user = Browser(server.url)
    user.log_in("burst", PASSWORD)
    assert user.post("/rooms/", name="Burst room") == 302
    cookie = user.session

    anonymous = [f"{server.url}/healthz"] * 400 + [f"{server.url}/accounts/login/"] * 100
    pages = ["/", "/rooms/burst-room/"] * 40
    creations = [f"Burst room {n}" for n in range(20)]

    def burst() -> Counter:
        statuses: Counter = Counter()
        with ThreadPoolExecutor(max_workers=40) as pool:
            futures = [pool.submit(anonymous_get, url) for url in anonymous]
            futures += [pool.submit(user.get, path) for path in pages]
            futures += [pool.submit(user.post, "/rooms/", name=name) for name in creations]
            for future in futures:
                statuses[future.result()] += 1
        return statuses

    stop = asyncio.Event()
    with ConnectionWatch(cluster) as watch:
        chat = asyncio.create_task(chat_during(server, cookie, "burst-room", stop))
        statuses = await asyncio.to_thread(burst)
        stop.set()
        heard = await chat

    assert sum(statuses.values()) == 600
    errors = {status: n for status, n in statuses.items() if status >= 500}
    assert not errors, f"5xx answers: {errors}; all: {statuses}\n{server.output()[-3000:]}"
    assert heard, "the chat sent nothing during the burst"
    assert watch.samples > 10
    assert 0 < watch.peak <= POOL, f"{watch.peak} connections held (pool: {POOL})"
    # And the site still answers everyone afterwards.
    assert anonymous_get(f"{server.url}/healthz") == 200
    assert user.get("/") == 200


def test_the_pool_bounds_connections_on_postgresql_only(settings_module_env):
    """The pool is PostgreSQL's: SQLite keeps one connection per request, as it must."""
    postgres = settings_module_env(DATABASE_URL="postgres://u:p@127.0.0.1:5432/db")
    assert postgres["OPTIONS"]["pool"]["max_size"] == 10
    assert postgres["CONN_MAX_AGE"] == 0
    sized = settings_module_env(
        DATABASE_URL="postgres://u:p@127.0.0.1:5432/db", DATABASE_POOL_MAX_SIZE="3"
    )
    assert sized["OPTIONS"]["pool"]["max_size"] == 3
    off = settings_module_env(
        DATABASE_URL="postgres://u:p@127.0.0.1:5432/db", DATABASE_POOL_MAX_SIZE="0"
    )
    assert "pool" not in off.get("OPTIONS", {}) and off["CONN_MAX_AGE"] == 0
    sqlite = settings_module_env(DATABASE_URL="sqlite:////tmp/x.sqlite3")
    assert "pool" not in sqlite["OPTIONS"] and sqlite["CONN_MAX_AGE"] == 0


@pytest.fixture
def settings_module_env():
    """The DATABASES["default"] that chatsite/settings.py builds under an environment."""

    def load(**env: str) -> dict:
        code = (
            "import json, chatsite.settings as s; "
            "print(json.dumps(s.DATABASES['default'], default=str))"
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**os.environ, "DJANGO_SECRET_KEY": "x", "DJANGO_DEBUG": "0", **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    return load
