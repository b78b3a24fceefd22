"""An in-process DM client harness for server tests: real ``ClientSession`` messages over ASGI.

``make_harness(db_url, tmp_path, **config)`` builds the app (``create_app``) and an
``httpx.AsyncClient`` on it; ``Harness.run(client)`` plays a whole session and returns the
HTTP responses; ``Harness.client(...)`` makes a device session with sensible defaults.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from omadm.protocol.auth import HMAC_HEADER
from omadm.protocol.codec import Encoding
from omadm.protocol.codes import AuthType
from omadm.protocol.session import ClientConfig, ClientSession, CommandHandler, Credentials, Event
from omadm.protocol.testing import MemoryTree
from omadm.server.app import create_app
from omadm.server.config import ServerConfig
from omadm.server.registry import find_device
from omadm.server.store.models import Device

DEVICE = "IMEI:351756051523999"
BASE = "http://127.0.0.1:8700"
DEVINFO = (
    ("./DevInfo/DevId", DEVICE),
    ("./DevInfo/Man", "Acme"),
    ("./DevInfo/Mod", "Gateway-1"),
    ("./DevInfo/DmV", "1.2"),
    ("./DevInfo/Lang", "en-US"),
)


@dataclass
class Harness:
    http: httpx.AsyncClient
    sessions: async_sessionmaker[AsyncSession]
    config: ServerConfig
    nonce: bytes = b""  # the nonce the server issued to the device last (as a device keeps it)
    events: list[Event] = field(default_factory=list)

    def client(
        self,
        password: str = "secret",
        *,
        encoding: Encoding = Encoding.XML,
        tree: CommandHandler | None = None,
        **kw: Any,
    ) -> ClientSession:
        config = ClientConfig(
            device_id=kw.pop("device_id", DEVICE),
            server_uri=kw.pop("server_uri", f"{BASE}/dm"),
            credentials=Credentials(kw.pop("auth", AuthType.MD5), kw.pop("username", "dev"), password),
            client_nonce=kw.pop("nonce", self.nonce),
            session_id=kw.pop("session_id", "1"),
            devinfo=DEVINFO,
            encoding=encoding,
            **kw,
        )
        return ClientSession(config, tree if tree is not None else MemoryTree())

    async def post(
        self, url: str, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return await self.http.post(
            url, content=body, headers={"content-type": content_type, **(headers or {})}
        )

    async def run(self, client: ClientSession) -> list[httpx.Response]:
        """A whole session; returns every HTTP response (it stops at the first non-200)."""
        responses = []
        out = client.start()
        while out is not None:
            response = await self.post(out.url or f"{BASE}/dm", out.body, out.content_type, out.headers)
            responses.append(response)
            if response.status_code != 200:
                break
            events = client.receive(
                response.content,
                content_type=response.headers["content-type"],
                hmac_header=response.headers.get(HMAC_HEADER),
            )
            self.events += events + client.events()
            for event in events:
                if type(event).__name__ == "NonceReceived":
                    self.nonce = event.nonce  # type: ignore[attr-defined]
            out = client.reply()
            self.events += client.events()
        return responses

    async def count(self, model: type[Any]) -> int:
        async with self.sessions() as db:
            return int((await db.execute(select(func.count()).select_from(model))).scalar_one())

    async def device(self) -> Device:
        async with self.sessions() as db:
            device = await find_device(db, DEVICE)
            assert device is not None
            return device


async def make_harness(db_url: str, tmp_path: Path, **config: Any) -> AsyncIterator[Harness]:
    settings = ServerConfig(db=db_url, data_dir=tmp_path / "server", **config)
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        yield Harness(http, app.state.sessions, settings)
    if app.state.writer is not None:
        await app.state.writer.close()
    await app.state.engine.dispose()
