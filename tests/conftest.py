"""Shared fixtures: an isolated user, an initialised project, a loopback endpoint."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from loopback import Endpoint

# Environment that changes what the client does; every test starts without it.
_CLIENT_ENV = (
    "DO_NOT_TRACK", "SAGEOX_TELEMETRY", "SAGEOX_ENDPOINT", "SAGEOX_TELEMETRY_ENDPOINT",
    "SAGEOX_TELEMETRY_OTLP_ENDPOINT", "SAGEOX_CLIENT_ID", "OX_XDG_ENABLE", "OX_USER_CONFIG", "OX_TELEMETRY_DEBUG",
    "OX_TELEMETRY_SOCKET", "OX_TELEMETRY_UPLOAD_TUNING", "XDG_CONFIG_HOME", "XDG_CACHE_HOME",
    "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR",
)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HOME for every test, with no opt-out or override in the environment."""
    for name in _CLIENT_ENV:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    # No test may find a real daemon of the user's.
    monkeypatch.setenv("OX_TELEMETRY_SOCKET", str(tmp_path / "no-daemon.sock"))
    # Short delivery timings for uploaders the tests start.
    monkeypatch.setenv(
        "OX_TELEMETRY_UPLOAD_TUNING", "timeout=2,base=0.05,cap=0.5,budget=3,run_base=30,run_cap=60"
    )
    return home


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An initialised project (``.sageox/README.md``) with a repo_id."""
    root = tmp_path / "project"
    (root / ".sageox").mkdir(parents=True)
    (root / ".sageox" / "README.md").write_text("ox project\n")
    (root / ".sageox" / "config.json").write_text('{"repo_id": "repo_test"}')
    return root


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    """A real HTTP server on loopback, answering 200 until told otherwise."""
    server = Endpoint()
    yield server
    server.close()


@pytest.fixture
def stand_in_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """A real Unix socket listener standing in for the daemon: yields the messages it read, and answers
    every message but one-way ``telemetry`` with ``{"success": true}`` as the daemon does."""
    path = str(tmp_path / "d.sock")
    monkeypatch.setenv("OX_TELEMETRY_SOCKET", path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)
    seen: list[Any] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                for line in conn.makefile("rb"):
                    message = json.loads(line)
                    seen.append(message)
                    if message.get("type") != "telemetry":
                        conn.sendall(b'{"success": true, "data": {"pid": 1}}\n')

    threading.Thread(target=serve, daemon=True).start()
    yield seen
    server.close()
