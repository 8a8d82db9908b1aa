"""``ox-telemetry daemon start|stop|status|run``.

Exit codes: 0 success; 1 failure; 3 ``status`` of a daemon that is not
running (as LSB init scripts do).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from .. import __version__, ipc, paths, settings
from ..transport import UrllibTransport
from . import lifecycle
from .settings import Settings

if TYPE_CHECKING:
    from ..otlp import Exporter

log = logging.getLogger("ox_telemetry.daemon")
START_TIMEOUT = 10.0
STOP_TIMEOUT = 15.0


def main(argv: list[str]) -> int:
    """Run one daemon subcommand; returns the exit code."""
    parser = argparse.ArgumentParser(prog="ox-telemetry daemon", description="the per-user delivery daemon")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("start", help="start in the background; returns once it answers")
    commands.add_parser("stop", help="stop the running daemon (it sends what it can first)")
    status = commands.add_parser("status", help="counters and settings of the running daemon")
    status.add_argument("--json", action="store_true", help="print the status as one JSON object")
    run = commands.add_parser("run", help="run in the foreground, logging to stderr")
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            return start()
        if args.command == "stop":
            return stop()
        if args.command == "status":
            return show_status(args.json)
        return run_foreground(args.verbose or settings.debug())
    except lifecycle.LifecycleError as exc:
        print(f"ox-telemetry daemon: {exc}", file=sys.stderr)
        return 1


def start() -> int:
    """Start a detached daemon unless one runs; returns once it answers ``ping``."""
    running = lifecycle.ping()
    if running is not None:
        print(f"daemon already running (pid {running.get('pid')}, socket {paths.daemon_socket_path()})")
        return 0
    lifecycle.check_socket_dir(os.path.dirname(paths.daemon_socket_path()))  # fail here, not in the log
    child = lifecycle.spawn()
    answered = lifecycle.wait_until(lambda: child.poll() is not None or lifecycle.ping(0.5) is not None,
                                    START_TIMEOUT)
    data = lifecycle.ping(0.5)
    if data is not None:
        if child.poll() is not None and data.get("pid") != child.pid:
            print(f"daemon already running (pid {data.get('pid')}, socket {paths.daemon_socket_path()})")
        else:
            print(f"daemon started (pid {data.get('pid')}, socket {paths.daemon_socket_path()})")
        return 0
    reason = f"exited with status {child.returncode}" if answered else f"did not answer within {START_TIMEOUT:.0f} s"
    print(f"ox-telemetry daemon: failed to start: {reason}; see {paths.daemon_log_path()}", file=sys.stderr)
    return 1


def stop() -> int:
    """Ask the daemon to stop and wait until it has exited."""
    answer = ipc.request({"type": "stop"}, timeout=2.0)
    if not (answer and answer.get("success")):
        pid = lifecycle.read_pid()
        if pid is None or not lifecycle.pid_file_locked():
            print("daemon not running")
            return 0
        os.kill(pid, signal.SIGTERM)  # alive but not answering on the socket
    if not lifecycle.wait_until(lambda: not lifecycle.pid_file_locked(), STOP_TIMEOUT, 0.05):
        print(f"ox-telemetry daemon: still running after {STOP_TIMEOUT:.0f} s", file=sys.stderr)
        return 1
    print("daemon stopped")
    return 0


def show_status(as_json: bool) -> int:
    """Print the running daemon's status; exit code 3 when none runs."""
    answer = ipc.request({"type": "status"}, timeout=2.0)
    data: Any = answer.get("data") if answer and answer.get("success") else None
    if not isinstance(data, dict):
        problem = ipc.socket_problem()  # a squatted socket path looks like no daemon: say so
        if as_json:
            print(json.dumps({"running": False, **({"socket_problem": problem} if problem else {})}))
        else:
            print("daemon not running" + (f" ({problem})" if problem else ""))
        return 3
    if as_json:
        print(json.dumps({"running": True, **data}, sort_keys=True))
        return 0
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(data.get("dropped", {}).items())) or "none"
    rows = [
        ("pid", data.get("pid")), ("uptime", f"{data.get('uptime_s', 0):.0f} s"), ("socket", data.get("socket")),
        ("endpoint", data.get("endpoint")), ("send interval", f"{data.get('interval_s')} s"),
        ("received", data.get("received")), ("delivered", data.get("delivered")),
        ("spooled", data.get("spooled")), ("dropped", dropped),
        ("last error", data.get("last_error") or "none"), ("last success", data.get("last_success") or "never"),
        ("client id", data.get("client_id")), ("version", data.get("version")),
    ]
    for name, value in rows:
        print(f"{name + ':':<15}{value}")
    return 0


def otlp_exporter(tuning: Settings) -> Exporter | None:
    """The OpenTelemetry exporter ``$SAGEOX_TELEMETRY_OTLP_ENDPOINT`` asks for (None without it); it sends only
    while the user's consent holds, asked before every batch."""
    url = settings.daemon_otlp_endpoint()
    if not url:
        return None
    from .. import consent, otlp

    return otlp.Exporter(url, timeout=tuning.timeout, base=tuning.base, cap=tuning.cap,
                         user_agent=f"ox-telemetry-daemon/{__version__}", allowed=lambda: consent.decide().enabled)


def run_foreground(verbose: bool) -> int:
    """``run``: serve in this process until stopped, logging to stderr."""
    from ..identity import client_id
    from .server import Daemon
    from .spool import Spool
    from .spool_sender import SpoolSender

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
        format="%(asctime)s ox-telemetry-daemon[%(process)d] %(levelname)s %(message)s",
    )
    tuning = Settings.from_env()
    socket_path = paths.daemon_socket_path()
    lifecycle.check_socket_dir(os.path.dirname(socket_path))
    pid_file = lifecycle.PidFile(paths.daemon_pid_path())
    try:
        pid_file.acquire()
    except lifecycle.AlreadyRunning as exc:
        print(f"ox-telemetry daemon: {exc}", file=sys.stderr)
        return 1
    try:
        sock, inode = lifecycle.bind_socket(socket_path)
    except BaseException:
        pid_file.release()
        raise
    spool = Spool(paths.daemon_spool_dir(), tuning.spool_bytes, tuning.segment_bytes)
    try:
        spool.open()
        sender = SpoolSender(spool, UrllibTransport(), settings.daemon_endpoint(), client_id(), tuning)
        daemon = Daemon(socket_path, sender, otlp_exporter(tuning))
        asyncio.run(daemon.serve(sock))
    finally:
        lifecycle.remove_socket(socket_path, inode)
        sock.close()
        spool.close()
        pid_file.release()
    log.info("stopped")
    return 0

