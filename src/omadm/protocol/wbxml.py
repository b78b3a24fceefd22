"""WBXML 1.1/1.2/1.3 codec for SyncML DM messages, at the element-tree level.

This module turns WBXML bytes into an :mod:`lxml` element tree that looks like the XML
form of the same message (namespaces included), and back. It knows nothing about the
message model: the XML and WBXML front ends can then share one tree-to-model layer.

Conventions the higher layers rely on:

* Code page 0 tags live in the SyncML namespace chosen by the document's public
  identifier (``SYNCML:SYNCML1.2`` for 0x1201, ``SYNCML:SYNCML1.1`` for 0x0FD3, ...),
  page 1 tags in ``syncml:metinf`` and page 2 tags in ``syncml:dmddf1.2``.
* ``OPAQUE`` content is bytes on the wire. If it is a complete WBXML DM DDF document
  (embedded TNDS) it is decoded and appended as a child element, as in the XML form
  ``<Data><MgmtTree xmlns="syncml:dmddf1.2">...</MgmtTree></Data>``. If it is UTF-8
  text without control characters it becomes ordinary text (libwbxml sends most
  ``Item/Data`` as OPAQUE even when it is text). Otherwise the element gets the
  attribute :data:`OPAQUE_ATTR` = ``"base64"`` and its text is the base64 of the bytes,
  so the message layer can tell binary data from character data.
* Embedded TNDS travels as WBXML with ``Meta/Type``
  ``application/vnd.syncml.dmtnds+wbxml``; the tree shows the XML view (``+xml``). The
  codec rewrites that governing ``Type`` in both directions, as libwbxml does, because
  libwbxml-based peers only decode the nested document when the Type says ``+wbxml``.

Every decoding problem raises :class:`~omadm.protocol.errors.MalformedMessage` naming
the problem and the byte offset; nothing else escapes :func:`decode`, whatever the input.
:func:`decode` first tries ``_decode_via_xml`` (WBXML to XML text, parsed by lxml in C) and
uses the node-by-node ``_decode_tree`` for whatever that declines, refusals included; tests
hold the two to the same serialized tree or the same exception and message.
Encoding problems raise :class:`~omadm.protocol.errors.LocalProtocolError`.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from collections import Counter
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, NamedTuple, cast

from lxml import etree

from .errors import LocalProtocolError, MalformedMessage

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_SIZE",
    "FPI_DM_DDF_12",
    "NS_DMDDF12",
    "NS_METINF",
    "NS_SYNCML10",
    "NS_SYNCML11",
    "NS_SYNCML12",
    "OPAQUE_ATTR",
    "PUBLIC_IDS",
    "decode",
    "encode",
    "is_wbxml",
]

NS_SYNCML10: Final = "SYNCML:SYNCML1.0"
NS_SYNCML11: Final = "SYNCML:SYNCML1.1"
NS_SYNCML12: Final = "SYNCML:SYNCML1.2"
NS_METINF: Final = "syncml:metinf"
NS_DMDDF12: Final = "syncml:dmddf1.2"

#: Attribute marking an element whose text is the base64 of binary OPAQUE content.
OPAQUE_ATTR: Final = "{urn:omadm:wbxml}opaque"

#: The DM DDF / TNDS formal public identifier; it has no registered numeric id.
FPI_DM_DDF_12: Final = "-//OMA//DTD-DM-DDF 1.2//EN"

DEFAULT_MAX_SIZE: Final = 16 * 1024 * 1024
DEFAULT_MAX_DEPTH: Final = 64

_FPI_SYNCML10: Final = "-//SYNCML//DTD SyncML 1.0//EN"
_FPI_SYNCML11: Final = "-//SYNCML//DTD SyncML 1.1//EN"
_FPI_SYNCML12: Final = "-//SYNCML//DTD SyncML 1.2//EN"
_FPI_METINF12: Final = "-//SYNCML//DTD MetInf 1.2//EN"

#: Registered numeric WBXML public identifiers of the SyncML family (WAP/OMA registry,
#: as used by libwbxml and the SyncML RTK).
PUBLIC_IDS: Final[Mapping[int, str]] = MappingProxyType(
    {
        0x0FD1: _FPI_SYNCML10,
        0x0FD2: "-//SYNCML//DTD DevInf 1.0//EN",
        0x0FD3: _FPI_SYNCML11,
        0x0FD4: "-//SYNCML//DTD DevInf 1.1//EN",
        0x1201: _FPI_SYNCML12,
        0x1202: _FPI_METINF12,
        0x1203: "-//SYNCML//DTD DevInf 1.2//EN",
    }
)

# Namespace of code page 0 for every document kind we accept. DevInf documents use a
# different tag table on page 0, so they are refused rather than mis-decoded.
_PAGE0_NS_BY_FPI: Final[Mapping[str, str]] = {
    _FPI_SYNCML10: NS_SYNCML10,
    _FPI_SYNCML11: NS_SYNCML11,
    _FPI_SYNCML12: NS_SYNCML12,
    _FPI_METINF12: NS_SYNCML12,
    FPI_DM_DDF_12: NS_SYNCML12,
}
_PUBLIC_ID_UNKNOWN: Final = 0x01  # "unknown or missing public identifier" (WBXML 5.6)

_SYNCML_NAMESPACES: Final = frozenset({NS_SYNCML10, NS_SYNCML11, NS_SYNCML12})
_PUBLIC_ID_BY_NS: Final[Mapping[str, int]] = {
    NS_SYNCML10: 0x0FD1,
    NS_SYNCML11: 0x0FD3,
    NS_SYNCML12: 0x1201,
    NS_METINF: 0x1202,
}
_PUBLIC_ID_BY_FPI: Final[Mapping[str, int]] = {fpi: pid for pid, fpi in PUBLIC_IDS.items()}

# MIBenum -> Python codec. 0 means "unknown"; SyncML peers then mean UTF-8.
_CHARSETS: Final[Mapping[int, str]] = {106: "utf-8", 0: "utf-8", 4: "latin-1", 3: "ascii"}
_UTF8_MIBENUM: Final = 106

# --- token tables (spec digest 10.3-10.5, identical to libwbxml's SyncML 1.2 tables) ---

# Code page 0, SyncML (0x30 is reserved; 0x33-0x3B are SyncML DS additions).
_PAGE0_TAGS: Final[Mapping[int, str]] = {
    0x05: "Add",
    0x06: "Alert",
    0x07: "Archive",
    0x08: "Atomic",
    0x09: "Chal",
    0x0A: "Cmd",
    0x0B: "CmdID",
    0x0C: "CmdRef",
    0x0D: "Copy",
    0x0E: "Cred",
    0x0F: "Data",
    0x10: "Delete",
    0x11: "Exec",
    0x12: "Final",
    0x13: "Get",
    0x14: "Item",
    0x15: "Lang",
    0x16: "LocName",
    0x17: "LocURI",
    0x18: "Map",
    0x19: "MapItem",
    0x1A: "Meta",
    0x1B: "MsgID",
    0x1C: "MsgRef",
    0x1D: "NoResp",
    0x1E: "NoResults",
    0x1F: "Put",
    0x20: "Replace",
    0x21: "RespURI",
    0x22: "Results",
    0x23: "Search",
    0x24: "Sequence",
    0x25: "SessionID",
    0x26: "SftDel",
    0x27: "Source",
    0x28: "SourceRef",
    0x29: "Status",
    0x2A: "Sync",
    0x2B: "SyncBody",
    0x2C: "SyncHdr",
    0x2D: "SyncML",
    0x2E: "Target",
    0x2F: "TargetRef",
    0x31: "VerDTD",
    0x32: "VerProto",
    0x33: "NumberOfChanges",
    0x34: "MoreData",
    0x35: "Field",
    0x36: "Filter",
    0x37: "Record",
    0x38: "FilterType",
    0x39: "SourceParent",
    0x3A: "TargetParent",
    0x3B: "Move",
    0x3C: "Correlator",
}
# Code page 1, MetInf.
_PAGE1_TAGS: Final[Mapping[int, str]] = {
    0x05: "Anchor",
    0x06: "EMI",
    0x07: "Format",
    0x08: "FreeID",
    0x09: "FreeMem",
    0x0A: "Last",
    0x0B: "Mark",
    0x0C: "MaxMsgSize",
    0x0D: "Mem",
    0x0E: "MetInf",
    0x0F: "Next",
    0x10: "NextNonce",
    0x11: "SharedMem",
    0x12: "Size",
    0x13: "Type",
    0x14: "Version",
    0x15: "MaxObjSize",
    0x16: "FieldLevel",
}
# Code page 2, DM DDF / TNDS.
_PAGE2_TAGS: Final[Mapping[int, str]] = {
    0x05: "AccessType",
    0x06: "ACL",
    0x07: "Add",
    0x08: "b64",
    0x09: "bin",
    0x0A: "bool",
    0x0B: "chr",
    0x0C: "CaseSense",
    0x0D: "CIS",
    0x0E: "Copy",
    0x0F: "CS",
    0x10: "date",
    0x11: "DDFName",
    0x12: "DefaultValue",
    0x13: "Delete",
    0x14: "Description",
    0x15: "DFFormat",
    0x16: "DFProperties",
    0x17: "DFTitle",
    0x18: "DFType",
    0x19: "Dynamic",
    0x1A: "Exec",
    0x1B: "float",
    0x1C: "Format",
    0x1D: "Get",
    0x1E: "int",
    0x1F: "Man",
    0x20: "MgmtTree",
    0x21: "MIME",
    0x22: "Mod",
    0x23: "Name",
    0x24: "Node",
    0x25: "node",
    0x26: "NodeName",
    0x27: "null",
    0x28: "Occurrence",
    0x29: "One",
    0x2A: "OneOrMore",
    0x2B: "OneOrN",
    0x2C: "Path",
    0x2D: "Permanent",
    0x2E: "Replace",
    0x2F: "RTProperties",
    0x30: "Scope",
    0x31: "Size",
    0x32: "time",
    0x33: "Title",
    0x34: "TStamp",
    0x35: "Type",
    0x36: "Value",
    0x37: "VerDTD",
    0x38: "VerNo",
    0x39: "xml",
    0x3A: "ZeroOrMore",
    0x3B: "ZeroOrN",
    0x3C: "ZeroOrOne",
}


_TOKENS: Final[Mapping[int, Mapping[str, int]]] = {
    page: {name: token for token, name in table.items()}
    for page, table in ((0, _PAGE0_TAGS), (1, _PAGE1_TAGS), (2, _PAGE2_TAGS))
}
_PAGE_NS_FIXED: Final[Mapping[int, str]] = {1: NS_METINF, 2: NS_DMDDF12}

# Global tokens (WBXML 1.3 section 7.1).
_SWITCH_PAGE: Final = 0x00
_END: Final = 0x01
_ENTITY: Final = 0x02
_STR_I: Final = 0x03
_LITERAL: Final = 0x04
_LITERAL_C: Final = 0x44
_PI: Final = 0x43
_STR_T: Final = 0x83
_OPAQUE: Final = 0xC3
_CONTENT_BIT: Final = 0x40
_ATTR_BIT: Final = 0x80

# Characters lxml (XML 1.0) refuses in text. OPAQUE text must also avoid them.
_ILLEGAL_XML_CHARS: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_CONTROL_BYTES: Final = bytes([*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20)])


def _has_illegal_bytes(raw: bytes, *, utf8: bool = True) -> bool:
    """Whether encoded text holds characters XML forbids: C0 controls, U+FFFE, U+FFFF.

    Checked on the bytes, before decoding: ``bytes.translate`` runs in C and is several
    times faster than a regular expression over a 64 KB large-object chunk. (Valid UTF-8
    never encodes surrogates, and single-byte charsets map 0x00-0x1F to themselves.)
    """
    if len(raw.translate(None, _CONTROL_BYTES)) != len(raw):
        return True
    return utf8 and (b"\xef\xbf\xbe" in raw or b"\xef\xbf\xbf" in raw)


_NCNAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9._-]*\Z")
_XML_WHITESPACE: Final = " \t\r\n"

# Embedded TNDS: Type text on the wire (WBXML) <-> in the tree (XML view).
_TYPE_WBXML_TO_XML: Final[Mapping[str, str]] = {
    "application/vnd.syncml.dmtnds+wbxml": "application/vnd.syncml.dmtnds+xml",
    "application/vnd.syncml.dmddf+wbxml": "application/vnd.syncml.dmddf+xml",
}
_TYPE_XML_TO_WBXML: Final[Mapping[str, str]] = {v: k for k, v in _TYPE_WBXML_TO_XML.items()}

_MAX_NESTED_DOCUMENTS: Final = 4  # OPAQUE-in-OPAQUE levels; DM needs one
_MAX_ENCODE_DEPTH: Final = 256


def is_wbxml(data: bytes) -> bool:
    """Sniff a body: WBXML 1.1-1.3 starts with its version byte 0x01-0x03 (pitfall 30).

    XML starts with ``<``, a BOM or whitespace, never with these bytes.
    """
    return len(data) > 0 and 0x01 <= data[0] <= 0x03


# =====================================================================================
# Decoding
# =====================================================================================


def _malformed(problem: str, offset: int) -> MalformedMessage:
    return MalformedMessage(f"WBXML: {problem} at offset {offset}")


def _read_mb(data: bytes, pos: int, base: int) -> tuple[int, int]:
    """Read an mb_u_int32 at ``pos``; return (value, position after it).

    At most 5 bytes and 32 bits: longer encodings are how fuzzers (and broken peers)
    smuggle huge lengths past naive decoders.
    """
    value = 0
    end = len(data)
    start = pos
    for _ in range(5):
        if pos >= end:
            raise _malformed("truncated mb_u_int32", base + start)
        byte = data[pos]
        pos += 1
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            if value > 0xFFFFFFFF:
                raise _malformed("mb_u_int32 exceeds 32 bits", base + start)
            return value, pos
    raise _malformed("mb_u_int32 longer than 5 bytes", base + start)


class _Header(NamedTuple):
    version: int
    page0_ns: str
    fpi: str
    codec: str
    strtbl: bytes
    body: int  # offset of the first body byte


def _parse_header(data: bytes, base: int) -> _Header:
    """Parse the document header (WBXML 5.4) and resolve the public identifier."""
    if not data:
        raise _malformed("empty document", base)
    version = data[0]
    if not 0x01 <= version <= 0x03:
        raise _malformed(f"unsupported WBXML version byte 0x{version:02X}", base)
    pid, pos = _read_mb(data, 1, base)
    index_pos = pos
    index = 0
    if pid == 0:
        index, pos = _read_mb(data, pos, base)
    charset_pos = pos
    charset, pos = _read_mb(data, pos, base)
    codec = _CHARSETS.get(charset)
    if codec is None:
        raise _malformed(f"unsupported charset MIBenum {charset}", base + charset_pos)
    table_pos = pos
    table_len, pos = _read_mb(data, pos, base)
    if table_len > len(data) - pos:
        raise _malformed(f"string table of {table_len} bytes is truncated", base + table_pos)
    strtbl = data[pos : pos + table_len]
    pos += table_len
    if pid == 0:
        if index >= len(strtbl):
            raise _malformed(f"public id string table index {index} out of range", base + index_pos)
        nul = strtbl.find(b"\0", index)
        # The SyncML RTK writes the FPI without a terminating NUL: accept both.
        raw_fpi = strtbl[index:] if nul < 0 else strtbl[index:nul]
        try:
            fpi = raw_fpi.decode("ascii").strip()
        except UnicodeDecodeError:
            raise _malformed("public id string is not ASCII", base + index_pos) from None
        page0_ns = _PAGE0_NS_BY_FPI.get(fpi)
        if page0_ns is None:
            raise _malformed(f"unsupported public identifier {fpi!r}", base + index_pos)
    elif pid == _PUBLIC_ID_UNKNOWN:
        fpi, page0_ns = _FPI_SYNCML12, NS_SYNCML12
    else:
        fpi = PUBLIC_IDS.get(pid, "")
        page0_ns = _PAGE0_NS_BY_FPI.get(fpi, "")
        if not page0_ns:
            raise _malformed(f"unsupported public identifier 0x{pid:X}", base + 1)
    return _Header(version, page0_ns, fpi, codec, strtbl, pos)


_CLARK_CACHE: dict[tuple[int, str], tuple[str | None, ...]] = {}


def _clark_names(page: int, ns: str) -> tuple[str | None, ...]:
    """Token-indexed Clark names (``{ns}local``) for one code page; ``None`` = no tag."""
    key = (page, ns)
    names = _CLARK_CACHE.get(key)
    if names is None:
        table: list[str | None] = [None] * 64
        for local, token in _TOKENS[page].items():
            table[token] = f"{{{ns}}}{local}"
        names = tuple(table)
        _CLARK_CACHE[key] = names
    return names


def _default_nsmap(ns: str) -> Mapping[str, str]:
    """``{None: ns}``: lxml accepts the ``None`` (default) prefix, its stubs do not."""
    return cast("Mapping[str, str]", {None: ns})


def _element_tag(node: etree._Element) -> str | None:
    """Tag of an element; ``None`` for comments, PIs and entities (their ``.tag`` is a factory)."""
    tag: object = node.tag
    return tag if isinstance(tag, str) else None


def _local(node: etree._Element) -> str:
    """Local part of an element's Clark tag; ``""`` for comments and processing instructions."""
    tag = _element_tag(node)
    return "" if tag is None else tag.rpartition("}")[2]


