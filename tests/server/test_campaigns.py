"""Campaigns over the store, on each engine: targets, waves, thresholds, retries, window, the
one-campaign-per-component rule, and the sweeper step. Job outcomes are written into the job
rows directly (the DM side is tested elsewhere); the clock is passed in."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from omadm.server.campaigns import (
    advance,
    cancel_campaign,
    counters,
    create_campaign,
    left_out_note,
    pause_campaign,
    resume_campaign,
    select_targets,
    start_campaign,
)
from omadm.server.config import ServerConfig
from omadm.server.registry import RegistryError, add_device
from omadm.server.store.models import (
    Artifact,
    Campaign,
    CampaignDevice,
    Device,
    InventoryEntry,
    Job,
    JobState,
    utc_now,
)
from omadm.server.sweeper import sweep

pytestmark = pytest.mark.anyio


async def resolve_targets(db: AsyncSession, target: dict[str, Any], *, authority_pk: int = 1) -> list[Device]:
    """The devices a target selects, in registration order (the query, run)."""
    ids = select_targets(db, target, authority_pk=authority_pk)
    return list((await db.scalars(select(Device).where(Device.id.in_(ids)).order_by(Device.id))).all())


Sessions = async_sessionmaker[AsyncSession]
COMPONENT = "com.example.hello"
NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


async def make_device(
    db: AsyncSession,
    name: str,
    *,
    tags: dict[str, Any] | None = None,
    devinfo: dict[str, Any] | None = None,
    components: dict[str, str] | None = None,
) -> Device:
    device = await add_device(db, name, username=name, password="pw", tags=tags)
    device.devinfo = devinfo or {}
    for index, (ident, version) in enumerate((components or {}).items()):
        db.add(
            InventoryEntry(
                device_pk=device.id, kind="deployed", node=f"c{index}", ident=ident, version=version
            )
        )
    await db.flush()
    return device


async def make_artifact(db: AsyncSession) -> Artifact:
    artifact = Artifact(
        filename="hello-2.0.omp",
        storage_key="k-hello-2.0",
        size=10,
        sha256="0" * 64,
        package_id="com.example.hello-package",
        version="2.0",
        manifest={"components": [{"id": COMPONENT, "version": "2.0"}]},
    )
    db.add(artifact)
    await db.flush()
    return artifact


async def fleet(sessions: Sessions, count: int, **kw: Any) -> int:
    """``count`` devices tagged ring=beta with the component 1.0, and an artifact; its id."""
    async with sessions() as db, db.begin():
        for i in range(count):
            await make_device(db, f"DEV:{i:02}", tags={"ring": "beta"}, components={COMPONENT: "1.0"}, **kw)
        return (await make_artifact(db)).id


async def new_campaign(sessions: Sessions, artifact_id: int | None, **kw: Any) -> int:
    kw.setdefault("target", {"tags": {"ring": "beta"}})
    async with sessions() as db, db.begin():
        kind = kw.pop("kind", "install")
        return (await create_campaign(db, kw.pop("name", "roll"), kind, artifact_id=artifact_id, **kw)).id


async def act(sessions: Sessions, campaign_id: int, action: Any, now: datetime = NOON) -> Campaign:
    async with sessions() as db, db.begin():
        campaign = await db.get(Campaign, campaign_id, with_for_update=True)
        assert campaign is not None
        await action(db, campaign, now)
        return campaign


async def step(sessions: Sessions, campaign_id: int, now: datetime = NOON) -> Campaign:
    return await act(sessions, campaign_id, advance, now)


async def rows(sessions: Sessions, campaign_id: int) -> list[tuple[str, int, str, int, JobState | None]]:
    """(device, wave, state, attempts, job state) per device, in order."""
    async with sessions() as db:
        result = await db.execute(
            select(Device.device_id, CampaignDevice, Job.state)
            .join(Device, Device.id == CampaignDevice.device_pk)
            .outerjoin(Job, Job.id == CampaignDevice.job_id)
            .where(CampaignDevice.campaign_id == campaign_id)
            .order_by(Device.device_id)
        )
        return [
            (name, cd.wave, cd.state, cd.attempts, JobState(js) if js else None) for name, cd, js in result
        ]


async def settle(sessions: Sessions, outcomes: dict[str, tuple[JobState, int | None]]) -> None:
    """Give the devices' latest jobs an outcome, as the DM endpoint or the sweeper would."""
    async with sessions() as db, db.begin():
        for name, (state, code) in outcomes.items():
            job = await db.scalar(
                select(Job)
                .join(Device, Device.id == Job.device_pk)
                .where(Device.device_id == name)
                .order_by(Job.id.desc())
                .limit(1)
            )
            assert job is not None, name
            job.state, job.result_code, job.finished_at = state.value, code, utc_now()


