"""Package #0: the binary server-alerted management trigger (DM Notification 1.2).

Layout (digest section 11.1, big-endian)::

    0   16 bytes  digest   raw MD5 (see below)
    16  10 bits   version  (notification version x 10; DM 1.2 sends 11)
        2 bits    ui-mode
        1 bit     initiator
        27 bits   future use (zero)
        16 bits   session-id
        8 bits    length of the server identifier
    24  N bytes   server identifier (the DMAcc ServerID)
    24+N ...      vendor-specific trigger body

``trigger`` means every byte after the digest. The digest is the MAC construction of
:mod:`omadm.protocol.auth` with the trigger as body, kept raw instead of base64::

    digest = H(B64(H(server-identifier ":" server-password)) ":" nonce ":" B64(H(trigger)))

Decisions on points the specification leaves open or real peers disagree about:

* **Version**: we build 11 by default; :func:`decode_notification` accepts any version
  and reports it in ``Notification.version`` -- whether to reject a non-11 trigger is the
  caller's policy (libdmclient rejects, newer stacks may send other values).
* **Future-use bits**: decoded leniently and exposed as ``DecodedNotification.reserved``;
  the digest covers them anyway, so tolerating them does not weaken authentication.
* **Session-id 0** and an **empty server identifier** are outside what the specification
  allows and useless to a client, so decoding them raises :class:`MalformedMessage`.
* **Server identifier text**: the specification says ASCII; we encode and decode UTF-8
  (an ASCII superset) because ServerID is a ``chr`` node that may hold more.
* **Digest identity** (pitfall 36): the specification hashes the server identifier from
  the trigger; libdmclient hashes SRVCRED ``AAuthName``. Every function takes an optional
  ``server_name`` that overrides the identifier used in the hash.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass
from enum import Enum, IntEnum

from .auth import RESYNC_NONCE, encode_nonce, mac_digest, user_digest
from .codes import UiMode
from .errors import LocalProtocolError, MalformedMessage

__all__ = [
    "DIGEST_SIZE",
    "HEADER_SIZE",
    "NOTIFICATION_CONTENT_TYPE",
    "NOTIFICATION_CONTENT_TYPES",
    "NOTIFICATION_CONTENT_TYPE_IANA",
    "NOTIFICATION_VERSION",
    "NOTIFICATION_WDP_PORT",
    "NOTIFICATION_WSP_CONTENT_TYPE",
    "NOTIFICATION_WSP_PUSH_APP_ID",
    "DecodedNotification",
    "Initiator",
    "Notification",
    "VerifyResult",
    "build_trigger",
    "decode_notification",
    "encode_notification",
    "is_notification_content_type",
    "notification_digest",
    "session_id_hex",
    "verify_notification",
    "verify_with_resync",
]

NOTIFICATION_VERSION = 11
"""Version we send: DM Notification 1.2, encoded as version x 10."""

DIGEST_SIZE = 16
HEADER_SIZE = 8
_MIN_SIZE = DIGEST_SIZE + HEADER_SIZE

NOTIFICATION_CONTENT_TYPE = "application/vnd.syncml.notification"
"""The type WSP binary code 0x44 stands for, and what we send."""

NOTIFICATION_CONTENT_TYPE_IANA = "application/vnd.syncml.dm.notification"
"""The IANA-registered spelling; accepted on receipt (pitfall 31)."""

NOTIFICATION_CONTENT_TYPES = frozenset({NOTIFICATION_CONTENT_TYPE, NOTIFICATION_CONTENT_TYPE_IANA})

NOTIFICATION_WSP_CONTENT_TYPE = 0x44
"""WSP well-known content-type code of a Package #0 in a WAP push."""

NOTIFICATION_WSP_PUSH_APP_ID = 0x07
"""WAP push application id ``x-wap-application:syncml.dm``."""

NOTIFICATION_WDP_PORT = 2948
"""WDP port of connectionless WSP push."""

_MAX_VERSION = (1 << 10) - 1
_MAX_SESSION_ID = 0xFFFF
_MAX_SERVER_ID = 0xFF
_MAX_RESERVED = (1 << 27) - 1


class Initiator(IntEnum):
    """Who asked for the session (the initiator bit)."""

    USER = 0
    """The end user asked for the session (a client-initiated request relayed by the server)."""
    SERVER = 1


class VerifyResult(Enum):
    """Outcome of :func:`verify_with_resync`."""

    OK = "ok"
    """The digest matched the stored server nonce."""
    OK_RESYNC = "ok-resync"
    """The digest matched only the resync nonce: use :data:`RESYNC_NONCE` for this session's
    credentials, and expect the server to issue fresh nonces (digest section 11.3)."""
    FAILED = "failed"
    """No variant matched: ignore the trigger silently."""


