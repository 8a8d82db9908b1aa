"""A real HTTP endpoint on 127.0.0.1 whose behaviour a test switches at will.

It records every request (path, headers, decoded body, when it arrived and how
it was answered) and, for 2xx answers, the events it accepted, so tests assert
on what actually crossed the wire, and at what rate.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Request:
    """One request as the endpoint saw it."""

    def __init__(self, path: str, headers: dict[str, str], raw: bytes, status: int,
                 answer_headers: dict[str, str] | None = None, hung: bool = False) -> None:
        self.path = path
        self.headers = headers
        self.raw = raw
        self.status = status
        self.answer_headers = answer_headers or {}  # the extra headers it was answered with
        self.hung = hung  # never answered
        self.at = time.monotonic()  # arrival
        try:
            body = gzip.decompress(raw) if headers.get("content-encoding") == "gzip" else raw
            self.body: Any = json.loads(body) if body else None
        except ValueError:  # other libraries' formats, in the benchmark
            self.body = None


def wait_until(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes: the tests' one way to wait, never a bare sleep."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class Endpoint:
    """Answers POSTs as told: ``status``, extra ``headers``, a ``delay``, or ``hang`` until closed."""

    def __init__(self, port: int = 0) -> None:
        self.status = 200
        self.headers: dict[str, str] = {}
        self.reply = b'{"ok":true}'
        self.delay = 0.0
        self.hang = False
        self.reject_gzip = False
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, extra, reply, hang = endpoint.status, dict(endpoint.headers), endpoint.reply, endpoint.hang
                if endpoint.reject_gzip and headers.get("content-encoding") == "gzip":
                    status = 415
                with endpoint._lock:
                    endpoint.requests.append(Request(self.path, headers, raw, status, extra, hang))
                if hang:
                    endpoint._closing.wait()
                    return
                if endpoint.delay:
                    endpoint._closing.wait(endpoint.delay)
                try:
                    self.send_response(status)
                    for key, value in extra.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except OSError:
                    pass  # the client gave up waiting (timeouts are part of the tests)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def accepted_events(self) -> list[dict[str, Any]]:
        """Events of every request answered 2xx, in arrival order."""
        with self._lock:
            accepted = (r for r in self.requests if 200 <= r.status < 300 and isinstance(r.body, dict))
            return [e for r in accepted for e in r.body.get("events", [])]

    def event_ids(self) -> list[str]:
        return [e["event_id"] for e in self.accepted_events()]

    def close(self) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()


def refusing_url() -> str:
    """A loopback URL where nothing listens: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
