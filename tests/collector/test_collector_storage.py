"""The storage suite, run against both stores: a SQLite file and the CI PostgreSQL server."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from typing import Any

import pytest

from ox_telemetry.collector import ingest
from ox_telemetry.collector.histogram import percentile
from ox_telemetry.collector.stats import query_stats
from ox_telemetry.collector.storage import Row, Storage, StorageError, StoreUnavailable, WriteJob, open_storage
from ox_telemetry.collector.storage.base import Packed
from ox_telemetry.collector.storage.schema import LEVEL_NAMES, LEVELS, SCHEMA_VERSION
from ox_telemetry.collector.writer_process import commit

NOW = (int(time.time()) // 3600 - 2) * 3600  # a whole hour, two hours ago


def stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{round(t % 1 * 1e6):06d}Z"


def client_rows(*events: dict[str, Any], received: float = NOW + 5, **envelope: Any) -> list[Row]:
    body = {"events": list(events), "cli_version": "0.5.1", "os": "linux", "arch": "amd64", **envelope}
    parsed = ingest.client_batch(json.dumps(body).encode(), int(received * 1e6))
    assert not parsed.rejected, parsed.rejected
    return parsed.client_rows


def ev(t: float = NOW, **fields: Any) -> dict[str, Any]:
    return {"type": "command_complete", "timestamp": stamp(t), "command": "status", "duration_ms": 100,
            "success": True, "event_id": str(uuid.uuid4()), **fields}


def daemon_rows(*events: dict[str, Any], received: float = NOW + 5) -> list[Row]:
    body = {"clientid": "client-1", "events": list(events)}
    parsed = ingest.daemon_upload(json.dumps(body).encode(), int(received * 1e6))
    assert not parsed.rejected, parsed.rejected
    return parsed.daemon_rows


def count(storage: Storage, table: str = "events") -> int:
    return int(storage.query(f"SELECT count(*) FROM {table}")[0][0])


def test_schema_is_created_versioned_and_reopened(db_url: str) -> None:
    first = open_storage(db_url)
    first.write([WriteJob.of(client_rows(ev()))])
    assert first.query("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    first.close()
    again = open_storage(db_url)  # migrating an up-to-date store changes nothing
    assert again.query("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    assert count(again) == 1
    again.close()


def test_a_newer_schema_is_refused(storage: Storage, db_url: str) -> None:
    if storage.dialect == "sqlite":
        import sqlite3

        conn = sqlite3.connect(storage.path)  # type: ignore[attr-defined]
        conn.execute("UPDATE schema_version SET version = 99")
        conn.commit()
        conn.close()
    else:
        import psycopg

        with psycopg.connect(storage.url, autocommit=True) as conn:  # type: ignore[attr-defined]
            conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StorageError, match="newer than this collector"):
        open_storage(db_url)


def test_a_version_1_sqlite_store_keeps_its_events_through_the_migration(tmp_path: Any) -> None:
    import sqlite3

    from ox_telemetry.collector.storage import schema

    path = tmp_path / "v1.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (1)")
    for statement in schema.MIGRATIONS[0]("sqlite"):
        conn.execute(statement)
    known = ev(metadata={"k": "v"})
    rows = client_rows(known, ev(event_id=""))  # the second was sent without an id
    marks = ", ".join("?" * len(schema.CLIENT_NAMES))
    conn.executemany(f"INSERT INTO events ({', '.join(schema.CLIENT_NAMES)}) VALUES ({marks})", rows)
    conn.close()

    store = open_storage(f"sqlite://{path}")
    try:
        assert store.query("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
        stored = store.query(f"SELECT {', '.join(schema.CLIENT_NAMES)} FROM events ORDER BY id")
        assert [tuple(r) for r in stored] == [tuple(int(v) if isinstance(v, bool) else v for v in r) for r in rows]
        assert store.write([WriteJob.of(client_rows(known)), WriteJob.of(client_rows(ev()))]) == [0, 1]
        assert count(store) == 3
    finally:
        store.close()


def test_write_reports_new_rows_per_job_and_skips_stored_ones(storage: Storage) -> None:
    a, b, c = ev(), ev(), ev()
    assert storage.write([WriteJob.of(client_rows(a, b)), WriteJob.of(client_rows(c))]) == [2, 1]
    assert storage.write([WriteJob.of(client_rows(c, ev())), WriteJob.of(client_rows(a))]) == [1, 0]
    assert count(storage) == 4
    d = {"uuid": str(uuid.uuid4()), "ts": (NOW + 1) * 1000, "event": "app:startup"}
    assert storage.write([WriteJob.of((), daemon_rows(d))]) == [1]
    assert storage.write([WriteJob.of(client_rows(b), daemon_rows(d))]) == [0]
    assert count(storage, "daemon_events") == 1


def test_repeats_within_one_transaction_are_stored_once(storage: Storage) -> None:
    a = ev()
    assert commit(storage, [WriteJob.of(client_rows(a, a)), WriteJob.of(client_rows(a, ev()))]) == [1, 1]
    assert count(storage) == 2


def test_rows_without_an_id_are_never_duplicates(storage: Storage) -> None:
    anonymous = ev()
    del anonymous["event_id"]
    assert storage.write([WriteJob.of(client_rows(anonymous, anonymous))]) == [2]
    assert storage.write([WriteJob.of(client_rows(anonymous))]) == [1]
    assert count(storage) == 3


def test_identity_is_the_id_with_its_own_time(storage: Storage) -> None:
    # A redelivery repeats both; the same id at another time is another event.
    first = ev(NOW)
    storage.write([WriteJob.of(client_rows(first))])
    assert storage.write([WriteJob.of(client_rows(first, received=NOW + 3600))]) == [0]
    assert storage.write([WriteJob.of(client_rows({**first, "timestamp": stamp(NOW + 1)}))]) == [1]


def test_a_large_request_partly_stored_before_adds_only_its_new_rows(storage: Storage) -> None:
    # More rows than one multi-row statement takes (SQLite inserts them in chunks), rollups included.
    first = [ev(NOW + i / 1000) for i in range(150)]
    assert storage.write([WriteJob.of(client_rows(*first))]) == [150]
    again = first[::2] + [ev(NOW + 1 + i / 1000) for i in range(70)]
    assert storage.write([WriteJob.of(client_rows(*again))]) == [70]
    assert count(storage) == 220
    for level in LEVELS:
        assert rollup_total(storage, level, "total", "value = 'events'") == 220


def test_a_failed_job_does_not_sink_the_others(storage: Storage) -> None:
    good = client_rows(ev())
    # A row one column short (PostgreSQL refuses it) and an id of NULL (so does SQLite's key table).
    broken = WriteJob(Packed(json.dumps([["id"]]).encode(), 1, ((0, None),)))  # type: ignore[arg-type]
    results = commit(storage, [WriteJob.of(good), broken, WriteJob.of(client_rows(ev()))])
    assert results[0] == 1 and isinstance(results[1], str) and results[2] == 1
    assert count(storage) == 2


def test_a_store_that_refuses_all_writes_fails_every_job(tmp_path: Any) -> None:
    store = open_storage(f"sqlite://{tmp_path}/ro.sqlite3")
    store._writer.execute("PRAGMA query_only=1")  # type: ignore[attr-defined]  # as a full or read-only disk would
    results = commit(store, [WriteJob.of(client_rows(ev())), WriteJob.of(client_rows(ev()))])
    assert all(isinstance(r, str) and "readonly" in r for r in results)
    with pytest.raises(StoreUnavailable):
        store.write([WriteJob.of(client_rows(ev()))])
    store.close()


def rollup_total(storage: Storage, level: int, dim: str, where: str = "1 = 1") -> int:
    value = storage.query(f"SELECT coalesce(sum(n), 0) FROM rollup_{LEVEL_NAMES[level]} "
                          f"WHERE dim = :dim AND {where}", {"dim": dim})[0][0]
    return int(value)


def test_rollups_always_match_the_events(storage: Storage) -> None:
    rng = random.Random(3)
    stored: list[dict[str, Any]] = []
    for _ in range(6):
        events = [ev(NOW - rng.randrange(3 * 86400), command=rng.choice(["a", "b", "c"]),
                     success=rng.random() > 0.2, agent_type=rng.choice(["", "cursor"]))
                  for _ in range(rng.randrange(1, 60))]
        events += rng.sample(stored, min(len(stored), 5))  # some redeliveries
        storage.write([WriteJob.of(client_rows(*events))])
        stored += events
    total = count(storage)
    for level in LEVELS:
        for dim in ("type", "command", "cli_version", "os_arch", "agent_type"):
            assert rollup_total(storage, level, dim) == total
        assert rollup_total(storage, level, "total", "value = 'events'") == total
        errors = storage.query(f"SELECT sum(errors) FROM rollup_{LEVEL_NAMES[level]} WHERE dim = 'command'")[0][0]
        assert int(errors) == int(storage.query("SELECT count(*) FROM events WHERE NOT success")[0][0])
        durations = storage.query(f"SELECT sum(n) FROM durations_{LEVEL_NAMES[level]}")[0][0]
        assert int(durations) == total


def test_stats_are_exact_to_the_minute(storage: Storage) -> None:
    start, end = NOW - 3 * 3600 + 60, NOW + 1800  # edges off the hour, so all three levels are read
    inside = [ev(start), ev(start + 7200, command="sync", success=False, duration_ms=4000),
              ev(end - 1, type="command_error", command="sync", duration_ms=0),
              ev(NOW, type="session_start", agent_type="claude-code")]
    outside = [ev(start - 1), ev(end)]
    # Received after the range: times in it are not in the future, so charted at their own time.
    received = end + 120
    storage.write([WriteJob.of(client_rows(*inside, *outside, received=received)),
                   WriteJob.of((), daemon_rows({"uuid": "d1", "ts": NOW * 1000, "event": "sync:complete"},
                                            {"uuid": "d2", "ts": (end + 60) * 1000, "event": "sync:complete"},
                                            received=received))])
    data = query_stats(storage, start, end)
    totals = data["totals"]
    assert (totals["events"], totals["errors"], totals["daemon_events"], totals["command_runs"]) == (4, 2, 1, 3)
    assert sum(p["events"] for p in data["series"]) == 4 and sum(p["daemon"] for p in data["series"]) == 1
    assert sum(p["errors"] for p in data["series"]) == 2
    commands = {c["command"]: c for c in data["commands"]}
    assert commands["sync"]["runs"] == 2 and commands["sync"]["error_rate"] == 1.0
    assert abs(commands["sync"]["p50_ms"] - 4000) / 4000 < 0.05  # the run without a duration is not timed
    assert commands["status"]["runs"] == 1
    assert {b["value"]: b["count"] for b in data["agent_types"]} == {"(none)": 3, "claude-code": 1}
    assert data["daemon_events"] == [{"value": "sync:complete", "count": 1}]
    assert data["os_arch"] == [{"value": "linux/amd64", "count": 4}]
    assert query_stats(storage, end + 3600, end + 7200)["totals"]["events"] == 0


def test_percentiles_are_within_the_bin_precision(storage: Storage) -> None:
    rng = random.Random(5)
    durations = [int(rng.lognormvariate(6, 1)) + 1 for _ in range(400)]
    storage.write([WriteJob.of(client_rows(*[ev(NOW + i, command="prime", duration_ms=d)
                                          for i, d in enumerate(durations)]))])
    got = query_stats(storage, NOW, NOW + 3600)["commands"][0]
    ordered = sorted(durations)
    for key, fraction in (("p50_ms", 0.5), ("p95_ms", 0.95)):
        exact = ordered[int(fraction * len(ordered)) - 1]
        assert abs(got[key] - exact) / exact < 0.1
    assert percentile([], 0.5) is None


def test_concurrent_writers_share_one_store(db_url: str) -> None:
    # Two collectors (here: two stores on one database) receiving overlapping redeliveries.
    events = [ev(NOW + i) for i in range(300)]
    rows = client_rows(*events)
    stores = [open_storage(db_url), open_storage(db_url)]
    results: list[int] = []
    errors: list[BaseException] = []

    def run(store: Storage, offset: int) -> None:
        try:
            for i in range(offset, len(rows), 40):
                results.extend(store.write([WriteJob.of(rows[i:i + 60])]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(store, offset)) for store, offset in zip(stores, (0, 20),
                                                                                         strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert sum(results) == len(rows) == count(stores[0])
    assert rollup_total(stores[0], 3600, "total", "value = 'events'") == len(rows)
    for store in stores:
        store.close()
