"""Log-scale duration bins: eight per doubling, so a percentile read from them is within about 4.5%."""

from __future__ import annotations

import math
from collections.abc import Iterable

_PER_DOUBLING = 8


def duration_bins(durations: Iterable[int]) -> list[int]:
    """The bin of each positive duration in milliseconds (one call for many: a call costs more than a bin)."""
    log2 = math.log2
    return [int(log2(ms) * _PER_DOUBLING) for ms in durations]


def duration_bin(ms: int) -> int:
    """The bin of a positive duration in milliseconds."""
    return duration_bins((ms,))[0]


def bin_value(index: int) -> float:
    """The middle (geometric) of a bin, in milliseconds."""
    return float(2 ** ((index + 0.5) / _PER_DOUBLING))


def percentile(bins: Iterable[tuple[int, int]], fraction: float) -> float | None:
    """The ``fraction`` quantile (0..1) of a histogram given as (bin, count) pairs; None when empty."""
    ordered = sorted(bins)
    total = sum(count for _, count in ordered)
    if total <= 0:
        return None
    rank = fraction * total
    seen = 0
    for index, count in ordered:
        seen += count
        if seen >= rank:
            return bin_value(index)
    return bin_value(ordered[-1][0])  # pragma: no cover - float rounding at fraction 1.0
