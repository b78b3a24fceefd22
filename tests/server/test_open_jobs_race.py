"""A job created while a DM session looks for work is never left unsent (PostgreSQL).

The DM endpoint looks for jobs only on devices whose ``has_open_jobs`` is up, and lowers it
when it finds none. Two interleavings used to lose a job on PostgreSQL, each played here
step by step with real transactions (no sleeps, no luck):

* the campaign sweeper reads a device, a DM session then lowers the flag, and the sweeper
  creates a job on its stale copy, which still says True: the ORM wrote nothing;
* a job is created after a session looked for jobs and found none, but before that session
  committed: the session lowered the flag after the job's commit had raised it.

SQLite runs one transaction at a time (a pool of one connection), so neither can happen
there; these tests need two open transactions at once and run on PostgreSQL only.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from omadm.server.dm_endpoint import DMEndpoint
from omadm.server.registry import add_device, create_job, find_device
from omadm.server.store.migrate import migrate
from omadm.server.store.models import Job, JobKind, JobState

from .conftest import POSTGRES_ENV, postgres_database
from .dmharness import DEVICE, Harness, make_harness

pytestmark = pytest.mark.anyio


@pytest.fixture
def postgres_url() -> Iterator[str]:
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        pytest.skip(f"{POSTGRES_ENV} is not set (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    with postgres_database(admin_url) as url:
        migrate(url)
        yield url


@pytest.fixture
async def harness(postgres_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async for h in make_harness(postgres_url, tmp_path):
        async with h.sessions() as db, db.begin():
            device = await add_device(db, DEVICE, username="dev", password="secret")
            # Up, as a job that has just finished leaves it (a new device starts without).
            device.has_open_jobs = True
        yield h


async def job_state(harness: Harness, job_id: int) -> str:
    async with harness.sessions() as db:
        job = await db.get(Job, job_id)
        assert job is not None
        return job.state


async def test_a_job_created_on_a_device_read_before_a_session_cleared_its_flag_is_sent(
    harness: Harness,
) -> None:
    async with harness.sessions() as sweeper, sweeper.begin():
        # 1. The sweeper reads the device: the flag is up (its last job has just finished).
        device = await find_device(sweeper, DEVICE)
        assert device is not None and device.has_open_jobs
        # 2. Meanwhile a DM session finds no job and lowers the flag (and commits).
        await harness.run(harness.client())
        assert not (await harness.device()).has_open_jobs
        # 3. The sweeper creates a job on its copy, which still says True, and commits.
        job = await create_job(sweeper, device, JobKind.REFRESH_INVENTORY, {})
    assert (await harness.device()).has_open_jobs, "the job's commit left the flag down"
    await harness.run(harness.client(session_id="2"))
    assert await job_state(harness, job.id) != JobState.QUEUED.value, "the next session did not send it"


async def test_a_job_created_after_a_session_found_none_but_before_it_committed_is_sent(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The DM session is held once it has looked for jobs, found none and lowered the flag,
    # before it commits, while a job is created and committed.
    looked, proceed = asyncio.Event(), asyncio.Event()
    send_work = DMEndpoint._send_work

    async def held_before_commit(self: DMEndpoint, *args: Any) -> None:
        device = args[3]  # (unit, record, session, device, note)
        had = device.has_open_jobs
        await send_work(self, *args)
        if had and not device.has_open_jobs and not looked.is_set():
            looked.set()
            await proceed.wait()

    monkeypatch.setattr(DMEndpoint, "_send_work", held_before_commit)

    async def create() -> int:
        async with harness.sessions() as db, db.begin():
            device = await find_device(db, DEVICE)
            assert device is not None and device.has_open_jobs
            return (await create_job(db, device, JobKind.REFRESH_INVENTORY, {})).id

    async with harness.sessions() as observer:

        async def waiting_on_a_lock() -> bool:
            found = await observer.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                )
            )
            await observer.rollback()
            return bool(found.scalar_one())

        session = asyncio.create_task(harness.run(harness.client()))  # the flag is up: it looks
        await asyncio.wait_for(looked.wait(), 30)
        creating = asyncio.create_task(create())
        # The job's flag must wait for the session's transaction (the device row's lock).
        for _ in range(100):
            if creating.done() or await waiting_on_a_lock():
                break
            await asyncio.sleep(0.05)
        proceed.set()
        await asyncio.wait_for(session, 30)
        job_id = await asyncio.wait_for(creating, 30)
    monkeypatch.undo()
    assert (await harness.device()).has_open_jobs, "the session lowered the flag over the new job"
    await harness.run(harness.client(session_id="2"))
    assert await job_state(harness, job_id) != JobState.QUEUED.value, "the next session did not send it"
    async with harness.sessions() as db:
        left = (await db.execute(select(Job.id).where(Job.state == JobState.QUEUED.value))).all()
    assert left == []
