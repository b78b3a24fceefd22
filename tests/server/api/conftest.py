"""The REST API over ASGI on each engine, with one token per role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from omadm.package.signing import public_key_pem
from omadm.server.api.auth import create_token
from omadm.server.app import create_app
from omadm.server.artifacts.publishers import add_publisher
from omadm.server.config import ServerConfig
from omadm.server.store.models import DEFAULT_AUTHORITY_PK, AuditEntry

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
V1 = "/api/v1"
#: The key test packages are signed with (fixed, so builds are reproducible): the ``api``
#: fixture's default authority trusts it as publisher ``tests``, so signed uploads pass.
PUBLISHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLISHER_PEM = public_key_pem(PUBLISHER_KEY).decode()


@dataclass
class Api:
    http: httpx.AsyncClient
    sessions: async_sessionmaker[AsyncSession]
    tokens: dict[str, str]
    app: Any = None

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    async def get(self, path: str, role: str = "viewer", **kw: Any) -> httpx.Response:
        return await self.http.get(V1 + path, headers=self.auth(role), **kw)

    async def post(self, path: str, role: str = "operator", **kw: Any) -> httpx.Response:
        return await self.http.post(V1 + path, headers={**self.auth(role), **kw.pop("headers", {})}, **kw)

    async def put(self, path: str, role: str = "operator", **kw: Any) -> httpx.Response:
        return await self.http.put(V1 + path, headers=self.auth(role), **kw)

    async def delete(self, path: str, role: str = "operator", **kw: Any) -> httpx.Response:
        return await self.http.delete(V1 + path, headers=self.auth(role), **kw)

    async def audit_rows(self) -> list[AuditEntry]:
        async with self.sessions() as db:
            return list((await db.scalars(select(AuditEntry).order_by(AuditEntry.id))).all())


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response's problem document, checked for shape and status."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert body["title"] and body["detail"]
    return body


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    app = create_app(ServerConfig(db=db_url, data_dir=tmp_path / "srv", sweep_interval=0))
    sessions: async_sessionmaker[AsyncSession] = app.state.sessions
    tokens = {}
    async with sessions() as db, db.begin():
        for role in ("viewer", "operator", "admin"):
            _, tokens[role] = await create_token(db, f"{role}-bot", role)
        await add_publisher(db, "tests", PUBLISHER_PEM, authority_pk=DEFAULT_AUTHORITY_PK)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            yield Api(http, sessions, tokens, app)
    finally:
        await app.state.engine.dispose()
