"""The trust store: publisher keys the server vouches for, per management authority.

Devices refuse a package whose signature they cannot verify (1407). Finding that out from
every device of a campaign is the worst place to learn it, so the server keeps the publishers'
public keys too and checks each upload against them (:func:`.service.add_artifact` with
``publishers``). A publisher is a name people choose, the key's id (16 hex digits, what
``omadm package keygen`` prints) and its fingerprint (the whole SHA-256, what is unique: 64
bits could be matched by a key ground on purpose, 256 cannot).

Functions here do not commit: the API and the server shell record the change in the audit log
in the same transaction, so the change and its record happen together or not at all.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from omadm.package.signing import key_id, public_key_pem
from omadm.package.verify import key_fingerprint
from omadm.server.store.models import Publisher

from .service import ArtifactError

__all__ = [
    "PUBLISHER_NAME_MAX",
    "TrustedKey",
    "add_publisher",
    "delete_publisher",
    "list_publishers",
    "parse_public_key",
    "publisher_facts",
    "trust_store",
]

PUBLISHER_NAME_MAX = 100
#: A PEM public key is a few hundred bytes; anything this large is something else.
_PEM_MAX = 16 << 10


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """One key of a trust store, detached from the database (safe to use after a commit)."""

    name: str
    key_id: str
    fingerprint: str
    key: Ed25519PublicKey


def parse_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """The Ed25519 public key in ``pem``; :class:`ArtifactError` 422 saying what is wrong.

    A private key is refused with advice, not accepted and reduced to its public half: a
    private key pasted into a server is a key that must be considered leaked.
    """
    data = pem.encode() if isinstance(pem, str) else pem
    if len(data) > _PEM_MAX:
        raise ArtifactError(422, f"the public key is {len(data)} bytes; a PEM public key is far smaller")
    if b"PRIVATE KEY-----" in data:
        raise ArtifactError(
            422,
            "that is a private key: give the publisher's public key (KEY.pub.pem, written by "
            "'omadm package keygen'), and consider the private key exposed",
        )
    try:
        key = load_pem_public_key(data.strip())
    except (ValueError, TypeError):
        raise ArtifactError(
            422, "not a PEM public key (expected '-----BEGIN PUBLIC KEY-----', as in KEY.pub.pem)"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise ArtifactError(
            422, f"a {type(key).__name__.lstrip('_')} key; omadm packages are signed with Ed25519 keys"
        )
    return key


def _check_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise ArtifactError(422, "a publisher needs a name")
    if len(name) > PUBLISHER_NAME_MAX:
        raise ArtifactError(
            422, f"the publisher name is {len(name)} characters; at most {PUBLISHER_NAME_MAX}"
        )
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise ArtifactError(422, f"the publisher name {name!r} contains control characters")
    return name


def publisher_facts(publisher: Publisher) -> dict[str, Any]:
    """What the audit log keeps of a publisher (the API's and the server shell's alike)."""
    return {"name": publisher.name, "key_id": publisher.key_id, "fingerprint": publisher.fingerprint}


async def add_publisher(
    db: AsyncSession, name: str, pem: str | bytes, *, authority_pk: int
) -> tuple[Publisher, bool]:
    """Trust ``pem`` (an Ed25519 public key) as publisher ``name`` of the authority; flushed, not committed.

    Returns the publisher and whether it is new: adding the same name with the same key again
    is not an error (a setup script may run twice), it returns the existing one.

    Raises:
        ArtifactError: 422 for a bad name or key, 409 when the name is taken or the key is
            already trusted (under which name is said: two names for one key would make the
            package list disagree with itself).
    """
    name = _check_name(name)
    key = parse_public_key(pem)
    fingerprint = key_fingerprint(key)
    same_key = await db.scalar(
        select(Publisher).where(Publisher.authority_pk == authority_pk, Publisher.fingerprint == fingerprint)
    )
    if same_key is not None and same_key.name == name:
        return same_key, False
    if same_key is not None:
        raise ArtifactError(409, f"key {same_key.key_id} is already trusted, as publisher {same_key.name!r}")
    same_name = await db.scalar(
        select(Publisher.id).where(Publisher.authority_pk == authority_pk, Publisher.name == name)
    )
    if same_name is not None:
        raise ArtifactError(
            409, f"a publisher named {name!r} exists already; delete it first to replace its key"
        )
    publisher = Publisher(
        authority_pk=authority_pk,
        name=name,
        key_id=key_id(key),
        fingerprint=fingerprint,
        public_key=public_key_pem(key).decode(),
    )
    db.add(publisher)
    await db.flush()
    return publisher, True


async def list_publishers(db: AsyncSession, *, authority_pk: int) -> list[Publisher]:
    """The authority's publishers, by name."""
    query = select(Publisher).where(Publisher.authority_pk == authority_pk).order_by(Publisher.name)
    return list((await db.scalars(query)).all())


async def delete_publisher(db: AsyncSession, name: str, *, authority_pk: int) -> Publisher:
    """Stop trusting publisher ``name`` (or the key id given instead); flushed, not committed.

    Packages already uploaded stay (devices check signatures themselves); new uploads signed
    by the key are refused from now on. :class:`ArtifactError` 404 if there is no such publisher.
    """
    found = await db.scalar(
        select(Publisher).where(Publisher.authority_pk == authority_pk, Publisher.name == name)
    ) or await db.scalar(
        select(Publisher).where(Publisher.authority_pk == authority_pk, Publisher.key_id == name.lower())
    )
    if found is None:
        raise ArtifactError(404, f"no publisher named {name!r} (nor with that key id)")
    await db.delete(found)
    await db.flush()
    return found


async def trust_store(db: AsyncSession, *, authority_pk: int) -> list[TrustedKey]:
    """The authority's publisher keys, loaded and detached, for :func:`.service.add_artifact`."""
    return [
        TrustedKey(p.name, p.key_id, p.fingerprint, parse_public_key(p.public_key))
        for p in await list_publishers(db, authority_pk=authority_pk)
    ]
