"""SCOMO 1.0 / 1.1 as declared (SCOMO digest 2.2-2.6), its codes, its alert Data, and how the
access-type choices play out against the real tree engine."""

from __future__ import annotations

import pytest

from omadm.mo import Access, Format, InvalidModelError, MODef, NodeDef, Occurrence, Scope, parse_ddf, registry
from omadm.mo.model import validate
from omadm.mo.scomo import (
    SCOMO_1_0,
    SCOMO_1_0_URN,
    SCOMO_1_1,
    SCOMO_1_1_URN,
    SCOMO_DEFAULT_ACL,
    scomo_mo,
)
from omadm.mo.scomo_codes import (
    SCOMO_ALERT_TYPE,
    SCOMO_ALERT_TYPES,
    DeliveredState,
    DeliveredStatus,
    DeployedState,
    DeployedStatus,
    DownloadStatus,
    parse_scomo_alert_data,
    scomo_alert_data,
)
from omadm.protocol.codes import StatusCode
from omadm.protocol.messages import Add, Delete, Exec, Get, Item, ItemCommand, Meta, Replace, Target
from omadm.protocol.session import Outcome
from omadm.tree.store import TreeStore
from omadm.tree.tree import DMTree, NodeHandler, TreeSession

RW = Access.ADD | Access.DELETE | Access.GET | Access.REPLACE
REQUIRED = Access.ADD | Access.GET | Access.REPLACE
OPERATION = Access.ADD | Access.EXEC | Access.GET


def node(mo: MODef, path: str) -> NodeDef:
    found = mo.resolve(path)
    assert found is not None, path
    return found


def names(mo: MODef, path: str) -> list[str]:
    return [c.name for c in node(mo, path).children]


# ---------------------------------------------------------------------------------------
# The declaration


def test_identifiers_mount_point_and_acl() -> None:
    assert (SCOMO_1_0.name, SCOMO_1_0.urn, SCOMO_1_0.default_path) == ("SCOMO", SCOMO_1_0_URN, "./SCOMO")
    assert SCOMO_1_0_URN == "urn:oma:mo:oma-scomo:1.0"
    assert (SCOMO_1_1.urn, SCOMO_1_1.root.ddf_name) == ("urn:oma:mo:oma-scomo:1.1", SCOMO_1_1_URN)
    assert SCOMO_1_0.default_acl == SCOMO_DEFAULT_ACL == "Add=*&Delete=*&Exec=*&Get=*&Replace=*"
    assert SCOMO_1_0.root.ddf_name == SCOMO_1_0_URN
    validate(SCOMO_1_0)
    validate(SCOMO_1_1)


def test_the_shape_follows_the_node_tables() -> None:
    mo = SCOMO_1_0
    assert names(mo, "") == ["Download", "Inventory", "Ext"]
    assert names(mo, "Download/<X>") == [
        "PkgID",
        "Name",
        "PkgURL",
        "InstallParams",
        "Description",
        "Status",
        "EnvType",
        "PkgType",
        "Operations",
        "Ext",
    ]
    assert names(mo, "Download/dp/Operations") == ["Download", "DownloadInstall", "DownloadInstallInactive"]
    assert names(mo, "Inventory") == ["Delivered", "Deployed"]
    assert names(mo, "Inventory/Delivered/dp") == [
        "PkgID",
        "Name",
        "Description",
        "InstallParams",
        "Data",
        "Status",
        "State",
        "EnvType",
        "PkgType",
        "Operations",
        "Ext",
    ]
    assert names(mo, "Inventory/Delivered/dp/Operations") == ["Install", "InstallInactive", "Remove"]
    assert names(mo, "Inventory/Deployed/dc") == [
        "ID",
        "PkgIDRef",
        "Name",
        "Description",
        "Version",
        "Status",
        "State",
        "EnvType",
        "Operations",
        "Ext",
    ]
    assert names(mo, "Inventory/Deployed/dc/Operations") == ["Activate", "Deactivate", "Remove"]


