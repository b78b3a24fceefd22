"""``/api/v1/campaigns``: one SCOMO operation on a target set of devices, in waves.

Creation resolves the target set at once and stores a ``draft`` (nothing is sent); ``start``
sends the first wave's jobs; the server's sweeper then reads their outcomes and releases the
next waves, pauses or stops the campaign by its thresholds (:mod:`omadm.server.campaigns`).
``pause``, ``resume`` and ``cancel`` are the operator's; cancelling calls back the jobs not
yet sent and leaves devices that installed as they are. Waves are numbered from 1 here.
A campaign is the token's authority's: it targets that authority's devices only, and another
authority's campaign is a 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..campaigns import (
    cancel_campaign,
    counters,
    create_campaign,
    get_campaign,
    pause_campaign,
    preview_campaign,
    resume_campaign,
    start_campaign,
)
from ..store.models import Campaign, CampaignDevice, CampaignDeviceState, CampaignState, Device, Job
from .auth import Db, Operator, Viewer, audit
from .schemas import (
    MAX_ID,
    CampaignCreate,
    CampaignDetail,
    CampaignOut,
    Page,
    Paging,
    RowId,
    WaveCountersOut,
)

__all__ = ["router"]

router = APIRouter(prefix="/campaigns", tags=["campaigns"])

_ACTIONS = {
    "start": start_campaign,
    "pause": pause_campaign,
    "resume": resume_campaign,
    "cancel": cancel_campaign,
}


def _zero() -> dict[str, int]:
    return {s.value: 0 for s in CampaignDeviceState}


async def _totals(db: AsyncSession, ids: list[int]) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {i: _zero() for i in ids}
    if ids:
        rows = await db.execute(
            select(CampaignDevice.campaign_id, CampaignDevice.state, func.count())
            .where(CampaignDevice.campaign_id.in_(ids))
            .group_by(CampaignDevice.campaign_id, CampaignDevice.state)
        )
        for campaign_id, state, count in rows:
            out[campaign_id][state] = count
    return out


def campaign_out(campaign: Campaign, totals: dict[str, int]) -> CampaignOut:
    return CampaignOut(
        id=campaign.id,
        name=campaign.name,
        kind=campaign.kind,
        artifact_id=campaign.artifact_id,
        component_id=campaign.component_id,
        target=campaign.target or {},
        waves=campaign.waves or [],
        success_threshold=campaign.success_threshold,
        error_threshold=campaign.error_threshold,
        device_timeout=campaign.device_timeout,
        max_retries=campaign.max_retries,
        window=campaign.window,
        state=campaign.state,
        current_wave=campaign.current_wave + 1,
        skipped=campaign.skipped,
        detail=campaign.detail,
        created=campaign.created,
        updated=campaign.updated,
        started=campaign.started,
        finished=campaign.finished,
        counters=totals,
    )


async def _detail(db: AsyncSession, campaign: Campaign) -> CampaignDetail:
    waves = await counters(db, campaign)
    totals = (await _totals(db, [campaign.id]))[campaign.id]
    return CampaignDetail(
        **campaign_out(campaign, totals).model_dump(),
        wave_counters=[WaveCountersOut(wave=w.wave + 1, size=w.size, **w.states) for w in waves],
    )


@router.post("", status_code=201, response_model=CampaignDetail, summary="Create a campaign (a draft)")
async def add_campaign(body: CampaignCreate, db: Db, actor: Operator) -> CampaignDetail:
    async with db.begin():
        campaign = await create_campaign(
            db,
            body.name,
            body.kind,
            target=body.target.model_dump(exclude_none=True),
            artifact_id=body.artifact_id,
            component_id=body.component_id,
            waves=body.waves,
            success_threshold=body.success_threshold,
            error_threshold=body.error_threshold,
            device_timeout=body.device_timeout,
            max_retries=body.max_retries,
            window=body.window,
            skip_busy=body.skip_busy,
            authority_pk=actor.authority_pk,
            all_devices=body.all_devices,
        )
        out = await _detail(db, campaign)
        audit(
            db,
            actor,
            "campaign.add",
            f"campaign {campaign.id}",
            name=campaign.name,
            kind=campaign.kind,
            component_id=campaign.component_id,
            devices=sum(w.size for w in out.wave_counters),
            skipped=campaign.skipped,
        )
    return out


class CampaignPreviewIn(CampaignCreate):
    """A campaign's body, as for creating it; the name may be left out."""

    name: str | None = Field(default=None, max_length=255)  # type: ignore[assignment]


class CampaignPreviewOut(BaseModel):
    """What the campaign would target if it were created now."""

    devices: int = Field(description="Devices it would hold: selected, accepted and not busy.")
    busy: int = Field(description="Selected, but in a running or paused campaign for the same component.")
    sample: list[str] = Field(description="The first DevIds it would hold (registration order).")
    waves: list[int] = Field(description="The size each wave would have.")


@router.post(
    "/preview",
    response_model=CampaignPreviewOut,
    summary="How many devices a campaign would target, and a sample (creates nothing)",
)
async def preview(body: CampaignPreviewIn, db: Db, actor: Viewer) -> CampaignPreviewOut:
    """The same checks as creating the campaign (kind, package, component, target, waves),
    and the devices its target selects now: counted by the database, never listed whole."""
    async with db.begin():
        found = await preview_campaign(
            db,
            body.kind,
            target=body.target.model_dump(exclude_none=True),
            artifact_id=body.artifact_id,
            component_id=body.component_id,
            waves=body.waves,
            authority_pk=actor.authority_pk,
            all_devices=body.all_devices,
        )
    return CampaignPreviewOut(devices=found.devices, busy=found.busy, sample=found.sample, waves=found.waves)


