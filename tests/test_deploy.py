"""What `docker compose up` runs, checked natively (no Docker engine runs on these machines).

The compose file and the `.env` that `make env` writes; the image's entrypoint and command
(read from the Dockerfile) against a real PostgreSQL 15 and Redis, started twice and three at
once; its health check; the admin account from DJANGO_SUPERUSER_*; JSON logs; and the production
settings under `check --deploy`.
"""

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.hashers import check_password
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from tests.conftest import ROOT, free_port, need, settings_env
from tests.envfile import make_env
from tests.pg import PostgresCluster, running

ADMIN_PASSWORD = "Deploy-Admin-Pass-7"

# --- docker-compose.yml ---------------------------------------------------------------------


def compose_project(tmp_path: Path, env: dict[str, str]) -> Path:
    """The compose file and the nginx files it mounts, beside a .env of our own."""
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    (tmp_path / ".env").write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    return tmp_path


def compose(directory: Path, *args: str) -> subprocess.CompletedProcess:
    binary = need("docker-compose", "docker-compose")
    return subprocess.run(
        [binary, "-f", "docker-compose.yml", "config", *args],
        cwd=directory,
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=60,
    )


def compose_config(directory: Path) -> dict:
    """`docker-compose config` (interpolated, env_file merged) as data.

    Read with the YAML parser of the Python that runs Debian's docker-compose (python3-yaml).
    """
    result = compose(directory)
    assert result.returncode == 0, result.stderr
    binary = need("docker-compose", "docker-compose")
    interpreter = Path(binary).read_text().splitlines()[0].removeprefix("#!").split()
    converted = subprocess.run(
        [
            *interpreter,
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))",
        ],
        input=result.stdout,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert converted.returncode == 0, converted.stderr
    return json.loads(converted.stdout)


def mounts(service: dict) -> list[tuple[str, str]]:
    """(source, target) of a service's volumes: compose v1 prints `source:target:mode`."""
    pairs = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            pairs.append((volume["source"], volume["target"]))
        else:
            source, target = volume.split(":")[:2]
            pairs.append((source, target))
    return pairs


def test_make_env_writes_a_complete_env_and_the_compose_file_validates(tmp_path: Path):
    env = make_env(tmp_path)
    for key in ("DJANGO_SECRET_KEY", "POSTGRES_PASSWORD", "DJANGO_SUPERUSER_PASSWORD"):
        assert len(env[key]) >= 24, key
    assert len(env["DJANGO_SECRET_KEY"]) >= 50
    assert env["DATABASE_URL"] == f"postgres://chat:{env['POSTGRES_PASSWORD']}@db:5432/chat"
    result = compose(compose_project(tmp_path, env), "-q")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", ["DJANGO_SECRET_KEY", "POSTGRES_PASSWORD", "DATABASE_URL"])
def test_compose_refuses_to_start_without_its_secrets(tmp_path: Path, missing: str):
    env = make_env(tmp_path)
    env[missing] = ""  # as in .env.example before anyone fills it in
    result = compose(compose_project(tmp_path, env), "-q")
    assert result.returncode != 0
    assert missing in result.stderr


