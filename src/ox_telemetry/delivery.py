"""Delivering a CLI's queue file: its events in batches, through :mod:`ox_telemetry.sending`.

Used by the detached uploader process (:mod:`ox_telemetry.uploader`), by a
client's background thread when the host passed its own transport, by
``ox-telemetry flush`` and by the delivery daemon for queues handed to it
(:mod:`ox_telemetry.daemon.handoff`). One delivery run drains the queue (including events appended
while it sends), or gives up after a bounded time and writes down when the
next run may try, so that during an outage neither processes nor requests
pile up.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable

from . import _jsonlite, consent, files, identity, paths, sending, settings
from ._time import now
from .budget import RequestBudget
from .queue import JsonlQueue, Sender
from .scrub import scrub_parsed_line
from .transport import Transport
from .wire import Event, encode_batch, host_arch, host_os, version_suffix

log = logging.getLogger("ox_telemetry")

#: A batch carries at most this many events and bytes (before compression).
MAX_BATCH_EVENTS = 500
MAX_BATCH_BYTES = 512 * 1024


class Policy:
    """Timing of delivery runs.

    A test knob, not a setting: ``OX_TELEMETRY_UPLOAD_TUNING="timeout=2,budget=5"``
    overrides any attribute below, including the per-user request budget's
    ``rate_requests`` and ``rate_window`` (seconds, at most an hour).
    """

    __slots__ = ("base", "budget", "cap", "rate_requests", "rate_window", "run_base", "run_cap", "timeout")

    def __init__(
        self, timeout: float = 10.0, base: float = 1.0, cap: float = 30.0, budget: float = 120.0,
        run_base: float = 60.0, run_cap: float = 3600.0, rate_requests: float = 10, rate_window: float = 60.0,
    ) -> None:
        self.timeout = timeout  # one request
        self.base = base  # first retry delay ceiling within a run
        self.cap = cap  # largest retry delay within a run
        self.budget = budget  # a run gives up after this long
        self.run_base = run_base  # wait before the next run after one gave up, doubled per failure
        self.run_cap = run_cap
        # The user's requests to one endpoint while they fail, across every sender (see ox_telemetry.budget).
        self.rate_requests = rate_requests
        self.rate_window = rate_window

    @classmethod
    def from_env(cls) -> Policy:
        policy = cls()
        for key, value in settings.tuning("OX_TELEMETRY_UPLOAD_TUNING", cls.__slots__).items():
            setattr(policy, key, value)
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


class _Outcome:
    NOT_SENT = "not_sent"  # the user's consent forbids sending (off, or local mode): the queue is left alone
    DELIVERED = "delivered"
    REFUSED = "refused"  # a final 4xx: this batch will never be accepted
    GAVE_UP = "gave_up"
    STOPPED = "stopped"


def queued_line(raw: bytes) -> tuple[str, str | None] | None:
    """A queued line as it goes on the wire, and the version of the CLI that recorded it; None when malformed.

    The version (``None`` when the line carries none, see
    :func:`~ox_telemetry.wire.version_suffix`) is taken off the event: it
    travels as its batch's ``cli_version``. Scrubbing happens here, at send
    time, because the recording client may not load :mod:`re`; every queued
    event leaves the machine through this function.
    """
    try:
        text = raw.decode("utf-8")
        data = _jsonlite.loads(text)
        Event.from_dict(data)  # validation only: the line goes out as it was written
    except ValueError:
        return None
    version = data.pop("cli_version", None)
    if version is not None:
        suffix = version_suffix(version) if isinstance(version, str) else ""
        if suffix and text.endswith(suffix):
            text = text[: -len(suffix)] + "}"  # as the client wrote it: no need to encode it again
        else:
            text = json.dumps(data, separators=(",", ":"))
        if not isinstance(version, str):
            version = None
    if "\\ud" in text or "\\uD" in text:  # a surrogate escape: a lone one would make the collector refuse the batch
        text = Event.from_dict(data).to_json()  # the encoder replaces lone surrogates, as the client does
        data = _jsonlite.loads(text)
    return scrub_parsed_line(text, data), version


def wire_line(raw: bytes) -> str | None:
    """A queued line exactly as it is sent (see :func:`queued_line`); None when malformed."""
    parsed = queued_line(raw)
    return None if parsed is None else parsed[0]


def _batches(lines: list[tuple[int, bytes]], default_version: str) -> list[tuple[int, str, list[str]]]:
    """Valid claimed lines, scrubbed, in batches of one recording CLI version each: ``(end offset, version, lines)``.

    Lines without a version get ``default_version``. A batch's end offset
    covers the longest run of claimed lines sent by it or by an earlier batch
    (or malformed), so a run that gives up part-way leaves every unsent line queued.
    """
    texts: list[list[str]] = []  # per batch, in the order batches were opened
    versions: list[str] = []
    sizes: list[int] = []
    open_batch: dict[str, int] = {}  # version -> its batch still taking lines
    order: list[int] = []  # batches in send order: closed when full, the rest by their first line
    batch_of: list[int] = []  # per claimed line: its batch, -1 when malformed
    for _, raw in lines:
        parsed = queued_line(raw)
        if parsed is None:
            log.debug("skipping a malformed queue line")
            batch_of.append(-1)
            continue
        text, version = parsed
        version = default_version if version is None else version
        index = open_batch.get(version)
        if index is not None and (len(texts[index]) >= MAX_BATCH_EVENTS or sizes[index] + len(text) > MAX_BATCH_BYTES):
            order.append(index)
            index = None
        if index is None:
            index = open_batch[version] = len(texts)
            texts.append([])
            versions.append(version)
            sizes.append(0)
        texts[index].append(text)
        sizes[index] += len(text) + 1
        batch_of.append(index)
    order += sorted(open_batch.values())
    rank = {index: position for position, index in enumerate(order)}
    out: list[tuple[int, str, list[str]]] = []
    done = 0  # claimed lines before this one are sent (or malformed) once the current batch is
    for position, index in enumerate(order):
        while done < len(lines) and rank.get(batch_of[done], -1) <= position:
            done += 1
        out.append((lines[done - 1][0] if done else 0, versions[index], texts[index]))
    if not out and lines:
        out.append((lines[-1][0], default_version, []))  # only malformed lines: done with them
    return out


class Delivery:
    """One delivery run of one queue to one endpoint."""

    def __init__(
        self, queue: JsonlQueue, transport: Transport, url: str, cli_version: str = "",
        policy: Policy | None = None, wait: Callable[[float], bool] | None = None,
        on_batch: Callable[[int, str, str], None] | None = None, client_id: str | None = None,
    ) -> None:
        self.queue = queue
        self.client_id = client_id  # the anonymous installation id; read (or made) at the first send when None
        self.url = url
        self.cli_version = cli_version  # the batches' for lines that carry no version of their own
        self.policy = policy or Policy.from_env()
        self.endpoint = sending.Endpoint(
            transport, url, f"ox-telemetry/{cli_version or '0'}", self.policy.timeout,
            RequestBudget(url, int(self.policy.rate_requests), self.policy.rate_window),
        )
        # wait(seconds) sleeps and returns True when the run should stop now.
        self.wait = wait or sending.sleep
        # on_batch(events, outcome, last answer): a foreground flush reports each batch.
        self.on_batch = on_batch
        self.last_answer = ""  # the endpoint's last answer: "HTTP 200", "network: ConnectionRefusedError"
        self.state = UploadState(paths.upload_state_path(queue.path))  # read in run(), once this is the one sender

    @property
    def requests(self) -> int:
        """Requests made by this run so far."""
        return self.endpoint.requests

    def run(self, sender: Sender | None = None) -> str:
        """Drain the queue; returns ``delivered``, ``busy``, ``gave_up``, ``stopped`` or ``not_sent``.

        ``sender``: this queue's send lock, when the caller already holds it.
        Every sender of a CLI queue (uploader, client thread, ``flush``, the
        daemon's hand-off) runs this, so the user's consent is asked here, as
        late as can be: in local mode, or opted out, nothing leaves.
        """
        if not consent.decide().sends:
            if sender is not None:
                sender.close()
            return _Outcome.NOT_SENT
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
            for end, version, chunk in _batches(lines, self.cli_version):
                if chunk:
                    outcome = self._send(chunk, version, deadline)
                    if self.on_batch is not None:
                        self.on_batch(len(chunk), outcome, self.last_answer)
                    if outcome in (_Outcome.GAVE_UP, _Outcome.STOPPED):
                        return outcome
                sender.release(end)
        return _Outcome.DELIVERED

    def _send(self, chunk: list[str], cli_version: str, deadline: float) -> str:
        if self.client_id is None:
            self.client_id = identity.client_id()
        body = encode_batch(chunk, cli_version, host_os(), host_arch(), now(), self.client_id).encode("utf-8")
        self.endpoint.plain = self.url in self.state.plain
        backoff = sending.Backoff(self.policy.base, self.policy.cap)
        reply, stopped = sending.send_with_retries(self.endpoint, body, backoff, deadline, self.wait)
        if self.endpoint.plain and self.url not in self.state.plain:
            self.state.plain.append(self.url)  # remembered for this endpoint
        # Not sent (the user's other senders spent this endpoint's budget): the last answer still stands.
        self.last_answer = self.endpoint.last_answer or reply.error
        if stopped:
            return _Outcome.STOPPED
        if reply.kind == sending.DELIVERED:
            return _Outcome.DELIVERED
        if reply.kind == sending.REFUSED:
            log.warning("endpoint refused a batch of %d events with %d; dropped", len(chunk), reply.status)
            return _Outcome.REFUSED
        self.state.failed(self.last_answer, self.policy, reply.retry_after)
        self.state.save()
        return _Outcome.GAVE_UP
