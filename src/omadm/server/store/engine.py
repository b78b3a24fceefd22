"""Connecting to the server's database: URLs, engines, sessions, and the schema check.

Two engines, one schema. SQLite (the embedded default, a file in the data directory) runs
with WAL journaling and ``synchronous=FULL``, foreign keys on, and a 10 s busy timeout.
Its transactions start with ``BEGIN IMMEDIATE``: a transaction that reads a row and then
writes it (a DM message: load the session, store the next one) holds SQLite's single write
lock from its first statement, so two requests for the same session queue for the lock
instead of losing an update or failing with "database is locked". The price is that
read-only transactions queue too; rule 4 of the design already says: one worker on SQLite.
PostgreSQL (``asyncpg``) is for more than one worker; it keeps its own defaults (READ
COMMITTED), so code that reads then writes a row locks it (``with_for_update``).

``make_sync_engine`` opens the same database with a synchronous driver (stdlib ``sqlite3``,
``psycopg``) for the DM writer's threads (``store/writer.py``), its SQLite connections set up
like the async engine's.

Tables come from the migrations (``store.migrate``): ``omadm server`` gives an empty database
its schema when it starts, ``omadm server migrate`` (or ``omadm server --migrate``) upgrades
an older one, and ``check_schema`` makes each worker refuse a database that is not at this
omadm's revision.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

__all__ = [
    "DEFAULT_DB_FILE",
    "SQLITE_BUSY_TIMEOUT_MS",
    "SchemaError",
    "check_schema",
    "database_url",
    "make_engine",
    "make_sync_engine",
    "mask_url",
    "session_factory",
    "sync_url",
]

#: The SQLite file ``database_url`` chooses inside the data directory when no URL is given.
DEFAULT_DB_FILE = "omadm-server.sqlite"

#: Accepted URL schemes -> the async driver omadm uses for them.
_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
#: The synchronous driver of each backend, for the DM writer's threads (``store/writer.py``).
_SYNC_DRIVERS = {"sqlite": "sqlite+pysqlite", "postgresql": "postgresql+psycopg"}
_SUPPORTED = "sqlite:///PATH, postgresql://USER:PASSWORD@HOST:PORT/DATABASE (or postgres://)"

#: SQLite's busy timeout, in milliseconds: how long a writer waits for the write lock.
SQLITE_BUSY_TIMEOUT_MS = 10_000


class SchemaError(Exception):
    """The database has no omadm schema, or another revision of it than this omadm needs."""


def mask_url(url: str | URL) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        # Not parseable as a database URL: mask whatever sits between "user:" and "@".
        return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", str(url))


def database_url(url: str | None, data_dir: Path) -> str:
    """The async SQLAlchemy URL for ``url``, or for an SQLite file in ``data_dir`` when None.

    ``sqlite:///`` becomes ``sqlite+aiosqlite:///`` and ``postgresql://`` or ``postgres://``
    become ``postgresql+asyncpg://``; the async forms are accepted as they are. Anything
    else raises ValueError naming the URL (password masked) and the supported forms.
    """
    if url is None:
        return f"{_DRIVERS['sqlite']}:///{(data_dir / DEFAULT_DB_FILE).absolute()}"
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ValueError(f"database URL {mask_url(url)!r} is not a URL: use {_SUPPORTED}") from None
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(
            f"database URL {mask_url(url)!r}: scheme {parsed.drivername!r} is not supported: use {_SUPPORTED}"
        )
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def _is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def _sqlite_in_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def make_engine(url: str, *, pool_size: int = 10, foreign_keys: bool = True) -> AsyncEngine:
    """An async engine for ``url`` (any form ``database_url`` accepts).

    ``foreign_keys=False`` is for migrations only: on SQLite a schema change that rebuilds a
    table must not cascade the drop of the old table into its children (``migrate`` checks
    the keys with ``PRAGMA foreign_key_check`` before it commits instead).
    """
    parsed = make_url(database_url(url, Path()))
    options: dict[str, Any] = {}
    if _is_sqlite(parsed):
        if not _sqlite_in_memory(parsed):
            # One connection: SQLite has one writer, and every transaction here begins
            # IMMEDIATE; with more connections they queue in SQLite's busy handler, which
            # sleeps instead of waking the next writer (measured: p99 2 s instead of 0.3 s).
            options.update(pool_size=1, max_overflow=0, pool_timeout=30)
        engine = create_async_engine(parsed, **options)
        _configure_sqlite(engine, foreign_keys=foreign_keys)
        return engine
    options.update(
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=30,
        # No pre-ping (three round trips per checkout): a connection the database dropped
        # fails one request and is discarded; recycling keeps idle reapers from doing it.
        pool_pre_ping=False,
        pool_recycle=1800,
    )
    return create_async_engine(parsed, **options)


def sync_url(url: str) -> str | None:
    """The synchronous driver's URL for the same database, or None when there is none.

    An in-memory SQLite database exists only inside its own connection: no second one there.
    """
    parsed = make_url(database_url(url, Path()))
    driver = _SYNC_DRIVERS.get(parsed.get_backend_name())
    if driver is None or (_is_sqlite(parsed) and _sqlite_in_memory(parsed)):
        return None
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def make_sync_engine(url: str, *, pool_size: int = 2) -> Engine | None:
    """A synchronous engine on the database of ``url`` (the DM writer's), None for in-memory SQLite.

    Its SQLite connections are set up as the async engine's (pragmas, no driver-begun
    transactions); its users begin their transactions themselves.
    """
    sync = sync_url(url)
    if sync is None:
        return None
    engine = create_engine(sync, pool_size=pool_size, max_overflow=0, pool_pre_ping=False)
    if engine.dialect.name == "sqlite":
        _run_pragmas_on_connect(engine, _sqlite_pragmas(foreign_keys=True))
    return engine


def _sqlite_pragmas(*, foreign_keys: bool) -> tuple[str, ...]:
    return (
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=FULL",
        f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}",
        f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    )


def _run_pragmas_on_connect(engine: Engine, pragmas: tuple[str, ...]) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own transaction handling begins transactions late (before the first
        # INSERT/UPDATE/DELETE, never before DDL); switch it off and begin them ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in pragmas:
                cursor.execute(pragma)
        finally:
            cursor.close()


def _configure_sqlite(engine: AsyncEngine, *, foreign_keys: bool) -> None:
    _run_pragmas_on_connect(engine.sync_engine, _sqlite_pragmas(foreign_keys=foreign_keys))

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions on ``engine``; objects stay usable after commit (no reload per attribute)."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def check_schema(engine: AsyncEngine) -> None:
    """Raise SchemaError unless the database is at the revision this omadm needs (the head)."""
    from omadm.server.store.migrate import engine_revision, head_revision, known_revisions  # noqa: PLC0415

    head = head_revision()
    current = await engine_revision(engine)
    if current == head:
        return
    where = f"database at {mask_url(engine.url)}"
    fix = "run 'omadm server migrate'"
    if current is None:
        raise SchemaError(f"{where} has no omadm schema, this omadm needs revision {head}: {fix}")
    if current not in known_revisions():
        raise SchemaError(
            f"{where} is at revision {current}, unknown to this omadm (which needs {head}): "
            "a newer omadm migrated it; run that version, or downgrade the database with it"
        )
    raise SchemaError(f"{where} is at revision {current}, this omadm needs {head}: {fix}")
