"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

The collector serves the page and ``/api/v1/stats`` behind a read token, filled
by a real ``ox-telemetry demo`` run. ``/api/v1/installs`` and ``/api/v1/errors``
answer canned numbers from a test-only middleware (``Canned``): they depend on
the query (range and filters), so the tests see what the page asked for and
that it drew the answer; switched off, they answer 404 as an older collector does.
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import collector_helpers
import orjson
import pytest
from collector_helpers import Server
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from ox_telemetry.collector.config import Config

sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (dev extra)")

CHARTS = ["adoption", "series", "commands", "errors", "durations", "versions", "platforms", "agents", "daemon",
          "types"]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
#: Oldest to newest, with one that is no version at all; more than the page colours one by one.
VERSIONS = ["", "0.7.0", "0.8.2", "0.9.0", "0.10.0", "0.10.1-rc1", "0.10.1", "1.0.0"]
COMMANDS = ["status", "sync", "build"]
DAY_MS = 86_400_000


def chromium() -> str:
    path = os.environ.get("OX_TEST_CHROMIUM") or shutil.which("chromium") or ""
    if not path:
        pytest.skip("no chromium: install Debian's chromium or set OX_TEST_CHROMIUM")
    assert os.path.exists(path), f"OX_TEST_CHROMIUM={path} does not exist"
    return path


@dataclass
class Canned:
    """What the canned APIs answer (``missing``: 404) and the queries every ``/api/`` GET carried."""

    missing: bool = False
    asked: list[tuple[str, dict[str, str]]] = field(default_factory=list)


def _installs(q: dict[str, str]) -> dict[str, Any]:
    first = int(q["from"]) // DAY_MS
    days = [datetime.date.fromordinal(719163 + d).isoformat() for d in range(first, -(-int(q["to"]) // DAY_MS))]
    versions = [v for v in VERSIONS if q.get("version", v) == v]
    per = {v: [(i + 1) * (k + 1) for k in range(len(days))] for i, v in enumerate(versions)}
    daily = [{"day": day, "installs": sum(c[k] for c in per.values())} for k, day in enumerate(days)]
    by = q.get("by") == "version"
    return {
        "total": 10 * len(days) + 7 * len(versions),
        "groups": [{"key": v, "installs": sum(c)} for v, c in per.items()] if by else [],
        "daily": daily,
        "series": [{"key": v, "daily": [{"day": d, "installs": n} for d, n in zip(days, c, strict=True)]}
                   for v, c in per.items()] if by else [],
        "unknown_events": 0,
    }


def _errors(q: dict[str, str]) -> dict[str, Any]:
    rows = [{"error_code": f"E_{c.upper()}_{i}", "command": c, "version": v, "count": 100 - 7 * i - len(c)}
            for i, v in enumerate(VERSIONS[1:]) for c in COMMANDS]
    rows = [r for r in rows if all(q.get(k, r[k]) == r[k] for k in ("command", "version"))]
    rows.sort(key=lambda r: -r["count"])
    return {"total": sum(r["count"] for r in rows), "errors": rows[: int(q.get("limit", "50"))]}


class CannedApi:
    """ASGI middleware, test only: answers ``/api/v1/installs`` and ``/api/v1/errors`` from the query."""

    def __init__(self, app: ASGIApp, canned: Canned) -> None:
        self.app = app
        self.canned = canned

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/api/"):
            await self.app(scope, receive, send)
            return
        q = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
        self.canned.asked.append((path, q))
        answer = {"/api/v1/installs": _installs, "/api/v1/errors": _errors}.get(path)
        if answer is None:
            await self.app(scope, receive, send)
            return
        status, body = (404, {"error": "Not Found", "code": "not_found"}) if self.canned.missing else (200, answer(q))
        data = orjson.dumps(body)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Canned]]:
    """A collector with a read token, holding two days of demo events, and its canned APIs."""
    path = tmp_path_factory.mktemp("dashboard")
    canned = Canned()
    real_create_app = collector_helpers.create_app

    def with_canned(*args: Any) -> Starlette:
        app = real_create_app(*args)
        app.add_middleware(CannedApi, canned=canned)
        return app

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(collector_helpers, "create_app", with_canned)
        server = Server(Config(db_url=f"sqlite://{path}/dash.sqlite3", read_token="tok3n", address_rate=0,
                               key_rate=0))
    demo = subprocess.run(
        [sys.executable, "-m", "ox_telemetry.cli", "demo", "--url", server.url, "--events", "1500", "--days", "2",
         "--seed", "3", "--no-client"],
        capture_output=True, text=True, timeout=120,
    )
    assert demo.returncode == 0, demo.stderr
    assert "sent" in demo.stdout and "(0 rejected)" in demo.stdout
    yield server, canned
    server.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=FLAGS)
        yield browser
        browser.close()


