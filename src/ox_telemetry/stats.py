"""Per-session command statistics."""

from __future__ import annotations

from ._time import datetime_module, now

TYPE_CHECKING = False
if TYPE_CHECKING:
    from datetime import datetime, timedelta


def _as_timedelta(duration: object) -> timedelta:
    delta: type[timedelta] = datetime_module().timedelta
    if isinstance(duration, delta):
        return duration
    try:
        return delta(seconds=float(duration))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return delta(0)


class Stats:
    """Counts and timings of the commands of one session."""

    __slots__ = (
        "command_count", "command_counts", "error_count", "first_command", "last_command",
        "session_id", "total_duration",
    )

    def __init__(self, session_id: str = "") -> None:
        self.session_id = session_id
        self.command_count = 0
        self.error_count = 0
        self.total_duration: timedelta = datetime_module().timedelta(0)
        self.command_counts: dict[str, int] = {}
        self.first_command: datetime | None = None
        self.last_command: datetime | None = None

    def record_command(self, command: str, duration: timedelta | float, success: bool) -> None:
        """Count one command; ``duration`` is a timedelta or seconds."""
        duration = _as_timedelta(duration)
        stamp = now()
        self.command_count += 1
        if not success:
            self.error_count += 1
        self.total_duration += duration
        self.command_counts[command] = self.command_counts.get(command, 0) + 1
        if self.first_command is None:
            self.first_command = stamp
        self.last_command = stamp

    def copy(self) -> Stats:
        """An independent copy."""
        twin = Stats(self.session_id)
        for name in self.__slots__:
            setattr(twin, name, getattr(self, name))
        twin.command_counts = dict(self.command_counts)
        return twin

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Stats):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Stats(session_id={self.session_id!r}, command_count={self.command_count}, "
            f"error_count={self.error_count}, total_duration={self.total_duration!r})"
        )
