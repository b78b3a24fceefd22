"""An audit that answers "who did what to which device" (issue 15, section 7): the decisions the
server takes by itself are audited as ``system``, jobs a campaign made show in each device's
history with the campaign, and a cancel keeps the reason of the pause before it."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from omadm.server.api.devices import _collapse_sessions
from omadm.server.campaigns import SYSTEM_ACTOR, cancel_campaign, start_campaign
from omadm.server.registry import event_text
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


def test_history_events_read_as_sentences_and_routine_sessions_collapse() -> None:
    assert event_text("job-created", {"job": 7, "kind": "install", "campaign": 3}) == (
        "job 7 (install) queued by campaign 3"
    )
    assert event_text("job", {"job": 7, "state": "failed", "result": 1405, "detail": "hook exit 2"}) == (
        "job 7 failed, result 1405: hook exit 2"
    )
    assert (
        event_text("inventory", {"deployed": {"b": "2.0", "a": "1.0"}}) == "inventory changed: a 1.0, b 2.0"
    )
    assert event_text("mystery", {"x": 1}) == "mystery: x=1"  # nothing hidden

    def event(pk: int, kind: str, minute: int) -> DeviceEvent:
        return DeviceEvent(id=pk, device_pk=1, kind=kind, detail={}, at=NOON.replace(minute=minute))

    newest_first = [
        event(5, "session", 5),
        event(4, "session", 4),
        event(3, "job", 3),
        event(2, "session", 2),
    ]
    items = _collapse_sessions(newest_first)
    assert [(i.id, i.kind, i.count) for i in items] == [(5, "sessions", 2), (3, "job", 1), (2, "session", 1)]
    assert items[0].detail["first"] == NOON.replace(minute=4).isoformat()
