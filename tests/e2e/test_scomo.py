"""SCOMO end to end: every primitive, state transition and result code through real DM sessions.

Each test drives a real ``omadm agent connect`` process against the test DM server over HTTP
on 127.0.0.1; packages come from the real test package server (Range, dropped connections,
authentication, errors, download descriptors with install-notify). A run is one DM session
in which the server Adds nodes and Execs primitives (the device answers 202, or 200 when
there is nothing to do), then the jobs, then the session that delivers the Generic Alerts
(1226, ``urn:oma:at:scomo:1.0:OperationComplete``). The tests then read the device's tree
and its installed files.

Result codes and their real causes here (see also docs/scomo-decisions.md); ``F[x]`` is
``test_failures[x]``:

* 1200 every primitive that succeeds (most tests).
* 1401 ``confirm_command`` exits non-zero for that PkgID (test_the_user_is_asked_first...).
* 1402 404 at PkgURL (F[missing-file-404]); the connection dropped until the retries ran
  out (F[connection-dropped-...]); a DD whose size differs from the object, install-notify
  905 (F[descriptor-size-...]).
* 1403 the package server wants Basic credentials (F[authentication-required]).
* 1404 ``reserve_bytes`` leaves no room for the announced Content-Length (F[no-room-...]).
* 1405 the install hook exits 3, the previous version is restored (test_upgrade...); a
  downgrade not allowed (test_downgrade...); a dependency not met (F[dependency-not-met]).
* 1406 ``reserve_bytes`` leaves no room to install a directly delivered DP (test_direct...).
* 1407 signed by a key the device does not trust, by URL (F[signed-by-an-untrusted-key])
  and delivered directly (test_direct...); payload bytes changed after signing
  (F[payload-hash-differs-...]).
* 1408, 1409, 1410 the remove, activate, deactivate hook fails (test_life_cycle...).
* 1411 the EnvType's installer plug-in raises NotImplementedError (F[installer-lacks-...]).
* 1412 the EnvType's installer plug-in raises RuntimeError, a bug (F[installer-bug]).
* 1413 a component's EnvType has no installer (F[unknown-env-type]).
* 1500 the package server answers 500 until the retries ran out (F[server-error-500]).
* 1501 nothing listens at PkgURL's port (F[unreachable-host]).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from omadm.mo.scomo_codes import (
    SCOMO_ALERT_TYPE,
    DeliveredState,
    DeliveredStatus,
    DeployedState,
    DeployedStatus,
    DownloadStatus,
)
from omadm.protocol.messages import Item

from .scomo_world import (
    DELIVERED,
    DEPLOYED,
    DOWNLOAD,
    PackageSet,
    Run,
    World,
    add,
    closed_port,
    deliver,
    download,
    execute,
    get,
)

pytestmark = pytest.mark.e2e

HELLO = "com.example.hello"
CTL = "com.example.ctl"
CORE, UI = "com.example.suite.core", "com.example.suite.ui"


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PackageSet]:
    package_set = PackageSet(tmp_path_factory.mktemp("packages"))
    yield package_set
    package_set.close()


@pytest.fixture
def world(tmp_path: Path, packages: PackageSet) -> Iterator[World]:
    with World(tmp_path, packages) as device:
        yield device


# --- what a report must say ---------------------------------------------------------------


def check_item(item: Item, *, source: str, result: int, identifier: str, target: str | None) -> None:
    assert item.source is not None and item.source.loc_uri == source
    assert (item.target.loc_uri if item.target is not None else None) == target
    assert item.meta is not None
    assert item.meta.type == SCOMO_ALERT_TYPE
    assert item.meta.format == "xml"
    assert item.meta.mark == ("informational" if result == 1200 else "critical")
    assert item.data == f"<ResultCode>{result}</ResultCode><Identifier>{identifier}</Identifier>"


def check_report(
    run: Run, correlator: str, *, source: str, result: int, identifier: str, target: str | None = None
) -> None:
    """The one Generic Alert for ``correlator``: one Item saying exactly this."""
    alert = run.alert(correlator)
    assert alert.data == "1226"
    assert len(alert.items) == 1, alert
    check_item(alert.items[0], source=source, result=result, identifier=identifier, target=target)


def op(node: str, primitive: str) -> str:
    return f"{node}/Operations/{primitive}"


def check_deployed(
    world: World, component_id: str, *, version: str, pkg_id: str, state: int, status: int = 10
) -> None:
    node = f"{DEPLOYED}/{component_id}"
    assert world.value(f"{node}/ID") == component_id
    assert world.value(f"{node}/Version") == version
    assert world.value(f"{node}/PkgIDRef") == pkg_id
    assert world.value(f"{node}/State") == str(state)
    assert world.value(f"{node}/Status") == str(status)
    assert world.value(f"{node}/EnvType") == "archive"
    for primitive in ("Activate", "Deactivate", "Remove"):
        assert world.exists(op(node, primitive))


# --- delivery by URL ----------------------------------------------------------------------


def test_download_install_by_url_resumes_after_a_dropped_connection(
    world: World, packages: PackageSet
) -> None:
    """DownloadInstall: the first GET is cut after 1000 bytes, the retry asks for the rest."""
    url = packages.serve("hello-1", "/resume/hello-1.omp", drop_after=1000, drop_times=1)
    node = f"{DOWNLOAD}/dl1"
    run = world.connect(download("dl1", "pkg-hello-1", url, "DownloadInstall", "corr-dl1"))

    assert run.status(op(node, "DownloadInstall")) == 202
    deployed = f"{DEPLOYED}/{HELLO}"
    check_report(
        run, "corr-dl1", source=op(node, "DownloadInstall"), target=deployed, result=1200, identifier=HELLO
    )
    first, second = packages.server.requests_for("/resume/hello-1.omp")
    assert (first.status, "range" in first.headers) == (200, False)
    assert (second.status, second.headers["range"]) == (206, "bytes=1000-")
    assert second.headers["if-range"] == packages.server.resources["/resume/hello-1.omp"].etag

    assert world.value(f"{node}/Status") == str(DownloadStatus.IDLE)
    delivered = f"{DELIVERED}/dl1"
    assert world.value(f"{delivered}/PkgID") == "pkg-hello-1"
    assert world.value(f"{delivered}/State") == str(DeliveredState.INSTALLED)
    assert world.value(f"{delivered}/Status") == str(DeliveredStatus.IDLE)
    check_deployed(world, HELLO, version="1.0.0", pkg_id="pkg-hello-1", state=DeployedState.ACTIVE)
    assert world.value(f"{deployed}/Name") == "Hello"
    assert world.run_program(HELLO, "bin/hello") == f"Hello from {HELLO} (version 1.0.0)"
    assert [line.rstrip() for line in world.hooks_log(HELLO)] == [
        f"install {HELLO} 1.0.0",
        f"activate {HELLO} 1.0.0",
    ]


def test_download_install_inactive_through_a_download_descriptor_notifies_900(
    world: World, packages: PackageSet
) -> None:
    """PkgURL names a DD: the device fetches its objectURI, installs inactive, POSTs 900 Success.

    A server polling Download/<X>/Status meanwhile sees 30 during the download, 50 during the
    install, 10 once done.
    """
    node = f"{DOWNLOAD}/viadd"
    while_downloading: list[str | None] = []
    packages.serve(
        "ctl",
        "/dd-inactive/ctl.omp",
        before_reply=lambda: while_downloading.append(world.value(f"{node}/Status")),
    )
    packages.server.add_descriptor("/dd-inactive/ctl.dd", "/dd-inactive/ctl.omp")
    world.watch(f"{node}/Status", f"{DELIVERED}/viadd/State")
    dd_url = packages.server.url("/dd-inactive/ctl.dd")
    run = world.connect(download("viadd", "pkg-ctl-dd", dd_url, "DownloadInstallInactive", "corr-dd"))

    assert run.status(op(node, "DownloadInstallInactive")) == 202
    check_report(
        run,
        "corr-dd",
        source=op(node, "DownloadInstallInactive"),
        target=f"{DEPLOYED}/{CTL}",
        result=1200,
        identifier=CTL,
    )
    assert [r.status for r in packages.server.requests_for("/dd-inactive/ctl.dd")] == [200]
    assert [r.status for r in packages.server.requests_for("/dd-inactive/ctl.omp")] == [200]
    notes = [n for n in packages.server.notifications if n.path == "/notify/dd-inactive/ctl.dd"]
    assert [(n.body, n.content_type) for n in notes] == [("900 Success", "text/plain")]
    assert while_downloading == [str(DownloadStatus.DOWNLOAD_PROGRESSING)]
    assert world.probed() == [f"install {node}/Status=50 {DELIVERED}/viadd/State=10"]
    assert world.value(f"{node}/Status") == str(DownloadStatus.IDLE)
    check_deployed(world, CTL, version="1.0.0", pkg_id="pkg-ctl-dd", state=DeployedState.INACTIVE)
    assert world.hooks_log(CTL) == ["install 1.0.0"]  # installed, never activated
    assert world.value(f"{DELIVERED}/viadd/State") == str(DeliveredState.INSTALLED)


# --- every transition of a component -------------------------------------------------------


def test_life_cycle_download_install_inactive_activate_deactivate_remove_with_hook_failures(
    world: World, packages: PackageSet
) -> None:
    """Download, InstallInactive, Activate, Deactivate, Remove (both), each failing once for real."""
    dp = f"{DELIVERED}/lc"
    dc = f"{DEPLOYED}/{CTL}"

    # Download only: the package is delivered, nothing is installed.
    run = world.connect(download("lc", "pkg-ctl", packages.url("ctl"), "Download", "c-download"))
    assert run.status(op(f"{DOWNLOAD}/lc", "Download")) == 202
    check_report(
        run,
        "c-download",
        source=op(f"{DOWNLOAD}/lc", "Download"),
        target=dp,
        result=1200,
        identifier="pkg-ctl",
    )
    assert world.value(f"{DOWNLOAD}/lc/Status") == str(DownloadStatus.IDLE)
    assert world.value(f"{dp}/PkgID") == "pkg-ctl"
    assert world.value(f"{dp}/State") == str(DeliveredState.DELIVERED)
    assert world.value(f"{dp}/Status") == str(DeliveredStatus.IDLE)
    assert world.children(DEPLOYED) == []

    # InstallInactive from Delivered (its Status is 40 while the install hook runs).
    world.watch(f"{dp}/Status")
    run = world.connect(execute(op(dp, "InstallInactive"), "c-install-inactive"))
    assert world.probed() == [f"install {dp}/Status=40"]
    assert run.status(op(dp, "InstallInactive")) == 202
    check_report(
        run, "c-install-inactive", source=op(dp, "InstallInactive"), target=dc, result=1200, identifier=CTL
    )
    assert world.value(f"{dp}/State") == str(DeliveredState.INSTALLED)
    check_deployed(world, CTL, version="1.0.0", pkg_id="pkg-ctl", state=DeployedState.INACTIVE)
    assert world.hooks_log(CTL) == ["install 1.0.0"]
    assert world.value(f"{dp}/Status") == str(DeliveredStatus.IDLE)

    # From here on, every hook records the component's Status and State as it starts.
    world.watch(f"{dc}/Status", f"{dc}/State")

    def seen(action: str, status: int, state: int) -> str:
        return f"{action} {dc}/Status={status} {dc}/State={state}"

    # Activate whose hook fails: 1409, still inactive, Status 40.
    world.fail_hook(CTL, "activate")
    run = world.connect(execute(op(dc, "Activate"), "c-activate-fails"))
    assert world.probed() == [seen("activate", 50, 10), seen("deactivate", 50, 10)]
    assert run.status(op(dc, "Activate")) == 202
    check_report(run, "c-activate-fails", source=op(dc, "Activate"), result=1409, identifier=CTL)
    check_deployed(
        world,
        CTL,
        version="1.0.0",
        pkg_id="pkg-ctl",
        state=DeployedState.INACTIVE,
        status=DeployedStatus.ACTIVATE_FAILED,
    )
    # the half-done activation is compensated by the deactivate hook
    assert world.hooks_log(CTL)[1:] == ["activate 1.0.0 failed", "deactivate 1.0.0"]

    # Activate: 1200, active.
    world.fail_hook(CTL, "activate", fail=False)
    run = world.connect(execute(op(dc, "Activate"), "c-activate"))
    assert world.probed() == [seen("activate", 50, 10)]
    check_report(run, "c-activate", source=op(dc, "Activate"), result=1200, identifier=CTL)
    check_deployed(world, CTL, version="1.0.0", pkg_id="pkg-ctl", state=DeployedState.ACTIVE)
    assert world.hooks_log(CTL)[3:] == ["activate 1.0.0"]

    # Activate again: already active, 200 and no alert. Deactivate whose hook fails: 1410.
    world.fail_hook(CTL, "deactivate")
    run = world.connect(
        execute(op(dc, "Activate"), "c-activate-again"), execute(op(dc, "Deactivate"), "c-deactivate-fails")
    )
    assert run.status(op(dc, "Activate")) == 200
    assert run.status(op(dc, "Deactivate")) == 202
    assert [a.correlator for a in run.alerts] == ["c-deactivate-fails"]
    assert world.probed() == [seen("deactivate", 70, 20), seen("activate", 70, 20)]
    check_report(run, "c-deactivate-fails", source=op(dc, "Deactivate"), result=1410, identifier=CTL)
    check_deployed(
        world,
        CTL,
        version="1.0.0",
        pkg_id="pkg-ctl",
        state=DeployedState.ACTIVE,
        status=DeployedStatus.DEACTIVATE_FAILED,
    )
    assert world.hooks_log(CTL)[4:] == ["deactivate 1.0.0 failed", "activate 1.0.0"]

    # Deactivate: 1200, inactive.
    world.fail_hook(CTL, "deactivate", fail=False)
    run = world.connect(execute(op(dc, "Deactivate"), "c-deactivate"))
    assert world.probed() == [seen("deactivate", 70, 20)]
    check_report(run, "c-deactivate", source=op(dc, "Deactivate"), result=1200, identifier=CTL)
    check_deployed(world, CTL, version="1.0.0", pkg_id="pkg-ctl", state=DeployedState.INACTIVE)

    # Deactivate again: 200, no alert. Remove whose hook fails: 1408, nothing removed.
    world.fail_hook(CTL, "remove")
    run = world.connect(
        execute(op(dc, "Deactivate"), "c-deactivate-again"), execute(op(dc, "Remove"), "c-remove-fails")
    )
    assert run.status(op(dc, "Deactivate")) == 200
    assert [a.correlator for a in run.alerts] == ["c-remove-fails"]
    assert world.probed() == [seen("remove", 30, 10)]
    check_report(run, "c-remove-fails", source=op(dc, "Remove"), result=1408, identifier=CTL)
    check_deployed(
        world,
        CTL,
        version="1.0.0",
        pkg_id="pkg-ctl",
        state=DeployedState.INACTIVE,
        status=DeployedStatus.REMOVE_FAILED,
    )
    assert world.run_program(CTL, "bin/app") == f"{CTL} 1.0.0"

    # Remove the component, then the delivered package: both gone, files included.
    world.fail_hook(CTL, "remove", fail=False)
    package_file = world.data / "packages" / "delivered-lc.omp"
    assert package_file.exists()
    run = world.connect(execute(op(dc, "Remove"), "c-remove"), execute(op(dp, "Remove"), "c-remove-dp"))
    assert run.status(op(dc, "Remove")) == 202 and run.status(op(dp, "Remove")) == 202
    assert world.probed() == [seen("remove", 30, 10)]
    check_report(run, "c-remove", source=op(dc, "Remove"), result=1200, identifier=CTL)
    check_report(run, "c-remove-dp", source=op(dp, "Remove"), result=1200, identifier="pkg-ctl")
    assert world.children(DEPLOYED) == []
    assert world.children(DELIVERED) == []
    assert not world.component_dir(CTL).exists()
    assert not package_file.exists()


# --- direct delivery ----------------------------------------------------------------------


def test_direct_delivery_as_a_large_object_then_install_out_of_space_then_install(
    world: World, packages: PackageSet
) -> None:
    """Delivered/<X>/Data in chunks under a 2 KB MaxMsgSize; Install: 1406 for lack of room, then 1200.

    Beside it, a directly delivered package signed by a key the device does not trust: 1407,
    and its data is dropped (Status 60).
    """
    dp, forged = f"{DELIVERED}/direct", f"{DELIVERED}/forged"
    world.configure(max_msg_size=2048, reserve_bytes=2**50)  # no disk is that big: no room to install
    assert len(packages.bytes_of("big")) > 5 * 2048
    messages_before = len(world.server.record.bodies)
    run = world.connect(
        deliver("direct", "pkg-big", packages.bytes_of("big"), "Install", "corr-direct-1"),
        deliver(
            "forged", "pkg-forged", packages.bytes_of("hello-1-untrusted"), "InstallInactive", "corr-forged"
        ),
    )
    assert run.status(f"{dp}/Data", "Add") == 200
    assert run.status(op(dp, "Install")) == 202
    chunks = [r for r in world.server.record.replies[messages_before:] if b"<MoreData/>" in r]
    assert len(chunks) >= 5  # a large object, one chunk per message
    assert all(len(b) <= 2048 for b in world.server.record.replies[messages_before:])
    check_report(run, "corr-direct-1", source=op(dp, "Install"), result=1406, identifier="com.example.big")
    assert world.value(f"{dp}/Status") == str(DeliveredStatus.INSTALL_FAILED_WITH_DATA)
    assert world.value(f"{dp}/State") == str(DeliveredState.DELIVERED)
    assert not world.exists(f"{dp}/Data")  # kept as a file, ready for another Install
    check_report(
        run, "corr-forged", source=op(forged, "InstallInactive"), result=1407, identifier="pkg-forged"
    )
    assert world.value(f"{forged}/Status") == str(DeliveredStatus.INSTALL_FAILED_WITHOUT_DATA)
    assert world.value(f"{forged}/State") == str(DeliveredState.DELIVERED)
    assert not (world.data / "packages" / "delivered-forged.omp").exists()
    assert world.children(DEPLOYED) == []
    assert not world.component_dir("com.example.big").exists()

    world.configure(reserve_bytes=0)
    run = world.connect(execute(op(dp, "Install"), "corr-direct-2"))
    assert run.status(op(dp, "Install")) == 202
    check_report(
        run,
        "corr-direct-2",
        source=op(dp, "Install"),
        target=f"{DEPLOYED}/com.example.big",
        result=1200,
        identifier="com.example.big",
    )
    assert world.value(f"{dp}/Status") == str(DeliveredStatus.IDLE)
    assert world.value(f"{dp}/State") == str(DeliveredState.INSTALLED)
    check_deployed(world, "com.example.big", version="1.0.0", pkg_id="pkg-big", state=DeployedState.ACTIVE)
    installed = world.component_dir("com.example.big") / "current" / "share" / "payload"
    assert installed.read_bytes() == packages.payload


# --- upgrades and downgrades ----------------------------------------------------------------


def test_upgrade_in_place_and_automatic_rollback_when_the_install_hook_fails(
    world: World, packages: PackageSet
) -> None:
    deployed = f"{DEPLOYED}/{HELLO}"
    world.connect(download("v1", "pkg-v1", packages.url("hello-1"), "DownloadInstall", "up-1"))
    check_deployed(world, HELLO, version="1.0.0", pkg_id="pkg-v1", state=DeployedState.ACTIVE)

    run = world.connect(download("v2", "pkg-v2", packages.url("hello-2"), "DownloadInstall", "up-2"))
    check_report(
        run,
        "up-2",
        source=op(f"{DOWNLOAD}/v2", "DownloadInstall"),
        target=deployed,
        result=1200,
        identifier=HELLO,
    )
    assert world.children(DEPLOYED) == [HELLO]  # the same node, upgraded
    check_deployed(world, HELLO, version="2.0.0", pkg_id="pkg-v2", state=DeployedState.ACTIVE)
    assert world.run_program(HELLO, "bin/hello") == f"Hello again from {HELLO} (version 2.0.0)"
    log_after_upgrade = [line.rstrip() for line in world.hooks_log(HELLO)]
    assert log_after_upgrade == [
        f"install {HELLO} 1.0.0",
        f"activate {HELLO} 1.0.0",
        f"install {HELLO} 2.0.0",  # beside the running 1.0.0
        f"deactivate {HELLO} 1.0.0",
        f"activate {HELLO} 2.0.0",
    ]

    run = world.connect(download("v3", "pkg-v3", packages.url("hello-3-broken"), "DownloadInstall", "up-3"))
    assert run.status(op(f"{DOWNLOAD}/v3", "DownloadInstall")) == 202
    check_report(run, "up-3", source=op(f"{DOWNLOAD}/v3", "DownloadInstall"), result=1405, identifier=HELLO)
    assert world.value(f"{DOWNLOAD}/v3/Status") == str(DownloadStatus.INSTALL_FAILED_WITH_DATA)
    assert world.value(f"{DELIVERED}/v3/State") == str(DeliveredState.DELIVERED)
    # 2.0.0 is still the live version, untouched and working: it was never even stopped.
    check_deployed(world, HELLO, version="2.0.0", pkg_id="pkg-v2", state=DeployedState.ACTIVE)
    assert world.run_program(HELLO, "bin/hello") == f"Hello again from {HELLO} (version 2.0.0)"
    assert os.readlink(world.component_dir(HELLO) / "current") == "versions/2.0.0"
    assert not (world.component_dir(HELLO) / "versions" / "3.0.0").exists()
    assert [line.rstrip() for line in world.hooks_log(HELLO)] == log_after_upgrade


def test_downgrade_is_refused_unless_the_package_or_the_install_params_allow_it(
    world: World, packages: PackageSet
) -> None:
    world.connect(download("a", "pkg-v2", packages.url("hello-2"), "DownloadInstall", "dg-a"))
    check_deployed(world, HELLO, version="2.0.0", pkg_id="pkg-v2", state=DeployedState.ACTIVE)
    log = world.hooks_log(HELLO)

    run = world.connect(download("b", "pkg-v0.5", packages.url("hello-0.5"), "DownloadInstall", "dg-b"))
    check_report(
        run, "dg-b", source=op(f"{DOWNLOAD}/b", "DownloadInstall"), result=1405, identifier="pkg-v0.5"
    )
    assert world.value(f"{DOWNLOAD}/b/Status") == str(DownloadStatus.INSTALL_FAILED_WITH_DATA)
    check_deployed(world, HELLO, version="2.0.0", pkg_id="pkg-v2", state=DeployedState.ACTIVE)
    assert world.hooks_log(HELLO) == log  # no hook ran

    # The package says allow_downgrade (2.0.0 -> 0.9.0); then the server's InstallParams do (-> 0.5.0).
    run = world.connect(
        download("c", "pkg-v0.9", packages.url("hello-0.9"), "DownloadInstall", "dg-c"),
        download(
            "d",
            "pkg-v0.5",
            packages.url("hello-0.5"),
            "DownloadInstall",
            "dg-d",
            install_params="allow-downgrade",
        ),
    )
    deployed = f"{DEPLOYED}/{HELLO}"
    check_report(
        run,
        "dg-c",
        source=op(f"{DOWNLOAD}/c", "DownloadInstall"),
        target=deployed,
        result=1200,
        identifier=HELLO,
    )
    check_report(
        run,
        "dg-d",
        source=op(f"{DOWNLOAD}/d", "DownloadInstall"),
        target=deployed,
        result=1200,
        identifier=HELLO,
    )
    check_deployed(world, HELLO, version="0.5.0", pkg_id="pkg-v0.5", state=DeployedState.ACTIVE)
    assert world.run_program(HELLO, "bin/hello") == f"Hello from {HELLO} (version 0.5.0)"
    installs = [line.rstrip() for line in world.hooks_log(HELLO) if line.startswith("install")]
    assert installs[-2:] == [f"install {HELLO} 0.9.0", f"install {HELLO} 0.5.0 allow-downgrade"]


# --- several components ---------------------------------------------------------------------


def test_a_package_of_two_components_then_an_update_of_one_leaves_the_other_alone(
    world: World, packages: PackageSet
) -> None:
    node = f"{DOWNLOAD}/suite"
    run = world.connect(download("suite", "pkg-suite-1", packages.url("suite"), "DownloadInstall", "suite-1"))
    alert = run.alert("suite-1")
    assert len(alert.items) == 2  # one Item per component
    for item, component in zip(alert.items, (CORE, UI), strict=True):
        check_item(
            item,
            source=op(node, "DownloadInstall"),
            target=f"{DEPLOYED}/{component}",
            result=1200,
            identifier=component,
        )
    assert world.children(DELIVERED) == ["suite"]
    assert world.children(DEPLOYED) == [CORE, UI]
    for component in (CORE, UI):
        check_deployed(world, component, version="1.0.0", pkg_id="pkg-suite-1", state=DeployedState.ACTIVE)
    core_state = (world.component_dir(CORE) / "state.json").read_bytes()
    core_link = os.readlink(world.component_dir(CORE) / "current")

    run = world.connect(
        download("ui", "pkg-ui-2", packages.url("suite-ui-1.1"), "DownloadInstall", "suite-2")
    )
    check_report(
        run,
        "suite-2",
        source=op(f"{DOWNLOAD}/ui", "DownloadInstall"),
        target=f"{DEPLOYED}/{UI}",
        result=1200,
        identifier=UI,
    )
    check_deployed(world, UI, version="1.1.0", pkg_id="pkg-ui-2", state=DeployedState.ACTIVE)
    assert world.run_program(UI, "bin/app") == f"{UI} 1.1.0"
    check_deployed(world, CORE, version="1.0.0", pkg_id="pkg-suite-1", state=DeployedState.ACTIVE)
    assert (world.component_dir(CORE) / "state.json").read_bytes() == core_state
    assert os.readlink(world.component_dir(CORE) / "current") == core_link
    assert world.hooks_log(CORE) == ["install 1.0.0", "activate 1.0.0"]  # not even stopped
    assert world.run_program(CORE, "bin/app") == f"{CORE} 1.0.0"
    assert world.children(DELIVERED) == ["suite", "ui"]


# --- the inventory is what is installed ----------------------------------------------------------


def test_deployed_shows_components_installed_or_removed_by_hand_after_the_next_start(world: World) -> None:
    run = world.connect(get(DEPLOYED))
    assert run.results() == [""]  # nothing installed

    by_hand = world.component_dir("com.example.byhand")
    (by_hand / "versions" / "3.1" / "bin").mkdir(parents=True)
    (by_hand / "state.json").write_text(json.dumps({"version": "3.1", "name": "By hand"}))
    os.symlink("versions/3.1", by_hand / "current")

    node = f"{DEPLOYED}/com.example.byhand"
    run = world.connect(get(DEPLOYED), get(f"{node}/Version"), execute(op(node, "Deactivate"), "byhand-off"))
    assert run.results() == ["com.example.byhand", "3.1"]
    check_report(
        run, "byhand-off", source=op(node, "Deactivate"), result=1200, identifier="com.example.byhand"
    )
    check_deployed(world, "com.example.byhand", version="3.1", pkg_id="-1", state=DeployedState.INACTIVE)
    assert world.value(f"{node}/Name") == "By hand"

    for entry in sorted(by_hand.rglob("*"), reverse=True):
        entry.unlink() if entry.is_file() or entry.is_symlink() else entry.rmdir()
    by_hand.rmdir()
    run = world.connect(get(DEPLOYED))
    assert run.results() == [""]
    assert not world.exists(node)


# --- the user decides ---------------------------------------------------------------------------


def test_the_user_is_asked_first_and_a_no_is_1401_before_any_byte_is_fetched(
    world: World, packages: PackageSet
) -> None:
    world.configure(confirm_command='[ "$OMADM_PKG_ID" != pkg-declined ]')
    yes = packages.serve("ctl", "/confirm/yes.omp")
    no = packages.serve("ctl", "/confirm/no.omp")
    run = world.connect(
        download("yes", "pkg-accepted", yes, "DownloadInstall", "ask-yes"),
        download("no", "pkg-declined", no, "DownloadInstall", "ask-no"),
    )
    check_report(
        run,
        "ask-yes",
        source=op(f"{DOWNLOAD}/yes", "DownloadInstall"),
        target=f"{DEPLOYED}/{CTL}",
        result=1200,
        identifier=CTL,
    )
    check_report(
        run, "ask-no", source=op(f"{DOWNLOAD}/no", "DownloadInstall"), result=1401, identifier="pkg-declined"
    )
    assert world.value(f"{DOWNLOAD}/no/Status") == str(DownloadStatus.DOWNLOAD_FAILED)
    assert len(packages.server.requests_for("/confirm/yes.omp")) == 1
    assert packages.server.requests_for("/confirm/no.omp") == []
    assert world.children(DELIVERED) == ["yes"]


# --- refused at once --------------------------------------------------------------------------


def test_an_exec_without_its_preconditions_is_refused_in_the_session(
    world: World, packages: PackageSet
) -> None:
    node = f"{DOWNLOAD}/nourl"
    run = world.connect(
        add(node, fmt="node"),
        add(f"{node}/PkgID", "pkg-nourl"),
        add(f"{node}/Operations", fmt="node"),
        add(op(node, "DownloadInstall")),
        execute(op(node, "DownloadInstall"), "pre-1"),
        execute(op(f"{DEPLOYED}/com.example.nothing", "Activate"), "pre-2"),
    )
    assert run.status(op(node, "DownloadInstall")) == 412
    assert run.status(op(f"{DEPLOYED}/com.example.nothing", "Activate")) == 404
    assert run.alerts == []
    assert world.children(DELIVERED) == []


# --- every failure, from a real cause ----------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    #: Serves what the test needs and returns the PkgURL.
    setup: Callable[[World, PackageSet], str]
    result: int
    #: The alert's Identifier: None for the server's PkgID, else the failing component's ID.
    component: str | None = None
    #: The download failed (Status 20, nothing delivered) or the install did (Status 60, delivered).
    install_phase: bool = False
    #: (path, how many GETs and their statuses) to check at the package server.
    requests: tuple[str, list[int]] | None = None
    #: (notify path, body) when a download descriptor must be told.
    notify: tuple[str, str] | None = None


def _serve(name: str, path: str, **faults: object) -> Callable[[World, PackageSet], str]:
    return lambda world, packages: packages.serve(name, path, **faults)


def _url(name: str) -> Callable[[World, PackageSet], str]:
    return lambda world, packages: packages.url(name)


def _no_room(world: World, packages: PackageSet) -> str:
    world.configure(reserve_bytes=2**50)
    return packages.serve("hello-1", "/no-room/hello-1.omp")


def _lying_descriptor(world: World, packages: PackageSet) -> str:
    packages.server.add_descriptor(
        "/lying/hello.dd", "/hello-1.omp", size=len(packages.bytes_of("hello-1")) + 10
    )
    return packages.server.url("/lying/hello.dd")


FAILURES = {
    "missing-file-404": Failure(
        lambda world, packages: packages.server.url("/missing/hello.omp"),
        1402,
        requests=("/missing/hello.omp", [404]),
    ),
    "connection-dropped-until-retries-ran-out": Failure(
        _serve("hello-1", "/drops/hello-1.omp", drop_after=700, drop_times=9),
        1402,
        requests=("/drops/hello-1.omp", [200, 206]),
    ),
    "descriptor-size-differs-from-the-object": Failure(
        _lying_descriptor, 1402, notify=("/notify/lying/hello.dd", "905 Attribute mismatch")
    ),
    "authentication-required": Failure(
        _serve("hello-1", "/auth/hello-1.omp", auth=("pkg-user", "pkg-secret")),
        1403,
        requests=("/auth/hello-1.omp", [401]),
    ),
    "no-room-for-the-download": Failure(_no_room, 1404),
    "server-error-500": Failure(
        _serve("hello-1", "/err/hello-1.omp", fail_status=500, fail_times=9),
        1500,
        requests=("/err/hello-1.omp", [500, 500]),
    ),
    "unreachable-host": Failure(
        lambda world, packages: f"http://127.0.0.1:{closed_port()}/hello-1.omp", 1501
    ),
    "signed-by-an-untrusted-key": Failure(_url("hello-1-untrusted"), 1407),
    "payload-hash-differs-from-the-signed-manifest": Failure(_url("tampered"), 1407),
    "dependency-not-met": Failure(_url("needs-absent"), 1405, install_phase=True),
    "unknown-env-type": Failure(_url("flatpak"), 1413, install_phase=True),
    "installer-lacks-the-step": Failure(_url("stub"), 1411, "com.example.stubbed", install_phase=True),
    "installer-bug": Failure(_url("crashy"), 1412, "com.example.crashy", install_phase=True),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_failures(world: World, packages: PackageSet, case: str) -> None:
    """DownloadInstall that fails for a real reason: the exact code, no Target, nothing installed."""
    failure = FAILURES[case]
    url = failure.setup(world, packages)
    node = f"{DOWNLOAD}/f"
    run = world.connect(download("f", f"pkg-{case}", url, "DownloadInstall", f"fail-{case}"))

    assert run.status(op(node, "DownloadInstall")) == 202
    check_report(
        run,
        f"fail-{case}",
        source=op(node, "DownloadInstall"),
        result=failure.result,
        identifier=failure.component or f"pkg-{case}",
    )
    assert world.children(DEPLOYED) == []
    if failure.install_phase:
        assert world.value(f"{node}/Status") == str(DownloadStatus.INSTALL_FAILED_WITH_DATA)
        assert world.children(DELIVERED) == ["f"]
        assert world.value(f"{DELIVERED}/f/State") == str(DeliveredState.DELIVERED)
    else:
        assert world.value(f"{node}/Status") == str(DownloadStatus.DOWNLOAD_FAILED)
        assert world.children(DELIVERED) == []
    if failure.requests is not None:
        path, codes = failure.requests
        assert [r.status for r in packages.server.requests_for(path)] == codes
    if failure.notify is not None:
        path, body = failure.notify
        assert [n.body for n in packages.server.notifications if n.path == path] == [body]


def test_a_repeated_exec_of_a_finished_job_is_reported_again_not_run_again(
    world: World, packages: PackageSet
) -> None:
    """A server that lost our 202 sends the job again (same node, same Correlator)."""
    first = world.connect(download("r", "pkg-r", packages.url("hello-1"), "DownloadInstall", "rep-1"))
    check_report(
        first,
        "rep-1",
        source=op(f"{DOWNLOAD}/r", "DownloadInstall"),
        target=f"{DEPLOYED}/{HELLO}",
        result=1200,
        identifier=HELLO,
    )
    hooks = world.hooks_log(HELLO)
    again = world.connect(download("r", "pkg-r", packages.url("hello-1"), "DownloadInstall", "rep-1"))
    assert again.status(f"{DOWNLOAD}/r", "Add") == 418  # the entry is there already
    assert again.status(op(f"{DOWNLOAD}/r", "DownloadInstall")) == 202
    assert again.alert("rep-1").items == first.alert("rep-1").items  # the same report, once more
    assert world.hooks_log(HELLO) == hooks  # nothing ran twice

    removed = world.connect(execute(op(f"{DEPLOYED}/{HELLO}", "Remove"), "rep-2"))
    check_report(removed, "rep-2", source=op(f"{DEPLOYED}/{HELLO}", "Remove"), result=1200, identifier=HELLO)
    # Sent again after the node is gone: the tree answers 404 before any handler runs, and
    # nothing is removed twice (the server reads a 404 on a Remove it sent before as done).
    repeat = world.connect(execute(op(f"{DEPLOYED}/{HELLO}", "Remove"), "rep-2"))
    assert repeat.status(op(f"{DEPLOYED}/{HELLO}", "Remove")) == 404
    assert repeat.alerts == []
