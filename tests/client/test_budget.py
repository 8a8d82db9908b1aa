"""One budget per user: at most 2 uploaders alive and 10 requests a minute per endpoint during an outage,
however many projects and CLI runs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from loopback import Endpoint, wait_until
from ox_telemetry import Event, FileQueue, background, budget, paths
from ox_telemetry.delivery import Delivery, Policy
from ox_telemetry.queue import JsonlQueue
from ox_telemetry.transport import UrllibTransport

# Short CLI runs over several projects, one after the other: each finds its queue due to flush.
_CLI_RUNS = """
import sys
from ox_telemetry import Client, Event
url, rounds, roots = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
for r in range(rounds):
    for root in roots:
        c = Client("s", project_root=root, base_url=url, version="1.0")
        c.start()
        c.track(Event("command_complete", command=f"run {r}"))
        c.stop()
"""


def _uploaders(marker: str) -> int:
    """Uploader processes alive whose command line names ``marker`` (this test's directory)."""
    alive = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{pid}/stat", "rb") as f:
                zombie = f.read().rsplit(b")", 1)[-1].split()[0] == b"Z"
        except OSError:
            continue
        if b"ox_telemetry.uploader" in cmdline and marker.encode() in cmdline and not zombie:
            alive += 1
    return alive


def _project(root: Path, events: int) -> str:
    (root / ".sageox").mkdir(parents=True)
    (root / ".sageox" / "README.md").write_text("ox project\n")
    queue = FileQueue(str(root))
    for i in range(events):
        queue.append(Event("command_complete", command=f"old {i}"))
    return str(root)


def test_an_outage_over_many_projects_costs_two_uploaders_and_ten_requests(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    endpoint.hang = True  # blackholed: every request waits for the uploader's timeout
    tuning = "timeout=0.5,base=0.05,cap=0.1,budget=1.5,run_base=0.2,run_cap=0.4"  # runs give up and retry soon
    env = dict(os.environ, OX_TELEMETRY_UPLOAD_TUNING=tuning)
    roots = [_project(tmp_path / f"p{n:02}", 10) for n in range(20)]
    alive: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            alive.append(_uploaders(str(tmp_path)))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        runs = [subprocess.Popen([sys.executable, "-c", _CLI_RUNS, endpoint.base_url, "3", *roots[w::4]], env=env)
                for w in range(4)]
        assert all(p.wait(timeout=60) == 0 for p in runs)
        assert wait_until(lambda: _uploaders(str(tmp_path)) == 0, 30)
    finally:
        done.set()
        watcher.join(5)
    assert 1 <= max(alive) <= 2, max(alive)
    assert 1 <= len(endpoint.requests) <= 10, len(endpoint.requests)
    assert [FileQueue(r).count() for r in roots] == [13] * 20  # the events wait on disk


def test_every_sender_spends_the_same_budget_and_an_answer_restores_it(tmp_path: Path, endpoint: Endpoint) -> None:
    endpoint.status = 503
    url = endpoint.base_url + "/api/v1/telemetry"
    policy = Policy(timeout=1, base=0.01, cap=0.02, budget=0.5)
    queues = [JsonlQueue(str(tmp_path / f"q{n}.jsonl")) for n in range(8)]
    for queue in queues:
        queue.append_line(Event("x", event_id=queue.path).to_json().encode())
    # Uploaders, the daemon's hand-off, a host thread and `flush` all run a Delivery.
    assert {Delivery(q, UrllibTransport(), url, policy=policy).run() for q in queues} == {"gave_up"}
    assert len(endpoint.requests) == 10
    assert budget.blocked_until(url) > time.time()
    assert background.spawn_uploader(queues[0], url, "1.0") is False  # no process for a spent budget
    assert len(endpoint.requests) == 10
    # Garbage in the record is no record; an answer from the endpoint starts it afresh.
    Path(paths.request_budget_path(url)).write_bytes(b"\x00garbage")
    assert budget.blocked_until(url) == 0
    endpoint.status = 200
    assert Delivery(queues[0], UrllibTransport(), url, policy=policy).run() == "delivered"
    assert not os.path.exists(paths.request_budget_path(url))


def test_no_free_uploader_slot_means_no_uploader(tmp_path: Path, endpoint: Endpoint) -> None:
    slots = [budget.take_slot() for _ in range(3)]
    assert slots[0] is not None and slots[1] is not None and slots[2] is None
    queue = JsonlQueue(str(tmp_path / "q.jsonl"))
    queue.append_line(Event("x").to_json().encode())
    url = endpoint.base_url + "/api/v1/telemetry"
    assert background.spawn_uploader(queue, url, "1.0") is False
    assert not queue.sender_busy()  # the queue's send lock was let go
    slots[0].release()
    slots[0].close()
    assert background.spawn_uploader(queue, url, "1.0") is True
    assert wait_until(lambda: len(endpoint.accepted_events()) == 1)
    assert wait_until(lambda: not queue.sender_busy())
