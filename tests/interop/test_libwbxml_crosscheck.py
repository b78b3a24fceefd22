"""Cross-checks of ``omadm.protocol.wbxml`` against public material and libwbxml.

Two independent references:

* the interop folder ``../shared/interop`` (XML messages nobody on this project wrote,
  and their WBXML encodings made by Debian's libwbxml 0.11.8), and
* Debian's ``libwbxml2-utils`` command line tools, run as subprocesses:
  ``xml2wbxml [-n] -v 1.2 -o OUT IN`` (``-n``: no string table) and
  ``wbxml2xml -m 0 -o OUT IN`` (``-m 0``: compact XML).

Trees are compared in a canonical form (see :func:`canon`) that absorbs what libwbxml
changes on purpose: it strips leading/trailing blanks of every text node, turns LF into
CRLF inside ``Data`` of Add/Replace, drops comments, and writes the ``Type`` of embedded
TNDS as ``application/vnd.syncml.dmtnds+wbxml``.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from lxml import etree

from omadm.protocol import wbxml
from omadm.protocol.errors import LocalProtocolError, MalformedMessage
from omadm.protocol.wbxml import (
    NS_DMDDF12,
    NS_METINF,
    NS_SYNCML10,
    NS_SYNCML11,
    NS_SYNCML12,
    OPAQUE_ATTR,
    decode,
    encode,
)

INTEROP = Path(__file__).parents[2].parent / "shared" / "interop"
HAVE_INTEROP = INTEROP.is_dir()
HAVE_LIBWBXML = shutil.which("xml2wbxml") is not None and shutil.which("wbxml2xml") is not None

NO_INTEROP = f"interop material not found at {INTEROP} (a fresh clone has no ../shared/interop; CI does)"
NO_LIBWBXML = "libwbxml tools xml2wbxml/wbxml2xml not on PATH (Debian package libwbxml2-utils)"

pytestmark = pytest.mark.interop
needs_interop = pytest.mark.skipif(not HAVE_INTEROP, reason=NO_INTEROP)
needs_libwbxml = pytest.mark.skipif(not HAVE_LIBWBXML, reason=NO_LIBWBXML)
LIBWBXML = (pytest.mark.libwbxml, needs_libwbxml)

SYNCML_NAMESPACES = {NS_SYNCML10, NS_SYNCML11, NS_SYNCML12}
NS_BY_FPI = {
    "-//SYNCML//DTD SyncML 1.0//EN": NS_SYNCML10,
    "-//SYNCML//DTD SyncML 1.1//EN": NS_SYNCML11,
    "-//SYNCML//DTD SyncML 1.2//EN": NS_SYNCML12,
}
PAGE1_NAMES = set(wbxml._TOKENS[1])
TYPE_WBXML_TO_XML = {
    "application/vnd.syncml.dmtnds+wbxml": "application/vnd.syncml.dmtnds+xml",
    "application/vnd.syncml.dmddf+wbxml": "application/vnd.syncml.dmddf+xml",
}
DEVINF_WBXML_PUBLIC_IDS = (b"\x9f\x52", b"\x9f\x54", b"\xa4\x03")  # DevInf 1.0 / 1.1 / 1.2


# --------------------------------------------------------------------------------------
# Canonical trees
# --------------------------------------------------------------------------------------


def _split(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return None, tag


def _effective_ns(ns: str | None, local: str, parent_ns: str, parent_local: str) -> str:
    """The namespace an element has in WBXML, where the code page implies it.

    Source XML often omits namespaces that the WBXML code page makes explicit:
    libwbxml's DS fixtures have no ``xmlns`` at all, and Windows puts Meta children in
    the inherited SyncML namespace (pitfall 22).
    """
    if ns is None or ns in SYNCML_NAMESPACES:
        if parent_local == "Meta" and local in PAGE1_NAMES:
            return NS_METINF
        if parent_local == "Data" and local == "MgmtTree":
            return NS_DMDDF12
        if parent_ns in (NS_METINF, NS_DMDDF12) or ns is None:
            return parent_ns
    return ns


def _text(element: etree._Element) -> str:
    """Direct character content, in libwbxml's terms (each text node stripped)."""
    pieces = [element.text or ""]
    pieces.extend(child.tail or "" for child in element)  # tails of comments count too
    joined = "".join(piece.replace("\r\n", "\n").replace("\r", "\n").strip(" \t\n") for piece in pieces)
    return TYPE_WBXML_TO_XML.get(joined, joined)


