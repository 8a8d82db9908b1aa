"""Ingestion over real HTTP: the vectors, every status code, each limit just under and just over."""

from __future__ import annotations

import gzip
import http.client
import json
import sqlite3
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from collector_helpers import Reply, Server, batch, event

from loopback import wait_until
from ox_telemetry.collector.body import MAX_BODY, MAX_DECODED
from ox_telemetry.collector.ingest import MAX_EVENT_BYTES, MAX_EVENTS
from reference_vectors import VECTORS

TELEMETRY = "/api/v1/telemetry"


def rows(server: Server, where: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    return server.storage.query(f"SELECT * FROM events WHERE {where}", params)


def test_reference_vectors_are_accepted_and_stored(serve: Callable[..., Server], db_url: str) -> None:
    server = serve(db_url=db_url)
    reply = server.post(TELEMETRY, (VECTORS / "batch.json").read_bytes())
    assert (reply.status, reply.json()) == (200, {"accepted": 3, "duplicates": 0, "rejected": []})
    reply = server.post("/tevents", (VECTORS / "daemon_upload.json").read_bytes())
    assert (reply.status, reply.json()) == (200, {"accepted": 1, "duplicates": 0, "rejected": []})

    stored = server.storage.query(
        "SELECT type, command, duration_ms, success, error_code, agent_type, prime_call_count, cli_version, os, "
        "arch, client_time FROM events ORDER BY id")
    assert [tuple(r[:3]) for r in stored] == [
        ("command_complete", "agent prime", 1534), ("command_complete", "status", 0), ("session_start", "", 0)]
    assert [bool(r[3]) for r in stored] == [True, False, False]
    assert stored[1][4] == "ERR_UNKNOWN" and stored[2][5] == "claude-code" and stored[2][6] == 3
    assert {r[7:10] for r in stored} == {("0.5.1", "linux", "amd64")}
    # 2026-03-16T10:00:00.123456789-07:00: nanoseconds cut to microseconds, offset applied.
    assert stored[0][10] == 1773680400123456
    daemon = server.storage.query("SELECT uuid, client_id, event, client_time, tslocal, props FROM daemon_events")
    assert daemon[0][:5] == ("6a8e2b0c-1d2e-4f3a-8b4c-5d6e7f8a9b0c", "2f1c3f0e-8b7a-4c51-9d7e-0a1b2c3d4e5f",
                             "app:startup", 1773680700000000, "2026-03-16T10:05:00-07:00")
    props = daemon[0][5] if isinstance(daemon[0][5], dict) else json.loads(daemon[0][5])
    assert props["app_type"] == "ox-daemon"


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "GZIP", "identity", None])
def test_gzip_and_plain_bodies(shared: Server, encoding: str | None) -> None:
    ev = event()
    raw = json.dumps(batch(ev)).encode()
    body = gzip.compress(raw) if encoding and "gzip" in encoding.lower() else raw
    headers = {"Content-Encoding": encoding} if encoding else {}
    reply = shared.post(TELEMETRY, body, headers)
    assert reply.status == 200 and reply.json()["accepted"] == 1
    assert shared.count(where="event_id = :id", params={"id": ev["event_id"]}) == 1


def test_several_gzip_members_are_one_body(shared: Server) -> None:
    raw = json.dumps(batch(event(), event())).encode()
    body = gzip.compress(raw[:40]) + gzip.compress(raw[40:])
    reply = shared.post(TELEMETRY, body, {"Content-Encoding": "gzip"})
    assert reply.status == 200 and reply.json()["accepted"] == 2


@pytest.mark.parametrize("encoding", ["br", "deflate", "zstd", "gzip, br"])
def test_unsupported_encoding_is_415(shared: Server, encoding: str) -> None:
    reply = shared.post(TELEMETRY, b"{}", {"Content-Encoding": encoding})
    assert reply.status == 415
    assert reply.json()["code"] == "unsupported_encoding" and encoding in reply.json()["error"]


@pytest.mark.parametrize(("body", "fragment"), [
    (b"{", "not valid JSON"),
    (b"", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"events": {"type": "x"}}', "'events' must be a list"),
    (b'{"events": [], "cli_version": 5}', "'cli_version'"),
    (b'{"events": [], "batch_timestamp": "yesterday"}', "batch_timestamp"),
    (b'{"events": [], "batch_timestamp": 12}', "batch_timestamp"),
    (b'"\\ud800"', "not valid JSON"),
])
def test_malformed_batch_is_400_naming_the_problem(shared: Server, body: bytes, fragment: str) -> None:
    reply = shared.post(TELEMETRY, body)
    assert reply.status == 400
    assert fragment in reply.json()["error"]


