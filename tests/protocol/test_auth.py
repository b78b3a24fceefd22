"""Tests of DM-level authentication: the digest's vectors, leniency rules and element builders."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac as std_hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omadm.protocol import auth
from omadm.protocol.auth import (
    HMAC_HEADER,
    RESYNC_NONCE,
    HmacHeader,
    auth_type_from_aauth_type,
    auth_type_of,
    basic_credential,
    build_hmac_header,
    decode_nonce,
    decode_nonce_lenient,
    encode_nonce,
    hmac_mac,
    hmac_mac_from_digest,
    mac_digest,
    make_chal,
    make_cred,
    md5_credential,
    md5_credential_from_digest,
    new_nonce,
    nonce_from_chal,
    parse_basic,
    parse_hmac_header,
    user_digest,
    verify_basic,
    verify_hmac,
    verify_hmac_digest,
    verify_md5,
    verify_md5_digest,
)
from omadm.protocol.codes import AuthType
from omadm.protocol.errors import LocalProtocolError, RemoteProtocolError
from omadm.protocol.messages import Chal, Cred, Meta

USER = "Bruce2"
PASSWORD = "OhBehave"
BODY = b"<SyncML>...</SyncML>"
BINARY_NONCE_TEXT = "LG3iZQhhdmKNHg=="
BINARY_NONCE = bytes.fromhex("2c6de265086176628d1e")

texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
usernames = texts.filter(lambda s: ":" not in s)


# --------------------------------------------------------------------------- digest vectors


def test_basic_vector() -> None:
    assert basic_credential(USER, PASSWORD) == "QnJ1Y2UyOk9oQmVoYXZl"


def test_user_digest_vector() -> None:
    assert user_digest(USER, PASSWORD) == "PtEdr8lBQ45IbT1bZIkrOQ=="


def test_md5_vector_text_nonce() -> None:
    assert md5_credential(USER, PASSWORD, b"Nonce") == "Zz6EivR3yeaaENcRN6lpAQ=="
    assert md5_credential_from_digest("PtEdr8lBQ45IbT1bZIkrOQ==", b"Nonce") == "Zz6EivR3yeaaENcRN6lpAQ=="


def test_md5_vector_binary_nonce() -> None:
    nonce = decode_nonce(BINARY_NONCE_TEXT)
    assert nonce == BINARY_NONCE
    assert md5_credential(USER, PASSWORD, nonce) == "LAK2i25Fh0nxxGGaAzRRpg=="


def test_hmac_vector() -> None:
    assert hmac_mac(USER, PASSWORD, b"Nonce", BODY) == "sApUT+tgL0x3wdVOn5GGlA=="
    assert hmac_mac_from_digest(user_digest(USER, PASSWORD), b"Nonce", BODY) == "sApUT+tgL0x3wdVOn5GGlA=="


def test_hmac_is_not_rfc2104() -> None:
    """Pitfall 7: the non-interoperable hmac.new(...) construction must not match."""
    wrong = std_hmac.new(
        user_digest(USER, PASSWORD).encode(),
        b"Nonce:" + base64.b64encode(hashlib.md5(BODY).digest()),
        hashlib.md5,
    ).digest()
    assert base64.b64encode(wrong).decode() != hmac_mac(USER, PASSWORD, b"Nonce", BODY)


def test_mac_digest_is_raw_16_bytes() -> None:
    raw = mac_digest(user_digest(USER, PASSWORD), b"Nonce", BODY)
    assert len(raw) == 16
    assert base64.b64encode(raw).decode() == "sApUT+tgL0x3wdVOn5GGlA=="


# --------------------------------------------------------------------------- basic


def test_parse_basic() -> None:
    assert parse_basic("QnJ1Y2UyOk9oQmVoYXZl") == (USER, PASSWORD)


def test_parse_basic_password_with_colons() -> None:
    data = base64.b64encode(b"user:pa:ss").decode()
    assert parse_basic(data) == ("user", "pa:ss")


def test_parse_basic_tolerates_whitespace_and_missing_padding() -> None:
    data = base64.b64encode(b"ab:c").decode()  # "YWI6Yw=="
    assert parse_basic(" YWI6\nYw ") == ("ab", "c")
    assert parse_basic(data) == ("ab", "c")


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ("***", "not valid base64"),
        ("QnJ1Y2Uy", "no ':'"),  # "Bruce2"
        (base64.b64encode(b"\xff\xfe:x").decode(), "UTF-8"),
    ],
)
def test_parse_basic_errors(data: str, fragment: str) -> None:
    with pytest.raises(RemoteProtocolError, match=fragment) as info:
        parse_basic(data)
    assert info.value.status_hint == 401


def test_verify_basic() -> None:
    assert verify_basic("QnJ1Y2UyOk9oQmVoYXZl", USER, PASSWORD)
    assert not verify_basic("QnJ1Y2UyOk9oQmVoYXZl", USER, "wrong")
    assert not verify_basic("QnJ1Y2UyOk9oQmVoYXZl", "Bruce", PASSWORD)
    assert not verify_basic("not base64 !", USER, PASSWORD)
    assert not verify_basic("", USER, PASSWORD)


def test_basic_username_with_colon_refused() -> None:
    with pytest.raises(LocalProtocolError):
        basic_credential("a:b", "c")


@given(usernames, texts)
def test_basic_round_trip(username: str, password: str) -> None:
    data = basic_credential(username, password)
    assert parse_basic(data) == (username, password)
    assert verify_basic(data, username, password)


# --------------------------------------------------------------------------- md5 verification


def test_verify_md5_accepts_correct() -> None:
    assert verify_md5("LAK2i25Fh0nxxGGaAzRRpg==", USER, PASSWORD, BINARY_NONCE)
    assert verify_md5_digest("LAK2i25Fh0nxxGGaAzRRpg==", "PtEdr8lBQ45IbT1bZIkrOQ==", BINARY_NONCE)


def test_verify_md5_lenient_accepts_b64_text_bug() -> None:
    """Pitfall 1: a peer that hashed the NextNonce text instead of its decoded bytes."""
    assert verify_md5("kpKgquN4uuyvg2Io01gZ5A==", USER, PASSWORD, BINARY_NONCE)
    assert not verify_md5("kpKgquN4uuyvg2Io01gZ5A==", USER, PASSWORD, BINARY_NONCE, lenient=False)
    assert verify_md5("LAK2i25Fh0nxxGGaAzRRpg==", USER, PASSWORD, BINARY_NONCE, lenient=False)


def test_verify_md5_rejects() -> None:
    assert not verify_md5("LAK2i25Fh0nxxGGaAzRRpg==", USER, "nope", BINARY_NONCE)
    assert not verify_md5("LAK2i25Fh0nxxGGaAzRRpg==", USER, PASSWORD, b"other")
    assert not verify_md5("garbage!", USER, PASSWORD, BINARY_NONCE)
    assert not verify_md5("QUJD", USER, PASSWORD, BINARY_NONCE)  # valid b64, wrong length
    assert not verify_md5("", USER, PASSWORD, BINARY_NONCE)


def test_verify_md5_tolerates_missing_padding() -> None:
    assert verify_md5("Zz6EivR3yeaaENcRN6lpAQ", USER, PASSWORD, b"Nonce")


@given(usernames, texts, st.binary(max_size=32))
def test_md5_round_trip(username: str, password: str, nonce: bytes) -> None:
    cred = md5_credential(username, password, nonce)
    assert verify_md5(cred, username, password, nonce, lenient=False)
    assert verify_md5_digest(cred, user_digest(username, password), nonce)


# --------------------------------------------------------------------------- nonces


def test_new_nonce_default_is_16_random_bytes() -> None:
    a, b = new_nonce(), new_nonce()
    assert len(a) == 16
    assert a != b


def test_new_nonce_injectable() -> None:
    assert new_nonce(lambda n: b"\x07" * n) == b"\x07" * 16
    assert new_nonce(lambda n: b"\x01" * n, size=4) == b"\x01\x01\x01\x01"


def test_new_nonce_rejects_bad_source() -> None:
    with pytest.raises(LocalProtocolError):
        new_nonce(lambda n: b"short")
    with pytest.raises(LocalProtocolError):
        new_nonce(size=0)


def test_resync_nonce() -> None:
    assert RESYNC_NONCE == b"\x00" * 4
    assert encode_nonce(RESYNC_NONCE) == "AAAAAA=="


def test_encode_decode_nonce() -> None:
    assert encode_nonce(BINARY_NONCE) == BINARY_NONCE_TEXT
    assert decode_nonce(BINARY_NONCE_TEXT) == BINARY_NONCE
    assert decode_nonce("LG3iZQhhdmKNHg") == BINARY_NONCE  # padding dropped
    assert decode_nonce(" LG3iZQhh\n dmKNHg== ") == BINARY_NONCE  # wrapped
    assert decode_nonce("") == b""


@pytest.mark.parametrize("text", ["Nonce", "a!b=", "AAAA===", "AAAAA", "=AAA"])
def test_decode_nonce_strict_rejects(text: str) -> None:
    with pytest.raises(RemoteProtocolError, match="not valid base64"):
        decode_nonce(text)


def test_decode_nonce_lenient_falls_back_to_text() -> None:
    assert decode_nonce_lenient("Nonce") == b"Nonce"
    assert decode_nonce_lenient(BINARY_NONCE_TEXT) == BINARY_NONCE


@given(st.binary(max_size=64))
def test_nonce_round_trip(nonce: bytes) -> None:
    assert decode_nonce(encode_nonce(nonce)) == nonce
    assert decode_nonce_lenient(encode_nonce(nonce)) == nonce


# --------------------------------------------------------------------------- Cred / Chal


def test_make_cred_basic() -> None:
    cred = make_cred(AuthType.BASIC, USER, PASSWORD)
    assert cred == Cred(data="QnJ1Y2UyOk9oQmVoYXZl", meta=Meta(format="b64", type="syncml:auth-basic"))


def test_make_cred_md5() -> None:
    cred = make_cred(AuthType.MD5, USER, PASSWORD, b"Nonce")
    assert cred == Cred(data="Zz6EivR3yeaaENcRN6lpAQ==", meta=Meta(format="b64", type="syncml:auth-md5"))


def test_make_cred_errors() -> None:
    with pytest.raises(LocalProtocolError, match="nonce"):
        make_cred(AuthType.MD5, USER, PASSWORD)
    with pytest.raises(LocalProtocolError, match="x-syncml-hmac"):
        make_cred(AuthType.HMAC, USER, PASSWORD, b"n")
    with pytest.raises(LocalProtocolError):
        make_cred(AuthType.X509, USER, PASSWORD)


def test_make_chal() -> None:
    assert make_chal(AuthType.BASIC) == Chal(meta=Meta(format="b64", type="syncml:auth-basic"))
    chal = make_chal(AuthType.MD5, BINARY_NONCE)
    assert chal == Chal(meta=Meta(format="b64", type="syncml:auth-md5", next_nonce=BINARY_NONCE_TEXT))
    mac = make_chal(AuthType.HMAC, b"\x00\x01\x02\x03")
    assert mac.meta.type == "syncml:auth-MAC"
    assert mac.meta.next_nonce == "AAECAw=="


def test_make_chal_errors() -> None:
    with pytest.raises(LocalProtocolError):
        make_chal(AuthType.MD5)
    with pytest.raises(LocalProtocolError):
        make_chal(AuthType.HMAC, None)
    with pytest.raises(LocalProtocolError):
        make_chal(AuthType.BASIC, b"x")
    with pytest.raises(LocalProtocolError):
        make_chal(AuthType.SECURID, b"x")


def test_nonce_from_chal() -> None:
    assert nonce_from_chal(make_chal(AuthType.MD5, BINARY_NONCE)) == BINARY_NONCE
    assert nonce_from_chal(make_chal(AuthType.BASIC)) is None


def test_nonce_from_chal_lenient_and_strict() -> None:
    chal = Chal(meta=Meta(format="b64", type="syncml:auth-md5", next_nonce="Nonce"))
    assert nonce_from_chal(chal) == b"Nonce"
    with pytest.raises(RemoteProtocolError):
        nonce_from_chal(chal, lenient=False)


def test_nonce_from_chal_non_b64_format_uses_text() -> None:
    chal = Chal(meta=Meta(format="chr", type="syncml:auth-md5", next_nonce="AAAA"))
    assert nonce_from_chal(chal) == b"AAAA"
    upper = Chal(meta=Meta(format=" B64 ", type="syncml:auth-md5", next_nonce="AAAA"))
    assert nonce_from_chal(upper) == b"\x00\x00\x00"


def test_nonce_from_chal_without_format_decodes_b64() -> None:
    chal = Chal(meta=Meta(type="syncml:auth-md5", next_nonce=BINARY_NONCE_TEXT))
    assert nonce_from_chal(chal) == BINARY_NONCE


@pytest.mark.parametrize(
    ("type_text", "expected"),
    [
        ("syncml:auth-basic", AuthType.BASIC),
        ("syncml:auth-md5", AuthType.MD5),
        ("SYNCML:AUTH-MD5", AuthType.MD5),
        ("syncml:auth-MAC", AuthType.HMAC),
        ("syncml:auth-mac", AuthType.HMAC),
        ("  syncml:auth-md5\n", AuthType.MD5),
        ("syncml:auth-md5\x00", AuthType.MD5),
        ("syncml:auth-x509", AuthType.X509),
    ],
)
def test_auth_type_of(type_text: str, expected: AuthType) -> None:
    assert auth_type_of(Cred(data="x", meta=Meta(type=type_text))) is expected
    assert auth_type_of(Chal(meta=Meta(type=type_text))) is expected


def test_auth_type_of_default() -> None:
    assert auth_type_of(Cred(data="x")) is AuthType.BASIC
    assert auth_type_of(Cred(data="x", meta=Meta(format="b64"))) is AuthType.BASIC
    assert auth_type_of(Chal(meta=Meta()), default=AuthType.MD5) is AuthType.MD5
    with pytest.raises(RemoteProtocolError, match="no Meta/Type"):
        auth_type_of(Cred(data="x"), default=None)


def test_auth_type_of_unknown() -> None:
    with pytest.raises(RemoteProtocolError, match="unknown authentication type") as info:
        auth_type_of(Cred(data="x", meta=Meta(type="syncml:auth-sha256")))
    assert info.value.status_hint == 406


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("BASIC", AuthType.BASIC),
        ("DIGEST", AuthType.MD5),
        ("digest", AuthType.MD5),
        ("HMAC", AuthType.HMAC),
        ("X509", AuthType.X509),
        ("HTTP-BASIC", None),
        ("HTTP-DIGEST", None),
        ("TRANSPORT", None),
        ("bogus", None),
    ],
)
def test_auth_type_from_aauth_type(value: str, expected: AuthType | None) -> None:
    assert auth_type_from_aauth_type(value) is expected


# --------------------------------------------------------------------------- HMAC header


def test_header_name() -> None:
    assert HMAC_HEADER == "x-syncml-hmac"


def test_build_hmac_header() -> None:
    mac = hmac_mac(USER, PASSWORD, b"Nonce", BODY)
    assert build_hmac_header(USER, mac) == 'algorithm=MD5, username="Bruce2", mac=sApUT+tgL0x3wdVOn5GGlA=='
    assert build_hmac_header(USER, mac, "md5").startswith("algorithm=MD5,")


def test_build_hmac_header_escapes_quotes() -> None:
    value = build_hmac_header('a"b\\c', "AAAA")
    assert value == 'algorithm=MD5, username="a\\"b\\\\c", mac=AAAA'
    assert parse_hmac_header(value).username == 'a"b\\c'


@pytest.mark.parametrize(
    ("username", "mac", "algorithm"),
    [
        ("bad\r\nX-Injected: 1", "AAAA", "MD5"),
        ("u", "AA AA", "MD5"),
        ("u", "", "MD5"),
        ("u", "AAAA,x", "MD5"),
        ("u", "AAAA", "SHA1"),
        ("", "AAAA", "MD5"),
    ],
)
def test_build_hmac_header_refuses(username: str, mac: str, algorithm: str) -> None:
    with pytest.raises(LocalProtocolError):
        build_hmac_header(username, mac, algorithm)


@pytest.mark.parametrize(
    "value",
    [
        'algorithm=MD5, username="Bruce2", mac=sApUT+tgL0x3wdVOn5GGlA==',
        'algorithm=MD5,username="Bruce2",mac=sApUT+tgL0x3wdVOn5GGlA==',
        'username="Bruce2", mac=sApUT+tgL0x3wdVOn5GGlA==',
        "username=Bruce2, mac=sApUT+tgL0x3wdVOn5GGlA==",
        'mac=sApUT+tgL0x3wdVOn5GGlA==, algorithm=md5, username="Bruce2"',
        '  Algorithm = MD5 ,  UserName = "Bruce2" ,  MAC = sApUT+tgL0x3wdVOn5GGlA==  ',
        'algorithm=MD5, realm="x, y", username="Bruce2", nc=1, mac=sApUT+tgL0x3wdVOn5GGlA==, stray',
        'username="Bruce2", mac="sApUT+tgL0x3wdVOn5GGlA=="',
    ],
)
def test_parse_hmac_header_lenient(value: str) -> None:
    assert parse_hmac_header(value) == HmacHeader(username="Bruce2", mac="sApUT+tgL0x3wdVOn5GGlA==")


@pytest.mark.parametrize(
    ("value", "fragment", "status"),
    [
        ("algorithm=MD5, mac=AAAA", "missing username", 401),
        ('algorithm=MD5, username="u"', "missing mac", 401),
        ("", "missing username and mac", 401),
        ('username="", mac=AAAA', "missing username", 401),
        ('username="u, mac=AAAA', "unterminated", 401),
        ('username="u"x, mac=AAAA', "after its quoted value", 401),
        ("username=u, username=v, mac=AAAA", "repeats", 401),
        ("algorithm=SHA-1, username=u, mac=AAAA", "not supported", 406),
    ],
)
def test_parse_hmac_header_errors(value: str, fragment: str, status: int) -> None:
    with pytest.raises(RemoteProtocolError, match=fragment) as info:
        parse_hmac_header(value)
    assert info.value.status_hint == status


def test_hmac_header_round_trip_method() -> None:
    header = HmacHeader(username=USER, mac="sApUT+tgL0x3wdVOn5GGlA==")
    assert parse_hmac_header(header.to_header()) == header


@given(
    st.text(
        alphabet=st.characters(min_codepoint=0x20, codec="utf-8", exclude_characters="\x7f"),
        min_size=1,
        max_size=30,
    )
)
def test_hmac_header_username_round_trip(username: str) -> None:
    value = build_hmac_header(username, "sApUT+tgL0x3wdVOn5GGlA==")
    assert parse_hmac_header(value).username == username


@given(st.text(max_size=80))
def test_parse_hmac_header_fuzz(value: str) -> None:
    with contextlib.suppress(RemoteProtocolError):
        parse_hmac_header(value)


# --------------------------------------------------------------------------- HMAC verification


def test_verify_hmac() -> None:
    value = 'algorithm=MD5, username="Bruce2", mac=sApUT+tgL0x3wdVOn5GGlA=='
    assert verify_hmac(value, USER, PASSWORD, b"Nonce", BODY)
    assert verify_hmac(parse_hmac_header(value), USER, PASSWORD, b"Nonce", BODY)
    assert verify_hmac_digest(value, user_digest(USER, PASSWORD), b"Nonce", BODY)


def test_verify_hmac_rejects() -> None:
    value = 'username="Bruce2", mac=sApUT+tgL0x3wdVOn5GGlA=='
    assert not verify_hmac(value, USER, PASSWORD, b"Nonce", BODY + b" ")
    assert not verify_hmac(value, USER, PASSWORD, b"nonce", BODY)
    assert not verify_hmac(value, USER, "x", b"Nonce", BODY)
    assert not verify_hmac('username="Bruce2", mac=AAAA', USER, PASSWORD, b"Nonce", BODY)
    assert not verify_hmac('username="Bruce2", mac=%%%', USER, PASSWORD, b"Nonce", BODY)


def test_verify_hmac_lenient_nonce_text() -> None:
    nonce = BINARY_NONCE
    text_mac = hmac_mac(USER, PASSWORD, BINARY_NONCE_TEXT.encode(), BODY)
    header = build_hmac_header(USER, text_mac)
    assert verify_hmac(header, USER, PASSWORD, nonce, BODY)
    assert not verify_hmac(header, USER, PASSWORD, nonce, BODY, lenient=False)


def test_verify_hmac_accepts_b64_of_hex_digest() -> None:
    """The spec's header example encodes the hex text of the digest (padding dropped)."""
    raw = mac_digest(user_digest(USER, PASSWORD), b"Nonce", BODY)
    hex_form = base64.b64encode(raw.hex().encode()).decode()
    for mac in (hex_form, hex_form.rstrip("="), base64.b64encode(raw.hex().upper().encode()).decode()):
        assert verify_hmac(HmacHeader(username=USER, mac=mac), USER, PASSWORD, b"Nonce", BODY)
    not_hex = base64.b64encode(b"z" * 32).decode()
    assert not verify_hmac(HmacHeader(username=USER, mac=not_hex), USER, PASSWORD, b"Nonce", BODY)


