"""The command line of ``ox-telemetry status | enable | disable | mode | forget | show | view | flush``.

Arguments, text, exit codes.

What each command does is in :mod:`ox_telemetry.operations` (functions
returning data, for a host that prints in its own style). Here, each command
is a ``*_main(argv) -> int`` entry point for the console script, and
:func:`main` dispatches ``argv[0]`` to them, so a host can hand over
everything after ``mycli telemetry``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import consent, operations, paths
from .operations import BatchReport

__all__ = ["disable_main", "enable_main", "flush_main", "forget_main", "main", "mode_main", "show_main", "status_main",
           "view_main"]

#: The answer of ``status`` and ``disable`` for a user without a home directory.
NO_HOME = "no home directory: nothing is stored"


# -- text -------------------------------------------------------------------------


#: What local mode means, where a command says it.
LOCAL_NOTE = "kept on this machine, never sent"


def _format_status(info: dict[str, Any]) -> str:
    lines = [f"telemetry:    {info['mode']} (decided by: {info['rule']})"]
    if info["mode"] == consent.MODE_LOCAL:
        lines.append(f"local record: {info['local_record']} ({_events(info['local_record_count'])}, {LOCAL_NOTE})")
    lines += [
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
    lines.append(f"events go to: {info['events_go_to']}")
    lines.append(f"daemon:       {'running' if info['daemon_running'] else 'not running'}")
    if info["daemon_socket_problem"]:
        lines.append(f"daemon socket: {info['daemon_socket_problem']}")
    if info["ci"]:
        lines.append(f"ci:           {info['ci']}")
    lines.append(f"last send:    {info['last_success'] or 'never'}")
    lines.append(f"last error:   {info['last_error'] or 'none'}")
    for item in info["refused"]:
        lines.append(f"refused:      {item['path']} ({item['why']})")
    return "\n".join(lines)


def _events(n: int) -> str:
    return f"{n} event{'' if n == 1 else 's'}"


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
    try:
        info = operations.status(args.project, args.endpoint)
    except paths.NoHome:
        return _report({"no_home": True, "message": NO_HOME}, args.json, lambda value: str(value["message"]))
    return _report(info, args.json, _format_status)


def enable_main(argv: Sequence[str], prog: str = "ox-telemetry enable") -> int:
    """``enable``: ``telemetry_enabled: true`` in the user config."""
    _parser(prog, "Turn telemetry on in the user config.", project=False, endpoint=False).parse_args(list(argv))
    try:
        written = operations.enable()
    except paths.NoHome:
        print(f"{NO_HOME}: nowhere to keep the setting", file=sys.stderr)
        return 1
    print(f"telemetry enabled in {written}")
    rule = consent.env_opt_out()
    if rule:
        print(f"note: still off, {rule} is set in the environment")
    return 0


def disable_main(argv: Sequence[str], prog: str = "ox-telemetry disable") -> int:
    """``disable [--project DIR]``: off in the user config, local queues and client id deleted."""
    args = _parser(prog, "Turn telemetry off and delete what is queued locally. Sends nothing.",
                   endpoint=False, as_json=True).parse_args(list(argv))
    return _disabled(operations.disable(args.project), args.json)


def _disabled(result: dict[str, Any], as_json: bool) -> int:
    """Print what :func:`operations.disable` did; exit code 1 when something was not done."""
    code = 1 if result["not_removed"] or not result["config"] else 0
    if as_json:
        _print_json(result)
        return code
    if result["no_home"]:
        print(f"{NO_HOME}; to keep telemetry off here, set DO_NOT_TRACK=1", file=sys.stderr)
    if result["config"]:
        print(f"telemetry disabled in {result['config']}")
    for path in result["removed"]:
        print(f"deleted {path}")
    for item in result["not_removed"]:
        print(f"not done: {item['path']}: {item['why']}", file=sys.stderr)
    if result["daemon_running"]:
        print("note: the delivery daemon is running; its spool was left to it")
    return code


def mode_main(argv: Sequence[str], prog: str = "ox-telemetry mode") -> int:
    """``mode [on|local|off] [--json] [--project DIR]``: set the user's mode, or print it and the deciding rule."""
    parser = _parser(prog, "Telemetry on, local (kept on this machine, never sent) or off (as disable). "
                     "Without an argument: the mode now and the rule that decided it.", endpoint=False, as_json=True)
    parser.add_argument("mode", nargs="?", choices=consent.MODES)
    args = parser.parse_args(list(argv))
    if args.mode is None:
        decided = operations.decision(operations.chosen_project(args.project))
        return _report({"mode": decided.mode, "rule": decided.rule}, args.json,
                       lambda value: f"{value['mode']} (decided by: {value['rule']})")
    if args.mode == consent.MODE_OFF:
        return _disabled(operations.set_mode(args.mode, args.project), args.json)
    try:
        result = operations.set_mode(args.mode, args.project)
    except paths.NoHome:
        print(f"{NO_HOME}: nowhere to keep the setting", file=sys.stderr)
        return 1
    if args.json:
        _print_json(result)
    else:
        what = LOCAL_NOTE if args.mode == consent.MODE_LOCAL else "sent to the endpoint"
        print(f"telemetry mode {args.mode} in {result['config']}: events are {what}")
    decided = operations.decision(operations.chosen_project(args.project))
    if decided.mode != args.mode and not args.json:
        print(f"note: telemetry is {decided.mode} here, decided by: {decided.rule}")
    return 0


