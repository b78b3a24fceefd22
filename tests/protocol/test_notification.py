"""Tests of Package #0: the worked example of digest section 11.5, layout, leniency, resync."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omadm.protocol.auth import RESYNC_NONCE, encode_nonce, user_digest
from omadm.protocol.codes import UiMode
from omadm.protocol.errors import LocalProtocolError, MalformedMessage
from omadm.protocol.notification import (
    NOTIFICATION_CONTENT_TYPE,
    NOTIFICATION_CONTENT_TYPE_IANA,
    NOTIFICATION_WSP_CONTENT_TYPE,
    DecodedNotification,
    Initiator,
    Notification,
    VerifyResult,
    build_trigger,
    decode_notification,
    encode_notification,
    is_notification_content_type,
    notification_digest,
    session_id_hex,
    verify_notification,
    verify_with_resync,
)

SERVER_ID = "com.example.dms"
PASSWORD = "srvsecret"
NONCE = bytes(range(1, 17))
EXAMPLE = Notification(server_id=SERVER_ID, session_id=0x1234, ui_mode=UiMode.INFORMATIVE)
EXAMPLE_BYTES = bytes.fromhex(
    "ce9b68c8547854a0e63f39a1dc53aa1402e800000012340f636f6d2e6578616d706c652e646d73"
)


def _with_digest(trigger: bytes, nonce: bytes = NONCE, name: str = SERVER_ID) -> bytes:
    return notification_digest(name, PASSWORD, nonce, trigger) + trigger


# --------------------------------------------------------------------------- worked example 11.5


def test_worked_example_trigger() -> None:
    trigger = build_trigger(EXAMPLE)
    assert trigger[:8] == bytes.fromhex("02E800000012340F")
    assert trigger == bytes.fromhex("02e800000012340f636f6d2e6578616d706c652e646d73")


def test_worked_example_intermediates() -> None:
    trigger = build_trigger(EXAMPLE)
    assert user_digest(SERVER_ID, PASSWORD) == "0YyaUGldEgINYYBLUCW/aA=="
    assert base64.b64encode(hashlib.md5(trigger).digest()).decode() == "a6OfsY0PoegGCKcB2Rhh/A=="


def test_worked_example_encode() -> None:
    data = encode_notification(EXAMPLE, PASSWORD, NONCE)
    assert len(data) == 39
    assert data == EXAMPLE_BYTES
    assert data[:16].hex() == "ce9b68c8547854a0e63f39a1dc53aa14"


def test_worked_example_resync_digest() -> None:
    data = encode_notification(EXAMPLE, PASSWORD, RESYNC_NONCE)
    assert data[:16].hex() == "5964ee41ed80819a7bfb9450a7773fb5"


def test_worked_example_decode() -> None:
    decoded = decode_notification(EXAMPLE_BYTES)
    n = decoded.notification
    assert n.version == 11
    assert n.ui_mode is UiMode.INFORMATIVE
    assert n.initiator is Initiator.SERVER
    assert n.session_id == 0x1234
    assert n.server_id == SERVER_ID
    assert n.vendor_data == b""
    assert decoded.digest.hex() == "ce9b68c8547854a0e63f39a1dc53aa14"
    assert decoded.trigger == EXAMPLE_BYTES[16:]
    assert decoded.reserved == 0
    assert n.session_id_hex == "1234"
    assert n == EXAMPLE


def test_worked_example_verify() -> None:
    decoded = decode_notification(EXAMPLE_BYTES)
    assert verify_notification(decoded, PASSWORD, NONCE)
    assert verify_with_resync(decoded, PASSWORD, NONCE) is VerifyResult.OK
    assert not verify_notification(decoded, "wrong", NONCE)
    assert verify_with_resync(decoded, "wrong", NONCE) is VerifyResult.FAILED


def test_worked_example_resync_verify() -> None:
    resync = decode_notification(encode_notification(EXAMPLE, PASSWORD, RESYNC_NONCE))
    assert resync.digest.hex() == "5964ee41ed80819a7bfb9450a7773fb5"
    assert verify_with_resync(resync, PASSWORD, NONCE) is VerifyResult.OK_RESYNC
    assert verify_with_resync(resync, PASSWORD, None) is VerifyResult.OK_RESYNC
    # Nothing to resynchronise when the stored nonce already is the zero nonce.
    assert verify_with_resync(resync, PASSWORD, RESYNC_NONCE) is VerifyResult.OK


# --------------------------------------------------------------------------- verification variants


def test_verify_nonce_as_b64_text() -> None:
    """A server that hashed the NextNonce text (Motorola keeps it as b64 text)."""
    data = encode_notification(EXAMPLE, PASSWORD, encode_nonce(NONCE).encode())
    decoded = decode_notification(data)
    assert verify_notification(decoded, PASSWORD, NONCE)
    assert not verify_notification(decoded, PASSWORD, NONCE, lenient=False)
    assert verify_with_resync(decoded, PASSWORD, NONCE) is VerifyResult.OK


def test_verify_resync_nonce_as_b64_text() -> None:
    data = encode_notification(EXAMPLE, PASSWORD, b"AAAAAA==")
    assert verify_with_resync(decode_notification(data), PASSWORD, NONCE) is VerifyResult.OK_RESYNC


def test_libdmclient_fallback_nonce_not_accepted() -> None:
    """Pitfall 3: the ASCII text ``0x00000000`` is not the resync nonce."""
    data = encode_notification(EXAMPLE, PASSWORD, b"0x00000000")
    assert verify_with_resync(decode_notification(data), PASSWORD, NONCE) is VerifyResult.FAILED


def test_server_name_override() -> None:
    """Pitfall 36: libdmclient hashes SRVCRED AAuthName instead of the trigger's ServerID."""
    data = encode_notification(EXAMPLE, PASSWORD, NONCE, server_name="aauthname")
    assert data[16:] == EXAMPLE_BYTES[16:]
    decoded = decode_notification(data)
    assert not verify_notification(decoded, PASSWORD, NONCE)
    assert verify_notification(decoded, PASSWORD, NONCE, server_name="aauthname")
    assert verify_with_resync(decoded, PASSWORD, NONCE, server_name="aauthname") is VerifyResult.OK