def _opaque_as_text(blob: bytes) -> str | None:
    """OPAQUE bytes as text when they are clean UTF-8 (the usual libwbxml ``Data``)."""
    return _decode_string(blob, "utf-8")


def _is_blank(text: str | None) -> bool:
    return not text or not text.strip(_XML_WHITESPACE)


class _Budget:
    """Decoded-size accounting shared with nested documents.

    STR_T lets a few bytes reference a long string-table entry many times; without a
    cap a 16 MiB input could expand into gigabytes of text.
    """

    __slots__ = ("remaining",)

    def __init__(self, limit: int) -> None:
        self.remaining = limit


class _Frame:
    """One open element while decoding."""

    __slots__ = ("element", "last_child", "nested", "page")

    def __init__(self, element: etree._Element, page: int) -> None:
        self.element = element
        self.page = page
        self.last_child: etree._Element | None = None
        self.nested = False


def _set_text(frame: _Frame, text: str, offset: int) -> None:
    try:
        if frame.last_child is None:
            frame.element.text = text
        else:
            frame.last_child.tail = text
    except ValueError:  # defensive: every string is validated before it gets here
        raise _malformed("text not representable in XML", offset) from None


def _flush(frame: _Frame, pending: list[str | bytes], at_end: bool, offset: int) -> None:
    """Attach the text/OPAQUE pieces collected since the last tag to the tree."""
    texts = [piece for piece in pending if isinstance(piece, str)]
    if len(texts) == len(pending):
        text = texts[0] if len(texts) == 1 else "".join(texts)
    else:
        blob = b"".join(piece if isinstance(piece, bytes) else piece.encode("utf-8") for piece in pending)
        as_text = _opaque_as_text(blob)
        if as_text is None:
            if not at_end or frame.last_child is not None:
                raise _malformed("binary OPAQUE data mixed with child elements", offset)
            frame.element.set(OPAQUE_ATTR, "base64")
            frame.element.text = base64.b64encode(blob).decode("ascii")
            pending.clear()
            return
        text = as_text
    pending.clear()
    _set_text(frame, text, offset)


