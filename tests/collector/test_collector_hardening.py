"""Issue 16, against a real ``ox-telemetry serve`` process over HTTP: no 5xx for any input, safe in a browser's
world, safe to expose, slow clients and memory bounded, a mistyped --db refused, an isolated writer."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from collector_helpers import Process, Reply, batch, event, request, start_process

from loopback import wait_until
from ox_telemetry.collector.storage import open_storage

TELEMETRY = "/api/v1/telemetry"
DEEP = b"[" * 10_000 + b"]" * 10_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """One collector process for the tests that need no special options (short head timeout, no rate limit)."""
    path = tmp_path_factory.mktemp("hardening")
    started = start_process("--db", f"sqlite://{path}/h.sqlite3", "--rate", "0", "--head-timeout", "1",
                            "--allow-origin", "https://dash.example.com", "--server-name", "collector.internal")
    yield started
    started.stop()


def _refused(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status, reply
    assert reply.headers["content-type"] == "application/json" and reply.json()["code"] == code


# -- 1. no 5xx for any input --------------------------------------------------------------------------------------


def test_an_event_with_invalid_utf8_is_rejected_and_the_rest_stored(server: Process) -> None:
    good = event()
    body = b'{"events":[{"type":"command_complete","command":"\xc3\x28"},' + json.dumps(good).encode() + b"]}"
    reply = server.request("POST", TELEMETRY, body)
    assert reply.status == 200, reply
    result = reply.json()
    assert result["accepted"] == 1 and [r["index"] for r in result["rejected"]] == [0]
    assert "UTF-8" in result["rejected"][0]["reason"]


@pytest.mark.parametrize("where", ["metadata", "event key", "envelope key", "event", "tevents"])
def test_a_body_nested_10000_deep_is_a_400(server: Process, where: str) -> None:
    path, body = TELEMETRY, {
        "metadata": b'{"events":[{"type":"x","metadata":{"a":' + DEEP + b"}}]}",
        "event key": b'{"events":[{"type":"x","zz":' + DEEP + b"}]}",
        "envelope key": b'{"events":[{"type":"x"}],"zz":' + DEEP + b"}",
        "event": b'{"events":[' + DEEP + b"]}",
        "tevents": b'{"clientid":"c","events":[' + DEEP + b"]}",
    }[where]
    if where == "tevents":
        path = "/tevents"
    reply = server.request("POST", path, body)
    assert reply.status == 400, reply
    assert reply.json()["code"] in ("too_deep", "invalid_json")
    assert server.request("GET", "/healthz").status == 200


def test_an_event_without_type_is_rejected_as_the_schema_says(server: Process) -> None:
    good = event()
    reply = server.request("POST", TELEMETRY, json.dumps({"events": [{}, good]}).encode())
    assert reply.status == 200
    assert reply.json()["accepted"] == 1
    reason = "field 'type' is missing or empty"
    assert reply.json()["rejected"] == [{"index": 0, "code": "invalid_event", "reason": reason}]
    schema = json.loads(server.request("GET", "/openapi.json").body)
    assert "type" in schema["components"]["schemas"]["Event"]["required"]


# -- 3. safe in a browser's world ---------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/jsonx"])
def test_ingest_takes_only_json(server: Process, content_type: str | None) -> None:
    body = json.dumps(batch(event())).encode()
    headers = {} if content_type is None else {"Content-Type": content_type}
    # putrequest: http.client then adds no header of its own, so a missing Content-Type stays missing.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("POST", TELEMETRY)
    for name, value in {**headers, "Content-Length": str(len(body))}.items():
        conn.putheader(name, value)
    conn.endheaders(body)
    response = conn.getresponse()
    assert response.status == 415 and json.loads(response.read())["code"] == "unsupported_media_type"
    conn.close()
    reply = server.request("POST", TELEMETRY, body, {"Content-Type": "application/json; charset=utf-8"})
    assert reply.status == 200


def test_a_foreign_origin_is_refused(server: Process) -> None:
    body = json.dumps(batch(event())).encode()
    _refused(server.request("POST", TELEMETRY, body, {"Origin": "https://evil.example"}), 403, "origin_not_allowed")
    _refused(server.request("GET", "/api/v1/stats", headers={"Origin": "null"}), 403, "origin_not_allowed")
    assert server.request("POST", TELEMETRY, body, {"Origin": "https://dash.example.com"}).status == 200
    # The dashboard's own requests carry its own origin.
    assert server.request("GET", "/api/v1/stats", headers={"Origin": f"http://127.0.0.1:{server.port}"}).status == 200


def test_a_foreign_host_gets_421_on_loopback(server: Process) -> None:
    for host in ("evil.example", "evil.example:80", "10.0.0.1"):
        _refused(server.request("GET", "/api/v1/stats", headers={"Host": host}), 421, "misdirected_request")
    for host in ("localhost", f"localhost:{server.port}", f"127.0.0.1:{server.port}", "[::1]:80",
                 "collector.internal"):
        assert server.request("GET", "/api/v1/stats", headers={"Host": host}).status == 200, host


def test_the_read_token_is_exchanged_once_and_a_wrong_one_keeps_the_cookie(tmp_path: Path) -> None:
    proc = start_process("--db", f"sqlite://{tmp_path}/t.sqlite3", "--read-token", "s3cret")
    try:
        for path in ("/api/v1/stats?token=s3cret", "/metrics?token=s3cret"):
            assert proc.request("GET", path).status == 401, path  # no token in URLs beyond the exchange
        good = proc.request("GET", "/?token=s3cret")
        assert good.status == 303 and good.headers["location"] == "/"
        assert good.headers["set-cookie"].startswith("ox_read_token=s3cret;")
        wrong = proc.request("GET", "/?token=wrong", headers={"Cookie": "ox_read_token=s3cret"})
        assert wrong.status == 303 and "set-cookie" not in wrong.headers  # the right cookie stays
        assert proc.request("GET", "/", headers={"Cookie": "ox_read_token=s3cret"}).status == 200
    finally:
        proc.stop()


# -- 4. safe to expose --------------------------------------------------------------------------------------------


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ox_telemetry.cli", "serve", "--port", "0", *args],
                          capture_output=True, text=True, timeout=60)


def test_a_public_address_without_keys_refuses_to_start(tmp_path: Path) -> None:
    db = f"sqlite://{tmp_path}/p.sqlite3"
    for extra in ([], ["--write-key", "k"], ["--read-token", "t"]):
        result = _serve("--host", "0.0.0.0", "--db", db, *extra)
        assert result.returncode == 2 and "--public-unauthenticated" in result.stderr, result
        assert "not a loopback address" in result.stderr and "Traceback" not in result.stderr
    # Both, or the explicit flag, and it starts.
    for extra in (["--write-key", "k", "--read-token", "t"], ["--public-unauthenticated"]):
        proc = subprocess.Popen([sys.executable, "-m", "ox_telemetry.cli", "serve", "--port", "0", "--host",
                                 "0.0.0.0", "--db", db, *extra], stdout=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            assert proc.stdout is not None and "listening on http://0.0.0.0:" in proc.stdout.readline()
        finally:
            os.killpg(proc.pid, 9)
            proc.wait(10)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
def test_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    proc = start_process("--db", f"sqlite://{tmp_path}/t.sqlite3", "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert proc.url.startswith("https://")
        assert proc.request("POST", TELEMETRY, json.dumps(batch(event())).encode()).status == 200
    finally:
        proc.stop()
    assert "go together" in _serve("--tls-cert", str(cert)).stderr
    refused = _serve("--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(key))
    assert refused.returncode == 2 and "cannot load the TLS certificate" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_behind_a_proxy_the_rate_limit_sees_the_client(tmp_path: Path) -> None:
    body = json.dumps(batch()).encode()
    proc = start_process("--db", f"sqlite://{tmp_path}/t.sqlite3", "--rate", "0.001", "--burst", "1",
                         "--forwarded-allow-ips", "127.0.0.1")
    try:
        for client in ("203.0.113.1", "203.0.113.2"):
            assert proc.request("POST", TELEMETRY, body, {"X-Forwarded-For": client}).status == 200
        assert proc.request("POST", TELEMETRY, body, {"X-Forwarded-For": "203.0.113.1"}).status == 429
    finally:
        proc.stop()


# -- 5. slow clients ----------------------------------------------------------------------------------------------


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_stalled_connections_are_closed_and_others_still_served(server: Process) -> None:
    stalled = []
    try:
        for i in range(500):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            if i % 2:  # half send part of a head; half nothing
                sock.sendall(b"POST /api/v1/telemetry HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
            sock.setblocking(False)
            stalled.append(sock)
        started = time.monotonic()
        reply = server.request("POST", TELEMETRY, json.dumps(batch(event())).encode())
        assert reply.status == 200 and time.monotonic() - started < 1.0
        assert wait_until(lambda: all(_closed_by_peer(s) for s in stalled), 60)
    finally:
        for sock in stalled:
            sock.close()


def test_an_idle_keep_alive_connection_is_closed(server: Process) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        sock.setblocking(False)
        assert wait_until(lambda: _closed_by_peer(sock), 30)
    finally:
        sock.close()


def test_a_body_slower_than_the_floor_gets_408(server: Process) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        sock.sendall(b"POST /api/v1/telemetry HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000\r\n\r\n{\"events\":[")
        answer = b""
        while chunk := sock.recv(4096):  # the answer, then the server closes the connection
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b'"code":"body_timeout"' in answer
    finally:
        sock.close()


# -- 6. memory ----------------------------------------------------------------------------------------------------


def _rss_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_bytes_in_flight_have_a_global_bound(tmp_path: Path) -> None:
    bound = 96 * 1024 * 1024  # one 20 MiB body parsing (80 MiB held) and a few being read
    proc = start_process("--db", f"sqlite://{tmp_path}/m.sqlite3", "--rate", "0", "--max-inflight-bytes", str(bound))
    # Just under 20 MiB once gunzipped, about 20 KB as sent: a string as long as the limit allows, which the
    # collector reads whole (and cuts to 1,024 characters).
    body = gzip.compress(b'{"cli_version":"' + b"a" * (20 * 1024 * 1024 - 64) + b'","events":[]}')
    statuses: list[int] = []
    try:
        # The idle baseline, once the first request has loaded what any request loads.
        assert request(proc.port, "POST", TELEMETRY, body, {"Content-Encoding": "gzip"}).status == 200
        baseline = _rss_kib(proc.proc.pid, "VmRSS")

        def send() -> None:
            reply = request(proc.port, "POST", TELEMETRY, body, {"Content-Encoding": "gzip"}, timeout=60)
            statuses.append(reply.status)
            if reply.status == 503:
                assert int(reply.headers["retry-after"]) >= 1

        threads = [threading.Thread(target=send) for _ in range(100)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        peak = _rss_kib(proc.proc.pid, "VmHWM")
    finally:
        proc.stop()
    assert len(statuses) == 100 and set(statuses) <= {200, 503} and 200 in statuses, statuses
    assert (peak - baseline) * 1024 < bound, (peak - baseline) // 1024


# -- 7. --db ------------------------------------------------------------------------------------------------------


def test_a_sqlite_path_in_a_missing_directory_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent" / "dir"
    result = _serve("--db", f"sqlite://{missing}/x.sqlite3")
    assert result.returncode == 2 and not missing.parent.exists()
    assert result.stderr.count("\n") == 1 and "does not exist" in result.stderr, result.stderr


# -- the writer process -------------------------------------------------------------------------------------------


def test_the_writer_imports_this_package_not_one_in_the_cwd(tmp_path: Path) -> None:
    marker = tmp_path / "planted-ran"
    planted = tmp_path / "cwd" / "ox_telemetry"
    planted.mkdir(parents=True)
    (planted / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise SystemExit(3)\n")
    script = shutil.which("ox-telemetry", path=os.path.dirname(sys.executable))
    assert script is not None
    proc = start_process("--db", f"sqlite://{tmp_path}/w.sqlite3", command=[script], cwd=str(planted.parent))
    try:
        sent = event()
        assert proc.request("POST", TELEMETRY, json.dumps(batch(sent)).encode()).status == 200
    finally:
        proc.stop()
    assert not marker.exists()
    store = open_storage(f"sqlite://{tmp_path}/w.sqlite3")
    assert store.query("SELECT event_id FROM events") == [(sent["event_id"],)]
    store.close()
