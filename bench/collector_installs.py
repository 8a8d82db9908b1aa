"""Installations benchmark: 10,000,000 events from 100,000 installations over 30 days, then the 28-day views.

    python bench/collector_installs.py                          # SQLite
    python bench/collector_installs.py --postgres postgresql://postgres@127.0.0.1:55432/postgres
    python bench/collector_installs.py --events 2000000         # a smaller run

The events are written through the store's own write path (the writer's
``Storage.write``: key table, batches, rollups, errors, installation sketches)
in transactions of about 50,000 events, a day at a time as they would arrive,
each request being one installation's events of one day. Then a real
``ox-telemetry serve`` on the store answers ``GET /api/v1/installs`` (alone and
``by=version``) and ``GET /api/v1/stats`` for the last 28 days over HTTP:
the median of 5 of each. Figures go to bench/RESULTS.md (section "installs").
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import results  # noqa: E402
from ox_telemetry.collector.histogram import duration_bin  # noqa: E402
from ox_telemetry.collector.storage import WriteJob, open_storage  # noqa: E402
from ox_telemetry.collector.storage.schema import CLIENT_NAMES  # noqa: E402

DAY = 86400
COMMANDS = ("status", "init", "sync", "push", "pull", "login", "logs", "deploy", "config", "doctor", "open", "help")
PLATFORMS = (("linux", "amd64"), ("linux", "arm64"), ("darwin", "arm64"), ("darwin", "amd64"), ("windows", "amd64"))
VERSIONS = tuple(f"1.{minor}.0" for minor in range(8))
ERRORS = ("E_NETWORK", "E_AUTH", "E_CONFLICT", "E_TIMEOUT")
TRANSACTION = 50_000


def plan(installs: int, events: int, days: int, seed: int) -> list[list[tuple[int, int, int]]]:
    """Per day, the requests (installation, events, version index): each installation is active on a few days,
    and upgrades over the month (a new version every few days, adopted gradually)."""
    rng = random.Random(seed)
    per_day: list[list[tuple[int, int, int]]] = [[] for _ in range(days)]
    active = []
    for install in range(installs):
        for day in rng.sample(range(days), rng.randint(1, 5)):
            active.append((day, install))
    per_request = max(1, events // len(active))
    for day, install in active:
        newest = min(len(VERSIONS) - 1, day * len(VERSIONS) // days)
        version = max(0, newest - (install % 3))  # a third each on the newest, one and two behind
        per_day[day].append((install, per_request, version))
    return per_day


def rows_of(install: int, n: int, version: str, day_start: int, rng: random.Random) -> list[tuple[object, ...]]:
    system, arch = PLATFORMS[install % len(PLATFORMS)]
    start = day_start + rng.randrange(DAY - 3600)
    out = []
    for i in range(n):
        at = (start + i * 7) * 1_000_000
        command = COMMANDS[rng.randrange(len(COMMANDS))]
        failed = rng.random() < 0.04
        duration = 20 + rng.randrange(3000)
        row = {
            "event_id": uuid.UUID(int=rng.getrandbits(128), version=4).hex, "client_time": at,
            "type": "command_error" if failed else "command_complete", "event_time": at, "received_at": at + 2_000_000,
            "time_flag": None, "session_id": f"s-{install}", "agent_id": "", "command": command,
            "duration_ms": duration, "success": not failed, "error_code": ERRORS[install % 4] if failed else "",
            "metadata": None, "repo_id": "repo_bench", "api_endpoint": "", "path": "", "agent_type": "claude-code",
            "model": "", "oxsid": "", "prime_call_count": 0, "coworker_name": "", "coworker_model": "",
            "cli_version": version, "os": system, "arch": arch, "duration_bin": duration_bin(duration),
        }
        out.append(tuple(row[name] for name in CLIENT_NAMES))
    return out


def seed_store(url: str, installs: int, events: int, days: int, seed: int) -> tuple[int, float]:
    """Write the plan into the store at ``url``; (events written, seconds)."""
    storage = open_storage(url)
    rng = random.Random(seed + 1)
    now = int(time.time()) // 60 * 60
    first_day = (now - days * DAY) // DAY * DAY
    written = 0
    started = time.perf_counter()
    try:
        for day, requests in enumerate(plan(installs, events, days, seed)):
            jobs: list[WriteJob] = []
            pending = 0
            for install, n, version in requests:
                client_id = str(uuid.UUID(int=install + 1, version=4))
                jobs.append(WriteJob.of(rows_of(install, n, VERSIONS[version], first_day + day * DAY, rng),
                                        client_id=client_id))
                pending += n
                if pending >= TRANSACTION:
                    written += sum(storage.write(jobs))
                    jobs, pending = [], 0
            if jobs:
                written += sum(storage.write(jobs))
            print(f"  day {day + 1}/{days}: {written:,} events, {time.perf_counter() - started:.0f} s", flush=True)
    finally:
        storage.close()
    return written, time.perf_counter() - started


def time_views(url: str) -> dict[str, float]:
    """Median milliseconds of 5 answers (after one warm-up) of each 28-day view, from a real ``serve``."""
    proc = subprocess.Popen([sys.executable, "-m", "ox_telemetry.cli", "serve", "--port", "0", "--db", url,
                             "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", proc.stdout.readline())
        assert found, "serve did not start"
        base = found.group(1)
        end = int(time.time() * 1000)
        span = f"from={end - 28 * DAY * 1000}&to={end}"
        out = {}
        for name, path in (("installs", f"/api/v1/installs?{span}"),
                           ("installs by=version", f"/api/v1/installs?{span}&by=version"),
                           ("stats", f"/api/v1/stats?{span}"),
                           ("errors", f"/api/v1/errors?{span}")):
            times = []
            for attempt in range(6):
                t0 = time.perf_counter()
                with urllib.request.urlopen(base + path, timeout=60) as reply:
                    body = reply.read()
                if attempt:
                    times.append((time.perf_counter() - t0) * 1000)
            out[name] = statistics.median(times)
            if name == "installs":
                print(f"  installs answer: {body[:120].decode()}...")
        out.update(time_page(base))
        return out
    finally:
        proc.terminate()
        proc.wait(30)


def time_page(base: str) -> dict[str, float]:
    """Median milliseconds of 5 loads of the whole dashboard in headless Chromium, from navigation until every
    panel is drawn (the page sets ``body[data-loaded]``); nothing when Chromium or Playwright is missing."""
    chromium = os.environ.get("OX_TEST_CHROMIUM") or shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {}
    if not chromium:
        return {}
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run"]
    out = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=flags)
        try:
            for name, query in (("dashboard page, last 24 hours", ""), ("dashboard page, last 30 days",
                                                                        "?range=2592000")):
                times = []
                for attempt in range(6):
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    t0 = time.perf_counter()
                    page.goto(base + "/" + query)
                    page.wait_for_selector("body[data-loaded]", timeout=60_000)
                    if attempt:
                        times.append((time.perf_counter() - t0) * 1000)
                    page.close()
                out[name] = statistics.median(times)
        finally:
            browser.close()
    return out


def run(label: str, url: str, args: argparse.Namespace) -> None:
    print(f"\n### {label}\n")
    written, seconds = seed_store(url, args.installs, args.events, args.days, args.seed)
    print(f"\nwrote {written:,} events from {args.installs:,} installations over {args.days} days in {seconds:.0f} s "
          f"({written / seconds:,.0f} events/s through Storage.write, sketches included)\n")
    print("| view (28 days over HTTP; the page: navigation until drawn) | median of 5 |\n|---|---|")
    for name, ms in time_views(url).items():
        print(f"| {name} | {ms:.1f} ms |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--installs", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--postgres", metavar="DSN", help="also PostgreSQL (a fresh schema, dropped after)")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="ox-installs-")
    with results.recorded("installs_postgresql" if args.skip_sqlite else "installs"):
        print(f"{args.events:,} events, {args.installs:,} installations, {args.days} days; work dir {tmp}")
        if not args.skip_sqlite:
            run("SQLite", f"sqlite://{tmp}/installs.sqlite3", args)
        if args.postgres:
            import psycopg

            schema = f"ox_bench_installs_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {schema}")  # type: ignore[call-overload]
            sep = "&" if "?" in args.postgres else "?"
            try:
                run("PostgreSQL", f"{args.postgres}{sep}options=-csearch_path%3D{schema}", args)
            finally:
                with psycopg.connect(args.postgres, autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA {schema} CASCADE")  # type: ignore[call-overload]


if __name__ == "__main__":
    main()
