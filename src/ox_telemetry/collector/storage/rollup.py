"""Rollups: the counts the dashboard reads, computed from the rows a transaction stored.

Each write adds its new rows to per-minute, per-hour and per-day counts in the
same transaction, so the counts always match the events (both commit or
neither). The server tallies each request's rows as it parses them (counted
in C); the writer adds up the tallies of what it stored and expands each
combination into its levels and dimensions once: in SQL, a row at a time, it
cost more than storing the row.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import repeat
from operator import floordiv, itemgetter
from typing import TypeVar

import msgspec

from .schema import CLIENT_NAMES, DAEMON_NAMES, LEVELS, MAX_VALUE, Columns

#: Command runs: the events the per-command charts count.
COMMAND_TYPES = frozenset(("command_complete", "command_error"))

K = TypeVar("K")
_C = {name: i for i, name in enumerate(CLIENT_NAMES)}
_D = {name: i for i, name in enumerate(DAEMON_NAMES)}


_CountRow = tuple[str, int, str, int, int]  # (dim, bucket, value, n, errors)
_DurationRow = tuple[int, str, int, int]  # (bucket, command, bin, n)
_ErrorKey = tuple[int, str, str, str, str]  # (bucket, error_code, command, cli_version, os/arch)
_ErrorRow = tuple[int, str, str, str, str, int]  # the key and n


@dataclass
class Rollup:
    """Counts to add, per level: ``counts[level][(dim, bucket, value)] = [events, errors]`` and
    ``durations[level][(bucket, command, bin)] = events``; buckets in Unix seconds."""

    counts: dict[int, defaultdict[tuple[str, int, str], list[int]]] = field(
        default_factory=lambda: {level: defaultdict(_pair) for level in LEVELS})
    durations: dict[int, dict[tuple[int, str, int], int]] = field(
        default_factory=lambda: {level: {} for level in LEVELS})
    # errors[level][(bucket, error_code, command, cli_version, os/arch)] = failed runs
    errors: dict[int, dict[_ErrorKey, int]] = field(default_factory=lambda: {level: {} for level in LEVELS})

    def add(self, minute: int, dims: list[tuple[str, str]], n: int, errors: int) -> None:
        """Count ``n`` events (``errors`` of them errors) of ``minute`` under each (dimension, value)."""
        for level, cells in self.counts.items():
            bucket = minute // level * level
            for dim, value in dims:
                cell = cells[(dim, bucket, value[:MAX_VALUE])]
                cell[0] += n
                cell[1] += errors

    def add_durations(self, runs: Mapping[_DurationCombo, int]) -> None:
        """Count ``runs[(minute, command, bin)]`` runs of ``command`` in duration bin ``bin`` (None: not a run)."""
        # Nearly a row per run: a level at a time, with plain dict.get (Counter's += calls Python on a new key).
        for level, out in self.durations.items():
            count = out.get
            for (minute, command, index), n in runs.items():
                if index is not None:
                    key = (minute * 60 // level * level, command[:MAX_VALUE], index)
                    out[key] = count(key, 0) + n

    def add_errors(self, minute: int, code: str, command: str, version: str, os_arch: str, n: int) -> None:
        """Count ``n`` failed runs of ``command`` in ``version`` on ``os_arch`` with ``code``, in ``minute``."""
        for level, out in self.errors.items():
            key = (minute // level * level, code[:MAX_VALUE], command[:MAX_VALUE], version[:MAX_VALUE],
                   os_arch[:MAX_VALUE])
            out[key] = out.get(key, 0) + n

    def error_rows(self) -> dict[int, list[_ErrorRow]]:
        """Per level, the error rows ``(bucket, error_code, command, cli_version, os_arch, n)``, sorted."""
        return {level: [(*key, n) for key, n in sorted(cells.items())] for level, cells in self.errors.items()}

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


# Each combination is (minute since the epoch, *values as stored), the values from the columns itemgetter picks.
_CLIENT_VALUES = itemgetter(*(_C[name] for name in (
    "type", "command", "cli_version", "os", "arch", "agent_type", "time_flag", "success", "error_code")))
_ClientCombo = tuple[int, str, str, str, str, str, str, str | None, bool, str]
_RUN_VALUES = itemgetter(_C["command"], _C["duration_bin"])
_DurationCombo = tuple[int, str, int | None]  # the bin is None for events that are not runs
_DAEMON_VALUES = itemgetter(_D["event"], _D["time_flag"])
_DaemonCombo = tuple[int, str, str | None]


class Tally(msgspec.Struct, array_like=True):
    """Rows counted by the combination of values the rollups need, per minute (since the epoch): far fewer
    entries than rows (a request's rows share most values), so each is expanded into its levels and
    dimensions once.

    The server counts each request's rows as it parses them, and the writer adds up the tallies of the
    requests a transaction stored: it never reads the rows themselves unless some were duplicates.
    """

    clients: dict[_ClientCombo, int] = msgspec.field(default_factory=dict)
    # Apart from the client combinations: nearly every run has a duration bin of its own.
    durations: dict[_DurationCombo, int] = msgspec.field(default_factory=dict)
    daemons: dict[_DaemonCombo, int] = msgspec.field(default_factory=dict)

    def add(self, other: Tally) -> None:
        """Count ``other``'s rows as well."""
        _add_counts(self.clients, other.clients)
        _add_counts(self.durations, other.durations)
        _add_counts(self.daemons, other.daemons)

    def rollup(self) -> Rollup:
        """The counts to add at every level and dimension."""
        rollup = Rollup()
        for (minute, kind, command, version, os, arch, agent, flag, success, code), n in self.clients.items():
            os_arch = f"{os}/{arch}"
            dims = [("total", "events"), ("type", kind), ("cli_version", version), ("os_arch", os_arch),
                    ("agent_type", agent)]
            run = kind in COMMAND_TYPES
            if run:
                dims.append(("command", command))
            if flag is not None:
                dims.append(("time_flag", flag))
            failed = run and (kind == "command_error" or not success)
            rollup.add(minute * 60, dims, n, n if failed else 0)
            if failed:
                rollup.add_errors(minute * 60, code, command, version, os_arch, n)
        rollup.add_durations(self.durations)
        for (minute, name, flag), n in self.daemons.items():
            dims = [("total", "daemon"), ("daemon", name)]
            if flag is not None:
                dims.append(("time_flag", flag))
            rollup.add(minute * 60, dims, n, 0)
        return rollup


def _add_counts(into: dict[K, int], counts: Mapping[K, int]) -> None:
    count = into.get
    for key, n in counts.items():
        into[key] = count(key, 0) + n


def _minutes(table: Columns, index: Mapping[str, int]) -> list[int]:
    # Charted at the corrected client time, unless that was implausible: then at the receive time.
    time, received, flag = table[index["event_time"]], table[index["received_at"]], table[index["time_flag"]]
    if any(flag):
        return [(t if f is None else r) // 60_000_000 for t, r, f in zip(time, received, flag, strict=True)]
    return list(map(floordiv, time, repeat(60_000_000)))


def tally(client: Columns, daemon: Columns) -> Tally:
    """Count rows, given a column at a time (``schema.columns``), by what the rollups need of them."""
    # Counted by Counter's C loop over tuples zip makes of whole columns, not a Python loop over the rows, as
    # every stored row passes through here. Values are kept as stored; what
    # they mean to a chart (is it a run, an error) is decided per combination, in Tally.rollup.
    out = Tally()
    if client and client[0]:
        minutes = _minutes(client, _C)
        out.clients = Counter(zip(minutes, *_CLIENT_VALUES(client), strict=True))
        out.durations = Counter(zip(minutes, *_RUN_VALUES(client), strict=True))
    if daemon and daemon[0]:
        out.daemons = Counter(zip(_minutes(daemon, _D), *_DAEMON_VALUES(daemon), strict=True))
    return out


def rollup_of(tallies: Iterable[Tally]) -> Rollup:
    """The rollup of the rows a transaction stored, from each request's tally: a combination many
    requests share is expanded into its levels and dimensions once."""
    total = Tally()
    for part in tallies:
        total.add(part)
    return total.rollup()


def upsert_rollup(level_name: str, rollup_rows: str, duration_rows: str, error_rows: str) -> tuple[str, str, str]:
    """(rollup upsert, durations upsert, errors upsert) statements for one level.

    ``rollup_rows``, ``duration_rows`` and ``error_rows`` are the SQL that yields the rows
    (a ``VALUES`` list, or a set-returning expression).
    """
    rollup = f"rollup_{level_name}"
    durations = f"durations_{level_name}"
    errors = f"errors_{level_name}"
    return (
        f"INSERT INTO {rollup} (dim, bucket, value, n, errors) {rollup_rows} "
        f"ON CONFLICT (dim, bucket, value) DO UPDATE SET n = {rollup}.n + excluded.n, "
        f"errors = {rollup}.errors + excluded.errors",
        f"INSERT INTO {durations} (bucket, command, bin, n) {duration_rows} "
        f"ON CONFLICT (bucket, command, bin) DO UPDATE SET n = {durations}.n + excluded.n",
        f"INSERT INTO {errors} (bucket, error_code, command, version, os_arch, n) {error_rows} "
        f"ON CONFLICT (bucket, error_code, command, version, os_arch) DO UPDATE SET n = {errors}.n + excluded.n",
    )
