"""The sans-IO job planner and readers: commands per job kind, outcomes from what devices say."""

from __future__ import annotations

import pytest

from omadm.protocol.messages import Add, Alert, Exec, Get, Item, Meta, Source, Target
from omadm.server.inventory import normalize_path, parse_inventory
from omadm.server.jobs import (
    exec_outcome,
    outcome_from_inventory,
    outcome_from_status,
    outcome_of_reports,
    parse_tag,
    plan_job,
    poll_uri,
    scomo_reports,
)
from omadm.server.store.models import InventoryKind, JobKind, JobState


def test_an_install_by_url_adds_the_entry_and_its_operation_then_execs_with_the_correlator() -> None:
    plan = plan_job(
        7, JobKind.INSTALL, {"pkg_id": "p1", "name": "App"}, "c-7", "./SCOMO", package_url="http://x/p"
    )
    commands = [c for c, _ in plan.commands]
    targets = [c.items[0].target.loc_uri for c in commands if c.items[0].target is not None]  # type: ignore[attr-defined]
    assert targets == [
        "./SCOMO/Download/omadm-7",
        "./SCOMO/Download/omadm-7/PkgID",
        "./SCOMO/Download/omadm-7/Name",
        "./SCOMO/Download/omadm-7/PkgURL",
        "./SCOMO/Download/omadm-7/Operations",
        "./SCOMO/Download/omadm-7/Operations/DownloadInstall",
        "./SCOMO/Download/omadm-7/Operations/DownloadInstall",
    ]
    assert isinstance(commands[0], Add) and commands[0].items[0].meta == Meta(format="node")
    assert isinstance(commands[-1], Exec) and commands[-1].correlator == "c-7"
    assert [t for _, t in plan.commands] == ["job:7:prep"] * 6 + ["job:7:exec"]
    assert plan.exec_uri == "./SCOMO/Download/omadm-7/Operations/DownloadInstall"


@pytest.mark.parametrize(
    ("kind", "params", "exec_uri"),
    [
        (
            JobKind.INSTALL_INACTIVE,
            {"pkg_id": "p"},
            "./S/Download/omadm-1/Operations/DownloadInstallInactive",
        ),
        (JobKind.DOWNLOAD, {"pkg_id": "p"}, "./S/Download/omadm-1/Operations/Download"),
        (
            JobKind.INSTALL_DELIVERED,
            {"node": "d1", "inactive": True},
            "./S/Inventory/Delivered/d1/Operations/InstallInactive",
        ),
        (JobKind.REMOVE_DELIVERED, {"node": "d1"}, "./S/Inventory/Delivered/d1/Operations/Remove"),
        (JobKind.REMOVE, {"node": "a"}, "./S/Inventory/Deployed/a/Operations/Remove"),
        (JobKind.ACTIVATE, {"node": "a"}, "./S/Inventory/Deployed/a/Operations/Activate"),
        (JobKind.DEACTIVATE, {"node": "a"}, "./S/Inventory/Deployed/a/Operations/Deactivate"),
    ],
)
def test_every_kind_execs_the_primitive_of_the_digest(
    kind: JobKind, params: dict[str, object], exec_uri: str
) -> None:
    plan = plan_job(1, kind, params, "c", "S", package_url="http://x/p")
    assert plan.exec_uri == exec_uri


def test_direct_delivery_sends_the_package_as_binary_data() -> None:
    plan = plan_job(2, JobKind.INSTALL_DIRECT, {"pkg_id": "p"}, "c", "./SCOMO", package_bytes=b"\x00pkg")
    data = [c for c, _ in plan.commands if isinstance(c, Add) and c.items[0].data == b"\x00pkg"]
    assert data and data[0].items[0].meta == Meta(format="bin", type="application/vnd.omadm.package")


def test_a_refresh_is_one_get_of_the_inventory_and_missing_parameters_are_named() -> None:
    plan = plan_job(3, JobKind.REFRESH_INVENTORY, {}, "c", "./SCOMO")
    ((get, tag),) = plan.commands
    assert isinstance(get, Get) and get.items[0].target == Target("./SCOMO/Inventory?list=StructData")
    assert tag == "job:3:inventory"
    with pytest.raises(ValueError, match="needs the package URL"):
        plan_job(4, JobKind.INSTALL, {"pkg_id": "p"}, "c", "./SCOMO")
    with pytest.raises(ValueError, match="'node'"):
        plan_job(4, JobKind.ACTIVATE, {}, "c", "./SCOMO")


def test_tags_and_exec_statuses() -> None:
    assert parse_tag("job:12:exec") == (12, "exec")
    assert parse_tag("inventory") is None and parse_tag("job:x:exec") is None
    assert exec_outcome(202).state is JobState.ACCEPTED
    assert (exec_outcome(200).state, exec_outcome(200).result_code) == (JobState.SUCCEEDED, 1200)
    assert exec_outcome(425).state is JobState.FAILED and "425" in exec_outcome(425).detail


