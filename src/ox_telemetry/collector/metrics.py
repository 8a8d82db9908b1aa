"""Counters and a latency histogram, rendered in the Prometheus text format (version 0.0.4).

Written by hand: the collector needs a few metric families, not a client library.
Everything is updated from the event loop thread, so plain dicts suffice.
"""

from __future__ import annotations

import gc
from collections import defaultdict
from collections.abc import Callable

# (name suffix, labels, value)
_Sample = tuple[str, tuple[tuple[str, str], ...], float]
# Request latency buckets, seconds.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    inner = ",".join(
        f'{k}="' + v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"') + '"' for k, v in pairs
    )
    return "{" + inner + "}"


def _number(value: float) -> str:
    # Counters stay exact integers; "%g" would round them to six digits.
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * len(_BUCKETS)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.total += 1
        self.sum += value
        for i, bound in enumerate(_BUCKETS):
            if value <= bound:
                self.counts[i] += 1
                break


class Metrics:
    """The collector's metrics."""

    def __init__(self) -> None:
        self.accepted: defaultdict[str, int] = defaultdict(int)  # by endpoint
        self.rejected: defaultdict[str, int] = defaultdict(int)  # events, by reason
        self.duplicates: defaultdict[str, int] = defaultdict(int)  # by endpoint
        self.requests: defaultdict[tuple[str, str], int] = defaultdict(int)  # by (endpoint, status)
        self.request_errors: defaultdict[str, int] = defaultdict(int)  # whole requests refused, by reason
        self.latency: defaultdict[str, _Histogram] = defaultdict(_Histogram)  # by endpoint
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self.counters: dict[str, tuple[str, Callable[[], float]]] = {}  # kept elsewhere, read at scrape time

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one finished request."""
        self.requests[(endpoint, str(status))] += 1
        self.latency[endpoint].observe(seconds)

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """Register a value read at scrape time."""
        self.gauges[name] = (help_text, read)

    def counter(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """Register a counter kept elsewhere (the OTLP exporter's), read at scrape time."""
        self.counters[name] = (help_text, read)

    def render(self) -> str:
        """The exposition text."""
        out: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: list[_Sample]) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            for suffix, labels, value in samples:
                out.append(f"{name}{suffix}{_labels(labels)} {_number(value)}")

        family("ox_collector_events_accepted_total", "counter", "Events accepted (stored now or before).",
               [("", (("endpoint", k),), v) for k, v in sorted(self.accepted.items())])
        family("ox_collector_events_rejected_total", "counter", "Events refused, by reason.",
               [("", (("reason", k),), v) for k, v in sorted(self.rejected.items())])
        family("ox_collector_events_duplicate_total", "counter", "Accepted events that were already stored.",
               [("", (("endpoint", k),), v) for k, v in sorted(self.duplicates.items())])
        family("ox_collector_requests_total", "counter", "Requests answered, by endpoint and status.",
               [("", (("endpoint", e), ("status", s)), v) for (e, s), v in sorted(self.requests.items())])
        family("ox_collector_requests_refused_total", "counter", "Requests refused as a whole, by reason.",
               [("", (("reason", k),), v) for k, v in sorted(self.request_errors.items())])
        samples: list[_Sample] = []
        for endpoint, hist in sorted(self.latency.items()):
            cumulative = 0
            for bound, count in zip(_BUCKETS, hist.counts, strict=True):
                cumulative += count
                samples.append(("_bucket", (("endpoint", endpoint), ("le", f"{bound:g}")), cumulative))
            samples.append(("_bucket", (("endpoint", endpoint), ("le", "+Inf")), hist.total))
            samples.append(("_sum", (("endpoint", endpoint),), hist.sum))
            samples.append(("_count", (("endpoint", endpoint),), hist.total))
        family("ox_collector_request_duration_seconds", "histogram", "Request latency.", samples)
        family("python_gc_collections_total", "counter", "Garbage collections, by generation.",
               [("", (("generation", str(g)),), stats["collections"]) for g, stats in enumerate(gc.get_stats())])
        for name, (help_text, read) in sorted(self.counters.items()):
            family(name, "counter", help_text, [("", (), read())])
        for name, (help_text, read) in sorted(self.gauges.items()):
            family(name, "gauge", help_text, [("", (), read())])
        return "\n".join(out) + "\n"
