"""The server's background sweeper: wake devices, end overdue jobs, forget idle DM sessions.

Every worker runs :func:`run_sweeper` (started by the app's lifespan); the one holding the
sweeper lease (:mod:`omadm.server.lease`: a PostgreSQL advisory lock, or a file lock on
SQLite) calls :func:`sweep` every ``config.sweep_interval`` seconds, the others stand by and
take over when it dies. One sweep takes four steps, each in its own short transaction, each
selecting the rows it changes with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL; SQLite has one
writer and ignores it), so workers sweeping at the same moment (while the lease changes
hands) share the work instead of doing it twice, and a row a DM message holds right now is
left for the next sweep:

1. **Deadlines.** A job past its ``deadline`` that is still QUEUED (the device never came
   to take it), SENT (its commands went out, no Status came back) or ACCEPTED (the device
   took it, no Generic Alert came back) becomes TIMED_OUT, result None, with a detail that
   says which. A report arriving later finds the job final and changes nothing.
2. **Idle DM sessions.** ``dm_sessions`` rows untouched for ``config.session_timeout``
   seconds are deleted; a device that comes back later starts a new session.
3. **Notifications.** Devices with queued jobs and a notification address get a Package #0
   (:func:`omadm.server.notify.notify_due`, rate-limited per device). This is how a newly
   created job reaches a device at once: job creation does no network I/O, the next sweep
   (within ``sweep_interval``) notifies.
4. **Campaigns** (run before the notifications, so a released wave's devices are woken in
   the same sweep). Every running campaign, and every other one with jobs still out, is
   advanced (:func:`omadm.server.campaigns.advance`), each in its own short transaction
   holding its row with ``SKIP LOCKED`` (a campaign an operator is changing right now waits
   for the next sweep).

A failing step is logged with its cause and does not stop the others or the next sweep.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from . import logs
from .campaigns import advance, due_campaigns
from .config import ServerConfig
from .lease import SweepLease
from .notify import notify_due
from .store.models import Campaign, DeviceEvent, DmSession, Job, JobState, utc_now

__all__ = ["SweepReport", "run_sweeper", "sweep"]

log = logging.getLogger("omadm.server.sweeper")

#: Rows one step changes per sweep at most; the rest wait for the next sweep.
BATCH = 1000

_TIMEOUT_DETAIL = {
    JobState.QUEUED: "timed out: the device did not connect to take the job before the deadline {deadline}",
    JobState.SENT: "timed out: the commands went out but no status arrived before the deadline {deadline}",
    JobState.ACCEPTED: "timed out: the device accepted the job but no report arrived before the deadline "
    "{deadline}",
}


@dataclass(frozen=True)
class SweepReport:
    """What one sweep did."""

    timed_out: int = 0  # jobs moved to TIMED_OUT
    sessions_deleted: int = 0  # idle DM sessions removed
    notified: int = 0  # Package #0 sent
    notify_failed: int = 0  # Package #0 that could not be sent (see the log and device events)
    failed_steps: tuple[str, ...] = ()  # steps that raised (logged with the cause)
    campaigns: int = 0  # campaigns advanced

    def __bool__(self) -> bool:
        counts = (self.timed_out, self.sessions_deleted, self.notified, self.notify_failed, self.campaigns)
        return any(counts) or bool(self.failed_steps)

    def line(self) -> str:
        text = (
            f"sweep: {self.timed_out} jobs timed out, {self.sessions_deleted} idle sessions deleted, "
            f"{self.notified} devices notified, {self.notify_failed} notifications failed, "
            f"{self.campaigns} campaigns advanced"
        )
        return text + (f" (failed: {', '.join(self.failed_steps)})" if self.failed_steps else "")


async def sweep(
    sessions: async_sessionmaker[AsyncSession], config: ServerConfig, now: datetime | None = None
) -> SweepReport:
    """One pass of the four steps (see the module docstring); never raises for a step's failure."""
    now = now or utc_now()
    failed: list[str] = []
    timed_out = sessions_deleted = notified = notify_failed = campaigns = 0
    try:
        timed_out = await time_out_jobs(sessions, now)
    except Exception:
        log.exception("sweep: timing out jobs failed")
        failed.append("deadlines")
    try:
        idle_since = now - timedelta(seconds=config.session_timeout)
        sessions_deleted = await delete_idle_sessions(sessions, idle_since)
    except Exception:
        log.exception("sweep: deleting idle DM sessions failed")
        failed.append("sessions")
    try:
        campaigns, campaigns_failed = await advance_campaigns(sessions, now)
        if campaigns_failed:
            failed.append("campaigns")
    except Exception:
        log.exception("sweep: advancing campaigns failed")
        failed.append("campaigns")
    try:
        results = await notify_due(sessions, config, now)
        notified = sum(1 for r in results if r.sent)
        notify_failed = len(results) - notified
    except Exception:
        log.exception("sweep: notifying devices failed")
        failed.append("notify")
    return SweepReport(timed_out, sessions_deleted, notified, notify_failed, tuple(failed), campaigns)


