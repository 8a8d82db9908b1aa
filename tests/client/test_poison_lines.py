"""Issue 15, item 4: a queue line nested 5,000 deep costs only itself; the uploader sends the rest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from loopback import Endpoint
from ox_telemetry import Event, FileQueue


def test_a_5000_deep_queue_line_does_not_jam_the_uploader(project: Path, endpoint: Endpoint) -> None:
    queue = FileQueue(str(project))
    queue.append(Event("first", command="a"))
    with open(queue.path, "ab") as f:
        f.write(b'{"type":"deep","x":' + b"[" * 5000 + b"]" * 5000 + b"}\n")
    queue.append(Event("second", command="b"))
    url = endpoint.base_url + "/api/v1/telemetry"
    done = subprocess.run([sys.executable, "-m", "ox_telemetry.uploader", "--queue", queue.path, "--url", url],
                          capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [e["type"] for e in endpoint.accepted_events()] == ["first", "second"]
    state = json.loads(Path(queue.path + ".state.json").read_text())
    assert state["failures"] == 0 and state["last_success"]
    assert queue.count() == 0
    assert queue.should_flush() is False  # reading the queue never raises either


def test_a_lone_surrogate_in_a_queue_line_is_sent_as_valid_utf8() -> None:
    # A queue file this client did not write may escape a lone surrogate; sent as it was, the collector refuses
    # the whole batch (invalid UTF-8) and the good events with it.
    from ox_telemetry.delivery import queued_line

    sent = queued_line(b'{"type":"x","timestamp":"2026-12-04T00:00:00Z","command":"a\\ud800b","event_id":"e1"}')
    assert sent is not None
    text, _ = sent
    json.loads(text).get("command", "").encode("utf-8")  # strict: a lone surrogate raises here
    assert json.loads(text)["event_id"] == "e1"
