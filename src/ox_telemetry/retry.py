"""When to try a request again, and how long to wait: shared by the uploader and the daemon.

Exponential backoff with full jitter (sleep a random time between zero and
``base * 2**attempt``, capped), never sooner than the server's ``Retry-After``.
"""

from __future__ import annotations

import random
import time

#: Statuses that mean "not now": the request may succeed later. Every other
#: 4xx means the endpoint will never accept that body.
RETRYABLE_STATUSES = frozenset({408, 429})


def is_success(status: int) -> bool:
    """Any 2xx is delivered."""
    return 200 <= status < 300


def is_retryable(status: int) -> bool:
    """408, 429 and every 5xx are worth retrying; other statuses are final."""
    return status in RETRYABLE_STATUSES or 500 <= status < 600


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(
    attempt: int, base: float, cap: float, retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Full-jitter delay before retry number ``attempt`` (0-based), never below ``retry_after``."""
    ceiling = min(cap, base * (2 ** min(attempt, 62)))
    delay = (rng or random).uniform(0, ceiling)
    return delay if retry_after is None else max(delay, retry_after)
