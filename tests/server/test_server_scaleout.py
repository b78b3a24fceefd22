"""Several server workers on one PostgreSQL, and a server killed in the middle of its work.

The server keeps nothing between HTTP requests but what is in the database, so (1) the
messages of one DM session may be served by alternating worker processes and every job still
completes exactly once, and (2) a server killed with SIGKILL at any moment and restarted loses
no job result and applies none twice.
"""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from omadm.package.build import build_package
from omadm.package.signing import generate_key, save_public_key
from omadm.server.store.models import DeviceEvent, Job

from .conftest import POSTGRES_ENV, postgres_database
from .serverproc import ENV, SERVER_PASSWORD, RoundRobin, ServerProcess, agent_config, agent_connect

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def pg_url() -> Iterator[str]:
    admin = os.environ.get(POSTGRES_ENV)
    if not admin:
        pytest.skip(f"{POSTGRES_ENV} is not set: several workers need PostgreSQL")
    from omadm.server.store.migrate import migrate  # noqa: PLC0415

    with postgres_database(admin) as url:
        migrate(url)
        yield url


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("pkg")
    key = generate_key()
    save_public_key(key.public_key(), base / "publisher.pub.pem")
    build_package(EXAMPLES / "hello-package", base / "hello-1.0.0.omp", signing_key=key)
    return base / "publisher.pub.pem", base / "hello-1.0.0.omp"


async def _rows(url: str) -> tuple[list[Job], list[DeviceEvent]]:
    from omadm.server.store.engine import make_engine, session_factory  # noqa: PLC0415

    engine = make_engine(url)
    try:
        async with session_factory(engine)() as db:
            jobs = list((await db.execute(select(Job).order_by(Job.id))).scalars())
            events = list((await db.execute(select(DeviceEvent).order_by(DeviceEvent.id))).scalars())
            return jobs, events
    finally:
        await engine.dispose()


def rows(url: str) -> tuple[list[Job], list[DeviceEvent]]:
    import asyncio  # noqa: PLC0415

    return asyncio.run(_rows(url))


def final_transitions(events: list[DeviceEvent]) -> Counter[int]:
    """How many times each job was recorded as finished (must be exactly once each)."""
    return Counter(
        int(e.detail["job"])
        for e in events
        if e.kind == "job" and e.detail.get("state") in ("succeeded", "failed", "timed-out", "cancelled")
    )


def test_two_workers_serve_alternate_messages_of_each_session(
    pg_url: str, package: tuple[Path, Path], tmp_path: Path
) -> None:
    key, pkg = package
    data = tmp_path / "server"
    workers = [ServerProcess(pg_url, data, tmp_path / f"worker{i}.log") for i in range(2)]
    with RoundRobin([w.url for w in workers]) as proxy:
        for worker in workers:
            worker.public_url = proxy.url
            worker.start()
        try:
            admin = workers[0]
            admin.run("publisher", "add", "tests", str(key))
            artifact = admin.run("artifact", "add", str(pkg)).split()[1].rstrip(":")
            devices = [f"IMEI:35175605152{i:04d}" for i in range(2)]
            configs = []
            for i, device in enumerate(devices):
                admin.run(
                    "device", "add", device, "--username", "dev", "--password", "secret",
                    "--server-password", SERVER_PASSWORD,
                )  # fmt: skip
                configs.append(agent_config(tmp_path / f"agent{i}", f"{proxy.url}/dm", device, key))
                admin.run("job", "add", device, "install", "--artifact", artifact)
            for config in configs:
                agent_connect(config)
            for i, device in enumerate(devices):
                admin.run("job", "add", device, "deactivate", "--component", "com.example.hello")
                agent_connect(configs[i])
        finally:
            for worker in workers:
                worker.stop()
    jobs, events = rows(pg_url)
    assert [(j.kind, j.state, j.result_code, j.attempts) for j in jobs] == [
        ("install", "succeeded", 1200, 1),
        ("install", "succeeded", 1200, 1),
        ("deactivate", "succeeded", 1200, 1),
        ("deactivate", "succeeded", 1200, 1),
    ]
    assert set(final_transitions(events).values()) == {1}
    dm = [backend for path, backend in proxy.served if path.startswith("/dm")]
    assert len(dm) >= 8 and set(dm) == {w.url for w in workers}
    # Consecutive DM messages (those of one session included) went to different workers.
    assert all(a != b for a, b in itertools.pairwise(dm))


def test_a_server_killed_during_a_batch_of_jobs_loses_no_result_and_applies_none_twice(
    db_url: str, package: tuple[Path, Path], tmp_path: Path
) -> None:
    key, pkg = package
    server = ServerProcess(db_url, tmp_path / "server", tmp_path / "server.log").start()
    rng = random.Random(7)
    devices = [f"IMEI:49015420323{i:04d}" for i in range(3)]
    agents: list[subprocess.Popen[bytes]] = []
    kills = 0
    try:
        server.run("publisher", "add", "tests", str(key))
        artifact = server.run("artifact", "add", str(pkg)).split()[1].rstrip(":")
        for i, device in enumerate(devices):
            server.run(
                "device", "add", device, "--username", "dev", "--password", "secret",
                "--server-password", SERVER_PASSWORD,
            )  # fmt: skip
            server.run("job", "add", device, "install", "--artifact", artifact)
            server.run("job", "add", device, "refresh-inventory")
            # The agents outlast a restart (6.2 s of retries): a download cut by a kill resumes
            # instead of ending the job with 1501, which is a result but not the one tested here.
            config = agent_config(
                tmp_path / f"agent{i}", f"{server.url}/dm", device, key, poll=0.3, retries=5
            )
            log = (tmp_path / f"agent{i}.log").open("wb")
            agents.append(
                subprocess.Popen(
                    [sys.executable, "-m", "omadm", "agent", "run", "--config", str(config)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=ENV,
                )
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.2, 1.2))
            server.kill()
            kills += 1
            server.start()
            jobs = server.jobs()
            if kills >= 5 and all(job[3] in ("succeeded", "failed") for job in jobs):
                break
        # A last quiet period: everything in flight settles.
        settle = time.monotonic() + 30
        while time.monotonic() < settle and not all(job[3] == "succeeded" for job in server.jobs()):
            time.sleep(0.5)
    finally:
        for agent in agents:
            agent.terminate()
            agent.wait(timeout=15)
        server.stop()
    assert kills >= 5
    jobs, events = rows(db_url)
    assert sorted((j.kind, j.state) for j in jobs) == sorted(
        [("install", "succeeded"), ("refresh-inventory", "succeeded")] * len(devices)
    )
    assert all(j.result_code == 1200 for j in jobs if j.kind == "install")
    assert final_transitions(events) == Counter({j.id: 1 for j in jobs})
