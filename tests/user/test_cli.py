"""The ``ox-telemetry`` console script itself, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version


def test_version_prints_the_installed_version() -> None:
    out = subprocess.run([sys.executable, "-m", "ox_telemetry.cli", "--version"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert out.stdout.strip() == f"ox-telemetry {version('ox-telemetry')}"
