"""Each event is stored under the version of the CLI that recorded it, whichever process sends it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from loopback import Endpoint, wait_until
from ox_telemetry import Client, Event, paths
from ox_telemetry.delivery import wire_line
from ox_telemetry.queue import JsonlQueue


def _record(base_url: str, version: str, numbers: range) -> None:
    """A CLI run without a project: its events wait in memory and are spilled to the per-user spool."""
    client = Client("s", base_url=base_url, version=version)
    for i in numbers:
        client.track(Event("command_complete", command=f"{version} #{i}"))
    client.stop()  # fewer than 10 events: spilled, not sent


def _versions_seen(endpoint: Endpoint) -> dict[str, str]:
    """Each accepted event's command -> the cli_version of the batch it came in."""
    seen = {}
    for request in endpoint.requests:
        if request.status == 200:
            for event in request.body["events"]:
                assert "cli_version" not in event  # the line's version travels in the batch, not the event
                seen[event["command"]] = request.body["cli_version"]
    return seen


def _expected() -> dict[str, str]:
    return {f"{v} #{i}": v for v in ("1.4.2", "0.1.0") for i in range(4)}


def test_another_clis_uploader_sends_each_event_under_its_own_version(endpoint: Endpoint) -> None:
    _record(endpoint.base_url, "1.4.2", range(4))
    _record(endpoint.base_url, "0.1.0", range(4))
    spool = JsonlQueue(paths.user_spool_path(endpoint.base_url))
    assert spool.count() == 8 and endpoint.requests == []
    # What `show` prints is what is sent: no version key in the event.
    assert all("cli_version" not in (wire_line(raw) or "") for raw in Path(spool.path).read_bytes().splitlines())
    Client("s", base_url=endpoint.base_url, version="0.1.0").flush()  # the 0.1.0 CLI's uploader sends all
    assert wait_until(lambda: len(endpoint.accepted_events()) == 8)
    assert _versions_seen(endpoint) == _expected()
    assert len(endpoint.requests) == 2  # one batch per version, not one per run of lines
    assert wait_until(lambda: not spool.sender_busy())


def test_flush_sends_each_event_under_its_own_version(endpoint: Endpoint) -> None:
    for numbers in (range(2), range(2, 4)):  # interleaved runs of the two CLIs
        _record(endpoint.base_url, "1.4.2", numbers)
        _record(endpoint.base_url, "0.1.0", numbers)
    out = subprocess.run([sys.executable, "-m", "ox_telemetry.cli", "flush", "--endpoint", endpoint.base_url],
                         env=dict(os.environ), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert _versions_seen(endpoint) == _expected()
    assert len(endpoint.requests) == 2


def test_a_run_that_gives_up_between_versions_keeps_every_unsent_line(project: Path, endpoint: Endpoint) -> None:
    from ox_telemetry import FileQueue
    from ox_telemetry.delivery import Delivery, Policy
    from ox_telemetry.transport import UrllibTransport

    for numbers in (range(2), range(2, 4)):
        for version in ("1.4.2", "0.1.0"):
            client = Client("s", project_root=str(project), base_url=endpoint.base_url, version=version)
            for i in numbers:
                client.track(Event("command_complete", command=f"{version} #{i}"))

    class FailsAfterOne(UrllibTransport):
        def post(self, *args: object, **kwargs: object) -> object:
            answer = super().post(*args, **kwargs)  # type: ignore[arg-type]
            endpoint.status = 503
            return answer

    queue = FileQueue(str(project))
    url = endpoint.base_url + "/api/v1/telemetry"
    outcome = Delivery(queue, FailsAfterOne(), url, policy=Policy(budget=0)).run()  # type: ignore[arg-type]
    assert outcome == "gave_up"
    sent = set(_versions_seen(endpoint))
    assert sent == {f"1.4.2 #{i}" for i in range(4)}
    left = {e.command for e in queue.read_all()}
    assert left >= {f"0.1.0 #{i}" for i in range(4)}  # nothing unsent was released
    assert sent | left == set(_expected())
