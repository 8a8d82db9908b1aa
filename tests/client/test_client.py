"""Client: every method of CONTRACT.md section 2, and that none of them ever raises."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from loopback import Endpoint, wait_until
from ox_telemetry import Client, Event, FileQueue
from ox_telemetry.transport import HTTPResponse, UrllibTransport
from reference_vectors import VECTORS


class CountingTransport:
    """The real HTTP transport, counting calls; ``gate`` (when set) holds every request."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls = 0
        self.gate = gate
        self.inner = UrllibTransport()

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> HTTPResponse:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait()
        return self.inner.post(url, body, headers, timeout)


def _queued(project: Path) -> list[dict[str, object]]:
    path = project / ".sageox" / "cache" / "telemetry.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_track_stamps_and_queues(project: Path) -> None:
    client = Client("sess", project_root=str(project), base_url="http://collector.example/")
    event = Event("guidance_fetch", command="agent prime")
    client.track(event)
    client.track(event)
    queued = _queued(project)
    assert len(queued) == 2
    first = queued[0]
    assert first["repo_id"] == "repo_test" and first["api_endpoint"] == "http://collector.example"
    assert str(first["timestamp"]).endswith("Z")
    assert queued[0]["event_id"] != queued[1]["event_id"]  # one id per recording
    assert event.event_id == "" and event.timestamp is None  # the caller's event is untouched


def test_explicit_values_are_kept(project: Path) -> None:
    client = Client("s", project_root=str(project))
    (project / ".sageox" / "config.json").write_text("{}")
    client.track(Event("x", event_id="fixed-id", repo_id="mine", api_endpoint="e"))
    queued = _queued(project)[0]
    assert (queued["event_id"], queued["repo_id"], queued["api_endpoint"]) == ("fixed-id", "mine", "e")


def test_base_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Client("s").base_url == "https://sageox.ai"
    monkeypatch.setenv("SAGEOX_ENDPOINT", "http://127.0.0.1:9/")
    assert Client("s").base_url == "http://127.0.0.1:9"


def test_track_command_and_stats(project: Path) -> None:
    client = Client("sess-9", project_root=str(project))
    client.track_command("agent prime", timedelta(milliseconds=1534), True)
    client.track_command("status", 0.25, False, "ERR_X")
    client.track_command("sync", 1, False, PermissionError("/home/alice/secret denied"))
    queued = _queued(project)
    assert queued[0]["type"] == "command_complete" and queued[0]["duration_ms"] == 1534
    assert queued[0]["session_id"] == "sess-9" and queued[0]["success"] is True
    assert queued[1]["error_code"] == "ERR_X" and queued[1]["success"] is False
    assert queued[2]["error_code"] == "PermissionError"  # the class, never the message
    stats = client.get_stats()
    assert (stats.command_count, stats.error_count) == (3, 2)
    assert stats.command_counts == {"agent prime": 1, "status": 1, "sync": 1}
    stats.command_counts.clear()
    assert client.get_stats().command_count == 3  # a copy


def test_memory_queue_keeps_newest_hundred_and_spills_on_stop(home: Path) -> None:
    client = Client("s", base_url="http://127.0.0.1:9")
    for i in range(150):
        client.track(Event("x", command=str(i)))
    client.stop()
    spool = home / ".sageox" / "cache" / "telemetry-http___127.0.0.1_9.jsonl"
    commands = [json.loads(line)["command"] for line in spool.read_text().splitlines()]
    assert commands == [str(i) for i in range(50, 150)]


def test_track_after_stop_goes_to_disk(home: Path) -> None:
    client = Client("s", base_url="http://127.0.0.1:9")
    client.stop()
    client.track(Event("late"))
    spool = home / ".sageox" / "cache" / "telemetry-http___127.0.0.1_9.jsonl"
    assert "late" in spool.read_text()


def test_custom_transport_sends_in_background(project: Path, endpoint: Endpoint) -> None:
    transport = CountingTransport()
    with Client("s", project_root=str(project), base_url=endpoint.base_url, transport=transport) as c:
        for i in range(3):
            c.track(Event("x", command=str(i)))
        c.flush()
        assert wait_until(lambda: len(endpoint.accepted_events()) == 3)
    assert [e["command"] for e in endpoint.accepted_events()] == ["0", "1", "2"]
    assert endpoint.requests[0].path == "/api/v1/telemetry"
    assert FileQueue(str(project)).count() == 0


def test_start_sends_a_full_queue(project: Path, endpoint: Endpoint) -> None:
    queue = FileQueue(str(project))
    for _ in range(10):
        queue.append(Event("x"))
    transport = CountingTransport()
    client = Client("s", project_root=str(project), base_url=endpoint.base_url, transport=transport)
    client.start()
    assert wait_until(lambda: len(endpoint.accepted_events()) == 10)
    client.stop()


