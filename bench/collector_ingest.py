"""Collector benchmark: ingest rate, latency at half load, and dashboard speed with a million events.

Run by hand (figures go in docs/collector.md):

    python bench/collector_ingest.py                          # SQLite
    python bench/collector_ingest.py --postgres postgresql://postgres@127.0.0.1:55432/postgres

For each store it starts a real ``ox-telemetry serve`` on loopback and
1. posts gzip batches of 100 events (every event with its own event_id) from
   concurrent keep-alive connections as fast as they are answered: events/s;
2. inserts the same rows straight into the same schema, without HTTP, in
   transactions of 1,000 rows: the raw rate, and the collector/raw ratio
   (also the store's own write path, rollups included, for reference);
3. posts at half the rate of step 1, open loop, and reports p50/p99 latency
   measured from each request's scheduled send time;
4. with ``--dashboard``: seeds a million events spread over 30 days and times
   ``GET /api/v1/stats`` for several ranges.

Senders run in a separate process so their CPU shows as such. Every loop is
bounded by a deadline and a fixed pool of pre-built bodies.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
import results  # noqa: E402
from ox_telemetry.collector import ingest  # noqa: E402
from ox_telemetry.collector.app import parse_body  # noqa: E402
from ox_telemetry.collector.body import MAX_DECODED, Gunzip  # noqa: E402
from ox_telemetry.collector.histogram import duration_bin  # noqa: E402
from ox_telemetry.collector.storage import Storage, WriteJob, open_storage  # noqa: E402
from ox_telemetry.collector.storage.schema import (  # noqa: E402
    CLIENT_NAMES,
    DAEMON_NAMES,
    batches_table,
    keys_table,
)
from ox_telemetry.collector.writer_process import frame  # noqa: E402

BATCH = 100
COMMANDS = ["agent prime", "status", "sync", "init", "doctor", "login", "session start", "coworker load"]


def _stamp(us: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(us // 1_000_000)) + f".{us % 1_000_000:06d}Z"


def make_body(index: int, now: float) -> bytes:
    """Gzip Batch number ``index`` of BATCH command_complete events with random ids (as clients make them), sent
    by installation ``index // 10``.

    Batches are 4 ms apart, ending at ``now``: events arrive roughly in time order, as they do live.
    """
    first = int((now - 60 + index * 0.004) * 1_000_000)
    events = []
    for i in range(BATCH):
        events.append(
            f'{{"type":"command_complete","timestamp":"{_stamp(first + i)}","session_id":"s-{index}",'
            f'"command":"{COMMANDS[i % len(COMMANDS)]}","duration_ms":{20 + (i * 37) % 3000},'
            f'"success":{"false" if i % 17 == 0 else "true"},"repo_id":"repo_bench",'
            f'"api_endpoint":"https://sageox.ai","agent_type":"claude-code","event_id":"{uuid.uuid4()}"}}'
        )
    # Every batch names its installation (one per ten batches), so the installations sketches are kept up too.
    raw = ('{"events":[' + ",".join(events) + '],"cli_version":"0.5.1","os":"linux","arch":"amd64",'
           f'"batch_timestamp":"{_stamp(int(now * 1_000_000))}","client_id":"{uuid.UUID(int=index // 10)}"}}')
    return gzip.compress(raw.encode(), 6)


def _request(port: int, body: bytes) -> bytes:
    return (
        f"POST /api/v1/telemetry HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Encoding: gzip\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def _send_all(port: int, requests: list[bytes], connections: int, rate: float | None,
                    deadline: float) -> dict[str, Any]:
    """Send ``requests``; closed loop when ``rate`` is None, else open loop at ``rate`` requests/s."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    next_index = 0
    start = time.monotonic()

    async def connection() -> None:
        nonlocal next_index
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while next_index < len(requests) and time.monotonic() < deadline:
                index = next_index
                next_index += 1
                due = start + index / rate if rate else time.monotonic()
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # pacing of the open-loop run, not synchronisation
                status = await _exchange(reader, writer, requests[index])
                latencies.append(time.monotonic() - due)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    elapsed = time.monotonic() - start
    return {"elapsed": elapsed, "latencies": latencies, "statuses": statuses}