def open_page(browser: Any, server: Server, width: int, query: str = "") -> tuple[Any, list[str]]:
    """The dashboard at ``width`` pixels, loaded (the token given once in the URL, as a user does)."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server.url}/?token=tok3n")
    if query:
        page.goto(f"{server.url}/?{query}")
    page.wait_for_selector("body[data-loaded]", timeout=20_000)
    return page, errors


def reload_after(page: Any, action: Any) -> None:
    """Run ``action`` (a click) and wait until the page has drawn what it then asked for."""
    page.evaluate("document.body.removeAttribute('data-loaded')")
    action()
    page.wait_for_selector("body[data-loaded]", timeout=20_000)


def overlapping_labels(page: Any) -> list[Any]:
    """Pairs of text elements in one chart whose boxes overlap by more than a pixel each way."""
    return page.eval_on_selector_all("svg[data-chart]", """charts => charts.flatMap(svg => {
        const boxes = [...svg.querySelectorAll("text")].map(t => [t.textContent, t.getBoundingClientRect()]);
        const out = [];
        boxes.forEach(([ta, a], i) => boxes.slice(i + 1).forEach(([tb, b]) => {
            const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
            const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
            if (w > 1 && h > 1) out.push([svg.dataset.chart, ta, tb]);
        }));
        return out;
    })""")


def test_every_chart_draws(filled: tuple[Server, Canned], browser: Any, tmp_path: Path) -> None:
    server, _ = filled
    page, errors = open_page(browser, server, 1400)
    states = page.eval_on_selector_all(
        "svg[data-chart]", "els => els.map(e => [e.dataset.chart, e.dataset.state, Number(e.dataset.marks)])")
    assert [s[0] for s in states] == CHARTS
    for name, state, marks in states:
        assert state == "drawn" and marks > 0, (name, state, marks)
    assert page.locator("svg#chart-series path[data-series=events]").count() == 1
    assert page.locator("svg#chart-commands rect.hit").count() >= 5
    assert int(page.get_attribute("body", "data-loaded") or "0") < 1000  # every request, in ms
    tiles = page.locator(".tile b").all_inner_texts()
    assert len(tiles) == 8 and all(t not in ("0", "\u2013") for t in tiles[:4]), tiles
    assert page.locator(".tile[data-kind=installs]").count() == 3
    assert page.get_attribute("#errors", "data-state") == "drawn"
    assert page.locator("#errors tbody tr").count() == (len(VERSIONS) - 1) * len(COMMANDS)

    # Newest on top, in the first (strongest) colour; the legend reads newest first; the oldest share one area.
    layers = page.eval_on_selector_all("svg#chart-adoption path[data-version]",
                                       "els => els.map(e => [e.dataset.version, e.getAttribute('fill')])")
    assert [v for v, _ in layers] == ["older", "0.8.2", "0.9.0", "0.10.0", "0.10.1-rc1", "0.10.1", "1.0.0"]
    assert layers[-1][1] == "#1d4ed8"
    legend = page.locator("#adoption-legend button, #adoption-legend span").all_inner_texts()
    assert legend == ["1.0.0", "0.10.1", "0.10.1-rc1", "0.10.0", "0.9.0", "0.8.2", "older"]

    # Another range redraws; a range without data says so instead of drawing.
    reload_after(page, lambda: page.select_option("#range", "604800"))
    assert page.get_attribute("#chart-commands", "data-state") == "drawn"
    assert "range=604800" in page.url
    page.select_option("#range", "custom")
    page.fill("#from", "2001-01-01T00:00")
    page.fill("#to", "2001-01-02T00:00")
    page.click("#apply")
    # A selector, not a script: the page's CSP forbids evaluating strings.
    page.wait_for_selector("#chart-commands[data-state=empty]", timeout=20_000)
    assert not errors


@pytest.mark.parametrize("width", [375, 1400])
def test_fits_the_screen_without_overlapping_labels(filled: tuple[Server, Canned], browser: Any, width: int,
                                                    tmp_path: Path) -> None:
    server, _ = filled
    # A week, so the time axes carry long labels (day and hour).
    page, errors = open_page(browser, server, width, "range=604800")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert overlapping_labels(page) == []
    kept = page.eval_on_selector_all("svg#chart-series text.x-label", "els => els.length")
    assert kept >= 2  # thinned, not gone
    shot = tmp_path / f"dashboard-{width}.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"\ndashboard screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    assert not errors


def test_clicking_a_bar_filters_the_page_and_the_url_keeps_it(filled: tuple[Server, Canned],
                                                            browser: Any) -> None:
    server, canned = filled
    page, errors = open_page(browser, server, 1400)
    bar = page.locator("svg#chart-commands rect.hit[data-key=sync]")
    canned.asked.clear()
    reload_after(page, bar.click)
    assert parse_qs(urlsplit(page.url).query) == {"command": ["sync"]}
    assert page.locator("#filters .chip").count() == 1
    assert page.locator("#filters .chip[data-dim=command] b").inner_text() == "sync"
    asked = {path for path, q in canned.asked if q.get("command") == "sync"}
    assert asked == {"/api/v1/stats", "/api/v1/installs", "/api/v1/errors"}
    assert all(q.get("command") == "sync" for _, q in canned.asked)
    commands = page.locator("#errors tbody tr td:nth-child(2)").all_inner_texts()
    assert commands and set(commands) == {"sync"}  # the table holds what the filtered API answered

    # A version from the adoption chart adds to it; the shared URL opens the same view.
    reload_after(page, page.locator("#adoption-legend button[data-key='0.10.1']").click)
    query = urlsplit(page.url).query
    assert parse_qs(query) == {"command": ["sync"], "version": ["0.10.1"]}
    assert page.locator("svg#chart-adoption path[data-version]").count() == 1
    shared, _ = open_page(browser, server, 375, query)
    assert shared.locator("#filters .chip").count() == 2
    assert set(shared.locator("#errors tbody tr td:nth-child(3)").all_inner_texts()) == {"0.10.1"}

    # Each chip clears its filter, from the page and from the URL.
    reload_after(page, page.locator("#filters [data-clear=command]").click)
    assert parse_qs(urlsplit(page.url).query) == {"version": ["0.10.1"]}
    reload_after(page, page.locator("#filters [data-clear=version]").click)
    assert urlsplit(page.url).query == ""
    assert page.locator("#filters").is_hidden()
    assert page.locator("#errors tbody tr").count() == (len(VERSIONS) - 1) * len(COMMANDS)
    assert not errors


def test_without_the_installs_and_errors_apis_those_panels_say_so(filled: tuple[Server, Canned],
                                                                  browser: Any) -> None:
    server, canned = filled
    canned.missing = True
    try:
        page, errors = open_page(browser, server, 375)
    finally:
        canned.missing = False
    assert page.get_attribute("#chart-adoption", "data-state") == "unavailable"
    assert "not available" in (page.locator("#chart-adoption").text_content() or "")
    assert page.get_attribute("#errors", "data-state") == "unavailable"
    assert "not available" in page.locator("#errors").inner_text()
    assert page.locator(".tile[data-kind=unavailable]").count() == 3
    assert page.get_attribute("#chart-commands", "data-state") == "drawn"
    assert not errors


def test_favicon(filled: tuple[Server, Canned]) -> None:
    server, _ = filled
    reply = server.request("GET", "/favicon.ico")  # no token: the icon holds no data
    assert reply.status == 200
    assert reply.headers["content-type"] == "image/x-icon"
    assert reply.body[:4] == b"\0\0\1\0" and len(reply.body) > 1000


def test_page_without_token_is_refused_in_the_browser(filled: tuple[Server, Canned], browser: Any) -> None:
    server, _ = filled
    page = browser.new_page()
    response = page.goto(server.url + "/")
    assert response is not None and response.status == 401
    assert "read token" in page.content()
