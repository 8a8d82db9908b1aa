"""The daemon's disk spool: every received event, in order, until the endpoint took it.

Why not :class:`ox_telemetry.queue.JsonlQueue`: that queue is shared by many
processes, so its sender claims the whole file and rewrites the rest after
every batch; at the daemon's 10 MiB bound that is up to 10 MiB in memory and
a 10 MiB rewrite per batch. The daemon is its spool's only reader and
writer (one daemon per user, enforced by the pid file lock), so the spool is
simpler and bounded in memory instead:

* segment files ``<dir>/<number>.jsonl`` of about ``segment_bytes`` each;
  events are appended to the newest, one ``write`` per received chunk;
* a cursor file ``<dir>/cursor`` (``"<segment> <offset>"``), replaced after
  every delivered batch; segments wholly before it are deleted;
* a batch is read from the cursor on demand (at most ``batch`` events), so
  memory holds one batch whatever the backlog;
* past ``max_bytes`` the oldest segment is deleted and its unsent events are
  counted as dropped.

Durability: an event counts as received once ``write`` returned, which is
in the page cache and survives ``kill -9`` of the daemon; no ``fsync`` per
event (a power cut may lose the last seconds). A crash between a delivered
batch and the cursor update sends that batch again, with the same uuids.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from .. import files
from ..files import write_atomic

log = logging.getLogger("ox_telemetry.daemon")

_SUFFIX = ".jsonl"


@dataclass
class _Segment:
    number: int
    size: int
    lines: int  # newline count


@dataclass
class Batch:
    """Spool lines read for one request; pass it back to :meth:`Spool.commit` once done with."""

    segment: int
    end: int  # offset just past the last line
    lines: list[bytes]


class Spool:
    """A bounded, append-only, segmented JSONL spool in ``directory`` (see the module docstring)."""

    def __init__(self, directory: str, max_bytes: int = 10 * 1024 * 1024, segment_bytes: int = 1024 * 1024) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = max(1, min(segment_bytes, max_bytes // 2))
        self.pending = 0  # events written and not yet committed (or dropped)
        self.dropped = 0  # events dropped because the spool was full
        self._segments: list[_Segment] = []
        self._cursor = (0, 0)  # (segment number, offset)
        self._done = 0  # lines of the cursor segment before the offset
        self._fd = -1  # the newest segment, open for appends
        self._pinned = -1  # segment of the batch being sent: never dropped under it
        self._highest = 0  # the highest segment number found on disk, usable or not: never reused

    # -- opening -------------------------------------------------------------

    def open(self) -> None:
        """Create the directory (0700) or pick up what an earlier run left, torn last line included."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        numbers = sorted(
            int(name[: -len(_SUFFIX)]) for name in os.listdir(self.directory)
            if name.endswith(_SUFFIX) and name[: -len(_SUFFIX)].isdigit()
        )
        self._highest = max(numbers, default=0)
        data = b""
        for number in numbers:
            try:
                # Bounded, never through a link, never blocking on a FIFO: the entries of our directory may not be ours.
                data = files.read(self._path(number), 2 * self.max_bytes)
            except files.UnsafeFile as exc:
                log.warning("ignoring a spool segment: %s", exc)
                data = b""
                continue
            self._segments.append(_Segment(number, len(data), data.count(b"\n")))
        if data and not data.endswith(b"\n"):
            # The newest segment ends in a line torn by a crash: closed off here, then skipped as malformed when read.
            last = self._segments[-1]
            self._open_fd(last.number)
            self._write_all(b"\n")
            last.size += 1
            last.lines += 1
        self._load_cursor()
        self.pending = sum(s.lines for s in self._segments) - self._done

    def _load_cursor(self) -> None:
        number, offset = 0, 0
        try:
            first, _, second = files.read(os.path.join(self.directory, "cursor"), 64).strip().partition(b" ")
            number, offset = int(first), int(second)
        except (OSError, ValueError):
            pass
        while self._segments and self._segments[0].number < number:  # left by a crash mid-commit
            self._unlink(self._segments.pop(0).number)
        if not self._segments or self._segments[0].number != number:
            offset = 0  # the cursor's segment is gone: start at the oldest there is
        if self._segments:
            first_segment = self._segments[0]
            offset = min(offset, first_segment.size)
            self._done = files.read(self._path(first_segment.number), offset).count(b"\n")
            self._cursor = (first_segment.number, offset)
        else:
            self._done = 0
            self._cursor = (number, 0)

    # -- writing -------------------------------------------------------------

    def append(self, lines: list[bytes]) -> None:
        """Append encoded events (without newlines) in one write; raises OSError when the disk refuses."""
        if not lines:
            return
        data = b"\n".join(lines) + b"\n"
        if not self._segments or self._segments[-1].size >= self.segment_bytes:
            number = max(self._segments[-1].number if self._segments else self._cursor[0], self._highest) + 1
            self._segments.append(_Segment(number, 0, 0))
            if len(self._segments) == 1:
                self._cursor, self._done = (number, 0), 0
            self._open_fd(number)
        elif self._fd < 0:
            self._open_fd(self._segments[-1].number)
        self._write_all(data)
        last = self._segments[-1]
        last.size += len(data)
        last.lines += len(lines)
        self.pending += len(lines)
        if self.size() > self.max_bytes:
            self._drop_oldest()

    def _write_all(self, data: bytes) -> None:
        written = os.write(self._fd, data)
        if written != len(data):  # disk full: take the fragment back, count nothing
            os.ftruncate(self._fd, os.lseek(self._fd, 0, os.SEEK_END) - written)
            raise OSError(28, "short write to the daemon spool")

    def _open_fd(self, number: int) -> None:
        self.close()
        self._fd = files.open_regular(self._path(number), os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def _drop_oldest(self) -> None:
        # Never the newest segment (being written) nor the one under a batch in flight.
        while self.size() > self.max_bytes and len(self._segments) > 1:
            index = next((i for i, s in enumerate(self._segments[:-1]) if s.number != self._pinned), None)
            if index is None:
                return
            victim = self._segments.pop(index)
            lost = victim.lines - (self._done if victim.number == self._cursor[0] else 0)
            self.dropped += lost
            self.pending -= lost
            if victim.number == self._cursor[0]:
                self._cursor, self._done = (self._segments[0].number, 0), 0
            self._unlink(victim.number)

    # -- reading -------------------------------------------------------------

    def read_batch(self, max_events: int, max_bytes: int) -> Batch | None:
        """Up to ``max_events`` lines (about ``max_bytes``) from the cursor on; None when nothing waits."""
        while self._segments:
            segment = self._segments[0]
            number, offset = self._cursor
            if number != segment.number:
                self._cursor, self._done, offset = (segment.number, 0), 0, 0
            if offset < segment.size:
                lines, end = self._read_lines(segment, offset, max_events, max_bytes)
                self._pinned = segment.number
                return Batch(segment.number, end, lines)
            if len(self._segments) == 1:
                return None  # all sent; the newest segment stays open for appends
            self._segments.pop(0)  # wholly sent: the next one starts
            self._unlink(segment.number)
            self._cursor, self._done = (self._segments[0].number, 0), 0
            self._save_cursor()
        return None

    def _read_lines(self, segment: _Segment, offset: int, max_events: int, max_bytes: int) -> tuple[list[bytes], int]:
        with os.fdopen(files.open_regular(self._path(segment.number), os.O_RDONLY), "rb") as f:
            f.seek(offset)
            data = f.read(min(max_bytes, segment.size - offset))
            while b"\n" not in data and offset + len(data) < segment.size:
                data += f.read(max_bytes)  # one line longer than a batch: read it whole
        cut = data.rfind(b"\n")
        lines = data[: cut + 1].split(b"\n", max_events)
        if len(lines) > max_events:  # more lines than a batch takes: stop after max_events
            rest = lines.pop()
            return lines, offset + cut + 1 - len(rest)
        lines.pop()  # the empty string after the last newline
        return lines, offset + cut + 1

    def commit(self, batch: Batch) -> None:
        """The lines of ``batch`` are done with (delivered or refused for good)."""
        self._pinned = -1
        number, offset = self._cursor
        if batch.segment != number or batch.end <= offset:
            return  # its segment was dropped meanwhile: already counted there
        self._cursor = (number, batch.end)
        self._done += len(batch.lines)
        self.pending -= len(batch.lines)
        self._save_cursor()

    def unpin(self) -> None:
        """The batch read last was not sent (it will be read again)."""
        self._pinned = -1

    def _save_cursor(self) -> None:
        # No fsync: a cursor lost to a power cut only sends a batch again (see the module docstring).
        write_atomic(os.path.join(self.directory, "cursor"), b"%d %d\n" % self._cursor, sync=False)

    # -- misc ----------------------------------------------------------------

    def size(self) -> int:
        """Bytes on disk in all segments."""
        return sum(s.size for s in self._segments)

    def sync(self) -> None:
        """Flush the newest segment to the disk (on a clean stop)."""
        if self._fd >= 0:
            os.fsync(self._fd)

    def close(self) -> None:
        """Close the newest segment's descriptor (the next append opens it again)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _path(self, number: int) -> str:
        return os.path.join(self.directory, f"{number:012d}{_SUFFIX}")

    def _unlink(self, number: int) -> None:
        files.remove(self._path(number))
