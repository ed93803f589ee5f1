"""The whole docker-compose.yml, run unchanged by Debian's docker-compose 1.29 on podman (issue 22).

No Docker engine runs on these machines: podman serves Docker's API on a socket of this test's own
(`podman system service`), and docker-compose talks to it through DOCKER_HOST. The compose file's
images are stand-ins made from Debian bookworm's packages (docker/standin/: python:3.11-slim,
postgres:15, redis:7, nginx:1.27; README "How the image is tested"); the web image is built from
the repository's Dockerfile by compose itself. In a copy of the project with the `.env` that
`make env` writes, `up -d --build --scale web=3` must start everything in order (each service
after the ones it needs are healthy), and then, through nginx on 127.0.0.1 only: two people sign
up and log in, one makes a room, both open WebSockets and each sees the other's post; all three
replicas serve (nginx's JSON access log); `down -v` leaves no container, network or volume.

Podman runs scheduled health checks with systemd timers, and there is no systemd here: this test
runs each container's health check itself (`podman healthcheck run`, on the check's own
interval while the container is "starting"), as the engine would, and notes when each first
passed, which shows that compose waited for them. Container-to-container traffic stays inside
podman's network; the test itself talks to 127.0.0.1 only.
"""

import asyncio
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, need
from tests.envfile import make_env, read_env
from tests.podman import build_standins, podman, require
from tests.webclient import Browser
from tests.wsclient import Client

PASSWORD = "Compose-Pass-42"


@pytest.fixture(scope="module")
def docker_host(tmp_path_factory) -> Iterator[str]:
    """Podman's Docker-compatible API on a socket of this module's own, for its run only."""
    require(("docker-compose", "docker-compose"))
    build_standins("python-base", "postgres", "redis", "nginx")
    directory = tmp_path_factory.mktemp("podman")
    socket_path = directory / "podman.sock"
    log = (directory / "service.log").open("w")
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket_path}"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not socket_path.exists():
            assert service.poll() is None, (directory / "service.log").read_text()
            assert time.monotonic() < deadline, "podman's API socket never appeared"
            time.sleep(0.2)
        yield f"unix://{socket_path}"
    finally:
        service.terminate()
        try:
            service.wait(timeout=15)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        log.close()


@dataclass
class HealthChecks:
    """The engine's health-check schedule, which podman keeps with systemd timers (absent here):
    each of the project's containers still "starting" is checked every `interval` of its own."""

    project: str
    passed: dict[str, float] = field(default_factory=dict)  # container: wall time of its pass
    due: dict[str, float] = field(default_factory=dict)  # container: its next check (monotonic)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.wait(0.5):
            try:
                self.check_due()
            except subprocess.TimeoutExpired:
                pass  # a slow `podman` under load: the next round asks again

    def check_due(self) -> None:
        starting = podman(
            "ps",
            "--filter",
            f"label=com.docker.compose.project={self.project}",
            "--filter",
            "health=starting",
            "--format",
            "{{.Names}}",
            check=False,
        ).stdout.split()
        for name in starting:
            if time.monotonic() < self.due.get(name, 0):
                continue
            began = time.time()
            if podman("healthcheck", "run", name, timeout=60, check=False).returncode == 0:
                self.passed.setdefault(name, began)
            interval = podman(
                "inspect", "--format={{json .Config.Healthcheck.Interval}}", name, check=False
            ).stdout.strip()
            self.due[name] = time.monotonic() + int(interval or 0) / 1e9


