"""The read side over HTTP: the stats API, the page, and the read token in front of them."""

from __future__ import annotations

import time
from collections.abc import Callable

from collector_helpers import Server, batch, event


def test_stats_api_reflects_what_was_posted(serve: Callable[..., Server]) -> None:
    server = serve()
    now = time.time()
    events = [event(command="sync", success=False, duration_ms=2000), event(command="status", duration_ms=50),
              event(type="session_start", agent_type="cursor")]
    server.post("/api/v1/telemetry", batch(*events, cli_version="0.6.0", os="darwin", arch="arm64"))
    server.post("/tevents", {"clientid": "c", "events": [{"event": "app:startup", "ts": int(now * 1000)}]})
    reply = server.request("GET", f"/api/v1/stats?from={int((now - 3600) * 1000)}&to={int((now + 60) * 1000)}")
    assert reply.status == 200 and reply.headers["cache-control"] == "no-store"
    data = reply.json()
    assert data["totals"]["events"] == 3 and data["totals"]["daemon_events"] == 1
    assert data["totals"]["errors"] == 1 and data["totals"]["command_runs"] == 2
    assert {c["command"]: c["error_rate"] for c in data["commands"]} == {"sync": 1.0, "status": 0.0}
    assert data["cli_versions"] == [{"value": "0.6.0", "count": 3}]
    assert data["os_arch"] == [{"value": "darwin/arm64", "count": 3}]
    assert {a["value"] for a in data["agent_types"]} == {"cursor", "(none)"}
    assert data["daemon_events"] == [{"value": "app:startup", "count": 1}]
    assert sum(p["events"] for p in data["series"]) == 3
    assert data["step"] == 60_000  # an hour in minutes
    default = server.request("GET", "/api/v1/stats").json()  # the last 24 hours
    assert default["totals"]["events"] == 3 and default["to"] - default["from"] >= 86400_000


def test_stats_api_rejects_bad_ranges(shared: Server) -> None:
    for query in ("from=yesterday", "from=2026-03-16T18:00:00Z&to=2026-03-16T17:00:00Z", "to=-5"):
        reply = shared.request("GET", f"/api/v1/stats?{query}")
        assert reply.status == 400 and reply.json()["code"] == "invalid_query"


def test_page_is_self_contained(shared: Server) -> None:
    reply = shared.request("GET", "/")
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in reply.headers["content-security-policy"]
    page = reply.body.decode()
    assert "api/v1/stats" in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")


def test_read_token_guards_page_stats_and_metrics(serve: Callable[..., Server]) -> None:
    server = serve(read_token="s3cret")
    for path in ("/", "/api/v1/stats", "/metrics"):
        assert server.request("GET", path).status == 401
        assert server.request("GET", path, headers={"Authorization": "Bearer wrong"}).status == 401
        assert server.request("GET", path, headers={"Authorization": "Bearer s3cret"}).status == 200
        assert server.request("GET", path, headers={"Cookie": "ox_read_token=s3cret"}).status == 200
    # The token in a URL is exchanged for the cookie once, and the page sent on to a URL without it.
    page = server.request("GET", "/?token=s3cret")
    assert page.status == 303 and page.headers["location"] == "/"
    cookie = page.headers["set-cookie"]
    assert cookie.startswith("ox_read_token=s3cret") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    wrong = server.request("GET", "/?token=nope")
    assert wrong.status == 303 and "set-cookie" not in wrong.headers
    for path in ("/api/v1/stats?token=s3cret", "/metrics?token=s3cret"):
        assert server.request("GET", path).status == 401
    # Writing and health stay open: the token guards reading only.
    assert server.request("GET", "/healthz").status == 200
    assert server.post("/api/v1/telemetry", batch(event())).status == 200
