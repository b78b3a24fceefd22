"""Tests for the element-tree WBXML codec (``omadm.protocol.wbxml``).

Byte-level vectors are built by hand from the WBXML 1.3 grammar and the spec digest
(section 10) so that they do not depend on our own encoder; the libwbxml cross-checks
live in ``tests/interop/test_libwbxml_crosscheck.py``.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from omadm.protocol import wbxml
from omadm.protocol.errors import LocalProtocolError, MalformedMessage
from omadm.protocol.wbxml import (
    FPI_DM_DDF_12,
    NS_DMDDF12,
    NS_METINF,
    NS_SYNCML11,
    NS_SYNCML12,
    OPAQUE_ATTR,
    PUBLIC_IDS,
    decode,
    encode,
    is_wbxml,
)

S = "{" + NS_SYNCML12 + "}"
M = "{" + NS_METINF + "}"
D = "{" + NS_DMDDF12 + "}"

HEADER_12 = b"\x02\xa4\x01\x6a\x00"  # WBXML 1.2, public id 0x1201, UTF-8, no string table
DDF_FPI_TABLE = FPI_DM_DDF_12.encode() + b"\0"
DDF_HEADER = b"\x02\x00\x00\x6a\x1b" + DDF_FPI_TABLE  # libwbxml's literal-FPI header


def s(text: str | bytes) -> bytes:
    """STR_I followed by END: the usual ``<Tag>text</Tag>`` tail."""
    raw = text.encode() if isinstance(text, str) else text
    return b"\x03" + raw + b"\x00\x01"


def opaque(blob: bytes) -> bytes:
    return b"\xc3" + wbxml._mb(len(blob)) + blob


def canon(element: etree._Element) -> tuple[Any, ...]:
    """Structural identity of a tree: tags, attributes, text, tails; ``None`` == ``""``."""
    return (
        element.tag,
        dict(element.attrib),
        element.text or "",
        element.tail or "",
        tuple(canon(child) for child in element),
    )


def xml(text: str) -> etree._Element:
    return etree.fromstring(text)


# --------------------------------------------------------------------------------------
# Spec digest 10.7 worked example
# --------------------------------------------------------------------------------------

WORKED_EXAMPLE = (
    HEADER_12
    + b"\x6d"  # <SyncML>
    + b"\x6c"  # <SyncHdr>
    + b"\x71"
    + s("1.2")
    + b"\x72"
    + s("DM/1.2")
    + b"\x65"
    + s("1")
    + b"\x5b"
    + s("1")
    + b"\x6e\x57"
    + s("IMEI:1")
    + b"\x01"
    + b"\x67\x57"
    + s("https://s/dm")
    + b"\x01"
    + b"\x01"  # </SyncHdr>
    + b"\x6b\x69"  # <SyncBody><Status>
    + b"\x4b"
    + s("1")
    + b"\x5c"
    + s("1")
    + b"\x4c"
    + s("0")
    + b"\x4a"
    + s("SyncHdr")
    + b"\x49\x5a\x00\x01"  # <Chal><Meta> SWITCH_PAGE 1
    + b"\x53"
    + s("syncml:auth-md5")
    + b"\x47"
    + s("b64")
    + b"\x50"
    + s("AAECAw==")
    + b"\x01\x01"  # </Meta></Chal>
    + b"\x00\x00\x4f"
    + s("401")
    + b"\x01"  # </Status>
    + b"\x12"  # <Final/>
    + b"\x01\x01"
)

WORKED_EXAMPLE_XML = f"""<SyncML xmlns="{NS_SYNCML12}"><SyncHdr><VerDTD>1.2</VerDTD>
<VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>IMEI:1</LocURI></Target>
<Source><LocURI>https://s/dm</LocURI></Source></SyncHdr><SyncBody><Status><CmdID>1</CmdID>
<MsgRef>1</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd><Chal><Meta>
<Type xmlns="syncml:metinf">syncml:auth-md5</Type><Format xmlns="syncml:metinf">b64</Format>
<NextNonce xmlns="syncml:metinf">AAECAw==</NextNonce></Meta></Chal><Data>401</Data></Status>
<Final/></SyncBody></SyncML>"""


def test_worked_example_decodes_to_the_xml_tree() -> None:
    root = decode(WORKED_EXAMPLE)
    assert root.tag == S + "SyncML"
    assert root.nsmap == {None: NS_SYNCML12}
    assert root.findtext(f"{S}SyncHdr/{S}Target/{S}LocURI") == "IMEI:1"
    nonce = root.find(f"{S}SyncBody/{S}Status/{S}Chal/{S}Meta/{M}NextNonce")
    assert nonce is not None and nonce.text == "AAECAw=="
    # Page-1 children carry their own default namespace declaration, like the XML form.
    assert b'<Type xmlns="syncml:metinf">syncml:auth-md5</Type>' in etree.tostring(root)
    expected = xml(WORKED_EXAMPLE_XML.replace("\n", ""))  # wrapped above for readability only
    assert canon(root) == canon(expected)


def test_worked_example_encodes_to_exactly_the_spec_bytes() -> None:
    assert encode(xml(WORKED_EXAMPLE_XML)) == WORKED_EXAMPLE
    assert encode(decode(WORKED_EXAMPLE)) == WORKED_EXAMPLE


def test_empty_element_has_no_content_bit_and_content_bit_without_content_is_accepted() -> None:
    assert encode(xml(f'<SyncML xmlns="{NS_SYNCML12}"><Final/></SyncML>')) == HEADER_12 + b"\x6d\x12\x01"
    # libwbxml writes <Data></Data> holding only ignorable whitespace as 4F 01.
    root = decode(HEADER_12 + b"\x6d\x4f\x01\x01")
    assert root[0].tag == S + "Data" and root[0].text is None


# --------------------------------------------------------------------------------------
# Header: mb_u_int32, public identifiers, charsets, versions
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (0x7F, b"\x7f"),
        (0x80, b"\x81\x00"),
        (0x0FD3, b"\x9f\x53"),
        (0x1201, b"\xa4\x01"),
        (0x3FFF, b"\xff\x7f"),
        (0x4000, b"\x81\x80\x00"),
        (0xFFFFFFFF, b"\x8f\xff\xff\xff\x7f"),
    ],
)
def test_mb_u_int32_boundaries(value: int, encoded: bytes) -> None:
    assert wbxml._mb(value) == encoded
    assert wbxml._read_mb(encoded + b"\x99", 0, 0) == (value, len(encoded))


def test_mb_u_int32_redundant_leading_zero_groups_are_accepted() -> None:
    root = decode(b"\x02\x80\x80\xa4\x01\x6a\x00\x6d\x12\x01")
    assert root.tag == S + "SyncML"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x02\x80\x80\x80\x80\x80\x01\x6a\x00\x6d\x01", "longer than 5 bytes"),
        (b"\x02\x90\x80\x80\x80\x00\x6a\x00\x6d\x01", "exceeds 32 bits"),
        (b"\x02\xa4", "truncated mb_u_int32"),
    ],
)
def test_bad_mb_u_int32(data: bytes, problem: str) -> None:
    with pytest.raises(MalformedMessage, match=problem):
        decode(data)


@pytest.mark.parametrize(
    ("public_id", "namespace"),
    [
        (b"\xa4\x01", NS_SYNCML12),
        (b"\x9f\x53", NS_SYNCML11),
        (b"\x01", NS_SYNCML12),
        (b"\xa4\x02", NS_SYNCML12),
    ],
)
def test_numeric_public_ids_choose_the_page0_namespace(public_id: bytes, namespace: str) -> None:
    root = decode(b"\x02" + public_id + b"\x6a\x00\x6d\x12\x01")
    assert root.tag == "{" + namespace + "}SyncML"
    assert root[0].tag == "{" + namespace + "}Final"


def test_public_ids_mapping() -> None:
    assert PUBLIC_IDS[0x1201] == "-//SYNCML//DTD SyncML 1.2//EN"
    assert PUBLIC_IDS[0x0FD3] == "-//SYNCML//DTD SyncML 1.1//EN"


@pytest.mark.parametrize(
    ("table", "index", "namespace"),
    [
        # libwbxml form: NUL-terminated FPI at index 0.
        (b"-//SYNCML//DTD SyncML 1.2//EN\0", 0, NS_SYNCML12),
        # SyncML RTK form: no NUL, strtbl_len 29.
        (b"-//SYNCML//DTD SyncML 1.2//EN", 0, NS_SYNCML12),
        # FPI not at the start of the table.
        (b"abc\0-//SYNCML//DTD SyncML 1.1//EN\0", 4, NS_SYNCML11),
    ],
)
def test_literal_public_id_forms(table: bytes, index: int, namespace: str) -> None:
    data = b"\x02\x00" + wbxml._mb(index) + b"\x6a" + wbxml._mb(len(table)) + table + b"\x6d\x12\x01"
    root = decode(data)
    assert root.tag == "{" + namespace + "}SyncML"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x02\x9f\x54\x6a\x00\x6d\x01", "unsupported public identifier 0xFD4"),  # DevInf 1.1
        (b"\x02\x83\x00\x6a\x00\x6d\x01", "unsupported public identifier"),
        (b"\x02\x00\x00\x6a\x04abc\0\x6d\x01", "unsupported public identifier 'abc'"),
        (b"\x02\x00\x05\x6a\x04abc\0\x6d\x01", "index 5 out of range"),
        (b"\x00\xa4\x01\x6a\x00\x6d\x01", "unsupported WBXML version"),
        (b"\x02\xa4\x01\x81\x03\x00\x6d\x01", "unsupported charset MIBenum 131"),
        (b"\x02\xa4\x01\x6a\x09abc", "string table of 9 bytes is truncated"),
        (b"", "empty document"),
    ],
)
def test_header_errors(data: bytes, problem: str) -> None:
    with pytest.raises(MalformedMessage, match=problem):
        decode(data)


@pytest.mark.parametrize("version", [0x01, 0x02, 0x03])
def test_all_wbxml_versions_decode_and_encode(version: int) -> None:
    tree = xml(f'<SyncML xmlns="{NS_SYNCML12}"><Final/></SyncML>')
    data = encode(tree, version=version)
    assert data[0] == version
    assert canon(decode(data)) == canon(tree)


def test_latin1_and_ascii_charsets() -> None:
    root = decode(b"\x02\xa4\x01\x04\x00\x6d\x4f\x03caf\xe9\x00\x01\x01")
    assert root[0].text == "café"
    with pytest.raises(MalformedMessage, match="not valid ascii"):
        decode(b"\x02\xa4\x01\x03\x00\x6d\x4f\x03caf\xe9\x00\x01\x01")


def test_is_wbxml() -> None:
    assert is_wbxml(WORKED_EXAMPLE)
    assert is_wbxml(b"\x01") and is_wbxml(b"\x03\x00")
    assert not is_wbxml(b"<SyncML/>")
    assert not is_wbxml(b"")
    assert not is_wbxml(b"\x00\x01")
    assert not is_wbxml(b"\xef\xbb\xbf<SyncML/>")


# --------------------------------------------------------------------------------------
# Strings: STR_I, STR_T, ENTITY, SWITCH_PAGE between pieces
# --------------------------------------------------------------------------------------


def test_str_t_references_the_string_table() -> None:
    table = b"IMEI:1\0text/plain\0"
    data = (
        b"\x02\xa4\x01\x6a"
        + wbxml._mb(len(table))
        + table
        + b"\x6d\x57\x83\x00\x01"  # <LocURI>STR_T 0</LocURI>
        + b"\x57\x83\x02\x01"  # <LocURI>STR_T 2 -> "EI:1" (mid-string offsets are legal)
        + b"\x5a\x00\x01\x53\x83\x07\x01\x01"  # <Meta><Type>STR_T 7</Type></Meta>
        + b"\x00\x00\x4f\x03a\x00\x83\x00\x03b\x00\x01"  # <Data>a + STR_T 0 + b</Data>
        + b"\x01"
    )
    root = decode(data)
    assert [child.text for child in root] == ["IMEI:1", "EI:1", None, "aIMEI:1b"]
    assert root[2][0].tag == M + "Type" and root[2][0].text == "text/plain"


def test_str_t_out_of_range() -> None:
    data = b"\x02\xa4\x01\x6a\x02a\0\x6d\x4f\x83\x02\x01\x01"
    with pytest.raises(MalformedMessage, match=r"string table offset 2 out of range at offset 9"):
        decode(data)


def test_str_t_expansion_is_bounded_by_max_size() -> None:
    table = b"x" * 1000 + b"\0"
    body = b"\x6d\x4f" + b"\x83\x00" * 200 + b"\x01\x01"
    data = b"\x02\xa4\x01\x6a" + wbxml._mb(len(table)) + table + body
    assert len(decode(data)[0].text or "") == 200_000
    with pytest.raises(MalformedMessage, match="decoded text exceeds max_size"):
        decode(data, max_size=100_000)


def test_encoder_string_table_factors_repeated_strings() -> None:
    tree = xml(
        f'<SyncML xmlns="{NS_SYNCML12}"><SyncBody>'
        "<Item><LocURI>./DevInfo/DevId</LocURI><Data>ab</Data></Item>"
        "<Item><LocURI>./DevInfo/DevId</LocURI><Data>ab</Data></Item>"
        "<Item><LocURI>./once</LocURI></Item></SyncBody></SyncML>"
    )
    data = encode(tree, use_string_table=True)
    assert data[:5] == b"\x02\xa4\x01\x6a\x10" and data[5:21] == b"./DevInfo/DevId\0"
    assert data.count(b"./DevInfo/DevId") == 1
    assert b"\x57\x83\x00\x01" in data  # <LocURI>STR_T 0</LocURI>
    assert data.count(b"\x03ab\x00") == 2  # too short to be worth a table entry
    assert canon(decode(data)) == canon(tree)
    assert len(data) < len(encode(tree))


def test_ddf_document_string_table_keeps_the_fpi_first() -> None:
    tree = xml(
        f'<MgmtTree xmlns="{NS_DMDDF12}"><Node><NodeName>abc</NodeName></Node>'
        "<Node><NodeName>abc</NodeName></Node></MgmtTree>"
    )
    data = encode(tree, use_string_table=True)
    assert data.startswith(b"\x02\x00\x00\x6a\x1f" + DDF_FPI_TABLE + b"abc\0")
    assert b"\x66\x83\x1b\x01" in data  # <NodeName>STR_T 27</NodeName>
    assert canon(decode(data)) == canon(tree)


def test_entity_and_switch_page_between_text_pieces() -> None:
    data = HEADER_12 + b"\x6d\x4f\x03a\x00\x00\x01\x02\x81\x69\x00\x00\x03b\x00\x00\x02\x01\x01"
    root = decode(data)
    assert root[0].text == "a\u00e9b"  # ENTITY 0xE9 between pages switched back and forth


@pytest.mark.parametrize("code", [b"\x00", b"\x08", b"\x83\xff\x7e", b"\x84\x80\x80\x00"])
def test_entity_that_is_not_an_xml_character(code: bytes) -> None:
    with pytest.raises(MalformedMessage, match="ENTITY"):
        decode(HEADER_12 + b"\x6d\x4f\x02" + code + b"\x01\x01")


def test_switch_page_before_end_tokens_and_at_document_start() -> None:
    # SWITCH_PAGE right before END and before the root element are both legal.
    data = HEADER_12 + b"\x00\x00\x6d\x5a\x00\x01\x53" + s("t") + b"\x00\x00\x01\x00\x01\x01"
    root = decode(data)
    assert root[0][0].tag == M + "Type"


def test_invalid_utf8_and_control_characters_in_strings() -> None:
    with pytest.raises(MalformedMessage, match="not valid utf-8 at offset 7"):
        decode(HEADER_12 + b"\x6d\x4f\x03\xff\x00\x01\x01")
    with pytest.raises(MalformedMessage, match="not allowed in XML at offset 7"):
        decode(HEADER_12 + b"\x6d\x4f\x03a\x01b\x00\x01\x01")


def test_mixed_content_is_preserved_as_text_and_tail() -> None:
    data = HEADER_12 + b"\x6d\x03before\x00\x57" + s("x") + b"\x03after\x00\x12\x03end\x00\x01"
    root = decode(data)
    assert root.text == "before"
    assert root[0].text == "x" and root[0].tail == "after"
    assert root[1].tag == S + "Final" and root[1].tail == "end"
    assert encode(root) == data


# --------------------------------------------------------------------------------------
# OPAQUE
# --------------------------------------------------------------------------------------


def test_opaque_utf8_text_becomes_text() -> None:
    root = decode(HEADER_12 + b"\x6d\x4f" + opaque("www.example.com\r\nü".encode()) + b"\x01\x01")
    assert root[0].text == "www.example.com\r\nü"
    assert OPAQUE_ATTR not in root[0].attrib


@pytest.mark.parametrize("blob", [b"\x00\x01\x02\xff", b"abc\x00", b"\xff\xfe", b"a\x1bb", "\ufffe".encode()])
def test_opaque_binary_is_marked_and_base64(blob: bytes) -> None:
    data = HEADER_12 + b"\x6d\x4f" + opaque(blob) + b"\x01\x01"
    root = decode(data)
    assert root[0].get(OPAQUE_ATTR) == "base64"
    assert base64.b64decode(root[0].text or "") == blob
    assert encode(root) == data
    etree.tostring(root)  # serializable


def test_opaque_pieces_and_strings_are_concatenated() -> None:
    root = decode(HEADER_12 + b"\x6d\x4f" + opaque(b"ab") + b"\x03cd\x00" + opaque(b"\xff") + b"\x01\x01")
    assert base64.b64decode(root[0].text or "") == b"abcd\xff"
    root = decode(HEADER_12 + b"\x6d\x4f" + opaque(b"ab") + b"\x03cd\x00\x01\x01")
    assert root[0].text == "abcd"


def test_binary_opaque_mixed_with_elements_is_malformed() -> None:
    with pytest.raises(MalformedMessage, match="binary OPAQUE data mixed with child elements"):
        decode(HEADER_12 + b"\x6d" + opaque(b"\xff") + b"\x12\x01")
    with pytest.raises(MalformedMessage, match="binary OPAQUE data mixed with child elements"):
        decode(HEADER_12 + b"\x6d\x12" + opaque(b"\xff") + b"\x01")


def test_encode_binary_element() -> None:
    tree = xml(
        f'<SyncML xmlns="{NS_SYNCML12}" xmlns:w="urn:omadm:wbxml"><Data w:opaque="base64">AAEC\n/w==</Data>'
        '<Data w:opaque="base64"></Data></SyncML>'
    )
    assert encode(tree) == HEADER_12 + b"\x6d\x4f\xc3\x04\x00\x01\x02\xff\x01\x0f\x01"


@pytest.mark.parametrize(
    ("fragment", "problem"),
    [
        ('<Data w:opaque="base64">!!</Data>', "does not hold base64"),
        ('<Data w:opaque="hex">00</Data>', "unknown"),
        ('<Data w:opaque="base64"><Final/></Data>', "cannot have child elements"),
    ],
)
def test_encode_binary_element_errors(fragment: str, problem: str) -> None:
    tree = xml(f'<SyncML xmlns="{NS_SYNCML12}" xmlns:w="urn:omadm:wbxml">{fragment}</SyncML>')
    with pytest.raises(LocalProtocolError, match=problem):
        encode(tree)


# --------------------------------------------------------------------------------------
# Embedded TNDS (nested DM DDF document inside OPAQUE)
# --------------------------------------------------------------------------------------

TNDS_XML = f"""<SyncML xmlns="{NS_SYNCML12}"><SyncBody><Add><CmdID>4</CmdID><Item>
<Target><LocURI>/OperatorX</LocURI></Target>
<Meta><Format xmlns="syncml:metinf">xml</Format>
<Type xmlns="syncml:metinf">application/vnd.syncml.dmtnds+xml</Type></Meta>
<Data>
  <MgmtTree xmlns="syncml:dmddf1.2"><VerDTD>1.2</VerDTD><Node><NodeName>E-Mail</NodeName>
  <RTProperties><Format><node/></Format></RTProperties></Node></MgmtTree>