def test_version_1_1_adds_reboot_only() -> None:
    assert SCOMO_1_0.resolve("Download/dp/Reboot") is None
    reboot = node(SCOMO_1_1, "Download/dp/Reboot")
    assert (reboot.format, reboot.occurrence, reboot.access) == (Format.CHR, Occurrence.ZERO_OR_ONE, RW)
    assert (
        names(SCOMO_1_1, "Download/dp").index("Reboot")
        == names(SCOMO_1_1, "Download/dp").index("InstallParams") + 1
    )
    paths_10 = {p for p, _ in SCOMO_1_0.walk()}
    paths_11 = {p for p, _ in SCOMO_1_1.walk()}
    assert paths_11 - paths_10 == {"Download/<X>/Reboot"}


def test_fixed_parents_are_permanent_and_read_only() -> None:
    for path in ("", "Download", "Inventory", "Inventory/Delivered", "Inventory/Deployed"):
        n = node(SCOMO_1_0, path)
        assert (n.format, n.access, n.scope, n.occurrence) == (
            Format.NODE,
            Access.GET,
            Scope.PERMANENT,
            Occurrence.ONE,
        ), path
    ext = node(SCOMO_1_0, "Ext")
    assert ext.is_open and ext.occurrence == Occurrence.ZERO_OR_ONE and ext.access == Access.GET


def test_placeholders_are_dynamic_and_titled() -> None:
    for path, access in (
        ("Download/<X>", RW),
        ("Inventory/Delivered/<X>", RW),
        ("Inventory/Deployed/<X>", Access.GET),
    ):
        n = node(SCOMO_1_0, path)
        assert n.is_placeholder and n.title
        assert (n.access, n.scope, n.occurrence) == (access, Scope.DYNAMIC, Occurrence.ZERO_OR_MORE), path
    # below a dynamic placeholder everything is dynamic: it comes and goes with its DP or DC
    for path, n in SCOMO_1_0.walk():
        if "<X>" in path:
            assert n.scope is Scope.DYNAMIC, path


@pytest.mark.parametrize("dp", ["Download/dp", "Inventory/Delivered/dp"])
def test_server_written_leaves(dp: str) -> None:
    for name in ("PkgID", "Name"):
        n = node(SCOMO_1_0, f"{dp}/{name}")
        assert (n.format, n.access, n.occurrence) == (Format.CHR, REQUIRED, Occurrence.ONE), name
    for name in ("InstallParams", "Description", "EnvType", "PkgType"):
        n = node(SCOMO_1_0, f"{dp}/{name}")
        assert (n.format, n.access, n.occurrence) == (Format.CHR, RW, Occurrence.ZERO_OR_ONE), name
    assert node(SCOMO_1_0, f"{dp}/Operations").access == Access.ADD | Access.GET
    if dp == "Download/dp":
        assert node(SCOMO_1_0, f"{dp}/PkgURL").access == REQUIRED


def test_status_and_state_are_device_maintained_ints() -> None:
    for path in (
        "Download/dp/Status",
        "Inventory/Delivered/dp/Status",
        "Inventory/Delivered/dp/State",
        "Inventory/Deployed/dc/Status",
        "Inventory/Deployed/dc/State",
    ):
        n = node(SCOMO_1_0, path)
        assert (n.format, n.access, n.occurrence, n.secret) == (Format.INT, Access.GET, Occurrence.ONE, False)
    assert "10 idle" in node(SCOMO_1_0, "Download/dp/Status").description
    assert "70 install failed without data" in node(SCOMO_1_0, "Download/dp/Status").description
    assert "20 installed" in node(SCOMO_1_0, "Inventory/Delivered/dp/State").description
    assert "20 active" in node(SCOMO_1_0, "Inventory/Deployed/dc/State").description


def test_data_is_a_write_only_binary() -> None:
    data = node(SCOMO_1_0, "Inventory/Delivered/dp/Data")
    assert (data.format, data.access, data.occurrence) == (
        Format.BIN,
        Access.ADD | Access.REPLACE,
        Occurrence.ZERO_OR_ONE,
    )
    assert data.secret and data.mime == "application/octet-stream"


