"""A simulated device's DM and SCOMO behaviour in memory, against the protocol core's ServerSession.

The server side is the real ``ServerSession`` with the commands the real server plans for a
job (``omadm.server.jobs.plan_job``), so what the device must answer is what it will meet.
"""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from omadm.mo.scomo_codes import DeliveredState, DeployedState, DownloadStatus, parse_scomo_alert_data
from omadm.protocol import auth
from omadm.protocol.codec import Encoding
from omadm.protocol.codes import AuthType, ScomoResult, StatusCode
from omadm.protocol.messages import Command, Exec, Item, Target
from omadm.protocol.session import (
    AlertReceived,
    Credentials,
    Event,
    ServerConfig,
    ServerSession,
    SessionStarted,
    StatusReceived,
)
from omadm.server.jobs import plan_job
from omadm.server.store.models import JobKind
from omadm.sim.device import DeviceTemplate, MemoryTreeStore, SessionResult, SimDevice
from omadm.sim.download import Component, PackageInfo
from omadm.sim.scomo import SIM_VERSION, Phase, phases_of
from omadm.tree.store import NodeRecord

URL = "http://sim.test/dm"
ROOT = "./SCOMO"


@pytest.fixture(scope="module")
def template() -> DeviceTemplate:
    return DeviceTemplate("omadm", URL)


def device(template: DeviceTemplate, encoding: Encoding = Encoding.XML, auth_name: str = "md5") -> SimDevice:
    return SimDevice(template, "IMEI:350000000000001", "dev", "secret", auth=auth_name, encoding=encoding)


def converse(
    dev: SimDevice, commands: list[tuple[Command, str]] | None = None
) -> tuple[list[Event], SessionResult]:
    """One whole session of ``dev`` with a ServerSession that queues ``commands`` once it starts."""
    server = ServerSession(
        ServerConfig(URL, client_credentials=Credentials(dev.auth_type, dev.username, dev.password))
    )
    session = dev.session()
    out = session.start()
    events: list[Event] = []
    for _ in range(20):
        got = server.receive(
            out.body, hmac_header=out.headers.get(auth.HMAC_HEADER), content_type=out.content_type
        )
        events += got
        if commands and any(isinstance(e, SessionStarted) for e in got):
            for command, tag in commands:
                server.queue(command, tag)
        reply = server.reply()
        events += server.events()
        nxt = session.receive(reply.body, reply.content_type, reply.headers.get(auth.HMAC_HEADER))
        if nxt is None:
            break
        out = nxt
    return events, session.close()


def install_commands(job_id: int = 7, kind: JobKind = JobKind.INSTALL) -> list[tuple[Command, str]]:
    plan = plan_job(
        job_id,
        kind,
        {"pkg_id": "com.example.hello-package", "name": "Hello"},
        f"corr-{job_id}",
        ROOT,
        package_url="http://sim.test/pkg/1",
    )
    return list(plan.commands)


def run_job(dev: SimDevice, results: dict[Phase, int] | None = None) -> None:
    """Run every phase of every accepted job, as the runner does after its latencies."""
    for job in list(dev.jobs):
        while True:
            with dev.tree() as tree:
                phase = dev.scomo.begin(tree, job)
            with dev.tree() as tree:
                if dev.scomo.end(tree, job, (results or {}).get(phase, ScomoResult.SUCCESSFUL)):
                    break


def value(dev: SimDevice, path: str) -> str | bytes | None:
    with dev.tree() as tree:
        return tree.system_value(path)


@pytest.mark.parametrize("encoding", [Encoding.XML, Encoding.WBXML])
def test_first_contact_authenticates_and_keeps_the_nonce(
    template: DeviceTemplate, encoding: Encoding
) -> None:
    dev = device(template, encoding)
    events, result = converse(dev)
    assert result.ok, result.reason
    assert any(isinstance(e, SessionStarted) for e in events)
    assert dev.client_nonce  # the server's NextNonce, for the next session's digest
    _, again = converse(dev)
    assert again.ok and dev.session_counter == 2


@pytest.mark.parametrize("scheme", ["hmac", "basic"])
def test_other_auth_schemes(template: DeviceTemplate, scheme: str) -> None:
    dev = device(template, auth_name=scheme)
    assert dev.auth_type in (AuthType.HMAC, AuthType.BASIC)
    _, result = converse(dev)
    assert result.ok, result.reason


