"""Campaigns end to end: a real ``omadm server`` and four real ``omadm agent run`` processes.

The operator drives campaigns through the REST API with an operator token; the devices are
woken by Package #0 over UDP (the server sweeps every 0.5 s), install what the campaign's
jobs tell them, and the test reads the outcome where an operator would (the campaign's
counters per wave) and where the device keeps it (its installed program). The first
campaign installs hello 1.0.0 in three waves; the others try a 2.0.0 whose install hook
always fails (1405, the device rolls back to 1.0.0) and must pause, be cancelled or stop
before their later waves are ever sent.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from omadm.agent.config import load_config, save_config
from omadm.package.build import build_package
from omadm.package.signing import generate_key, save_public_key
from omadm.server.store.engine import database_url, make_engine, session_factory
from omadm.server.store.migrate import migrate
from omadm.server.store.models import CampaignDevice, Device, Job

from .serverproc import ENV, ServerProcess, agent_config

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEVICES = [f"IMEI:35175605160{i:04d}" for i in range(4)]
SERVER_PASSWORD = "srv-secret"
FINAL = {"finished", "paused", "stopped", "cancelled"}


def udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class World:
    server: ServerProcess
    api: httpx.Client
    agent_dirs: dict[str, Path]
    artifacts: dict[str, int]
    logs: list[Path]
    first: dict[str, Any] = field(default_factory=dict)  # the 1.0.0 campaign, once finished

    def hello(self, device: str) -> str:
        program = self.agent_dirs[device] / "agent/components/archive/com.example.hello/current/bin/hello"
        return subprocess.run([str(program)], capture_output=True, text=True, check=True).stdout

    def logs_text(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in [self.server.log, *self.logs])

    def create(self, **body: Any) -> dict[str, Any]:
        body.setdefault("all_devices", not body.get("target"))  # the whole (four-device) fleet
        response = self.api.post("/api/v1/campaigns", json=body)
        assert response.status_code == 201, response.text
        out: dict[str, Any] = response.json()
        return out

    def act(self, campaign_id: int, action: str) -> dict[str, Any]:
        response = self.api.post(f"/api/v1/campaigns/{campaign_id}/{action}")
        assert response.status_code == 200, response.text
        out: dict[str, Any] = response.json()
        return out

    def wait(self, campaign_id: int, states: set[str] = FINAL, timeout: float = 40) -> dict[str, Any]:
        """Poll the campaign until its state is one of ``states`` and no device is still running."""
        deadline = time.monotonic() + timeout
        while True:
            response = self.api.get(f"/api/v1/campaigns/{campaign_id}")
            assert response.status_code == 200, response.text
            campaign: dict[str, Any] = response.json()
            if campaign["state"] in states and campaign["counters"]["running"] == 0:
                return campaign
            assert time.monotonic() < deadline, f"{campaign}\n{self.logs_text()}"
            time.sleep(0.25)


def rows(db_url: str, campaign_id: int) -> list[tuple[str, int, str, Job | None]]:
    """(DevId, wave from 1, campaign device state, its last job) of each campaign device."""

    async def read() -> list[tuple[str, int, str, Job | None]]:
        engine = make_engine(db_url)
        try:
            async with session_factory(engine)() as db:
                query = (
                    select(Device.device_id, CampaignDevice, Job)
                    .join(Device, Device.id == CampaignDevice.device_pk)
                    .outerjoin(Job, Job.id == CampaignDevice.job_id)
                    .where(CampaignDevice.campaign_id == campaign_id)
                    .order_by(CampaignDevice.id)
                )
                return [(d, cd.wave + 1, cd.state, job) for d, cd, job in await db.execute(query)]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def campaign_jobs(db_url: str, campaign_id: int) -> list[Job]:
    async def read() -> list[Job]:
        engine = make_engine(db_url)
        try:
            async with session_factory(engine)() as db:
                query = select(Job).where(Job.campaign_id == campaign_id).order_by(Job.id)
                return list((await db.scalars(query)).all())
        finally:
            await engine.dispose()

    return asyncio.run(read())


def waves(campaign: dict[str, Any]) -> list[dict[str, int]]:
    counted: list[dict[str, int]] = campaign["wave_counters"]
    return counted


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("campaigns")
    key = generate_key()
    save_public_key(key.public_key(), base / "publisher.pub.pem")
    build_package(EXAMPLES / "hello-package", base / "hello-1.0.0.omp", signing_key=key)
    broken = base / "src" / "hello-2-broken"
    shutil.copytree(EXAMPLES / "hello-package-2", broken)
    (broken / "com.example.hello" / "hooks" / "install").write_text(
        "#!/bin/sh\necho 'hello 2.0.0 cannot install here' >&2\nexit 3\n"
    )
    build_package(broken, base / "hello-2.0.0-broken.omp", signing_key=key)

    db_url = database_url(None, base)
    migrate(db_url)
    settings = base / "omadm-server.toml"
    settings.write_text("[server]\nsweep_interval = 0.5\nnotify_interval = 30\n")
    server = ServerProcess(db_url, base / "server", base / "server.log", extra=("--config", str(settings)))
    server.start()
    agents: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    api: httpx.Client | None = None
    try:
        server.run("publisher", "add", "tests", str(base / "publisher.pub.pem"))
        artifacts = {
            name: int(server.run("artifact", "add", str(base / f"hello-{name}.omp")).split()[1].rstrip(":"))
            for name in ("1.0.0", "2.0.0-broken")
        }
        token = server.run("token", "add", "ops", "--role", "operator").strip().splitlines()[-1]
        agent_dirs = {}
        for i, device in enumerate(DEVICES):
            port = udp_port()
            server.run(
                "device", "add", device, "--username", "dev", "--password", "secret",
                "--server-password", SERVER_PASSWORD, "--notify", f"udp://127.0.0.1:{port}",
            )  # fmt: skip
            directory = base / f"agent{i}"
            path = agent_config(directory, f"{server.url}/dm", device, base / "publisher.pub.pem", poll=0)
            config = load_config(path)
            account = replace(config.accounts[0], server_password=SERVER_PASSWORD)
            save_config(replace(config, accounts=(account,), listen_udp=f"127.0.0.1:{port}"), path)
            log = base / f"agent{i}.log"
            logs.append(log)
            with log.open("wb") as out:
                agents.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "omadm", "agent", "run", "--config", str(path)],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=ENV,
                    )
                )
            agent_dirs[device] = directory
        deadline = time.monotonic() + 30
        while not all("listening for Package #0 on udp" in log.read_text() for log in logs):
            assert time.monotonic() < deadline, "\n".join(log.read_text() for log in logs)
            time.sleep(0.1)
        api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=15)
        yield World(server, api, agent_dirs, artifacts, logs)
    finally:
        if api is not None:
            api.close()
        for agent in agents:
            agent.terminate()
        for agent in agents:
            try:
                agent.wait(timeout=15)
            except subprocess.TimeoutExpired:
                agent.kill()
        server.stop()


@pytest.fixture(scope="module")
def installed(world: World) -> World:
    """hello 1.0.0 installed on all four devices by a campaign in waves of 1, 50 % and the rest."""
    campaign = world.create(
        name="hello 1.0.0",
        kind="install",
        artifact_id=world.artifacts["1.0.0"],
        waves=[1, "50%", "100%"],
        success_threshold=1.0,
        error_threshold=0.0,
    )
    assert campaign["state"] == "draft"
    assert [w["size"] for w in waves(campaign)] == [1, 2, 1]
    started = world.act(campaign["id"], "start")
    assert started["state"] == "running"
    # Only the first wave is sent at start.
    assert [w["pending"] for w in waves(started)] == [0, 2, 1]
    world.first = world.wait(campaign["id"])
    return world


def test_all_waves_succeed(installed: World) -> None:
    world, campaign = installed, installed.first
    assert campaign["state"] == "finished", f"{campaign}\n{world.logs_text()}"
    assert campaign["counters"]["succeeded"] == 4
    sizes = [(w["wave"], w["size"], w["succeeded"]) for w in waves(campaign)]
    assert sizes == [(1, 1, 1), (2, 2, 2), (3, 1, 1)]
    members = rows(world.server.db_url, campaign["id"])
    assert sorted(d for d, *_ in members) == sorted(DEVICES)
    for device, _, state, job in members:
        assert state == "succeeded"
        assert job is not None and (job.kind, job.state, job.result_code) == ("install", "succeeded", 1200)
        assert "version 1.0.0" in world.hello(device)
    # Waves were released in order: each wave's jobs were made after the previous wave's
    # jobs had all finished (no job before its wave's turn).
    by_wave: dict[int, list[Job]] = {}
    for _, wave, _, job in members:
        assert job is not None
        by_wave.setdefault(wave, []).append(job)
    for wave in (2, 3):
        previous_done = max(j.finished_at for j in by_wave[wave - 1] if j.finished_at is not None)
        assert all(j.created >= previous_done for j in by_wave[wave]), by_wave
    assert len(campaign_jobs(world.server.db_url, campaign["id"])) == 4  # one each, no retry


def test_thresholds(installed: World) -> None:
    world = installed
    assert installed.first["state"] == "finished"
    broken = world.artifacts["2.0.0-broken"]

    # (a) Every device of wave 1 fails, below the success threshold but not above the error
    # threshold (1.0: failed / size is never above it): the campaign pauses after wave 1.
    paused = world.create(
        name="hello 2.0.0 (pauses)",
        kind="update",
        artifact_id=broken,
        waves=[2, "100%"],
        success_threshold=1.0,
        error_threshold=1.0,
    )
    assert [w["size"] for w in waves(paused)] == [2, 2]
    world.act(paused["id"], "start")
    done = world.wait(paused["id"])
    assert done["state"] == "paused", f"{done}\n{world.logs_text()}"
    assert "below the success threshold" in done["detail"]
    first, second = waves(done)
    assert (first["failed"], first["succeeded"]) == (2, 0)
    assert (second["pending"], second["size"]) == (2, 2)
    members = rows(world.server.db_url, paused["id"])
    for _, wave, _, job in members:
        if wave == 1:
            assert job is not None
            assert (job.state, job.result_code) == ("failed", 1405), job.detail
        else:
            assert job is None  # wave 2 untouched
    assert len(campaign_jobs(world.server.db_url, paused["id"])) == 2
    for device in DEVICES:
        assert "version 1.0.0" in world.hello(device)  # rolled back or never touched

    # (b) Cancelling it: the pending devices are cancelled, nothing else changes.
    cancelled = world.act(paused["id"], "cancel")
    assert cancelled["state"] == "cancelled"
    first, second = waves(cancelled)
    assert (first["failed"], second["cancelled"], second["pending"]) == (2, 2, 0)
    assert len(campaign_jobs(world.server.db_url, paused["id"])) == 2
    time.sleep(1.5)  # a few sweeps: a cancelled campaign sends nothing
    assert len(campaign_jobs(world.server.db_url, paused["id"])) == 2
    for device in DEVICES:
        assert "version 1.0.0" in world.hello(device)

    # (c) Error threshold 0: the first failure stops the campaign; wave 2 is never sent.
    stopping = world.create(
        name="hello 2.0.0 (stops)",
        kind="update",
        artifact_id=broken,
        waves=[2, "100%"],
        success_threshold=1.0,
        error_threshold=0.0,
    )
    world.act(stopping["id"], "start")
    done = world.wait(stopping["id"])
    assert done["state"] == "stopped", f"{done}\n{world.logs_text()}"
    assert "above the error threshold" in done["detail"]
    first, second = waves(done)
    assert first["failed"] >= 1 and first["succeeded"] == 0
    assert first["failed"] + first["cancelled"] == 2
    assert (second["cancelled"], second["size"]) == (2, 2)
    time.sleep(1.5)
    jobs = campaign_jobs(world.server.db_url, stopping["id"])
    assert len(jobs) == 2  # wave 1's only
    wave2 = {d for d, wave, _, _ in rows(world.server.db_url, stopping["id"]) if wave == 2}
    assert all(job is None for d, _, _, job in rows(world.server.db_url, stopping["id"]) if d in wave2)
    assert all(j.state in ("failed", "cancelled") for j in jobs), [(j.state, j.detail) for j in jobs]
    for device in DEVICES:
        assert "version 1.0.0" in world.hello(device)