def session_id_hex(session_id: int) -> str:
    """The Pkg#1 ``SessionID`` for a trigger's session-id: upper-case hex, no leading zeros.

    ``0x0001`` -> ``"1"``, ``0x00AB`` -> ``"AB"``, ``0x1234`` -> ``"1234"``.
    """
    if (
        isinstance(session_id, bool)
        or not isinstance(session_id, int)
        or not 1 <= session_id <= _MAX_SESSION_ID
    ):
        raise LocalProtocolError(f"session-id must be an integer in 1..0xFFFF, got {session_id!r}")
    return f"{session_id:X}"


def _server_id_bytes(server_id: str) -> bytes:
    return server_id.encode("utf-8")


@dataclass(frozen=True, slots=True, kw_only=True)
class Notification:
    """The content of a Package #0 (everything but the digest).

    Integers given for ``ui_mode`` / ``initiator`` are converted to the enums. Any 10-bit
    ``version`` is allowed so that test triggers can be built; leave it at 11 for real use.
    """

    server_id: str
    session_id: int
    ui_mode: UiMode = UiMode.NOT_SPECIFIED
    initiator: Initiator = Initiator.SERVER
    version: int = NOTIFICATION_VERSION
    vendor_data: bytes = b""

    def __post_init__(self) -> None:
        if isinstance(self.version, bool) or not isinstance(self.version, int):
            raise LocalProtocolError(f"version must be an integer, got {self.version!r}")
        if not 0 <= self.version <= _MAX_VERSION:
            raise LocalProtocolError(f"version must fit in 10 bits (0..1023), got {self.version}")
        try:
            object.__setattr__(self, "ui_mode", UiMode(self.ui_mode))
        except ValueError:
            raise LocalProtocolError(f"ui-mode must be 0..3, got {self.ui_mode!r}") from None
        try:
            object.__setattr__(self, "initiator", Initiator(self.initiator))
        except ValueError:
            raise LocalProtocolError(f"initiator must be 0 or 1, got {self.initiator!r}") from None
        session_id_hex(self.session_id)  # validates the range
        if not isinstance(self.server_id, str) or not self.server_id:
            raise LocalProtocolError(f"server-identifier must be a non-empty string, got {self.server_id!r}")
        if len(_server_id_bytes(self.server_id)) > _MAX_SERVER_ID:
            raise LocalProtocolError(
                f"server-identifier is {len(_server_id_bytes(self.server_id))} bytes; at most 255 fit"
            )
        if not isinstance(self.vendor_data, bytes):
            raise LocalProtocolError(f"vendor data must be bytes, got {type(self.vendor_data).__name__}")

    @property
    def session_id_hex(self) -> str:
        """The ``SessionID`` of the Pkg#1 that answers this trigger."""
        return session_id_hex(self.session_id)


@dataclass(frozen=True, slots=True)
class DecodedNotification:
    """A received Package #0: its content plus what verification needs.

    ``trigger`` is the exact bytes after the digest (the digest covers them, reserved bits
    included); ``reserved`` holds the 27 future-use bits, normally 0.
    """

    notification: Notification
    digest: bytes
    trigger: bytes
    reserved: int = 0


def build_trigger(notification: Notification) -> bytes:
    """The bytes after the digest: 8-byte header, server identifier, vendor data."""
    server_id = _server_id_bytes(notification.server_id)
    word = (
        (notification.version << 54)
        | (int(notification.ui_mode) << 52)
        | (int(notification.initiator) << 51)
        | (notification.session_id << 8)
        | len(server_id)
    )
    return struct.pack(">Q", word) + server_id + notification.vendor_data


def notification_digest(server_name: str, server_password: str, nonce: bytes, trigger: bytes) -> bytes:
    """The raw 16-byte Package #0 digest of ``trigger`` (digest section 11.2).

    ``server_name`` is normally the server identifier; ``nonce`` the raw server nonce
    (SRVCRED ``AAuthData``, issued by the client via NextNonce).
    """
    return mac_digest(user_digest(server_name, server_password), nonce, trigger)


def encode_notification(
    notification: Notification, server_password: str, nonce: bytes, *, server_name: str | None = None
) -> bytes:
    """The complete Package #0: digest followed by the trigger.

    ``server_name`` overrides the identity hashed into the digest (default: the server
    identifier, as the specification says; see pitfall 36).
    """
    trigger = build_trigger(notification)
    name = notification.server_id if server_name is None else server_name
    return notification_digest(name, server_password, nonce, trigger) + trigger


