"""The dashboard's numbers (``GET /api/v1/stats``), read from the rollup tables only.

A range is cut into whole days, whole hours at its edges and whole minutes at
theirs, each read from the matching rollup table, so a query costs the same
with a thousand events or a billion, and is exact to the minute.
"""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from . import sketch
from .histogram import percentile
from .storage import Row
from .storage.rollup import tally
from .storage.schema import CLIENT_NAMES, LEVEL_NAMES, LEVELS, MAX_VALUE, MIGRATIONS, columns

#: Series resolutions, seconds; the finest giving at most MAX_POINTS points is used.
STEPS = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400)
MAX_POINTS = 200
MAX_SPAN = 5 * 366 * 86400
TOP = 20  # values listed per breakdown; the rest are summed into "(other)"
_DIMS = ("total", "type", "command", "cli_version", "os_arch", "agent_type", "daemon", "time_flag")
_DIM_LIST = ", ".join(f"'{d}'" for d in _DIMS)


class Reader(Protocol):
    """What the queries here need of a store (:class:`storage.Storage` is one)."""

    dialect: Any

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        """Run a read-only statement written with ``:name`` placeholders."""


@dataclass(frozen=True)
class Filters:
    """The ``version=``, ``os=`` (a bare OS, or ``os/arch``) and ``command=`` a view is narrowed to, ANDed;
    None where not given."""

    version: str | None = None
    os: str | None = None
    command: str | None = None

    def __bool__(self) -> bool:
        return not (self.version is None and self.os is None and self.command is None)

    def mask(self) -> int:
        """The installs rows' mask that names the values filtered on."""
        return ((sketch.VERSION if self.version is not None else 0) | (sketch.OS_ARCH if self.os is not None else 0)
                | (sketch.COMMAND if self.command is not None else 0))

    def where(self, params: dict[str, Any], version: str, os_arch: str, command: str) -> str:
        """SQL conditions (each followed by AND) on the given columns, with their parameters put in ``params``.

        Values are matched as the rollups keep them (cut to MAX_VALUE characters).
        """
        out = []
        if self.version is not None:
            params["f_version"] = self.version[:MAX_VALUE]
            out.append(f"{version} = :f_version AND ")
        if self.os is not None:
            if "/" in self.os:
                params["f_os"] = self.os[:MAX_VALUE]
                out.append(f"{os_arch} = :f_os AND ")
            else:  # any arch of this OS
                params["f_os"] = self.os + "/"
                params["f_os_len"] = len(params["f_os"])
                out.append(f"substr({os_arch}, 1, :f_os_len) = :f_os AND ")
        if self.command is not None:
            params["f_command"] = self.command[:MAX_VALUE]
            out.append(f"{command} = :f_command AND ")
        return "".join(out)


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


def _union(table: str, columns: str, where: str, parts: list[Segment], params: dict[str, Any]) -> str:
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


def query_stats(storage: Reader, start: int, end: int, filters: Filters = Filters()) -> dict[str, Any]:
    """Everything the dashboard draws for [start, end), minute-aligned Unix seconds; with ``filters``, of the
    CLI events that match them (see :func:`filtered_rollups`)."""
    if filters:
        storage = filtered_rollups(storage, start, end, filters)
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


def _commands(storage: Reader, start: int, end: int, runs: dict[str, list[int]]) -> list[dict[str, Any]]:
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


#: Client events at the time the rollups chart them (the receive time when the client's was implausible), in µs.
_CHART_TIME = "(CASE WHEN time_flag IS NULL THEN event_time ELSE received_at END)"


class _Memory:
    """Rollup tables in an in-memory SQLite database, read as the store's are."""

    dialect = "sqlite"

    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:", check_same_thread=False)
        for statement in MIGRATIONS[0]("sqlite"):
            if "rollup_" in statement or "durations_" in statement:
                self.conn.execute(statement)

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        return self.conn.execute(sql, dict(params or {})).fetchall()


def filtered_rollups(storage: Reader, start: int, end: int, filters: Filters) -> Reader:
    """The rollups of the stored CLI events in [start, end) that match ``filters``, computed from the events
    themselves (the stored rollups count each dimension apart, not their combinations): as slow as the events
    are many, and only as far back as retention keeps them. Daemon events match no filter."""
    params: dict[str, Any] = {"s": start * 1_000_000, "e": end * 1_000_000}
    where = filters.where(params, "cli_version", "os || '/' || arch", "command")
    if filters.command is not None:
        where += "type IN ('command_complete', 'command_error') AND "
    rows = storage.query(f"SELECT {', '.join(CLIENT_NAMES)} FROM events WHERE {where}"
                         f"{_CHART_TIME} >= :s AND {_CHART_TIME} < :e", params)
    rows = [tuple(bool(v) if i == _SUCCESS else v for i, v in enumerate(row)) for row in rows]
    memory = _Memory()
    for level, (counts, durations) in tally(columns(rows, len(CLIENT_NAMES)), [()]).rollup().rows().items():
        name = LEVEL_NAMES[level]
        memory.conn.executemany(f"INSERT INTO rollup_{name} VALUES (?, ?, ?, ?, ?)", counts)
        memory.conn.executemany(f"INSERT INTO durations_{name} VALUES (?, ?, ?, ?)", durations)
    return memory


