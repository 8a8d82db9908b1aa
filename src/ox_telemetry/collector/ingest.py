"""Turning request bodies into rows: validation per the contract, limits, clock-skew correction.

A body that cannot be read as a Batch (or daemon upload) at all is a
RequestError (400/413). Inside a readable body each event stands alone: a bad
one is listed in ``rejected`` with its index and reason, the rest are stored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import repeat
from operator import attrgetter, itemgetter, sub
from typing import Annotated, Any, cast

import msgspec
import orjson
from msgspec.structs import astuple

from .._time import parse_rfc3339
from ..fields import FIELDS, INDEX, INT64, MAX_ID, NAMES
from ..wire import MAX_TEXT, Batch, Event, all_fields
from .errors import RequestError
from .histogram import duration_bin, duration_bins
from .storage import Row, WriteJob
from .storage.rollup import COMMAND_TYPES
from .storage.schema import CLIENT_NAMES, Columns, columns, rows_of

MAX_EVENTS = 1000
MAX_EVENT_BYTES = 32 * 1024
FUTURE_SLACK_US = 60 * 1_000_000
PAST_LIMIT_US = 30 * 86400 * 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_TZINFO = attrgetter("tzinfo")
# RFC 3339 as the slow path (parse_rfc3339) reads it, with an upper-case "T" and "Z". fromisoformat alone also
# takes week dates, decimal commas, offsets without a colon, an empty fraction and anything after six fraction
# digits. One expression over the column joined by newlines: a match a time would cost more.
_ONE_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)"
_TIMES = re.compile(f"(?:{_ONE_TIME}\n)*{_ONE_TIME}", re.ASCII)
_NUL = b"\\u0000"  # how JSON writes U+0000; PostgreSQL text cannot hold it

# The event's rules, from fields.py (by which the client and the daemon's queue read events too,
# Event.from_dict): the fast path's struct, the slow path's checks and the OpenAPI document are derived from them.
REQUIRED = tuple(f.name for f in FIELDS if f.required)  # present and non-empty
MAX_LENGTH = {f.name: f.max_length for f in FIELDS if f.max_length is not None}
INT_RANGES = {f.name: f.int_range for f in FIELDS if f.int_range is not None}

# The fast path: msgspec checks every field's type and the limits above in C while it decodes. An event it
# refuses (or one whose time is in doubt) takes the slow path, which finds and names the problem. Both read
# the same fields.
_KINDS: dict[str, tuple[Any, Any]] = {
    "s": (str, ""), "i": (int, 0), "b": (bool, False), "t": (str | None, None),
    "m": (dict[str, str] | None, None),
}
# Checked as msgspec decodes, where a pass over the column after would cost more.
_LIMITS = {
    **{name: msgspec.Meta(min_length=1) for name in REQUIRED},
    **{name: msgspec.Meta(max_length=length) for name, length in MAX_LENGTH.items()},
    **{name: msgspec.Meta(ge=low, le=high) for name, (low, high) in INT_RANGES.items()},
}


def _fast_field(name: str, kind: str) -> tuple[Any, ...]:
    kind_type, default = _KINDS[kind]
    annotated = Annotated[kind_type, _LIMITS[name]] if name in _LIMITS else kind_type
    # A required field has no default: msgspec checks limits only on values it decodes, never on defaults.
    return (name, annotated) if name in REQUIRED else (name, annotated, default)


_FastEvent = msgspec.defstruct("_FastEvent", [_fast_field(f.name, f.kind) for f in FIELDS])


# A Batch's texts go into every row of its events: 1,000 events times a 10 MB cli_version was 10 GB for the writer.
# Longer ones are cut to MAX_TEXT characters, as the client library cuts them (the fast path leaves them to the slow).
_ENVELOPE_TEXT = Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]


class _Envelope(msgspec.Struct):
    """A Batch's fields besides its events."""

    cli_version: _ENVELOPE_TEXT = ""
    os: _ENVELOPE_TEXT = ""
    arch: _ENVELOPE_TEXT = ""
    batch_timestamp: str | None = None
    client_id: Any = None  # any JSON: one that is no id is dropped (installation_id), never the events with it

    def read(self, received_us: int) -> tuple[tuple[str, str, str], int]:
        """(cli_version, os, arch) and the client clock's skew; ValueError for a batch time in doubt."""
        batch_us = _fast_micros([self.batch_timestamp])[0]
        return (self.cli_version, self.os, self.arch), 0 if batch_us is None else received_us - batch_us


