"""An audit that answers "who did what to which device" (issue 15, section 7): the decisions the
server takes by itself are audited as ``system``, jobs a campaign made show in each device's
history with the campaign, and a cancel keeps the reason of the pause before it."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from omadm.server.campaigns import SYSTEM_ACTOR, cancel_campaign, start_campaign
from omadm.server.store.models import AuditEntry, DeviceEvent, JobState

from .test_campaigns import NOON, Sessions, act, failed, fleet, new_campaign, ok, settle, step

pytestmark = pytest.mark.anyio


async def system_entries(sessions: Sessions) -> list[tuple[str, str, dict[str, object]]]:
    async with sessions() as db:
        rows = await db.scalars(
            select(AuditEntry).where(AuditEntry.actor == SYSTEM_ACTOR).order_by(AuditEntry.id)
        )
        return [(row.action, row.target, row.detail) for row in rows]


async def test_waves_released_retries_time_outs_and_the_finish_are_audited_as_system(
    sessions: Sessions,
) -> None:
    artifact = await fleet(sessions, 4)
    cid = await new_campaign(
        sessions, artifact, waves=[2, 2], max_retries=1, success_threshold=0.5, error_threshold=1.0
    )
    await act(sessions, cid, start_campaign)
    await settle(sessions, {**ok("DEV:00"), **failed("DEV:01", code=1402)})  # 1402: worth a retry
    await step(sessions, cid)
    entries = await system_entries(sessions)
    assert [(a, t) for a, t, _ in entries] == [
        ("campaign.retried", f"campaign {cid}"),
        ("campaign.wave-released", f"campaign {cid}"),
    ]
    assert entries[0][2]["devices"] == 1 and entries[1][2]["wave"] == 2
    await settle(sessions, {**ok("DEV:01", "DEV:02"), "DEV:03": (JobState.TIMED_OUT, None)})
    await step(sessions, cid)  # a time-out is worth a retry too
    await settle(sessions, {"DEV:03": (JobState.TIMED_OUT, None)})
    await step(sessions, cid)
    actions = [a for a, _, _ in await system_entries(sessions)]
    assert actions[2:] == ["campaign.retried", "campaign.timed-out", "campaign.finished"]
    finished = (await system_entries(sessions))[-1][2]
    assert str(finished["reason"]).startswith("finished: wave 2")


async def test_a_threshold_pause_is_audited_and_a_cancel_keeps_its_reason(sessions: Sessions) -> None:
    artifact = await fleet(sessions, 4)
    cid = await new_campaign(sessions, artifact, waves=[2, 2], success_threshold=1.0, error_threshold=0.9)
    await act(sessions, cid, start_campaign)
    await settle(sessions, {**ok("DEV:00"), **failed("DEV:01")})
    paused = await step(sessions, cid)
    assert paused.state == "paused"
    ((action, _, detail),) = await system_entries(sessions)
    assert action == "campaign.paused" and "below the success threshold" in str(detail["reason"])
    cancelled = await act(sessions, cid, cancel_campaign, NOON)
    assert cancelled.detail.startswith("cancelled by an operator (before that: paused: wave 1: 1/2 succeeded")


async def test_jobs_a_campaign_queues_name_it_in_the_devices_history(sessions: Sessions) -> None:
    artifact = await fleet(sessions, 2)
    cid = await new_campaign(sessions, artifact)
    await act(sessions, cid, start_campaign)
    async with sessions() as db:
        events = list(await db.scalars(select(DeviceEvent).where(DeviceEvent.kind == "job-created")))
    assert len(events) == 2 and all(e.detail["campaign"] == cid for e in events)
