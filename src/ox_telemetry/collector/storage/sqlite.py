"""SQLite storage: one file, WAL journal, group commits from the single writer thread.

Each request's rows go in as one JSON array, their ids into a key table that
refuses duplicates (schema.py says why, and the views that read them back).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any

from .base import (
    ConnectionPool,
    Packed,
    Storage,
    StorageError,
    StoreUnavailable,
    WriteJob,
    installs_of,
    new_rows,
    rows_json,
)
from .rollup import rollup_of, upsert_rollup
from .schema import LEVEL_NAMES, LEVELS, Row, SchemaTooNew, batches_table, keys_table, migrate

_BUSY_MS = 10_000  # another process holding the write lock (a second collector on the same file) waits, not fails
# Rows go in several to a statement, in chunks of these sizes (each its own prepared statement): SQLite
# steps through far fewer statements than with one a row.
_CHUNKS = (64, 16, 4, 1)


class _Many:
    """A statement over many rows at once: ``sql`` with ``VALUES`` where its rows go, ``width`` values a row."""

    def __init__(self, sql: str, width: int) -> None:
        row = f"({', '.join(['?'] * width)})"
        self._sql = {size: sql.replace("VALUES", "VALUES " + ", ".join([row] * size), 1) for size in _CHUNKS}

    def run(self, conn: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> int:
        """Execute it for ``rows``; how many rows it changed."""
        changed = start = 0
        while start < len(rows):
            size = next(size for size in _CHUNKS if size <= len(rows) - start)
            changed += conn.execute(self._sql[size], list(chain.from_iterable(rows[start:start + size]))).rowcount
            start += size
        return changed


# (insert keys, insert a request's rows) for client events, then daemon events
_STEPS = tuple(
    (_Many(f"INSERT INTO {keys_table(view)} (time, id) VALUES ON CONFLICT DO NOTHING", 2),
     f"INSERT INTO {batches_table(view)} (rows, client_id, received_at) VALUES (?, ?, ?)")
    for view in ("events", "daemon_events")
)


def _upserts(level: int) -> tuple[_Many, _Many, _Many]:
    counts, durations, errors = upsert_rollup(LEVEL_NAMES[level], "VALUES", "VALUES", "VALUES")
    return _Many(counts, 5), _Many(durations, 4), _Many(errors, 6)


_UPSERTS = {level: _upserts(level) for level in LEVELS}
_READ_INSTALLS = ("SELECT sketch, unknown FROM installs_1d WHERE day = ? AND mask = ? AND version = ? AND os_arch = ? "
                  "AND command = ?")
_WRITE_INSTALLS = "INSERT OR REPLACE INTO installs_1d VALUES (?, ?, ?, ?, ?, ?, ?)"


class SQLiteStorage(Storage):
    """Events in one SQLite file. Durable on commit (``synchronous=FULL``)."""

    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):  # a mistyped path is refused, not created
            raise StorageError(f"cannot open SQLite database {self.path}: the directory {parent} does not exist")
        try:
            self._writer = self._connect()
            self._writer.execute("PRAGMA journal_mode=WAL")
            self._migrate()
        except (sqlite3.Error, SchemaTooNew) as exc:
            raise StorageError(f"cannot open SQLite database {self.path}: {exc}") from exc
        self._readers: ConnectionPool[sqlite3.Connection] = ConnectionPool(self._connect_reader, _close)
        self._deleting = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are begun and ended here, explicitly.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
        conn.execute("PRAGMA synchronous=FULL")  # a 2xx promises the events survive a power cut
        conn.execute("PRAGMA cache_size=-65536")  # 64 MiB: the id indexes stay in memory
        return conn

    def _connect_reader(self) -> sqlite3.Connection:
        conn = self._connect()
        conn.execute("PRAGMA query_only=1")
        return conn

    def _migrate(self) -> None:
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            migrate(conn, "sqlite")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def write(self, jobs: Sequence[WriteJob]) -> list[int]:
        """See :meth:`Storage.write`."""
        conn = self._writer
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                stored = self._insert(conn, jobs)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"SQLite write failed: {exc}") from exc
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite write failed: {exc}") from exc
        return stored

    def _insert(self, conn: sqlite3.Connection, jobs: Sequence[WriteJob]) -> list[int]:
        stored = [job.stored(_store(conn, *_STEPS[0], job.client, job), _store(conn, *_STEPS[1], job.daemon, job))
                  for job in jobs]
        rollup = rollup_of(t for _, t in stored)
        errors = rollup.error_rows()
        for level, (counts_rows, duration_rows) in rollup.rows().items():
            upsert_counts, upsert_durations, upsert_errors = _UPSERTS[level]
            upsert_counts.run(conn, counts_rows)
            upsert_durations.run(conn, duration_rows)
            upsert_errors.run(conn, errors[level])
        installs = installs_of(jobs, stored)
        if installs:
            read = conn.execute
            rows = []
            for cell in installs.cells():
                found = read(_READ_INSTALLS, cell).fetchone()
                rows.append((*cell, *installs.merged(cell, *(found or (None, 0)))))
            conn.executemany(_WRITE_INSTALLS, rows)
        return [count for count, _ in stored]

    def delete_batches(self, where: str, params: Mapping[str, Any], keys_before: int | None = None) -> int:
        """See :meth:`Storage.delete_batches`."""
        conn = self._writer
        try:
            with self._deleting:  # one connection: requests and retention take turns
                return self._delete_batches(conn, where, params, keys_before)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"SQLite delete failed: {exc}") from exc
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite delete failed: {exc}") from exc

    @staticmethod
    def _delete_batches(conn: sqlite3.Connection, where: str, params: Mapping[str, Any], keys_before: int | None,
                        ) -> int:
        conn.execute("BEGIN IMMEDIATE")
        try:
            deleted = 0
            for view in ("events", "daemon_events"):
                batches = batches_table(view)
                deleted += sum(int(n or 0) for (n,) in conn.execute(
                    f"SELECT json_array_length(rows) FROM {batches} WHERE {where}", dict(params)))
                conn.execute(f"DELETE FROM {batches} WHERE {where}", dict(params))
                if keys_before is not None:
                    conn.execute(f"DELETE FROM {keys_table(view)} WHERE time < ?", (keys_before,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return deleted

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        """See :meth:`Storage.query`."""
        try:
            with self._readers.connection() as conn:
                return conn.execute(sql, dict(params or {})).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite query failed: {exc}") from exc

    def close(self) -> None:
        """See :meth:`Storage.close`."""
        self._readers.close()
        self._writer.close()

    def describe(self) -> str:
        """See :meth:`Storage.describe`."""
        return f"sqlite://{self.path}"


def _store(conn: sqlite3.Connection, insert_keys: _Many, insert_rows: str, packed: Packed, job: WriteJob,
           ) -> list[Row] | None:
    """Store the rows of ``packed`` (of ``job``) not stored before (rows without an id always are): None when that
    was all of them, else the rows stored."""
    if not packed.count:
        return None
    keys = packed.keys
    conn.execute("SAVEPOINT job")
    inserted = insert_keys.run(conn, keys)
    if inserted == len(keys):  # the common case: nothing seen before, so the JSON goes in as it came
        conn.execute("RELEASE job")
        conn.execute(insert_rows, (packed.json.decode(), job.client_id or None, job.received_us))
        return None
    if inserted:  # some were stored before: which? One at a time, then.
        conn.execute("ROLLBACK TO job")
        new = {key for key in keys if insert_keys.run(conn, [key])}
    else:  # all were: a whole request sent again
        new = set()
    conn.execute("RELEASE job")
    rows = new_rows(packed.rows(), new)
    if rows:
        conn.execute(insert_rows, (rows_json(rows).decode(), job.client_id or None, job.received_us))
    return rows


def _close(conn: sqlite3.Connection) -> None:
    conn.close()