def forget_main(argv: Sequence[str], prog: str = "ox-telemetry forget") -> int:
    """``forget [--json] [--project DIR] [--endpoint URL]``: the endpoint deletes this installation's events,
    then the local id and queues go; telemetry stays on."""
    args = _parser(prog, "Ask the endpoint to delete the events sent with this installation's anonymous id, "
                   "then delete the id and what is queued locally. Telemetry stays as it is.",
                   as_json=True).parse_args(list(argv))
    result = operations.forget(args.project, args.endpoint)
    sent = result["client_id"] is None or result["confirmed"]
    code = 0 if sent and not result["not_removed"] else 1
    if args.json:
        _print_json(result)
        return code
    if result["client_id"] is None:
        print("no installation id is stored: no event sent from here can be named, so none was asked for")
    elif not sent:
        print(f"not done: {result['url']} answered {result['answer'] or 'nothing'}; the id and queues were kept "
              "so you can try again", file=sys.stderr)
        return code
    else:
        count = "some" if result["forgotten"] is None else str(result["forgotten"])
        print(f"{result['url']} deleted {count} stored events of installation {result['client_id']}")
    for path in result["removed"]:
        print(f"deleted {path}")
    for item in result["not_removed"]:
        print(f"not done: {item['path']}: {item['why']}", file=sys.stderr)
    return code


def show_main(argv: Sequence[str], prog: str = "ox-telemetry show") -> int:
    """``show [--json] [--project DIR] [--endpoint URL]``: exactly what would be sent."""
    args = _parser(prog, "Print exactly what would be sent (scrubbed), from the project queue and the spool.",
                   as_json=True).parse_args(list(argv))
    decided = operations.decision(operations.chosen_project(args.project))
    if decided.local and not args.json:
        print(f"telemetry is local (decided by: {decided.rule}): nothing would be sent; "
              "`ox-telemetry view` shows what is kept on this machine")
        return 0
    return _report(operations.show(args.project, args.endpoint), args.json, _format_show)


def view_main(argv: Sequence[str], prog: str = "ox-telemetry view") -> int:
    """``view [--json] [--html FILE]``: the local record as a report (per command and day: runs, errors, p50/p95)."""
    parser = _parser(prog, "The local record (local mode) as a report: per command and per day, runs, error rate, "
                     "p50/p95 duration.", project=False, endpoint=False, as_json=True)
    parser.add_argument("--html", metavar="FILE", help="write the report as a self-contained HTML page to FILE")
    args = parser.parse_args(list(argv))
    from . import files, local_report

    try:
        view = operations.view()
    except paths.NoHome:
        return _report({"no_home": True, "message": NO_HOME}, args.json, lambda value: str(value["message"]))
    if args.html:
        try:
            files.write_atomic(args.html, local_report.page(view).encode("utf-8"), sync=False)
        except OSError as exc:
            print(f"could not write {args.html}: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {args.html} ({_events(view['events'])})")
        return 0
    return _report(view, args.json, local_report.text)


def flush_main(argv: Sequence[str], prog: str = "ox-telemetry flush") -> int:
    """``flush [--json] [--project DIR] [--endpoint URL]``: send now; exit 1 unless every batch was delivered."""
    parser = _parser(prog, "Send now, in the foreground, and report what the endpoint answered for each batch.",
                     as_json=True)
    parser.add_argument("--cli-version", default="", help="sent as the batches' cli_version")
    args = parser.parse_args(list(argv))
    root = operations.chosen_project(args.project)
    decision = operations.decision(root)
    if not decision.sends:
        print(f"telemetry is {decision.mode} (decided by: {decision.rule}); nothing sent", file=sys.stderr)
        return 1

    def line(item: BatchReport) -> None:
        if not args.json:
            print(f"{item.queue}: {_events(item.events)}: {item.answer or '-'} ({item.outcome})", flush=True)

    reports = operations.send_queues(root, operations.endpoint(args.endpoint), None, args.cli_version, line)
    if args.json:
        _print_json([r.to_dict() for r in reports])
    elif not reports:
        print("nothing to send")
    return 0 if all(r.outcome == "delivered" for r in reports) else 1


_MAINS: dict[str, Callable[[Sequence[str], str], int]] = {
    "status": status_main, "enable": enable_main, "disable": disable_main, "mode": mode_main,
    "forget": forget_main, "show": show_main, "view": view_main, "flush": flush_main,
}


def main(argv: Sequence[str], prog: str = "telemetry") -> int:
    """Dispatch ``argv[0]`` (status, enable, disable, mode, forget, show, view, flush) for a host's ``telemetry``."""
    if not argv or argv[0] not in _MAINS:
        print(f"usage: {prog} {{{','.join(_MAINS)}}} [options]", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return _MAINS[argv[0]](argv[1:], f"{prog} {argv[0]}")
