"""Wire types: the events and batches that leave the machine, and their JSON form.

The JSON keys, their order and the ``omitempty`` rules follow the reference
(Go) encoder; see CONTRACT.md section 2. Writing never raises: every value is
coerced to the type its key carries and cut to a bounded length, so one odd
event cannot break a queue file or a batch.
"""

import os
import sys
from _operator import attrgetter  # built in; ``operator`` is a module to load
from itertools import compress

from . import _jsonlite
from ._time import format_rfc3339, parse_rfc3339
from .fields import FIELDS, INDEX, NAMES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from datetime import datetime
    from typing import Any

    from typing_extensions import Self

EVENT_COMMAND_START = "command_start"
EVENT_COMMAND_COMPLETE = "command_complete"
EVENT_COMMAND_ERROR = "command_error"
EVENT_SESSION_START = "session_start"
EVENT_SESSION_END = "session_end"
EVENT_GUIDANCE_FETCH = "guidance_fetch"
EVENT_AUTH_SUCCESS = "auth_success"
EVENT_AUTH_FAILURE = "auth_failure"
EVENT_GUIDANCE_FETCH_ERROR = "guidance_fetch_error"
EVENT_ATTRIBUTION_SHOWN = "attribution_shown"
EVENT_PRIME_EXCESSIVE = "prime_excessive"
EVENT_DAEMON_START_FAILURE = "daemon:start_failure"
EVENT_COWORKER_LOAD = "coworker_load"

#: Longest text value written; longer ones are cut (a 5 MB error message must
#: not become a 5 MB event).
MAX_TEXT = 1024
#: Most metadata entries written, and the longest key.
MAX_METADATA = 32
MAX_KEY = 128
#: An encoded event over this is written again with much shorter values, so it
#: stays within what a collector accepts (32 KiB).
MAX_EVENT_BYTES = 16 * 1024
_SHORT_TEXT = 32  # 77 strings of 32 escaped chars fit the bound

# Derived from fields.py, once, for the loops below.
_TYPE, _TIMESTAMP, _SUCCESS = INDEX["type"], INDEX["timestamp"], INDEX["success"]
# Encoding kind per field: keys always written are pre-encoded ("r", raw JSON).
_ENCODING = tuple(("r" if f.always else f.kind, f'"{f.name}":') for f in FIELDS)
_KINDS = tuple((f.name, f.kind) for f in FIELDS)
_ALWAYS = tuple((f.name, f.always) for f in FIELDS)
_REQUIRED = tuple(f.name for f in FIELDS if f.required)
#: Every field of an Event, in wire order, in one C call.
all_fields = attrgetter(*NAMES)


def clean_text(value: object, limit: int = MAX_TEXT) -> str:
    """``value`` as a string that encodes to UTF-8: coerced, cut, lone surrogates replaced."""
    if not isinstance(value, str):
        try:
            value = str(value)
        except Exception:
            value = "<unprintable>"
    if len(value) > limit:
        value = value[:limit]
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def _clean_int(value: object) -> int:
    if isinstance(value, int):
        return int(value)
    try:
        return int(value)  # type: ignore[call-overload,no-any-return]
    except (TypeError, ValueError, OverflowError):
        return 0


def _clean_metadata(value: object, limit: int) -> "dict[str, str]":
    if not isinstance(value, dict):
        return {}
    out: dict[str, str] = {}
    for key, item in value.items():
        if len(out) >= MAX_METADATA:
            break
        out[clean_text(key, min(MAX_KEY, limit))] = clean_text(item, limit)
    return out


class Value:
    """Equality over ``__slots__``, and unhashable because mutable (as a dataclass would be)."""

    __slots__: "tuple[str, ...]" = ()

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None  # type: ignore[assignment]


