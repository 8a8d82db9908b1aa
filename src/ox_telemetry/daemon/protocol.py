"""The daemon's side of the IPC protocol (CONTRACT.md section 3): one JSON line a message.

``telemetry`` messages are one-way and arrive by the ten thousand: they take
a fast path (:func:`spool_line`) that validates the message and builds the
spool line around the received bytes, without re-encoding them. The other
types (``ping``, ``status``, ``stop``, ``flush``, ``flush_queue``) are
requests: :func:`parse_request` returns them or raises :class:`ProtocolError`
with the precise reason, which the server sends back.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

from .. import _time, paths
from .._jsonlite import MAX_DEPTH, too_deep
from ..wire import new_event_id as new_uuid

MAX_EVENT_NAME = 256
REQUEST_TYPES = frozenset({"ping", "status", "stop", "flush", "flush_queue"})
_QUEUE_SUFFIX = paths.project_queue_path(os.sep)  # "/.sageox/cache/telemetry.jsonl"


class ProtocolError(ValueError):
    """A line the daemon cannot act on; ``str()`` is the precise reason."""


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are Python's extension, not JSON: the endpoint would refuse them.
    raise ValueError(f"{name} is not valid JSON")


_decode = json.JSONDecoder(parse_constant=_reject_constant).decode


def decode(line: bytes) -> Any:
    """The JSON value of one line (strict UTF-8, strict JSON, at most MAX_DEPTH levels); raises ProtocolError."""
    try:
        value = _decode(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise ProtocolError("invalid JSON: not UTF-8") from None
    except ValueError as exc:
        raise ProtocolError(f"invalid JSON: {exc}") from None
    except RecursionError:  # the parser's own limit, far past ours
        value = None
    else:
        # too_deep's own first test, inlined: the hot path of intake
        if line.count(b"[") + line.count(b"{") <= MAX_DEPTH or not too_deep(line, value):
            return value
    raise ProtocolError(f"invalid JSON: nested deeper than {MAX_DEPTH} levels")


def telemetry_error(message: dict[str, Any]) -> str | None:
    """Why a ``telemetry`` message's payload is unusable, or None when it is good."""
    payload = message.get("payload")
    if not isinstance(payload, dict):
        return "telemetry: payload must be an object"
    event = payload.get("event")
    if not isinstance(event, str) or not event:
        return "telemetry: payload.event must be a non-empty string"
    if len(event) > MAX_EVENT_NAME:
        return f"telemetry: payload.event longer than {MAX_EVENT_NAME} characters"
    props = payload.get("props")
    if props is not None and not isinstance(props, dict):
        return "telemetry: payload.props must be an object"
    return None


class Stamp:
    """The receive time of a chunk of events: unix ms and local RFC 3339 (as Go's ``time.RFC3339``)."""

    __slots__ = ("prefix", "ts", "tslocal")
    _second = -1
    _local = ""

    def __init__(self) -> None:
        now = time.time()
        self.ts = int(now * 1000)
        second = int(now)
        if second != Stamp._second:  # formatted once a second: chunks arrive far more often
            local = _time.datetime_module().datetime.fromtimestamp(second).astimezone()  # whole second: no fraction
            Stamp._local, Stamp._second = _time.format_rfc3339(local), second
        self.tslocal = Stamp._local
        self.prefix = b'","ts":%d,"tslocal":"%s","msg":' % (self.ts, self.tslocal.encode("ascii"))


def spool_line(raw: bytes, stamp: Stamp) -> bytes:
    """The spool line for one received ``telemetry`` line: uuid, ts, tslocal and the message verbatim.

    ``raw`` must already be validated (see :func:`telemetry_error`): it is
    strict JSON, so embedding it keeps the line valid JSON.
    """
    return b'{"uuid":"' + new_uuid().encode("ascii") + stamp.prefix + raw + b"}"


def own_event_line(event: str, props: dict[str, Any]) -> bytes:
    """A spool line for an event of the daemon's own (``app:startup``, ``app:shutdown``)."""
    raw = json.dumps({"type": "telemetry", "payload": {"event": event, "props": props}}, separators=(",", ":"))
    return spool_line(raw.encode("utf-8"), Stamp())


@dataclass
class Request:
    """A request message; ``payload`` is validated for its type."""

    type: str
    payload: dict[str, Any]


def parse_request(message: Any) -> Request:
    """The request in a decoded line; raises ProtocolError with the precise reason."""
    if not isinstance(message, dict):
        raise ProtocolError(f"message must be a JSON object, not {type(message).__name__}")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("message.type must be a string")
    if kind not in REQUEST_TYPES:
        raise ProtocolError(f"unknown message type {kind[:64]!r}")
    payload = message.get("payload")
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise ProtocolError(f"{kind}: payload must be an object")
    if kind == "flush_queue":
        _check_flush_queue(payload)
    return Request(kind, payload)


def _check_flush_queue(payload: dict[str, Any]) -> None:
    queue = payload.get("queue_path")
    if not isinstance(queue, str) or not queue:
        raise ProtocolError("flush_queue: payload.queue_path must be a non-empty string")
    if not os.path.isabs(queue) or os.path.normpath(queue) != queue:
        raise ProtocolError("flush_queue: queue_path must be absolute and normalised")
    if not allowed_queue_path(queue):
        raise ProtocolError(
            "flush_queue: queue_path must be a project queue (.../.sageox/cache/telemetry.jsonl) "
            "or a per-user spool (telemetry-*.jsonl in the user cache directory)"
        )
    url = payload.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 2048:
        raise ProtocolError("flush_queue: payload.url must be an http:// or https:// URL")
    version = payload.get("cli_version", "")
    if not isinstance(version, str) or len(version) > 128:
        raise ProtocolError("flush_queue: payload.cli_version must be a string")


def allowed_queue_path(path: str) -> bool:
    """Whether ``path`` is a queue a client may ask the daemon to send (never an arbitrary file)."""
    return path.endswith(_QUEUE_SUFFIX) or paths.is_user_spool_path(path)


def answer(success: bool, error: str | None = None, data: Any = None) -> bytes:
    """One answer line: ``{"success": bool, "error"?: str, "data"?: ...}`` and a newline."""
    out: dict[str, Any] = {"success": success}
    if error is not None:
        out["error"] = error
    if data is not None:
        out["data"] = data
    return json.dumps(out, separators=(",", ":")).encode("utf-8") + b"\n"