def test_track_async_sends_now(endpoint: Endpoint) -> None:
    client = Client("s", base_url=endpoint.base_url, transport=CountingTransport())
    client.track_async(Event("auth_success"))
    assert wait_until(lambda: len(endpoint.accepted_events()) == 1)
    assert endpoint.accepted_events()[0]["type"] == "auth_success"
    client.stop()


def test_stop_is_prompt_while_the_transport_hangs(project: Path, endpoint: Endpoint) -> None:
    gate = threading.Event()
    transport = CountingTransport(gate)
    client = Client("s", project_root=str(project), base_url=endpoint.base_url, transport=transport)
    for _ in range(12):
        client.track(Event("x"))
    client.flush()
    wait_until(lambda: transport.calls > 0, 10)
    assert transport.calls == 1  # a send is stuck in flight
    started = time.perf_counter()
    client.stop()
    assert time.perf_counter() - started < 0.5
    assert FileQueue(str(project)).count() == 12  # nothing lost
    gate.set()


def test_send_to_daemon_writes_one_line(stand_in_daemon: list[Any]) -> None:
    client = Client("s", version="1.2.3")
    client.send_to_daemon("sync:complete", {"duration_ms": 1200, "ok": True})
    client.send_to_daemon("custom", {"app_type": "mine"})
    wait_until(lambda: len(stand_in_daemon) >= 2, 10)
    first, second = stand_in_daemon[:2]
    reference = json.loads((VECTORS / "ipc_telemetry.ndjson").read_text())
    assert first == {**reference, "payload": {**reference["payload"], "props": {
        **reference["payload"]["props"], "app_version": "1.2.3"}}}
    assert second["payload"]["props"] == {"app_type": "mine", "app_version": "1.2.3"}


def test_send_to_daemon_without_daemon_is_silent_and_quick() -> None:
    client = Client("s")
    started = time.perf_counter()
    client.send_to_daemon("x", {"a": 1})
    assert time.perf_counter() - started < 0.5


def _ratelimit_file(home: Path) -> Path:
    return home / ".sageox" / "config" / "daemon_failure_ratelimit.json"


def test_daemon_start_failure_reports_are_rate_limited(home: Path, endpoint: Endpoint) -> None:
    client = Client("s", base_url=endpoint.base_url, transport=CountingTransport())
    client.track_daemon_start_failure("socket_bind", "x" * 2000)
    assert wait_until(lambda: len(endpoint.accepted_events()) == 1)
    event = endpoint.accepted_events()[0]
    assert event["type"] == "daemon:start_failure"
    assert event["metadata"]["error_type"] == "socket_bind"
    assert len(event["metadata"]["error_msg"]) == 500
    state = json.loads(_ratelimit_file(home).read_text())
    assert state["backoff_level"] == 1 and state["last_sent"].endswith("Z")
    assert stat.S_IMODE(_ratelimit_file(home).stat().st_mode) == 0o600
    client.track_daemon_start_failure("socket_bind", "again")  # within the minute: dropped
    client.reset_daemon_failure_rate_limit()
    client.track_daemon_start_failure("socket_bind", "after reset")
    assert wait_until(lambda: len(endpoint.accepted_events()) == 2)
    messages = [e["metadata"]["error_msg"] for e in endpoint.accepted_events()]
    assert "again" not in messages and "after reset" in messages
    client.stop()


def test_rate_limit_reads_the_reference_file(home: Path) -> None:
    from ox_telemetry import ratelimit

    path = _ratelimit_file(home)
    path.parent.mkdir(parents=True)
    path.write_bytes((VECTORS / "ratelimit.json").read_bytes())  # level 3, sent in March 2026
    sent = json.loads(path.read_text())["last_sent"]
    from ox_telemetry._time import parse_rfc3339

    t0 = parse_rfc3339(sent).timestamp()
    assert not ratelimit.allow(now=t0 + 7 * 60)  # 8 minutes at level 3
    assert ratelimit.allow(now=t0 + 8 * 60)
    assert json.loads(path.read_text())["backoff_level"] == 4
    for _ in range(5):
        t0 += 3600
        assert ratelimit.allow(now=t0)
    assert json.loads(path.read_text())["backoff_level"] == 5  # capped


