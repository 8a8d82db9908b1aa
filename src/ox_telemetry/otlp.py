"""OpenTelemetry export: events as OTLP log records, sent over OTLP/HTTP with the JSON encoding.

Used by the collector (``ox-telemetry serve --otlp-endpoint URL``: every stored
event) and by the daemon (``$SAGEOX_TELEMETRY_OTLP_ENDPOINT``: every event it
receives), so any OpenTelemetry backend can take the events. Standard library
only, because the daemon uses it; the mapping of fields to attributes is
documented in docs/collector.md ("OpenTelemetry export").

The producer never waits: :meth:`Exporter.offer` puts a recipe for the records
(a callable, so the records are built on the exporter's thread, and not at all
when the buffer is full) into a bounded buffer and returns. One background
thread takes batches from it and POSTs each ``ExportLogsServiceRequest``
through :mod:`ox_telemetry.sending` (gzip, 415, ``Retry-After``), under the
OTLP rules: 429, 502, 503 and 504 (and no answer at all) are retried with
backoff, any other status drops the batch. What is dropped (buffer full,
refused, retries spent, left at close) is counted, never raised.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import __version__, sending
from .fields import FIELDS, INT64
from .transport import Transport, UrllibTransport

log = logging.getLogger("ox_telemetry")

#: ``service.name`` of the exported resource unless told otherwise.
DEFAULT_SERVICE_NAME = "ox-cli"
#: The statuses OTLP/HTTP says to retry; every other status drops the batch.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
#: Event fields with an OpenTelemetry semantic-convention name; the others become ``ox.<field>``.
SEMANTIC_NAMES = {"session_id": "session.id", "cli_version": "service.version", "os": "os.type", "arch": "host.arch"}
# Not attributes of their own: the type is the body and event.name, the time is timeUnixNano.
_NOT_ATTRIBUTES = ("type", "timestamp", "metadata")
_SCOPE = json.dumps({"name": "ox-telemetry", "version": __version__}, separators=(",", ":"))
# JSON string literal of a str, in C; ensure_ascii is left to the body's UTF-8 encoding.
_quote: Callable[[str], str] = json.encoder.encode_basestring

#: A log record, as the JSON text of an OTLP ``LogRecord``: built as text, as per-attribute objects cost several
#: times more (a stored event's record took about 40 µs as objects and ``json.dumps``).
Record = str
#: What :meth:`Exporter.offer` takes: how many events, and how to make their log records.
Recipe = Callable[[], Iterable[Record]]


# -- the mapping ------------------------------------------------------------------------------------------------


def any_value(value: object) -> str:
    """An OTLP ``AnyValue`` in the JSON encoding: int64 as a decimal string, anything nested as a JSON string."""
    if isinstance(value, str):
        return '{"stringValue":' + _quote(value) + "}"
    if isinstance(value, bool):
        return '{"boolValue":true}' if value else '{"boolValue":false}'
    if isinstance(value, int) and INT64[0] <= value <= INT64[1]:
        return '{"intValue":"' + str(value) + '"}'
    if isinstance(value, float) and math.isfinite(value):
        return '{"doubleValue":' + repr(value) + "}"
    if isinstance(value, (int, float)):
        return '{"stringValue":"' + repr(value) + '"}'
    return '{"stringValue":' + _quote(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)) + "}"


def _key(name: str) -> str:
    """The start of an attribute named ``name``, up to its value."""
    return '{"key":' + _quote(name) + ',"value":'


def _attribute(key: str, value: object) -> str:
    return _key(key) + any_value(value) + "}"


def _mapping(value: object) -> Mapping[str, Any]:
    """A stored JSON object (metadata, props): as stored (text) or already decoded; {} for anything else."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, Mapping) else {}


def log_record(name: str, attributes: list[str], time_us: int | None, observed_us: int) -> Record:
    """One OTLP ``LogRecord``: ``name`` as the body and ``event.name``; times in microseconds (None: unknown)."""
    quoted = _quote(name)
    head = "{" if time_us is None else '{"timeUnixNano":"' + str(time_us * 1000) + '",'
    return (head + '"observedTimeUnixNano":"' + str(observed_us * 1000) + '","body":{"stringValue":' + quoted
            + '},"attributes":[' + _EVENT_NAME + '{"stringValue":' + quoted + "}}"
            + "".join("," + a for a in attributes) + "]}")


_EVENT_NAME = _key("event.name")
# (column, written even when empty, the attribute's start) for each fields.py field that is an attribute as it is.
_CLIENT_FIELDS = [(f.column, f.always, _key(SEMANTIC_NAMES.get(f.name, "ox." + f.name)))
                  for f in FIELDS if f.name not in _NOT_ATTRIBUTES]
_CLIENT_FIELDS += [(name, False, _key(SEMANTIC_NAMES[name])) for name in ("cli_version", "os", "arch")]
_CLIENT_FIELDS.append(("time_flag", False, _key("ox.time_flag")))


def client_record(row: Mapping[str, Any]) -> Record:
    """The log record of a stored client event, ``row`` keyed by its column names (collector/storage/schema.py).

    Every field of fields.py that is set (or always written) is an attribute, by
    its semantic-convention name or as ``ox.<field>``; metadata as ``ox.metadata.<key>``.
    """
    attributes = [key + any_value(value) + "}" for column, always, key in _CLIENT_FIELDS
                  if (value := row.get(column)) is not None and (always or value)]
    metadata = row.get("metadata")
    if metadata:
        attributes += [_attribute(f"ox.metadata.{key}", value) for key, value in _mapping(metadata).items()]
    time_us = None if row.get("time_flag") == "missing" else row.get("event_time")
    return log_record(str(row.get("type", "")), attributes, time_us, int(row.get("received_at") or 0))