def test_download_install_with_correlator_deploys_and_alerts_in_the_next_session(
    template: DeviceTemplate,
) -> None:
    dev = device(template)
    events, result = converse(dev, install_commands())
    assert result.ok and result.jobs_accepted == 1
    execs = [e for e in events if isinstance(e, StatusReceived) and e.tag and e.tag.endswith(":exec")]
    assert [e.status.code for e in execs] == [StatusCode.ACCEPTED_FOR_PROCESSING]
    assert [phases_of(j) for j in dev.jobs] == [(Phase.DOWNLOAD, Phase.INSTALL)]
    # Between sessions the tree is not kept, only what changed in it.
    assert any(r.path == f"{ROOT}/Download/omadm-7/PkgURL" for r in dev.overlay)

    job = dev.jobs[0]
    with dev.tree() as tree:
        dev.scomo.begin(tree, job)
    assert value(dev, f"{ROOT}/Download/omadm-7/Status") == str(int(DownloadStatus.DOWNLOAD_PROGRESSING))
    run_job(dev)
    assert not dev.jobs
    deployed = f"{ROOT}/Inventory/Deployed/com.example.hello-package"
    assert value(dev, f"{deployed}/State") == str(int(DeployedState.ACTIVE))
    assert value(dev, f"{deployed}/Version") == SIM_VERSION
    assert value(dev, f"{deployed}/PkgIDRef") == "com.example.hello-package"
    assert value(dev, f"{ROOT}/Inventory/Delivered/omadm-7/State") == str(int(DeliveredState.INSTALLED))
    assert value(dev, f"{ROOT}/Download/omadm-7/Status") == str(int(DownloadStatus.IDLE))
    assert len(dev.pending_alerts) == 1

    events, result = converse(dev)
    assert result.ok and result.alerts_delivered == 1
    alerts = [e.alert for e in events if isinstance(e, AlertReceived)]
    assert len(alerts) == 1 and alerts[0].data == "1226" and alerts[0].correlator == "corr-7"
    item = alerts[0].items[0]
    assert (
        item.source is not None
        and item.source.loc_uri == f"{ROOT}/Download/omadm-7/Operations/DownloadInstall"
    )
    assert parse_scomo_alert_data(str(item.data)) == (1200, "com.example.hello-package")
    assert not dev.pending_alerts  # the server answered it: never sent again


def test_a_failure_gives_its_result_code_and_the_failed_status(template: DeviceTemplate) -> None:
    dev = device(template)
    converse(dev, install_commands())
    run_job(dev, {Phase.DOWNLOAD: ScomoResult.DOWNLOAD_FAILED_OUT_OF_MEMORY})
    assert value(dev, f"{ROOT}/Download/omadm-7/Status") == str(int(DownloadStatus.DOWNLOAD_FAILED))
    assert value(dev, f"{ROOT}/Inventory/Deployed/com.example.hello-package/ID") is None
    (alert,) = dev.pending_alerts
    assert alert.items[0].meta is not None and alert.items[0].meta.mark == "critical"
    assert parse_scomo_alert_data(str(alert.items[0].data))[0] == 1404


def test_deployed_primitives_and_repeated_exec(template: DeviceTemplate) -> None:
    dev = device(template)
    converse(dev, install_commands())
    run_job(dev)
    converse(dev)  # delivers the install report
    node = f"{ROOT}/Inventory/Deployed/com.example.hello-package"
    activate = Exec("0", (Item(target=Target(f"{node}/Operations/Activate")),), correlator="a")
    events, _ = converse(dev, [(activate, "act")])
    assert [e.status.code for e in events if isinstance(e, StatusReceived) and e.tag == "act"] == [200]
    deactivate = Exec("0", (Item(target=Target(f"{node}/Operations/Deactivate")),), correlator="d")
    events, _ = converse(dev, [(deactivate, "deact"), (deactivate, "again")])
    codes = [e.status.code for e in events if isinstance(e, StatusReceived) and e.tag in ("deact", "again")]
    assert codes == [202, 202]  # the same job, not two
    assert len(dev.jobs) == 1
    run_job(dev)
    assert value(dev, f"{node}/State") == str(int(DeployedState.INACTIVE))
    remove = Exec("0", (Item(target=Target(f"{node}/Operations/Remove")),), correlator="r")
    _, result = converse(dev, [(remove, "rm")])
    assert result.alerts_delivered == 1  # the Deactivate's report
    run_job(dev)
    assert value(dev, f"{node}/ID") is None
    (alert,) = dev.pending_alerts
    assert alert.correlator == "r"
    assert parse_scomo_alert_data(str(alert.items[0].data)) == (1200, "com.example.hello-package")


