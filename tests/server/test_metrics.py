"""``GET /metrics`` of a real server process, parsed with prometheus-client's own parser.

A fresh ``omadm server`` (SQLite and PostgreSQL) with an in-flight limit of one, so that a
simulated fleet arriving at once is partly shed with 503; every device has one session (no
polling), one device has a wrong password. The scrape must then say exactly what the
simulator saw: messages by outcome, sessions started and completed, 503s shed, the DM
authentication failures, the latency histogram's count; and, read from the database at
scrape time, a queued job and the devices of a running campaign. With two workers
(multi-process mode), every scrape, whichever worker answers it, shows the whole server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from typer.testing import CliRunner

from omadm.cli import app as cli_app
from omadm.package.build import build_package
from omadm.package.signing import generate_key
from omadm.server import metrics
from omadm.server.app import create_app
from omadm.server.config import ServerConfig
from omadm.server.store.engine import make_engine, session_factory
from omadm.sim.fleet import Fleet
from omadm.sim.profile import parse_profile
from omadm.sim.register import register_fleet
from omadm.sim.run import FleetRunner, RunOptions

from .conftest import POSTGRES_ENV
from .serverproc import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEVICES = 10

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, token: str | None = None) -> Samples:
    """Every sample of one scrape, keyed by (name, sorted labels)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, metric: str, /, **labels: str) -> float:
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, metric: str, /, **labels: str) -> float:
    """The sum over every sample of ``metric`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == metric and want <= set(found))


async def add_token(server: ServerProcess, name: str, role: str) -> str:
    """``server token add`` in this process (a command line process costs seconds to start),
    in a thread: the command runs its own event loop."""
    args = ["server", "--db", server.db_url, "--data-dir", str(server.data_dir), "token", "add", name]
    done = await asyncio.to_thread(CliRunner().invoke, cli_app, [*args, "--role", role])
    assert done.exit_code == 0, done.output
    return done.output.split()[0]


def start_server(db_url: str, tmp_path: Path, *extra: str, settings: str = "") -> ServerProcess:
    config = tmp_path / "omadm-server.toml"
    # One message at a time: a fleet arriving at once is shed (503 + Retry-After).
    config.write_text(
        "[server]\nsweep_interval = 0.5\nnotify_interval = 3600\ndm_max_in_flight = 1\n"
        "max_retry_after = 2\n" + settings
    )
    proc = ServerProcess(
        db_url, tmp_path / "server", tmp_path / "server.log", extra=("--config", str(config), *extra)
    )
    return proc.start(timeout=60)


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    proc = start_server(db_url, tmp_path)
    try:
        yield proc
    finally:
        proc.stop()


async def run_fleet(server: ServerProcess, token: str) -> tuple[dict[str, object], Fleet]:
    """One session per device (no polling); the last device has a wrong password."""
    fleet = await register_fleet(server.url, token, DEVICES, "IMEI:77", "md5")
    devices = list(fleet.devices)
    devices[-1] = dataclasses.replace(devices[-1], password="not-the-password")
    fleet = dataclasses.replace(fleet, devices=tuple(devices))
    profile = parse_profile(
        {
            "seed": 3,
            "arrival": {"mode": "all-at-once"},
            "poll": {"interval": 3600},
            "http": {"timeout": 30, "retries": 10},
        }
    )
    runner = FleetRunner(fleet, profile, RunOptions(duration=120, concurrency=DEVICES))
    running = asyncio.create_task(runner.run())
    deadline = time.monotonic() + 60
    while runner.stats.sessions_done < DEVICES:
        assert time.monotonic() < deadline and not running.done(), runner.stats
        await asyncio.sleep(0.1)
    runner.stop()
    summary = await running
    return summary.to_json(), fleet


def check_dm_counters(samples: Samples, data: dict[str, object]) -> None:
    sessions = data["sessions"]
    messages = data["messages"]
    shed = data["http_503"]
    assert isinstance(sessions, dict) and isinstance(messages, dict) and isinstance(shed, dict)
    ok_sessions = sessions["by_outcome"].get("ok", 0)
    assert ok_sessions == DEVICES - 1, sessions  # the wrong password's session failed
    busy = shed["answered"]
    assert busy > 0, data  # ten devices at once against a limit of one

    assert value(samples, "omadm_dm_sessions_started_total") == ok_sessions
    assert value(samples, "omadm_dm_sessions_finished_total", outcome="completed") == ok_sessions
    assert value(samples, "omadm_dm_sessions_finished_total", outcome="unauthenticated") == 1
    assert value(samples, "omadm_dm_shed_total", reason="in_flight") == busy
    assert value(samples, "omadm_dm_messages_total", outcome="busy") == busy
    assert value(samples, "omadm_dm_messages_total", outcome="error") == 0
    answered = total(samples, "omadm_dm_messages_total")
    assert answered == messages["sent"], (answered, messages)  # every POST counted once
    assert value(samples, "omadm_auth_failures_total", interface="dm", reason="credentials") >= 1
    # Every message has its latency observed once, in one of the three paths.
    assert total(samples, "omadm_dm_message_seconds_count") == answered
    assert total(samples, "omadm_dm_message_seconds_bucket", le="+Inf") == answered
    assert total(samples, "omadm_dm_message_seconds_sum") > 0
    # The fast path (a known device's messages) went through the group commit.
    batches = value(samples, "omadm_group_commit_batch_size_count")
    assert batches >= 1
    assert value(samples, "omadm_group_commit_batch_size_sum") >= batches


async def test_metrics_count_what_a_fleet_did_and_read_jobs_and_campaigns(
    server: ServerProcess, tmp_path: Path
) -> None:
    token = await add_token(server, "fleet", "admin")
    data, fleet = await run_fleet(server, token)

    # A job for one device, and a campaign over all of them, started (through the API: a
    # command line process each would cost seconds of start-up).
    build_package(EXAMPLES / "hello-package", tmp_path / "hello.omp", signing_key=generate_key())
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as api:
        job = await api.post(
            "/api/v1/jobs", json={"device_id": fleet.devices[0].device_id, "kind": "refresh-inventory"}
        )
        assert job.status_code == 201, job.text
        uploaded = await api.post(
            "/api/v1/packages",
            params={"filename": "hello.omp", "allow_unsigned": "true"},  # an unknown key: allowed
            content=(tmp_path / "hello.omp").read_bytes(),
            headers={"content-type": "application/octet-stream"},
        )
        assert uploaded.status_code == 201, uploaded.text
        created = await api.post(
            "/api/v1/campaigns",
            json={
                "name": "metrics",
                "kind": "install",
                "artifact_id": uploaded.json()["id"],
                "all_devices": True,
                "waves": ["100%"],
                "success_threshold": 0.5,
                "error_threshold": 0.9,
            },
        )
        assert created.status_code == 201, created.text
        campaign = created.json()["id"]
        assert (await api.post(f"/api/v1/campaigns/{campaign}/start")).status_code == 200

    samples = scrape(server.url)
    check_dm_counters(samples, data)

    assert value(samples, "omadm_database_up") == 1
    assert value(samples, "omadm_campaigns", state="running") == 1
    members = total(samples, "omadm_campaign_devices", campaign=str(campaign), name="metrics")
    assert members == DEVICES
    # The inventory job, plus one install job per device the campaign released so far.
    jobs = total(samples, "omadm_jobs")
    running = value(
        samples, "omadm_campaign_devices", campaign=str(campaign), name="metrics", state="running"
    )
    assert jobs == 1 + running
    assert value(samples, "omadm_jobs", state="queued") == jobs  # no device has come back yet
    # Connections: the pool's size is known and none is held between requests... except by
    # the scrape itself, which holds none while rendering.
    assert value(samples, "omadm_db_pool_size") >= 1
    assert (
        0 <= value(samples, "omadm_db_pool_connections_in_use") <= value(samples, "omadm_db_pool_size") + 10
    )
    # One worker: the process's own metrics are there too.
    assert value(samples, "process_resident_memory_bytes") > 0


async def test_two_workers_share_their_counters(db_url: str, tmp_path: Path) -> None:
    """Multi-process mode: whichever worker answers a scrape, it reports the whole server.

    Several workers are for PostgreSQL: with it configured, the SQLite run is skipped.
    """
    if db_url.startswith("sqlite") and os.environ.get(POSTGRES_ENV):
        pytest.skip("several workers are for PostgreSQL: checked there")
    server = start_server(db_url, tmp_path, "--workers", "2")
    try:
        token = await add_token(server, "fleet", "operator")
        data, _ = await run_fleet(server, token)
        first = scrape(server.url)
        check_dm_counters(first, data)
        for _ in range(5):  # new connections: uvicorn's workers take turns accepting
            again = scrape(server.url)
            for name in ("omadm_dm_messages_total", "omadm_dm_sessions_started_total", "omadm_dm_shed_total"):
                assert total(again, name) == total(first, name)
        assert value(first, "process_resident_memory_bytes") == 0  # per-process: left out
        assert value(first, "omadm_db_pool_size") >= 2  # both workers' pools, summed
    finally:
        server.stop()


async def test_metrics_token_and_switch(db_url: str, tmp_path: Path) -> None:
    """``metrics_token``: a scrape without it is refused 401; ``metrics = false``: no route."""

    async def get(config: ServerConfig, headers: dict[str, str] | None = None) -> httpx.Response:
        app = create_app(config)
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                return await http.get("/metrics", headers=headers or {})
        finally:
            await app.state.engine.dispose()

    config = ServerConfig(db=db_url, data_dir=tmp_path / "srv", sweep_interval=0, metrics_token="scrape-me")
    refused = await get(config)
    assert refused.status_code == 401
    assert "metrics token" in refused.text
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert (await get(config, {"Authorization": "Bearer nope"})).status_code == 401
    allowed = await get(config, {"Authorization": "Bearer scrape-me"})
    assert allowed.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(allowed.text)}
    assert families["omadm_database_up"].samples[0].value == 1
    assert "omadm_dm_messages" in families  # counters are exposed before anything counted

    off = ServerConfig(db=db_url, data_dir=tmp_path / "srv", sweep_interval=0, metrics=False)
    assert (await get(off)).status_code == 404


async def test_pool_connections_in_use_follow_check_out_and_in(db_url: str) -> None:
    """``omadm_db_pool_connections_in_use`` moves with each connection taken and given back."""
    engine = make_engine(db_url, pool_size=3)
    size_before = metrics.DB_POOL_SIZE._value.get()
    try:
        added = metrics.watch_pool(engine)
        assert metrics.DB_POOL_SIZE._value.get() == size_before + added
        base = metrics.DB_POOL_IN_USE._value.get()
        async with engine.connect() as first:
            await first.execute(text("SELECT 1"))
            assert metrics.DB_POOL_IN_USE._value.get() == base + 1
            if not db_url.startswith("sqlite"):  # SQLite: one shared connection
                async with engine.connect() as second:
                    await second.execute(text("SELECT 1"))
                    assert metrics.DB_POOL_IN_USE._value.get() == base + 2
                assert metrics.DB_POOL_IN_USE._value.get() == base + 1
        assert metrics.DB_POOL_IN_USE._value.get() == base
        metrics.DB_POOL_SIZE.dec(added)
    finally:
        await engine.dispose()


async def test_fleet_gauges_are_cached_between_scrapes_and_say_when_the_database_is_down(
    db_url: str,
) -> None:
    """Jobs and campaigns cost one query per ``ttl``, not one per scrape; a failed read shows."""
    engine = make_engine(db_url, pool_size=1)
    try:
        fleet = metrics.FleetCollector(session_factory(engine), ttl=60)
        await fleet.refresh()
        await fleet.refresh()
        assert fleet.queries == 1
        names = {family.name for family in fleet.collect()}
        assert names == {"omadm_database_up", "omadm_jobs", "omadm_campaigns", "omadm_campaign_devices"}
        fleet.ttl = 0
        await fleet.refresh()
        assert fleet.queries == 2
    finally:
        await engine.dispose()

    broken = make_engine("postgresql://nobody@127.0.0.1:1/none", pool_size=1)
    try:
        fleet = metrics.FleetCollector(session_factory(broken), ttl=0)
        await fleet.refresh()
        families = list(fleet.collect())
        assert [f.name for f in families] == ["omadm_database_up"]
        assert families[0].samples[0].value == 0
    finally:
        await broken.dispose()
