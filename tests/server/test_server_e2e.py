"""The real server process and real agent processes over HTTP on 127.0.0.1.

Every SCOMO job type runs to completion through ``omadm server`` (on SQLite and on
PostgreSQL) and ``omadm agent connect`` (in XML and in WBXML): the operator side uses the
``omadm server device|artifact|job`` commands, the device side its own CLI, and the test
reads the outcome where an operator would (``job list``) and where the device keeps it (its
tree and its installed files).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from omadm.agent.config import AccountConfig, load_config, save_config
from omadm.package.build import build_package
from omadm.package.signing import generate_key, save_public_key
from omadm.protocol.codec import Encoding

from .serverproc import SERVER_PASSWORD, ServerProcess, agent_config, agent_connect

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEVICE = "IMEI:490154203237518"


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(db_url, tmp_path / "server", tmp_path / "server.log").start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("packages")
    key = generate_key()
    save_public_key(key.public_key(), base / "publisher.pub.pem")
    build_package(EXAMPLES / "hello-package", base / "hello-1.0.0.omp", signing_key=key)
    build_package(EXAMPLES / "hello-package-2", base / "hello-2.0.0.omp", signing_key=key)
    return {"key": base / "publisher.pub.pem", "v1": base / "hello-1.0.0.omp", "v2": base / "hello-2.0.0.omp"}


def make_agent(tmp_path: Path, server: ServerProcess, packages: dict[str, Path], encoding: Encoding) -> Path:
    config = agent_config(tmp_path, f"{server.url}/dm", DEVICE, packages["key"], encoding=encoding.value)
    server.run(
        "device", "add", DEVICE, "--username", "dev", "--password", "secret",
        "--server-password", SERVER_PASSWORD,
    )  # fmt: skip
    return config


def connect(config: Path) -> str:
    return agent_connect(config).stdout


def hello(tmp_path: Path) -> str:
    program = tmp_path / "agent/components/archive/com.example.hello/current/bin/hello"
    return subprocess.run([str(program)], capture_output=True, text=True, check=True).stdout


def last_job(server: ServerProcess) -> list[str]:
    return server.jobs()[-1]


@pytest.mark.parametrize("encoding", [Encoding.XML, Encoding.WBXML])
def test_every_scomo_job_type_runs_to_completion(
    server: ServerProcess, packages: dict[str, Path], tmp_path: Path, encoding: Encoding
) -> None:
    config = make_agent(tmp_path, server, packages, encoding)
    server.run("publisher", "add", "tests", str(packages["key"]))  # again: "already trusted"
    v1 = server.run("artifact", "add", str(packages["v1"])).split()[1].rstrip(":")
    v2 = server.run("artifact", "add", str(packages["v2"])).split()[1].rstrip(":")

    # Install by URL: Exec 202 in the first session, the Generic Alert in the second.
    server.run("job", "add", DEVICE, "install", "--artifact", v1)
    connect(config)
    assert last_job(server)[2:5] == ["install", "succeeded", "1200"]
    assert "(version 1.0.0)" in hello(tmp_path)

    # Deactivate, then activate (by component ID, resolved from the inventory).
    for kind, state in (("deactivate", "inactive"), ("activate", "active")):
        server.run("job", "add", DEVICE, kind, "--component", "com.example.hello")
        connect(config)
        assert last_job(server)[2:5] == [kind, "succeeded", "1200"], state

    # Update through a download descriptor (DLOTA), with its install-notify.
    server.run("job", "add", DEVICE, "update", "--artifact", v2, "--descriptor")
    connect(config)
    assert last_job(server)[2:5] == ["update", "succeeded", "1200"]
    assert "(version 2.0.0)" in hello(tmp_path)

    # A downgrade is refused by the device: the job fails with its SCOMO result.
    server.run("job", "add", DEVICE, "install", "--artifact", v1)
    connect(config)
    assert last_job(server)[2:5] == ["install", "failed", "1405"]

    # Remove; download only; install what was delivered; drop the delivered package.
    server.run("job", "add", DEVICE, "remove", "--component", "com.example.hello")
    connect(config)
    assert last_job(server)[2:5] == ["remove", "succeeded", "1200"]
    server.run("job", "add", DEVICE, "download", "--artifact", v1)
    connect(config)
    job = last_job(server)
    assert job[2:5] == ["download", "succeeded", "1200"]
    delivered = f"omadm-{job[0]}"
    server.run("job", "add", DEVICE, "install-delivered", "--node", delivered)
    connect(config)
    assert last_job(server)[2:5] == ["install-delivered", "succeeded", "1200"]
    server.run("job", "add", DEVICE, "remove-delivered", "--node", delivered)
    connect(config)
    assert last_job(server)[2:5] == ["remove-delivered", "succeeded", "1200"]

    # Direct delivery: the package travels inside the DM session as a Large Object.
    server.run("job", "add", DEVICE, "remove", "--component", "com.example.hello")
    connect(config)
    server.run("job", "add", DEVICE, "install-direct", "--artifact", v2)
    connect(config)
    assert last_job(server)[2:5] == ["install-direct", "succeeded", "1200"]
    assert "(version 2.0.0)" in hello(tmp_path)

    # Refresh the inventory on demand.
    server.run("job", "add", DEVICE, "refresh-inventory")
    connect(config)
    assert last_job(server)[2:4] == ["refresh-inventory", "succeeded"]
    assert all(job[3] in ("succeeded", "failed") for job in server.jobs())


def add_oem(server: ServerProcess, config: Path, *, scomo_servers: tuple[str, ...] = ()) -> None:
    """Authority ``oem`` (ServerID ``oem-dm``) registers the device, which gets an account for it.

    ``scomo_servers``: the ServerIDs the device lets use SCOMO (``[scomo] servers``).
    """
    server.run("authority", "add", "oem", "--server-id", "oem-dm")
    server.run(
        "device", "add", DEVICE, "--username", "oemdev", "--password", "oem-secret", "--authority", "oem",
        "--server-password", "oem-srv-secret",
    )  # fmt: skip
    settings = load_config(config)
    oem_account = AccountConfig(
        "oem-dm", f"{server.url}/dm/oem", "oemdev", "oem-secret", server_password="oem-srv-secret"
    )
    scomo = replace(settings.scomo, servers=scomo_servers)
    save_config(replace(settings, accounts=(*settings.accounts, oem_account), scomo=scomo), config)


def test_two_authorities_share_one_device(
    server: ServerProcess, packages: dict[str, Path], tmp_path: Path
) -> None:
    """One real agent with two DMAcc accounts: the default authority and ``oem`` (``/dm/oem``).

    Each authority has its own device row and credentials; oem's job runs on the device;
    both see the component in their inventory (the agent's SCOMO ACL grants every server),
    and neither sees the other's job.
    """
    config = make_agent(tmp_path, server, packages, Encoding.XML)
    add_oem(server, config)
    server.run("publisher", "add", "tests", str(packages["key"]), "--authority", "oem")
    v1 = server.run("artifact", "add", str(packages["v1"]), "--authority", "oem").split()[1].rstrip(":")
    server.run("job", "add", DEVICE, "install", "--artifact", v1, "--authority", "oem")

    agent_connect(config)  # the default account: nothing for it to do
    assert "install" in server.run("job", "list", "--authority", "oem")
    assert "install" not in server.run("job", "list")  # the default authority has no such job
    agent_connect(config, server_id="oem-dm")
    assert server.jobs("oem")[-1][2:5] == ["install", "succeeded", "1200"]
    assert "(version 1.0.0)" in hello(tmp_path)
    agent_connect(config)  # the default authority reads the shared device's inventory too
    assert "com.example.hello" in server.run("device", "show", DEVICE)
    assert "com.example.hello" in server.run("device", "show", DEVICE, "--authority", "oem")


def test_a_device_s_acl_decides_what_each_authority_may_do(
    server: ServerProcess, packages: dict[str, Path], tmp_path: Path
) -> None:
    """The device reserves SCOMO for the default authority (``[scomo] servers``): ``oem`` still
    manages its account and reads DevInfo, but sees no software and its install is refused."""
    config = make_agent(tmp_path, server, packages, Encoding.XML)
    add_oem(server, config, scomo_servers=("omadm",))
    for authority in ("default", "oem"):
        server.run("publisher", "add", "tests", str(packages["key"]), "--authority", authority)
    v1 = server.run("artifact", "add", str(packages["v1"])).split()[1].rstrip(":")
    server.run("job", "add", DEVICE, "install", "--artifact", v1)
    agent_connect(config)  # the default authority installs
    assert last_job(server)[2:5] == ["install", "succeeded", "1200"]

    oem_v1 = server.run("artifact", "add", str(packages["v1"]), "--authority", "oem").split()[1].rstrip(":")
    server.run("job", "add", DEVICE, "install", "--artifact", oem_v1, "--authority", "oem")
    agent_connect(config, server_id="oem-dm")
    oem_jobs = server.jobs("oem")
    assert [job[2:4] for job in oem_jobs] == [["install", "failed"]], oem_jobs
    assert "Add answered 425" in oem_jobs[0][-1]  # the device's answer: permission denied
    shown = server.run("device", "show", DEVICE, "--authority", "oem")
    assert "last contact never" not in shown.splitlines()[0]  # oem's session itself went well
    assert "com.example.hello" not in shown  # and it sees no software
    assert "(version 1.0.0)" in hello(tmp_path)  # the default authority's install stands