@pytest.mark.parametrize(("body", "fragment"), [
    ({"events": []}, "'clientid'"),
    ({"clientid": 7, "events": []}, "'clientid'"),
    ({"clientid": "c" * 129, "events": []}, "'clientid'"),
    ({"clientid": "c", "events": "x"}, "'events' must be a list"),
])
def test_malformed_daemon_upload_is_400(shared: Server, body: dict[str, Any], fragment: str) -> None:
    reply = shared.post("/tevents", body)
    assert reply.status == 400 and fragment in reply.json()["error"]


@pytest.mark.parametrize("body", [b"\x1f\x8b\x08\x00garbage", b"not gzip at all", b""])
def test_broken_gzip_is_400(shared: Server, body: bytes) -> None:
    reply = shared.post(TELEMETRY, body, {"Content-Encoding": "gzip"})
    assert reply.status == 400 and reply.json()["code"] == "invalid_gzip"


def test_truncated_gzip_is_400(shared: Server) -> None:
    body = gzip.compress(json.dumps(batch(event())).encode())[:-10]
    reply = shared.post(TELEMETRY, body, {"Content-Encoding": "gzip"})
    assert reply.status == 400 and "ends in the middle" in reply.json()["error"]


def test_partial_batch_stores_the_good_and_lists_the_bad(shared: Server) -> None:
    good = [event(), event(), event()]
    bad: list[Any] = [
        {"type": ""},
        event(duration_ms="slow"),
        "not an object",
        event(metadata={"n": 1}),
        event(timestamp="last tuesday"),
        event(event_id="x" * 129),
        event(duration_ms=2**63),
        event(command="nul\u0000byte"),
    ]
    items = [good[0], *bad[:4], good[1], *bad[4:], good[2]]
    reply = shared.post(TELEMETRY, batch(*items))
    assert reply.status == 200
    answer = reply.json()
    assert answer["accepted"] == 3
    reasons = {r["index"]: r["reason"] for r in answer["rejected"]}
    assert sorted(reasons) == [1, 2, 3, 4, 6, 7, 8, 9]
    assert "'type'" in reasons[1] and "'duration_ms'" in reasons[2] and "JSON object" in reasons[3]
    assert "'metadata'" in reasons[4] and "'timestamp'" in reasons[6] and "'event_id'" in reasons[7]
    assert "'duration_ms'" in reasons[8] and "NUL" in reasons[9]
    for ev in good:
        assert shared.count(where="event_id = :id", params={"id": ev["event_id"]}) == 1


def test_partial_daemon_upload(shared: Server) -> None:
    events = [
        {"uuid": str(uuid.uuid4()), "ts": int(time.time() * 1000), "event": "app:startup", "props": {"a": 1}},
        {"uuid": str(uuid.uuid4()), "ts": "now", "event": "x"},
        {"uuid": str(uuid.uuid4()), "event": ""},
        {"uuid": str(uuid.uuid4()), "ts": 1, "event": "x", "tslocal": "noon"},
        {"uuid": str(uuid.uuid4()), "ts": 1, "event": "x", "props": []},
        {"event": "sync:complete"},
    ]
    reply = shared.post("/tevents", {"clientid": "client-partial", "events": events})
    assert reply.status == 200
    answer = reply.json()
    assert answer["accepted"] == 2
    assert [r["index"] for r in answer["rejected"]] == [1, 2, 3, 4]
    assert shared.count("daemon_events", "client_id = 'client-partial'") == 2


def test_duplicates_are_stored_once(serve: Callable[..., Server], db_url: str) -> None:
    server = serve(db_url=db_url)
    events = [event(), event()]
    first = server.post(TELEMETRY, batch(*events))
    assert first.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    again = server.post(TELEMETRY, batch(*events))  # a retry after a lost answer
    assert again.json() == {"accepted": 2, "duplicates": 2, "rejected": []}
    twice = server.post(TELEMETRY, batch(events[0], events[0], event()))
    assert twice.json() == {"accepted": 3, "duplicates": 2, "rejected": []}
    assert server.count() == 3
    daemon = {"uuid": str(uuid.uuid4()), "ts": int(time.time() * 1000), "event": "app:startup"}
    for expected in (0, 1):
        reply = server.post("/tevents", {"clientid": "c", "events": [daemon]})
        assert reply.json()["duplicates"] == expected
    assert server.count("daemon_events") == 1
    # The dashboard counts each event once too.
    assert server.storage.query("SELECT sum(n) FROM rollup_1d WHERE dim = 'total'")[0][0] == 4


