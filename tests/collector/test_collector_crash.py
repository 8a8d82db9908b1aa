"""``kill -9`` of the collector under load, then a restart: every event answered 2xx is in the store."""

from __future__ import annotations

import http.client
import json
import threading

from collector_helpers import batch, event, start_process

from loopback import wait_until
from ox_telemetry.collector.storage import open_storage


def test_kill_9_under_load_loses_no_acknowledged_event(db_url: str) -> None:
    server = start_process("--db", db_url, "--rate", "0")
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def send() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        for _ in range(5000):  # bounded; the kill ends it long before
            if stop.is_set():
                return
            events = [event() for _ in range(50)]
            try:
                conn.request("POST", "/api/v1/telemetry", json.dumps(batch(*events)),
                             {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                return  # the collector is gone
            if 200 <= response.status < 300:
                with lock:
                    acknowledged.extend(e["event_id"] for e in events)

    senders = [threading.Thread(target=send) for _ in range(4)]
    for sender in senders:
        sender.start()
    assert wait_until(lambda: len(acknowledged) >= 3000, 60), "the collector never got under load"
    server.kill_all()  # SIGKILL the server and its writer together, requests in flight
    stop.set()
    for sender in senders:
        sender.join(30)

    store = open_storage(db_url)
    try:
        stored = {row[0] for row in store.query("SELECT event_id FROM events")}
        with lock:
            missing = set(acknowledged) - stored
        assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged events are missing"
        # The counts the dashboard reads were committed with the events, never apart from them.
        total = store.query("SELECT sum(n) FROM rollup_1m WHERE dim = 'total' AND value = 'events'")[0][0]
        assert int(total) == len(stored)
    finally:
        store.close()

    again = start_process("--db", db_url)
    try:
        after = event()
        reply = again.request("POST", "/api/v1/telemetry", json.dumps(batch(after)).encode(),
                              {"Content-Type": "application/json"})
        assert reply.status == 200 and reply.json()["accepted"] == 1
        stats = again.request("GET", "/api/v1/stats").json()
        assert stats["totals"]["events"] == len(stored) + 1
    finally:
        again.stop()
