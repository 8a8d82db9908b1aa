"""PostgreSQL storage (psycopg 3): several collector processes, on several machines, may share one store.

A write copies the rows into session-local staging tables (``COPY``, the
fastest way in), moves them into the event tables with one statement that
skips stored ones and returns which were new, and adds exactly those to the
rollups, all in one transaction.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors

from .base import ConnectionPool, Packed, Storage, StorageError, StoreUnavailable, WriteJob, installs_of, new_rows
from .rollup import rollup_of, upsert_rollup
from .schema import (
    CLIENT_COLUMNS,
    CLIENT_NAMES,
    DAEMON_COLUMNS,
    DAEMON_NAMES,
    LEVEL_NAMES,
    LEVELS,
    Key,
    Row,
    SchemaTooNew,
    migrate,
)

# Any constant: it serialises schema migrations of collectors starting together.
_MIGRATION_LOCK = 0x6F78_7465_6C65
_RETRIES = 5  # deadlocks between collectors updating the same rollup rows are retried
_STAGING_TYPES = {"bool": "BOOLEAN", "time": "BIGINT", "time?": "BIGINT", "int": "BIGINT", "small?": "SMALLINT"}


def _staging(name: str, columns: tuple[tuple[str, str], ...]) -> str:
    cols = ", ".join(f"{col} {_STAGING_TYPES.get(kind, 'TEXT')}" for col, kind in columns)
    return f"CREATE TEMP TABLE IF NOT EXISTS {name} ({cols}) ON COMMIT DELETE ROWS"


def _move(table: str, staging: str, columns: tuple[tuple[str, str], ...]) -> str:
    names = [name for name, _ in columns]
    select = ", ".join(f"{n}::jsonb" if kind == "json?" else n for n, kind in columns)
    return (
        f"INSERT INTO {table} ({', '.join(names)}) SELECT {select} FROM {staging} "
        f"ON CONFLICT DO NOTHING RETURNING coalesce(client_time, 0), {names[0]}"
    )


# Client rows are staged with the request's installation id (a column of the table, not of the row).
_CLIENT_STAGED = (*CLIENT_COLUMNS, ("client_id", "text?"))
_CREATE_STAGING = (_staging("staging_events", _CLIENT_STAGED), _staging("staging_daemon", DAEMON_COLUMNS))
# (COPY into staging, move into the table returning the new keys) for client events, then daemon events
_STEPS = (
    (f"COPY staging_events ({', '.join(CLIENT_NAMES)}, client_id) FROM STDIN",
     _move("events", "staging_events", _CLIENT_STAGED)),
    (f"COPY staging_daemon ({', '.join(DAEMON_NAMES)}) FROM STDIN",
     _move("daemon_events", "staging_daemon", DAEMON_COLUMNS)),
)
# Each rollup table gets all its rows in one statement, as arrays (one round trip, not one a row).
_UPSERTS = {
    level: upsert_rollup(
        LEVEL_NAMES[level],
        "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::bigint[], %s::bigint[])",
        "SELECT * FROM unnest(%s::bigint[], %s::text[], %s::int[], %s::bigint[])",
        "SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[])",
    )
    for level in LEVELS
}
# Sketches are read, merged and written back: one collector at a time (any constant names the lock).
_INSTALLS_LOCK = 0x6F78_696E_7374
_READ_INSTALLS = (
    "SELECT i.day, i.mask, i.version, i.os_arch, i.command, i.sketch, i.unknown FROM installs_1d AS i "
    "JOIN unnest(%s::bigint[], %s::int[], %s::text[], %s::text[], %s::text[]) AS k (day, mask, version, os_arch, "
    "command) USING (day, mask, version, os_arch, command)"
)
_WRITE_INSTALLS = (
    "INSERT INTO installs_1d SELECT * FROM unnest(%s::bigint[], %s::int[], %s::text[], %s::text[], %s::text[], "
    "%s::bytea[], %s::bigint[]) ON CONFLICT (day, mask, version, os_arch, command) DO UPDATE SET "
    "sketch = excluded.sketch, unknown = excluded.unknown"
)
_PLACEHOLDER = re.compile(r"(?<![:\w]):(\w+)")


def redact(url: str) -> str:
    """``url`` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresStorage(Storage):
    """Events in a PostgreSQL database (the schema is created and migrated here)."""

    dialect = "postgres"

    def __init__(self, url: str) -> None:
        self.url = url
        self._writer: psycopg.Connection[Any] | None = None
        self._health: psycopg.AsyncConnection[Any] | None = None
        self._health_lock = asyncio.Lock()
        try:
            self._migrate()
        except (psycopg.Error, SchemaTooNew) as exc:
            raise StorageError(f"cannot open PostgreSQL database {redact(url)}: {exc}") from exc
        self._readers: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(self._connect, _close)

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=10)

    def _migrate(self) -> None:
        with self._connect() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))  # one collector migrates at once
            migrate(conn, "postgres")

    def _writer_connection(self) -> psycopg.Connection[Any]:
        if self._writer is None or self._writer.closed or self._writer.broken:
            if self._writer is not None:
                self._writer.close()
            self._writer = self._connect()
            for statement in _CREATE_STAGING:
                self._writer.execute(statement)
        return self._writer

    def write(self, jobs: Sequence[WriteJob]) -> list[int]:
        """See :meth:`Storage.write`."""
        for attempt in range(_RETRIES):
            try:
                return self._write_once(jobs)
            except (errors.DeadlockDetected, errors.SerializationFailure):
                if attempt == _RETRIES - 1:
                    raise StorageError("PostgreSQL write failed: repeated deadlocks") from None
            except psycopg.OperationalError as exc:
                raise StoreUnavailable(f"PostgreSQL write failed: {exc}") from exc
            except psycopg.Error as exc:
                raise StorageError(f"PostgreSQL write failed: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _write_once(self, jobs: Sequence[WriteJob]) -> list[int]:
        # Requests in the order of their first event's key, each request's rows as they came: two collectors
        # that both got the same redelivered requests then insert them in one order and wait for each other
        # without a cycle (a deadlock: PostgreSQL takes a second to find one, then a writer starts again).
        order = sorted(range(len(jobs)), key=lambda i: _first_key(jobs[i]))
        ordered = [jobs[i] for i in order]
        conn = self._writer_connection()
        with conn.transaction(), conn.cursor() as cur:
            client = _store(cur, *_STEPS[0], [job.client for job in ordered],
                            [(job.client_id or None,) for job in ordered])
            daemon = _store(cur, *_STEPS[1], [job.daemon for job in ordered], [() for _ in ordered])
            stored = [job.stored(c, d) for job, c, d in zip(ordered, client, daemon, strict=True)]
            rollup = rollup_of(t for _, t in stored)
            errors = rollup.error_rows()
            with conn.pipeline():
                for level, (count_rows, duration_rows) in rollup.rows().items():
                    counts_sql, durations_sql, errors_sql = _UPSERTS[level]
                    if count_rows:
                        cur.execute(counts_sql, _columns(count_rows))
                    if duration_rows:
                        cur.execute(durations_sql, _columns(duration_rows))
                    if errors[level]:
                        cur.execute(errors_sql, _columns(errors[level]))
            installs = installs_of(ordered, stored)
            if installs:
                cells = installs.cells()
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_INSTALLS_LOCK,))
                found = {tuple(row[:5]): (row[5], int(row[6])) for row in cur.execute(_READ_INSTALLS, _columns(cells))}
                rows = [(*cell, *installs.merged(cell, *found.get(cell, (None, 0)))) for cell in cells]
                cur.execute(_WRITE_INSTALLS, _columns(rows))
        counts = [0] * len(jobs)
        for i, (count, _) in zip(order, stored, strict=True):
            counts[i] = count
        return counts

    def delete_batches(self, where: str, params: Mapping[str, Any], keys_before: int | None = None) -> int:
        """See :meth:`Storage.delete_batches`; ``keys_before`` needs nothing here (an event's row is its key)."""
        sql = _PLACEHOLDER.sub(r"%(\1)s", where)
        try:
            with self._connect() as conn, conn.transaction():
                return sum(conn.execute(f"DELETE FROM {table} WHERE {sql}", dict(params)).rowcount
                           for table in ("events", "daemon_events"))
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"PostgreSQL delete failed: {exc}") from exc
        except psycopg.Error as exc:
            raise StorageError(f"PostgreSQL delete failed: {exc}") from exc

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        """See :meth:`Storage.query`."""
        try:
            with self._readers.connection() as conn:
                rows: list[Row] = conn.execute(_PLACEHOLDER.sub(r"%(\1)s", sql), dict(params or {})).fetchall()
                return rows
        except psycopg.Error as exc:
            raise StorageError(f"PostgreSQL query failed: {exc}") from exc

    async def ping(self) -> None:
        """See :meth:`Storage.ping`: on a connection of its own, kept open (a check still passes when PostgreSQL
        refuses new connections but serves this collector's), and asynchronous, so the caller's timeout abandons
        a store that does not answer; a blocked thread could not be abandoned, and each check would leave one."""
        async with self._health_lock:
            try:
                if self._health is None or self._health.closed or self._health.broken:
                    self._health = await psycopg.AsyncConnection.connect(self.url, autocommit=True,
                                                                         connect_timeout=10)
                await self._health.execute("SELECT 1")
            except BaseException as exc:  # psycopg.Error, or cancelled by the timeout mid-query
                self._close_health()
                if isinstance(exc, psycopg.Error):
                    raise StoreUnavailable(f"PostgreSQL does not answer: {exc}") from exc
                raise

    def _close_health(self) -> None:
        if self._health is not None:
            self._health.pgconn.finish()  # what AsyncConnection.close does, callable from any thread
            self._health = None

    def close(self) -> None:
        """See :meth:`Storage.close`."""
        self._close_health()
        self._readers.close()
        if self._writer is not None:
            self._writer.close()

    def describe(self) -> str:
        """See :meth:`Storage.describe`."""
        return redact(self.url)


