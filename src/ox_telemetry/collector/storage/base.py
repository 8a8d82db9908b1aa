"""The one storage interface both backends implement, and what they share."""

from __future__ import annotations

import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .schema import Dialect, dedup_key

if TYPE_CHECKING:
    from .rollup import Tally

Row = tuple[Any, ...]


@dataclass(frozen=True)
class WriteJob:
    """The rows of one request: client events and daemon events, in column order (schema.py).

    ``tally``: all these rows counted for the rollups (rollup.tally), when the producer counted them.
    """

    client_rows: Sequence[Row] = ()
    daemon_rows: Sequence[Row] = ()
    tally: Tally | None = None

    def __len__(self) -> int:
        return len(self.client_rows) + len(self.daemon_rows)


class StorageError(Exception):
    """The store could not be reached or refused a write; the caller may retry later."""


class StoreUnavailable(StorageError):
    """The store itself failed (unreachable, locked, out of space), whatever was being written."""


class Storage(ABC):
    """An event store: rows in, rollup rows out.

    ``write`` is called from one thread at a time (the writer); ``query`` from
    any thread, concurrently with writes.
    """

    dialect: Dialect

    @abstractmethod
    def write(self, jobs: Sequence[WriteJob]) -> list[int]:
        """Store every job's rows in one transaction; return how many rows of each were new.

        Rows already stored (same :func:`schema.dedup_key`) are skipped; those
        keys are unique across ``jobs`` (the caller removes repeats). Committed when
        this returns; raises and stores nothing on failure.
        """

    @abstractmethod
    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        """Run a read-only statement written with ``:name`` placeholders."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    @abstractmethod
    def describe(self) -> str:
        """Where the data lives, for logs (never with a password)."""


C = TypeVar("C")


class ConnectionPool(Generic[C]):
    """Idle read connections, created on demand, so concurrent dashboard queries do not queue."""

    def __init__(self, connect: Callable[[], C], close: Callable[[C], None]) -> None:
        self._connect = connect
        self._close = close
        self._idle: queue.SimpleQueue[C] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[C]:
        """An idle connection or a new one; broken connections are dropped, not returned."""
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = self._connect()
        try:
            yield conn
        except BaseException:
            self._close(conn)
            raise
        with self._lock:
            if self._closed:
                self._close(conn)
            else:
                self._idle.put(conn)

    def close(self) -> None:
        """Close idle connections; ones in use are closed when handed back."""
        with self._lock:
            self._closed = True
        while True:
            try:
                self._close(self._idle.get_nowait())
            except queue.Empty:
                return


def stored_rows(
    jobs: Sequence[WriteJob], daemon: bool, new_keys: set[tuple[Any, Any]] | None
) -> list[Sequence[Row]]:
    """Per job, the client (or daemon) rows that were stored.

    ``new_keys``: the (time, id) pairs (:func:`schema.dedup_key`) the insert
    reported as new; None when every row was stored. Rows without an id are
    always stored.
    """
    kept = []
    for job in jobs:
        rows = job.daemon_rows if daemon else job.client_rows
        kept.append(rows if new_keys is None else [r for r in rows if r[0] is None or dedup_key(r) in new_keys])
    return kept
