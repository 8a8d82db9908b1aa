"""The daemon reads its settings as the client does: ``OX_TELEMETRY_DEBUG=yes`` turns on debug logging for both."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from daemon_helpers import connect, request

from loopback import Endpoint, wait_until


@pytest.mark.parametrize("value", ["yes", "ON"])
def test_debug_words_turn_on_debug_logging(
    value: str, daemon_env: Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OX_TELEMETRY_DEBUG", value)  # the client prints events for these; the daemon logs at debug
    log_path = tmp_path / "daemon.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ox_telemetry.cli", "daemon", "run"],
                                stdout=log, stderr=log, env=dict(os.environ))
    try:
        assert wait_until(lambda: proc.poll() is not None or _answers(), 15), log_path.read_text()
        with connect() as sock:
            sock.sendall(b"not json\n")
            sock.recv(65536)
        assert wait_until(lambda: "DEBUG bad line" in log_path.read_text(), 10), log_path.read_text()
        request("stop", timeout=5.0)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _answers() -> bool:
    try:
        answer = request("ping", timeout=1.0)
    except OSError:
        return False
    return bool(answer and answer.get("success"))
