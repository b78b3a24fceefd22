"""Loading, converting, describing and linting documents for tools."""

from __future__ import annotations

import pytest

from omadm.protocol import codec, summary, wbxml, xml_codec
from omadm.protocol.codec import Encoding
from omadm.protocol.errors import LocalProtocolError, MalformedMessage, UnsupportedElement
from omadm.protocol.messages import (
    Alert,
    Atomic,
    Command,
    Get,
    Item,
    Message,
    Replace,
    Sequence,
    Source,
    Status,
    SyncHdr,
    Target,
)


def _message(
    *commands: Command, final: bool = True, ver_dtd: str = "1.2", ver_proto: str = "DM/1.2"
) -> Message:
    header = SyncHdr(
        "1", "2", Target("IMEI:1"), Source("https://dm.example.com/"), ver_dtd=ver_dtd, ver_proto=ver_proto
    )
    return Message(header, commands, final=final)


def _hdr_status(cmd_id: str = "1") -> Status:
    return Status(cmd_id, msg_ref="1", cmd_ref="0", cmd="SyncHdr", data="200")


SERVER_PKG2 = _message(
    _hdr_status("1"),
    Status("2", msg_ref="1", cmd_ref="1", cmd="Alert", data="200"),
    Status("3", msg_ref="1", cmd_ref="2", cmd="Replace", data="200"),
    Get("4", (Item(target=Target("./DevDetail/SwV")),)),
    Replace("5", (Item(target=Target("./DevDetail/Ext/Conf"), data="on"),)),
)

DDF = b"""<?xml version="1.0"?>
<MgmtTree xmlns="syncml:dmddf1.2">
  <VerDTD>1.2</VerDTD>
  <Node><NodeName>DevInfo</NodeName>
    <Node><NodeName>Mod</NodeName><Value>X1</Value></Node>
  </Node>
</MgmtTree>"""


def test_describe_names_versions_identity_and_commands() -> None:
    assert summary.describe(SERVER_PKG2, Encoding.XML) == (
        "SyncML DM message, XML, 1.2/DM/1.2, SessionID 1, MsgID 2, 5 commands "
        f"(Status{summary.TIMES}3, Get, Replace), Final"
    )


def test_describe_singular_empty_and_not_final() -> None:
    one = _message(Alert("1", data="1201"), final=False)
    assert summary.describe(one, Encoding.WBXML).endswith(
        "WBXML, 1.2/DM/1.2, SessionID 1, MsgID 2, 1 command (Alert), no Final"
    )
    empty = _message(ver_dtd="", ver_proto="")
    assert ", ?/?, " in summary.describe(empty, Encoding.XML)
    assert ", 0 commands, Final" in summary.describe(empty, Encoding.XML)


@pytest.mark.parametrize("encoding", list(Encoding))
def test_load_decodes_messages_through_the_model(encoding: Encoding) -> None:
    doc = summary.load(codec.encode(SERVER_PKG2, encoding))
    assert doc.message == SERVER_PKG2
    assert doc.tree is None
    assert doc.encoding is encoding
    assert doc.root_name == "SyncML"


@pytest.mark.parametrize("encoding", list(Encoding))
def test_convert_round_trips_messages(encoding: Encoding) -> None:
    doc = summary.load(codec.encode(SERVER_PKG2, encoding))
    for target in Encoding:
        assert codec.decode(summary.convert(doc, target)) == (SERVER_PKG2, target)


def test_convert_pretty_prints_xml() -> None:
    out = summary.convert(summary.load(codec.encode(SERVER_PKG2, Encoding.WBXML)), Encoding.XML)
    assert out.startswith(b"<?xml")
    assert b"\n  <SyncHdr>\n    <VerDTD>1.2</VerDTD>" in out


