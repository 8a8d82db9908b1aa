"""Fixtures for daemon tests: a short socket path, fast timings, a daemon process."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from daemon_helpers import DaemonProcess

from loopback import Endpoint

# Fast timings: sends every 0.1 s, short backoff, short request timeout.
FAST_TUNING = "cooldown=0.1,base=0.05,cap=0.4,timeout=1,idle=5,stop_grace=3"


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory for the socket (``sun_path`` holds 108 bytes; pytest's tmp_path may be longer)."""
    path = Path(tempfile.mkdtemp(prefix="oxd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemon_env(sock_dir: Path, endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch) -> Endpoint:
    """Environment for a daemon sending to ``endpoint``; returns the endpoint."""
    monkeypatch.setenv("OX_TELEMETRY_SOCKET", str(sock_dir / "run" / "telemetry.sock"))
    monkeypatch.setenv("SAGEOX_TELEMETRY_ENDPOINT", endpoint.base_url + "/tevents")
    monkeypatch.setenv("OX_TELEMETRY_DAEMON_INTERVAL", "0.1")
    monkeypatch.setenv("OX_TELEMETRY_DAEMON_TUNING", FAST_TUNING)
    return endpoint


@pytest.fixture
def daemon(daemon_env: Endpoint, tmp_path: Path) -> Iterator[DaemonProcess]:
    """A running daemon (``daemon run`` child process) sending to the ``endpoint`` fixture."""
    proc = DaemonProcess(tmp_path / "daemon.log").start()
    yield proc
    proc.close()