def test_events_without_an_id_are_stored_as_they_come(shared: Server) -> None:
    session = f"no-id-{uuid.uuid4()}"
    ev = event(session_id=session)
    del ev["event_id"]
    for _ in range(2):
        assert shared.post(TELEMETRY, batch(ev, ev)).json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    assert shared.count(where="session_id = :s", params={"s": session}) == 4


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def test_clock_skew_is_corrected_and_odd_times_flagged(shared: Server) -> None:
    now = time.time()
    skew = 3600.0  # the client's clock is an hour behind
    on_time, future, past, missing, zero = event(), event(), event(), event(), event()
    on_time["timestamp"] = _stamp(now - skew - 10)  # ten seconds before it was sent
    future["timestamp"] = _stamp(now - skew + 600)
    past["timestamp"] = _stamp(now - skew - 31 * 86400)
    del missing["timestamp"]
    zero["timestamp"] = "0001-01-01T00:00:00Z"
    reply = shared.post(TELEMETRY, batch(on_time, future, past, missing, zero, batch_timestamp=_stamp(now - skew)))
    assert reply.json()["accepted"] == 5

    def get(ev: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(shared.storage.query(
            "SELECT event_time, client_time, received_at, time_flag FROM events WHERE event_id = :id",
            {"id": ev["event_id"]})[0])

    event_time, client_time, received, flag = get(on_time)
    assert flag is None
    assert abs(received / 1e6 - now) < 5
    assert abs((event_time - client_time) / 1e6 - skew) < 5  # shifted by the skew
    assert abs((received - event_time) / 1e6 - 10) < 1  # ten seconds before receipt, on our clock
    assert get(future)[3] == "future" and get(past)[3] == "past"
    for ev in (missing, zero):
        event_time, client_time, received, flag = get(ev)
        assert (flag, client_time, event_time) == ("missing", None, received)


def test_one_event_limit_just_under_and_over(shared: Server) -> None:
    def sized(size: int) -> dict[str, Any]:
        ev = event(path="")
        ev["path"] = "p" * (size - len(json.dumps(ev, separators=(",", ":"))))
        assert len(json.dumps(ev, separators=(",", ":"))) == size
        return ev

    fits, too_big = sized(MAX_EVENT_BYTES), sized(MAX_EVENT_BYTES + 1)
    answer = shared.post(TELEMETRY, batch(fits, too_big)).json()
    assert answer["accepted"] == 1
    assert answer["rejected"] == [{"index": 1, "code": "event_too_large",
                                   "reason": f"event is {MAX_EVENT_BYTES + 1} bytes; at most {MAX_EVENT_BYTES} "
                                             "are accepted"}]


def test_events_per_batch_limit_just_under_and_over(shared: Server) -> None:
    small = {"type": "session_start"}
    assert shared.post(TELEMETRY, batch(*[small] * MAX_EVENTS)).json()["accepted"] == MAX_EVENTS
    reply = shared.post(TELEMETRY, batch(*[small] * (MAX_EVENTS + 1)))
    assert reply.status == 413 and reply.json()["code"] == "too_many_events"
    reply = shared.post("/tevents", {"clientid": "c", "events": [{"event": "e"}] * (MAX_EVENTS + 1)})
    assert reply.status == 413


def _padded(size: int) -> bytes:
    """A valid one-event batch, padded with JSON whitespace to exactly ``size`` bytes."""
    body = json.dumps(batch(event())).encode()
    return body[:-1] + b" " * (size - len(body)) + b"}"


def test_body_limit_just_under_and_over(shared: Server) -> None:
    reply = shared.post(TELEMETRY, _padded(MAX_BODY))
    assert reply.status == 200 and reply.json()["accepted"] == 1
    # Refused on its declared length, before a byte of it is read.
    conn = http.client.HTTPConnection("127.0.0.1", shared.port, timeout=10)
    conn.putrequest("POST", TELEMETRY)
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(MAX_BODY + 1))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and json.loads(response.read())["code"] == "body_too_large"
    conn.close()


