"""Real package downloads for simulated devices (``omadm sim run --downloads real``).

A simulated device fetches the ``PkgURL`` the server sent, as the agent's downloader
(``omadm.agent.scomo.download``) does, but without a file: what the agent keeps on disk as
``<package>.part`` (the bytes so far) a simulated device keeps as a :class:`Partial`: the
offset, the running SHA-256 and the server's validator. That is enough to ask for the rest
with ``Range: bytes=N-`` and ``If-Range`` after a cut connection or a power cut (206 appends,
200 starts again from zero, a 206 that does not continue at N starts again too), and to
check the whole file's hash at the end, while costing a device ~300 bytes instead of the
package. The bytes themselves are dropped as they arrive.

What is checked, and the SCOMO result each failure gives (the agent's table):

* HTTP 401/403/407: 1403; 5xx, 408, 429: 1500 (retried); a refused connection, DNS failure
  or timeout: 1501 (retried); a connection lost mid-body: 1402 (retried, resuming); any
  other status: 1402; a non-HTTP URL: 1402;
* the size: against ``Content-Length``/``Content-Range`` and a download descriptor's
  ``size`` (1402 when they differ);
* the SHA-256 of the whole file: against what the server announced (1402 when it differs).
  The DM tree carries no hash (``plan_job`` sends PkgID, Name and PkgURL only), but an omadm
  server's artifact route serves the artifact's SHA-256 as its strong ETag; a strong ETag of
  64 hex digits is therefore taken as the expected SHA-256. The agent does not do this (it
  has no expected hash either); a server whose 64-hex ETags are not SHA-256 would see 1402.
* the package: its ``manifest.json`` and ``manifest.sig`` (the first two members of the
  gzip'd tar) are read from the first bytes of the download; the signature is checked
  against the profile's trusted keys (``[packages] trusted_keys``) and is required when
  ``require_signature`` is true, exactly as ``omadm.package.verify`` does (1407 when it
  fails). The manifest says which components the package installs, and their versions.

Why not ``omadm.package.verify.open_package`` whole: it wants a file, and it decompresses
every member to compare it with the manifest. Per device that is a temporary file (disk
I/O and a descriptor per download) and ~10 ms of CPU per MB of package; the simulator is
meant to show the *server's* cost of a fleet, and the member check adds nothing the
whole-file SHA-256 does not already cover against transport corruption. So a simulated
device verifies the hash and the signed manifest and skips the per-member comparison; a
package whose members differ from its manifest but whose hash the server vouches for is
accepted here where the agent would refuse it with 1407.

Download descriptors (``application/vnd.oma.dd+xml``, or a ``.dd`` URL whose body is one)
are read with the agent's parser; the object is then fetched, checked against the DD's size
and types, and the install outcome POSTed to ``installNotifyURI`` when the job ends
(:meth:`PackageFetcher.notify`), as the agent does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from omadm.agent.scomo.dd import (
    DD_CONTENT_TYPE,
    DD_MAX_SIZE,
    DescriptorError,
    DownloadDescriptor,
    InstallNotifyStatus,
    looks_like_descriptor,
    media_type,
    parse_descriptor,
    redact_url,
)
from omadm.agent.scomo.download import content_range
from omadm.package._archive import GZIP_MAGIC, MAX_MANIFEST_BYTES, ArchiveReader
from omadm.package._crypto import key_id
from omadm.package.errors import PackageError
from omadm.package.manifest import PackageManifest
from omadm.package.verify import _check_signature, _read_head
from omadm.protocol.codes import ScomoResult

__all__ = [
    "HEAD_KEEP",
    "Component",
    "FetchError",
    "PackageFetcher",
    "PackageInfo",
    "Partial",
    "read_package_head",
]

#: Compressed bytes kept while looking for the signed manifest; a package whose manifest and
#: signature do not fit in them is refused (1407). The agent has no such limit (it reads the
#: file again); 4 MiB of compressed JSON is a manifest of tens of thousands of files.
HEAD_KEEP = 4 << 20
_HEAD_BUDGET = MAX_MANIFEST_BYTES + (1 << 20)
_AUTH_STATUSES = frozenset({401, 403, 407})
_SHA256_ETAG = re.compile(r'"([0-9a-fA-F]{64})"')


class FetchError(Exception):
    """A download failed; ``result`` is the SCOMO result code the agent would report."""

    def __init__(self, result: int, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.result = int(result)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class Component:
    """One component a package installs (from its signed manifest)."""

    id: str
    name: str
    version: str
    env_type: str
    description: str


@dataclass(frozen=True, slots=True)
class PackageInfo:
    """What a simulated device keeps of a verified package: its manifest's essentials."""

    id: str
    name: str
    description: str
    components: tuple[Component, ...]
    allow_downgrade: bool
    signer: str | None  # the key id that signed it, None when unsigned or not checked

    @classmethod
    def from_manifest(cls, manifest: PackageManifest, signer: Ed25519PublicKey | None) -> PackageInfo:
        intern = sys.intern
        return cls(
            intern(manifest.id),
            manifest.name,
            manifest.description,
            tuple(
                Component(intern(c.id), c.name, intern(c.version), intern(c.env_type), c.description)
                for c in manifest.components
            ),
            manifest.allow_downgrade,
            None if signer is None else key_id(signer),
        )


