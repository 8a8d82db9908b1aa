"""Event stores: SQLite (the default, one file) and PostgreSQL (shared by several collectors)."""

from __future__ import annotations

import os

from .base import Storage, StorageError, StoreUnavailable, WriteJob
from .schema import Row

__all__ = ["Row", "Storage", "StorageError", "StoreUnavailable", "WriteJob", "default_url", "open_storage"]


def default_url() -> str:
    """``sqlite://`` + ``collector.sqlite3`` in the user data directory."""
    from ...paths import user_data_dir

    return "sqlite://" + os.path.join(os.path.abspath(user_data_dir()), "collector.sqlite3")


def open_storage(url: str) -> Storage:
    """Open (creating or migrating the schema) the store at ``url``.

    ``sqlite:///abs/path``, ``sqlite:rel/path`` or a bare file path for SQLite;
    ``postgresql://…`` or ``postgres://…`` for PostgreSQL. ValueError for any
    other scheme; StorageError when the store cannot be opened.
    """
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStorage

        return PostgresStorage(url)
    if url.startswith("sqlite:"):
        path = url[len("sqlite://"):] if url.startswith("sqlite://") else url[len("sqlite:"):]
    elif "://" in url:
        raise ValueError(f"unsupported database URL {url!r}: use sqlite:///path or postgresql://...")
    else:
        path = url
    if not path or path == ":memory:":
        raise ValueError(f"database URL {url!r} names no file")
    from .sqlite import SQLiteStorage

    return SQLiteStorage(path)
