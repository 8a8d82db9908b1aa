"""SQLite storage: one file, WAL journal, group commits from the single writer thread."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from .base import ConnectionPool, Row, Storage, StorageError, StoreUnavailable, WriteJob, stored_rows
from .rollup import rollup_of, upsert_rollup
from .schema import CLIENT_NAMES, DAEMON_NAMES, LEVEL_NAMES, LEVELS, SchemaTooNew, migrate

_BUSY_MS = 10_000  # another process holding the write lock (a second collector on the same file) waits, not fails


def _insert(table: str, names: tuple[str, ...]) -> str:
    marks = ", ".join("?" * len(names))
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks}) ON CONFLICT DO NOTHING"


_INSERT_CLIENT = _insert("events", CLIENT_NAMES)
_INSERT_DAEMON = _insert("daemon_events", DAEMON_NAMES)
_UPSERTS = {level: upsert_rollup(LEVEL_NAMES[level], "VALUES (?, ?, ?, ?, ?)", "VALUES (?, ?, ?, ?)")
            for level in LEVELS}


class SQLiteStorage(Storage):
    """Events in one SQLite file. Durable on commit (``synchronous=FULL``)."""

    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        parent = os.path.dirname(self.path)
        os.makedirs(parent, mode=0o700, exist_ok=True)
        try:
            self._writer = self._connect()
            self._writer.execute("PRAGMA journal_mode=WAL")
            self._migrate()
        except (sqlite3.Error, SchemaTooNew) as exc:
            raise StorageError(f"cannot open SQLite database {self.path}: {exc}") from exc
        self._readers: ConnectionPool[sqlite3.Connection] = ConnectionPool(self._connect_reader, _close)

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
        kept: list[list[Sequence[Row]]] = []
        for daemon, table, statement in ((False, "events", _INSERT_CLIENT), (True, "daemon_events", _INSERT_DAEMON)):
            rows = [row for job in jobs for row in (job.daemon_rows if daemon else job.client_rows)]
            if not rows:
                kept.append([() for _ in jobs])
                continue
            # The write lock is held since BEGIN IMMEDIATE and ids only grow: new rows are past this one.
            after = conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]
            inserted = conn.executemany(statement, rows).rowcount
            new_keys = None
            if inserted != len(rows):  # some were duplicates: which rows are new?
                key = DAEMON_NAMES[0] if daemon else CLIENT_NAMES[0]
                new_keys = set(conn.execute(
                    f"SELECT coalesce(client_time, 0), {key} FROM {table} WHERE id > ? AND {key} IS NOT NULL",
                    (after,)))
            kept.append(stored_rows(jobs, daemon, new_keys))
        for level, (counts_rows, duration_rows) in rollup_of(jobs, kept[0], kept[1]).rows().items():
            upsert_counts, upsert_durations = _UPSERTS[level]
            conn.executemany(upsert_counts, counts_rows)
            conn.executemany(upsert_durations, duration_rows)
        return [len(c) + len(d) for c, d in zip(kept[0], kept[1], strict=True)]

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


def _close(conn: sqlite3.Connection) -> None:
    conn.close()