def _governing_types(data_element: etree._Element) -> list[etree._Element]:
    """``Meta/Type`` elements that describe a ``Data``: the Item's, then the command's."""
    found: list[etree._Element] = []
    item = data_element.getparent()
    holders = [item, item.getparent()] if item is not None else []
    for holder in holders:
        if holder is None:
            continue
        for meta in holder:
            if _local(meta) == "Meta":
                found.extend(child for child in meta if _local(child) == "Type")
    return found


def _finish_nested(element: etree._Element) -> None:
    """Tidy an element that received an embedded document (XML view of embedded TNDS).

    Drops the whitespace-only OPAQUE/text around the nested root (libwbxml emits the
    XML indentation as an extra OPAQUE) and turns the governing Type back into ``+xml``.
    """
    if _is_blank(element.text):
        element.text = None
    for child in element:
        if _is_blank(child.tail):
            child.tail = None
    if _local(element) == "Data":
        for type_element in _governing_types(element):
            xml_type = _TYPE_WBXML_TO_XML.get((type_element.text or "").strip(_XML_WHITESPACE))
            if xml_type is not None:
                type_element.text = xml_type


def _decode_string(raw: bytes, codec: str) -> str | None:
    """Inline or string-table text, or ``None`` if it is refused (see ``_has_illegal_bytes``).

    The U+FFFE/U+FFFF test runs on the decoded str, where it costs nothing for ASCII text
    (the str knows its widest code point); on the bytes it took ~45 µs per 64 KB chunk.
    """
    if len(raw.translate(None, _CONTROL_BYTES)) != len(raw):
        return None
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError:
        return None
    if codec == "utf-8" and ("\ufffe" in text or "\uffff" in text):
        return None
    return text