def ok(*names: str) -> dict[str, tuple[JobState, int | None]]:
    return {n: (JobState.SUCCEEDED, 1200) for n in names}


def failed(*names: str, code: int | None = 1405) -> dict[str, tuple[JobState, int | None]]:
    return {n: (JobState.FAILED, code) for n in names}


def names(*indexes: int) -> list[str]:
    return [f"DEV:{i:02}" for i in indexes]


def states(table: Sequence[tuple[str, int, str, int, JobState | None]]) -> dict[str, str]:
    return {name: state for name, _, state, _, _ in table}


async def test_waves_are_cut_and_released_when_the_success_threshold_is_reached(sessions: Sessions) -> None:
    artifact = await fleet(sessions, 10)
    async with sessions() as db, db.begin():
        await make_device(db, "OTHER:1", tags={"ring": "prod"}, components={COMPONENT: "1.0"})
    cid = await new_campaign(
        sessions, artifact, waves=[2, "50%", 3], success_threshold=0.5, error_threshold=0.5
    )
    table = await rows(sessions, cid)
    assert [w for _, w, _, _, _ in table] == [0] * 2 + [1] * 5 + [2] * 3  # OTHER:1 is not targeted
    assert set(states(table).values()) == {"pending"}
    async with sessions() as db:
        campaign = await db.get(Campaign, cid)
        assert campaign is not None and campaign.component_id == COMPONENT and campaign.state == "draft"

    campaign = await act(sessions, cid, start_campaign)
    assert campaign.state == "running" and campaign.started == NOON
    table = await rows(sessions, cid)
    assert [(s, a, j) for _, w, s, a, j in table if w == 0] == [("running", 1, JobState.QUEUED)] * 2
    assert all(s == "pending" and j is None for _, w, s, _, j in table if w > 0)
    async with sessions() as db:
        job = await db.scalar(select(Job).where(Job.campaign_id == cid).limit(1))
        assert job is not None and job.kind == "install" and job.params["artifact_id"] == artifact

    assert (await step(sessions, cid)).current_wave == 0  # nothing reported: wait
    await settle(sessions, ok("DEV:00"))  # 1 of 2 = 0.5: enough, the next wave goes
    campaign = await step(sessions, cid)
    assert campaign.current_wave == 1 and campaign.state == "running"
    table = await rows(sessions, cid)
    assert [s for _, w, s, _, _ in table if w == 1] == ["running"] * 5
    assert states(table)["DEV:01"] == "running"  # its straggler goes on

    await settle(sessions, {**ok(*names(1, 2, 3, 4)), **failed("DEV:05")})
    campaign = await step(sessions, cid)
    assert campaign.current_wave == 2
    await settle(sessions, ok(*names(6, 7, 8)))
    campaign = await step(sessions, cid)
    assert campaign.current_wave == 2 and campaign.state == "running"  # DEV:09 still out
    await settle(sessions, ok("DEV:09"))
    campaign = await step(sessions, cid)
    assert campaign.state == "finished" and campaign.finished == NOON
    assert campaign.detail.startswith("finished: wave 3: 3/3 succeeded")
    async with sessions() as db:
        campaign = await db.get(Campaign, cid)
        assert campaign is not None
        waves = await counters(db, campaign)
    assert [(w.wave, w.size, w.states["succeeded"], w.states["failed"]) for w in waves] == [
        (0, 2, 2, 0),
        (1, 5, 4, 1),
        (2, 3, 3, 0),
    ]