def alert(mtype: str | None, data: str, *, code: str = "1226", correlator: str | None = "c1") -> Alert:
    meta = Meta(type=mtype, format="xml") if mtype else None
    return Alert(
        "1",
        data=code,
        correlator=correlator,
        items=(Item(source=Source("./SCOMO/Download/x/Operations/Download"), meta=meta, data=data),),
    )


@pytest.mark.parametrize(
    "mtype",
    [
        "urn:oma:at:scomo:1.0:OperationComplete",
        "org.openmobilealliance.dm.softwarecomponent.OperationComplete",
        "Reversed-Domain-Name: org.openmobilealliance.dm.softwarecomponent.OperationComplete",
        None,
    ],
)
def test_scomo_reports_are_read_whatever_the_type_spelling(mtype: str | None) -> None:
    (report,) = scomo_reports(
        alert(mtype, "<![CDATA[<ResultCode>1402</ResultCode><Identifier>p</Identifier>]]>")
    )
    assert (report.result, report.identifier, report.correlator) == (1402, "p", "c1")
    assert report.source == "./SCOMO/Download/x/Operations/Download"


def test_other_alerts_are_not_scomo_reports_and_windows_1224_is() -> None:
    assert scomo_reports(alert("urn:oma:at:fumo:1.0:FirmwareUpdate", "<ResultCode>200</ResultCode>")) == []
    assert scomo_reports(alert(None, "1200", code="1201")) == []
    assert [r.result for r in scomo_reports(alert(None, "1200", code="1224"))] == [1200]


def test_the_first_failed_item_decides_a_multi_component_outcome() -> None:
    ok, bad = (
        scomo_reports(alert(None, f"<ResultCode>{code}</ResultCode><Identifier>{ident}</Identifier>"))[0]
        for code, ident in ((1200, "core"), (1405, "ui"))
    )
    outcome = outcome_of_reports([ok, bad])
    assert (outcome.state, outcome.result_code) == (JobState.FAILED, 1405)
    assert "core: 1200" in outcome.detail and "ui: 1405" in outcome.detail
    assert outcome_of_reports([ok]).state is JobState.SUCCEEDED


def test_polled_statuses_give_only_failures_and_gone_entries() -> None:
    assert poll_uri("./S/Download/omadm-1/Operations/DownloadInstall") == "./S/Download/omadm-1/Status"
    assert outcome_from_status(JobKind.INSTALL, 10, entry_missing=False) is None  # idle: not started or done
    assert outcome_from_status(JobKind.INSTALL, 50, entry_missing=False) is None  # still installing
    failed = outcome_from_status(JobKind.INSTALL, 20, entry_missing=False)
    assert failed is not None and failed.result_code == 1402
    assert outcome_from_status(JobKind.ACTIVATE, 40, entry_missing=False).result_code == 1409  # type: ignore[union-attr]
    assert outcome_from_status(JobKind.REMOVE, None, entry_missing=True).state is JobState.SUCCEEDED  # type: ignore[union-attr]
    assert outcome_from_status(JobKind.ACTIVATE, None, entry_missing=True) is None


def test_the_inventory_shows_success() -> None:
    deployed = {"app": ("2.0", 20, "pkg-2")}
    assert outcome_from_inventory(JobKind.INSTALL, {"pkg_id": "pkg-2"}, 1, deployed, set()) is not None
    assert outcome_from_inventory(JobKind.INSTALL, {"pkg_id": "pkg-3"}, 1, deployed, set()) is None
    assert outcome_from_inventory(JobKind.DOWNLOAD, {}, 4, {}, {"omadm-4"}) is not None
    assert outcome_from_inventory(JobKind.REMOVE, {"component_id": "gone"}, 1, deployed, set()) is not None
    assert outcome_from_inventory(JobKind.DEACTIVATE, {"component_id": "app"}, 1, deployed, set()) is None


def test_inventory_paths_are_read_leniently() -> None:
    assert normalize_path("SCOMO//Inventory/") == "./SCOMO/Inventory"
    items = [
        Item(source=Source("SCOMO/Inventory/Deployed/a/ID"), data="com.a"),
        Item(source=Source("./SCOMO/Inventory/Deployed/a/Version"), data=" 1.0 "),
        Item(source=Source("./SCOMO/Inventory/Deployed/a/State"), data="20"),
        Item(source=Source("./SCOMO/Inventory/Deployed/a/Status"), data="junk"),
        Item(source=Source("./SCOMO/Inventory/Delivered/d/PkgID"), data="p"),
        Item(source=Source("./Other/x"), data="ignored"),
    ]
    records = parse_inventory(items, "./SCOMO")
    assert [(r.kind, r.node, r.ident, r.version, r.state, r.status) for r in records] == [
        (InventoryKind.DELIVERED, "d", "p", "", None, None),
        (InventoryKind.DEPLOYED, "a", "com.a", "1.0", 20, None),
    ]
