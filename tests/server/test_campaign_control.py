"""Jobs and campaigns do what they say (issue 15, section 6), through real DM sessions on each
engine: a paused campaign holds its queued jobs, a job a device fails on is sent at most
``max_attempts`` times, a cancel stops the sending at any state (a later report is still
recorded), and a job by URL needs its package id."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from omadm.mo.scomo_codes import scomo_alert_data
from omadm.protocol.messages import Alert, Exec, Item, ItemCommand, Meta, Source
from omadm.protocol.session import Outcome
from omadm.protocol.testing import MemoryTree
from omadm.server.campaigns import (
    create_campaign,
    get_campaign,
    pause_campaign,
    resume_campaign,
    start_campaign,
)
from omadm.server.registry import RegistryError, add_device, cancel_job, check_job, create_job, find_device
from omadm.server.store.models import Job, JobKind, JobState

from .dmharness import DEVICE, Harness, make_harness
from .test_jobs_flow import APP, plain_device

pytestmark = pytest.mark.anyio

COMPONENT = "com.example.app"
ACTIVATE = f"{APP}/Operations/Activate"


class CrashingTree(MemoryTree):
    """A device whose client dies on an Exec (as one that crashes on a job): no Status, no
    more messages in that session."""

    def __init__(self) -> None:
        super().__init__()
        self.crashes = 0

    def execute(self, command: ItemCommand | Alert) -> list[Outcome]:
        if isinstance(command, Exec):
            self.crashes += 1
            raise RuntimeError("the client crashed")
        return super().execute(command)


@pytest.fixture
async def harness(db_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async for h in make_harness(db_url, tmp_path, sweep_interval=0):
        async with h.sessions() as db, db.begin():
            await add_device(db, DEVICE, username="dev", password="secret")
        yield h


def with_app(tree: MemoryTree) -> MemoryTree:
    tree.nodes.update(plain_device().nodes)
    return tree


async def session(h: Harness, tree: MemoryTree, number: int) -> None:
    """One DM session of the device; a crash of its client ends it where it happened."""
    with contextlib.suppress(RuntimeError):
        await h.run(h.client(tree=tree, session_id=str(number)))


async def job_row(h: Harness, job_id: int) -> Job:
    async with h.sessions() as db:
        found = await db.get(Job, job_id)
        assert found is not None
        return found


async def campaign_job(h: Harness, campaign_id: int) -> Job:
    async with h.sessions() as db:
        found = await db.scalar(select(Job).where(Job.campaign_id == campaign_id))
        assert found is not None
        return found


async def test_a_paused_campaign_holds_its_queued_jobs_until_it_resumes(harness: Harness) -> None:
    tree = plain_device()
    await session(harness, tree, 1)  # the server learns the inventory
    async with harness.sessions() as db, db.begin():
        campaign = await create_campaign(
            db,
            "activate",
            "activate",
            target={"devices": [DEVICE]},
            component_id=COMPONENT,
            device_timeout=60,
        )
        await start_campaign(db, campaign)
        cid = campaign.id
    queued = await campaign_job(harness, cid)
    assert queued.state == JobState.QUEUED.value
    async with harness.sessions() as db, db.begin():
        await pause_campaign(db, await get_campaign(db, cid, for_update=True))

    await session(harness, tree, 2)
    assert tree.execs == []  # queued before the pause, held by it
    assert (await job_row(harness, queued.id)).state == JobState.QUEUED.value

    async with harness.sessions() as db, db.begin():
        await resume_campaign(db, await get_campaign(db, cid, for_update=True))
    resumed = await job_row(harness, queued.id)
    assert resumed.deadline is not None and queued.deadline is not None
    assert resumed.deadline > queued.deadline  # the pause did not eat its time
    await session(harness, tree, 3)
    assert tree.execs == [(ACTIVATE, None)]
    assert (await job_row(harness, queued.id)).state == JobState.ACCEPTED.value


async def add_job(h: Harness, kind: JobKind, **params: str) -> int:
    async with h.sessions() as db, db.begin():
        device = await find_device(db, DEVICE)
        assert device is not None
        return (await create_job(db, device, kind, dict(params))).id


async def test_a_job_the_device_fails_on_is_sent_at_most_max_attempts_times(harness: Harness) -> None:
    tree = with_app(CrashingTree())
    await session(harness, tree, 1)
    job_id = await add_job(harness, JobKind.ACTIVATE, component_id=COMPONENT)
    for number in (2, 3, 4):
        await session(harness, tree, number)
    assert tree.crashes == 3
    sent = await job_row(harness, job_id)
    assert (sent.state, sent.attempts) == (JobState.SENT.value, 3)

    await session(harness, tree, 5)  # the default max_attempts is 3: not sent a fourth time
    assert tree.crashes == 3
    failed = await job_row(harness, job_id)
    assert failed.state == JobState.FAILED.value
    assert "sent 3 times (max_attempts 3)" in failed.detail


async def test_cancel_stops_a_sent_job_and_a_later_report_is_still_recorded(harness: Harness) -> None:
    tree = with_app(CrashingTree())
    await session(harness, tree, 1)
    crashing = await add_job(harness, JobKind.ACTIVATE, component_id=COMPONENT)
    await session(harness, tree, 2)
    assert (await job_row(harness, crashing)).state == JobState.SENT.value
    async with harness.sessions() as db, db.begin():
        job = await db.get(Job, crashing, with_for_update=True)
        assert job is not None
        await cancel_job(db, job)
        assert "while sent" in job.detail
    await session(harness, tree, 3)
    assert tree.crashes == 1  # no longer sent
    assert (await job_row(harness, crashing)).state == JobState.CANCELLED.value

    plain = plain_device()
    accepted = await add_job(harness, JobKind.DEACTIVATE, component_id=COMPONENT)
    await session(harness, plain, 4)
    job = await job_row(harness, accepted)
    assert job.state == JobState.ACCEPTED.value
    async with harness.sessions() as db, db.begin():
        row = await db.get(Job, accepted, with_for_update=True)
        assert row is not None
        await cancel_job(db, row)
    client = harness.client(tree=plain, session_id="5")
    report = Alert(
        "1",
        data="1226",
        correlator=job.correlator,
        items=(
            Item(
                source=Source(job.exec_uri),
                meta=Meta(type="urn:oma:at:scomo:1.0:OperationComplete", format="xml"),
                data=scomo_alert_data(1200, COMPONENT),
            ),
        ),
    )
    client.queue_alert(report)
    await harness.run(client)
    done = await job_row(harness, accepted)
    assert (done.state, done.result_code) == (JobState.CANCELLED.value, 1200)
    assert "reported after the cancel: 1200" in done.detail


def test_a_job_by_url_needs_a_package_id() -> None:
    with pytest.raises(RegistryError, match="install job by url needs pkg_id") as refused:
        check_job(JobKind.INSTALL, {"url": "https://pkgs.example.com/hello-2.0.omp"})
    assert refused.value.status == 422
    params = check_job(JobKind.INSTALL, {"url": "https://pkgs.example.com/hello-2.0.omp", "pkg_id": "hello"})
    assert params["pkg_id"] == "hello"
