"""``ox-telemetry demo``: send a collector a week of realistic usage, so its dashboard has something to show.

Simulated users run CLI sessions (commands with plausible durations and
error rates, logins, guidance fetches, coworkers) on a mix of versions,
platforms and coding agents; their daemons report start-ups and syncs. The
history is posted as the wire formats say (Batches to ``/api/v1/telemetry``,
uploads to ``/tevents``) through the senders' own code
(:mod:`ox_telemetry.sending`); then one live session is recorded with the
client library itself (``ox_telemetry.Client``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from . import __version__, sending, wire
from ._time import format_rfc3339
from .transport import UrllibTransport
from .wire import Batch, Event

# command -> (median duration ms, error rate)
COMMANDS = {
    "agent prime": (1500, 0.02), "status": (120, 0.01), "sync": (2600, 0.08), "init": (900, 0.05),
    "doctor": (700, 0.03), "login": (3200, 0.12), "session start": (400, 0.02), "guidance fetch": (850, 0.06),
    "coworker load": (1900, 0.04), "logout": (90, 0.0),
}
COMMAND_WEIGHTS = [30, 22, 14, 3, 4, 3, 10, 8, 5, 1]
VERSIONS = (["0.5.1", "0.5.0", "0.4.9", "0.6.0-rc.1"], [60, 25, 10, 5])
PLATFORMS = ([("linux", "amd64"), ("darwin", "arm64"), ("darwin", "amd64"), ("windows", "amd64"),
              ("linux", "arm64")], [45, 35, 8, 10, 2])
AGENTS = (["claude-code", "cursor", "codex", ""], [45, 20, 10, 25])
MODELS = {"claude-code": "claude-sonnet-4", "cursor": "gpt-4.1", "codex": "gpt-5-codex", "": ""}
ERROR_CODES = ["ERR_NETWORK", "ERR_AUTH", "ERR_TIMEOUT", "ERR_CONFIG", "ERR_UNKNOWN"]
DAEMON_EVENTS = ["app:startup", "sync:complete", "sync:complete", "sync:complete", "sync:error", "app:shutdown"]


class User:
    """One simulated person: a machine, a CLI version, a coding agent."""

    def __init__(self, rng: random.Random) -> None:
        self.version = rng.choices(*VERSIONS)[0]
        self.os, self.arch = rng.choices(*PLATFORMS)[0]
        self.agent = rng.choices(*AGENTS)[0]
        self.client_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self.repo = f"repo_{rng.getrandbits(32):08x}"


def _at(start: datetime, seconds: float) -> datetime:
    return start + timedelta(seconds=seconds)


def session(rng: random.Random, user: User, start: datetime) -> list[Event]:
    """One CLI session's events, in time order."""
    sid = f"sess-{rng.getrandbits(48):012x}"
    common: dict[str, Any] = {"session_id": sid, "repo_id": user.repo, "agent_type": user.agent,
                              "model": MODELS[user.agent], "api_endpoint": "https://sageox.ai"}
    out = [Event(wire.EVENT_SESSION_START, start, success=True, **common)]
    clock = 1.0
    if rng.random() < 0.1:
        ok = rng.random() > 0.15
        out.append(Event(wire.EVENT_AUTH_SUCCESS if ok else wire.EVENT_AUTH_FAILURE, _at(start, clock),
                         success=ok, **common))
    for _ in range(1 + int(rng.expovariate(1 / 5))):
        command = rng.choices(list(COMMANDS), COMMAND_WEIGHTS)[0]
        median, error_rate = COMMANDS[command]
        duration = max(1, int(rng.lognormvariate(0, 0.7) * median))
        ok = rng.random() >= error_rate
        clock += rng.uniform(5, 240)
        out.append(Event(wire.EVENT_COMMAND_START, _at(start, clock), command=command, **common))
        out.append(Event(wire.EVENT_COMMAND_COMPLETE, _at(start, clock + duration / 1000), command=command,
                         duration_ms=duration, success=ok, error_code="" if ok else rng.choice(ERROR_CODES),
                         **common))
        if command == "guidance fetch":
            out.append(Event(wire.EVENT_GUIDANCE_FETCH if ok else wire.EVENT_GUIDANCE_FETCH_ERROR,
                             _at(start, clock + 0.5), success=ok, path="guidance/start.md",
                             error_code="" if ok else "404", **common))
        if command == "coworker load":
            out.append(Event(wire.EVENT_COWORKER_LOAD, _at(start, clock + 0.2), success=ok, duration_ms=duration,
                             coworker_name=rng.choice(["reviewer", "planner", "tester"]),
                             coworker_model=rng.choice(["claude-sonnet-4", "gpt-4.1"]), **common))
        if command == "agent prime":
            calls = rng.randint(1, 8)
            out.append(Event(wire.EVENT_ATTRIBUTION_SHOWN, _at(start, clock + 0.1), success=True,
                             prime_call_count=calls, **common))
            if calls > 5:
                out.append(Event(wire.EVENT_PRIME_EXCESSIVE, _at(start, clock + 0.2), prime_call_count=calls,
                                 **common))
    if rng.random() < 0.01:
        out.append(Event(wire.EVENT_DAEMON_START_FAILURE, _at(start, clock), session_id=sid,
                         metadata={"error_type": "socket_bind", "error_msg": "address already in use"}))
    out.append(Event(wire.EVENT_SESSION_END, _at(start, clock + 30), success=True, **common))
    for event in out:
        event.event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return out


