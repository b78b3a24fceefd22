"""``/api/v1/packages``: upload (verified like a device would), list, show, delete when unused.

An upload is the raw package as the request body (``Content-Type: application/octet-stream``,
the file name in ``?filename=``), streamed to a spool file while it is hashed, never held in
memory; ``curl --data-binary @hello-1.0.0.omp`` does it. Uploading the same bytes again
answers 200 with the existing package (201 when it is new). A package that an unfinished job
or a campaign not yet over (draft, running, paused) still names cannot be deleted (409,
naming them). Packages belong to the token's management authority: another authority's
package is a 404, and the same bytes uploaded by two authorities are two packages.

Uploads are checked against the authority's trust store (``/api/v1/publishers``): a package
must be signed by one of its publishers, or it is refused (422) before anything is stored, as
devices that require signatures would refuse it with 1407. An admin may take it anyway with
``?allow_unsigned=true`` (audited); each package says who signed it (``signature``,
``publisher``, ``key_id``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..artifacts.publishers import trust_store
from ..artifacts.service import add_artifact, added_facts, delete_artifact, get_artifact, list_artifacts
from ..artifacts.storage import ArtifactStorage, LocalArtifactStorage
from ..store.models import ApiRole, Artifact, Campaign, CampaignState, Job, JobState, utc_now
from .auth import Db, Operator, Viewer, audit
from .problems import Problem
from .schemas import PackageOut, Page, Paging, RowId

__all__ = ["artifact_references", "router"]

router = APIRouter(prefix="/packages", tags=["packages"])

_UNFINISHED = [s.value for s in JobState if not s.final]
#: Campaigns that may still create jobs for their package.
_NOT_OVER = [CampaignState.DRAFT.value, CampaignState.RUNNING.value, CampaignState.PAUSED.value]
_RAW_TYPES = ("application/octet-stream", "application/vnd.omadm.package")
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in _RAW_TYPES},
    }
}


async def artifact_references(db: AsyncSession, artifact: Artifact) -> Sequence[str]:
    """What still needs the artifact: campaigns not over ("campaign 3 (running)") and
    unfinished jobs ("job 17") that name it."""
    campaigns = await db.execute(
        select(Campaign.id, Campaign.state)
        .where(Campaign.artifact_id == artifact.id, Campaign.state.in_(_NOT_OVER))
        .order_by(Campaign.id)
    )
    jobs = await db.scalars(
        select(Job.id)
        .where(Job.state.in_(_UNFINISHED), Job.params["artifact_id"].as_integer() == artifact.id)
        .order_by(Job.id)
    )
    return [f"campaign {cid} ({state})" for cid, state in campaigns] + [f"job {jid}" for jid in jobs]


def _storage(request: Request) -> ArtifactStorage:
    storage: ArtifactStorage = request.app.state.storage
    return storage


@router.post(
    "",
    status_code=201,
    response_model=PackageOut,
    summary="Upload a package (raw body)",
    openapi_extra=_UPLOAD_BODY,
    responses={200: {"model": PackageOut, "description": "These bytes were uploaded before."}},
)
async def upload_package(
    *,
    request: Request,
    response: Response,
    db: Db,
    actor: Operator,
    filename: Annotated[str, Query(min_length=1, max_length=255, description="The file's name.")] = (
        "package.omp"
    ),
    allow_unsigned: Annotated[
        bool,
        Query(
            description="Admins only: accept a package that is unsigned or signed by a key not in "
            "the trust store (recorded in the audit log)."
        ),
    ] = False,
) -> PackageOut:
    content_type = request.headers.get("content-type", "application/octet-stream").split(";")[0].strip()
    if content_type.lower() not in _RAW_TYPES:
        raise Problem(
            415,
            f"send the package itself as the body (Content-Type: application/octet-stream, "
            f"?filename=NAME), not {content_type}",
        )
    if allow_unsigned and actor.role.rank < ApiRole.ADMIN.rank:
        raise Problem(
            403,
            f"allow_unsigned=true needs the admin role (token {actor.name!r} is {actor.role.value}): "
            "only an admin may send devices a package the server cannot vouch for",
        )
    async with db.begin():
        publishers = await trust_store(db, authority_pk=actor.authority_pk)
    storage = _storage(request)
    spool = storage.root / "tmp" if isinstance(storage, LocalArtifactStorage) else None
    if spool is not None:
        spool.mkdir(parents=True, exist_ok=True)
    started = utc_now()
    artifact = await add_artifact(
        db,
        storage,
        filename,
        request.stream(),
        spool_dir=spool,
        authority_pk=actor.authority_pk,
        publishers=publishers,
        allow_unsigned=allow_unsigned,
    )
    if artifact.created >= started:  # new: a change worth recording (add_artifact committed it)
        audit(
            db,
            actor,
            "package.add",
            f"package {artifact.id}",
            **added_facts(artifact),
            **({"allow_unsigned": True} if allow_unsigned else {}),
        )
        await db.commit()
    else:
        response.status_code = 200
    return PackageOut.model_validate(artifact)


@router.get("", response_model=Page[PackageOut], summary="List packages, newest first")
async def list_packages(
    db: Db,
    actor: Viewer,
    paging: Annotated[Paging, Depends()],
    package_id: Annotated[str | None, Query(description="Only this package's uploads.")] = None,
    version: Annotated[str | None, Query()] = None,
) -> Page[PackageOut]:
    conditions = [Artifact.authority_pk == actor.authority_pk]
    if package_id is not None:
        conditions.append(Artifact.package_id == package_id)
    if version is not None:
        conditions.append(Artifact.version == version)
    async with db.begin():
        total = await db.scalar(select(func.count()).select_from(Artifact).where(*conditions)) or 0
        items = await list_artifacts(
            db,
            package_id=package_id,
            version=version,
            limit=paging.limit,
            offset=paging.offset,
            authority_pk=actor.authority_pk,
        )
    return Page(
        items=[PackageOut.model_validate(a) for a in items],
        total=total,
        limit=paging.limit,
        offset=paging.offset,
    )


@router.get("/{package_id}", response_model=PackageOut, summary="One package")
async def show_package(package_id: RowId, db: Db, actor: Viewer) -> PackageOut:
    async with db.begin():
        return PackageOut.model_validate(await get_artifact(db, package_id, authority_pk=actor.authority_pk))


@router.delete(
    "/{package_id}", status_code=204, summary="Delete a package no unfinished job or campaign uses"
)
async def remove_package(package_id: RowId, request: Request, db: Db, actor: Operator) -> Response:
    # Locked: a job being created for it (which holds a share lock) finishes first, and the
    # reference check below then sees it; a job created after waits, then finds no artifact.
    artifact = await db.get(Artifact, package_id, with_for_update=True)
    if artifact is None or artifact.authority_pk != actor.authority_pk:
        await db.rollback()
        raise Problem(404, f"no artifact {package_id}")
    # Recorded in the transaction delete_artifact commits: both happen, or neither.
    audit(
        db,
        actor,
        "package.delete",
        f"package {artifact.id}",
        filename=artifact.filename,
        package_id=artifact.package_id,
        version=artifact.version,
        sha256=artifact.sha256,
    )
    try:
        await delete_artifact(db, _storage(request), package_id, references=artifact_references)
    except BaseException:
        await db.rollback()
        raise
    return Response(status_code=204)
