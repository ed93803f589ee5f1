"""The `.env` of a deployment, as `make env` writes it: for the compose tests."""

import shutil
import subprocess
from pathlib import Path

from tests.conftest import ROOT


def make_env(directory: Path) -> dict[str, str]:
    """Run `make env` (a .env from .env.example with fresh secrets) in `directory`."""
    shutil.copy(ROOT / ".env.example", directory / ".env.example")
    result = subprocess.run(
        ["make", "-s", "-f", str(ROOT / "Makefile"), "-C", str(directory), "env"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return read_env(directory / ".env")


def read_env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key: value for key, value in pairs if not key.startswith("#")}
