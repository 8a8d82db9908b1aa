"""Client changes of issue 5: exceptions as error codes, scrubbed debug output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ox_telemetry import Client, Event


def _queued(project: Path) -> list[dict[str, object]]:
    lines = (project / ".sageox" / "cache" / "telemetry.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_track_command_records_exception_class_names_not_messages(project: Path) -> None:
    client = Client("s", project_root=str(project))
    client.track_command("a", 0.1, False, FileNotFoundError(2, "No such file", "/home/x/secret.txt"))
    client.track_command("b", 0.1, False, PermissionError)
    client.track_command("c", 0.1, False, "E_CUSTOM")
    assert [e["error_code"] for e in _queued(project)] == ["FileNotFoundError", "PermissionError", "E_CUSTOM"]
    assert "secret" not in (project / ".sageox" / "cache" / "telemetry.jsonl").read_text()


def test_debug_mode_prints_what_would_be_sent(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    monkeypatch.setenv("OX_TELEMETRY_DEBUG", "1")
    client = Client("s")
    client.track(Event("command_error", command="sync", error_code=f"cannot read {home}/notes/plan.txt"))
    printed = json.loads(capsys.readouterr().err.strip())
    assert printed["error_code"] == "cannot read ~/<path>/plan.txt"
