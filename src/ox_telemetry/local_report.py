"""``ox-telemetry view``: the local record as a report, for the terminal or as one self-contained HTML page.

The events are read as they would be sent (each line through the scrubber, by
:func:`ox_telemetry.delivery.queued_line`), so the user sees what would be
shared, summed up: per command, and per day and command, the runs, the
errors, the error rate and the 50th and 95th percentile of the duration. A
run is a ``command_complete`` or ``command_error`` event naming a command; it
failed when its type is ``command_error`` or its ``success`` is false.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

from .wire import EVENT_COMMAND_COMPLETE, EVENT_COMMAND_ERROR

_RUNS = (EVENT_COMMAND_COMPLETE, EVENT_COMMAND_ERROR)
#: The columns of a report's rows, in order, with their headings.
COLUMNS = (("runs", "runs"), ("errors", "errors"), ("error_rate", "error rate"),
           ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"))


def percentile(values: list[int], share: float) -> int | None:
    """The nearest-rank percentile (``share`` in 0..1) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


class _Tally:
    __slots__ = ("durations", "errors", "runs")

    def __init__(self) -> None:
        self.runs = 0
        self.errors = 0
        self.durations: list[int] = []

    def add(self, failed: bool, duration: object) -> None:
        self.runs += 1
        self.errors += failed
        if isinstance(duration, int) and not isinstance(duration, bool) and duration >= 0:
            self.durations.append(duration)

    def row(self) -> dict[str, Any]:
        return {"runs": self.runs, "errors": self.errors, "error_rate": round(self.errors / self.runs, 4),
                "p50_ms": percentile(self.durations, 0.50), "p95_ms": percentile(self.durations, 0.95)}


def report(data: bytes) -> dict[str, Any]:
    """The report of recorded lines ``data``.

    ``events`` (how many), ``first`` and ``last`` (timestamps), ``types``
    (events per type), ``commands`` (one row per command, most runs first)
    and ``days`` (one row per day and command, oldest day first); a row has
    ``command`` (and ``day``), ``runs``, ``errors``, ``error_rate`` (0..1),
    ``p50_ms`` and ``p95_ms`` (None without durations). Malformed lines are
    skipped.
    """
    from .delivery import queued_line

    types: dict[str, int] = {}
    commands: dict[str, _Tally] = {}
    days: dict[tuple[str, str], _Tally] = {}
    stamps: list[str] = []
    for raw in data.splitlines():
        parsed = queued_line(raw)
        if parsed is None:
            continue
        event = json.loads(parsed[0])
        kind = str(event.get("type", ""))
        types[kind] = types.get(kind, 0) + 1
        stamp = str(event.get("timestamp", ""))
        if stamp:
            stamps.append(stamp)
        command = event.get("command")
        if kind not in _RUNS or not isinstance(command, str) or not command:
            continue
        failed = kind == EVENT_COMMAND_ERROR or event.get("success") is False
        duration = event.get("duration_ms")
        commands.setdefault(command, _Tally()).add(failed, duration)
        days.setdefault((stamp[:10] or "unknown", command), _Tally()).add(failed, duration)
    by_runs = sorted(commands.items(), key=lambda item: (-item[1].runs, item[0]))
    return {
        "events": sum(types.values()),
        "first": min(stamps) if stamps else None,
        "last": max(stamps) if stamps else None,
        "types": dict(sorted(types.items())),
        "commands": [{"command": command, **tally.row()} for command, tally in by_runs],
        "days": [{"day": day, "command": command, **tally.row()} for (day, command), tally in sorted(days.items())],
    }


def cell(key: str, value: object) -> str:
    """A report value as the terminal and the page show it: a rate as a percentage, no duration as ``-``."""
    if value is None:
        return "-"
    if key == "error_rate" and isinstance(value, float):
        return f"{value * 100:.1f}%"
    return str(value)


def table(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> list[list[str]]:
    """``rows`` as a heading and cells: ``keys`` first (``day``, ``command``), then :data:`COLUMNS`."""
    head = [*keys, *(title for _, title in COLUMNS)]
    return [head] + [[cell(k, row[k]) for k in keys] + [cell(k, row[k]) for k, _ in COLUMNS] for row in rows]


def text(view: dict[str, Any]) -> str:
    """The report for the terminal."""
    lines = [f"local record: {view['directory']}"]
    if not view["events"]:
        lines.append("nothing recorded")
        return "\n".join(lines)
    lines.append(f"{view['events']} events, {view['first']} to {view['last']}; kept on this machine, never sent")
    for title, rows, keys in (("per command", view["commands"], ("command",)),
                              ("per day", view["days"], ("day", "command"))):
        lines += ["", title + ":"]
        cells = table(rows, keys)
        widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
        for row in cells:
            lines.append("  " + "  ".join(
                c.ljust(w) if i < len(keys) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip())
    lines += ["", "events by type: " + ", ".join(f"{kind} {count}" for kind, count in view["types"].items())]
    return "\n".join(lines)


_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:60em;padding:0 1em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}th,td{padding:.25em .8em;border-bottom:1px solid #ddd}
th{text-align:left;background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
p.note{color:#555}
"""


def page(view: dict[str, Any]) -> str:
    """The report as one self-contained HTML page: inline style, no script, nothing fetched from anywhere."""
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>ox-telemetry: local record</title>", f"<style>{_STYLE}</style></head><body>",
             "<h1>ox-telemetry: local record</h1>",
             f'<p class="note">Kept on this machine, never sent. Directory: <code>{e(view["directory"])}</code>.</p>']
    if not view["events"]:
        parts.append("<p>Nothing recorded.</p>")
    else:
        parts.append(f"<p>{view['events']} events, {e(str(view['first']))} to {e(str(view['last']))}.</p>")
        for title, rows, keys in (("Per command", view["commands"], ("command",)),
                                  ("Per day", view["days"], ("day", "command"))):
            cells = table(rows, keys)
            parts.append(f"<h2>{title}</h2><table><thead><tr>")
            parts += [f"<th>{e(c)}</th>" for c in cells[0]]
            parts.append("</tr></thead><tbody>")
            for row in cells[1:]:
                parts.append("<tr>" + "".join(
                    f"<td>{e(c)}</td>" if i < len(keys) else f'<td class="n">{e(c)}</td>' for i, c in enumerate(row)
                ) + "</tr>")
            parts.append("</tbody></table>")
        parts.append("<h2>Events by type</h2><table><tbody>")
        parts += [f'<tr><td>{e(kind)}</td><td class="n">{count}</td></tr>' for kind, count in view["types"].items()]
        parts.append("</tbody></table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
