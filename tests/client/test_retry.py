"""Retry decisions (ox_telemetry.sending): which statuses retry, Retry-After in both forms, full-jitter bounds."""

from __future__ import annotations

import ast
import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest

from ox_telemetry.sending import backoff_delay, is_retryable, is_success, parse_retry_after


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_statuses(status: int) -> None:
    assert is_retryable(status) and not is_success(status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 415, 422])
def test_final_statuses(status: int) -> None:
    assert not is_retryable(status)


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("120") == 120.0
    now = datetime(2026, 3, 16, 17, 0, 0, tzinfo=timezone.utc)
    date = format_datetime(now + timedelta(seconds=90), usegmt=True)  # "Mon, 16 Mar 2026 17:01:30 GMT"
    assert parse_retry_after(date, now=now.timestamp()) == pytest.approx(90.0)
    assert parse_retry_after(format_datetime(now - timedelta(hours=1), usegmt=True), now=now.timestamp()) == 0.0
    for junk in (None, "", "soon", "-5", "1.5e3"):
        assert parse_retry_after(junk) is None


def test_full_jitter_stays_within_the_exponential_ceiling() -> None:
    rng = random.Random(7)
    for attempt in range(12):
        ceiling = min(30.0, 1.0 * 2**attempt)
        delays = [backoff_delay(attempt, 1.0, 30.0, rng=rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # jitter spreads over the whole range
    assert backoff_delay(0, 1.0, 30.0, retry_after=45.0, rng=rng) == 45.0  # never sooner than asked


#: Modules that make HTTP requests; ``urllib.parse`` and the collector's server side are not among them.
HTTP_CLIENTS = ("urllib.request", "urllib.error", "http.client", "requests", "httpx", "aiohttp", "urllib3")


def _imported_modules(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_only_the_transport_imports_an_http_client() -> None:
    """One sender: every request leaves through ``ox_telemetry.transport`` (used by ``ox_telemetry.sending``)."""
    src = Path(__file__).resolve().parents[2] / "src"
    importers = sorted(
        str(path.relative_to(src)) for path in src.rglob("*.py")
        if any(name == client or name.startswith(client + ".") for name in _imported_modules(
            ast.parse(path.read_text(), str(path))) for client in HTTP_CLIENTS)
    )
    assert importers == ["ox_telemetry/transport.py"]
