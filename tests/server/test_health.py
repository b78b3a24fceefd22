"""``/healthz`` (alive, no database) and ``/readyz`` (database reachable, schema at head).

A real server process whose database is taken back one revision while it runs (as a
rollback from another host would): ``/readyz`` turns 503 naming the revision, ``/healthz``
stays 200; migrated again, ready again. In-process: an empty database, an unreachable one
and an unknown (newer) revision each give 503 with their own reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from omadm.server.app import create_app
from omadm.server.config import ServerConfig
from omadm.server.store.engine import make_engine
from omadm.server.store.migrate import downgrade, head_revision, migrate

from .serverproc import ServerProcess

pytestmark = pytest.mark.anyio


def test_readyz_follows_the_schema_of_a_running_server(db_url: str, tmp_path: Path) -> None:
    server = ServerProcess(db_url, tmp_path / "srv", tmp_path / "server.log").start(timeout=60)
    try:
        assert httpx.get(f"{server.url}/healthz", timeout=10).json() == {"status": "alive"}
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}

        downgrade(db_url, "0008")  # a rollback made elsewhere while this worker runs
        behind = httpx.get(f"{server.url}/readyz", timeout=10)
        assert behind.status_code == 503
        body = behind.json()
        assert body["status"] == "not ready"
        assert f"is at revision 0008, this omadm needs {head_revision()}" in body["reason"]
        assert "omadm server migrate" in body["reason"]
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200  # alive all the same

        migrate(db_url)
        assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
    finally:
        server.stop()


async def probe(config: ServerConfig, path: str) -> httpx.Response:
    app = create_app(config)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await http.get(path)
    finally:
        await app.state.engine.dispose()


@pytest.fixture
async def empty_config(empty_db_url: str, tmp_path: Path) -> AsyncIterator[ServerConfig]:
    yield ServerConfig(db=empty_db_url, data_dir=tmp_path / "srv", sweep_interval=0)


async def test_readyz_without_a_schema_names_the_fix(empty_config: ServerConfig) -> None:
    response = await probe(empty_config, "/readyz")
    assert response.status_code == 503
    assert "has no omadm schema" in response.json()["reason"]
    assert (await probe(empty_config, "/healthz")).status_code == 200


async def test_readyz_with_a_newer_revision_says_so(db_url: str, tmp_path: Path) -> None:
    engine = make_engine(db_url, pool_size=1)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        await engine.dispose()
    config = ServerConfig(db=db_url, data_dir=tmp_path / "srv", sweep_interval=0)
    response = await probe(config, "/readyz")
    assert response.status_code == 503
    assert "at revision 9999, unknown to this omadm" in response.json()["reason"]


async def test_an_unreachable_database_is_not_ready_but_alive(tmp_path: Path) -> None:
    # Nothing listens on port 1: the connection is refused at once.
    config = ServerConfig(
        db="postgresql://nobody:secret@127.0.0.1:1/none", data_dir=tmp_path / "srv", sweep_interval=0
    )
    response = await probe(config, "/readyz")
    assert response.status_code == 503
    reason = response.json()["reason"]
    assert reason.startswith("database at ") and " unreachable: " in reason
    assert "secret" not in reason  # the URL is shown with its password masked
    healthz = await probe(config, "/healthz")
    assert healthz.status_code == 200 and healthz.json() == {"status": "alive"}