def test_tampered_trigger_fails() -> None:
    tampered = bytearray(EXAMPLE_BYTES)
    tampered[22] ^= 0x01  # session-id low byte
    decoded = decode_notification(bytes(tampered))
    assert decoded.notification.session_id == 0x1235
    assert verify_with_resync(decoded, PASSWORD, NONCE) is VerifyResult.FAILED


# --------------------------------------------------------------------------- layout / decode leniency


def _header(
    *, version: int = 11, ui: int = 0, init: int = 1, reserved: int = 0, sid: int = 1, length: int = 0
) -> bytes:
    word = (version << 54) | (ui << 52) | (init << 51) | (reserved << 24) | (sid << 8) | length
    return struct.pack(">Q", word)


def test_bit_layout_matches_motorola_byte_rules() -> None:
    n = Notification(
        server_id="s",
        session_id=0xBEEF,
        ui_mode=UiMode.USER_INTERACTION,
        initiator=Initiator.USER,
        version=11,
    )
    hdr = build_trigger(n)[:8]
    (w,) = struct.unpack(">H", hdr[:2])
    assert (w & 0xFFC0) >> 6 == 11
    assert (w & 0x30) >> 4 == 3
    assert (w & 0x08) >> 3 == 0
    assert hdr[2:5] == b"\x00\x00\x00"
    assert hdr[5:7] == b"\xbe\xef"
    assert hdr[7] == 1


def test_vendor_data_round_trip() -> None:
    n = Notification(server_id=SERVER_ID, session_id=7, vendor_data=b"\x01\x02vendor")
    decoded = decode_notification(encode_notification(n, PASSWORD, NONCE))
    assert decoded.notification == n
    assert decoded.trigger.endswith(b"\x01\x02vendor")
    assert verify_notification(decoded, PASSWORD, NONCE)


def test_decode_accepts_other_versions_and_reports_them() -> None:
    trigger = _header(version=12, length=3) + b"abc"
    decoded = decode_notification(_with_digest(trigger, name="abc"))
    assert decoded.notification.version == 12
    assert verify_notification(decoded, PASSWORD, NONCE)


def test_decode_exposes_reserved_bits() -> None:
    trigger = _header(reserved=0x5A5A5A, length=3) + b"abc"
    decoded = decode_notification(b"\x00" * 16 + trigger)
    assert decoded.reserved == 0x5A5A5A
    assert decoded.notification.session_id == 1
    max_reserved = decode_notification(b"\x00" * 16 + _header(reserved=(1 << 27) - 1, length=1) + b"x")
    assert max_reserved.reserved == (1 << 27) - 1
    assert max_reserved.notification.initiator is Initiator.SERVER


def test_decode_utf8_server_id() -> None:
    raw = "dms-ü".encode()
    decoded = decode_notification(b"\x00" * 16 + _header(length=len(raw)) + raw)
    assert decoded.notification.server_id == "dms-ü"


