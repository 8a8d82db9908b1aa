"""Distinct installations: HyperLogLog sketches (Apache DataSketches) kept per day and combination of values.

A sketch is a fixed array of registers, each the longest run of leading zero
bits seen among the hashes of the ids that fell into it: it holds no id and
cannot give one back, yet sketches merge (a register-wise maximum), so the
installations of 28 days are the union of 28 stored sketches, never a scan of
the events. With ``LG_K`` = 14 (16,384 registers) the estimate's standard
error is about 0.8%.

Each row of ``installs_1d`` counts one day under one *mask*: which of the
version, OS/arch and command it names (the others are "any"). A request's
events update every mask of each combination they hold, so any filter on
those three values, grouped by any one of them, reads whole rows: a query
never merges more sketches than it has days times groups.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import datasketches  # type: ignore[import-untyped]

from .storage.rollup import COMMAND_TYPES, Tally
from .storage.schema import MAX_VALUE

#: log2 of the registers a sketch has: 16 KiB a dense sketch, about 0.8% standard error.
LG_K = 14
_TYPE = datasketches.tgt_hll_type.HLL_8  # a byte a register: the fastest to update and merge

#: Mask bits: which values a row names (a clear bit means "any").
VERSION, OS_ARCH, COMMAND = 1, 2, 4
#: The dimension each ``by=`` groups by, and its bit.
DIMENSIONS = {"version": VERSION, "os": OS_ARCH, "command": COMMAND}

#: A row's key: (day in Unix seconds, mask, version, os/arch, command); an "any" value is "".
Cell = tuple[int, int, str, str, str]


def cells(day: int, version: str, os_arch: str, command: str | None) -> list[Cell]:
    """The rows an event of this combination counts in: one per mask (without command for events that are
    no command run)."""
    masks = range(8) if command is not None else (0, VERSION, OS_ARCH, VERSION | OS_ARCH)
    return [(day, mask, version if mask & VERSION else "", os_arch if mask & OS_ARCH else "",
             (command or "") if mask & COMMAND else "") for mask in masks]


@dataclass
class Installs:
    """What a transaction adds to ``installs_1d``: per row, the ids seen and the events without an id."""

    ids: dict[Cell, set[str]] = field(default_factory=dict)
    unknown: dict[Cell, int] = field(default_factory=dict)

    def add(self, client_id: str, tally: Tally) -> None:
        """Count the client events of ``tally`` under ``client_id``, or as unknown events when it is ""."""
        seen: dict[tuple[int, str, str, str | None], int] = {}
        for (minute, kind, command, version, os, arch, *_), n in tally.clients.items():
            key = (minute * 60 // 86400 * 86400, version[:MAX_VALUE], f"{os}/{arch}"[:MAX_VALUE],
                   command[:MAX_VALUE] if kind in COMMAND_TYPES else None)
            seen[key] = seen.get(key, 0) + n
        for key, n in seen.items():
            for cell in cells(*key):
                if client_id:
                    self.ids.setdefault(cell, set()).add(client_id)
                else:
                    self.unknown[cell] = self.unknown.get(cell, 0) + n

    def cells(self) -> list[Cell]:
        """Every row to update, sorted (concurrent writers lock rows in the same order)."""
        return sorted(self.ids.keys() | self.unknown.keys())

    def merged(self, cell: Cell, sketch: bytes | None, unknown: int) -> tuple[bytes | None, int]:
        """The row's new (sketch, unknown events), given its stored ones."""
        ids = self.ids.get(cell)
        if ids:
            hll = datasketches.hll_sketch(LG_K, _TYPE) if sketch is None else load(sketch)
            for client_id in ids:
                hll.update(client_id)
            sketch = hll.serialize_compact()
        return sketch, unknown + self.unknown.get(cell, 0)

    def __bool__(self) -> bool:
        return bool(self.ids or self.unknown)


def load(sketch: bytes | None) -> Any:
    """A stored sketch, read once to be merged into several unions; None stays None (unknown events only)."""
    return None if sketch is None else datasketches.hll_sketch.deserialize(bytes(sketch))


class Union:
    """Distinct installations across stored sketches."""

    def __init__(self) -> None:
        self._union = datasketches.hll_union(LG_K)
        self._empty = True

    def add(self, sketch: Any) -> None:
        """Merge one sketch :func:`load` read (None: a row of unknown events only)."""
        if sketch is not None:
            self._union.update(sketch)
            self._empty = False

    def estimate(self) -> int:
        """The distinct installations merged, rounded."""
        return 0 if self._empty else round(self._union.get_estimate())


def estimate(sketches: Iterable[bytes | None]) -> int:
    """Distinct installations across ``sketches``."""
    union = Union()
    for sketch in sketches:
        union.add(load(sketch))
    return union.estimate()