def _looks_like_ddf_document(blob: bytes) -> bool:
    """Cheap test for an embedded DM DDF/TNDS document (literal public id form)."""
    if len(blob) < 4 or not 0x01 <= blob[0] <= 0x03 or blob[1] != 0x00:
        return False
    try:
        header = _parse_header(blob, 0)
    except MalformedMessage:
        return False
    return header.fpi == FPI_DM_DDF_12


def _decode_document(
    data: bytes, base: int, *, max_depth: int, depth_base: int, budget: _Budget, nesting: int
) -> etree._Element:
    """Decode one complete document.

    ``base`` is its offset and ``depth_base`` the element depth it starts at in the
    outermost input (both 0 except for embedded documents), so errors name the outer
    offset and ``max_depth`` bounds the whole tree.
    """
    header = _parse_header(data, base)
    codec = header.codec
    strtbl = header.strtbl
    page_ns: dict[int, str] = {0: header.page0_ns, **_PAGE_NS_FIXED}
    page = 0
    names = _clark_names(0, page_ns[0])
    stack: list[_Frame] = []
    pending: list[str | bytes] = []
    table_cache: dict[int, str] = {}
    root: etree._Element | None = None
    pos = header.body
    end = len(data)
    sub_element = etree.SubElement

    def string_at(offset: int, where: int) -> str:
        cached = table_cache.get(offset)
        if cached is not None:
            return cached
        if offset >= len(strtbl):
            raise _malformed(f"string table offset {offset} out of range", where)
        nul = strtbl.find(b"\0", offset)
        raw = strtbl[offset:] if nul < 0 else strtbl[offset:nul]
        text = decode_string(raw, where)
        table_cache[offset] = text
        return text

    def decode_string(raw: bytes, where: int) -> str:
        text = _decode_string(raw, codec)
        if text is None:
            if _has_illegal_bytes(raw, utf8=codec == "utf-8"):
                raise _malformed("string contains characters not allowed in XML", where)
            raise _malformed(f"string is not valid {codec}", where)
        return text

    def open_element(clark: str, has_content: bool, where: int) -> None:
        nonlocal root
        if stack:
            frame = stack[-1]
            if depth_base + len(stack) >= max_depth:
                raise _malformed(f"element nesting deeper than {max_depth}", where)
            if pending:
                _flush(frame, pending, False, where)
            if page == frame.page:
                element = etree.SubElement(frame.element, clark)
            else:
                element = etree.SubElement(frame.element, clark, nsmap=_default_nsmap(page_ns[page]))
            frame.last_child = element
        else:
            if root is not None:
                raise _malformed("trailing data after the root element", where)
            if depth_base >= max_depth:
                raise _malformed(f"element nesting deeper than {max_depth}", where)
            element = etree.Element(clark, nsmap=_default_nsmap(page_ns[page]))
            root = element
        if has_content:
            stack.append(_Frame(element, page))

    def need_open(where: int) -> _Frame:
        if not stack:
            if root is None:
                raise _malformed("content before the root element", where)
            raise _malformed("trailing data after the root element", where)
        return stack[-1]

    while pos < end:
        token = data[pos]
        low = token & 0x3F
        if low >= 0x05:  # a tag on the current code page
            if token & _ATTR_BIT:
                raise _malformed("attributes are not used in SyncML", base + pos)
            clark = names[low]
            if clark is None:
                raise _malformed(f"unknown tag token 0x{low:02X} on code page {page}", base + pos)
            if stack and not pending and stack[-1].page == page and depth_base + len(stack) < max_depth:
                # Fast path for the common case: a child on its parent's page, no text.
                frame = stack[-1]
                element = sub_element(frame.element, clark)
                frame.last_child = element
                if token & _CONTENT_BIT:
                    stack.append(_Frame(element, page))
            else:
                open_element(clark, bool(token & _CONTENT_BIT), base + pos)
            pos += 1
        elif token == _STR_I:
            if not stack:
                need_open(base + pos)
            nul = data.find(b"\0", pos + 1)
            if nul < 0:
                raise _malformed("unterminated inline string", base + pos)
            pending.append(decode_string(data[pos + 1 : nul], base + pos))
            pos = nul + 1
        elif token == _END:
            if not stack:
                raise _malformed("END without an open element", base + pos)
            frame = stack.pop()
            if pending:
                piece = pending[0]
                if len(pending) == 1 and isinstance(piece, str) and frame.last_child is None:
                    frame.element.text = piece  # the usual <Tag>STR_I</Tag>; piece is validated
                    pending.clear()
                else:
                    _flush(frame, pending, True, base + pos)
            if frame.nested:
                _finish_nested(frame.element)
            pos += 1
        elif token == _SWITCH_PAGE:
            if pos + 1 >= end:
                raise _malformed("truncated SWITCH_PAGE", base + pos)
            new_page = data[pos + 1]
            if new_page not in _TOKENS:
                raise _malformed(f"unknown code page {new_page}", base + pos)
            page = new_page
            names = _clark_names(page, page_ns[page])
            pos += 2
        elif token == _STR_T:
            need_open(base + pos)
            offset, next_pos = _read_mb(data, pos + 1, base)
            text = string_at(offset, base + pos)
            budget.remaining -= len(text)
            if budget.remaining < 0:
                raise _malformed("decoded text exceeds max_size", base + pos)
            pending.append(text)
            pos = next_pos
        elif token == _OPAQUE:
            frame = need_open(base + pos)
            length, start = _read_mb(data, pos + 1, base)
            if length > end - start:
                raise _malformed(f"OPAQUE of {length} bytes is truncated", base + pos)
            blob = data[start : start + length]
            if _looks_like_ddf_document(blob):
                if nesting >= _MAX_NESTED_DOCUMENTS:
                    raise _malformed("embedded documents nested too deeply", base + pos)
                nested = _decode_document(
                    blob,
                    base + start,
                    max_depth=max_depth,
                    depth_base=depth_base + len(stack),
                    budget=budget,
                    nesting=nesting + 1,
                )
                if pending:
                    _flush(frame, pending, False, base + pos)
                frame.element.append(nested)
                frame.last_child = nested
                frame.nested = True
            else:
                pending.append(blob)
            pos = start + length
        elif token == _ENTITY:
            need_open(base + pos)
            code, next_pos = _read_mb(data, pos + 1, base)
            if code > 0x10FFFF:
                raise _malformed(f"ENTITY U+{code:X} is not a character", base + pos)
            char = chr(code)
            if _ILLEGAL_XML_CHARS.match(char):
                raise _malformed(f"ENTITY U+{code:04X} is not allowed in XML", base + pos)
            pending.append(char)
            pos = next_pos
        elif token in (_LITERAL, _LITERAL_C):
            index, next_pos = _read_mb(data, pos + 1, base)
            name = string_at(index, base + pos)
            if not _NCNAME.match(name):
                raise _malformed(f"LITERAL tag name {name!r} is not a valid element name", base + pos)
            open_element(f"{{{page_ns[page]}}}{name}", token == _LITERAL_C, base + pos)
            pos = next_pos
        elif token == _PI:
            raise _malformed("processing instructions are not supported", base + pos)
        elif low == 0x04:
            raise _malformed("attributes are not used in SyncML", base + pos)
        else:
            raise _malformed(f"extension token 0x{token:02X} is not used in SyncML", base + pos)

    if stack:
        raise _malformed(f"document ends inside {len(stack)} open element(s)", base + end)
    if root is None:
        raise _malformed("document has no root element", base + end)
    return root