class _FastBatch(_Envelope):
    events: list[msgspec.Raw] | None = None


class _WholeBatch(_Envelope):
    events: list[_FastEvent] | None = None  # type: ignore[valid-type]


class _RawEvents(msgspec.Struct):
    """A Batch's events as sent, and nothing else: its envelope, which may be as large as the body, is skipped."""

    events: list[msgspec.Raw] | None = None


# Fastest first: the whole batch in one call, then each event on its own (to find the bad ones).
_WHOLE_DECODER = msgspec.json.Decoder(_WholeBatch)
_BATCH_DECODER = msgspec.json.Decoder(_FastBatch)
_EVENT_DECODER = msgspec.json.Decoder(_FastEvent)
_RAW_EVENTS_DECODER = msgspec.json.Decoder(_RawEvents)


@dataclass(frozen=True)
class Rejection:
    """One event left out of a batch: its index, a metrics code and a readable reason."""

    index: int
    code: str
    reason: str


@dataclass
class Parsed:
    """The rows to store for one request and the events refused."""

    client_rows: list[Row] = field(default_factory=list)
    daemon_rows: list[Row] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    client_table: Columns | None = None  # the client rows a column at a time, where the parse built them so
    client_id: str = ""  # the sender's anonymous installation id; "" when it sent none (or one not kept)

    def job(self) -> WriteJob:
        """The rows, packed for the writer."""
        return WriteJob.of(self.client_rows, self.daemon_rows, self.client_table, self.client_id)


