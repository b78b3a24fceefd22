"""Which :class:`~.storage.ArtifactStorage` a server uses, made from its configuration.

Two backends share the one interface: ``local`` (files under ``[server] artifacts_dir``,
served by the server's own download routes) and ``s3`` (a bucket of an S3-compatible store,
read by devices through presigned URLs, :mod:`.s3`). Everything that needs a store (the
application, ``omadm server artifact add``, the demo) asks :func:`open_storage`, so a
configured bucket is used everywhere or nowhere.

A store that can presign (:class:`PresigningStorage`) changes what devices are sent: the
job's ``PkgURL`` is the store's own URL, made when the job is sent (so it cannot expire in
the queue), and the server's signed links answer with a redirect to one (:mod:`.routes`).
boto3 is imported only when an S3 store is opened: a server with local artifacts, and this
module's configuration checks, do not load it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .storage import ArtifactStorage, LocalArtifactStorage

if TYPE_CHECKING:
    from omadm.server.config import ArtifactsConfig, ServerConfig

    from .s3 import S3Settings

__all__ = ["PresigningStorage", "open_storage", "prepare_storage", "presigner", "s3_settings"]


@runtime_checkable
class PresigningStorage(Protocol):
    """A store whose blobs devices can GET directly, with an expiring URL (Range included)."""

    async def presigned_url(
        self,
        key: str,
        expires_in: int | None = None,
        *,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> str: ...


def s3_settings(config: ArtifactsConfig) -> S3Settings:
    """The S3 backend's settings from the ``[artifacts]`` table."""
    from .s3 import S3Settings  # noqa: PLC0415 - no boto3 import: s3.py loads it lazily

    return S3Settings(
        bucket=config.bucket,
        prefix=config.prefix,
        endpoint_url=config.endpoint_url,
        region=config.region,
        profile=config.profile,
        access_key_id=config.access_key_id,
        secret_access_key=config.secret_access_key,
        session_token=config.session_token,
        addressing_style=config.addressing_style,
        presign_expiry=config.presign_expiry,
        multipart_threshold=config.multipart_threshold,
        multipart_chunksize=config.multipart_chunksize,
    )


def open_storage(config: ServerConfig) -> ArtifactStorage:
    """The configured store: an S3 bucket with ``[artifacts] backend = "s3"``, else the directory.

    Raises:
        RuntimeError: the S3 backend is configured but boto3 is not installed (the message
            says what to install).
    """
    if config.artifacts.backend != "s3":
        return LocalArtifactStorage(config.artifacts_path)
    try:
        import boto3  # noqa: F401, PLC0415 - only to say clearly that it is missing
    except ImportError:
        raise RuntimeError(
            '[artifacts] backend = "s3" needs boto3: pip install boto3 (or the omadm server extra)'
        ) from None
    from .s3 import S3ArtifactStorage  # noqa: PLC0415

    return S3ArtifactStorage(s3_settings(config.artifacts))


async def prepare_storage(storage: ArtifactStorage) -> None:
    """What a worker does with its store at start: tidy a directory, or check the bucket.

    An unreachable bucket or refused credentials stop the server here with the store's
    message, rather than at the first upload or job.
    """
    if isinstance(storage, LocalArtifactStorage):
        await storage.clean_temporary()  # uploads a crash left half-written
        return
    check = getattr(storage, "check", None)
    if check is not None:
        await check()


def presigner(storage: ArtifactStorage) -> PresigningStorage | None:
    """``storage`` when devices can fetch its blobs directly, else None (the server serves them)."""
    return storage if isinstance(storage, PresigningStorage) else None