def test_deployed_is_read_only_to_servers() -> None:
    for path, n in SCOMO_1_0.walk():
        if path.startswith("Inventory/Deployed/<X>") and "/Operations/" not in path:
            assert n.access == Access.GET, path
    for name in ("ID", "Name", "Version"):
        assert node(SCOMO_1_0, f"Inventory/Deployed/dc/{name}").occurrence == Occurrence.ONE
    for name in ("PkgIDRef", "Description", "EnvType", "Ext"):
        assert node(SCOMO_1_0, f"Inventory/Deployed/dc/{name}").occurrence == Occurrence.ZERO_OR_ONE


def test_operation_nodes_are_null_leaves_with_add_exec_get() -> None:
    count = 0
    for path, n in SCOMO_1_0.walk():
        if "/Operations/" in path:
            count += 1
            assert (n.format, n.access, n.occurrence, n.scope) == (
                Format.NULL,
                OPERATION,
                Occurrence.ZERO_OR_ONE,
                Scope.DYNAMIC,
            ), path
            assert n.is_leaf and not n.secret
    assert count == 9


def test_every_node_has_a_sentence_of_description() -> None:
    for mo in (SCOMO_1_0, SCOMO_1_1):
        for path, n in mo.walk():
            assert len(n.description) > 10 and n.description.endswith("."), path


@pytest.mark.parametrize("mo", [SCOMO_1_0, SCOMO_1_1], ids=["1.0", "1.1"])
def test_the_ddf_reads_back_as_the_declaration(mo: MODef) -> None:
    assert parse_ddf(mo.to_ddf()) == mo


def test_other_mount_points_rename_the_root() -> None:
    scm = scomo_mo("1.1", "./SCM")
    assert (scm.root.name, scm.default_path, scm.urn) == ("SCM", "./SCM", SCOMO_1_1_URN)
    nested = scomo_mo(path="./Vendor/Acme/SCOMO")
    assert nested.root.name == "SCOMO" and nested.default_path == "./Vendor/Acme/SCOMO"
    assert scm.root.children == SCOMO_1_1.root.children


def test_bad_versions_and_paths_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown SCOMO version '2\.0'; known: 1\.0, 1\.1"):
        scomo_mo("2.0")
    with pytest.raises(InvalidModelError, match="absolute URI"):
        scomo_mo(path="SCOMO")


def test_registered_as_scomo() -> None:
    assert registry.get("SCOMO") is SCOMO_1_0
    assert registry.get("scomo") is SCOMO_1_0
    assert registry.get(SCOMO_1_0_URN) is SCOMO_1_0
    assert SCOMO_1_1_URN not in [m.urn for m in registry.all_mos()]


# ---------------------------------------------------------------------------------------
# Against the tree engine: the access choices do what the module docstring says

SERVER = "srv"
BASE = "./SCOMO"


class _Recorder(NodeHandler):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def execute(
        self, tree: DMTree, path: str, data: str | bytes | None, correlator: str | None, server_id: str
    ) -> Outcome:
        self.calls.append((path, correlator))
        return Outcome(StatusCode.ACCEPTED_FOR_PROCESSING)


@pytest.fixture
def tree() -> DMTree:
    t = DMTree(TreeStore(":memory:"))
    t.mount(SCOMO_1_0)
    return t


@pytest.fixture
def session(tree: DMTree) -> TreeSession:
    return tree.session(SERVER)


def run(
    session: TreeSession,
    cls: type[ItemCommand],
    uri: str,
    data: str | bytes | None = None,
    *,
    fmt: str | None = None,
    correlator: str | None = None,
) -> Outcome:
    meta = Meta(format=fmt) if fmt else None
    items = (Item(target=Target(uri), meta=meta, data=data),)
    command = Exec("1", items, correlator=correlator) if cls is Exec else cls("1", items)
    (outcome,) = session.execute(command)
    return outcome


def test_mount_creates_the_fixed_parents(tree: DMTree) -> None:
    for path in (BASE, f"{BASE}/Download", f"{BASE}/Inventory/Delivered", f"{BASE}/Inventory/Deployed"):
        record = tree.system_get(path)
        assert record is not None and record.is_interior and record.permanent, path
    assert tree.system_get(f"{BASE}/Ext") is None
    root = tree.system_get(BASE)
    assert root is not None and root.type == SCOMO_1_0_URN and root.acl == SCOMO_DEFAULT_ACL


