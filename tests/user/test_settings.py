"""One answer per setting: the client and ``status`` agree on the queue, debug means the same everywhere, no home."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ox_telemetry import Client, Event, consent, operations, paths, settings
from ox_telemetry.collector.cli import _parser, config_from_args
from ox_telemetry.queue import NOT_INITIALISED


def _ox(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ox_telemetry.cli", *args], cwd=cwd, env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=60)


def _record_one(root: Path) -> None:
    client = Client("s", project_root=str(root))
    client.track(Event("command_complete", command="c"))
    client.stop()


@pytest.mark.parametrize("initialised", [False, True])
def test_status_and_the_client_agree_on_the_queue(tmp_path: Path, home: Path, initialised: bool) -> None:
    root = tmp_path / "repo"
    (root / ".sageox").mkdir(parents=True)  # a .sageox/ without README.md or .repo_*: not initialised
    if initialised:
        (root / ".sageox" / ".repo_abc").write_text("")
    info = json.loads(_ox("status", "--json", cwd=root).stdout)
    _record_one(root)
    project_queue = Path(paths.project_queue_path(str(root)))
    if initialised:
        assert info["events_go_to"] == "project queue"
        assert project_queue.read_text().count("\n") == 1
    else:
        assert info["events_go_to"] == f"user spool: {NOT_INITIALISED}"
        assert not project_queue.exists()
        assert operations.status(str(root))["spool_count"] == 1  # where the client put it
    assert not (root / ".sageox" / "cache").exists() or initialised  # status itself made nothing
    text = _ox("status", cwd=root).stdout
    assert f"events go to: {info['events_go_to']}" in text


def test_status_outside_a_project_names_the_spool(tmp_path: Path) -> None:
    info = operations.status()
    assert info["events_go_to"] == f"user spool: {operations.NO_PROJECT}"


def test_status_names_a_squatted_daemon_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    squatted = tmp_path / "telemetry.sock"
    squatted.write_text("not a socket")
    monkeypatch.setenv("OX_TELEMETRY_SOCKET", str(squatted))
    info = operations.status()
    assert info["daemon_running"] is False
    assert info["daemon_socket_problem"] == f"{squatted} is not a socket"
    text = _ox("status", cwd=tmp_path, env=dict(os.environ)).stdout
    assert f"daemon socket: {squatted} is not a socket" in text


def test_status_after_enable_names_the_user_config(tmp_path: Path) -> None:
    assert _ox("enable", cwd=tmp_path).returncode == 0
    info = json.loads(_ox("status", "--json", cwd=tmp_path).stdout)
    assert (info["enabled"], info["rule"]) == (True, "user config")
    assert "telemetry:    on (decided by: user config)" in _ox("status", cwd=tmp_path).stdout


@pytest.mark.parametrize("value", ["1", "true", "YES", " on ", "On\n"])
def test_debug_words_are_the_same_for_every_reader(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OX_TELEMETRY_DEBUG", value)
    assert settings.debug()
    Client("s").track(Event("command_complete", command="printed"))
    assert '"command":"printed"' in capsys.readouterr().err.replace(" ", "")


@pytest.mark.parametrize("value", ["0", "off", "", "maybe"])
def test_debug_off_words(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OX_TELEMETRY_DEBUG", value)
    assert not settings.debug()


@pytest.mark.parametrize("text", ["0", "90s", "1h30m", "1.5h", ".5s", "300ms", "2µs", "bad", "5", "-1s", "1x", ""])
def test_serve_accepts_the_intervals_daemons_obey(text: str) -> None:
    """``serve --daemon-interval`` and the daemons' reading of the header it becomes: one parser."""
    args = _parser().parse_args([f"--daemon-interval={text}"])
    try:
        config_from_args(args)
        accepted = True
    except ValueError as exc:
        accepted = "--daemon-interval" not in str(exc)
    assert accepted == (settings.go_duration(text) is not None)


def test_the_notice_hold_is_part_of_the_decision() -> None:
    assert not consent.decide().held
    consent.hold_sends()
    try:
        assert consent.decide().held and Client("s").consent.held
        assert not consent.decide(False).held  # nothing to hold when off
    finally:
        consent.hold_sends(False)


def test_ci_rule_comes_from_decide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITLAB_CI", "true")
    decision = consent.decide(disable_in_ci=True)
    assert (decision.enabled, decision.rule, decision.ci) == (False, "ci", "gitlab")
    assert consent.decide().ci == "gitlab" and consent.decide().enabled


# -- no home ----------------------------------------------------------------------

_NOBODY = "54321"  # a uid with no passwd entry


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to run as a uid without a passwd entry")
@pytest.mark.parametrize("command", ["status", "disable", "enable"])
def test_no_home_answers_in_one_line(command: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")}
    result = subprocess.run(
        ["setpriv", f"--reuid={_NOBODY}", f"--regid={_NOBODY}", "--clear-groups",
         sys.executable, "-m", "ox_telemetry.cli", command],
        cwd="/", env=env, capture_output=True, text=True, timeout=60,
    )
    out = (result.stdout + result.stderr).strip()
    assert "Traceback" not in out, out
    assert out.splitlines() == [out] and out.startswith("no home directory: nothing is stored"), out
    assert result.returncode == (0 if command == "status" else 1)
