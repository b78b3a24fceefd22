"""The DM tree engine (``omadm.tree.tree``): every command with its exact status codes,
ACLs and their inheritance, properties, ``?list=``, TNDS, the standard MOs, Atomic and
Sequence over a real client/server session pair, persistence, and a model-based property
test against a pure-Python reference tree.

The status codes follow digest section 5 and the check order documented in the module
(syntax, existence, structure/MO 405, ACL 425, data 415/400/413/420).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omadm.mo import DEVINFO, DMACC
from omadm.protocol import codec
from omadm.protocol.codes import StatusCode
from omadm.protocol.messages import (
    Add,
    Alert,
    Atomic,
    Copy,
    Delete,
    Exec,
    Get,
    Item,
    ItemCommand,
    Meta,
    Replace,
    Results,
    Sequence,
    Source,
    Status,
    Target,
)
from omadm.protocol.session import (
    ClientConfig,
    ClientSession,
    Outcome,
    ResultsReceived,
    ServerConfig,
    ServerSession,
)
from omadm.protocol.testing import queue_when_started, run_in_memory
from omadm.tree.acl import parse_acl
from omadm.tree.errors import TreeError
from omadm.tree.store import NodeRecord, TreeStore
from omadm.tree.tnds import TNDS_XML_TYPE, decode_tnds
from omadm.tree.tree import DMTree, NodeHandler, TreeSession

from .conftest import ALL_RIGHTS, APPS, SERVER_A, SERVER_B, Clock

OK = StatusCode.OK

# ---------------------------------------------------------------------------------------
# Helpers


def item(
    uri: str | None,
    data: str | bytes | None = None,
    *,
    fmt: str | None = None,
    typ: str | None = None,
    source: str | None = None,
) -> Item:
    meta = Meta(format=fmt, type=typ) if fmt or typ else None
    return Item(
        target=Target(uri) if uri is not None else None,
        source=Source(source) if source is not None else None,
        meta=meta,
        data=data,
    )


def do(
    session: TreeSession,
    cls: type[ItemCommand],
    uri: str | None,
    data: str | bytes | None = None,
    *,
    fmt: str | None = None,
    typ: str | None = None,
    source: str | None = None,
    correlator: str | None = None,
) -> Outcome:
    """Run one single-Item command and return its one Outcome."""
    items = (item(uri, data, fmt=fmt, typ=typ, source=source),)
    command = Exec("1", items, correlator=correlator) if cls is Exec else cls("1", items)
    outcomes = session.execute(command)
    assert len(outcomes) == 1
    return outcomes[0]


def code(
    session: TreeSession,
    cls: type[ItemCommand],
    uri: str | None,
    data: str | bytes | None = None,
    **kw: str | None,
) -> int:
    return do(session, cls, uri, data, **kw).code  # type: ignore[arg-type]


def result(outcome: Outcome) -> Item:
    assert outcome.code == OK, outcome
    assert outcome.results is not None and len(outcome.results) == 1
    return outcome.results[0]


def value(session: TreeSession, uri: str) -> str | bytes | None:
    return result(do(session, Get, uri)).data


def prop(session: TreeSession, uri: str, name: str) -> str:
    data = result(do(session, Get, f"{uri}?prop={name}")).data
    assert isinstance(data, str)
    return data


def snapshot(tree: DMTree) -> list[NodeRecord | None]:
    return [tree.store.get(p) for p in tree.store.all_paths()]


def node_xml(
    name: str,
    *children: str,
    fmt: str | None = None,
    value: str | None = None,
    typ: str | None = None,
    acl: str | None = None,
    title: str | None = None,
    path: str | None = None,
) -> str:
    props = ""
    if acl is not None:
        props += f"<ACL>{escape(acl)}</ACL>"
    if fmt is not None:
        props += f"<Format><{fmt}/></Format>"
    if title is not None:
        props += f"<Title>{escape(title)}</Title>"
    if typ is not None:
        props += f"<Type><MIME>{typ}</MIME></Type>"
    out = f"<Node><NodeName>{name}</NodeName>"
    if path is not None:
        out += f"<Path>{path}</Path>"
    if props:
        out += f"<RTProperties>{props}</RTProperties>"
    if value is not None:
        out += f"<Value>{escape(value)}</Value>"
    return out + "".join(children) + "</Node>"


def tnds_doc(*nodes: str) -> str:
    return '<MgmtTree xmlns="syncml:dmddf1.2"><VerDTD>1.2</VerDTD>' + "".join(nodes) + "</MgmtTree>"


def tnds_write(session: TreeSession, cls: type[ItemCommand], uri: str, document: str) -> int:
    return code(session, cls, uri, document, fmt="xml", typ=TNDS_XML_TYPE)


@pytest.fixture
def a(tree: DMTree) -> TreeSession:
    return tree.session(SERVER_A)


@pytest.fixture
def b(tree: DMTree) -> TreeSession:
    return tree.session(SERVER_B)


# ---------------------------------------------------------------------------------------
# Add


def test_add_interior_and_leaf(a: TreeSession) -> None:
    assert code(a, Add, "./Vendor/App", fmt="node", typ="com.example/1.0/App") == OK
    assert code(a, Add, "./Vendor/App/Level", "3", fmt="int") == OK
    assert code(a, Add, "Vendor/App/Label", "hello") == OK  # no "./", no Meta: chr, text/plain
    got = result(do(a, Get, "./Vendor/App"))
    assert got.meta == Meta(format="node", type="com.example/1.0/App")
    assert got.data == "Level/Label"
    level = result(do(a, Get, "./Vendor/App/Level"))
    assert (level.meta, level.data) == (Meta(format="int", type="text/plain"), "3")
    assert (prop(a, "./Vendor/App/Label", "Format"), prop(a, "./Vendor/App/Label", "Type")) == (
        "chr",
        "text/plain",
    )


def test_add_returns_418_for_an_existing_node_404_without_parent_405_under_a_leaf(a: TreeSession) -> None:
    assert code(a, Add, "./Vendor/x", "1") == OK
    assert code(a, Add, "./Vendor/x", "2") == StatusCode.ALREADY_EXISTS
    assert code(a, Add, "./Vendor", fmt="node") == StatusCode.ALREADY_EXISTS
    assert code(a, Add, ".", fmt="node") == StatusCode.ALREADY_EXISTS
    assert code(a, Add, "./Vendor/missing/x", "1") == StatusCode.NOT_FOUND
    assert code(a, Add, "./Vendor/x/child", "1") == StatusCode.COMMAND_NOT_ALLOWED
    assert value(a, "./Vendor/x") == "1"


def test_add_is_checked_on_the_parents_effective_acl(bare: DMTree) -> None:
    bare.system_add_interior("./Locked", acl="Get=*")
    bare.system_add_interior("./Locked/Inner")  # empty ACL: inherits Get=*
    bare.system_add_interior("./Mine", acl=f"Add={SERVER_A}&Get=*")
    a, b = bare.session(SERVER_A), bare.session(SERVER_B)
    # The parent's ACL is non-empty and has no Add: the root's Add=* does not merge in.
    assert code(a, Add, "./Locked/x", "1") == StatusCode.PERMISSION_DENIED
    assert code(a, Add, "./Locked/Inner/x", "1") == StatusCode.PERMISSION_DENIED
    assert code(a, Add, "./Mine/x", "1") == OK
    assert code(b, Add, "./Mine/y", "1") == StatusCode.PERMISSION_DENIED
    assert code(b, Add, "./Top", "1") == OK  # the root grants Add=*


def test_add_of_a_node_the_mo_does_not_define_is_405(std: DMTree) -> None:
    a = std.session(SERVER_A)
    assert code(a, Add, "./DevInfo/Foo", "x") == StatusCode.COMMAND_NOT_ALLOWED
    assert code(a, Add, "./DevInfo/Ext", fmt="node") == StatusCode.COMMAND_NOT_ALLOWED  # permanent, Get only
    assert code(a, Add, "./Apps/one", fmt="node") == OK
    assert code(a, Add, "./Apps/one/Unknown", "x") == StatusCode.COMMAND_NOT_ALLOWED
    # Below an open node (Ext) the MO says nothing: anything goes.
    assert code(a, Add, "./Apps/one/Ext", fmt="node") == OK
    assert code(a, Add, "./Apps/one/Ext/Vendor", fmt="node") == OK
    assert code(a, Add, "./Apps/one/Ext/Vendor/Any", "thing") == OK


def test_add_forbidden_by_the_mo_access_type_is_405_even_with_acl_rights(std: DMTree) -> None:
    a = std.session(SERVER_A)
    assert code(a, Add, "./Apps/one", fmt="node") == OK
    assert code(a, Add, "./Apps/one/Locked", "x") == StatusCode.COMMAND_NOT_ALLOWED
    assert std.system_get("./Apps/one/Locked") is None


def test_add_format_must_match_the_mo(std: DMTree) -> None:
    a = std.session(SERVER_A)
    assert (
        code(a, Add, "./Apps/one", "x") == StatusCode.UNSUPPORTED_MEDIA_TYPE
    )  # a value for an interior node
    assert code(a, Add, "./Apps/one", fmt="node") == OK
    assert code(a, Add, "./Apps/one/Name", fmt="node") == StatusCode.UNSUPPORTED_MEDIA_TYPE
    assert code(a, Add, "./Apps/one/Level", "4", fmt="chr") == StatusCode.UNSUPPORTED_MEDIA_TYPE
    # Without Meta the declared Format applies, and the value must fit it.
    assert code(a, Add, "./Apps/one/Level", "x4") == StatusCode.BAD_REQUEST
    assert code(a, Add, "./Apps/one/Level", "4") == OK
    assert prop(a, "./Apps/one/Level", "Format") == "int"
    assert code(a, Add, "./Apps/one/Mode", "maybe") == StatusCode.BAD_REQUEST  # enumerated values
    assert code(a, Add, "./Apps/one/Mode", "on") == OK


@pytest.mark.parametrize(
    ("fmt", "data"),
    [
        ("int", "abc"),
        ("int", "99999999999"),
        ("bool", "maybe"),
        ("bool", "True"),
        ("float", "1,5"),
        ("date", "2026-13-01"),
        ("xml", "<a>"),
        ("null", "x"),
    ],
)
def test_add_value_that_its_format_cannot_hold_is_400(a: TreeSession, fmt: str, data: str) -> None:
    assert code(a, Add, "./Vendor/v", data, fmt=fmt) == StatusCode.BAD_REQUEST
    assert code(a, Add, "./Vendor/v", "!!not base64!!", fmt="b64") == StatusCode.BAD_REQUEST
    assert code(a, Get, "./Vendor/v") == StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("fmt", "data"),
    [
        ("int", "-2147483648"),
        ("bool", "false"),
        ("float", "-64.55E12"),
        ("date", "2005-11-23"),
        ("time", "16:38:17Z"),
        ("xml", "<a/>"),
    ],
)
def test_add_values_that_fit_their_format(a: TreeSession, fmt: str, data: str) -> None:
    assert code(a, Add, "./Vendor/v", data, fmt=fmt) == OK
    assert result(do(a, Get, "./Vendor/v")).data == data


def test_unknown_format_is_415(a: TreeSession) -> None:
    assert code(a, Add, "./Vendor/v", "x", fmt="jpeg") == StatusCode.UNSUPPORTED_MEDIA_TYPE


def test_format_case_and_trailing_nul_are_tolerated(a: TreeSession) -> None:
    assert code(a, Add, "./Vendor/v", "42\x00", fmt="Int") == OK  # pitfalls 21 and 35
    assert prop(a, "./Vendor/v", "Format") == "int"
    assert value(a, "./Vendor/v") == "42"


def test_b64_data_is_stored_as_bin(a: TreeSession, tree: DMTree) -> None:
    raw = bytes(range(256))
    assert (
        code(
            a, Add, "./Vendor/blob", base64.b64encode(raw).decode(), fmt="b64", typ="application/octet-stream"
        )
        == OK
    )
    got = result(do(a, Get, "./Vendor/blob"))
    assert got.data == raw
    assert got.meta == Meta(format="bin", type="application/octet-stream")
    assert prop(a, "./Vendor/blob", "Format") == "bin"
    assert prop(a, "./Vendor/blob", "Size") == "256"  # decoded length, not the b64 text length
    assert tree.system_value("./Vendor/blob") == raw
    # Line breaks inside base64 are fine.
    wrapped = base64.encodebytes(raw).decode()
    assert "\n" in wrapped
    assert code(a, Replace, "./Vendor/blob", wrapped, fmt="b64") == OK
    assert value(a, "./Vendor/blob") == raw


def test_values_beyond_max_value_size_are_413(clock: Clock) -> None:
    tree = DMTree(TreeStore(":memory:"), clock=clock, max_value_size=8)
    tree.system_add_interior("./Vendor", acl=ALL_RIGHTS)
    a = tree.session(SERVER_A)
    assert code(a, Add, "./Vendor/v", "12345678") == OK
    assert code(a, Add, "./Vendor/w", "123456789") == StatusCode.REQUEST_ENTITY_TOO_LARGE
    assert code(a, Replace, "./Vendor/v", "123456789") == StatusCode.REQUEST_ENTITY_TOO_LARGE
    # The decoded size counts: 8 bytes are 12 characters of base64.
    assert code(a, Add, "./Vendor/b", base64.b64encode(b"x" * 8).decode(), fmt="b64") == OK
    assert code(a, Add, "./Vendor/c", base64.b64encode(b"x" * 9).decode(), fmt="b64") == (
        StatusCode.REQUEST_ENTITY_TOO_LARGE
    )
    assert value(a, "./Vendor/v") == "12345678"


def test_occurrence_limits_of_the_mo(std: DMTree) -> None:
    a = std.session(SERVER_A)
    assert code(a, Add, "./Apps/one", fmt="node") == OK
    assert code(a, Add, "./Apps/two", fmt="node") == OK
    assert code(a, Add, "./Apps/three", fmt="node") == StatusCode.DEVICE_FULL  # ZeroOrN(2)
    assert code(a, Delete, "./Apps/one") == OK
    assert code(a, Add, "./Apps/three", fmt="node") == OK


def test_interior_node_added_without_replace_on_the_parent_gets_an_automatic_acl(bare: DMTree) -> None:
    bare.system_add_interior("./Open", acl="Add=*&Get=*")
    a, b = bare.session(SERVER_A), bare.session(SERVER_B)
    assert code(a, Add, "./Open/mine", fmt="node") == OK
    acl = prop(a, "./Open/mine", "ACL")
    assert parse_acl(acl) == parse_acl(f"Add={SERVER_A}&Delete={SERVER_A}&Get={SERVER_A}&Replace={SERVER_A}")
    # The creator manages its node; the other server cannot even read it.
    assert code(a, Add, "./Open/mine/leaf", "1") == OK
    assert prop(a, "./Open/mine/leaf", "ACL") == ""  # leaves never get an automatic ACL
    assert code(a, Replace, "./Open/mine/leaf", "2") == OK
    assert code(b, Get, "./Open/mine") == StatusCode.PERMISSION_DENIED
    assert code(b, Delete, "./Open/mine") == StatusCode.PERMISSION_DENIED
    assert code(a, Delete, "./Open/mine") == OK


def test_interior_node_added_with_replace_on_the_parent_inherits(tree: DMTree, a: TreeSession) -> None:
    assert code(a, Add, "./Vendor/shared", fmt="node") == OK
    assert prop(a, "./Vendor/shared", "ACL") == ""
    assert tree.effective_acl("./Vendor/shared") == parse_acl(ALL_RIGHTS)


def test_leaf_added_without_data(a: TreeSession) -> None:
    assert code(a, Add, "./Vendor/text") == OK
    assert value(a, "./Vendor/text") == ""
    assert code(a, Add, "./Vendor/number", fmt="int") == OK  # empty is not an int: no value yet
    assert value(a, "./Vendor/number") is None
    assert prop(a, "./Vendor/number", "Size") == "0"
    assert code(a, Replace, "./Vendor/number", "7", fmt="int") == OK


def test_leaf_added_without_data_or_meta_inside_an_mo(std: DMTree) -> None:
    a = std.session(SERVER_A)
    assert code(a, Add, "./Apps/one", fmt="node") == OK
    assert code(a, Add, "./Apps/one/Level") == OK  # the declared int, no value yet
    assert value(a, "./Apps/one/Level") is None
    assert prop(a, "./Apps/one/Level", "Format") == "int"
    assert code(a, Add, "./Apps/one/Name") == OK
    assert value(a, "./Apps/one/Name") == ""


def test_add_with_several_items_answers_each_item(a: TreeSession) -> None:
    outcomes = a.execute(
        Add("1", (item("./Vendor/x", "1"), item("./Vendor/x", "2"), item("./Vendor/y", "3")))
    )
    assert [(o.code, o.target_ref) for o in outcomes] == [
        (OK, "./Vendor/x"),
        (StatusCode.ALREADY_EXISTS, "./Vendor/x"),
        (OK, "./Vendor/y"),
    ]
    assert value(a, "./Vendor/x") == "1"


def test_malformed_commands(a: TreeSession) -> None:
    assert a.execute(Add("1", ())) == [Outcome(StatusCode.INCOMPLETE_COMMAND)]
    assert code(a, Add, None, "x") == StatusCode.INCOMPLETE_COMMAND
    assert (
        code(a, Add, "./Vendor/x?prop=Title", "t") == StatusCode.COMMAND_NOT_ALLOWED
    )  # properties are not added
    assert code(a, Add, "./Vendor/x?list=Struct", "t") == StatusCode.COMMAND_NOT_ALLOWED
    # UI alerts: this agent has no user interface.
    assert a.execute(Alert("1", data="1101")) == [Outcome(StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED)]


# ---------------------------------------------------------------------------------------
# TNDS Add

EMAIL = node_xml(
    "E-Mail",
    node_xml("POPServer", fmt="chr", typ="text/plain", value="mail.operatorx.com"),
    node_xml("Port", fmt="int", value="110"),
    node_xml("Key", fmt="b64", typ="application/octet-stream", value=base64.b64encode(b"\x00\xff").decode()),
    fmt="node",
)


def test_tnds_add_creates_the_top_level_nodes_under_the_target(a: TreeSession) -> None:
    assert code(a, Add, "./Vendor/OperatorX", fmt="node") == OK
    assert tnds_write(a, Add, "./Vendor/OperatorX", tnds_doc(EMAIL)) == OK
    assert value(a, "./Vendor/OperatorX/E-Mail") == "POPServer/Port/Key"
    assert value(a, "./Vendor/OperatorX/E-Mail/POPServer") == "mail.operatorx.com"
    assert result(do(a, Get, "./Vendor/OperatorX/E-Mail/Port")).meta == Meta(format="int", type="text/plain")
    assert value(a, "./Vendor/OperatorX/E-Mail/Key") == b"\x00\xff"
    assert prop(a, "./Vendor/OperatorX/E-Mail/Key", "Format") == "bin"


def test_tnds_add_of_the_target_itself(a: TreeSession) -> None:
    # A top-level node named like the Target's last segment is the Target (what ?list=TNDS gives).
    assert tnds_write(a, Add, "./Vendor/E-Mail", tnds_doc(EMAIL)) == OK
    assert value(a, "./Vendor/E-Mail/Port") == "110"
    assert code(a, Get, "./Vendor/E-Mail/E-Mail") == StatusCode.NOT_FOUND
    # An empty NodeName names the Target too.
    empty = node_xml("", node_xml("Leaf", value="v"), fmt="node")
    assert tnds_write(a, Add, "./Vendor/Other", tnds_doc(empty)) == OK
    assert value(a, "./Vendor/Other/Leaf") == "v"
    # ... which must not exist yet, and whose parent must.
    assert tnds_write(a, Add, "./Vendor/Other", tnds_doc(empty)) == StatusCode.ALREADY_EXISTS
    assert tnds_write(a, Add, "./Vendor/none/Other", tnds_doc(empty)) == StatusCode.NOT_FOUND


def test_tnds_add_under_a_missing_or_leaf_target(a: TreeSession) -> None:
    assert tnds_write(a, Add, "./Vendor/nowhere", tnds_doc(EMAIL)) == StatusCode.NOT_FOUND
    assert code(a, Add, "./Vendor/leaf", "x") == OK
    assert tnds_write(a, Add, "./Vendor/leaf", tnds_doc(EMAIL)) == StatusCode.COMMAND_NOT_ALLOWED


@pytest.mark.parametrize(
    ("bad_node", "status"),
    [
        (node_xml("Port", fmt="int", value="abc"), StatusCode.BAD_REQUEST),
        (node_xml("Key", fmt="b64", value="***"), StatusCode.BAD_REQUEST),
        (node_xml("App", fmt="node"), StatusCode.ALREADY_EXISTS),  # the last node exists already
        (
            node_xml("Leaf", node_xml("Child", value="x"), fmt="chr"),
            StatusCode.BAD_REQUEST,
        ),  # refused by TNDS
        (node_xml("Bad", acl="Get="), StatusCode.BAD_REQUEST),
        (node_xml("Pic", fmt="jpeg", value="x"), StatusCode.UNSUPPORTED_MEDIA_TYPE),
    ],
)
def test_tnds_add_is_all_or_nothing(tree: DMTree, a: TreeSession, bad_node: str, status: int) -> None:
    assert code(a, Add, "./Vendor/T", fmt="node") == OK
    assert code(a, Add, "./Vendor/T/App", fmt="node") == OK
    before = snapshot(tree)
    fresh = node_xml("Fresh", node_xml("New", value="1"), node_xml("Sub", node_xml("Deep", value="2")))
    assert tnds_write(a, Add, "./Vendor/T", tnds_doc(fresh, bad_node)) == status
    assert snapshot(tree) == before
    assert tnds_write(a, Add, "./Vendor/T", tnds_doc(fresh)) == OK


def test_tnds_add_rejects_malformed_xml_and_empty_objects(a: TreeSession) -> None:
    assert tnds_write(a, Add, "./Vendor", "<MgmtTree><Node>") == StatusCode.BAD_REQUEST
    assert tnds_write(a, Add, "./Vendor", tnds_doc()) == StatusCode.BAD_REQUEST
    assert tnds_write(a, Add, "./Vendor", "<DevInf/>") == StatusCode.BAD_REQUEST


def test_tnds_add_checks_acls_and_the_mo_like_plain_adds(std: DMTree) -> None:
    a, b = std.session(SERVER_A), std.session(SERVER_B)
    std.system_add_interior("./Ro", acl="Get=*")
    assert tnds_write(a, Add, "./Ro", tnds_doc(node_xml("X", value="1"))) == StatusCode.PERMISSION_DENIED
    app = node_xml("one", node_xml("Name", value="n"), node_xml("Unknown", value="u"), fmt="node")
    assert tnds_write(a, Add, "./Apps", tnds_doc(app)) == StatusCode.COMMAND_NOT_ALLOWED
    assert code(a, Get, "./Apps/one") == StatusCode.NOT_FOUND
    app = node_xml("one", node_xml("Name", value="n"), node_xml("Level", value="5"))
    assert tnds_write(a, Add, "./Apps", tnds_doc(app)) == OK
    assert prop(a, "./Apps/one/Level", "Format") == "int"  # declared Format when the object gives none
    assert prop(a, "./Apps/one", "Type") == "com.example/1.0/App"  # the declared DDFName
    # ACLs in the object: only what the server could set with ?prop=ACL.
    std.system_add_interior("./Open", acl="Add=*&Get=*")
    leaf_acl = tnds_doc(node_xml("L", value="1", acl=f"Get={SERVER_B}"))
    assert tnds_write(b, Add, "./Open", leaf_acl) == StatusCode.PERMISSION_DENIED  # leaf: Replace on parent
    tree_acl = tnds_doc(
        node_xml(
            "N",
            node_xml("L", value="1", acl=f"Get={SERVER_B}&Replace={SERVER_B}"),
            acl=f"Add={SERVER_B}&Get=*&Replace={SERVER_B}",
        )
    )
    assert tnds_write(b, Add, "./Open", tree_acl) == OK  # the automatic ACL of N lets b set both
    assert prop(a, "./Open/N", "ACL") == f"Add={SERVER_B}&Get=*&Replace={SERVER_B}"
    assert prop(b, "./Open/N/L", "ACL") == f"Get={SERVER_B}&Replace={SERVER_B}"


def test_tnds_add_with_flat_paths_and_titles(a: TreeSession) -> None:
    flat = tnds_doc(
        node_xml("Base", fmt="node"),
        node_xml("Leaf", value="x", title="A leaf", path="Base"),
        node_xml("Sub", fmt="node", path="Base"),
        node_xml("Deep", value="y", path="Base/Sub"),
    )
    assert tnds_write(a, Add, "./Vendor", flat) == OK
    assert value(a, "./Vendor/Base/Sub/Deep") == "y"
    assert prop(a, "./Vendor/Base/Leaf", "Title") == "A leaf"


def test_tnds_add_formats(std: DMTree) -> None:
    a = std.session(SERVER_A)
    # A Value where the MO declares an interior node is a Format mismatch.
    assert (
        tnds_write(a, Add, "./Apps", tnds_doc(node_xml("one", value="x")))
        == StatusCode.UNSUPPORTED_MEDIA_TYPE
    )
    # Binary without a Value: an empty bin leaf; at the root: children of the root.
    document = tnds_doc(node_xml("Top", node_xml("Empty", fmt="b64"), node_xml("Blank", fmt="chr")))
    assert tnds_write(a, Add, ".", document) == OK
    empty = std.system_get("./Top/Empty")
    assert empty is not None and (empty.format, empty.value) == ("bin", b"")
    assert value(a, "./Top/Blank") == ""
    assert tnds_write(a, Add, ".", tnds_doc(node_xml("", fmt="node"))) == StatusCode.ALREADY_EXISTS


def test_tnds_written_by_get_list_can_be_added_back(std: DMTree) -> None:
    a = std.session(SERVER_A)
    assert code(a, Add, "./Vendor/App", fmt="node", typ="com.example/1.0/App") == OK
    assert code(a, Add, "./Vendor/App/Level", "3", fmt="int") == OK
    assert (
        code(
            a,
            Add,
            "./Vendor/App/Blob",
            base64.b64encode(b"\x00\x01\x02").decode(),
            fmt="b64",
            typ="application/octet-stream",
        )
        == OK
    )
    assert code(a, Add, "./Vendor/App/Sub", fmt="node") == OK
    assert code(a, Add, "./Vendor/App/Sub/My Name", "spaced & <escaped>") == OK
    before = {r.path: (r.format, r.type, r.value) for r in std.store.subtree("./Vendor/App")}
    dump = result(do(a, Get, "./Vendor/App?list=TNDS")).data
    assert isinstance(dump, str)
    assert code(a, Delete, "./Vendor/App") == OK
    assert tnds_write(a, Add, "./Vendor/App", dump) == OK  # to the same URI ...
    assert {r.path: (r.format, r.type, r.value) for r in std.store.subtree("./Vendor/App")} == before
    assert code(a, Delete, "./Vendor/App") == OK
    assert tnds_write(a, Add, "./Vendor", dump) == OK  # ... or to its parent
    assert {r.path: (r.format, r.type, r.value) for r in std.store.subtree("./Vendor/App")} == before


# ---------------------------------------------------------------------------------------
# Replace


def test_replace_value_format_and_type(a: TreeSession) -> None:
    assert code(a, Add, "./Vendor/v", "1") == OK
    assert code(a, Replace, "./Vendor/v", "42", fmt="int", typ="text/x-count") == OK
    got = result(do(a, Get, "./Vendor/v"))
    assert (got.meta, got.data) == (Meta(format="int", type="text/x-count"), "42")
    # Digest 3.6: no Meta means chr and text/plain again.
    assert code(a, Replace, "./Vendor/v", "plain") == OK
    got = result(do(a, Get, "./Vendor/v"))
    assert (got.meta, got.data) == (None, "plain")


def test_replace_never_creates_and_never_touches_interior_nodes(a: TreeSession) -> None:
    assert code(a, Replace, "./Vendor/missing", "x") == StatusCode.NOT_FOUND
    assert code(a, Get, "./Vendor/missing") == StatusCode.NOT_FOUND
    assert code(a, Replace, "./Vendor", "x") == StatusCode.COMMAND_NOT_ALLOWED
    assert code(a, Add, "./Vendor/leaf", "x") == OK
    assert code(a, Replace, "./Vendor/leaf", fmt="node") == StatusCode.UNSUPPORTED_MEDIA_TYPE


def test_replace_needs_the_nodes_replace_right(bare: DMTree) -> None:
    bare.system_add_interior("./Area", acl=f"Add=*&Get=*&Replace={SERVER_A}")
    bare.system_set("./Area/v", "1")
    a, b = bare.session(SERVER_A), bare.session(SERVER_B)
    assert code(b, Replace, "./Area/v", "2") == StatusCode.PERMISSION_DENIED
    assert code(a, Replace, "./Area/v", "2") == OK
    assert value(b, "./Area/v") == "2"


def test_replace_forbidden_by_the_mo_is_405(std: DMTree) -> None:
    a = std.session(SERVER_A)
    assert code(a, Replace, "./DevInfo/Man", "Evil") == StatusCode.COMMAND_NOT_ALLOWED
    assert value(a, "./DevInfo/Man") == "Acme"
    assert code(a, Replace, "./Apps/one/Level", "1") == StatusCode.NOT_FOUND
    assert code(a, Add, "./Apps/one", fmt="node") == OK
    assert code(a, Add, "./Apps/one/Level", "1") == OK
    assert code(a, Replace, "./Apps/one/Level", "x") == StatusCode.BAD_REQUEST
    assert code(a, Replace, "./Apps/one/Level", "2", fmt="chr") == StatusCode.UNSUPPORTED_MEDIA_TYPE
    assert code(a, Replace, "./Apps/one/Level", "2") == OK
    std.system_set("./Apps/one/Locked", "fixed")
    assert code(a, Replace, "./Apps/one/Locked", "other") == StatusCode.COMMAND_NOT_ALLOWED


def test_replace_inside_an_mo_keeps_the_declared_type(std: DMTree) -> None:
    a = std.session(SERVER_A)
    assert code(a, Add, "./Apps/one", fmt="node") == OK
    assert code(a, Add, "./Apps/one/Token", base64.b64encode(b"t1").decode(), fmt="b64") == OK
    assert prop(a, "./Apps/one/Token", "Type") == "application/octet-stream"
    assert code(a, Replace, "./Apps/one/Token", base64.b64encode(b"t2").decode(), fmt="b64") == OK
    assert prop(a, "./Apps/one/Token", "Type") == "application/octet-stream"
    assert std.system_value("./Apps/one/Token") == b"t2"


def test_verno_counts_changes_and_wraps(tree: DMTree, a: TreeSession) -> None:
    assert code(a, Add, "./Vendor/v", "0") == OK
    assert prop(a, "./Vendor/v", "VerNo") == "0"
    for n in range(1, 4):
        assert code(a, Replace, "./Vendor/v", str(n)) == OK
        assert prop(a, "./Vendor/v", "VerNo") == str(n)
    record = tree.system_get("./Vendor/v")
    assert record is not None
    with tree.store.transaction():
        tree.store.put(record.with_(verno=0xFFFF))
    assert code(a, Replace, "./Vendor/v", "x") == OK
    assert prop(a, "./Vendor/v", "VerNo") == "0"
    # Properties other than the value leave VerNo alone.
    assert code(a, Replace, "./Vendor/v?prop=Title", "t") == OK
    assert prop(a, "./Vendor/v", "VerNo") == "0"


def test_tstamp_follows_value_changes(clock: Clock, a: TreeSession) -> None:
    assert code(a, Add, "./Vendor/v", "0") == OK
    assert prop(a, "./Vendor/v", "TStamp") == "20260102T030405Z"
    clock.tick(3600 * 25 + 1)
    assert code(a, Replace, "./Vendor/v", "1") == OK
    assert prop(a, "./Vendor/v", "TStamp") == "20260103T040406Z"
    clock.tick()
    assert code(a, Get, "./Vendor/v") == OK
    assert code(a, Replace, "./Vendor/v?prop=Title", "t") == OK
    assert prop(a, "./Vendor/v", "TStamp") == "20260103T040406Z"


# -- Replace ?prop=ACL


@pytest.fixture
def acl_tree(bare: DMTree) -> DMTree:
    """``./P`` (Replace for a) holding ``I`` (interior, Replace for b) and ``L`` (leaf, Replace for b)."""
    bare.system_add_interior("./P", acl=f"Get=*&Replace={SERVER_A}")
    bare.system_add_interior("./P/I", acl=f"Get=*&Replace={SERVER_B}")
    bare.system_set("./P/L", "v")
    with bare.store.transaction():
        record = bare.store.get("./P/L")
        assert record is not None
        bare.store.put(record.with_(acl=f"Get=*&Replace={SERVER_B}"))
    return bare


def test_acl_of_an_interior_node_needs_replace_on_the_node_or_its_parent(acl_tree: DMTree) -> None:
    a, b, c = acl_tree.session(SERVER_A), acl_tree.session(SERVER_B), acl_tree.session("srv-c")
    assert code(c, Replace, "./P/I?prop=ACL", "Get=*") == StatusCode.PERMISSION_DENIED
    assert code(b, Replace, "./P/I?prop=ACL", f"Get=*&Replace={SERVER_B}+srv-c") == OK  # on the node
    assert code(a, Replace, "./P/I?prop=ACL", f"Get=*&Replace={SERVER_B}") == OK  # on the parent
    assert prop(a, "./P/I", "ACL") == f"Get=*&Replace={SERVER_B}"


def test_acl_of_a_leaf_needs_replace_on_the_parent(acl_tree: DMTree) -> None:
    a, b = acl_tree.session(SERVER_A), acl_tree.session(SERVER_B)
    # b may Replace the leaf's value, not its ACL.
    assert code(b, Replace, "./P/L", "w") == OK
    assert code(b, Replace, "./P/L?prop=ACL", "Get=*") == StatusCode.PERMISSION_DENIED
    assert code(a, Replace, "./P/L?prop=ACL", "") == OK  # empty: inherit from ./P again
    assert prop(a, "./P/L", "ACL") == ""
    assert code(b, Replace, "./P/L", "x") == StatusCode.PERMISSION_DENIED


def test_acl_replace_validates_the_text(tree: DMTree, a: TreeSession) -> None:
    assert code(a, Add, "./Vendor/n", fmt="node") == OK
    assert code(a, Replace, "./Vendor/n?prop=ACL", "Get=") == StatusCode.BAD_REQUEST
    assert code(a, Replace, "./Vendor/n?prop=ACL", "Foo=x") == StatusCode.BAD_REQUEST
    assert code(a, Replace, "./Vendor/n?prop=acl", f"get={SERVER_B}+{SERVER_A}\x00") == OK  # stored canonical
    assert prop(a, "./Vendor/n", "ACL") == f"Get={SERVER_A}+{SERVER_B}"
    assert code(a, Replace, "./Vendor/missing?prop=ACL", "Get=*") == StatusCode.NOT_FOUND


def test_root_acl_stays_non_empty_and_keeps_add_for_everyone(bare: DMTree) -> None:
    a = bare.session(SERVER_A)
    assert code(a, Replace, ".?prop=ACL", "Add=*") == StatusCode.PERMISSION_DENIED  # default: no Replace
    with bare.store.transaction():
        root = bare.store.get(".")
        assert root is not None
        bare.store.put(root.with_(acl=f"Add=*&Get=*&Replace={SERVER_A}"))
    assert code(a, Replace, ".?prop=ACL", "") == StatusCode.COMMAND_NOT_ALLOWED
    assert code(a, Replace, ".?prop=ACL", f"Add={SERVER_A}&Get=*") == StatusCode.COMMAND_NOT_ALLOWED
    assert code(a, Replace, ".?prop=ACL", f"Add=*&Get=*&Replace={SERVER_A}+{SERVER_B}") == OK
    assert prop(a, ".", "ACL") == f"Add=*&Get=*&Replace={SERVER_A}+{SERVER_B}"


# -- Replace ?prop=Name, Title and the read-only properties


def test_rename_moves_the_sub_tree(tree: DMTree, a: TreeSession) -> None:
    assert code(a, Add, "./Vendor/old", fmt="node") == OK
    assert code(a, Add, "./Vendor/old/sub", fmt="node") == OK
    assert code(a, Add, "./Vendor/old/sub/leaf", "v", fmt="chr") == OK
    assert code(a, Replace, "./Vendor/old?prop=Title", "kept") == OK
    assert code(a, Replace, "./Vendor/old?prop=Name", "new name") == OK
    assert code(a, Get, "./Vendor/old") == StatusCode.NOT_FOUND
    assert code(a, Get, "./Vendor/old/sub/leaf") == StatusCode.NOT_FOUND
    assert value(a, "./Vendor/new%20name/sub/leaf") == "v"
    assert prop(a, "./Vendor/new%20name", "Name") == "new name"
    assert prop(a, "./Vendor/new%20name", "Title") == "kept"
    assert value(a, "./Vendor") == "new%20name"
    assert tree.store.integrity_problems() == []


def test_rename_refusals(std: DMTree) -> None:
    a, b = std.session(SERVER_A), std.session(SERVER_B)
    assert code(a, Add, "./Vendor/x", "1") == OK
    assert code(a, Add, "./Vendor/y", "2") == OK
    assert code(a, Replace, "./Vendor/x?prop=Name", "y") == StatusCode.ALREADY_EXISTS
    assert code(a, Replace, "./Vendor/x?prop=Name", "x") == OK  # its own name: nothing to do
    assert code(a, Replace, "./Vendor/x?prop=Name", "a/b") == StatusCode.BAD_REQUEST
    assert code(a, Replace, "./Vendor/x?prop=Name", "") == StatusCode.BAD_REQUEST
    assert code(a, Replace, "./Vendor/x?prop=Name", "..") == StatusCode.BAD_REQUEST
    assert code(a, Replace, "./DevInfo?prop=Name", "Info") == StatusCode.COMMAND_NOT_ALLOWED  # permanent
    assert code(a, Replace, "./DevInfo/Man?prop=Name", "Maker") == StatusCode.COMMAND_NOT_ALLOWED
    assert code(a, Replace, ".?prop=Name", "root") == StatusCode.COMMAND_NOT_ALLOWED
    # Inside an MO only run-time names change, and never to a name the MO reserves.
    assert code(a, Add, "./Apps/one", fmt="node") == OK
    assert code(a, Add, "./Apps/one/Name", "n") == OK
    assert code(a, Replace, "./Apps/one/Name?prop=Name", "Label") == StatusCode.COMMAND_NOT_ALLOWED
    assert code(a, Replace, "./Apps/one?prop=Name", "first") == OK
    assert value(a, "./Apps/first/Name") == "n"
    # The account's ACL lets only srv-a rename it.
    assert code(b, Replace, "./DMAcc/acc-a?prop=Name", "stolen") == StatusCode.PERMISSION_DENIED
    assert code(a, Replace, "./DMAcc/acc-a?prop=Name", "primary") == OK
    assert std.system_value("./DMAcc/primary/ServerID") == SERVER_A


def test_rename_respects_uri_limits(std: DMTree) -> None:
    a = std.session(SERVER_A)
    std.system_set("./DevDetail/URI/MaxSegLen", "8")
    assert code(a, Add, "./Vendor/x", "1") == OK
    assert code(a, Replace, "./Vendor/x?prop=Name", "123456789") == StatusCode.URI_TOO_LONG
    assert code(a, Replace, "./Vendor/x?prop=Name", "12345678") == OK


def test_title_is_at_most_255_bytes(a: TreeSession) -> None:
    assert code(a, Add, "./Vendor/v", "1") == OK
    assert prop(a, "./Vendor/v", "Title") == ""
    assert code(a, Replace, "./Vendor/v?prop=Title", "x" * 255) == OK
    assert prop(a, "./Vendor/v", "Title") == "x" * 255
    assert code(a, Replace, "./Vendor/v?prop=Title", "x" * 256) == StatusCode.REQUEST_ENTITY_TOO_LARGE
    assert (
        code(a, Replace, "./Vendor/v?prop=Title", "é" * 128) == StatusCode.REQUEST_ENTITY_TOO_LARGE
    )  # 256 B
    assert code(a, Replace, "./Vendor/v?prop=Title", "Zähler") == OK
    assert prop(a, "./Vendor/v", "Title") == "Zähler"


@pytest.mark.parametrize("name", ["Format", "Size", "Type", "TStamp", "VerNo", "format"])
def test_read_only_properties_cannot_be_replaced(a: TreeSession, name: str) -> None:
    assert code(a, Add, "./Vendor/v", "1") == OK
    assert code(a, Replace, f"./Vendor/v?prop={name}", "x") == StatusCode.COMMAND_NOT_ALLOWED


def test_unknown_properties_are_406(a: TreeSession) -> None:
    assert code(a, Add, "./Vendor/v", "1") == OK
    assert code(a, Replace, "./Vendor/v?prop=Colour", "red") == StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED
    assert code(a, Get, "./Vendor/v?prop=Colour") == StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED


def test_title_needs_replace_rights(acl_tree: DMTree) -> None:
    c = acl_tree.session("srv-c")
    assert code(c, Replace, "./P/L?prop=Title", "t") == StatusCode.PERMISSION_DENIED


# -- TNDS Replace


def _app_subtree(a: TreeSession) -> None:
    assert code(a, Add, "./Vendor/App", fmt="node") == OK
    assert code(a, Add, "./Vendor/App/Keep", "same") == OK
    assert code(a, Add, "./Vendor/App/Change", "old") == OK
    assert code(a, Add, "./Vendor/App/Drop", "gone") == OK
    assert code(a, Add, "./Vendor/App/Dir", fmt="node") == OK
    assert code(a, Add, "./Vendor/App/Dir/Inner", "i") == OK
    assert code(a, Add, "./Vendor/App/Flip", fmt="node") == OK


def test_tnds_replace_makes_the_sub_tree_equal_to_the_object(tree: DMTree, a: TreeSession) -> None:
    _app_subtree(a)
    document = tnds_doc(
        node_xml(
            "App",
            node_xml("Keep", value="same"),
            node_xml("Change", fmt="int", value="7"),
            node_xml("Dir", node_xml("Added", value="a")),
            node_xml("Flip", value="now a leaf"),
            node_xml("New", fmt="node"),
            fmt="node",
        )
    )
    assert tnds_write(a, Replace, "./Vendor/App", document) == OK
    assert {p for p in tree.store.all_paths() if p.startswith("./Vendor/App/")} == {
        "./Vendor/App/Keep",
        "./Vendor/App/Change",
        "./Vendor/App/Dir",
        "./Vendor/App/Dir/Added",
        "./Vendor/App/Flip",
        "./Vendor/App/New",
    }
    assert result(do(a, Get, "./Vendor/App/Change")).meta == Meta(format="int", type="text/plain")
    assert value(a, "./Vendor/App/Change") == "7"
    assert prop(a, "./Vendor/App/Change", "VerNo") == "1"
    assert prop(a, "./Vendor/App/Keep", "VerNo") == "0"  # unchanged leaves are left alone
    assert value(a, "./Vendor/App/Flip") == "now a leaf"
    assert prop(a, "./Vendor/App/New", "Format") == "node"


def test_tnds_replace_with_children_of_the_target(tree: DMTree, a: TreeSession) -> None:
    _app_subtree(a)
    document = tnds_doc(node_xml("Only", value="1"))
    assert tnds_write(a, Replace, "./Vendor/App", document) == OK
    assert value(a, "./Vendor/App") == "Only"


def test_tnds_replace_is_all_or_nothing(tree: DMTree, a: TreeSession) -> None:
    _app_subtree(a)
    before = snapshot(tree)
    document = tnds_doc(
        node_xml("App", node_xml("Keep", value="changed"), node_xml("Bad", fmt="int", value="x"), fmt="node")
    )
    assert tnds_write(a, Replace, "./Vendor/App", document) == StatusCode.BAD_REQUEST
    assert snapshot(tree) == before
    assert tnds_write(a, Replace, "./Vendor/Missing", tnds_doc(node_xml("Missing", fmt="node"))) == (
        StatusCode.NOT_FOUND
    )


def test_tnds_replace_checks_delete_and_replace_rights(bare: DMTree) -> None:
    bare.system_add_interior("./Z", acl=f"Add=*&Get=*&Replace={SERVER_A}")
    bare.system_set("./Z/x", "1")
    a, b = bare.session(SERVER_A), bare.session(SERVER_B)
    assert tnds_write(b, Replace, "./Z", tnds_doc(node_xml("Z", node_xml("x", value="2")))) == (
        StatusCode.PERMISSION_DENIED
    )
    assert tnds_write(a, Replace, "./Z", tnds_doc(node_xml("Z", node_xml("x", value="2")))) == OK
    # Dropping x is a Delete, which nobody was granted.
    assert tnds_write(a, Replace, "./Z", tnds_doc(node_xml("Z", fmt="node"))) == StatusCode.PERMISSION_DENIED
    assert bare.system_value("./Z/x") == "2"


def test_tnds_replace_keeps_secrets_left_out_of_list_tnds(std: DMTree) -> None:
    a = std.session(SERVER_A)
    dump = result(do(a, Get, "./DMAcc/acc-a?list=TNDS")).data
    assert isinstance(dump, str)
    assert "s3cret" not in dump
    changed = dump.replace("dev-user", "new-user")
    assert tnds_write(a, Replace, "./DMAcc/acc-a", changed) == OK
    assert std.system_value("./DMAcc/acc-a/AppAuth/1/AAuthName") == "new-user"
    assert std.system_value("./DMAcc/acc-a/AppAuth/1/AAuthSecret") == "s3cret-password"
    assert std.system_value("./DMAcc/acc-a/AppAuth/1/AAuthData") == b"\x00\x01nonce\xff"


def test_tnds_replace_of_a_leaf_target_and_of_read_only_mos(std: DMTree) -> None:
    a = std.session(SERVER_A)
    assert code(a, Add, "./Vendor/leaf", "1") == OK
    assert tnds_write(a, Replace, "./Vendor/leaf", tnds_doc(node_xml("", value="2"))) == OK
    assert value(a, "./Vendor/leaf") == "2"
    assert tnds_write(a, Replace, "./Vendor/leaf", tnds_doc(node_xml("leaf", fmt="node"))) == (
        StatusCode.COMMAND_NOT_ALLOWED
    )
    assert tnds_write(a, Replace, "./DevInfo", tnds_doc(node_xml("DevInfo", fmt="node"))) == (
        StatusCode.COMMAND_NOT_ALLOWED
    )


# ---------------------------------------------------------------------------------------
# Delete


def test_delete_leaf_and_sub_tree(tree: DMTree, a: TreeSession) -> None:
    assert code(a, Add, "./Vendor/n", fmt="node") == OK
    assert code(a, Add, "./Vendor/n/m", fmt="node") == OK
    assert code(a, Add, "./Vendor/n/m/leaf", "1") == OK
    assert code(a, Add, "./Vendor/n/other", "2") == OK
    assert code(a, Delete, "./Vendor/n/other") == OK
    assert value(a, "./Vendor/n") == "m"
    assert code(a, Delete, "./Vendor/n") == OK
    assert [p for p in tree.store.all_paths() if p.startswith("./Vendor/")] == []
    assert code(a, Delete, "./Vendor/n") == StatusCode.NOT_FOUND
    assert code(a, Delete, "./Vendor/n?prop=Title") == StatusCode.COMMAND_NOT_ALLOWED


def test_delete_refusals(std: DMTree) -> None:
    a, b = std.session(SERVER_A), std.session(SERVER_B)
    assert code(a, Delete, ".") == StatusCode.COMMAND_NOT_ALLOWED
    assert code(a, Delete, "./DevInfo") == StatusCode.COMMAND_NOT_ALLOWED
    assert code(a, Delete, "./DevInfo/Man") == StatusCode.COMMAND_NOT_ALLOWED
    assert code(b, Delete, "./DMAcc/acc-a") == StatusCode.PERMISSION_DENIED
    # AppID lacks Delete in DMAcc's AccessType: not on its own, only with its account.
    assert code(a, Delete, "./DMAcc/acc-a/AppID") == StatusCode.COMMAND_NOT_ALLOWED
    assert code(a, Delete, "./DMAcc/acc-a/AppAuth/1/AAuthSecret") == OK  # optional: deletable
    assert code(a, Delete, "./DMAcc/acc-a") == OK
    assert std.store.children("./DMAcc") == []


def test_a_node_holding_permanent_nodes_cannot_be_deleted(tree: DMTree, a: TreeSession) -> None:
    assert code(a, Add, "./Vendor/Box", fmt="node") == OK
    tree.mount(DEVINFO, "./Vendor/Box/Info", values={"DevId": "x"})
    assert code(a, Delete, "./Vendor/Box") == StatusCode.COMMAND_NOT_ALLOWED
    assert code(a, Replace, "./Vendor/Box?prop=Name", "Crate") == StatusCode.COMMAND_NOT_ALLOWED
    assert value(a, "./Vendor/Box/Info/DevId") == "x"


# ---------------------------------------------------------------------------------------
# Get


def test_get_leaf_meta_only_when_not_the_defaults(a: TreeSession) -> None:
    assert code(a, Add, "./Vendor/plain", "text") == OK
    assert code(a, Add, "./Vendor/typed", "<a/>", typ="application/xml") == OK
    assert code(a, Add, "./Vendor/num", "5", fmt="int") == OK
    assert result(do(a, Get, "./Vendor/plain")) == Item(source=Source("./Vendor/plain"), data="text")
    assert result(do(a, Get, "./Vendor/typed")).meta == Meta(format="chr", type="application/xml")
    assert result(do(a, Get, "./Vendor/num")).meta == Meta(format="int", type="text/plain")


def test_get_interior_lists_escaped_children(a: TreeSession) -> None:
    assert code(a, Add, "./Vendor/dir", fmt="node") == OK
    got = result(do(a, Get, "./Vendor/dir"))
    assert (got.meta, got.data) == (Meta(format="node"), "")  # empty list: empty Data, 200
    for name in ("b", "a b", "50%", "é"):
        assert code(a, Add, f"./Vendor/dir/{name.replace('%', '%25')}", "x") == OK
    assert result(do(a, Get, "./Vendor/dir")).data == "b/a%20b/50%25/%C3%A9"
    assert value(a, "./Vendor/dir/a%20b") == "x"


def test_get_404_and_425(std: DMTree) -> None:
    b = std.session(SERVER_B)
    assert code(b, Get, "./Nowhere") == StatusCode.NOT_FOUND
    assert code(b, Get, "./DMAcc") == OK
    assert value(b, "./DMAcc") == "acc-a"  # child names are visible to whoever may Get the parent
    assert code(b, Get, "./DMAcc/acc-a") == StatusCode.PERMISSION_DENIED
    assert code(b, Get, "./DMAcc/acc-a/ServerID") == StatusCode.PERMISSION_DENIED
    assert code(b, Get, "./DMAcc/acc-a?prop=ACL") == StatusCode.PERMISSION_DENIED


def test_secrets_are_never_readable(std: DMTree) -> None:
    a = std.session(SERVER_A)
    secret_paths = ("./DMAcc/acc-a/AppAuth/1/AAuthSecret", "./DMAcc/acc-a/AppAuth/1/AAuthData")
    for path in secret_paths:
        assert code(a, Get, path) == StatusCode.COMMAND_NOT_ALLOWED
        assert code(a, Get, f"{path}?prop=Size") == StatusCode.COMMAND_NOT_ALLOWED
        assert code(a, Get, f"{path}?prop=Format") == OK  # other properties: with Get rights
        assert code(a, Copy, "./DMAcc/acc-a/Ext", source=path) == StatusCode.COMMAND_NOT_ALLOWED
    structure = do(a, Get, "./DMAcc/acc-a?list=StructData").results
    assert structure is not None
    by_path = {i.source.loc_uri: i for i in structure if i.source is not None}
    for path in secret_paths:
        assert by_path[path].data is None  # listed (structure) but without data
    assert by_path["./DMAcc/acc-a/AppAuth/1/AAuthName"].data == "dev-user"
    dump = result(do(a, Get, "./DMAcc?list=TNDS")).data
    assert isinstance(dump, str)
    assert "s3cret" not in dump and base64.b64encode(b"\x00\x01nonce\xff").decode() not in dump
    nodes = {n.relpath: n for n in decode_tnds(dump).nodes}
    assert nodes["DMAcc/acc-a/AppAuth/1/AAuthSecret"].value is None
    assert nodes["DMAcc/acc-a/AppAuth/1/AAuthSecret"].size is None
    assert nodes["DMAcc/acc-a/AppAuth/1/AAuthName"].value == "dev-user"
    # A Struct-only Get of a secret leaf itself is fine: no data travels.
    assert do(a, Get, f"{secret_paths[0]}?list=Struct").code == OK


def test_properties(tree: DMTree, clock: Clock, a: TreeSession) -> None:
    assert code(a, Add, "./Vendor/n", fmt="node", typ="com.example/1.0/N") == OK
    assert code(a, Add, "./Vendor/n/leaf", "héllo") == OK
    leaf = "./Vendor/n/leaf"
    assert prop(a, leaf, "ACL") == ""  # inherited: its own ACL is empty
    assert prop(a, "./Vendor", "ACL") == ALL_RIGHTS
    assert prop(a, leaf, "Format") == "chr"
    assert prop(a, leaf, "Name") == "leaf"
    assert prop(a, leaf, "Size") == "6"  # bytes of UTF-8
    assert prop(a, leaf, "Title") == ""
    assert prop(a, leaf, "TStamp") == "20260102T030405Z"
    assert prop(a, leaf, "Type") == "text/plain"
    assert prop(a, leaf, "VerNo") == "0"
    assert prop(a, "./Vendor/n", "Type") == "com.example/1.0/N"
    assert prop(a, "./Vendor/n", "Format") == "node"
    assert code(a, Get, "./Vendor/n?prop=Size") == StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED
    assert code(a, Get, "./Vendor/missing?prop=Name") == StatusCode.NOT_FOUND
    got = result(do(a, Get, f"{leaf}?prop=vErNo"))
    assert got.source == Source(f"{leaf}?prop=VerNo") and got.meta is None


def test_get_list_struct_and_struct_data(std: DMTree) -> None:
    a, b = std.session(SERVER_A), std.session(SERVER_B)
    struct = do(a, Get, "./DevDetail?list=Struct").results
    assert struct is not None
    assert [i.source.loc_uri for i in struct if i.source] == [
        "./DevDetail",
        "./DevDetail/URI",
        "./DevDetail/URI/MaxDepth",
        "./DevDetail/URI/MaxTotLen",
        "./DevDetail/URI/MaxSegLen",
        "./DevDetail/DevTyp",
        "./DevDetail/OEM",
        "./DevDetail/FwV",
        "./DevDetail/SwV",
        "./DevDetail/HwV",
        "./DevDetail/LrgObj",
    ]
    assert all(i.data is None for i in struct)
    assert struct[0].meta == Meta(format="node", type="urn:oma:mo:oma-dm-devdetail:1.0")
    assert struct[2].meta is None  # chr, text/plain: no Meta
    assert struct[-1].meta == Meta(format="bool", type="text/plain")
    data = do(a, Get, "./DevDetail?list=StructData").results
    assert data is not None
    assert {i.source.loc_uri: i.data for i in data if i.source}["./DevDetail/LrgObj"] == "true"
    assert data[0].data is None  # interior nodes carry no data
    # Only what the server may Get: b sees the DMAcc node but none of srv-a's account.
    seen_by_b = do(b, Get, ".?list=Struct").results
    assert seen_by_b is not None
    paths = {i.source.loc_uri for i in seen_by_b if i.source}
    assert "./DMAcc" in paths and "./DevInfo/DevId" in paths
    assert not any(p.startswith("./DMAcc/") for p in paths)
    assert code(b, Get, "./DMAcc/acc-a?list=Struct") == StatusCode.PERMISSION_DENIED


def test_get_list_includes_readable_nodes_below_unreadable_ones(bare: DMTree) -> None:
    bare.system_add_interior("./Hidden", acl=f"Get={SERVER_A}")
    bare.system_add_interior("./Hidden/Public", acl="Get=*")
    bare.system_set("./Hidden/Public/v", "1")
    bare.system_set("./Hidden/private", "2")
    b = bare.session(SERVER_B)
    listing = do(b, Get, ".?list=StructData").results
    assert listing is not None
    assert [(i.source.loc_uri, i.data) for i in listing if i.source] == [
        (".", None),
        ("./Hidden/Public", None),
        ("./Hidden/Public/v", "1"),
    ]


def test_get_list_tnds_reads_back_and_selects_properties(std: DMTree) -> None:
    a = std.session(SERVER_A)
    got = result(do(a, Get, "./DevInfo?list=TNDS"))
    assert got.meta == Meta(format="xml", type=TNDS_XML_TYPE)
    assert got.source == Source("./DevInfo")
    assert isinstance(got.data, str)
    document = decode_tnds(got.data)
    nodes = {n.relpath: n for n in document.nodes}
    assert set(nodes) == {
        "DevInfo",
        "DevInfo/DevId",
        "DevInfo/Man",
        "DevInfo/Mod",
        "DevInfo/DmV",
        "DevInfo/Lang",
    }
    assert nodes["DevInfo"].type == "urn:oma:mo:oma-dm-devinfo:1.0" and nodes["DevInfo"].acl == "Get=*"
    assert nodes["DevInfo/Man"].value == "Acme" and nodes["DevInfo/Man"].format == "chr"
    only = decode_tnds(str(result(do(a, Get, "./DevInfo?list=TNDS+Value+ACL")).data))
    man = only.find("DevInfo/Man")
    assert man is not None and (man.value, man.acl, man.format, man.verno) == ("Acme", "", None, None)
    without = decode_tnds(str(result(do(a, Get, "./DevInfo?list=TNDS-Format-Value")).data))
    man = without.find("DevInfo/Man")
    assert man is not None and (man.value, man.format, man.verno) == (None, None, "0")
    assert code(a, Get, "./DevInfo?list=TNDS+Value-ACL") == StatusCode.BAD_REQUEST
    assert code(a, Get, "./DevInfo?list=TNDS+Colour") == StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED
    assert code(a, Get, "./DevInfo?list=Everything") == StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED
    # The whole tree: the root's children are the top-level nodes.
    everything = decode_tnds(str(result(do(a, Get, ".?list=TNDS")).data))
    assert {n.relpath for n in everything.nodes if not n.path} >= {"DevInfo", "DevDetail", "DMAcc", "Vendor"}


@pytest.mark.parametrize(
    "uri",
    ["./a//b", "/Vendor", "./Vendor/", "./Vendor/../x", "./Vendor/%zz", "", "./Vendor?prop=", "./Vendor?foo"],
)
def test_malformed_uris_are_400(a: TreeSession, uri: str) -> None:
    assert code(a, Get, uri) == StatusCode.BAD_REQUEST


def test_uri_limits_come_from_devdetail(std: DMTree) -> None:
    a = std.session(SERVER_A)
    assert code(a, Get, "./Vendor/a/b/c/d/e/f/g/h/i/j") == StatusCode.NOT_FOUND  # 0 = unlimited
    std.system_set("./DevDetail/URI/MaxDepth", "3")
    assert code(a, Get, "./DevInfo/Man") == OK
    assert code(a, Get, "./Vendor/a/b/c") == StatusCode.URI_TOO_LONG
    assert code(a, Add, "./Vendor/a/b/c", "x") == StatusCode.URI_TOO_LONG
    std.system_set("./DevDetail/URI/MaxDepth", "0")
    std.system_set("./DevDetail/URI/MaxTotLen", "20")
    assert code(a, Get, "./DevInfo/Man") == OK
    assert code(a, Get, "./DevInfo/Man?prop=Name") == StatusCode.URI_TOO_LONG  # the suffix counts
    std.system_set("./DevDetail/URI/MaxTotLen", "0")
    std.system_set("./DevDetail/URI/MaxSegLen", "6")
    assert code(a, Add, "./Vendor/abcdefg", "x") == StatusCode.URI_TOO_LONG
    assert code(a, Add, "./Vendor/abcdef", "x") == OK
    # A TNDS object cannot create what no URI could address.
    assert code(a, Add, "./Vendor/d", fmt="node") == OK
    assert (
        tnds_write(a, Add, "./Vendor/d", tnds_doc(node_xml("toolong", value="1"))) == StatusCode.URI_TOO_LONG
    )


# ---------------------------------------------------------------------------------------
# Exec


class Recorder(NodeHandler):
    """Records Execs and change notices; answers Exec with ``answer``."""

    def __init__(self, answer: int = StatusCode.ACCEPTED_FOR_PROCESSING) -> None:
        self.answer = answer
        self.execs: list[tuple[str, str | bytes | None, str | None, str]] = []
        self.changes: list[tuple[str, str]] = []
        self.writes: Callable[[DMTree], None] | None = None

    def execute(
        self, tree: DMTree, path: str, data: str | bytes | None, correlator: str | None, server_id: str
    ) -> Outcome:
        self.execs.append((path, data, correlator, server_id))
        if self.writes is not None:
            self.writes(tree)
        return Outcome(self.answer)

    def changed(self, tree: DMTree, path: str, command: str) -> None:
        self.changes.append((path, command))


def test_exec_runs_the_registered_handler(std: DMTree) -> None:
    handler = Recorder()
    std.register_handler("./Apps/*/Run", handler)
    a, b = std.session(SERVER_A), std.session(SERVER_B)
    assert code(a, Exec, "./Apps/one/Run", "go") == StatusCode.NOT_FOUND
    assert code(a, Add, "./Apps/one", fmt="node") == OK
    assert code(a, Add, "./Apps/one/Run", "") == OK
    outcome = do(a, Exec, "./Apps/one/Run", "go", correlator="c-42")
    assert (outcome.code, outcome.target_ref) == (StatusCode.ACCEPTED_FOR_PROCESSING, "./Apps/one/Run")
    assert handler.execs == [("./Apps/one/Run", "go", "c-42", SERVER_A)]
    assert code(a, Exec, "./Apps/one/Name") == StatusCode.NOT_FOUND
    assert code(a, Add, "./Apps/one/Name", "n") == OK
    assert code(a, Exec, "./Apps/one/Name") == StatusCode.COMMAND_NOT_ALLOWED  # the MO forbids Exec
    assert code(a, Exec, "./Apps/one/Run?prop=Name") == StatusCode.COMMAND_NOT_ALLOWED
    std.system_add_interior("./Ro", acl="Get=*")
    std.system_set("./Ro/Run", "")
    std.register_handler("./Ro/Run", handler)
    assert code(b, Exec, "./Ro/Run") == StatusCode.PERMISSION_DENIED
    assert len(handler.execs) == 1


def test_exec_without_a_handler_is_405(a: TreeSession) -> None:
    assert code(a, Add, "./Vendor/cmd", "") == OK
    assert code(a, Exec, "./Vendor/cmd") == StatusCode.COMMAND_NOT_ALLOWED
    assert code(a, Exec, "./Vendor/none") == StatusCode.NOT_FOUND


def test_exec_checks_the_acl_before_looking_for_a_handler(bare: DMTree) -> None:
    bare.system_add_interior("./X", acl=f"Exec={SERVER_A}&Get=*")
    bare.system_set("./X/plain", "")
    assert code(bare.session(SERVER_B), Exec, "./X/plain") == StatusCode.PERMISSION_DENIED
    assert code(bare.session(SERVER_A), Exec, "./X/plain") == StatusCode.COMMAND_NOT_ALLOWED


def test_default_node_handler_refuses_exec(tree: DMTree, a: TreeSession) -> None:
    tree.register_handler("./Vendor/*", NodeHandler())
    assert code(a, Add, "./Vendor/cmd", "") == OK
    assert code(a, Exec, "./Vendor/cmd") == StatusCode.COMMAND_NOT_ALLOWED


def test_a_failing_handler_leaves_nothing_behind(tree: DMTree, a: TreeSession) -> None:
    handler = Recorder(answer=StatusCode.COMMAND_FAILED)
    handler.writes = lambda t: t.system_set("./Vendor/side-effect", "written")
    tree.register_handler("./Vendor/cmd", handler)
    assert code(a, Add, "./Vendor/cmd", "") == OK
    before = snapshot(tree)
    assert code(a, Exec, "./Vendor/cmd") == StatusCode.COMMAND_FAILED
    assert snapshot(tree) == before

    def crash(t: DMTree) -> None:
        t.system_set("./Vendor/side-effect", "written")
        raise RuntimeError("the handler broke mid-way")

    handler.writes = crash
    assert code(a, Exec, "./Vendor/cmd") == StatusCode.COMMAND_FAILED
    assert snapshot(tree) == before
    handler.writes = lambda t: t.system_set("./Vendor/side-effect", "written")
    handler.answer = StatusCode.OK
    assert code(a, Exec, "./Vendor/cmd") == OK
    assert tree.system_value("./Vendor/side-effect") == "written"


# ---------------------------------------------------------------------------------------
# Copy


def test_copy_to_a_new_node_and_over_an_existing_one(a: TreeSession) -> None:
    assert code(a, Add, "./Vendor/src", "42", fmt="int", typ="text/x-n") == OK
    assert code(a, Copy, "./Vendor/dst", source="./Vendor/src") == OK
    got = result(do(a, Get, "./Vendor/dst"))
    assert (got.meta, got.data) == (Meta(format="int", type="text/x-n"), "42")
    assert code(a, Add, "./Vendor/old", "x") == OK
    assert code(a, Copy, "./Vendor/old", source="./Vendor/src") == OK  # Replace semantics
    assert (value(a, "./Vendor/old"), prop(a, "./Vendor/old", "VerNo")) == ("42", "1")
    assert code(a, Add, "./Vendor/bin", base64.b64encode(b"\x01\x02").decode(), fmt="b64") == OK
    assert code(a, Copy, "./Vendor/bin2", source="./Vendor/bin") == OK
    assert value(a, "./Vendor/bin2") == b"\x01\x02"


def test_copy_refusals(std: DMTree) -> None:
    a, b = std.session(SERVER_A), std.session(SERVER_B)
    assert code(a, Copy, "./Vendor/x", source="./Vendor/missing") == StatusCode.NOT_FOUND
    assert code(a, Copy, "./Vendor/x", source="./DevInfo") == StatusCode.COMMAND_NOT_ALLOWED
    assert code(a, Copy, "./Vendor/x") == StatusCode.INCOMPLETE_COMMAND
    assert code(b, Copy, "./Vendor/x", source="./DMAcc/acc-a/ServerID") == StatusCode.PERMISSION_DENIED
    assert code(a, Copy, "./Vendor/x", source="./DMAcc/acc-a/ServerID") == OK
    assert code(a, Copy, "./Vendor?prop=Title", source="./DevInfo/Man") == StatusCode.COMMAND_NOT_ALLOWED
    # The target's rights: Add on its parent, or Replace on itself.
    assert code(b, Copy, "./DevInfo/Copy", source="./DevInfo/Man") == StatusCode.COMMAND_NOT_ALLOWED
    std.system_add_interior("./Ro", acl="Get=*")
    assert code(b, Copy, "./Ro/Copy", source="./DevInfo/Man") == StatusCode.PERMISSION_DENIED
    assert (
        code(a, Copy, "./Vendor", source="./DevInfo/Man") == StatusCode.COMMAND_NOT_ALLOWED
    )  # interior target
    # A target that cannot take the value for other reasons: 403.
    assert code(a, Add, "./Apps/one", fmt="node") == OK
    assert code(a, Copy, "./Apps/one/Level", source="./DevInfo/Man") == StatusCode.FORBIDDEN


# ---------------------------------------------------------------------------------------
# ACLs: inheritance, "*", several servers


def test_empty_acls_inherit_from_the_nearest_non_empty_ancestor(bare: DMTree) -> None:
    bare.system_add_interior("./A", acl=f"Get={SERVER_A}&Replace={SERVER_A}")
    bare.system_add_interior("./A/B")
    bare.system_add_interior("./A/B/C", acl=f"Get={SERVER_B}")
    bare.system_set("./A/B/leaf", "1")
    bare.system_set("./A/B/C/leaf", "2")
    assert bare.effective_acl("./A/B/leaf") == parse_acl(f"Get={SERVER_A}&Replace={SERVER_A}")
    assert bare.effective_acl("./A/B/C/leaf") == parse_acl(f"Get={SERVER_B}")
    a, b = bare.session(SERVER_A), bare.session(SERVER_B)
    assert code(a, Get, "./A/B/leaf") == OK and code(b, Get, "./A/B/leaf") == StatusCode.PERMISSION_DENIED
    # No merging: C's ACL names only Get for b, so a may neither read nor change below it.
    assert code(a, Get, "./A/B/C/leaf") == StatusCode.PERMISSION_DENIED
    assert code(a, Replace, "./A/B/C/leaf", "x") == StatusCode.PERMISSION_DENIED
    assert code(b, Replace, "./A/B/C/leaf", "x") == StatusCode.PERMISSION_DENIED
    assert code(b, Get, "./A/B/C/leaf") == OK


def test_star_grants_every_server(bare: DMTree) -> None:
    bare.system_add_interior("./S", acl="Get=*&Replace=*")
    bare.system_set("./S/v", "1")
    for server in ("x", "y", "some.server.example:8443"):
        assert code(bare.session(server), Replace, "./S/v", server) == OK


def test_two_management_authorities(std: DMTree) -> None:
    std.system_add_interior("./A", acl=f"Add={SERVER_A}&Delete={SERVER_A}&Get=*&Replace={SERVER_A}")
    std.system_add_interior("./B", acl=f"Add={SERVER_B}&Delete={SERVER_B}&Get={SERVER_B}&Replace={SERVER_B}")
    a, b = std.session(SERVER_A), std.session(SERVER_B)
    assert code(a, Add, "./A/setting", "1") == OK
    assert code(b, Add, "./A/other", "1") == StatusCode.PERMISSION_DENIED
    assert code(b, Replace, "./A/setting", "2") == StatusCode.PERMISSION_DENIED
    assert code(b, Delete, "./A/setting") == StatusCode.PERMISSION_DENIED
    assert code(b, Replace, "./A?prop=ACL", "Get=*") == StatusCode.PERMISSION_DENIED
    # b has Replace on neither ./A nor its parent (the root): it cannot take the node over.
    assert value(b, "./A/setting") == "1"  # Get=* lets b read what a manages
    assert code(b, Add, "./B/mine", "1") == OK
    assert code(a, Get, "./B/mine") == StatusCode.PERMISSION_DENIED
    assert code(a, Get, "./B") == StatusCode.PERMISSION_DENIED


# ---------------------------------------------------------------------------------------
# Atomic through TreeSession


def test_atomic_rollback_restores_the_tree_exactly(tree: DMTree, clock: Clock, a: TreeSession) -> None:
    handler = Recorder()
    tree.register_handler("./Vendor/*", handler)
    assert code(a, Add, "./Vendor/v", "1") == OK
    assert code(a, Add, "./Vendor/gone", "x") == OK
    handler.changes.clear()
    before = snapshot(tree)
    clock.tick(60)
    a.begin_atomic()
    assert code(a, Replace, "./Vendor/v", "2") == OK
    assert code(a, Add, "./Vendor/new", fmt="node") == OK
    assert code(a, Delete, "./Vendor/gone") == OK
    assert code(a, Replace, "./Vendor/v?prop=Title", "t") == OK
    assert code(a, Replace, "./Vendor/missing", "x") == StatusCode.NOT_FOUND
    a.end_atomic(commit=False)
    assert snapshot(tree) == before  # values, VerNo, TStamp, Title: all as before
    assert handler.changes == []  # nothing committed, nothing announced
    a.end_atomic(commit=False)  # a second end is harmless


def test_atomic_commit_keeps_everything(tree: DMTree, a: TreeSession) -> None:
    handler = Recorder()
    tree.register_handler("./Vendor/*", handler)
    a.begin_atomic()
    assert code(a, Add, "./Vendor/x", "1") == OK
    assert code(a, Add, "./Vendor/y", "2") == OK
    assert handler.changes == []  # not before the commit
    with pytest.raises(RuntimeError):
        a.begin_atomic()
    a.end_atomic(commit=True)
    assert (value(a, "./Vendor/x"), value(a, "./Vendor/y")) == ("1", "2")
    assert handler.changes == [("./Vendor/x", "Add"), ("./Vendor/y", "Add")]


def test_a_failed_command_inside_an_atomic_undoes_only_itself_until_the_end(
    tree: DMTree, a: TreeSession
) -> None:
    a.begin_atomic()
    assert code(a, Add, "./Vendor/x", "1") == OK
    assert code(a, Add, "./Vendor/x/y", "1") == StatusCode.COMMAND_NOT_ALLOWED
    assert value(a, "./Vendor/x") == "1"
    a.end_atomic(commit=True)
    assert value(a, "./Vendor/x") == "1"


# ---------------------------------------------------------------------------------------
# A real client/server session over the tree


def _pair(tree: DMTree) -> tuple[ClientSession, ServerSession]:
    client = ClientSession(
        ClientConfig(device_id="IMEI:493005100592800", server_uri="http://dm.example/dm", session_id="1"),
        tree.session(SERVER_A),
    )
    server = ServerSession(ServerConfig(server_uri="http://dm.example/dm"))
    return client, server


def _client_statuses(bodies: list[bytes]) -> list[tuple[str, int]]:
    out = []
    for body in bodies[1:]:
        message, _ = codec.decode(body)
        out += [(s.cmd, s.code) for s in message.commands if isinstance(s, Status) and s.cmd != "SyncHdr"]
    return out


def _add(uri: str, data: str | None = None, fmt: str | None = None) -> Add:
    return Add("0", (item(uri, data, fmt=fmt),))


def test_atomic_over_a_real_session(tree: DMTree) -> None:
    client, server = _pair(tree)
    assert code(tree.session(SERVER_A), Add, "./Vendor/v", "old") == OK
    before = snapshot(tree)
    good = Atomic("0", (_add("./Vendor/a", "1"), Replace("0", (item("./Vendor/v", "new"),))))
    bad = Atomic(
        "0",
        (
            _add("./Vendor/b", "1"),
            Replace("0", (item("./Vendor/v", "newer"),)),
            _add("./Vendor/b/c", "1"),  # under a leaf: 405
            _add("./Vendor/d", "1"),
        ),
    )
    with_get = Atomic("0", (_add("./Vendor/e", "1"), Get("0", (item("./Vendor/v"),))))
    t = run_in_memory(client, server, queue_when_started(good, bad, with_get))
    assert _client_statuses(t.client_bodies) == [
        ("Atomic", 200),
        ("Add", 200),
        ("Replace", 200),
        ("Atomic", 507),
        ("Add", 216),
        ("Replace", 216),
        ("Add", 405),
        ("Add", 215),
        ("Atomic", 507),
        ("Add", 215),
        ("Get", 500),
    ]
    assert tree.system_value("./Vendor/a") == "1" and tree.system_value("./Vendor/v") == "new"
    for path in ("./Vendor/b", "./Vendor/d", "./Vendor/e"):
        assert tree.system_get(path) is None
    after = {r.path: r for r in snapshot(tree) if r is not None}
    assert {r.path for r in before if r is not None} | {"./Vendor/a"} == set(after)


def test_sequence_over_a_real_session_keeps_order(tree: DMTree) -> None:
    client, server = _pair(tree)
    blob = base64.b64encode(b"\x00\xfe").decode()
    seq = Sequence(
        "0",
        (
            _add("./Vendor/s", fmt="node"),
            _add("./Vendor/s/v", "1", fmt="int"),
            Replace("0", (item("./Vendor/s/v", "2", fmt="int"),)),
            Get("0", (item("./Vendor/s/v"),)),
            Delete("0", (item("./Vendor/s/v"),)),
            Get("0", (item("./Vendor/s"),)),
            _add("./Vendor/s/bin", blob, fmt="b64"),
            Get("0", (item("./Vendor/s/bin"),)),
        ),
    )
    t = run_in_memory(client, server, queue_when_started(seq))
    assert _client_statuses(t.client_bodies) == [
        ("Sequence", 200),
        ("Add", 200),
        ("Add", 200),
        ("Replace", 200),
        ("Get", 200),
        ("Delete", 200),
        ("Get", 200),
        ("Add", 200),
        ("Get", 200),
    ]
    results = [e.results for e in t.of("server", ResultsReceived)]
    # Binary data travels as b64 over XML (the server application decodes it).
    assert [r.items[0].data for r in results] == ["2", "", blob]
    assert results[2].items[0].meta == Meta(format="b64", type="text/plain")
    assert isinstance(results[0], Results) and results[0].items[0].meta == Meta(
        format="int", type="text/plain"
    )
    assert tree.system_value("./Vendor/s/bin") == b"\x00\xfe"


# ---------------------------------------------------------------------------------------
# The standard MOs


def test_mounting_builds_the_permanent_nodes_with_values_and_default_acls(std: DMTree) -> None:
    for path in ("./DevInfo", "./DevInfo/DevId", "./DevDetail/URI/MaxDepth", "./DMAcc"):
        record = std.system_get(path)
        assert record is not None and record.permanent, path
    assert std.system_get("./DevInfo/Ext") is None  # optional: not built
    info = std.system_get("./DevInfo")
    assert info is not None and (info.acl, info.type) == ("Get=*", "urn:oma:mo:oma-dm-devinfo:1.0")
    assert std.system_value("./DevInfo/Man") == "Acme"
    lrg = std.system_get("./DevDetail/LrgObj")
    assert lrg is not None and (lrg.format, lrg.value) == ("bool", b"true")
    assert std.system_get("./DevDetail/OEM") is not None and std.system_value("./DevDetail/OEM") is None
    dmacc = std.system_get("./DMAcc")
    assert dmacc is not None and dmacc.type == "urn:oma:mo:oma-dm-dmacc:1.0"
    b = std.session(SERVER_B)
    assert value(b, "./DevInfo/DevId") == "IMEI:493005100592800"  # every server reads DevInfo
    assert value(b, "./DevDetail/LrgObj") == "true"


def test_mounting_again_keeps_values_and_applies_given_ones(std: DMTree) -> None:
    std.system_set("./DevInfo/Lang", "de-DE")
    before = std.system_get("./DevInfo/Mod")
    std.mount(DEVINFO, values={"Man": "Acme Corp"})
    assert std.system_value("./DevInfo/Lang") == "de-DE"
    assert std.system_value("./DevInfo/Man") == "Acme Corp"
    assert std.system_get("./DevInfo/Mod") == before
    man = std.system_get("./DevInfo/Man")
    assert man is not None and man.verno == 1
    std.mount(DEVINFO, values={"Man": "Acme Corp"})  # the same value: no change at all
    man_again = std.system_get("./DevInfo/Man")
    assert man_again == man
    with pytest.raises(ValueError, match="Colour"):
        std.mount(DEVINFO, values={"Colour": "red"})
    with pytest.raises(ValueError, match="x/AppID"):
        std.mount(DMACC, values={"x/AppID": "w7"})
    std.system_set("./Elsewhere", "a leaf")
    with pytest.raises(TreeError) as info:
        std.mount(APPS, "./Elsewhere/Apps")
    assert info.value.status == StatusCode.COMMAND_NOT_ALLOWED
    assert std.mount(APPS, "./Vendor/Deep/Apps") == "./Vendor/Deep/Apps"  # missing parents are made
    deep = std.system_get("./Vendor/Deep")
    assert deep is not None and deep.permanent


def test_definition_resolves_placeholders(std: DMTree) -> None:
    addr = std.definition("./DMAcc/acc-a/AppAddr/1/Addr")
    assert addr is not None and addr.name == "Addr"
    account = std.definition("./DMAcc/anything")
    assert account is not None and account.is_placeholder
    assert std.definition("./DevInfo") is DEVINFO.root
    assert std.definition("./Vendor/x") is None
    assert std.definition("./DevInfo/Ext/Vendor/x") is None  # below an open node
    secret = std.definition("./DMAcc/acc-a/AppAuth/1/AAuthSecret")
    assert secret is not None and secret.secret
    assert std.in_mo("./DMAcc/acc-a") and not std.in_mo("./Vendor")


def test_a_second_dmacc_account_needs_an_acl_that_allows_it(std: DMTree) -> None:
    b = std.session(SERVER_B)
    assert code(b, Add, "./DMAcc/acc-b", fmt="node") == StatusCode.PERMISSION_DENIED
    std.system_get("./DMAcc")
    with std.store.transaction():
        record = std.store.get("./DMAcc")
        assert record is not None
        std.store.put(record.with_(acl=f"Add={SERVER_B}&Get=*"))
    assert code(b, Add, "./DMAcc/acc-b", fmt="node") == OK
    # The automatic ACL makes b the manager of its account (it had no Replace on ./DMAcc).
    assert parse_acl(prop(b, "./DMAcc/acc-b", "ACL")).allows("Replace", SERVER_B)
    assert code(b, Add, "./DMAcc/acc-b/AppID", "w7") == OK
    assert code(b, Add, "./DMAcc/acc-b/AppID2", "w7") == StatusCode.COMMAND_NOT_ALLOWED
    assert code(b, Add, "./DMAcc/acc-b/ServerID", SERVER_B) == OK
    assert code(b, Add, "./DMAcc/acc-b/AppAuth", fmt="node") == OK
    assert code(b, Add, "./DMAcc/acc-b/AppAuth/1", fmt="node") == OK
    nonce = bytes(range(16))
    assert (
        code(b, Add, "./DMAcc/acc-b/AppAuth/1/AAuthData", base64.b64encode(nonce).decode(), fmt="b64") == OK
    )
    assert std.system_value("./DMAcc/acc-b/AppAuth/1/AAuthData") == nonce
    record = std.system_get("./DMAcc/acc-b/AppAuth/1/AAuthData")
    assert record is not None and (record.format, record.type) == ("bin", "application/octet-stream")
    assert code(b, Get, "./DMAcc/acc-b/AppAuth/1/AAuthData") == StatusCode.COMMAND_NOT_ALLOWED
    assert (
        code(b, Add, "./DMAcc/acc-b/AppAuth/1/AAuthSecret", "pw", fmt="bin")
        == StatusCode.UNSUPPORTED_MEDIA_TYPE
    )
    assert code(b, Add, "./DMAcc/acc-b/AppAuth/1/AAuthLevel", "NOPE") == StatusCode.BAD_REQUEST
    # a still cannot touch b's account, nor b a's.
    a = std.session(SERVER_A)
    assert code(a, Get, "./DMAcc/acc-b/ServerID") == StatusCode.PERMISSION_DENIED
    assert code(b, Delete, "./DMAcc/acc-a") == StatusCode.PERMISSION_DENIED


def test_the_device_stores_the_nonce_as_bin(std: DMTree) -> None:
    record = std.system_get("./DMAcc/acc-a/AppAuth/1/AAuthData")
    assert record is not None and record.format == "bin"
    assert std.system_value("./DMAcc/acc-a/AppAuth/1/AAuthData") == b"\x00\x01nonce\xff"
    std.system_set("./DMAcc/acc-a/AppAuth/1/AAuthData", b"\x00\x00\x00\x00", format="bin")
    assert std.system_value("./DMAcc/acc-a/AppAuth/1/AAuthData") == b"\x00\x00\x00\x00"


def test_system_access(tree: DMTree) -> None:
    tree.system_set("./Dev/a/b", "1")  # missing interior parents are made
    assert tree.system_get("./Dev/a") is not None
    with pytest.raises(TreeError) as info:
        tree.system_set("./Dev/a", "x")
    assert info.value.status == StatusCode.COMMAND_NOT_ALLOWED
    with pytest.raises(TreeError) as info:
        tree.system_set("./Dev/missing", "x", create=False)
    assert info.value.status == StatusCode.NOT_FOUND
    with pytest.raises(TreeError) as info:
        tree.system_set("./Dev/n", "abc", format="int")
    assert info.value.status == StatusCode.BAD_REQUEST
    with pytest.raises(TreeError):
        tree.system_delete(".")
    with pytest.raises(TreeError):
        tree.system_set("./Dev/a/b/c", "leaf parent")
    tree.system_delete("./Dev")
    assert tree.system_get("./Dev/a/b") is None
    assert tree.store.integrity_problems() == []


def test_handlers_read_dynamic_values_and_hear_committed_changes(tree: DMTree, a: TreeSession) -> None:
    class Battery(Recorder):
        def read(self, tree: DMTree, path: str) -> bytes | None:
            return b"87"

    battery = Battery()
    tree.register_handler("./Vendor/Battery", battery)
    tree.system_set("./Vendor/Battery", "0")
    assert value(a, "./Vendor/Battery") == "87"
    assert prop(a, "./Vendor/Battery", "Size") == "2"
    watcher = Recorder()
    tree.register_handler("./Vendor", watcher)
    assert code(a, Add, "./Vendor/n", "1") == OK
    assert code(a, Add, "./Vendor/n", "1") == StatusCode.ALREADY_EXISTS
    assert code(a, Delete, "./Vendor/n") == OK
    assert watcher.changes == [("./Vendor/n", "Add"), ("./Vendor/n", "Delete")]


def test_a_failing_change_notice_does_not_fail_the_command(tree: DMTree, a: TreeSession) -> None:
    class Broken(NodeHandler):
        def changed(self, tree: DMTree, path: str, command: str) -> None:
            raise RuntimeError("listener bug")

    tree.register_handler("./Vendor/*", Broken())
    assert code(a, Add, "./Vendor/x", "1") == OK
    assert value(a, "./Vendor/x") == "1"


# ---------------------------------------------------------------------------------------
# Persistence


def test_a_tree_in_a_file_reopens_with_the_same_content(tmp_path: Path, clock: Clock) -> None:
    db = tmp_path / "tree.sqlite"
    store = TreeStore(db)
    tree = DMTree(store, clock=clock)
    tree.mount(DEVINFO, values={"DevId": "IMEI:1", "Man": "Acme"})
    tree.system_add_interior("./Vendor", acl=ALL_RIGHTS)
    a = tree.session(SERVER_A)
    assert code(a, Add, "./Vendor/n", fmt="node") == OK
    assert code(a, Add, "./Vendor/n/bin", base64.b64encode(b"\x00\x01").decode(), fmt="b64") == OK
    assert code(a, Replace, "./Vendor/n?prop=Title", "kept") == OK
    before = snapshot(tree)
    store.close()
    store = TreeStore(db)
    tree = DMTree(store, clock=clock)
    tree.mount(DEVINFO)
    assert snapshot(tree) == before
    assert tree.system_value("./Vendor/n/bin") == b"\x00\x01"
    a = tree.session(SERVER_A)
    assert code(a, Delete, "./DevInfo/Man") == StatusCode.COMMAND_NOT_ALLOWED  # the MO is known again
    store.close()


def test_a_crashed_command_leaves_nothing_on_disk(tmp_path: Path, clock: Clock) -> None:
    db = tmp_path / "tree.sqlite"
    store = TreeStore(db)
    tree = DMTree(store, clock=clock)
    tree.system_add_interior("./Vendor", acl=ALL_RIGHTS)
    tree.system_set("./Vendor/cmd", "")
    handler = Recorder()

    def crash(t: DMTree) -> None:
        t.system_set("./Vendor/half", "written")
        t.system_delete("./Vendor/cmd")
        raise RuntimeError("power cut in software")

    handler.writes = crash
    tree.register_handler("./Vendor/cmd", handler)
    before = snapshot(tree)
    assert code(tree.session(SERVER_A), Exec, "./Vendor/cmd") == StatusCode.COMMAND_FAILED
    store.close()
    store = TreeStore(db)
    assert snapshot(DMTree(store, clock=clock)) == before
    assert store.integrity_problems() == []
    store.close()


# ---------------------------------------------------------------------------------------
# Model-based property test


_NAMES = ("a", "b")
_PATHS = (
    [f"./{x}" for x in _NAMES]
    + [f"./{x}/{y}" for x in _NAMES for y in _NAMES]
    + [f"./{x}/{y}/{z}" for x in _NAMES for y in _NAMES for z in _NAMES]
)
_OPS = st.one_of(
    st.tuples(st.just("add-node"), st.sampled_from(_PATHS), st.just("")),
    st.tuples(st.just("add-leaf"), st.sampled_from(_PATHS), st.sampled_from(["", "x", "y z"])),
    st.tuples(st.just("replace"), st.sampled_from([".", *_PATHS]), st.sampled_from(["1", "22"])),
    st.tuples(st.just("delete"), st.sampled_from([".", *_PATHS]), st.just("")),
    st.tuples(st.just("get"), st.sampled_from([".", *_PATHS]), st.just("")),
)


class _Model:
    """The reference: path -> None (interior) or the leaf's text."""

    def __init__(self) -> None:
        self.nodes: dict[str, str | None] = {".": None}

    @staticmethod
    def parent(path: str) -> str:
        return path.rpartition("/")[0] or "."

    def children(self, path: str) -> set[str]:
        return {p.rpartition("/")[2] for p in self.nodes if p != "." and self.parent(p) == path}

    def apply(self, op: str, path: str, data: str) -> tuple[int, str | None]:
        if op.startswith("add"):
            if path in self.nodes:
                return 418, None
            parent = self.parent(path)
            if parent not in self.nodes:
                return 404, None
            if self.nodes[parent] is not None:
                return 405, None
            self.nodes[path] = None if op == "add-node" else data
            return 200, None
        if path not in self.nodes:
            return 404, None
        if op == "replace":
            if self.nodes[path] is None:
                return 405, None
            self.nodes[path] = data
            return 200, None
        if op == "delete":
            if path == ".":
                return 405, None
            for key in [k for k in self.nodes if k == path or k.startswith(path + "/")]:
                del self.nodes[key]
            return 200, None
        node = self.nodes[path]
        return 200, ("/".join(sorted(self.children(path))) if node is None else node)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_OPS, max_size=30))