def decode(
    data: bytes, *, max_size: int = DEFAULT_MAX_SIZE, max_depth: int = DEFAULT_MAX_DEPTH
) -> etree._Element:
    """Decode a WBXML SyncML/DM document into an lxml element tree.

    ``max_size`` caps the input and the text expanded from string-table references;
    ``max_depth`` caps element nesting (embedded documents included). Any problem
    raises :class:`MalformedMessage`; no other exception escapes.

    Ordinary messages take :func:`_decode_via_xml` (the same tree, about 2x faster); anything
    it does not handle, every refusal included, is decoded node by node here.
    """
    data = bytes(data)  # also accepts bytearray / memoryview
    if len(data) > max_size:
        raise MalformedMessage(f"WBXML: document of {len(data)} bytes exceeds max_size {max_size}")
    fast = _decode_via_xml(data, max_size=max_size, max_depth=max_depth)
    if fast is not None:
        return fast
    return _decode_tree(data, max_size=max_size, max_depth=max_depth)


def _decode_tree(data: bytes, *, max_size: int, max_depth: int) -> etree._Element:
    """The reference decoder: builds the tree node by node and makes every refusal."""
    try:
        return _decode_document(
            data, 0, max_depth=max_depth, depth_base=0, budget=_Budget(max_size), nesting=0
        )
    except RecursionError:  # pragma: no cover - nesting is bounded; belt and braces
        raise MalformedMessage("WBXML: document nested too deeply") from None