def decode_notification(data: bytes | bytearray | memoryview) -> DecodedNotification:
    """Parse a Package #0 without verifying it (use :func:`verify_with_resync` next).

    Raises :class:`MalformedMessage` for input shorter than 24 bytes, a length-identifier
    that points past the end, session-id 0, an empty server identifier or one that is not
    UTF-8. Version and future-use bits are reported, not judged (see the module docstring).
    Bytes after the server identifier are vendor data.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessage(f"Package #0 must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _MIN_SIZE:
        raise MalformedMessage(
            f"Package #0 is {len(data)} bytes; at least {_MIN_SIZE} are needed "
            f"({DIGEST_SIZE}-byte digest + {HEADER_SIZE}-byte header)"
        )
    digest, trigger = data[:DIGEST_SIZE], data[DIGEST_SIZE:]
    (word,) = struct.unpack(">Q", trigger[:HEADER_SIZE])
    version = word >> 54
    ui_mode = (word >> 52) & 0x3
    initiator = (word >> 51) & 0x1
    reserved = (word >> 24) & _MAX_RESERVED
    session_id = (word >> 8) & _MAX_SESSION_ID
    length = word & 0xFF
    available = len(trigger) - HEADER_SIZE
    if length > available:
        raise MalformedMessage(
            f"Package #0 server-identifier length is {length} but only {available} bytes follow the header"
        )
    if length == 0:
        raise MalformedMessage("Package #0 server-identifier is empty")
    if session_id == 0:
        raise MalformedMessage("Package #0 session-id is 0; valid ids are 1..0xFFFF")
    raw_id = trigger[HEADER_SIZE : HEADER_SIZE + length]
    try:
        server_id = raw_id.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedMessage(f"Package #0 server-identifier {raw_id!r} is not ASCII/UTF-8 text") from None
    notification = Notification(
        server_id=server_id,
        session_id=session_id,
        ui_mode=UiMode(ui_mode),
        initiator=Initiator(initiator),
        version=version,
        vendor_data=trigger[HEADER_SIZE + length :],
    )
    return DecodedNotification(notification=notification, digest=digest, trigger=trigger, reserved=reserved)


def _matches(
    decoded: DecodedNotification, server_password: str, nonce: bytes, server_name: str | None
) -> bool:
    name = decoded.notification.server_id if server_name is None else server_name
    expected = notification_digest(name, server_password, nonce, decoded.trigger)
    return hmac.compare_digest(decoded.digest, expected)


def _nonce_forms(nonce: bytes, lenient: bool) -> tuple[bytes, ...]:
    # Raw bytes first (the specification), then their base64 text: Motorola keeps the nonce
    # as b64 text and a server may hash that text (pitfall 2, digest section 11.2).
    if not lenient:
        return (nonce,)
    return (nonce, encode_nonce(nonce).encode("ascii"))


def verify_notification(
    decoded: DecodedNotification,
    server_password: str,
    nonce: bytes,
    *,
    server_name: str | None = None,
    lenient: bool = True,
) -> bool:
    """True if the digest matches ``nonce`` (raw bytes; lenient: or its base64 text).

    Constant-time comparison. Does not try the resync nonce: see :func:`verify_with_resync`.
    """
    matched = False
    for form in _nonce_forms(nonce, lenient):
        matched |= _matches(decoded, server_password, form, server_name)
    return matched


def verify_with_resync(
    decoded: DecodedNotification,
    server_password: str,
    stored_nonce: bytes | None,
    *,
    server_name: str | None = None,
) -> VerifyResult:
    """Verify a trigger the way a client should, including nonce resynchronisation.

    Tried in this order (the Motorola order, digest section 11.2):

    1. ``stored_nonce`` as raw bytes;
    2. ``stored_nonce`` as its base64 text (a server that hashed the NextNonce text);
    3. :data:`RESYNC_NONCE` (four zero bytes);
    4. ``AAAAAA==``, the base64 text of the resync nonce.

    1-2 give :attr:`VerifyResult.OK`, 3-4 :attr:`VerifyResult.OK_RESYNC`. ``stored_nonce``
    ``None`` (no server nonce known yet) skips to 3. If the stored nonce *is* the resync
    nonce, a match is reported as ``OK``: nothing needs resynchronising. The libdmclient
    fallback ``b"0x00000000"`` is deliberately not tried (pitfall 3).
    """
    if stored_nonce is not None and verify_notification(
        decoded, server_password, stored_nonce, server_name=server_name
    ):
        return VerifyResult.OK
    if verify_notification(decoded, server_password, RESYNC_NONCE, server_name=server_name):
        return VerifyResult.OK_RESYNC
    return VerifyResult.FAILED


def is_notification_content_type(value: str) -> bool:
    """True for either Package #0 media type, ignoring case, spaces and parameters."""
    return value.split(";", 1)[0].strip().lower() in NOTIFICATION_CONTENT_TYPES
