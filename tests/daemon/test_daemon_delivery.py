"""Events in over the socket, out to a real loopback endpoint: load, outage, kill -9, interval header."""

from __future__ import annotations

import threading
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest
from daemon_helpers import DaemonProcess, connect, read_line, request, status, telemetry_line

from loopback import Endpoint, Request, refusing_url, wait_until

SENDERS = 8
PER_SENDER = 5000


def _sent(endpoint: Endpoint, prefix: str = "load") -> list[tuple[int, int]]:
    return [(e["props"]["s"], e["props"]["i"]) for e in endpoint.accepted_events() if e["event"] == prefix]


def _blast(sender: int, count: int, stop: threading.Event | None = None, acked: list[int] | None = None) -> None:
    """One sender: ``count`` events on one connection, in large writes, then a flush whose answer acks them."""
    with connect() as sock:
        for start in range(0, count, 500):
            if stop is not None and stop.is_set():
                return
            lines = b"".join(telemetry_line("load", s=sender, i=i) for i in range(start, min(count, start + 500)))
            try:
                sock.sendall(lines)
                if acked is not None:  # a ping answered means every line before it was spooled
                    sock.sendall(b'{"type":"ping"}\n')
                    if read_line(sock) is None:
                        return
                    acked[sender] = min(count, start + 500)
            except OSError:
                if acked is None:
                    raise
                return  # the daemon was killed under us: what was acked is what counts