def _store(cur: psycopg.Cursor[Any], copy_statement: str, move: str, packs: list[Packed],
           extra: list[tuple[Any, ...]]) -> list[list[Row] | None]:
    """COPY the rows of every pack in (each with its pack's ``extra`` values after it) and move the new ones into
    their table; per pack, None when all its rows were new, else the rows stored."""
    rows = [pack.rows() for pack in packs]
    total = sum(map(len, rows))
    if total:
        with cur.copy(copy_statement) as copy:
            for pack_rows, tail in zip(rows, extra, strict=True):
                for row in pack_rows:
                    copy.write_row((*row, *tail))
        keys = cur.execute(move).fetchall()
        if len(keys) != total:
            # Rows without an id are always new; others are new when their key came back.
            new = {(t, k) for t, k in keys if k is not None}
            return [new_rows(pack_rows, new) for pack_rows in rows]
    return [None] * len(packs)


def _first_key(job: WriteJob) -> Key:
    """The identity of a job's first event that has one; (0, "") for a job of events without ids."""
    keys = job.client.keys or job.daemon.keys
    return keys[0] if keys else (0, "")


def _columns(rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows as one list per column: the arrays ``unnest`` takes."""
    return [list(column) for column in zip(*rows, strict=True)]


def _close(conn: psycopg.Connection[Any]) -> None:
    conn.close()
