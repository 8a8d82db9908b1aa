"""Local-only mode: events kept on the machine, in a bounded weekly record, and sent by nobody.

Real parts throughout: the ``ox-telemetry`` command line in subprocesses, CLI
runs as real processes, the real uploader, a real daemon, a real HTTP endpoint
on loopback that records whatever reaches it.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from loopback import Endpoint, wait_until
from ox_telemetry import Client, Event, FileQueue, consent, local_record, paths
from ox_telemetry.local_record import WEEK_MAX_BYTES, WEEKS_KEPT, LocalRecord, iso_week
from ox_telemetry.local_report import page, percentile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))
from daemon_helpers import DaemonProcess, connect, request, status


def ox(*args: str, cwd: Path | None = None, code: int = 0) -> subprocess.CompletedProcess[str]:
    """``ox-telemetry ARGS`` in a fresh interpreter with the test's environment; asserts its exit code."""
    result = subprocess.run([sys.executable, "-m", "ox_telemetry.cli", *args], cwd=cwd, env=dict(os.environ),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == code, result.stdout + result.stderr
    return result


def _config(home: Path) -> Path:
    return home / ".sageox" / "config" / "config.yaml"


def _recorded() -> list[dict[str, Any]]:
    return [json.loads(line) for line in LocalRecord().read().splitlines()]


# -- the setting --------------------------------------------------------------------


@pytest.mark.parametrize(("text", "mode"), [
    ("", None),
    ("telemetry_enabled: true\n", "on"),
    ("telemetry_enabled: false\n", "off"),
    ("telemetry_mode: local\n", "local"),
    ("telemetry_enabled: false\ntelemetry_mode: local  # mine\n", "local"),
    ("telemetry_enabled: true\ntelemetry_mode: 'local'\n", "local"),  # an older tool's enable: still local
    ("telemetry_enabled: false\ntelemetry_mode: on\n", "off"),  # a hand-written opt-out wins
    ("telemetry_mode: off\ntelemetry_enabled: true\n", "off"),
    ("telemetry_mode: sideways\ntelemetry_enabled: true\n", "on"),
])
def test_the_user_mode_is_read_from_both_keys_the_stricter_winning(text: str, mode: str | None, home: Path) -> None:
    _config(home).parent.mkdir(parents=True)
    _config(home).write_text(text)
    assert consent.read_user_mode() == mode


def test_mode_writes_both_keys_and_enable_disable_keep_them_in_step(home: Path, project: Path) -> None:
    _config(home).parent.mkdir(parents=True)
    _config(home).write_text("# mine\ntheme: dark\ntelemetry_enabled: true  # yes\n")
    assert "events are kept on this machine, never sent" in ox("mode", "local", cwd=project).stdout
    # telemetry_enabled says false: a tool that knows only the contract's key sends nothing either.
    assert _config(home).read_text() == "# mine\ntheme: dark\ntelemetry_enabled: false  # yes\ntelemetry_mode: local\n"
    assert json.loads(ox("mode", "--json", cwd=project).stdout) == {"mode": "local", "rule": "user config"}
    ox("enable", cwd=project)
    assert _config(home).read_text() == "# mine\ntheme: dark\ntelemetry_enabled: true  # yes\ntelemetry_mode: on\n"
    ox("mode", "local", cwd=project)
    LocalRecord().append(b'{"type":"x"}')
    ox("disable", cwd=project)
    assert consent.read_user_mode() == "off"
    assert LocalRecord().paths() == []  # off: the local record goes with the rest
    assert ox("mode", cwd=project).stdout.strip() == "off (decided by: user config)"
    ox("mode", "on", cwd=project)
    assert consent.read_user_mode() == "on"
    assert ox("mode", "sideways", code=2).returncode == 2


@pytest.mark.parametrize(("setup", "mode", "rule"), [
    ("user local", "local", "user config"),
    ("SAGEOX_TELEMETRY=local", "local", "SAGEOX_TELEMETRY"),
    ("user local + DO_NOT_TRACK", "off", "DO_NOT_TRACK"),  # off wins over local
    ("SAGEOX_TELEMETRY=local + user off", "off", "user config"),
    ("user local + project off", "off", "project config"),
])
def test_status_shows_the_mode_and_the_rule_that_decided(
    setup: str, mode: str, rule: str, home: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "user local" in setup:
        consent.write_user_mode("local")
    if "user off" in setup:
        consent.write_user_mode("off")
    if "SAGEOX_TELEMETRY=local" in setup:
        monkeypatch.setenv("SAGEOX_TELEMETRY", "local")
    if "DO_NOT_TRACK" in setup:
        monkeypatch.setenv("DO_NOT_TRACK", "1")
    if "project off" in setup:
        (project / ".sageox" / "config.json").write_text('{"telemetry": false}')
    info = json.loads(ox("status", "--json", cwd=project).stdout)
    assert (info["mode"], info["rule"], info["enabled"]) == (mode, rule, mode != "off")
    text = ox("status", cwd=project).stdout
    assert f"telemetry:    {mode} (decided by: {rule})" in text
    assert ("local record: " in text) == (mode == "local")


# -- the client -----------------------------------------------------------------------

_AUDIT = """
import os, sys
from ox_telemetry import Client, Event
seen = []
def hook(event, args):
    if event in ("socket.__new__", "socket.connect", "_thread.start_new_thread", "os.posix_spawn", "os.fork",
                 "subprocess.Popen", "os.exec"):
        seen.append(event)
    elif event in ("os.mkdir", "os.rename", "os.replace", "os.remove"):
        seen.append(f"{event} {args[0]}")
    elif event == "open" and (isinstance(args[1], str) and set(args[1]) & set("wax+")
                              or isinstance(args[2], int) and args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
        seen.append(f"open-for-write {args[0]}")
sys.addaudithook(hook)
with Client("s", project_root=sys.argv[1], version="1.0") as c:
    assert c.is_enabled() and c.consent.local, c.consent
    c.track(Event("x"))
    c.track_command("status", 1.0, True)
    c.track_async(Event("y"))
    c.flush()
    c.send_to_daemon("e", {"a": 1})
    c.track_daemon_start_failure("t", "m")
    c.reset_daemon_failure_rate_limit()
print(repr(seen))
"""


def test_a_local_client_writes_only_its_local_record(project: Path, home: Path, tmp_path: Path) -> None:
    consent.write_user_mode("local")
    for n in range(12):  # what an earlier run left queued: a client that sends would start an uploader
        FileQueue(str(project)).append(Event("command_complete", command=f"old {n}"))
    env = dict(os.environ)
    daemon = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    daemon.bind(env["OX_TELEMETRY_SOCKET"])  # a daemon is listening: never told anything
    daemon.listen(1)
    try:
        out = subprocess.run([sys.executable, "-c", _AUDIT, str(project)], capture_output=True, text=True,
                             timeout=60, env=env)
    finally:
        daemon.close()
    assert out.returncode == 0, out.stderr
    seen: list[str] = ast.literal_eval(out.stdout)
    record = local_record.record_dir()

    def ours(what: str) -> bool:  # the record's files, and the directories on the way to it
        event, _, path = what.partition(" ")
        return path.startswith(record) or (event == "os.mkdir" and record.startswith(path))

    strays = [s for s in seen if not ours(s)]
    assert strays == [] and seen, seen  # no socket, thread or process; no file but the record's
    assert [e["type"] for e in _recorded()] == ["x", "command_complete", "y", "daemon:start_failure"]
    assert len(FileQueue(str(project)).read_all()) == 12  # the old queue is left as it was
    assert not Path(paths.ratelimit_path()).exists()


# -- the record -----------------------------------------------------------------------


def test_iso_weeks_match_the_calendar() -> None:
    start = datetime(2019, 12, 20, tzinfo=timezone.utc).timestamp()
    for day in range(0, 2400, 3):
        t = start + day * 86400 + 3600 * (day % 24)
        assert iso_week(t) == tuple(datetime.fromtimestamp(t, timezone.utc).isocalendar()[:2])


def test_the_record_keeps_one_file_a_week_the_last_weeks_only_each_bounded(tmp_path: Path) -> None:
    now = [datetime(2025, 1, 1, 12, tzinfo=timezone.utc).timestamp()]
    record = LocalRecord(str(tmp_path / "state" / "local-record"), clock=lambda: now[0])
    weeks = []
    for _ in range(WEEKS_KEPT + 4):
        record.append(b'{"type":"x"}')
        weeks.append(iso_week(now[0]))
        now[0] += 7 * 86400
    names = [Path(p).name for p in record.paths()]
    assert names == [local_record.week_name(w) for w in weeks[-WEEKS_KEPT:]]
    assert not [p for p in (tmp_path / "state" / "local-record").iterdir()
                if p.name.endswith(".lock") and p.name[:-5] not in names]  # old weeks' locks went too
    line = b'{"type":"y","command":"' + b"c" * 1000 + b'"}'
    for _ in range(WEEK_MAX_BYTES // 1000 + 200):
        record.append(line)
    current = Path(record.paths()[-1])
    assert 0 < current.stat().st_size <= WEEK_MAX_BYTES
    assert current.read_bytes().endswith(line + b"\n")  # the newest kept, the oldest dropped
    record.close()


# -- view and show ----------------------------------------------------------------------


def _stamp(day: int, hour: int) -> datetime:
    return datetime(2025, 3, day, hour, tzinfo=timezone.utc)


def test_view_reports_per_command_and_day_in_the_terminal_and_as_a_page(
    home: Path, project: Path, tmp_path: Path
) -> None:
    consent.write_user_mode("local")
    client = Client("s", project_root=str(project), version="1.0")
    for n, ms in enumerate([10, 20, 30, 40, 100]):
        client.track(Event("command_complete", command="build", duration_ms=ms, success=n != 4,
                           timestamp=_stamp(3, n)))
    client.track(Event("command_error", command="deploy me@example.com", duration_ms=7, success=False,
                       timestamp=_stamp(4, 1)))
    client.track(Event("guidance_fetch", timestamp=_stamp(4, 2)))
    client.stop()

    view = json.loads(ox("view", "--json").stdout)
    assert view["events"] == 7 and view["types"] == {"command_complete": 5, "command_error": 1, "guidance_fetch": 1}
    build = {"command": "build", "runs": 5, "errors": 1, "error_rate": 0.2, "p50_ms": 30, "p95_ms": 100}
    deploy = {"command": "deploy <redacted:email>", "runs": 1, "errors": 1, "error_rate": 1.0, "p50_ms": 7,
              "p95_ms": 7}  # scrubbed, as it would be sent
    assert view["commands"] == [build, deploy]
    assert view["days"] == [{"day": "2025-03-03", **build}, {"day": "2025-03-04", **deploy}]
    text = ox("view").stdout
    assert "per command:" in text and "per day:" in text and "me@example.com" not in text
    assert [line.split() for line in text.splitlines() if line.strip().startswith("build")] == [
        ["build", "5", "1", "20.0%", "30", "100"]]
    assert ["2025-03-03", "build", "5", "1", "20.0%", "30", "100"] in [line.split() for line in text.splitlines()]

    out = tmp_path / "report.html"
    assert "wrote" in ox("view", "--html", str(out)).stdout
    html = out.read_text()
    assert html == page(view)
    for needle in ("<td>build</td>", '<td class="n">20.0%</td>', '<td class="n">100</td>', "2025-03-04",
                   "deploy &lt;redacted:email&gt;"):
        assert needle in html
    for fetched in ("<script", "src=", "href=", "@import", "url("):  # self-contained: nothing loaded from anywhere
        assert fetched not in html
    assert percentile([], 0.5) is None


def test_show_in_local_mode_says_nothing_would_be_sent(home: Path, project: Path) -> None:
    FileQueue(str(project)).append(Event("command_complete", command="queued before"))
    consent.write_user_mode("local")
    out = ox("show", cwd=project).stdout
    assert "nothing would be sent" in out and "queued before" not in out
    assert json.loads(ox("show", "--json", cwd=project).stdout) == []


# -- nothing leaves ----------------------------------------------------------------------

_RUN = """
import sys
from ox_telemetry import Client, Event
n, root = int(sys.argv[1]), sys.argv[2]
with Client(f"run-{n}", project_root=root if n % 2 else None, version="2.0") as c:
    c.track_command("build", 0.01 * n, n % 5 != 0)
    c.track(Event("guidance_fetch", command="build"))
    c.track_async(Event("session_end"))
    c.send_to_daemon("app:cli_run", {"n": n})
    c.track_daemon_start_failure("boom", "it failed")
    c.flush()
"""


def test_in_local_mode_nothing_reaches_the_endpoint_from_client_uploader_or_daemon(
    home: Path, project: Path, tmp_path: Path, endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock_dir = Path(os.path.realpath("/tmp")) / f"oxl-{os.getpid()}-{time.monotonic_ns()}"  # a short sun_path
    sock_dir.mkdir(mode=0o700)
    monkeypatch.setenv("OX_TELEMETRY_SOCKET", str(sock_dir / "run" / "telemetry.sock"))
    monkeypatch.setenv("SAGEOX_ENDPOINT", endpoint.base_url)
    monkeypatch.setenv("SAGEOX_TELEMETRY_ENDPOINT", endpoint.base_url + "/tevents")
    monkeypatch.setenv("OX_TELEMETRY_DAEMON_INTERVAL", "0.1")
    monkeypatch.setenv("OX_TELEMETRY_DAEMON_TUNING", "cooldown=0.1,base=0.05,cap=0.4,timeout=1,idle=30")
    # What waits from before local mode, due to be sent (10+ events, an hour old): every sender would.
    old = Event("command_complete", command="before", timestamp=datetime.now(timezone.utc) - timedelta(hours=2))
    for _ in range(12):
        FileQueue(str(project)).append(old.copy())
    ox("mode", "local", cwd=project)
    daemon = DaemonProcess(tmp_path / "daemon.log").start()
    try:
        for n in range(50):
            run = subprocess.run([sys.executable, "-c", _RUN, str(n), str(project)], capture_output=True,
                                 text=True, timeout=60, env=dict(os.environ))
            assert run.returncode == 0, run.stderr
        # The senders themselves, asked directly, as a CLI from before local mode (or a tool that
        # knows no local mode) would: the uploader, flush, the daemon's hand-off, its own spool.
        queue = str(project / ".sageox" / "cache" / "telemetry.jsonl")
        assert ox("upload", "--queue", queue, "--url", endpoint.base_url + "/api/v1/telemetry").stdout == "not_sent\n"
        assert "nothing sent" in ox("flush", cwd=project, code=1).stderr
        answer = request("flush_queue", {"queue_path": queue, "url": endpoint.base_url + "/api/v1/telemetry"})
        assert answer and answer["success"], answer
        received = status()["received"]
        with connect() as sock:
            sock.sendall(b'{"type":"telemetry","payload":{"event":"app:other_tool","props":{}}}\n')
        assert wait_until(lambda: status()["received"] > received)
        request("flush")
        assert wait_until(lambda: status()["spooled"] == 0 and status()["dropped"]["opted_out"] >= 1)
        assert status()["queues_in_flight"] == 0
    finally:
        daemon.stop()
        daemon.close()
        shutil.rmtree(sock_dir, ignore_errors=True)
    assert endpoint.requests == []
    assert len(FileQueue(str(project)).read_all()) == 12  # left as it was, for the user to decide
    recorded = _recorded()
    assert len(recorded) == 50 * 4  # each run's command, fetch, session end and failure report
    assert {e["session_id"] for e in recorded if e["type"] == "command_complete"} == {f"run-{n}" for n in range(50)}
    assert not Path(paths.user_spool_path(endpoint.base_url)).exists()
