"""How the DM endpoint combines a verified client certificate with a session, in process.

The certificate arrives as the ASGI TLS extension (what ``omadm.server._tls_asgi`` adds under
uvicorn); here a small ASGI wrapper adds it, so that each ``client_cert_auth`` mode and the
continued-session check run without processes: a certificate for one device cannot carry on
another device's session, even when the message claims to be from the certificate's device.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from omadm.protocol.auth import HMAC_HEADER
from omadm.protocol.codes import AuthType
from omadm.protocol.session import ClientConfig, ClientSession, Credentials, NonceReceived, Outgoing
from omadm.protocol.testing import MemoryTree
from omadm.server.app import create_app
from omadm.server.config import ServerConfig
from omadm.server.registry import add_device
from omadm.server.store.migrate import migrate

from .conftest import DEVICE, OTHER_DEVICE, PKI

pytestmark = pytest.mark.anyio
BASE = "https://127.0.0.1:8700"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class WithClientCertificate:
    """The app behind a TLS connection whose client presented ``pem`` (None: no certificate)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.pem: str | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.pem is not None:
            scope.setdefault("extensions", {})["tls"] = {
                "client_cert_chain": [self.pem],
                "client_cert_error": None,
            }
        await self.app(scope, receive, send)


class Server:
    def __init__(self, http: httpx.AsyncClient, front: WithClientCertificate) -> None:
        self.http = http
        self.front = front
        self.nonces: dict[str, bytes] = {}

    async def post(self, out: Outgoing, pem: str | None, body: bytes | None = None) -> httpx.Response:
        self.front.pem = pem
        return await self.http.post(
            out.url or f"{BASE}/dm",
            content=out.body if body is None else body,
            headers={"content-type": out.content_type, **out.headers},
        )

    def client(self, device: str, session_id: str) -> ClientSession:
        config = ClientConfig(
            device_id=device,
            server_uri=f"{BASE}/dm",
            credentials=Credentials(AuthType.MD5, "dev", "secret"),
            client_nonce=self.nonces.get(device, b""),
            session_id=session_id,
            devinfo=(("./DevInfo/DevId", device), ("./DevInfo/Man", "Acme"), ("./DevInfo/DmV", "1.2")),
        )
        return ClientSession(config, MemoryTree())

    async def session(self, device: str, pem: str | None, session_id: str = "1") -> list[int]:
        """A whole session of ``device`` presenting ``pem``: the HTTP statuses."""
        client = self.client(device, session_id)
        statuses = []
        out: Outgoing | None = client.start()
        while out is not None:
            response = await self.post(out, pem)
            statuses.append(response.status_code)
            if response.status_code != 200:
                break
            events = client.receive(
                response.content,
                content_type=response.headers["content-type"],
                hmac_header=response.headers.get(HMAC_HEADER),
            )
            for event in events:
                if isinstance(event, NonceReceived):
                    self.nonces[device] = event.nonce
            out = client.reply()
        return statuses


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A migrated SQLite database (migrated here: ``migrate`` runs its own event loop)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'omadm.sqlite'}"
    migrate(url)
    return url


async def serve(url: str, tmp_path: Path, pki: PKI, mode: str) -> AsyncIterator[Server]:
    settings = ServerConfig(
        db=url,
        data_dir=tmp_path / "server",
        public_url=BASE,
        tls_cert=str(pki.server.cert),
        tls_key=str(pki.server.key),
        tls_client_ca=str(pki.ca),
        client_cert_auth=mode,
    ).validate()
    app = create_app(settings)
    async with app.state.sessions() as db, db.begin():
        for device in (DEVICE, OTHER_DEVICE):
            await add_device(db, device, username="dev", password="secret")
    front = WithClientCertificate(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=front), base_url=BASE) as http:
        yield Server(http, front)
    if app.state.writer is not None:
        await app.state.writer.close()
    await app.state.engine.dispose()


async def test_map_a_certificate_binds_the_message_and_the_session_to_its_device(
    db: str, tmp_path: Path, pki: PKI
) -> None:
    mine, theirs = pki.client.cert.read_text(), pki.other_client.cert.read_text()
    async for server in serve(db, tmp_path, pki, "map"):
        assert set(await server.session(DEVICE, mine)) == {200}
        assert set(await server.session(OTHER_DEVICE, None)) == {200}  # no certificate: DM credentials
        assert await server.session(OTHER_DEVICE, mine, "2") == [403]  # another device's certificate

        # A session under way (authenticated at its first message, its token in RespURI).
        client = server.client(DEVICE, "3")
        first = await server.post(client.start(), mine)
        assert first.status_code == 200
        client.receive(first.content, content_type=first.headers["content-type"])
        out = client.reply()
        assert out is not None and "?s=" in (out.url or "")
        # The other device's certificate, with a message that claims to be from that device,
        # on this device's session: the session's device decides, and it is not the certificate's.
        claimed = out.body.replace(DEVICE.encode(), OTHER_DEVICE.encode())
        hijack = await server.post(out, theirs, claimed)
        assert hijack.status_code == 403
        assert hijack.text.strip() == f"the client certificate does not name the session's device {DEVICE}"
        # The other device's certificate on the message as it is: the Source is not its device.
        borrowed = await server.post(out, theirs)
        assert borrowed.status_code == 403
        expected = f"the client certificate names {OTHER_DEVICE} (cn), not the device {DEVICE}"
        assert borrowed.text.strip() == expected
        assert (await server.post(out, mine)).status_code == 200  # the session goes on with its own


async def test_require_refuses_a_message_without_a_certificate(db: str, tmp_path: Path, pki: PKI) -> None:
    async for server in serve(db, tmp_path, pki, "require"):
        assert await server.session(DEVICE, None) == [403]
        assert set(await server.session(DEVICE, pki.client.cert.read_text(), "2")) == {200}


async def test_off_leaves_identity_to_the_dm_credentials(db: str, tmp_path: Path, pki: PKI) -> None:
    async for server in serve(db, tmp_path, pki, "off"):
        assert set(await server.session(OTHER_DEVICE, pki.client.cert.read_text())) == {200}
