"""Software operations started on the device (``omadm agent install`` and friends), as a user runs them.

They share the server path (journal, verification, installers), so these tests check what is
local: the command line, exit codes, the clean-up of scratch entries, no alert for a server,
and the data-directory lock that keeps two agent processes from working at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from omadm.agent.config import AccountConfig, AgentConfig, DeviceConfig, load_config, save_config
from omadm.agent.runner import Agent, AgentBusy
from omadm.package.build import build_package
from omadm.package.signing import generate_key, save_public_key
from tests.agent.scomo.pkgserver import PackageServer

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(public key, hello 1.0.0, hello 2.0.0), signed."""
    base = tmp_path_factory.mktemp("packages")
    key = generate_key()
    save_public_key(key.public_key(), base / "publisher.pub.pem")
    build_package(EXAMPLES / "hello-package", base / "hello-1.0.0.omp", signing_key=key)
    build_package(EXAMPLES / "hello-package-2", base / "hello-2.0.0.omp", signing_key=key)
    return base / "publisher.pub.pem", base / "hello-1.0.0.omp", base / "hello-2.0.0.omp"


@pytest.fixture
def config(tmp_path: Path, packages: tuple[Path, Path, Path]) -> Path:
    data = tmp_path / "data"
    (data / "trust").mkdir(parents=True)
    (data / "trust" / "publisher.pub.pem").write_bytes(packages[0].read_bytes())
    path = tmp_path / "omadm.toml"
    save_config(
        AgentConfig(
            device=DeviceConfig(id="IMEI:1"),
            data_dir=data,
            accounts=(AccountConfig("srv", "http://127.0.0.1:9/dm", "u", "p", server_password="sp"),),
            poll_interval=0,
            retries=0,
            retry_backoff=0.01,
        ),
        path,
    )
    return path


def agent(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "omadm", "agent", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def hello(config: Path) -> str:
    program = load_config(config).data_dir / "components/archive/com.example.hello/current/bin/hello"
    return subprocess.run([str(program)], capture_output=True, text=True, check=True).stdout


def test_install_upgrade_refused_downgrade_and_lifecycle_from_the_command_line(
    config: Path, packages: tuple[Path, Path, Path]
) -> None:
    _, v1, v2 = packages
    run = agent(config, "install", str(v1))
    assert run.returncode == 0, run.stderr
    assert "1200 Successful" in run.stdout
    assert "deployed   com.example.hello  1.0.0  active  (package hello-1.0.0;" in run.stdout
    assert "delivered" not in run.stdout  # the local scratch entry and its package file are gone
    assert "(version 1.0.0)" in hello(config)

    with PackageServer({"/hello-2.0.0.omp": v2.read_bytes()}) as server:
        run = agent(config, "install", server.url("/hello-2.0.0.omp"))
    assert run.returncode == 0, run.stderr
    assert "com.example.hello  2.0.0  active" in run.stdout
    assert "(version 2.0.0)" in hello(config)

    run = agent(config, "install", str(v1))
    assert run.returncode == 6
    assert "1405 Install failed" in run.stdout
    assert "would downgrade 2.0.0" in run.stderr
    assert "(version 2.0.0)" in hello(config)

    assert agent(config, "activate", "com.example.hello").stdout.startswith(
        "activate com.example.hello: nothing to do"
    )
    run = agent(config, "deactivate", "com.example.hello")
    assert run.returncode == 0 and "com.example.hello  2.0.0  inactive" in run.stdout
    run = agent(config, "remove", "com.example.hello")
    assert run.returncode == 0 and "deployed" not in run.stdout
    run = agent(config, "remove", "com.example.hello")
    assert run.returncode == 1
    assert "no deployed component 'com.example.hello' (deployed: none)" in run.stderr

    data = load_config(config).data_dir
    assert list((data / "packages").iterdir()) == []
    live = Agent(load_config(config))
    try:
        assert live.alerts.pending() == []  # local work is not reported to a server as a job
        assert live.scomo is not None and live.scomo.journal.unfinished() == []
    finally:
        live.close()


def test_an_unsigned_or_missing_package_is_refused_with_the_reason(config: Path, tmp_path: Path) -> None:
    unsigned = tmp_path / "unsigned.omp"
    build_package(EXAMPLES / "hello-package", unsigned)
    run = agent(config, "install", str(unsigned))
    assert run.returncode == 6
    assert "1407 Failed package validation" in run.stdout
    run = agent(config, "install", str(tmp_path / "nothing.omp"))
    assert run.returncode == 1
    assert "is neither an http(s) URL nor a package file" in run.stderr


def test_one_working_agent_per_data_directory_but_inspection_is_always_allowed(config: Path) -> None:
    holder = Agent(load_config(config))
    try:
        with pytest.raises(AgentBusy, match=rf"another omadm agent \(pid {os.getpid()}\)"):
            Agent(load_config(config))
        run = agent(config, "connect")
        assert run.returncode == 1
        assert "another omadm agent" in run.stderr
        assert agent(config, "status").returncode == 0
        assert agent(config, "components").returncode == 0
    finally:
        holder.close()
    second = Agent(load_config(config))  # released on close
    second.close()