# -- the fast path: WBXML -> XML text -> lxml's C parser --------------------------------

#: Token-indexed local names per code page (``None``: no tag).
_LOCAL_NAMES: Final[Mapping[int, tuple[str | None, ...]]] = {
    page: tuple(table.get(token) for token in range(64))
    for page, table in ((0, _PAGE0_TAGS), (1, _PAGE1_TAGS), (2, _PAGE2_TAGS))
}
_OPEN_TAGS: Final[Mapping[int, tuple[str, ...]]] = {
    page: tuple("" if name is None else f"<{name}" for name in names) for page, names in _LOCAL_NAMES.items()
}
_EMPTY_TAGS: Final[Mapping[int, tuple[str, ...]]] = {
    page: tuple("" if name is None else f"<{name}/>" for name in names)
    for page, names in _LOCAL_NAMES.items()
}
_fast_state = threading.local()


def _fast_parser() -> etree.XMLParser:
    """One parser per thread (lxml parsers must not be shared); the input is our own text."""
    parser: etree.XMLParser | None = getattr(_fast_state, "parser", None)
    if parser is None:
        parser = _fast_state.parser = etree.XMLParser(
            resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
        )
    return parser


def _decode_via_xml(data: bytes, *, max_size: int, max_depth: int) -> etree._Element | None:
    """The tree :func:`_decode_tree` builds, by writing XML text for lxml's parser; or None.

    Building the tree one ``SubElement`` and one ``.text`` at a time cost ~200 µs for a
    device's Pkg#1 and ~430 µs for a 20-command server package, more than lxml's C parser
    plus ``message_from_element`` for the XML form of the same message. Writing the document
    as XML text (one short str per token, a leaf ``<Tag>text</Tag>`` in one step) and parsing
    it in C takes ~90 and ~190 µs (of which the parse is ~25 and ~45), and lxml's tree is
    then the same: the same elements, default namespaces declared where the code page
    changes, the same text and tails (CR kept as ``&#13;``). Through this tree,
    ``codec.decode`` of a WBXML Pkg#1 took ~220 µs instead of ~335 (XML: ~155); it now
    reads canonical messages without any tree (``wbxml_reader``) and comes here for the rest.

    It handles the ordinary document only: tags, ``STR_I``, ``STR_T``, ``SWITCH_PAGE`` and
    ``OPAQUE`` that is clean UTF-8 text. Anything else (binary or embedded OPAQUE, ENTITY,
    LITERAL, attributes, empty text, any malformation or limit) returns ``None`` and the
    reference decoder does the work, so every refusal stays its refusal, word for word.
    """
    try:
        return _via_xml(data, max_size, max_depth)
    except Exception:  # any doubt: the reference decoder decides
        return None


def _escape(text: str) -> str:
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    if "\r" in text:
        text = text.replace("\r", "&#13;")  # a literal CR would be read back as LF
    return text