@dataclass
class Stack:
    directory: Path
    project: str
    docker_host: str
    port: int
    env: dict[str, str]
    health_passed: dict[str, float] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def compose(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        # Only what compose needs: a variable of the caller's (DJANGO_SECRET_KEY in the suite)
        # would override .env's.
        env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
        env["DOCKER_HOST"] = self.docker_host
        return subprocess.run(
            [need("docker-compose", "docker-compose"), "-p", self.project, *args],
            cwd=self.directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def logs(self, *services: str) -> str:
        return self.compose("logs", "--no-color", *services).stdout

    def containers(self) -> dict[str, dict]:
        """The project's containers by service: podman's inspect data, oldest first."""
        names = podman(
            "ps", "-a", "--filter", f"label=com.docker.compose.project={self.project}",
            "--format", "{{.Names}}",
        ).stdout.split()  # fmt: skip
        by_service: dict[str, dict] = {}
        if names:
            for data in json.loads(podman("inspect", *names).stdout):
                service = data["Config"]["Labels"]["com.docker.compose.service"]
                by_service.setdefault(service, []).append(data)
        return by_service

    def leftovers(self) -> list[str]:
        label = f"label=com.docker.compose.project={self.project}"
        found = []
        for kind, extra in (("ps", ["-a"]), ("volume", ["ls"]), ("network", ["ls"])):
            args = [kind, *extra, "--filter", label, "--format", "{{.Name}}"]
            if kind == "ps":
                args[-1] = "{{.Names}}"
            found += podman(*args, check=False).stdout.split()
        return found

    def remove_leftovers(self) -> None:
        label = f"label=com.docker.compose.project={self.project}"
        ids = podman("ps", "-aq", "--filter", label, check=False).stdout.split()
        if ids:
            podman("rm", "--force", "--time", "5", *ids, check=False, timeout=120)
        for kind in ("volume", "network"):
            names = podman(
                kind, "ls", "--filter", label, "--format", "{{.Name}}", check=False
            ).stdout.split()
            if names:
                podman(kind, "rm", "--force", *names, check=False)
        podman("rmi", "--force", f"{self.project}_web", check=False)


def project_copy(directory: Path) -> Path:
    """The checkout's files (tracked and new, not ignored): what a person runs compose in."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            target = directory / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return directory


@pytest.fixture(scope="module")
def stack(docker_host: str, tmp_path_factory) -> Iterator[Stack]:
    directory = project_copy(tmp_path_factory.mktemp("project"))
    env = make_env(directory)
    port = free_port()
    # Published on loopback only: compose takes HOST_IP:HOST_PORT in the port's place.
    env["HTTP_PORT"] = f"127.0.0.1:{port}"
    env["HTTPS_PORT"] = f"127.0.0.1:{free_port()}"
    (directory / ".env").write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    assert read_env(directory / ".env") == env

    running = Stack(directory, f"chattest{uuid.uuid4().hex[:8]}", docker_host, port, env)
    checks = HealthChecks(running.project)
    checker = threading.Thread(target=checks.run, daemon=True)
    checker.start()
    try:
        up = running.compose("up", "-d", "--build", "--scale", "web=3", timeout=600)
        checks.stop.set()
        checker.join()
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}\n{running.logs()}"
        running.health_passed = checks.passed
        deadline = time.monotonic() + 60
        while status(running.url + "/healthz") != 200:
            assert time.monotonic() < deadline, f"nginx never served:\n{running.logs()}"
            time.sleep(0.5)
        yield running
    finally:
        checks.stop.set()
        checker.join()
        running.compose("down", "--volumes", "--rmi", "local", "--timeout", "5", timeout=300)
        running.remove_leftovers()


def status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def created(container: dict) -> float:
    """A container's creation time from podman's inspect (nanoseconds cut to microseconds)."""
    stamp = re.sub(r"(\.\d{6})\d+", r"\1", container["Created"])
    return datetime.fromisoformat(stamp).timestamp()


def sign_up(url: str, username: str) -> Browser:
    browser = Browser(url)
    assert browser.get("/accounts/signup/") == 200
    form = {"username": username, "password1": PASSWORD, "password2": PASSWORD}
    status_code, headers, body = browser.request("/accounts/signup/", form)
    assert (status_code, headers.get("Location")) == (302, "/"), body[:2000]
    return browser


async def chat(url: str, slug: str, alice: str, bob: str) -> None:
    alice_socket = await Client.open(url, alice, slug)
    bob_socket = await Client.open(url, bob, slug)
    try:
        await alice_socket.send({"type": "post", "body": "hello from alice", "client_id": "a1"})
        for socket in (alice_socket, bob_socket):
            frame = await socket.receive_type("message", timeout=15)
            assert frame["message"]["body"] == "hello from alice"
        await bob_socket.send({"type": "post", "body": "hello back from bob", "client_id": "b1"})
        for socket in (alice_socket, bob_socket):
            frame = await socket.receive_type("message", timeout=15)
            assert frame["message"]["body"] == "hello back from bob"
    finally:
        await alice_socket.close()
        await bob_socket.close()


def upstreams(stack: Stack) -> set[str]:
    """The replicas' addresses in nginx's JSON access log (`docker-compose logs nginx`)."""
    found = set()
    for line in stack.logs("nginx").splitlines():
        _, _, text = line.partition("| ")
        if text.startswith("{"):
            entry = json.loads(text)
            found.update(a.rsplit(":", 1)[0] for a in entry["upstream"].split(", ") if a)
    return found


def test_compose_up_on_podman_runs_a_chat_over_three_replicas_behind_nginx(stack: Stack):
    containers = stack.containers()
    assert sorted(containers) == ["db", "nginx", "redis", "web"]
    assert len(containers["web"]) == 3

    # Each service was created only after those it depends on had passed their health checks:
    # compose 1.29 honours `condition: service_healthy` through podman's API.
    passed = stack.health_passed
    for web in containers["web"]:
        for dependency in (*containers["db"], *containers["redis"]):
            assert dependency["Name"] in passed, passed
            assert created(web) > passed[dependency["Name"]], (web["Name"], passed)
    (nginx,) = containers["nginx"]
    assert created(nginx) > max(passed[web["Name"]] for web in containers["web"]), passed

    # nginx is published on loopback only.
    ports = nginx["HostConfig"]["PortBindings"]
    assert {binding["HostIp"] for bindings in ports.values() for binding in bindings or []} == {
        "127.0.0.1"
    }, ports

    # Two people sign up through nginx; Bob logs in again with the login form.
    alice = sign_up(stack.url, "alice")
    sign_up(stack.url, "bob")
    bob = Browser(stack.url)
    bob.log_in("bob", PASSWORD)

    status_code, headers, _ = alice.request("/rooms/", {"name": "Compose on podman"})
    assert (status_code, headers.get("Location")) == (302, "/rooms/compose-on-podman/")
    assert alice.get("/rooms/compose-on-podman/") == 200

    asyncio.run(chat(stack.url, "compose-on-podman", alice.session, bob.session))
    (db,) = containers["db"]
    stored = podman(
        "exec", db["Name"], "psql", "-U", "chat", "-d", "chat", "-Atc",
        "SELECT body FROM chat_message ORDER BY id",
    ).stdout.split("\n")  # fmt: skip
    assert stored[:2] == ["hello from alice", "hello back from bob"]

    # All three replicas served: nginx resolves `web` to each of them and spreads requests.
    network = f"{stack.project}_default"
    replicas = {
        web["NetworkSettings"]["Networks"][network]["IPAddress"] for web in containers["web"]
    }
    assert len(replicas) == 3
    for _ in range(10):
        if upstreams(stack) >= replicas:
            break
        for _ in range(20):
            assert status(stack.url + "/healthz") == 200
    assert upstreams(stack) == replicas

    # The image compose built holds no tests, bench or CI files either (its own .dockerignore
    # reading: docker-compose packs the build context itself).
    web = containers["web"][0]["Name"]
    for path in ("/app/tests", "/app/bench", "/app/.ci"):
        assert podman("exec", web, "test", "-e", path, check=False).returncode == 1, path

    # `down -v` leaves nothing behind: containers, the network, the pgdata volume and the
    # anonymous ones (redis's /data).
    volumes = {
        mount["Name"]
        for group in containers.values()
        for container in group
        for mount in container["Mounts"]
        if mount["Type"] == "volume"
    }
    assert any(name.endswith("_pgdata") for name in volumes), volumes
    down = stack.compose("down", "--volumes", "--rmi", "local", "--timeout", "5", timeout=300)
    assert down.returncode == 0, down.stderr
    assert stack.leftovers() == []
    for name in volumes:
        assert podman("volume", "exists", name, check=False).returncode == 1, name
