"""A fleet against a real server: 200 simulated devices, an install campaign in three waves.

A real ``omadm server`` process (SQLite and PostgreSQL) with a small in-flight limit, so
that the first contacts of the fleet are shed as 503 + Retry-After; 200 devices of ``omadm
sim`` registered in bulk through the REST API; a signed package installed by a campaign in
waves of 10 %, 50 % and the rest, with failures injected at fixed rates (1402 while
downloading, 1405 while installing). The promises checked are the fleet's:

* every device completes its sessions, with no HTTP 5xx and no connection error;
* the campaign finishes; each device has exactly one job in it, in a final state;
* the server's results are the devices' results, code by code: none lost, none doubled.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from omadm.package.build import build_package
from omadm.package.signing import generate_key
from omadm.server.store.engine import make_engine, session_factory
from omadm.server.store.models import CampaignDevice, Job
from omadm.sim.fleet import Fleet
from omadm.sim.profile import parse_profile
from omadm.sim.register import register_fleet
from omadm.sim.run import FleetRunner, RunOptions, Summary

from .serverproc import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEVICES = 200


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    settings = tmp_path / "omadm-server.toml"
    # A small in-flight limit: 200 devices arriving in a second are shed as 503 + Retry-After.
    settings.write_text("[server]\nsweep_interval = 0.5\nnotify_interval = 3600\ndm_max_in_flight = 8\n")
    proc = ServerProcess(
        db_url, tmp_path / "server", tmp_path / "server.log", extra=("--config", str(settings))
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


async def campaign_jobs(db_url: str, campaign_id: int) -> tuple[list[Job], int]:
    engine = make_engine(db_url)
    try:
        async with session_factory(engine)() as db:
            jobs = list(await db.scalars(select(Job).where(Job.campaign_id == campaign_id)))
            members = await db.scalar(
                select(func.count())
                .select_from(CampaignDevice)
                .where(CampaignDevice.campaign_id == campaign_id)
            )
            return jobs, int(members or 0)
    finally:
        await engine.dispose()


async def test_an_install_campaign_over_200_simulated_devices_with_injected_failures(
    server: ServerProcess, tmp_path: Path
) -> None:
    build_package(EXAMPLES / "hello-package", tmp_path / "hello.omp", signing_key=generate_key())
    add = ("artifact", "add", str(tmp_path / "hello.omp"), "--allow-unsigned")  # an unknown key: allowed
    artifact = int(server.run(*add).split()[1].rstrip(":"))
    token = server.run("token", "add", "fleet", "--role", "operator").strip().splitlines()[-1]
    fleet: Fleet = await register_fleet(server.url, token, DEVICES, "IMEI:35", "md5", batch_size=120)
    profile = parse_profile(
        {
            "seed": 12,
            "arrival": {"mode": "spread", "over": 1.0},
            "poll": {"interval": 2.0, "jitter": 0.3},
            "encoding": {"wbxml": 0.3},
            "latency": {
                "download": {"dist": "uniform", "min": 0.1, "max": 0.6},
                "install": {"dist": "uniform", "min": 0.05, "max": 0.2},
            },
            "failures": {"1402": 0.04, "1405": 0.04},
            # dm_max_in_flight = 8 really applies since it reaches the worker (it was dropped
            # before): on a loaded machine a device may be told to come back more than the
            # default ten times for one message; it keeps honouring Retry-After, as agents do.
            "http": {"timeout": 30, "retries": 5, "busy_retries": 60},
        }
    )
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as api:
        runner = FleetRunner(fleet, profile, RunOptions(duration=240, concurrency=100))
        running = asyncio.create_task(runner.run())
        deadline = time.monotonic() + 90
        while runner.stats.sessions.get("ok", 0) < DEVICES:  # every device's first contact
            assert time.monotonic() < deadline and not running.done(), runner.stats
            await asyncio.sleep(0.2)
        created = await api.post(
            "/api/v1/campaigns",
            json={
                "name": "hello to the fleet",
                "kind": "install",
                "artifact_id": artifact,
                "all_devices": True,
                "waves": ["10%", "50%", "100%"],
                "success_threshold": 0.5,
                "error_threshold": 0.4,
            },
        )
        assert created.status_code == 201, created.text
        campaign_id = created.json()["id"]
        assert (await api.post(f"/api/v1/campaigns/{campaign_id}/start")).status_code == 200
        while True:
            campaign = (await api.get(f"/api/v1/campaigns/{campaign_id}")).json()
            if campaign["state"] != "running" and campaign["counters"]["running"] == 0:
                break
            assert time.monotonic() < deadline + 120 and not running.done(), (campaign, runner.stats)
            await asyncio.sleep(0.5)
        # The last reports reach the server in the devices' next sessions: let them land.
        await asyncio.sleep(3)
        runner.stop()
        summary: Summary = await running
    data = summary.to_json()
    log = server.log.read_text()[-3000:]
    assert campaign["state"] == "finished", (campaign, log)
    assert set(data["errors"]) <= {"http 503"}, (data["errors"], log)  # no 5xx, no connection error
    assert data["http_503"]["answered"] > 0  # the fleet was shed and came back
    assert data["sessions"]["by_outcome"] == {"ok": data["sessions"]["finished"]}, data["sessions"]

    jobs, members = await campaign_jobs(server.db_url, campaign_id)
    assert members == DEVICES
    assert len(jobs) == DEVICES and len({job.device_pk for job in jobs}) == DEVICES  # one job each
    assert {job.state for job in jobs} <= {"succeeded", "failed"}
    on_server = Counter(job.result_code for job in jobs)
    on_devices = Counter({int(code): n for code, n in data["scomo"]["results"].items()})
    assert on_server == on_devices, (on_server, on_devices)  # none lost, none doubled
    assert on_server[1200] == campaign["counters"]["succeeded"]
    assert set(on_server) - {1200} <= {1402, 1405} and sum(on_server.values()) - on_server[1200] >= 1
