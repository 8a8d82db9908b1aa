"""The send path: take a queue's events, POST them in batches, retry politely.

Used by the detached uploader process, by a client's background thread when
the host passed its own transport, and by the delivery daemon for queues
handed to it. One delivery run drains the queue (including events appended
while it sends), or gives up after a bounded time and writes down when the
next run may try, so that during an outage neither processes nor requests
pile up.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable

from . import _jsonlite, files, paths, retry
from ._time import now
from .queue import JsonlQueue, Sender
from .scrub import scrub_parsed_line
from .transport import Transport, header, post_json
from .wire import Event, encode_batch, host_arch, host_os

log = logging.getLogger("ox_telemetry")

#: A batch carries at most this many events and bytes (before compression).
MAX_BATCH_EVENTS = 500
MAX_BATCH_BYTES = 512 * 1024


class Policy:
    """Timing of delivery runs. ``OX_TELEMETRY_UPLOAD_TUNING="timeout=2,budget=5"`` overrides (tests)."""

    __slots__ = ("base", "budget", "cap", "run_base", "run_cap", "timeout")

    def __init__(
        self, timeout: float = 10.0, base: float = 1.0, cap: float = 30.0, budget: float = 120.0,
        run_base: float = 60.0, run_cap: float = 3600.0,
    ) -> None:
        self.timeout = timeout  # one request
        self.base = base  # first retry delay ceiling within a run
        self.cap = cap  # largest retry delay within a run
        self.budget = budget  # a run gives up after this long
        self.run_base = run_base  # wait before the next run after one gave up, doubled per failure
        self.run_cap = run_cap

    @classmethod
    def from_env(cls) -> Policy:
        policy = cls()
        for item in os.environ.get("OX_TELEMETRY_UPLOAD_TUNING", "").split(","):
            key, _, value = item.partition("=")
            if key.strip() in cls.__slots__:
                try:
                    setattr(policy, key.strip(), float(value))
                except ValueError:
                    pass
        return policy


#: A state file is a few hundred bytes; anything larger is not ours.
STATE_MAX_BYTES = 64 * 1024


class UploadState:
    """What one run leaves for the next, in ``<queue>.state.json`` (garbage there reads as no state)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.failures = 0
        self.next_attempt = 0.0  # unix time before which no new run starts
        self.last_error = ""
        self.last_success = ""
        self.plain: list[str] = []  # endpoints that refused gzip (415)

    @classmethod
    def load(cls, queue: JsonlQueue) -> UploadState:
        state = cls(paths.upload_state_path(queue.path))
        try:
            data = json.loads(files.read(state.path, STATE_MAX_BYTES))
            failures = int(data.get("failures", 0))
            next_attempt = float(data.get("next_attempt", 0))
            last_error = str(data.get("last_error", ""))
            last_success = str(data.get("last_success", ""))
            plain = [str(u) for u in data.get("plain", [])]
        except (OSError, ValueError, TypeError, AttributeError, RecursionError, OverflowError):
            return state  # all or nothing: half a garbage file is still garbage
        state.failures, state.next_attempt, state.last_error = failures, next_attempt, last_error
        state.last_success, state.plain = last_success, plain
        return state

    def save(self) -> None:
        data = {
            "failures": self.failures, "next_attempt": self.next_attempt,
            "last_error": self.last_error, "last_success": self.last_success, "plain": self.plain,
        }
        try:
            files.write_atomic(self.path, json.dumps(data).encode("utf-8"), sync=False)
        except OSError as exc:
            log.debug("could not save upload state: %s", exc)

    def succeeded(self) -> None:
        self.failures = 0
        self.next_attempt = 0.0
        self.last_success = now().isoformat()

    def failed(self, error: str, policy: Policy, retry_after: float | None) -> None:
        self.failures += 1
        self.last_error = error
        wait = min(policy.run_cap, policy.run_base * 2 ** min(self.failures - 1, 30))
        wait = wait / 2 + random.uniform(0, wait / 2)  # spread clients out, keep a floor
        self.next_attempt = time.time() + max(wait, retry_after or 0.0)


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


class _Outcome:
    DELIVERED = "delivered"
    REFUSED = "refused"  # a final 4xx: this batch will never be accepted
    GAVE_UP = "gave_up"
    STOPPED = "stopped"


def wire_line(raw: bytes) -> str | None:
    """A queued line as it goes on the wire: validated and scrubbed; None when malformed.

    Scrubbing happens here, at send time, because the recording client may not
    load :mod:`re`; every queued event leaves the machine through this function
    (and ``ox-telemetry show`` uses it to print exactly what would be sent).
    """
    try:
        text = raw.decode("utf-8")
        data = _jsonlite.loads(text)
        Event.from_dict(data)  # validation only: the line goes out as it was written
    except ValueError:
        return None
    return scrub_parsed_line(text, data)


