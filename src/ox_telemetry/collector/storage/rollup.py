"""Rollups: the counts the dashboard reads, computed from the rows a transaction stored.

Each write adds its new rows to per-minute, per-hour and per-day counts in the
same transaction, so the counts always match the events (both commit or
neither). Aggregating here, in one pass over the rows, costs about a
microsecond a row; doing it in SQL costs twenty.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain

from .base import Row
from .schema import CLIENT_NAMES, DAEMON_NAMES, LEVELS

#: Longest dimension value kept in a rollup key (PostgreSQL's B-tree entries are bounded).
MAX_VALUE = 200
#: Command runs: the events the per-command charts count.
COMMAND_TYPES = frozenset(("command_complete", "command_error"))

_C = {name: i for i, name in enumerate(CLIENT_NAMES)}
_D = {name: i for i, name in enumerate(DAEMON_NAMES)}


_CountRow = tuple[str, int, str, int, int]  # (dim, bucket, value, n, errors)
_DurationRow = tuple[int, str, int, int]  # (bucket, command, bin, n)


@dataclass
class Rollup:
    """Counts to add, per level: ``counts[level][(dim, bucket, value)] = [events, errors]`` and
    ``durations[level][(bucket, command, bin)] = events``; buckets in Unix seconds."""

    counts: dict[int, defaultdict[tuple[str, int, str], list[int]]] = field(
        default_factory=lambda: {level: defaultdict(_pair) for level in LEVELS})
    durations: dict[int, dict[tuple[int, str, int], int]] = field(
        default_factory=lambda: {level: {} for level in LEVELS})

    def add(self, minute: int, dims: list[tuple[str, str]], n: int, errors: int) -> None:
        """Count ``n`` events (``errors`` of them errors) of ``minute`` under each (dimension, value)."""
        for level, cells in self.counts.items():
            bucket = minute // level * level
            for dim, value in dims:
                cell = cells[(dim, bucket, value[:MAX_VALUE])]
                cell[0] += n
                cell[1] += errors

    def add_durations(self, runs: Counter[tuple[int, str, int]]) -> None:
        """Count ``runs[(minute, command, bin)]`` runs of ``command`` in duration bin ``bin``."""
        # Nearly a row per run: a level at a time, with plain dict.get (Counter's += calls Python on a new key).
        for level, out in self.durations.items():
            count = out.get
            for (minute, command, index), n in runs.items():
                key = (minute // level * level, command[:MAX_VALUE], index)
                out[key] = count(key, 0) + n

    def rows(self) -> dict[int, tuple[list[_CountRow], list[_DurationRow]]]:
        """Per level: (rollup rows ``(dim, bucket, value, n, errors)``, duration rows ``(bucket, command, bin, n)``),
        sorted, so concurrent writers lock rows in the same order."""
        out = {}
        for level, cells in self.counts.items():
            counts = [(dim, bucket, value, n, errors) for (dim, bucket, value), (n, errors) in sorted(cells.items())]
            runs = sorted(self.durations[level].items())
            out[level] = (counts, [(bucket, command, index, n) for (bucket, command, index), n in runs])
        return out


def _pair() -> list[int]:
    return [0, 0]


def _minute(event_us: int, received_us: int, flag: str | None) -> int:
    # Charted at the corrected client time, unless that was implausible: then at the receive time.
    return (event_us if flag is None else received_us) // 60_000_000 * 60


# (minute, type, command if a command run, cli_version, os/arch, agent_type, time_flag, error)
_ClientCombo = tuple[int, str, "str | None", str, str, str, "str | None", bool]
# (minute, command, duration bin)
_DurationCombo = tuple[int, str, int]
# (minute, event, time_flag)
_DaemonCombo = tuple[int, str, "str | None"]


@dataclass
class Tally:
    """Rows counted by the combination of values the rollups need, per minute: far fewer entries than rows
    (a transaction's rows share most values), so each is expanded into its levels and dimensions once."""

    clients: Counter[_ClientCombo] = field(default_factory=Counter)
    # Apart from the client combinations: nearly every run has a duration bin of its own.
    durations: Counter[_DurationCombo] = field(default_factory=Counter)
    daemons: Counter[_DaemonCombo] = field(default_factory=Counter)

    def rollup(self) -> Rollup:
        """The counts to add at every level and dimension."""
        rollup = Rollup()
        for (minute, kind, command, version, platform, agent, flag, error), n in self.clients.items():
            dims = [("total", "events"), ("type", kind), ("cli_version", version), ("os_arch", platform),
                    ("agent_type", agent)]
            if command is not None:
                dims.append(("command", command))
            if flag is not None:
                dims.append(("time_flag", flag))
            rollup.add(minute, dims, n, n if error else 0)
        rollup.add_durations(self.durations)
        for (minute, name, flag), n in self.daemons.items():
            dims = [("total", "daemon"), ("daemon", name)]
            if flag is not None:
                dims.append(("time_flag", flag))
            rollup.add(minute, dims, n, 0)
        return rollup


def tally(client_rows: Iterable[Row], daemon_rows: Iterable[Row]) -> Tally:
    """Count stored rows (schema column order) by what the rollups need of them."""
    out = Tally()
    # A few hundred thousand rows a second pass through here: plain dict.get, not Counter's += (its
    # __missing__ is Python), and every column read by a constant index.
    clients, durations = out.clients, out.durations
    count_client, count_duration = clients.get, durations.get
    c_type, c_time, c_recv, c_flag = _C["type"], _C["event_time"], _C["received_at"], _C["time_flag"]
    c_cmd, c_ok, c_agent, c_ver = _C["command"], _C["success"], _C["agent_type"], _C["cli_version"]
    c_os, c_arch, c_bin = _C["os"], _C["arch"], _C["duration_bin"]
    for r in client_rows:
        kind, flag = r[c_type], r[c_flag]
        minute = _minute(r[c_time], r[c_recv], flag)
        platform = f"{r[c_os]}/{r[c_arch]}"
        if kind in COMMAND_TYPES:
            command, index = r[c_cmd], r[c_bin]
            key: _ClientCombo = (minute, kind, command, r[c_ver], platform, r[c_agent], flag,
                                 kind == "command_error" or not r[c_ok])
            if index is not None:
                runs = (minute, command, index)
                durations[runs] = count_duration(runs, 0) + 1
        else:
            key = (minute, kind, None, r[c_ver], platform, r[c_agent], flag, False)
        clients[key] = count_client(key, 0) + 1
    d_event, d_time, d_recv, d_flag = _D["event"], _D["event_time"], _D["received_at"], _D["time_flag"]
    for r in daemon_rows:
        out.daemons[(_minute(r[d_time], r[d_recv], r[d_flag]), r[d_event], r[d_flag])] += 1
    return out


def rollup_of(stored: Sequence[tuple[Sequence[Row], Sequence[Row]]]) -> Rollup:
    """The rollup of the (client, daemon) rows each job stored, counted in one pass (in the writer, so the
    server's process keeps to parsing), so a transaction of many requests expands each combination once."""
    return tally(chain.from_iterable(c for c, _ in stored), chain.from_iterable(d for _, d in stored)).rollup()


def upsert_rollup(level_name: str, rollup_rows: str, duration_rows: str) -> tuple[str, str]:
    """(rollup upsert, durations upsert) statements for one level.

    ``rollup_rows`` and ``duration_rows`` are the SQL that yields the rows
    (a ``VALUES`` list, or a set-returning expression).
    """
    rollup = f"rollup_{level_name}"
    durations = f"durations_{level_name}"
    return (
        f"INSERT INTO {rollup} (dim, bucket, value, n, errors) {rollup_rows} "
        f"ON CONFLICT (dim, bucket, value) DO UPDATE SET n = {rollup}.n + excluded.n, "
        f"errors = {rollup}.errors + excluded.errors",
        f"INSERT INTO {durations} (bucket, command, bin, n) {duration_rows} "
        f"ON CONFLICT (bucket, command, bin) DO UPDATE SET n = {durations}.n + excluded.n",
    )
