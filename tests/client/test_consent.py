"""Consent: every opt-out signal of CONTRACT.md section 4, and the user winning over the host."""

from __future__ import annotations

from pathlib import Path

import pytest

from ox_telemetry import Client
from ox_telemetry.consent import decide


def test_on_by_default() -> None:
    decision = decide()
    assert decision.enabled and decision.rule == "default"
    assert Client("s").is_enabled()


@pytest.mark.parametrize("value", ["1", "true", "yes", "anything"])
def test_do_not_track_opts_out(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DO_NOT_TRACK", value)
    assert decide().rule == "DO_NOT_TRACK"
    assert not Client("s").is_enabled()
    assert not Client("s", enabled=True).is_enabled()


@pytest.mark.parametrize("value", ["", "0", "false"])
def test_do_not_track_off_values_keep_it_on(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DO_NOT_TRACK", value)
    assert Client("s").is_enabled()


@pytest.mark.parametrize("value", ["false", "0", "off", "no", "FALSE", "Off", "No"])
def test_sageox_telemetry_opts_out(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SAGEOX_TELEMETRY", value)
    assert decide().rule == "SAGEOX_TELEMETRY"
    assert not Client("s", enabled=True).is_enabled()


def test_sageox_telemetry_true_keeps_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGEOX_TELEMETRY", "true")
    assert Client("s").is_enabled()


def _user_config(home: Path, text: str, xdg: bool = False) -> Path:
    directory = home / ".config" / "sageox" if xdg else home / ".sageox" / "config"
    directory.mkdir(parents=True)
    path = directory / "config.yaml"
    path.write_text(text)
    return path


def test_user_config_opts_out(home: Path) -> None:
    _user_config(home, "endpoint: x\ntelemetry_enabled: false  # no thanks\nother: 1\n")
    assert decide().rule == "user config"
    assert not Client("s", enabled=True).is_enabled()


def test_user_config_true_keeps_it_on(home: Path) -> None:
    _user_config(home, "telemetry_enabled: true\n")
    assert Client("s").is_enabled()


def test_user_config_under_xdg(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _user_config(home, "telemetry_enabled: false\n", xdg=True)
    assert Client("s").is_enabled()  # not read without OX_XDG_ENABLE
    monkeypatch.setenv("OX_XDG_ENABLE", "1")
    assert not Client("s").is_enabled()


def test_user_config_named_by_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "elsewhere.yaml"
    path.write_text("telemetry_enabled: 'false'\n")
    monkeypatch.setenv("OX_USER_CONFIG", str(path))
    assert not Client("s").is_enabled()


def test_project_config_opts_out(project: Path) -> None:
    (project / ".sageox" / "config.json").write_text('{"repo_id": "r", "telemetry": false}')
    client = Client("s", project_root=str(project), enabled=True)
    assert not client.is_enabled() and client.consent.rule == "project config"


def test_host_can_turn_it_off() -> None:
    client = Client("s", enabled=False)
    assert not client.is_enabled() and client.consent.rule == "argument"


def test_unreadable_configs_keep_the_default(home: Path, project: Path) -> None:
    _user_config(home, "\x00\xff not yaml : : :\n")
    (project / ".sageox" / "config.json").write_text("{not json")
    assert Client("s", project_root=str(project)).is_enabled()
