"""Per-session command statistics."""

import time

from ._time import datetime_module
from .wire import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from datetime import datetime, timedelta


class Stats(Value):
    """Counts and timings of the commands of one session."""

    __slots__ = ("_first", "_last", "_seconds", "command_count", "command_counts", "error_count", "session_id")

    def __init__(self, session_id: str = "") -> None:
        self.session_id = session_id
        self.command_count = 0
        self.error_count = 0
        self.command_counts: dict[str, int] = {}
        # Plain numbers until someone asks: datetime objects cost a CLI an import.
        self._seconds = 0.0
        self._first: float | None = None
        self._last: float | None = None

    @property
    def total_duration(self) -> "timedelta":
        """Sum of the recorded commands' durations."""
        total: timedelta = datetime_module().timedelta(seconds=self._seconds)
        return total

    @property
    def first_command(self) -> "datetime | None":
        """When the first command was recorded (UTC)."""
        return _utc(self._first)

    @property
    def last_command(self) -> "datetime | None":
        """When the last command was recorded (UTC)."""
        return _utc(self._last)

    def record_command(self, command: str, duration: "timedelta | float", success: bool) -> None:
        """Count one command; ``duration`` is a timedelta or seconds."""
        stamp = time.time()
        self.command_count += 1
        if not success:
            self.error_count += 1
        self._seconds += as_seconds(duration)
        self.command_counts[command] = self.command_counts.get(command, 0) + 1
        if self._first is None:
            self._first = stamp
        self._last = stamp

    def copy(self) -> "Stats":
        """An independent copy."""
        twin = Stats(self.session_id)
        for name in self.__slots__:
            setattr(twin, name, getattr(self, name))
        twin.command_counts = dict(self.command_counts)
        return twin

    def __repr__(self) -> str:
        return (
            f"Stats(session_id={self.session_id!r}, command_count={self.command_count}, "
            f"error_count={self.error_count}, total_duration={self.total_duration!r})"
        )


def as_seconds(duration: object) -> float:
    """A duration given as a timedelta or a number, in seconds (0 when it is neither)."""
    if hasattr(duration, "total_seconds"):
        return float(duration.total_seconds())
    try:
        return float(duration)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return 0.0


def _utc(stamp: "float | None") -> "datetime | None":
    if stamp is None:
        return None
    mod = datetime_module()
    moment: datetime = mod.datetime.fromtimestamp(stamp, mod.timezone.utc)
    return moment