def test_commands_agree_with_a_reference_model(ops: list[tuple[str, str, str]]) -> None:
    store = TreeStore(":memory:")
    tree = DMTree(store)
    with store.transaction():
        root = store.get(".")
        assert root is not None
        store.put(root.with_(acl="Add=*&Delete=*&Get=*&Replace=*"))
    session = tree.session(SERVER_A)
    model = _Model()
    for op, path, data in ops:
        expected, expected_data = model.apply(op, path, data)
        if op == "add-node":
            outcome = do(session, Add, path, fmt="node")
        elif op == "add-leaf":
            outcome = do(session, Add, path, data)
        elif op == "replace":
            outcome = do(session, Replace, path, data)
        elif op == "delete":
            outcome = do(session, Delete, path)
        else:
            outcome = do(session, Get, path)
        assert outcome.code == expected, (op, path)
        if op == "get" and expected == 200:
            got = result(outcome).data
            if model.nodes[path] is None:
                assert (
                    isinstance(got, str) and "/".join(sorted(got.split("/") if got else [])) == expected_data
                )
            else:
                assert got == expected_data
    stored = {r.path: (None if r.is_interior else (r.value or b"").decode()) for r in store.subtree(".")}
    assert stored == model.nodes
    assert store.integrity_problems() == []
    store.close()
