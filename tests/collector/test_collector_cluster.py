"""Several collectors on one PostgreSQL: exactly-once across all of them, rollups that add up, migrations of
collectors starting together, and a health check a load balancer can rely on."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import queue
import random
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from collector_helpers import Process, Server, request, start_process

from loopback import wait_until
from ox_telemetry.collector.config import Config
from ox_telemetry.collector.storage import Storage, open_storage
from ox_telemetry.collector.storage.schema import LEVEL_NAMES, LEVELS, SCHEMA_VERSION

COLLECTORS = 3
CLIENT_BATCHES, DAEMON_BATCHES, PER_BATCH = 950, 50, 100  # 100,000 events
SENDERS = 6
RUNS = ("command_complete", "command_error")


# -- what is sent ------------------------------------------------------------------------------------------------


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def _client_body(rng: random.Random, now: float) -> tuple[bytes, list[str]]:
    events = []
    for _ in range(PER_BATCH):
        # Mostly the last three hours; a few a month and a half old (flagged 'past', charted when received).
        t = now - (40 * 86400 if rng.random() < 0.02 else rng.uniform(0, 3 * 3600))
        kind = rng.choice((*RUNS, "command_complete", "session_start"))
        events.append({
            "type": kind, "timestamp": _iso(t), "event_id": str(uuid.uuid4()), "session_id": "s",
            "command": rng.choice(("status", "sync", "prime", "init")),
            "duration_ms": int(rng.lognormvariate(5, 1.5)), "success": rng.random() > 0.15,
            "agent_type": rng.choice(("", "claude-code", "cursor")),
        })
    body = {"events": events, "cli_version": rng.choice(("0.5.1", "0.6.0")), "os": rng.choice(("linux", "darwin")),
            "arch": rng.choice(("amd64", "arm64")), "batch_timestamp": _iso(now)}
    return gzip.compress(json.dumps(body).encode(), 1), [e["event_id"] for e in events]


def _daemon_body(rng: random.Random, now: float) -> tuple[bytes, list[str]]:
    events = [{"uuid": str(uuid.uuid4()), "ts": int((now - rng.uniform(0, 3 * 3600)) * 1000),
               "event": rng.choice(("sync:complete", "sync:error", "daemon:start"))} for _ in range(PER_BATCH)]
    return gzip.compress(json.dumps({"clientid": "c1", "events": events}).encode(), 1), [e["uuid"] for e in events]


# -- a client that fails over ------------------------------------------------------------------------------------


class Fleet:
    """Senders posting batches to several collectors as clients behind a load balancer do: a batch that gets no
    2xx (the collector died, refused, or was overloaded) is sent again to the next collector alive."""

    def __init__(self, collectors: list[Process], batches: list[tuple[str, bytes, list[str]]]) -> None:
        self.collectors = collectors
        self.batches = batches
        self.dead: set[int] = set()
        self.acked: Counter[int] = Counter()  # batch index -> 2xx answers it got
        self.acked_events = 0
        self.failovers = 0
        self.lock = threading.Lock()
        self.plan: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()

    def send_all(self, rng: random.Random, duplicates: float) -> list[threading.Thread]:
        """Queue every batch to a collector in turn, and a tenth of them again soon after to a different one,
        so a repeat often races its original; start the senders."""
        plan: list[tuple[int, int]] = [(i, i % COLLECTORS) for i in range(len(self.batches))]
        for i in rng.sample(range(len(self.batches)), int(len(self.batches) * duplicates)):
            plan.insert(min(len(plan), i + rng.randrange(1, 20)), (i, (i + rng.randrange(1, COLLECTORS)) % COLLECTORS))
        for item in plan:
            self.plan.put(item)
        threads = [threading.Thread(target=self._sender, daemon=True) for _ in range(SENDERS)]
        for thread in threads:
            self.plan.put(None)
            thread.start()
        return threads

    def _sender(self) -> None:
        conns: dict[int, http.client.HTTPConnection] = {}
        while (item := self.plan.get()) is not None:
            index, target = item
            path, body, _ = self.batches[index]
            for _ in range(30):  # bounded: a test that cannot deliver fails its checks, it never spins
                while target in self.dead:
                    target = (target + 1) % COLLECTORS
                conn = conns.get(target) or http.client.HTTPConnection(
                    "127.0.0.1", self.collectors[target].port, timeout=30)
                conns[target] = conn
                try:
                    conn.request("POST", path, body, {"Content-Type": "application/json", "Content-Encoding": "gzip"})
                    response = conn.getresponse()
                    response.read()
                    if response.status == 200:
                        with self.lock:
                            self.acked[index] += 1
                            self.acked_events += PER_BATCH
                        break
                except (OSError, http.client.HTTPException):
                    conn.close()
                    del conns[target]
                with self.lock:
                    self.failovers += 1
                target = (target + 1) % COLLECTORS
        for conn in conns.values():
            conn.close()


def _start_together(url: str, n: int) -> list[Process]:
    """``n`` ``ox-telemetry serve`` processes started at the same moment on the store at ``url``."""
    started: list[Process] = []
    failures: list[BaseException] = []
    gate = threading.Barrier(n)

    def start() -> None:
        gate.wait()
        try:
            process = start_process("--db", url, "--rate", "0")
        except BaseException as exc:
            failures.append(exc)
        else:
            started.append(process)

    threads = [threading.Thread(target=start) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    if failures:
        for process in started:
            process.kill_all()
        raise failures[0]
    return started


# -- the recount -------------------------------------------------------------------------------------------------


def _recount(store: Storage) -> dict[str, Counter[tuple[Any, ...]]]:
    """Every rollup table's rows, counted again from the raw rows, as docs/collector.md describes them: at the
    corrected client time unless flagged (then at the receive time); errors are failed command runs."""
    out: dict[str, Counter[tuple[Any, ...]]] = {}
    for level in LEVELS:
        out[f"rollup_{LEVEL_NAMES[level]}"] = Counter()
        out[f"durations_{LEVEL_NAMES[level]}"] = Counter()
    client = store.query("SELECT type, command, cli_version, os, arch, agent_type, time_flag, success, event_time, "
                         "received_at, duration_bin FROM events")
    for kind, command, version, os_, arch, agent, flag, success, at, received, bin_ in client:
        run = kind in RUNS
        error = int(run and (kind == "command_error" or not success))
        dims = [("total", "events"), ("type", kind), ("cli_version", version), ("os_arch", f"{os_}/{arch}"),
                ("agent_type", agent)] + ([("command", command)] if run else []) + (
                    [("time_flag", flag)] if flag is not None else [])
        minute = (at if flag is None else received) // 60_000_000 * 60
        for level in LEVELS:
            bucket, name = minute // level * level, LEVEL_NAMES[level]
            for dim, value in dims:
                out[f"rollup_{name}"][(dim, bucket, value, "n")] += 1
                out[f"rollup_{name}"][(dim, bucket, value, "errors")] += error
            if bin_ is not None:
                out[f"durations_{name}"][(bucket, command, bin_)] += 1
    for event, flag, at, received in store.query("SELECT event, time_flag, event_time, received_at "
                                                 "FROM daemon_events"):
        minute = (at if flag is None else received) // 60_000_000 * 60
        dims = [("total", "daemon"), ("daemon", event)] + ([("time_flag", flag)] if flag is not None else [])
        for level in LEVELS:
            for dim, value in dims:
                out[f"rollup_{LEVEL_NAMES[level]}"][(dim, minute // level * level, value, "n")] += 1
    return {table: +counts for table, counts in out.items()}  # + drops the zero error counts


def _stored_rollups(store: Storage) -> dict[str, Counter[tuple[Any, ...]]]:
    out: dict[str, Counter[tuple[Any, ...]]] = {}
    for level in LEVELS:
        name = LEVEL_NAMES[level]
        counts: Counter[tuple[Any, ...]] = Counter()
        for dim, bucket, value, n, errors in store.query(f"SELECT dim, bucket, value, n, errors FROM rollup_{name}"):
            counts[(dim, bucket, value, "n")] += n
            counts[(dim, bucket, value, "errors")] += errors
        out[f"rollup_{name}"] = +counts
        out[f"durations_{name}"] = +Counter({(bucket, command, bin_): n for bucket, command, bin_, n in store.query(
            f"SELECT bucket, command, bin, n FROM durations_{name}")})
    return out


def _deadlocks(store: Storage) -> int:
    return int(store.query("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")[0][0])


# -- tests -------------------------------------------------------------------------------------------------------


def test_collectors_opening_an_empty_database_at_once_migrate_it_once(postgres_url: str) -> None:
    # Eight at the same moment: without a lock around the migration, all see version 0 and all create tables.
    gate = threading.Barrier(8)
    opened: list[Storage] = []
    failures: list[BaseException] = []

    def open_one() -> None:
        gate.wait()
        try:
            opened.append(open_storage(postgres_url))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert not failures, failures
        assert len(opened) == 8
        assert opened[0].query("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    finally:
        for store in opened:
            store.close()


def test_collectors_storing_the_same_redeliveries_in_crossed_order_never_deadlock(postgres_url: str) -> None:
    # Two collectors' writers, each with a transaction of two requests that the other also got, in the other
    # order. Each deadlock stalls both for a second (PostgreSQL's deadlock_timeout) before one retries.
    from test_collector_storage import NOW, client_rows, ev

    from ox_telemetry.collector.storage import WriteJob

    def write(store: Storage, jobs: list[WriteJob], gate: threading.Barrier, stored: list[int]) -> None:
        gate.wait()
        stored.extend(store.write(jobs))

    stores = [open_storage(postgres_url), open_storage(postgres_url)]
    before = _deadlocks(stores[0])
    try:
        for round_ in range(20):
            early = WriteJob.of(client_rows(*[ev(NOW + round_ * 100 + i / 10) for i in range(100)]))
            late = WriteJob.of(client_rows(*[ev(NOW + 3600 + round_ * 100 + i / 10) for i in range(100)]))
            gate = threading.Barrier(2)
            stored: list[int] = []
            threads = [threading.Thread(target=write, args=(stores[0], [early, late], gate, stored)),
                       threading.Thread(target=write, args=(stores[1], [late, early], gate, stored))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert sorted(stored) == [0, 0, 100, 100]
        assert _deadlocks(stores[0]) == before
    finally:
        for store in stores:
            store.close()


def test_three_collectors_on_one_postgresql_store_every_acknowledged_event_once(postgres_url: str) -> None:
    rng = random.Random(19)
    now = time.time()
    batches = [("/api/v1/telemetry", *_client_body(rng, now)) for _ in range(CLIENT_BATCHES)]
    batches += [("/tevents", *_daemon_body(rng, now)) for _ in range(DAEMON_BATCHES)]
    rng.shuffle(batches)
    collectors = _start_together(postgres_url, COLLECTORS)  # on an empty database: they migrate it together
    store = open_storage(postgres_url)
    deadlocks = _deadlocks(store)
    try:
        fleet = Fleet(collectors, batches)
        senders = fleet.send_all(rng, duplicates=0.1)
        assert wait_until(lambda: fleet.acked_events >= 30_000, 60), "the collectors never got under load"
        fleet.dead.add(0)
        os.kill(collectors[0].proc.pid, signal.SIGKILL)  # requests in flight; its writer sees its pipe close
        assert collectors[0].proc.wait(10) == -signal.SIGKILL
        for sender in senders:
            sender.join(120)
        assert not any(sender.is_alive() for sender in senders), "the senders did not finish"
        assert fleet.failovers > 0, "no request was in flight at the kill: it tested nothing"

        unacked = [i for i in range(len(batches)) if not fleet.acked[i]]
        assert not unacked, f"{len(unacked)} batches never got a 2xx"
        for table, key, path in (("events", "event_id", "/api/v1/telemetry"), ("daemon_events", "uuid", "/tevents")):
            sent = [id_ for p, _, ids in batches if p == path for id_ in ids]
            stored = [row[0] for row in store.query(f"SELECT {key} FROM {table}")]
            assert len(stored) == len(set(stored)), f"{table}: {len(stored) - len(set(stored))} stored twice"
            assert set(stored) == set(sent), f"{table}: {len(set(sent) - set(stored))} acknowledged, not stored"
        assert _stored_rollups(store) == _recount(store)
        # Repeats raced their originals across collectors, and no writer had to start a transaction again.
        assert _deadlocks(store) == deadlocks

        for survivor in collectors[1:]:
            assert survivor.request("GET", "/healthz").status == 200
            totals = survivor.request("GET", "/api/v1/stats").json()["totals"]
            assert (totals["events"], totals["daemon_events"]) == (CLIENT_BATCHES * PER_BATCH,
                                                                   DAEMON_BATCHES * PER_BATCH)
        for survivor in collectors[1:]:
            survivor.stop()
    finally:
        store.close()
        for process in collectors:
            process.kill_all()


# -- /healthz behind a load balancer ------------------------------------------------------------------------------


class Relay:
    """A TCP relay on loopback in front of PostgreSQL that a test can freeze: bytes stop moving both ways but
    every connection stays open, as when the database host hangs or the network drops packets."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.flowing = threading.Event()
        self.flowing.set()
        self.closing = threading.Event()
        self.sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                return
            server.settimeout(None)
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                while not self.flowing.wait(0.1):  # frozen: hold the bytes
                    if self.closing.is_set():
                        return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            try:  # a shutdown, not a close: it also ends the other direction's recv, and the peer sees the end
                sink.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.closing.set()
        self.flowing.set()
        self.listener.close()
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


