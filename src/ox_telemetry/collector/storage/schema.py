"""The stored tables, written once for both dialects, and the migrations that create them.

Times are integers: microseconds since the Unix epoch (UTC) for events, and
seconds for rollup buckets. Rollup tables hold pre-aggregated counts at three
granularities (minute, hour, day) so the dashboard never scans the events.

``events`` and ``daemon_events`` have the columns below in both dialects. In
PostgreSQL they are tables, a row an event. In SQLite (from version 2) they are
views: each request's rows are stored as one JSON array in ``events_batches``
(``daemon_events_batches``), and their ids in ``events_keys``
(``daemon_events_keys``), which refuses duplicates: an id and a share of one
array cost SQLite much less to insert than a row of 26 columns with its index.
Reading through the views costs more; the dashboard reads the rollups.

A stored row's columns are in the order its table was created and migrated in:
SQLite's views read a row's values by position. So the client columns are
written out here, as the migrations made them, and checked against the event's
fields (``fields.py``) at import: a field added there without a migration here
stops the collector from starting, with a message saying what to write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from ...fields import FIELDS

Dialect = Literal["sqlite", "postgres"]

#: Rollup granularities in seconds, finest first; table suffixes below.
LEVELS: tuple[int, ...] = (60, 3600, 86400)
LEVEL_NAMES: dict[int, str] = {60: "1m", 3600: "1h", 86400: "1d"}

# Logical column kinds -> (SQLite type, PostgreSQL type).
_TYPES: dict[str, tuple[str, str]] = {
    "key": ("TEXT", "TEXT"),  # unique id sent by the producer; NULL when it sent none
    "text": ("TEXT NOT NULL", "TEXT NOT NULL"),
    "text?": ("TEXT", "TEXT"),
    "time": ("INTEGER NOT NULL", "BIGINT NOT NULL"),
    "time?": ("INTEGER", "BIGINT"),
    "int": ("INTEGER NOT NULL", "BIGINT NOT NULL"),
    "bool": ("INTEGER NOT NULL", "BOOLEAN NOT NULL"),
    "json?": ("TEXT", "JSONB"),
    "small?": ("INTEGER", "SMALLINT"),
}

#: Client events (a Batch's events plus the batch fields), in row-tuple order. The event's own fields are
#: declared in fields.py (each with its column and kind); the others are computed by ingest.
CLIENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("event_id", "key"),
    ("client_time", "time?"),  # as the client sent it; NULL when absent or Go's zero time
    ("type", "text"),
    ("event_time", "time"),  # client time corrected for clock skew
    ("received_at", "time"),
    ("time_flag", "text?"),  # NULL, 'future', 'past' or 'missing'
    ("session_id", "text"),
    ("agent_id", "text"),
    ("command", "text"),
    ("duration_ms", "int"),
    ("success", "bool"),
    ("error_code", "text"),
    ("metadata", "json?"),
    ("repo_id", "text"),
    ("api_endpoint", "text"),
    ("path", "text"),
    ("agent_type", "text"),
    ("model", "text"),
    ("oxsid", "text"),
    ("prime_call_count", "int"),
    ("coworker_name", "text"),
    ("coworker_model", "text"),
    ("cli_version", "text"),
    ("os", "text"),
    ("arch", "text"),
    ("duration_bin", "small?"),  # histogram bin of duration_ms for command runs (see stats.duration_bin)
)

#: Daemon events (one element of a daemon upload's ``events`` plus its ``clientid``).
DAEMON_COLUMNS: tuple[tuple[str, str], ...] = (
    ("uuid", "key"),
    ("client_time", "time?"),
    ("client_id", "text"),
    ("event", "text"),
    ("event_time", "time"),
    ("received_at", "time"),
    ("time_flag", "text?"),
    ("tslocal", "text?"),
    ("props", "json?"),
)

CLIENT_NAMES = tuple(name for name, _ in CLIENT_COLUMNS)
DAEMON_NAMES = tuple(name for name, _ in DAEMON_COLUMNS)


def field_column_problems(columns: tuple[tuple[str, str], ...] = CLIENT_COLUMNS) -> list[str]:
    """How ``columns`` disagree with the event's fields (fields.py): a missing column, or one of another kind."""
    stored = dict(columns)
    problems = []
    for f in FIELDS:
        if f.column not in stored:
            problems.append(
                f"event field {f.name!r} has no column: write migration {SCHEMA_VERSION + 1} in "
                f"collector/storage/schema.py, adding column {f.column!r} ({f.sql}) to table 'events' (SQLite: "
                f"recreate the view with the new column last), and append it to CLIENT_COLUMNS")
        elif stored[f.column] != f.sql:
            problems.append(f"event field {f.name!r} is declared {f.sql!r} in fields.py but its column "
                            f"{f.column!r} is {stored[f.column]!r}: write migration {SCHEMA_VERSION + 1}")
    return problems