def test_decompressed_limit_just_under_and_over(shared: Server) -> None:
    reply = shared.post(TELEMETRY, gzip.compress(_padded(MAX_DECODED)), {"Content-Encoding": "gzip"})
    assert reply.status == 200 and reply.json()["accepted"] == 1
    reply = shared.post(TELEMETRY, gzip.compress(_padded(MAX_DECODED + 1)), {"Content-Encoding": "gzip"})
    assert reply.status == 413 and reply.json()["code"] == "decoded_too_large"


@pytest.fixture(scope="module")
def gzip_member() -> bytes:
    """About 64 KiB of gzip that inflate to 64 MiB of zeros."""
    zeros = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    return b"".join(zeros.compress(chunk) for _ in range(64)) + zeros.flush()


@pytest.mark.parametrize("members", [1, 16], ids=["64MiB-one-member", "1GiB-in-16-members"])
def test_gzip_bomb_costs_nothing(shared: Server, gzip_member: bytes, members: int) -> None:
    bomb = gzip_member * members
    assert len(bomb) < MAX_BODY
    started = time.monotonic()
    reply = shared.post(TELEMETRY, bomb, {"Content-Encoding": "gzip"})
    assert reply.status == 413 and reply.json()["code"] == "decoded_too_large"
    assert time.monotonic() - started < 2.0  # inflating stopped at the limit
    assert shared.request("GET", "/healthz").status == 200


def test_write_keys(serve: Callable[..., Server]) -> None:
    server = serve(write_keys=frozenset({"key-one", "key-two"}))
    body = json.dumps(batch(event())).encode()
    for headers in ({}, {"Authorization": "Bearer nope"}, {"X-Ox-Write-Key": "key-three"},
                    {"Authorization": "Basic key-one"}):
        reply = server.post(TELEMETRY, body, headers)
        assert reply.status == 401 and reply.json()["code"] == "unauthorized"
        assert reply.headers["www-authenticate"].startswith("Bearer")
    for headers in ({"Authorization": "Bearer key-one"}, {"X-Ox-Write-Key": "key-two"}):
        assert server.post(TELEMETRY, json.dumps(batch(event())).encode(), headers).status == 200
    assert server.post("/tevents", {"clientid": "c", "events": []}).status == 401


