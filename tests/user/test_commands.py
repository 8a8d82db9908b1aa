"""``ox-telemetry status | enable | disable | show | flush``, run as the user runs them: a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loopback import Endpoint, refusing_url
from ox_telemetry import Event, FileQueue, commands, operations, paths
from ox_telemetry.queue import JsonlQueue


def ox(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ox-telemetry ARGS`` in a fresh interpreter, with the test's isolated environment."""
    result = subprocess.run(
        [sys.executable, "-m", "ox_telemetry.cli", *args], cwd=cwd, env=dict(os.environ),
        capture_output=True, text=True, timeout=60,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def ox_json(*args: str, cwd: Path | None = None) -> Any:
    return json.loads(ox(*args, "--json", cwd=cwd).stdout)


def _spool(base_url: str) -> JsonlQueue:
    return JsonlQueue(paths.user_spool_path(base_url))


def _config(home: Path) -> Path:
    return home / ".sageox" / "config" / "config.yaml"


# -- status -----------------------------------------------------------------------


@pytest.mark.parametrize(("setup", "enabled", "rule"), [
    ("nothing", True, "default"),
    ("DO_NOT_TRACK", False, "DO_NOT_TRACK"),
    ("SAGEOX_TELEMETRY", False, "SAGEOX_TELEMETRY"),
    ("user config", False, "user config"),
    ("project config", False, "project config"),
])
def test_status_names_the_deciding_rule(
    setup: str, enabled: bool, rule: str, monkeypatch: pytest.MonkeyPatch, home: Path, project: Path
) -> None:
    if setup == "DO_NOT_TRACK":
        monkeypatch.setenv("DO_NOT_TRACK", "1")
    elif setup == "SAGEOX_TELEMETRY":
        monkeypatch.setenv("SAGEOX_TELEMETRY", "off")
    elif setup == "user config":
        _config(home).parent.mkdir(parents=True)
        _config(home).write_text("telemetry_enabled: false\n")
    elif setup == "project config":
        (project / ".sageox" / "config.json").write_text('{"repo_id": "r", "telemetry": false}')
    info = ox_json("status", cwd=project)
    assert (info["enabled"], info["rule"]) == (enabled, rule)
    text = ox("status", cwd=project).stdout
    assert f"telemetry:    {'on' if enabled else 'off'} (decided by: {rule})" in text


def test_status_reports_queues_daemon_and_last_send(
    monkeypatch: pytest.MonkeyPatch, project: Path, endpoint: Endpoint
) -> None:
    monkeypatch.setenv("SAGEOX_ENDPOINT", endpoint.base_url + "/")
    nested = project / "src" / "pkg"
    nested.mkdir(parents=True)
    for i in range(3):
        FileQueue(str(project)).append(Event("command_complete", command=f"c{i}"))
    _spool(endpoint.base_url).append(Event("command_complete", command="spooled"))

    info = ox_json("status", cwd=nested)  # the project is found from below
    assert info["endpoint"] == endpoint.base_url
    assert info["project_root"] == str(project)
    assert info["queue_path"] == str(project / ".sageox" / "cache" / "telemetry.jsonl")
    assert (info["queue_count"], info["spool_count"]) == (3, 1)
    assert info["daemon_running"] is False
    assert info["last_success"] is None and info["last_error"] is None

    ox("flush", cwd=project)
    info = ox_json("status", cwd=project)
    assert (info["queue_count"], info["spool_count"]) == (0, 0)
    assert info["last_success"] and info["last_error"] is None

    FileQueue(str(project)).append(Event("command_complete", command="later"))
    monkeypatch.setenv("OX_TELEMETRY_UPLOAD_TUNING", "timeout=1,base=0.05,cap=0.1,budget=0.3")
    failed = ox("flush", "--endpoint", refusing_url(), cwd=project, check=False)
    assert failed.returncode == 1
    info = ox_json("status", "--endpoint", refusing_url(), cwd=project)
    assert info["last_error"] == "network: ConnectionRefusedError"
    assert info["queue_count"] == 1
    assert "last error:   network: ConnectionRefusedError" in ox("status", "--endpoint", refusing_url(),
                                                                 cwd=project).stdout


def test_status_sees_a_running_daemon(stand_in_daemon: list[Any], tmp_path: Path) -> None:
    assert ox_json("status", cwd=tmp_path)["daemon_running"] is True
    assert stand_in_daemon == [{"type": "ping"}]
    assert "daemon:       running" in ox("status", cwd=tmp_path).stdout


# -- enable / disable -------------------------------------------------------------


def test_disable_keeps_the_config_and_deletes_local_data(
    home: Path, project: Path, endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGEOX_ENDPOINT", endpoint.base_url)
    config = _config(home)
    config.parent.mkdir(parents=True)
    original = ("# my settings\nendpoint: https://x.example\ntelemetry_enabled: true  # yes\n"
                "nested:\n  telemetry_enabled: true\ntheme: dark")
    config.write_text(original)
    FileQueue(str(project)).append(Event("command_complete", command="queued"))
    _spool(endpoint.base_url).append(Event("command_complete", command="spooled"))
    _spool("https://other.example").append(Event("command_complete", command="elsewhere"))
    client_id = Path(paths.client_id_path())
    client_id.write_text("5f1c3c7e-2b8e-4d7a-9a55-0c6f1f0e7a11\n")

    out = ox("disable", cwd=project).stdout
    assert f"telemetry disabled in {config}" in out
    assert config.read_text() == original.replace("telemetry_enabled: true  # yes", "telemetry_enabled: false  # yes")
    assert not client_id.exists()
    assert not (project / ".sageox" / "cache" / "telemetry.jsonl").exists()
    leftovers = [p.name for p in (home / ".sageox" / "cache").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []
    assert endpoint.requests == []  # nothing about the opt-out left the machine
    info = ox_json("status", cwd=project)
    assert (info["enabled"], info["rule"], info["queue_count"], info["spool_count_all"]) == (
        False, "user config", 0, 0)

    ox("enable", cwd=project)
    assert "telemetry_enabled: true  # yes" in config.read_text()
    assert ox_json("status", cwd=project)["rule"] == "user config"  # the user's own word decides now


def test_enable_creates_the_config_and_warns_about_the_environment(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    out = ox("enable").stdout
    assert _config(home).read_text() == "telemetry_enabled: true\n"
    assert "still off, DO_NOT_TRACK is set" in out


def test_disable_honours_ox_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "elsewhere.yaml"
    target.write_text("a: 1\r\ntelemetry_enabled: yes\r\n")
    monkeypatch.setenv("OX_USER_CONFIG", str(target))
    ox("disable", cwd=tmp_path)
    assert target.read_bytes() == b"a: 1\r\ntelemetry_enabled: false\r\n"


# -- show -------------------------------------------------------------------------


def test_show_prints_exactly_what_would_be_sent(
    home: Path, project: Path, endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGEOX_ENDPOINT", endpoint.base_url)
    FileQueue(str(project)).append(Event("command_error", command="deploy", error_code=f"open {home}/x/y.txt",
                                         duration_ms=12))
    _spool(endpoint.base_url).append(Event("command_complete", command="sync", metadata={"ip": "10.1.2.3"},
                                           success=True))
    shown = ox_json("show", cwd=project)
    assert [(q["kind"], len(q["events"])) for q in shown] == [("project", 1), ("spool", 1)]
    assert shown[0]["events"][0]["error_code"] == "open ~/<path>/y.txt"
    assert shown[1]["events"][0]["metadata"] == {"ip": "<redacted:ipv4>"}

    table = ox("show", cwd=project).stdout
    assert "timestamp" in table and "open ~/<path>/y.txt" in table and "ip=<redacted:ipv4>" in table
    assert f"{home}/x" not in table

    ox("flush", cwd=project)
    sent = sorted(endpoint.accepted_events(), key=lambda e: e["command"])
    wanted = sorted(shown[0]["events"] + shown[1]["events"], key=lambda e: e["command"])
    assert sent == wanted  # show and the wire agree to the byte


# -- flush ------------------------------------------------------------------------


def test_flush_reports_each_batch(project: Path, endpoint: Endpoint) -> None:
    queue = FileQueue(str(project))
    for i in range(501):  # two batches: the batch limit is 500 events
        queue.append(Event("command_complete", command=f"c{i}"))
    out = ox("flush", "--endpoint", endpoint.base_url, cwd=project).stdout.splitlines()
    path = queue.path
    assert out == [f"{path}: 500 events: HTTP 200 (delivered)", f"{path}: 1 event: HTTP 200 (delivered)"]
    assert len(endpoint.accepted_events()) == 501
    assert ox("flush", "--endpoint", endpoint.base_url, cwd=project).stdout.strip() == "nothing to send"


def test_flush_reports_a_refusal_as_json(project: Path, endpoint: Endpoint) -> None:
    endpoint.status = 400
    FileQueue(str(project)).append(Event("command_complete", command="c"))
    result = ox("flush", "--json", "--endpoint", endpoint.base_url, cwd=project, check=False)
    assert result.returncode == 1
    assert json.loads(result.stdout) == [
        {"queue": FileQueue(str(project)).path, "events": 1, "outcome": "refused", "answer": "HTTP 400"}
    ]


def test_flush_sends_nothing_when_off(
    project: Path, endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    FileQueue(str(project)).append(Event("command_complete", command="c"))
    monkeypatch.setenv("SAGEOX_TELEMETRY", "false")
    result = ox("flush", "--endpoint", endpoint.base_url, cwd=project, check=False)
    assert result.returncode == 1 and "telemetry is off (decided by: SAGEOX_TELEMETRY)" in result.stderr
    assert endpoint.requests == []


# -- mounted in a host CLI --------------------------------------------------------


def test_functions_for_a_host_cli(project: Path, endpoint: Endpoint, capsys: pytest.CaptureFixture[str]) -> None:
    FileQueue(str(project)).append(Event("command_complete", command="c"))
    info = operations.status(project, endpoint.base_url)
    assert info["queue_count"] == 1 and info["rule"] == "default"
    assert operations.show(project, endpoint.base_url)[0]["events"][0]["command"] == "c"
    reports = operations.flush(project, endpoint.base_url)
    assert [(r.events, r.outcome, r.answer) for r in reports] == [(1, "delivered", "HTTP 200")]
    assert commands.main(["status", "--json", "--project", str(project)], prog="mycli telemetry") == 0
    assert json.loads(capsys.readouterr().out)["project_root"] == str(project)
    assert commands.main([], prog="mycli telemetry") == 2
    assert "usage: mycli telemetry {status,enable,disable,mode,forget,show,view,flush}" in capsys.readouterr().err