# Each table's (id, own time) columns, by which duplicates are found (see dedup_key); the same in both tables.
_KEY, _TIME = CLIENT_NAMES.index("event_id"), CLIENT_NAMES.index("client_time")
if (DAEMON_NAMES.index("uuid"), DAEMON_NAMES.index("client_time")) != (_KEY, _TIME):
    raise RuntimeError("events and daemon_events must have their id and client_time at the same positions")


#: An event as stored: its columns' values, in the order above.
Row = tuple[Any, ...]
#: Rows a column at a time (see ``columns``).
Columns = Sequence[Sequence[Any]]
#: A row's identity: (own time or 0, id).
Key = tuple[int, str]


def dedup_key(row: tuple[Any, ...]) -> Key | None:
    """A row's identity for duplicate detection, (own time or 0, id), as the unique index has it.

    None for rows without an id: they are never duplicates.
    """
    return None if row[_KEY] is None else (row[_TIME] or 0, row[_KEY])


def columns(rows: Iterable[tuple[Any, ...]], width: int) -> list[tuple[Any, ...]]:
    """``rows`` a column at a time (``width`` empty ones for no rows): what is counted or checked across rows
    is then done in C, by zip, map and Counter over whole columns, where a Python step per row would cost more
    than all the rest."""
    return list(zip(*rows, strict=True)) or [()] * width


def rows_of(table: Columns) -> list[Row]:
    """The rows of a ``columns`` table."""
    return list(zip(*table, strict=True))


def dedup_keys(table: Columns) -> list[Key]:
    """``dedup_key`` of each row that has an id, from the rows' ``columns``; in C where every row has both."""
    keys: list[Key] = list(zip(table[_TIME], table[_KEY], strict=True))
    if all(map(all, keys)):
        return keys
    return [(time or 0, id_) for time, id_ in keys if id_ is not None]


def _table(dialect: Dialect, name: str, key: str, columns: tuple[tuple[str, str], ...]) -> list[str]:
    index = 0 if dialect == "sqlite" else 1
    ident = "INTEGER PRIMARY KEY" if dialect == "sqlite" else "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
    body = ",\n  ".join([f"id {ident}"] + [f"{col} {_TYPES[kind][index]}" for col, kind in columns])
    return [
        f"CREATE TABLE {name} (\n  {body}\n)",
        # Duplicates are refused here, at insert. A redelivery repeats the event's own time as well as its
        # id; leading with that time keeps inserts near the index's right edge, where random ids alone
        # would dirty a page per event. NULL ids (producers without) never collide.
        f"CREATE UNIQUE INDEX {name}_{key} ON {name} ((coalesce(client_time, 0)), {key})",
    ]


def _rollups(dialect: Dialect) -> list[str]:
    big = "INTEGER" if dialect == "sqlite" else "BIGINT"
    tail = " WITHOUT ROWID" if dialect == "sqlite" else ""
    out = []
    for level in LEVELS:
        suffix = LEVEL_NAMES[level]
        out.append(
            f"CREATE TABLE rollup_{suffix} (dim TEXT NOT NULL, bucket {big} NOT NULL, value TEXT NOT NULL, "
            f"n {big} NOT NULL, errors {big} NOT NULL, PRIMARY KEY (dim, bucket, value)){tail}"
        )
        out.append(
            f"CREATE TABLE durations_{suffix} (bucket {big} NOT NULL, command TEXT NOT NULL, bin INTEGER NOT NULL, "
            f"n {big} NOT NULL, PRIMARY KEY (bucket, command, bin)){tail}"
        )
    return out


