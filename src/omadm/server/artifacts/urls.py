"""Signed, per-device, expiring links to artifacts, their descriptors and install-notify.

A SCOMO ``PkgURL`` is handed to one device inside its DM session and fetched later by that
device over plain HTTP(S), often without DM credentials (SCOMO digest 7.2), so the URL
itself is the credential: it names the artifact, the device it was issued to and an expiry
time, all covered by an HMAC-SHA256 under a server secret::

    {base}/artifacts/{id}/{filename}?d=<device>&e=<unix expiry>&s=<hmac hex>
    {base}/artifacts/{id}/dd?d=<device>&e=<unix expiry>[&c=<correlator>]&s=<hmac hex>
    {base}/artifacts/notify/{correlator}?s=<hmac hex>

Changing any part (another artifact, another device, a later expiry) breaks the signature.
The signed message is a JSON array ``["omadm-link/1", purpose, ...fields]``: unambiguous
whatever characters device ids or correlators hold, and the purpose (``download``, ``dd``,
``notify``) keeps a signature made for one kind of link from being valid on another. The
filename is not signed; the download route checks it against the artifact instead.

Verification checks the signature first (constant time) and only then the expiry, so
"expired" is only ever said about a link this server really issued. Install-notify links
do not expire: DLOTA devices report whenever the install finishes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

from omadm.server.store.models import Artifact

__all__ = [
    "MIN_SECRET_BYTES",
    "BadSignature",
    "DescriptorGrant",
    "LinkError",
    "LinkExpired",
    "descriptor_url",
    "download_url",
    "expiry_timestamp",
    "notify_url",
    "verify_descriptor",
    "verify_download",
    "verify_notify",
]

_VERSION = "omadm-link/1"
#: A shorter secret makes the HMAC guessable in practice; 32 random bytes are recommended.
MIN_SECRET_BYTES = 16


class LinkError(Exception):
    """A signed link was refused; ``reason`` is short text fit for a 403 body."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadSignature(LinkError):
    """The link was not issued by this server, or was changed (artifact, device, expiry)."""


class LinkExpired(LinkError):
    """The link is authentic but its expiry time has passed."""


@dataclass(frozen=True, slots=True)
class DescriptorGrant:
    """What a verified descriptor link says: for whom, until when, for which job."""

    device_id: str
    expires: int
    correlator: str | None


def expiry_timestamp(expires_at: datetime | int) -> int:
    """Unix seconds for an expiry given as a datetime (naive means UTC) or as seconds."""
    if isinstance(expires_at, datetime):
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)  # the store keeps UTC
        return int(expires_at.timestamp())
    if isinstance(expires_at, bool) or not isinstance(expires_at, int):
        raise TypeError(f"expires_at must be a datetime or int, not {type(expires_at).__name__}")
    return expires_at


def _sign(secret: bytes, purpose: str, *fields: str | int | None) -> str:
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the link secret must be at least {MIN_SECRET_BYTES} bytes")
    message = json.dumps([_VERSION, purpose, *fields], separators=(",", ":"), ensure_ascii=False)
    return hmac.new(secret, message.encode("utf-8"), hashlib.sha256).hexdigest()


def _check(expected: str, given: str | None) -> None:
    if not given:
        raise BadSignature("the link is not signed")
    if not hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", "surrogatepass")):
        raise BadSignature("bad link signature (not issued here, or changed)")


def _base(base_url: str) -> str:
    return base_url.rstrip("/")


def download_url(
    base_url: str, artifact: Artifact, device_id: str, expires_at: datetime | int, secret: bytes
) -> str:
    """The URL from which ``device_id`` may GET ``artifact`` until ``expires_at`` (the PkgURL)."""
    expires = expiry_timestamp(expires_at)
    signature = _sign(secret, "download", artifact.id, device_id, expires)
    query = urlencode({"d": device_id, "e": expires, "s": signature})
    return f"{_base(base_url)}/artifacts/{artifact.id}/{quote(artifact.filename, safe='')}?{query}"


def descriptor_url(
    base_url: str,
    artifact: Artifact,
    device_id: str,
    expires_at: datetime | int,
    secret: bytes,
    *,
    correlator: str | None = None,
) -> str:
    """The URL of a DLOTA download descriptor for ``artifact`` (a PkgURL for DD delivery).

    The DD served there points at :func:`download_url` with the same device and expiry,
    and, when ``correlator`` (the job's) is given, names :func:`notify_url` for it as its
    ``installNotifyURI``.
    """
    expires = expiry_timestamp(expires_at)
    signature = _sign(secret, "dd", artifact.id, device_id, expires, correlator)
    params: dict[str, str | int] = {"d": device_id, "e": expires}
    if correlator is not None:
        params["c"] = correlator
    params["s"] = signature
    return f"{_base(base_url)}/artifacts/{artifact.id}/dd?{urlencode(params)}"


def notify_url(base_url: str, correlator: str, secret: bytes) -> str:
    """The install-notify URL of one job: the device POSTs e.g. ``900 Success`` to it."""
    signature = _sign(secret, "notify", correlator)
    return f"{_base(base_url)}/artifacts/notify/{quote(correlator, safe='')}?{urlencode({'s': signature})}"


def _verify_expiring(
    purpose: str,
    artifact_id: int,
    params: Mapping[str, str],
    secret: bytes,
    now: float | None,
    *extra: str | None,
) -> tuple[str, int]:
    device_id = params.get("d")
    expires_text = params.get("e")
    if device_id is None or expires_text is None:
        raise BadSignature("the link lacks its device (d) or expiry (e)")
    if not expires_text.isascii() or not expires_text.isdigit():
        raise BadSignature("the link's expiry (e) is not a number")
    expires = int(expires_text)
    _check(_sign(secret, purpose, artifact_id, device_id, expires, *extra), params.get("s"))
    if (time.time() if now is None else now) >= expires:
        stamp = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        raise LinkExpired(f"the link expired at {stamp}")
    return device_id, expires


def verify_download(
    artifact_id: int, params: Mapping[str, str], secret: bytes, *, now: float | None = None
) -> str:
    """Check a download link's query (``d``, ``e``, ``s``); return the device id it was issued to.

    Raises:
        BadSignature: missing or wrong signature, or a changed artifact, device or expiry.
        LinkExpired: an authentic link whose expiry is at or before ``now``.
    """
    device_id, _expires = _verify_expiring("download", artifact_id, params, secret, now)
    return device_id


def verify_descriptor(
    artifact_id: int, params: Mapping[str, str], secret: bytes, *, now: float | None = None
) -> DescriptorGrant:
    """Check a descriptor link's query (``d``, ``e``, optional ``c``, ``s``); see :func:`verify_download`."""
    correlator = params.get("c")
    device_id, expires = _verify_expiring("dd", artifact_id, params, secret, now, correlator)
    return DescriptorGrant(device_id=device_id, expires=expires, correlator=correlator)


def verify_notify(correlator: str, params: Mapping[str, str], secret: bytes) -> None:
    """Check an install-notify link's signature (``s``); raises :class:`BadSignature`."""
    _check(_sign(secret, "notify", correlator), params.get("s"))
