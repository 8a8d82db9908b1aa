"""All three parts at once: a client library and a delivery daemon sending to a real ``ox-telemetry serve``."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from collector_helpers import start_process

from loopback import wait_until
from ox_telemetry import Client
from ox_telemetry.collector.storage import open_storage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "daemon"))

from daemon_helpers import DaemonProcess, status


def test_client_and_daemon_deliver_to_a_real_collector(
    tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = f"sqlite://{tmp_path}/e2e.sqlite3"
    server = start_process("--db", db)
    sock_dir = tempfile.mkdtemp(prefix="oxe-", dir="/tmp")  # sun_path is short: not under pytest's tmp_path
    monkeypatch.setenv("OX_TELEMETRY_SOCKET", os.path.join(sock_dir, "run", "telemetry.sock"))
    monkeypatch.setenv("SAGEOX_TELEMETRY_ENDPOINT", server.url + "/tevents")
    monkeypatch.setenv("OX_TELEMETRY_DAEMON_INTERVAL", "0.1")
    daemon = DaemonProcess(tmp_path / "daemon.log").start()
    store = open_storage(db)
    try:
        with Client("e2e", base_url=server.url, project_root=str(project), version="1.2.3", enabled=True) as client:
            if not client.is_enabled():
                pytest.skip("telemetry is turned off in this environment")
            for _ in range(12):  # past the flush threshold: the daemon is asked to send the project's queue
                client.track_command("agent prime", 0.5, True)
            client.track_command("sync", 0.25, False, "ERR_NETWORK")
            client.send_to_daemon("sync:complete", {"files": "3"})

        def arrived() -> bool:
            clients = int(store.query("SELECT count(*) FROM events")[0][0])
            synced = int(store.query("SELECT count(*) FROM daemon_events WHERE event = 'sync:complete'")[0][0])
            return clients >= 13 and synced >= 1

        assert wait_until(arrived, 30), f"not everything arrived; daemon log:\n{daemon.log()}"
        rows = store.query("SELECT command, success, error_code, cli_version, repo_id, event_id FROM events")
        assert len(rows) == 13 and len({r[5] for r in rows}) == 13  # each event once, each with its own id
        assert {(r[0], bool(r[1]), r[2], r[3], r[4]) for r in rows} == {
            ("agent prime", True, "", "1.2.3", "repo_test"),
            ("sync", False, "ERR_NETWORK", "1.2.3", "repo_test"),
        }
        (props,) = store.query("SELECT props FROM daemon_events WHERE event = 'sync:complete'")[0]
        assert '"files":"3"' in props.replace(" ", "") and '"app_type":"ox"' in props.replace(" ", "")
        assert int(store.query("SELECT count(*) FROM daemon_events WHERE event = 'app:startup'")[0][0]) == 1
        # The daemon's own count agrees, once it has read the collector's answer.
        assert wait_until(lambda: status()["delivered"] >= 2, 10)
        assert not (project / ".sageox" / "cache" / "telemetry.jsonl").exists() or \
            (project / ".sageox" / "cache" / "telemetry.jsonl").stat().st_size == 0
    finally:
        store.close()
        daemon.close()
        server.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)
