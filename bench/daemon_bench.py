"""Daemon benchmark: what ``send_to_daemon`` costs a CLI, how fast the daemon takes events in, its memory.

Run by hand (figures go in docs/daemon.md):

    python bench/daemon_bench.py [--calls 3000] [--per-sender 50000]

Starts a real daemon (``ox-telemetry daemon run``) in a scratch HOME, sending
to a minimal loopback endpoint that answers 200, then prints one table:

1. ``send_to_daemon`` per call (connect, one line, close) beside the floor:
   a bare ``_socket`` connect + send of the same bytes + close to the same
   socket, interleaved in blocks in the same run; median, p99 and ratio;
2. intake: 8 sender processes, one connection each, writing events as fast
   as they can, each ending with a ``ping`` whose answer means all its lines
   are spooled; events/s over the whole run (no baseline: the floor is the
   kernel);
3. the daemon's resident memory (``VmRSS``) and peak (``VmHWM``) afterwards.
"""

from __future__ import annotations

import _socket
import argparse
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import results  # noqa: E402

SENDERS = 8


class _Sink(BaseHTTPRequestHandler):
    """Reads a request body and answers 200: the cheapest endpoint there is."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _request(path: str, message: dict[str, Any]) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(path)
        sock.sendall(json.dumps(message).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    answer: dict[str, Any] = json.loads(data)
    return answer


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_send_to_daemon(path: str, calls: int) -> tuple[list[float], list[float]]:
    """Per-call µs of ``Client.send_to_daemon`` and of a bare ``_socket`` connect+send, interleaved."""
    from ox_telemetry import Client

    client = Client("bench", enabled=True, version="1.0.0")
    props = {"duration_ms": 1200, "ok": True}
    line = json.dumps({"type": "telemetry", "payload": {"event": "sync:complete", "props": {
        **props, "app_type": "ox", "app_version": "1.0.0"}}}, separators=(",", ":")).encode() + b"\n"
    ours: list[float] = []
    floor: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(calls // 100):
        for _ in range(100):
            start = clock()
            client.send_to_daemon("sync:complete", props)
            ours.append((clock() - start) / 1000)
        for _ in range(100):
            start = clock()
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            sock.settimeout(0.0)
            sock.connect(path)
            sock.send(line)
            sock.close()
            floor.append((clock() - start) / 1000)
        time.sleep(0.02)  # let the daemon drain its accept queue between blocks
    return ours, floor


def _sender(path: str, count: int, index: int, barrier: Any, out: Any) -> None:
    line = json.dumps({"type": "telemetry", "payload": {"event": "bench:event", "props": {
        "app_type": "ox", "app_version": "1.0.0", "sender": index, "duration_ms": 1200, "ok": True}}},
        separators=(",", ":")).encode() + b"\n"
    per_chunk = max(1, 65536 // len(line))
    chunk = line * per_chunk
    chunks, rest = divmod(count, per_chunk)
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    barrier.wait()
    start = time.perf_counter()
    for _ in range(chunks):
        sock.sendall(chunk)
    sock.sendall(line * rest + b'{"type":"ping"}\n')
    data = b""
    while not data.endswith(b"\n"):
        data += sock.recv(4096)
    out.put((start, time.perf_counter()))
    sock.close()


def bench_intake(path: str, per_sender: int) -> float:
    """Events/s taken in from 8 concurrent sender processes (first write to last sender's answered ping)."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(SENDERS)
    out = ctx.Queue()
    procs = [ctx.Process(target=_sender, args=(path, per_sender, i, barrier, out)) for i in range(SENDERS)]
    for proc in procs:
        proc.start()
    times = [out.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join(30)
    elapsed = max(end for _, end in times) - min(start for start, _ in times)
    return SENDERS * per_sender / elapsed


def _memory(pid: int) -> dict[str, int]:
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for row in f:
            key, _, value = row.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(value.split()[0])  # kB
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000, help="send_to_daemon calls (and as many floor calls)")
    parser.add_argument("--per-sender", type=int, default=50_000, help="events each of the 8 senders writes")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="oxdb-"))
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    sink.daemon_threads = True
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    sock_path = str(scratch / "run" / "telemetry.sock")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OX_", "SAGEOX_", "XDG_"))}
    env.update(HOME=str(scratch / "home"), OX_TELEMETRY_SOCKET=sock_path,
               SAGEOX_TELEMETRY_ENDPOINT=f"http://127.0.0.1:{sink.server_port}/tevents")
    os.environ.update(env)  # send_to_daemon in this process finds the same socket
    for key in [k for k in os.environ if k.startswith(("DO_NOT_TRACK", "SAGEOX_TELEMETRY="))]:
        del os.environ[key]
    env["PYTHONPATH"] = str(ROOT / "src")
    with open(scratch / "daemon.log", "wb") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "ox_telemetry.cli", "daemon", "run"], env=env, stderr=log)
    try:
        deadline = time.monotonic() + 15
        while not os.path.exists(sock_path):
            if time.monotonic() > deadline or daemon.poll() is not None:
                print((scratch / "daemon.log").read_text(), file=sys.stderr)
                return 1
            time.sleep(0.02)
        idle = _memory(daemon.pid)
        ours, floor = bench_send_to_daemon(sock_path, args.calls)
        rate = bench_intake(sock_path, args.per_sender)
        after = _memory(daemon.pid)
        status = _request(sock_path, {"type": "status"})["data"]
    finally:
        daemon.terminate()
        daemon.wait(30)
        sink.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)

    with results.recorded("daemon"):
        _report(args, ours, floor, rate, idle, after, status)
    return 0


def _report(args: argparse.Namespace, ours: list[float], floor: list[float], rate: float,
            idle: dict[str, int], after: dict[str, int], status: dict[str, Any]) -> None:
    p50, p99 = statistics.median(ours), _percentile(ours, 0.99)
    f50, f99 = statistics.median(floor), _percentile(floor, 0.99)
    print(f"daemon benchmark, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}\n")
    print("| measure | median | p99 | baseline median / p99 | ratio (median) |")
    print("|---|---|---|---|---|")
    print(f"| `send_to_daemon` per call ({len(ours)} calls) | {p50:.1f} µs | {p99:.1f} µs "
          f"| {f50:.1f} / {f99:.1f} µs (bare `_socket` connect+send) | {p50 / f50:.2f}x |")
    print(f"| intake, {SENDERS} senders x {args.per_sender} events | {rate:,.0f} events/s | | | |")
    print(f"| daemon RSS idle / after intake / peak | {idle['VmRSS'] / 1024:.1f} MB "
          f"| {after['VmRSS'] / 1024:.1f} MB | peak {after['VmHWM'] / 1024:.1f} MB | |")
    print(f"\nstatus after the run: received {status['received']}, delivered {status['delivered']}, "
          f"spooled {status['spooled']}, dropped {status['dropped']}, requests {status['requests']}")


if __name__ == "__main__":
    sys.exit(main())
