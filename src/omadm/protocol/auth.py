"""DM-level authentication: credentials, challenges, the ``x-syncml-hmac`` MAC and nonces.

Everything here is a pure function of its arguments (sans-IO). The session layer decides
*when* to authenticate and *which* secret and nonce to use; this module only knows the
formulas of OMA DM Security 1.2 (digest section 6.2) and how to read what real peers send.

Notation used in the docstrings: ``H`` = MD5 (16 raw bytes), ``B64`` = standard base64
with padding, ``:`` = the single byte 0x3A, strings as UTF-8 bytes.

* basic: ``B64(username ":" password)``
* md5:   ``B64(H(B64(H(username ":" password)) ":" nonce))``
* MAC:   ``B64(H(B64(H(username ":" password)) ":" nonce ":" B64(H(body))))`` -- *not*
  RFC 2104 HMAC despite the scheme name ``syncml:auth-MAC`` (pitfall 7).

``B64(H(username ":" password))`` is called the *user digest* below; a server may store it
instead of the password because it is all that md5 and MAC verification needs.

Nonces are ``bytes`` everywhere in this API: the raw, base64-*decoded* value of a
``NextNonce`` (pitfall 1). Verifiers are lenient by default and also accept a peer that
hashed the base64 *text* of the nonce instead, because that bug is common in the field.

Error policy: ``verify_*`` functions answer ``False`` for a credential that is merely
wrong or undecodable (the caller answers 401 with a fresh challenge); they raise only
for things the caller must handle differently (an HMAC header that cannot be parsed or
names an unsupported algorithm). Builders raise :class:`LocalProtocolError` when asked
for something DM does not allow.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from .codes import AuthType
from .errors import LocalProtocolError, RemoteProtocolError
from .messages import Chal, Cred, Meta

__all__ = [
    "B64_FORMAT",
    "HMAC_HEADER",
    "NONCE_SIZE",
    "RESYNC_NONCE",
    "HmacHeader",
    "auth_type_from_aauth_type",
    "auth_type_of",
    "basic_credential",
    "build_hmac_header",
    "decode_nonce",
    "decode_nonce_lenient",
    "encode_nonce",
    "hmac_mac",
    "hmac_mac_from_digest",
    "mac_digest",
    "make_chal",
    "make_cred",
    "md5_credential",
    "md5_credential_from_digest",
    "new_nonce",
    "nonce_from_chal",
    "parse_basic",
    "parse_hmac_header",
    "user_digest",
    "verify_basic",
    "verify_hmac",
    "verify_hmac_digest",
    "verify_md5",
    "verify_md5_digest",
]

HMAC_HEADER = "x-syncml-hmac"
"""HTTP header that carries the MAC; lower-case as sent in practice (compare case-insensitively)."""

RESYNC_NONCE = b"\x00\x00\x00\x00"
"""The nonce-resynchronisation value: four zero bytes (``AAAAAA==``), not the text ``0x00000000``."""

NONCE_SIZE = 16
"""Bytes in a nonce we generate: 128 bits, the recommended minimum."""

B64_FORMAT = "b64"
"""``Meta/Format`` of Cred data and of a Chal's NextNonce."""

_HMAC_ALGORITHM = "MD5"
_MD5_LEN = 16

# Status hints. A malformed credential is answered like a wrong one (401 + Chal), so the
# session can re-challenge; an auth scheme or MAC algorithm we do not implement is an
# optional feature we lack (406) -- 415 is about media types / data formats, not schemes.
_BAD_CREDENTIAL = 401
_UNSUPPORTED = 406


# --------------------------------------------------------------------------- primitives


def _md5(data: bytes) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def _utf8(text: str) -> bytes:
    return text.encode("utf-8")


