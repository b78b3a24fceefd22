"""HTTP routes devices use to fetch packages: downloads with Range, DDs, install-notify.

These are plain Starlette routes (no FastAPI machinery: devices are not API clients, and
DESIGN.md measured the difference), mounted at the application root::

    GET|HEAD /artifacts/{id}/{filename}?d=&e=&s=       the package (Range, If-Range, ETag)
    GET|HEAD /artifacts/{id}/dd?d=&e=[&c=]&s=          a DLOTA 1.0 descriptor for it
    POST     /artifacts/notify/{correlator}?s=         the DLOTA install-notify report

Every request carries a link signed by :mod:`.urls`; a bad or expired link is 403 with
the reason as text (checked before the database is touched, so unsigned probing costs
nothing and reveals nothing), an unknown artifact 404. Bodies are streamed from the
:class:`~.storage.ArtifactStorage` in chunks; no file is read whole into memory.

Range support follows RFC 9110 section 14: one range (``a-b``, ``a-``, ``-n``) is
answered 206 with ``Content-Range``; an unsatisfiable one 416 with ``bytes */size``; a
malformed header is ignored and a multi-range request gets the whole file (200), both as
the RFC allows. ``If-Range`` with our strong ETag (the SHA-256) or our exact
``Last-Modified`` date keeps the Range; any other validator turns it into a 200.

With a store that presigns (an S3 bucket, :mod:`.backends`) the bytes do not pass through
here at all: a valid download link is answered ``307`` to a presigned URL of the store that
expires with the link (a device's Range header travels with the redirect), and a DD names
such a URL as its ``objectURI``. Jobs sent with that store carry the presigned URL directly.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from omadm.server.store.models import Artifact

from .backends import PresigningStorage, presigner
from .dd import DD_CONTENT_TYPE, InstallNotifyError, build_descriptor, parse_install_notify
from .storage import ArtifactStorage, BlobNotFound
from .urls import (
    MIN_SECRET_BYTES,
    LinkError,
    download_url,
    notify_url,
    verify_descriptor,
    verify_download,
    verify_notify,
)

__all__ = ["MAX_NOTIFY_BODY", "InstallNotifyHook", "Unsatisfiable", "artifact_routes", "parse_range"]

log = logging.getLogger(__name__)

#: ``on_install_notify(correlator, status_code, status_text)``, e.g. ``("42", 900, "Success")``.
InstallNotifyHook = Callable[[str, int, str], Awaitable[None]]

#: An install-notify body is one status line; anything much longer is not one.
MAX_NOTIFY_BODY = 4096

_MAX_ID = 2**63 - 1
_RANGE_SPEC = re.compile(r"([0-9]*)-([0-9]*)")


class Unsatisfiable(Exception):
    """The Range names no byte of the representation (answered 416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The ``[start, stop)`` a Range header asks of a ``size``-byte file, or None for "all".

    None is returned for no header, a unit other than bytes, a malformed header and for
    several ranges (served whole, which RFC 9110 allows). Raises :class:`Unsatisfiable`
    when the single range starts at or past the end (or is ``-0``).
    """
    if header is None:
        return None
    unit, _, specs = header.partition("=")
    if unit.strip().lower() != "bytes" or not specs.strip():
        return None
    parts = specs.split(",")
    if len(parts) != 1:
        return None
    match = _RANGE_SPEC.fullmatch(parts[0].strip())
    if match is None:
        return None
    first, last = match.groups()
    if first:
        start = int(first)
        if last and int(last) < start:
            return None  # an invalid range-spec: the header is ignored
        if start >= size:
            raise Unsatisfiable
        stop = size if not last else min(int(last) + 1, size)
        return start, stop
    if not last:
        return None  # "bytes=-"
    suffix = int(last)
    if suffix == 0 or size == 0:
        raise Unsatisfiable
    return max(0, size - suffix), size


def artifact_routes(
    sessions: async_sessionmaker[AsyncSession],
    storage: ArtifactStorage,
    secret: bytes,
    *,
    on_install_notify: InstallNotifyHook | None = None,
    public_url: str | None = None,
    vendor: str = "omadm",
    clock: Callable[[], float] = time.time,
) -> list[BaseRoute]:
    """The artifact routes, bound to a session factory, a blob store and the link secret.

    ``public_url`` is the base URL devices reach this server at (used for the URLs inside
    DDs); by default the request's own base URL is used, which is right unless a proxy
    rewrites the host without forwarding headers. ``on_install_notify`` receives each
    install-notify report (the jobs layer records it); an exception from it is a 500, so the
    device may send the report again. ``clock`` (unix seconds) is for tests.

    Raises:
        ValueError: ``secret`` is shorter than :data:`~.urls.MIN_SECRET_BYTES`.
    """
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the link secret must be at least {MIN_SECRET_BYTES} bytes")
    signer = presigner(storage)

    async def load(artifact_id: int) -> Artifact | None:
        if artifact_id > _MAX_ID:
            return None
        async with sessions() as db:
            return await db.get(Artifact, artifact_id)

    async def download(request: Request) -> Response:
        artifact_id: int = request.path_params["artifact_id"]
        try:
            device_id = verify_download(artifact_id, request.query_params, secret, now=clock())
        except LinkError as exc:
            return _refuse(403, exc.reason)
        artifact = await load(artifact_id)
        if artifact is None or artifact.filename != request.path_params["filename"]:
            return _refuse(404, f"no artifact {artifact_id} named {request.path_params['filename']}")
        if signer is not None:
            expires = int(request.query_params["e"])  # verified above
            target = await _presigned(signer, artifact, expires - int(clock()))
            return RedirectResponse(target, status_code=307, headers={"Cache-Control": "private, no-store"})
        return await _serve(request, storage, artifact, device_id)

    async def descriptor(request: Request) -> Response:
        artifact_id: int = request.path_params["artifact_id"]
        try:
            grant = verify_descriptor(artifact_id, request.query_params, secret, now=clock())
        except LinkError as exc:
            return _refuse(403, exc.reason)
        artifact = await load(artifact_id)
        if artifact is None:
            return _refuse(404, f"no artifact {artifact_id}")
        base = public_url or str(request.base_url)
        notify = None if grant.correlator is None else notify_url(base, grant.correlator, secret)
        if signer is not None:  # the device fetches the bytes from the store, until the DD link expires
            object_uri = await _presigned(signer, artifact, grant.expires - int(clock()))
        else:
            object_uri = download_url(base, artifact, grant.device_id, grant.expires, secret)
        body = build_descriptor(artifact, object_uri, install_notify_uri=notify, vendor=vendor)
        headers = {"Cache-Control": "private, no-store"}
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(body))
            return Response(b"", headers=headers, media_type=DD_CONTENT_TYPE)
        return Response(body, headers=headers, media_type=DD_CONTENT_TYPE)

    async def install_notify(request: Request) -> Response:
        correlator: str = request.path_params["correlator"]
        try:
            verify_notify(correlator, request.query_params, secret)
        except LinkError as exc:
            return _refuse(403, exc.reason)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_NOTIFY_BODY:
                return _refuse(413, f"an install-notify report is at most {MAX_NOTIFY_BODY} bytes")
        try:
            code, text = parse_install_notify(body)
        except InstallNotifyError as exc:
            return _refuse(400, str(exc))
        log.info("install-notify for job %s: %d %s", correlator, code, text)
        if on_install_notify is not None:
            await on_install_notify(correlator, code, text)
        return PlainTextResponse("")

    return [
        Route(
            "/artifacts/notify/{correlator:path}", install_notify, methods=["POST"], name="artifact_notify"
        ),
        Route("/artifacts/{artifact_id:int}/dd", descriptor, methods=["GET", "HEAD"], name="artifact_dd"),
        Route(
            "/artifacts/{artifact_id:int}/{filename}",
            download,
            methods=["GET", "HEAD"],
            name="artifact_download",
        ),
    ]


# --------------------------------------------------------------------------- serving bytes


async def _presigned(signer: PresigningStorage, artifact: Artifact, seconds: int) -> str:
    """The store's URL for ``artifact``, valid for ``seconds`` (the rest of our link's life)."""
    return await signer.presigned_url(
        artifact.storage_key, max(1, seconds), filename=artifact.filename, content_type=artifact.content_type
    )


def _refuse(status: int, reason: str) -> Response:
    return PlainTextResponse(reason + "\n", status_code=status, headers={"Cache-Control": "no-store"})


def _as_utc(moment: datetime) -> datetime:
    # SQLite hands timezone-aware columns back naive; the store keeps UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _if_range_matches(value: str, etag: str, modified: datetime) -> bool:
    """RFC 9110 13.1.5: a strong ETag match, or an HTTP-date exactly equal to Last-Modified."""
    value = value.strip()
    if value.startswith(('"', "W/")):
        return value == etag  # a weak tag never matches: it is not a strong comparison
    try:
        date = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return False
    if date.tzinfo is None:
        return False
    return date == modified


async def _serve(request: Request, storage: ArtifactStorage, artifact: Artifact, device_id: str) -> Response:
    size = artifact.size
    etag = f'"{artifact.sha256}"'
    modified = _as_utc(artifact.created).replace(microsecond=0)
    headers: dict[str, str] = {
        "ETag": etag,
        "Last-Modified": format_datetime(modified, usegmt=True),
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, no-transform",
        "Content-Type": artifact.content_type,
        "X-Content-Type-Options": "nosniff",
    }
    try:
        stored = await storage.size(artifact.storage_key)
    except BlobNotFound:
        stored = None
    if stored != size:
        log.error(
            "artifact %d: storage holds %s bytes for %s, the database says %d",
            artifact.id,
            "no" if stored is None else stored,
            artifact.storage_key,
            size,
        )
        return _refuse(500, f"the bytes of artifact {artifact.id} are missing or damaged in storage")

    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if range_header is not None and if_range is not None and not _if_range_matches(if_range, etag, modified):
        range_header = None  # the device holds another version: send it the whole current one
    try:
        wanted = parse_range(range_header, size)
    except Unsatisfiable:
        headers["Content-Range"] = f"bytes */{size}"
        headers.pop("Content-Type")
        return PlainTextResponse(
            f"range {range_header} is outside the {size}-byte file\n", status_code=416, headers=headers
        )
    if wanted is None:
        status, start, stop = 200, 0, size
    else:
        status, (start, stop) = 206, wanted
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    headers["Content-Length"] = str(stop - start)
    log.debug("artifact %d to %s: %d bytes %d-%d", artifact.id, device_id, stop - start, start, stop - 1)
    if request.method == "HEAD":
        return Response(b"", status_code=status, headers=headers)
    return StreamingResponse(_stream(storage, artifact.storage_key, start, stop), status, headers=headers)


async def _stream(storage: ArtifactStorage, key: str, start: int, stop: int) -> AsyncIterator[bytes]:
    chunks = storage.open_range(key, start, stop)
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