def test_spec_example_mac_decodes_to_hex_text() -> None:
    """``NTI2OTJh...`` from the spec is b64 of a hex digest; we can read it as 16 bytes."""
    assert auth._mac_bytes("NTI2OTJhMDAwNjYxODkwYmQ3NWUxN2RhN2ZmYmJlMzk") == bytes.fromhex(
        "52692a000661890bd75e17da7ffbbe39"
    )


def test_verify_hmac_header_errors_propagate() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        verify_hmac("algorithm=SHA1, username=u, mac=AAAA", USER, PASSWORD, b"n", BODY)
    assert info.value.status_hint == 406
    with pytest.raises(RemoteProtocolError) as info:
        verify_hmac(HmacHeader(username="u", mac="AAAA", algorithm="SHA1"), USER, PASSWORD, b"n", BODY)
    assert info.value.status_hint == 406
    with pytest.raises(RemoteProtocolError):
        verify_hmac("mac=AAAA", USER, PASSWORD, b"n", BODY)


def test_verify_hmac_ignores_header_username() -> None:
    """The header username is for account lookup; the MAC is what binds the identity."""
    mac = hmac_mac(USER, PASSWORD, b"Nonce", BODY)
    assert verify_hmac(HmacHeader(username="someone-else", mac=mac), USER, PASSWORD, b"Nonce", BODY)
    assert not verify_hmac(HmacHeader(username=USER, mac=mac), "someone-else", PASSWORD, b"Nonce", BODY)


@given(usernames, texts, st.binary(max_size=24), st.binary(max_size=200))
def test_hmac_round_trip(username: str, password: str, nonce: bytes, body: bytes) -> None:
    mac = hmac_mac(username, password, nonce, body)
    assert len(mac) == 24
    if username and username.isprintable():
        assert verify_hmac(build_hmac_header(username, mac), username, password, nonce, body, lenient=False)
    assert verify_hmac(HmacHeader(username=username, mac=mac), username, password, nonce, body)
