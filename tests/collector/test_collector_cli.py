"""``ox-telemetry serve`` as a user runs it, and the client library end to end against it."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from collector_helpers import batch, event, start_process

from loopback import wait_until
from ox_telemetry.collector.storage import open_storage


def serve_fails(*args: str) -> str:
    """Run ``serve`` expecting it to refuse to start; its stderr."""
    result = subprocess.run([sys.executable, "-m", "ox_telemetry.cli", "serve", "--port", "0", *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    return result.stderr


def test_the_server_process_collects_garbage_rarely_and_never_rescans_what_it_loaded() -> None:
    # serve() calls tune_gc() before it runs; here in a process of its own, as GC settings are global.
    code = ("import gc; from ox_telemetry.collector.cli import tune_gc; tune_gc(); "
            "print(gc.get_threshold()[0], gc.get_freeze_count())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    threshold, frozen = map(int, result.stdout.split())
    assert threshold == 10_000 and frozen > 1000


def test_default_store_is_in_the_user_data_directory(home: Path) -> None:
    server = start_process()
    try:
        assert server.request("POST", "/api/v1/telemetry", json.dumps(batch(event())).encode()).status == 200
    finally:
        server.stop()
    path = home / ".sageox" / "data" / "collector.sqlite3"
    assert path.exists() and f"sqlite://{path}" in server.output[0]
    store = open_storage(str(path))
    assert store.query("SELECT count(*) FROM events") == [(1,)]
    assert store.query("PRAGMA journal_mode") == [("wal",)]
    store.close()


def test_sigterm_commits_what_was_answered(tmp_path: Path) -> None:
    server = start_process("--db", f"sqlite://{tmp_path}/t.sqlite3")
    ids = []
    for _ in range(5):
        events = [event() for _ in range(20)]
        assert server.request("POST", "/api/v1/telemetry", json.dumps(batch(*events)).encode()).status == 200
        ids += [e["event_id"] for e in events]
    server.stop()
    store = open_storage(f"sqlite://{tmp_path}/t.sqlite3")
    assert {r[0] for r in store.query("SELECT event_id FROM events")} == set(ids)
    store.close()


def test_write_key_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# collector keys\nfirst-key\n\n  second-key  # for CI\n")
    server = start_process("--db", f"sqlite://{tmp_path}/k.sqlite3", "--write-key-file", str(keys),
                           "--write-key", "third-key")
    try:
        body = json.dumps(batch(event())).encode()
        assert server.request("POST", "/api/v1/telemetry", body).status == 401
        for key in ("first-key", "second-key", "third-key"):
            headers = {"Authorization": f"Bearer {key}"}
            assert server.request("POST", "/api/v1/telemetry", json.dumps(batch(event())).encode(),
                                  headers).status == 200
        assert server.request("POST", "/api/v1/telemetry", body, {"X-Ox-Write-Key": "# collector keys"}).status \
            == 401
    finally:
        server.stop()


def test_refuses_to_start_with_a_clear_message(tmp_path: Path) -> None:
    assert "unsupported database URL" in serve_fails("--db", "mysql://db/x")
    assert "not a Go duration" in serve_fails("--daemon-interval", "5 minutes")
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    assert "holds no write key" in serve_fails("--write-key-file", str(empty))
    assert "No such file" in serve_fails("--write-key-file", str(tmp_path / "missing"))
    assert "cannot open PostgreSQL" in serve_fails("--db", "postgresql://nobody@127.0.0.1:1/none")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "ox_telemetry.cli", "serve", "--port", str(port), "--db",
                                 f"sqlite://{tmp_path}/p.sqlite3"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "cannot listen" in result.stderr


def test_help_lists_the_options() -> None:
    result = subprocess.run([sys.executable, "-m", "ox_telemetry.cli", "serve", "--help"],
                            capture_output=True, text=True, timeout=60)
    for option in ("--host", "--port", "--db", "--write-key", "--write-key-file", "--read-token"):
        assert option in result.stdout
    listing = subprocess.run([sys.executable, "-m", "ox_telemetry.cli", "--help"], capture_output=True, text=True,
                             timeout=60)
    assert "serve" in listing.stdout and "demo" in listing.stdout


def test_client_library_end_to_end(tmp_path: Path) -> None:
    from ox_telemetry import Client

    server = start_process("--db", f"sqlite://{tmp_path}/e2e.sqlite3")
    try:
        with Client("e2e-session", base_url=server.url, version="9.9.9", enabled=True) as client:
            if not client.is_enabled():
                pytest.skip("telemetry is turned off in this environment")
            client.track_command("agent prime", 1.5, True)
            client.track_command("sync", 0.25, False, "ERR_NETWORK")
            client.flush()
        store = open_storage(f"sqlite://{tmp_path}/e2e.sqlite3")

        def delivered() -> bool:
            return int(store.query("SELECT count(*) FROM events")[0][0]) >= 2

        assert wait_until(delivered, 30), "the client's events never reached the collector"
        rows = store.query("SELECT command, duration_ms, success, error_code, cli_version, session_id, event_id "
                           "FROM events ORDER BY command")
        assert [(r[0], r[1], bool(r[2]), r[3], r[4], r[5]) for r in rows] == [
            ("agent prime", 1500, True, "", "9.9.9", "e2e-session"),
            ("sync", 250, False, "ERR_NETWORK", "9.9.9", "e2e-session"),
        ]
        assert all(r[6] for r in rows)  # the client gives every event an id
        store.close()
    finally:
        server.stop()


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_stops_serve_without_a_traceback(tmp_path: Path, presses: int) -> None:
    # A second Ctrl-C, quickly after the first, as someone impatient presses it.
    server = start_process("--db", f"sqlite://{tmp_path}/c.sqlite3", "--log-level", "info")
    try:
        for _ in range(presses):
            server.proc.send_signal(signal.SIGINT)
        status = server.proc.wait(20)
        assert server.reader is not None
        server.reader.join(20)  # the output ends when the writer process has closed it too
        output = "".join(server.output)
        assert "Traceback" not in output, output
        assert "Finished server process" in output
        assert status == 128 + signal.SIGINT  # the shell's status for a Ctrl-C
    finally:
        server.kill_all()
