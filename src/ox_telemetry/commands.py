"""The user's side: ``ox-telemetry status | enable | disable | show | flush``.

Each command is two things: a plain function a host CLI can call or mount
under its own ``telemetry`` command (``status()``, ``enable()``,
``disable()``, ``show()``, ``flush()``), and a ``*_main(argv) -> int`` entry
point for the console script. :func:`main` dispatches ``argv[0]`` to them,
so a host can hand over everything after ``mycli telemetry``.

The project is ``--project`` or the nearest directory at or above the working
directory that holds ``.sageox/``; the endpoint is ``--endpoint``, else
``$SAGEOX_ENDPOINT``, else the default, as for the client.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import consent, files, ipc, paths
from .ci import detect as detect_ci
from .client import TELEMETRY_PATH, resolve_base_url
from .queue import FileQueue, JsonlQueue
from .transport import Transport

__all__ = [
    "BatchReport", "disable", "disable_main", "enable", "enable_main", "find_project_root", "flush",
    "flush_main", "main", "set_enabled", "show", "show_main", "status", "status_main",
]


# -- where things are -------------------------------------------------------------


def find_project_root(start: str | None = None) -> str | None:
    """The nearest directory at or above ``start`` (default: the working directory) holding ``.sageox/``."""
    here = os.path.abspath(start or os.getcwd())
    while True:
        if os.path.isdir(paths.project_sageox_dir(here)):
            return here
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def _endpoint(base_url: str | None) -> str:
    return resolve_base_url(base_url or None)  # an empty --endpoint means the default, too


def _root(project_root: str | os.PathLike[str] | None) -> str | None:
    return os.fspath(project_root) if project_root else find_project_root()


def _spool(base_url: str) -> JsonlQueue:
    return JsonlQueue(paths.user_spool_path(base_url))


def _all_spools() -> list[JsonlQueue]:
    """Every per-user spool (one per endpoint a client has used)."""
    return [JsonlQueue(path) for path in paths.user_spool_paths()]


def _exists(queue: JsonlQueue) -> bool:
    # Asking an absent queue anything would create its lock file: a status must not leave files behind.
    return os.path.exists(queue.path) or os.path.exists(queue.sending_path)


def _count(queue: JsonlQueue) -> int:
    return queue.count() if _exists(queue) else 0


def _decision(root: str | None) -> consent.Decision:
    """The consent decision for a project (or none), as a client there would make it."""
    return consent.decide(None, consent.read_project_config(root) if root else {})


def _queues(root: str | None, base_url: str) -> list[tuple[str, JsonlQueue]]:
    """``(kind, queue)`` for the project's queue (when there is a project) and the endpoint's spool."""
    found: list[tuple[str, JsonlQueue]] = []
    if root:
        found.append(("project", FileQueue(root)))
    found.append(("spool", _spool(base_url)))
    return found


def _refusal(path: str, exc: OSError) -> dict[str, str]:
    """``{"path", "why"}`` for a file we would not or could not touch."""
    if isinstance(exc, files.UnsafeFile):
        return {"path": exc.path, "why": exc.why}
    return {"path": path, "why": exc.strerror or exc.__class__.__name__}


# -- status -----------------------------------------------------------------------


def _refused(queues: list[JsonlQueue]) -> list[dict[str, str]]:
    """Every file refused in this process (by the client, or by looking at ``queues`` and the user's files now)."""
    for queue in queues:
        try:
            queue.check()
        except OSError:
            pass  # refusals land in files.refused; a missing directory is no refusal
    for path in (paths.client_id_path(), paths.ratelimit_path()):
        try:
            files.check_file(path)
        except OSError:
            pass
    return [{"path": path, "why": why} for path, why in sorted(files.refused.items())]


def _upload_state(queue: JsonlQueue) -> dict[str, Any]:
    from .delivery import UploadState

    state = UploadState.load(queue)
    return {"last_success": state.last_success, "last_error": state.last_error, "failures": state.failures}


def daemon_running() -> bool:
    """Whether the delivery daemon answers on its socket."""
    answer = ipc.request({"type": "ping"}, timeout=0.5)
    return bool(answer and answer.get("success") is True)


def status(project_root: str | os.PathLike[str] | None = None, base_url: str | None = None) -> dict[str, Any]:
    """Everything ``ox-telemetry status`` reports, as a JSON-ready dict.

    ``enabled`` and ``rule`` (``DO_NOT_TRACK``, ``SAGEOX_TELEMETRY``, ``user
    config``, ``project config`` or ``default``), ``endpoint``, the project
    queue's path and count, the spool's path and count, whether the daemon
    runs, the last successful send and last error of those queues, and
    ``refused``: each file that is not ours where one of ours should be (a
    link, a FIFO, another user's file...) and why, which is skipped, never used.
    """
    root = _root(project_root)
    endpoint = _endpoint(base_url)
    decision = _decision(root)
    queues = []
    found = _queues(root, endpoint)
    refused = _refused([queue for _, queue in found])
    for kind, queue in found:
        queues.append({"kind": kind, "path": queue.path, "count": _count(queue), **_upload_state(queue)})
    successes = sorted(q["last_success"] for q in queues if q["last_success"])
    errors = [q["last_error"] for q in queues if q["last_error"] and q["failures"]]
    project = next((q for q in queues if q["kind"] == "project"), None)
    spool = queues[-1]
    return {
        "enabled": decision.enabled,
        "rule": decision.rule,
        "endpoint": endpoint,
        "user_config": paths.user_config_file(),
        "project_root": root,
        "queue_path": project["path"] if project else None,
        "queue_count": project["count"] if project else 0,
        "spool_path": spool["path"],
        "spool_count": spool["count"],
        "spool_count_all": sum(_count(q) for q in _all_spools()),
        "daemon_running": daemon_running(),
        "ci": detect_ci(),
        "last_success": successes[-1] if successes else None,
        "last_error": errors[0] if errors else None,
        "queues": queues,
        "refused": refused,
    }


def _format_status(info: dict[str, Any]) -> str:
    state = "on" if info["enabled"] else "off"
    lines = [
        f"telemetry:    {state} (decided by: {info['rule']})",
        f"endpoint:     {info['endpoint']}",
        f"user config:  {info['user_config']}",
    ]
    if info["project_root"]:
        lines.append(f"project:      {info['project_root']}")
        lines.append(f"queue:        {info['queue_path']} ({_events(info['queue_count'])})")
    else:
        lines.append("project:      none found (no .sageox/ here or above)")
    lines.append(f"spool:        {info['spool_path']} ({_events(info['spool_count'])})")
    if info["spool_count_all"] != info["spool_count"]:
        lines.append(f"all spools:   {_events(info['spool_count_all'])}")
    lines.append(f"daemon:       {'running' if info['daemon_running'] else 'not running'}")
    if info["ci"]:
        lines.append(f"ci:           {info['ci']}")
    lines.append(f"last send:    {info['last_success'] or 'never'}")
    lines.append(f"last error:   {info['last_error'] or 'none'}")
    for item in info["refused"]:
        lines.append(f"refused:      {item['path']} ({item['why']})")
    return "\n".join(lines)


def _events(n: int) -> str:
    return f"{n} event{'' if n == 1 else 's'}"


# -- enable / disable -------------------------------------------------------------

_KEY = "telemetry_enabled:"


def set_enabled(enabled: bool, path: str | None = None) -> str:
    """Write ``telemetry_enabled: true|false`` in the user config YAML; returns its path.

    A line edit, not a YAML round trip (the standard library has no YAML):
    the top-level key is replaced where it is, keeping its comment, or added
    at the end; every other line stays byte for byte.
    """
    path = path or paths.user_config_file()
    value = "true" if enabled else "false"
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    lines = text.splitlines(keepends=True)
    found = False
    for i, line in enumerate(lines):
        if line.startswith(_KEY):
            body = line.rstrip("\r\n")
            start = body.find(" #")
            while start > 0 and body[start - 1] in " \t":
                start -= 1  # the comment keeps its spacing
            comment = body[start:] if start >= 0 else ""
            lines[i] = f"{_KEY} {value}{comment}{line[len(body):]}"
            found = True
    if not found:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(f"{_KEY} {value}\n")
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        mode = None  # a new file: 0600
    files.write_atomic(path, "".join(lines).encode("utf-8"))
    if mode is not None:
        os.chmod(path, mode)
    return path


def enable() -> str:
    """Turn telemetry on in the user config; returns the file written."""
    return set_enabled(True)


class _Deletions:
    """What :func:`disable` deleted, and what it could not delete and why."""

    def __init__(self) -> None:
        self.removed: list[str] = []
        self.failed: list[dict[str, str]] = []

    def remove(self, path: str) -> None:
        try:
            if files.remove(path):  # a link itself, never its target
                self.removed.append(path)
        except OSError as exc:
            self.failed.append(_refusal(path, exc))

    def drop_queue(self, queue: JsonlQueue) -> None:
        had = [p for p in (queue.path, queue.sending_path) if os.path.lexists(p)]
        try:
            queue.truncate()  # under the queue's lock, so a concurrent append is not torn
        except OSError as exc:  # a directory that is not ours: nothing deleted through it
            self.failed.append(_refusal(queue.path, exc))
            return
        self.removed.extend(had)
        self.remove(paths.upload_state_path(queue.path))

    def empty_dir(self, directory: str) -> None:
        try:
            files.check_dir(directory)
            names = os.listdir(directory)
        except FileNotFoundError:
            return
        except OSError as exc:
            self.failed.append(_refusal(directory, exc))
            return
        for name in names:
            self.remove(os.path.join(directory, name))


def disable(project_root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Turn telemetry off and delete what waits locally; sends nothing, not even the opt-out.

    Writes ``telemetry_enabled: false`` first (so no client starts a send
    meanwhile), then deletes every user spool, the current project's queue,
    the client id and the failure-report rate limit, and the daemon's spool
    when no daemon is running. A running daemon is left alone: stopping it
    would make it send what it holds. Every deletion that can be done is
    done; ``not_removed`` names the others and why (never a link followed).
    """
    done = _Deletions()
    config: str | None = None
    try:
        config = set_enabled(False)
    except OSError as exc:
        done.failed.append(_refusal(_config_path(), exc))
    try:
        spools = _all_spools()
    except OSError as exc:
        spools = []
        done.failed.append(_refusal("~", exc))
    for queue in spools:
        done.drop_queue(queue)
    root = _root(project_root)
    if root:
        done.drop_queue(FileQueue(root))
    try:
        user_files = [paths.client_id_path(), paths.ratelimit_path()]
    except OSError as exc:
        user_files = []
        done.failed.append(_refusal("~", exc))
    for path in user_files:
        done.remove(path)
    running = daemon_running()
    if not running:
        try:
            spool_dir = paths.daemon_spool_dir()
        except OSError:
            pass  # no home: no daemon spool either
        else:
            done.empty_dir(spool_dir)
    return {"config": config, "removed": done.removed, "not_removed": done.failed, "daemon_running": running}


def _config_path() -> str:
    try:
        return paths.user_config_file()
    except OSError:
        return ""


# -- show -------------------------------------------------------------------------


def show(project_root: str | os.PathLike[str] | None = None, base_url: str | None = None) -> list[dict[str, Any]]:
    """What the next send would carry, scrubbed exactly as it will be: one entry per queue.

    Each entry: ``kind`` (``project`` or ``spool``), ``path``, ``events``
    (the events' wire form, oldest first).
    """
    from .delivery import wire_line

    out = []
    for kind, queue in _queues(_root(project_root), _endpoint(base_url)):
        try:
            data = queue.snapshot() if _exists(queue) else b""  # the raw lines: they go out as written
        except OSError:
            data = b""
        lines = (wire_line(raw) for raw in data.splitlines())
        out.append({"kind": kind, "path": queue.path, "events": [json.loads(line) for line in lines if line]})
    return out


_COLUMNS = ("timestamp", "type", "command", "success", "duration_ms", "error_code", "metadata")


def _format_show(queues: list[dict[str, Any]]) -> str:
    blocks = []
    for queue in queues:
        events = queue["events"]
        head = f"{queue['kind']}: {queue['path']} ({_events(len(events))})"
        if not events:
            blocks.append(head)
            continue
        rows = [list(_COLUMNS)]
        for event in events:
            metadata = event.get("metadata") or {}
            cells = {**event, "metadata": ",".join(f"{k}={v}" for k, v in metadata.items())}
            rows.append([str(cells.get(c, "")) for c in _COLUMNS])
        widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
        table = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        blocks.append("\n".join([head, *table]))
    return "\n\n".join(blocks)


# -- flush ------------------------------------------------------------------------


class BatchReport:
    """One batch of a foreground flush: which queue, how many events, the outcome and the endpoint's answer."""

    __slots__ = ("answer", "events", "outcome", "queue")

    def __init__(self, queue: str, events: int, outcome: str, answer: str) -> None:
        self.queue = queue
        self.events = events
        self.outcome = outcome  # delivered, refused, gave_up, stopped
        self.answer = answer  # "HTTP 200", "network: ConnectionRefusedError"

    def to_dict(self) -> dict[str, Any]:
        return {"queue": self.queue, "events": self.events, "outcome": self.outcome, "answer": self.answer}

    def __repr__(self) -> str:
        return f"BatchReport({self.to_dict()!r})"


def flush(
    project_root: str | os.PathLike[str] | None = None, base_url: str | None = None, *,
    transport: Transport | None = None, cli_version: str = "",
    on_batch: Callable[[BatchReport], None] | None = None,
) -> list[BatchReport]:
    """Send the project queue and the spool now, on this thread; one report per batch.

    Ignores the backoff a failed background run left (the user asked), but
    not consent: with telemetry off nothing is sent. A queue another sender
    is working on is reported with outcome ``busy``.
    """
    root = _root(project_root)
    if not _decision(root).enabled:
        return []
    return _send_queues(root, _endpoint(base_url), transport, cli_version, on_batch)


def _send_queues(
    root: str | None, endpoint: str, transport: Transport | None, cli_version: str,
    on_batch: Callable[[BatchReport], None] | None,
) -> list[BatchReport]:
    """:func:`flush` once consent is settled."""
    from .delivery import Delivery
    from .transport import UrllibTransport

    transport = transport or UrllibTransport()
    reports: list[BatchReport] = []

    def report(item: BatchReport) -> None:
        reports.append(item)
        if on_batch is not None:
            on_batch(item)

    for _, queue in _queues(root, endpoint):
        if not _exists(queue):
            continue

        def batch(events: int, outcome: str, answer: str, path: str = queue.path) -> None:
            report(BatchReport(path, events, outcome, answer))

        delivery = Delivery(queue, transport, endpoint + TELEMETRY_PATH, cli_version,
                            on_batch=batch)
        if delivery.run() == "busy":
            report(BatchReport(queue.path, 0, "busy", "another sender is at work on this queue"))
    return reports


# -- entry points -----------------------------------------------------------------


def _parser(prog: str, description: str, *, project: bool = True, endpoint: bool = True,
            as_json: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    if project:
        parser.add_argument("--project", help="project root (default: nearest .sageox/ at or above here)")
    if endpoint:
        parser.add_argument("--endpoint", help="endpoint base URL (default: $SAGEOX_ENDPOINT or sageox.ai)")
    if as_json:
        parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _report(value: Any, as_json: bool, as_text: Callable[[Any], str]) -> int:
    """Print ``value`` as JSON or as text; exit code 0."""
    if as_json:
        _print_json(value)
    else:
        print(as_text(value))
    return 0


def status_main(argv: Sequence[str], prog: str = "ox-telemetry status") -> int:
    """``status [--json] [--project DIR] [--endpoint URL]``."""
    args = _parser(prog, "Whether telemetry is on, which rule decided it, and what waits.", as_json=True
                   ).parse_args(list(argv))
    return _report(status(args.project, args.endpoint), args.json, _format_status)


def enable_main(argv: Sequence[str], prog: str = "ox-telemetry enable") -> int:
    """``enable``: ``telemetry_enabled: true`` in the user config."""
    _parser(prog, "Turn telemetry on in the user config.", project=False, endpoint=False).parse_args(list(argv))
    print(f"telemetry enabled in {enable()}")
    rule = consent.env_opt_out()
    if rule:
        print(f"note: still off, {rule} is set in the environment")
    return 0


def disable_main(argv: Sequence[str], prog: str = "ox-telemetry disable") -> int:
    """``disable [--project DIR]``: off in the user config, local queues and client id deleted."""
    args = _parser(prog, "Turn telemetry off and delete what is queued locally. Sends nothing.",
                   endpoint=False, as_json=True).parse_args(list(argv))
    result = disable(args.project)
    code = 1 if result["not_removed"] or not result["config"] else 0
    if args.json:
        _print_json(result)
        return code
    if result["config"]:
        print(f"telemetry disabled in {result['config']}")
    for path in result["removed"]:
        print(f"deleted {path}")
    for item in result["not_removed"]:
        print(f"not done: {item['path']}: {item['why']}", file=sys.stderr)
    if result["daemon_running"]:
        print("note: the delivery daemon is running; its spool was left to it")
    return code


def show_main(argv: Sequence[str], prog: str = "ox-telemetry show") -> int:
    """``show [--json] [--project DIR] [--endpoint URL]``: exactly what would be sent."""
    args = _parser(prog, "Print exactly what would be sent (scrubbed), from the project queue and the spool.",
                   as_json=True).parse_args(list(argv))
    return _report(show(args.project, args.endpoint), args.json, _format_show)


def flush_main(argv: Sequence[str], prog: str = "ox-telemetry flush") -> int:
    """``flush [--json] [--project DIR] [--endpoint URL]``: send now; exit 1 unless every batch was delivered."""
    parser = _parser(prog, "Send now, in the foreground, and report what the endpoint answered for each batch.",
                     as_json=True)
    parser.add_argument("--cli-version", default="", help="sent as the batches' cli_version")
    args = parser.parse_args(list(argv))
    root = _root(args.project)
    decision = _decision(root)
    if not decision.enabled:
        print(f"telemetry is off (decided by: {decision.rule}); nothing sent", file=sys.stderr)
        return 1

    def line(item: BatchReport) -> None:
        if not args.json:
            print(f"{item.queue}: {_events(item.events)}: {item.answer or '-'} ({item.outcome})", flush=True)

    reports = _send_queues(root, _endpoint(args.endpoint), None, args.cli_version, line)
    if args.json:
        _print_json([r.to_dict() for r in reports])
    elif not reports:
        print("nothing to send")
    return 0 if all(r.outcome == "delivered" for r in reports) else 1


_MAINS: dict[str, Callable[[Sequence[str], str], int]] = {
    "status": status_main, "enable": enable_main, "disable": disable_main, "show": show_main, "flush": flush_main,
}


def main(argv: Sequence[str], prog: str = "telemetry") -> int:
    """Dispatch ``argv[0]`` (status, enable, disable, show, flush) for a host's ``telemetry`` command."""
    if not argv or argv[0] not in _MAINS:
        print(f"usage: {prog} {{{','.join(_MAINS)}}} [options]", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return _MAINS[argv[0]](argv[1:], f"{prog} {argv[0]}")