def test_exec_preconditions(template: DeviceTemplate) -> None:
    dev = device(template)
    missing = Exec("0", (Item(target=Target(f"{ROOT}/Download/nope/Operations/Install")),), correlator="x")
    events, _ = converse(dev, [(missing, "m")])
    assert [e.status.code for e in events if isinstance(e, StatusReceived) and e.tag == "m"] == [404]
    commands = [c for c in install_commands() if "PkgURL" not in repr(c[0])]
    events, _ = converse(dev, commands)
    assert [e.status.code for e in events if isinstance(e, StatusReceived) and e.tag == "job:7:exec"] == [412]
    assert not dev.jobs


def test_one_tree_at_a_time(template: DeviceTemplate) -> None:
    """A job step while a session holds the tree would lose one side's changes: refused loudly."""
    dev = device(template)
    session = dev.session()
    with pytest.raises(RuntimeError, match="already open"), dev.tree():
        pass
    session.close()
    with dev.tree() as tree:
        assert tree.system_value("./DevInfo/DevId") == dev.device_id


def test_memory_store_rolls_back_like_sqlite() -> None:
    store = MemoryTreeStore({".": NodeRecord(".", None, ".", "node")})
    with store.transaction():
        store.put(NodeRecord("./A", ".", "A", "node"))
        with pytest.raises(RuntimeError), store.transaction():
            store.put(NodeRecord("./A/b", "./A", "b", "chr", value=b"1"))
            store.delete_subtree("./A")
            raise RuntimeError
        assert [r.path for r in store.children(".")] == ["./A"]
    assert store.get("./A/b") is None and store.integrity_problems() == []


def test_idle_device_is_small(template: DeviceTemplate) -> None:
    """The point of building the tree per session: a device at rest keeps only its changes.

    The fleet's budget is 30 KB of RSS per idle device; measured ~0.7 KB of Python objects
    after a first contact (~1 KB of RSS at 10,000 devices). 3 KB here leaves room, not slack.
    """
    dev = device(template)
    converse(dev)
    assert dev.overlay == () and dev.deleted == ()
    gc.collect()
    tracemalloc.start()
    try:
        fleet = [
            SimDevice(template, f"IMEI:35{i:013d}", f"user{i}", f"password-{i:012d}") for i in range(300)
        ]
        for each in fleet:
            _, result = converse(each)
            assert result.ok
        gc.collect()
        per_device = tracemalloc.get_traced_memory()[0] / len(fleet)
    finally:
        tracemalloc.stop()
    assert per_device < 3000, per_device


def _package(version: str = "1.0.0", env_type: str = "archive", *, downgrade: bool = False) -> PackageInfo:
    component = Component("com.example.hello", "Hello", version, env_type, "greets")
    return PackageInfo("com.example.hello-package", "Hello", "", (component,), downgrade, None)


def run_with_package(dev: SimDevice, package: PackageInfo) -> None:
    for job in list(dev.jobs):
        job.package = package  # what the runner's real download found
    run_job(dev)


def test_a_real_package_deploys_its_components_and_refuses_a_downgrade(template: DeviceTemplate) -> None:
    dev = device(template)
    converse(dev, install_commands(7))
    run_with_package(dev, _package("2.0.0"))
    deployed = f"{ROOT}/Inventory/Deployed/com.example.hello"
    assert value(dev, f"{deployed}/Version") == "2.0.0" and value(dev, f"{deployed}/EnvType") == "archive"
    assert value(dev, f"{deployed}/PkgIDRef") == "com.example.hello-package"
    assert parse_scomo_alert_data(str(dev.pending_alerts[-1].items[0].data)) == (1200, "com.example.hello")
    converse(dev)  # the report delivered
    converse(dev, install_commands(8))
    run_with_package(dev, _package("1.0.0"))
    assert parse_scomo_alert_data(str(dev.pending_alerts[-1].items[0].data))[0] == ScomoResult.INSTALL_FAILED
    assert value(dev, f"{deployed}/Version") == "2.0.0"
    converse(dev)
    converse(dev, install_commands(9))
    run_with_package(dev, _package("1.0.0", downgrade=True))
    assert value(dev, f"{deployed}/Version") == "1.0.0"


def test_a_package_for_an_environment_without_installer_is_1413(template: DeviceTemplate) -> None:
    dev = device(template)
    converse(dev, install_commands(7))
    run_with_package(dev, _package(env_type="docker"))
    (alert,) = dev.pending_alerts
    assert parse_scomo_alert_data(str(alert.items[0].data))[0] == ScomoResult.UNSUPPORTED_ENVIRONMENT
    assert value(dev, f"{ROOT}/Inventory/Deployed/com.example.hello/ID") is None
