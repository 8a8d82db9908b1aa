"""Token buckets, one per write key and one per client address."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBuckets:
    """``rate`` tokens a second up to ``burst``, per key; each request takes one.

    The table is bounded: when it is full, buckets that have refilled (and so
    say nothing a new bucket would not) are dropped, then the least recently
    used ones.
    """

    def __init__(
        self, rate: float, burst: float, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, time); insertion order = recency

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 when granted, else the seconds until one is available."""
        now = self._clock()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            tokens -= 1.0
            wait = 0.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_keys:
            self._prune(now)
        return wait

    def _prune(self, now: float) -> None:
        # Down to 90%, so the scan runs once per many new keys, not on every one.
        target = self.max_keys * 9 // 10
        full_after = self.burst / self.rate
        for key in [k for k, (_, last) in self._buckets.items() if now - last >= full_after]:
            del self._buckets[key]
        for key in list(self._buckets)[: max(0, len(self._buckets) - target)]:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
