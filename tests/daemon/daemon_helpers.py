"""Running a real daemon process for tests, and talking to it over its real socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from loopback import wait_until

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """``ox-telemetry daemon ARGS`` in a subprocess with this test's environment."""
    return subprocess.run(
        [PYTHON, "-m", "ox_telemetry.cli", "daemon", *args], capture_output=True, text=True, timeout=timeout,
        env=dict(os.environ),
    )


def telemetry_line(event: str, **props: Any) -> bytes:
    """One IPC ``telemetry`` line."""
    return json.dumps({"type": "telemetry", "payload": {"event": event, "props": props}}).encode() + b"\n"


def connect(path: str | None = None, timeout: float = 10.0) -> socket.socket:
    """A blocking connection to the daemon socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path or os.environ["OX_TELEMETRY_SOCKET"])  # blocking: waits out a full accept backlog
    sock.settimeout(timeout)
    return sock


def read_line(sock: socket.socket) -> dict[str, Any] | None:
    """One answer line from ``sock`` (None when the daemon closed without answering)."""
    data = b""
    while not data.endswith(b"\n"):
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return None
        if not chunk:
            return None
        data += chunk
    answer: dict[str, Any] = json.loads(data)
    return answer


def request(kind: str, payload: dict[str, Any] | None = None, timeout: float = 20.0) -> dict[str, Any] | None:
    """Send one request and return its answer."""
    message: dict[str, Any] = {"type": kind}
    if payload is not None:
        message["payload"] = payload
    with connect(timeout=timeout) as sock:
        sock.sendall(json.dumps(message).encode() + b"\n")
        return read_line(sock)


def status() -> dict[str, Any]:
    """The daemon's status data."""
    answer = request("status")
    assert answer and answer["success"], answer
    data: dict[str, Any] = answer["data"]
    return data


class DaemonProcess:
    """``ox-telemetry daemon run`` as a child of the test (so a test may ``kill -9`` it)."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> DaemonProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "ox_telemetry.cli", "daemon", "run", "-v"], stdout=log, stderr=log,
                env=dict(os.environ),
            )
        assert wait_until(self._answers, timeout), f"daemon did not start:\n{self.log()}"
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
        try:
            answer = request("ping", timeout=1.0)
        except OSError:
            return False
        return bool(answer and answer.get("success"))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int:
        """Ask it to stop over the socket; returns its exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            try:
                request("stop", timeout=5.0)
            except OSError:
                self.proc.terminate()
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
