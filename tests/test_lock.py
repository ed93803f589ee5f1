"""The locks (`make lock`): every package pinned with its hashes, the locks agreeing with each other
and with pyproject.toml, and the tests running on the versions the lock names.

chatsite/serve.py and chat/realtime/transport.py reach into Twisted and autobahn; those are tested
here only on the versions a deployment installs, so a lock that lost them (or a virtualenv that
drifted from the lock) must fail here, not in production.
"""

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ("requirements.lock", "requirements-test.lock", "requirements-bench.lock")
PIN = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\\n((?:    --hash=sha256:[0-9a-f]{64}.*\n)+)", re.M
)


def pins(name: str) -> dict[str, str]:
    text = (ROOT / name).read_text()
    requirements = [line for line in text.splitlines() if line and line[0] not in "# "]
    found = {canonicalize_name(n): v for n, v, _hashes in PIN.findall(text)}
    # Every requirement line is a hashed `name==version`: nothing floats, nothing unhashed.
    assert len(found) == len(requirements), name
    return found


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.mark.parametrize("lock", LOCKS)
def test_every_package_in_a_lock_is_pinned_with_hashes(lock: str):
    assert pins(lock)


def test_each_lock_keeps_the_versions_of_the_one_it_extends():
    run, test, bench = (pins(lock) for lock in LOCKS)
    assert {name: test[name] for name in run} == run
    assert {name: bench[name] for name in test} == test


def test_the_locks_agree_with_pyproject():
    run, test, bench = (pins(lock) for lock in LOCKS)
    extras = project()["optional-dependencies"]
    for requirements, lock in (
        (project()["dependencies"], run),
        (extras["test"], test),
        (extras["bench"], bench),
    ):
        for line in requirements:
            requirement = Requirement(line)
            assert requirement.specifier.contains(lock[canonicalize_name(requirement.name)]), line


def test_the_transport_patches_run_on_locked_twisted_and_autobahn():
    run = pins("requirements.lock")
    for name in ("twisted", "autobahn", "daphne", "txaio"):
        assert name in run
        assert metadata.version(name) == run[name], f"{name}: the virtualenv is not the lock's"
