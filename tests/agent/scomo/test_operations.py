"""SCOMO DownloadInstall from Exec to Generic Alert: real HTTP DM server, real package server.

A first increment of issue 4's end-to-end coverage: one primitive, the happy path.
"""

from __future__ import annotations

from pathlib import Path

from omadm.agent.config import AccountConfig, AgentConfig, DeviceConfig
from omadm.agent.runner import Agent
from omadm.package.build import build_package
from omadm.package.signing import generate_key, save_public_key
from omadm.protocol.codes import AuthType
from omadm.protocol.messages import Add, Exec, Item, Meta, Target
from omadm.protocol.session import (
    AlertReceived,
    Credentials,
    Event,
    ServerSession,
    SessionStarted,
    StatusReceived,
)
from tests.agent.scomo.pkgserver import PackageServer
from tests.e2e.dmserver import DeviceAccount, TestDMServer

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "hello-package"
DOWNLOAD = "./SCOMO/Download/j1"


def test_download_install_lands_in_deployed_and_is_reported_with_the_correlator(tmp_path: Path) -> None:
    key = generate_key()
    (tmp_path / "data" / "trust").mkdir(parents=True)
    save_public_key(key.public_key(), tmp_path / "data" / "trust" / "publisher.pem")
    build_package(EXAMPLE, tmp_path / "hello.omp", signing_key=key)
    with PackageServer({"/hello.omp": (tmp_path / "hello.omp").read_bytes()}) as packages:
        commands = [
            Add("0", (Item(target=Target(DOWNLOAD), meta=Meta(format="node")),)),
            Add("0", (Item(target=Target(f"{DOWNLOAD}/PkgID"), data="hello-1"),)),
            Add("0", (Item(target=Target(f"{DOWNLOAD}/PkgURL"), data=packages.url("/hello.omp")),)),
            Add("0", (Item(target=Target(f"{DOWNLOAD}/Operations"), meta=Meta(format="node")),)),
            Add("0", (Item(target=Target(f"{DOWNLOAD}/Operations/DownloadInstall")),)),
            Exec("0", (Item(target=Target(f"{DOWNLOAD}/Operations/DownloadInstall")),), correlator="job-1"),
        ]

        def script(events: list[Event], session: ServerSession) -> None:
            if any(isinstance(e, SessionStarted) for e in events) and commands:
                while commands:
                    session.queue(commands.pop(0))

        account = DeviceAccount(
            Credentials(AuthType.MD5, "u", "p"),
            client_nonce=b"n",
            server_credentials=Credentials(AuthType.MD5, "srv", "sp"),
            send_server_cred=True,
        )
        with TestDMServer({"IMEI:5": account}, script) as server:
            config = AgentConfig(
                device=DeviceConfig(id="IMEI:5"),
                data_dir=tmp_path / "data",
                accounts=(AccountConfig("srv", server.url, "u", "p", server_password="sp"),),
                poll_interval=0,
                retries=1,
                retry_backoff=0.01,
            )
            agent = Agent(config)
            try:
                assert agent.connect().ok
                assert [(e.command.name, e.status.code) for e in server.of(StatusReceived)][-1] == (
                    "Exec",
                    202,
                )
                assert agent.work() == 1
                assert agent.connect().alerts_delivered == 1
                deployed = "./SCOMO/Inventory/Deployed/com.example.hello"
                assert agent.tree.system_value(f"{deployed}/Version") == "1.0.0"
                assert agent.tree.system_value(f"{deployed}/State") == "20"
            finally:
                agent.close()
    (alert,) = [e.alert for e in server.of(AlertReceived)]
    assert alert.correlator == "job-1"
    (item,) = alert.items
    assert item.source is not None and item.source.loc_uri == f"{DOWNLOAD}/Operations/DownloadInstall"
    assert item.target is not None and item.target.loc_uri == deployed
    assert item.data == "<ResultCode>1200</ResultCode><Identifier>com.example.hello</Identifier>"