async def test_a_wave_that_ends_below_its_success_threshold_pauses_and_resume_goes_on(
    sessions: Sessions,
) -> None:
    artifact = await fleet(sessions, 4)
    cid = await new_campaign(sessions, artifact, waves=[2, 2], success_threshold=1.0, error_threshold=0.5)
    await act(sessions, cid, start_campaign)
    await settle(sessions, {**ok("DEV:00"), **failed("DEV:01")})
    campaign = await step(sessions, cid)
    assert campaign.state == "paused" and campaign.current_wave == 0
    assert "below the success threshold" in campaign.detail
    assert (await step(sessions, cid)).state == "paused"  # the sweeper does not move it
    assert all(s == "pending" for _, w, s, _, _ in await rows(sessions, cid) if w == 1)

    campaign = await act(sessions, cid, resume_campaign)
    assert campaign.state == "running" and campaign.current_wave == 1
    assert all(s == "running" for _, w, s, _, _ in await rows(sessions, cid) if w == 1)

    with pytest.raises(RegistryError, match="is running: it cannot resume"):
        await act(sessions, cid, resume_campaign)
    campaign = await act(sessions, cid, pause_campaign)
    assert campaign.state == "paused" and campaign.detail == "paused by an operator"
    await settle(sessions, ok("DEV:02", "DEV:03"))
    await step(sessions, cid)  # outcomes are read while paused
    assert states(await rows(sessions, cid))["DEV:02"] == "succeeded"
    assert (await act(sessions, cid, resume_campaign)).state == "finished"


async def test_crossing_the_error_threshold_stops_and_cancels_what_was_not_sent(sessions: Sessions) -> None:
    artifact = await fleet(sessions, 8)
    cid = await new_campaign(sessions, artifact, waves=[5, 3], success_threshold=0.6, error_threshold=0.2)
    await act(sessions, cid, start_campaign)
    await settle(sessions, {"DEV:04": (JobState.ACCEPTED, None)})  # the device works on it
    await settle(sessions, {**ok("DEV:00"), **failed("DEV:01", "DEV:02")})  # 2/5 = 0.4 > 0.2
    campaign = await step(sessions, cid)
    assert campaign.state == "stopped" and "above the error threshold 0.2" in campaign.detail
    table = await rows(sessions, cid)
    assert [(n, s, j) for n, _, s, _, j in table] == [
        ("DEV:00", "succeeded", JobState.SUCCEEDED),
        ("DEV:01", "failed", JobState.FAILED),
        ("DEV:02", "failed", JobState.FAILED),
        ("DEV:03", "cancelled", JobState.CANCELLED),  # queued: called back
        ("DEV:04", "running", JobState.ACCEPTED),  # the device has it: it finishes
        ("DEV:05", "cancelled", None),
        ("DEV:06", "cancelled", None),
        ("DEV:07", "cancelled", None),
    ]
    await settle(sessions, ok("DEV:04"))
    report = await sweep(sessions, ServerConfig(sweep_interval=0), NOON)  # the straggler is read
    assert report.campaigns == 1 and not report.failed_steps
    assert states(await rows(sessions, cid))["DEV:04"] == "succeeded"
    assert (await sweep(sessions, ServerConfig(sweep_interval=0), NOON)).campaigns == 0
    with pytest.raises(RegistryError, match="stopped: it cannot start"):
        await act(sessions, cid, start_campaign)


async def test_cancel_leaves_installed_devices_and_cancels_queued_jobs(sessions: Sessions) -> None:
    artifact = await fleet(sessions, 4)
    cid = await new_campaign(sessions, artifact, waves=[3, 1])
    await act(sessions, cid, start_campaign)
    await settle(sessions, {**ok("DEV:00"), "DEV:01": (JobState.SENT, None)})
    await step(sessions, cid)
    campaign = await act(sessions, cid, cancel_campaign)
    assert campaign.state == "cancelled" and campaign.finished == NOON
    assert [(s, j) for _, _, s, _, j in await rows(sessions, cid)] == [
        ("succeeded", JobState.SUCCEEDED),
        ("running", JobState.SENT),
        ("cancelled", JobState.CANCELLED),
        ("cancelled", None),
    ]
    with pytest.raises(RegistryError, match="is cancelled: it cannot be cancelled"):
        await act(sessions, cid, cancel_campaign)