@pytest.fixture
def relay(postgres_url: str) -> Iterator[tuple[Relay, str]]:
    """A relay to the test's PostgreSQL, and the test's URL through it."""
    from urllib.parse import urlsplit

    parts = urlsplit(postgres_url)
    assert parts.hostname and parts.port
    through = Relay(parts.hostname, parts.port)
    yield through, parts._replace(netloc=parts.netloc.replace(f":{parts.port}", f":{through.port}", 1)).geturl()
    through.close()


@pytest.fixture
def healthy(relay: tuple[Relay, str]) -> Iterator[tuple[Relay, Server]]:
    """A collector whose store is reached through the relay, healthy to begin with."""
    through, url = relay
    server = Server(Config(db_url=url, address_rate=0, key_rate=0))
    try:
        assert server.request("GET", "/healthz").status == 200
        yield through, server
    finally:
        through.flowing.set()
        server.close()


def test_healthz_answers_503_soon_when_the_store_hangs_and_200_once_it_answers(
        healthy: tuple[Relay, Server]) -> None:
    through, server = healthy
    through.flowing.clear()
    started = time.monotonic()
    # A load balancer's check gives up after a few seconds; the collector must answer within that.
    reply = request(server.port, "GET", "/healthz", timeout=8)
    assert reply.status == 503 and time.monotonic() - started < 5
    assert reply.json()["code"] == "store_timeout" and "did not answer" in reply.json()["error"]
    through.flowing.set()
    assert wait_until(lambda: request(server.port, "GET", "/healthz", timeout=8).status == 200, 15)


def test_healthz_answers_503_with_a_reason_when_the_store_is_gone(healthy: tuple[Relay, Server]) -> None:
    through, server = healthy
    through.close()  # every connection to the store is cut, and no new one gets through
    reply = request(server.port, "GET", "/healthz", timeout=8)
    assert reply.status == 503 and reply.json()["code"] == "store_unavailable", reply.body