def test_decode_accepts_bytearray() -> None:
    assert decode_notification(bytearray(EXAMPLE_BYTES)).notification == EXAMPLE


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "0 bytes; at least 24"),
        (EXAMPLE_BYTES[:23], "23 bytes; at least 24"),
        (EXAMPLE_BYTES[:-1], "length is 15 but only 14 bytes"),
        (b"\x00" * 16 + _header(length=1), "length is 1 but only 0 bytes"),
        (b"\x00" * 16 + _header(length=0), "server-identifier is empty"),
        (b"\x00" * 16 + _header(sid=0, length=1) + b"x", "session-id is 0"),
        (b"\x00" * 16 + _header(length=2) + b"\xff\xfe", "not ASCII/UTF-8"),
    ],
)
def test_decode_errors(data: bytes, fragment: str) -> None:
    with pytest.raises(MalformedMessage, match=fragment):
        decode_notification(data)


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(MalformedMessage):
        decode_notification("not bytes")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- Notification validation


@pytest.mark.parametrize(
    "kwargs",
    [
        {"session_id": 0},
        {"session_id": 0x10000},
        {"session_id": True},
        {"server_id": ""},
        {"server_id": "x" * 256},
        {"version": 1024},
        {"version": -1},
        {"ui_mode": 4},
        {"initiator": 2},
        {"vendor_data": "text"},
    ],
)
def test_notification_validation(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"server_id": SERVER_ID, "session_id": 1}
    base.update(kwargs)
    with pytest.raises(LocalProtocolError):
        Notification(**base)  # type: ignore[arg-type]


def test_notification_coerces_ints_and_defaults() -> None:
    n = Notification(server_id="x" * 255, session_id=0xFFFF, ui_mode=1, initiator=0)  # type: ignore[arg-type]
    assert n.ui_mode is UiMode.BACKGROUND
    assert n.initiator is Initiator.USER
    assert n.version == 11
    default = Notification(server_id="s", session_id=1)
    assert default.ui_mode is UiMode.NOT_SPECIFIED
    assert default.initiator is Initiator.SERVER


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("sid", "text"), [(0x0001, "1"), (0x00AB, "AB"), (0x1234, "1234"), (0xFFFF, "FFFF"), (0x0A0B, "A0B")]
)
def test_session_id_hex(sid: int, text: str) -> None:
    assert session_id_hex(sid) == text


@pytest.mark.parametrize("sid", [0, 0x10000, -1])
def test_session_id_hex_range(sid: int) -> None:
    with pytest.raises(LocalProtocolError):
        session_id_hex(sid)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("application/vnd.syncml.notification", True),
        ("application/vnd.syncml.dm.notification", True),
        ("Application/VND.SyncML.Notification; charset=binary", True),
        (" application/vnd.syncml.dm.notification ", True),
        ("application/vnd.syncml.dm+wbxml", False),
        ("", False),
    ],
)
def test_content_types(value: str, expected: bool) -> None:
    assert is_notification_content_type(value) is expected


def test_content_type_constants() -> None:
    assert NOTIFICATION_CONTENT_TYPE == "application/vnd.syncml.notification"
    assert NOTIFICATION_CONTENT_TYPE_IANA == "application/vnd.syncml.dm.notification"
    assert NOTIFICATION_WSP_CONTENT_TYPE == 0x44


# --------------------------------------------------------------------------- property tests

server_ids = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=60).filter(
    lambda s: len(s.encode()) <= 255
)
notifications = st.builds(
    Notification,
    server_id=server_ids,
    session_id=st.integers(1, 0xFFFF),
    ui_mode=st.sampled_from(UiMode),
    initiator=st.sampled_from(Initiator),
    version=st.integers(0, 1023),
    vendor_data=st.binary(max_size=64),
)


@given(notifications, st.text(max_size=20), st.binary(max_size=20))
def test_round_trip(n: Notification, password: str, nonce: bytes) -> None:
    data = encode_notification(n, password, nonce)
    decoded = decode_notification(data)
    assert decoded == DecodedNotification(notification=n, digest=data[:16], trigger=data[16:], reserved=0)
    assert verify_notification(decoded, password, nonce, lenient=False)
    assert verify_with_resync(decoded, password, nonce) is VerifyResult.OK


@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    try:
        decoded = decode_notification(data)
    except MalformedMessage:
        return
    assert decoded.digest == data[:16]
    assert decoded.trigger == data[16:]


@given(st.binary(min_size=16, max_size=16), st.integers(0, (1 << 64) - 1), st.binary(max_size=260))
def test_fuzz_structured(digest: bytes, word: int, tail: bytes) -> None:
    """Random header words hit every branch (lengths, reserved bits, ids) far more often."""
    try:
        decoded = decode_notification(digest + struct.pack(">Q", word) + tail)
    except MalformedMessage:
        return
    assert decoded.reserved == (word >> 24) & ((1 << 27) - 1)
    assert decoded.notification.session_id == (word >> 8) & 0xFFFF