</Data></Item></Add></SyncBody></SyncML>"""

NESTED_DDF = (
    DDF_HEADER
    + b"\x00\x02\x60"  # SWITCH_PAGE 2, <MgmtTree>
    + b"\x77"
    + s("1.2")
    + b"\x64\x66"
    + s("E-Mail")
    + b"\x6f\x5c\x25\x01\x01"  # <RTProperties><Format><node/></Format></RTProperties>
    + b"\x01\x01"
)


def test_embedded_tnds_is_encoded_as_a_nested_document_like_libwbxml() -> None:
    data = encode(xml(TNDS_XML))
    assert opaque(NESTED_DDF) in data
    # The governing Type says +wbxml on the wire, as libwbxml writes it.
    assert b"\x53\x03application/vnd.syncml.dmtnds+wbxml\x00\x01" in data
    assert b"dmtnds+xml" not in data


def test_embedded_tnds_decodes_to_the_xml_view() -> None:
    source = xml(TNDS_XML)
    root = decode(encode(source))
    data_element = root.find(f"{S}SyncBody/{S}Add/{S}Item/{S}Data")
    assert data_element is not None
    assert data_element.text is None
    (tree,) = data_element
    assert tree.tag == D + "MgmtTree" and tree.nsmap == {None: NS_DMDDF12}
    assert tree.findtext(f"{D}Node/{D}NodeName") == "E-Mail"
    assert root.findtext(f".//{M}Type") == "application/vnd.syncml.dmtnds+xml"
    assert b'<Data><MgmtTree xmlns="syncml:dmddf1.2"><VerDTD>' in etree.tostring(root)


def test_embedded_tnds_with_whitespace_opaque_siblings_like_libwbxml() -> None:
    data = (
        HEADER_12
        + b"\x6d\x54\x5a\x00\x01\x53"
        + s("application/vnd.syncml.dmtnds+wbxml")
        + b"\x01\x00\x00\x4f"
        + opaque(b"\r\n  ")
        + opaque(NESTED_DDF)
        + opaque(b"\r\n            \r\n          ")
        + b"\x01\x01\x01"
    )
    root = decode(data)
    data_element = root[0][1]
    assert data_element.text is None and data_element[0].tail is None
    assert data_element[0].tag == D + "MgmtTree"
    assert root[0][0][0].text == "application/vnd.syncml.dmtnds+xml"


def test_standalone_ddf_document() -> None:
    root = decode(NESTED_DDF)
    assert root.tag == D + "MgmtTree"
    assert encode(root) == NESTED_DDF
    # The RTK-style FPI without NUL works for DDF too.
    rtk = b"\x02\x00\x00\x6a\x1a" + FPI_DM_DDF_12.encode() + NESTED_DDF[len(DDF_HEADER) :]
    assert canon(decode(rtk)) == canon(root)


def test_opaque_that_merely_starts_like_wbxml_is_data() -> None:
    blob = b"\x02\x00\x00\x6a\x03abc"  # literal FPI "abc": not a DDF document
    root = decode(HEADER_12 + b"\x6d\x4f" + opaque(blob) + b"\x01\x01")
    assert base64.b64decode(root[0].text or "") == blob


def test_broken_nested_ddf_document_reports_outer_offsets() -> None:
    broken = NESTED_DDF[:-1]  # missing the final END
    data = HEADER_12 + b"\x6d\x4f" + opaque(broken) + b"\x01\x01"
    end_of_nested = len(HEADER_12) + 4 + len(broken)  # SyncML, Data, OPAQUE, length
    with pytest.raises(
        MalformedMessage, match=rf"ends inside 1 open element\(s\) at offset {end_of_nested}$"
    ):
        decode(data)


def test_nested_documents_count_towards_max_depth() -> None:
    data = HEADER_12 + b"\x6d\x4f" + opaque(NESTED_DDF) + b"\x01\x01"
    decode(data, max_depth=7)  # SyncML/Data/MgmtTree/Node/RTProperties/Format/node
    with pytest.raises(MalformedMessage, match="nesting deeper than 6"):
        decode(data, max_depth=6)


def test_embedded_tnds_without_namespace_and_type_rewrite_only_for_tnds() -> None:
    tree = xml(
        f'<SyncML xmlns="{NS_SYNCML12}"><Item><Meta><Type>text/plain</Type></Meta>'
        '<Data><MgmtTree xmlns=""><Node><NodeName>a</NodeName></Node></MgmtTree></Data></Item></SyncML>'
    )
    data = encode(tree)
    assert b"\x03text/plain\x00" in data
    nested = decode(data)[0][1][0]
    assert nested.tag == D + "MgmtTree"


# --------------------------------------------------------------------------------------
# Encoder: page selection, namespaces, errors
# --------------------------------------------------------------------------------------


def test_meta_children_without_namespace_use_page_1() -> None:
    windows = xml(
        f'<SyncML xmlns="{NS_SYNCML12}"><Meta><Format>int</Format><Type>text/plain</Type></Meta></SyncML>'
    )
    proper = xml(
        f'<SyncML xmlns="{NS_SYNCML12}"><Meta><Format xmlns="syncml:metinf">int</Format>'
        '<Type xmlns="syncml:metinf">text/plain</Type></Meta></SyncML>'
    )
    assert encode(windows) == encode(proper)
    assert (
        encode(proper)
        == HEADER_12 + b"\x6d\x5a\x00\x01\x47" + s("int") + b"\x53" + s("text/plain") + b"\x01\x01"
    )


def test_metinf_namespace_on_meta_itself() -> None:
    odd = xml(
        f'<SyncML xmlns="{NS_SYNCML12}"><Meta xmlns="syncml:metinf"><Format>int</Format></Meta>'
        "<Final/></SyncML>"
    )
    assert encode(odd) == HEADER_12 + b"\x6d\x5a\x00\x01\x47" + s("int") + b"\x01\x00\x00\x12\x01"


def test_lazy_switch_page() -> None:
    tree = xml(
        f'<SyncML xmlns="{NS_SYNCML12}" xmlns:m="syncml:metinf"><Meta><m:Type>a</m:Type>'
        "<m:Format>b</m:Format></Meta><Meta><m:Size>1</m:Size></Meta></SyncML>"
    )
    data = encode(tree)
    assert data == (
        HEADER_12
        + b"\x6d\x5a\x00\x01\x53"
        + s("a")
        + b"\x47"
        + s("b")
        + b"\x01\x00\x00\x5a\x00\x01\x52"
        + s("1")
        + b"\x01\x01"
    )


def test_namespace_less_root_uses_the_doctype_public_id() -> None:
    tree = etree.fromstring(
        b'<!DOCTYPE SyncML PUBLIC "-//SYNCML//DTD SyncML 1.1//EN" "x.dtd"><SyncML><Final/></SyncML>'
    ).getroottree()
    assert encode(tree.getroot())[:3] == b"\x02\x9f\x53"
    assert encode(xml("<SyncML><Final/></SyncML>"))[:3] == b"\x02\xa4\x01"
    assert encode(xml(f'<SyncML xmlns="{NS_SYNCML11}"/>')) == b"\x02\x9f\x53\x6a\x00\x2d"


def test_whitespace_between_elements_and_comments_are_not_encoded() -> None:
    tree = xml(f'<SyncML xmlns="{NS_SYNCML12}">\n  <!-- c -->\n  <Data> a <!-- c -->b </Data>\n</SyncML>')
    assert encode(tree) == HEADER_12 + b"\x6d\x4f" + s(" a b ") + b"\x01"


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (f'<SyncML xmlns="{NS_SYNCML12}"><Foo/></SyncML>', r"element '\{SYNCML:SYNCML1.2\}Foo' has no token"),
        (f'<SyncML xmlns="{NS_SYNCML12}"><Data xmlns="urn:x"/></SyncML>', "namespace"),
        (f'<SyncML xmlns="{NS_SYNCML12}"><Data a="1"/></SyncML>', "attribute 'a'"),
        ('<DevInf xmlns="syncml:devinf"/>', "no SyncML public identifier"),
        (f'<SyncML xmlns="{NS_SYNCML12}"><Meta><Foo xmlns="syncml:metinf"/></Meta></SyncML>', "Foo"),
    ],
)
def test_encode_errors(document: str, problem: str) -> None:
    with pytest.raises(LocalProtocolError, match=problem):
        encode(xml(document))


def test_encode_rejects_bad_version_and_non_elements() -> None:
    with pytest.raises(LocalProtocolError, match="version"):
        encode(xml("<SyncML/>"), version=4)
    with pytest.raises(LocalProtocolError):
        encode(etree.Comment("x"))


def test_encode_does_not_modify_its_input() -> None:
    tree = xml(TNDS_XML)
    before = etree.tostring(tree)
    encode(tree, use_string_table=True)
    assert etree.tostring(tree) == before


# --------------------------------------------------------------------------------------
# Decoder errors (each names the problem and the byte offset)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"\x6d\x4f\x03abc", "unterminated inline string at offset 7"),
        (b"\x6d\x4f", "document ends inside 2 open element"),
        (b"\x6d\x30\x01", "unknown tag token 0x30 on code page 0 at offset 6"),
        (b"\x00\x01\x6d\x01", "unknown tag token 0x2D on code page 1 at offset 7"),
        (b"\x00\x07\x6d\x01", "unknown code page 7 at offset 5"),
        (b"\x00", "truncated SWITCH_PAGE"),
        (b"\x01", "END without an open element at offset 5"),
        (b"\x6d\x01\x01", "END without an open element at offset 7"),
        (b"\x6d\x01\x12", "trailing data after the root element at offset 7"),
        (b"\x6d\x01\x03x\x00", "trailing data after the root element at offset 7"),
        (b"\x03x\x00\x6d\x01", "content before the root element at offset 5"),
        (b"", "document has no root element at offset 5"),
        (b"\x00\x01", "document has no root element"),
        (b"\xed\x01\x01", "attributes are not used in SyncML at offset 5"),
        (b"\x6d\x84\x00\x01", "attributes are not used"),
        (b"\x6d\x43\x01", "processing instructions"),
        (b"\x6d\x40\x03x\x00\x01", "extension token 0x40"),
        (b"\x6d\xc0\x01", "extension token 0xC0"),
        (b"\x6d\x4f\xc3\x05ab\x01\x01", "OPAQUE of 5 bytes is truncated at offset 7"),
        (b"\x6d\x4f\xc3\x80\x80\x80\x80\x80\x01", "longer than 5 bytes at offset 8"),
        (b"\x6d\x44\x00\x01", "string table offset 0 out of range"),
    ],
)
def test_decode_errors(body: bytes, problem: str) -> None:
    with pytest.raises(MalformedMessage, match=problem):
        decode(HEADER_12 + body)


def test_literal_tags_use_the_current_page_namespace() -> None:
    table = b"Foo\0Bad name\0"
    data = b"\x02\xa4\x01\x6a" + wbxml._mb(len(table)) + table + b"\x6d\x44\x00\x03x\x00\x01\x04\x00\x01"
    root = decode(data)
    assert [child.tag for child in root] == [S + "Foo", S + "Foo"]
    with pytest.raises(LocalProtocolError, match="Foo"):
        encode(root)
    bad = b"\x02\xa4\x01\x6a" + wbxml._mb(len(table)) + table + b"\x6d\x04\x04\x01"
    with pytest.raises(MalformedMessage, match="LITERAL tag name 'Bad name'"):
        decode(bad)


def test_max_size_and_max_depth() -> None:
    with pytest.raises(MalformedMessage, match="exceeds max_size 10"):
        decode(WORKED_EXAMPLE, max_size=10)
    deep = HEADER_12 + b"\x6d" * 5 + b"\x12" + b"\x01" * 5
    decode(deep, max_depth=6)
    with pytest.raises(MalformedMessage, match="element nesting deeper than 5 at offset 10"):
        decode(deep, max_depth=5)


def test_very_deep_input_is_rejected_without_recursion() -> None:
    deep = HEADER_12 + b"\x6d" * 100_000
    with pytest.raises(MalformedMessage, match="nesting deeper than 64"):
        decode(deep)


# --------------------------------------------------------------------------------------
# Property tests
# --------------------------------------------------------------------------------------

PAGE0 = sorted(set(wbxml._TOKENS[0]) - {"Meta", "Data"})
PAGE1 = sorted(wbxml._TOKENS[1])
PAGE2 = sorted(wbxml._TOKENS[2])

# Text that lxml accepts (XML 1.0 characters, no surrogates).
xml_text = st.text(
    alphabet=st.characters(
        codec="utf-8",  # no surrogates
        exclude_characters="".join(
            map(chr, [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0xFFFE, 0xFFFF])
        ),
    ),
    max_size=20,
)
non_blank_text = xml_text.filter(lambda t: t.strip(" \t\r\n") != "")
# Binary data that can never be mistaken for text (invalid UTF-8).
binary = st.binary(max_size=40).map(lambda b: b"\xff" + b)


@st.composite
def ddf_tree(draw: st.DrawFn, depth: int = 0) -> etree._Element:
    element = etree.Element(D + draw(st.sampled_from(PAGE2)))
    if depth < 3 and draw(st.booleans()):
        for _ in range(draw(st.integers(1, 3))):
            element.append(draw(ddf_tree(depth + 1)))
    else:
        element.text = draw(xml_text)
    return element


@st.composite
def syncml_element(draw: st.DrawFn, depth: int = 0) -> etree._Element:
    kind = draw(st.sampled_from(["leaf", "leaf", "binary", "meta", "data", "container"]))
    if kind == "meta":
        element = etree.Element(S + "Meta")
        for name in draw(st.lists(st.sampled_from(PAGE1), min_size=1, max_size=4)):
            child = etree.SubElement(element, M + name)
            child.text = draw(xml_text)
        return element
    if kind == "data":
        element = etree.Element(S + "Data")
        if draw(st.booleans()):
            element.append(draw(ddf_tree()))
        else:
            element.text = draw(xml_text)
        return element
    element = etree.Element(S + draw(st.sampled_from(PAGE0)))
    if kind == "binary":
        element.set(OPAQUE_ATTR, "base64")
        element.text = base64.b64encode(draw(binary)).decode()
    elif kind == "container" and depth < 4:
        children = draw(st.lists(syncml_element(depth + 1), min_size=1, max_size=4))
        element.extend(children)
        if draw(st.integers(0, 5)) == 0:  # occasional mixed content
            element.text = draw(non_blank_text)
            children[-1].tail = draw(non_blank_text)
    else:
        element.text = draw(xml_text)
    return element


@st.composite
def syncml_tree(draw: st.DrawFn) -> etree._Element:
    namespace = draw(st.sampled_from([NS_SYNCML12, NS_SYNCML12, NS_SYNCML11]))
    root = etree.Element(S + "SyncML", nsmap=wbxml._default_nsmap(NS_SYNCML12))
    root.extend(draw(st.lists(syncml_element(), max_size=5)))
    if namespace != NS_SYNCML12:  # retag page-0 elements into the 1.1 namespace
        for element in root.iter():
            if element.tag.startswith(S):
                element.tag = "{" + namespace + "}" + element.tag[len(S) :]
    return root


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=syncml_tree(), version=st.sampled_from([1, 2, 3]), table=st.booleans())
def test_round_trip_encode_decode_encode(tree: etree._Element, version: int, table: bool) -> None:
    data = encode(tree, version=version, use_string_table=table)
    decoded = decode(data)
    assert canon(decoded) == canon(tree)
    assert encode(decoded, version=version, use_string_table=table) == data
    etree.tostring(decoded)


VALID_DOCUMENTS = [
    WORKED_EXAMPLE,
    NESTED_DDF,
    encode(xml(TNDS_XML)),
    encode(xml(TNDS_XML), use_string_table=True),
    HEADER_12 + b"\x6d\x4f" + opaque(b"\x00\xffbinary") + b"\x01\x01",
]


def _decode_only_malformed(data: bytes) -> None:
    try:
        root = decode(data)
    except MalformedMessage:
        return
    etree.tostring(root)  # whatever decodes must be a valid XML tree


@settings(max_examples=1000, deadline=None)
@given(data=st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    _decode_only_malformed(data)


@settings(max_examples=1000, deadline=None)
@given(
    body=st.binary(max_size=200), header=st.sampled_from([HEADER_12, DDF_HEADER, b"\x03\x01\x6a\x04ab\0\0"])
)
def test_fuzz_random_bodies_behind_valid_headers(header: bytes, body: bytes) -> None:
    _decode_only_malformed(header + body)


@st.composite
def mutated_document(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID_DOCUMENTS)))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        operation = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "duplicate"]))
        if operation == "flip" and position < len(data):
            data[position] = draw(st.integers(0, 255))
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=4))
        elif operation == "delete":
            del data[position : position + draw(st.integers(1, 4))]
        elif operation == "truncate":
            del data[position:]
        elif operation == "duplicate":
            data[position:position] = data[position : position + draw(st.integers(1, 16))]
    return bytes(data)


@settings(max_examples=1500, deadline=None)
@given(data=mutated_document())
def test_fuzz_mutated_valid_documents(data: bytes) -> None:
    _decode_only_malformed(data)