def test_compose_serves_through_nginx_only_with_settings_from_env(tmp_path: Path):
    env = make_env(tmp_path)
    env["DJANGO_DEBUG"] = "1"  # must not reach the server
    config = compose_config(compose_project(tmp_path, env))
    services = config["services"]
    # Without a profile: one Redis (the `ha` profile's services run only when asked for).
    assert {name for name, s in services.items() if not s.get("profiles")} == {
        "db",
        "redis",
        "web",
        "nginx",
    }

    # Only nginx publishes ports: 8000, and 8443 for HTTPS once it has a certificate.
    assert [name for name, service in services.items() if service.get("ports")] == ["nginx"]
    ports = {(str(port["published"]), port["target"]) for port in services["nginx"]["ports"]}
    assert ports == {("8000", 8000), ("8443", 8443)}

    # The web server gets its settings from .env, with DEBUG forced off.
    web = services["web"]["environment"]
    assert web["DJANGO_DEBUG"] == "0"
    assert web["DJANGO_SUPERUSER_USERNAME"] == "admin"
    assert web["DJANGO_SUPERUSER_PASSWORD"] == env["DJANGO_SUPERUSER_PASSWORD"]
    assert web["DATABASE_URL"] == env["DATABASE_URL"]
    assert web["REDIS_URL"] == "redis://redis:6379/0"
    assert web["DJANGO_ALLOWED_HOSTS"] == "localhost,127.0.0.1"

    # Started in order, each once the one before is healthy; PostgreSQL 15 on a named volume.
    assert services["web"]["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    assert services["nginx"]["depends_on"] == {"web": {"condition": "service_healthy"}}
    for name in ("db", "redis"):
        assert services[name]["healthcheck"]["test"]
    assert services["db"]["image"] == "postgres:15"
    assert "pgdata" in config["volumes"]
    assert ("pgdata", "/var/lib/postgresql/data") in mounts(services["db"])

    # nginx reads both repository files, and the main one includes the shared one where it is.
    mounts_nginx = {Path(source).name: target for source, target in mounts(services["nginx"])}
    assert mounts_nginx["nginx.conf"] == "/etc/nginx/templates/default.conf.template"
    # Its resolver is whatever DNS the engine gives the container (Docker's, podman's).
    assert services["nginx"]["environment"]["NGINX_ENTRYPOINT_LOCAL_RESOLVERS"] == "1"
    assert "resolver ${NGINX_LOCAL_RESOLVERS} " in (ROOT / "deploy" / "nginx.conf").read_text()
    nginx_conf = (ROOT / "deploy" / "nginx.conf").read_text()
    assert f"include {mounts_nginx['nginx-common.conf']};" in nginx_conf


def test_each_service_gets_only_the_secrets_it_needs(tmp_path: Path):
    env = make_env(tmp_path)
    env["CHAT_ROOMS_PER_USER"] = "7"  # a setting added to .env reaches the web server
    config = compose_config(compose_project(tmp_path, env))
    services = config["services"]
    for name, service in services.items():
        assert "env_file" not in service, name
    environments = {name: service.get("environment", {}) for name, service in services.items()}
    # No service but db gets the database password (web has it inside DATABASE_URL only).
    assert [name for name, e in environments.items() if "POSTGRES_PASSWORD" in e] == ["db"]
    assert environments["db"] == {
        "POSTGRES_DB": "chat",
        "POSTGRES_USER": "chat",
        "POSTGRES_PASSWORD": env["POSTGRES_PASSWORD"],
    }
    # Django's secrets go to web only.
    for key in ("DJANGO_SECRET_KEY", "DJANGO_SUPERUSER_PASSWORD"):
        assert [name for name, e in environments.items() if key in e] == ["web"], key
    assert environments["redis"] == {}
    # nginx: where its DNS is and where HTTPS lives; no secret.
    assert environments["nginx"] == {"NGINX_ENTRYPOINT_LOCAL_RESOLVERS": "1", "HTTPS_PORT": "8443"}
    assert environments["web"]["CHAT_ROOMS_PER_USER"] == "7"
    # Every setting the README documents has its line (an unset one arrives empty).
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Z_]+)`", table, re.MULTILINE))
    documented.discard("POSTGRES_PASSWORD")  # the db service's
    assert documented <= set(environments["web"]), documented - set(environments["web"])


def test_the_ha_profile_runs_a_primary_a_replica_and_three_sentinels_that_web_follows(
    tmp_path: Path,
):
    env = make_env(tmp_path)
    # .env.example's commented lines for the profile, uncommented.
    example = (ROOT / ".env.example").read_text()
    for name in ("REDIS_SENTINELS", "REDIS_SENTINEL_MASTER"):
        (value,) = re.findall(rf"^#{name}=(.*)$", example, re.MULTILINE)
        env[name] = value
    services = compose_config(compose_project(tmp_path, env))["services"]
    sentinels = {"redis-sentinel-1", "redis-sentinel-2", "redis-sentinel-3"}
    ha = {name for name, service in services.items() if service.get("profiles")}
    assert ha == {"redis-primary", "redis-replica", *sentinels}
    for name in ha:
        service = services[name]
        assert service["profiles"] == ["ha"], name
        assert service["image"] == "redis:7", name
        assert not service.get("ports"), name  # inside the compose network only
        assert service["healthcheck"]["test"], name
    # The replica follows the primary; both announce their service names, not container addresses.
    replica = services["redis-replica"]["command"]
    assert replica[replica.index("--replicaof") + 1 :][:2] == ["redis-primary", "6379"]
    assert "redis-replica" == replica[replica.index("--replica-announce-ip") + 1]
    # Each sentinel writes its own config (a sentinel rewrites it), watching the primary, quorum 2.
    for name in sentinels:
        script = services[name]["command"][0]
        assert services[name]["entrypoint"] == ["sh", "-c"]
        assert "sentinel monitor mymaster redis-primary 6379 2" in script
        assert "sentinel announce-hostnames yes" in script
        assert script.rstrip().endswith("redis-server /data/sentinel.conf --sentinel")
    # The web servers name the three sentinels and the primary's name ...
    web = services["web"]["environment"]
    listed = {item.split(":")[0] for item in web["REDIS_SENTINELS"].split(",")}
    assert listed == sentinels
    assert web["REDIS_SENTINEL_MASTER"] == "mymaster"
    # ... and the settings turn them into a Sentinel-managed channel layer.
    script = (
        "import json; from django.conf import settings;"
        "print(json.dumps(settings.CHANNEL_LAYERS['default']['CONFIG']['hosts']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={
            "PATH": os.environ["PATH"],
            "DJANGO_SETTINGS_MODULE": "chatsite.settings",
            **{key: web[key] for key in web if key.startswith(("REDIS_", "DJANGO_SECRET"))},
        },
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {
            "sentinels": [[name, 26379] for name in sorted(sentinels)],
            "master_name": "mymaster",
            "sentinel_kwargs": {},
            "db": 0,
        }
    ]


def test_settings_left_empty_by_compose_take_their_defaults():
    # What compose passes for a setting .env does not set: an empty value.
    names = [
        "DJANGO_ALLOWED_HOSTS",
        "DJANGO_LOG_LEVEL",
        "CHAT_PRESENCE_WINDOW",
        "CHAT_RESYNC_INTERVAL",
        "CHAT_SESSION_CHECK_INTERVAL",
        "CHAT_ROOMS_PER_USER",
        "DJANGO_HSTS_SECONDS",
    ]
    script = (
        "import json; from django.conf import settings;"
        "print(json.dumps([settings.ALLOWED_HOSTS, settings.LOG_LEVEL,"
        " settings.CHAT_PRESENCE_WINDOW, settings.CHAT_RESYNC_INTERVAL,"
        " settings.CHAT_SESSION_CHECK_INTERVAL, settings.CHAT_ROOMS_PER_USER,"
        " settings.SECURE_HSTS_SECONDS]))"
    )
    env = {
        "PATH": os.environ["PATH"],
        "DJANGO_SECRET_KEY": "x",
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        **dict.fromkeys(names, ""),
    }
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        ["localhost", "127.0.0.1", "[::1]"],
        "INFO",
        0.25,
        2,
        30,
        10,
        0,
    ]


# --- production settings --------------------------------------------------------------------


def production_env(**extra: str) -> dict[str, str]:
    """A deployment's environment behind a TLS-terminating proxy, as README describes it."""
    return {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_DEBUG": "0",
        "DJANGO_ALLOWED_HOSTS": "chat.example.com",
        "DJANGO_CSRF_TRUSTED_ORIGINS": "https://chat.example.com",
        "DJANGO_HTTPS": "1",
        "DJANGO_TRUST_PROXY_HEADERS": "1",
        **extra,
    }


def deploy_check(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_settings_pass_the_deploy_check():
    result = deploy_check(production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_the_deploy_check_fails_without_https():
    # The check has teeth: the same deployment on plain HTTP is refused.
    result = deploy_check(production_env(DJANGO_HTTPS="0"))
    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stdout + result.stderr


def hsts_header(env: dict[str, str]) -> str:
    """The Strict-Transport-Security header the settings module makes under `env` (a fresh
    process: settings are read once)."""
    script = (
        "import django; django.setup();"
        "from django.http import HttpResponse;"
        "from django.middleware.security import SecurityMiddleware;"
        "from django.test import RequestFactory;"
        "request = RequestFactory().get('/', secure=True, HTTP_HOST='chat.example.com');"
        "print(SecurityMiddleware(lambda r: HttpResponse())(request)['Strict-Transport-Security'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "chatsite.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_hsts_covers_only_this_host_and_is_not_preloaded_unless_asked():
    assert hsts_header(production_env()) == "max-age=31536000"
    # Asked for, each is added (and `check --deploy` stays clean either way).
    assert hsts_header(production_env(DJANGO_HSTS_INCLUDE_SUBDOMAINS="1")) == (
        "max-age=31536000; includeSubDomains"
    )
    assert hsts_header(
        production_env(DJANGO_HSTS_INCLUDE_SUBDOMAINS="1", DJANGO_HSTS_PRELOAD="1")
    ) == ("max-age=31536000; includeSubDomains; preload")
    result = deploy_check(
        production_env(DJANGO_HSTS_INCLUDE_SUBDOMAINS="1", DJANGO_HSTS_PRELOAD="1")
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_daphne_sends_no_server_banner(daphne_factory):
    import asyncio

    from websockets.asyncio.client import connect

    server = daphne_factory()
    with urllib.request.urlopen(f"{server.url}/healthz", timeout=10) as response:
        assert response.status == 200
        assert "Server" not in response.headers, response.headers["Server"]

    async def handshake_headers():
        async with connect(
            f"{server.ws_url}/ws/rooms/general/", additional_headers={"Origin": server.url}
        ) as socket:
            return socket.response.headers

    headers = asyncio.run(handshake_headers())
    assert "Server" not in headers, headers["Server"]


# --- ensure_superuser -----------------------------------------------------------------------


def superuser_env(**values: str):
    defaults = {
        "DJANGO_SUPERUSER_USERNAME": "admin",
        "DJANGO_SUPERUSER_EMAIL": "admin@example.com",
        "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD,
    }
    return settings_env(**{**defaults, **values})


def test_ensure_superuser_creates_the_admin_once_and_then_leaves_it_alone(db):
    with superuser_env():
        call_command("ensure_superuser")
        admin = User.objects.get(username="admin")
        assert admin.is_superuser and admin.is_staff and admin.email == "admin@example.com"
        assert admin.check_password(ADMIN_PASSWORD)
        admin.set_password("Changed-Later-Pass-9")
        admin.save()
        call_command("ensure_superuser")
    assert User.objects.filter(username="admin").count() == 1
    assert User.objects.get(username="admin").check_password("Changed-Later-Pass-9")


def test_ensure_superuser_does_nothing_without_a_username(db):
    with superuser_env(DJANGO_SUPERUSER_USERNAME=""):
        call_command("ensure_superuser")
    assert not User.objects.exists()


@pytest.mark.parametrize(
    ("password", "reason"), [("", "must be set"), ("admin", "too short"), ("password", "common")]
)
def test_ensure_superuser_refuses_a_missing_or_weak_password(db, password: str, reason: str):
    with superuser_env(DJANGO_SUPERUSER_PASSWORD=password), pytest.raises(CommandError) as error:
        call_command("ensure_superuser")
    assert reason in str(error.value)
    assert not User.objects.exists()


# --- the entrypoint against PostgreSQL and Redis ----------------------------------------------


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresCluster]:
    with running() as cluster:
        yield cluster


def image_command(port: int) -> list[str]:
    """The Dockerfile's CMD, bound to a loopback port instead of 0.0.0.0:8000."""
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    (cmd,) = re.findall(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    replace = {"0.0.0.0": "127.0.0.1", "8000": str(port)}
    return [replace.get(word, word) for word in json.loads(cmd)]


def healthcheck(port: int, env: dict[str, str]) -> bool:
    """The image's HEALTHCHECK script, run as Docker would run it."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "docker" / "healthcheck.py"), str(port)],
        env=env,
        capture_output=True,
        timeout=30,
    )
    return result.returncode == 0


def get(port: int, path: str, **headers: str) -> tuple[int, dict[str, str]]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=10) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)


def entrypoint(env: dict[str, str], log: Path, *command: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(ROOT / "docker" / "entrypoint.sh"), *command],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def serve_once(env: dict[str, str], log: Path) -> str:
    """Start the container's process as Docker would, check it, stop it; its output."""
    port = free_port()
    process = entrypoint(env, log, *image_command(port))
    try:
        deadline = time.monotonic() + 90
        while not healthcheck(port, env):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"never healthy:\n{log.read_text()}"
            time.sleep(0.3)
        # Behind the TLS proxy: served, and logged. Plain HTTP: sent to HTTPS.
        host = env["DJANGO_ALLOWED_HOSTS"]
        status, _ = get(port, "/accounts/login/", Host=host, **{"X-Forwarded-Proto": "https"})
        assert status == 200
        status, headers = get(port, "/accounts/login/", Host=host)
        assert (status, headers["Location"]) == (301, f"https://{host}/accounts/login/")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
    return log.read_text()


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_entrypoint_migrates_creates_the_admin_once_and_daphne_serves(
    postgres: PostgresCluster, redis_server, tmp_path: Path
):
    url = postgres.create_database("entrypoint")
    env = production_env(
        DATABASE_URL=url,
        REDIS_URL=redis_server.url,
        DJANGO_SUPERUSER_USERNAME="admin",
        DJANGO_SUPERUSER_EMAIL="admin@example.com",
        DJANGO_SUPERUSER_PASSWORD=ADMIN_PASSWORD,
    )

    first = serve_once(env, tmp_path / "first.log")
    # The admin's password is for ensure_superuser only: the server's environment lacks it.
    environ = tmp_path / "environ.log"
    assert entrypoint(env, environ, "env").wait(120) == 0, environ.read_text()
    assert "DJANGO_SUPERUSER_USERNAME=admin" in environ.read_text()
    assert ADMIN_PASSWORD not in environ.read_text()
    assert "Applying chat.0001_initial... OK" in first
    # Deleted messages' text is erased at every start (and daily): nothing to do on a new site.
    assert "purge_deleted_text: erased the text of 0 message(s)" in first
    assert "ensure_superuser: created superuser 'admin'." in first

    second = serve_once(env, tmp_path / "second.log")  # a restart: nothing fails, nothing twice
    assert "No migrations to apply." in second
    assert "Applying" not in second
    assert "ensure_superuser: 'admin' exists; left unchanged." in second

    (admin,) = postgres.query(
        "entrypoint",
        "SELECT password, is_superuser, is_staff, email FROM auth_user WHERE username = 'admin'",
    )
    assert check_password(ADMIN_PASSWORD, admin[0])
    assert admin[1:] == (True, True, "admin@example.com")

    # Once the commands are done, everything on stdout is a JSON log line, with the request.
    served = second.split("left unchanged.\n", 1)[1]
    lines = served.strip().splitlines()
    assert lines and all(line.startswith("{") for line in lines), served
    entries = json_lines(served)
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    request = next(e for e in entries if e.get("path") == "/accounts/login/")
    assert request["logger"] == "chatsite.request"
    assert (request["method"], request["status"]) == ("GET", 200)
    assert request["duration_ms"] >= 0


def test_replicas_starting_together_migrate_and_create_the_admin_once(
    postgres: PostgresCluster, redis_server, tmp_path: Path
):
    # `docker compose up --scale web=3` on an empty database: three entrypoints at once.
    url = postgres.create_database("replicas")
    env = production_env(
        DATABASE_URL=url,
        REDIS_URL=redis_server.url,
        DJANGO_SUPERUSER_USERNAME="admin",
        DJANGO_SUPERUSER_PASSWORD=ADMIN_PASSWORD,
    )
    logs = [tmp_path / f"replica-{i}.log" for i in range(3)]
    processes = [entrypoint(env, log, "true") for log in logs]
    for process, log in zip(processes, logs, strict=True):
        assert process.wait(180) == 0, log.read_text()

    outputs = [log.read_text() for log in logs]
    assert sum("created superuser 'admin'" in output for output in outputs) == 1
    assert postgres.query("replicas", "SELECT count(*) FROM auth_user") == [(1,)]
    assert (
        postgres.query(
            "replicas",
            "SELECT app, name FROM django_migrations GROUP BY app, name HAVING count(*) > 1",
        )
        == []
    )
    assert sum("Applying chat.0001_initial... OK" in output for output in outputs) == 1


class LateListener:
    """A TCP port that answers only once `open()` is called, forwarding to a real server then:
    a database that is still starting when the container starts."""

    def __init__(self, upstream_port: int) -> None:
        self.port = free_port()
        self.upstream_port = upstream_port
        self.opened = threading.Event()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def open(self) -> None:
        self.opened.set()

    def serve(self) -> None:
        while not self.opened.wait(0.1):
            if self.stopped.is_set():
                return
        with socket.create_server(("127.0.0.1", self.port)) as server:
            server.settimeout(0.2)
            while not self.stopped.is_set():
                try:
                    client, _ = server.accept()
                except TimeoutError:
                    continue
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
                for source, target in ((client, upstream), (upstream, client)):
                    threading.Thread(target=pump, args=(source, target), daemon=True).start()

    def __enter__(self) -> "LateListener":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(5)


def pump(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


def test_entrypoint_waits_for_a_database_that_is_still_starting(
    postgres: PostgresCluster, redis_server, tmp_path: Path
):
    postgres.create_database("late")
    with LateListener(postgres.port) as late:
        url = f"postgres://chat:{postgres.password}@127.0.0.1:{late.port}/late"
        env = production_env(DATABASE_URL=url, REDIS_URL=redis_server.url)
        log = tmp_path / "late.log"
        process = entrypoint(env, log, "true")
        waiting = f"waiting for the database (127.0.0.1:{late.port}/late)"
        deadline = time.monotonic() + 60
        while waiting not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        time.sleep(1.5)  # still waiting, not crashed
        assert process.poll() is None, log.read_text()
        late.open()
        assert process.wait(180) == 0, log.read_text()
    output = log.read_text()
    assert "Applying chat.0001_initial... OK" in output
    assert "Traceback" not in output


def test_entrypoint_gives_up_on_an_unreachable_database_with_a_clear_message(
    redis_server, tmp_path: Path
):
    url = f"postgres://chat:secret@127.0.0.1:{free_port()}/chat"
    env = production_env(DATABASE_URL=url, REDIS_URL=redis_server.url, CHAT_STARTUP_WAIT="2")
    log = tmp_path / "never.log"
    process = entrypoint(env, log, "true")
    assert process.wait(60) != 0
    output = log.read_text()
    assert "gave up after 2 s: the database" in output, output
    assert "Check DATABASE_URL and REDIS_URL" in output
    assert "Traceback" not in output


def documented_settings() -> set[str]:
    """The names in the README's Settings table, `_SUFFIX` abbreviations spelled out."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for row in re.findall(r"^\| (.+?) \|", table, re.MULTILINE):
        full = ""
        for name in re.findall(r"`([A-Z_][A-Z0-9_]*)`", row):
            if name.startswith("_") and full:
                # `CHAT_RATE_LIMIT_HISTORY` / `_WINDOW`: the suffix replaces a tail of the first.
                parts = full.split("_")
                names.update("_".join(parts[:i]) + name for i in range(1, len(parts) + 1))
            else:
                full = name
                names.add(name)
    return names


def test_every_setting_the_site_reads_is_in_the_readme():
    """ "Every setting comes from the environment and is in this table" stays true."""
    source = (ROOT / "chatsite" / "settings.py").read_text()
    read = set(re.findall(r'env_(?:int|float|bool|list)\("([A-Z0-9_]+)"', source))
    read |= set(re.findall(r'os\.environ\.get\("([A-Z0-9_]+)"', source))
    assert read, "no settings found: has chatsite/settings.py changed how it reads them?"
    assert read <= documented_settings(), read - documented_settings()