def read_package_head(
    data: bytes, keys: Sequence[Ed25519PublicKey], *, require_signature: bool, complete: bool
) -> PackageInfo | None:
    """The package whose first (compressed) bytes are ``data``, its signature checked.

    None while ``data`` is not enough to tell (``complete`` False); with ``complete`` True a
    package that cannot be read is a :class:`FetchError` 1407, as ``open_package`` says it.
    """
    try:
        if data[:2] != GZIP_MAGIC:
            raise PackageError("not a gzip file (an .omp package is a gzip-compressed tar archive)")
        with ArchiveReader(io.BytesIO(data), limit=_HEAD_BUDGET) as reader:
            manifest_bytes, signature = _read_head(reader)
    except PackageError as exc:
        if not complete:
            return None
        raise FetchError(exc.result, f"the package cannot be read: {exc}") from None
    if signature is None and not complete:
        return None  # the signature may be the next member, beyond these bytes
    try:
        signer = _check_signature(manifest_bytes, signature, keys, require=require_signature)
        manifest = PackageManifest.from_json(manifest_bytes)
    except PackageError as exc:
        raise FetchError(exc.result, str(exc)) from None
    return PackageInfo.from_manifest(manifest, signer)


class Partial:
    """One download in progress: what the agent's ``.part`` and ``.part.meta`` hold, minus the bytes.

    It survives a cut connection and a power cut (the agent's ``.part`` is on disk); it is
    dropped when the download ends either way.
    """

    __slots__ = ("descriptor", "etag", "hasher", "head", "last_modified", "offset", "package", "total", "url")

    def __init__(self) -> None:
        self.url = ""
        self.offset = 0
        self.hasher = hashlib.sha256()
        self.etag: str | None = None
        self.last_modified: str | None = None
        self.total: int | None = None
        self.head: bytearray | None = bytearray()  # compressed prefix until the manifest is read
        self.package: PackageInfo | None = None
        self.descriptor: DownloadDescriptor | None = None

    def restart(self, url: str) -> None:
        """Forget the bytes so far (a 200 instead of a 206, another file): start from zero."""
        self.url = url
        self.offset = 0
        self.hasher = hashlib.sha256()
        self.etag = self.last_modified = None
        self.total = None
        self.head = bytearray()
        self.package = None

    @property
    def validator(self) -> str | None:
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified


#: ``progress(bytes so far, total or None)``; what it raises ends the download (a power cut).
Progress = Callable[[int, int | None], None]