def _chunks(lines: list[tuple[int, bytes]]) -> list[tuple[int, list[str]]]:
    """Valid event lines, scrubbed, grouped into batches: ``(end offset, lines)``."""
    out: list[tuple[int, list[str]]] = []
    current: list[str] = []
    size = 0
    end = 0
    for offset, raw in lines:
        text = wire_line(raw)
        if text is None:
            log.debug("skipping a malformed queue line")
            end = offset
            continue
        if current and (len(current) >= MAX_BATCH_EVENTS or size + len(text) > MAX_BATCH_BYTES):
            out.append((end, current))
            current, size = [], 0
        current.append(text)
        size += len(text) + 1
        end = offset
    if current or end:
        out.append((end, current))
    return out


class Delivery:
    """One delivery run of one queue to one endpoint."""

    def __init__(
        self, queue: JsonlQueue, transport: Transport, url: str, cli_version: str = "",
        policy: Policy | None = None, wait: Callable[[float], bool] | None = None,
        on_batch: Callable[[int, str, str], None] | None = None,
    ) -> None:
        self.queue = queue
        self.transport = transport
        self.url = url
        self.cli_version = cli_version
        self.policy = policy or Policy.from_env()
        # wait(seconds) sleeps and returns True when the run should stop now.
        self.wait = wait or _sleep
        # on_batch(events, outcome, last answer): a foreground flush reports each batch.
        self.on_batch = on_batch
        self.last_answer = ""  # the endpoint's last answer: "HTTP 200", "network: ConnectionRefusedError"
        self.requests = 0
        self.state = UploadState.load(queue)

    def run(self, sender: Sender | None = None) -> str:
        """Drain the queue; returns ``delivered``, ``busy``, ``gave_up`` or ``stopped``.

        ``sender``: this queue's send lock, when the caller already holds it.
        """
        sender = sender or self.queue.sender()
        if sender is None:
            return "busy"
        with sender:
            self.state = UploadState.load(self.queue)  # fresh, now that we are the one sender
            outcome = self._drain(sender, time.monotonic() + self.policy.budget)
        return outcome

    def _drain(self, sender: Sender, deadline: float) -> str:
        for _ in range(100):  # appends during the send are picked up, within reason
            lines = sender.claim()
            if not lines:
                self.state.succeeded()
                self.state.save()
                return _Outcome.DELIVERED
            for end, chunk in _chunks(lines):
                if chunk:
                    outcome = self._send(chunk, deadline)
                    if self.on_batch is not None:
                        self.on_batch(len(chunk), outcome, self.last_answer)
                    if outcome in (_Outcome.GAVE_UP, _Outcome.STOPPED):
                        return outcome
                sender.release(end)
        return _Outcome.DELIVERED

    def _send(self, chunk: list[str], deadline: float) -> str:
        body = encode_batch(chunk, self.cli_version, host_os(), host_arch(), now()).encode("utf-8")
        attempt = 0
        while True:
            compress = self.url not in self.state.plain
            status, retry_after = self._post(body, compress)
            if status is not None and retry.is_success(status):
                return _Outcome.DELIVERED
            if status == 415 and compress:
                self.state.plain.append(self.url)  # remembered for this endpoint
                continue
            if status is not None and not retry.is_retryable(status):
                log.warning("endpoint refused a batch of %d events with %d; dropped", len(chunk), status)
                return _Outcome.REFUSED
            delay = retry.backoff_delay(attempt, self.policy.base, self.policy.cap, retry_after)
            if time.monotonic() + delay > deadline:
                self.state.failed(self.last_answer, self.policy, retry_after)
                self.state.save()
                return _Outcome.GAVE_UP
            if self.wait(delay):
                return _Outcome.STOPPED
            attempt += 1

    def _post(self, body: bytes, compress: bool) -> tuple[int | None, float | None]:
        """``(status, Retry-After)`` of one POST, ``(None, None)`` on a network error; sets ``last_answer``."""
        self.requests += 1
        try:
            response = post_json(self.transport, self.url, body, f"ox-telemetry/{self.cli_version or '0'}",
                                 self.policy.timeout, compress)
            status = int(response.status)
        except Exception as exc:  # OSError is the network; anything else is a broken transport
            log.debug("telemetry POST to %s failed: %r", self.url, exc)
            self.last_answer = f"network: {exc.__class__.__name__}"
            return None, None
        self.last_answer = f"HTTP {status}"
        return status, retry.parse_retry_after(header(response, "Retry-After"))