async def test_failures_worth_it_are_retried_up_to_max_retries(sessions: Sessions) -> None:
    artifact = await fleet(sessions, 3)
    cid = await new_campaign(sessions, artifact, max_retries=1, success_threshold=0.0, error_threshold=1.0)
    await act(sessions, cid, start_campaign)
    # 1402 (download failed) and no report (timed out) are retried; 1405 (install failed) is not.
    await settle(sessions, {**failed("DEV:00", code=1402), "DEV:01": (JobState.TIMED_OUT, None)})
    await settle(sessions, failed("DEV:02", code=1405))
    await step(sessions, cid)
    table = await rows(sessions, cid)
    assert [(s, a, j) for _, _, s, a, j in table] == [
        ("running", 2, JobState.QUEUED),
        ("running", 2, JobState.QUEUED),
        ("failed", 1, JobState.FAILED),
    ]
    async with sessions() as db:
        assert len((await db.scalars(select(Job).where(Job.campaign_id == cid))).all()) == 5
    await settle(sessions, {**failed("DEV:00", code=1402), **ok("DEV:01")})
    campaign = await step(sessions, cid)
    assert [(s, a) for _, _, s, a, _ in await rows(sessions, cid)] == [
        ("failed", 2),  # retries used up
        ("succeeded", 2),
        ("failed", 1),
    ]
    assert campaign.state == "finished"


async def test_jobs_go_out_only_inside_the_maintenance_window(sessions: Sessions) -> None:
    artifact = await fleet(sessions, 2)
    cid = await new_campaign(sessions, artifact, window="22:00-04:00", device_timeout=600.0)
    campaign = await act(sessions, cid, start_campaign)  # noon: outside
    assert campaign.state == "running"
    assert [j for *_, j in await rows(sessions, cid)] == [None, None]
    await step(sessions, cid, NOON.replace(hour=21, minute=59))
    assert [j for *_, j in await rows(sessions, cid)] == [None, None]
    await step(sessions, cid, NOON.replace(hour=23))
    assert [j for *_, j in await rows(sessions, cid)] == [JobState.QUEUED] * 2
    async with sessions() as db:
        job = await db.scalar(select(Job).where(Job.campaign_id == cid).limit(1))
        assert job is not None and job.deadline is not None  # the per-device timeout


async def test_a_device_is_in_one_active_campaign_per_component(sessions: Sessions) -> None:
    artifact = await fleet(sessions, 3)
    async with sessions() as db, db.begin():
        await make_device(db, "DEV:99", tags={"ring": "beta"})  # no component: install only
    first = await new_campaign(sessions, artifact, target={"devices": names(0, 1)})
    draft = await new_campaign(sessions, artifact, name="draft", target={"devices": names(1)})
    await act(sessions, first, start_campaign)

    with pytest.raises(RegistryError, match=r"2 devices are already .*DEV:00 \(campaign 1\), DEV:01") as info:
        await new_campaign(sessions, artifact)
    assert info.value.status == 409
    skipping = await new_campaign(sessions, artifact, skip_busy=True)
    async with sessions() as db:
        campaign = await db.get(Campaign, skipping)
        assert campaign is not None and campaign.skipped == 2
    assert [n for n, *_ in await rows(sessions, skipping)] == ["DEV:02", "DEV:99"]
    with pytest.raises(RegistryError, match="DEV:01 \\(campaign 1\\)") as info:
        await act(sessions, draft, start_campaign)
    assert info.value.status == 409
    # Another component is another matter.
    other = await new_campaign(sessions, artifact, component_id="com.example.other")
    assert len(await rows(sessions, other)) == 4
    await act(sessions, first, cancel_campaign)  # no longer active: the devices are free
    await act(sessions, draft, start_campaign)


