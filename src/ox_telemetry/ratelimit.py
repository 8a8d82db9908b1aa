"""The rate limit on daemon-start-failure reports (CONTRACT.md section 5).

A report is allowed when ``1 min * 2**backoff_level`` has passed since the last
one; each allowed report raises the level by one, up to 5 (32 minutes). The
state lives in ``daemon_failure_ratelimit.json`` in the user config directory,
so the limit holds across CLI runs.
"""

import os

from . import _jsonlite, _time, files, paths

MAX_LEVEL = 5
BASE_SECONDS = 60.0


def _load(path: str) -> tuple[float | None, int, int]:
    try:
        data = _jsonlite.loads(files.read(path, 64 * 1024))
        last = _time.parse_rfc3339(data["last_sent"]).timestamp()
        level = int(data.get("backoff_level", 0))
        ceiling = int(data.get("max_backoff", 0))
        return last, max(0, min(level, MAX_LEVEL)), ceiling
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError, OverflowError):
        return None, 0, 0  # garbage reads as no report sent yet


def allow(now: float | None = None, path: str | None = None) -> bool:
    """Whether a failure report may be sent now; if so, record it (raising the backoff)."""
    path = path or paths.ratelimit_path()
    current = _time.now().timestamp() if now is None else now
    last, level, ceiling = _load(path)
    if last is not None and current - last < BASE_SECONDS * (2**level):
        return False
    types = _time.datetime_module()
    sent = types.datetime.fromtimestamp(current, types.timezone.utc)
    text = _jsonlite.dumps(
        {"last_sent": _time.format_rfc3339(sent), "backoff_level": min(level + 1, MAX_LEVEL),
         "max_backoff": ceiling}
    )
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    files.write_atomic(path, text.encode("ascii"), sync=False)
    return True


def reset(path: str | None = None) -> None:
    """Forget the backoff: the next report is allowed."""
    files.remove(path or paths.ratelimit_path())
