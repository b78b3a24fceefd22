"""``/api/v1/audit`` (admin): who changed what, when; and ``/api/v1/tokens``: the API's tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import func, select

from ..store.models import ApiToken, AuditEntry
from .auth import Admin, Db, audit, create_token, list_tokens
from .problems import Problem
from .schemas import AuditOut, Page, Paging, RowId, TokenCreate, TokenCreated, TokenOut

__all__ = ["router", "tokens_router"]

router = APIRouter(prefix="/audit", tags=["audit"])
tokens_router = APIRouter(prefix="/tokens", tags=["tokens"])


@router.get("", response_model=Page[AuditOut], summary="The audit log, newest first")
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
    conditions = []
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
        items=[AuditOut.model_validate(r) for r in rows],
        total=total,
        limit=paging.limit,
        offset=paging.offset,
    )


@tokens_router.get("", response_model=list[TokenOut], summary="The API tokens (never the tokens)")
async def get_tokens(db: Db, actor: Admin) -> list[TokenOut]:
    async with db.begin():
        return [TokenOut.model_validate(t) for t in await list_tokens(db)]


@tokens_router.post("", status_code=201, response_model=TokenCreated, summary="Create a token")
async def add_token(body: TokenCreate, db: Db, actor: Admin) -> TokenCreated:
    async with db.begin():
        row, token = await create_token(db, body.name, body.role.value)
        audit(db, actor, "token.add", f"token {row.name}", role=row.role)
    return TokenCreated(
        id=row.id, name=row.name, role=row.role, created=row.created, last_used=None, token=token
    )


@tokens_router.delete("/{token_id}", status_code=204, summary="Revoke a token")
async def delete_token(token_id: RowId, db: Db, actor: Admin) -> Response:
    async with db.begin():
        row = await db.get(ApiToken, token_id)
        if row is None:
            raise Problem(404, f"no token {token_id}")
        await db.delete(row)
        audit(db, actor, "token.revoke", f"token {row.name}", role=row.role)
    return Response(status_code=204)