def _via_xml(data: bytes, max_size: int, max_depth: int) -> etree._Element | None:
    # Any exception here (a bad mb_u_int32, an index past the end, a UnicodeDecodeError, lxml
    # refusing the text) means "not for this path": _decode_via_xml turns it into None.
    header = _parse_header(data, 0)
    codec = header.codec
    strtbl = header.strtbl
    page_ns: dict[int, str] = {0: header.page0_ns, **_PAGE_NS_FIXED}
    page = 0
    names = _LOCAL_NAMES[0]
    opens, empties = _OPEN_TAGS[0], _EMPTY_TAGS[0]
    # Text needs escaping only if one of these bytes occurs anywhere (UTF-8 and Latin-1 write
    # them as themselves, and never inside another character): usually it does not.
    escape = b"&" in data or b"<" in data or b">" in data or b"\r" in data
    out: list[str] = []
    append = out.append
    stack: list[str] = []  # local names of the open elements
    pages: list[int] = []  # and their code pages
    pending: list[str] = []
    budget = max_size
    have_root = False
    pos = header.body
    end = len(data)
    find = data.find
    while pos < end:
        token = data[pos]
        low = token & 0x3F
        if low >= 0x05:  # a tag on the current code page
            local = names[low]
            if local is None or token & _ATTR_BIT:
                return None
            if stack:
                if pending:
                    text = "".join(pending)
                    if not text:
                        return None  # lxml would hold "" (not None): not worth mirroring
                    append(_escape(text) if escape else text)
                    pending.clear()
                if len(stack) >= max_depth:
                    return None
                same_page = page == pages[-1]
            elif have_root or max_depth <= 0:
                return None
            else:
                have_root = True
                same_page = False
            # An element on its parent's page inherits the default namespace; the root and
            # an element after SWITCH_PAGE declare it (the reference decoder's nsmap).
            start = opens[low] if same_page else f'<{local} xmlns="{page_ns[page]}"'
            if not token & _CONTENT_BIT:
                append(empties[low] if same_page else start + "/>")
                pos += 1
            elif data[pos + 1] == _STR_I and (nul := find(b"\0", pos + 2)) > 0 and data[nul + 1] == _END:
                # The usual leaf, <Tag>STR_I</Tag>, in one step.
                text = data[pos + 2 : nul].decode(codec)
                if not text:
                    return None
                append(f"{start}>{_escape(text) if escape else text}</{local}>")
                pos = nul + 2
            else:
                append(start + ">")
                stack.append(local)
                pages.append(page)
                pos += 1
        elif token == _END:
            if not stack:
                return None
            if pending:
                text = "".join(pending)
                if not text:
                    return None
                append(_escape(text) if escape else text)
                pending.clear()
            append(f"</{stack.pop()}>")
            pages.pop()
            pos += 1
        elif token == _STR_I:
            nul = find(b"\0", pos + 1)
            if nul < 0 or not stack:
                return None
            pending.append(data[pos + 1 : nul].decode(codec))
            pos = nul + 1
        elif token == _SWITCH_PAGE:
            page = data[pos + 1]
            if page not in _LOCAL_NAMES:
                return None
            names, opens, empties = _LOCAL_NAMES[page], _OPEN_TAGS[page], _EMPTY_TAGS[page]
            pos += 2
        elif token == _STR_T:
            if not stack:
                return None
            offset, pos = _read_mb(data, pos + 1, 0)
            if offset >= len(strtbl):
                return None
            nul = strtbl.find(b"\0", offset)
            piece = (strtbl[offset:] if nul < 0 else strtbl[offset:nul]).decode(codec)
            budget -= len(piece)
            if budget < 0:
                return None
            pending.append(piece)
        elif token == _OPAQUE:
            if not stack:
                return None
            length, start_pos = _read_mb(data, pos + 1, 0)
            if length > end - start_pos:
                return None
            blob = data[start_pos : start_pos + length]
            if _looks_like_ddf_document(blob):
                return None
            opaque_text = _decode_string(blob, "utf-8")
            if opaque_text is None:
                return None  # binary: the reference decoder marks it base64
            pending.append(opaque_text)
            pos = start_pos + length
        else:  # ENTITY, LITERAL, PI, attributes, extensions: rare or refused
            return None
    if stack or not have_root:
        return None
    xml = "".join(out)
    # The text the reference decoder refuses (C0 controls, U+FFFE, U+FFFF): checked once,
    # over the whole document, since tags and escapes never contain these characters.
    if "\ufffe" in xml or "\uffff" in xml:
        return None
    raw = xml.encode("utf-8")
    if len(raw.translate(None, _CONTROL_BYTES)) != len(raw):
        return None
    root: etree._Element = etree.fromstring(raw, _fast_parser())
    return root


# =====================================================================================
# Encoding
# =====================================================================================


def _mb(value: int) -> bytes:
    """Encode an mb_u_int32 (big-endian base 128, continuation bit on all but the last)."""
    if value < 0x80:
        return bytes((value,))
    groups = [value & 0x7F]
    value >>= 7
    while value:
        groups.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(groups))


