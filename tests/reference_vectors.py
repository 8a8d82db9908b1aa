"""Where the messages written by the reference (Go) encoder are kept (copied from the shared vectors)."""

from pathlib import Path

VECTORS = Path(__file__).parent / "vectors"