def daemon_record(event: str, props: object, *, uuid: str | None, client_id: str | None, tslocal: str | None,
                  time_us: int | None, observed_us: int) -> Record:
    """The log record of a daemon event: props as ``ox.props.<key>`` (nested values as JSON strings)."""
    attributes = [_attribute(f"ox.props.{key}", value) for key, value in _mapping(props).items()]
    for key, value in (("ox.uuid", uuid), ("ox.client_id", client_id), ("ox.tslocal", tslocal)):
        if value:
            attributes.append(_attribute(key, value))
    return log_record(event, attributes, time_us, observed_us)


def request_body(records: list[Record], service_name: str) -> bytes:
    """An ``ExportLogsServiceRequest`` in the OTLP JSON encoding, as UTF-8 (a lone surrogate becomes ``?``)."""
    return ('{"resourceLogs":[{"resource":{"attributes":[' + _attribute("service.name", service_name)
            + ']},"scopeLogs":[{"scope":' + _SCOPE + ',"logRecords":[' + ",".join(records) + "]}]}]}"
            ).encode("utf-8", "replace")


# -- delivery -----------------------------------------------------------------------------------------------------


class Exporter:
    """A bounded buffer of events to export and the thread that sends them; see the module's docstring.

    ``allowed``, when given, is asked before each batch is sent: False drops it
    (the daemon's consent). Counters: ``exported``, ``dropped``, ``retries``.
    """

    def __init__(
        self, url: str, headers: Mapping[str, str] | None = None, service_name: str = DEFAULT_SERVICE_NAME, *,
        transport: Transport | None = None, max_events: int = 50_000, batch: int = 512, timeout: float = 10.0,
        base: float = 0.5, cap: float = 30.0, retry_for: float = 120.0, user_agent: str = "",
        allowed: Callable[[], bool] | None = None,
    ) -> None:
        self.url = url
        self.service_name = service_name
        self.endpoint = sending.Endpoint(transport or UrllibTransport(), url,
                                         user_agent or f"ox-telemetry-otlp/{__version__}", timeout,
                                         headers=dict(headers or {}))
        self.max_events = max_events
        self.batch = batch
        self.base, self.cap, self.retry_for = base, cap, retry_for
        self.allowed = allowed
        self.exported = 0
        self.dropped = 0
        self.retries = 0
        self._queue: deque[tuple[int, Recipe]] = deque()
        self._queued = 0  # events in _queue
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the sending thread (a daemon thread: it never holds up the process's exit)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ox-telemetry-otlp", daemon=True)
            self._thread.start()

    @property
    def queued(self) -> int:
        """Events waiting in the buffer."""
        return self._queued

    def offer(self, count: int, recipe: Recipe) -> bool:
        """Buffer ``count`` events whose records ``recipe`` makes, at once; False (counted) when the buffer is full."""
        with self._lock:
            if self._stop.is_set() or self._queued + count > self.max_events:
                self.dropped += count  # under the lock: both threads count
                return False
            self._queue.append((count, recipe))
            self._queued += count
            self._lock.notify()
        return True

    def close(self, grace: float = 2.0) -> None:
        """Send what is buffered for up to ``grace`` seconds, then stop; what is left is counted as dropped."""
        with self._lock:
            self._stop.set()
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(grace)
        with self._lock:
            self.dropped += self._queued
            self._queue.clear()
            self._queued = 0

    def counters(self) -> dict[str, int]:
        """``exported``, ``dropped``, ``retries``, and the events ``queued``."""
        return {"exported": self.exported, "dropped": self.dropped, "retries": self.retries, "queued": self._queued}

    def _count(self, name: str, events: int) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + events)

    def _take(self) -> list[Recipe]:
        """Recipes for about one batch of events; [] once stopped and empty."""
        with self._lock:
            while not self._queue and not self._stop.is_set():
                self._lock.wait()
            taken: list[Recipe] = []
            events = 0
            while self._queue and events < self.batch:
                count, recipe = self._queue.popleft()
                self._queued -= count
                events += count
                taken.append(recipe)
            return taken

    def _run(self) -> None:
        while True:
            recipes = self._take()
            if not recipes:
                return
            records: list[Record] = []
            for recipe in recipes:
                try:
                    records.extend(recipe())
                except Exception as exc:  # one bad event set costs only itself
                    log.debug("could not build OTLP records: %r", exc)
            for start in range(0, len(records), self.batch):
                try:
                    self._send(records[start:start + self.batch])
                except Exception as exc:  # the thread outlives any one batch
                    log.debug("OTLP export failed: %r", exc)

    def _send(self, records: list[Record]) -> None:
        if self.allowed is not None and not self.allowed():
            self._count("dropped", len(records))
            return
        body = request_body(records, self.service_name)
        reply, _ = sending.send_with_retries(
            self.endpoint, body, sending.Backoff(self.base, self.cap), time.monotonic() + self.retry_for,
            self._stop.wait, retryable=_retryable, on_retry=lambda: self._count("retries", 1))
        if reply.kind == sending.DELIVERED:
            self._count("exported", len(records))
            return
        if _retryable(reply):
            log.warning("OTLP export of %d log records failed (%s); dropped", len(records), reply.error)
        else:
            log.warning("OTLP endpoint refused %d log records (%s); dropped", len(records), reply.error)
        self._count("dropped", len(records))


def _retryable(reply: sending.Reply) -> bool:
    """OTLP's rule: a network error, 429, 502, 503 and 504 may succeed later; any other answer is final."""
    return reply.kind == sending.NETWORK or reply.status in RETRYABLE_STATUSES