def canon(element: etree._Element, parent_ns: str | None = None, parent_local: str = "") -> tuple[Any, ...]:
    """Namespaces, local names and stripped text; comments and PIs ignored.

    Binary (``OPAQUE_ATTR``) content is compared as bytes.
    """
    tag = element.tag
    assert isinstance(tag, str)
    ns, local = _split(tag)
    if parent_ns is None:  # root
        public_id = element.getroottree().docinfo.public_id or ""
        default = NS_DMDDF12 if local == "MgmtTree" else NS_BY_FPI.get(public_id, NS_SYNCML12)
        effective = ns or default
    else:
        effective = _effective_ns(ns, local, parent_ns, parent_local)
    content: Any = _text(element)
    if element.get(OPAQUE_ATTR) == "base64":
        content = ("binary", base64.b64decode(element.text or ""))
    children = tuple(canon(child, effective, local) for child in element if isinstance(child.tag, str))
    return (effective, local, content, children)


PARSER = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=False)


def parse(path: Path) -> etree._Element:
    return etree.parse(str(path), PARSER).getroot()


def parse_or_none(path: Path) -> etree._Element | None:
    try:
        return parse(path)
    except etree.XMLSyntaxError:
        return None


# --------------------------------------------------------------------------------------
# The interop material
# --------------------------------------------------------------------------------------


def _rel(path: Path) -> str:
    return str(path.relative_to(INTEROP))


def _interop_files(patterns: tuple[str, ...]) -> list[Path]:
    if not HAVE_INTEROP:
        return []
    found = {path for pattern in patterns for path in INTEROP.rglob(pattern)}
    return sorted(found)


def _params(paths: list[Path], marks: tuple[Any, ...] = ()) -> list[Any]:
    """One param per file, or a single skipped param saying why there are none."""
    if not HAVE_INTEROP:
        return [pytest.param(None, marks=(*marks, pytest.mark.skip(reason=NO_INTEROP)), id="no-interop")]
    return [pytest.param(path, marks=marks, id=_rel(path)) for path in paths]


WBXML_FILES = _interop_files(("*.wbxml",))
XML_FILES = _interop_files(("*.xml", "*.xml.txt", "*.ddf"))
WELL_FORMED = [path for path in XML_FILES if parse_or_none(path) is not None]
FULL_DOCUMENTS = [path for path in WELL_FORMED if _split(str(parse(path).tag))[1] in ("SyncML", "MgmtTree")]


def source_of(wbxml_path: Path) -> Path | None:
    """The XML a fixture WBXML file was made from, by the interop folder's naming."""
    name = wbxml_path.name.removesuffix(".wbxml").removesuffix(".wbxml-by-libwbxml")
    folder = wbxml_path.parent
    candidates = [
        folder.parent / f"{name}.xml.txt",  # oma-dm-1.2.1-spec-examples/wbxml-by-libwbxml/NNN-*.wbxml
        folder.parent / f"{name}.xml",  # libwbxml-test-fixtures/wbxml-by-libwbxml/X.wbxml
        folder / f"{name}.xml",  # ms-mdm/X.wbxml-by-libwbxml.wbxml
    ]
    return next((candidate for candidate in candidates if candidate.is_file()), None)


def embeds_devinf(root: etree._Element) -> bool:
    return any(isinstance(e.tag, str) and e.tag.startswith("{syncml:devinf}") for e in root.iter())


# --------------------------------------------------------------------------------------
# libwbxml subprocesses
# --------------------------------------------------------------------------------------


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def libwbxml_decode(data: bytes, tmp_path: Path) -> etree._Element:
    """``wbxml2xml`` of some bytes, parsed back with lxml."""
    source, target = tmp_path / "in.wbxml", tmp_path / "out.xml"
    source.write_bytes(data)
    target.unlink(missing_ok=True)
    result = _run(["wbxml2xml", "-m", "0", "-o", str(target), str(source)])
    assert result.returncode == 0 and target.is_file(), f"wbxml2xml failed: {result.stdout}{result.stderr}"
    return parse(target)


def libwbxml_encode(xml_path: Path, tmp_path: Path, *, string_table: bool) -> bytes | str:
    """``xml2wbxml -v 1.2`` of a file: the bytes, or libwbxml's error message."""
    target = tmp_path / "out.wbxml"
    target.unlink(missing_ok=True)
    args = ["xml2wbxml", "-v", "1.2", "-o", str(target), str(xml_path)]
    if not string_table:
        args.insert(1, "-n")
    result = _run(args)
    if result.returncode != 0 or not target.is_file():
        return (result.stdout + result.stderr).strip()
    return target.read_bytes()


# --------------------------------------------------------------------------------------
# (0) The fixtures themselves, and our codec alone over every well-formed XML example
# --------------------------------------------------------------------------------------


@needs_interop
def test_interop_material_is_present() -> None:
    assert len(WBXML_FILES) >= 14
    assert len(FULL_DOCUMENTS) >= 20


@pytest.mark.parametrize("path", _params(WBXML_FILES))
def test_hex_dump_matches_binary(path: Path) -> None:
    hex_path = path.with_name(path.name + ".hex")
    assert bytes.fromhex(hex_path.read_text()) == path.read_bytes()