async def test_target_filters_tags_devinfo_devices_and_inventory_versions(sessions: Sessions) -> None:
    async with sessions() as db, db.begin():
        await make_device(
            db,
            "A",
            tags={"ring": "beta", "site": "lyon"},
            devinfo={"Mod": "X1"},
            components={COMPONENT: "1.9"},
        )
        await make_device(
            db, "B", tags={"ring": "beta"}, devinfo={"Mod": "X2"}, components={COMPONENT: "2.0"}
        )
        await make_device(
            db, "C", tags={"ring": "prod"}, devinfo={"Mod": "X1"}, components={COMPONENT: "1.0rc1"}
        )
        await make_device(db, "D", tags={"ring": "beta"}, components={COMPONENT: "not-a-version"})
        await make_device(db, "E", tags={"ring": "beta"}, devinfo={"Mod": "X1"})
        artifact = (await make_artifact(db)).id

        async def ids(target: dict[str, Any]) -> list[str]:
            return [d.device_id for d in await resolve_targets(db, target)]

        assert await ids({}) == ["A", "B", "C", "D", "E"]
        assert await ids({"tags": {"ring": "beta"}}) == ["A", "B", "D", "E"]
        assert await ids({"tags": {"ring": "beta", "site": "lyon"}}) == ["A"]
        assert await ids({"devinfo": {"Mod": "X1"}}) == ["A", "C", "E"]
        assert await ids({"has_component": COMPONENT}) == ["A", "B", "C", "D"]
        assert await ids({"has_component": COMPONENT, "version_below": "2.0"}) == ["A", "C"]
        assert await ids({"has_component": COMPONENT, "version_below": "1.0"}) == ["C"]  # 1.0rc1 < 1.0
        assert await ids({"devices": ["E", "B", "Z"], "tags": {"ring": "beta"}}) == ["B", "E"]
        for bad, message in [
            ({"colour": "red"}, "unknown target filter keys"),
            ({"version_below": "2.0"}, "needs has_component"),
            ({"has_component": COMPONENT, "version_below": "two"}, "not a version"),
            ({"tags": ["ring"]}, "mapping"),
            ({"devices": "A"}, "list of DevIds"),
        ]:
            with pytest.raises(RegistryError, match=message):
                await ids(bad)

        # Kinds on a deployed component target only devices that have it.
        with pytest.raises(RegistryError, match="no target, so it would act on every device"):
            await create_campaign(db, "off", "deactivate", component_id=COMPONENT, target={})
        campaign = await create_campaign(
            db, "off", "deactivate", component_id=COMPONENT, target={}, all_devices=True
        )
        assert campaign.target == {"has_component": COMPONENT}
        assert (campaign.success_threshold, campaign.error_threshold) == (1.0, 0.5)  # pause, not stop
        older = await create_campaign(
            db,
            "up",
            "update",
            artifact_id=artifact,
            target={"has_component": COMPONENT, "version_below": "2.0"},
        )
        assert older.component_id == COMPONENT
        assert len((await counters(db, older))[0].states) == 5 and (await counters(db, older))[0].size == 2
        for kw, message in [
            ({"kind": "install", "target": {}}, "needs an artifact_id"),
            ({"kind": "remove", "target": {}}, "needs component_id"),
            ({"kind": "download", "target": {}}, "kind is one of"),
            ({"kind": "install", "artifact_id": 999, "target": {}}, "no artifact 999"),
            (
                {"kind": "install", "artifact_id": artifact, "target": {"tags": {"ring": "none"}}},
                "selects no",
            ),
            ({"kind": "install", "artifact_id": artifact, "target": {}, "waves": [0]}, "empty"),
            ({"kind": "install", "artifact_id": artifact, "target": {}, "window": "25:00-01:00"}, "exist"),
            ({"kind": "install", "artifact_id": artifact, "target": {}, "success_threshold": 2}, "fraction"),
        ]:
            with pytest.raises(RegistryError, match=message):
                await create_campaign(db, "bad", **kw)


async def test_a_device_whose_component_is_gone_fails_without_stopping_the_others(sessions: Sessions) -> None:
    await fleet(sessions, 2)
    cid = await new_campaign(
        sessions,
        None,
        kind="remove",
        component_id=COMPONENT,
        target={},
        all_devices=True,
        error_threshold=1.0,
        success_threshold=0.5,
    )
    async with sessions() as db, db.begin():
        gone = await db.scalar(select(Device).where(Device.device_id == "DEV:01"))
        assert gone is not None
        for entry in (
            await db.scalars(select(InventoryEntry).where(InventoryEntry.device_pk == gone.id))
        ).all():
            await db.delete(entry)
    await act(sessions, cid, start_campaign, NOON - timedelta(minutes=1))
    table = await rows(sessions, cid)
    assert [(s, j) for _, _, s, _, j in table] == [("running", JobState.QUEUED), ("failed", None)]
    async with sessions() as db:
        cd = await db.scalar(select(CampaignDevice).where(CampaignDevice.state == "failed"))
        assert cd is not None and "no deployed component" in cd.detail


async def test_one_sweep_times_a_job_out_and_retries_it(sessions: Sessions) -> None:
    artifact = await fleet(sessions, 2)
    cid = await new_campaign(
        sessions, artifact, waves=[1, 1], device_timeout=60.0, max_retries=1, success_threshold=0.5
    )
    await act(sessions, cid, start_campaign, utc_now())
    report = await sweep(sessions, ServerConfig(sweep_interval=0), utc_now() + timedelta(seconds=61))
    assert report.timed_out == 1 and report.campaigns == 1 and not report.failed_steps
    assert "1 campaigns advanced" in report.line()
    assert [(s, a, j) for _, _, s, a, j in await rows(sessions, cid)] == [
        ("running", 2, JobState.QUEUED),
        ("pending", 0, None),
    ]


