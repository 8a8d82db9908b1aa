"""Fixtures for the collector: real stores (a SQLite file, the CI PostgreSQL) and real servers on loopback."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the collector needs the server extra")
sys.path.insert(0, os.path.dirname(__file__))

from collector_helpers import Server

from ox_telemetry.collector.config import Config
from ox_telemetry.collector.storage import Storage, open_storage

# -- stores -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """The CI PostgreSQL server (``OX_TEST_POSTGRES_DSN``); a failure, not a skip, when CI requires it."""
    dsn = os.environ.get("OX_TEST_POSTGRES_DSN")
    if not dsn:
        if os.environ.get("OX_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail("OX_TEST_REQUIRE_POSTGRES=1 but OX_TEST_POSTGRES_DSN is not set")
        pytest.skip("no PostgreSQL server: set OX_TEST_POSTGRES_DSN")
    return dsn


@pytest.fixture
def postgres_url(postgres_dsn: str) -> Iterator[str]:
    """A URL whose tables live in a fresh schema, dropped after the test."""
    import psycopg

    schema = f"ox_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")  # type: ignore[call-overload]
    sep = "&" if "?" in postgres_dsn else "?"
    yield f"{postgres_dsn}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        # Connections of the test's collectors may linger for a moment.
        conn.execute(f"DROP SCHEMA {schema} CASCADE")  # type: ignore[call-overload]


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store of each kind."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/events.sqlite3"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def storage(db_url: str) -> Iterator[Storage]:
    """The store at ``db_url``, opened (schema created)."""
    store = open_storage(db_url)
    yield store
    store.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start collectors: ``serve(db_url=..., **config)``; default a fresh SQLite file, no limits."""
    servers: list[Server] = []

    def start(**overrides: Any) -> Server:
        defaults = Config(db_url=f"sqlite://{tmp_path}/collector-{len(servers)}.sqlite3",
                          address_rate=0, key_rate=0)
        server = Server(replace(defaults, **overrides))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One collector for the tests of a module that need no special settings (SQLite, no limits)."""
    path = tmp_path_factory.mktemp("shared")
    server = Server(Config(db_url=f"sqlite://{path}/shared.sqlite3", address_rate=0, key_rate=0))
    yield server
    server.close()


