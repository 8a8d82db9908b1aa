"""``flush_queue``: a CLI hands its project queue to the running daemon; nothing is ever sent twice."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from daemon_helpers import DaemonProcess, request, status

from loopback import Endpoint, wait_until
from ox_telemetry import Client, Event, FileQueue

CLI_RUN = """
import sys
from ox_telemetry import Client
for run in range(int(sys.argv[3])):
    client = Client("s", project_root=sys.argv[1], base_url=sys.argv[2], version="1.2.3")
    client.start()
    for i in range(12):
        client.track_command(f"{sys.argv[4]}-{run}-{i}", 0.01, True)
    client.stop()
"""


def _cli_events(endpoint: Endpoint) -> list[dict[str, object]]:
    accepted = (r for r in endpoint.requests if r.status == 200 and r.path == "/api/v1/telemetry" and r.body)
    return [e for r in accepted for e in r.body["events"]]


def test_a_cli_queue_is_sent_by_the_daemon(daemon: DaemonProcess, endpoint: Endpoint, project: Path) -> None:
    client = Client("sess", project_root=str(project), base_url=endpoint.base_url, version="9.9.9")
    client.start()
    for i in range(12):
        client.track_command(f"cmd {i}", 0.01, True)
    client.stop()  # 12 queued: due, and handed to the daemon instead of a new uploader
    assert wait_until(lambda: len(_cli_events(endpoint)) == 12)
    queue_path = str(project / ".sageox" / "cache" / "telemetry.jsonl")
    assert wait_until(lambda: f"queue {queue_path}: delivered" in daemon.log(), 10), daemon.log()
    assert wait_until(lambda: FileQueue(str(project)).count() == 0)
    body = next(r.body for r in endpoint.requests if r.path == "/api/v1/telemetry")
    assert body["cli_version"] == "9.9.9"


def test_daemon_and_concurrent_uploaders_never_send_an_event_twice(
    daemon: DaemonProcess, endpoint: Endpoint, project: Path
) -> None:
    endpoint.delay = 0.02  # sends overlap with appends and with each other
    env = dict(os.environ)
    runs, processes = 4, 4
    clis = [
        subprocess.Popen([sys.executable, "-c", CLI_RUN, str(project), endpoint.base_url, str(runs), f"p{p}"], env=env)
        for p in range(processes)
    ]
    queue_path = str(project / ".sageox" / "cache" / "telemetry.jsonl")
    stop = threading.Event()

    def compete() -> None:
        # Uploader processes and repeated hand-offs, racing the daemon's own sends of the same queue.
        while not stop.is_set():
            subprocess.run(
                [sys.executable, "-m", "ox_telemetry.uploader", "--queue", queue_path,
                 "--url", endpoint.base_url + "/api/v1/telemetry"], env=env, capture_output=True, timeout=30,
            )
            request("flush_queue", {"queue_path": queue_path, "url": endpoint.base_url + "/api/v1/telemetry",
                                    "cli_version": "x"})

    racer = threading.Thread(target=compete)
    racer.start()
    try:
        for proc in clis:
            assert proc.wait(60) == 0
    finally:
        stop.set()
        racer.join(60)
    total = runs * processes * 12
    request("flush_queue", {"queue_path": queue_path, "url": endpoint.base_url + "/api/v1/telemetry"})
    assert wait_until(lambda: len(_cli_events(endpoint)) >= total, 30), len(_cli_events(endpoint))
    ids = Counter(str(e["event_id"]) for e in _cli_events(endpoint))
    assert len(ids) == total
    assert ids.most_common(1)[0][1] == 1  # never twice


def _queued_project(root: Path, endpoint: Endpoint) -> Path:
    """An initialised project at ``root`` with 3 events queued."""
    (root / ".sageox").mkdir(parents=True)
    (root / ".sageox" / "README.md").write_text("x")
    queue = FileQueue(str(root))
    for i in range(3):
        queue.append(Event("queued", command=f"c{i}"))
    return root


@pytest.mark.parametrize("trap", ["linked .sageox", "linked cache", "FIFO queue"])
def test_flush_queue_refuses_a_path_that_is_no_queue_of_ours(
    daemon: DaemonProcess, endpoint: Endpoint, tmp_path: Path, trap: str
) -> None:
    other = _queued_project(tmp_path / "other", endpoint)
    root = tmp_path / "cloned"
    if trap == "linked .sageox":  # a cloned repository's .sageox pointing at another project's
        root.mkdir()
        (root / ".sageox").symlink_to(other / ".sageox")
    elif trap == "linked cache":
        (root / ".sageox").mkdir(parents=True)
        (root / ".sageox" / "README.md").write_text("x")
        (root / ".sageox" / "cache").symlink_to(other / ".sageox" / "cache")
    else:
        (root / ".sageox" / "cache").mkdir(parents=True)
        (root / ".sageox" / "README.md").write_text("x")
        os.mkfifo(root / ".sageox" / "cache" / "telemetry.jsonl")
    queue_path = str(root / ".sageox" / "cache" / "telemetry.jsonl")
    answer = request("flush_queue", {"queue_path": queue_path, "url": endpoint.base_url + "/api/v1/telemetry"})
    assert answer is not None and answer["success"] is False, answer
    assert "flush_queue" in answer["error"] and ("link" in answer["error"] or "regular" in answer["error"])
    assert status()["queues_refused"] == 1
    # A good path is still served, and the refused one sent nothing meanwhile.
    good = str(other / ".sageox" / "cache" / "telemetry.jsonl")
    assert request("flush_queue", {"queue_path": good, "url": endpoint.base_url + "/api/v1/telemetry"}) == {
        "success": True}
    assert wait_until(lambda: len(_cli_events(endpoint)) >= 3, 10)
    assert wait_until(lambda: f"queue {good}: delivered" in daemon.log(), 10), daemon.log()
    assert len(_cli_events(endpoint)) == 3