@pytest.mark.parametrize("path", _params(WELL_FORMED))
def test_every_well_formed_example_round_trips_through_our_codec(path: Path) -> None:
    """Fragments too (Exec, Item, Status...): they encode with the SyncML 1.2 public id."""
    source = parse(path)
    if embeds_devinf(source):
        with pytest.raises(LocalProtocolError, match="devinf"):
            encode(source)
        return
    for table in (False, True):
        data = encode(source, use_string_table=table)
        assert canon(decode(data)) == canon(source)


# --------------------------------------------------------------------------------------
# (1) libwbxml's WBXML fixtures decode in ours as in wbxml2xml and as the XML source
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", _params(WBXML_FILES))
def test_fixture_decodes_like_its_xml_source(path: Path) -> None:
    source_path = source_of(path)
    assert source_path is not None, f"no XML source for {path}"
    assert canon(decode(path.read_bytes())) == canon(parse(source_path))


@pytest.mark.parametrize("path", _params(WBXML_FILES, LIBWBXML))
def test_fixture_decodes_like_wbxml2xml(path: Path, tmp_path: Path) -> None:
    data = path.read_bytes()
    assert canon(decode(data)) == canon(libwbxml_decode(data, tmp_path))


# --------------------------------------------------------------------------------------
# (2) Full XML documents: ours -> wbxml2xml, and xml2wbxml -> ours
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", [False, True], ids=["inline", "strtbl"])
@pytest.mark.parametrize("path", _params(FULL_DOCUMENTS, LIBWBXML))
def test_our_encoding_decodes_identically_in_libwbxml(path: Path, table: bool, tmp_path: Path) -> None:
    source = parse(path)
    if embeds_devinf(source):
        pytest.skip("embeds a SyncML DS DevInf document, which this DM codec refuses to encode")
    data = encode(source, use_string_table=table)
    assert canon(libwbxml_decode(data, tmp_path)) == canon(source)


@pytest.mark.parametrize("table", [False, True], ids=["xml2wbxml-n", "xml2wbxml"])
@pytest.mark.parametrize("path", _params(FULL_DOCUMENTS, LIBWBXML))
def test_libwbxml_encoding_decodes_identically_in_ours(path: Path, table: bool, tmp_path: Path) -> None:
    source = parse(path)
    data = libwbxml_encode(path, tmp_path, string_table=table)
    if isinstance(data, str):
        pytest.skip(f"libwbxml cannot encode this document: {data}")
    if embeds_devinf(source):
        # libwbxml embeds DevInf as a nested WBXML document; DM has no DevInf, so ours
        # hands it up as binary Data instead of decoding it.
        blobs = [
            base64.b64decode(element.text or "")
            for element in decode(data).iter()
            if element.get(OPAQUE_ATTR) == "base64"
        ]
        assert blobs and all(blob[1:3] in DEVINF_WBXML_PUBLIC_IDS for blob in blobs)
        return
    assert canon(decode(data)) == canon(source)


@pytest.mark.libwbxml
@needs_interop
@needs_libwbxml
def test_standalone_devinf_is_refused(tmp_path: Path) -> None:
    data = libwbxml_encode(
        INTEROP / "libwbxml-test-fixtures" / "syncml-011.xml", tmp_path, string_table=False
    )
    assert isinstance(data, bytes)
    with pytest.raises(MalformedMessage, match="unsupported public identifier 0xFD4 at offset 1"):
        decode(data)


# --------------------------------------------------------------------------------------
# Token tables, byte for byte against libwbxml
# --------------------------------------------------------------------------------------


def _all_tags_document(page: int) -> etree._Element:
    """A flat document holding every tag of one code page as an empty element."""
    if page == 2:
        root = etree.Element("{%s}MgmtTree" % NS_DMDDF12, nsmap=wbxml._default_nsmap(NS_DMDDF12))  # noqa: UP031
        parent = root
        names = [name for name in wbxml._TOKENS[2] if name != "MgmtTree"]
        namespace = NS_DMDDF12
    else:
        root = etree.Element("{%s}SyncML" % NS_SYNCML12, nsmap=wbxml._default_nsmap(NS_SYNCML12))  # noqa: UP031
        parent = etree.SubElement(root, "{%s}Meta" % NS_SYNCML12) if page == 1 else root  # noqa: UP031
        names = [name for name in wbxml._TOKENS[page] if name not in ("SyncML", "Meta")]
        namespace = NS_METINF if page == 1 else NS_SYNCML12
    for name in names:
        etree.SubElement(parent, "{%s}%s" % (namespace, name))  # noqa: UP031
    return root