def history(rng: random.Random, events: int, days: float, now: datetime) -> Iterator[tuple[User, list[Event]]]:
    """Sessions of simulated users over the last ``days`` days, about ``events`` events in all."""
    users = [User(rng) for _ in range(40)]
    made = 0
    while made < events:
        user = rng.choice(users)
        # Busier during working hours.
        while True:
            start = now - timedelta(seconds=rng.uniform(60, days * 86400))
            if rng.random() < (1.0 if 8 <= start.hour < 19 else 0.3):
                break
        batch = session(rng, user, start)
        made += len(batch)
        yield user, batch


def daemon_upload(rng: random.Random, user: User, now: datetime, days: float, count: int) -> bytes:
    """A daemon upload of ``count`` events of ``user``'s daemon."""
    events = []
    for _ in range(count):
        at = now - timedelta(seconds=rng.uniform(60, days * 86400))
        events.append({
            "uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "ts": int(at.timestamp() * 1000),
            "tslocal": format_rfc3339(at),
            "event": rng.choice(DAEMON_EVENTS),
            "props": {"app_type": "ox-daemon", "app_version": user.version, "os": user.os, "arch": user.arch},
        })
    return wire.encode_upload(user.client_id, events)


class CollectorError(OSError):
    """The collector could not be reached, or refused a body for good."""


#: How long one body is retried (429, 503, a network error) before the demo gives up.
RETRY_SECONDS = 30.0


def post(endpoint: sending.Endpoint, body: bytes) -> dict[str, object]:
    """POST a JSON body as every sender does (gzip, 415, Retry-After, backoff); the decoded answer."""
    backoff = sending.Backoff(0.5, 5.0)
    reply, _ = sending.send_with_retries(endpoint, body, backoff, time.monotonic() + RETRY_SECONDS, sending.sleep)
    if reply.kind != sending.DELIVERED:
        raise CollectorError(f"{endpoint.url} answered {reply.error}")
    try:
        answer: dict[str, object] = json.loads(reply.body)
    except ValueError:
        raise CollectorError(f"{endpoint.url} answered something that is not JSON") from None
    return answer


def live_session(base_url: str) -> int:
    """Record one short session with the client library; how many commands it tracked."""
    from . import Client

    client = Client(f"demo-live-{uuid.uuid4().hex[:8]}", base_url=base_url, version="0.5.1")
    if not client.is_enabled():
        return 0
    with client:
        for command, seconds, ok in (("status", 0.12, True), ("agent prime", 1.4, True), ("sync", 2.2, False)):
            client.track_command(command, seconds, ok, "" if ok else "ERR_NETWORK")
        client.flush()
    return 3


def main(argv: list[str]) -> int:
    """Run the demo; the exit code."""
    p = argparse.ArgumentParser(prog="ox-telemetry demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8080", help="the collector (default: %(default)s)")
    p.add_argument("--events", type=int, default=5000, help="about how many CLI events (default: %(default)s)")
    p.add_argument("--days", type=float, default=7.0, help="spread them over this many days (default: 7)")
    p.add_argument("--write-key", help="the collector's write key, if it asks for one")
    p.add_argument("--seed", type=int, default=None, help="random seed, for a repeatable history")
    p.add_argument("--no-client", action="store_true", help="skip the live session through ox_telemetry.Client")
    args = p.parse_args(argv)
    base = args.url.rstrip("/")
    headers = {"Authorization": f"Bearer {args.write_key}"} if args.write_key else {}
    transport = UrllibTransport()
    agent = f"ox-telemetry-demo/{__version__}"
    cli = sending.Endpoint(transport, base + "/api/v1/telemetry", agent, 30.0, headers=headers)
    daemon = sending.Endpoint(transport, base + "/tevents", agent, 30.0, headers=headers)
    rng = random.Random(args.seed)
    now = datetime.now(timezone.utc)
    sent = rejected = 0
    pending: dict[str, list[Event]] = {}
    try:
        for user, events in history(rng, args.events, args.days, now):
            key = f"{user.version}|{user.os}|{user.arch}|{user.client_id}"
            pending.setdefault(key, []).extend(events)
            if len(pending[key]) >= 100:
                sent_now, rejected_now = _send(cli, pending.pop(key), key)
                sent, rejected = sent + sent_now, rejected + rejected_now
        for key, events in pending.items():
            sent_now, rejected_now = _send(cli, events, key)
            sent, rejected = sent + sent_now, rejected + rejected_now
        daemon_sent = 0
        for user in [User(rng) for _ in range(15)]:
            answer = post(daemon, daemon_upload(rng, user, now, args.days, 40))
            daemon_sent += int(answer["accepted"])  # type: ignore[call-overload]
    except OSError as exc:
        print(f"ox-telemetry demo: cannot reach the collector at {base}: {exc}", file=sys.stderr)
        return 1
    print(f"sent {sent} CLI events and {daemon_sent} daemon events over the last {args.days:g} days "
          f"({rejected} rejected)")
    if not args.no_client and not args.write_key:
        tracked = live_session(base)
        if tracked:
            print(f"recorded a live session of {tracked} commands with ox_telemetry.Client (delivered in the "
                  "background)")
        else:
            print("telemetry is turned off for this user (DO_NOT_TRACK or SAGEOX_TELEMETRY): no live session")
    print(f"open {base}/ to see the dashboard")
    return 0


def _send(endpoint: sending.Endpoint, events: list[Event], key: str) -> tuple[int, int]:
    version, system, arch, client_id = key.split("|")
    sent = rejected = 0
    for i in range(0, len(events), 100):
        body = Batch(events[i:i + 100], version, system, arch, datetime.now(timezone.utc), client_id).to_json().encode()
        answer = post(endpoint, body)
        sent += int(answer["accepted"])  # type: ignore[call-overload]
        rejected += len(answer["rejected"])  # type: ignore[arg-type]
    return sent, rejected
