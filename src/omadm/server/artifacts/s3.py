"""Package bytes in an S3-compatible object store, handed to devices as presigned GET URLs.

``[artifacts] backend = "s3"`` (issue 17, point 7) puts every blob of the content-addressed
store (:mod:`.storage`) into a bucket as ``{prefix}blobs/{sha256}``, and the server stops
serving package bytes itself: a job's ``PkgURL`` is a presigned, expiring ``GetObject`` URL
made when the job is sent (:meth:`S3ArtifactStorage.presigned_url`), so a fleet's downloads
go to the object store and its CDN, not through the DM workers. The database keeps the
package metadata as before; only the bytes move.

Why these choices:

* ``boto3``'s client and transfer manager: uploads larger than ``multipart_threshold`` go up
  as a multipart upload in ``multipart_chunksize`` parts (resumable per part, no single
  5 GB PUT limit), and every S3-compatible store (AWS, MinIO, Ceph RGW, R2, moto) speaks it.
  boto3 is synchronous, so each call runs in a worker thread (``anyio.to_thread``) and the
  event loop never waits on the network; a boto3 client is safe to share between threads.
* Content addressing makes uploads atomic without a temporary object: the SHA-256 is known
  before the upload starts (the caller's file is hashed first), an object becomes visible
  only when its PUT or multipart upload completes, and two writers of one key write the
  same bytes. A ``HEAD`` first says whether the blob was already there (``created``).
* SigV4 presigning (``signature_version = "s3v4"``) signs only the host, so a device may
  add ``Range`` (resume) to the URL it was given; the expiry (``X-Amz-Expires``) is at most
  seven days, which :class:`S3Settings` enforces.
* Store errors (no bucket, no credentials, the endpoint down) become
  :class:`ArtifactStoreError` with the bucket, the endpoint and what went wrong, so an
  operator reads "bucket omadm-packages does not exist at http://..." rather than a trace.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar
from urllib.parse import quote

import anyio
import anyio.to_thread

from .storage import CHUNK_SIZE, ArtifactStoreError, BlobNotFound, BlobSource, StoredBlob, is_valid_key

if TYPE_CHECKING:
    from botocore.client import BaseClient

__all__ = [
    "ADDRESSING_STYLES",
    "MAX_PRESIGN_EXPIRY",
    "MIN_PART_SIZE",
    "ArtifactStoreError",
    "S3ArtifactStorage",
    "S3Settings",
]

#: SigV4 presigned URLs live at most seven days (AWS refuses a longer X-Amz-Expires).
MAX_PRESIGN_EXPIRY = 7 * 24 * 3600
#: S3's smallest part of a multipart upload (all but the last part).
MIN_PART_SIZE = 5 * 1024 * 1024
#: How the bucket appears in URLs: botocore's choice, ``host/bucket/key`` or ``bucket.host/key``.
ADDRESSING_STYLES = ("auto", "path", "virtual")

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class S3Settings:
    """Where and how blobs are kept in S3 (the ``[artifacts]`` table, see :mod:`omadm.server.config`).

    Empty credentials mean boto3's usual chain: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
    (and ``AWS_SESSION_TOKEN``), ``AWS_PROFILE`` or ``profile``, ``~/.aws/credentials``, then
    an instance or container role. ``endpoint_url`` empty means AWS itself.
    """

    bucket: str
    prefix: str = ""
    endpoint_url: str = ""
    region: str = ""
    profile: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""
    session_token: str = ""
    addressing_style: str = "auto"
    presign_expiry: int = 86400
    multipart_threshold: int = 8 * 1024 * 1024
    multipart_chunksize: int = 8 * 1024 * 1024

    def problems(self) -> list[str]:
        """What is wrong with these settings, each naming the setting (empty: usable)."""
        found: list[str] = []
        if not self.bucket:
            found.append('bucket is required with backend = "s3"')
        if self.endpoint_url and not self.endpoint_url.startswith(("http://", "https://")):
            found.append(f"endpoint_url must start with http:// or https://, not {self.endpoint_url!r}")
        if bool(self.access_key_id) != bool(self.secret_access_key):
            found.append("access_key_id and secret_access_key go together: give both or neither")
        if self.session_token and not self.access_key_id:
            found.append("session_token needs access_key_id and secret_access_key")
        if self.profile and self.access_key_id:
            found.append("give either profile or access_key_id/secret_access_key, not both")
        if self.addressing_style not in ADDRESSING_STYLES:
            styles = ", ".join(ADDRESSING_STYLES)
            found.append(f"addressing_style must be one of {styles}, not {self.addressing_style!r}")
        if self.prefix.startswith("/"):
            found.append(f"prefix must not start with '/' (S3 keys have no leading slash): {self.prefix!r}")
        expiry = self.presign_expiry
        if isinstance(expiry, bool) or not isinstance(expiry, int) or not 1 <= expiry <= MAX_PRESIGN_EXPIRY:
            found.append(
                f"presign_expiry must be whole seconds from 1 to {MAX_PRESIGN_EXPIRY} (seven days, the "
                f"SigV4 limit), not {expiry!r}"
            )
        for name in ("multipart_threshold", "multipart_chunksize"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < MIN_PART_SIZE:
                found.append(f"{name} must be whole bytes, at least {MIN_PART_SIZE} (5 MiB), not {value!r}")
        return found


class S3ArtifactStorage:
    """An :class:`~.storage.ArtifactStorage` over one bucket (and key prefix) of an S3-compatible store.

    ``client`` is for tests and for callers that build their own boto3 client; by default
    one is made from ``settings``.
    """

    def __init__(self, settings: S3Settings, *, client: BaseClient | None = None) -> None:
        problems = settings.problems()
        if problems:
            raise ValueError("; ".join(problems))
        self.settings = settings
        self.bucket = settings.bucket
        self._prefix = settings.prefix
        self._client = client if client is not None else _make_client(settings)
        from boto3.s3.transfer import TransferConfig  # noqa: PLC0415 - boto3 is only needed here

        self._transfer = TransferConfig(
            multipart_threshold=settings.multipart_threshold,
            multipart_chunksize=settings.multipart_chunksize,
            use_threads=True,
        )

    def __repr__(self) -> str:
        where = self.settings.endpoint_url or "AWS"
        return f"S3ArtifactStorage(s3://{self.bucket}/{self._prefix} at {where})"

    @property
    def where(self) -> str:
        """The bucket and endpoint, for messages."""
        endpoint = self.settings.endpoint_url or "AWS S3"
        region = f", region {self.settings.region}" if self.settings.region else ""
        return f"bucket {self.bucket} at {endpoint}{region}"

    def object_key(self, key: str) -> str:
        """The S3 object key of a blob (``{prefix}blobs/{sha256}``); refuses a malformed blob key."""
        if not is_valid_key(key):
            raise BlobNotFound(key)
        return f"{self._prefix}blobs/{key}"

    def local_path(self, key: str) -> Path | None:
        return None

    # -- calls in worker threads, with errors made readable ----------------------------------

    async def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        try:
            return await anyio.to_thread.run_sync(fn)
        except BlobNotFound:
            raise
        except Exception as exc:
            raise self._error(what, exc) from exc

    def _error(self, what: str, exc: Exception) -> ArtifactStoreError:
        from botocore.exceptions import (  # noqa: PLC0415
            ClientError,
            ConnectionError,
            NoCredentialsError,
        )

        if isinstance(exc, ConnectionError):  # refused, timed out, no such host
            cause = f"cannot reach the store ({exc})"
        elif isinstance(exc, NoCredentialsError):
            cause = (
                "no AWS credentials: set access_key_id/secret_access_key in [artifacts], a profile, "
                "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            )
        elif isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "?"))
            message = str(error.get("Message", "")).strip()
            if code in ("NoSuchBucket", "404"):  # 404: HEAD has no body to name the code
                cause = "the bucket does not exist"
            elif code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                cause = f"access refused ({code}{': ' + message if message else ''}): check the credentials"
            else:
                cause = f"{code}{': ' + message if message else ''}"
        else:
            cause = f"{type(exc).__name__}: {exc}"
        return ArtifactStoreError(f"object store {self.where}: {what} failed: {cause}")

    def _head(self, object_key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError  # noqa: PLC0415

        try:
            head: dict[str, Any] = self._client.head_object(Bucket=self.bucket, Key=object_key)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("404", "NoSuchKey", "NotFound") or status == 404:
                return None
            raise
        return head

    # -- the ArtifactStorage protocol ----------------------------------------------------------

    async def check(self) -> None:
        """Fail early (at server start) when the bucket is missing or the credentials are refused."""
        await self._call("checking the bucket", lambda: self._client.head_bucket(Bucket=self.bucket))

    async def put(self, source: BlobSource) -> StoredBlob:
        spooled: Path | None = None
        try:
            if isinstance(source, AsyncIterable):
                spooled = await _spool(source)
                handle: BinaryIO = await anyio.to_thread.run_sync(spooled.open, "rb")
            else:
                handle = source
            try:
                return await self._put_file(handle)
            finally:
                if spooled is not None:
                    await anyio.to_thread.run_sync(handle.close)
        finally:
            if spooled is not None:
                spooled.unlink(missing_ok=True)

    async def _put_file(self, handle: BinaryIO) -> StoredBlob:
        start = await anyio.to_thread.run_sync(handle.tell)
        key, size = await anyio.to_thread.run_sync(_hash_file, handle)
        object_key = self.object_key(key)
        if await self._call(f"looking up {object_key}", lambda: self._head(object_key)) is not None:
            return StoredBlob(key=key, size=size, sha256=key, created=False)
        await anyio.to_thread.run_sync(handle.seek, start)

        def upload() -> None:
            self._client.upload_fileobj(
                handle,
                self.bucket,
                object_key,
                ExtraArgs={"Metadata": {"sha256": key}},
                Config=self._transfer,
            )

        await self._call(f"uploading {object_key} ({size} bytes)", upload)
        return StoredBlob(key=key, size=size, sha256=key, created=True)

    async def exists(self, key: str) -> bool:
        if not is_valid_key(key):
            return False
        object_key = self.object_key(key)
        return await self._call(f"looking up {object_key}", lambda: self._head(object_key)) is not None

    async def size(self, key: str) -> int:
        object_key = self.object_key(key)
        head = await self._call(f"looking up {object_key}", lambda: self._head(object_key))
        if head is None:
            raise BlobNotFound(key)
        return int(head["ContentLength"])

    async def open_range(self, key: str, start: int = 0, stop: int | None = None) -> AsyncIterator[bytes]:
        if start < 0 or (stop is not None and stop < start):
            raise ValueError(f"invalid byte range [{start}, {stop})")
        object_key = self.object_key(key)
        if stop is not None and stop == start:
            if not await self.exists(key):
                raise BlobNotFound(key)
            return
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": object_key}
        if start or stop is not None:
            params["Range"] = f"bytes={start}-{'' if stop is None else stop - 1}"

        def get() -> Any:
            from botocore.exceptions import ClientError  # noqa: PLC0415

            try:
                return self._client.get_object(**params)["Body"]
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in ("NoSuchKey", "404"):
                    raise BlobNotFound(key) from None
                if code == "InvalidRange":  # start at or past the end: no bytes, as a file would give
                    return None
                raise

        body = await self._call(f"reading {object_key}", get)
        if body is None:
            return
        try:
            while True:
                chunk: bytes = await self._call(f"reading {object_key}", lambda: body.read(CHUNK_SIZE))
                if not chunk:
                    break
                yield chunk
        finally:
            await anyio.to_thread.run_sync(body.close)

    async def delete(self, key: str) -> bool:
        if not is_valid_key(key):
            return False
        object_key = self.object_key(key)

        def remove() -> bool:
            if self._head(object_key) is None:
                return False
            self._client.delete_object(Bucket=self.bucket, Key=object_key)
            return True

        return await self._call(f"deleting {object_key}", remove)

    # -- presigned downloads ---------------------------------------------------------------

    async def presigned_url(
        self,
        key: str,
        expires_in: int | None = None,
        *,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> str:
        """A GET URL for the blob that the store honours for ``expires_in`` seconds (default:
        ``presign_expiry``), Range requests included, without credentials of the device's own.

        ``filename`` and ``content_type`` ask the store to answer with that
        ``Content-Disposition``/``Content-Type`` (the blob itself is stored without them, being
        shared by every artifact of the same bytes). No request is made: presigning is local.
        """
        seconds = self.settings.presign_expiry if expires_in is None else int(expires_in)
        seconds = max(1, min(seconds, MAX_PRESIGN_EXPIRY))
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.object_key(key)}
        if content_type:
            params["ResponseContentType"] = content_type
        if filename:
            params["ResponseContentDisposition"] = f"attachment; filename*=UTF-8''{quote(filename, safe='')}"

        def sign() -> str:
            url: str = self._client.generate_presigned_url("get_object", Params=params, ExpiresIn=seconds)
            return url

        return await self._call("presigning a download URL", sign)


def _make_client(settings: S3Settings) -> BaseClient:
    """A boto3 S3 client for ``settings``: SigV4, the addressing style, explicit keys if given."""
    import boto3  # noqa: PLC0415 - only an S3 backend needs boto3 loaded
    from botocore.config import Config  # noqa: PLC0415

    session = boto3.session.Session(
        profile_name=settings.profile or None,
        aws_access_key_id=settings.access_key_id or None,
        aws_secret_access_key=settings.secret_access_key or None,
        aws_session_token=settings.session_token or None,
        region_name=settings.region or None,
    )
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": settings.addressing_style},
        retries={"max_attempts": 3, "mode": "standard"},
    )
    client: BaseClient = session.client("s3", endpoint_url=settings.endpoint_url or None, config=config)
    return client


def _hash_file(handle: BinaryIO) -> tuple[str, int]:
    """The SHA-256 (hex) and size of what is left to read in ``handle``."""
    digest = hashlib.sha256()
    size = 0
    while chunk := handle.read(1024 * 1024):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


async def _spool(source: AsyncIterable[bytes]) -> Path:
    """Async chunks into a private temporary file: the hash must be known before the upload."""
    fd, name = tempfile.mkstemp(prefix="omadm-s3-put-")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in source:
                await anyio.to_thread.run_sync(out.write, chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
