"""Artifacts: uploaded package files, checked, stored once, described in the database.

An artifact is an omadm package (``.omp``) an operator uploaded to be delivered to devices.
:func:`add_artifact` refuses anything a device would refuse (it runs the device's own
verifier, :func:`omadm.package.verify.open_package`), so a campaign can never send a file
that fails with 1407 on every device. The flow, chosen so a refused file leaves nothing
behind and no blob is ever half-written:

1. the upload is spooled to a private temporary file while its size and SHA-256 are
   computed (a ``Path`` source is read in place instead);
2. the package is verified completely (in a worker thread: it decompresses everything),
   and, when the caller gives the authority's trust store (``publishers``, see
   :mod:`.publishers`), its signature must come from one of those keys: an unsigned package
   or one signed by an unknown key is refused unless ``allow_unsigned`` (an admin's choice);
3. if an artifact with these bytes exists it is returned (uploads are idempotent);
4. otherwise the bytes are put into the :class:`~.storage.ArtifactStorage` and the row is
   inserted and committed; if the insert fails the blob is removed again (unless it was
   already there).

Functions that change anything commit ``db`` themselves: the blob and the row must agree,
so the transaction cannot be left for the caller to finish.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import anyio
import anyio.to_thread
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from omadm.package.errors import PackageError, SignatureError
from omadm.package.manifest import PackageManifest
from omadm.package.verify import DEFAULT_MAX_UNPACKED, VerifiedPackage, open_package
from omadm.server.jobs import PACKAGE_CONTENT_TYPE
from omadm.server.store.models import DEFAULT_AUTHORITY_PK, Artifact

from .storage import CHUNK_SIZE, ArtifactStorage, ArtifactStoreError, BlobSource, StoredBlob

if TYPE_CHECKING:
    from .publishers import TrustedKey

__all__ = [
    "PACKAGE_CONTENT_TYPE",
    "ArtifactError",
    "ReferenceCheck",
    "add_artifact",
    "added_facts",
    "delete_artifact",
    "get_artifact",
    "list_artifacts",
    "manifest_summary",
    "safe_filename",
    "signature_of",
]

log = logging.getLogger(__name__)

#: How an artifact's signature was judged at upload (``manifest["signature"]``):
#: ``verified`` by a publisher of the trust store, ``unsigned``, or ``unverified`` (signed,
#: but not by a trusted key, or uploaded before the server kept a trust store).
SIGNATURE_STATES = ("verified", "unsigned", "unverified")
#: The advice every refusal ends with: how to make the upload acceptable.
_TRUST_ADVICE = (
    "add the publisher's public key to the trust store ('omadm ctl publishers add NAME KEY.pub.pem' "
    "or 'omadm server publisher add NAME KEY.pub.pem'), or, as an admin, upload it anyway with "
    "allow_unsigned=true ('--allow-unsigned')"
)

#: The media type artifacts are served with (and announced with in DDs).

#: ``references(db, artifact)`` -> descriptions of what still uses it ("job 17"); empty: free.
ReferenceCheck = Callable[[AsyncSession, Artifact], Awaitable[Sequence[str]]]

_FILENAME_MAX = 200
_UNSAFE_FILENAME = re.compile(r"[\x00-\x1f\x7f/\\]")


class ArtifactError(Exception):
    """An artifact operation was refused; ``status`` is the HTTP status that says why.

    400 bad request, 404 no such artifact, 409 still referenced, 413 too large,
    422 not an acceptable package (``reason`` carries the verifier's message).
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def __repr__(self) -> str:
        return f"ArtifactError({self.status}, {self.reason!r})"


def safe_filename(filename: str) -> str:
    """The last path segment of ``filename`` without control characters, made URL-friendly.

    Empty results become ``package.omp``; ``dd`` (the descriptor route's name) becomes
    ``dd.omp``; leading dots are dropped so no hidden file name is served.
    """
    name = re.split(r"[/\\]", filename)[-1]
    name = _UNSAFE_FILENAME.sub("", name).strip().lstrip(".")
    name = name[-_FILENAME_MAX:]
    if not name:
        return "package.omp"
    if name == "dd":
        return "dd.omp"
    return name


def added_facts(artifact: Artifact) -> dict[str, Any]:
    """What the audit log keeps of an upload (the API's and the server shell's alike)."""
    return {
        "filename": artifact.filename,
        "package_id": artifact.package_id,
        "version": artifact.version,
        "sha256": artifact.sha256,
        "size": artifact.size,
        **signature_of(artifact.manifest),
    }


def signature_of(manifest: dict[str, Any] | None) -> dict[str, Any]:
    """Who signed an artifact, as judged when it was uploaded, from its ``manifest`` summary:
    the signature state, the publisher's name and the key id (both ``None`` unless ``verified``)."""
    manifest = manifest or {}
    state = manifest.get("signature")
    if state not in SIGNATURE_STATES:  # uploaded before the trust store existed
        state = "unverified" if manifest.get("signed") else "unsigned"
    verified = state == "verified"
    return {
        "signature": state,
        "publisher": manifest.get("publisher") if verified else None,
        "key_id": manifest.get("key_id") if verified else None,
    }


def manifest_summary(verified: VerifiedPackage, publisher: str | None = None) -> dict[str, Any]:
    """What the server keeps of a manifest: identity, components, signer; not the file lists.

    ``publisher`` names the trusted key that signed it (the trust store's name for it).
    """
    manifest: PackageManifest = verified.manifest
    signature = "verified" if publisher is not None else "unverified" if verified.signed else "unsigned"
    return {
        "id": manifest.id,
        "name": manifest.name,
        "version": manifest.version,
        "description": manifest.description,
        "allow_downgrade": manifest.allow_downgrade,
        "signed": verified.signed,
        "key_id": verified.key_id,
        "key_fingerprint": verified.key_fingerprint,
        "publisher": publisher,
        "signature": signature,
        "unpacked_size": manifest.total_size,
        "components": [
            {
                "id": c.id,
                "name": c.name,
                "version": c.version,
                "env_type": c.env_type,
                "description": c.description,
                "depends": [
                    {
                        "id": d.id,
                        **({} if d.min_version is None else {"min_version": d.min_version}),
                        **({} if d.max_version is None else {"max_version": d.max_version}),
                    }
                    for d in c.depends
                ],
                "files": len(c.files),
                "size": c.total_size,
            }
            for c in manifest.components
        ],
    }


async def add_artifact(
    db: AsyncSession,
    storage: ArtifactStorage,
    filename: str,
    source: BlobSource | Path,
    *,
    trusted_keys: Sequence[Ed25519PublicKey] = (),
    require_signature: bool = False,
    publishers: Sequence[TrustedKey] | None = None,
    allow_unsigned: bool = False,
    max_size: int | None = None,
    max_unpacked: int = DEFAULT_MAX_UNPACKED,
    spool_dir: Path | None = None,
    authority_pk: int = DEFAULT_AUTHORITY_PK,
) -> Artifact:
    """Verify and store an uploaded package; return its (new or existing) :class:`Artifact`.

    The artifact belongs to the management authority ``authority_pk``: identical bytes are
    one artifact per authority, and their blob (content-addressed) is stored once.

    ``source`` is a binary file, async byte chunks (an upload body) or a local file path.
    Signatures present are checked against ``trusted_keys`` when any are given;
    ``require_signature`` refuses unsigned packages (see ``open_package``). Identical bytes
    uploaded again return the existing artifact (its first filename is kept) after the
    same verification, so the caller's signature policy always applies. Commits ``db``.

    ``publishers`` (the authority's trust store, :func:`.publishers.trust_store`) replaces
    ``trusted_keys``/``require_signature`` with the server's upload policy: the package must be
    signed by one of them, unless ``allow_unsigned`` (then an unsigned package, or one signed
    by another key, is stored as ``unsigned``/``unverified``).

    Raises:
        ArtifactError: 422 when the file is not an acceptable omadm package (or not signed
            by a trusted publisher), 413 when it is larger than ``max_size``. Nothing is
            stored or left behind then.
    """
    if publishers is not None and (trusted_keys or require_signature):
        raise ValueError("give either publishers (the trust store) or trusted_keys/require_signature")
    filename = safe_filename(filename)
    spooled: Path | None = None
    try:
        if isinstance(source, Path):
            path = source
            size, digest = await anyio.to_thread.run_sync(_measure, path)
            if max_size is not None and size > max_size:
                raise _too_large(max_size)
        else:
            spooled, size, digest = await _spool(source, spool_dir, max_size)
            path = spooled
        publisher: str | None = None
        if publishers is None:
            verified = await _verify(
                path,
                size,
                digest,
                trusted_keys=trusted_keys,
                require_signature=require_signature,
                max_unpacked=max_unpacked,
            )
        else:
            verified, publisher = await _verify_trusted(
                path, size, digest, publishers, allow_unsigned=allow_unsigned, max_unpacked=max_unpacked
            )

        existing = await _by_key(db, digest, authority_pk)
        try:
            if existing is not None:
                if not await storage.exists(existing.storage_key):  # heal a lost blob
                    await _put_file(storage, path, digest)
                return existing
            blob = await _put_file(storage, path, digest)
        except ArtifactStoreError as exc:  # a bucket down or refusing: nothing was recorded
            raise ArtifactError(503, f"the package could not be stored: {exc}") from exc
        artifact = Artifact(
            authority_pk=authority_pk,
            filename=filename,
            storage_key=blob.key,
            size=blob.size,
            sha256=blob.sha256,
            content_type=PACKAGE_CONTENT_TYPE,
            package_id=verified.manifest.id,
            version=verified.manifest.version,
            manifest=manifest_summary(verified, publisher),
        )
        db.add(artifact)
        try:
            await db.commit()
        except IntegrityError:
            # The same bytes were added concurrently: theirs is the artifact (and the blob).
            await db.rollback()
            existing = await _by_key(db, blob.key, authority_pk)
            if existing is None:
                raise
            return existing
        except BaseException:
            await db.rollback()
            if blob.created:
                await storage.delete(blob.key)
            raise
        await db.refresh(artifact)
        return artifact
    finally:
        if spooled is not None:
            spooled.unlink(missing_ok=True)


async def get_artifact(db: AsyncSession, artifact_id: int, *, authority_pk: int | None = None) -> Artifact:
    """The artifact with this id; :class:`ArtifactError` 404 if there is none.

    With ``authority_pk``, another authority's artifact is a 404 as well (not revealed).
    """
    artifact = await db.get(Artifact, artifact_id)
    if artifact is None or (authority_pk is not None and artifact.authority_pk != authority_pk):
        raise ArtifactError(404, f"no artifact {artifact_id}")
    return artifact


async def list_artifacts(
    db: AsyncSession,
    *,
    package_id: str | None = None,
    version: str | None = None,
    limit: int = 100,
    offset: int = 0,
    authority_pk: int | None = None,
) -> list[Artifact]:
    """Artifacts, newest first, optionally only those of one package (and version), one authority."""
    query = select(Artifact).order_by(Artifact.id.desc()).limit(limit).offset(offset)
    if authority_pk is not None:
        query = query.where(Artifact.authority_pk == authority_pk)
    if package_id is not None:
        query = query.where(Artifact.package_id == package_id)
    if version is not None:
        query = query.where(Artifact.version == version)
    return list((await db.scalars(query)).all())


async def delete_artifact(
    db: AsyncSession,
    storage: ArtifactStorage,
    artifact_id: int,
    *,
    references: ReferenceCheck | None = None,
) -> None:
    """Delete an artifact's row, then its blob; commits ``db``.

    ``references`` (supplied by the jobs/campaigns layer) lists what still uses the
    artifact; any use refuses the deletion with :class:`ArtifactError` 409 naming them.
    Without it nothing is checked. The blob goes only after the row is committed, so a
    failure leaves at worst an unreferenced blob, never a row without bytes.
    """
    artifact = await get_artifact(db, artifact_id)
    if references is not None:
        users = list(await references(db, artifact))
        if users:
            more = f" and {len(users) - 3} more" if len(users) > 3 else ""
            raise ArtifactError(409, f"artifact {artifact_id} is still used by {', '.join(users[:3])}{more}")
    key = artifact.storage_key
    await db.delete(artifact)
    # Another authority's artifact of the same bytes keeps the blob.
    shared = await db.scalar(
        select(Artifact.id).where(Artifact.storage_key == key, Artifact.id != artifact_id)
    )
    await db.commit()
    if shared is None:
        try:
            await storage.delete(key)
        except ArtifactStoreError as exc:  # the row is gone: an orphan blob is only space
            log.warning("artifact %d deleted, but its blob %s stayed in the store: %s", artifact_id, key, exc)


# --------------------------------------------------------------------------- helpers


def _too_large(max_size: int) -> ArtifactError:
    return ArtifactError(413, f"the package is larger than the limit of {max_size} bytes")


async def _spool(source: BlobSource, spool_dir: Path | None, max_size: int | None) -> tuple[Path, int, str]:
    """Copy ``source`` into a private temporary file; return it with its size and SHA-256."""
    fd, name = tempfile.mkstemp(prefix="omadm-upload-", suffix=".omp", dir=spool_dir)
    path = Path(name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:

            async def take(chunk: bytes) -> None:
                nonlocal size
                size += len(chunk)
                if max_size is not None and size > max_size:
                    raise _too_large(max_size)
                digest.update(chunk)
                await anyio.to_thread.run_sync(out.write, chunk)

            if isinstance(source, AsyncIterable):
                async for chunk in source:
                    await take(chunk)
            else:
                reader: BinaryIO = source
                while chunk := await anyio.to_thread.run_sync(reader.read, CHUNK_SIZE):
                    await take(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, size, digest.hexdigest()


def _measure(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK_SIZE):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


async def _verify(
    path: Path,
    size: int,
    digest: str,
    *,
    trusted_keys: Sequence[Ed25519PublicKey],
    require_signature: bool,
    max_unpacked: int,
) -> VerifiedPackage:
    def run() -> VerifiedPackage:
        return open_package(
            path,
            trusted_keys,
            expected_sha256=digest,
            expected_size=size,
            require_signature=require_signature,
            max_unpacked=max_unpacked,
        )

    try:
        return await anyio.to_thread.run_sync(run)
    except PackageError as exc:
        raise ArtifactError(422, f"not an acceptable omadm package: {exc.message}") from exc


async def _verify_trusted(
    path: Path,
    size: int,
    digest: str,
    publishers: Sequence[TrustedKey],
    *,
    allow_unsigned: bool,
    max_unpacked: int,
) -> tuple[VerifiedPackage, str | None]:
    """Verify against the trust store; the package and the name of the publisher that signed it.

    One complete verification in the usual case. Only an allowed upload signed by an unknown
    key is verified twice (the second time without keys, to accept what the admin allowed).
    """
    keys = [p.key for p in publishers]
    try:
        verified = await _verify(
            path, size, digest, trusted_keys=keys, require_signature=False, max_unpacked=max_unpacked
        )
    except ArtifactError as exc:
        if not isinstance(exc.__cause__, SignatureError):
            raise
        if not allow_unsigned:
            known = ", ".join(f"{p.name} (key {p.key_id})" for p in publishers)
            raise ArtifactError(
                422,
                f"the package is signed, but not by a publisher in the trust store ({known}), or it "
                f"was changed after signing ({exc.__cause__.message}); {_TRUST_ADVICE}",
            ) from exc
        verified = await _verify(
            path, size, digest, trusted_keys=(), require_signature=False, max_unpacked=max_unpacked
        )
        return verified, None
    if verified.key_fingerprint is not None:
        name = next(p.name for p in publishers if p.fingerprint == verified.key_fingerprint)
        return verified, name
    if not allow_unsigned:
        if not verified.signed:
            raise ArtifactError(
                422,
                "the package is not signed (no manifest.sig), so the server cannot vouch for it and "
                "devices that require signatures would refuse it (1407); sign it ('omadm package sign "
                f"PACKAGE --key KEY.pem') with a publisher key in the trust store, or {_TRUST_ADVICE}",
            )
        raise ArtifactError(
            422,
            "the package is signed, but the trust store of publisher keys is empty, so the server "
            f"cannot tell who signed it; {_TRUST_ADVICE}",
        )
    return verified, None


async def _put_file(storage: ArtifactStorage, path: Path, digest: str) -> StoredBlob:
    """Put the verified file; refuse if what was stored is not what was verified."""
    with path.open("rb") as fh:
        blob = await storage.put(fh)
    if blob.sha256 != digest:
        if blob.created:
            await storage.delete(blob.key)
        raise ArtifactError(409, "the file changed while it was being stored; upload it again")
    return blob


async def _by_key(db: AsyncSession, key: str, authority_pk: int) -> Artifact | None:
    result: Artifact | None = await db.scalar(
        select(Artifact).where(Artifact.storage_key == key, Artifact.authority_pk == authority_pk)
    )
    return result
