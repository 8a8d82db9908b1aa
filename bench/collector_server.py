"""The server process's share of ingest, without HTTP: gunzip, parse and check, tally, pack, frame.

Run by hand. Since the writer stopped reading the rows it stores, this share
is what bounds the collector on two cores (docs/collector.md). This VM's speed
drifts, so times of one run say little against another's; instruction counts
do not drift:

    python bench/collector_server.py                 # CPU µs per event, best of 5
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python bench/collector_server.py --requests 200 --repeat 1
    # ... and the same with --repeat 0 (setup only); the difference / (requests x 100) is instructions per event

Each request is 100 events as ``collector_ingest.py`` sends them, gunzipped
as the server does (``body.Gunzip``, with its limit). The server also reads
and answers HTTP; that costs about a tenth more.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from collector_ingest import BATCH, make_body  # noqa: E402
from ox_telemetry.collector import ingest  # noqa: E402
from ox_telemetry.collector.body import MAX_DECODED, Gunzip  # noqa: E402
from ox_telemetry.collector.writer_process import frame  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5, help="runs (0 builds the requests only)")
    args = parser.parse_args()
    now = time.time()
    bodies = [make_body(i, now) for i in range(args.requests)]
    received = time.time_ns() // 1000
    best = float("inf")
    for _ in range(args.repeat):
        started = time.process_time()
        for body in bodies:
            gunzip = Gunzip(MAX_DECODED)
            gunzip.feed(body)
            parsed = ingest.client_batch(gunzip.finish(), received)
            frame((1, parsed.job()))
        best = min(best, time.process_time() - started)
    if args.repeat:
        print(f"server share: {best / (len(bodies) * BATCH) * 1e6:.2f} µs CPU an event "
              f"(best of {args.repeat}, {len(bodies) * BATCH:,} events)")


if __name__ == "__main__":
    main()
