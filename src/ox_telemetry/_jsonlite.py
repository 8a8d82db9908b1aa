"""JSON for the client process without importing :mod:`json`.

``import json`` pulls in ``re`` and ``enum`` (about 15 ms on a slow machine,
five times the client's whole import budget). The C accelerator behind it,
``_json``, loads in a fraction of a millisecond and does the real work, so the
client talks to it directly, and only once it has something to encode.
Processes of our own (uploader, daemon, collector) use :mod:`json` itself.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, ClassVar

_WHITESPACE = " \t\n\r"
#: The deepest nesting of arrays and objects (the document itself is level 1) in any JSON we read or
#: write: far more than any event needs, and far less than what recursion in a parser or scrubber survives.
MAX_DEPTH = 32


class _Context:
    # The attributes the C scanner reads from a json.JSONDecoder.
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: "ClassVar[dict[str, str]]" = {}  # noqa: RUF012  # read by the C scanner, never written

    @staticmethod
    def parse_constant(name: str) -> float:
        return float(name.replace("Infinity", "inf"))


_scan: "Callable[[str, int], tuple[Any, int]] | None" = None


_quote: "Callable[[str], str] | None" = None


def quote_function() -> "Callable[[str], str]":
    """The fastest function that makes a JSON string literal (ASCII only)."""
    global _quote
    if _quote is None:
        from _json import encode_basestring_ascii

        _quote = encode_basestring_ascii
    return _quote


def quote(text: str) -> str:
    """A JSON string literal, ASCII only."""
    return quote_function()(text)


def loads(text: "str | bytes", max_depth: int = MAX_DEPTH) -> "Any":
    """Parse one JSON document; ValueError when it is not exactly one or nests deeper than ``max_depth``."""
    global _scan
    if _scan is None:
        from _json import make_scanner

        _scan = make_scanner(_Context())  # type: ignore[arg-type]  # duck-typed by the C code
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration as exc:
        raise ValueError(f"invalid JSON at offset {exc.value}") from None
    except RecursionError:  # the C scanner's own limit, far past ours
        raise ValueError(f"JSON nested deeper than {max_depth} levels") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"extra data after JSON at offset {end}")
    if too_deep(text, value, max_depth):
        raise ValueError(f"JSON nested deeper than {max_depth} levels")
    return value


def too_deep(text: "str | bytes", value: "Any", max_depth: int = MAX_DEPTH) -> bool:
    """Whether ``value``, parsed from ``text``, nests arrays and objects deeper than ``max_depth``.

    Text with no more brackets than the limit cannot nest deeper, so the usual
    shallow event costs two counts; only the rest is walked, without recursion.
    """
    brackets = text.count("[") + text.count("{") if isinstance(text, str) else text.count(b"[") + text.count(b"{")
    if brackets <= max_depth:
        return False
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in item if isinstance(child, (dict, list)))
    return False


def dumps(value: "Any") -> str:
    """Compact ASCII JSON for the plain types the client writes; anything else becomes a string.

    ValueError when arrays and objects nest deeper than :data:`MAX_DEPTH` (or a
    container holds itself): no reader of ours would take it.
    """
    return _encode(value, quote_function(), MAX_DEPTH)


def _encode(value: "Any", q: "Callable[[str], str]", room: int) -> str:
    if isinstance(value, str):
        return q(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return "null"
        return float.__repr__(value)
    if isinstance(value, (dict, list, tuple)) and room <= 0:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        return "{" + ",".join(f"{q(str(k))}:{_encode(v, q, room - 1)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_encode(v, q, room - 1) for v in value) + "]"
    return q(str(value))