def _sender(port: int, count: int, connections: int, rate: float | None, seconds: float, out: Any) -> None:
    now = time.time()
    requests = [_request(port, make_body(i, now)) for i in range(count)]
    out.send("ready")
    out.recv()
    cpu = time.process_time()
    result = asyncio.run(_send_all(port, requests, connections, rate, time.monotonic() + seconds))
    result["cpu"] = time.process_time() - cpu
    out.send(result)


def run_senders(port: int, count: int, connections: int, rate: float | None, seconds: float) -> dict[str, Any]:
    """Build ``count`` bodies in a child process, then send them; its measurements."""
    ctx = multiprocessing.get_context("spawn")
    mine, theirs = ctx.Pipe()
    child = ctx.Process(target=_sender, args=(port, count, connections, rate, seconds, theirs))
    child.start()
    if not mine.poll(300) or mine.recv() != "ready":
        raise RuntimeError("sender did not start")
    mine.send("go")
    if not mine.poll(seconds + 120):
        raise RuntimeError("sender did not finish")
    result: dict[str, Any] = mine.recv()
    child.join(30)
    return result


class Server:
    """A real ``ox-telemetry serve`` subprocess on a free loopback port."""

    def __init__(self, db: str, *extra: str, wrapper: Sequence[str] = (), start_timeout: float = 30) -> None:
        """Start it (under ``wrapper``, a command such as valgrind, when given) and wait until it is healthy."""
        exe = [*wrapper, sys.executable, "-m", "ox_telemetry.cli", "serve", "--port", "0", "--db", db,
               "--rate", "0", "--key-rate", "0", "--log-level", "warning", *extra]
        self.proc = subprocess.Popen(exe, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"collector did not start: {line!r}")
        self.url = line.split("listening on ", 1)[1].split()[0]
        self.port = int(self.url.rsplit(":", 1)[1])
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=start_timeout / 15):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("collector never became healthy")

    def cpu_seconds(self, writer: bool = True) -> float:
        """CPU time of the server and (unless ``writer`` is False) its writer process (Linux /proc)."""
        pids = [self.proc.pid]
        if writer:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                pids += map(int, f.read().split())
        total = 0
        for pid in pids:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout: float = 30) -> None:
        self.proc.terminate()
        self.proc.wait(timeout)


def _count(storage: Storage) -> int:
    return int(storage.query("SELECT count(*) FROM events")[0][0])


