"""Event and Batch: the reference's vectors, the omitempty rules, and writing that never fails."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

import ox_telemetry
from ox_telemetry import Batch, Event
from ox_telemetry.wire import MAX_EVENT_BYTES, MAX_TEXT, new_event_id
from reference_vectors import VECTORS

EXPECTED_TYPES = {
    "EVENT_COMMAND_START": "command_start", "EVENT_COMMAND_COMPLETE": "command_complete",
    "EVENT_COMMAND_ERROR": "command_error", "EVENT_SESSION_START": "session_start",
    "EVENT_SESSION_END": "session_end", "EVENT_GUIDANCE_FETCH": "guidance_fetch",
    "EVENT_AUTH_SUCCESS": "auth_success", "EVENT_AUTH_FAILURE": "auth_failure",
    "EVENT_GUIDANCE_FETCH_ERROR": "guidance_fetch_error",
    "EVENT_ATTRIBUTION_SHOWN": "attribution_shown", "EVENT_PRIME_EXCESSIVE": "prime_excessive",
    "EVENT_DAEMON_START_FAILURE": "daemon:start_failure", "EVENT_COWORKER_LOAD": "coworker_load",
}


def test_event_type_constants() -> None:
    for name, value in EXPECTED_TYPES.items():
        assert getattr(ox_telemetry, name) == value


def _vector_lines() -> list[str]:
    return (VECTORS / "events.jsonl").read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("line", _vector_lines())
def test_reads_every_reference_event(line: str) -> None:
    event = Event.from_json(line)
    original = json.loads(line)
    written = json.loads(event.to_json())
    # Same keys, same values, except that Python keeps microseconds, not nanoseconds.
    assert written.keys() == original.keys()
    for key, value in original.items():
        if key == "timestamp":
            assert Event.from_json(json.dumps({"type": "x", "timestamp": value})).timestamp == event.timestamp
        else:
            assert written[key] == value, key


def test_reference_timestamps_parse_to_aware_datetimes() -> None:
    events = [Event.from_json(line) for line in _vector_lines()]
    stamps = [e.timestamp for e in events]
    assert all(s is not None and s.tzinfo is not None for s in stamps)
    assert stamps[0] == datetime(2026, 3, 16, 17, 0, 0, 123456, tzinfo=timezone.utc)
    assert stamps[0].utcoffset() == timedelta(hours=-7)
    assert stamps[2].utcoffset() == timedelta(hours=5, minutes=30)
    assert stamps[-1] == datetime(1, 1, 1, tzinfo=timezone.utc)
    assert events[4].duration_ms == 9007199254740993  # beyond float precision, kept exactly
    assert events[3].metadata == {"emoji": "ü✓", "nl": "a\nb", "status": "404"}
    assert events[3].path == 'guidance/<go>&"quoted"'


def test_reads_reference_batch() -> None:
    batch = Batch.from_json((VECTORS / "batch.json").read_bytes())
    assert len(batch.events) == 3
    assert (batch.cli_version, batch.os, batch.arch) == ("0.5.1", "linux", "amd64")
    assert batch.timestamp == datetime(2026, 3, 16, 17, 5, tzinfo=timezone.utc)
    again = Batch.from_json(batch.to_json())
    assert again == batch
    assert set(json.loads(batch.to_json())) == {"events", "cli_version", "os", "arch", "batch_timestamp"}
    assert Batch.from_dict(batch.to_dict()) == batch


def test_omitempty_and_always_written_keys() -> None:
    data = Event("session_end").to_dict()
    assert data == {"type": "session_end", "timestamp": "0001-01-01T00:00:00Z", "success": False}
    full = Event("x", duration_ms=5, metadata={"k": "v"}, event_id="id-1").to_dict()
    assert full["duration_ms"] == 5 and full["metadata"] == {"k": "v"} and full["event_id"] == "id-1"


def test_timestamps_written_rfc3339_never_naive() -> None:
    utc = Event("x", timestamp=datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=timezone.utc))
    assert utc.to_dict()["timestamp"] == "2026-01-02T03:04:05.12Z"
    east = Event("x", timestamp=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))))
    assert east.to_dict()["timestamp"] == "2026-01-02T03:04:05+02:00"
    naive = Event("x", timestamp=datetime(2026, 1, 2, 3, 4, 5))
    assert naive.to_dict()["timestamp"] == "2026-01-02T03:04:05Z"


def test_event_is_a_value() -> None:
    a = Event("x", command="c", metadata={"a": "1"})
    b = Event(type="x", command="c", metadata={"a": "1"})
    assert a == b and a != Event("y")
    assert "command='c'" in repr(a) and "session_id" not in repr(a)
    twin = a.copy()
    twin.metadata["b"] = "2"
    assert a.metadata == {"a": "1"}


def test_unknown_keys_ignored_and_missing_event_id_accepted() -> None:
    event = Event.from_json('{"type":"x","timestamp":"2026-01-01T00:00:00Z","success":true,"new_key":[1]}')
    assert event.type == "x" and event.success and event.event_id == ""


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1,2]",
        '{"timestamp":"2026-01-01T00:00:00Z"}',
        '{"type":"x","timestamp":"yesterday"}',
        '{"type":"x","success":"yes"}',
        '{"type":"x","duration_ms":"5"}',
        '{"type":"x","metadata":{"a":1}}',
        '{"type":"x"} trailing',
    ],
)
def test_malformed_events_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError):
        Event.from_json(text)


def test_writing_coerces_and_bounds_values() -> None:
    class Odd:
        def __str__(self) -> str:
            return "odd"

    event = Event(
        "x", command="c" * 5_000_000, metadata={"n": 1, "obj": Odd(), 3: "k"},  # type: ignore[dict-item]
        error_code="bad \udc80 surrogate", duration_ms="12",  # type: ignore[arg-type]
    )
    line = event.to_json()
    assert len(line) <= MAX_EVENT_BYTES
    data = json.loads(line)
    assert len(data["command"]) == MAX_TEXT
    assert data["metadata"] == {"n": "1", "obj": "odd", "3": "k"}
    assert "\udc80" not in data["error_code"]
    assert data["duration_ms"] == 12
    line.encode("utf-8")


def test_huge_metadata_stays_within_event_bound() -> None:
    event = Event("x", metadata={f"k{i}": "\u2603" * 5000 for i in range(100)})
    line = event.to_json()
    assert len(line.encode()) <= MAX_EVENT_BYTES
    assert len(json.loads(line)["metadata"]) == 32


def test_event_ids_are_uuid4() -> None:
    import uuid

    ids = {new_event_id() for _ in range(1000)}
    assert len(ids) == 1000
    parsed = uuid.UUID(ids.pop())
    assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_stats_records_commands() -> None:
    from ox_telemetry import Stats

    stats = Stats("s")
    stats.record_command("a", timedelta(seconds=1), True)
    stats.record_command("a", 0.5, False)
    stats.record_command("b", 2, True)
    assert (stats.command_count, stats.error_count) == (3, 1)
    assert stats.total_duration == timedelta(seconds=3.5)
    assert stats.command_counts == {"a": 2, "b": 1}
    assert stats.first_command is not None and stats.last_command is not None
    assert stats.first_command <= stats.last_command
    copy = stats.copy()
    copy.command_counts["c"] = 1
    assert "c" not in stats.command_counts and copy != stats
