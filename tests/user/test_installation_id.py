"""The anonymous installation id in client batches, and ``ox-telemetry forget`` (issue 18)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from loopback import Endpoint
from ox_telemetry import Event, FileQueue, paths
from ox_telemetry.wire import Batch


def ox(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``ox-telemetry ARGS`` in a fresh interpreter, with the test's isolated environment."""
    return subprocess.run([sys.executable, "-m", "ox_telemetry.cli", *args], cwd=cwd, env=dict(os.environ),
                          capture_output=True, text=True, timeout=60)


def _sent_ids(endpoint: Endpoint) -> list[Any]:
    return [r.body.get("client_id") for r in endpoint.requests if isinstance(r.body, dict)]


def test_a_batch_carries_the_client_id_only_when_there_is_one() -> None:
    with_id = json.loads(Batch([Event("x")], "1.0", client_id="abc").to_json())
    assert with_id["client_id"] == "abc" and Batch.from_dict(with_id).client_id == "abc"
    assert "client_id" not in json.loads(Batch([Event("x")], "1.0").to_json())


def test_sends_carry_the_id_disable_deletes_it_and_the_next_send_after_enable_makes_another(
        home: Path, project: Path, endpoint: Endpoint) -> None:
    FileQueue(str(project)).append(Event("command_complete", command="one"))
    assert ox("flush", "--endpoint", endpoint.base_url, cwd=project).returncode == 0
    stored = Path(paths.client_id_path()).read_text().strip()
    assert str(uuid.UUID(stored)) == stored and uuid.UUID(stored).version == 4
    assert _sent_ids(endpoint) == [stored]

    assert ox("disable", cwd=project).returncode == 0
    assert not Path(paths.client_id_path()).exists()
    assert ox("enable", cwd=project).returncode == 0
    FileQueue(str(project)).append(Event("command_complete", command="two"))
    assert ox("flush", "--endpoint", endpoint.base_url, cwd=project).returncode == 0
    again = Path(paths.client_id_path()).read_text().strip()
    assert again != stored and _sent_ids(endpoint) == [stored, again]


def _an_installation_with_a_queued_event(project: Path) -> tuple[str, FileQueue]:
    """A stored installation id and a project queue holding one event: what forget deletes, or keeps."""
    client_id = str(uuid.uuid4())
    Path(paths.client_id_path()).parent.mkdir(parents=True, exist_ok=True)
    Path(paths.client_id_path()).write_text(client_id + "\n")
    queue = FileQueue(str(project))
    queue.append(Event("command_complete", command="queued"))
    return client_id, queue


def test_forget_asks_the_endpoint_then_deletes_the_id_and_queues_and_stays_on(
        home: Path, project: Path, endpoint: Endpoint) -> None:
    client_id, queue = _an_installation_with_a_queued_event(project)
    endpoint.reply = b'{"forgotten": 3}'
    run = ox("forget", "--json", "--endpoint", endpoint.base_url, cwd=project)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["forgotten"] == 3 and result["client_id"] == client_id
    [asked] = endpoint.requests
    assert asked.path == "/api/v1/forget" and asked.body == {"client_id": client_id}
    assert asked.headers["content-type"] == "application/json"
    assert not Path(paths.client_id_path()).exists() and not Path(queue.path).exists()
    status = json.loads(ox("status", "--json", cwd=project).stdout)
    assert status["enabled"] is True  # forgetting is not opting out


def test_forget_keeps_the_id_and_queues_when_the_endpoint_does_not_confirm(
        home: Path, project: Path, endpoint: Endpoint) -> None:
    client_id, queue = _an_installation_with_a_queued_event(project)
    endpoint.status = 503
    run = ox("forget", "--endpoint", endpoint.base_url, cwd=project)
    assert run.returncode == 1 and "HTTP 503" in run.stderr and "try again" in run.stderr
    assert Path(paths.client_id_path()).read_text().strip() == client_id
    assert Path(queue.path).exists()
