"""What ``ox-telemetry status | enable | disable | mode | show | view | flush`` do, as functions returning data.

A host CLI can call these and print in its own style; :mod:`ox_telemetry.commands`
is the command line around them (arguments, text, exit codes).

The project is the one given or the nearest directory at or above the working
directory that holds ``.sageox/``; the endpoint is the one given, else
``$SAGEOX_ENDPOINT``, else the default, as for the client.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from . import consent, files, ipc, paths, settings
from .local_record import LocalRecord
from .queue import FileQueue, JsonlQueue
from .transport import Transport

__all__ = [
    "FORGET_PATH", "NO_PROJECT", "BatchReport", "chosen_project", "daemon_running", "decision", "disable", "enable",
    "endpoint", "find_project_root", "flush", "forget", "send_queues", "set_mode", "show", "status", "view",
]

#: Where a client outside any project keeps its events, and why.
NO_PROJECT = "no project (no .sageox/ here or above)"


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


def endpoint(base_url: str | None) -> str:
    """The endpoint base URL a client would use, given ``base_url`` (empty means the default, too)."""
    return settings.base_url(base_url or None)


def chosen_project(given: str | os.PathLike[str] | None) -> str | None:
    """``given``, else the project found at or above the working directory, else None."""
    return os.fspath(given) if given else find_project_root()


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


def decision(root: str | None) -> consent.Decision:
    """The consent decision for a project (or none), as a client there would make it."""
    return consent.decide(project_root=root)


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
    from .daemon.lifecycle import ping

    return ping(0.5) is not None


def status(project_root: str | os.PathLike[str] | None = None, base_url: str | None = None) -> dict[str, Any]:
    """Everything ``ox-telemetry status`` reports, as a JSON-ready dict.

    ``enabled``, ``mode`` (``on``, ``local``, ``off``) and ``rule``
    (``DO_NOT_TRACK``, ``SAGEOX_TELEMETRY``, ``user config``, ``project
    config`` or ``default``), ``local_record`` (its directory and how many
    events it holds), ``endpoint``, the project
    queue's path and count, the spool's path and count, ``events_go_to``
    (``project queue``, or ``user spool: `` and why, as the client decides
    it), whether the daemon runs (and ``daemon_socket_problem``: why its
    socket's path may not be used, or None), the last successful send and
    last error of those queues, and ``refused``: each file that is not ours
    where one of ours should be (a link, a FIFO, another user's file...) and
    why, which is skipped, never used. Raises :class:`~ox_telemetry.paths.NoHome`
    without a home directory.
    """
    root = chosen_project(project_root)
    url = endpoint(base_url)
    decided = decision(root)
    user_config = paths.user_config_file()
    queues = []
    found = _queues(root, url)
    refused = _refused([queue for _, queue in found])
    for kind, queue in found:
        queues.append({"kind": kind, "path": queue.path, "count": _count(queue), **_upload_state(queue)})
    successes = sorted(q["last_success"] for q in queues if q["last_success"])
    errors = [q["last_error"] for q in queues if q["last_error"] and q["failures"]]
    project = next((q for q in queues if q["kind"] == "project"), None)
    spool = queues[-1]
    why_spool = FileQueue(root).refusal(create=False) if root else NO_PROJECT
    running = daemon_running()
    record = LocalRecord()
    return {
        "enabled": decided.enabled,
        "mode": decided.mode,
        "rule": decided.rule,
        "local_record": record.directory,
        "local_record_count": record.read().count(b"\n"),
        "endpoint": url,
        "user_config": user_config,
        "project_root": root,
        "queue_path": project["path"] if project else None,
        "queue_count": project["count"] if project else 0,
        "spool_path": spool["path"],
        "spool_count": spool["count"],
        "spool_count_all": sum(_count(q) for q in _all_spools()),
        "events_go_to": f"user spool: {why_spool}" if why_spool else "project queue",
        "daemon_running": running,
        "daemon_socket_problem": None if running else ipc.socket_problem(),
        "ci": decided.ci,
        "last_success": successes[-1] if successes else None,
        "last_error": errors[0] if errors else None,
        "queues": queues,
        "refused": refused,
    }


# -- enable / disable -------------------------------------------------------------

def enable() -> str:
    """Turn telemetry on in the user config; returns the file written."""
    return consent.write_user_setting(True)


def set_mode(mode: str, project_root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Set the user's mode: ``on`` (as :func:`enable`), ``local`` or ``off`` (as :func:`disable`).

    ``local`` writes the setting and deletes nothing: what waits in queues is
    not sent while the mode lasts. Returns ``mode``, ``config`` (the file
    written), and for ``off`` what :func:`disable` returns. Raises ValueError
    for another mode, :class:`~ox_telemetry.paths.NoHome` without a home
    directory (``off`` excepted: it reports ``no_home``).
    """
    if mode == consent.MODE_OFF:
        return {"mode": mode, **disable(project_root)}
    return {"mode": mode, "config": consent.write_user_mode(mode)}


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
    the client id, the failure-report rate limit, the local record (of local
    mode), and the daemon's spool
    when no daemon is running. A running daemon is left alone: stopping it
    would make it send what it holds. Every deletion that can be done is
    done; ``not_removed`` names the others and why (never a link followed).
    ``no_home``: the user has no home directory, so nothing of theirs is
    stored and the setting could not be written either.
    """
    done = _Deletions()
    config: str | None = None
    no_home = False
    try:
        config = consent.write_user_setting(False)
    except paths.NoHome:
        no_home = True  # nothing of this user's is stored: only the project's queue is left to delete
    except OSError as exc:
        done.failed.append(_refusal(paths.user_config_file(), exc))
    running = _delete_local(done, project_root, no_home)
    return {"config": config, "removed": done.removed, "not_removed": done.failed, "daemon_running": running,
            "no_home": no_home}


def _delete_local(done: _Deletions, project_root: str | os.PathLike[str] | None, no_home: bool) -> bool:
    """Delete the project's queue, the user's spools, client id and rate limit, and the daemon's spool when no
    daemon runs (a running one is left alone: stopping it would make it send); whether a daemon runs."""
    root = chosen_project(project_root)
    if root:
        done.drop_queue(FileQueue(root))
    running = daemon_running()
    if not no_home:
        for queue in _all_spools():
            done.drop_queue(queue)
        for path in (paths.client_id_path(), paths.ratelimit_path()):
            done.remove(path)
        done.empty_dir(LocalRecord().directory)
        if not running:
            done.empty_dir(paths.daemon_spool_dir())
    return running


#: Where ``forget`` asks the collector to delete an installation's events (under the endpoint base URL).
FORGET_PATH = "/api/v1/forget"


def forget(project_root: str | os.PathLike[str] | None = None, base_url: str | None = None, *,
           transport: Transport | None = None) -> dict[str, Any]:
    """Ask the endpoint to delete this installation's stored events, then delete the local id and queues.

    Telemetry stays as it was (the next send makes a new id). When the endpoint does not confirm
    (``answer`` says what it said), nothing local is deleted: the id is what lets a later ``forget``
    name the events. With no id stored (and no ``$SAGEOX_CLIENT_ID``) there is nothing to ask for.
    """
    from . import identity, sending
    from .transport import UrllibTransport

    result: dict[str, Any] = {"client_id": identity.stored_client_id(), "confirmed": False, "forgotten": None,
                              "answer": "", "removed": [], "not_removed": [], "daemon_running": False}
    url = endpoint(base_url) + FORGET_PATH
    result["url"] = url
    if result["client_id"] is not None:
        target = sending.Endpoint(transport or UrllibTransport(), url, "ox-telemetry", 10.0, plain=True)
        reply = target.post(json.dumps({"client_id": result["client_id"]}).encode("utf-8"))
        result["answer"] = reply.error
        if reply.kind != sending.DELIVERED:
            return result
        result["confirmed"], result["forgotten"] = True, _forgotten(reply.body)
    done = _Deletions()
    try:
        no_home = not paths.user_config_dir()
    except paths.NoHome:  # nothing of this user's is stored: only the project's queue is left to delete
        no_home = True
    result["daemon_running"] = _delete_local(done, project_root, no_home)
    result["removed"], result["not_removed"] = done.removed, done.failed
    return result


def _forgotten(body: bytes) -> int | None:
    """The ``forgotten`` count of a forget answer; None when the body does not say."""
    try:
        value = json.loads(body)["forgotten"]
    except (KeyError, TypeError, ValueError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# -- show -------------------------------------------------------------------------


def show(project_root: str | os.PathLike[str] | None = None, base_url: str | None = None) -> list[dict[str, Any]]:
    """What the next send would carry, scrubbed exactly as it will be: one entry per queue.

    Each entry: ``kind`` (``project`` or ``spool``), ``path``, ``events``
    (the events' wire form, oldest first). In local mode nothing would be
    sent: no entry at all (:func:`view` shows what is kept).
    """
    from .delivery import wire_line

    root = chosen_project(project_root)
    if decision(root).local:
        return []
    out = []
    for kind, queue in _queues(root, endpoint(base_url)):
        try:
            data = queue.snapshot() if _exists(queue) else b""  # the raw lines: they go out as written
        except OSError:
            data = b""
        lines = (wire_line(raw) for raw in data.splitlines())
        out.append({"kind": kind, "path": queue.path, "events": [json.loads(line) for line in lines if line]})
    return out


# -- view -------------------------------------------------------------------------


def view() -> dict[str, Any]:
    """The local record as a report: per command and per day, runs, errors, error rate, p50/p95 duration.

    See :func:`ox_telemetry.local_report.report` for its shape; ``directory``
    is where the record is kept.
    """
    from .local_report import report

    record = LocalRecord()
    return {"directory": record.directory, **report(record.read())}


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
    not consent: with telemetry off or local-only nothing is sent. A queue another sender
    is working on is reported with outcome ``busy``.
    """
    root = chosen_project(project_root)
    if not decision(root).sends:
        return []
    return send_queues(root, endpoint(base_url), transport, cli_version, on_batch)


def send_queues(
    root: str | None, url: str, transport: Transport | None, cli_version: str,
    on_batch: Callable[[BatchReport], None] | None,
) -> list[BatchReport]:
    """:func:`flush` once consent is settled (the command line says why it sends nothing)."""
    from .delivery import Delivery
    from .transport import UrllibTransport

    transport = transport or UrllibTransport()
    reports: list[BatchReport] = []

    def report(item: BatchReport) -> None:
        reports.append(item)
        if on_batch is not None:
            on_batch(item)

    for _, queue in _queues(root, url):
        if not _exists(queue):
            continue

        def batch(events: int, outcome: str, answer: str, path: str = queue.path) -> None:
            report(BatchReport(path, events, outcome, answer))

        delivery = Delivery(queue, transport, url + settings.TELEMETRY_PATH, cli_version,
                            on_batch=batch)
        if delivery.run() == "busy":
            report(BatchReport(queue.path, 0, "busy", "another sender is at work on this queue"))
    return reports
