"""The local record: where a client in local mode keeps its events, on this machine only.

In local mode (``ox-telemetry mode local``, see :mod:`ox_telemetry.consent`)
events are appended here instead of a queue, and nothing ever sends them:
they are for the user to look at (``ox-telemetry view``).

One file per ISO week (UTC), ``<user state dir>/local-record/2025-W07.jsonl``,
one event a line as a queue holds it. Each week's file is a
:class:`~ox_telemetry.queue.JsonlQueue` of at most :data:`WEEK_MAX_BYTES`
(an append beyond drops that week's oldest events), and only the last
:data:`WEEKS_KEPT` weeks are kept: a week's file is deleted when a newer week
starts without it in range. So the record never holds more than
``WEEKS_KEPT * WEEK_MAX_BYTES`` bytes of events. Every file goes through
:mod:`ox_telemetry.files` (the queue does), so nothing is followed or opened
that is not ours.

Imported by the client in local mode: nothing heavier than :mod:`os` and :mod:`time`.
"""

import os
import time

from . import _log, files, paths
from .queue import JsonlQueue

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

#: A week's file stays under this many bytes.
WEEK_MAX_BYTES = 1024 * 1024
#: Weeks kept, the current one included; older ones are deleted.
WEEKS_KEPT = 8
_SUFFIX = ".jsonl"
_WEEK = 7 * 86400


def record_dir() -> str:
    """``<user state dir>/local-record`` (``~/.sageox/state/local-record``); raises NoHome without a home."""
    return os.path.join(paths.user_state_dir(), "local-record")


def iso_week(t: float) -> "tuple[int, int]":
    """``(ISO year, ISO week)`` of unix time ``t`` in UTC: the year and week of that week's Thursday."""
    thursday = t + (3 - time.gmtime(t).tm_wday) * 86400
    tm = time.gmtime(thursday)
    return tm.tm_year, (tm.tm_yday - 1) // 7 + 1


def week_name(week: "tuple[int, int]") -> str:
    """The file name of a week: ``2025-W07.jsonl``."""
    return f"{week[0]:04d}-W{week[1]:02d}{_SUFFIX}"


def parse_week_name(name: str) -> "tuple[int, int] | None":
    """The week a file name stands for; None for any other name (a lock file, a stranger)."""
    if len(name) != 14 or not name.endswith(_SUFFIX) or name[4:6] != "-W":
        return None
    year, week = name[:4], name[6:8]
    if not (year.isdigit() and week.isdigit() and year.isascii() and week.isascii()):
        return None
    number = int(week)
    return (int(year), number) if 1 <= number <= 53 else None


def _week_start(t: float) -> float:
    """The unix time of the Monday 00:00 UTC starting the week of ``t``."""
    day = t - t % 86400
    return day - time.gmtime(t).tm_wday * 86400


class LocalRecord:
    """Appends a local-mode client's events to this week's file.

    ``clock``: unix time (a test steps it across weeks).
    """

    def __init__(self, directory: "str | None" = None, clock: "Callable[[], float] | None" = None) -> None:
        self.directory = directory or record_dir()
        self._clock = clock or time.time
        self._queue: JsonlQueue | None = None
        self._week_end = 0.0  # when the file in use stops being this week's

    def week_path(self, week: "tuple[int, int]") -> str:
        """The file of ``week``."""
        return os.path.join(self.directory, week_name(week))

    def append(self, line: bytes) -> None:
        """Append one encoded event (without newline). Raises OSError when the disk or a file refuses."""
        now = self._clock()
        queue = self._queue
        if queue is None or now >= self._week_end:
            queue = self._open_week(now)
        queue.append_line(line)

    def _open_week(self, now: float) -> JsonlQueue:
        week = iso_week(now)
        if self._queue is not None:
            self._queue.close()
        path = self.week_path(week)
        self._queue = JsonlQueue(path, WEEK_MAX_BYTES)
        self._week_end = _week_start(now) + _WEEK
        if not os.path.exists(path):  # a new week: the time to let the oldest go
            self.prune(now)
        return self._queue

    def prune(self, now: "float | None" = None) -> "list[str]":
        """Delete the files of weeks outside the last :data:`WEEKS_KEPT` (future ones too); returns what went."""
        now = self._clock() if now is None else now
        newest = iso_week(now)
        oldest = iso_week(now - (WEEKS_KEPT - 1) * _WEEK)
        removed = []
        for name, week in self._weeks():
            if oldest <= week <= newest:
                continue
            path = os.path.join(self.directory, name)
            for victim in (path, path + ".lock"):
                try:
                    if files.remove(victim):
                        removed.append(victim)
                except OSError as exc:
                    _log.debug("could not delete %s from the local record: %r", victim, exc)
        return removed

    def _weeks(self) -> "list[tuple[str, tuple[int, int]]]":
        """``(file name, week)`` of every week's file, oldest first; none when the directory is missing or not ours."""
        try:
            files.check_dirs_below(os.path.dirname(self.directory), self.directory)
            names = os.listdir(self.directory)
        except OSError:
            return []
        found = [(name, week) for name in names if (week := parse_week_name(name)) is not None]
        return sorted(found, key=lambda item: item[1])

    def paths(self) -> "list[str]":
        """Every week's file present, oldest first."""
        return [os.path.join(self.directory, name) for name, _ in self._weeks()]

    def read(self) -> bytes:
        """Every recorded line, oldest week first; each week's file read within its bound, a refused one skipped."""
        chunks = []
        for path in self.paths():
            try:
                data = JsonlQueue(path, WEEK_MAX_BYTES).snapshot()
            except OSError as exc:
                _log.debug("skipping %s of the local record: %r", path, exc)
                continue
            if data and not data.endswith(b"\n"):
                data += b"\n"
            chunks.append(data)
        return b"".join(chunks)

    def close(self) -> None:
        """Let go of the open week's file."""
        if self._queue is not None:
            self._queue.close()
            self._queue = None
