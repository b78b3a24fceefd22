"""Where package bytes live: a content-addressed blob store behind a small async interface.

The DM server never holds package bytes in a DM message for URL delivery (SCOMO digest 7.2):
the device fetches ``PkgURL`` from the download routes (:mod:`.routes`), which stream from
an :class:`ArtifactStorage`. The store knows nothing about packages, devices or the
database; it keeps immutable blobs named by their SHA-256, so storing the same bytes twice
costs nothing and a key can never name two different contents.

Why async: every caller is an ASGI handler or an async service function, and the
interesting non-local backends (S3-compatible object stores) are network clients. The
local store does its blocking file I/O in worker threads (``anyio.to_thread``), so the
event loop never waits on a disk.

The other implementation is an S3-compatible bucket (:mod:`.s3`, ``[artifacts] backend =
"s3"``): ``put`` hashes first and uploads to ``blobs/<sha256>`` (multipart when large; an
object appears only once complete, so no temporary name is needed), ``open_range`` is a
ranged ``GetObject``, and the store also offers ``presigned_url`` so that devices fetch
the bytes from the bucket, not through the server (:mod:`.backends`). A store that cannot
be reached raises :class:`ArtifactStoreError`, which names the store and the cause.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

import anyio
import anyio.to_thread

__all__ = [
    "CHUNK_SIZE",
    "ArtifactStorage",
    "ArtifactStoreError",
    "BlobNotFound",
    "BlobSource",
    "LocalArtifactStorage",
    "StoredBlob",
    "is_valid_key",
]

#: Bytes per read when streaming to and from the store.
CHUNK_SIZE = 64 * 1024

#: What ``put`` accepts: a readable binary file (read in a worker thread) or async chunks.
BlobSource = BinaryIO | AsyncIterable[bytes]

_KEY_RE = re.compile(r"[0-9a-f]{64}")


def is_valid_key(key: str) -> bool:
    """Whether ``key`` has the shape of a blob key (64 lower-case hex digits: a SHA-256)."""
    return bool(_KEY_RE.fullmatch(key))


class ArtifactStoreError(RuntimeError):
    """The store failed or could not be reached; the message names the store and the cause."""


class BlobNotFound(LookupError):
    """No blob with this key is in the store."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no stored blob {key}")
        self.key = key


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """The result of :meth:`ArtifactStorage.put`.

    ``key`` is the SHA-256 in hex (the store is content-addressed); ``created`` is False
    when the store already held these bytes, so a caller that wants to undo the ``put``
    must not delete a blob it did not create.
    """

    key: str
    size: int
    sha256: str
    created: bool


@runtime_checkable
class ArtifactStorage(Protocol):
    """A content-addressed store of immutable blobs (see the module docstring).

    Keys are the SHA-256 of the content in lower-case hex. Methods given an unknown key
    raise :class:`BlobNotFound`, except ``exists`` and ``delete``.
    """

    async def put(self, source: BlobSource) -> StoredBlob:
        """Store everything ``source`` yields and return its key, size and SHA-256.

        Atomic: until the call returns, the key does not name partial content. Storing
        bytes that are already present leaves them as they are (``created=False``).
        """
        ...

    async def exists(self, key: str) -> bool: ...

    async def size(self, key: str) -> int: ...

    def open_range(self, key: str, start: int = 0, stop: int | None = None) -> AsyncIterator[bytes]:
        """Yield the bytes ``[start, stop)`` of the blob (``stop=None``: to the end) in chunks.

        An async generator: nothing is opened until the first ``__anext__``, and a missing
        blob raises :class:`BlobNotFound` there. Callers that stop early should ``aclose()`` it.
        """
        ...

    async def delete(self, key: str) -> bool:
        """Remove the blob; True if it was there."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The blob's file when it is on a local file system (no I/O is done), else None."""
        ...


class LocalArtifactStorage:
    """Blobs as files under ``root``: ``root/blobs/<2 hex>/<sha256>``, temp files in ``root/tmp``.

    A put writes ``root/tmp/<random>``, fsyncs it, renames it to its final name and fsyncs
    the directory, so a crash leaves either the whole blob or a stray temp file (removed by
    :meth:`clean_temporary`). Blob files are made read-only (0444).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._blobs = self.root / "blobs"
        self._tmp = self.root / "tmp"

    def __repr__(self) -> str:
        return f"LocalArtifactStorage({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        if not is_valid_key(key):
            raise BlobNotFound(key)  # never let a key walk the file system
        return self._blobs / key[:2] / key

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    async def put(self, source: BlobSource) -> StoredBlob:
        await anyio.to_thread.run_sync(self._make_directories)
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="put-")
        tmp = Path(name)
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                if isinstance(source, AsyncIterable):
                    async for chunk in source:
                        await anyio.to_thread.run_sync(out.write, chunk)
                        digest.update(chunk)
                        size += len(chunk)
                else:
                    while chunk := await anyio.to_thread.run_sync(source.read, CHUNK_SIZE):
                        await anyio.to_thread.run_sync(out.write, chunk)
                        digest.update(chunk)
                        size += len(chunk)
                await anyio.to_thread.run_sync(_flush_and_sync, out)
            key = digest.hexdigest()
            created = await anyio.to_thread.run_sync(self._publish, tmp, key)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return StoredBlob(key=key, size=size, sha256=key, created=created)

    def _make_directories(self) -> None:
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    def _publish(self, tmp: Path, key: str) -> bool:
        final = self._path(key)
        if final.exists():
            tmp.unlink()
            return False
        final.parent.mkdir(exist_ok=True)
        tmp.chmod(0o444)
        os.replace(tmp, final)
        _fsync_directory(final.parent)
        return True

    async def exists(self, key: str) -> bool:
        if not is_valid_key(key):
            return False
        return await anyio.to_thread.run_sync(self._path(key).is_file)

    async def size(self, key: str) -> int:
        path = self._path(key)
        try:
            stat = await anyio.to_thread.run_sync(path.stat)
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        return stat.st_size

    async def open_range(self, key: str, start: int = 0, stop: int | None = None) -> AsyncIterator[bytes]:
        if start < 0 or (stop is not None and stop < start):
            raise ValueError(f"invalid byte range [{start}, {stop})")
        path = self._path(key)
        try:
            handle = await anyio.open_file(path, "rb")
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        async with handle:
            await handle.seek(start)
            remaining = None if stop is None else stop - start
            while remaining is None or remaining > 0:
                want = CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining)
                chunk = await handle.read(want)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    async def delete(self, key: str) -> bool:
        if not is_valid_key(key):
            return False
        return await anyio.to_thread.run_sync(self._unlink, self._path(key))

    @staticmethod
    def _unlink(path: Path) -> bool:
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    async def clean_temporary(self, older_than: float = 3600.0) -> int:
        """Remove temp files left by interrupted puts; return how many were removed.

        Only files untouched for ``older_than`` seconds go, so a worker process calling this
        at startup does not pull a file from under another worker's put in progress.
        """

        def clean() -> int:
            if not self._tmp.is_dir():
                return 0
            cutoff = time.time() - older_than
            removed = 0
            for entry in self._tmp.iterdir():
                try:
                    if entry.stat().st_mtime < cutoff:
                        entry.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
            return removed

        return await anyio.to_thread.run_sync(clean)


def _flush_and_sync(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
