"""Bearer tokens with roles, and the audit log, for the REST API.

A token is ``omadm_`` and 43 random URL-safe characters, shown once when it is created
(``omadm server token add NAME --role operator`` or ``POST /api/v1/tokens``); the database
keeps only its SHA-256, so a leaked database does not leak tokens. Roles are ordered:
``viewer`` reads, ``operator`` also changes devices, packages and jobs, ``admin`` also
manages tokens and reads the audit log. ``require(role)`` is the FastAPI dependency a route
declares; it answers 401 (no or unknown token) or 403 (a role too low) as problem documents.

A token belongs to one management authority (``docs/authorities.md``): it sees and changes
only that authority's devices, jobs, packages, campaigns and audit entries; anything of
another authority is answered 404, as if it did not exist. Admins of the ``default``
authority also manage the authorities themselves (:data:`RootAdmin`).

Every change made through the API adds one :class:`AuditEntry` (who: the token's name; what;
on what; in which authority; details) in the transaction of the change itself.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..registry import RegistryError
from ..store.models import (
    DEFAULT_AUTHORITY,
    DEFAULT_AUTHORITY_PK,
    ApiRole,
    ApiToken,
    AuditEntry,
    Authority,
    utc_now,
)
from .problems import Problem

__all__ = [
    "Actor",
    "Admin",
    "Db",
    "Operator",
    "RootAdmin",
    "Viewer",
    "audit",
    "create_token",
    "get_db",
    "hash_token",
    "list_tokens",
    "require",
    "revoke_token",
]

TOKEN_PREFIX = "omadm_"
#: ``last_used`` is written at most this often per token (a read must not always write).
LAST_USED_RESOLUTION = timedelta(seconds=60)
_NAME_MAX = 100

_bearer = HTTPBearer(
    auto_error=False,
    description="An API token: `omadm server token add NAME --role viewer|operator|admin`.",
)


@dataclass(frozen=True)
class Actor:
    """Who makes a request: the token's name (the audit log's actor), its role and authority."""

    name: str
    role: ApiRole
    authority_pk: int = DEFAULT_AUTHORITY_PK
    authority: str = DEFAULT_AUTHORITY


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def create_token(
    db: AsyncSession, name: str, role: str, *, authority_pk: int = DEFAULT_AUTHORITY_PK
) -> tuple[ApiToken, str]:
    """A new token of an authority (row, plain token); the plain token exists only in the return value."""
    name = name.strip()
    if not name or len(name) > _NAME_MAX:
        raise RegistryError(422, f"a token needs a name of 1-{_NAME_MAX} characters")
    try:
        api_role = ApiRole(role)
    except ValueError:
        raise RegistryError(
            422, f"role must be one of {', '.join(r.value for r in ApiRole)}, not {role!r}"
        ) from None
    if await db.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
        raise RegistryError(409, f"a token named {name!r} exists already")
    token = new_token()
    row = ApiToken(
        authority_pk=authority_pk,
        name=name,
        role=api_role.value,
        token_hash=hash_token(token),
        created=utc_now(),
    )
    db.add(row)
    await db.flush()
    return row, token


async def list_tokens(db: AsyncSession, *, authority_pk: int | None = None) -> list[ApiToken]:
    """The tokens, by name: all of them, or one authority's."""
    query = select(ApiToken).order_by(ApiToken.name)
    if authority_pk is not None:
        query = query.where(ApiToken.authority_pk == authority_pk)
    return list((await db.scalars(query)).all())


async def revoke_token(db: AsyncSession, name: str, *, authority_pk: int | None = None) -> ApiToken:
    row = await db.scalar(select(ApiToken).where(ApiToken.name == name))
    if row is None or (authority_pk is not None and row.authority_pk != authority_pk):
        raise RegistryError(404, f"no token named {name!r}")
    await db.delete(row)
    await db.flush()
    return row


def audit(
    db: AsyncSession,
    actor: Actor | str,
    action: str,
    target: str,
    *,
    authority_pk: int | None = None,
    **detail: Any,
) -> None:
    """Record one change (in ``db``'s transaction: it is kept only if the change is).

    The entry goes to the log of ``authority_pk``: by default the actor's authority (a token),
    or the default authority (a plain name such as ``shell:alice``).
    """
    if isinstance(actor, Actor):
        name, owner = actor.name, actor.authority_pk
    else:
        name, owner = actor, DEFAULT_AUTHORITY_PK
    db.add(
        AuditEntry(
            at=utc_now(),
            actor=name,
            action=action,
            target=target,
            authority_pk=owner if authority_pk is None else authority_pk,
            detail=detail,
        )
    )


async def get_db(request: Request) -> AsyncIterator[AsyncSession]:
    """One database session per request; routes open their transactions on it."""
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as db:
        yield db


Db = Annotated[AsyncSession, Depends(get_db)]


def _unauthorized(detail: str) -> Problem:
    return Problem(401, detail, headers={"WWW-Authenticate": 'Bearer realm="omadm"'})


async def _authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Actor:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise _unauthorized("this API needs a bearer token (Authorization: Bearer <token>)")
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    digest = hash_token(credentials.credentials)
    now = utc_now()
    async with sessions() as db, db.begin():
        found = (
            await db.execute(
                select(ApiToken, Authority.name)
                .join(Authority, Authority.id == ApiToken.authority_pk)
                .where(ApiToken.token_hash == digest)
            )
        ).first()
        if found is None:
            raise _unauthorized("the bearer token is not valid (unknown or revoked)")
        row, authority = found
        if row.last_used is None or now - row.last_used >= LAST_USED_RESOLUTION:
            row.last_used = now
        return Actor(row.name, ApiRole(row.role), row.authority_pk, authority)


def require(role: ApiRole) -> Callable[..., Awaitable[Actor]]:
    """The dependency of a route that needs at least ``role``."""

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Actor:
        actor = await _authenticate(request, credentials)
        if actor.role.rank < role.rank:
            raise Problem(
                403, f"token {actor.name!r} has the role {actor.role.value}; this needs {role.value}"
            )
        return actor

    return dependency


async def _root_admin(actor: Annotated[Actor, Depends(require(ApiRole.ADMIN))]) -> Actor:
    if actor.authority_pk != DEFAULT_AUTHORITY_PK:
        raise Problem(
            403,
            f"token {actor.name!r} is an admin of authority {actor.authority!r}; managing authorities "
            f"needs an admin token of the {DEFAULT_AUTHORITY!r} authority",
        )
    return actor


Viewer = Annotated[Actor, Depends(require(ApiRole.VIEWER))]
Operator = Annotated[Actor, Depends(require(ApiRole.OPERATOR))]
Admin = Annotated[Actor, Depends(require(ApiRole.ADMIN))]
#: An admin of the default authority: manages authorities and every authority's tokens.
RootAdmin = Annotated[Actor, Depends(_root_admin)]
