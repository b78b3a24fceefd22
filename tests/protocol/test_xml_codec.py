"""The XML codec: lenient parsing of what peers send, strict serialization, hardening."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omadm.protocol import xml_codec
from omadm.protocol.errors import MalformedMessage, ProtocolError, UnsupportedElement
from omadm.protocol.messages import (
    Add,
    Alert,
    Atomic,
    Exec,
    Get,
    Item,
    Message,
    Meta,
    Replace,
    Results,
    Sequence,
    Source,
    Status,
    SyncHdr,
    Target,
)
from tests.strategies import messages, mutations

PKG1 = b"""<?xml version="1.0" encoding="UTF-8"?>
<SyncML xmlns="SYNCML:SYNCML1.2">
  <SyncHdr>
    <VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto>
    <SessionID>1A2B</SessionID><MsgID>1</MsgID>
    <Target><LocURI>https://dm.example.com/dm</LocURI></Target>
    <Source><LocURI>IMEI:493005100592800</LocURI><LocName>user</LocName></Source>
    <Cred><Meta><Format xmlns="syncml:metinf">b64</Format>
      <Type xmlns="syncml:metinf">syncml:auth-md5</Type></Meta>
      <Data>Zz6EivR3yeaaENcRN6lpAQ==</Data></Cred>
    <Meta><MaxMsgSize xmlns="syncml:metinf">16384</MaxMsgSize>
      <MaxObjSize xmlns="syncml:metinf">524288</MaxObjSize></Meta>
  </SyncHdr>
  <SyncBody>
    <Alert><CmdID>1</CmdID><Data>1201</Data></Alert>
    <Replace><CmdID>2</CmdID>
      <Item><Source><LocURI>./DevInfo/DevId</LocURI></Source><Data>IMEI:493005100592800</Data></Item>
      <Item><Source><LocURI>./DevInfo/Man</LocURI></Source><Data>Acme &amp; Co</Data></Item>
    </Replace>
    <Final/>
  </SyncBody>
