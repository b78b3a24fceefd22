"""``/api/v1/jobs``: one SCOMO operation for one device: create, list, show, cancel.

Creation checks everything the job will need (the device, the package or URL, the component
in the device's last inventory, the kind's parameters) and refuses at once with a problem
document rather than queue a job that fails later. Only a job still ``queued`` (not yet sent
to the device) can be cancelled. Jobs follow their device's authority: a token sees only its
authority's, and another authority's job (or device, or package) is a 404.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..registry import cancel_job, create_job
from ..store.models import Artifact, Device, DeviceState, Job, JobKind, JobState
from .auth import Db, Operator, Viewer, audit
from .devices import get_device
from .problems import Problem
from .schemas import MAX_ID, JobCreate, JobOut, Page, Paging, RowId

__all__ = ["job_out", "router"]

router = APIRouter(prefix="/jobs", tags=["jobs"])


def job_out(job: Job, device_id: str) -> JobOut:
    return JobOut(
        id=job.id,
        device_id=device_id,
        kind=job.kind,
        state=job.state,
        params=job.params or {},
        correlator=job.correlator,
        result_code=job.result_code,
        detail=job.detail,
        campaign_id=job.campaign_id,
        attempts=job.attempts,
        created=job.created,
        updated=job.updated,
        sent_at=job.sent_at,
        accepted_at=job.accepted_at,
        finished_at=job.finished_at,
        deadline=job.deadline,
    )


@router.post("", status_code=201, response_model=JobOut, summary="Queue one SCOMO operation")
async def add_job(body: JobCreate, db: Db, actor: Operator, request: Request) -> JobOut:
    async with db.begin():
        device = await get_device(db, body.device_id, for_update=True, authority_pk=actor.authority_pk)
        if device.state == DeviceState.REJECTED.value:
            raise Problem(409, f"device {device.device_id} is rejected: it gets no jobs")
        params: dict[str, Any] = {}
        if body.artifact_id is not None:
            if body.url:
                raise Problem(422, "give artifact_id or url, not both")
            # Share-locked until the job is committed: a concurrent delete waits, then sees the job.
            artifact = await db.get(Artifact, body.artifact_id, with_for_update={"read": True})
            if artifact is None or artifact.authority_pk != actor.authority_pk:
                raise Problem(404, f"no artifact {body.artifact_id}")
            params.update(artifact_id=artifact.id, pkg_id=artifact.package_id, name=artifact.filename)
        given = (
            ("url", body.url),
            ("pkg_id", body.pkg_id),
            ("component_id", body.component_id),
            ("node", body.node),
        )
        for key, value in given:
            if value:
                params[key] = value
        if body.descriptor:
            params["descriptor"] = True
        allow_local = request.app.state.config.allow_local_urls
        job = await create_job(
            db, device, body.kind, params, timeout=body.timeout, allow_local_urls=allow_local
        )
        audit(
            db,
            actor,
            "job.add",
            f"job {job.id}",
            device_id=device.device_id,
            kind=job.kind,
            params=job.params,
        )
    return job_out(job, device.device_id)


@router.get("", response_model=Page[JobOut], summary="List jobs, newest first")
async def list_jobs(
    *,
    db: Db,
    actor: Viewer,
    paging: Annotated[Paging, Depends()],
    device: Annotated[str | None, Query(description="Only this device's (its DevId).")] = None,
    state: Annotated[JobState | None, Query()] = None,
    kind: Annotated[JobKind | None, Query()] = None,
    campaign: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only this campaign's jobs.")] = None,
) -> Page[JobOut]:
    conditions = [Device.authority_pk == actor.authority_pk]
    if device is not None:
        conditions.append(Device.device_id == device)
    if campaign is not None:
        conditions.append(Job.campaign_id == campaign)
    if state is not None:
        conditions.append(Job.state == state.value)
    if kind is not None:
        conditions.append(Job.kind == kind.value)
    base = select(Job, Device.device_id).join(Device, Device.id == Job.device_pk).where(*conditions)
    async with db.begin():
        total = await db.scalar(select(func.count()).select_from(base.subquery())) or 0
        rows = (
            await db.execute(base.order_by(Job.id.desc()).limit(paging.limit).offset(paging.offset))
        ).all()
    return Page(
        items=[job_out(job, device_id) for job, device_id in rows],
        total=total,
        limit=paging.limit,
        offset=paging.offset,
    )


async def _job_with_device(
    db: AsyncSession, job_id: int, authority_pk: int, *, for_update: bool = False
) -> tuple[Job, str]:
    """The job and its device's DevId; 404 when there is none or its device is another authority's."""
    job = await db.get(Job, job_id, with_for_update=for_update)
    owner = None
    if job is not None:
        owner = (
            await db.execute(select(Device.device_id, Device.authority_pk).where(Device.id == job.device_pk))
        ).first()
    if job is None or owner is None or owner.authority_pk != authority_pk:
        raise Problem(404, f"no job {job_id}")
    return job, owner.device_id


@router.get("/{job_id}", response_model=JobOut, summary="One job")
async def show_job(job_id: RowId, db: Db, actor: Viewer) -> JobOut:
    async with db.begin():
        job, device_id = await _job_with_device(db, job_id, actor.authority_pk)
    return job_out(job, device_id)


@router.post("/{job_id}/cancel", response_model=JobOut, summary="Cancel an unfinished job")
async def cancel(job_id: RowId, db: Db, actor: Operator) -> JobOut:
    async with db.begin():
        job, device_id = await _job_with_device(db, job_id, actor.authority_pk, for_update=True)
        await cancel_job(db, job)
        audit(db, actor, "job.cancel", f"job {job.id}", device_id=device_id, kind=job.kind)
    return job_out(job, device_id)
