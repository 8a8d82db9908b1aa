"""The one storage interface both backends implement, and what they share."""

from __future__ import annotations

import asyncio
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec

from .rollup import Tally, tally
from .schema import CLIENT_NAMES, DAEMON_NAMES, Columns, Dialect, Key, Row, columns, dedup_key, dedup_keys

if TYPE_CHECKING:
    from ..sketch import Installs

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(list[tuple[Any, ...]]).decode


class Packed(msgspec.Struct, frozen=True, array_like=True):
    """Rows of one kind (client or daemon events) from one request, packed to cross to the writer cheaply:
    one JSON array of the rows, each an array in column order (schema.py), which is what SQLite stores,
    and the rows' identities, so the writer reads the rows only when some were stored before."""

    json: bytes = b"[]"
    count: int = 0
    keys: list[Key] = msgspec.field(default_factory=list)  # schema.dedup_key of each row that has an id

    @classmethod
    def of(cls, rows: Sequence[Row], table: Columns) -> Packed:
        """``rows``, packed; ``table`` holds the same rows a column at a time."""
        return cls(rows_json(rows), len(rows), dedup_keys(table))

    def __len__(self) -> int:
        return self.count

    def rows(self) -> list[Row]:
        """The rows, unpacked."""
        return _decode(self.json)


class WriteJob(msgspec.Struct, frozen=True, array_like=True):
    """What one request stores: its client events, its daemon events, and what the rollups count of them.

    A msgspec struct: it crosses to the writer process as MessagePack, several times cheaper than a pickle.
    """

    client: Packed = msgspec.field(default_factory=Packed)
    daemon: Packed = msgspec.field(default_factory=Packed)
    tally: Tally = msgspec.field(default_factory=Tally)
    client_id: str = ""  # the sender's anonymous installation id ("" when it sent none): one a request
    received_us: int = 0  # when the request was received (its rows' latest received_at)

    @classmethod
    def of(cls, client_rows: Sequence[Row] = (), daemon_rows: Sequence[Row] = (),
           client_table: Columns | None = None, client_id: str = "") -> WriteJob:
        """A job of unpacked rows; ``client_table``, when at hand, is the client rows a column at a time."""
        client = _client_columns(client_rows) if client_table is None else client_table
        daemon = _daemon_columns(daemon_rows)
        received = max(max(client[_CLIENT_RECEIVED], default=0), max(daemon[_DAEMON_RECEIVED], default=0))
        return cls(Packed.of(client_rows, client), Packed.of(daemon_rows, daemon), tally(client, daemon),
                   client_id, received)

    def __len__(self) -> int:
        return len(self.client) + len(self.daemon)

    def stored(self, client: Sequence[Row] | None, daemon: Sequence[Row] | None) -> tuple[int, Tally]:
        """How many rows were stored and their tally, given the rows of each kind stored, None where all were."""
        if client is None and daemon is None:
            return len(self), self.tally
        client = self.client.rows() if client is None else client
        daemon = self.daemon.rows() if daemon is None else daemon
        return len(client) + len(daemon), tally(_client_columns(client), _daemon_columns(daemon))


_CLIENT_RECEIVED, _DAEMON_RECEIVED = CLIENT_NAMES.index("received_at"), DAEMON_NAMES.index("received_at")


def installs_of(jobs: Sequence[WriteJob], stored: Sequence[tuple[int, Tally]]) -> Installs:
    """What the jobs add to the installations rollup, given ``stored`` (:meth:`WriteJob.stored` of each): a job's
    id is added for every row it sent (a sketch counts an id once however often it is added); events without an
    id count as unknown only when stored (not duplicates)."""
    from ..sketch import Installs

    out = Installs()
    for job, (_, stored_tally) in zip(jobs, stored, strict=True):
        out.add(job.client_id, job.tally if job.client_id else stored_tally)
    return out


def rows_json(rows: Sequence[Row]) -> bytes:
    """Rows as one JSON array of arrays, the form SQLite stores and jobs carry."""
    return _encode(rows)


def _client_columns(rows: Sequence[Row]) -> Columns:
    return columns(rows, len(CLIENT_NAMES))


def _daemon_columns(rows: Sequence[Row]) -> Columns:
    return columns(rows, len(DAEMON_NAMES))


def new_rows(rows: Sequence[Row], new: set[Key]) -> list[Row]:
    """The rows without an id, and the first row of each identity in ``new``, which is emptied as they are
    found: share it across jobs and a repeat in a later job is left out too."""
    out = []
    for row in rows:
        key = dedup_key(row)
        if key is None:
            out.append(row)
        elif key in new:
            new.discard(key)
            out.append(row)
    return out


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

        Rows already stored (same :func:`schema.dedup_key`), or earlier in
        ``jobs``, are skipped. Committed when this returns; raises and stores
        nothing on failure.
        """

    @abstractmethod
    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        """Run a read-only statement written with ``:name`` placeholders."""

    async def ping(self) -> None:
        """Raise StorageError unless the store answers a trivial query; the caller bounds the wait (``/healthz``)."""
        await asyncio.to_thread(self.query, "SELECT 1")

    @abstractmethod
    def delete_batches(self, where: str, params: Mapping[str, Any], keys_before: int | None = None) -> int:
        """Delete the stored events matching ``where`` (SQL over ``client_id`` and ``received_at``, with ``:name``
        placeholders) in one transaction; how many events went. ``keys_before``: also forget the ids of events
        whose own time is before it, so the key table does not outgrow the events (retention)."""

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