</SyncML>"""


def test_parses_a_client_package_1() -> None:
    msg = xml_codec.parse(PKG1)
    hdr = msg.header
    assert (hdr.session_id, hdr.msg_id, hdr.ver_dtd, hdr.ver_proto) == ("1A2B", "1", "1.2", "DM/1.2")
    assert hdr.source == Source("IMEI:493005100592800", "user")
    assert hdr.cred is not None and hdr.cred.meta is not None
    assert hdr.cred.meta.type == "syncml:auth-md5"
    assert hdr.meta == Meta(max_msg_size=16384, max_obj_size=524288)
    alert, replace = msg.commands
    assert isinstance(alert, Alert) and alert.code == 1201
    assert isinstance(replace, Replace)
    assert [i.data for i in replace.items] == ["IMEI:493005100592800", "Acme & Co"]
    assert msg.final


def test_serializes_in_dtd_order_with_per_child_metinf_namespace() -> None:
    msg = Message(
        SyncHdr("1", "1", Target("https://s/dm"), Source("IMEI:1"), meta=Meta(max_msg_size=4096)),
        (
            Exec("2", (Item(target=Target("./SCOMO/Download/1/Operations/Install")),), correlator="job-7"),
            Get("3", (Item(target=Target("./DevDetail/SwV")),)),
        ),
    )
    out = xml_codec.serialize(msg)
    assert out.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    assert b'<MaxMsgSize xmlns="syncml:metinf">4096</MaxMsgSize>' in out
    assert out.index(b"<Correlator>") < out.index(b"<Item>")
    assert (
        out.index(b"<VerDTD>") < out.index(b"<VerProto>") < out.index(b"<SessionID>") < out.index(b"<MsgID>")
    )
    assert out.endswith(b"<Final/></SyncBody></SyncML>")
    assert xml_codec.parse(out) == msg


@pytest.mark.parametrize(
    "meta_xml",
    [
        b'<Meta><Format xmlns="syncml:metinf">INT</Format></Meta>',  # per-child namespace, upper case
        b'<Meta xmlns="syncml:metinf"><Format>Int</Format></Meta>',  # namespace on Meta (seen, invalid)
        b"<Meta><Format>int</Format></Meta>",  # no namespace (Windows)
        b'<Meta><m:Format xmlns:m="syncml:metinf">int</m:Format></Meta>',  # prefixed
    ],
)
def test_meta_namespaces_and_format_case_are_tolerated(meta_xml: bytes) -> None:
    doc = (
        b'<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto>'
        b"<SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>a</LocURI></Target>"
        b"<Source><LocURI>b</LocURI></Source></SyncHdr><SyncBody><Replace><CmdID>1</CmdID>"
        + meta_xml
        + b"<Item><Target><LocURI>./x</LocURI></Target><Data>3</Data></Item></Replace><Final></Final>"
        b"</SyncBody></SyncML>"
    )
    msg = xml_codec.parse(doc)
    cmd = msg.commands[0]
    assert isinstance(cmd, Replace) and cmd.meta == Meta(format="int")
    assert msg.final


def test_elements_out_of_dtd_order_crlf_cdata_and_status_zero() -> None:
    doc = (
        b"<SyncML><SyncHdr>\r\n<MsgID>2</MsgID><SessionID>7</SessionID><Source><LocURI>dev</LocURI></Source>"
        b"<Target><LocURI>srv</LocURI></Target><VerProto>DM/1.2</VerProto><VerDTD>1.2</VerDTD></SyncHdr>\r\n"
        b"<SyncBody><Status><MsgRef>1</MsgRef><CmdID>1</CmdID><Cmd>SyncHdr</Cmd><CmdRef>0</CmdRef>"
        b"<Data>0</Data></Status>"
        b"<Results><CmdRef>4</CmdRef><CmdID>2</CmdID><MsgRef>1</MsgRef><Item><Data><![CDATA[a<b>&c]]></Data>"
        b"<Source><LocURI>./x</LocURI></Source></Item></Results></SyncBody></SyncML>"
    )
    msg = xml_codec.parse(doc)
    status, results = msg.commands
    assert isinstance(status, Status) and status.data == "0" and status.code == 0
    assert isinstance(results, Results) and results.items[0].data == "a<b>&c"
    assert not msg.final


def test_status_for_synchdr_without_cmdref_means_cmdref_zero() -> None:
    doc = (
        b"<SyncML><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID>"
        b"<MsgID>2</MsgID><Target><LocURI>a</LocURI></Target><Source><LocURI>b</LocURI></Source></SyncHdr>"
        b"<SyncBody><Status><MsgRef>1</MsgRef><CmdID>1</CmdID><Cmd>SyncHdr</Cmd><Data>212</Data></Status>"
        b"<Final/></SyncBody></SyncML>"
    )
    (status,) = xml_codec.parse(doc).commands
    assert isinstance(status, Status) and status.cmd_ref == "0"


def test_nested_atomic_and_sequence_round_trip() -> None:
    add = Add("3", (Item(target=Target("./a"), meta=Meta(format="node")),))
    msg = Message(
        SyncHdr("1", "2", Target("dev"), Source("srv")),
        (Sequence("1", (Atomic("2", (add,)), Get("4", (Item(target=Target("./a")),)))),),
    )
    assert xml_codec.parse(xml_codec.serialize(msg)) == msg


def test_binary_data_over_xml_travels_as_b64() -> None:
    hdr = SyncHdr("1", "1", Target("a"), Source("b"))
    for meta in (None, Meta(format="bin", type="application/octet-stream")):
        msg = Message(hdr, (Replace("1", (Item(target=Target("./x"), meta=meta, data=b"\x00\x01"),)),))
        out = xml_codec.serialize(msg)
        (cmd,) = xml_codec.parse(out).commands
        assert isinstance(cmd, Replace) and cmd.items[0].data == "AAE="
        assert cmd.items[0].meta is not None and cmd.items[0].meta.format == "b64"
        assert out.index(b"<Meta>") < out.index(b"<Data>")


def test_embedded_tnds_in_data_is_kept_as_xml_text() -> None:
    doc = (
        b"<SyncML><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID>"
        b"<MsgID>2</MsgID><Target><LocURI>a</LocURI></Target><Source><LocURI>b</LocURI></Source></SyncHdr>"
        b"<SyncBody><Add><CmdID>1</CmdID><Item><Target><LocURI>./x</LocURI></Target><Data>"
        b'<MgmtTree xmlns="syncml:dmddf1.2"><VerDTD>1.2</VerDTD></MgmtTree>'
        b"</Data></Item></Add></SyncBody></SyncML>"
    )
    (add,) = xml_codec.parse(doc).commands
    assert isinstance(add, Add)
    assert add.items[0].data == '<MgmtTree xmlns="syncml:dmddf1.2"><VerDTD>1.2</VerDTD></MgmtTree>'


def _msg_with_body(body: bytes) -> bytes:
    return (
        b"<SyncML><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID>"
        b"<MsgID>1</MsgID><Target><LocURI>a</LocURI></Target><Source><LocURI>b</LocURI></Source></SyncHdr>"
        b"<SyncBody>" + body + b"</SyncBody></SyncML>"
    )


@pytest.mark.parametrize(
    ("doc", "error", "words"),
    [
        (
            _msg_with_body(b"<Sync><CmdID>1</CmdID></Sync>"),
            UnsupportedElement,
            "<Sync> in <SyncBody> is a SyncML DS",
        ),
        (_msg_with_body(b"<Frobnicate/>"), UnsupportedElement, "unknown element <Frobnicate> in <SyncBody>"),
        (_msg_with_body(b"<Get><Item/></Get>"), MalformedMessage, "<Get> lacks the mandatory <CmdID>"),
        (
            _msg_with_body(b"<Status><CmdID>1</CmdID></Status>"),
            MalformedMessage,
            "<Status> lacks the mandatory",
        ),
        (
            _msg_with_body(b"<Add><CmdID>1</CmdID><Meta><Size>-3</Size></Meta></Add>"),
            MalformedMessage,
            "<Size>",
        ),
        (
            _msg_with_body(b"<Add><CmdID>1</CmdID><Meta><Size>x</Size></Meta></Add>"),
            MalformedMessage,
            "<Size>",
        ),
        (b"<SyncML><SyncBody/></SyncML>", MalformedMessage, "lacks the mandatory <SyncHdr>"),
        (b"<Foo/>", MalformedMessage, "root element is <Foo>"),
        (b"", MalformedMessage, "empty message"),
        (b"<SyncML><SyncHdr>", MalformedMessage, "not well-formed"),
        (b"\xff\xfe<junk", MalformedMessage, "not well-formed"),
    ],
)
def test_bad_input_names_the_element_and_the_problem(doc: bytes, error: type[Exception], words: str) -> None:
    with pytest.raises(error) as info:
        xml_codec.parse(doc)
    assert words in str(info.value)


def test_entity_bomb_is_refused() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE SyncML [<!ENTITY a "aaaaaaaaaa">'
        + b"".join(
            b'<!ENTITY e%d "&e%d;&e%d;&e%d;&e%d;&e%d;&e%d;&e%d;&e%d;&e%d;&e%d;">' % ((i,) + (i - 1,) * 10)
            for i in range(1, 10)
        ).replace(b"&e0;", b"&a;")
        + b"]><SyncML>&e9;</SyncML>"
    )
    with pytest.raises(MalformedMessage, match=r"(?i)entity|internal subset"):
        xml_codec.parse(bomb)


def test_external_entity_is_refused_and_never_fetched() -> None:
    xxe = b'<?xml version="1.0"?><!DOCTYPE SyncML [<!ENTITY x SYSTEM "file:///etc/passwd">]><SyncML>&x;</SyncML>'
    with pytest.raises(MalformedMessage):
        xml_codec.parse(xxe)


def test_public_doctype_is_accepted_without_network() -> None:
    doc = (
        b'<!DOCTYPE SyncML PUBLIC "-//SYNCML//DTD SyncML 1.2//EN" '
        b'"http://www.openmobilealliance.org/tech/DTD/OMA-TS-SyncML_RepPro_DTD-V1_2.dtd">'
        + _msg_with_body(b"<Final/>")
    )
    assert xml_codec.parse(doc).final


def test_size_and_depth_caps() -> None:
    with pytest.raises(MalformedMessage, match="exceeds"):
        xml_codec.parse(_msg_with_body(b"<Final/>"), max_size=100)
    deep = b"<Sequence><CmdID>1</CmdID>" * 80 + b"</Sequence>" * 80
    with pytest.raises(MalformedMessage, match="deeper"):
        xml_codec.parse(_msg_with_body(deep))


@given(messages())
@settings(max_examples=300, deadline=None)
def test_round_trip(msg: Message) -> None:
    assert xml_codec.parse(xml_codec.serialize(msg)) == msg


@given(messages())
@settings(max_examples=400, deadline=None)
def test_the_text_writer_writes_the_element_tree_s_bytes(msg: Message) -> None:
    # xml_writer (every reply) and message_to_element + lxml (WBXML, pretty output) agree
    # byte for byte, so the HMAC and the interop tests hold for both.
    assert xml_codec.serialize(msg) == xml_codec.tree_bytes(msg)


@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=20))
@settings(max_examples=400, deadline=None)
def test_the_text_writer_accepts_and_refuses_any_text_as_lxml_does(text: str) -> None:
    msg = Message(SyncHdr("1", "1", Target("http://s/dm"), Source("IMEI:1")), (Alert("1", data=text),))
    try:
        expected = xml_codec.tree_bytes(msg)
    except ValueError:
        with pytest.raises(ValueError, match="XML compatible"):
            xml_codec.serialize(msg)
    else:
        assert xml_codec.serialize(msg) == expected


@pytest.mark.parametrize("text", ["a\x00b", "\x0b", "x\ufffe", "\uffff", "bell\x07"])
def test_the_text_writer_refuses_what_xml_cannot_carry_as_lxml_does(text: str) -> None:
    msg = Message(SyncHdr("1", "1", Target("http://s/dm"), Source("IMEI:1")), (Alert("1", data=text),))
    with pytest.raises(ValueError, match="XML compatible") as by_lxml:
        xml_codec.tree_bytes(msg)
    with pytest.raises(ValueError, match="XML compatible") as by_writer:
        xml_codec.serialize(msg)
    assert str(by_writer.value) == str(by_lxml.value)


@given(messages())
@settings(max_examples=50, deadline=None)
def test_pretty_printed_output_parses_to_the_same_message(msg: Message) -> None:
    # Indentation goes only between elements, never into text, and identifiers are trimmed.
    assert xml_codec.parse(xml_codec.serialize(msg, pretty=True)) == msg


@given(st.binary(max_size=400))
@settings(max_examples=400, deadline=None)
def test_random_bytes_give_protocol_error_or_message(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        xml_codec.parse(data)


def test_mutated_messages_give_protocol_error_or_message() -> None:
    for doc in mutations(PKG1, 6000, seed=1234):
        with contextlib.suppress(ProtocolError):
            xml_codec.parse(doc)
