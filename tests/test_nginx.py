"""Three daphne processes behind one nginx, configured from deploy/nginx.conf: one chat.

`docker compose up --scale web=3` natively: Debian's nginx runs the repository's config with only
the addresses changed (a loopback upstream of three daphne processes for Docker's DNS and the
`web` service, a free port, pid, log and temp paths in a temp dir); the proxy blocks are the
repository's own (deploy/nginx-common.conf, included unchanged).
"""

import asyncio
import http.cookiejar
import json
import re
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from websockets.asyncio.client import connect

from bench.servers import free_port, nginx_site, wait_for_healthz
from chat import services
from chat.models import Message
from tests.conftest import ROOT, Daphne, need
from tests.helpers import create_room, create_user, password_for
from tests.webclient import Browser
from tests.wsclient import Client, Poster, Resilient, read_until

pytestmark = pytest.mark.django_db(transaction=True)

DEPLOY = ROOT / "deploy"


class Nginx:
    """Debian's nginx in the foreground, its files in a temp dir; the access log on stdout."""

    def __init__(self) -> None:
        self.binary = need("nginx", "nginx")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="chat-nginx-"))
        self.dir.chmod(0o755)  # workers (nobody, when started as root) use the temp paths
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self, site: str) -> Path:
        """The main file: foreground, one worker, every path in the temp dir; `site` inside."""
        d = self.dir
        temp_paths = "".join(
            f"{kind}_temp_path {d}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        path = d / "nginx.conf"
        path.write_text(
            f"daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n"
            f"events {{ worker_connections 1024; }}\nhttp {{\n{temp_paths}{site}\n}}\n"
        )
        return path

    def test_config(self, site: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.binary, "-t", "-c", str(self.write_config(site)), "-e", str(self.dir / "t.log")],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def start(self, upstreams: list[int], site: str | None = None) -> None:
        site = site or nginx_site(listen=self.port, upstreams=upstreams)
        config = self.write_config(site)
        self.access = open(self.dir / "access.log", "wb")  # closed in stop()
        self.process = subprocess.Popen(
            [self.binary, "-c", str(config), "-e", str(self.dir / "error.log")],
            stdout=self.access,
            stderr=subprocess.STDOUT,
        )
        wait_for_healthz(self.url, self.process, (self.dir / "error.log").read_text, "nginx")

    def access_log(self) -> list[dict]:
        return json_lines((self.dir / "access.log").read_text())

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None
            self.access.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


class Proxied:
    def __init__(self, nginx: Nginx, servers: list[Daphne]) -> None:
        self.nginx, self.servers = nginx, servers
        self.url = nginx.url

    def connects(self) -> list[list[str]]:
        """Per daphne process, the users whose sockets it accepted (its JSON log)."""
        return [
            [e["user"] for e in json_lines(s.output()) if e["message"] == "websocket connect"]
            for s in self.servers
        ]

    async def until(self, condition: Callable[[], bool], timeout: float = 5) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, (self.connects(), self.nginx.access_log())
            await asyncio.sleep(0.05)


@pytest.fixture
def proxied(daphne_factory) -> Iterator[Proxied]:
    env = {
        "DJANGO_LOG_LEVEL": "INFO",  # connection events name the process a socket landed on
        "CHAT_RATE_LIMIT_POSTS": "100000",
        "CHAT_RESYNC_INTERVAL": "1",
    }
    with ThreadPoolExecutor(3) as pool:
        servers = list(pool.map(lambda _: daphne_factory(**env), range(3)))
    nginx = Nginx()
    try:
        nginx.start([server.port for server in servers])
        yield Proxied(nginx, servers)
    finally:
        nginx.stop()


def login(base_url: str, username: str) -> str:
    """Log in through the proxy with the real form (CSRF and all); the session cookie."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(f"{base_url}/accounts/login/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    form = {"username": username, "password": password_for(username), "csrfmiddlewaretoken": token}
    request = urllib.request.Request(
        f"{base_url}/accounts/login/",
        data=urllib.parse.urlencode(form).encode(),
        headers={"Origin": base_url, "Referer": f"{base_url}/accounts/login/"},
    )
    with opener.open(request, timeout=10) as response:
        assert response.url == f"{base_url}/", response.url  # redirected to the lobby
    return next(c.value for c in jar if c.name == settings.SESSION_COOKIE_NAME)


@database_sync_to_async
def setup_room(*usernames: str) -> str:
    users = [create_user(name) for name in usernames]
    return create_room("Behind nginx", users[0]).slug


def test_the_compose_nginx_config_is_valid_nginx():
    # The compose flavour as the nginx image writes it out (the resolver from resolv.conf,
    # `web:8000`); only the include path moves.
    nginx = Nginx()
    site = (DEPLOY / "nginx.conf").read_text()
    assert site.count("${NGINX_LOCAL_RESOLVERS}") == 1
    site = site.replace("${NGINX_LOCAL_RESOLVERS}", "127.0.0.1")
    assert "${" not in site, "a variable the nginx image's entrypoint would not fill in"
    site = site.replace("/etc/nginx/chat/common.conf", str(DEPLOY / "nginx-common.conf"))
    try:
        result = nginx.test_config(site)
    finally:
        nginx.stop()
    assert result.returncode == 0, result.stderr


async def test_users_behind_nginx_land_on_different_processes_and_share_one_room(
    proxied: Proxied,
):
    slug = await setup_room("alice", "bob")
    alice_cookie = await asyncio.to_thread(login, proxied.url, "alice")
    bob_cookie = await asyncio.to_thread(login, proxied.url, "bob")

    # Two tabs each, opened one after another: nginx's round robin spreads them over all three.
    tabs = []
    for cookie in (alice_cookie, bob_cookie, alice_cookie, bob_cookie):
        tabs.append(await Client.open(proxied.url, cookie, slug))
    alice1, bob1, alice2, bob2 = tabs
    await proxied.until(lambda: sum(map(len, proxied.connects())) == 4)
    per_process = proxied.connects()
    assert all(per_process), per_process
    assert Counter(user for users in per_process for user in users) == {"alice": 2, "bob": 2}

    # Presence across the three processes: each user joined once, whatever the tabs.
    joined = [f["joined"] for f in await alice1.drain(1.0) if f["type"] == "presence"]
    assert joined == ["alice", "bob"]
    assert bob2.ready["online"] == ["alice", "bob"]

    await alice2.send({"type": "post", "body": "through nginx", "client_id": "n1"})
    for tab in tabs:
        frame = await tab.receive_type("message")
        assert (frame["cursor"], frame["message"]["body"]) == (1, "through nginx")
    await bob1.send({"type": "post", "body": "back through nginx"})
    for tab in tabs:
        frame = await tab.receive_type("message")
        assert (frame["cursor"], frame["message"]["body"]) == (2, "back through nginx")

    # Bob leaves only when his last tab closes, on whichever process it was.
    await bob1.close()
    assert [f for f in await alice1.drain(1.0) if f["type"] == "presence"] == []
    await bob2.close()
    left = await alice1.receive_type("presence")
    assert left == {"type": "presence", "online": ["alice"], "joined": None, "left": "bob"}
    for tab in (alice1, alice2):
        await tab.close()

    # nginx's own log (JSON, as deploy/nginx.conf writes it) shows the four upgrades on three
    # upstreams.
    await proxied.until(
        lambda: len([e for e in proxied.nginx.access_log() if e["status"] == 101]) == 4
    )
    upgrades = [e for e in proxied.nginx.access_log() if e["status"] == 101]
    assert {e["upstream"] for e in upgrades} == {f"127.0.0.1:{s.port}" for s in proxied.servers}
    assert all(e["path"] == f"/ws/rooms/{slug}/" for e in upgrades)


TOTAL = 300
WINDOW = 10


@database_sync_to_async
def stored_posts(slug: str) -> list[tuple[str, str]]:
    return list(Message.objects.filter(room__slug=slug).values_list("client_id", "body"))


async def test_a_process_killed_mid_chat_costs_no_acknowledged_message(proxied: Proxied):
    slug = await setup_room("sender", "reader")
    sender_cookie = await asyncio.to_thread(login, proxied.url, "sender")
    reader_cookie = await asyncio.to_thread(login, proxied.url, "reader")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 100
    bodies = {f"k{i}": f"post {i}" for i in range(TOTAL)}
    poster = Poster(Resilient(proxied.url, sender_cookie, slug), bodies, WINDOW)
    sender = poster.me
    reader = Resilient(proxied.url, reader_cookie, slug)
    killed: list[int] = []

    async def kill_the_senders_process() -> None:
        await poster.until_acked(TOTAL // 3)
        per_process = proxied.connects()
        (index,) = [i for i, users in enumerate(per_process) if "sender" in users]
        # The two users came through the proxy one after the other: two different processes.
        assert "reader" not in per_process[index], per_process
        await asyncio.to_thread(proxied.servers[index].stop, kill=True)
        killed.append(len(poster.acked))

    async with asyncio.timeout(110):
        await asyncio.gather(
            poster.run(deadline), read_until(reader, TOTAL, deadline), kill_the_senders_process()
        )

    assert killed and killed[0] < TOTAL, "the process died mid-chat"
    assert sender.reconnects >= 1  # the sender's socket was on the killed process
    # Every acknowledged post is stored exactly once and reached the other user.
    stored = await stored_posts(slug)
    assert Counter(key for key, _ in stored) == Counter(poster.acked)
    assert poster.acked == set(bodies)
    assert sorted(stored) == sorted(bodies.items())
    assert sorted(m["body"] for m in reader.messages.values()) == sorted(bodies.values())
    print(
        f"\nnginx: {TOTAL} posts, process killed after {killed[0]} acked; sender reconnects "
        f"{sender.reconnects}, {len(poster.answered_by_ack)} answered by ack "
        "(stored before the kill), "
        f"reader reconnects {reader.reconnects}; 0 lost, 0 duplicated"
    )


# --- HTTPS: nginx terminates TLS when certificate files are given ------------------------------


def self_signed_certificate(directory: Path) -> None:
    """fullchain.pem and privkey.pem for 127.0.0.1, as a certificate authority would name them."""
    need("openssl", "openssl")
    result = subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(directory / "privkey.pem"),
            "-out",
            str(directory / "fullchain.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def tls_site(root: Path, *, http_port: int, https_port: int, upstream: int) -> str:
    """What the nginx image runs once deploy/nginx-tls.sh has found the certificate: the plain
    server of deploy/nginx.conf (now redirecting) and deploy/nginx-tls.conf, on loopback ports."""
    for name in ("tls", "conf.d", "chat"):
        (root / name).mkdir()
    self_signed_certificate(root / "tls")
    shutil.copy(DEPLOY / "nginx-tls.conf", root / "chat" / "tls.conf")
    script = subprocess.run(
        ["sh", str(DEPLOY / "nginx-tls.sh")],
        env={"PATH": "/usr/bin:/bin", "CHAT_NGINX_ROOT": str(root), "HTTPS_PORT": str(https_port)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert script.returncode == 0, script.stderr
    assert "HTTPS on" in script.stdout
    plain = nginx_site(listen=http_port, upstreams=[upstream], redirect_dir=root / "chat-redirect")
    tls = (root / "conf.d" / "chat-tls.conf").read_text()
    for old, new in {
        "listen 8443 ssl http2;": f"listen 127.0.0.1:{https_port} ssl http2;",
        "/etc/nginx/tls/": f"{root}/tls/",
        "set $chat_backend web:8000;": "set $chat_backend chat_web;",
        "include /etc/nginx/chat/common.conf;": f"include {DEPLOY / 'nginx-common.conf'};",
    }.items():
        assert tls.count(old) >= 1, old
        tls = tls.replace(old, new)
    return plain + "\n" + tls


def test_without_a_certificate_nginx_stays_on_plain_http(tmp_path: Path):
    (tmp_path / "tls").mkdir()
    script = subprocess.run(
        ["sh", str(DEPLOY / "nginx-tls.sh")],
        env={"PATH": "/usr/bin:/bin", "CHAT_NGINX_ROOT": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert script.returncode == 0, script.stderr
    assert "plain HTTP only" in script.stdout
    assert list((tmp_path / "chat-redirect").iterdir()) == []


async def test_https_and_wss_through_the_repository_config_with_a_certificate(
    daphne_factory, tmp_path: Path
):
    await database_sync_to_async(create_user)("omkar")
    slug = await database_sync_to_async(lambda: create_room("Over TLS", create_user("ada")).slug)()

    daphne = tls_daphne(daphne_factory)
    nginx = Nginx()
    https_port = free_port()
    site = tls_site(tmp_path, http_port=nginx.port, https_port=https_port, upstream=daphne.port)
    context = ssl.create_default_context(cafile=str(tmp_path / "tls" / "fullchain.pem"))
    try:
        nginx.start([daphne.port], site=site)
        base = f"https://127.0.0.1:{https_port}"

        # Plain HTTP answers with a redirect to the same path over HTTPS.
        status, headers, _ = Browser(nginx.url).request("/accounts/login/?next=/")
        assert status == 301
        assert headers["Location"] == f"{base}/accounts/login/?next=/"

        # Over HTTPS the site knows it is behind TLS: HSTS, and cookies only for HTTPS.
        browser = Browser(base, ssl_context=context)
        status, headers, _ = browser.request("/accounts/login/")
        assert status == 200
        assert headers["Strict-Transport-Security"].startswith("max-age=")
        await asyncio.to_thread(browser.log_in, "omkar", password_for("omkar"))
        assert browser.cookie_is_secure(settings.SESSION_COOKIE_NAME)
        assert browser.cookie_is_secure(settings.CSRF_COOKIE_NAME)

        # A WebSocket over wss: the page's origin is https, and a post comes back.
        async with connect(
            f"wss://127.0.0.1:{https_port}/ws/rooms/{slug}/",
            ssl=context,
            additional_headers={
                "Cookie": f"{settings.SESSION_COOKIE_NAME}={browser.session}",
                "Origin": base,
            },
            open_timeout=10,
        ) as socket:
            ready = json.loads(await asyncio.wait_for(socket.recv(), 10))
            assert ready["type"] == "ready", ready
            await socket.send(json.dumps({"type": "post", "body": "over wss", "client_id": "t1"}))
            while True:
                frame = json.loads(await asyncio.wait_for(socket.recv(), 10))
                if frame["type"] == "message":
                    break
            assert frame["message"]["body"] == "over wss"
    finally:
        nginx.stop()


def tls_daphne(daphne_factory) -> Daphne:
    """A web process as the image runs it behind nginx with TLS (README, "TLS")."""
    return daphne_factory(
        DJANGO_HTTPS="1",
        DJANGO_TRUST_PROXY_HEADERS="1",
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        args=["--proxy-headers"],
    )


# --- files (PROTOCOL.md §8): Django checks, nginx sends -------------------------------------------


@pytest.fixture
def files_proxied(daphne_factory) -> Iterator[Proxied]:
    """One daphne process told it is behind nginx (CHAT_MEDIA_ACCEL), and nginx serving this
    run's media directory (tests/conftest.py) from the repository's internal location."""
    media = Path(settings.CHAT_MEDIA_ROOT)
    media.chmod(0o755)  # nginx's workers (nobody, when started as root) read it
    server = daphne_factory(CHAT_MEDIA_ACCEL="1", CHAT_MEDIA_ROOT=str(media))
    nginx = Nginx()
    try:
        nginx.start([server.port], site=nginx_site(
            listen=nginx.port, upstreams=[server.port], media_root=media
        ))  # fmt: skip
        yield Proxied(nginx, [server])
    finally:
        nginx.stop()


def fetch(base: str, path: str, cookie: str = "", **kwargs) -> tuple[int, dict, bytes]:
    """One request through the proxy: status, headers (case-insensitive), body."""
    headers = {"Cookie": cookie, "Origin": base, **kwargs.pop("headers", {})}
    request = urllib.request.Request(f"{base}{path}", headers=headers, **kwargs)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def csrf_cookie(base: str, session: str, slug: str) -> str:
    """The session and CSRF cookies, as the room page sets the latter."""
    cookie = f"{settings.SESSION_COOKIE_NAME}={session}"
    _, headers, _ = fetch(base, f"/rooms/{slug}/", cookie)
    token = re.search(r"csrftoken=([^;]+)", headers["Set-Cookie"]).group(1)
    return f"{cookie}; {settings.CSRF_COOKIE_NAME}={token}", token


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = "chat-test-boundary-7f3a"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def upload_through(base: str, cookie: str, token: str, slug: str, name: str, data: bytes):
    body, content_type = multipart(name, data)
    return fetch(
        base,
        f"/rooms/{slug}/uploads",
        cookie,
        data=body,
        method="POST",
        headers={"Content-Type": content_type, "X-CSRFToken": token},
    )


@database_sync_to_async
def private_room(*usernames: str) -> object:
    users = [create_user(name) for name in usernames]
    room = services.create_room(
        name="Files", created_by=users[0], kind="private", enforce_limit=False
    )
    services.add_member(room=room, by=users[0], username=usernames[1])
    return room


def media_files() -> list[Path]:
    return [p for p in Path(settings.CHAT_MEDIA_ROOT).rglob("*") if p.is_file()]


async def test_a_file_behind_nginx_is_sent_by_nginx_after_djangos_check_and_never_directly(
    files_proxied: Proxied,
):
    from chat.models import Attachment

    room = await private_room("alice", "bob", "carol")
    base = files_proxied.url
    alice = await asyncio.to_thread(login, base, "alice")
    cookie, token = await asyncio.to_thread(csrf_cookie, base, alice, room.slug)
    content = b"%PDF-1.4 " + bytes(range(256)) * 40
    status, _, body = await asyncio.to_thread(
        upload_through, base, cookie, token, room.slug, "minutes.pdf", content
    )
    assert status == 201, body
    uploaded = json.loads(body)
    await database_sync_to_async(services.post_message)(
        room=room, author=await database_sync_to_async(get_user)("alice"), body="",
        attach=(uploaded["id"],),
    )  # fmt: skip

    bob = f"{settings.SESSION_COOKIE_NAME}={await asyncio.to_thread(login, base, 'bob')}"
    status, headers, body = await asyncio.to_thread(fetch, base, uploaded["url"], bob)
    assert status == 200
    assert body == content
    assert headers["Content-Type"] == "application/pdf"
    assert headers["Content-Disposition"] == 'attachment; filename="minutes.pdf"'
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == "sandbox"
    # nginx's static file module sent it (Django's answer had no body and no ranges).
    assert headers["Accept-Ranges"] == "bytes" and "ETag" in headers
    status, _, part = await asyncio.to_thread(
        fetch, base, uploaded["url"], bob, headers={"Range": "bytes=0-3"}
    )
    assert (status, part) == (206, b"%PDF")

    carol = f"{settings.SESSION_COOKIE_NAME}={await asyncio.to_thread(login, base, 'carol')}"
    assert (await asyncio.to_thread(fetch, base, uploaded["url"], carol))[0] == 404
    assert (await asyncio.to_thread(fetch, base, uploaded["url"]))[0] == 404
    # The internal location is only reached through Django's X-Accel-Redirect.
    key = (await database_sync_to_async(Attachment.objects.get)(pk=uploaded["id"])).key
    for who in (bob, carol, ""):
        status, _, body = await asyncio.to_thread(fetch, base, f"/_chat_files/{key}", who)
        assert status == 404 and content not in body


async def test_a_body_over_the_upload_limit_is_refused_by_nginx_with_413_and_nothing_is_stored(
    files_proxied: Proxied,
):
    from chat.models import Attachment

    room = await private_room("alice", "bob")
    base = files_proxied.url
    alice = await asyncio.to_thread(login, base, "alice")
    cookie, token = await asyncio.to_thread(csrf_cookie, base, alice, room.slug)
    before = media_files()
    big = b"\0" * (27 * 1024 * 1024)
    status, _, _ = await asyncio.to_thread(
        upload_through, base, cookie, token, room.slug, "big.bin", big
    )
    assert status == 413
    assert await database_sync_to_async(Attachment.objects.count)() == 0
    assert media_files() == before
    # Under nginx's limit but over Django's (25 MiB): refused by the view, nothing kept either.
    status, _, body = await asyncio.to_thread(
        upload_through, base, cookie, token, room.slug, "big.bin", big[: 25 * 1024 * 1024 + 1]
    )
    assert status == 413, body
    assert "at most 25 MiB" in json.loads(body)["error"]
    assert await database_sync_to_async(Attachment.objects.count)() == 0
    assert media_files() == before


def get_user(username: str):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username=username)
