"""Each bench records what it printed in bench/RESULTS.md: one section per bench, replaced by its next run.

The README keeps only a table of targets and current figures; the run itself
(the command, when, the machine and every table it printed) lives here, written
by the bench, never copied by hand.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

RESULTS = Path(__file__).with_name("RESULTS.md")
_HEAD = """# Benchmark results

Written by the scripts in this folder (see README.md here), one section per
script, replaced whenever it runs; figures from this project's 2-core machine,
whose speed drifts by up to two times within an hour, so read each figure
against the baseline printed beside it in the same run.
"""


class _Tee(io.TextIOBase):
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.copy = io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.out.write(text)

    def flush(self) -> None:
        self.out.flush()


@contextlib.contextmanager
def recorded(name: str) -> Iterator[None]:
    """Print as usual; when the block ends without an error, the output becomes section ``name`` of RESULTS.md."""
    tee = _Tee(sys.stdout)
    command = " ".join(["python", os.path.relpath(os.path.abspath(sys.argv[0]), RESULTS.parent.parent), *sys.argv[1:]])
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    sys.stdout = tee
    try:
        yield
    finally:
        sys.stdout = tee.out
    body = tee.copy.getvalue().strip()
    # The script's own headings sit below the section's.
    body = "\n".join("##" + line if line.startswith("#") else line for line in body.splitlines())
    section = f"<!-- {name} -->\n## {name}\n\n`{command}`, {started}.\n\n{body}\n<!-- /{name} -->\n"
    text = RESULTS.read_text() if RESULTS.exists() else _HEAD
    start, end = text.find(f"<!-- {name} -->"), text.find(f"<!-- /{name} -->")
    if start >= 0 and end > start:
        text = text[:start] + section + text[end + len(f"<!-- /{name} -->\n"):]
    elif "<!-- history -->" in text:  # new sections go above the hand-kept history
        cut = text.index("<!-- history -->")
        text = text[:cut] + section + "\n" + text[cut:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)
