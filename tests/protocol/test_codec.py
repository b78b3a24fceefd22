"""The codec entry point: detection by bytes and content type, and its error contract."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omadm.protocol import codec
from omadm.protocol.codec import Encoding
from omadm.protocol.errors import MalformedMessage, ProtocolError
from omadm.protocol.messages import Alert, Item, Message, Meta, Replace, Source, SyncHdr, Target
from tests.strategies import messages, mutations

PKG1 = Message(
    SyncHdr("1", "1", Target("http://s/dm"), Source("IMEI:1"), meta=Meta(max_msg_size=16384)),
    (
        Alert("1", data="1201"),
        Replace(
            "2", tuple(Item(source=Source(f"./DevInfo/{n}"), data=v) for n, v in [("Man", "A"), ("Mod", "B")])
        ),
    ),
)


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/vnd.syncml.dm+xml", Encoding.XML),
        ("application/vnd.syncml.dm+wbxml", Encoding.WBXML),
        ("application/vnd.syncml+xml; charset=UTF-8", Encoding.XML),  # pitfall 30: DS types
        ("Application/Vnd.SyncML+WBXML", Encoding.WBXML),
        ("text/plain", None),
        (None, None),
    ],
)
def test_content_types_of_both_families(content_type: str | None, expected: Encoding | None) -> None:
    assert codec.encoding_for_content_type(content_type) is expected


@pytest.mark.parametrize("encoding", list(Encoding))
def test_the_bytes_decide_even_when_the_content_type_is_wrong(encoding: Encoding) -> None:
    body = codec.encode(PKG1, encoding)
    other = Encoding.XML if encoding is Encoding.WBXML else Encoding.WBXML
    message, found = codec.decode(body, other.content_type)
    assert found is encoding and message == PKG1


def test_xml_with_bom_and_leading_whitespace_is_detected() -> None:
    body = b"\xef\xbb\xbf\r\n  " + codec.encode(PKG1)
    assert codec.decode(body)[0] == PKG1


def test_neither_xml_nor_wbxml_is_refused_clearly() -> None:
    with pytest.raises(MalformedMessage, match="neither XML nor WBXML"):
        codec.decode(b"HTTP/1.1 200 OK\r\n")


@given(messages(binary=True), st.sampled_from(list(Encoding)))
@settings(max_examples=150, deadline=None)
def test_round_trip_through_either_encoding(message: Message, encoding: Encoding) -> None:
    decoded, found = codec.decode(codec.encode(message, encoding))
    assert found is encoding
    if encoding is Encoding.WBXML:
        assert codec.decode(codec.encode(decoded, encoding))[0] == decoded
    else:
        assert codec.encode(decoded, encoding) == codec.encode(codec.decode(codec.encode(decoded))[0])


@pytest.mark.parametrize("encoding", list(Encoding))
def test_mutated_messages_give_protocol_error_or_a_message(encoding: Encoding) -> None:
    # Message level: a WBXML body that decodes as elements may still not be a DM message;
    # that too must be a ProtocolError, never a stray TypeError or KeyError.
    for body in mutations(codec.encode(PKG1, encoding), 3000, seed=20261125):
        with contextlib.suppress(ProtocolError):
            codec.decode(body)