def raw_rate(make_storage: Callable[[], Storage], rows: list[tuple[Any, ...]]) -> tuple[float, float]:
    """(plain INSERT rows/s, store write path rows/s) for ``rows``, in transactions of 1,000.

    Plain INSERT writes what the store stores, with no more than SQL: in SQLite each row's id into the key
    table and each 100 rows as one JSON array (schema.py); in PostgreSQL a row per event.
    """
    storage = make_storage()
    half = len(rows) // 2
    plain, through = rows[:half], rows[half:]
    started = time.perf_counter()
    if storage.dialect == "sqlite":
        import sqlite3

        conn = sqlite3.connect(storage.path, isolation_level=None)  # type: ignore[attr-defined]
        conn.execute("PRAGMA synchronous=FULL")
        for i in range(0, len(plain), 1000):
            conn.execute("BEGIN")
            for j in range(i, min(i + 1000, len(plain)), BATCH):
                part = plain[j:j + BATCH]
                conn.executemany(f"INSERT INTO {keys_table('events')} (time, id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                                 [(r[1] or 0, r[0]) for r in part])
                conn.execute(f"INSERT INTO {batches_table('events')} (rows) VALUES (?)",
                             (orjson.dumps(part).decode(),))
            conn.execute("COMMIT")
        conn.close()
    else:
        import psycopg

        insert = (f"INSERT INTO events ({', '.join(CLIENT_NAMES)}) VALUES ({', '.join(['%s'] * len(CLIENT_NAMES))}) "
                  "ON CONFLICT DO NOTHING")
        with psycopg.connect(storage.url) as conn:  # type: ignore[attr-defined]
            for i in range(0, len(plain), 1000):
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(insert, plain[i:i + 1000])
    plain_rate = len(plain) / (time.perf_counter() - started)
    started = time.perf_counter()
    for i in range(0, len(through), 1000):
        # A request's rows per job, as the collector writes them.
        storage.write([WriteJob.of(through[k:k + BATCH]) for k in range(i, min(i + 1000, len(through)), BATCH)])
    store_rate = len(through) / (time.perf_counter() - started)
    assert _count(storage) == len(rows)
    storage.close()
    return plain_rate, store_rate


def bench_store(name: str, db_for: Callable[[str], str], seconds: float, connections: int,
                serve_args: Sequence[str] = ()) -> None:
    print(f"\n== {name} ==", flush=True)
    server = Server(db_for("ingest"), *serve_args)
    count = int(seconds * 2500)  # enough bodies for 250k events/s
    cpu = server.cpu_seconds()
    full = run_senders(server.port, count, connections, None, seconds)
    server_cpu = server.cpu_seconds() - cpu
    ok = full["statuses"].get(200, 0)
    rate = ok * BATCH / full["elapsed"]
    print(f"collector ingest: {rate:,.0f} events/s  ({ok} batches of {BATCH} in {full['elapsed']:.1f} s, "
          f"{connections} connections; statuses {full['statuses']}; server CPU {server_cpu / full['elapsed']:.2f} "
          f"cores, sender CPU {full['cpu'] / full['elapsed']:.2f} cores)", flush=True)
    half_rate = rate / 2 / BATCH
    half = run_senders(server.port, int(half_rate * seconds), connections, half_rate, seconds)
    lat = sorted(half["latencies"])
    p50 = statistics.median(lat) * 1000
    p99 = lat[int(len(lat) * 0.99) - 1] * 1000
    print(f"half load ({half_rate * BATCH:,.0f} events/s offered, {len(lat)} requests): "
          f"p50 {p50:.1f} ms, p99 {p99:.1f} ms; statuses {half['statuses']}", flush=True)
    if serve_args:
        with urllib.request.urlopen(server.url + "/metrics", timeout=30) as r:
            print(" ".join(line for line in r.read().decode().splitlines() if line.startswith("ox_collector_otlp")))
    server.stop()
    print(f"speed after the runs: {host_speed()}", flush=True)
    # The same rows, straight into the same schema.
    received = time.time_ns() // 1000
    now = time.time()
    rows: list[tuple[Any, ...]] = []
    for i in range(min(count, 2000)):
        rows += ingest.client_batch(gzip.decompress(make_body(i, now)), received).client_rows
    plain, store = raw_rate(lambda: open_storage(db_for("raw")), rows)
    print(f"raw insert, same rows, no HTTP: {plain:,.0f} rows/s plain INSERT; {store:,.0f} rows/s through the "
          f"store's write path (rollups included)")
    print(f"ratio collector / raw plain INSERT: {rate / plain:.2f}; collector / store write path: "
          f"{rate / store:.2f}", flush=True)


def _row(names: tuple[str, ...], **values: Any) -> tuple[Any, ...]:
    """A row in ``names`` order: text columns default to "", the rest to None."""
    return tuple(values.get(name, "") for name in names)


def seed_million(storage: Storage, total: int, days: int) -> None:
    """``total`` realistic events over the last ``days`` days, through the store's write path."""
    rng = random.Random(7)
    now_us = time.time_ns() // 1000
    versions = ["0.5.1", "0.5.0", "0.4.9", "0.6.0-rc1"]
    platforms = [("linux", "amd64"), ("darwin", "arm64"), ("darwin", "amd64"), ("windows", "amd64")]
    agents = ["claude-code", "cursor", "codex", ""]
    chunk = 5000
    span_us = days * 86400 * 1_000_000
    for start in range(0, total, chunk):
        client, daemon = [], []
        for i in range(start, min(total, start + chunk)):
            # In time order with some jitter, as events arrive live.
            t = now_us - span_us + span_us * i // total + rng.randrange(-30_000_000, 30_000_000)
            command = COMMANDS[min(int(rng.expovariate(0.6)), len(COMMANDS) - 1)]
            duration = int(rng.lognormvariate(5, 1.2)) + 1
            system, arch = rng.choice(platforms)
            client.append(_row(
                CLIENT_NAMES, event_id=str(uuid.uuid4()), client_time=t, type="command_complete", event_time=t,
                received_at=t, time_flag=None, command=command, duration_ms=duration, success=rng.random() > 0.06,
                metadata=None, prime_call_count=0, cli_version=rng.choice(versions), os=system, arch=arch,
                agent_type=rng.choice(agents), duration_bin=duration_bin(duration)))
            if i % 50 == 0:
                daemon.append(_row(
                    DAEMON_NAMES, uuid=str(uuid.uuid4()), client_time=t, client_id="client-1", event_time=t,
                    event=rng.choice(["app:startup", "app:shutdown", "sync:complete"]), received_at=t,
                    time_flag=None, tslocal=None, props=None))
        storage.write([WriteJob.of(client, daemon)])


def bench_dashboard(db: str, total: int) -> None:
    print(f"\n== dashboard with {total:,} events ==", flush=True)
    storage = open_storage(db)
    started = time.perf_counter()
    seed_million(storage, total, 30)
    print(f"seeded in {time.perf_counter() - started:.0f} s ({_count(storage):,} events)")
    storage.close()
    server = Server(db)
    now_ms = int(time.time() * 1000)
    for label, span in (("1 hour", 3600), ("24 hours", 86400), ("7 days", 7 * 86400), ("30 days", 30 * 86400)):
        url = f"{server.url}/api/v1/stats?from={now_ms - span * 1000}&to={now_ms}"
        times = []
        for _ in range(5):
            t = time.perf_counter()
            with urllib.request.urlopen(url, timeout=30) as r:
                data = orjson.loads(r.read())
            times.append(time.perf_counter() - t)
        print(f"GET /api/v1/stats, last {label}: median {statistics.median(times) * 1000:.0f} ms, "
              f"max {max(times) * 1000:.0f} ms ({data['totals']['events']:,} events in range)")
    t = time.perf_counter()
    with urllib.request.urlopen(server.url + "/", timeout=30) as r:
        r.read()
    print(f"GET / (the page itself): {(time.perf_counter() - t) * 1000:.0f} ms")
    server.stop()


def server_share_us(bodies: Sequence[bytes], repeat: int) -> float:
    """CPU µs an event of the server's share of ingest without HTTP (gunzip, then the server's own ``parse_body``:
    parse and check, tally, pack; then the frame to the writer), best of ``repeat``: a fixed piece of work, so
    it tells how fast this VM runs now (it drifts by up to two times).
    """
    received = time.time_ns() // 1000
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for body in bodies:
            gunzip = Gunzip(MAX_DECODED)
            gunzip.feed(body)
            frame((1, parse_body("telemetry", gunzip.finish(), received)[1].data))
        best = min(best, time.process_time() - started)
    return best / (len(bodies) * BATCH) * 1e6


def host_speed() -> str:
    """The VM's speed now, as ``server_share_us`` of 200 requests measures it."""
    now = time.time()
    return f"{server_share_us([make_body(i, now) for i in range(200)], 3):.2f} µs CPU an event of the server's share"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each sending run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--postgres", metavar="DSN", help="also measure PostgreSQL (a fresh schema is used)")
    parser.add_argument("--dashboard", type=int, metavar="N", default=0,
                        help="seed N events (e.g. 1000000) and time the stats API")
    parser.add_argument("--skip-sqlite", action="store_true", help="skip the SQLite ingest run")
    parser.add_argument("--otlp-endpoint", metavar="URL", help="the collector also exports to this OTLP endpoint")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="ox-bench-")
    serve_args = ["--otlp-endpoint", args.otlp_endpoint] if args.otlp_endpoint else []
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; work dir {tmp}; "
          f"speed now: {host_speed()} (this VM varies; compare runs by it)", flush=True)
    if not args.skip_sqlite:
        bench_store("SQLite", lambda name: f"sqlite://{tmp}/{name}.sqlite3", args.seconds, args.connections,
                    serve_args)
    if args.dashboard:
        bench_dashboard(f"sqlite://{tmp}/dashboard.sqlite3", args.dashboard)
    if args.postgres:
        import psycopg

        schemas = []

        def pg(name: str) -> str:
            schema = f"ox_bench_{name}_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {schema}")  # type: ignore[call-overload]
            schemas.append(schema)
            sep = "&" if "?" in args.postgres else "?"
            return f"{args.postgres}{sep}options=-csearch_path%3D{schema}"

        try:
            bench_store("PostgreSQL", pg, args.seconds, args.connections, serve_args)
        finally:
            with psycopg.connect(args.postgres, autocommit=True) as conn:
                for schema in schemas:
                    conn.execute(f"DROP SCHEMA {schema} CASCADE")  # type: ignore[call-overload]


if __name__ == "__main__":
    with results.recorded("collector_ingest"):
        main()
