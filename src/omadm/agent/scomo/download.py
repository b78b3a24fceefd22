"""The device's package downloader: HTTP(S) GET with resume, DD support and SCOMO results.

SCOMO's indirect delivery (digest 7.2) has the device fetch ``PkgURL`` itself, usually
after the DM session, over links that drop and on devices that reboot. So:

* **Nothing partial is ever at ``dest``.** Bytes go to ``<dest>.part``; only a complete,
  size- and hash-checked file is fsynced and renamed to ``dest``. Installers can trust
  whatever they find there.
* **Resume is the normal case.** ``<dest>.part.meta`` (small JSON) remembers the URL and
  the server's validator (strong ETag, else Last-Modified). A later attempt, in this
  process or after a crash, asks for ``Range: bytes=N-`` with ``If-Range``; 206 appends,
  200 (Range ignored or the file changed) starts again from zero, and 416 on a complete
  ``.part`` is accepted once size/hash check out. The existing bytes are re-hashed so the
  SHA-256 still covers the whole file.
* **Every failure is a SCOMO result code** (``DownloadError.result``), chosen so the
  server can tell whose fault it was (digest section 5):

  ====================================================  ======  =========
  what happened                                         result  retryable
  ====================================================  ======  =========
  HTTP 401 / 403 / 407, TLS server not trusted          1403    no
  connection refused, DNS failure, connect/read timeout 1501    yes
  HTTP 5xx, 408, 429                                    1500    yes
  HTTP 404 / 410 / other 4xx, unexpected status         1402    no
  connection lost mid-body                              1402    yes (resumes)
  size or SHA-256 differs from what was expected        1402    no (.part deleted)
  more bytes than declared (DD, expected, length)       1402    no (.part deleted)
  over ``max_package_bytes`` (declared or sent)         1402    no (.part deleted)
  not enough free space for the announced size          1404    no
  free space under ``reserve_bytes`` while writing      1404    no (.part deleted)
  redirect (or a DD's objectURI) to a local address     1402    no
  DD invalid / unsupported DDVersion                    1402    no
  DD size or type differs from the object (905)         1402    no
  none of the DD's types is acceptable (953)            1413    no
  URL scheme other than http/https                      1402    no
  ====================================================  ======  =========

  A SHA-256 mismatch is a *download* failure (1402), not 1407: the expected hash comes
  from the server's own metadata, so a mismatch means corrupt or substituted bytes in
  transit or on the server, and 1407 is kept for the package signature check done after
  the download. The ``.part`` is deleted because resuming corrupt bytes cannot help.
  Generally, a failure that says the *data* is wrong deletes the ``.part``; one that says
  nothing about the data (network, HTTP status, a disk that is full or too small for the
  announced size) keeps it for a later resume. The streaming caps below delete it.

* **Bounded on disk.** An endless body must not fill the disk, so while streaming the
  download stops at the first of: the size the job declared (the DD's ``size``, the
  caller's ``expected_size`` or the Content-Length: more bytes than declared is a failure),
  ``max_package_bytes`` (``[scomo] max_package_bytes``, 2 GiB by default, whatever was
  declared; a declared size above it is refused before the body), and free space: every
  MiB written, ``free_space`` (``disk_free`` minus ``[scomo] reserve_bytes`` when built
  from the config) must still hold what is left of the announced size, or be non-negative
  when the size is unknown. Each check is made *before* a chunk is written, so nothing
  past a cap reaches the disk. These stops delete the ``.part``: the bytes are what eats
  the disk, and resuming an endless body cannot help. The result for a size cap is 1402
  (Download Failed), not 1403, which SCOMO reserves for a download *authentication*
  failure; running out of room under the reserve is 1404 (Device Out of Memory).

* **Redirects are followed one hop at a time** (at most the client's ``max_redirects``),
  each target checked before it is requested: a target whose host resolves to a loopback,
  link-local, unspecified, multicast or reserved address (:mod:`omadm.addresses`)
  is refused, so a download server cannot make the device fetch from its own services or
  a metadata endpoint (server-side request forgery). The same holds for a DD's objectURI
  and installNotifyURI, which the download server chose too. Exempt are: the URL the DM
  server gave (it is not a redirect; labs serve packages on loopback), a target on the
  *same origin* (scheme, host, port) as the URL it came from (nothing new is reached),
  and every target when ``[scomo] allow_local_redirects`` is set (lab use). A refusal is
  1402 (Download Failed, not retryable: the server would send us to the same place); a
  name that does not resolve is 1501, retryable, as when connecting to it fails. The
  check resolves the name itself, so a DNS answer that changes between the check and the
  connection (rebinding) is not caught here.

* **Retries** (``retries`` more attempts, exponential backoff from ``retry_backoff``) are
  made only for retryable failures, each one resuming from the ``.part``.

* **Download descriptors.** When the response is ``application/vnd.oma.dd+xml`` (or the
  URL ends in ``.dd`` and the body parses as a DD), the DD is parsed, its ``size`` checked
  against free space, and its ``objectURI`` fetched instead, checking size and type
  against the DD. Failures are reported to ``installNotifyURI`` at once (the device knows
  the outcome); success is *not*, because DLOTA's 900 means "installed": the caller
  reports it with :meth:`Downloader.report_install` once the install outcome is known.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from omadm import __version__
from omadm.addresses import LocalAddressError, check_host
from omadm.agent.tls import describe_tls_error
from omadm.agent.transport import tls_context
from omadm.protocol.codes import ScomoResult

from ..config import AgentConfig
from .dd import (
    DD_CONTENT_TYPE,
    DD_MAX_SIZE,
    DescriptorError,
    DownloadDescriptor,
    InstallNotifyStatus,
    looks_like_descriptor,
    media_type,
    parse_descriptor,
    redact_url,
    send_install_notify,
)

__all__ = [
    "DEFAULT_MAX_PACKAGE_BYTES",
    "DownloadError",
    "DownloadResult",
    "Downloader",
    "FreeSpace",
    "Progress",
    "content_range",
    "disk_free",
    "meta_path",
    "part_path",
]

log = logging.getLogger(__name__)

#: ``progress(bytes_so_far, total_or_None)``; raising from it aborts and keeps the ``.part``.
Progress = Callable[[int, int | None], None]
#: ``free_space(directory) -> bytes available``; injectable so tests can simulate a full disk.
FreeSpace = Callable[[Path], int]

_CHUNK = 64 * 1024
#: Free space is checked again after this many bytes are written (not at every chunk).
_SPACE_CHECK_EVERY = 1024 * 1024
#: The default ``max_package_bytes`` (as ``[scomo] max_package_bytes``).
DEFAULT_MAX_PACKAGE_BYTES = 2 * 1024 * 1024 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
_AUTH_STATUSES = frozenset({401, 403, 407})
_RETRYABLE_4XX = frozenset({408, 429})
_CONTENT_RANGE_RE = re.compile(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)\s*/\s*(\d+|\*)\s*", re.IGNORECASE)
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_META_VERSION = 1


def disk_free(path: Path) -> int:
    """Bytes available in the file system holding ``path`` (the default ``free_space``)."""
    return shutil.disk_usage(path).free


def part_path(dest: Path) -> Path:
    """Where the bytes of ``dest`` accumulate until they are complete and verified."""
    return dest.with_name(dest.name + ".part")


def meta_path(dest: Path) -> Path:
    """The JSON next to the ``.part`` that makes it resumable (URL and validators)."""
    return dest.with_name(dest.name + ".part.meta")


class DownloadError(Exception):
    """A download failed; ``result`` is the SCOMO result code to report.

    ``retryable`` says whether trying again (later, resuming) may succeed. ``http_status``
    is the server's status when there was one; ``descriptor`` the DD when the failure
    happened in a DD flow, and ``notify_status`` the install-notify code that was (or
    would have been) reported for it.
    """

    def __init__(
        self,
        result: int,
        message: str,
        *,
        retryable: bool = False,
        http_status: int | None = None,
        notify_status: InstallNotifyStatus | None = None,
        descriptor: DownloadDescriptor | None = None,
    ) -> None:
        super().__init__(message)
        self.result = result
        self.retryable = retryable
        self.http_status = http_status
        self.notify_status = notify_status
        self.descriptor = descriptor

    @property
    def message(self) -> str:
        return str(self)


@dataclass(frozen=True, slots=True)
class DownloadResult:
    """A complete, verified download at ``path``.

    ``url`` is what was actually fetched (the DD's objectURI in a DD flow); keep
    ``descriptor`` to report the install outcome later with ``report_install``.
    """

    path: Path
    size: int
    sha256: str
    content_type: str | None
    descriptor: DownloadDescriptor | None
    url: str


@dataclass(frozen=True, slots=True)
class _Meta:
    """What ``.part.meta`` holds: enough to ask the server for "the rest of the same file"."""

    url: str  # redacted: no credentials on disk
    etag: str | None
    last_modified: str | None
    total: int | None
    content_type: str | None
    resumable: bool  # False when the body was content-encoded: ranges would not line up


@dataclass(frozen=True, slots=True)
class _Resume:
    offset: int
    validator: str | None
    meta: _Meta


@dataclass(frozen=True, slots=True)
class _Job:
    url: str
    dest: Path
    part: Path
    meta: Path
    expected_size: int | None
    expected_sha256: str | None
    progress: Progress | None


class _Restart(Exception):
    """The ``.part`` cannot be continued; discard it and ask again from byte zero."""


class Downloader:
    """Fetches packages over HTTP(S) into files, resumably; see the module docstring.

    ``scratch`` is where a relative ``dest`` is placed (a private temporary directory when
    not given). ``sleep`` and ``free_space`` are injectable for tests; ``client`` too (it
    is then not closed by :meth:`close`). ``accept_types``, when given, is the set of
    package media types the device can install: a DD offering none of them is refused
    before the download (953, SCOMO 1413). ``max_package_bytes`` caps every download;
    ``allow_local_redirects`` turns the local-address policy for redirects off (see the
    module docstring). ``free_space`` is what may still be written: :meth:`from_config`
    makes it the disk's free space minus ``[scomo] reserve_bytes``.

    One Downloader may serve many downloads, one at a time per ``dest``.

    Its own HTTP client is made when a download or an install-notify report starts and
    closed when the last one running ends: an agent holds a Downloader for months and
    downloads rarely, and an httpx client keeps a TLS context with a CA bundle resident
    (about 2 MB). The TLS settings are checked here all the same (a CA bundle or client
    certificate that cannot be loaded is a ``ValueError`` now, not at the first download).
    """

    def __init__(
        self,
        *,
        scratch: Path | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        retry_backoff: float = 2.0,
        max_backoff: float = 300.0,
        verify: bool = True,
        ca_file: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        pins: Collection[bytes] = (),
        sleep: Callable[[float], None] = time.sleep,
        free_space: FreeSpace = disk_free,
        client: httpx.Client | None = None,
        accept_types: Collection[str] | None = None,
        max_package_bytes: int = DEFAULT_MAX_PACKAGE_BYTES,
        allow_local_redirects: bool = False,
    ) -> None:
        if max_package_bytes <= 0:
            raise ValueError("max_package_bytes must be a positive number of bytes")
        self._scratch = scratch
        self.max_package_bytes = max_package_bytes
        self.allow_local_redirects = allow_local_redirects
        self.timeout = timeout
        self.retries = max(0, retries)
        self.retry_backoff = retry_backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._free_space = free_space
        self.accept_types = None if accept_types is None else frozenset(t.lower() for t in accept_types)
        self._verify = tls_context(verify, ca_file, client_cert, client_key, pins)
        self._injected_client = client
        self._owned_client: httpx.Client | None = None
        self._client_users = 0
        self._client_lock = threading.Lock()

    @classmethod
    def from_config(cls, config: AgentConfig, **overrides: Any) -> Downloader:
        """A Downloader with the agent's timeout, retry, TLS and ``[scomo]`` limits.

        Downloads of relative ``dest`` names go to ``<data_dir>/downloads``; the disk must
        keep ``reserve_bytes`` free.
        """
        reserve = config.scomo.reserve_bytes
        options: dict[str, Any] = {
            "scratch": config.data_dir / "downloads",
            "timeout": config.timeout,
            "retries": config.retries,
            "retry_backoff": config.retry_backoff,
            "verify": config.tls.verify,
            "ca_file": config.tls.ca_file or None,
            "client_cert": config.tls.client_cert or None,
            "client_key": config.tls.client_key or None,
            "pins": config.tls.pins,  # the same keys as the DM server's (omadm.agent.tls)
            "free_space": lambda directory: disk_free(directory) - reserve,
            "max_package_bytes": config.scomo.max_package_bytes,
            "allow_local_redirects": config.scomo.allow_local_redirects,
        }
        options.update(overrides)
        return cls(**options)

    @property
    def scratch(self) -> Path:
        """The directory for relative ``dest`` paths (created on first use)."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="omadm-downloads-"))
        return self._scratch

    def close(self) -> None:
        with self._client_lock:
            client, self._owned_client = self._owned_client, None
        if client is not None:
            client.close()

    @property
    def _client(self) -> httpx.Client:
        """The injected client, else our own (made now if no operation holds one)."""
        if self._injected_client is not None:
            return self._injected_client
        with self._client_lock:
            if self._owned_client is None:
                self._owned_client = httpx.Client(
                    verify=self._verify,
                    timeout=self.timeout,
                    follow_redirects=False,  # followed in _open, one checked hop at a time
                    headers={"User-Agent": f"omadm-agent/{__version__}"},
                )
            return self._owned_client

    @contextmanager
    def _client_in_use(self) -> Iterator[None]:
        """One public operation's use of the client: the last one to end closes our own."""
        with self._client_lock:
            self._client_users += 1
        try:
            yield
        finally:
            with self._client_lock:
                self._client_users -= 1
                idle = self._client_users == 0
                client = self._owned_client if idle else None
                if idle:
                    self._owned_client = None
            if client is not None:
                client.close()

    def __enter__(self) -> Downloader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- public operations ----------------------------------------------------------------

    def download(
        self,
        url: str,
        dest: Path,
        *,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
        resume: bool = True,
        progress: Progress | None = None,
        notify_failures: bool = True,
    ) -> DownloadResult:
        """Fetch ``url`` (a package or a DD naming one) into ``dest``.

        ``resume=False`` discards a ``.part`` left by an earlier call; retries inside this
        call still resume. With ``notify_failures`` (the default) a failure in a DD flow is
        POSTed to the DD's installNotifyURI before the error is raised.

        Raises:
            DownloadError: with the SCOMO result code; ``dest`` is then untouched. Local
                storage errors are included: a full disk is 1404, other I/O errors 1402.
            Exception: whatever ``progress`` raised (a way to cancel; an OSError counts as a
                storage error); the ``.part`` stays resumable.
        """
        dest = Path(dest)
        if not dest.is_absolute():
            dest = self.scratch / dest
        job = _Job(
            url=url,
            dest=dest,
            part=part_path(dest),
            meta=meta_path(dest),
            expected_size=expected_size,
            expected_sha256=_normalize_sha256(expected_sha256),
            progress=progress,
        )
        with self._client_in_use():  # closed when done: see the class docstring
            try:
                _check_scheme(url)
                if expected_size is not None and expected_size < 0:
                    raise DownloadError(
                        ScomoResult.DOWNLOAD_FAILED, f"expected size {expected_size} is negative"
                    )
                if expected_size is not None and expected_size > self.max_package_bytes:
                    raise self._too_big(None, f"{redact_url(url)} is announced with {expected_size} bytes")
                try:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    if not resume:
                        _discard(job)
                except OSError as exc:
                    raise _storage_error(exc, dest) from exc
                result = self._with_retries(job)
            except DownloadError as exc:
                if notify_failures:
                    self._notify_failure(exc)
                raise
        log.info("downloaded %s to %s (%d bytes)", redact_url(result.url), result.path, result.size)
        return result

    def report_install(self, descriptor: DownloadDescriptor, status: InstallNotifyStatus) -> bool:
        """POST the install outcome to the DD's installNotifyURI, if it has one.

        Returns True when the report was delivered; False when there is nowhere to send it
        or the server did not take it (logged, never raised: the Generic Alert is the
        authoritative report). Use ``InstallNotifyStatus.for_scomo_result`` to turn the
        install's SCOMO result into a status.
        """
        if descriptor.install_notify_uri is None:
            return False
        with self._client_in_use():
            return self._send_notify(
                descriptor.source_url, descriptor.install_notify_uri, status, reached=(descriptor.object_uri,)
            )

    # -- attempts and retries -------------------------------------------------------------

    def _with_retries(self, job: _Job) -> DownloadResult:
        attempts = self.retries + 1
        delay = self.retry_backoff
        for attempt in range(1, attempts + 1):
            try:
                return self._attempt(job)
            except DownloadError as exc:
                if not exc.retryable or attempt == attempts:
                    raise
                log.warning(
                    "download of %s failed (%s: %s); retry %d/%d in %.1fs",
                    redact_url(job.url),
                    exc.result,
                    exc,
                    attempt,
                    attempts - 1,
                    delay,
                )
                self._sleep(delay)
                delay = min(delay * 2, self.max_backoff)
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, job: _Job) -> DownloadResult:
        # OSError here is our own storage (httpx errors are not OSErrors), or one raised
        # by the progress callback, which is treated alike.
        try:
            if job.expected_size is not None:
                self._check_space(job, job.expected_size - _resume_offset(job, job.url))
            outcome = self._fetch(job, job.url, descriptor=None)
        except OSError as exc:
            raise _storage_error(exc, job.dest) from exc
        if isinstance(outcome, DownloadResult):
            return outcome
        descriptor = outcome
        try:
            try:
                self._check_hop(
                    descriptor.source_url,
                    descriptor.object_uri,
                    "points at",
                    notify_status=InstallNotifyStatus.INVALID_DESCRIPTOR,
                )
                self._check_descriptor(job, descriptor)
                result = self._fetch(job, descriptor.object_uri, descriptor=descriptor)
            except OSError as exc:
                raise _storage_error(exc, job.dest) from exc
        except DownloadError as exc:
            if exc.descriptor is None:
                exc.descriptor = descriptor
            raise
        assert isinstance(result, DownloadResult)  # DDs are followed one level only
        return result

    def _check_descriptor(self, job: _Job, descriptor: DownloadDescriptor) -> None:
        """The checks DLOTA wants before the object is fetched: acceptable type, room for it."""
        if self.accept_types is not None and not any(
            t.lower() in self.accept_types for t in descriptor.types
        ):
            raise DownloadError(
                ScomoResult.UNSUPPORTED_ENVIRONMENT,
                f"the descriptor offers {', '.join(descriptor.types)}; this device accepts "
                f"{', '.join(sorted(self.accept_types))}",
                notify_status=InstallNotifyStatus.NON_ACCEPTABLE_CONTENT,
            )
        if job.expected_size is not None and job.expected_size != descriptor.size:
            raise DownloadError(
                ScomoResult.DOWNLOAD_FAILED,
                f"the descriptor announces {descriptor.size} bytes, {job.expected_size} were expected",
                notify_status=InstallNotifyStatus.ATTRIBUTE_MISMATCH,
            )
        if descriptor.size > self.max_package_bytes:
            raise self._too_big(descriptor, f"the descriptor announces {descriptor.size} bytes")
        self._check_space(job, descriptor.size - _resume_offset(job, descriptor.object_uri))

    def _notify_failure(self, exc: DownloadError) -> None:
        cause = exc.__cause__
        if isinstance(cause, DescriptorError):
            if cause.install_notify_uri:
                self._send_notify(cause.source_url, cause.install_notify_uri, cause.status)
            return
        if exc.descriptor is None or exc.descriptor.install_notify_uri is None:
            return
        status = exc.notify_status or InstallNotifyStatus.for_scomo_result(exc.result)
        exc.notify_status = status
        # Not the objectURI's server as "reached": it may be the very target just refused.
        self._send_notify(exc.descriptor.source_url, exc.descriptor.install_notify_uri, status)

    def _send_notify(
        self, origin: str | None, uri: str, status: InstallNotifyStatus, *, reached: Collection[str] = ()
    ) -> bool:
        """POST an install-notify report, unless the DD's notify URI is a refused local one.

        ``reached``: the DD's objectURI once it was fetched (so its server passed the policy);
        it stands in for ``origin`` when the DD was stored and parsed again without its URL.
        """
        try:
            self._check_hop(origin, uri, "names the install-notify URI", reached=reached)
        except DownloadError as exc:
            log.warning("install-notify %r not sent: %s", status.line, exc)
            return False
        return send_install_notify(self._client, uri, status)

    # -- where the download server may send us -----------------------------------------

    def _check_hop(
        self,
        origin: str | None,
        target: str,
        verb: str,
        *,
        notify_status: InstallNotifyStatus | None = None,
        reached: Collection[str] = (),
    ) -> None:
        """Refuse ``target`` (a URL that ``origin`` sent us to) if it is local; see the module docstring.

        ``verb`` says how ``origin`` named it, for the message ("redirects to", ...). A target
        on the origin of ``origin`` or of a ``reached`` URL (one already fetched) passes.
        """
        _check_scheme(target)
        if self.allow_local_redirects:
            return
        parts = urlsplit(target)
        try:
            port = parts.port or _DEFAULT_PORTS[parts.scheme.lower()]
        except ValueError:
            raise DownloadError(
                ScomoResult.DOWNLOAD_FAILED, f"{redact_url(target)!r} has an invalid port"
            ) from None
        known = [u for u in (origin, *reached) if u is not None]
        if (parts.scheme.lower(), parts.hostname, port) in {_origin(u) for u in known}:
            return  # the same server again: nothing new is reached
        host = parts.hostname
        assert host is not None  # _check_scheme refuses URLs without a host
        where = redact_url(origin) if origin is not None else "the download server"
        try:
            check_host(host, port)
        except LocalAddressError as exc:
            raise DownloadError(
                # Download Failed: the device refuses to fetch from there, as for an unsupported
                # URL scheme; not 15xx (a server error, retryable here: the redirect would repeat)
                # and not 1403 (authentication).
                ScomoResult.DOWNLOAD_FAILED,
                f"{where} {verb} {redact_url(target)}, but {exc}: refused (local addresses are "
                "followed only with [scomo] allow_local_redirects)",
                notify_status=notify_status,
            ) from None
        except OSError as exc:
            raise DownloadError(
                ScomoResult.ALTERNATE_DOWNLOAD_SERVER_UNAVAILABLE,
                f"{where} {verb} {redact_url(target)}, but {host} does not resolve: {exc}",
                retryable=True,
                notify_status=notify_status,
            ) from None

    def _too_big(self, descriptor: DownloadDescriptor | None, what: str) -> DownloadError:
        """Over ``max_package_bytes``: 1402 (1403 would say the credentials were wrong)."""
        return DownloadError(
            ScomoResult.DOWNLOAD_FAILED,
            f"{what}, over this device's max_package_bytes of {self.max_package_bytes} bytes",
            notify_status=InstallNotifyStatus.DEVICE_ABORTED,
            descriptor=descriptor,
        )

    # -- one request ----------------------------------------------------------------------

    def _fetch(
        self, job: _Job, url: str, *, descriptor: DownloadDescriptor | None
    ) -> DownloadResult | DownloadDescriptor:
        """GET ``url`` into the ``.part`` (resuming if possible); a DD is returned parsed.

        Descriptors are only recognised on the first URL (``descriptor is None``): a DD
        that points at another DD is not followed.
        """
        _check_scheme(url)
        for _round in range(2):  # at most one restart from zero per attempt
            resume = _resume_state(job, url)
            headers = {"Accept-Encoding": "identity"}  # ranges count bytes of the file itself
            if resume is not None:
                headers["Range"] = f"bytes={resume.offset}-"
                if resume.validator is not None:
                    headers["If-Range"] = resume.validator
            try:
                with self._open(url, headers) as response:
                    status = response.status_code
                    if status == 416 and resume is not None:
                        return self._range_not_satisfiable(job, url, response, resume, descriptor)
                    _raise_for_status(response, url)
                    if status == 206:
                        if resume is None:
                            raise _Restart("a partial answer to a request without Range")
                        _check_partial(response, resume)
                    # Chunks as they arrive (no re-chunking): when the connection drops,
                    # every byte received so far is already on disk for the resume.
                    chunks: Iterator[bytes] = response.iter_bytes()
                    if status == 200 and descriptor is None:
                        document, chunks = self._sniff_descriptor(response, url, chunks)
                        if document is not None:
                            return _parse_dd(document, str(response.url))
                    return self._receive(
                        job,
                        url,
                        response,
                        chunks,
                        resume=resume if status == 206 else None,
                        descriptor=descriptor,
                    )
            except _Restart as restart:
                log.info("cannot continue %s (%s); starting again from zero", job.part, restart)
                _discard(job)
        raise DownloadError(
            ScomoResult.DOWNLOAD_FAILED,
            f"{redact_url(url)} keeps answering ranges that do not fit the partial download",
            retryable=True,
        )

    @contextmanager
    def _open(self, url: str, headers: dict[str, str]) -> Iterator[httpx.Response]:
        """GET ``url``, following redirects one checked hop at a time; the final response."""
        where = redact_url(url)
        try:
            request = self._client.build_request("GET", url, headers=headers)
            response = self._client.send(request, stream=True, follow_redirects=False)
            hops = 0
            # httpx builds the next request as its own redirect handling would (Range kept,
            # Authorization dropped across origins) but leaves sending it to us.
            while response.next_request is not None:
                response.close()
                if hops == self._client.max_redirects:
                    raise httpx.TooManyRedirects("Exceeded maximum allowed redirects.", request=request)
                hops += 1
                following = response.next_request
                self._check_hop(
                    str(request.url), str(following.url), f"answered {response.status_code}, redirecting to"
                )
                request = following
                response = self._client.send(request, stream=True, follow_redirects=False)
        except httpx.TimeoutException:
            raise DownloadError(
                ScomoResult.ALTERNATE_DOWNLOAD_SERVER_UNAVAILABLE,
                f"no answer from {where} within {self.timeout:g}s",
                retryable=True,
            ) from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise DownloadError(ScomoResult.DOWNLOAD_FAILED, f"cannot fetch {where}: {exc}") from None
        except httpx.TooManyRedirects:
            raise DownloadError(ScomoResult.DOWNLOAD_FAILED, f"{where} redirects too many times") from None
        except httpx.TransportError as exc:
            if _caused_by_tls(exc):
                why = describe_tls_error(exc, host=request.url.host) or str(exc)
                raise DownloadError(
                    ScomoResult.ALTERNATE_DOWNLOAD_AUTHENTICATION_FAILURE, f"TLS with {where} failed: {why}"
                ) from None
            raise DownloadError(
                ScomoResult.ALTERNATE_DOWNLOAD_SERVER_UNAVAILABLE,
                f"cannot reach {where}: {exc or type(exc).__name__}",
                retryable=True,
            ) from None
        try:
            yield response
        finally:
            response.close()

    def _sniff_descriptor(
        self, response: httpx.Response, url: str, chunks: Iterator[bytes]
    ) -> tuple[bytes | None, Iterator[bytes]]:
        """The DD's bytes if this 200 response is a DD, and the chunks still to be consumed."""
        declared = media_type(response.headers.get("content-type")) == DD_CONTENT_TYPE
        named = any(urlsplit(u).path.lower().endswith(".dd") for u in (url, str(response.url)))
        if not (declared or named):
            return None, chunks
        length = _int_header(response, "content-length")
        if not declared and length is not None and length > DD_MAX_SIZE:
            return None, chunks
        buffered: list[bytes] = []
        size = 0
        for chunk in _guard_body(chunks, 0, None, url):
            buffered.append(chunk)
            size += len(chunk)
            if size > DD_MAX_SIZE:
                break
        data = b"".join(buffered)
        if declared:
            if size > DD_MAX_SIZE:
                raise DownloadError(
                    ScomoResult.DOWNLOAD_FAILED,
                    f"the download descriptor at {redact_url(url)} is larger than {DD_MAX_SIZE} bytes",
                    notify_status=InstallNotifyStatus.INVALID_DESCRIPTOR,
                )
            return data, iter(())
        if size <= DD_MAX_SIZE and looks_like_descriptor(data):
            return data, iter(())
        return None, itertools.chain([data], chunks)

    def _range_not_satisfiable(
        self,
        job: _Job,
        url: str,
        response: httpx.Response,
        resume: _Resume,
        descriptor: DownloadDescriptor | None,
    ) -> DownloadResult:
        """416 to ``Range: bytes=N-``: fine if the ``.part`` already holds all N bytes."""
        total = content_range(response)[2]
        if total is None:
            total = resume.meta.total
        if total != resume.offset:
            raise _Restart(f"416 with the file at {total} bytes, ours has {resume.offset}")
        log.info("%s was already complete (%d bytes)", job.part, resume.offset)
        if job.progress is not None:
            job.progress(resume.offset, total)
        hasher = hashlib.sha256()
        _feed_file(hasher.update, job.part, resume.offset)
        digest = hasher.hexdigest()
        return self._complete(
            job,
            url,
            size=resume.offset,
            digest=digest,
            content_type=resume.meta.content_type,
            descriptor=descriptor,
        )

    # -- the body -------------------------------------------------------------------------

    def _receive(
        self,
        job: _Job,
        url: str,
        response: httpx.Response,
        chunks: Iterator[bytes],
        *,
        resume: _Resume | None,
        descriptor: DownloadDescriptor | None,
    ) -> DownloadResult:
        """Stream a 200 (from zero) or 206 (after ``resume.offset``) into the ``.part``."""
        offset = resume.offset if resume is not None else 0
        if resume is None and job.part.exists():
            log.info("%s: receiving the whole file; the old %s is discarded", redact_url(url), job.part.name)
        content_type = response.headers.get("content-type")
        encoded = response.headers.get("content-encoding", "identity").lower() not in ("", "identity")
        total = _announced_total(response, offset, encoded)
        if total is None and resume is not None:
            total = resume.meta.total
        self._check_announced(job, url, total, content_type, descriptor)
        declared = _first_known(total, job.expected_size, descriptor.size if descriptor else None)
        if declared is not None and declared > self.max_package_bytes:
            _discard(job)
            raise self._too_big(descriptor, f"{redact_url(url)} has {declared} bytes")
        if total is not None:
            self._check_space(job, total - offset)

        hasher = hashlib.sha256()
        if offset:
            _feed_file(hasher.update, job.part, offset)
        done = offset
        with open(job.part, "r+b" if offset else "wb") as fh:
            fh.seek(offset)
            fh.truncate()
            _write_meta(
                job.meta,
                _Meta(
                    url=redact_url(url),
                    etag=response.headers.get("etag") or (resume.meta.etag if resume else None),
                    last_modified=response.headers.get("last-modified")
                    or (resume.meta.last_modified if resume else None),
                    total=total,
                    content_type=content_type or (resume.meta.content_type if resume else None),
                    resumable=not encoded,
                ),
            )
            if job.progress is not None:
                job.progress(done, total)
            # A known total was just checked against free space; an unknown one is checked now.
            space_check_at = done if total is None else done + _SPACE_CHECK_EVERY
            try:
                for chunk in _guard_body(chunks, offset, total, url):
                    # Every cap is checked before the chunk is written: nothing past it lands.
                    after = done + len(chunk)
                    if declared is not None and after > declared:
                        _discard(job)
                        raise _mismatch(
                            descriptor, f"{redact_url(url)} sent more than the {declared} bytes announced"
                        )
                    if after > self.max_package_bytes:
                        _discard(job)
                        raise self._too_big(descriptor, f"{redact_url(url)} sent at least {after} bytes")
                    if done >= space_check_at:
                        self._check_room(job, url, done, total)
                        space_check_at = done + _SPACE_CHECK_EVERY
                    fh.write(chunk)
                    hasher.update(chunk)
                    done = after
                    if job.progress is not None:
                        job.progress(done, total)
            finally:
                fh.flush()
                os.fsync(fh.fileno())  # what we have is durable, so a crash can resume from it
        if total is not None and done < total:
            raise DownloadError(
                ScomoResult.DOWNLOAD_FAILED,
                f"{redact_url(url)} ended the body after {done} of {total} bytes",
                retryable=True,
                notify_status=InstallNotifyStatus.LOSS_OF_SERVICE,
            )
        return self._complete(
            job, url, size=done, digest=hasher.hexdigest(), content_type=content_type, descriptor=descriptor
        )

    def _check_announced(
        self,
        job: _Job,
        url: str,
        total: int | None,
        content_type: str | None,
        descriptor: DownloadDescriptor | None,
    ) -> None:
        """Refuse before the body when the headers already contradict what we expect."""
        where = redact_url(url)
        if descriptor is not None:
            if not descriptor.accepts_type(content_type):
                _discard(job)
                raise _mismatch(
                    descriptor,
                    f"{where} is served as {media_type(content_type)}; the descriptor says "
                    f"{', '.join(descriptor.types)}",
                )
            if total is not None and total != descriptor.size:
                _discard(job)
                raise _mismatch(
                    descriptor, f"{where} has {total} bytes; the descriptor says {descriptor.size}"
                )
        if total is not None and job.expected_size is not None and total != job.expected_size:
            _discard(job)
            raise _mismatch(descriptor, f"{where} has {total} bytes; {job.expected_size} were expected")

    def _check_room(self, job: _Job, url: str, done: int, total: int | None) -> None:
        """While streaming: the disk must still take the rest (or, size unknown, keep its reserve).

        Stopping deletes the ``.part``: it is what is filling the disk.
        """
        directory = job.dest.parent
        needed = total - done if total is not None else 0
        free = self._free_space(directory)
        if free >= needed:
            return
        _discard(job)
        if total is not None:
            why = f"only {max(free, 0)} more bytes fit in {directory} above the reserved free space"
        else:
            why = f"{directory} is down to its reserved free space and the size was never announced"
        raise DownloadError(
            ScomoResult.DOWNLOAD_FAILED_OUT_OF_MEMORY,
            f"stopped {redact_url(url)} after {done} bytes: {why} ([scomo] reserve_bytes); .part deleted",
            notify_status=InstallNotifyStatus.INSUFFICIENT_MEMORY,
        )

    def _check_space(self, job: _Job, needed: int) -> None:
        if needed <= 0:
            return
        directory = job.dest.parent
        directory.mkdir(parents=True, exist_ok=True)
        free = self._free_space(directory)
        if free < needed:
            raise DownloadError(
                ScomoResult.DOWNLOAD_FAILED_OUT_OF_MEMORY,
                f"{needed} bytes needed in {directory}, only {free} free",
                notify_status=InstallNotifyStatus.INSUFFICIENT_MEMORY,
            )

    def _complete(
        self,
        job: _Job,
        url: str,
        *,
        size: int,
        digest: str,
        content_type: str | None,
        descriptor: DownloadDescriptor | None,
    ) -> DownloadResult:
        """Verify the whole ``.part``, then make it ``dest`` durably (fsync, rename, fsync dir)."""
        where = redact_url(url)
        if size > self.max_package_bytes:
            _discard(job)
            raise self._too_big(descriptor, f"{where} has {size} bytes")
        if descriptor is not None and size != descriptor.size:
            _discard(job)
            raise _mismatch(descriptor, f"{where} gave {size} bytes; the descriptor says {descriptor.size}")
        if job.expected_size is not None and size != job.expected_size:
            _discard(job)
            raise _mismatch(descriptor, f"{where} gave {size} bytes; {job.expected_size} were expected")
        if job.expected_sha256 is not None and digest != job.expected_sha256:
            _discard(job)
            raise DownloadError(
                ScomoResult.DOWNLOAD_FAILED,
                f"{where} has SHA-256 {digest}, expected {job.expected_sha256}; partial file discarded",
                notify_status=InstallNotifyStatus.DEVICE_ABORTED,
            )
        with open(job.part, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(job.part, job.dest)
        _fsync_directory(job.dest.parent)
        job.meta.unlink(missing_ok=True)
        return DownloadResult(
            path=job.dest,
            size=size,
            sha256=digest,
            content_type=content_type,
            descriptor=descriptor,
            url=url,
        )


# ---------------------------------------------------------------------------------------
# Helpers


def _storage_error(exc: OSError, dest: Path) -> DownloadError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DownloadError(
            ScomoResult.DOWNLOAD_FAILED_OUT_OF_MEMORY,
            f"storage full while writing {dest.name}: {exc.strerror or exc}",
            notify_status=InstallNotifyStatus.INSUFFICIENT_MEMORY,
        )
    return DownloadError(ScomoResult.DOWNLOAD_FAILED, f"cannot write {dest}: {exc.strerror or exc}")


def _check_scheme(url: str) -> None:
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise DownloadError(
            ScomoResult.DOWNLOAD_FAILED,
            f"cannot download {redact_url(url)!r}: only http:// and https:// URLs are supported",
        )


def _normalize_sha256(value: str | None) -> str | None:
    if value is None:
        return None
    digest = value.strip().lower()
    if not _SHA256_RE.fullmatch(digest):
        raise DownloadError(
            ScomoResult.DOWNLOAD_FAILED, f"expected SHA-256 {value!r} is not 64 hexadecimal digits"
        )
    return digest


def _raise_for_status(response: httpx.Response, url: str) -> None:
    status = response.status_code
    if status in (200, 206):
        return
    message = f"{redact_url(url)} answered HTTP {status} {response.reason_phrase}".rstrip()
    if status in _AUTH_STATUSES:
        result, retryable = ScomoResult.ALTERNATE_DOWNLOAD_AUTHENTICATION_FAILURE, False
    elif status >= 500 or status in _RETRYABLE_4XX:
        result, retryable = ScomoResult.ALTERNATE_DOWNLOAD_SERVER_ERROR, True
    else:
        result, retryable = ScomoResult.DOWNLOAD_FAILED, False
    raise DownloadError(result, message, retryable=retryable, http_status=status)


def _guard_body(chunks: Iterator[bytes], offset: int, total: int | None, url: str) -> Iterator[bytes]:
    """Yield the body's chunks, turning a lost connection into a retryable 1402."""
    done = offset
    try:
        for chunk in chunks:
            done += len(chunk)
            yield chunk
    except httpx.TransportError as exc:
        of = f" of {total}" if total is not None else ""
        raise DownloadError(
            ScomoResult.DOWNLOAD_FAILED,
            f"connection to {redact_url(url)} lost after {done}{of} bytes: {exc or type(exc).__name__}",
            retryable=True,
            notify_status=InstallNotifyStatus.LOSS_OF_SERVICE,
        ) from None
    except httpx.DecodingError as exc:
        raise DownloadError(
            ScomoResult.DOWNLOAD_FAILED, f"cannot decode the body from {redact_url(url)}: {exc}"
        ) from None


def _parse_dd(document: bytes, base_url: str) -> DownloadDescriptor:
    try:
        descriptor = parse_descriptor(document, base_url=base_url)
    except DescriptorError as exc:
        raise DownloadError(exc.result, f"{redact_url(base_url)}: {exc}", notify_status=exc.status) from exc
    log.info(
        "%s is a download descriptor for %s (%d bytes)",
        redact_url(base_url),
        redact_url(descriptor.object_uri),
        descriptor.size,
    )
    return descriptor


def _mismatch(descriptor: DownloadDescriptor | None, message: str) -> DownloadError:
    """Size/type differences: 905 Attribute mismatch in a DD flow, SCOMO 1402 either way."""
    return DownloadError(
        ScomoResult.DOWNLOAD_FAILED,
        message,
        notify_status=InstallNotifyStatus.ATTRIBUTE_MISMATCH if descriptor is not None else None,
        descriptor=descriptor,
    )


def content_range(response: httpx.Response) -> tuple[int | None, int | None, int | None]:
    """(first, last, total) from Content-Range; None for what is absent or ``*``."""
    match = _CONTENT_RANGE_RE.fullmatch(response.headers.get("content-range", ""))
    if match is None:
        return None, None, None
    first, last, total = match.groups()
    return (
        int(first) if first is not None else None,
        int(last) if last is not None else None,
        int(total) if total not in (None, "*") else None,
    )


def _check_partial(response: httpx.Response, resume: _Resume) -> None:
    """A 206 must continue exactly where the ``.part`` ends, for the same representation."""
    first, _last, _total = content_range(response)
    if first != resume.offset:
        raise _Restart(f"the server sent a range starting at {first}, not at {resume.offset}")
    etag = response.headers.get("etag")
    if etag and resume.meta.etag and _strong(resume.meta.etag) and etag != resume.meta.etag:
        raise _Restart("the server's ETag changed although it honoured If-Range")


def _announced_total(response: httpx.Response, offset: int, encoded: bool) -> int | None:
    if response.status_code == 206:
        total = content_range(response)[2]
        if total is not None:
            return total
        length = _int_header(response, "content-length")
        return offset + length if length is not None and not encoded else None
    return None if encoded else _int_header(response, "content-length")


def _int_header(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name, "").strip()
    return int(value) if value.isdigit() else None


def _first_known(*values: int | None) -> int | None:
    return next((v for v in values if v is not None), None)


def _strong(etag: str) -> bool:
    return not etag.startswith("W/")


def _resume_offset(job: _Job, url: str) -> int:
    state = _resume_state(job, url)
    return state.offset if state is not None else 0


def _resume_state(job: _Job, url: str) -> _Resume | None:
    """How much of ``url`` the ``.part`` already holds, and the validator to ask with.

    A ``.part`` without a validator (the server sent neither a strong ETag nor
    Last-Modified) is only continued when an expected SHA-256 will catch a mix of two
    versions; otherwise it is re-downloaded. A ``.part`` for another URL is left alone
    here (the first URL may be a DD for it) and overwritten once a body arrives.
    """
    try:
        offset = job.part.stat().st_size
    except FileNotFoundError:
        return None
    meta = _read_meta(job.meta)
    if offset == 0 or meta is None or meta.url != redact_url(url) or not meta.resumable:
        return None
    if meta.total is not None and offset > meta.total:
        return None
    if meta.etag and _strong(meta.etag):
        validator: str | None = meta.etag
    else:
        validator = meta.last_modified
    if validator is None and job.expected_sha256 is None:
        return None
    return _Resume(offset, validator, meta)


def _read_meta(path: Path) -> _Meta | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.pop("version", None) != _META_VERSION:
            return None
        return _Meta(**data)
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def _write_meta(path: Path, meta: _Meta) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"version": _META_VERSION, **asdict(meta)}), encoding="utf-8")
    os.replace(tmp, path)


def _discard(job: _Job) -> None:
    for path in (job.part, job.meta):
        path.unlink(missing_ok=True)


def _feed_file(update: Callable[[bytes], None], path: Path, length: int) -> None:
    """Feed the first ``length`` bytes of ``path`` to a hash (re-hashing a ``.part`` on resume)."""
    remaining = length
    with open(path, "rb") as fh:
        while remaining > 0:
            block = fh.read(min(_CHUNK, remaining))
            if not block:
                break
            update(block)
            remaining -= len(block)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable; not every platform can open a directory, hence the guard."""
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


def _caused_by_tls(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _origin(url: str) -> tuple[str, str | None, int | None]:
    """(scheme, host, port) with the default port filled in; what "the same server" means."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        return scheme, parts.hostname, parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return "", None, None
