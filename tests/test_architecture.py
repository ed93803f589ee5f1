"""The layers declared in pyproject.toml ([tool.importlinter]) hold: lint-imports, as CI runs it.

A door (socket, view, admin) may import the services, the services the reads and the wire, never
the other way; the hub never imports the sockets; the terminal client imports nothing of the
server. A new module that breaks a layer fails here with the import that does it.
"""

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_the_import_layers_hold():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout
    assert result.stdout.count("KEPT") == 2, result.stdout
