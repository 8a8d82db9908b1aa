"""Several collectors on one PostgreSQL: the ingest of 1, 2 and 3 ``ox-telemetry serve`` processes sharing a store.

Run by hand (figures go in docs/collector.md, "More than one machine"):

    python bench/collector_cluster.py --postgres postgresql://postgres@127.0.0.1:55432/postgres

For each count it starts that many real collectors on one fresh schema and posts gzip batches of 100 events
(as ``collector_ingest.py`` makes them) from keep-alive connections shared evenly among them, as fast as they are
answered, then checks that the store holds exactly the events acknowledged. On a machine with few cores the
collectors, their writers, the senders and PostgreSQL share them: read the figures as a check of correctness
under concurrency, not of scaling.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import uuid
from typing import Any

import psycopg

from collector_ingest import BATCH, Server, host_speed, run_senders
from results import recorded


def _schema_url(dsn: str, schema: str) -> str:
    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}options=-csearch_path%3D{schema}"


def bench_count(dsn: str, collectors: int, seconds: float, connections: int) -> dict[str, Any]:
    """Ingest of ``collectors`` collectors on one fresh schema, and what the store holds after."""
    schema = f"ox_bench_cluster_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")  # type: ignore[call-overload]
    url = _schema_url(dsn, schema)
    servers: list[Server] = []
    try:
        servers = [Server(url) for _ in range(collectors)]
        results: list[dict[str, Any]] = [{} for _ in servers]
        per = max(1, connections // collectors)

        def send(i: int) -> None:
            results[i] = run_senders(servers[i].port, int(seconds * 2500 / collectors), per, None, seconds)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(collectors)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(seconds + 600)
        for server in servers:
            server.stop()
        acked = sum(r["statuses"].get(200, 0) for r in results) * BATCH
        elapsed = max(r["elapsed"] for r in results)
        with psycopg.connect(url) as conn:
            stored = conn.execute("SELECT count(*) FROM events").fetchone()
        return {"rate": acked / elapsed, "acked": acked, "stored": int(stored[0]) if stored else 0,
                "statuses": [r["statuses"] for r in results], "elapsed": elapsed}
    finally:
        for server in servers:
            if server.proc.poll() is None:
                server.proc.kill()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")  # type: ignore[call-overload]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", metavar="DSN", required=True, help="the PostgreSQL server (fresh schemas)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each sending run")
    parser.add_argument("--connections", type=int, default=32, help="in all, shared among the collectors")
    parser.add_argument("--max", type=int, default=3, help="up to this many collectors")
    args = parser.parse_args()
    with recorded("collector_cluster"):
        print(f"machine: {os.cpu_count()} cores, shared by the collectors, their writers, the senders and "
              f"PostgreSQL; python {sys.version.split()[0]}; speed now: {host_speed()}", flush=True)
        print("\n| collectors | ingest, events/s | acknowledged | stored | statuses |\n|---|---|---|---|---|")
        for n in range(1, args.max + 1):
            r = bench_count(args.postgres, n, args.seconds, args.connections)
            print(f"| {n} | {r['rate']:,.0f} | {r['acked']:,} | {r['stored']:,} | {r['statuses']} |", flush=True)
            if r["stored"] != r["acked"]:
                raise SystemExit(f"{n} collectors: {r['acked']} events acknowledged but {r['stored']} stored")
        print(f"\nspeed after the runs: {host_speed()}")


if __name__ == "__main__":
    main()