@router.get("", response_model=Page[CampaignOut], summary="List campaigns, newest first")
async def list_campaigns(
    *,
    db: Db,
    actor: Viewer,
    paging: Annotated[Paging, Depends()],
    state: Annotated[CampaignState | None, Query()] = None,
) -> Page[CampaignOut]:
    conditions = [Campaign.authority_pk == actor.authority_pk]
    if state is not None:
        conditions.append(Campaign.state == state.value)
    async with db.begin():
        total = await db.scalar(select(func.count()).select_from(Campaign).where(*conditions)) or 0
        query = select(Campaign).where(*conditions).order_by(Campaign.id.desc())
        campaigns = list((await db.scalars(query.limit(paging.limit).offset(paging.offset))).all())
        totals = await _totals(db, [c.id for c in campaigns])
    return Page(
        items=[campaign_out(c, totals[c.id]) for c in campaigns],
        total=total,
        limit=paging.limit,
        offset=paging.offset,
    )


@router.get("/{campaign_id}", response_model=CampaignDetail, summary="One campaign, with counters per wave")
async def show_campaign(campaign_id: RowId, db: Db, actor: Viewer) -> CampaignDetail:
    async with db.begin():
        return await _detail(db, await get_campaign(db, campaign_id, authority_pk=actor.authority_pk))


class CampaignDeviceOut(BaseModel):
    """One device of a campaign: its wave, where it is, its current job and why."""

    device_id: str
    wave: int = Field(description="From 1.")
    state: str = Field(description="pending, running, succeeded, failed or cancelled.")
    attempts: int = Field(description="Jobs made for it so far (retries included).")
    job_id: int | None = Field(description="Its latest job.")
    job_state: str | None
    result_code: int | None = Field(description="The SCOMO result of its latest job.")
    detail: str = Field(description="Why it is where it is (the job's detail while it runs).")
    updated: datetime


@router.get(
    "/{campaign_id}/devices",
    response_model=Page[CampaignDeviceOut],
    summary="A campaign's devices with their state, job and reason, by wave",
)
async def campaign_devices(
    *,
    campaign_id: RowId,
    db: Db,
    actor: Viewer,
    paging: Annotated[Paging, Depends()],
    wave: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only this wave's (from 1).")] = None,
    state: Annotated[CampaignDeviceState | None, Query(description="Only devices in this state.")] = None,
) -> Page[CampaignDeviceOut]:
    """What the counters sum up, device by device: a page at a time (a wave can hold a whole
    fleet), in wave then registration order, with each device's latest job."""
    async with db.begin():
        campaign = await get_campaign(db, campaign_id, authority_pk=actor.authority_pk)
        conditions = [CampaignDevice.campaign_id == campaign.id]
        if wave is not None:
            conditions.append(CampaignDevice.wave == wave - 1)
        if state is not None:
            conditions.append(CampaignDevice.state == state.value)
        total = await db.scalar(select(func.count()).select_from(CampaignDevice).where(*conditions)) or 0
        rows = await db.execute(
            select(CampaignDevice, Device.device_id, Job.state, Job.result_code, Job.detail)
            .join(Device, Device.id == CampaignDevice.device_pk)
            .outerjoin(Job, Job.id == CampaignDevice.job_id)
            .where(*conditions)
            .order_by(CampaignDevice.wave, CampaignDevice.device_pk)
            .limit(paging.limit)
            .offset(paging.offset)
        )
        items = [
            CampaignDeviceOut(
                device_id=device_id,
                wave=member.wave + 1,
                state=member.state,
                attempts=member.attempts,
                job_id=member.job_id,
                job_state=job_state,
                result_code=member.result_code if member.result_code is not None else job_result,
                detail=(job_detail if member.state == "running" and job_detail else member.detail)
                or job_detail
                or "",
                updated=member.updated,
            )
            for member, device_id, job_state, job_result, job_detail in rows
        ]
    return Page(items=items, total=total, limit=paging.limit, offset=paging.offset)


async def _act(action: str, campaign_id: int, db: AsyncSession, actor: Operator) -> CampaignDetail:
    async with db.begin():
        campaign = await get_campaign(db, campaign_id, for_update=True, authority_pk=actor.authority_pk)
        was = campaign.state
        await _ACTIONS[action](db, campaign)
        audit(db, actor, f"campaign.{action}", f"campaign {campaign.id}", was=was, state=campaign.state)
        return await _detail(db, campaign)


@router.post("/{campaign_id}/start", response_model=CampaignDetail, summary="Start a draft: send wave 1")
async def start(campaign_id: RowId, db: Db, actor: Operator) -> CampaignDetail:
    return await _act("start", campaign_id, db, actor)


@router.post("/{campaign_id}/pause", response_model=CampaignDetail, summary="Pause: send no new jobs")
async def pause(campaign_id: RowId, db: Db, actor: Operator) -> CampaignDetail:
    return await _act("pause", campaign_id, db, actor)


@router.post(
    "/{campaign_id}/resume", response_model=CampaignDetail, summary="Resume (after a pause, the next wave)"
)
async def resume(campaign_id: RowId, db: Db, actor: Operator) -> CampaignDetail:
    return await _act("resume", campaign_id, db, actor)


@router.post("/{campaign_id}/cancel", response_model=CampaignDetail, summary="Cancel: call back unsent jobs")
async def cancel(campaign_id: RowId, db: Db, actor: Operator) -> CampaignDetail:
    return await _act("cancel", campaign_id, db, actor)
