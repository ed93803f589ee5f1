"""What `docker compose up` runs, checked natively (no Docker engine runs on these machines)."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import ROOT, free_port, need


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess:
    binary = need("docker-compose", "docker-compose")
    return subprocess.run(
        [binary, "-f", "docker-compose.yml", "config", "-q"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_file_is_valid():
    result = compose_config({"DJANGO_SECRET_KEY": "compose-check"})
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_run_without_a_secret_key():
    result = compose_config({})
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


def test_entrypoint_migrates_and_daphne_serves_healthz(tmp_path: Path, redis_server):
    port = free_port()
    database = tmp_path / "fresh.sqlite3"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{database}",
        "REDIS_URL": redis_server.url,
        "DJANGO_SECRET_KEY": "entrypoint-check",
        "DJANGO_DEBUG": "0",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    process = subprocess.Popen(
        [
            str(ROOT / "docker" / "entrypoint.sh"),
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "chatsite.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert json.load(r) == {"database": "ok", "channel_layer": "ok"}
                    break
            except OSError:
                assert time.monotonic() < deadline, "daphne never served /healthz"
                time.sleep(0.2)
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0]
    assert "Applying chat.0001_initial... OK" in output