def test_load_keeps_a_ddf_document_as_a_tree_and_converts_it_both_ways() -> None:
    doc = summary.load(DDF)
    assert doc.message is None and doc.tree is not None
    assert doc.root_name == "MgmtTree"
    binary = summary.convert(doc, Encoding.WBXML)
    assert wbxml.is_wbxml(binary)
    back = summary.load(binary)
    assert back.encoding is Encoding.WBXML and back.root_name == "MgmtTree"
    xml = summary.convert(back, Encoding.XML)
    assert b'<MgmtTree xmlns="syncml:dmddf1.2">' in xml
    assert b"\n    <Node>\n      <NodeName>Mod</NodeName>\n      <Value>X1</Value>" in xml
    assert summary.describe_document(back) == (
        "DM DDF/TNDS MgmtTree document, WBXML, VerDTD 1.2, 2 nodes"
        " (not a SyncML message: checked for well-formedness only)"
    )


def test_other_xml_is_described_but_may_not_encode_to_wbxml() -> None:
    doc = summary.load(b"<Foo><Bar/></Foo>")
    assert summary.describe_document(doc) == (
        "<Foo> document, XML (not a SyncML message: checked for well-formedness only)"
    )
    with pytest.raises(LocalProtocolError, match="Foo"):
        summary.convert(doc, Encoding.WBXML)


def test_a_bad_syncml_message_is_an_error_not_a_tree() -> None:
    with pytest.raises(MalformedMessage, match="SyncHdr"):
        summary.load(b'<SyncML xmlns="SYNCML:SYNCML1.2"><SyncBody/></SyncML>')
    ds = (
        b"<SyncML><SyncHdr><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>a</LocURI></Target>"
        b"<Source><LocURI>b</LocURI></Source></SyncHdr><SyncBody><Sync><CmdID>1</CmdID></Sync></SyncBody></SyncML>"
    )
    with pytest.raises(UnsupportedElement, match="Sync"):
        summary.load(ds)


@pytest.mark.parametrize("data", [b"", b"garbage", b"<unclosed", b"\x02\x00\x00garbage", b"\x03"])
def test_load_refuses_garbage_with_malformed_message(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        summary.load(data)


def test_lint_is_quiet_on_a_strict_message() -> None:
    data = codec.encode(SERVER_PKG2)
    assert summary.lint(SERVER_PKG2, data, Encoding.XML) == []
    assert summary.lint(SERVER_PKG2) == []


def test_lint_reports_what_a_strict_sender_would_not_do() -> None:
    msg = _message(
        Alert("1", data="1201"),
        _hdr_status("x7"),
        Atomic("3", (Replace("3", (Item(target=Target("./A"), data="1"),)),)),
        Sequence("0"),
        final=False,
        ver_dtd="1.1",
        ver_proto="",
    )
    problems = summary.lint(msg)
    assert problems == [
        "<VerDTD> is '1.1', expected '1.2'",
        "SyncHdr lacks <VerProto> (expected DM/1.2)",
        "<Status> has a non-numeric CmdID 'x7'",
        "CmdID '3' is used by more than one command (<Replace>)",
        "<Sequence> has CmdID 0, which Status/CmdRef uses for the SyncHdr",
        "the Status for the SyncHdr is command #2 of the body; it must come first",
        "no <Final/>: the package continues in a later message",
    ]


def test_lint_sees_format_case_in_the_raw_xml_only() -> None:
    raw = codec.encode(SERVER_PKG2).replace(
        b"<Replace><CmdID>5</CmdID>",
        b'<Replace><CmdID>5</CmdID><Meta><m:Format xmlns:m="syncml:metinf"> B64 </m:Format></Meta>',
    )
    doc = summary.load(raw)
    assert doc.message is not None
    assert summary.lint(doc.message, raw, Encoding.XML) == [
        "Meta/Format 'B64' is not lower case (a strict sender writes 'b64')"
    ]
    # The model stores Format lower-cased, so without the raw bytes there is nothing to see.
    assert summary.lint(doc.message) == []


def test_lint_sees_format_case_in_wbxml() -> None:
    raw = codec.encode(SERVER_PKG2).replace(
        b"<Replace><CmdID>5</CmdID>",
        b'<Replace><CmdID>5</CmdID><Meta><Format xmlns="syncml:metinf">Chr</Format></Meta>',
    )
    doc = summary.load(raw)
    assert doc.message is not None
    binary = wbxml.encode(xml_codec.parse_element(raw))
    assert summary.lint(doc.message, binary, Encoding.WBXML) == [
        "Meta/Format 'Chr' is not lower case (a strict sender writes 'chr')"
    ]
