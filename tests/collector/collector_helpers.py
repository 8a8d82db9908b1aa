"""Helpers for the collector tests: HTTP on loopback, in-process and subprocess collectors, events."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from loopback import wait_until
from ox_telemetry.collector.app import Collector, create_app
from ox_telemetry.collector.config import Config
from ox_telemetry.collector.storage import open_storage

# -- HTTP ---------------------------------------------------------------------------------------------------------


@dataclass
class Reply:
    """One HTTP answer."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 30.0, tls: bool = False) -> Reply:
    """A request on a fresh connection to 127.0.0.1:``port`` (HTTPS without verification with ``tls``); a POST's
    body is JSON unless ``headers`` say."""
    conn = (http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout,
                                        context=ssl._create_unverified_context()) if tls
            else http.client.HTTPConnection("127.0.0.1", port, timeout=timeout))
    if method == "POST":
        headers = {"Content-Type": "application/json", **(headers or {})}
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


class Server:
    """A collector served by uvicorn on a loopback port, in this process (its writer is a child process)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.storage = open_storage(config.db_url)
        self.collector = Collector(config, self.storage)
        sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(self.collector)
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        if not wait_until(lambda: self.server.started or not self.thread.is_alive(), 30):
            raise RuntimeError("collector did not start")
        if not self.server.started:
            raise RuntimeError("collector failed at startup")

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        return request(self.port, method, path, body, headers)

    def post(self, path: str, data: Any, headers: dict[str, str] | None = None) -> Reply:
        """POST ``data`` (bytes as they are, anything else as JSON)."""
        body = data if isinstance(data, bytes) else json.dumps(data).encode()
        return self.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})})

    def count(self, table: str = "events", where: str = "1 = 1", params: dict[str, Any] | None = None) -> int:
        return int(self.storage.query(f"SELECT count(*) FROM {table} WHERE {where}", params)[0][0])

    def writer_pid(self) -> int:
        proc = self.collector.writer._proc
        assert proc is not None
        return proc.pid

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


# -- events -------------------------------------------------------------------------------------------------------


def event(**fields: Any) -> dict[str, Any]:
    """A valid client event with a fresh id; ``fields`` override."""
    out: dict[str, Any] = {
        "type": "command_complete", "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "status", "duration_ms": 120, "success": True, "session_id": "sess-test",
        "event_id": str(uuid.uuid4()),
    }
    out.update(fields)
    return out


def batch(*events: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A Batch around ``events``, sent now."""
    out: dict[str, Any] = {"events": list(events), "cli_version": "0.5.1", "os": "linux", "arch": "amd64",
                           "batch_timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out.update(fields)
    return out


# -- the real command ---------------------------------------------------------------------------------------------


@dataclass
class Process:
    """An ``ox-telemetry serve`` subprocess."""

    proc: subprocess.Popen[str]
    url: str = ""
    port: int = 0
    output: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None  # reads ``output`` until the process and its writer close it

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        return request(self.port, method, path, body, headers, tls=self.url.startswith("https"))

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it: a clean shutdown, the writer process included."""
        self.proc.terminate()
        # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells why.
        assert self.proc.wait(30) in (0, -signal.SIGTERM)
        assert wait_until(lambda: not _group_alive(self.proc.pid), 10), "the writer process outlived the server"

    def kill_all(self) -> None:
        """SIGKILL the collector and its writer at once (they share a process group)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def start_process(*args: str, env: dict[str, str] | None = None, command: list[str] | None = None,
                  cwd: str | None = None) -> Process:
    """``ox-telemetry serve --port 0 ARGS`` in its own process group, once it answers /healthz (``command`` in
    place of ``python -m ox_telemetry.cli``)."""
    proc = subprocess.Popen(
        [*(command or [sys.executable, "-m", "ox_telemetry.cli"]), "serve", "--port", "0", "--log-level", "warning",
         *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, **(env or {})}, cwd=cwd,
        # Ctrl-C as in a terminal: a runner started in the background (``pytest &``) passes SIGINT on ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = re.search(r"listening on (https?://127\.0\.0\.1:(\d+))", line)
    if not found:
        rest = line + proc.stdout.read()
        proc.wait(10)
        raise RuntimeError(f"serve did not start (exit {proc.returncode}): {rest}")
    started = Process(proc, found.group(1), int(found.group(2)), [line])
    started.reader = threading.Thread(target=lambda: started.output.extend(proc.stdout or []), daemon=True)
    started.reader.start()

    def healthy() -> bool:
        try:
            return started.request("GET", "/healthz").status == 200
        except OSError:
            return False

    if not wait_until(healthy, 30):
        started.kill_all()
        raise RuntimeError("serve never became healthy: " + "".join(started.output))
    return started
