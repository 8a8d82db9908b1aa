"""The SQLite writer alone: CPU per event through the store's write path, by requests per transaction.

Run by hand. This VM's speed drifts by up to two times, so wall and CPU times
of one run say little against another's; instruction counts do not drift:

    python bench/collector_writer.py                 # CPU µs per event, best of 3
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python bench/collector_writer.py --group 9 --repeat 1 --requests 180
    # ... and the same with --group 0 (setup only); the difference / (requests x 100) is instructions per event

Each request is 100 events as ``collector_ingest.py`` sends them, parsed and
packed as the server does; a transaction holds ``--group`` requests (under
full load the writer takes about nine at a time).
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import results  # noqa: E402
from collector_ingest import make_body  # noqa: E402
from ox_telemetry.collector import ingest  # noqa: E402
from ox_telemetry.collector.storage import WriteJob, open_storage  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group", type=int, action="append", help="requests a transaction (repeatable; "
                        "default 1, 9 and 32; 0 builds the requests only)")
    parser.add_argument("--requests", type=int, default=1800)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    now, received = time.time(), time.time_ns() // 1000
    jobs = [WriteJob.of(ingest.client_batch(gzip.decompress(make_body(i, now)), received).client_rows)
            for i in range(args.requests)]
    events = sum(len(job) for job in jobs)
    for group in args.group or [1, 9, 32]:
        if group <= 0:
            continue
        best = float("inf")
        for _ in range(args.repeat):
            storage = open_storage(f"sqlite://{tempfile.mkdtemp(prefix='ox-bench-')}/writer.sqlite3")
            started = time.process_time()
            for i in range(0, len(jobs), group):
                storage.write(jobs[i:i + group])
            best = min(best, time.process_time() - started)
            storage.close()
        print(f"{group:>3} requests a transaction: {best / events * 1e6:.2f} µs CPU an event "
              f"(best of {args.repeat}, {events:,} events)", flush=True)


if __name__ == "__main__":
    with results.recorded("collector_writer"):
        main()
