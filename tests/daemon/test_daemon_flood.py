"""Issue 15, item 5: at its connection limit the daemon never accepts and drops; idle connections starve no one.

The senders run in a subprocess with a hard timeout: a regression must fail, not hang the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from daemon_helpers import DaemonProcess, request

from loopback import Endpoint, wait_until

# argv: result file, idle connections to hold, senders, events per sender. Holds the idle connections
# (blocking connects: they wait in the backlog if need be), sends the events through the client's own
# ipc.send, writes which ones it reported as sent, then holds on until its stdin closes.
SENDER = r"""
import json, os, socket, sys, threading
from ox_telemetry import ipc

out, idle, senders, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
held = []
for _ in range(idle):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.environ["OX_TELEMETRY_SOCKET"])
    held.append(s)
sent = []

def send(sender):
    for i in range(per):
        n = sender * per + i
        if ipc.send({"type": "telemetry", "payload": {"event": "flood", "props": {"n": n}}}):
            sent.append(n)

threads = [threading.Thread(target=send, args=(k,)) for k in range(senders)]
for t in threads:
    t.start()
for t in threads:
    t.join()
with open(out + ".tmp", "w") as f:
    json.dump(sent, f)
os.rename(out + ".tmp", out)
sys.stdin.read()
"""


def _flood(tmp_path: Path, idle: int, senders: int, per: int, endpoint: Endpoint) -> list[int]:
    """Run the sender; while it still holds its idle connections, check that ping works and that
    every event it reported as sent is delivered. Returns the events reported as sent."""
    out = tmp_path / "sent.json"
    proc = subprocess.Popen([sys.executable, "-c", SENDER, str(out), str(idle), str(senders), str(per)],
                            stdin=subprocess.PIPE)
    try:
        assert wait_until(lambda: out.exists() or proc.poll() is not None, 60), "sender did not finish"
        assert out.exists(), f"sender exited with {proc.returncode}"
        sent: list[int] = json.loads(out.read_text())
        answer = lambda: (request("ping", timeout=2.0) or {}).get("success") is True  # noqa: E731
        assert wait_until(answer, 10), "ping refused while idle connections are held"

        def delivered() -> bool:
            seen = {e["props"]["n"] for e in endpoint.accepted_events() if e["event"] == "flood"}
            return seen >= set(sent)

        assert wait_until(delivered, 20), "an event reported as sent was lost"
        return sent
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_an_event_sent_past_150_idle_connections_is_delivered_or_reported_unsent(
    daemon: DaemonProcess, endpoint: Endpoint, tmp_path: Path
) -> None:
    _flood(tmp_path, idle=150, senders=1, per=1, endpoint=endpoint)


def test_a_flood_of_1000_connections_loses_nothing_it_acknowledged(
    daemon: DaemonProcess, endpoint: Endpoint, tmp_path: Path
) -> None:
    sent = _flood(tmp_path, idle=100, senders=10, per=100, endpoint=endpoint)
    assert len(sent) > 0  # the backlog takes most of them; a full one makes connect fail, which is allowed