def keys_table(view: str) -> str:
    """The name of the key table behind SQLite view ``view``."""
    return f"{view}_keys"


def batches_table(view: str) -> str:
    """The name of the table of JSON arrays behind SQLite view ``view``."""
    return f"{view}_batches"


#: A batch holds the rows of one request: at most this many (ingest.MAX_EVENTS), so a view row id is unique.
BATCH_ROWS = 1000


def _packed(view: str, key: str, columns: tuple[tuple[str, str], ...]) -> list[str]:
    """SQLite: ``view`` as a key table, a table of JSON arrays of rows, and the view over both,
    moving the rows of table ``view`` (version 1) into them."""
    names = [name for name, _ in columns]
    keys, batches = keys_table(view), batches_table(view)
    fields = ", ".join(f"j.value ->> {i} AS {name}" for i, name in enumerate(names))
    return [
        # Duplicates are refused here, at insert; see _table for why the time leads.
        f"CREATE TABLE {keys} (time INTEGER NOT NULL, id TEXT NOT NULL, PRIMARY KEY (time, id)) WITHOUT ROWID",
        f"CREATE TABLE {batches} (id INTEGER PRIMARY KEY, rows TEXT NOT NULL)",
        f"INSERT INTO {keys} SELECT coalesce(client_time, 0), {key} FROM {view} WHERE {key} IS NOT NULL",
        f"INSERT INTO {batches} (rows) SELECT json_group_array(json_array({', '.join(names)})) "
        f"FROM (SELECT * FROM {view} ORDER BY id) GROUP BY (id - 1) / {BATCH_ROWS}",
        f"DROP TABLE {view}",
        f"CREATE VIEW {view} AS SELECT b.id * {BATCH_ROWS} + j.key AS id, {fields} "
        f"FROM {batches} AS b, json_each(b.rows) AS j",
    ]


def _v1(dialect: Dialect) -> list[str]:
    return (
        _table(dialect, "events", "event_id", CLIENT_COLUMNS)
        + _table(dialect, "daemon_events", "uuid", DAEMON_COLUMNS)
        + _rollups(dialect)
    )


def _v2(dialect: Dialect) -> list[str]:
    if dialect != "sqlite":
        return []
    return _packed("events", "event_id", CLIENT_COLUMNS) + _packed("daemon_events", "uuid", DAEMON_COLUMNS)


def _v3_tables(dialect: Dialect) -> list[str]:
    """Installations (HyperLogLog sketches, see collector/sketch.py) and failed runs by error code, command,
    version and OS/arch: the rollups of the installs and errors views."""
    big, blob = ("INTEGER", "BLOB") if dialect == "sqlite" else ("BIGINT", "BYTEA")
    tail = " WITHOUT ROWID" if dialect == "sqlite" else ""
    out = [
        f"CREATE TABLE installs_1d (day {big} NOT NULL, mask INTEGER NOT NULL, version TEXT NOT NULL, "
        f"os_arch TEXT NOT NULL, command TEXT NOT NULL, sketch {blob}, unknown {big} NOT NULL, "
        f"PRIMARY KEY (day, mask, version, os_arch, command)){tail}",
    ]
    failed = "success = 0" if dialect == "sqlite" else "NOT success"
    for level in LEVELS:
        table = f"errors_{LEVEL_NAMES[level]}"
        out.append(
            f"CREATE TABLE {table} (bucket {big} NOT NULL, error_code TEXT NOT NULL, command TEXT NOT NULL, "
            f"version TEXT NOT NULL, os_arch TEXT NOT NULL, n {big} NOT NULL, "
            f"PRIMARY KEY (bucket, error_code, command, version, os_arch)){tail}")
        # The failed runs stored before: counted as the rollups count them (at the receive time when flagged).
        bucket = f"(CASE WHEN time_flag IS NULL THEN event_time ELSE received_at END) / {level * 1_000_000} * {level}"
        values = ", ".join(f"substr({col}, 1, {MAX_VALUE})" for col in (
            "error_code", "command", "cli_version", "os || '/' || arch"))
        out.append(
            f"INSERT INTO {table} SELECT {bucket} AS b, {values}, count(*) FROM events "
            f"WHERE type IN ('command_complete', 'command_error') AND (type = 'command_error' OR {failed}) "
            f"GROUP BY b, 2, 3, 4, 5")
    return out


