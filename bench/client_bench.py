"""Client benchmark: what ox-telemetry costs the CLI that embeds it.

Run by hand; what it prints is also written to bench/RESULTS.md:

    python bench/client_bench.py                       # ox-telemetry alone
    python bench/client_bench.py --compare bench/.venv-compare/bin/python

``--compare`` names an interpreter of a separate virtual environment holding
posthog, sentry-sdk and opentelemetry-sdk (+ the OTLP HTTP exporter), which
are then measured doing the same short CLI run. See bench/README.md.

Prints three tables:
1. import cost: ``from ox_telemetry import Client, Event`` minus ``python -c pass``;
2. a whole short CLI run (import, client, start, 10 commands, stop) minus a
   bare interpreter, against an endpoint that answers 200, one that accepts
   the connection and never answers, and one that refuses;
3. ``track()`` with a disk queue and on a disabled client, per call, beside an
   ``os.write`` of the same line to an append-only file (the floor).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

import results  # noqa: E402
from loopback import Endpoint, refusing_url  # noqa: E402

OX_RUN = """
import sys
from ox_telemetry import Client
c = Client("bench", project_root=sys.argv[2], base_url=sys.argv[1], version="1.0.0")
c.start()
for i in range(10):
    c.track_command(f"cmd {i}", 0.01, True)
c.stop()
"""

POSTHOG_RUN = """
import sys
from posthog import Posthog
p = Posthog("phc_bench", host=sys.argv[1])
for i in range(10):
    p.capture("command_complete", distinct_id="bench", properties={"command": f"cmd {i}", "duration_ms": 10})
p.shutdown()
"""

SENTRY_RUN = """
import sys
import sentry_sdk
host = sys.argv[1].split("//", 1)[1]
sentry_sdk.init(dsn=f"http://bench@{host}/1", traces_sample_rate=0.0)
for i in range(10):
    sentry_sdk.capture_message(f"command_complete cmd {i}")
"""

OTEL_RUN = """
import logging, sys
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
provider = LoggerProvider()
provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=sys.argv[1] + "/v1/logs")))
log = logging.getLogger("cli")
log.addHandler(LoggingHandler(logger_provider=provider))
log.setLevel(logging.INFO)
for i in range(10):
    log.info("command_complete", extra={"command": f"cmd {i}", "duration_ms": 10})