def test_rate_limit_per_address(serve: Callable[..., Server]) -> None:
    server = serve(address_rate=0.5, address_burst=2)
    statuses = [server.post(TELEMETRY, batch()).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    reply = server.post(TELEMETRY, batch())
    assert reply.status == 429 and reply.json()["code"] == "rate_limited"
    assert 1 <= int(reply.headers["retry-after"]) <= 2


def test_rate_limit_per_key(serve: Callable[..., Server]) -> None:
    server = serve(write_keys=frozenset({"a", "b"}), key_rate=0.5, key_burst=1)
    assert server.post(TELEMETRY, batch(), {"X-Ox-Write-Key": "a"}).status == 200
    reply = server.post(TELEMETRY, batch(), {"X-Ox-Write-Key": "a"})
    assert reply.status == 429 and int(reply.headers["retry-after"]) >= 1
    assert server.post(TELEMETRY, batch(), {"X-Ox-Write-Key": "b"}).status == 200  # each key its own bucket


def _in_background(call: Callable[[], Reply]) -> tuple[threading.Thread, list[Reply]]:
    out: list[Reply] = []
    thread = threading.Thread(target=lambda: out.append(call()))
    thread.start()
    return thread, out


def test_overload_is_503_and_answers_come_only_after_commit(serve: Callable[..., Server], tmp_path: Any) -> None:
    server = serve(db_url=f"sqlite://{tmp_path}/busy.sqlite3", max_pending=150)
    first = [event() for _ in range(100)]
    # Another process holds the database's write lock: the writer cannot commit.
    blocker = sqlite3.connect(f"{tmp_path}/busy.sqlite3", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    thread, replies = _in_background(lambda: server.post(TELEMETRY, batch(*first)))
    assert wait_until(lambda: server.collector.writer.queued_rows == 100)
    assert not replies  # not answered while uncommitted
    reply = server.post(TELEMETRY, batch(*[event() for _ in range(100)]))
    assert reply.status == 503 and reply.json()["code"] == "overloaded"
    assert int(reply.headers["retry-after"]) >= 1
    blocker.execute("ROLLBACK")
    blocker.close()
    thread.join(30)
    assert replies[0].status == 200 and replies[0].json()["accepted"] == 100
    assert server.count() == 100


def test_writer_death_is_503_then_recovers(serve: Callable[..., Server], tmp_path: Any) -> None:
    import os
    import signal

    server = serve(db_url=f"sqlite://{tmp_path}/dies.sqlite3")
    blocker = sqlite3.connect(f"{tmp_path}/dies.sqlite3", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    thread, replies = _in_background(lambda: server.post(TELEMETRY, batch(event())))
    assert wait_until(lambda: server.collector.writer.queued_rows == 1)
    os.kill(server.writer_pid(), signal.SIGKILL)
    thread.join(30)
    assert replies[0].status == 503 and replies[0].json()["code"] == "storage_unavailable"
    assert "retry-after" in replies[0].headers
    blocker.execute("ROLLBACK")
    blocker.close()
    assert server.post(TELEMETRY, batch(event())).status == 200  # a new writer took over
    assert server.request("GET", "/healthz").status == 200


def test_healthz_metrics_and_openapi(shared: Server) -> None:
    health = shared.request("GET", "/healthz")
    assert health.status == 200 and health.json()["status"] == "ok"
    shared.post(TELEMETRY, batch(event(), {"type": ""}))
    dup = event()
    shared.post(TELEMETRY, batch(dup, dup))
    text = shared.request("GET", "/metrics")
    assert text.status == 200 and text.headers["content-type"].startswith("text/plain")
    metrics = text.body.decode()
    for fragment in ('ox_collector_events_accepted_total{endpoint="telemetry"}',
                     'ox_collector_events_rejected_total{reason="invalid_event"}',
                     'ox_collector_events_duplicate_total{endpoint="telemetry"}',
                     'ox_collector_request_duration_seconds_bucket{endpoint="telemetry",le="+Inf"}',
                     'ox_collector_requests_total{endpoint="telemetry",status="200"}',
                     "ox_collector_queued_events", 'python_gc_collections_total{generation="0"}'):
        assert fragment in metrics
    duplicates = [line for line in metrics.splitlines()
                  if line.startswith('ox_collector_events_duplicate_total{endpoint="telemetry"}')]
    assert int(duplicates[0].split()[-1]) >= 1
    spec = shared.request("GET", "/openapi.json").json()
    served = {(route.path, method.lower()) for route in shared.app.routes  # type: ignore[attr-defined]
              for method in route.methods - {"HEAD"}}  # type: ignore[attr-defined]
    described = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert served == described


def test_daemons_are_told_their_interval(serve: Callable[..., Server]) -> None:
    server = serve(daemon_interval="5m")
    reply = server.post("/tevents", {"clientid": "c", "events": [{"event": "app:startup"}]})
    assert reply.status == 200 and reply.headers["x-sageox-interval"] == "5m"
    assert "x-sageox-interval" not in server.post(TELEMETRY, batch()).headers


def test_a_failure_while_ingesting_is_a_json_500_and_the_next_request_is_served(
        serve: Callable[..., Server], monkeypatch: pytest.MonkeyPatch) -> None:
    from ox_telemetry.collector import app

    def broken(body: bytes, received: int) -> None:
        raise RuntimeError("a bug")

    server = serve()
    with monkeypatch.context() as patch:
        patch.setitem(app._PARSERS, "telemetry", broken)
        reply = server.post(TELEMETRY, batch(event()))
    assert reply.status == 500 and reply.json() == {"error": "internal error", "code": "internal"}
    assert server.post(TELEMETRY, batch(event())).status == 200
    metrics = server.request("GET", "/metrics").body.decode()
    assert 'ox_collector_requests_total{endpoint="telemetry",status="500"} 1' in metrics


def test_unknown_paths_and_methods_answer_json(shared: Server) -> None:
    reply = shared.request("GET", "/nowhere")
    assert reply.status == 404 and reply.json()["code"] == "not_found"
    reply = shared.request("GET", TELEMETRY)
    assert reply.status == 405 and reply.json()["code"] == "method_not_allowed"
    assert "POST" in reply.headers["allow"]