class Event(Value):
    """One telemetry event. Keyword construction, equality, readable repr."""

    __slots__ = NAMES

    type: str
    timestamp: "datetime | None"
    session_id: str
    agent_id: str
    command: str
    duration_ms: int
    success: bool
    error_code: str
    metadata: "dict[str, str]"
    repo_id: str
    api_endpoint: str
    path: str
    agent_type: str
    model: str
    oxsid: str
    prime_call_count: int
    coworker_name: str
    coworker_model: str
    event_id: str

    def __init__(
        self,
        type: str = "",
        timestamp: "datetime | None" = None,
        session_id: str = "",
        agent_id: str = "",
        command: str = "",
        duration_ms: int = 0,
        success: bool = False,
        error_code: str = "",
        metadata: "dict[str, str] | None" = None,
        repo_id: str = "",
        api_endpoint: str = "",
        path: str = "",
        agent_type: str = "",
        model: str = "",
        oxsid: str = "",
        prime_call_count: int = 0,
        coworker_name: str = "",
        coworker_model: str = "",
        event_id: str = "",
    ) -> None:
        self.type = type
        self.timestamp = timestamp
        self.session_id = session_id
        self.agent_id = agent_id
        self.command = command
        self.duration_ms = duration_ms
        self.success = success
        self.error_code = error_code
        self.metadata = {} if metadata is None else metadata
        self.repo_id = repo_id
        self.api_endpoint = api_endpoint
        self.path = path
        self.agent_type = agent_type
        self.model = model
        self.oxsid = oxsid
        self.prime_call_count = prime_call_count
        self.coworker_name = coworker_name
        self.coworker_model = coworker_model
        self.event_id = event_id

    def __repr__(self) -> str:
        shown = (
            f"{name}={getattr(self, name)!r}"
            for name, always in _ALWAYS
            if always or getattr(self, name)
        )
        return f"Event({', '.join(shown)})"

    def copy(self) -> "Event":
        """A shallow copy (the metadata dict is copied too)."""
        twin = Event.__new__(Event)
        for name in NAMES:
            setattr(twin, name, getattr(self, name))
        twin.metadata = dict(self.metadata) if isinstance(self.metadata, dict) else {}
        return twin

    def to_dict(
        self, *, limit: int = MAX_TEXT, defaults: "Mapping[str, object] | None" = None
    ) -> "dict[str, Any]":
        """The wire form: JSON-ready values, empty optional keys left out, values bounded.

        ``defaults`` fills fields that are empty (None, "", 0) on this event;
        a timestamp default may be given as an RFC 3339 string.
        """
        data: dict[str, Any] = _jsonlite.loads(self._encode(limit, defaults))
        return data

    def to_json(self, defaults: "Mapping[str, object] | None" = None) -> str:
        """One line of compact ASCII JSON, at most about :data:`MAX_EVENT_BYTES`; ``defaults`` as in :meth:`to_dict`."""
        text = self._encode(MAX_TEXT, defaults)
        if len(text) > MAX_EVENT_BYTES:
            text = self._encode(_SHORT_TEXT, defaults)
        return text

    def _encode(self, limit: int, defaults: "Mapping[str, object] | None") -> str:
        # The one place that decides what an event looks like on the wire. It
        # builds the text directly and visits only fields that have a value:
        # this is the client's hot path.
        quote = _jsonlite.quote_function()
        values = list(all_fields(self))
        own_stamp = values[_TIMESTAMP]
        if defaults:
            for name, default in defaults.items():
                index = INDEX.get(name)
                if index is not None and not values[index]:
                    values[index] = default
        # Keys always written become raw JSON text here, so the loop sees them as present.
        stamp = values[_TIMESTAMP]
        if own_stamp is None and stamp.__class__ is str:
            values[_TIMESTAMP] = quote(stamp)  # a default already in wire form
        else:
            values[_TIMESTAMP] = quote(format_rfc3339(stamp if _is_datetime(stamp) else None))
        values[_TYPE] = quote(clean_text(values[_TYPE], limit) if values[_TYPE] else "")
        values[_SUCCESS] = "true" if values[_SUCCESS] else "false"
        parts = []
        for (kind, key), value in zip(compress(_ENCODING, values), filter(None, values), strict=True):
            if kind == "s":
                if value.__class__ is not str or len(value) > limit or not value.isascii():
                    value = clean_text(value, limit)
                if value:
                    parts.append(key + quote(value))
            elif kind == "r":
                parts.append(key + value)
            elif kind == "i":
                number = _clean_int(value)
                if number:
                    parts.append(f"{key}{number}")
            else:
                items = _clean_metadata(value, limit)
                if items:
                    parts.append(key + "{" + ",".join(f"{quote(k)}:{quote(v)}" for k, v in items.items()) + "}")
        return "{" + ",".join(parts) + "}"

    @classmethod
    def from_dict(cls, data: "Mapping[str, Any]") -> "Self":
        """Read the wire form. Unknown keys are ignored; a known key of the wrong type is a ValueError."""
        if not isinstance(data, dict):
            raise ValueError("event must be a JSON object")
        event = cls()
        for name, kind in _KINDS:
            value = data.get(name)
            if value is None:
                continue
            if kind == "s":
                ok = isinstance(value, str)
            elif kind == "i":
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif kind == "b":
                ok = isinstance(value, bool)
            elif kind == "t":
                value = parse_rfc3339(value) if isinstance(value, str) else None
                ok = value is not None
            else:
                ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
            if not ok:
                raise ValueError(f"field {name!r} has the wrong type")
            setattr(event, name, value)
        for name in _REQUIRED:
            if not getattr(event, name):
                raise ValueError(f"field {name!r} is missing or empty")
        return event

    @classmethod
    def from_json(cls, text: "str | bytes") -> "Self":
        """Parse one JSON object; ValueError when it is not a valid event."""
        return cls.from_dict(_jsonlite.loads(text))


def new_event_id() -> str:
    """A random (version 4) UUID string; ``uuid`` itself costs a CLI milliseconds to import."""
    h = os.urandom(16).hex()
    # Version 4 in the 13th digit; variant 10xx in the 17th.
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def _is_datetime(value: object) -> bool:
    return hasattr(value, "utcoffset") and hasattr(value, "microsecond")


