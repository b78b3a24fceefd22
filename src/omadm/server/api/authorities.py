"""``/api/v1/authorities``: management authorities (admins of the default authority only).

An authority is a DM server identity (the ServerID its devices know it by) with its own
devices, tokens, packages, campaigns and audit log (``docs/authorities.md``). Create one,
then its first token (``POST /api/v1/tokens`` with ``"authority"``); its devices are then
registered with that token. An authority that still owns anything cannot be deleted (409),
nor can ``default``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from ..registry import add_authority, authority_usage, delete_authority, get_authority, list_authorities
from ..store.models import Authority
from .auth import Db, RootAdmin, audit
from .schemas import AuthorityCreate, AuthorityOut

__all__ = ["router"]

router = APIRouter(prefix="/authorities", tags=["authorities"])


async def _out(db: AsyncSession, authority: Authority) -> AuthorityOut:
    usage = await authority_usage(db, authority)
    return AuthorityOut(
        id=authority.id,
        name=authority.name,
        server_id=authority.server_id,
        description=authority.description,
        created=authority.created,
        **usage,
    )


@router.post("", status_code=201, response_model=AuthorityOut, summary="Create a management authority")
async def create(body: AuthorityCreate, request: Request, db: Db, actor: RootAdmin) -> AuthorityOut:
    async with db.begin():
        authority = await add_authority(
            db,
            body.name,
            body.server_id,
            description=body.description,
            configured_server_id=request.app.state.config.server_id,
        )
        audit(
            db,
            actor,
            "authority.add",
            f"authority {authority.name}",
            server_id=authority.server_id,
            description=authority.description,
        )
        return await _out(db, authority)


@router.get("", response_model=list[AuthorityOut], summary="The management authorities")
async def list_all(db: Db, actor: RootAdmin) -> list[AuthorityOut]:
    async with db.begin():
        return [await _out(db, a) for a in await list_authorities(db)]


@router.get("/{name}", response_model=AuthorityOut, summary="One management authority")
async def show(name: str, db: Db, actor: RootAdmin) -> AuthorityOut:
    async with db.begin():
        return await _out(db, await get_authority(db, name))


@router.delete("/{name}", status_code=204, summary="Delete an authority that owns nothing")
async def delete(name: str, db: Db, actor: RootAdmin) -> Response:
    async with db.begin():
        authority = await delete_authority(db, await get_authority(db, name))
        audit(db, actor, "authority.delete", f"authority {authority.name}", server_id=authority.server_id)
    return Response(status_code=204)
