"""Processes we start never run code from the CLI's working tree or the environment's Python path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from loopback import Endpoint, wait_until
from ox_telemetry import FileQueue

SRC = str(Path(__file__).resolve().parents[2] / "src")

# A host CLI that runs isolated itself (so the planted files below cannot reach *it*) and records 12 commands:
# stop() finds a flush due and starts the uploader from this cwd, with this environment.
_HOST = """
import sys
sys.path.insert(0, sys.argv[1])
from ox_telemetry import Client
c = Client("s", project_root=sys.argv[2], base_url=sys.argv[3], version="1.0")
c.start()
for i in range(12):
    c.track_command(f"cmd {i}", 0.01, True)
c.stop()
"""


def _plant(evil: Path, marker: Path) -> dict[str, str]:
    """A hostile cwd: a package shadowing ours, a sitecustomize and a startup file, each writing ``marker``."""
    write = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\n"
    (evil / "ox_telemetry").mkdir(parents=True)
    (evil / "ox_telemetry" / "__init__.py").write_text(write)
    (evil / "ox_telemetry" / "uploader.py").write_text(write)
    (evil / "sitecustomize.py").write_text(write)
    (evil / "usercustomize.py").write_text(write)
    (evil / "startup.py").write_text(write)
    return dict(os.environ, PYTHONPATH=str(evil), PYTHONSTARTUP=str(evil / "startup.py"),
                PYTHONUSERBASE=str(evil))


def test_the_uploader_runs_no_code_from_the_cwd_or_the_python_path(
    tmp_path: Path, project: Path, endpoint: Endpoint
) -> None:
    evil, marker = tmp_path / "clone", tmp_path / "pwned"
    env = _plant(evil, marker)
    subprocess.run([sys.executable, "-I", "-c", _HOST, SRC, str(project), endpoint.base_url],
                   cwd=evil, env=env, timeout=30, check=True)
    assert wait_until(lambda: len(endpoint.accepted_events()) == 12 or marker.exists(), 30)
    assert not marker.exists(), marker.read_text()
    assert len(endpoint.accepted_events()) == 12  # the real uploader delivered
    queue = FileQueue(str(project))
    assert wait_until(lambda: not queue.sender_busy(), 30)


def test_daemon_start_runs_no_code_from_the_cwd_or_the_python_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock_dir = tempfile.mkdtemp(prefix="oxi-", dir="/tmp")
    monkeypatch.setenv("OX_TELEMETRY_SOCKET", os.path.join(sock_dir, "run", "telemetry.sock"))
    evil, marker = tmp_path / "clone", tmp_path / "pwned"
    env = _plant(evil, marker)
    cli = [sys.executable, "-I", "-c", f"import sys;sys.path.insert(0,{SRC!r});from ox_telemetry.cli import main;"
           "sys.exit(main())", "daemon"]
    try:
        started = subprocess.run([*cli, "start"], cwd=evil, env=env, timeout=30, capture_output=True, text=True)
        assert started.returncode == 0, started.stderr
        assert not marker.exists(), marker.read_text()
    finally:
        stopped = subprocess.run([*cli, "stop"], cwd=evil, env=env, timeout=30, capture_output=True, text=True)
        shutil.rmtree(sock_dir, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr
