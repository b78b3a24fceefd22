"""Fixtures for the server's tests: a fresh, migrated database on each engine.

``db_url`` runs every test that uses it twice: on an SQLite file in ``tmp_path`` and on a
PostgreSQL database of its own (``omadm_t_<random>``, created through the server named by
``OMADM_TEST_POSTGRES`` and dropped afterwards). Without ``OMADM_TEST_POSTGRES`` the
PostgreSQL runs are skipped; with it set and the server down they FAIL, so that CI cannot
pass by silently testing one engine.

Async tests are marked ``pytest.mark.anyio`` (anyio's pytest plugin, asyncio backend).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from omadm.server.store.engine import database_url, make_engine, mask_url, session_factory
from omadm.server.store.migrate import migrate

POSTGRES_ENV = "OMADM_TEST_POSTGRES"
ENGINES = ("sqlite", "postgresql")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _libpq_dsn(url: str) -> str:
    """``url`` (any form omadm accepts) as the plain ``postgresql://`` DSN asyncpg takes."""
    return (
        make_url(database_url(url, Path())).set(drivername="postgresql").render_as_string(hide_password=False)
    )


async def _admin(admin_url: str, *statements: tuple[str, ...]) -> None:
    connection = await asyncpg.connect(_libpq_dsn(admin_url), timeout=10)
    try:
        for statement, *args in statements:
            await connection.execute(statement, *args)
    finally:
        await connection.close()


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for one test; yields its async URL, drops it afterwards."""
    name = f"omadm_t_{secrets.token_hex(6)}"
    try:
        asyncio.run(_admin(admin_url, (f'CREATE DATABASE "{name}"',)))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        pytest.fail(
            f"PostgreSQL at {mask_url(admin_url)} ({POSTGRES_ENV}) is not usable: "
            f"{type(exc).__name__}: {exc}",
            pytrace=False,
        )
    try:
        yield (
            make_url(database_url(admin_url, Path())).set(database=name).render_as_string(hide_password=False)
        )
    finally:
        asyncio.run(
            _admin(
                admin_url,
                (
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = $1 AND pid <> pg_backend_pid()",
                    name,
                ),
                (f'DROP DATABASE IF EXISTS "{name}"',),
            )
        )


@pytest.fixture(params=ENGINES)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The async URL of an empty database (no tables), on each engine in turn."""
    if request.param == "sqlite":
        yield database_url(None, tmp_path)
        return
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        pytest.skip(f"{POSTGRES_ENV} is not set (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    with postgres_database(admin_url) as url:
        yield url


@pytest.fixture
def db_url(empty_db_url: str) -> str:
    """The async URL of a database migrated to this omadm's head revision."""
    migrate(empty_db_url)
    return empty_db_url


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(db_url, pool_size=2)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)
