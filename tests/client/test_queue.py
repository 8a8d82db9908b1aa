"""FileQueue: the contract member by member, the bound, and safety across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from ox_telemetry import Event, FileQueue
from ox_telemetry._time import now
from ox_telemetry.queue import MAX_BYTES, JsonlQueue


def test_empty_root_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        FileQueue("")


def test_path(project: Path) -> None:
    assert FileQueue(str(project)).path == str(project / ".sageox" / "cache" / "telemetry.jsonl")


def test_uninitialised_project_is_not_written(tmp_path: Path) -> None:
    queue = FileQueue(str(tmp_path))
    queue.append(Event("x"))
    assert not os.path.exists(queue.path) and queue.read_all() == [] and queue.count() == 0


@pytest.mark.parametrize("marker", ["README.md", ".repo_abc123"])
def test_initialised_by_either_marker(tmp_path: Path, marker: str) -> None:
    (tmp_path / ".sageox").mkdir()
    (tmp_path / ".sageox" / marker).write_text("")
    queue = FileQueue(str(tmp_path))
    queue.append(Event("x"))
    assert queue.count() == 1


def test_append_read_count_truncate(project: Path) -> None:
    queue = FileQueue(str(project))
    assert queue.read_all() == [] and queue.count() == 0
    for i in range(3):
        queue.append(Event("command_complete", command=f"c{i}"))
    events = queue.read_all()
    assert [e.command for e in events] == ["c0", "c1", "c2"]
    assert all(e.timestamp is not None for e in events)  # stamped on append
    assert queue.count() == 3
    queue.truncate()
    assert queue.count() == 0 and queue.read_all() == []


def test_malformed_lines_are_skipped(project: Path) -> None:
    queue = FileQueue(str(project))
    queue.append(Event("a"))
    with open(queue.path, "ab") as f:
        f.write(b'{"type": "torn", "times\n\xff\xfe garbage\n\n[]\n')
    queue.append(Event("b"))
    assert [e.type for e in queue.read_all()] == ["a", "b"]


def test_a_torn_last_line_does_not_swallow_the_next_event(project: Path) -> None:
    queue = FileQueue(str(project))
    queue.append(Event("a"))
    with open(queue.path, "ab") as f:
        f.write(b'{"type":"half-writ')  # a writer lost power mid-write: no newline
    FileQueue(str(project)).append(Event("b"))  # the next process to write
    assert [e.type for e in queue.read_all()] == ["a", "b"]


def test_should_flush_at_ten_events(project: Path) -> None:
    queue = FileQueue(str(project))
    for _ in range(9):
        queue.append(Event("x", timestamp=now()))
    assert not queue.should_flush()
    queue.append(Event("x", timestamp=now()))
    assert queue.should_flush()


def test_should_flush_when_oldest_is_an_hour_old(project: Path) -> None:
    queue = FileQueue(str(project))
    queue.append(Event("x", timestamp=now() - timedelta(minutes=59)))
    assert not queue.should_flush()
    queue.truncate()
    queue.append(Event("x", timestamp=now() - timedelta(hours=1, seconds=1)))
    assert queue.should_flush()


def test_bound_drops_oldest_never_all(project: Path) -> None:
    queue = FileQueue(str(project))
    for i in range(6000):
        queue.append(Event("command_complete", command=f"cmd-{i:05d}", metadata={"pad": "p" * 150}))
        assert os.path.getsize(queue.path) < MAX_BYTES
    commands = [e.command for e in queue.read_all()]
    assert commands[-1] == "cmd-05999"  # the newest survives
    assert len(commands) > 1000  # most of a megabyte is kept
    assert commands == sorted(commands)  # what is kept is the newest run, in order


def test_disk_refusal_raises_oserror(project: Path) -> None:
    queue = FileQueue(str(project))
    os.makedirs(queue.path)  # the queue path is a directory
    with pytest.raises(OSError):
        queue.append(Event("x"))
    assert queue.read_all() == [] and queue.count() == 0 and not queue.should_flush()


def test_threads_append_without_tearing(project: Path) -> None:
    queue = FileQueue(str(project))

    def work(n: int) -> None:
        for i in range(200):
            queue.append(Event("x", command=f"t{n}-{i}", metadata={"pad": "z" * 300}))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = Path(queue.path).read_bytes().splitlines()
    assert len(lines) == 1600
    assert all(json.loads(line)["type"] == "x" for line in lines)


_APPENDER = """
import sys
from ox_telemetry import Event, FileQueue
q = FileQueue(sys.argv[1])
for i in range(int(sys.argv[3])):
    q.append(Event("x", command=f"{sys.argv[2]}-{i}", metadata={"pad": "y" * 80}))
"""


def test_processes_append_without_tearing(project: Path) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", _APPENDER, str(project), f"p{n}", "400"])
        for n in range(8)
    ]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    queue = FileQueue(str(project))
    lines = Path(queue.path).read_bytes().splitlines()
    assert len(lines) == 3200
    commands = {json.loads(line)["command"] for line in lines}
    assert len(commands) == 3200


def test_claim_keeps_events_appended_during_a_send(project: Path) -> None:
    queue = FileQueue(str(project))
    for i in range(5):
        queue.append(Event("early", command=str(i)))
    sender = queue.sender()
    assert sender is not None
    assert queue.sender() is None  # one sender per queue
    claimed = sender.claim()
    assert len(claimed) == 5
    queue.append(Event("late"))  # arrives while the claimed five are in flight
    assert queue.count() == 6  # in-flight events still count as queued
    sender.release(claimed[2][0])  # the first three were delivered
    assert [e.type for e in queue.read_all()] == ["early", "early", "late"]
    sender.close()
    again = queue.sender()
    assert again is not None
    lines = again.claim()  # leftovers of the last send come first
    assert [json.loads(line)["type"] for _, line in lines] == ["early", "early", "late"]
    again.release(lines[-1][0])
    again.close()
    assert queue.count() == 0


def test_jsonl_queue_batch_append_reports_drops(tmp_path: Path) -> None:
    queue = JsonlQueue(str(tmp_path / "spool.jsonl"), max_bytes=2000)
    assert queue.append_lines([b'{"type":"x"}'] * 100) == 0
    dropped = queue.append_lines([b'{"type":"y"}'] * 100)
    assert dropped > 0
    assert os.path.getsize(queue.path) <= 2000
    assert queue.read_all()[-1].type == "y"