def test_debug_mode_prints_and_queues_nothing(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OX_TELEMETRY_DEBUG", "1")
    with Client("s", project_root=str(project)) as client:
        client.track_command("status", 0.1, True)
        client.track_async(Event("auth_success"))
        client.send_to_daemon("sync", {})
    lines = capsys.readouterr().err.splitlines()
    assert [json.loads(line).get("type") for line in lines] == ["command_complete", "auth_success", "telemetry"]
    assert json.loads(lines[0])["repo_id"] == "repo_test"
    assert not (project / ".sageox" / "cache").exists()


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_nothing_raises_on_odd_input(project: Path) -> None:
    client = Client("s", project_root=str(project))
    client.start()
    client.track(None)  # type: ignore[arg-type]
    client.track("not an event")  # type: ignore[arg-type]
    client.track(Event("x", metadata={"n": 1, "o": Unprintable(), "x": None}))  # type: ignore[dict-item]
    client.track(Event("x", command="c" * 5_000_000, error_code="\ud800\udfff\udc00"))
    client.track(Event("x", timestamp="yesterday"))  # type: ignore[arg-type]
    client.track_command(None, "slow", None, 3)  # type: ignore[arg-type]
    client.send_to_daemon(None, "props")  # type: ignore[arg-type]
    client.track_daemon_start_failure(None, None)  # type: ignore[arg-type]
    client.stop()
    client.stop()
    client.track(Event("after stop"))
    client.flush()
    queued = _queued(project)
    assert len(queued) >= 4 and all(isinstance(e["type"], str) for e in queued)
    assert max(len(json.dumps(e)) for e in queued) < 32 * 1024


def test_nothing_raises_when_the_queue_path_is_a_directory(project: Path, home: Path) -> None:
    os.makedirs(project / ".sageox" / "cache" / "telemetry.jsonl")
    client = Client("s", project_root=str(project), base_url="http://127.0.0.1:9")
    client.track(Event("kept"))
    client.stop()
    spool = home / ".sageox" / "cache" / "telemetry-http___127.0.0.1_9.jsonl"
    assert "kept" in spool.read_text()  # refused by the project, kept for the user


_FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4000, 4000))
from ox_telemetry import Client, Event
c = Client("s", project_root=sys.argv[1], base_url="http://127.0.0.1:9")
c.start()
for i in range(200):
    c.track(Event("x", command=str(i)))
c.stop()
print("survived")
"""


def test_a_full_disk_is_survived_without_torn_lines(project: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(project)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.strip() == "survived", out.stderr
    lines = (project / ".sageox" / "cache" / "telemetry.jsonl").read_bytes().splitlines()
    assert 0 < len(lines) < 200
    assert all(json.loads(line)["type"] == "x" for line in lines)


_AUDIT = """
import os, sys
from ox_telemetry import Client, Event
seen = []
def hook(event, args):
    if event in ("os.mkdir", "os.rename", "os.replace", "os.remove", "socket.__new__",
                 "socket.connect", "_thread.start_new_thread", "os.posix_spawn", "os.fork",
                 "subprocess.Popen", "os.exec"):
        seen.append(event)
    elif event == "open" and (isinstance(args[1], str) and set(args[1]) & set("wax+")
                              or isinstance(args[2], int) and args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
        seen.append(f"open-for-write {args[0]}")
root, how = sys.argv[1], sys.argv[2]
sys.addaudithook(hook)
c = Client("s", project_root=root, enabled=False if how == "argument" else None)
assert not c.is_enabled()
with c:
    c.track(Event("x"))
    c.track_command("status", 1.0, True)
    c.track_async(Event("y"))
    c.flush()
    c.send_to_daemon("e", {"a": 1})
    c.track_daemon_start_failure("t", "m")
    c.reset_daemon_failure_rate_limit()
    c.get_stats()
print(seen)
"""


@pytest.mark.parametrize("how", ["argument", "DO_NOT_TRACK", "user config", "project config"])
def test_a_disabled_client_touches_nothing(
    project: Path, home: Path, tmp_path: Path, how: str
) -> None:
    env = dict(os.environ)
    if how == "DO_NOT_TRACK":
        env["DO_NOT_TRACK"] = "1"
    elif how == "user config":
        (home / ".sageox" / "config").mkdir(parents=True)
        (home / ".sageox" / "config" / "config.yaml").write_text("telemetry_enabled: false\n")
    elif how == "project config":
        (project / ".sageox" / "config.json").write_text('{"telemetry": false}')
    daemon = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    daemon.bind(env["OX_TELEMETRY_SOCKET"])  # a daemon is listening: still untouched
    daemon.listen(1)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    out = subprocess.run(
        [sys.executable, "-c", _AUDIT, str(project), how], capture_output=True, text=True,
        timeout=60, env=env,
    )
    daemon.close()
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_custom_transport_response_headers_can_be_any_mapping() -> None:
    from ox_telemetry.transport import header

    class Reply:
        status = 429
        headers: Mapping[str, str] = {"retry-after": "7"}

    assert header(Reply(), "Retry-After") == "7"