async def test_a_campaign_targets_and_packages_only_its_authoritys(sessions: Sessions) -> None:
    from omadm.server.registry import add_authority  # noqa: PLC0415

    async with sessions() as db, db.begin():
        acme = await add_authority(db, "acme", "acme-dm")
        await make_device(db, "DEV:1", tags={"ring": "beta"}, components={COMPONENT: "1.0"})  # default's
        twin = await add_device(db, "DEV:1", username="acme", password="pw", authority_pk=acme.id)
        other = await add_device(db, "DEV:2", username="acme", password="pw", authority_pk=acme.id)
        default_artifact = (await make_artifact(db)).id
        acme_artifact = Artifact(
            authority_pk=acme.id,
            filename="hello-2.0.omp",
            storage_key="k-hello-2.0",  # the same bytes: the same blob, another row
            size=10,
            sha256="0" * 64,
            package_id="com.example.hello-package",
            version="2.0",
            manifest={"components": [{"id": COMPONENT, "version": "2.0"}]},
        )
        db.add(acme_artifact)
        await db.flush()
        assert [d.id for d in await resolve_targets(db, {}, authority_pk=acme.id)] == [twin.id, other.id]
        assert [d.device_id for d in await resolve_targets(db, {})] == ["DEV:1"]
        with pytest.raises(RegistryError, match=f"no artifact {default_artifact}"):
            await create_campaign(
                db, "x", "install", artifact_id=default_artifact, target={}, authority_pk=acme.id
            )
        campaign = await create_campaign(
            db,
            "x",
            "install",
            artifact_id=acme_artifact.id,
            target={"devices": ["DEV:1"]},
            authority_pk=acme.id,
        )
        assert campaign.authority_pk == acme.id
        members = (
            await db.scalars(
                select(CampaignDevice.device_pk).where(CampaignDevice.campaign_id == campaign.id)
            )
        ).all()
        assert members == [twin.id]
        await start_campaign(db, campaign, NOON)
        jobs = (await db.scalars(select(Job.device_pk).where(Job.campaign_id == campaign.id))).all()
        assert jobs == [twin.id]


async def test_a_staged_install_campaign_installs_inactive_then_an_activate_campaign_follows(
    sessions: Sessions,
) -> None:
    artifact = await fleet(sessions, 2)
    staged = await new_campaign(sessions, artifact, kind="install-inactive", waves=["100%"])
    await act(sessions, staged, start_campaign)
    async with sessions() as db:
        jobs = list((await db.scalars(select(Job).where(Job.campaign_id == staged))).all())
    assert [j.kind for j in jobs] == ["install-inactive"] * 2
    assert all(j.params["artifact_id"] == artifact for j in jobs)
    # The component is busy until the staged campaign ends: an activate waits for it.
    with pytest.raises(RegistryError, match="campaign"):
        await new_campaign(sessions, None, kind="activate", component_id=COMPONENT)


async def test_devices_left_out_for_want_of_the_component_are_said(sessions: Sessions) -> None:
    """An update/remove/(de)activate campaign reaches only devices whose stored inventory has
    the component: one the server has not read yet is named, not silently dropped."""
    async with sessions() as db, db.begin():
        await make_device(db, "A", tags={"ring": "beta"}, components={COMPONENT: "1.0"})
        await make_device(db, "B", tags={"ring": "beta"}, components={COMPONENT: "1.0"})
        stale = await make_device(db, "C", tags={"ring": "beta"})  # inventory not read yet
        await make_device(db, "D", tags={"ring": "prod"})
        campaign = await create_campaign(
            db, "off", "deactivate", component_id=COMPONENT, target={"tags": {"ring": "beta"}}
        )
        assert campaign.detail == (
            f"1 device the rest of the target selects is not in it: no {COMPONENT} in their last "
            "inventory (a refresh-inventory job reads it again)"
        )
        db.add(InventoryEntry(device_pk=stale.id, kind="deployed", node="c0", ident=COMPONENT, version="1.0"))
        await db.flush()
        assert "1 device" in await left_out_note(db, campaign)  # C has it now, but is not in it
        everyone = await create_campaign(
            db, "on", "activate", component_id=COMPONENT, target={}, all_devices=True, skip_busy=True
        )
        assert everyone.detail.startswith("1 device the rest")  # A, B and C are in it; D has none