def _split(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return None, tag


_EMBED: Final = -1  # pseudo page: element is encoded as a nested DM DDF document


def _is_embedded_tnds(child: etree._Element) -> bool:
    """A ``Data`` child that travels as a nested WBXML DM DDF document."""
    tag = _element_tag(child)
    if tag is None:
        return False
    ns, local = _split(tag)
    return ns == NS_DMDDF12 or (local == "MgmtTree" and (ns is None or ns in _SYNCML_NAMESPACES))


class _Encoder:
    """Encodes one document; a fresh instance per (nested) document."""

    def __init__(self, version: int, use_string_table: bool) -> None:
        self.version = version
        self.use_string_table = use_string_table
        self.page = 0
        self.collected: list[bytes] | None = None
        self.strtab: dict[bytes, int] = {}
        self.type_overrides: dict[etree._Element, str] = {}
        self.nested_cache: dict[etree._Element, bytes] = {}

    # -- document ---------------------------------------------------------------------

    def document(self, root: etree._Element, *, embedded: bool = False) -> bytes:
        ns, local = _split(str(root.tag))
        literal_fpi: str | None = None
        public_id = 0
        if embedded or ns == NS_DMDDF12 or (ns is None and local == "MgmtTree"):
            literal_fpi, root_page = FPI_DM_DDF_12, 2
        elif ns is None:
            doctype_id = root.getroottree().docinfo.public_id
            public_id = _PUBLIC_ID_BY_FPI.get(doctype_id or "", 0x1201)
            if _PAGE0_NS_BY_FPI.get(PUBLIC_IDS.get(public_id, "")) is None:
                public_id = 0x1201
            root_page = 0
        elif ns in _PUBLIC_ID_BY_NS:
            public_id = _PUBLIC_ID_BY_NS[ns]
            root_page = 1 if ns == NS_METINF else 0
        else:
            raise LocalProtocolError(f"WBXML: no SyncML public identifier for root element {root.tag!r}")

        self._prepare_type_overrides(root)
        prefix = (literal_fpi.encode("ascii") + b"\0") if literal_fpi is not None else b""
        if self.use_string_table:
            self.collected = []
            self.page = 0
            self._element(root, root_page, "", bytearray(), 0)
            counts = Counter(self.collected)
            self.collected = None
            table = bytearray(prefix)
            for text, count in counts.items():  # insertion order = first appearance
                if count >= 2 and len(text) >= 3:
                    self.strtab[text] = len(table)
                    table += text + b"\0"
        else:
            table = bytearray(prefix)
        body = bytearray()
        self.page = 0
        self._element(root, root_page, "", body, 0)

        out = bytearray((self.version,))
        out += b"\x00\x00" if literal_fpi is not None else _mb(public_id)
        out += _mb(_UTF8_MIBENUM)
        out += _mb(len(table))
        out += table
        out += body
        return bytes(out)

    def _prepare_type_overrides(self, root: etree._Element) -> None:
        """Find ``Type`` texts to switch to ``+wbxml`` because their Data embeds WBXML TNDS."""
        for data_element in root.iter("{*}Data"):
            if any(_is_embedded_tnds(child) for child in data_element):
                for type_element in _governing_types(data_element):
                    wbxml_type = _TYPE_XML_TO_WBXML.get((type_element.text or "").strip(_XML_WHITESPACE))
                    if wbxml_type is not None:
                        self.type_overrides[type_element] = wbxml_type

    # -- content ----------------------------------------------------------------------

    def _text(self, out: bytearray, text: str) -> None:
        raw = text.encode("utf-8")
        if self.collected is not None:
            self.collected.append(raw)
        offset = self.strtab.get(raw)
        if offset is not None:
            out.append(_STR_T)
            out += _mb(offset)
        else:
            out.append(_STR_I)
            out += raw
            out.append(0)

    def _opaque(self, out: bytearray, blob: bytes) -> None:
        out.append(_OPAQUE)
        out += _mb(len(blob))
        out += blob

    def _resolve_page(
        self, element: etree._Element, ns: str | None, local: str, context: int, parent: str
    ) -> int:
        """Code page of an element, from its namespace and, failing that, its context.

        Elements without a namespace, or that merely inherited the SyncML default
        namespace, are placed by context: Windows clients write Meta children with no
        MetInf namespace (pitfall 22), hand-written TNDS may lack ``syncml:dmddf1.2``, and
        some writers put ``xmlns="syncml:metinf"`` on ``Meta`` itself.
        """
        if ns is None or ns in _SYNCML_NAMESPACES:
            if context == 0:
                if parent == "Meta" and local in _TOKENS[1] and local not in _TOKENS[0]:
                    return 1
                if parent == "Data" and local == "MgmtTree":
                    return _EMBED
                return 0
            if local in _TOKENS[context] or ns is None:
                return context
            return 0
        if ns == NS_METINF:
            if local not in _TOKENS[1] and local in _TOKENS[0]:
                return 0
            return 1
        if ns == NS_DMDDF12:
            return _EMBED if parent == "Data" and context == 0 else 2
        raise LocalProtocolError(
            f"WBXML: element {element.tag!r} is in a namespace SyncML WBXML cannot encode"
        )

    def _content(self, element: etree._Element) -> list[str | etree._Element]:
        """Element children and text runs in document order, comments and PIs removed.

        Whitespace-only text between elements is indentation, not data: dropped.
        """
        if len(element) == 0:
            return [element.text] if element.text else []
        items: list[str | etree._Element] = []
        run = element.text or ""
        has_elements = False
        for child in element:
            if _element_tag(child) is not None:
                if run:
                    items.append(run)
                    run = ""
                items.append(child)
                has_elements = True
            if child.tail:
                run += child.tail
        if run:
            items.append(run)
        if has_elements:
            items = [item for item in items if not (isinstance(item, str) and _is_blank(item))]
        return items

    def _element(
        self, element: etree._Element, context: int, parent: str, out: bytearray, depth: int
    ) -> None:
        if depth > _MAX_ENCODE_DEPTH:
            raise LocalProtocolError(f"WBXML: element tree deeper than {_MAX_ENCODE_DEPTH}")
        tag = _element_tag(element)
        if tag is None:
            raise LocalProtocolError(f"WBXML: cannot encode a {type(element).__name__} node")
        ns, local = _split(tag)
        page = self._resolve_page(element, ns, local, context, parent)
        if page == _EMBED:
            self._opaque(out, self._nested_document(element))
            return
        token = _TOKENS[page].get(local)
        if token is None:
            raise LocalProtocolError(f"WBXML: element {tag!r} has no token on code page {page}")

        opaque: bytes | None = None
        for name, value in element.items():
            if name != OPAQUE_ATTR:
                raise LocalProtocolError(f"WBXML: element {tag!r} has attribute {name!r}; SyncML has none")
            if value != "base64":
                raise LocalProtocolError(f"WBXML: element {tag!r} has unknown {OPAQUE_ATTR} value {value!r}")
            opaque = self._binary(element)

        if page != self.page:
            out.append(_SWITCH_PAGE)
            out.append(page)
            self.page = page

        if opaque is not None:
            if opaque:
                out.append(token | _CONTENT_BIT)
                self._opaque(out, opaque)
                out.append(_END)
            else:
                out.append(token)
            return

        override = self.type_overrides.get(element)
        content: list[str | etree._Element] = [override] if override is not None else self._content(element)
        if not content:
            out.append(token)
            return
        out.append(token | _CONTENT_BIT)
        for item in content:
            if isinstance(item, str):
                self._text(out, item)
            else:
                self._element(item, page, local, out, depth + 1)
        out.append(_END)

    def _binary(self, element: etree._Element) -> bytes:
        if any(_element_tag(child) is not None for child in element):
            raise LocalProtocolError(f"WBXML: binary element {element.tag!r} cannot have child elements")
        text = "".join((element.text or "").split())
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise LocalProtocolError(f"WBXML: binary element {element.tag!r} does not hold base64") from None

    def _nested_document(self, element: etree._Element) -> bytes:
        """Embedded TNDS: a complete WBXML DDF document inside OPAQUE, as libwbxml emits."""
        cached = self.nested_cache.get(element)
        if cached is None:
            cached = _Encoder(self.version, self.use_string_table).document(element, embedded=True)
            self.nested_cache[element] = cached
        return cached


def encode(root: etree._Element, *, version: int = 0x02, use_string_table: bool = False) -> bytes:
    """Encode an element tree (as produced by :func:`decode` or an XML parser) to WBXML.

    ``version`` is the WBXML version byte (0x01-0x03; 0x02 is what DM clients send).
    With ``use_string_table`` repeated strings go to the string table (STR_T), like
    libwbxml's default; without it every string is inline (STR_I), like ``xml2wbxml -n``.
    Raises :class:`LocalProtocolError` for trees SyncML WBXML cannot carry.
    """
    if version not in (0x01, 0x02, 0x03):
        raise LocalProtocolError(f"WBXML: unsupported version byte {version!r}")
    if _element_tag(root) is None:
        raise LocalProtocolError("WBXML: encode() needs an element")
    return _Encoder(version, use_string_table).document(root)
