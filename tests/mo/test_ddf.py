"""DDF 1.2 documents: what the writer emits, and what the reader makes of ours and of vendors'."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from lxml import etree

from omadm.mo import DEVDETAIL, DEVINFO, DMACC, Access, Format, MODef, NodeDef, Occurrence, Scope, all_mos
from omadm.mo.ddf import DDF_NS, DDFError, parse_ddf, parse_ddf_all, to_ddf
from omadm.mo.model import validate
from omadm.protocol import summary
from omadm.protocol.codec import Encoding

# The content models of the DDF 1.2 DTD (OMA-TS-DM_TND-V1_2 section 8.5 and the DDF element
# descriptions), written out here so libxml2 can check element order. The DTD's Node allows
# DFProperties to be absent (TNDS reuses it); a DDF node always has one, so it is required here.
DDF_DTD = """
<!ELEMENT MgmtTree (VerDTD, Man?, Mod?, Node+)>
<!ATTLIST MgmtTree xmlns CDATA #FIXED "syncml:dmddf1.2">
<!ELEMENT VerDTD (#PCDATA)>
<!ELEMENT Man (#PCDATA)>
<!ELEMENT Mod (#PCDATA)>
<!ELEMENT Node (NodeName, Path?, RTProperties?, DFProperties, (Node* | Value?))>
<!ELEMENT NodeName (#PCDATA)>
<!ELEMENT Path (#PCDATA)>
<!ELEMENT Value (#PCDATA)>
<!ELEMENT RTProperties (ACL?, Format?, Name?, Size?, Title?, TStamp?, Type, VerNo?)>
<!ELEMENT ACL (#PCDATA)>
<!ELEMENT Format (b64 | bin | bool | chr | int | node | null | xml | date | time | float)>
<!ELEMENT Name (#PCDATA)>
<!ELEMENT Size (#PCDATA)>
<!ELEMENT Title (#PCDATA)>
<!ELEMENT TStamp (#PCDATA)>
<!ELEMENT Type (MIME | DDFName)>
<!ELEMENT VerNo (#PCDATA)>
<!ELEMENT DFProperties (AccessType, DefaultValue?, Description?, DFFormat, Occurrence?, Scope?,
                        DFTitle?, DFType, CaseSense?)>
<!ELEMENT AccessType (Add?, Copy?, Delete?, Exec?, Get?, Replace?)>
<!ELEMENT Add EMPTY> <!ELEMENT Copy EMPTY> <!ELEMENT Delete EMPTY>
<!ELEMENT Exec EMPTY> <!ELEMENT Get EMPTY> <!ELEMENT Replace EMPTY>
<!ELEMENT DefaultValue (#PCDATA)>
<!ELEMENT Description (#PCDATA)>
<!ELEMENT DFFormat (b64 | bin | bool | chr | int | node | null | xml | date | time | float)>
<!ELEMENT b64 EMPTY> <!ELEMENT bin EMPTY> <!ELEMENT bool EMPTY> <!ELEMENT chr EMPTY>
<!ELEMENT int EMPTY> <!ELEMENT node EMPTY> <!ELEMENT null EMPTY> <!ELEMENT xml EMPTY>
<!ELEMENT date EMPTY> <!ELEMENT time EMPTY> <!ELEMENT float EMPTY>
<!ELEMENT Occurrence (One | ZeroOrOne | ZeroOrMore | OneOrMore | ZeroOrN | OneOrN)>
<!ELEMENT One EMPTY> <!ELEMENT ZeroOrOne EMPTY> <!ELEMENT ZeroOrMore EMPTY> <!ELEMENT OneOrMore EMPTY>
<!ELEMENT ZeroOrN (#PCDATA)> <!ELEMENT OneOrN (#PCDATA)>
<!ELEMENT Scope (Permanent | Dynamic)>
<!ELEMENT Permanent EMPTY> <!ELEMENT Dynamic EMPTY>
<!ELEMENT DFTitle (#PCDATA)>
<!ELEMENT DFType (MIME | DDFName)>
<!ELEMENT MIME (#PCDATA)>
<!ELEMENT DDFName (#PCDATA)>
<!ELEMENT CaseSense (CS | CIS)>
<!ELEMENT CS EMPTY> <!ELEMENT CIS EMPTY>
"""

INTEROP = Path(__file__).resolve().parents[2].parent / "shared" / "interop"
NS = {"d": DDF_NS}
MOS = pytest.mark.parametrize("mo", all_mos(), ids=lambda mo: mo.name)


def load(data: bytes) -> etree._Element:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    return etree.fromstring(data, parser)


@MOS
def test_the_document_follows_the_ddf_dtd(mo: MODef) -> None:
    dtd = etree.DTD(io.StringIO(DDF_DTD))
    root = load(mo.to_ddf())
    assert dtd.validate(root), str(dtd.error_log)


@MOS
def test_the_prologue(mo: MODef) -> None:
    data = mo.to_ddf()
    lines = data.decode("utf-8").splitlines()
    assert lines[0] == '<?xml version="1.0" encoding="UTF-8"?>'
    assert lines[1] == (
        '<!DOCTYPE MgmtTree PUBLIC "-//OMA//DTD-DM-DDF 1.2//EN" '
        '"http://www.openmobilealliance.org/tech/DTD/dm_ddf-v1_2.dtd">'
    )
    assert lines[2] == '<MgmtTree xmlns="syncml:dmddf1.2">'
    assert lines[3] == "  <VerDTD>1.2</VerDTD>"  # pretty printed
    assert data.endswith(b"</MgmtTree>\n")
    tree = load(data).getroottree()
    assert tree.docinfo.public_id == "-//OMA//DTD-DM-DDF 1.2//EN"
    assert tree.docinfo.encoding == "UTF-8"


def test_man_and_mod_follow_verdtd() -> None:
    root = load(DEVINFO.to_ddf(man="ACME", mod="Rocket 1"))
    assert [etree.QName(c).localname for c in root][:4] == ["VerDTD", "Man", "Mod", "Node"]
    assert root.findtext("d:Man", namespaces=NS) == "ACME"
    assert root.findtext("d:Mod", namespaces=NS) == "Rocket 1"
    assert to_ddf(DEVINFO) == DEVINFO.to_ddf()


def _find(parent: etree._Element, name: str) -> etree._Element:
    """The Node child of ``parent`` describing ``name`` (an empty NodeName for a placeholder)."""
    wanted = "" if name.startswith("<") else name
    matches = [
        n for n in parent.findall("d:Node", NS) if (n.findtext("d:NodeName", namespaces=NS) or "") == wanted
    ]
    assert len(matches) == 1, (name, len(matches))
    return matches[0]


@MOS
def test_every_declared_node_is_in_the_document_with_its_properties(mo: MODef) -> None:
    doc = load(mo.to_ddf())
    top = _find(doc, mo.root.name)
    for path, node in mo.walk():
        el = top
        for segment in path.split("/") if path else []:
            el = _find(el, segment)
        props = el.find("d:DFProperties", NS)
        assert props is not None
        access = props.find("d:AccessType", NS)
        assert access is not None
        assert tuple(etree.QName(c).localname for c in access) == node.access.ddf_tags
        fmt = props.find("d:DFFormat", NS)
        assert fmt is not None and [etree.QName(c).localname for c in fmt] == [node.format.value]
        assert props.find(f"d:Occurrence/d:{node.occurrence.ddf_tag}", NS) is not None
        assert props.find(f"d:Scope/d:{node.scope.value}", NS) is not None
        assert (props.findtext("d:Description", namespaces=NS) or "").startswith(node.description)
        if node.is_leaf:
            assert props.findtext("d:DFType/d:MIME", namespaces=NS) == node.mime
        else:
            assert (props.findtext("d:DFType/d:DDFName", namespaces=NS) or None) == node.ddf_name
        if node.is_placeholder:
            assert el.findtext("d:NodeName", namespaces=NS) == ""
            assert props.findtext("d:DFTitle", namespaces=NS) == node.title
        # nothing undeclared: as many Node children as declared children
        assert len(el.findall("d:Node", NS)) == len(node.children)


@MOS
def test_secret_nodes_lack_get_and_copy(mo: MODef) -> None:
    doc = load(mo.to_ddf())
    for path, node in mo.walk():
        if not node.secret:
            continue
        el = _find(doc, mo.root.name)
        for segment in path.split("/"):
            el = _find(el, segment)
        tags = [etree.QName(c).localname for c in el.iterfind("d:DFProperties/d:AccessType/*", NS)]
        assert "Get" not in tags and "Copy" not in tags


def test_dmacc_secrets_are_the_two_credentials() -> None:
    secrets = [path for path, node in DMACC.walk() if node.secret]
    assert secrets == ["<X>/AppAuth/<X>/AAuthSecret", "<X>/AppAuth/<X>/AAuthData"]


def test_the_default_acl_travels_as_the_roots_run_time_acl() -> None:
    top = _find(load(DEVINFO.to_ddf()), "DevInfo")
    assert top.findtext("d:RTProperties/d:ACL", namespaces=NS) == "Get=*"
    assert top.findtext("d:RTProperties/d:Type/d:DDFName", namespaces=NS) == DEVINFO.urn
    assert top.find("d:Path", NS) is None  # mounted at ./DevInfo: nothing to say


def test_allowed_values_close_the_description() -> None:
    top = _find(load(DMACC.to_ddf()), "DMAcc")
    addr_type = _find(_find(_find(_find(top, "<X>"), "AppAddr"), "<X>"), "AddrType")
    text = addr_type.findtext("d:DFProperties/d:Description", namespaces=NS)
    assert text == "Type of Addr; URI when no value is given. Allowed values: `URI`, `IPv4`, `IPv6`."
    assert addr_type.findtext("d:DFProperties/d:DefaultValue", namespaces=NS) == "URI"


# ---------------------------------------------------------------------------------------
# Reading back


@MOS
def test_round_trip(mo: MODef) -> None:
    assert parse_ddf(mo.to_ddf()) == mo


def test_dmacc_round_trip_is_exact() -> None:
    back = parse_ddf(DMACC.to_ddf(man="ACME", mod="X1"))
    assert back == DMACC
    assert back.default_acl == "Get=*"
    validate(back)
    assert back.to_ddf() == DMACC.to_ddf()


def test_round_trip_of_every_feature() -> None:
    urn = "com.example/1.0/Everything"
    root = NodeDef(
        "<X>",
        Format.NODE,
        Access.ALL & ~Access.EXEC,
        Occurrence.zero_or_n(3),
        Scope.DYNAMIC,
        ddf_name=urn,
        title="Thing",
        description="Everything the model can say.",
        children=(
            NodeDef("I", Format.INT, Access.GET | Access.REPLACE, default="-5", case_sensitive=False),
            NodeDef("V", Format.CHR, Access.GET, Occurrence.ZERO_OR_ONE, values=("a", "b c")),
            NodeDef("W", Format.CHR, Access.GET, values=("only",), description=""),
            NodeDef("E", Format.NULL, Access.EXEC, title="Run", description="Runs."),
            NodeDef("X", Format.XML, Access.GET, mime="application/xml"),
            NodeDef(
                "Sub",
                Format.NODE,
                Access.GET,
                ddf_name="urn:oma:mo:example-sub:1.0",
                children=(
                    NodeDef(
                        "<X>",
                        Format.NODE,
                        Access.GET,
                        Occurrence.one_or_n(7),
                        title="y",
                        children=(NodeDef("F", Format.FLOAT, Access.GET, default="1.5E3"),),
                    ),
                ),
            ),
        ),
    )
    mo = MODef("Everything", urn, root, "./Vendor/Everything", default_acl="Get=*&Replace=srv")
    validate(mo)
    back = parse_ddf(mo.to_ddf())
    assert back == mo
    assert back.root.children[3].secret  # no Get: read back as a secret, as declared


def test_placeholders_read_back_as_x() -> None:
    # The DDF has an empty NodeName: the letter of a placeholder is a label of the declaration.
    urn = "urn:oma:mo:example:1.0"
    y = NodeDef("<Y>", Format.CHR, Access.GET, Occurrence.ZERO_OR_MORE, Scope.DYNAMIC, title="y")
    mo = MODef("Ex", urn, NodeDef("Ex", Format.NODE, Access.GET, ddf_name=urn, children=(y,)), "./Ex")
    back = parse_ddf(mo.to_ddf())
    assert back.root.children[0].name == "<X>"
    assert back.resolve("anything") == back.root.children[0]


def test_a_placeholder_root_names_its_mount_point() -> None:
    urn = "urn:oma:mo:example:1.0"
    root = NodeDef(
        "<X>", Format.NODE, Access.GET, Occurrence.ZERO_OR_ONE, Scope.DYNAMIC, ddf_name=urn, title="R"
    )
    mo = MODef("SCOMO", urn, root, "./SCOMO")
    top = _find(load(mo.to_ddf()), "<X>")
    assert top.findtext("d:Path", namespaces=NS) == "."
    assert top.findtext("d:RTProperties/d:Name", namespaces=NS) == "SCOMO"
    assert top.find("d:RTProperties/d:ACL", NS) is None
    assert parse_ddf(mo.to_ddf()) == mo


# A vendor-style DDF: no namespace, Windows habits (MIME on interior nodes, Path mount point,
# optional elements omitted), a Value instead of DefaultValue, and the flat Path form.
VENDOR = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE MgmtTree PUBLIC " -//OMA//DTD-DM-DDF 1.2//EN" "http://www.openmobilealliance.org/tech/DTD/DM_DDF-V1_2.dtd">
<MgmtTree>
  <VerDTD>1.2</VerDTD>
  <Node>
    <NodeName>Widget</NodeName>
    <Path>./Vendor/ACME</Path>
    <DFProperties>
      <AccessType><Get /></AccessType>
      <DFFormat><node /></DFFormat>
      <DFType><MIME>com.acme/1.0/Widget</MIME></DFType>
    </DFProperties>
    <Node>
      <NodeName>Level</NodeName>
      <DFProperties>
        <AccessType><Get /><Replace /></AccessType>
        <DefaultValue>3</DefaultValue>
        <Description>How much.</Description>
        <DFFormat><int /></DFFormat>
        <Occurrence><ZeroOrOne /></Occurrence>
        <DFType><MIME>text/plain</MIME></DFType>
      </DFProperties>
    </Node>
    <Node>
      <NodeName>Parts</NodeName>
      <DFProperties>
        <AccessType><Get /></AccessType>
        <DFFormat><node /></DFFormat>
        <DFType><DDFName></DDFName></DFType>
      </DFProperties>
    </Node>
  </Node>
  <Node>
    <NodeName />
    <Path>./Vendor/ACME/Widget/Parts</Path>
    <DFProperties>
      <AccessType><Add /><Delete /><Get /></AccessType>
      <DFFormat><chr /></DFFormat>
      <Occurrence><ZeroOrMore /></Occurrence>
      <Scope><Dynamic /></Scope>
      <DFTitle>Part</DFTitle>
      <DFType><MIME>text/plain</MIME></DFType>
      <CaseSense><CIS /></CaseSense>
    </DFProperties>
    <Value>spare</Value>
  </Node>
</MgmtTree>
"""


def test_a_vendor_ddf_is_read_leniently() -> None:
    mo = parse_ddf(VENDOR)
    assert mo.name == "Widget"
    assert mo.urn == "com.acme/1.0/Widget"
    assert mo.default_path == "./Vendor/ACME/Widget"
    assert mo.default_acl is None
    assert mo.root.occurrence == Occurrence.ONE and mo.root.scope is Scope.PERMANENT
    level = mo.resolve("Level")
    assert level is not None and level.default == "3" and level.format is Format.INT
    part = mo.resolve("Parts/anything")
    assert part is not None and part.is_placeholder and part.default == "spare"
    assert not part.case_sensitive and part.title == "Part"
    assert part.access == Access.ADD | Access.DELETE | Access.GET
    validate(mo)
    assert parse_ddf(mo.to_ddf()) == mo


def test_choosing_among_several_mos() -> None:
    both = DEVINFO.to_ddf().replace(b"</MgmtTree>\n", b"") + b"".join(
        DEVDETAIL.to_ddf().split(b"<VerDTD>1.2</VerDTD>\n", 1)[1:]
    )
    assert [m.name for m in parse_ddf_all(both)] == ["DevInfo", "DevDetail"]
    assert parse_ddf(both, name="devdetail") == DEVDETAIL
    assert parse_ddf(both, name=DEVINFO.urn) == DEVINFO
    with pytest.raises(DDFError, match=r"describes 2 management objects \(DevInfo, DevDetail\); pick one"):
        parse_ddf(both)
    with pytest.raises(DDFError, match="no management object 'DMAcc'"):
        parse_ddf(both, name="DMAcc")


def _node_doc(props: str, name: str = "A", extra: str = "") -> bytes:
    return (
        f'<MgmtTree xmlns="{DDF_NS}"><VerDTD>1.2</VerDTD><Node><NodeName>{name}</NodeName>'
        f"{extra}<DFProperties>{props}</DFProperties></Node></MgmtTree>"
    ).encode()


ROOT_TYPE = "<DFType><DDFName>urn:oma:mo:a:1.0</DDFName></DFType>"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a DDF document"),
        (b"<MgmtTree><Node>", "not a DDF document: not well-formed"),
        (b"<SyncML/>", "the root element is <SyncML>, not <MgmtTree>"),
        (b"<MgmtTree><VerDTD>1.2</VerDTD></MgmtTree>", "describes no node"),
        (b'<!DOCTYPE MgmtTree [<!ENTITY e "x">]><MgmtTree/>', "internal subset"),
        (_node_doc(f"<AccessType/>{ROOT_TYPE}"), r"MgmtTree/Node\[A\]: no DFFormat"),
        (
            _node_doc(f"<AccessType><Fly/></AccessType><DFFormat><node/></DFFormat>{ROOT_TYPE}"),
            "AccessType <Fly>",
        ),
        (_node_doc(f"<AccessType/><DFFormat><text/></DFFormat>{ROOT_TYPE}"), "unknown DFFormat <text>"),
        (
            _node_doc(f"<AccessType/><DFFormat><node/><chr/></DFFormat>{ROOT_TYPE}"),
            "exactly one element, found 2",
        ),
        (
            _node_doc(
                f"<AccessType/><DFFormat><node/></DFFormat><Occurrence><ZeroOrN>x</ZeroOrN></Occurrence>{ROOT_TYPE}"
            ),
            "<ZeroOrN> needs a positive count",
        ),
        (
            _node_doc(
                f"<AccessType/><DFFormat><node/></DFFormat><Occurrence><Many/></Occurrence>{ROOT_TYPE}"
            ),
            "unknown Occurrence <Many>",
        ),
        (
            _node_doc(f"<AccessType/><DFFormat><node/></DFFormat><Scope><Forever/></Scope>{ROOT_TYPE}"),
            "unknown Scope <Forever>",
        ),
        (
            _node_doc(f"<AccessType/><DFFormat><node/></DFFormat>{ROOT_TYPE}<CaseSense><X/></CaseSense>"),
            "unknown CaseSense <X>",
        ),
        (_node_doc("<AccessType/><DFFormat><node/></DFFormat>"), "names no MO identifier"),
        (
            _node_doc(f"<AccessType/><DFFormat><node/></DFFormat>{ROOT_TYPE}", name=""),
            "a placeholder root without RTProperties/Name; pass default_path=",
        ),
        (
            b"<MgmtTree><Node><DFProperties/></Node></MgmtTree>",
            "a Node without NodeName",
        ),
        (
            b"<MgmtTree><Node><NodeName>A</NodeName></Node></MgmtTree>",
            r"MgmtTree/Node\[A\]: a Node without DFProperties",
        ),
    ],
)
def test_unreadable_documents_say_why(data: bytes, message: str) -> None:
    with pytest.raises(DDFError, match=message):
        parse_ddf(data)


def test_default_path_can_be_given() -> None:
    data = _node_doc(f"<AccessType/><DFFormat><node/></DFFormat>{ROOT_TYPE}", name="")
    mo = parse_ddf(data, default_path="./Here")
    assert mo.name == "Here" and mo.default_path == "./Here" and mo.root.is_placeholder


def test_the_protocol_codec_carries_our_ddf_through_wbxml() -> None:
    # Code page 2 of the DM WBXML tables is the DDF/TNDS vocabulary: every element we emit
    # must have a token there, and the trip must not change the document's meaning.
    data = DMACC.to_ddf()
    wbxml = summary.convert(summary.load(data), Encoding.WBXML)
    xml = summary.convert(summary.load(wbxml), Encoding.XML)
    assert parse_ddf(xml) == DMACC


@pytest.mark.interop
def test_a_tnds_document_is_not_a_ddf() -> None:
    fixture = INTEROP / "libwbxml-test-fixtures" / "ddf-001.ddf"
    if not fixture.is_file():
        pytest.skip(f"interop material not found at {fixture}")
    # libwbxml's "DDF" fixture carries RTProperties and Values: a TNDS tree, not a description.
    with pytest.raises(DDFError, match=r"MgmtTree/Node\[E-Mail\]: a Node without DFProperties"):
        parse_ddf(fixture.read_bytes())


def _flat_node(name: str, path: str | None, fmt: str, extra: str = "") -> str:
    path_el = f"<Path>{path}</Path>" if path is not None else ""
    df_type = "<DDFName>com.yyy/1.0/Vendor</DDFName>" if path is None else ""
    return (
        f"<Node><NodeName>{name}</NodeName>{path_el}<DFProperties><AccessType><Get/></AccessType>"
        f"<DFFormat><{fmt}/></DFFormat><DFType>{df_type}</DFType></DFProperties>{extra}</Node>"
    )


def test_the_flat_path_form_describes_the_same_tree_as_nesting() -> None:
    # The DDF section's own example: Vendor/ISP/GWInfo/GWName, once nested, once flat.
    nested = (
        "<MgmtTree><VerDTD>1.2</VerDTD>"
        + _flat_node(
            "Vendor",
            None,
            "node",
            _flat_node("ISP", "", "node", _flat_node("GWInfo", "", "node", _flat_node("GWName", "", "chr"))),
        ).replace("<Path></Path>", "")
        + "</MgmtTree>"
    )
    flat = (
        "<MgmtTree><VerDTD>1.2</VerDTD>"
        + _flat_node("Vendor", None, "node")
        + _flat_node("ISP", "Vendor", "node")
        + _flat_node("GWInfo", "./Vendor/ISP/", "node")
        + _flat_node("GWName", "Vendor/ISP/GWInfo", "chr")
        + "</MgmtTree>"
    )
    a, b = parse_ddf(nested.encode()), parse_ddf(flat.encode())
    assert a == b
    gw = b.resolve("ISP/GWInfo/GWName")
    assert gw is not None and gw.format is Format.CHR
    assert b.default_path == "./Vendor"
