"""The dashboard's numbers (``GET /api/v1/stats``), read from the rollup tables only.

A range is cut into whole days, whole hours at its edges and whole minutes at
theirs, each read from the matching rollup table, so a query costs the same
with a thousand events or a billion, and is exact to the minute.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .histogram import percentile
from .storage import Storage
from .storage.schema import LEVEL_NAMES, LEVELS

#: Series resolutions, seconds; the finest giving at most MAX_POINTS points is used.
STEPS = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400)
MAX_POINTS = 200
MAX_SPAN = 5 * 366 * 86400
TOP = 20  # values listed per breakdown; the rest are summed into "(other)"
_DIMS = ("total", "type", "command", "cli_version", "os_arch", "agent_type", "daemon", "time_flag")
_DIM_LIST = ", ".join(f"'{d}'" for d in _DIMS)


@dataclass(frozen=True)
class Segment:
    """Buckets [start, end) of one rollup level."""

    level: int
    start: int
    end: int


def segments(start: int, end: int, levels: Sequence[int] = LEVELS) -> list[Segment]:
    """Cover [start, end) (minute-aligned seconds) with the coarsest buckets that fit, coarsest first."""
    if start >= end:
        return []
    *finer, level = levels
    first = -(-start // level) * level
    last = end // level * level
    if not finer:
        return [Segment(level, start, end)]
    if first >= last:
        return segments(start, end, finer)
    return [Segment(level, first, last), *segments(start, first, finer), *segments(last, end, finer)]


def _union(table: str, columns: str, where: str, parts: list[Segment], params: dict[str, int]) -> str:
    selects = []
    for i, seg in enumerate(parts):
        params[f"s{i}"], params[f"e{i}"] = seg.start, seg.end
        selects.append(
            f"SELECT {columns} FROM {table}_{LEVEL_NAMES[seg.level]} "
            f"WHERE {where}bucket >= :s{i} AND bucket < :e{i}"
        )
    return "\n UNION ALL ".join(selects)


def choose_step(span: int) -> int:
    """The series resolution for a span in seconds."""
    for step in STEPS:
        if span / step <= MAX_POINTS:
            return step
    return STEPS[-1]


def _breakdown(counts: dict[str, int], label_empty: str = "(none)") -> list[dict[str, Any]]:
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    out: list[dict[str, Any]] = [{"value": k or label_empty, "count": v} for k, v in ordered[:TOP]]
    rest = sum(v for _, v in ordered[TOP:])
    if rest:
        out.append({"value": "(other)", "count": rest})
    return out


def query_stats(storage: Storage, start: int, end: int) -> dict[str, Any]:
    """Everything the dashboard draws for [start, end), minute-aligned Unix seconds."""
    dims: dict[str, dict[str, list[int]]] = defaultdict(dict)
    params: dict[str, int] = {}
    union = _union("rollup", "dim, value, n, errors", f"dim IN ({_DIM_LIST}) AND ", segments(start, end), params)
    if union:
        for dim, value, n, errors in storage.query(
            f"SELECT dim, value, sum(n), sum(errors) FROM (\n {union}\n) AS r GROUP BY dim, value", params
        ):
            dims[dim][value] = [int(n), int(errors)]
    step = choose_step(end - start)
    first = start // step * step
    points = -(-(end - first) // step)
    series = [{"t": (first + i * step) * 1000, "events": 0, "errors": 0, "daemon": 0} for i in range(points)]
    params = {}
    union = _union("rollup", "bucket, value, n, errors", "dim = 'total' AND ",
                   segments(start, end, [lv for lv in LEVELS if step % lv == 0]), params)
    if union:
        for bucket, value, n, errors in storage.query(
            f"SELECT bucket, value, sum(n), sum(errors) FROM (\n {union}\n) AS r GROUP BY bucket, value", params
        ):
            point = series[(int(bucket) - first) // step]
            if value == "events":
                point["events"] += int(n)
                point["errors"] += int(errors)
            else:
                point["daemon"] += int(n)
    commands = _commands(storage, start, end, dims.get("command", {}))
    total = dims.get("total", {})
    events, errors = total.get("events", [0, 0])
    return {
        "from": start * 1000,
        "to": end * 1000,
        "step": step * 1000,
        "totals": {
            "events": events,
            "errors": errors,
            "daemon_events": total.get("daemon", [0, 0])[0],
            "command_runs": sum(v[0] for v in dims.get("command", {}).values()),
            "flagged_times": {k: v[0] for k, v in sorted(dims.get("time_flag", {}).items())},
        },
        "series": series,
        "commands": commands,
        "event_types": _breakdown({k: v[0] for k, v in dims.get("type", {}).items()}),
        "cli_versions": _breakdown({k: v[0] for k, v in dims.get("cli_version", {}).items()}, "(unknown)"),
        "os_arch": _breakdown({k: v[0] for k, v in dims.get("os_arch", {}).items()}, "(unknown)"),
        "agent_types": _breakdown({k: v[0] for k, v in dims.get("agent_type", {}).items()}),
        "daemon_events": _breakdown({k: v[0] for k, v in dims.get("daemon", {}).items()}),
    }


def _commands(storage: Storage, start: int, end: int, runs: dict[str, list[int]]) -> list[dict[str, Any]]:
    top = sorted(runs.items(), key=lambda kv: (-kv[1][0], kv[0]))[:TOP]
    bins: dict[str, list[tuple[int, int]]] = defaultdict(list)
    params: dict[str, int] = {}
    union = _union("durations", "command, bin, n", "", segments(start, end), params)
    if top and union:
        for command, index, n in storage.query(
            f"SELECT command, bin, sum(n) FROM (\n {union}\n) AS d GROUP BY command, bin", params
        ):
            bins[command].append((int(index), int(n)))
    out = []
    for command, (count, errors) in top:
        p50, p95 = percentile(bins[command], 0.5), percentile(bins[command], 0.95)
        out.append({
            "command": command or "(none)",
            "runs": count,
            "errors": errors,
            "error_rate": errors / count if count else 0.0,
            "p50_ms": None if p50 is None else round(p50, 1),
            "p95_ms": None if p95 is None else round(p95, 1),
        })
    return out
