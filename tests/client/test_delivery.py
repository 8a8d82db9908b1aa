"""The send path end to end: real uploader processes, a real loopback endpoint, real faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loopback import Endpoint, refusing_url, wait_until
from ox_telemetry import Client, Event, FileQueue, background
from ox_telemetry.delivery import Delivery, Policy, UploadState
from ox_telemetry.transport import UrllibTransport


def _state(queue: FileQueue) -> dict[str, object]:
    try:
        return dict(json.loads(Path(queue.path + ".state.json").read_text()))
    except FileNotFoundError:
        return {}


def _uploader_done(queue: FileQueue) -> bool:
    return not queue.sender_busy()


def _cli_run(project: Path, base_url: str, commands: int = 12) -> float:
    """One short CLI run; returns how long ``stop()`` took."""
    client = Client("sess", project_root=str(project), base_url=base_url, version="9.9.9")
    client.start()
    for i in range(commands):
        client.track_command(f"cmd {i}", 0.01, True)
    started = time.perf_counter()
    client.stop()
    return time.perf_counter() - started


def test_a_cli_run_is_delivered_by_a_detached_uploader(project: Path, endpoint: Endpoint) -> None:
    _cli_run(project, endpoint.base_url)
    assert wait_until(lambda: len(endpoint.accepted_events()) == 12)
    request = endpoint.requests[0]
    assert request.path == "/api/v1/telemetry"
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["content-type"] == "application/json"
    assert request.body["cli_version"] == "9.9.9" and request.body["os"] == "linux"
    assert request.body["batch_timestamp"].endswith("Z")
    queue = FileQueue(str(project))
    assert wait_until(lambda: _uploader_done(queue) and queue.count() == 0)
    assert _state(queue)["last_success"]


def test_batches_are_bounded(project: Path, endpoint: Endpoint) -> None:
    queue = FileQueue(str(project))
    for i in range(1200):
        queue.append(Event("x", command=str(i)))
    outcome = Delivery(queue, UrllibTransport(), endpoint.base_url + "/api/v1/telemetry").run()
    assert outcome == "delivered"
    sizes = [len(r.body["events"]) for r in endpoint.requests]
    assert sizes == [500, 500, 200]
    assert [e["command"] for e in endpoint.accepted_events()] == [str(i) for i in range(1200)]


def test_gzip_refusal_falls_back_to_plain_and_is_remembered(project: Path, endpoint: Endpoint) -> None:
    endpoint.reject_gzip = True
    queue = FileQueue(str(project))
    url = endpoint.base_url + "/api/v1/telemetry"
    queue.append(Event("a"))
    assert Delivery(queue, UrllibTransport(), url).run() == "delivered"
    assert [r.status for r in endpoint.requests] == [415, 200]
    queue.append(Event("b"))
    assert Delivery(queue, UrllibTransport(), url).run() == "delivered"
    assert [r.status for r in endpoint.requests] == [415, 200, 200]  # no second 415
    assert "content-encoding" not in endpoint.requests[-1].headers


_APPEND_AND_TRACK = """
import sys
from ox_telemetry import Client, Event
c = Client("s", project_root=sys.argv[1], base_url=sys.argv[2])
c.start()
for i in range(500):
    c.track(Event("command_complete", command=f"{sys.argv[3]}-{i}"))
