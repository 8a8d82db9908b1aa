"""One budget per user: how many uploaders may live, and how often an endpoint in an outage is asked.

Each project has its own queue and its own backoff, so during an outage
CLI runs spread over many projects each found a flush due: 52 uploaders alive
at once and 226 requests a minute to one endpoint. What bounds them is per user:

- at most :data:`~ox_telemetry.paths.UPLOADER_SLOTS` uploader processes,
  across every project and endpoint: a CLI takes a free slot (a lock file in
  the user state dir) with a non-blocking ``flock`` and hands it, held, to the
  uploader it starts; no free slot, no uploader (the events wait on disk);
- at most ``rate_requests`` requests per ``rate_window`` seconds (10 a minute)
  per user and endpoint while requests fail: every sender (uploader, daemon,
  client thread, ``ox-telemetry flush``) spends one from a shared record before
  each POST, and any answer but "try later" clears the record.

The record is a state file of ours: garbage in it counts as no record, and a
failure to use it lets the request go (the queue's own backoff still holds).
"""

import os
import time

from . import _jsonlite, files, paths

_MAX_RECORD = 64 * 1024  # bytes read of a record
_MAX_WAIT = 3600.0  # no window is longer: a later "blocked until" is garbage


def _state_dir() -> str:
    directory = paths.user_state_dir()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    files.check_dir(directory)
    return directory


def take_slot() -> "files.FileLock | None":
    """A free uploader slot, locked; None when every slot is held or the state dir is unusable."""
    try:
        _state_dir()
    except OSError:
        return None
    for path in paths.uploader_slot_paths():
        slot = files.FileLock(path)
        try:
            if slot.acquire(blocking=False):
                return slot
        except OSError:
            pass
        slot.close()
    return None


def _load(url: str, now: float, window: float) -> "tuple[list[float], float]":
    """The failed (or in-flight) attempts within ``window`` and the time before which none may start."""
    try:
        data = _jsonlite.loads(files.read(paths.request_budget_path(url), _MAX_RECORD) or b"{}")
        attempts = [float(t) for t in data.get("attempts", ())]
        blocked = float(data.get("blocked_until", 0))
    except (OSError, ValueError, TypeError, AttributeError, OverflowError):
        return [], 0.0
    if not 0 <= blocked <= now + _MAX_WAIT:  # also NaN
        blocked = 0.0
    return [t for t in attempts if now - window < t <= now], blocked


def blocked_until(url: str) -> float:
    """Unix time before which no request to ``url`` may start (0: one may); checked before starting an uploader."""
    return _load(url, time.time(), _MAX_WAIT)[1]


class RequestBudget:
    """The user's requests to one endpoint: at most ``requests`` a ``window`` while they fail."""

    def __init__(self, url: str, requests: int = 10, window: float = 60.0) -> None:
        self.url = url
        self.requests = max(1, requests)
        self.window = min(window, _MAX_WAIT)

    def take(self) -> float:
        """Spend one request now and return 0, or return the seconds until one may go (nothing spent)."""
        try:
            _state_dir()
            lock = files.FileLock(paths.request_budget_lock_path())
            try:
                with lock:
                    return self._take()
            finally:
                lock.close()
        except OSError:
            return 0.0  # no record to keep: the request goes, the queue's backoff still holds

    def _take(self) -> float:
        now = time.time()
        attempts, blocked = _load(self.url, now, self.window)
        if len(attempts) >= self.requests:
            blocked = max(blocked, attempts[-self.requests] + self.window)
        if blocked > now:
            self._save(attempts, blocked)
            return blocked - now
        attempts.append(now)
        full = len(attempts) >= self.requests
        self._save(attempts, attempts[-self.requests] + self.window if full else 0.0)
        return 0.0

    def answered(self) -> None:
        """The endpoint answered something other than "try later": it is up, the record starts afresh."""
        path = paths.request_budget_path(self.url)
        if not os.path.exists(path):
            return  # the usual case: nothing failed lately
        lock = files.FileLock(paths.request_budget_lock_path())
        try:
            with lock:
                files.remove(path)
        except OSError:
            pass
        finally:
            lock.close()

    def _save(self, attempts: "list[float]", blocked: float) -> None:
        record = {"attempts": attempts[-self.requests :], "blocked_until": blocked}
        files.write_atomic(paths.request_budget_path(self.url), _jsonlite.dumps(record).encode(), sync=False)

