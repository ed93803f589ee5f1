"""The processes a bench run starts and stops: redis-server, the three peers, nginx, a database.

Everything listens on 127.0.0.1 only, on free ports, and is stopped by the run that started it.
The test suite starts the same kinds of process with the helpers here (free ports, waiting for a
port or /healthz, redis-server's command line, deploy/nginx.conf for loopback servers).
"""

import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MAX_MESSAGE = "2097152"  # daphne's --websocket-max-message-size, as deployed
# One secret for the bench's server processes and the seeding script (sessions are signed).
SITE_SECRET = secrets.token_urlsafe(50)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_open_files(wanted: int = 65536) -> int:
    """Raise this process's (and so its children's) open-file limit as far as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status (VmRSS, KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU time the whole machine has spent busy (all cores, not idle or iowait), /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    values = [int(v) for v in fields]
    return (sum(values[:8]) - values[3] - values[4]) / CLOCK_TICKS


def open_sockets(pid: int) -> int:
    """How many sockets a process holds open (its TCP connections and listeners)."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd).startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


def listen_overflows() -> int:
    """Connections the kernel dropped because a listener's accept queue was full, machine-wide
    (TcpExt ListenOverflows in /proc/net/netstat): a storm of handshakes beyond the server's
    listen backlog shows here, and each such client waits for its SYN to be sent again."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=True))["ListenOverflows"])
    return 0


def machine() -> str:
    """One line about this machine for the report."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) // (1024 * 1024)
    return f"{os.cpu_count()} cores ({model}), {mem} GiB RAM, Linux {os.uname().release}"