c.stop()
"""


def test_eight_processes_append_while_uploaders_send(project: Path, endpoint: Endpoint) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", _APPEND_AND_TRACK, str(project), endpoint.base_url, f"p{n}"])
        for n in range(8)
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    queue = FileQueue(str(project))
    # The runs above start uploaders as they stop; one more run collects any remainder.
    assert wait_until(lambda: _uploader_done(queue), 60)
    Client("s", project_root=str(project), base_url=endpoint.base_url).flush()
    assert wait_until(lambda: len(endpoint.accepted_events()) >= 4000, 60)
    assert wait_until(lambda: _uploader_done(queue) and queue.count() == 0, 60)
    ids = endpoint.event_ids()
    assert len(ids) == 4000 and len(set(ids)) == 4000


@pytest.fixture
def slow_endpoint() -> Iterator[Endpoint]:
    server = Endpoint()
    server.delay = 0.15  # every request is in flight long enough to be killed in
    yield server
    server.close()


def test_kill_9_of_the_uploader_loses_nothing(project: Path, slow_endpoint: Endpoint) -> None:
    queue = FileQueue(str(project))
    for i in range(3000):
        queue.append(Event("x", command=str(i)))
    url = slow_endpoint.base_url + "/api/v1/telemetry"
    for attempt in range(10):
        proc = subprocess.Popen(
            [sys.executable, "-m", "ox_telemetry.uploader", "--queue", queue.path, "--url", url],
            stdout=subprocess.DEVNULL,
        )
        requests_before = len(slow_endpoint.requests)
        # Kill it at a different moment each time: before, during or between requests.
        wait_until(lambda n=requests_before, p=proc: len(slow_endpoint.requests) > n or p.poll() is not None, 10)
        time.sleep(0.03 * attempt)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert Delivery(queue, UrllibTransport(), url).run() == "delivered"
    ids = [e["command"] for e in slow_endpoint.accepted_events()]
    assert set(ids) == {str(i) for i in range(3000)}  # everything delivered
    assert queue.count() == 0
    by_command: dict[str, set[str]] = {}
    for event in slow_endpoint.accepted_events():
        by_command.setdefault(event["command"], set()).add(event["event_id"])
    assert all(len(v) == 1 for v in by_command.values())  # a duplicate has the same event_id


def _hang(e: Endpoint) -> None:
    e.hang = True


def _status(code: int, **headers: str) -> object:
    def set_status(e: Endpoint) -> None:
        e.status = code
        e.headers = headers

    return set_status


def _slow(e: Endpoint) -> None:
    e.delay = 10.0  # beyond the tests' 2 s request timeout


@pytest.mark.parametrize(
    ("fault", "kept"),
    [
        pytest.param(_hang, True, id="hangs"),
        pytest.param(None, True, id="refuses"),
        pytest.param(_status(500), True, id="500"),
        pytest.param(_status(503), True, id="503"),
        pytest.param(_status(429, **{"Retry-After": "1"}), True, id="429-retry-after"),
        pytest.param(_slow, True, id="10s-slow"),
        pytest.param(_status(400), False, id="400-dropped"),
    ],
)
def test_endpoint_faults(project: Path, endpoint: Endpoint, fault: object, kept: bool) -> None:
    base_url = refusing_url() if fault is None else endpoint.base_url
    if fault is not None:
        fault(endpoint)  # type: ignore[operator]
    assert _cli_run(project, base_url) < 0.5  # stop() is prompt whatever the endpoint does
    queue = FileQueue(str(project))
    assert wait_until(lambda: _uploader_done(queue) and bool(_state(queue) or queue.count() == 0), 30)
    if kept:
        assert queue.count() == 12
        state = _state(queue)
        assert state["failures"] == 1 and float(state["next_attempt"]) > time.time()  # type: ignore[arg-type]
    else:
        assert queue.count() == 0
    if fault is not None:
        # Retries within the run are bounded by the backoff: full jitter under a 0.5 s cap averages about
        # 0.25 s a wait, so 3 s hold about 12; forty would need waits averaging 75 ms, and a loop without
        # backoff sends hundreds.
        assert 1 <= len(endpoint.requests) <= 40


def test_retry_after_is_honoured(project: Path, endpoint: Endpoint) -> None:
    endpoint.status = 429
    endpoint.headers = {"Retry-After": "1"}
    queue = FileQueue(str(project))
    queue.append(Event("x"))
    policy = Policy(timeout=2, base=0.01, cap=0.05, budget=2.5)
    assert Delivery(queue, UrllibTransport(), endpoint.base_url + "/x", policy=policy).run() == "gave_up"
    stamps = [r for r in endpoint.requests]
    assert 2 <= len(stamps) <= 3  # one a second, not one every 10 ms


def test_a_non_json_answer_still_counts_as_delivered(project: Path, endpoint: Endpoint) -> None:
    endpoint.reply = b"<html>not json</html>"
    _cli_run(project, endpoint.base_url)
    assert wait_until(lambda: len(endpoint.accepted_events()) == 12)
    queue = FileQueue(str(project))
    assert wait_until(lambda: _uploader_done(queue) and queue.count() == 0)


def test_no_run_starts_once_the_lock_is_free_if_the_sender_before_left_a_backoff(
    project: Path, endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sender that gives up writes its backoff and then lets go of the send lock; a CLI that looked at the
    # backoff before that (background.ready) and takes the lock after must not start a second run.
    queue = FileQueue(str(project))
    queue.append(Event("x"))
    state = UploadState.load(queue)
    state.failed("HTTP 503", Policy(), None)
    state.save()
    spawned: list[object] = []
    monkeypatch.setattr(os, "posix_spawn", lambda *args, **kwargs: spawned.append(args))
    url = endpoint.base_url + "/api/v1/telemetry"
    assert background.spawn_uploader(queue, url, "9.9.9") is False
    threads = background.ThreadSender(UrllibTransport())
    threads.start(queue, url, "9.9.9")
    assert spawned == [] and threads.threads() == [] and endpoint.requests == []
    assert queue.sender() is not None  # and the send lock was let go


def test_an_outage_costs_a_bounded_number_of_processes_and_requests(
    project: Path, endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint.status = 503
    spawned: list[int] = []
    real_spawn = os.posix_spawn

    def counting_spawn(*args: object, **kwargs: object) -> int:
        pid = real_spawn(*args, **kwargs)  # type: ignore[arg-type]
        spawned.append(pid)
        return pid

    monkeypatch.setattr(os, "posix_spawn", counting_spawn)
    started = time.monotonic()
    runs = 0
    while time.monotonic() - started < 6:  # two uploader budgets' worth of CLI runs
        _cli_run(project, endpoint.base_url, commands=2)
        runs += 1
        time.sleep(0.02)  # pacing, not synchronisation: a few hundred runs, not thousands
    queue = FileQueue(str(project))
    assert wait_until(lambda: _uploader_done(queue), 30)
    assert runs > 20
    assert len(spawned) == 1  # later runs saw the uploader at work, then its backoff
    assert len(endpoint.requests) <= 40  # one uploader's backoff (see test_endpoint_faults), not one per CLI run
    assert queue.count() == 2 * runs  # and nothing was lost
