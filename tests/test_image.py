"""The Docker image itself, built from the repository's Dockerfile and run (issue 22).

No Docker engine runs on these machines, but podman does: the image is built with podman on a
stand-in `python:3.11-slim` made from Debian's packages (docker/standin/python-base.sh), in
Docker's format (the OCI format drops HEALTHCHECK). The container runs on the host's network
against a PostgreSQL 15 of this test's own and the suite's Redis, and is checked as a person
would: health, migrations, the admin account, logging in, static files, a WebSocket post, the
non-root user and code it cannot rewrite. Building takes a few minutes the first time (the
stand-in base); the image is built once per run.
"""

import asyncio
import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.conf import settings

from tests.conftest import ROOT, free_port
from tests.pg import PostgresCluster, running
from tests.podman import build_standins, podman, require
from tests.webclient import Browser
from tests.wsclient import Client

IMAGE = "localhost/chatsite:test"
ADMIN_PASSWORD = "Image-Admin-Pass-7"


@pytest.fixture(scope="module")
def image() -> str:
    require()
    build_standins("python-base")
    podman("build", "--format", "docker", "--tag", IMAGE, ".", timeout=1200)
    return IMAGE


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    with running() as cluster:
        yield cluster


@dataclass
class Container:
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def exec(self, *command: str) -> subprocess.CompletedProcess:
        return podman("exec", self.name, *command, check=False)

    def healthy(self) -> bool:
        return podman("healthcheck", "run", self.name, check=False).returncode == 0


@pytest.fixture(scope="module")
def container(image: str, cluster: PostgresCluster, redis_server) -> Iterator[Container]:
    database = cluster.create_database(f"image_{uuid.uuid4().hex[:8]}")
    port = free_port()
    name = f"chat-image-{uuid.uuid4().hex[:8]}"
    env = {
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "DATABASE_URL": database,
        "REDIS_URL": redis_server.url,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SUPERUSER_USERNAME": "admin",
        "DJANGO_SUPERUSER_EMAIL": "admin@example.com",
        "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD,
        # The health check asks this port: the command below serves on it, not on 8000.
        "PORT": str(port),
    }
    # The host's network, so the container reaches this test's loopback PostgreSQL and Redis and
    # nothing else; the image's command on a free loopback port instead of 0.0.0.0:8000.
    podman(
        "run",
        "--detach",
        "--name",
        name,
        "--network",
        "host",
        *(f"--env={key}={value}" for key, value in env.items()),
        image,
        *image_command(port),
    )
    running = Container(name, port)
    try:
        deadline = time.monotonic() + 120
        while not running.healthy():
            state = podman("inspect", "--format", "{{.State.Status}}", name, check=False)
            assert state.stdout.strip() == "running", f"container stopped:\n{running.logs()}"
            assert time.monotonic() < deadline, f"never healthy:\n{running.logs()}"
            time.sleep(0.5)
        yield running
    finally:
        podman("rm", "--force", "--time", "5", name, check=False)


def image_command(port: int) -> list[str]:
    """The Dockerfile's CMD, on a loopback port."""
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    (cmd,) = re.findall(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    replace = {"0.0.0.0": "127.0.0.1", "8000": str(port)}
    return [replace.get(word, word) for word in json.loads(cmd)]


def test_the_image_runs_the_site_as_deployed(container: Container, cluster: PostgresCluster):
    database = container_database(container)

    # Migrations ran at start, and the admin account exists.
    assert (
        cluster.query(database, "SELECT count(*) FROM django_migrations WHERE app = 'chat'")[0][0]
        > 0
    )
    assert cluster.query(
        database, "SELECT is_superuser, is_staff FROM auth_user WHERE username = 'admin'"
    ) == [(True, True)]

    # Logging in as that admin, through the admin's login form.
    browser = Browser(container.url)
    status, _, _ = browser.request("/admin/login/")
    assert status == 200
    status, headers, _ = browser.request(
        "/admin/login/?next=/admin/", {"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert (status, headers.get("Location")) == (302, "/admin/"), headers
    status, _, body = browser.request("/admin/")
    assert status == 200 and b"Site administration" in body

    # Static files, collected at build and served with their hashed names.
    status, _, page = browser.request("/")
    assert status == 200
    assets = re.findall(rb'(?:src|href)="(/static/[^"]+\.(?:js|css))"', page)
    assert assets, page[:2000]
    for asset in assets:
        status, headers, body = browser.request(asset.decode())
        assert status == 200 and body, asset
        assert "max-age=315360000" in headers.get("Cache-Control", ""), (asset, headers)

    # A room made through the lobby form, and a message posted over the WebSocket is stored.
    status, headers, _ = browser.request("/rooms/", {"name": "From the image"})
    assert (status, headers.get("Location")) == (302, "/rooms/from-the-image/")
    session = browser.session
    frame = asyncio.run(post_once(container.url, session, "from-the-image", "hello from podman"))
    assert frame["message"]["body"] == "hello from podman"
    assert cluster.query(database, "SELECT body FROM chat_message") == [("hello from podman",)]

    # JSON log lines on stdout, the WebSocket's among them.
    lines = [json.loads(line) for line in container.logs().splitlines() if line.startswith("{")]
    assert any(line.get("message") == "websocket connect" for line in lines), lines[-10:]


def test_the_container_runs_as_a_user_who_cannot_rewrite_the_code(container: Container):
    assert container.exec("id", "-u").stdout.strip() == "10001"
    attempt = container.exec("sh", "-c", "echo x >> /app/manage.py")
    assert attempt.returncode != 0, "the server's user could write to its own code"
    assert container.exec("python", "-c", "import chat").returncode == 0


def test_the_image_holds_no_tests_bench_or_ci_files(container: Container):
    # .dockerignore is an allowlist: only what the web process runs is copied into /app.
    for path in ("/app/tests", "/app/bench", "/app/.ci", "/app/deploy", "/app/docs"):
        assert container.exec("test", "-e", path).returncode == 1, f"{path} is in the image"
    assert container.exec("test", "-f", "/app/manage.py").returncode == 0


def container_database(container: Container) -> str:
    result = podman("inspect", "--format", "{{json .Config.Env}}", container.name)
    env = dict(item.split("=", 1) for item in json.loads(result.stdout))
    return env["DATABASE_URL"].rsplit("/", 1)[1]


async def post_once(base_url: str, session: str, slug: str, body: str) -> dict:
    client = await Client.open(base_url, session, slug)
    try:
        await client.send({"type": "post", "body": body, "client_id": "image-1"})
        return await client.receive_type("message", timeout=15)
    finally:
        await client.close()
