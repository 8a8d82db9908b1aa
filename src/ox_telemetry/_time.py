"""RFC 3339 timestamps as the reference (Go) writes and reads them.

``datetime.fromisoformat`` on Python 3.10 takes neither ``Z`` nor nanosecond
fractions, both of which Go writes, so parsing is done here by hand.

The datetime types are loaded on first use, from the C module alone: the
pure-Python ``datetime`` module costs a CLI ~4 ms to import, ``_datetime`` a
fraction of that, and a CLI that records nothing should pay neither.
"""

import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from datetime import datetime
    from typing import Any

_mod = None


def datetime_module() -> "Any":
    """The datetime types' module, loaded on first use (``_datetime`` where it exists)."""
    global _mod
    if _mod is None:
        try:
            import _datetime as mod  # type: ignore[import-not-found]
        except ImportError:  # pragma: no cover - interpreters without the C module
            import datetime as mod
        _mod = mod
    return _mod


_second = -1
_second_text = ""


def now_rfc3339() -> str:
    """The current time as Go writes it in UTC, without building a datetime (the hot path of ``track``)."""
    global _second, _second_text
    t = time.time()
    second = int(t)
    if second != _second:  # events come in bursts: format the date and time once a second
        _second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = second
    micro = int((t - second) * 1_000_000)
    return f"{_second_text}.{micro:06d}".rstrip("0") + "Z" if micro else _second_text + "Z"


def now() -> "datetime":
    """The current time, aware, in UTC."""
    mod = _mod or datetime_module()
    stamp: datetime = mod.datetime.now(mod.timezone.utc)
    return stamp


def format_rfc3339(dt: "datetime | None") -> str:
    """Go's ``time.RFC3339Nano``: trailing fraction zeros trimmed, ``Z`` for UTC; None is Go's zero time."""
    if dt is None:
        return "0001-01-01T00:00:00Z"
    text = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
    if dt.microsecond:
        text += f".{dt.microsecond:06d}".rstrip("0")
    offset = dt.utcoffset()  # None for a naive time: written as UTC, never naive
    minutes = int(offset.total_seconds()) // 60 if offset is not None else 0
    if minutes == 0:
        return text + "Z"
    sign = "+" if minutes > 0 else "-"
    minutes = abs(minutes)
    return f"{text}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def parse_rfc3339(text: str) -> "datetime":
    """Parse an RFC 3339 date-time with a ``Z`` or ``±hh:mm`` offset; ValueError otherwise."""
    if not isinstance(text, str) or len(text) < 20 or text[4] != "-" or text[7] != "-":
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    if text[10] not in "Tt" or text[13] != ":" or text[16] != ":":
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    mod = _mod or datetime_module()
    try:
        year, month, day = int(text[0:4]), int(text[5:7]), int(text[8:10])
        hour, minute, second = int(text[11:13]), int(text[14:16]), int(text[17:19])
        rest = text[19:]
        micro = 0
        if rest.startswith("."):
            digits = len(rest) - len(rest[1:].lstrip("0123456789")) - 1
            if digits == 0:
                raise ValueError
            micro = int(rest[1 : 1 + min(digits, 6)].ljust(6, "0"))  # nanoseconds truncate
            rest = rest[1 + digits :]
        if rest in ("Z", "z"):
            tz = mod.timezone.utc
        elif len(rest) == 6 and rest[0] in "+-" and rest[3] == ":":
            delta = mod.timedelta(hours=int(rest[1:3]), minutes=int(rest[4:6]))
            tz = mod.timezone.utc if not delta else mod.timezone(delta if rest[0] == "+" else -delta)
        else:
            raise ValueError
        parsed: datetime = mod.datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
        return parsed
    except ValueError:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}") from None
