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

Tokens may **expire** (``--expires-in 30d`` or ``--expires-at``; ``expires_in``/``expires_at``
in ``POST /tokens``) and be **rotated** (``omadm server token rotate NAME``, ``POST
/tokens/{id}/rotate``): a new secret for the same name, role and authority, the old one
accepted for an optional grace period while its clients move over. A refused token says why,
each with its own message and ``code`` member: unknown (never issued or revoked), expired
(``token-expired``), or replaced by a rotation (``token-rotated``), so that whoever holds it
knows whether to ask for a new one or to pick up the rotated one.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .. import metrics
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
    "parse_duration",
    "require",
    "resolve_expiry",
    "revoke_token",
    "rotate_token",
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


_DURATION = re.compile(r"(\d+)\s*([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: Longer than this is a typo, not a plan (and overflows datetime arithmetic soon after).
_MAX_LIFETIME = timedelta(days=3660)


def parse_duration(text: str, what: str = "a duration") -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or plain seconds, as a positive timedelta."""
    found = _DURATION.fullmatch(text.strip().lower())
    if found is None:
        raise RegistryError(
            422, f"{what} must be a whole number with a unit s, m, h, d or w (e.g. 30d, 12h), not {text!r}"
        )
    value = timedelta(seconds=int(found.group(1)) * _UNITS[found.group(2)])
    if value > _MAX_LIFETIME:
        raise RegistryError(422, f"{what} may be at most {_MAX_LIFETIME.days} days, not {text!r}")
    return value


def resolve_expiry(
    expires_in: str | None, expires_at: datetime | str | None, *, now: datetime | None = None
) -> datetime | None:
    """When a token given ``expires_in`` (a duration) or ``expires_at`` (a moment) expires.

    Neither: None (it does not expire). Both, a moment without a timezone, or one not in the
    future: refused (422) with what is wrong.
    """
    now = now or utc_now()
    if expires_in is not None and expires_at is not None:
        raise RegistryError(422, "give the expiry as expires-in or expires-at, not both")
    if expires_in is not None:
        lifetime = parse_duration(expires_in, "expires-in")
        if lifetime <= timedelta(0):
            raise RegistryError(422, f"expires-in must be more than 0, not {expires_in!r}")
        return now + lifetime
    if expires_at is None:
        return None
    if isinstance(expires_at, str):
        try:
            moment = datetime.fromisoformat(expires_at.strip().replace("Z", "+00:00"))
        except ValueError:
            raise RegistryError(
                422, f"expires-at must be an ISO 8601 time such as 2027-01-31T12:00:00Z, not {expires_at!r}"
            ) from None
    else:
        moment = expires_at
    if moment.tzinfo is None:
        raise RegistryError(422, f"expires-at needs a timezone (e.g. {moment.isoformat()}Z)")
    if moment <= now:
        raise RegistryError(422, f"expires-at {moment.isoformat()} is not in the future")
    if moment - now > _MAX_LIFETIME:
        raise RegistryError(422, f"expires-at may be at most {_MAX_LIFETIME.days} days ahead")
    return moment


async def create_token(
    db: AsyncSession,
    name: str,
    role: str,
    *,
    authority_pk: int = DEFAULT_AUTHORITY_PK,
    expires: datetime | None = None,
) -> tuple[ApiToken, str]:
    """A new token of an authority (row, plain token); the plain token exists only in the return value.

    ``expires``: when it stops working (see :func:`resolve_expiry`); None: never.
    """
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
        expires=expires,
    )
    db.add(row)
    await db.flush()
    return row, token


_KEEP_LIFETIME: datetime = datetime.min  # rotate_token's default: the token's own lifetime again


async def rotate_token(
    db: AsyncSession,
    name: str,
    *,
    authority_pk: int | None = None,
    grace: timedelta = timedelta(0),
    expires: datetime | None = _KEEP_LIFETIME,
) -> tuple[ApiToken, str]:
    """A new secret for token ``name`` (same name, role, authority); the old one is revoked.

    The old secret is still accepted for ``grace`` (0: refused at once, as "rotated"). The
    new one expires at ``expires`` (None: never); by default a token that expired after a
    lifetime gets the same lifetime again from now, one that never expired keeps not expiring.
    An expired token can be rotated: that is how its holder gets a working one back.
    """
    if grace < timedelta(0):
        raise RegistryError(422, "the grace period cannot be negative")
    row = await db.scalar(select(ApiToken).where(ApiToken.name == name).with_for_update())
    if row is None or (authority_pk is not None and row.authority_pk != authority_pk):
        raise RegistryError(404, f"no token named {name!r}")
    now = utc_now()
    if expires is _KEEP_LIFETIME:
        if row.expires is None:
            expires = None
        else:
            lifetime = row.expires - (row.rotated or row.created)
            expires = now + max(lifetime, timedelta(seconds=1))
    token = new_token()
    row.previous_hash = row.token_hash
    row.previous_expires = now + grace
    if row.expires is not None:
        # The old secret never outlives the token's own expiry, grace or not.
        row.previous_expires = min(row.previous_expires, row.expires)
    row.token_hash = hash_token(token)
    row.rotated = now
    row.expires = expires
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


def _unauthorized(detail: str, **extra: str) -> Problem:
    return Problem(401, detail, headers={"WWW-Authenticate": 'Bearer realm="omadm"'}, **extra)


def _refused(reason: str, detail: str, **extra: str) -> Problem:
    metrics.AUTH_FAILURES.labels("api", reason).inc()
    return _unauthorized(detail, **extra)


async def _authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Actor:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise _refused("missing", "this API needs a bearer token (Authorization: Bearer <token>)")
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    digest = hash_token(credentials.credentials)
    now = utc_now()
    async with sessions() as db, db.begin():
        query = select(ApiToken, Authority.name).join(Authority, Authority.id == ApiToken.authority_pk)
        found = (await db.execute(query.where(ApiToken.token_hash == digest))).first()
        current = found is not None
        if found is None:
            # Not a current secret: perhaps one a rotation replaced (a second index probe,
            # only for tokens that are not current: a rare path).
            found = (await db.execute(query.where(ApiToken.previous_hash == digest))).first()
        if found is None:
            raise _refused("unknown", "the bearer token is not valid (unknown or revoked)")
        row, authority = found
        if row.expires is not None and now >= row.expires:
            raise _refused(
                "expired",
                f"token {row.name!r} expired at {row.expires.isoformat(timespec='seconds')}; an admin "
                f"can rotate it for a new secret (omadm server token rotate {row.name})",
                code="token-expired",
            )
        if not current and (row.previous_expires is None or now >= row.previous_expires):
            rotated = row.rotated.isoformat(timespec="seconds") if row.rotated else "?"
            raise _refused(
                "rotated",
                f"this secret of token {row.name!r} was replaced by a rotation at {rotated} and is "
                "no longer accepted; use the new secret",
                code="token-rotated",
            )
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
