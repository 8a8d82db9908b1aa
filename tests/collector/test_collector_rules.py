"""One set of event rules: every path that reads a client batch stores the same rows and rejects the same events.

Hypothesis generates batches of valid and subtly invalid events (types one off, limits one past, times that look
like RFC 3339 but are not) and each is read by the fast path (the whole batch in one decode), the event-at-a-time
path, and the slow path (the JSON parser and ``wire.Event.from_dict``, by which the daemon's queue reads events
too). The OpenAPI document is derived from the same rules; here it is checked against them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ox_telemetry.collector.errors import RequestError
from ox_telemetry.collector.ingest import (
    INT_RANGES,
    MAX_LENGTH,
    REQUIRED,
    Parsed,
    client_batch_each,
    client_batch_slow,
    client_batch_whole,
)
from ox_telemetry.collector.openapi import EVENT
from ox_telemetry.fields import FIELDS, INT64
from ox_telemetry.wire import Event

RECEIVED_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z

_TIMES = st.sampled_from([
    "2025-12-31T23:59:00Z", "2025-12-31T23:59:00.123456Z", "2025-12-31T23:59:00.1234567Z", "2025-12-31T23:59:00+02:00",
    "2025-12-31T23:59:00.5-05:30", "0001-01-01T00:00:00Z", "2024-02-29T12:00:00Z", "1970-01-01T00:00:00Z",
    "2025-12-31 23:59:00Z", "2025-12-31T23:59:00", "2025-12-31t23:59:00z", "2025-12-31T23:59:00+0200",
    "2025-W01-1T00:00:00Z", "2025-12-31T23:59:00.Z", "2025-02-30T00:00:00Z", "2025-12-31T24:00:00Z", "",
    "9999-12-31T23:59:59Z", "2025-12-31T23:59:60Z", "2025-12-31T23:59:00,5Z", "2025-12-31T23:59:00Z\n",
])
_TEXT = st.text(max_size=8) | st.just("\u00e9\u4e2d\U0001f600") | st.just("a\u0000b")
_INTS = st.sampled_from([0, 1, -1, INT64[0], INT64[1], INT64[0] - 1, INT64[1] + 1]) | st.integers()
_WRONG = st.sampled_from([None, True, False, 1, 1.5, 1.0, "1", [], {}, ["a"], {"a": 1}])


def _value(name: str, kind: str) -> st.SearchStrategy[Any]:
    if name in MAX_LENGTH:
        limit = MAX_LENGTH[name]
        good: st.SearchStrategy[Any] = st.sampled_from(["", "x" * limit, "x" * (limit + 1), "\u00e9" * limit])
    elif kind == "s":
        good = _TEXT
    elif kind == "i":
        good = _INTS
    elif kind == "b":
        good = st.booleans()
    elif kind == "t":
        good = _TIMES
    else:
        good = st.dictionaries(_TEXT, _TEXT, max_size=3) | st.just({"k": 1}) | st.just({"k": None})
    return st.one_of(good, good, good, _WRONG)


_EVENT = st.fixed_dictionaries(
    {"type": st.sampled_from(["command_complete", "session_start", "", "x"]) | _WRONG},
    optional={**{f.name: _value(f.name, f.kind) for f in FIELDS if f.name != "type"}, "unknown": _WRONG},
)
_ITEM = _EVENT | _EVENT | _EVENT | _WRONG


def _outcome(parsed: Parsed) -> tuple[list[Any], list[tuple[int, str, str]]]:
    return ([tuple(row) for row in parsed.client_rows],
            [(r.index, r.code, r.reason) for r in parsed.rejected])


@settings(max_examples=300, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_ITEM, max_size=6), _TIMES | st.none())
def test_every_path_stores_and_rejects_the_same(events: list[Any], sent: str | None) -> None:
    body = json.dumps({"events": events, "cli_version": "1.0", "os": "linux", "arch": "amd64",
                       "batch_timestamp": sent}).encode()
    try:
        reference = _outcome(client_batch_slow(body, RECEIVED_US))
    except RequestError as exc:  # the envelope is unreadable: every path must say so
        with pytest.raises(RequestError) as caught:
            client_batch_each(body, RECEIVED_US)
        assert caught.value.code == exc.code
        assert client_batch_whole(body, RECEIVED_US) is None
        return
    assert _outcome(client_batch_each(body, RECEIVED_US)) == reference
    whole = client_batch_whole(body, RECEIVED_US)
    if whole is not None:  # the fast path takes a batch only when it is sure of all of it
        assert _outcome(whole) == reference
        assert not reference[1]


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(_EVENT)
def test_the_daemon_queue_reads_an_event_the_collector_takes(item: dict[str, Any]) -> None:
    # wire.Event.from_dict is how the client and daemon read queued events back: anything the collector stores
    # must be an event it reads, with the same type.
    body = json.dumps({"events": [item]}).encode()
    parsed = client_batch_each(body, RECEIVED_US)
    if parsed.client_rows:
        assert Event.from_dict(item).type == item["type"]


def test_the_openapi_document_states_the_rules() -> None:
    properties = EVENT["properties"]
    assert set(properties) == {f.name for f in FIELDS}
    assert EVENT["required"] == list(REQUIRED)
    for name in REQUIRED:
        assert properties[name]["minLength"] == 1
    for name, limit in MAX_LENGTH.items():
        assert properties[name]["maxLength"] == limit
    for name, limits in INT_RANGES.items():
        assert (properties[name]["minimum"], properties[name]["maximum"]) == limits
