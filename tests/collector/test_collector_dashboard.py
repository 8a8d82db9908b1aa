"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

The collector is a real ``ox-telemetry serve`` process behind a read token,
filled by a real ``ox-telemetry demo`` run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from collector_helpers import Process, start_process

sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (dev extra)")

CHARTS = ["series", "commands", "errors", "durations", "versions", "platforms", "agents", "daemon", "types"]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium() -> str:
    path = os.environ.get("OX_TEST_CHROMIUM") or shutil.which("chromium") or ""
    if not path:
        pytest.skip("no chromium: install Debian's chromium or set OX_TEST_CHROMIUM")
    assert os.path.exists(path), f"OX_TEST_CHROMIUM={path} does not exist"
    return path


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """A collector with a read token, holding two days of demo events."""
    path = tmp_path_factory.mktemp("dashboard")
    server = start_process("--db", f"sqlite://{path}/dash.sqlite3", "--read-token", "tok3n")
    demo = subprocess.run(
        [sys.executable, "-m", "ox_telemetry.cli", "demo", "--url", server.url, "--events", "1500", "--days", "2",
         "--seed", "3", "--no-client"],
        capture_output=True, text=True, timeout=120,
    )
    assert demo.returncode == 0, demo.stderr
    assert "sent" in demo.stdout and "(0 rejected)" in demo.stdout
    yield server
    server.stop()


def test_every_chart_draws(filled: Process, tmp_path: Path) -> None:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # The token in the URL once; the page keeps it in a cookie for its own requests.
        page.goto(f"{filled.url}/?token=tok3n")
        page.wait_for_selector("body[data-loaded]", timeout=20_000)
        states = page.eval_on_selector_all(
            "svg[data-chart]", "els => els.map(e => [e.dataset.chart, e.dataset.state, Number(e.dataset.marks)])")
        assert [s[0] for s in states] == CHARTS
        for name, state, marks in states:
            assert state == "drawn" and marks > 0, (name, state, marks)
        assert page.locator("svg#chart-series path[data-series=events]").count() == 1
        assert page.locator("svg#chart-commands rect").count() >= 5
        assert int(page.get_attribute("body", "data-loaded") or "0") < 1000  # the stats request, in ms
        tiles = page.locator(".tile b").all_inner_texts()
        assert tiles[0] not in ("0", "\u2013")
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"\ndashboard screenshot: {shot}")
        assert shot.stat().st_size > 10_000

        # Another range redraws; a range without data says so instead of drawing.
        page.evaluate("document.body.removeAttribute('data-loaded')")
        page.select_option("#range", "604800")
        page.wait_for_selector("body[data-loaded]", timeout=20_000)
        assert page.get_attribute("#chart-commands", "data-state") == "drawn"
        page.evaluate("document.body.removeAttribute('data-loaded')")
        page.select_option("#range", "custom")
        page.fill("#from", "2001-01-01T00:00")
        page.fill("#to", "2001-01-02T00:00")
        page.click("#apply")
        # A selector, not a script: the page's CSP forbids evaluating strings.
        page.wait_for_selector("#chart-commands[data-state=empty]", timeout=20_000)
        assert not errors
        browser.close()


def test_page_without_token_is_refused_in_the_browser(filled: Process) -> None:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=FLAGS)
        page = browser.new_page()
        response = page.goto(filled.url + "/")
        assert response is not None and response.status == 401
        assert "read token" in page.content()
        browser.close()
