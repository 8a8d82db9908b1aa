"""The collector's small parts on their own: range cutting, buckets, body limits, metrics text, time parameters,
event times."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import random
from collections.abc import AsyncIterator

import pytest

from ox_telemetry._time import parse_rfc3339
from ox_telemetry.collector import ingest
from ox_telemetry.collector.app import stats_range
from ox_telemetry.collector.body import InFlight, read_body
from ox_telemetry.collector.errors import RequestError
from ox_telemetry.collector.metrics import Metrics
from ox_telemetry.collector.ratelimit import TokenBuckets
from ox_telemetry.collector.stats import MAX_POINTS, STEPS, choose_step, segments
from ox_telemetry.collector.storage.schema import CLIENT_NAMES


def test_segments_cover_a_range_exactly_with_the_coarsest_buckets() -> None:
    rng = random.Random(1)
    for _ in range(500):
        start = rng.randrange(0, 10**9) // 60 * 60
        end = start + rng.randrange(1, 90 * 1440) * 60
        parts = segments(start, end)
        covered = sorted((p.start, p.end) for p in parts)
        assert covered[0][0] == start and covered[-1][1] == end
        assert all(a[1] == b[0] for a, b in itertools.pairwise(covered))
        for p in parts:
            assert p.start % p.level == 0 and p.end % p.level == 0 and p.start < p.end
        assert len(parts) <= 5
        assert sum(1 for p in parts if p.level == 60) <= 2
    assert segments(120, 120) == []


def test_series_step_keeps_points_bounded() -> None:
    for span in (60, 3600, 86400, 7 * 86400, 30 * 86400, 365 * 86400):
        step = choose_step(span)
        assert step in STEPS and (span / step <= MAX_POINTS or step == STEPS[-1])


def test_token_buckets_burst_refill_and_wait() -> None:
    now = [100.0]
    buckets = TokenBuckets(rate=2.0, burst=3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)
    assert buckets.take("b") == 0.0  # each key its own bucket
    now[0] += 0.5
    assert buckets.take("a") == 0.0
    now[0] += 100
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]  # refilled to the burst, no further
    assert buckets.take("a") > 0
    with pytest.raises(ValueError):
        TokenBuckets(rate=0, burst=1)


def test_token_buckets_stay_bounded() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=1.0, burst=1, max_keys=100, clock=lambda: now[0])
    for i in range(10_000):
        buckets.take(f"k{i}")
    assert len(buckets) <= 100
    buckets.take("busy")
    assert buckets.take("busy") > 0  # an active bucket survived the pruning that just happened


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def _read(*parts: bytes, length: str | None = None, gzip_body: bool = False, max_body: int = 100,
          max_decoded: int = 1000) -> bytes:
    return asyncio.run(read_body(_chunks(*parts), length, gzip_body, InFlight(10**9).claim(),
                               max_body=max_body, max_decoded=max_decoded))


def test_body_limits_while_streaming() -> None:
    assert _read(b"a" * 60, b"b" * 40) == b"a" * 60 + b"b" * 40  # exactly at the limit
    with pytest.raises(RequestError) as caught:
        _read(b"a" * 60, b"b" * 41)  # no Content-Length: counted as it arrives
    assert caught.value.status == 413
    with pytest.raises(RequestError) as caught:
        _read(b"", length="101")
    assert caught.value.status == 413
    with pytest.raises(RequestError) as caught:
        _read(b"", length="lots")
    assert caught.value.status == 400
    packed = gzip.compress(b"x" * 1000)
    assert _read(packed[:7], packed[7:], gzip_body=True) == b"x" * 1000
    with pytest.raises(RequestError) as caught:
        _read(gzip.compress(b"x" * 1001), gzip_body=True)
    assert (caught.value.status, caught.value.code) == (413, "decoded_too_large")
    with pytest.raises(RequestError) as caught:
        _read(gzip.compress(b"{}") + b"trailing junk", gzip_body=True)
    assert caught.value.status == 400


def test_metrics_text_keeps_counters_exact() -> None:
    metrics = Metrics()
    metrics.accepted["telemetry"] = 12_345_678_901
    metrics.rejected['we"ird\\reason\n'] = 1
    metrics.observe_request("telemetry", 200, 0.003)
    metrics.gauge("ox_test_gauge", "A gauge.", lambda: 2.5)
    text = metrics.render()
    assert 'ox_collector_events_accepted_total{endpoint="telemetry"} 12345678901' in text
    assert 'reason="we\\"ird\\\\reason\\n"' in text
    assert 'ox_collector_request_duration_seconds_bucket{endpoint="telemetry",le="0.0025"} 0' in text
    assert 'ox_collector_request_duration_seconds_bucket{endpoint="telemetry",le="0.005"} 1' in text
    assert "ox_test_gauge 2.5" in text


def test_stats_range_parameters() -> None:
    now = 1_800_000_000.5
    assert stats_range(None, None, now) == (int(now - 86400) // 60 * 60, (int(now) // 60 + 1) * 60)
    assert stats_range("1700000000000", "1700000600000", now) == (1700000000 - 1700000000 % 60, 1700000640)
    assert stats_range("2026-03-16T10:00:00-07:00", "2026-03-16T18:00:00Z", now) == (1773680400, 1773684000)
    for start, end in (("soon", None), ("2026-03-16T18:00:00Z", "2026-03-16T17:00:00Z"),
                       ("-86400000", "0"), ("0", str(6 * 366 * 86400 * 1000))):
        with pytest.raises(RequestError) as caught:
            stats_range(start, end, now)
        assert caught.value.status == 400


def _mutations(rng: random.Random, stamp: str, count: int) -> list[str]:
    chars = "0123456789-:T.Z+,W tz\n\u0661\u00b2"
    out = []
    for _ in range(count):
        text = list(stamp)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(text) + 1)
            choice = rng.random()
            if choice < 0.4 and i < len(text):
                text[i] = rng.choice(chars)
            elif choice < 0.7 and i < len(text):
                del text[i]
            else:
                text.insert(i, rng.choice(chars))
        out.append("".join(text))
    return out


def test_event_times_are_read_as_rfc3339_says_whatever_path_reads_them() -> None:
    # The whole-batch path parses times a column at a time with fromisoformat, which reads more than RFC 3339
    # (week dates, decimal commas, "+0100", garbage after six fraction digits); parse_rfc3339 is the judge.
    rng = random.Random(3)
    valid = ["2026-11-28T04:37:17Z", "2026-11-28T04:37:17.5Z", "2026-11-28T04:37:17.123456789Z",
             "2026-03-16T10:00:00.123456789-07:00", "2026-03-16T22:30:00.5+05:30", "2026-11-28T04:37:17-00:00",
             "0001-01-01T00:00:00Z", "0001-12-31T23:00:00-05:00", "2026-11-28t04:37:17z"]
    odd = ["2026-W48-6T04:37:17Z", "2026-11-28T04:37:17,5Z", "2026-11-28T04:37:17.5+0100", "2026-11-28T04:37:17.Z",
           "2026-11-28T04:37:17.123456:+01:00", "2026-11-28T04:37:17.1234567x8Z", "2026-11-28T04:37:17+01:00:30",
           "2026-11-28T043717.123456Z", "2026-11-28 04:37:17Z", "2026-11-28T04:37:17.5\u0661Z"]
    mutated = _mutations(rng, "2026-11-28T04:37:17.123456789+01:00", 1500) + _mutations(rng, valid[1], 1500)
    stamps = valid + odd + mutated
    column = CLIENT_NAMES.index("client_time")
    # Alone and a batch at a time: a batch with one odd time goes down the per-event paths.
    for group in [[s] for s in valid + odd] + [stamps[i:i + 100] for i in range(0, len(stamps), 100)] + [valid]:
        events = [{"type": "command_complete", "timestamp": s, "event_id": f"e{i}"} for i, s in enumerate(group)]
        parsed = ingest.client_batch(json.dumps({"events": events}).encode(), 1_800_000_000_000_000)
        stored = {row[0]: row[column] for row in parsed.client_rows}
        refused = {r.index: r.reason for r in parsed.rejected}
        for i, s in enumerate(group):
            try:
                expected = parse_rfc3339(s)
            except ValueError:
                assert "timestamp" in refused[i], (s, refused.get(i))
                continue
            assert stored[f"e{i}"] == (None if expected.year <= 1 else ingest.micros(expected)), s