def wait_for_port(port: int, process: subprocess.Popen, output, name: str, timeout=30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited:\n{output()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} is not listening on {port}:\n{output()}") from None
            time.sleep(0.05)


def wait_for_healthz(url: str, process: subprocess.Popen, output, name: str, timeout=30) -> None:
    """Until `url`/healthz answers 200; fails with the process's output if it exits or times out."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited:\n{output()}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not answer /healthz:\n{output()}")
        time.sleep(0.1)


def redis_command(binary: str, port: int, directory: str) -> list[str]:
    """A throw-away redis-server on a loopback port: no persistence, so a restart forgets all."""
    return [
        binary, "--port", str(port), "--bind", "127.0.0.1",
        "--save", "", "--appendonly", "no", "--dir", directory,
    ]  # fmt: skip


class Process:
    """A child process whose output goes to a temp file; stopped with SIGTERM, then SIGKILL."""

    name = "process"

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{self.name}-", suffix=".log")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def spawn(self, args: list[str], env: dict[str, str] | None = None, cwd=ROOT) -> None:
        self.process = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def output(self, tail: int = 4000) -> str:
        return Path(self.log.name).read_text(errors="replace")[-tail:]

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer ends it: no shutdown, nothing said to Redis or
        to the sockets. `start()` again serves on the same port."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None
        self.log.close()


class Redis(Process):
    name = "redis"

    def __init__(self) -> None:
        super().__init__()
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(self.binary).exists():
            raise RuntimeError("redis-server is missing: apt-get install redis-server")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "Redis":
        self.spawn([*redis_command(self.binary, self.port, self.dir), "--maxclients", "20000"])
        wait_for_port(self.port, self.process, self.output, "redis-server")
        return self

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Database:
    """The database our server uses: a fresh SQLite file, or a fresh database on the PostgreSQL
    server that DATABASE_URL names (created here, dropped at the end; the role needs CREATEDB)."""

    def __init__(self, base_url: str | None) -> None:
        self.admin_url: str | None = None
        self.dir: str | None = None
        if base_url and base_url.startswith(("postgres://", "postgresql://")):
            parts = urlsplit(base_url)
            self.name = f"{unquote(parts.path.lstrip('/')) or 'chat'}_bench_{os.getpid()}"
            self.admin_url = base_url
            self.url = urlunsplit(parts._replace(path="/" + quote(self.name, safe="")))
            self.kind = "PostgreSQL"
            self._postgres(f'DROP DATABASE IF EXISTS "{self.name}"')
            self._postgres(f'CREATE DATABASE "{self.name}"')
        else:
            self.dir = tempfile.mkdtemp(prefix="bench-db-")
            self.url = f"sqlite:///{self.dir}/bench.sqlite3"
            self.kind = "SQLite"

    def _postgres(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(statement)

    def drop(self) -> None:
        if self.admin_url:
            self._postgres(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class Site:
    """Everything our server processes share: database, secret key, environment."""

    def __init__(self, database: Database, redis_url: str, extra_env: dict[str, str]) -> None:
        self.database = database
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "chatsite.settings",
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": SITE_SECRET,
            "DATABASE_URL": database.url,
            "REDIS_URL": redis_url,
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DJANGO_LOG_LEVEL": "WARNING",
            # The bench posts far faster than a person: raise the per-user post limit.
            "CHAT_RATE_LIMIT_POSTS": "1000000",
            **extra_env,
        }


class Ours(Process):
    """Our site as deployed (Makefile, Dockerfile): chatsite/serve.py (daphne) on Redis.

    `variant` is for experiments only: bench/variants.py ("asgisend", "twistedwrite,gcdefault",
    "gcstats", ...), or "uvicorn[-sansio][+uvloop]" to serve the same application with uvicorn
    (its `websockets` or `websockets-sansio` protocol)."""

    name = "ours"

    def __init__(self, site: Site, variant: str = "") -> None:
        super().__init__()
        self.site = site
        self.port = free_port()
        self.variant = variant

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        app = "chatsite.asgi:application"
        if self.variant.startswith("uvicorn"):
            loop = "uvloop" if "uvloop" in self.variant else "asyncio"
            ws = "websockets-sansio" if "sansio" in self.variant else "websockets"
            return [
                PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(self.port),
                "--ws", ws, "--ws-max-size", MAX_MESSAGE, "--ws-ping-interval", "20",
                "--loop", loop, "--lifespan", "off", "--no-access-log",
            ]  # fmt: skip
        daphne = ["-b", "127.0.0.1", "-p", str(self.port)]
        if self.variant:
            return [PYTHON, "-m", "bench.variants", self.variant, "--", *daphne]
        return [PYTHON, "-m", "chatsite.serve", *daphne]

    def start(self) -> "Ours":
        self.spawn(self.command(), env=self.site.env)
        wait_for_healthz(self.url, self.process, self.output, "our server")
        return self


class Tutorial(Process):
    """The tutorial-style consumer (bench/tutorial) in daphne, on the same kind of Redis."""

    name = "tutorial"

    def __init__(self, redis_url: str, layer: str = "core") -> None:
        super().__init__()
        self.port = free_port()
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "bench.tutorial.settings",
            "REDIS_URL": redis_url,
            "TUTORIAL_LAYER": layer,
        }

    def start(self) -> "Tutorial":
        self.spawn(
            [
                PYTHON,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "--websocket-max-message-size",
                MAX_MESSAGE,
                "bench.tutorial.asgi:application",
            ],
            env=self.env,
        )
        wait_for_port(self.port, self.process, self.output, "tutorial daphne")
        return self


class Raw(Process):
    """bench/raw_server.py: one `websockets` process, the ceiling for one Python process."""

    name = "raw"

    def __init__(self) -> None:
        super().__init__()
        self.port = free_port()

    def start(self) -> "Raw":
        self.spawn([PYTHON, "-m", "bench.raw_server", "--port", str(self.port)])
        wait_for_port(self.port, self.process, self.output, "raw server")
        return self


def nginx_site(
    *,
    listen: int,
    upstreams: list[int],
    access_log: bool = True,
    redirect_dir: Path | None = None,
    media_root: Path | None = None,
) -> str:
    """deploy/nginx.conf with only its addresses changed, for loopback servers (the bench turns
    the access log off; tests/test_nginx.py keeps it, and gives the directory where
    deploy/nginx-tls.sh writes its redirect to HTTPS, and where the attachments are)."""
    deploy = ROOT / "deploy"
    servers = "".join(f"    server 127.0.0.1:{port};\n" for port in upstreams)
    text = (deploy / "nginx.conf").read_text()
    resolver = "resolver ${NGINX_LOCAL_RESOLVERS} valid=10s ipv6=off;"
    changes = {
        resolver: f"upstream chat_web {{\n{servers}}}",
        "listen 8000;": f"listen 127.0.0.1:{listen};",
        "set $chat_backend web:8000;": "set $chat_backend chat_web;",
        "include /etc/nginx/chat/common.conf;": f"include {deploy / 'nginx-common.conf'};",
        "include /etc/nginx/chat-redirect/*.conf;": (
            f"include {redirect_dir}/*.conf;" if redirect_dir else ""
        ),
        "set $chat_media_root /srv/chat-media;": (
            f"set $chat_media_root {media_root or '/srv/chat-media'};"
        ),
    }
    if not access_log:
        changes["access_log /dev/stdout chat_json;"] = "access_log off;"
    for old, new in changes.items():
        if text.count(old) != 1:
            raise RuntimeError(f"deploy/nginx.conf no longer has {old!r}")
        text = text.replace(old, new)
    return text


class Nginx(Process):
    """Debian's nginx before our daphne processes, with the repository's proxy blocks."""

    name = "nginx"

    def __init__(self) -> None:
        super().__init__()
        self.binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(self.binary).exists():
            raise RuntimeError("nginx is missing: apt-get install nginx")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        self.dir.chmod(0o755)  # workers (nobody, when started as root) use the temp paths

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, upstreams: list[int]) -> "Nginx":
        d = self.dir
        temp_paths = "".join(
            f"{kind}_temp_path {d}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        site = nginx_site(listen=self.port, upstreams=upstreams, access_log=False)
        config = d / "nginx.conf"
        # One worker, as tests/test_nginx.py runs it: the daphne processes get the other core.
        config.write_text(
            f"daemon off;\nworker_processes 1;\nworker_rlimit_nofile 65536;\n"
            f"pid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n"
            f"events {{ worker_connections 16384; }}\nhttp {{\n{temp_paths}{site}\n}}\n"
        )
        self.spawn([self.binary, "-c", str(config), "-e", str(d / "error.log")])
        wait_for_healthz(self.url, self.process, (d / "error.log").read_text, "nginx")
        return self

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.dir, ignore_errors=True)
