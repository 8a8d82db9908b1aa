"""The writer process: takes rows on stdin, commits them in groups, answers on stdout.

Why a process: SQLite (and psycopg) release the GIL around every row they
step through. In a thread beside a busy event loop, each release costs a wait
of up to the interpreter's switch interval, and the writer slowed to a crawl.
A process of its own writes at full speed on the second core, and the server
keeps the first.

Frames both ways: a 4-byte big-endian length, then MessagePack (msgspec:
a job's rows and tallies cross faster than as a pickle). In:
first ``(db_url, max_group)``, then ``(seq, WriteJob)`` (sent as ``Encoded``). Out: first
``("ready", None)`` or ``("failed", message)``, then ``(seq, stored_count)``
or ``(seq, error_message)``. End of input: commit what is read, exit.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import struct
import sys
from collections.abc import Sequence
from typing import Any, TypeVar

import msgspec

from .storage import Storage, StorageError, StoreUnavailable, WriteJob, open_storage

log = logging.getLogger("ox_telemetry.collector.writer")
T = TypeVar("T")
_HEADER = struct.Struct(">I")
_encode = msgspec.msgpack.Encoder().encode
_SETUP = msgspec.msgpack.Decoder(tuple[str, int])
_JOB = msgspec.msgpack.Decoder(tuple[int, WriteJob])


class Encoded(msgspec.Struct, frozen=True):
    """A job encoded as the writer process reads it, and how many rows it holds."""

    data: msgspec.Raw
    rows: int

    @classmethod
    def of(cls, job: WriteJob) -> Encoded:
        """``job``, encoded."""
        return cls(msgspec.Raw(_encode(job)), len(job))


def frame(message: object) -> bytes:
    """One message, framed."""
    data = _encode(message)
    return _HEADER.pack(len(data)) + data


def unframe(data: bytes) -> Any:
    """The message of a frame's body, as lists (its tuples) and plain values."""
    return msgspec.msgpack.decode(data)


class _Input:
    """Frames from a file descriptor: a blocking wait for the first, then whatever else is already there."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()
        self.eof = False

    def _fill(self) -> None:
        data = os.read(self.fd, 1 << 20)
        self.eof = not data
        self.buffer += data

    def _next(self, decoder: msgspec.msgpack.Decoder[T]) -> T | None:
        if len(self.buffer) < 4:
            return None
        (size,) = _HEADER.unpack_from(self.buffer)
        if len(self.buffer) < 4 + size:
            return None
        message = decoder.decode(memoryview(self.buffer)[4 : 4 + size])
        del self.buffer[: 4 + size]
        return message

    def read_setup(self) -> tuple[str, int] | None:
        """The first message, ``(db_url, max_group)``, waiting for it; None at end of input."""
        while (message := self._next(_SETUP)) is None:
            if self.eof:
                return None
            self._fill()
        return message

    def read_group(self, max_rows: int) -> list[tuple[int, WriteJob]]:
        """At least one ``(seq, job)`` (waiting for it), plus those already sent, up to about ``max_rows`` rows.

        Empty at end of input.
        """
        group: list[tuple[int, WriteJob]] = []
        rows = 0
        while rows < max_rows:
            message = self._next(_JOB)
            if message is not None:
                group.append(message)
                rows += len(message[1])
            elif self.eof or (group and not select.select([self.fd], [], [], 0)[0]):
                break
            else:
                self._fill()
        return group


def commit(storage: Storage, jobs: Sequence[WriteJob]) -> list[int | str]:
    """Store ``jobs`` in one transaction; if that fails, each alone, so only a culprit fails.

    When the store itself is down, all fail at once: trying each alone would only wait longer.
    """
    try:
        return list(storage.write(jobs))
    except StoreUnavailable as exc:
        log.error("%s", exc)
        return [str(exc)] * len(jobs)
    except Exception as exc:  # one bad request must not take the others down with it
        if len(jobs) == 1:
            if not isinstance(exc, StorageError):
                log.exception("write failed")
            return [str(exc) or exc.__class__.__name__]
    return [commit(storage, [job])[0] for job in jobs]


def serve(fd_in: int, fd_out: int) -> int:
    """Run the writer loop on two file descriptors; the exit code."""
    source = _Input(fd_in)
    setup = source.read_setup()
    if setup is None:
        return 0
    db_url, max_group = setup
    try:
        storage = open_storage(db_url)
    except (StorageError, ValueError, OSError) as exc:
        os.write(fd_out, frame(("failed", str(exc))))
        return 2
    out = os.fdopen(fd_out, "wb")  # buffered: it writes a whole answer even where the pipe takes less at once
    try:
        out.write(frame(("ready", None)))
        out.flush()
        while group := source.read_group(max_group):
            results = commit(storage, [job for _, job in group])
            out.write(b"".join(frame((message[0], result)) for message, result in zip(group, results, strict=True)))
            out.flush()
    except BrokenPipeError:
        pass  # the server is gone; what was committed stays committed
    finally:
        storage.close()
    return 0


def main(argv: Sequence[str] = ()) -> int:
    """Entry point of the writer process (it takes no arguments: its setup comes through the pipe)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Ctrl-C or a stop signal reaches the whole process group; the server then closes our input,
    # and we finish what we were sent instead of dying in the middle of it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return serve(sys.stdin.fileno(), sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
