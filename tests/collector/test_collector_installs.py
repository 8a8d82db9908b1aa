"""Installations, errors, filters, forgetting and retention (issue 18), on both stores."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from collector_helpers import Server, batch, event, start_process

from loopback import wait_until
from ox_telemetry.collector import ingest
from ox_telemetry.collector.retention import Retention
from ox_telemetry.collector.stats import Filters, query_installs
from ox_telemetry.collector.storage import Storage, WriteJob, open_storage
from ox_telemetry.collector.storage.schema import MIGRATIONS, SCHEMA_VERSION

TELEMETRY = "/api/v1/telemetry"
DAY = 86400


def ids(n: int, seed: int = 0) -> list[str]:
    """Fixed UUIDv4s, so estimates are the same every run."""
    return [str(uuid.UUID(int=(seed << 64) + i * 0x9E3779B97F4A7C15 % (1 << 120), version=4)) for i in range(n)]


def get(server: Server, path: str) -> Any:
    reply = server.request("GET", path)
    assert reply.status == 200, reply.body
    return reply.json()


def post_as(server: Server, client_id: str | None, *events: dict[str, Any], **envelope: Any) -> None:
    fields = {} if client_id is None else {"client_id": client_id}
    reply = server.post(TELEMETRY, batch(*events, **fields, **envelope))
    assert reply.status == 200 and not reply.json()["rejected"], reply.body


@pytest.fixture
def server(serve: Callable[..., Server], db_url: str) -> Server:
    return serve(db_url=db_url)


def test_installs_count_distinct_ids_by_version_os_and_command_with_filters(server: Server) -> None:
    a, b, c = ids(3)
    post_as(server, a, event(command="init"), event(command="status"), cli_version="1.0", os="linux", arch="amd64")
    post_as(server, a, event(command="status"), cli_version="1.0", os="linux", arch="amd64")  # the same one again
    post_as(server, b, event(command="status"), cli_version="1.1", os="linux", arch="arm64")
    post_as(server, c, event(type="session_start", command=""), cli_version="1.1", os="darwin", arch="arm64")
    post_as(server, None, event(), event(), cli_version="0.9")  # an older client: no id
    wait_until(lambda: server.count() == 7, 10)

    everything = get(server, "/api/v1/installs?by=version")
    assert everything["total"] == 3
    assert everything["unknown_events"] == 2
    assert everything["groups"] == [{"key": "1.1", "installs": 2}, {"key": "1.0", "installs": 1}]
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert everything["daily"][-1] == {"day": today, "installs": 3}
    assert [s["key"] for s in everything["series"]] == ["1.1", "1.0"]
    assert everything["series"][0]["daily"][-1] == {"day": today, "installs": 2}

    assert get(server, "/api/v1/installs?by=command")["groups"] == [
        {"key": "status", "installs": 2}, {"key": "init", "installs": 1}]
    # os= is a bare OS (any arch) or os/arch; filters AND together.
    assert get(server, "/api/v1/installs?os=linux")["total"] == 2
    assert get(server, "/api/v1/installs?os=linux/arm64")["total"] == 1
    assert get(server, "/api/v1/installs?os=linux&version=1.0&by=command")["groups"] == [
        {"key": "init", "installs": 1}, {"key": "status", "installs": 1}]
    assert get(server, "/api/v1/installs?version=1.1&command=status")["total"] == 1
    assert get(server, "/api/v1/installs")["groups"] == [] and get(server, "/api/v1/installs")["series"] == []
    assert server.request("GET", "/api/v1/installs?by=arch").status == 400


def test_errors_are_listed_by_code_command_and_version_most_first_and_filtered(server: Server) -> None:
    failed = {"type": "command_error", "success": False}
    post_as(server, ids(1)[0], event(command="push", error_code="E_NET", **failed),
            event(command="push", error_code="E_NET", **failed),
            event(command="push", success=False, error_code="E_AUTH"), event(command="status"), cli_version="2.0")
    post_as(server, None, event(command="pull", error_code="E_NET", **failed), cli_version="1.9", os="darwin")
    wait_until(lambda: server.count() == 5, 10)
    answer = get(server, "/api/v1/errors")
    assert answer == {"total": 4, "errors": [
        {"error_code": "E_NET", "command": "push", "version": "2.0", "count": 2},
        {"error_code": "E_AUTH", "command": "push", "version": "2.0", "count": 1},
        {"error_code": "E_NET", "command": "pull", "version": "1.9", "count": 1}]}
    assert get(server, "/api/v1/errors?os=darwin")["total"] == 1
    assert get(server, "/api/v1/errors?command=push&limit=1")["errors"] == answer["errors"][:1]
    assert server.request("GET", "/api/v1/errors?limit=0").status == 400


def test_stats_take_the_same_filters(server: Server) -> None:
    post_as(server, None, event(command="init"), event(command="init", success=False), cli_version="1.0")
    post_as(server, None, event(command="status"), cli_version="1.1", os="darwin", arch="arm64")
    wait_until(lambda: server.count() == 3, 10)
    assert get(server, "/api/v1/stats")["totals"]["events"] == 3
    one = get(server, "/api/v1/stats?version=1.0")
    assert one["totals"]["events"] == 2 and one["totals"]["errors"] == 1
    assert [c["command"] for c in one["commands"]] == ["init"]
    assert get(server, "/api/v1/stats?os=darwin/arm64&command=status")["totals"]["command_runs"] == 1
    assert get(server, "/api/v1/stats?os=darwin&version=1.0")["totals"]["events"] == 0


def test_forget_deletes_one_installations_events_and_keeps_the_counts(serve: Callable[..., Server], db_url: str,
                                                                         ) -> None:
    server = serve(db_url=db_url, write_keys=frozenset({"k"}))
    key = {"Authorization": "Bearer k"}
    gone, kept = ids(2)
    for client_id in (gone, kept):
        assert server.post(TELEMETRY, batch(event(), event(), client_id=client_id), key).status == 200
    assert wait_until(lambda: server.count() == 4, 10)
    body = json.dumps({"client_id": gone}).encode()
    assert server.request("POST", "/api/v1/forget", body, {"Content-Type": "application/json"}).status == 401
    reply = server.request("POST", "/api/v1/forget", body, {"Content-Type": "application/json", **key})
    assert reply.status == 200 and reply.json() == {"forgotten": 2}
    assert server.count() == 2 and server.count(where="client_id = :c", params={"c": kept}) == 2
    assert server.request("POST", "/api/v1/forget", b'{"client_id": ""}',
                          {"Content-Type": "application/json", **key}).status == 400
    # The aggregates stay (documented): the installation is still counted, its events in the totals.
    assert get(server, "/api/v1/installs")["total"] == 2
    assert get(server, "/api/v1/stats")["totals"]["events"] == 4


def test_retention_deletes_old_batches_and_keeps_rollups(storage: Storage) -> None:
    now = time.time()
    old, new = int((now - 10 * DAY) * 1e6), int(now * 1e6)

    def job(received: int, client_id: str) -> WriteJob:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(received / 1e6))
        body = json.dumps(batch(event(timestamp=stamp), batch_timestamp=stamp, client_id=client_id)).encode()
        return ingest.client_batch(body, received).job()

    storage.write([job(old, "a"), job(new, "b")])
    daemon = ingest.daemon_upload(json.dumps({"clientid": "a", "events": [{"event": "x"}]}).encode(), old).job()
    storage.write([daemon])
    assert Retention(storage, 5, 3600).once(now) == 2
    assert [r[0] for r in storage.query("SELECT client_id FROM events")] == ["b"]
    assert int(storage.query("SELECT count(*) FROM daemon_events")[0][0]) == 0
    start = int(now - 30 * DAY) // 60 * 60
    assert query_installs(storage, start, int(now) // 60 * 60 + 60)["total"] == 2  # sketches kept


def test_installs_total_within_2_percent_at_100000_installations(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite://{tmp_path}/big.sqlite3")
    try:
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        template = batch(event(event_id="", timestamp=stamp), batch_timestamp=stamp, cli_version="1.0")
        parsed = ingest.client_batch(json.dumps(template).encode(), int(now * 1e6))
        base = parsed.job()
        every = ids(100_000, seed=7)
        for start in range(0, len(every), 5000):
            storage.write([WriteJob(base.client, base.daemon, base.tally, client_id, base.received_us)
                           for client_id in every[start:start + 5000]])
        minute = int(now) // 60 * 60
        found = query_installs(storage, minute - DAY, minute + 60, "version", Filters(version="1.0"))
        assert abs(found["total"] - 100_000) <= 2000, found["total"]
        assert found["groups"][0]["key"] == "1.0" and abs(found["groups"][0]["installs"] - 100_000) <= 2000
    finally:
        storage.close()


def test_a_version_2_sqlite_store_is_migrated_with_its_errors_counted(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (2)")
    for migration in MIGRATIONS[:2]:
        for statement in migration("sqlite"):
            conn.execute(statement)
    now = time.time()
    parsed = ingest.client_batch(json.dumps(batch(event(type="command_error", success=False, error_code="E1"),
                                                  event())).encode(), int(now * 1e6))
    conn.execute("INSERT INTO events_batches (rows) VALUES (?)", (parsed.job().client.json.decode(),))
    conn.close()
    store = open_storage(f"sqlite://{path}")
    try:
        assert store.query("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
        assert [tuple(r) for r in store.query("SELECT count(*), min(client_id) FROM events")] == [(2, None)]
        assert store.query("SELECT error_code, n FROM errors_1d") == [("E1", 1)]
        assert int(store.query("SELECT received_at FROM events_batches")[0][0]) == int(now * 1e6)
    finally:
        store.close()


def test_serve_forgets_and_retains_and_the_forget_command_asks_it(tmp_path: Path) -> None:
    """A real ``ox-telemetry serve``: the forget command deletes this user's events there, then the local id;
    ``--retain-days`` deletes events received longer ago."""
    home = tmp_path / "home"
    env = {"HOME": str(home), "SAGEOX_CLIENT_ID": "", "DO_NOT_TRACK": "", "SAGEOX_TELEMETRY": ""}
    proc = start_process("--db", f"sqlite://{tmp_path}/c.sqlite3", "--retain-days", str(3 / DAY),
                         "--retention-interval", "0.2")
    try:
        local = ids(1, seed=3)[0]
        (home / ".sageox" / "config").mkdir(parents=True)
        (home / ".sageox" / "config" / "client_id").write_text(local + "\n")
        for client_id in (local, "someone-else"):
            body = json.dumps(batch(event(), client_id=client_id)).encode()
            assert proc.request("POST", TELEMETRY, body).status == 200
        run = subprocess.run([sys.executable, "-m", "ox_telemetry.cli", "forget", "--json", "--endpoint", proc.url],
                             capture_output=True, text=True, timeout=60, env={**_clean_env(), **env}, cwd=tmp_path)
        result = json.loads(run.stdout)
        assert run.returncode == 0, run.stderr
        assert result["client_id"] == local and result["forgotten"] == 1
        assert not (home / ".sageox" / "config" / "client_id").exists()
        # Retention: the other installation's event goes too, within a few seconds; the count stays.
        assert wait_until(lambda: proc.request("GET", "/api/v1/stats").json()["totals"]["events"] == 2
                          and _stored(tmp_path / "c.sqlite3") == 0, 20)
        assert proc.request("GET", "/api/v1/installs").json()["total"] == 2
    finally:
        proc.stop()


def _stored(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    finally:
        conn.close()


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("SAGEOX", "OX_"))}