class Batch(Value):
    """What a CLI POSTs: events plus where they came from."""

    __slots__ = ("arch", "cli_version", "client_id", "events", "os", "timestamp")

    def __init__(
        self,
        events: "list[Event] | None" = None,
        cli_version: str = "",
        os: str = "",
        arch: str = "",
        timestamp: "datetime | None" = None,
        client_id: str = "",
    ) -> None:
        self.events = [] if events is None else events
        self.cli_version = cli_version
        self.os = os
        self.arch = arch
        self.timestamp = timestamp
        self.client_id = client_id  # the anonymous installation id (identity.py); "" from older clients

    def __repr__(self) -> str:
        return (
            f"Batch(events=<{len(self.events)} events>, cli_version={self.cli_version!r}, "
            f"os={self.os!r}, arch={self.arch!r}, timestamp={self.timestamp!r}, client_id={self.client_id!r})"
        )

    def to_dict(self) -> "dict[str, Any]":
        """The wire form (every key always written, but ``client_id`` only when there is one)."""
        out = {
            "events": [e.to_dict() for e in self.events],
            "cli_version": clean_text(self.cli_version),
            "os": clean_text(self.os),
            "arch": clean_text(self.arch),
            "batch_timestamp": format_rfc3339(self.timestamp),
        }
        if self.client_id:
            out["client_id"] = clean_text(self.client_id)
        return out

    def to_json(self) -> str:
        """Compact JSON."""
        return encode_batch((e.to_json() for e in self.events), self.cli_version,
                            self.os, self.arch, self.timestamp, self.client_id)

    @classmethod
    def from_dict(cls, data: "Mapping[str, Any]") -> "Self":
        """Read the wire form; ValueError naming the first problem."""
        if not isinstance(data, dict):
            raise ValueError("batch must be a JSON object")
        events = data.get("events")
        if events is None:
            events = []
        if not isinstance(events, list):
            raise ValueError("field 'events' must be a list")
        parsed = []
        for index, item in enumerate(events):
            try:
                parsed.append(Event.from_dict(item))
            except ValueError as exc:
                raise ValueError(f"events[{index}]: {exc}") from None
        texts = {}
        for key in ("cli_version", "os", "arch", "client_id"):
            value = data.get(key) or ""
            if not isinstance(value, str):
                raise ValueError(f"field {key!r} must be a string")
            texts[key] = value
        stamp = data.get("batch_timestamp")
        if stamp is not None and not isinstance(stamp, str):
            raise ValueError("field 'batch_timestamp' must be a string")
        return cls(parsed, timestamp=parse_rfc3339(stamp) if stamp else None, **texts)

    @classmethod
    def from_json(cls, text: "str | bytes") -> "Self":
        """Parse a batch body."""
        return cls.from_dict(_jsonlite.loads(text))


def encode_batch(
    event_lines: "Iterable[str]", cli_version: str, os: str, arch: str, timestamp: "datetime | None",
    client_id: str = "",
) -> str:
    """A batch body from events already in their JSON form (queue lines are sent as they are); ``client_id``
    is written only when given (older collectors ignore the key)."""
    tail = f',"client_id":{_jsonlite.quote(clean_text(client_id))}' if client_id else ""
    return (
        '{"events":[' + ",".join(event_lines) + "],"
        f'"cli_version":{_jsonlite.quote(clean_text(cli_version))},'
        f'"os":{_jsonlite.quote(clean_text(os))},"arch":{_jsonlite.quote(clean_text(arch))},'
        f'"batch_timestamp":{_jsonlite.quote(format_rfc3339(timestamp))}{tail}}}'
    )


def version_suffix(cli_version: str) -> str:
    """What ends a queued line that carries the version of the CLI that recorded it (see CONTRACT.md section 5).

    A queue or spool is shared by CLIs of different versions and sent by
    whichever process comes next, so each line keeps its own; the sender takes
    the key off again and sends the event in a batch of that version.
    """
    return ',"cli_version":' + _jsonlite.quote(clean_text(cli_version)) + "}"


def encode_upload(clientid: str, events: "list[dict[str, Any]]") -> bytes:
    """A daemon upload body for ``/tevents`` (CONTRACT.md section 3): how the daemon and ``demo`` both build one."""
    return _jsonlite.dumps({"clientid": clientid, "events": events}).encode("ascii")


_GO_ARCH = {
    "x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
    "i386": "386", "i486": "386", "i586": "386", "i686": "386", "x86": "386",
}


def host_os() -> str:
    """This machine's OS in the reference's (Go) naming."""
    if sys.platform.startswith("linux"):
        return "linux"
    if sys.platform == "win32":
        return "windows"
    return sys.platform.rstrip("0123456789")  # darwin, freebsd13 -> freebsd


def host_arch() -> str:
    """This machine's architecture in the reference's (Go) naming."""
    try:
        machine = os.uname().machine.lower()
    except AttributeError:  # pragma: no cover - Windows
        from . import settings

        machine = settings.windows_arch().lower()
    if machine.startswith("arm"):
        return "arm"
    return _GO_ARCH.get(machine, machine)
