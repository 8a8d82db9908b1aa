"""Click, Typer and argparse integrations: the example CLIs end to end against a loopback endpoint,
and the edges of each integration in process."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import typer
from click.testing import CliRunner as ClickRunner
from typer.testing import CliRunner as TyperRunner

from loopback import Endpoint, wait_until
from ox_telemetry import Client, paths
from ox_telemetry.integrations import argparse as ox_argparse
from ox_telemetry.integrations.click import instrument, instrument_typer, instrumented
from ox_telemetry.queue import JsonlQueue

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# framework -> what it reports for: ctx.exit(3)-style exit, Ctrl-C (error exit code), a usage error
EXPECTED = {
    "click": {"exit": "Exit", "interrupt_exit": "1", "usage": "MissingParameter"},
    "typer": {"exit": "Exit", "interrupt_exit": "130", "usage": "MissingParameter"},
    "argparse": {"exit": "exit_3", "interrupt_exit": "130", "usage": "SystemExit"},
}


def _example(framework: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLES / f"{framework}_cli.py"), *args],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ))


def _interrupted(framework: str) -> int:
    """Run the example's ``wait`` and press Ctrl-C (SIGINT) once it is waiting; returns its exit status."""
    # A runner started in the background (``pytest &``) has SIGINT ignored, and a child inherits that:
    # the example gets Ctrl-C's default disposition back, as a terminal would give it.
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / f"{framework}_cli.py"), "wait"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "waiting"
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode


