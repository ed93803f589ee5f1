"""Shared test set-up: a real Redis server, logged-in WebSocket clients, daphne subprocesses."""

import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from django.conf import settings
from django.test.utils import override_settings

# The process helpers the bench uses too: one copy of each.
from bench.servers import free_port, redis_command, wait_for_healthz

ROOT = Path(__file__).resolve().parent.parent


def pytest_sessionstart(session) -> None:
    # A crashed run with the same pid may have left SQLite side files beside the test database.
    name = settings.DATABASES["default"].get("TEST", {}).get("NAME")
    if name and settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        for suffix in ("-wal", "-shm", "-journal"):
            Path(f"{name}{suffix}").unlink(missing_ok=True)


def need(binary: str, package: str) -> str:
    path = shutil.which(binary) or (
        f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None
    )
    if path is None:
        pytest.fail(
            f"`{binary}` is not installed: install Debian's `{package}` package "
            f"(apt-get install {package}); these tests use the real thing and do not skip."
        )
    return path


class RedisServer:
    """A throw-away redis-server on a free loopback port, restartable mid-test."""

    def __init__(self) -> None:
        self.binary = need("redis-server", "redis-server")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="chat-redis-")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            redis_command(self.binary, self.port, self.dir),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def restart(self) -> None:
        """Stop and start again: without persistence, every group and key is gone."""
        self.stop()
        self.start()

    def flush(self) -> None:
        client = redis.Redis(port=self.port)
        client.flushall()
        client.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture(autouse=True, scope="session")
def _redis_channel_layer(redis_server: RedisServer) -> Iterator[None]:
    """Every test runs on the Redis channel layer and Redis shared state, never in memory."""
    layers = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                **settings.CHANNEL_LAYERS["default"].get("CONFIG", {}),
                "hosts": [redis_server.url],
            }
            if "redis" in settings.CHANNEL_LAYERS["default"]["BACKEND"]
            else {"hosts": [redis_server.url], "capacity": 5000, "expiry": 30},
        }
    }
    # In-process page tests render templates without a collectstatic manifest. Attachments land
    # in a directory of this run's (server subprocesses too), never in the project's media/.
    media = tempfile.mkdtemp(prefix="chat-media-")
    storages = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        "attachments": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": media, "base_url": None},
        },
    }
    with (
        override_settings(
            REDIS_URL=redis_server.url,
            CHANNEL_LAYERS=layers,
            STORAGES=storages,
            CHAT_MEDIA_ROOT=media,
        ),
        settings_env(CHAT_MEDIA_ROOT=media),
    ):
        yield
    shutil.rmtree(media, ignore_errors=True)


@pytest.fixture(autouse=True)
def _clean_redis(redis_server: RedisServer) -> None:
    """Empty Redis, and drop layer instances bound to an earlier test's event loop."""
    from channels.layers import channel_layers

    redis_server.flush()
    channel_layers.backends.clear()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix) -> None:
    """PostgreSQL, as SQLite is set up in settings: one test database per run (test_<name>_<pid>),
    so two runs on one cluster never drop each other's; and no persistent connections, so the
    threads of database_sync_to_async hold none open when the test database is dropped."""
    params = settings.DATABASES["default"]
    if not params["ENGINE"].endswith("sqlite3"):
        params["CONN_MAX_AGE"] = 0
        if not params.get("TEST", {}).get("NAME"):
            params.setdefault("TEST", {})["NAME"] = f"test_{params['NAME']}_{os.getpid()}"


def database_url() -> str:
    """The test database as a DATABASE_URL, for server subprocesses to share it."""
    from django.db import connection

    params = connection.settings_dict
    if params["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{params['NAME']}"
    # Quoted: a password may hold `@`, `/` or `:`, and a host may be a socket directory.
    user = quote(params.get("USER") or "", safe="")
    password = f":{quote(params['PASSWORD'], safe='')}" if params.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = quote(params.get("HOST") or "localhost", safe="")
    port = f":{params['PORT']}" if params.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{quote(params['NAME'], safe='')}"


class Daphne:
    """A real daphne server process on a free port, sharing the test database and Redis."""

    def __init__(self, redis_url: str, port: int | None = None, **extra_env: str) -> None:
        self.port = port or free_port()
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "chatsite.settings",
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": settings.SECRET_KEY,
            "DATABASE_URL": database_url(),
            "REDIS_URL": redis_url,
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DJANGO_LOG_LEVEL": "WARNING",
            **extra_env,
        }
        self.process: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="daphne-", suffix=".log", delete=False)
        # More daphne options (`--proxy-headers`, as the image runs it behind nginx).
        self.extra_args: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                # As deployed (chatsite/serve.py): a frame over 2 MiB closes the socket (1009)
                # before Django sees it; the consumer answers anything over 64 KiB `too_long`.
                "-m",
                "chatsite.serve",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                *self.extra_args,
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for_healthz(self.url, self.process, self.output, "daphne")

    def stop(self, kill: bool = False) -> None:
        if self.process is not None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")


@pytest.fixture(scope="session")
def static_files() -> dict[str, str]:
    """Collect static files once, as the daphne subprocesses (DEBUG off) serve STATIC_ROOT."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        pytest.fail(f"collectstatic failed:\n{result.stdout}\n{result.stderr}")
    static_root = Path(settings.STATIC_ROOT)
    for name in ("chat/room.js", "chat/chat.css"):
        assert filecmp.cmp(ROOT / "chat/static" / name, static_root / name, shallow=False), (
            f"{static_root / name} is not a fresh copy of the source"
        )
    return json.loads((static_root / "staticfiles.json").read_text())["paths"]


@pytest.fixture
def daphne_factory(redis_server: RedisServer, transactional_db, static_files) -> Iterator:
    started: list[Daphne] = []

    def start(*, args: list[str] | None = None, **env: str) -> Daphne:
        server = Daphne(redis_server.url, **env)
        server.extra_args = list(args or [])
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        os.unlink(server.log.name)


@contextmanager
def settings_env(**values: str) -> Iterator[None]:
    old = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --- WebSocket tests in this process (channels' WebsocketCommunicator) -----------------------


@pytest.fixture
async def sockets_closed():
    """Close what a test (a failed one too) left open, so its event loop can end."""
    from tests.helpers import close_all

    yield
    await close_all()


@pytest.fixture
async def alice():
    from tests.helpers import make_user

    return await make_user("alice")


@pytest.fixture
async def bob():
    from tests.helpers import make_user

    return await make_user("bob")


@pytest.fixture
async def room(alice):
    from tests.helpers import make_room

    return await make_room("General Chat", alice)
