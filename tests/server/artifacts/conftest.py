"""Fixtures for the artifact tests: built packages, a blob store, a database, an app and a client.

The database is an aiosqlite file whose tables come from ``Base.metadata.create_all`` (the
migrations belong to the store's own tests). Sessions expire objects on commit, as
SQLAlchemy does by default, so the service is tested against the strictest setting.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from starlette.applications import Starlette

from omadm.package.build import build_package
from omadm.package.signing import generate_key
from omadm.server.artifacts import LocalArtifactStorage, add_artifact, artifact_routes
from omadm.server.store.models import Artifact, Base

from .helpers import BIG_PACKAGE_FILE_SIZE, NOW, SECRET, NotifyRecorder, write_big_source

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "hello-package"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def key() -> Ed25519PrivateKey:
    return generate_key()


@pytest.fixture(scope="session")
def packages(tmp_path_factory: pytest.TempPathFactory, key: Ed25519PrivateKey) -> dict[str, Path]:
    """Built once: ``signed`` and ``unsigned`` hello packages, and ``big`` (1 MiB, signed)."""
    root = tmp_path_factory.mktemp("packages")
    built = {"signed": root / "hello-1.0.0.omp", "unsigned": root / "hello-unsigned.omp"}
    build_package(EXAMPLE, built["signed"], signing_key=key)
    build_package(EXAMPLE, built["unsigned"])
    built["big"] = root / "big-1.0.0.omp"
    build_package(
        write_big_source(root / "big-source", os.urandom(BIG_PACKAGE_FILE_SIZE)),
        built["big"],
        signing_key=key,
    )
    return built


@pytest.fixture
def storage(tmp_path: Path) -> LocalArtifactStorage:
    return LocalArtifactStorage(tmp_path / "store")


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'artifacts.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    try:
        yield async_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def hello(
    sessions: async_sessionmaker[AsyncSession], storage: LocalArtifactStorage, packages: dict[str, Path]
) -> Artifact:
    async with sessions() as db:
        return await add_artifact(db, storage, "hello-1.0.0.omp", packages["signed"])


@pytest.fixture
def notified() -> NotifyRecorder:
    return NotifyRecorder()


@pytest.fixture
def app(
    sessions: async_sessionmaker[AsyncSession], storage: LocalArtifactStorage, notified: NotifyRecorder
) -> Starlette:
    return Starlette(
        routes=artifact_routes(sessions, storage, SECRET, on_install_notify=notified, clock=lambda: NOW)
    )


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dm.test") as c:
        yield c