def _summary(events: list[dict[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    return [(e["type"], e.get("command", ""), e.get("error_code", ""), e.get("metadata", {}).get("exit_code", ""),
             e.get("metadata", {}).get("flags", "")) for e in events]


@pytest.mark.parametrize("framework", ["click", "typer", "argparse"])
def test_example_end_to_end(framework: str, endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGEOX_ENDPOINT", endpoint.base_url)
    expected = EXPECTED[framework]

    ok = _example(framework, "--verbose", "greet", "Ada", "--shout")
    assert ok.returncode == 0 and ok.stdout.strip() == "HELLO, ADA!"
    assert f"{framework}-example collects anonymous usage telemetry" in ok.stderr  # first run: the notice
    assert _example(framework, "agent", "prime", "--force").returncode == 0
    failed = _example(framework, "fail")
    assert failed.returncode == 1 and "RuntimeError" in failed.stderr
    assert _example(framework, "exit", "3").returncode == 3
    assert _interrupted(framework) != 0
    assert _example(framework, "greet").returncode == 2  # NAME missing: a usage error
    # Ten events make a batch worth sending: a background uploader may be at work. Let it finish,
    # then send the rest in the foreground.
    spool = JsonlQueue(paths.user_spool_path(endpoint.base_url))
    assert wait_until(lambda: not spool.sender_busy())

    flushed = subprocess.run([sys.executable, "-m", "ox_telemetry.cli", "flush"], capture_output=True, text=True,
                             timeout=60, env=dict(os.environ))
    assert flushed.returncode == 0, flushed.stderr
    events = sorted(endpoint.accepted_events(), key=lambda e: e["timestamp"])
    assert _summary(events) == [
        ("command_start", "greet", "", "", "shout,verbose"),
        ("command_complete", "greet", "", "0", "shout,verbose"),
        ("command_start", "agent prime", "", "", "force"),
        ("command_complete", "agent prime", "", "0", "force"),
        ("command_start", "fail", "", "", ""),
        ("command_error", "fail", "RuntimeError", "1", ""),
        ("command_start", "exit", "", "", ""),
        ("command_error", "exit", expected["exit"], "3", ""),
        ("command_start", "wait", "", "", ""),
        ("command_error", "wait", "KeyboardInterrupt", expected["interrupt_exit"], ""),
        ("command_error", "greet", expected["usage"], "2", ""),
    ]
    assert "Ada" not in json.dumps(events)  # argument values never leave
    assert all(e["success"] is (e["type"] == "command_complete") for e in events if e["type"] != "command_start")
    assert len({e["session_id"] for e in events}) == 6  # one session a run


# -- in process -------------------------------------------------------------------


@pytest.fixture
def client(project: Path) -> Iterator[Client]:
    yield Client("s", project_root=str(project))


def _recorded(project: Path) -> list[dict[str, Any]]:
    path = project / ".sageox" / "cache" / "telemetry.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _click_app() -> click.Group:
    @click.group(invoke_without_command=True)
    def cli() -> None:
        pass

    @cli.command()
    @click.pass_context
    def done(ctx: click.Context) -> None:
        ctx.exit(0)

    @cli.command()
    def message() -> None:
        sys.exit("fatal: something")

    return cli


def test_click_non_standalone_and_clean_exits(client: Client, project: Path) -> None:
    cli = instrument(_click_app(), client)
    assert instrument(cli, client) is cli  # a second call changes nothing
    assert cli.main(["done"], standalone_mode=False) == 0
    with pytest.raises(SystemExit):
        cli.main(["message"], standalone_mode=False)
    assert cli.main([], standalone_mode=False) is None  # the group alone
    assert _summary(_recorded(project)) == [
        ("command_start", "done", "", "", ""),
        ("command_complete", "done", "", "0", ""),
        ("command_start", "message", "", "", ""),
        ("command_error", "message", "SystemExit", "1", ""),
        ("command_start", "cli", "", "", ""),
        ("command_complete", "cli", "", "0", ""),
    ]


def test_click_decorator_and_lazy_commands(client: Client, project: Path) -> None:
    class Lazy(click.Group):
        def list_commands(self, ctx: click.Context) -> list[str]:
            return ["late"]

        def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
            return click.Command("late", callback=lambda: None) if name == "late" else None

    @instrumented(client)
    @click.group(cls=Lazy)
    def cli() -> None:
        pass

    assert ClickRunner().invoke(cli, ["late"]).exit_code == 0
    assert [e["command"] for e in _recorded(project)] == ["late", "late"]


def test_typer_through_its_test_runner(client: Client, project: Path) -> None:
    app = typer.Typer()

    @app.command()
    def one(count: int = typer.Option(1, "--count", "-c")) -> None:
        pass

    @app.command()
    def two() -> None:
        raise ValueError("no")

    instrument_typer(app, client, manage_client=False)
    runner = TyperRunner()
    assert runner.invoke(app, ["one", "-c", "5"]).exit_code == 0
    assert runner.invoke(app, ["two"]).exit_code == 1
    stats = client.get_stats()
    assert (stats.command_count, stats.error_count, stats.command_counts) == (2, 1, {"one": 1, "two": 1})
    assert _summary(_recorded(project)) == [
        ("command_start", "one", "", "", "count"),
        ("command_complete", "one", "", "0", "count"),
        ("command_start", "two", "", "", ""),
        ("command_error", "two", "ValueError", "1", ""),
    ]


def test_argparse_help_lone_parser_and_aliases(client: Client, project: Path) -> None:
    parser = argparse.ArgumentParser(prog="tool")
    sub = parser.add_subparsers(dest="cmd")
    build = sub.add_parser("build", aliases=["b"])
    build.add_argument("-j", "--jobs", type=int)
    build.add_argument("rest", nargs="*")
    seen: list[argparse.Namespace] = []
    assert ox_argparse.run(parser, client, ["b", "-j", "4", "--", "--jobs"], seen.append) == 0
    assert not hasattr(seen[0], "_ox_telemetry_command") and seen[0].jobs == 4
    with pytest.raises(SystemExit):
        ox_argparse.run(parser, client, ["--help"], seen.append)
    lone = argparse.ArgumentParser(prog="lone")
    lone.add_argument("--dry-run", action="store_true")
    assert ox_argparse.run(lone, client, ["--dry-run"], lambda ns: 0, manage_client=False) == 0
    assert _summary(_recorded(project)) == [
        ("command_start", "build", "", "", "jobs"),
        ("command_complete", "build", "", "0", "jobs"),
        ("command_start", "tool", "", "", "help"),
        ("command_complete", "tool", "", "0", "help"),
        ("command_start", "lone", "", "", "dry-run"),
        ("command_complete", "lone", "", "0", "dry-run"),
    ]


def test_a_disabled_client_records_nothing(monkeypatch: pytest.MonkeyPatch, project: Path) -> None:
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    cli = instrument(_click_app(), Client("s", project_root=str(project)))
    assert cli.main(["done"], standalone_mode=False) == 0
    assert _recorded(project) == []


def test_integrations_import_no_framework() -> None:
    code = ("import sys, ox_telemetry.integrations, ox_telemetry.integrations.click, "
            "ox_telemetry.integrations.argparse; print('click' in sys.modules or 'typer' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "False"
