"""Messages nobody here wrote: every well-formed DM message in ../shared/interop decodes.

The SyncML DS messages among libwbxml's fixtures are refused with an error naming the DS
element; printed spec fragments decode as the element they are (command, Item, SyncHdr).
Where libwbxml's WBXML of a message exists, our WBXML decoder gives the same message as
our XML parser gives for the source; our WBXML of every message reads back in libwbxml.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from omadm.protocol import codec, xml_codec
from omadm.protocol.codec import Encoding
from omadm.protocol.errors import ProtocolError, UnsupportedElement
from omadm.protocol.messages import Message
from tests.libwbxml import INTEROP, needs_interop, needs_libwbxml, wbxml2xml
from tests.normalize import normalize

pytestmark = [pytest.mark.interop, needs_interop]

#: Printed spec examples that are well-formed but elide their content with "..." (no
#: SessionID, no MsgID): illustrations, not messages. They must be refused clearly.
ELIDED = {"083", "084", "085", "086"}


def _xml_sources() -> list[Path]:
    if not INTEROP.is_dir():
        return []
    files = sorted((INTEROP / "oma-dm-1.2.1-spec-examples").glob("*.xml.txt"))
    files += sorted((INTEROP / "libwbxml-test-fixtures").glob("*.xml"))
    files += sorted((INTEROP / "ms-mdm").glob("*.xml"))
    return files


def _well_formed(path: Path) -> etree._Element | None:
    try:
        return etree.fromstring(path.read_bytes(), etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return None


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


SOURCES = [p for p in _xml_sources() if _well_formed(p) is not None]
MESSAGES = [p for p in SOURCES if _local(_well_formed(p).tag) == "SyncML"]  # type: ignore[union-attr]
FRAGMENTS = [p for p in SOURCES if p not in MESSAGES]


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def _is_ds(path: Path) -> bool:
    return "libwbxml-test-fixtures" in str(path) and path.name != "syncml-012.xml"


def test_the_interop_folder_has_what_we_expect() -> None:
    assert len(MESSAGES) >= 20 and len(FRAGMENTS) >= 30


@pytest.mark.parametrize("path", MESSAGES, ids=_id)
def test_every_well_formed_message_decodes_or_is_refused_for_a_named_reason(path: Path) -> None:
    data = path.read_bytes()
    if path.name[:3] in ELIDED:
        with pytest.raises(ProtocolError, match="SessionID"):
            codec.decode(data)
        return
    try:
        message, encoding = codec.decode(data)
    except UnsupportedElement as exc:
        assert _is_ds(path), f"a DM message was refused: {exc}"
        assert "is a SyncML DS element that device management does not use" in str(exc)
        return
    assert encoding is Encoding.XML
    # And what we decoded survives our own encoders, both of them.
    assert xml_codec.parse(codec.encode(message, Encoding.XML)) == message
    assert normalize(codec.decode(codec.encode(message, Encoding.WBXML))[0]) == normalize(message)


@pytest.mark.parametrize("path", FRAGMENTS, ids=_id)
def test_every_well_formed_fragment_decodes_as_its_element(path: Path) -> None:
    root = _well_formed(path)
    assert root is not None
    name = _local(root.tag)
    try:
        xml_codec.parse_fragment(path.read_bytes())
    except ProtocolError as exc:
        # Only TNDS/DDF trees (the tree layer's business), DS DevInf, lone SyncBody and the
        # printed UI examples whose Status omits CmdID may be refused, and clearly.
        assert name in {"MgmtTree", "DevInf", "SyncBody"} or "CmdID" in str(exc), f"{name}: {exc}"
        assert str(exc)


def _wbxml_pairs() -> list[tuple[Path, Path]]:
    pairs = []
    for wbxml_path in sorted(INTEROP.glob("**/*.wbxml")) if INTEROP.is_dir() else []:
        stem = wbxml_path.name.removesuffix(".wbxml").removesuffix(".wbxml-by-libwbxml")
        folder = (
            wbxml_path.parent.parent if wbxml_path.parent.name == "wbxml-by-libwbxml" else wbxml_path.parent
        )
        candidates = [folder / f"{stem}.xml.txt", folder / f"{stem}.xml"]
        source = next((c for c in candidates if c.is_file()), None)
        if source is not None:
            pairs.append((wbxml_path, source))
    return pairs


@pytest.mark.parametrize(("wbxml_path", "source"), _wbxml_pairs(), ids=lambda p: p.name)
def test_libwbxml_wbxml_decodes_to_the_same_message_as_its_xml_source(wbxml_path: Path, source: Path) -> None:
    try:
        expected = codec.decode(source.read_bytes())[0]
    except ProtocolError as exc:
        assert _is_ds(source) and "libwbxml-test-fixtures" in str(wbxml_path), str(exc)
        with pytest.raises(ProtocolError):
            codec.decode(wbxml_path.read_bytes())
        return
    got, encoding = codec.decode(wbxml_path.read_bytes())
    assert encoding is Encoding.WBXML
    assert normalize(got) == normalize(expected)


@needs_libwbxml
@pytest.mark.libwbxml
@pytest.mark.parametrize("path", MESSAGES, ids=_id)
def test_our_wbxml_of_every_message_reads_back_in_libwbxml(path: Path) -> None:
    try:
        message = codec.decode(path.read_bytes())[0]
    except ProtocolError:
        return  # refused above, for a named reason
    ours = codec.encode(message, Encoding.WBXML)
    theirs: Message = xml_codec.parse(wbxml2xml(ours))
    assert normalize(theirs) == normalize(message)
