"""Podman for the image tests (tests/test_image.py, tests/test_compose.py): no Docker engine runs on
these machines, so the repository's Dockerfile and docker-compose.yml run on podman, over stand-in
base images made from Debian's packages (docker/standin/, README "How the image is tested").
"""

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import ROOT

STANDIN = ROOT / "docker" / "standin"


def podman(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    if check and result.returncode != 0:
        pytest.fail(f"podman {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def require(*binaries: tuple[str, str]) -> None:
    """Fail (never skip) when podman, mmdebstrap or another of `binaries` is missing."""
    for binary, package in (("podman", "podman"), ("mmdebstrap", "mmdebstrap"), *binaries):
        if shutil.which(binary) is None:
            pytest.fail(
                f"`{binary}` is not installed: run docker/standin/podman-setup.sh as root "
                f"(Debian's `{package}` and what podman needs here); this test does not skip."
            )


def build_standins(*names: str) -> None:
    """Make the stand-in images (docker/standin/<name>.sh) side by side; each script reuses an
    image that is up to date with its files, so only the first run of a machine pays."""

    def build(name: str) -> tuple[str, subprocess.CompletedProcess]:
        script = STANDIN / f"{name}.sh"
        return name, subprocess.run([str(script)], capture_output=True, text=True, timeout=900)

    with ThreadPoolExecutor(len(names)) as pool:
        for name, result in pool.map(build, names):
            assert result.returncode == 0, f"stand-in {name}:\n{result.stdout}\n{result.stderr}"
