"""Schema migrations (Alembic), driven from code: no ``alembic.ini`` needed.

The scripts live in ``omadm/server/store/migrations`` and ship in the wheel. ``migrate``
brings a database to a revision (the newest by default), ``downgrade`` takes it back,
``current_revision`` tells where it is. All of it runs in one transaction: on PostgreSQL
under an advisory lock (several workers starting at once migrate once), on SQLite under the
write lock, with foreign keys off while tables are rebuilt and checked before the commit.

For developers, a new revision after a change to ``models.py``::

    from alembic import command
    from omadm.server.store.migrate import alembic_config
    command.revision(alembic_config(), message="what changed", rev_id="0002", autogenerate=True)

(autogenerate needs a database at the previous head: pass its URL to ``alembic_config``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from omadm.server.store.engine import SchemaError, database_url, make_engine, mask_url

__all__ = [
    "MIGRATIONS_DIR",
    "MigrationError",
    "alembic_config",
    "current_revision",
    "downgrade",
    "engine_revision",
    "head_revision",
    "known_revisions",
    "migrate",
    "migrate_engine",
    "prepare_database",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: Key of the PostgreSQL advisory lock held while migrating ("omadm-mg" in ASCII).
_PG_LOCK_KEY = 0x6F6D61646D2D6D67


class MigrationError(Exception):
    """A migration could not be applied (the database is left as it was)."""


def alembic_config(url: str | None = None) -> Config:
    """The Alembic configuration for omadm's migrations; ``url`` only matters to Alembic's CLI."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if url is not None:
        config.set_main_option("sqlalchemy.url", database_url(url, Path()).replace("%", "%%"))
    return config


@cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The revision this omadm's models correspond to."""
    head = _scripts().get_current_head()
    assert head is not None, f"no migrations in {MIGRATIONS_DIR}"
    return head


def known_revisions() -> frozenset[str]:
    return frozenset(script.revision for script in _scripts().walk_revisions())


def _revision_of(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def engine_revision(engine: AsyncEngine) -> str | None:
    """The database's revision, None when it has no omadm schema (empty, or another application's)."""
    async with engine.connect() as connection:
        return await connection.run_sync(_revision_of)


def _locked(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})


def _check_foreign_keys(connection: Connection) -> None:
    if connection.dialect.name != "sqlite":
        return
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise MigrationError(f"the migration would leave rows with dangling foreign keys: {broken[:5]}")


def _run(connection: Connection, action: Callable[[Config], None]) -> None:
    _locked(connection)
    config = alembic_config()
    config.attributes["connection"] = connection
    action(config)
    _check_foreign_keys(connection)


async def migrate_engine(engine: AsyncEngine, revision: str = "head", *, downgrade: bool = False) -> None:
    """Upgrade (or downgrade) the database behind ``engine`` to ``revision``, in one transaction.

    ``engine`` should come from ``make_engine(url, foreign_keys=False)`` on SQLite (see there).
    """

    def action(config: Config) -> None:
        if downgrade:
            command.downgrade(config, revision)
        else:
            command.upgrade(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(_run, action)


async def _with_engine(url: str, work: Callable[[AsyncEngine], Any]) -> Any:
    engine = make_engine(url, pool_size=1, foreign_keys=False)
    try:
        return await work(engine)
    finally:
        await engine.dispose()


def _refuse_running_loop(name: str, instead: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(f"{name}() runs its own event loop: inside a running one, await {instead}()")


def migrate(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` up to ``revision`` (default: this omadm's head).

    Synchronous (it runs its own event loop): for the CLI and for start-up before the server's
    loop runs. Inside a running loop, use ``migrate_engine``.
    """
    _refuse_running_loop("migrate", "migrate_engine")
    try:
        asyncio.run(_with_engine(url, lambda engine: migrate_engine(engine, revision)))
    except MigrationError:
        raise
    except Exception as exc:
        raise MigrationError(f"cannot migrate the database at {mask_url(url)} to {revision}: {exc}") from exc


def downgrade(url: str, revision: str) -> None:
    """Take the database at ``url`` back to ``revision`` (``"base"``: drop every omadm table)."""
    _refuse_running_loop("downgrade", "migrate_engine(..., downgrade=True)")
    try:
        asyncio.run(_with_engine(url, lambda engine: migrate_engine(engine, revision, downgrade=True)))
    except MigrationError:
        raise
    except Exception as exc:
        raise MigrationError(
            f"cannot downgrade the database at {mask_url(url)} to {revision}: {exc}"
        ) from exc


def current_revision(url: str) -> str | None:
    """The revision of the database at ``url``; None when it has no omadm schema yet."""
    _refuse_running_loop("current_revision", "engine_revision")
    result: str | None = asyncio.run(_with_engine(url, engine_revision))
    return result


def _has_tables(connection: Connection) -> bool:
    return bool(inspect(connection).get_table_names())


async def _state(engine: AsyncEngine) -> tuple[str | None, bool]:
    async with engine.connect() as connection:
        revision = await connection.run_sync(_revision_of)
        tables = revision is not None or await connection.run_sync(_has_tables)
    return revision, tables


def prepare_database(url: str, *, upgrade: bool = False) -> str | None:
    """Make the database at ``url`` ready for ``omadm server``; what was done, None for nothing.

    An empty database (the first start) gets this omadm's schema: there is nothing to lose,
    and a new operator should not have to know about ``omadm server migrate`` first. A
    database at an older revision is upgraded only when asked (``upgrade``, the server's
    ``--migrate``): that changes the operator's data, which they may want to back up first.

    Raises:
        SchemaError: the database cannot be used as it is (older without ``upgrade``, newer
            than this omadm, or another application's tables); the message says what to do.
        MigrationError: the database cannot be reached, or a migration failed.
    """
    _refuse_running_loop("prepare_database", "migrate_engine")
    try:
        revision, tables = asyncio.run(_with_engine(url, _state))
    except Exception as exc:
        raise MigrationError(f"cannot open the database at {mask_url(url)}: {exc}") from exc
    head = head_revision()
    where = f"the database at {mask_url(url)}"
    if revision == head:
        return None
    if revision is None:
        if tables:
            raise SchemaError(
                f"{where} has tables but no omadm schema (another application's?): "
                "give omadm an empty database of its own"
            )
        migrate(url)
        return f"created the omadm schema (revision {head}) in {where}"
    if revision not in known_revisions():
        raise SchemaError(
            f"{where} is at revision {revision}, unknown to this omadm (which needs {head}): "
            "a newer omadm migrated it; run that version"
        )
    if not upgrade:
        raise SchemaError(
            f"{where} is at revision {revision}, this omadm needs {head}: back it up, then run "
            "'omadm server migrate' or start with --migrate"
        )
    migrate(url)
    return f"upgraded {where} from revision {revision} to {head}"