def _b64decode_loose(text: str | bytes) -> bytes | None:
    """Decode standard base64, ignoring ASCII whitespace and missing padding.

    XML pretty-printers wrap long values and some stacks drop the ``=`` padding (the spec's
    own HMAC example does), neither of which changes the meaning. Anything else that is not
    base64 gives ``None`` rather than an exception so that callers can choose a fallback.
    """
    raw = _utf8(text) if isinstance(text, str) else text
    compact = b"".join(raw.split())
    stripped = compact.rstrip(b"=")
    if len(compact) - len(stripped) > 2 or len(stripped) % 4 == 1:
        return None
    padded = stripped + b"=" * (-len(stripped) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None


def _nonce_variants(nonce: bytes, lenient: bool) -> tuple[bytes, ...]:
    """The nonce values a verifier tries, in order: raw bytes, then (lenient) their b64 text.

    The second form is what a peer hashes when it forgets to decode ``NextNonce`` (pitfall 1);
    the text is re-derived from the bytes because it is exactly what we put on the wire.
    """
    if not lenient:
        return (nonce,)
    return (nonce, _b64(nonce))


# --------------------------------------------------------------------------- nonces


def new_nonce(token_bytes: Callable[[int], bytes] = secrets.token_bytes, size: int = NONCE_SIZE) -> bytes:
    """A fresh, unpredictable nonce (16 bytes by default).

    ``token_bytes`` is injectable so that tests and simulators can be deterministic; in
    production keep the default, never ``random`` or a clock (pitfall 4).
    """
    if size <= 0:
        raise LocalProtocolError(f"nonce size must be positive, got {size}")
    value = token_bytes(size)
    if not isinstance(value, bytes) or len(value) != size:
        raise LocalProtocolError(f"token_bytes({size}) must return {size} bytes, got {value!r}")
    return value


def encode_nonce(nonce: bytes) -> str:
    """The ``NextNonce`` text for raw nonce bytes (standard base64 with padding)."""
    return _b64(nonce).decode("ascii")


def decode_nonce(text: str) -> bytes:
    """Decode a ``NextNonce`` that must be base64.

    Whitespace and missing ``=`` padding are tolerated (they cannot change the value); any
    other deviation raises :class:`RemoteProtocolError`.
    """
    value = _b64decode_loose(text)
    if value is None:
        raise RemoteProtocolError(f"NextNonce {text!r} is not valid base64", status_hint=_BAD_CREDENTIAL)
    return value


def decode_nonce_lenient(text: str) -> bytes:
    """Decode a ``NextNonce``; if it is not base64, use its UTF-8 text as the nonce.

    Rule: base64 wins whenever the text *can* be decoded (as :func:`decode_nonce` does), so
    a text nonce that happens to look like base64 is decoded. That ambiguity is inherent;
    peers that send non-base64 nonces are rare and this keeps them working.
    """
    value = _b64decode_loose(text)
    return _utf8(text) if value is None else value


# --------------------------------------------------------------------------- credentials


def user_digest(username: str, password: str) -> str:
    """``B64(H(username ":" password))``: what a server may store instead of the password."""
    return _b64(_md5(_utf8(f"{username}:{password}"))).decode("ascii")


def basic_credential(username: str, password: str) -> str:
    """``Cred/Data`` for ``syncml:auth-basic``: ``B64(username ":" password)``."""
    if ":" in username:
        # The verifier splits at the first colon; such a username could never match.
        raise LocalProtocolError(f"a basic-auth username cannot contain ':' ({username!r})")
    return _b64(_utf8(f"{username}:{password}")).decode("ascii")


def md5_credential_from_digest(user_digest: str, nonce: bytes) -> str:
    """``Cred/Data`` for ``syncml:auth-md5`` from a stored user digest and raw nonce bytes."""
    return _b64(_md5(_utf8(user_digest) + b":" + nonce)).decode("ascii")


def md5_credential(username: str, password: str, nonce: bytes) -> str:
    """``Cred/Data`` for ``syncml:auth-md5``: ``B64(H(B64(H(user ":" pass)) ":" nonce))``.

    ``nonce`` is the raw (base64-decoded) value of the last NextNonce the verifier sent us.
    """
    return md5_credential_from_digest(user_digest(username, password), nonce)


def parse_basic(cred_data: str) -> tuple[str, str]:
    """Split a basic ``Cred/Data`` into ``(username, password)``.

    The first colon separates the two, so passwords may contain colons. Raises
    :class:`RemoteProtocolError` (status hint 401) on bad base64, non-UTF-8 text or a
    missing colon, so that the session can answer with a challenge.
    """
    raw = _b64decode_loose(cred_data)
    if raw is None:
        raise RemoteProtocolError(
            f"basic credential {cred_data!r} is not valid base64", status_hint=_BAD_CREDENTIAL
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError(
            "basic credential does not decode to UTF-8 text", status_hint=_BAD_CREDENTIAL
        ) from None
    username, colon, password = text.partition(":")
    if not colon:
        raise RemoteProtocolError(
            "basic credential has no ':' between username and password", status_hint=_BAD_CREDENTIAL
        )
    return username, password


def verify_basic(cred_data: str, username: str, password: str) -> bool:
    """True if ``cred_data`` is the basic credential of ``username``/``password``.

    Compares the decoded bytes in constant time; undecodable data is simply ``False``.
    """
    raw = _b64decode_loose(cred_data)
    if raw is None:
        return False
    return hmac.compare_digest(raw, _utf8(f"{username}:{password}"))


def verify_md5_digest(cred_data: str, user_digest: str, nonce: bytes, *, lenient: bool = True) -> bool:
    """True if ``cred_data`` is the md5 credential for the stored ``user_digest`` and ``nonce``.

    ``nonce`` is the raw nonce *we* issued. With ``lenient`` (the default) a credential that
    the peer computed over the base64 text of the nonce is accepted too (pitfall 1,
    Motorola's verifier does the same). The received value is base64-decoded (whitespace
    and missing padding tolerated) and compared as 16 raw bytes in constant time.
    """
    received = _b64decode_loose(cred_data)
    if received is None or len(received) != _MD5_LEN:
        return False
    prefix = _utf8(user_digest) + b":"
    matched = False
    for variant in _nonce_variants(nonce, lenient):
        # No early exit: the work done does not depend on which variant matches.
        matched |= hmac.compare_digest(received, _md5(prefix + variant))
    return matched


def verify_md5(cred_data: str, username: str, password: str, nonce: bytes, *, lenient: bool = True) -> bool:
    """:func:`verify_md5_digest` for a known password."""
    return verify_md5_digest(cred_data, user_digest(username, password), nonce, lenient=lenient)


# --------------------------------------------------------------------------- Cred / Chal elements


def make_cred(auth_type: AuthType, username: str, password: str, nonce: bytes | None = None) -> Cred:
    """A ``Cred`` element (``Meta`` Type + Format ``b64``) for basic or md5.

    md5 needs ``nonce`` (the raw value of the last NextNonce received; use
    :data:`RESYNC_NONCE` after a resynchronising Package #0). ``syncml:auth-MAC`` is never
    carried in ``Cred`` -- use :func:`hmac_mac` and the :data:`HMAC_HEADER` instead.
    """
    meta = Meta(format=B64_FORMAT, type=auth_type.value)
    if auth_type is AuthType.BASIC:
        return Cred(data=basic_credential(username, password), meta=meta)
    if auth_type is AuthType.MD5:
        if nonce is None:
            raise LocalProtocolError("an md5 credential needs the nonce issued by the peer")
        return Cred(data=md5_credential(username, password, nonce), meta=meta)
    if auth_type is AuthType.HMAC:
        raise LocalProtocolError("syncml:auth-MAC never travels in Cred; send the x-syncml-hmac header")
    raise LocalProtocolError(f"building {auth_type.value} credentials is not supported")


def make_chal(auth_type: AuthType, nonce: bytes | None = None) -> Chal:
    """A ``Chal`` element asking for ``auth_type``.

    md5 and MAC challenges carry ``NextNonce`` (base64 of ``nonce``, which is required);
    a basic challenge carries Type and Format only, so passing a nonce for it is an error
    rather than something silently dropped.
    """
    if auth_type is AuthType.BASIC:
        if nonce is not None:
            raise LocalProtocolError("a syncml:auth-basic challenge carries no nonce")
        return Chal(meta=Meta(format=B64_FORMAT, type=auth_type.value))
    if auth_type in (AuthType.MD5, AuthType.HMAC):
        if nonce is None:
            raise LocalProtocolError(f"a {auth_type.value} challenge needs a nonce (see new_nonce)")
        return Chal(meta=Meta(format=B64_FORMAT, type=auth_type.value, next_nonce=encode_nonce(nonce)))
    raise LocalProtocolError(f"challenging for {auth_type.value} is not supported")


def nonce_from_chal(chal: Chal, *, lenient: bool = True) -> bytes | None:
    """The raw nonce a ``Chal`` carries, or ``None`` if it has no ``NextNonce`` (basic).

    Rules, in order:

    1. ``Meta/Format`` present and not ``b64`` (e.g. ``chr``): the NextNonce text itself,
       UTF-8 encoded, is the nonce -- the peer declared it is not base64.
    2. Otherwise the text is base64-decoded. If it is not valid base64, ``lenient`` (the
       default) uses the UTF-8 text bytes (:func:`decode_nonce_lenient`); strict mode raises
       :class:`RemoteProtocolError`. Call :func:`decode_nonce` on ``chal.meta.next_nonce`` to
       find out whether the fallback was taken.
    """
    text = chal.meta.next_nonce
    if text is None:
        return None
    fmt = chal.meta.format
    if fmt is not None and fmt.strip().lower() != B64_FORMAT:
        return _utf8(text)
    return decode_nonce_lenient(text) if lenient else decode_nonce(text)


_AUTH_TYPES_BY_LOWER: dict[str, AuthType] = {member.value.lower(): member for member in AuthType}


def auth_type_of(element: Cred | Chal, *, default: AuthType | None = AuthType.BASIC) -> AuthType:
    """The normalized scheme named by a ``Cred`` or ``Chal`` ``Meta/Type``.

    Matching is case-insensitive and ignores surrounding whitespace and trailing NULs
    (pitfall 35), so ``syncml:auth-mac`` is :attr:`AuthType.HMAC`. A missing Meta or Type
    gives ``default``: SyncML makes ``syncml:auth-basic`` the default credential type; pass
    ``default=None`` to treat absence as an error instead. An unknown scheme raises
    :class:`RemoteProtocolError` with status hint 406 (optional feature not supported).
    Known-but-rare schemes (X509, SecurID...) are returned; whether to accept them is policy.
    """
    meta = element.meta
    raw = meta.type if meta is not None else None
    if raw is None or not raw.strip("\x00 \t\r\n"):
        if default is None:
            raise RemoteProtocolError(
                f"{type(element).__name__} has no Meta/Type naming the authentication scheme",
                status_hint=_BAD_CREDENTIAL,
            )
        return default
    found = _AUTH_TYPES_BY_LOWER.get(raw.strip("\x00 \t\r\n").lower())
    if found is None:
        raise RemoteProtocolError(f"unknown authentication type {raw!r}", status_hint=_UNSUPPORTED)
    return found


_AAUTH_TYPES: dict[str, AuthType] = {
    "BASIC": AuthType.BASIC,
    "DIGEST": AuthType.MD5,
    "HMAC": AuthType.HMAC,
    "X509": AuthType.X509,
    "SECURID": AuthType.SECURID,
    "SAFEWORD": AuthType.SAFEWORD,
    "DIGIPASS": AuthType.DIGIPASS,
}


def auth_type_from_aauth_type(value: str) -> AuthType | None:
    """Map a DMAcc ``AAuthType`` (``DIGEST``, ``HMAC``...) to the SyncML ``Meta/Type``.

    ``HTTP-BASIC``, ``HTTP-DIGEST`` and ``TRANSPORT`` authenticate below DM and have no
    SyncML type: they, and unknown values, give ``None``. Case-insensitive.
    """
    return _AAUTH_TYPES.get(value.strip().upper())


# --------------------------------------------------------------------------- HMAC (syncml:auth-MAC)


def mac_digest(user_digest: str, nonce: bytes, body: bytes) -> bytes:
    """Raw 16-byte ``H(user_digest ":" nonce ":" B64(H(body)))``.

    Shared by the MAC header (which base64-encodes it) and the Package #0 digest (which
    sends it raw, with the trigger as ``body``).
    """
    return _md5(_utf8(user_digest) + b":" + nonce + b":" + _b64(_md5(body)))


def hmac_mac_from_digest(user_digest: str, nonce: bytes, body: bytes) -> str:
    """The ``mac=`` value for a stored user digest: ``B64(mac_digest(...))``."""
    return _b64(mac_digest(user_digest, nonce, body)).decode("ascii")


def hmac_mac(username: str, password: str, nonce: bytes, body: bytes) -> str:
    """The ``mac=`` value of ``x-syncml-hmac`` for the exact HTTP entity ``body``.

    ``body`` must be the bytes as sent (XML text or WBXML): compute after final
    serialization and never re-serialize (pitfall 8).
    """
    return hmac_mac_from_digest(user_digest(username, password), nonce, body)


@dataclass(frozen=True, slots=True)
class HmacHeader:
    """A parsed ``x-syncml-hmac`` value; ``algorithm`` is normalized to upper case."""

    username: str
    mac: str
    algorithm: str = _HMAC_ALGORITHM

    def to_header(self) -> str:
        """The header value, as :func:`build_hmac_header` writes it."""
        return build_hmac_header(self.username, self.mac, self.algorithm)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_hmac_header(username: str, mac: str, algorithm: str = _HMAC_ALGORITHM) -> str:
    """``algorithm=MD5, username="Bruce2", mac=...`` -- the value of :data:`HMAC_HEADER`.

    The username is a quoted-string (``"`` and ``\\`` escaped). An empty username (which
    the parser would reject) and control characters (header injection) are refused; only
    MD5 is defined.
    """
    if algorithm.upper() != _HMAC_ALGORITHM:
        raise LocalProtocolError(f"x-syncml-hmac defines only algorithm=MD5, not {algorithm!r}")
    if not username:
        raise LocalProtocolError("the x-syncml-hmac username must not be empty")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in username):
        raise LocalProtocolError(f"HMAC username {username!r} contains control characters")
    if not mac or _b64decode_loose(mac) is None or any(ch.isspace() for ch in mac):
        raise LocalProtocolError(f"HMAC mac {mac!r} is not base64")
    return f"algorithm={_HMAC_ALGORITHM}, username={_quote(username)}, mac={mac}"


def _parse_params(value: str) -> list[tuple[str, str]]:
    """Split ``name=value`` pairs (values are tokens or quoted-strings), commas between.

    Bare tokens without ``=`` are skipped: they carry nothing we could use, and leniency
    towards odd senders costs nothing here.
    """
    params: list[tuple[str, str]] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and (value[i] in ", \t"):
            i += 1
        if i >= n:
            break
        start = i
        while i < n and value[i] not in "=,":
            i += 1
        name = value[start:i].strip().lower()
        if i >= n or value[i] == ",":
            continue  # bare token
        i += 1  # '='
        while i < n and value[i] in " \t":
            i += 1
        if i < n and value[i] == '"':
            i += 1
            chars: list[str] = []
            while i < n and value[i] != '"':
                if value[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(value[i])
                i += 1
            if i >= n:
                raise RemoteProtocolError(
                    f"x-syncml-hmac parameter {name!r} has an unterminated quoted string",
                    status_hint=_BAD_CREDENTIAL,
                )
            i += 1  # closing quote
            text = "".join(chars)
            while i < n and value[i] in " \t":
                i += 1
            if i < n and value[i] != ",":
                raise RemoteProtocolError(
                    f"x-syncml-hmac parameter {name!r} has text after its quoted value",
                    status_hint=_BAD_CREDENTIAL,
                )
        else:
            start = i
            while i < n and value[i] != ",":
                i += 1
            text = value[start:i].strip()
        params.append((name, text))
    return params


def parse_hmac_header(value: str) -> HmacHeader:
    """Parse an ``x-syncml-hmac`` value leniently (pitfall 8).

    Accepted: comma-separated parameters in any order with optional spaces, parameter names
    in any case, ``username`` quoted or bare, ``algorithm`` absent (means MD5) or in any
    case, unknown parameters (ignored). Rejected with :class:`RemoteProtocolError`: a
    missing or empty ``username`` or ``mac``, or a repeated one (ambiguous), status hint
    401; an algorithm other than MD5, status hint 406.
    """
    found: dict[str, str] = {}
    for name, text in _parse_params(value):
        if name not in ("algorithm", "username", "mac"):
            continue
        if name in found:
            raise RemoteProtocolError(
                f"x-syncml-hmac repeats the {name!r} parameter", status_hint=_BAD_CREDENTIAL
            )
        found[name] = text
    missing = [name for name in ("username", "mac") if not found.get(name)]
    if missing:
        raise RemoteProtocolError(
            f"x-syncml-hmac is missing {' and '.join(missing)} (got {value!r})", status_hint=_BAD_CREDENTIAL
        )
    algorithm = found.get("algorithm", _HMAC_ALGORITHM).upper()
    if algorithm != _HMAC_ALGORITHM:
        raise RemoteProtocolError(
            f"x-syncml-hmac algorithm {found['algorithm']!r} is not supported (only MD5)",
            status_hint=_UNSUPPORTED,
        )
    return HmacHeader(username=found["username"], mac=found["mac"], algorithm=algorithm)


def _mac_bytes(mac: str) -> bytes | None:
    """The 16 digest bytes a ``mac=`` value stands for, or ``None``.

    Two encodings are accepted: base64 of the raw digest (what real stacks send) and base64
    of the 32-character hex text of the digest, padded or not (the form of the spec's own
    example, ``NTI2OTJh...``). Both denote the same digest, so accepting the second costs no
    security.
    """
    raw = _b64decode_loose(mac)
    if raw is None:
        return None
    if len(raw) == _MD5_LEN:
        return raw
    if len(raw) == 2 * _MD5_LEN:
        try:
            return bytes.fromhex(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return None
    return None


def verify_hmac_digest(
    header: str | HmacHeader, user_digest: str, nonce: bytes, body: bytes, *, lenient: bool = True
) -> bool:
    """:func:`verify_hmac` for a stored user digest instead of a password."""
    parsed = parse_hmac_header(header) if isinstance(header, str) else header
    if parsed.algorithm.upper() != _HMAC_ALGORITHM:
        raise RemoteProtocolError(
            f"x-syncml-hmac algorithm {parsed.algorithm!r} is not supported (only MD5)",
            status_hint=_UNSUPPORTED,
        )
    received = _mac_bytes(parsed.mac)
    if received is None:
        return False
    matched = False
    for variant in _nonce_variants(nonce, lenient):
        matched |= hmac.compare_digest(received, mac_digest(user_digest, variant, body))
    return matched


def verify_hmac(
    header: str | HmacHeader,
    username: str,
    password: str,
    nonce: bytes,
    body: bytes,
    *,
    lenient: bool = True,
) -> bool:
    """True if the MAC in ``header`` authenticates ``body`` for this account and ``nonce``.

    ``header`` is the raw header value (parsed with :func:`parse_hmac_header`, whose errors
    propagate so that a malformed header or an unsupported algorithm can be answered
    differently from a wrong MAC) or an already parsed :class:`HmacHeader`. The header's
    ``username`` is *not* compared with ``username``: use it to look the account up; the
    MAC itself binds the username. ``lenient`` also accepts a MAC computed over the base64
    text of the nonce. The mac may be base64 of the raw digest or of its hex text (see
    :func:`_mac_bytes`). Comparison is constant-time.
    """
    return verify_hmac_digest(header, user_digest(username, password), nonce, body, lenient=lenient)
