"""The consent notice: shown once per user and notice version; its run's events wait for a later run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import ox_telemetry
from loopback import Endpoint
from ox_telemetry import consent

# One host CLI run: notice, then a client that records one command and flushes in the foreground.
_RUN = textwrap.dedent("""
    import sys
    import ox_telemetry
    from ox_telemetry import Client, consent_notice
    from ox_telemetry.transport import UrllibTransport

    base_url, version, command = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    consent_notice.NOTICE_VERSION = version  # as a newer release of the library would have it
    shown = ox_telemetry.notice("democli", "https://example.com/privacy")
    client = Client("s", base_url=base_url, transport=UrllibTransport())
    client.start()
    client.track_command(command, 0.1, True)
    client.flush()
    for thread in client._sender.threads() if client._sender else []:
        thread.join(10)
    client.stop()
    print("shown" if shown else "quiet")
""")


def _run(endpoint: Endpoint, command: str, version: int = 1) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _RUN, endpoint.base_url, str(version), command],
        capture_output=True, text=True, timeout=60, check=True,
    )


def _sent(endpoint: Endpoint) -> list[object]:
    return [e["command"] for e in endpoint.accepted_events()]


def test_shown_once_and_its_run_sends_nothing(endpoint: Endpoint, home: Path) -> None:
    first = _run(endpoint, "first")
    assert first.stdout.strip() == "shown"
    assert "democli collects anonymous usage telemetry" in first.stderr
    assert "DO_NOT_TRACK=1" in first.stderr and "https://example.com/privacy" in first.stderr
    assert endpoint.requests == []  # the notice's run kept its event local
    assert (home / ".sageox" / "config" / "telemetry_notice_shown").read_text().strip() == "1"

    second = _run(endpoint, "second")
    assert second.stdout.strip() == "quiet" and second.stderr == ""
    assert sorted(_sent(endpoint)) == ["first", "second"]  # the held event goes with the next run


def test_shown_again_when_the_notice_version_changes(endpoint: Endpoint, home: Path) -> None:
    assert _run(endpoint, "a").stdout.strip() == "shown"
    assert _run(endpoint, "b").stdout.strip() == "quiet"
    changed = _run(endpoint, "c", version=2)
    assert changed.stdout.strip() == "shown" and "democli" in changed.stderr
    assert "c" not in _sent(endpoint)
    assert _run(endpoint, "d", version=2).stdout.strip() == "quiet"
    assert sorted(_sent(endpoint)) == ["a", "b", "c", "d"]


@pytest.fixture
def held() -> Iterator[None]:
    """In-process calls set the process-global hold; put it back for the next test."""
    yield
    consent.hold_sends(False)


def test_opted_out_user_sees_nothing(
    held: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    assert ox_telemetry.notice("democli", "https://example.com") is False
    assert capsys.readouterr().err == ""
    assert not (home / ".sageox" / "config" / "telemetry_notice_shown").exists()
    assert not consent.decide().held


def test_never_raises_on_a_read_only_config_dir(
    held: None, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (home / ".sageox").mkdir()
    (home / ".sageox" / "config").write_text("a file where the directory should be")
    assert ox_telemetry.notice("democli", "https://example.com") is True
    assert "democli" in capsys.readouterr().err


def test_a_closed_stderr_does_not_raise(held: None, monkeypatch: pytest.MonkeyPatch) -> None:
    class Closed:
        def write(self, text: str) -> int:
            raise ValueError("I/O operation on closed file")

    monkeypatch.setattr(sys, "stderr", Closed())
    assert ox_telemetry.notice("democli", "https://example.com") is True