class _Reject(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def micros(dt: datetime) -> int:
    """An aware datetime as integer microseconds since the Unix epoch."""
    delta = dt - _EPOCH  # by hand: timedelta // timedelta costs more
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _load_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError(400, "invalid_body", f"body must be a JSON object ({what})")
    return data


def _event_list(data: dict[str, Any]) -> list[Any]:
    events = data.get("events")
    if events is None:
        return []
    if not isinstance(events, list):
        raise RequestError(400, "invalid_body", "field 'events' must be a list")
    return _check_count(events)


def _check_count(events: list[Any]) -> list[Any]:
    if len(events) > MAX_EVENTS:
        raise RequestError(
            413, "too_many_events", f"batch has {len(events)} events; at most {MAX_EVENTS} are accepted at once"
        )
    return events


def _each(items: list[Any], make: Callable[[Any], Row]) -> tuple[list[Row], list[Rejection]]:
    """A row for every item ``make`` accepts; the others, by index, with the reason it refused them."""
    rows: list[Row] = []
    rejected: list[Rejection] = []
    for index, item in enumerate(items):
        try:
            rows.append(make(item))
        except _Reject as exc:
            rejected.append(Rejection(index, exc.code, exc.reason))
    return rows, rejected


def _check_size(item: object) -> None:
    try:
        encoded = orjson.dumps(item)
    except TypeError as exc:  # pragma: no cover - parsed JSON always encodes
        raise _Reject("invalid_event", str(exc)) from None
    if len(encoded) > MAX_EVENT_BYTES:
        raise _Reject("event_too_large", f"event is {len(encoded)} bytes; at most {MAX_EVENT_BYTES} are accepted")
    if _NUL in encoded:
        raise _Reject("nul_character", "event contains a NUL character (\\u0000)")


def _check_key(value: str, name: str) -> str | None:
    if len(value) > MAX_ID:
        raise _Reject("invalid_event", f"field {name!r} is longer than {MAX_ID} characters")
    return value or None


def _check_int(value: int, name: str, limits: tuple[int, int] = INT64) -> int:
    if not limits[0] <= value <= limits[1]:
        raise _Reject("invalid_event", f"field {name!r} is out of the 64-bit integer range")
    return value


def _time(client_us: int | None, skew_us: int, received_us: int) -> tuple[int, str | None]:
    """(time to store as the event's time, flag) for a client time already in microseconds."""
    if client_us is None:
        return received_us, "missing"
    corrected = client_us + skew_us
    if corrected > received_us + FUTURE_SLACK_US:
        return corrected, "future"
    if corrected < received_us - PAST_LIMIT_US:
        return corrected, "past"
    return corrected, None


def _times(client_us: Sequence[int | None], skew_us: int, received_us: int,
           ) -> tuple[Sequence[int], Sequence[str | None]]:
    """(times to store as the events' times, flags): ``_time`` for each, in one pass where none is flagged."""
    if None not in client_us:
        corrected = [t + skew_us for t in client_us]  # type: ignore[operator]
        if not corrected or (received_us - PAST_LIMIT_US <= min(corrected)
                             and max(corrected) <= received_us + FUTURE_SLACK_US):
            return corrected, [None] * len(corrected)
    pairs = [_time(t, skew_us, received_us) for t in client_us]
    return [t for t, _ in pairs], [flag for _, flag in pairs]


def _given_time(stamp: datetime | None) -> int | None:
    # Go's zero time (year 1) means "not set".
    return None if stamp is None or stamp.year <= 1 else micros(stamp)


def _rfc3339(stamps: Sequence[str]) -> bool:
    text = "\n".join(stamps)
    return _TIMES.fullmatch(text) is not None and text.count("\n") == len(stamps) - 1  # no newline inside one


def _fast_micros(stamps: Sequence[str | None]) -> list[int | None]:
    """Microseconds since the epoch of RFC 3339 times; None for none or Go's zero time; ValueError when in doubt.

    A column at a time, in C where it can be: a Python call a time would cost more than parsing it.
    """
    given = cast("Sequence[str]", [s for s in stamps if s is not None] if None in stamps else stamps)
    if given and not _rfc3339(given):
        raise ValueError("not an RFC 3339 time")
    parsed = list(map(datetime.fromisoformat, given))  # 3.11+ reads "Z" (3.10 falls back to the slow path)
    if not all(map(_TZINFO, parsed)):
        raise ValueError("a time without its offset")
    if given and min(given) >= "0002":  # no local year 1 (given times start with their year, as read)
        deltas = map(sub, parsed, repeat(_EPOCH))  # then micros() inlined: a call a time costs as much again
        found: list[int | None] = [(d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds for d in deltas]
    else:
        found = list(map(_given_time, parsed))
    if given is stamps:
        return found
    values = iter(found)
    return [None if s is None else next(values) for s in stamps]


#: Deeper JSON than the decoders' recursion limit (about 1,000 levels; an event nests 2) refuses the whole body.
TOO_DEEP = RequestError(400, "too_deep", "body is nested too deeply (events nest 2 levels; the limit is about 1,000)")


def client_batch(body: bytes, received_us: int) -> Parsed:
    """Validate a Batch body (``POST /api/v1/telemetry``) into event rows."""
    try:
        return client_batch_whole(body, received_us) or client_batch_each(body, received_us)
    except RecursionError:  # msgspec's own limit, met before Python's stack runs out
        raise TOO_DEEP from None


def _may_hold_nul(body: bytes) -> bool:
    # A one-byte search (memchr) first: the six-byte one is slower, and nearly every body has no backslash.
    return b"\\" in body and _NUL in body


def client_batch_whole(body: bytes, received_us: int) -> Parsed | None:
    """A body whose events are all good, the usual case, in one decode; None at the first doubt (then
    ``client_batch_each`` reads it)."""
    if _may_hold_nul(body):
        return None
    try:
        batch = _WHOLE_DECODER.decode(body)
        envelope, skew_us = batch.read(received_us)
        events = batch.events or []
        if len(events) > MAX_EVENTS:
            return None
        # Sizes as sent (see _fast_client_row): no event is longer than the body; else a second decode finds each.
        if len(body) > MAX_EVENT_BYTES and any(
                len(memoryview(raw)) > MAX_EVENT_BYTES for raw in _RAW_EVENTS_DECODER.decode(body).events or ()):
            return None
        table = _fast_table(events, envelope, skew_us, received_us)
    except (msgspec.DecodeError, ValueError, OverflowError):
        return None
    return Parsed(client_rows=rows_of(table), client_table=table, client_id=installation_id(batch.client_id))


def installation_id(value: Any) -> str:
    """A Batch's ``client_id`` as kept: a non-empty text of at most MAX_ID characters without NUL, else "" (the
    events still count, as from an unknown installation: an older client sends none)."""
    if isinstance(value, str) and 0 < len(value) <= MAX_ID and "\0" not in value:
        return value
    return ""


def client_batch_each(body: bytes, received_us: int) -> Parsed:
    """A body read an event at a time: the fast decoder for each, the slow path where it doubts."""
    try:
        fast = _BATCH_DECODER.decode(body)
        events = fast.events or []
        envelope, skew_us = fast.read(received_us)
    except (msgspec.DecodeError, ValueError, OverflowError):
        return client_batch_slow(body, received_us)
    maybe_nul = _may_hold_nul(body)  # rare, and then each event is checked on the slow path

    def make(raw: msgspec.Raw) -> Row:
        # Where the fast path doubts, the slow path names the problem (or, rarely, accepts the event).
        fast_row = None if maybe_nul else _fast_client_row(raw, envelope, skew_us, received_us)
        return fast_row or _client_row(_load_event(raw), envelope, skew_us, received_us)

    rows, rejected = _each(_check_count(events), make)
    return Parsed(client_rows=rows, rejected=rejected, client_id=installation_id(fast.client_id))


def _load_event(raw: msgspec.Raw) -> Any:
    # msgspec skips over an event it reads as Raw without checking its text, so it may not be JSON (invalid UTF-8).
    try:
        return orjson.loads(bytes(raw))
    except orjson.JSONDecodeError as exc:
        raise _Reject("invalid_event", f"event is not valid JSON: {exc}") from None


def _fast_client_row(raw: msgspec.Raw, envelope: tuple[str, str, str], skew_us: int, received_us: int) -> Row | None:
    # Sizes as sent: a compact re-encoding is never longer, so only an event over the limit as sent is measured.
    if len(memoryview(raw)) > MAX_EVENT_BYTES:
        return None
    try:
        table = _fast_table([_EVENT_DECODER.decode(raw)], envelope, skew_us, received_us)
    except (msgspec.DecodeError, ValueError, OverflowError):
        return None
    return rows_of(table)[0]


def _fields(events: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Events' fields a column at a time, in wire order (as ``astuple`` of the fast path's struct and
    ``wire.all_fields`` of an Event give them)."""
    return columns(events, len(NAMES))


def _fast_table(events: Sequence[Any], envelope: tuple[str, str, str], skew_us: int, received_us: int,
                ) -> Columns:
    """The stored rows of decoded fast-path structs, a column at a time; ValueError for a time in doubt."""
    fields = _fields(map(astuple, events))  # within the limits: _FastEvent's decoder checked them
    return _table(fields, _fast_micros(fields[_TIMESTAMP]), envelope, skew_us, received_us)


# A stored client row is the event's fields, each in its column (fields.py), then these columns, which ingest
# computes. Each stored column's place in that list, in schema.CLIENT_COLUMNS order, picks the row in one C call.
_COMPUTED = ("event_time", "received_at", "time_flag", "cli_version", "os", "arch", "duration_bin")
_SOURCES = [f.column for f in FIELDS] + list(_COMPUTED)
if sorted(_SOURCES) != sorted(CLIENT_NAMES):
    raise RuntimeError(f"ingest computes the columns {_COMPUTED} besides fields.py's; storage/schema.py's client "
                       f"columns differ: {sorted(set(_SOURCES) ^ set(CLIENT_NAMES))}")
_STORED_ORDER = itemgetter(*(_SOURCES.index(name) for name in CLIENT_NAMES))
_TIMESTAMP, _EVENT_ID, _METADATA = INDEX["timestamp"], INDEX["event_id"], INDEX["metadata"]
_TYPE, _DURATION = INDEX["type"], INDEX["duration_ms"]


def _table(fields: list[tuple[Any, ...]], client_us: Sequence[int | None], envelope: tuple[str, str, str],
           skew_us: int, received_us: int) -> Columns:
    """The stored rows of checked events a column at a time (``schema.columns``), from their ``_fields``
    and client times in microseconds."""
    values: list[Sequence[Any]] = list(fields)
    ids, metadata = fields[_EVENT_ID], fields[_METADATA]
    n = len(ids)
    event_us, flags = _times(client_us, skew_us, received_us)
    version, os, arch = envelope
    values[_TIMESTAMP] = client_us
    values[_EVENT_ID] = ids if all(ids) else [i or None for i in ids]
    values[_METADATA] = [orjson.dumps(m).decode() if m else None for m in metadata] if any(metadata) else [None] * n
    values += (event_us, [received_us] * n, flags, [version] * n, [os] * n, [arch] * n,
               _bins(fields[_TYPE], fields[_DURATION]))  # as _COMPUTED
    return _STORED_ORDER(values)  # type: ignore[no-any-return]


def _bins(kinds: Sequence[str], durations: Sequence[int]) -> list[int | None]:
    # A command run's duration bin; None for other events and runs that took no time.
    if durations and min(durations) > 0 and COMMAND_TYPES.issuperset(kinds):
        return duration_bins(durations)  # type: ignore[return-value]
    return [duration_bin(d) if d > 0 and k in COMMAND_TYPES else None for k, d in zip(kinds, durations, strict=True)]


def client_batch_slow(body: bytes, received_us: int) -> Parsed:
    """A body read with the JSON parser and ``wire.Event.from_dict``: the reference the fast paths agree with."""
    data = _load_object(body, "a Batch")
    events = _event_list(data)
    stamp = data.get("batch_timestamp")
    if isinstance(stamp, str):
        try:
            parse_rfc3339(stamp)
        except ValueError as exc:
            raise RequestError(400, "invalid_body", f"field 'batch_timestamp': {exc}") from None
    try:
        envelope = Batch.from_dict({k: data.get(k) for k in ("cli_version", "os", "arch", "batch_timestamp")})
    except ValueError as exc:
        raise RequestError(400, "invalid_body", str(exc)) from None
    batch_us = _given_time(envelope.timestamp)
    # The client's clock may be off: shift its times by how far its batch time is from ours.
    skew_us = 0 if batch_us is None else received_us - batch_us
    fields = (envelope.cli_version[:MAX_TEXT], envelope.os[:MAX_TEXT], envelope.arch[:MAX_TEXT])
    rows, rejected = _each(events, lambda item: _client_row(item, fields, skew_us, received_us))
    return Parsed(client_rows=rows, rejected=rejected, client_id=installation_id(data.get("client_id")))


def _client_row(item: Any, envelope: tuple[str, str, str], skew_us: int, received_us: int) -> Row:
    _check_size(item)
    try:
        event = Event.from_dict(item)
    except ValueError as exc:
        reason = str(exc)
        if "field" not in reason and "event must" not in reason:
            reason = f"field 'timestamp': {reason}"  # the one error from_dict does not name a field in
        raise _Reject("invalid_event", reason) from None
    for name, length in MAX_LENGTH.items():
        if len(getattr(event, name)) > length:
            raise _Reject("invalid_event", f"field {name!r} is longer than {length} characters")
    for name, limits in INT_RANGES.items():
        _check_int(getattr(event, name), name, limits)
    return rows_of(_table(_fields([all_fields(event)]), [_given_time(event.timestamp)], envelope, skew_us,
                          received_us))[0]


def daemon_upload(body: bytes, received_us: int) -> Parsed:
    """Validate a daemon upload (``POST /tevents``) into daemon event rows."""
    try:
        return _daemon_upload(body, received_us)
    except RecursionError:
        raise TOO_DEEP from None


def _daemon_upload(body: bytes, received_us: int) -> Parsed:
    data = _load_object(body, "a daemon upload")
    client_id = data.get("clientid")
    if not isinstance(client_id, str) or not client_id:
        raise RequestError(400, "invalid_body", "field 'clientid' must be a non-empty string")
    if len(client_id) > MAX_ID:
        raise RequestError(400, "invalid_body", f"field 'clientid' is longer than {MAX_ID} characters")
    rows, rejected = _each(_event_list(data), lambda item: _daemon_row(item, client_id, received_us))
    return Parsed(daemon_rows=rows, rejected=rejected, client_id=client_id)


def _daemon_field(item: dict[str, Any], name: str, kind: type, what: str) -> Any:
    value = item.get(name)
    # bool is an int in Python, never in JSON.
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise _Reject("invalid_event", f"field {name!r} must be {what}")
    return value


def _daemon_row(item: Any, client_id: str, received_us: int) -> Row:
    _check_size(item)
    if not isinstance(item, dict):
        raise _Reject("invalid_event", "event must be a JSON object")
    uuid = _daemon_field(item, "uuid", str, "a string")
    name = _daemon_field(item, "event", str, "a string")
    if not name:
        raise _Reject("invalid_event", "field 'event' is missing or empty")
    ts = _daemon_field(item, "ts", int, "an integer (Unix milliseconds)")
    tslocal = _daemon_field(item, "tslocal", str, "a string")
    if tslocal is not None:
        try:
            parse_rfc3339(tslocal)
        except ValueError as exc:
            raise _Reject("invalid_event", f"field 'tslocal': {exc}") from None
    props = _daemon_field(item, "props", dict, "an object")
    client_us = _check_int(ts * 1000, "ts") if ts else None
    event_us, flag = _time(client_us, 0, received_us)  # an upload carries no send time to correct by
    # Same order as schema.DAEMON_COLUMNS.
    return (
        _check_key(uuid or "", "uuid"), client_us, client_id, name, event_us, received_us, flag,
        tslocal, orjson.dumps(props).decode() if props else None,
    )
