"""The sweeper's lease: one worker sweeps at a time, and another takes over when it dies.

On PostgreSQL two leases (two engines, as two workers on two hosts would have) contend for
the advisory lock; cutting the holder's connection from the outside (``pg_terminate_backend``,
what the database does when the holder's process or host dies) hands the lease over at the
next tick. On SQLite a file lock does the same between the processes of one host.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from omadm.server import sweeper
from omadm.server.config import ServerConfig
from omadm.server.lease import FileLease, LocalLease, PostgresLease, lease_holder, sweep_lease, worker_name
from omadm.server.store.engine import database_url, make_engine

from .conftest import POSTGRES_ENV, _libpq_dsn, postgres_database

pytestmark = pytest.mark.anyio


@pytest.fixture
def pg_url() -> Iterator[str]:
    admin = os.environ.get(POSTGRES_ENV)
    if not admin:
        pytest.skip(f"{POSTGRES_ENV} is not set: the advisory-lock lease needs PostgreSQL")
    with postgres_database(admin) as url:
        yield url


async def _terminate(url: str, application_name: str) -> int:
    """Cut every connection named ``application_name`` (as a dead host's would be cut)."""
    connection = await asyncpg.connect(_libpq_dsn(url))
    try:
        rows = await connection.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            application_name,
        )
        return len(rows)
    finally:
        await connection.close()


async def test_two_workers_contend_and_the_lease_moves_when_the_holders_connection_dies(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="omadm.server.lease")
    a = PostgresLease(pg_url, "omadm-sweeper host-a:1 port 8701")
    b = PostgresLease(pg_url, "omadm-sweeper host-b:2 port 8702")
    try:
        assert await a.hold()
        assert not await b.hold()
        assert await a.hold()  # confirmed, not taken twice
        assert not await b.hold()
        assert await b.holder() == a.name
        assert "sweeper lease held by omadm-sweeper host-a:1 port 8701" in caplog.text
        # One "held by" line per change of holder, not one per tick.
        assert caplog.text.count("stands by") == 1

        assert await _terminate(pg_url, a.name) == 1
        assert await b.hold()  # the database dropped the lock with the connection
        assert not await a.hold()  # the old holder notices and stands by
        assert "sweeper lease lost by omadm-sweeper host-a:1 port 8701" in caplog.text
        assert await a.holder() == b.name

        await b.release()  # a clean shutdown gives it back at once
        assert await a.hold()
    finally:
        await a.release()
        await b.release()


@pytest.fixture
def other_pg_url(pg_url: str) -> Iterator[str]:
    """A second database on the same server: another installation."""
    with postgres_database(os.environ[POSTGRES_ENV]) as url:
        yield url


async def test_a_clean_release_hands_over_and_the_lease_is_per_database(
    pg_url: str, other_pg_url: str
) -> None:
    a = PostgresLease(pg_url, "omadm-sweeper a")
    b = PostgresLease(pg_url, "omadm-sweeper b")
    try:
        assert await a.hold()
        c = PostgresLease(other_pg_url, "omadm-sweeper c")  # another installation, same server
        try:
            assert await c.hold()
        finally:
            await c.release()
        await a.release()
        assert await b.hold()
        engine = make_engine(pg_url)
        try:
            assert await lease_holder(engine) == "omadm-sweeper b"
        finally:
            await engine.dispose()
    finally:
        await a.release()
        await b.release()


async def test_a_lease_without_its_database_does_not_sweep(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="omadm.server.lease")
    lease = PostgresLease(
        "postgresql+asyncpg://nobody@127.0.0.1:1/none", "omadm-sweeper x", connect_timeout=2
    )
    try:
        assert not await lease.hold()
        assert not await lease.hold()
    finally:
        await lease.release()
    assert caplog.text.count("cannot reach the database") == 1  # said once, not every tick


async def test_a_file_lease_is_one_holder_per_host(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite.sweeper-lock"
    a = FileLease(path, "a")
    b = FileLease(path, "b")
    assert await a.hold() and await a.hold()
    assert not await b.hold()
    assert path.read_text() == "a\n"
    await a.release()
    assert await b.hold()
    await b.release()
    assert await LocalLease().hold()


async def test_the_lease_fits_the_database(tmp_path: Path) -> None:
    engine = make_engine(database_url(None, tmp_path))
    try:
        lease = sweep_lease(engine, 8700)
        assert isinstance(lease, FileLease) and lease.path.name == "omadm-server.sqlite.sweeper-lock"
        assert lease.name == worker_name(8700) and lease.name.endswith(f":{os.getpid()} port 8700")
        assert await lease_holder(engine) is None
    finally:
        await engine.dispose()
    memory = make_engine("sqlite+aiosqlite://")
    try:
        assert isinstance(sweep_lease(memory), LocalLease)
    finally:
        await memory.dispose()


class _Lease:
    """A lease that is held on the ticks given."""

    def __init__(self, held: list[bool]) -> None:
        self.name = "test"
        self.held = held
        self.released = False

    async def hold(self) -> bool:
        return self.held.pop(0) if self.held else False

    async def release(self) -> None:
        self.released = True


async def test_only_the_holder_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    sweeps: list[int] = []

    async def fake_sweep(sessions: object, config: object) -> sweeper.SweepReport:
        sweeps.append(1)
        return sweeper.SweepReport()

    monkeypatch.setattr(sweeper, "sweep", fake_sweep)
    lease = _Lease([False, True, False, True, True])
    task = asyncio.create_task(sweeper.run_sweeper(None, ServerConfig(sweep_interval=0.01), lease))  # type: ignore[arg-type]
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(sweeps) == 3  # the three ticks that held the lease
    assert lease.released