def test_a_server_creates_a_download_and_execs_it(tree: DMTree, session: TreeSession) -> None:
    recorder = _Recorder()
    tree.register_handler(f"{BASE}/Download/*/Operations/*", recorder)
    dp = f"{BASE}/Download/j1"
    assert run(session, Add, dp, fmt="node").code == StatusCode.OK
    for leaf, text in (("PkgID", "com.example@2"), ("Name", "Example"), ("PkgURL", "https://x/p.zip")):
        assert run(session, Add, f"{dp}/{leaf}", text).code == StatusCode.OK
    assert run(session, Add, f"{dp}/Operations", fmt="node").code == StatusCode.OK
    op = f"{dp}/Operations/DownloadInstall"
    assert run(session, Add, op).code == StatusCode.OK  # no Format: the declared null
    assert run(session, Add, op, fmt="null").code == StatusCode.ALREADY_EXISTS  # harmless for servers
    assert run(session, Exec, op, correlator="c1").code == StatusCode.ACCEPTED_FOR_PROCESSING
    assert recorder.calls == [(op, "c1")]
    assert run(session, Replace, f"{dp}/PkgURL", "https://y/p.zip").code == StatusCode.OK
    # Status is the device's
    assert run(session, Add, f"{dp}/Status", "10").code == StatusCode.COMMAND_NOT_ALLOWED
    tree.system_set(f"{dp}/Status", str(int(DownloadStatus.IDLE)), format="int")
    assert run(session, Replace, f"{dp}/Status", "40").code == StatusCode.COMMAND_NOT_ALLOWED
    assert run(session, Get, f"{dp}/Status").results[0].data == "10"  # type: ignore[index]
    assert run(session, Delete, dp).code == StatusCode.OK
    assert tree.system_get(dp) is None


def test_direct_delivery_data_is_write_only(session: TreeSession) -> None:
    dp = f"{BASE}/Inventory/Delivered/d1"
    assert run(session, Add, dp, fmt="node").code == StatusCode.OK
    assert run(session, Add, f"{dp}/PkgID", "p1").code == StatusCode.OK
    assert run(session, Add, f"{dp}/Data", b"PK\x03\x04payload", fmt="bin").code == StatusCode.OK
    assert run(session, Replace, f"{dp}/Data", b"PK\x03\x04other", fmt="bin").code == StatusCode.OK
    assert run(session, Get, f"{dp}/Data").code == StatusCode.COMMAND_NOT_ALLOWED


def test_servers_cannot_create_or_change_deployed_components(tree: DMTree, session: TreeSession) -> None:
    assert run(session, Add, f"{BASE}/Inventory/Deployed/dc", fmt="node").code == (
        StatusCode.COMMAND_NOT_ALLOWED
    )
    dc = f"{BASE}/Inventory/Deployed/dc"
    tree.system_set(f"{dc}/ID", "dc")
    tree.system_set(f"{dc}/Version", "1.0")
    tree.system_add_interior(f"{dc}/Operations")
    assert run(session, Get, f"{dc}/Version").code == StatusCode.OK
    assert run(session, Replace, f"{dc}/Version", "9").code == StatusCode.COMMAND_NOT_ALLOWED
    assert run(session, Delete, dc).code == StatusCode.COMMAND_NOT_ALLOWED
    # Add-before-Exec works on the device's components too
    assert run(session, Add, f"{dc}/Operations/Remove").code == StatusCode.OK
    assert run(session, Add, f"{dc}/Operations/Remove").code == StatusCode.ALREADY_EXISTS


def test_a_server_cannot_add_undeclared_nodes_below_an_operation(session: TreeSession) -> None:
    dp = f"{BASE}/Download/j1"
    run(session, Add, dp, fmt="node")
    run(session, Add, f"{dp}/Operations", fmt="node")
    run(session, Add, f"{dp}/Operations/Download")
    assert run(session, Add, f"{dp}/Operations/Download/x", "1").code == StatusCode.COMMAND_NOT_ALLOWED
    assert run(session, Add, f"{dp}/Operations/Bogus").code == StatusCode.COMMAND_NOT_ALLOWED


