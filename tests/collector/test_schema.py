"""One event schema: every place that knows the event's fields agrees with fields.py.

Adding a field is a line in fields.py plus a storage migration. What is derived from fields.py follows by
itself; what cannot be (the typed ``Event.__init__``, the stored columns that migrations made) is checked here
or at import, and a field added only to fields.py stops the collector with a message naming the migration.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from ox_telemetry.collector.ingest import client_batch_each, client_batch_slow
from ox_telemetry.collector.openapi import EVENT
from ox_telemetry.collector.storage import schema
from ox_telemetry.fields import FIELDS, NAMES, Field
from ox_telemetry.wire import Event

SRC = Path(__file__).resolve().parents[2] / "src"
RECEIVED_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def _sample(field: Field, index: int) -> object:
    """A value of ``field``'s kind that no other field has."""
    return {"s": f"v{index}", "i": 1000 + index, "b": True, "t": "2025-12-31T23:59:00Z",
            "m": {"k": f"v{index}"}}[field.kind]


def test_the_client_types_follow_the_fields() -> None:
    assert Event.__slots__ == NAMES
    assert tuple(inspect.signature(Event.__init__).parameters)[1:] == NAMES, "wire.Event.__init__ takes each field"
    assert tuple(Event.__annotations__) == NAMES, "wire.Event annotates each field"
    full = Event(**{f.name: _sample(f, i) for i, f in enumerate(FIELDS) if f.kind != "t"})
    assert tuple(json.loads(full.to_json())) == NAMES  # every key, in wire order
    assert tuple(json.loads(Event().to_json())) == tuple(f.name for f in FIELDS if f.always)
    assert Event.from_json(full.to_json()).to_json() == full.to_json()


def test_the_collector_follows_the_fields() -> None:
    assert schema.field_column_problems() == []
    properties = EVENT["properties"]
    assert tuple(properties) == NAMES
    for f in FIELDS:
        assert properties[f.name]["description"] == f.description
    # Each field's value lands in its own column, on the fast path (its struct) and the slow path alike.
    event = {f.name: _sample(f, i) for i, f in enumerate(FIELDS)}
    body = json.dumps({"events": [event], "batch_timestamp": "2025-12-31T23:59:00Z"}).encode()
    for parse in (client_batch_each, client_batch_slow):
        (row,) = parse(body, RECEIVED_US).client_rows
        stored = dict(zip(schema.CLIENT_NAMES, row, strict=True))
        for f in FIELDS:
            if f.kind in "sib":
                assert stored[f.column] == event[f.name], f.name
        assert json.loads(stored["metadata"]) == event["metadata"]
        assert stored["client_time"] == RECEIVED_US - 60_000_000


def test_a_field_added_without_a_migration_stops_the_collector_naming_the_migration(tmp_path: Path) -> None:
    code = textwrap.dedent("""
        import ox_telemetry.fields as fields
        fields.FIELDS += (fields.Field("plan", "s", "text", "The user's plan."),)
        import ox_telemetry.collector.ingest
    """)
    done = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(SRC)!r})\n{code}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert f"event field 'plan' has no column: write migration {schema.SCHEMA_VERSION + 1}" in done.stderr


def test_a_field_whose_column_kind_differs_is_named() -> None:
    columns = tuple((name, "text" if name == "duration_ms" else kind) for name, kind in schema.CLIENT_COLUMNS)
    (problem,) = schema.field_column_problems(columns)
    assert "'duration_ms' is declared 'int'" in problem
    assert f"write migration {schema.SCHEMA_VERSION + 1}" in problem