_SUCCESS = CLIENT_NAMES.index("success")


def _days(start: int, end: int) -> list[int]:
    """The UTC days [start, end) touches, as Unix seconds of their midnights."""
    return list(range(start // 86400 * 86400, end, 86400))


def _day_text(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day))


def query_installs(storage: Reader, start: int, end: int, by: str | None = None,
                   filters: Filters = Filters()) -> dict[str, Any]:
    """Distinct installations in the UTC days [start, end) touches, from the sketches only: in all, a day, and
    (with ``by``: ``version``, ``os`` or ``command``) per value, a day per value; and the events without an
    installation id (``unknown_events``)."""
    days = _days(start, end)
    mask = filters.mask()
    rows = _installs_rows(storage, days, mask, filters)
    total, daily = sketch.Union(), {day: sketch.Union() for day in days}
    unknown = 0
    for day, _, _, _, blob, n in rows:
        loaded = sketch.load(blob)
        total.add(loaded)
        daily[int(day)].add(loaded)
        unknown += int(n)
    out: dict[str, Any] = {
        "total": total.estimate(),
        "unknown_events": unknown,
        "daily": [{"day": _day_text(day), "installs": union.estimate()} for day, union in daily.items()],
        "groups": [],
        "series": [],
    }
    if by is not None:
        bit = sketch.DIMENSIONS[by]
        position = {sketch.VERSION: 1, sketch.OS_ARCH: 2, sketch.COMMAND: 3}[bit]
        groups: dict[str, sketch.Union] = {}
        series: dict[str, dict[int, sketch.Union]] = {}
        for row in _installs_rows(storage, days, mask | bit, filters):
            if row[4] is None:  # unknown events only: no installation to group
                continue
            key, loaded = row[position], sketch.load(row[4])
            groups.setdefault(key, sketch.Union()).add(loaded)
            series.setdefault(key, {}).setdefault(int(row[0]), sketch.Union()).add(loaded)
        ordered = sorted(((key, union.estimate()) for key, union in groups.items()), key=lambda kv: (-kv[1], kv[0]))
        out["groups"] = [{"key": key, "installs": n} for key, n in ordered]
        out["series"] = [
            {"key": key, "daily": [{"day": _day_text(day), "installs": series[key][day].estimate()
                                    if day in series[key] else 0} for day in days]}
            for key, _ in ordered
        ]
    return out


def _installs_rows(storage: Reader, days: list[int], mask: int, filters: Filters) -> list[Row]:
    """(day, version, os_arch, command, sketch, unknown) of the rows of ``mask`` matching ``filters``."""
    if not days:
        return []
    params: dict[str, Any] = {"mask": mask, "s": days[0], "e": days[-1] + 86400}
    where = filters.where(params, "version", "os_arch", "command")
    return storage.query(
        f"SELECT day, version, os_arch, command, sketch, unknown FROM installs_1d "
        f"WHERE mask = :mask AND {where}day >= :s AND day < :e", params)


#: Error rows listed by default, and at most.
ERRORS_LIMIT, MAX_ERRORS_LIMIT = 50, 1000


def query_errors(storage: Reader, start: int, end: int, filters: Filters = Filters(),
                 limit: int = ERRORS_LIMIT) -> dict[str, Any]:
    """The failed command runs in [start, end) (as the stats count errors) by error code as stored, command
    and version, most first, from the errors rollups; ``total`` counts them all."""
    params: dict[str, Any] = {}
    union = _union("errors", "error_code, command, version, n", filters.where(params, "version", "os_arch",
                                                                               "command"),
                   segments(start, end), params)
    if not union:
        return {"total": 0, "errors": []}
    grouped = storage.query(
        f"SELECT error_code, command, version, sum(n) FROM (\n {union}\n) AS e GROUP BY error_code, command, "
        f"version", params)
    ordered = sorted(((str(c), str(m), str(v), int(n)) for c, m, v, n in grouped), key=lambda r: (-r[3], r[:3]))
    return {
        "total": sum(r[3] for r in ordered),
        "errors": [{"error_code": c, "command": m, "version": v, "count": n} for c, m, v, n in ordered[:limit]],
    }
