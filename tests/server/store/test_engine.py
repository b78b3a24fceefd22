"""URLs, engine settings and transactions of the server store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from omadm.server.store.engine import DEFAULT_DB_FILE, database_url, make_engine, mask_url
from omadm.server.store.models import Device
from tests.server.conftest import postgres_database

pytestmark = pytest.mark.anyio


def test_default_url_is_an_sqlite_file_in_the_data_dir(tmp_path: Path) -> None:
    assert database_url(None, tmp_path) == f"sqlite+aiosqlite:///{tmp_path / DEFAULT_DB_FILE}"


def test_default_url_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert database_url(None, Path("data")) == f"sqlite+aiosqlite:///{tmp_path / 'data' / DEFAULT_DB_FILE}"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///rel/omadm.sqlite", "sqlite+aiosqlite:///rel/omadm.sqlite"),
        ("sqlite:////abs/omadm.sqlite", "sqlite+aiosqlite:////abs/omadm.sqlite"),
        ("sqlite+aiosqlite:////abs/x.db", "sqlite+aiosqlite:////abs/x.db"),
        ("postgresql://u:p@db:5432/omadm", "postgresql+asyncpg://u:p@db:5432/omadm"),
        ("postgres://u:p@db/omadm", "postgresql+asyncpg://u:p@db/omadm"),
        ("postgresql+asyncpg://u@db/omadm?ssl=require", "postgresql+asyncpg://u@db/omadm?ssl=require"),
        ("postgresql://u:p%40ss@db/omadm", "postgresql+asyncpg://u:p%40ss@db/omadm"),
    ],
)
def test_urls_are_normalised_to_the_async_drivers(given: str, expected: str) -> None:
    assert database_url(given, Path("/unused")) == expected


@pytest.mark.parametrize(
    "url",
    ["mysql://root:hunter2@db/omadm", "postgresql+psycopg2://root:hunter2@db/omadm", "not a url hunter2"],
)
def test_unsupported_urls_are_refused_with_the_password_masked(url: str) -> None:
    with pytest.raises(ValueError, match=r"not supported|is not a URL") as info:
        database_url(url, Path())
    message = str(info.value)
    assert "sqlite:///" in message
    assert "postgresql://" in message
    if "://" in url:
        assert "hunter2" not in message
        assert "root:***@db" in message


def test_mask_url() -> None:
    assert mask_url("postgresql+asyncpg://u:secret@db/omadm") == "postgresql+asyncpg://u:***@db/omadm"
    assert mask_url("postgresql://u@db/omadm") == "postgresql://u@db/omadm"
    assert mask_url("weird://u:secret@[bad") == "weird://u:***@[bad"


async def test_sqlite_connections_are_durable_and_check_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(database_url(None, tmp_path))
    try:
        async with engine.connect() as connection:
            pragmas = {
                name: (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
    finally:
        await engine.dispose()
    assert pragmas == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "busy_timeout": 10000}


async def test_postgresql_pool_recycles_without_a_ping_per_checkout() -> None:
    engine = make_engine("postgresql://u:p@db.invalid/omadm", pool_size=3)  # connects lazily: no server
    try:
        assert engine.dialect.driver == "asyncpg"
        assert engine.pool.size() == 3  # type: ignore[attr-defined]
        assert not engine.pool._pre_ping  # type: ignore[attr-defined]  # three round trips saved
        assert engine.pool._recycle == 1800  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


async def test_sqlite_has_one_connection_for_its_one_writer(tmp_path: Path) -> None:
    engine = make_engine(database_url(None, tmp_path), pool_size=10)
    try:
        assert engine.pool.size() == 1  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


async def test_sqlite_rolls_back_ddl(tmp_path: Path) -> None:
    """Transactions are real on SQLite (the driver would otherwise commit DDL on its own)."""
    engine = make_engine(database_url(None, tmp_path))
    try:
        with pytest.raises(RuntimeError):
            async with engine.begin() as connection:
                await connection.execute(text("CREATE TABLE t (x INTEGER)"))
                raise RuntimeError("abort")
        async with engine.connect() as connection:
            tables = (await connection.exec_driver_sql("SELECT name FROM sqlite_master")).scalars().all()
    finally:
        await engine.dispose()
    assert "t" not in tables


async def test_read_then_write_transactions_do_not_lose_updates(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The DM endpoint's pattern (load a row, think, store it) is safe on both engines."""
    async with sessions.begin() as session:
        session.add(Device(device_id="IMEI:1"))

    async def bump() -> None:
        async with sessions.begin() as session:
            device = (
                await session.execute(select(Device).where(Device.device_id == "IMEI:1").with_for_update())
            ).scalar_one()
            seen = device.auth_failures
            await asyncio.sleep(0.05)
            device.auth_failures = seen + 1

    await asyncio.gather(*(bump() for _ in range(3)))
    async with sessions() as session:
        device = (await session.execute(select(Device))).scalar_one()
    assert device.auth_failures == 3


def test_an_unreachable_postgresql_fails_the_test_and_names_it() -> None:
    with (
        pytest.raises(
            pytest.fail.Exception, match=r"PostgreSQL at postgresql://u:\*\*\*@127.0.0.1:1/test"
        ) as info,
        postgres_database("postgresql://u:secret@127.0.0.1:1/test"),
    ):
        pass
    assert "secret" not in str(info.value)