async def time_out_jobs(sessions: async_sessionmaker[AsyncSession], now: datetime) -> int:
    """Move jobs past their deadline (QUEUED, SENT or ACCEPTED) to TIMED_OUT; returns how many."""
    async with sessions() as db, db.begin():
        query = (
            select(Job)
            .where(
                Job.state.in_([s.value for s in _TIMEOUT_DETAIL]),
                Job.deadline.is_not(None),
                Job.deadline <= now,
            )
            .order_by(Job.id)
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        )
        jobs = list((await db.execute(query)).scalars())
        for job in jobs:
            was = JobState(job.state)
            deadline = job.deadline.isoformat(timespec="seconds") if job.deadline else "?"
            job.state = JobState.TIMED_OUT.value
            job.result_code = None
            job.detail = _TIMEOUT_DETAIL[was].format(deadline=deadline)
            job.finished_at = job.updated = now
            db.add(
                DeviceEvent(
                    device_pk=job.device_pk,
                    kind="job",
                    at=now,
                    detail={"job": job.id, "state": job.state, "result": None, "detail": job.detail},
                )
            )
            current = logs.JOB.set(job.id)  # the line's job field (logs.py); the loop's own task
            log.info("job %s timed out (was %s): %s", job.id, was.value, job.detail)
            logs.JOB.reset(current)
    return len(jobs)


async def delete_idle_sessions(sessions: async_sessionmaker[AsyncSession], before: datetime) -> int:
    """Delete DM sessions last updated before ``before``; returns how many."""
    async with sessions() as db, db.begin():
        query = (
            select(DmSession.token)
            .where(DmSession.updated < before)
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        )
        tokens = list((await db.execute(query)).scalars())
        if tokens:
            await db.execute(delete(DmSession).where(DmSession.token.in_(tokens)))
    if tokens:
        log.info("deleted %d idle DM sessions", len(tokens))
    return len(tokens)


async def advance_campaigns(sessions: async_sessionmaker[AsyncSession], now: datetime) -> tuple[int, int]:
    """Advance every due campaign, one transaction each; returns (advanced, failed)."""
    async with sessions() as db, db.begin():
        ids = list(
            (
                await db.scalars(
                    select(Campaign.id).where(due_campaigns()).order_by(Campaign.id).limit(BATCH)
                )
            ).all()
        )
    advanced = failed = 0
    for campaign_id in ids:
        try:
            async with sessions() as db, db.begin():
                query = (
                    select(Campaign)
                    .where(Campaign.id == campaign_id, due_campaigns())
                    .with_for_update(skip_locked=True)
                )
                campaign = (await db.scalars(query)).first()
                if campaign is None:  # another worker holds it, or it changed meanwhile
                    continue
                await advance(db, campaign, now)
            advanced += 1
        except Exception:
            log.exception("sweep: advancing campaign %s failed", campaign_id)
            failed += 1
    return advanced, failed


async def run_sweeper(
    sessions: async_sessionmaker[AsyncSession], config: ServerConfig, lease: SweepLease | None = None
) -> None:
    """Sweep now and then every ``config.sweep_interval`` seconds while holding ``lease``, until
    cancelled; the lease is released on the way out.

    Without a lease (tests, one process) every tick sweeps. With one, a tick first takes or
    confirms the lease (:mod:`omadm.server.lease`): a worker that does not hold it only
    checks again at the next tick, so a worker takes over within one ``sweep_interval`` of
    the holder's death.
    """
    try:
        while True:
            if lease is None or await lease.hold():
                report = await sweep(sessions, config)
                if report:
                    log.log(logging.WARNING if report.failed_steps else logging.DEBUG, "%s", report.line())
            await asyncio.sleep(config.sweep_interval)
    finally:
        if lease is not None:
            await asyncio.shield(lease.release())