class PackageFetcher:
    """Fetches packages for every device of a run over one shared HTTP client.

    ``trusted_keys`` and ``require_signature`` are the profile's ``[packages]`` table;
    ``retries`` and ``retry_backoff`` the profile's ``[http]`` ones (the agent's downloader
    uses the agent's same settings). ``sleep`` is injectable for tests.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        trusted_keys: Sequence[Ed25519PublicKey] = (),
        require_signature: bool = False,
        retries: int = 3,
        retry_backoff: float = 2.0,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.client = client
        self.keys = tuple(trusted_keys)
        self.require_signature = require_signature
        self.retries = retries
        self.retry_backoff = retry_backoff
        self._sleep = sleep
        #: Bytes received and downloads resumed, for the summary.
        self.bytes_received = 0
        self.resumed = 0
        self._known: dict[PackageInfo, PackageInfo] = {}

    async def fetch(self, url: str, partial: Partial, progress: Progress | None = None) -> PackageInfo:
        """Download ``url`` (a package or a DD naming one), resuming ``partial``; the package read.

        Raises :class:`FetchError` with the agent's result code; whatever ``progress`` raises
        passes through with ``partial`` kept (the next call resumes from it).
        """
        target = partial.descriptor.object_uri if partial.descriptor is not None else url
        delay = self.retry_backoff
        for attempt in range(self.retries + 1):
            try:
                return await self._attempt(url, target, partial, progress)
            except FetchError as exc:
                if not exc.retryable or attempt == self.retries:
                    raise
            await self._sleep(delay)
            delay *= 2
            if partial.descriptor is not None:
                target = partial.descriptor.object_uri
        raise AssertionError("unreachable")  # pragma: no cover

    async def notify(self, partial_descriptor: DownloadDescriptor | None, result: int) -> None:
        """POST the install outcome to a DD's installNotifyURI (best effort, as the agent's)."""
        if partial_descriptor is None or partial_descriptor.install_notify_uri is None:
            return
        status = InstallNotifyStatus.for_scomo_result(result)
        with contextlib.suppress(httpx.HTTPError):  # the Generic Alert is the authoritative report
            await self.client.post(
                partial_descriptor.install_notify_uri,
                content=status.line.encode("ascii"),
                headers={"Content-Type": "text/plain"},
            )

    async def _attempt(
        self, url: str, target: str, partial: Partial, progress: Progress | None
    ) -> PackageInfo:
        if not target.lower().startswith(("http://", "https://")):
            raise FetchError(
                ScomoResult.DOWNLOAD_FAILED, f"cannot download {redact_url(target)!r}: not an http(s) URL"
            )
        if partial.url != target:
            partial.restart(target)
        headers = {}
        resuming = partial.offset > 0 and partial.validator is not None
        if resuming:
            headers = {"Range": f"bytes={partial.offset}-", "If-Range": str(partial.validator)}
        elif partial.offset:
            partial.restart(target)
        where = redact_url(target)
        try:
            async with self.client.stream("GET", target, headers=headers) as response:
                status = response.status_code
                if status == 416 and resuming and partial.total == partial.offset:
                    return self._complete(target, partial)
                _raise_for_status(status, where)
                content_type = response.headers.get("content-type")
                if partial.descriptor is None and (
                    media_type(content_type) == DD_CONTENT_TYPE
                    or (_is_descriptor_url(target) and status == 200)
                ):
                    body = await _read_small(response, where)
                    if media_type(content_type) == DD_CONTENT_TYPE or looks_like_descriptor(body):
                        partial.descriptor = _descriptor(body, target)
                        partial.restart(partial.descriptor.object_uri)
                        return await self._attempt(url, partial.descriptor.object_uri, partial, progress)
                    partial.restart(target)
                    self._feed(partial, body, progress)
                    partial.total = len(body)
                    return self._complete(target, partial)
                if status == 206:
                    first, _last, total = content_range(response)  # read as the agent reads it
                    if first != partial.offset:
                        partial.restart(target)
                        raise FetchError(
                            ScomoResult.DOWNLOAD_FAILED,
                            f"{where} sent a range starting at {first}, not at {partial.offset}",
                            retryable=True,
                        )
                    self.resumed += 1
                    partial.total = total if total is not None else partial.total
                else:
                    if partial.offset:
                        partial.restart(target)
                    length = response.headers.get("content-length", "")
                    partial.total = int(length) if length.isdigit() else None
                    partial.etag = response.headers.get("etag")
                    partial.last_modified = response.headers.get("last-modified")
                descriptor = partial.descriptor
                if descriptor is not None:
                    if not descriptor.accepts_type(content_type):
                        raise FetchError(
                            ScomoResult.DOWNLOAD_FAILED,
                            f"{where} is served as {media_type(content_type)}; the descriptor says "
                            f"{', '.join(descriptor.types)}",
                        )
                    if partial.total is not None and partial.total != descriptor.size:
                        raise FetchError(
                            ScomoResult.DOWNLOAD_FAILED,
                            f"{where} has {partial.total} bytes; the descriptor says {descriptor.size}",
                        )
                try:
                    async for chunk in response.aiter_bytes():
                        self._feed(partial, chunk, progress)
                except httpx.TransportError as exc:
                    raise FetchError(
                        ScomoResult.DOWNLOAD_FAILED,
                        f"connection to {where} lost after {partial.offset} bytes: "
                        f"{exc or type(exc).__name__}",
                        retryable=True,
                    ) from None
        except httpx.TimeoutException as exc:
            raise FetchError(
                ScomoResult.ALTERNATE_DOWNLOAD_SERVER_UNAVAILABLE,
                f"{where}: timed out ({type(exc).__name__})",
                retryable=True,
            ) from None
        except httpx.TransportError as exc:
            raise FetchError(
                ScomoResult.ALTERNATE_DOWNLOAD_SERVER_UNAVAILABLE,
                f"cannot reach {where}: {exc or type(exc).__name__}",
                retryable=True,
            ) from None
        if partial.total is not None and partial.offset < partial.total:
            raise FetchError(
                ScomoResult.DOWNLOAD_FAILED,
                f"{where} ended the body after {partial.offset} of {partial.total} bytes",
                retryable=True,
            )
        return self._complete(target, partial)

    def _feed(self, partial: Partial, chunk: bytes, progress: Progress | None) -> None:
        """One chunk "written to the .part": hashed, counted, kept only while the head is unread."""
        partial.hasher.update(chunk)
        partial.offset += len(chunk)
        self.bytes_received += len(chunk)
        head = partial.head
        if head is not None and partial.package is None:
            before = len(head)
            head += chunk[: HEAD_KEEP - before]
            # Tried each time the prefix doubles: a small package is read once, at the end.
            if len(head) >= 8192 and len(head).bit_length() != before.bit_length():
                self._try_head(partial, complete=False)
            if partial.package is None and len(head) >= HEAD_KEEP:
                partial.head = None  # no manifest in HEAD_KEEP bytes: refused at the end
        if partial.total is not None and partial.offset > partial.total:
            raise FetchError(
                ScomoResult.DOWNLOAD_FAILED,
                f"{redact_url(partial.url)} sent more than the {partial.total} bytes announced",
            )
        if progress is not None:
            progress(partial.offset, partial.total)

    def _try_head(self, partial: Partial, *, complete: bool) -> None:
        if partial.head is None:
            return
        package = read_package_head(
            bytes(partial.head), self.keys, require_signature=self.require_signature, complete=complete
        )
        if package is not None:
            partial.package = self._known.setdefault(package, package)  # one object per package
            partial.head = None

    def _complete(self, where_url: str, partial: Partial) -> PackageInfo:
        where = redact_url(where_url)
        size = partial.offset
        descriptor = partial.descriptor
        if descriptor is not None and size != descriptor.size:
            raise FetchError(
                ScomoResult.DOWNLOAD_FAILED,
                f"{where} gave {size} bytes; the descriptor says {descriptor.size}",
            )
        match = _SHA256_ETAG.fullmatch(partial.etag or "")
        digest = partial.hasher.hexdigest()
        if match is not None and digest != match.group(1).lower():
            raise FetchError(
                ScomoResult.DOWNLOAD_FAILED, f"{where} has SHA-256 {digest}, its ETag says {match.group(1)}"
            )
        if partial.package is None:
            if partial.head is None:
                raise FetchError(
                    ScomoResult.FAILED_PACKAGE_VALIDATION,
                    f"{where}: no signed manifest within the first {HEAD_KEEP} bytes",
                )
            self._try_head(partial, complete=True)
        assert partial.package is not None
        return partial.package


def _is_descriptor_url(url: str) -> bool:
    return url.split("?", 1)[0].lower().endswith(".dd") or url.split("?", 1)[0].endswith("/dd")


def _raise_for_status(status: int, where: str) -> None:
    if status in (200, 206):
        return
    message = f"{where} answered HTTP {status}"
    if status in _AUTH_STATUSES:
        raise FetchError(ScomoResult.ALTERNATE_DOWNLOAD_AUTHENTICATION_FAILURE, message)
    if status >= 500 or status in (408, 429):
        raise FetchError(ScomoResult.ALTERNATE_DOWNLOAD_SERVER_ERROR, message, retryable=True)
    raise FetchError(ScomoResult.DOWNLOAD_FAILED, message)


async def _read_small(response: httpx.Response, where: str) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > DD_MAX_SIZE:
            raise FetchError(
                ScomoResult.DOWNLOAD_FAILED, f"{where}: the descriptor exceeds {DD_MAX_SIZE} bytes"
            )
    return bytes(body)


def _descriptor(body: bytes, url: str) -> DownloadDescriptor:
    try:
        return parse_descriptor(body, base_url=url)
    except DescriptorError as exc:
        raise FetchError(exc.result, f"{redact_url(url)}: {exc}") from None