provider.shutdown()
"""

LIBRARIES = {"ox-telemetry": OX_RUN, "posthog": POSTHOG_RUN, "sentry-sdk": SENTRY_RUN,
             "opentelemetry-sdk": OTEL_RUN}


def _env(home: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OX_", "SAGEOX", "DO_NOT_TRACK"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed package has its .pyc files
    env["HOME"] = home
    env["OX_TELEMETRY_SOCKET"] = os.path.join(home, "no-daemon.sock")
    # The detached uploader gives up quickly here, so runs do not pile up on the CPU.
    env["OX_TELEMETRY_UPLOAD_TUNING"] = "timeout=1,budget=1"
    return env


def _time_process(argv: list[str], env: dict[str, str], timeout: float = 30.0) -> float:
    """Wall time of one process, ms (inf when it had to be killed after ``timeout``).

    Waits with a blocking ``waitpid``: ``subprocess.run(timeout=...)`` polls
    with sleeps of up to 50 ms, which would quantize every figure.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    try:
        _, status = os.waitpid(proc.pid, 0)
    finally:
        killer.cancel()
    elapsed = (time.perf_counter() - start) * 1000
    proc.returncode = os.waitstatus_to_exitcode(status)
    return float("inf") if status and os.WIFSIGNALED(status) else elapsed


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _wait_uploaders(work: str, limit: float = 10.0) -> None:
    """Let the previous run's background uploader finish, so it does not share the CPU."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        out = subprocess.run(["pgrep", "-f", f"ox_telemetry.uploader --queue {work}"], capture_output=True)
        if out.returncode != 0:
            return
        time.sleep(0.02)


def _paired(label_pairs: list[tuple[float, float]]) -> tuple[float, float, float]:
    """(median of bare, median of paired differences, min run - min bare).

    This VM's CPU switches between two speeds (a factor of about two), so a
    figure is only fair against a baseline taken right beside it; the
    difference of minimums is the same comparison at the fast speed.
    """
    bare = [b for b, _ in label_pairs]
    runs = [r for _, r in label_pairs]
    return (statistics.median(bare), statistics.median(r - b for b, r in label_pairs), min(runs) - min(bare))


def bench_import(python: str, runs: int) -> None:
    home = tempfile.mkdtemp()
    env = _env(home)
    subprocess.run([python, "-m", "compileall", "-q", str(ROOT / "src")], env=env, stdout=subprocess.DEVNULL)
    pairs = []
    for _ in range(runs):
        bare = _time_process([python, "-c", "pass"], env)
        pairs.append((bare, _time_process([python, "-c", "from ox_telemetry import Client, Event"], env)))
    base, diff, floor = _paired(pairs)
    print("\n## Import: `from ox_telemetry import Client, Event`\n")
    print(f"{runs} pairs of fresh processes (bare `python -c pass`, then the import).\n")
    print("| bare interpreter, median ms | import minus bare: median of pairs | difference of minimums |")
    print("|---|---|---|")
    print(f"| {base:.2f} | **{diff:+.2f}** | {floor:+.2f} |")
    shutil.rmtree(home, ignore_errors=True)


def bench_cli_runs(python: str, compare: str | None, runs: int, compare_runs: int) -> None:
    ok, hang = Endpoint(), Endpoint()
    hang.hang = True
    conditions = {"answers 200": ok.base_url, "never answers": hang.base_url, "refuses": refusing_url()}
    interpreters = {"ox-telemetry": python}
    if compare:
        interpreters.update({name: compare for name in LIBRARIES if name != "ox-telemetry"})
    table: dict[str, dict[str, tuple[float, float, float]]] = {}
    for name, interp in interpreters.items():
        table[name] = {}
        n = runs if name == "ox-telemetry" else compare_runs
        for label, url in conditions.items():
            pairs = []
            for _ in range(n):
                work = tempfile.mkdtemp()
                project = os.path.join(work, "project")
                os.makedirs(os.path.join(project, ".sageox"))
                Path(project, ".sageox", "README.md").write_text("")
                bare = _time_process([interp, "-c", "pass"], _env(work))
                pairs.append((bare, _time_process([interp, "-c", LIBRARIES[name], url, project], _env(work))))
                _wait_uploaders(work)
                shutil.rmtree(work, ignore_errors=True)
            table[name][label] = _paired(pairs)
    ok.close()
    hang.close()
    print("\n## A short CLI run: import, client, start, 10 commands, stop\n")
    print(f"Whole process wall time minus a bare interpreter run just before it, ms: median of the pairs "
          f"(difference of minimums in brackets); {runs} pairs for ox-telemetry, {compare_runs} for the others; "
          "inf = killed after 30 s.\n")
    print("| library | " + " | ".join(conditions) + " |")
    print("|---|" + "---|" * len(conditions))
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{row[c][1]:.1f} ({row[c][2]:.1f})" for c in conditions) + " |")


def bench_track(calls: int) -> None:
    from ox_telemetry import Client, Event

    work = tempfile.mkdtemp()
    os.environ.update(HOME=work, OX_TELEMETRY_SOCKET=os.path.join(work, "none.sock"))
    for key in ("DO_NOT_TRACK", "SAGEOX_TELEMETRY", "OX_TELEMETRY_DEBUG"):
        os.environ.pop(key, None)
    project = os.path.join(work, "project")
    os.makedirs(os.path.join(project, ".sageox"))
    Path(project, ".sageox", "README.md").write_text("")
    enabled = Client("bench", project_root=project, base_url="http://127.0.0.1:9")
    disabled = Client("bench", project_root=project, enabled=False)
    event = Event("command_complete", command="agent prime", duration_ms=1534, success=True)
    line = (event.to_json() + "\n").encode()
    fd = os.open(os.path.join(work, "floor.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    clock = time.perf_counter_ns

    cases = {
        "os.write of the same line (floor)": lambda: os.write(fd, line),
        "track(), disk queue": lambda: enabled.track(event),
        "track(), disabled client": lambda: disabled.track(event),
    }
    samples: dict[str, list[float]] = {label: [] for label in cases}
    queue_file = os.path.join(project, ".sageox", "cache", "telemetry.jsonl")
    for _ in range(calls // 500):  # interleaved blocks: each case sees the same CPU speeds
        for label, fn in cases.items():
            out = samples[label]
            for _ in range(500):
                t = clock()
                fn()
                out.append((clock() - t) / 1000)
        os.truncate(queue_file, 0)  # stay below the 1 MiB bound: measure appends, not trims
    floor = samples["os.write of the same line (floor)"]
    print(f"\n## `track()` per call, µs ({calls} calls each)\n")
    print("| | p50 | p99 | p50 ratio to floor |\n|---|---|---|---|")
    for label, xs in samples.items():
        print(f"| {label} | {statistics.median(xs):.2f} | {_p99(xs):.2f} | "
              f"{statistics.median(xs) / statistics.median(floor):.1f}x |")
    os.close(fd)
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="fresh processes per measurement")
    parser.add_argument("--compare-runs", type=int, default=5, help="runs per condition for other libraries")
    parser.add_argument("--compare", help="python of a venv with posthog, sentry-sdk, opentelemetry-sdk")
    parser.add_argument("--calls", type=int, default=20000, help="track() calls to time")
    args = parser.parse_args()
    with results.recorded("client"):
        _run(args)


def _run(args: argparse.Namespace) -> None:
    print(f"# ox-telemetry client benchmark ({os.cpu_count()} cores, Python {sys.version.split()[0]})")
    bench_import(sys.executable, args.runs)
    bench_cli_runs(sys.executable, args.compare, args.runs, args.compare_runs)
    bench_track(args.calls)


if __name__ == "__main__":
    main()
