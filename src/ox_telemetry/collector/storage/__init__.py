"""Event stores: SQLite (the default, one file) and PostgreSQL (shared by several collectors)."""

from __future__ import annotations

import os

from .base import Storage, StorageError, StoreUnavailable, WriteJob
from .schema import Row

__all__ = [
    "Row", "Storage", "StorageError", "StoreUnavailable", "WriteJob", "absolute_url", "default_url", "open_storage",
]


def default_url() -> str:
    """``sqlite://`` + ``collector.sqlite3`` in the user data directory, which is created if need be (unlike the
    directory of a path given)."""
    from ...paths import user_data_dir

    directory = os.path.abspath(user_data_dir())
    os.makedirs(directory, mode=0o700, exist_ok=True)
    return "sqlite://" + os.path.join(directory, "collector.sqlite3")


def _sqlite_path(url: str) -> str | None:
    """The file a SQLite URL names, as given (None for a PostgreSQL URL); ValueError for any other."""
    if url.startswith(("postgresql://", "postgres://")):
        return None
    if url.startswith("sqlite:"):
        path = url[len("sqlite://"):] if url.startswith("sqlite://") else url[len("sqlite:"):]
    elif "://" in url:
        raise ValueError(f"unsupported database URL {url!r}: use sqlite:///path or postgresql://...")
    else:
        path = url
    if not path or path == ":memory:":
        raise ValueError(f"database URL {url!r} names no file")
    return path


def absolute_url(url: str) -> str:
    """``url`` with a SQLite path made absolute, so it names the same file from any working directory (the
    writer process runs from "/"); ValueError as in :func:`open_storage`."""
    path = _sqlite_path(url)
    return url if path is None else "sqlite://" + os.path.abspath(path)


def open_storage(url: str) -> Storage:
    """Open (creating or migrating the schema) the store at ``url``.

    ``sqlite:///abs/path``, ``sqlite:rel/path`` or a bare file path for SQLite;
    ``postgresql://…`` or ``postgres://…`` for PostgreSQL. ValueError for any
    other scheme; StorageError when the store cannot be opened.
    """
    path = _sqlite_path(url)
    if path is None:
        from .postgres import PostgresStorage

        return PostgresStorage(url)
    from .sqlite import SQLiteStorage

    return SQLiteStorage(path)