def _v3(dialect: Dialect) -> list[str]:
    """Each stored batch (SQLite) or row (PostgreSQL) keeps its installation id and receive time, so ``forget``
    and retention delete whole batches; plus the installs and errors rollups."""
    if dialect == "postgres":
        return [
            *_v3_tables(dialect),
            "ALTER TABLE events ADD COLUMN client_id TEXT",
            "CREATE INDEX events_client_id ON events (client_id) WHERE client_id IS NOT NULL",
            "CREATE INDEX events_received_at ON events (received_at)",
            "CREATE INDEX daemon_events_client_id ON daemon_events (client_id)",
            "CREATE INDEX daemon_events_received_at ON daemon_events (received_at)",
        ]
    out = _v3_tables(dialect)
    for view, columns, client in (("events", CLIENT_COLUMNS, None),
                                  ("daemon_events", DAEMON_COLUMNS, DAEMON_NAMES.index("client_id"))):
        batches = batches_table(view)
        received = [name for name, _ in columns].index("received_at")
        out += [
            f"ALTER TABLE {batches} ADD COLUMN client_id TEXT",
            f"ALTER TABLE {batches} ADD COLUMN received_at INTEGER NOT NULL DEFAULT 0",
            f"UPDATE {batches} SET received_at = coalesce((SELECT max(j.value ->> {received}) "
            f"FROM json_each(rows) AS j), 0)",
            f"CREATE INDEX {batches}_client_id ON {batches} (client_id) WHERE client_id IS NOT NULL",
            f"CREATE INDEX {batches}_received_at ON {batches} (received_at)",
        ]
        if client is not None:  # a batch moved from version 1 may mix installations: then it names none
            out.append(f"UPDATE {batches} SET client_id = (SELECT CASE WHEN count(DISTINCT j.value ->> {client}) = 1 "
                       f"THEN max(j.value ->> {client}) END FROM json_each(rows) AS j)")
    names = [name for name, _ in CLIENT_COLUMNS]
    fields = ", ".join(f"j.value ->> {i} AS {name}" for i, name in enumerate(names))
    out += [
        "DROP VIEW events",
        f"CREATE VIEW events AS SELECT b.id * {BATCH_ROWS} + j.key AS id, {fields}, b.client_id AS client_id "
        f"FROM {batches_table('events')} AS b, json_each(b.rows) AS j",
    ]
    return out


#: Longest dimension value kept in a rollup key (PostgreSQL's B-tree entries are bounded).
MAX_VALUE = 200

#: Migration n (1-based) brings a store from version n-1 to n.
MIGRATIONS: tuple[Callable[[Dialect], list[str]], ...] = (_v1, _v2, _v3)
SCHEMA_VERSION = len(MIGRATIONS)
if _problems := field_column_problems():
    raise RuntimeError("; ".join(_problems))


class SchemaTooNew(Exception):
    """The store was migrated by a newer collector."""


def pending_migrations(dialect: Dialect, current: int) -> list[tuple[int, list[str]]]:
    """Statements to run, per target version, to bring a store at ``current`` up to date.

    Raises SchemaTooNew for a store written by a newer collector: running old
    code against a newer schema could corrupt it.
    """
    if current > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"the database schema is version {current}, newer than this collector's {SCHEMA_VERSION}; "
            "upgrade ox-telemetry"
        )
    return [(version, MIGRATIONS[version - 1](dialect)) for version in range(current + 1, SCHEMA_VERSION + 1)]


def migrate(conn: Any, dialect: Dialect) -> None:
    """Bring the store behind ``conn`` (sqlite3 or psycopg) up to date, in the caller's transaction.

    Raises SchemaTooNew for a store migrated by a newer collector.
    """
    mark = "?" if dialect == "sqlite" else "%s"
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    current = int(row[0] or 0) if row else 0
    for version, statements in pending_migrations(dialect, current):
        for statement in statements:
            conn.execute(statement)
        conn.execute("DELETE FROM schema_version")
        conn.execute(f"INSERT INTO schema_version (version) VALUES ({mark})", (version,))