def test_eight_senders_every_event_delivered_once(daemon: DaemonProcess, endpoint: Endpoint) -> None:
    threads = [threading.Thread(target=_blast, args=(s, PER_SENDER)) for s in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    total = SENDERS * PER_SENDER
    assert wait_until(lambda: status()["received"] >= total + 1, 30)  # + its own app:startup
    assert wait_until(lambda: len(_sent(endpoint)) >= total, 40), status()
    sent = _sent(endpoint)
    assert len(sent) == total and len(set(sent)) == total
    uuids = [e["uuid"] for e in endpoint.accepted_events()]
    assert len(uuids) == len(set(uuids))
    assert max(len(r.body["events"]) for r in endpoint.requests if r.body) <= 500
    # The endpoint holds the last batch before the daemon reads the answer and counts it delivered.
    assert wait_until(lambda: status()["delivered"] == total + 1, 10), status()
    data = status()
    assert data["received"] == total + 1 and data["spooled"] == 0
    assert sum(data["dropped"].values()) == 0


def test_outage_then_recovery_delivers_everything_once(
    sock_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = refusing_url()  # nothing listens here yet: connections are refused
    port = int(url.rsplit(":", 1)[1])
    monkeypatch.setenv("OX_TELEMETRY_SOCKET", str(sock_dir / "run" / "telemetry.sock"))
    monkeypatch.setenv("SAGEOX_TELEMETRY_ENDPOINT", url + "/tevents")
    monkeypatch.setenv("OX_TELEMETRY_DAEMON_INTERVAL", "0.05")
    # Backoff ceilings 0.1, 0.2, 0.4 ... 1.6 s; a sender keeps the early-send trigger busy all along.
    monkeypatch.setenv("OX_TELEMETRY_DAEMON_TUNING", "cooldown=0.05,base=0.1,cap=1.6,timeout=0.5,stop_grace=3")
    daemon = DaemonProcess(tmp_path / "d.log").start()
    stop = threading.Event()
    counter = iter(range(10**9))

    def trickle() -> None:
        with connect() as sock:
            while not stop.is_set():
                sock.sendall(b"".join(telemetry_line("out", s=0, i=next(counter)) for _ in range(60)))
                time.sleep(0.02)

    sender = threading.Thread(target=trickle)
    sender.start()
    endpoint: Endpoint | None = None
    try:
        # Phase 1: refused. Several attempts, each reported.
        assert wait_until(lambda: status()["requests"] >= 3, 10), status()
        assert status()["last_error"] == "network: ConnectionRefusedError"
        endpoint = Endpoint(port=port)
        endpoint.status, endpoint.hang = 503, True  # phase 2: accepts, never answers (recorded as 503)
        assert wait_until(lambda: endpoint is not None and len(endpoint.requests) >= 2, 10)  # a timeout, a retry
        endpoint.headers = {"Retry-After": "1"}  # phase 3: 503 with Retry-After: 1
        endpoint.hang = False

        def answered_later() -> list[Request]:
            assert endpoint is not None
            return [r for r in endpoint.requests if not r.hung and "Retry-After" in r.answer_headers]

        assert wait_until(lambda: status()["backoff_s"] >= 0.5, 10), status()  # Retry-After became the backoff
        assert wait_until(lambda: len(answered_later()) >= 3, 10), status()
        outage = list(endpoint.requests)
        endpoint.status, endpoint.headers = 200, {}  # phase 4: healthy
        stop.set()
        sender.join(10)
        total = next(counter)
        assert wait_until(lambda: len([e for e in endpoint.accepted_events() if e["event"] == "out"]) >= total,
                          30), status()
        got = [e["props"]["i"] for e in endpoint.accepted_events() if e["event"] == "out"]
        assert sorted(got) == list(range(total))  # every event, exactly once
        # Backoff, not one request per 0.05 s tick with events waiting (that would be about 20 a second).
        span = outage[-1].at - outage[0].at
        assert len(outage) <= 2 + 4 * span, (len(outage), span)
        # Never sooner than Retry-After: the request after one answered "Retry-After: 1" comes a second later.
        gaps = [b.at - a.at for a, b in pairwise(outage) if not a.hung and "Retry-After" in a.answer_headers]
        assert gaps and min(gaps) >= 0.95, gaps
        # The endpoint holds a batch before the daemon reads the answer and takes it off its spool.
        assert wait_until(lambda: status()["spooled"] == 0, 10), status()
        data = status()
        assert data["dropped"]["rejected"] == 0 and data["last_error"]
    finally:
        stop.set()
        sender.join(10)
        daemon.stop()
        daemon.close()
        if endpoint is not None:
            endpoint.close()


def test_kill9_under_load_loses_nothing_counted(daemon_env: Endpoint, tmp_path: Path) -> None:
    endpoint = daemon_env
    endpoint.status = 503  # nothing leaves while we load it: everything acked is in the spool
    daemon = DaemonProcess(tmp_path / "d.log").start()
    stop = threading.Event()
    acked = [0] * 4
    threads = [threading.Thread(target=_blast, args=(s, 8000, stop, acked)) for s in range(4)]
    for thread in threads:
        thread.start()
    assert wait_until(lambda: sum(acked) >= 12_000, 30)
    endpoint.status = 200  # sending resumes mid-load: the kill lands between spool, send and cursor
    assert wait_until(lambda: any(r.status == 200 for r in endpoint.requests), 10)
    daemon.kill9()
    stop.set()
    for thread in threads:
        thread.join(20)
    counted = list(acked)
    restarted = DaemonProcess(tmp_path / "d2.log").start()
    try:
        def delivered_all() -> bool:
            got = {(s, i) for s, i in _sent(endpoint)}
            return all((s, i) in got for s in range(4) for i in range(counted[s]))

        assert wait_until(delivered_all, 40), (counted, status())
    finally:
        restarted.stop()


def test_server_interval_header_sets_the_send_interval(daemon: DaemonProcess, endpoint: Endpoint) -> None:
    endpoint.headers = {"X-SageOx-Interval": "1h30m"}
    answer = request("flush")
    assert answer is not None and answer["success"] is True
    assert status()["interval_s"] == 5400.0
    endpoint.headers = {"X-SageOx-Interval": "1s"}  # below the 10 s floor
    with connect() as sock:
        sock.sendall(telemetry_line("x") + b'{"type":"flush"}\n')
        assert read_line(sock)["success"] is True  # type: ignore[index]
    assert status()["interval_s"] == 10.0


def test_rejected_batch_is_dropped_and_counted(daemon: DaemonProcess, endpoint: Endpoint) -> None:
    assert wait_until(lambda: status()["delivered"] >= 1)  # app:startup
    endpoint.status = 400
    with connect() as sock:
        sock.sendall(telemetry_line("bad") * 3 + b'{"type":"flush"}\n')
        answer = read_line(sock)
    assert answer is not None and answer["success"] is True  # refused for good is done with, not waiting
    data = status()
    assert data["dropped"]["rejected"] == 3 and data["spooled"] == 0 and data["last_error"] == "HTTP 400"
    endpoint.status = 200
    with connect() as sock:
        sock.sendall(telemetry_line("good") + b'{"type":"flush"}\n')
        assert read_line(sock)["success"] is True  # type: ignore[index]
    assert Counter(e["event"] for e in endpoint.accepted_events())["good"] == 1


def test_a_user_who_opts_out_later_sends_nothing_more(daemon: DaemonProcess, endpoint: Endpoint) -> None:
    from ox_telemetry import paths

    assert wait_until(lambda: status()["delivered"] >= 1)  # app:startup, sent while telemetry was on
    before = len(endpoint.accepted_events())
    config = Path(paths.user_config_file())
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("telemetry_enabled: false\n")  # what `ox-telemetry disable` writes
    with connect() as sock:
        sock.sendall(telemetry_line("after-opt-out") * 4 + b'{"type":"flush"}\n')
        answer = read_line(sock)
    assert answer is not None and answer["success"] is True
    data = status()
    assert data["dropped"]["opted_out"] == 4 and data["spooled"] == 0
    assert len(endpoint.accepted_events()) == before  # nothing more left the machine