@pytest.mark.libwbxml
@needs_libwbxml
@pytest.mark.parametrize("page", [0, 1, 2])
def test_token_tables_match_libwbxml(page: int, tmp_path: Path) -> None:
    document = _all_tags_document(page)
    source = tmp_path / "tags.xml"
    source.write_bytes(etree.tostring(document))
    theirs = libwbxml_encode(source, tmp_path, string_table=False)
    assert isinstance(theirs, bytes), theirs
    assert encode(document) == theirs
    assert canon(decode(theirs)) == canon(document)


# --------------------------------------------------------------------------------------
# (3) Generated SyncML trees, both directions through libwbxml
# --------------------------------------------------------------------------------------

S = "{" + NS_SYNCML12 + "}"
M = "{" + NS_METINF + "}"
D = "{" + NS_DMDDF12 + "}"
PAGE0 = sorted(set(wbxml._TOKENS[0]) - {"Meta", "Data", "SyncML"})
PAGE1 = sorted(PAGE1_NAMES - {"Mem", "Anchor"})  # elements with MetInf children: keep leaves
PAGE2 = sorted(set(wbxml._TOKENS[2]) - {"MgmtTree"})

# libwbxml handles text as C strings and strips blanks of every text node. In its
# string-table mode it even sizes the table from the unstripped strings and so writes
# a corrupt document (the root tag is swallowed by the table) when a repeated text has
# leading or trailing blanks. Generated text therefore has none.
text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF) | st.sampled_from("\t\n€中"),
    max_size=16,
).map(lambda value: value.strip(" \t\n"))


@st.composite
def tnds(draw: st.DrawFn, depth: int = 0) -> etree._Element:
    element = etree.Element(D + draw(st.sampled_from(PAGE2)))
    if depth < 2 and draw(st.booleans()):
        element.extend(draw(st.lists(tnds(depth + 1), min_size=1, max_size=3)))
    else:
        element.text = draw(text)
    return element


@st.composite
def item(draw: st.DrawFn) -> etree._Element:
    element = etree.Element(S + "Item")
    target = etree.SubElement(element, S + "Target")
    etree.SubElement(target, S + "LocURI").text = draw(text)
    if draw(st.booleans()):  # embedded TNDS, typed as in the XML view
        meta = etree.SubElement(element, S + "Meta")
        etree.SubElement(
            meta, M + "Type", nsmap=wbxml._default_nsmap(NS_METINF)
        ).text = "application/vnd.syncml.dmtnds+xml"
        data = etree.SubElement(element, S + "Data")
        tree = etree.SubElement(data, D + "MgmtTree", nsmap=wbxml._default_nsmap(NS_DMDDF12))
        tree.extend(draw(st.lists(tnds(), min_size=1, max_size=3)))
    else:
        meta = etree.SubElement(element, S + "Meta")
        for name in draw(st.lists(st.sampled_from(PAGE1), max_size=3)):
            etree.SubElement(meta, M + name, nsmap=wbxml._default_nsmap(NS_METINF)).text = draw(text)
        etree.SubElement(element, S + "Data").text = draw(text)
    return element


@st.composite
def command(draw: st.DrawFn, depth: int = 0) -> etree._Element:
    element = etree.Element(S + draw(st.sampled_from(PAGE0)))
    kind = draw(st.sampled_from(["leaf", "items", "nested"] if depth < 2 else ["leaf", "items"]))
    if kind == "leaf":
        element.text = draw(text)
    elif kind == "items":
        etree.SubElement(element, S + "CmdID").text = str(draw(st.integers(1, 999)))
        element.extend(draw(st.lists(item(), min_size=1, max_size=2)))
    else:
        element.extend(draw(st.lists(command(depth + 1), min_size=1, max_size=3)))
    return element


@st.composite
def message(draw: st.DrawFn) -> etree._Element:
    root = etree.Element(S + "SyncML", nsmap=wbxml._default_nsmap(NS_SYNCML12))
    body = etree.SubElement(root, S + "SyncBody")
    body.extend(draw(st.lists(command(), min_size=1, max_size=4)))
    etree.SubElement(body, S + "Final")
    return root


@pytest.mark.libwbxml
@needs_libwbxml
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=message(), table=st.booleans())
def test_generated_messages_agree_with_libwbxml(tree: etree._Element, table: bool, tmp_path: Path) -> None:
    note(etree.tostring(tree).decode())
    expected = canon(tree)
    # ours -> libwbxml
    assert canon(libwbxml_decode(encode(tree, use_string_table=table), tmp_path)) == expected
    # libwbxml -> ours
    source = tmp_path / "generated.xml"
    source.write_bytes(etree.tostring(tree, xml_declaration=True, encoding="UTF-8"))
    theirs = libwbxml_encode(source, tmp_path, string_table=table)
    assert isinstance(theirs, bytes), theirs
    assert canon(decode(theirs)) == expected
