"""``/api/v1/publishers``: the trust store of publisher keys that package uploads are checked against.

Viewers list it (so anyone can see who the server vouches for); admins add and delete keys,
because trusting a key decides what every device of the authority may be sent. Each change is
audited (``publisher.add``, ``publisher.delete``) with the key's id and fingerprint. Like
packages, publishers belong to the token's management authority.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from ..artifacts.publishers import add_publisher, delete_publisher, list_publishers, publisher_facts
from .auth import Admin, Db, Viewer, audit
from .schemas import PublisherCreate, PublisherOut

__all__ = ["router"]

router = APIRouter(prefix="/publishers", tags=["publishers"])


@router.get("", response_model=list[PublisherOut], summary="The trust store: publisher keys, by name")
async def get_publishers(db: Db, actor: Viewer) -> list[PublisherOut]:
    async with db.begin():
        return [
            PublisherOut.model_validate(p) for p in await list_publishers(db, authority_pk=actor.authority_pk)
        ]


@router.post(
    "",
    status_code=201,
    response_model=PublisherOut,
    summary="Trust a publisher's key",
    responses={200: {"model": PublisherOut, "description": "This name has this key already."}},
)
async def post_publisher(body: PublisherCreate, response: Response, db: Db, actor: Admin) -> PublisherOut:
    """422 names what is wrong with the key (a private key, not PEM, not Ed25519); 409 when the
    name is taken by another key or the key is trusted already under another name. The same
    name with the same key again answers 200 (a setup script may run twice)."""
    async with db.begin():
        publisher, created = await add_publisher(
            db, body.name, body.public_key, authority_pk=actor.authority_pk
        )
        if created:
            audit(db, actor, "publisher.add", f"publisher {publisher.name}", **publisher_facts(publisher))
        else:
            response.status_code = 200
        return PublisherOut.model_validate(publisher)


@router.delete("/{name}", status_code=204, summary="Stop trusting a publisher (by name or key id)")
async def remove_publisher(
    name: Annotated[
        str, Path(min_length=1, max_length=100, description="The publisher's name, or its key id.")
    ],
    db: Db,
    actor: Admin,
) -> Response:
    """Packages uploaded already stay; new uploads signed by the key are refused."""
    async with db.begin():
        publisher = await delete_publisher(db, name, authority_pk=actor.authority_pk)
        audit(db, actor, "publisher.delete", f"publisher {publisher.name}", **publisher_facts(publisher))
    return Response(status_code=204)
