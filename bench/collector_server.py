"""The server process's share of ingest: gunzip, parse and check, tally, pack, frame; with ``--http``,
the whole server process, HTTP included.

Run by hand. Since the writer stopped reading the rows it stores, the server
process is what bounds the collector on two cores (docs/collector.md). This
VM's speed drifts, so times of one run say little against another's;
instruction counts do not drift:

    python bench/collector_server.py                 # CPU µs per event, best of 5
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python bench/collector_server.py --requests 200 --repeat 1
    # ... and the same with --repeat 0 (setup only); the difference / (requests x 100) is instructions per event

    python bench/collector_server.py --http          # a real server: its own CPU µs per event
    python bench/collector_server.py --http --requests 200 \\
        --wrapper "valgrind --tool=callgrind --callgrind-out-file=/dev/null"
    # ... and the same with --requests 400: the difference of the two "Collected" totals valgrind prints
    # for the server, over 20,000, is instructions per event of the whole server process

Each request is 100 events as ``collector_ingest.py`` sends them, gunzipped
as the server does (``body.Gunzip``, with its limit). The server also reads
and answers HTTP; that costs about a tenth more.
"""

from __future__ import annotations

import argparse
import http.client
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import results  # noqa: E402
from collector_ingest import BATCH, Server, make_body, server_share_us  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5, help="runs (0 builds the requests only)")
    parser.add_argument("--http", action="store_true",
                        help="post the requests one at a time to a real ox-telemetry serve instead")
    parser.add_argument("--wrapper", default="", help="with --http: a command to run the server under")
    args = parser.parse_args()
    now = time.time()
    bodies = [make_body(i, now) for i in range(args.requests)]
    if args.http:
        through_http(bodies, shlex.split(args.wrapper))
        return
    if args.repeat:
        print(f"server share: {server_share_us(bodies, args.repeat):.2f} µs CPU an event "
              f"(best of {args.repeat}, {len(bodies) * BATCH:,} events)")


def through_http(bodies: list[bytes], wrapper: list[str]) -> None:
    """Post ``bodies`` in turn on one connection to a real server (under ``wrapper``), then stop it."""
    server = Server(f"sqlite://{tempfile.mkdtemp(prefix='ox-bench-')}/server.sqlite3", wrapper=wrapper,
                    start_timeout=600 if wrapper else 30)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    cpu = server.cpu_seconds(writer=False)
    for body in bodies:
        conn.request("POST", "/api/v1/telemetry", body, headers)
        reply = conn.getresponse()
        reply.read()
        if reply.status != 200:
            raise RuntimeError(f"the server answered {reply.status}")
    cpu = server.cpu_seconds(writer=False) - cpu
    conn.close()
    server.stop(600 if wrapper else 30)  # a wrapper such as valgrind reports as the server exits
    print(f"server process: {cpu / (len(bodies) * BATCH) * 1e6:.2f} µs CPU an event over HTTP "
          f"({len(bodies) * BATCH:,} events, one request at a time)")


if __name__ == "__main__":
    with results.recorded("collector_server"):
        main()
