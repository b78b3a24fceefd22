"""Alembic migrations: empty to head and back, the schema check, models and migrations agree."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from omadm.server.store import migrate as migrate_module
from omadm.server.store.engine import SchemaError, check_schema, make_engine, mask_url
from omadm.server.store.migrate import (
    MIGRATIONS_DIR,
    MigrationError,
    alembic_config,
    current_revision,
    downgrade,
    engine_revision,
    head_revision,
    migrate,
    migrate_engine,
)
from omadm.server.store.models import Base

pytestmark = pytest.mark.anyio

TABLES = {
    "devices",
    "dm_sessions",
    "inventory",
    "jobs",
    "artifacts",
    "device_events",
    "api_tokens",
    "audit_log",
    "publishers",
    "campaigns",
    "campaign_devices",
    "authorities",
    "device_attributes",
}


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) - {"alembic_version"}


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def test_head_is_the_last_revision_in_the_chain() -> None:
    assert head_revision() == "0009"
    assert (MIGRATIONS_DIR / "versions" / "0001_initial.py").is_file()
    assert (MIGRATIONS_DIR / "versions" / "0002_device_work_flags.py").is_file()
    assert (MIGRATIONS_DIR / "versions" / "0003_api_tokens_audit.py").is_file()
    assert (MIGRATIONS_DIR / "versions" / "0004_campaigns.py").is_file()
    assert (MIGRATIONS_DIR / "versions" / "0005_authorities.py").is_file()
    assert (MIGRATIONS_DIR / "versions" / "0006_device_row_version.py").is_file()
    assert (MIGRATIONS_DIR / "versions" / "0007_fleet_queries.py").is_file()
    assert (MIGRATIONS_DIR / "versions" / "0008_publishers.py").is_file()
    assert (MIGRATIONS_DIR / "versions" / "0009_token_expiry.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()


def _check_schema(url: str) -> None:
    async def check() -> None:
        engine = make_engine(url, pool_size=1)
        try:
            await check_schema(engine)
        finally:
            await engine.dispose()

    asyncio.run(check())


def _table_names(url: str) -> set[str]:
    async def tables() -> set[str]:
        engine = make_engine(url, pool_size=1)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(_tables)
        finally:
            await engine.dispose()

    return asyncio.run(tables())


def test_migrate_from_empty_to_head_and_check_schema(empty_db_url: str) -> None:
    assert current_revision(empty_db_url) is None
    with pytest.raises(SchemaError) as info:
        _check_schema(empty_db_url)
    assert str(info.value) == (
        f"database at {mask_url(empty_db_url)} has no omadm schema, this omadm needs revision "
        f"{head_revision()}: run 'omadm server migrate'"
    )

    migrate(empty_db_url)
    assert current_revision(empty_db_url) == head_revision()
    _check_schema(empty_db_url)
    assert _table_names(empty_db_url) == TABLES
    migrate(empty_db_url)  # at head already: nothing to do
    assert current_revision(empty_db_url) == head_revision()


async def test_migrate_engine_inside_a_running_loop(empty_db_url: str) -> None:
    with pytest.raises(RuntimeError, match="await migrate_engine"):
        migrate(empty_db_url)
    engine = make_engine(empty_db_url, pool_size=1, foreign_keys=False)
    try:
        assert await engine_revision(engine) is None
        await migrate_engine(engine)
        assert await engine_revision(engine) == head_revision()
        await check_schema(engine)
        await migrate_engine(engine, "base", downgrade=True)
        assert await engine_revision(engine) is None
    finally:
        await engine.dispose()


async def test_models_and_migrations_agree(db_url: str) -> None:
    engine = make_engine(db_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(_differences) == []
    finally:
        await engine.dispose()


def test_alembic_check_through_env_py(db_url: str) -> None:
    """Alembic's own commands (for developers) reach the database through env.py's async engine."""
    command.check(alembic_config(db_url))  # raises when autogenerate would write a migration


def test_downgrade_to_base_drops_every_table(db_url: str) -> None:
    downgrade(db_url, "base")
    assert current_revision(db_url) is None
    assert _table_names(db_url) == set()
    with pytest.raises(SchemaError, match="has no omadm schema"):
        _check_schema(db_url)
    migrate(db_url)  # and up again
    assert current_revision(db_url) == head_revision()
    assert _table_names(db_url) == TABLES


async def test_older_revision_is_refused_with_advice_to_migrate(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database behind: migrated to head, then taken back to 0001."""
    del monkeypatch
    engine = make_engine(db_url, pool_size=1)
    try:
        await migrate_module.migrate_engine(engine, "0001", downgrade=True)
        with pytest.raises(SchemaError) as info:
            await check_schema(engine)
    finally:
        await engine.dispose()
    assert str(info.value) == (
        f"database at {mask_url(db_url)} is at revision 0001, this omadm needs {head_revision()}: "
        "run 'omadm server migrate'"
    )


async def test_unknown_revision_is_refused_without_advice_to_migrate(db_url: str) -> None:
    engine = make_engine(db_url, pool_size=1)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(SchemaError, match="at revision 9999, unknown to this omadm") as info:
            await check_schema(engine)
        assert "omadm server migrate" not in str(info.value)
    finally:
        await engine.dispose()


def test_migrate_to_an_unknown_revision_names_the_database(db_url: str) -> None:
    with pytest.raises(MigrationError, match=r"cannot migrate the database at .* to 0042"):
        migrate(db_url, "0042")
    assert current_revision(db_url) == head_revision()


def test_migration_0007_creates_the_triggers_and_statistics_the_models_create() -> None:
    """0007 keeps frozen copies of the attribute triggers; ``create_all`` uses the models'.
    A change to one without the other would leave migrated and test databases apart."""
    import importlib.util  # noqa: PLC0415

    from omadm.server.store.models import ATTRIBUTE_STATISTICS, ATTRIBUTE_TRIGGERS  # noqa: PLC0415

    path = MIGRATIONS_DIR / "versions" / "0007_fleet_queries.py"
    spec = importlib.util.spec_from_file_location("migration_0007", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.ATTRIBUTE_TRIGGERS == ATTRIBUTE_TRIGGERS
    assert module.ATTRIBUTE_STATISTICS == ATTRIBUTE_STATISTICS
