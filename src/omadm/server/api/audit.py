"""``/api/v1/audit`` (admin): who changed what, when; ``/api/v1/tokens``: the API's tokens.

Both are per management authority: an admin reads its authority's audit log and manages its
authority's tokens. Admins of the default authority also see and manage every authority's
tokens (they create the first token of a new authority).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..config import ServerConfig
from ..registry import get_authority, list_authorities
from ..store.models import DEFAULT_AUTHORITY_PK, ApiToken, AuditEntry, Authority
from .auth import (
    Actor,
    Admin,
    Db,
    Viewer,
    audit,
    create_token,
    list_tokens,
    parse_duration,
    resolve_expiry,
    rotate_token,
)
from .problems import Problem
from .schemas import (
    AuditOut,
    Page,
    Paging,
    RowId,
    TokenCreate,
    TokenCreated,
    TokenOut,
    TokenRotate,
    WhoAmIOut,
)

__all__ = ["router", "tokens_router", "whoami_router"]

router = APIRouter(prefix="/audit", tags=["audit"])
tokens_router = APIRouter(prefix="/tokens", tags=["tokens"])
whoami_router = APIRouter(prefix="/whoami", tags=["tokens"])


@whoami_router.get(
    "",
    response_model=WhoAmIOut,
    summary="The token making the request: name, role, authority, and the authority's DM identity",
)
async def whoami(request: Request, db: Db, actor: Viewer) -> WhoAmIOut:
    """Also the authority's ServerID and DM URL: what a device's DMAcc account needs to reach it.

    A token holder that registers devices (``omadm sim register``) must configure them with
    both, and could not learn them otherwise: the default authority's ServerID is the
    server's configuration, not a row. The URLs are the DM endpoint's own
    (``DMEndpoint._authority``): ``dm_url`` of the configuration, plus ``/<name>`` for any
    authority but the default one.
    """
    config: ServerConfig = request.app.state.config
    async with db.begin():
        server_id = await db.scalar(select(Authority.server_id).where(Authority.id == actor.authority_pk))
    default = actor.authority_pk == DEFAULT_AUTHORITY_PK
    return WhoAmIOut(
        name=actor.name,
        role=actor.role.value,
        authority=actor.authority,
        server_id=server_id or config.server_id,
        dm_url=config.dm_url if default else f"{config.dm_url}/{actor.authority}",
    )


@router.get("", response_model=Page[AuditOut], summary="The audit log of the token's authority, newest first")
async def list_audit(
    *,
    db: Db,
    actor: Admin,
    paging: Annotated[Paging, Depends()],
    who: Annotated[str | None, Query(alias="actor", description="Only this token's changes.")] = None,
    action: Annotated[str | None, Query(description="e.g. device.add, job.cancel.")] = None,
    target: Annotated[str | None, Query(description='e.g. "IMEI:490154203237518", "job 3".')] = None,
    since: Annotated[datetime | None, Query(description="Only changes at or after (ISO 8601).")] = None,
) -> Page[AuditOut]:
    conditions = [AuditEntry.authority_pk == actor.authority_pk]
    if who is not None:
        conditions.append(AuditEntry.actor == who)
    if action is not None:
        conditions.append(AuditEntry.action == action)
    if target is not None:
        conditions.append(AuditEntry.target == target)
    if since is not None:
        if since.tzinfo is None:
            raise Problem(422, "since needs a timezone (e.g. 2026-11-25T10:00:00Z)")
        conditions.append(AuditEntry.at >= since)
    async with db.begin():
        total = await db.scalar(select(func.count()).select_from(AuditEntry).where(*conditions)) or 0
        rows = (
            await db.scalars(
                select(AuditEntry)
                .where(*conditions)
                .order_by(AuditEntry.id.desc())
                .limit(paging.limit)
                .offset(paging.offset)
            )
        ).all()
    return Page(
        items=[
            AuditOut(
                id=r.id,
                at=r.at,
                authority=actor.authority,
                actor=r.actor,
                action=r.action,
                target=r.target,
                detail=r.detail or {},
            )
            for r in rows
        ],
        total=total,
        limit=paging.limit,
        offset=paging.offset,
    )


def _is_root(actor: Actor) -> bool:
    return actor.authority_pk == DEFAULT_AUTHORITY_PK


async def _names(db: AsyncSession) -> dict[int, str]:
    return {a.id: a.name for a in await list_authorities(db)}


def _token_out(row: ApiToken, names: dict[int, str]) -> TokenOut:
    return TokenOut(
        id=row.id,
        name=row.name,
        role=row.role,
        authority=names.get(row.authority_pk, str(row.authority_pk)),
        created=row.created,
        last_used=row.last_used,
        expires=row.expires,
        rotated=row.rotated,
        previous_expires=row.previous_expires if row.previous_hash else None,
    )


@tokens_router.get("", response_model=list[TokenOut], summary="The API tokens (never the tokens)")
async def get_tokens(db: Db, actor: Admin) -> list[TokenOut]:
    async with db.begin():
        names = await _names(db)
        rows = await list_tokens(db, authority_pk=None if _is_root(actor) else actor.authority_pk)
        return [_token_out(t, names) for t in rows]


@tokens_router.post("", status_code=201, response_model=TokenCreated, summary="Create a token")
async def add_token(body: TokenCreate, db: Db, actor: Admin) -> TokenCreated:
    async with db.begin():
        authority_pk = actor.authority_pk
        if body.authority is not None and body.authority != actor.authority:
            if not _is_root(actor):
                raise Problem(
                    403,
                    f"token {actor.name!r} creates tokens of its own authority ({actor.authority!r}) only",
                )
            authority_pk = (await get_authority(db, body.authority)).id
        expires = resolve_expiry(body.expires_in, body.expires_at)
        row, token = await create_token(
            db, body.name, body.role.value, authority_pk=authority_pk, expires=expires
        )
        audit(
            db,
            actor,
            "token.add",
            f"token {row.name}",
            authority_pk=authority_pk,
            role=row.role,
            **({"expires": expires.isoformat()} if expires else {}),
        )
        out = _token_out(row, await _names(db))
    return TokenCreated(**out.model_dump(), token=token)


@tokens_router.post(
    "/{token_id}/rotate",
    response_model=TokenCreated,
    summary="Rotate a token: a new secret for the same name and role, the old one revoked",
)
async def rotate(token_id: RowId, body: TokenRotate, db: Db, actor: Admin) -> TokenCreated:
    """The new secret is in the answer, once. The old one is accepted for ``grace`` more, then
    refused with a message that says it was rotated (``code``: ``token-rotated``)."""
    grace = parse_duration(body.grace, "grace")
    if body.never_expires and (body.expires_in is not None or body.expires_at is not None):
        raise Problem(422, "never_expires cannot go with expires_in or expires_at")
    async with db.begin():
        row = await db.get(ApiToken, token_id)
        if row is None or not (_is_root(actor) or row.authority_pk == actor.authority_pk):
            raise Problem(404, f"no token {token_id}")
        expires = resolve_expiry(body.expires_in, body.expires_at)
        if expires is not None or body.never_expires:
            row, token = await rotate_token(db, row.name, grace=grace, expires=expires)
        else:
            row, token = await rotate_token(db, row.name, grace=grace)
        audit(
            db,
            actor,
            "token.rotate",
            f"token {row.name}",
            authority_pk=row.authority_pk,
            role=row.role,
            grace_s=int(grace.total_seconds()),
            expires=row.expires.isoformat() if row.expires else None,
        )
        out = _token_out(row, await _names(db))
    return TokenCreated(**out.model_dump(), token=token)


@tokens_router.delete("/{token_id}", status_code=204, summary="Revoke a token")
async def delete_token(token_id: RowId, db: Db, actor: Admin) -> Response:
    async with db.begin():
        row = await db.get(ApiToken, token_id)
        if row is None or not (_is_root(actor) or row.authority_pk == actor.authority_pk):
            raise Problem(404, f"no token {token_id}")
        await db.delete(row)
        audit(db, actor, "token.revoke", f"token {row.name}", authority_pk=row.authority_pk, role=row.role)
    return Response(status_code=204)