# ---------------------------------------------------------------------------------------
# Codes and alert data


def test_status_and_state_values() -> None:
    assert [int(s) for s in DownloadStatus] == [10, 20, 30, 40, 50, 60, 70]
    assert [int(s) for s in DeliveredStatus] == [10, 20, 30, 40, 50, 60]
    assert (DeliveredStatus.INSTALL_FAILED_WITHOUT_DATA, DownloadStatus.INSTALL_FAILED_WITHOUT_DATA) == (
        60,
        70,
    )
    assert (DeliveredState.DELIVERED, DeliveredState.INSTALLED) == (10, 20)
    assert [int(s) for s in DeployedStatus] == [10, 20, 30, 40, 50, 60, 70]
    assert (DeployedStatus.ACTIVATE_FAILED, DeployedStatus.DEACTIVATE_PROGRESSING) == (40, 70)
    assert (DeployedState.INACTIVE, DeployedState.ACTIVE) == (10, 20)


def test_alert_types() -> None:
    assert SCOMO_ALERT_TYPE == "urn:oma:at:scomo:1.0:OperationComplete"
    assert SCOMO_ALERT_TYPES == (
        "urn:oma:at:scomo:1.0:OperationComplete",
        "org.openmobilealliance.dm.softwarecomponent.OperationComplete",
    )


def test_alert_data_is_built_and_escaped() -> None:
    assert scomo_alert_data(1200, "com.example.app") == (
        "<ResultCode>1200</ResultCode><Identifier>com.example.app</Identifier>"
    )
    assert (
        scomo_alert_data(1405, "a<b>&c")
        == "<ResultCode>1405</ResultCode><Identifier>a&lt;b&gt;&amp;c</Identifier>"
    )
    for ident in ("a<b>&c", "plain", "ü ç", "]]>"):
        assert parse_scomo_alert_data(scomo_alert_data(1409, ident)) == (1409, ident)
    with pytest.raises(TypeError):
        scomo_alert_data("1200", "x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        scomo_alert_data(True, "x")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<ResultCode>1200</ResultCode><Identifier>dc1</Identifier>", (1200, "dc1")),
        ("<![CDATA[<ResultCode>1200</ResultCode><Identifier>dc1</Identifier>]]>", (1200, "dc1")),
        (
            "&lt;ResultCode&gt;1402&lt;/ResultCode&gt;&lt;Identifier&gt;p&amp;amp;1&lt;/Identifier&gt;",
            (1402, "p&1"),
        ),
        ("\n  <ResultCode> 1200 </ResultCode>\n  <Identifier> dc1 </Identifier>\n", (1200, "dc1")),
        (
            "<!-- report --><ResultCode>1408</ResultCode><!-- id --><Identifier>dc1</Identifier>",
            (1408, "dc1"),
        ),
        ("<ResultCode>1411</ResultCode>", (1411, None)),
        ("<ResultCode>1200</ResultCode><Identifier/>", (1200, None)),
        ("<ResultCode><![CDATA[1200]]></ResultCode><Identifier><![CDATA[a&b]]></Identifier>", (1200, "a&b")),
        ("<resultcode>1200</resultcode><identifier>x</identifier>", (1200, "x")),
        ("<Identifier>x</Identifier><ResultCode>1251</ResultCode>", (1251, "x")),
        ("<ResultCode>1200</ResultCode><Identifier>a&b</Identifier>", (1200, "a&b")),  # bare &: fallback
        ("1200", (1200, None)),
        ("  1452\n", (1452, None)),
    ],
)
def test_alert_data_is_parsed_leniently(text: str, expected: tuple[int, str | None]) -> None:
    assert parse_scomo_alert_data(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no <ResultCode>"),
        ("<Identifier>x</Identifier>", "no <ResultCode>"),
        ("<ResultCode>ok</ResultCode>", "is not a number"),
        ("<ResultCode></ResultCode>", "is not a number"),
        ("<ResultCode>12", "not an XML fragment"),
        ("hello", "no <ResultCode>"),
    ],
)
def test_unreadable_alert_data_is_a_clear_value_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_scomo_alert_data(text)
