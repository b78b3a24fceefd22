"""TNDS objects (digest 7.7): the printed spec examples, lenient decoding, strict encoding,
clear errors with DM status codes, placement under a Target, and ?list=TNDS answers."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from omadm.protocol.xml_codec import parse_element
from omadm.tree import tnds as tnds_module
from omadm.tree.acl import ACL, COMMANDS
from omadm.tree.errors import TreeError
from omadm.tree.tnds import (
    FORMATS,
    InvalidTNDS,
    TNDSDocument,
    TNDSNode,
    decode_tnds,
    decode_tnds_element,
    encode_tnds,
    from_records,
    placed,
)
from omadm.tree.uri import ROOT, TNDS_PROPERTIES, URI, parse_uri

INTEROP = Path(__file__).resolve().parents[2].parent / "shared" / "interop"
SPEC = INTEROP / "oma-dm-1.2.1-spec-examples"
LIBWBXML = INTEROP / "libwbxml-test-fixtures"
needs_interop = pytest.mark.skipif(
    not INTEROP.is_dir(), reason=f"interop material not found at {INTEROP} (a plain clone has none)"
)

# The E-Mail object printed in the TNDS spec (section 9.1.3), as every copy should decode it.
EMAIL = TNDSDocument(
    (
        TNDSNode("", "E-Mail", format="node", type="com.operatorX.dm/1.0/EMail"),
        TNDSNode("E-Mail", "POP3"),
        TNDSNode("E-Mail/POP3", "POPServer", format="chr", type="text/plain", value="mail.Operatorx.com"),
        TNDSNode("E-Mail/POP3", "UserID", format="chr", type="text/plain", value="UserName"),
        TNDSNode("E-Mail/POP3", "PWD", format="chr", type="text/plain", value="4571F7C34A9876B3"),
    )
)
# The Vendor/ISP/GWInfo/GWName example of TNDS section 9.2.3.1.5, nested and flat.
GATEWAY = TNDSDocument(
    (
        TNDSNode("", "Vendor"),
        TNDSNode("Vendor", "ISP"),
        TNDSNode("Vendor/ISP", "GWInfo"),
        TNDSNode("Vendor/ISP/GWInfo", "GWName", value="gw.yyy.se"),
    )
)


def _tnds(body: str, *, ns: bool = True, version: str | None = "1.2") -> str:
    xmlns = ' xmlns="syncml:dmddf1.2"' if ns else ""
    ver = f"<VerDTD>{version}</VerDTD>" if version is not None else ""
    return f"<MgmtTree{xmlns}>{ver}{body}</MgmtTree>"


# ---------------------------------------------------------------------------------------
# Public material


@needs_interop
@pytest.mark.interop
def test_libwbxml_ddf_fixture_decodes_to_the_email_object() -> None:
    # A public DOCTYPE (no internal subset) is accepted and never fetched.
    document = decode_tnds((LIBWBXML / "ddf-001.ddf").read_bytes())
    assert document == EMAIL
    assert [n.has_children for n in document.nodes] == [True, True, False, False, False]
    assert document.nodes[1].is_interior and document.nodes[1].format is None


@needs_interop
@pytest.mark.interop
def test_mgmt_tree_embedded_in_a_syncml_message_decodes() -> None:
    # The message itself is SyncML DS (it has Sync), so we take the element out of it.
    root = parse_element((LIBWBXML / "syncml_with_ddf-001.xml").read_bytes())
    trees = [el for el in root.iter() if isinstance(el.tag, str) and el.tag.endswith("MgmtTree")]
    assert len(trees) == 1
    assert decode_tnds_element(trees[0]) == EMAIL
    # The XML codec hands embedded XML on as text (with its namespace): that decodes too.
    assert decode_tnds(etree.tostring(trees[0], encoding="unicode")) == EMAIL


@needs_interop
@pytest.mark.interop
def test_spec_nested_and_flat_examples_describe_the_same_tree() -> None:
    # Printed with "<RTProperties>...</RTProperties>" and without VerDTD: both tolerated.
    nested = decode_tnds((SPEC / "081-92_tnds_syntax_tndsyu_fa-0.xml.txt").read_bytes())
    flat = decode_tnds((SPEC / "082-92_tnds_syntax_tndsyu_fa-1.xml.txt").read_bytes())
    assert nested == flat == GATEWAY


@needs_interop
@pytest.mark.interop
def test_spec_add_example_is_not_well_formed_but_its_mgmt_tree_is_the_email_object() -> None:
    # 080 is printed with curly quotes around attribute values and an unclosed <Add>.
    text = (SPEC / "080-91_tnd_serialization_definition_tndxu_li-0.xml.txt").read_text("utf-8")
    with pytest.raises(InvalidTNDS) as info:
        decode_tnds(text)
    assert info.value.status == 400 and "not acceptable XML" in str(info.value)
    start, end = text.index("<MgmtTree"), text.index("</MgmtTree>") + len("</MgmtTree>")
    tree = text[start:end]
    with pytest.raises(InvalidTNDS):
        decode_tnds(tree)  # the curly quotes alone break it
    assert decode_tnds(tree.replace("\u2019", "'")) == EMAIL
    # Its Target is "/OperatorX": where the nodes would go under "./OperatorX".
    paths = [p for p, _ in placed(EMAIL, parse_uri("./OperatorX"))]
    assert paths[0] == "./OperatorX/E-Mail" and paths[-1] == "./OperatorX/E-Mail/POP3/PWD"


@needs_interop
@pytest.mark.interop
def test_spec_bootstrap_example_is_refused_clearly() -> None:
    # 091 uses "<!--- ... --->" comments and elided "..." content: not XML.
    with pytest.raises(InvalidTNDS) as info:
        decode_tnds((SPEC / "091-bootstrapping_chu_shi_hua-0.xml.txt").read_bytes())
    assert info.value.status == 400 and "not acceptable XML" in str(info.value)


def test_spec_objects_round_trip_through_our_encoder() -> None:
    for document in (EMAIL, GATEWAY):
        assert decode_tnds(encode_tnds(document)) == document
        assert decode_tnds(encode_tnds(document, pretty=True)) == document


# ---------------------------------------------------------------------------------------
# Lenient decoding


def test_no_namespace_format_case_and_text_forms() -> None:
    document = decode_tnds(
        _tnds(
            "<Node><NodeName>A</NodeName><RTProperties><Format><Chr/></Format>"
            "<Type>text/plain</Type></RTProperties><Value>x</Value></Node>"
            "<Node><NodeName>B</NodeName><RTProperties><Format> INT </Format></RTProperties>"
            "<Value>5</Value></Node>",
            ns=False,
        )
    )
    a, b = document.nodes
    assert (a.format, a.type, b.format) == ("chr", "text/plain", "int")


def test_versions_1_1_and_missing_are_accepted_others_are_415() -> None:
    node = "<Node><NodeName>A</NodeName></Node>"
    assert decode_tnds(_tnds(node, version="1.1")).nodes[0].name == "A"
    assert decode_tnds(_tnds(node, version=None)).nodes[0].name == "A"
    with pytest.raises(InvalidTNDS) as info:
        decode_tnds(_tnds(node, version="2.0"))
    assert info.value.status == 415 and "VerDTD '2.0'" in str(info.value)


def test_values_are_kept_exactly_cdata_and_embedded_markup_included() -> None:
    document = decode_tnds(
        _tnds(
            "<Node><NodeName>S</NodeName><Value>  two  spaces\n</Value></Node>"
            "<Node><NodeName>C</NodeName><Value><![CDATA[<a>&</a>]]></Value></Node>"
            "<Node><NodeName>E</NodeName><Value/></Node>"
            "<Node><NodeName>X</NodeName><RTProperties><Format><xml/></Format></RTProperties>"
            '<Value><cfg a="1"/></Value></Node>'
        )
    )
    values = {n.name: n.value for n in document.nodes}
    assert values["S"] == "  two  spaces\n"
    assert values["C"] == "<a>&</a>"
    assert values["E"] == ""
    assert values["X"] is not None and values["X"].startswith("<cfg") and 'a="1"' in values["X"]


def test_dfproperties_give_format_and_type_unless_rtproperties_do() -> None:
    document = decode_tnds(
        _tnds(
            "<Node><NodeName>A</NodeName><DFProperties><AccessType><Get/></AccessType>"
            "<DFFormat><chr/></DFFormat><Occurrence><One/></Occurrence><Scope><Permanent/></Scope>"
            "<DFType><MIME>text/plain</MIME></DFType></DFProperties></Node>"
            "<Node><NodeName>B</NodeName><RTProperties><Format><int/></Format></RTProperties>"
            "<DFProperties><DFFormat><chr/></DFFormat><DFType><MIME>text/x</MIME></DFType></DFProperties></Node>"
        )
    )
    a, b = document.nodes
    assert (a.format, a.type) == ("chr", "text/plain")
    assert (b.format, b.type) == ("int", "text/x")


def test_all_rt_properties_are_read_and_unknown_ones_ignored() -> None:
    document = decode_tnds(
        _tnds(
            "<Node><NodeName>L</NodeName><RTProperties>"
            "<ACL>get=*&amp;Add=s1</ACL><Format><b64/></Format><Name>L</Name><Size> 3 </Size>"
            "<Title>A title</Title><TStamp>20010711T163817Z</TStamp><Type><MIME>application/x</MIME></Type>"
            "<VerNo>7</VerNo><Vendor>ignored</Vendor></RTProperties><Value>YWJj</Value></Node>"
        )
    )
    (node,) = document.nodes
    assert node == TNDSNode(
        "",
        "L",
        format="b64",
        type="application/x",
        value="YWJj",
        acl="Add=s1&Get=*",  # canonical ACL text
        title="A title",
        size="3",
        tstamp="20010711T163817Z",
        verno="7",
        name_property="L",
    )


def test_empty_node_name_is_the_target_itself() -> None:
    # Digest 7.7: "NodeName (may be empty -> name from command Target's last segment)".
    document = decode_tnds(
        _tnds(
            "<Node><NodeName/><RTProperties><Format><node/></Format>"
            "<Type><DDFName>urn:oma:mo:oma-dm-dmacc:1.0</DDFName></Type></RTProperties>"
            "<Node><NodeName>ServerID</NodeName><Value>srv</Value></Node></Node>"
        )
    )
    target, child = document.nodes
    assert target.name == "" and target.relpath == "" and target.segments == ()
    assert child.path == "" and child.relpath == "ServerID"
    assert list(placed(document, parse_uri("./DMAcc/acc1"))) == [
        ("./DMAcc/acc1", target),
        ("./DMAcc/acc1/ServerID", child),
    ]


def test_nested_and_flat_nodes_mix_and_are_ordered_parents_first() -> None:
    document = decode_tnds(
        _tnds(
            "<Node><NodeName>C</NodeName><Path>./A/B</Path><Value>c</Value></Node>"  # before its parent
            "<Node><NodeName>A</NodeName><Node><NodeName>B</NodeName></Node></Node>"
            "<Node><NodeName>Z</NodeName><Path>X/Y</Path></Node>"  # parent not in the object
        )
    )
    assert [n.relpath for n in document.nodes] == ["A", "A/B", "A/B/C", "X/Y/Z"]
    assert document.find("A/B") is not None and document.find("nope") is None
    assert [n.name for n in document.children_of("A/B")] == ["C"]


def test_escaped_paths_and_names_with_reserved_characters() -> None:
    document = decode_tnds(
        _tnds(
            "<Node><NodeName>My Apps</NodeName></Node>"
            "<Node><NodeName>a/b%</NodeName><Path>My%20Apps</Path></Node>".replace("a/b%", "50%")
        )
    )
    _, child = document.nodes
    assert child.path == "My%20Apps" and child.relpath == "My%20Apps/50%25"
    assert child.segments == ("My Apps", "50%")
    assert [p for p, _ in placed(document, ROOT)] == ["./My%20Apps", "./My%20Apps/50%25"]


def test_text_input_with_a_declaration_and_bytes_with_a_bom() -> None:
    xml = _tnds("<Node><NodeName>é</NodeName></Node>")
    assert decode_tnds('<?xml version="1.0" encoding="ISO-8859-1"?>\n' + xml).nodes[0].name == "é"
    assert decode_tnds(b"\xef\xbb\xbf" + xml.encode()).nodes[0].name == "é"
    assert decode_tnds(bytearray(xml.encode())).nodes[0].name == "é"


# ---------------------------------------------------------------------------------------
# Errors: clear messages with the right status

N = "<Node><NodeName>{}</NodeName>{}</Node>"
ERRORS = [
    ("<MgmtTree>", 400, "not acceptable XML"),
    ("", 400, "not acceptable XML"),
    ("<SyncML/>", 400, "root element is <MgmtTree>, not <SyncML>"),
    (_tnds("<Node><Value>x</Value></Node>"), 400, "top-level <Node> #1 has no <NodeName>"),
    (_tnds(N.format("A", "<Node><Value>x</Value></Node>")), 400, "a <Node> under 'A' has no <NodeName>"),
    (_tnds(N.format("A", N.format("", ""))), 400, "nested node under 'A' has an empty NodeName"),
    (_tnds(N.format("", "<Path>A</Path>")), 400, "empty NodeName"),
    (
        _tnds(N.format("A", "<RTProperties><Format><node/></Format></RTProperties><Value>x</Value>")),
        400,
        "node 'A' has Format node (interior) but carries a Value",
    ),
    (_tnds(N.format("A", "<Value>x</Value>" + N.format("B", ""))), 400, "both a <Value> and child"),
    (
        _tnds(N.format("A", "<RTProperties><Format><chr/></Format></RTProperties>" + N.format("B", ""))),
        400,
        "node 'A' has Format chr (a leaf) but child nodes",
    ),
    (
        _tnds(N.format("A", "<Value>x</Value>") + N.format("B", "<Path>A</Path>")),
        400,
        "node 'A' has both a Value and child nodes",
    ),
    (_tnds(N.format("A", "<RTProperties><Format><foo/></Format></RTProperties>")), 415, "Format 'foo'"),
    (_tnds(N.format("A", "<RTProperties><Format/></RTProperties>")), 400, "node 'A': empty <Format>"),
    (
        _tnds(N.format("A", "<RTProperties><Format><chr/><int/></Format></RTProperties>")),
        400,
        "more than one format",
    ),
    (_tnds(N.format("A", "<NodeName>B</NodeName>")), 400, "node 'A' has more than one <NodeName>"),
    (_tnds(N.format("A", "<Value>1</Value><Value>2</Value>")), 400, "node 'A' has more than one <Value>"),
    (
        _tnds(N.format("A", "<RTProperties><ACL>Get=*</ACL><ACL>Get=*</ACL></RTProperties>")),
        400,
        "more than one <ACL>",
    ),
    (_tnds(N.format("A", "<Foo/>")), 400, "node 'A' holds the unknown element <Foo>"),
    (_tnds("<Foo/>"), 400, "unknown element <Foo> in <MgmtTree>"),
    (_tnds("<Man>a</Man><Man>b</Man>"), 400, "more than one <Man>"),
    (_tnds(N.format("A", "") + N.format("A", "")), 400, "node 'A' is defined twice"),
    (_tnds(N.format("A", "<RTProperties><ACL>Get=</ACL></RTProperties>")), 400, "grants Get to no server"),
    (_tnds(N.format("a/b", "")), 400, "contains '/'"),
    (_tnds(N.format("..", "")), 400, "'..' is not a node name"),
    (_tnds(N.format("A", "<Path>../x</Path>")), 400, "bad <Path>"),
    (_tnds(N.format("A", N.format("B", "<Path>Q</Path>"))), 400, "<Path> 'Q' disagrees"),
    (_tnds(N.format("<b>A</b>", "")), 400, "<NodeName> must hold text, found <b>"),
    (
        _tnds(
            N.format("A", "<RTProperties><Type><MIME>a/b</MIME><DDFName>x</DDFName></Type></RTProperties>")
        ),
        400,
        "more than one of MIME/DDFName",
    ),
    (
        _tnds(N.format("A", "<RTProperties><Type><Foo>x</Foo></Type></RTProperties>")),
        400,
        "expected <MIME> or <DDFName>",
    ),
    (
        '<!DOCTYPE MgmtTree [<!ENTITY x "boom">]>' + _tnds(N.format("&x;", "")),
        400,
        "not acceptable XML",
    ),
]


@pytest.mark.parametrize(("xml", "status", "message"), ERRORS, ids=[e[2] for e in ERRORS])
def test_bad_objects_are_refused_naming_the_node_and_problem(xml: str, status: int, message: str) -> None:
    with pytest.raises(InvalidTNDS) as info:
        decode_tnds(xml)
    assert info.value.status == status
    assert message in str(info.value)
    assert isinstance(info.value, TreeError)


def test_caps_on_size_count_and_depth() -> None:
    deep = _tnds("".join(f"<Node><NodeName>n{i}</NodeName>" for i in range(5)) + "</Node>" * 5)
    with pytest.raises(InvalidTNDS) as info:
        decode_tnds(deep, max_size=50)
    assert info.value.status == 413
    with pytest.raises(InvalidTNDS) as info:
        decode_tnds(deep, max_nodes=4)
    assert info.value.status == 413 and "more than 4 nodes" in str(info.value)
    with pytest.raises(InvalidTNDS) as info:
        decode_tnds(deep, max_depth=4)
    assert info.value.status == 400 and "deeper than 4" in str(info.value)
    assert len(decode_tnds(deep, max_depth=5, max_nodes=5).nodes) == 5
    with pytest.raises(TypeError):
        decode_tnds(42)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# Encoding


def test_encoding_is_in_dtd_order_with_namespace_and_no_declaration() -> None:
    document = TNDSDocument(
        (
            TNDSNode(
                "",
                "L",
                format="int",
                type="text/plain",
                value="5",
                acl="Get=*",
                title="T",
                size="1",
                tstamp="20010711T163817Z",
                verno="2",
                name_property="L",
            ),
        ),
        man="Acme",
        mod="X1",
    )
    assert encode_tnds(document) == (
        b'<MgmtTree xmlns="syncml:dmddf1.2"><VerDTD>1.2</VerDTD><Man>Acme</Man><Mod>X1</Mod>'
        b"<Node><NodeName>L</NodeName><RTProperties><ACL>Get=*</ACL><Format><int/></Format>"
        b"<Name>L</Name><Size>1</Size><Title>T</Title><TStamp>20010711T163817Z</TStamp>"
        b"<Type><MIME>text/plain</MIME></Type><VerNo>2</VerNo></RTProperties><Value>5</Value></Node>"
        b"</MgmtTree>"
    )


@pytest.mark.parametrize(
    ("node", "children", "expected"),
    [
        (TNDSNode("", "A", format="chr"), False, b"<Type><MIME>text/plain</MIME></Type>"),
        (TNDSNode("", "A", format="node"), False, b"<Type><DDFName></DDFName></Type>"),
        (TNDSNode("", "A", acl="Get=*"), True, b"<Type><DDFName></DDFName></Type>"),
        (TNDSNode("", "A", type="com.x/1.0/Obj"), False, b"<Type><DDFName>com.x/1.0/Obj</DDFName></Type>"),
        (
            TNDSNode("", "A", type="urn:oma:mo:x:1.0"),
            False,
            b"<Type><DDFName>urn:oma:mo:x:1.0</DDFName></Type>",
        ),
        (TNDSNode("", "A", type="text/plain"), False, b"<Type><MIME>text/plain</MIME></Type>"),
        (TNDSNode("", "A", format="chr", type="x"), False, b"<Type><MIME>x</MIME></Type>"),
    ],
)
def test_every_rtproperties_has_a_type(node: TNDSNode, children: bool, expected: bytes) -> None:
    nodes = (node, TNDSNode("A", "child")) if children else (node,)
    assert expected in encode_tnds(TNDSDocument(nodes))


def test_nodes_without_properties_have_no_rtproperties_and_orphans_get_a_path() -> None:
    data = encode_tnds(TNDSDocument((TNDSNode("X/Y", "Z", value="v"),)))
    assert b"RTProperties" not in data
    assert b"<NodeName>Z</NodeName><Path>X/Y</Path><Value>v</Value>" in data


def test_text_xml_cannot_carry_is_refused_with_500() -> None:
    with pytest.raises(InvalidTNDS) as info:
        encode_tnds(TNDSDocument((TNDSNode("", "A", value="bell\x07"),)))
    assert info.value.status == 500


# ---------------------------------------------------------------------------------------
# The model


def test_node_model_normalizes_and_validates() -> None:
    node = TNDSNode("./A/%42", "c d", format=" CHR ", acl="get=b+a")
    assert (node.path, node.format, node.acl) == ("A/B", "chr", "Get=a+b")
    assert node.relpath == "A/B/c%20d" and node.segments == ("A", "B", "c d")
    assert node.parent_relpath == "A/B"
    with pytest.raises(InvalidTNDS) as info:
        TNDSNode("", "A", format="text")
    assert info.value.status == 415
    with pytest.raises(InvalidTNDS, match="bad Path"):
        TNDSNode("A//B", "C")
    with pytest.raises(InvalidTNDS, match="empty NodeName"):
        TNDSNode("A", "")


def test_document_derives_has_children() -> None:
    document = TNDSDocument((TNDSNode("A", "B", has_children=True), TNDSNode("", "A")))
    assert [(n.relpath, n.has_children) for n in document.nodes] == [("A", True), ("A/B", False)]


# ---------------------------------------------------------------------------------------
# Round trip (hypothesis)

_text_chars = st.characters(blacklist_categories=("Cs", "Cc"), whitelist_characters="\t\n\r")
_trimmed = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12).map(str.strip)
_names = (
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=8)
    .map(str.strip)
    .filter(lambda s: s not in ("", ".", "..") and "/" not in s)
)
_acls = st.dictionaries(
    st.sampled_from(COMMANDS),
    st.frozensets(st.sampled_from(["*", "s1", "srv.example"]), min_size=1),
    max_size=3,
).map(lambda d: ACL.from_entries(d).format())
_leaf_formats = st.sampled_from(sorted(FORMATS - {"node"}))


@st.composite
def documents(draw: st.DrawFn) -> TNDSDocument:
    nodes: list[TNDSNode] = []
    parents: list[str | None] = [None]  # None: top level, under the Target
    seen: set[str] = set()
    if draw(st.booleans()):
        nodes.append(TNDSNode("", "", format="node", type=draw(_trimmed), acl=draw(st.none() | _acls)))
        parents = [""]
        seen.add("")
    for _ in range(draw(st.integers(0, 10))):
        parent = draw(st.sampled_from(parents))
        path = parent if parent is not None else draw(st.sampled_from(["", "", "Ext", "X/Y%20Z"]))
        name = draw(_names)
        probe = TNDSNode(path, name)
        if probe.relpath in seen:
            continue
        interior = draw(st.booleans())
        props = {
            "acl": draw(st.none() | _acls),
            "title": draw(st.none() | _trimmed),
            "size": draw(st.none() | st.integers(0, 2**32 - 1).map(str)),
            "tstamp": draw(st.none() | st.just("20010711T163817Z")),
            "verno": draw(st.none() | st.integers(0, 0xFFFF).map(str)),
            "name_property": draw(st.none() | st.just(name)),
        }
        fmt = draw(st.none() | (st.just("node") if interior else _leaf_formats))
        # Exact round trip needs a Type whenever RTProperties is written (the encoder
        # fills in a default otherwise).
        has_rt = fmt is not None or any(v is not None for v in props.values())
        typ = draw(_trimmed if has_rt else st.none() | _trimmed)
        value = None if interior else draw(st.none() | st.text(_text_chars, max_size=20))
        node = TNDSNode(path, name, format=fmt, type=typ, value=value, **props)  # type: ignore[arg-type]
        nodes.append(node)
        seen.add(node.relpath)
        if interior:
            parents.append(node.relpath)
    return TNDSDocument(tuple(nodes), man=draw(st.none() | _trimmed), mod=draw(st.none() | _trimmed))


@settings(max_examples=150, deadline=None)
@given(documents(), st.booleans())
def test_decode_of_encode_is_identity(document: TNDSDocument, pretty: bool) -> None:
    data = encode_tnds(document, pretty=pretty)
    assert decode_tnds(data) == document
    assert decode_tnds(data.decode("utf-8")) == document
    # Parents always come before their children.
    index = {n.relpath: i for i, n in enumerate(document.nodes)}
    for i, node in enumerate(document.nodes):
        parent = node.parent_relpath
        if parent is not None and parent in index:
            assert index[parent] < i


# ---------------------------------------------------------------------------------------
# ?list=TNDS from stored nodes


@dataclass(frozen=True)
class Record:
    path: str
    format: str
    type: str | None = None
    value: bytes | None = None
    acl: str = ""
    title: str | None = None
    tstamp: str | None = None
    verno: int = 0


RECORDS = [
    Record(".", "node", acl="Add=*&Get=*"),
    Record("./A", "node", type="urn:oma:mo:test:1.0", acl="Get=s1"),
    Record("./A/Name", "chr", value=b"hello", verno=3, tstamp="20240101T000000Z"),
    Record("./A/Blob", "bin", type="application/octet-stream", value=b"\x00\xffxyz"),
    Record("./A/Bell", "chr", value=b"ding\x07"),
    Record("./A/Ext", "node"),
    Record("./A/Ext/My Key", "int", value=b"42", title="answer"),
    Record("./A/Null", "null"),
]


def test_from_records_places_the_start_node_under_its_own_name() -> None:
    document = from_records("./A", RECORDS[1:])
    assert [n.relpath for n in document.nodes] == [
        "A",
        "A/Name",
        "A/Blob",
        "A/Bell",
        "A/Ext",
        "A/Ext/My%20Key",
        "A/Null",
    ]
    a, name, blob, bell, ext, key, null = document.nodes
    assert (a.format, a.type, a.acl, a.value, a.size) == ("node", "urn:oma:mo:test:1.0", "Get=s1", None, None)
    assert (name.format, name.type, name.value, name.size, name.verno) == (
        "chr",
        "text/plain",
        "hello",
        "5",
        "3",
    )
    assert name.tstamp == "20240101T000000Z" and name.name_property == "Name" and name.acl == ""
    # Digest 7.3: over XML binary values travel as b64; Size is the decoded length.
    assert (blob.format, blob.value, blob.size) == ("b64", base64.b64encode(b"\x00\xffxyz").decode(), "5")
    assert (bell.format, bell.value) == ("b64", base64.b64encode(b"ding\x07").decode())
    assert (ext.format, ext.type) == ("node", "")
    assert (key.value, key.title, key.format) == ("42", "answer", "int")
    assert (null.format, null.value, null.size) == ("null", None, None)
    # The object adds back under the start node's parent.
    assert [p for p, _ in placed(document, ROOT)] == [r.path.replace(" ", "%20") for r in RECORDS[1:]]
    assert decode_tnds(encode_tnds(document)) == document


def test_from_records_for_the_root_lists_its_children_at_top_level() -> None:
    document = from_records(".", RECORDS)
    assert document.nodes[0].relpath == "A" and all(n.relpath for n in document.nodes)
    assert len(document.nodes) == len(RECORDS) - 1


def test_from_records_honours_the_selection() -> None:
    only_values = from_records("./A", RECORDS[1:], include=frozenset({"Value"}))
    name = only_values.nodes[1]
    assert (name.value, name.format, name.type, name.acl) == ("hello", None, None, None)
    assert b"RTProperties" not in encode_tnds(only_values)

    only_acl = from_records("./A", RECORDS[1:], include=frozenset({"ACL"}))
    # A Type goes with every RTProperties, even when not selected.
    assert [n.type for n in only_acl.nodes[:2]] == ["urn:oma:mo:test:1.0", "text/plain"]
    assert all(n.value is None for n in only_acl.nodes)

    no_values = from_records("./A", RECORDS[1:], exclude=frozenset({"Value"}))
    assert all(n.value is None for n in no_values.nodes)
    assert no_values.nodes[2].format == "bin"  # without a Value, nothing travels as b64

    everything = from_records("./A", RECORDS[1:], exclude=frozenset())
    assert everything == from_records("./A", RECORDS[1:], include=TNDS_PROPERTIES)
    with pytest.raises(ValueError):
        from_records("./A", RECORDS, include=frozenset(), exclude=frozenset())


def test_from_records_value_of_can_hide_values() -> None:
    document = from_records(
        "./A", RECORDS[1:], value_of=lambda r: None if r.path.endswith("Name") else r.value
    )
    assert document.nodes[1].value is None and document.nodes[1].size is None
    assert document.nodes[2].value is not None


def test_from_records_ignores_records_outside_the_start_node() -> None:
    document = from_records("./A/Ext", RECORDS)
    assert [n.relpath for n in document.nodes] == ["Ext", "Ext/My%20Key"]


def test_placed_under_a_deep_target() -> None:
    target = URI(("Vendor", "Acme Co"))
    assert [p for p, _ in placed(GATEWAY, target)][-1] == "./Vendor/Acme%20Co/Vendor/ISP/GWInfo/GWName"


def test_module_exports() -> None:
    for name in tnds_module.__all__:
        assert hasattr(tnds_module, name)
