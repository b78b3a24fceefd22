"""Our device's real downloader against our artifact routes on a real uvicorn server.

Proves the two halves fit: the agent resumes an interrupted download with Range + If-Range
(answered 206 from where it stopped), checks size and SHA-256, follows a DD to the package,
and reports the install to the DD's installNotifyURI, which reaches the server's hook.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool
from starlette.applications import Starlette
from starlette.types import Message, Receive, Scope, Send

from omadm.agent.scomo.dd import InstallNotifyStatus
from omadm.agent.scomo.download import Downloader, DownloadError, meta_path, part_path
from omadm.protocol.codes import ScomoResult
from omadm.server.artifacts import (
    LocalArtifactStorage,
    add_artifact,
    artifact_routes,
    descriptor_url,
    download_url,
)
from omadm.server.store.models import Artifact, Base

from .helpers import SECRET, NotifyRecorder

DEVICE = "IMEI:490154203237518"


@dataclass
class Seen:
    method: str
    path: str
    range: str | None
    if_range: str | None
    status: int = 0


class RequestLog:
    """ASGI middleware that records each request's Range headers and the status answered."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.seen: list[Seen] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        entry = Seen(scope["method"], scope["path"], headers.get("range"), headers.get("if-range"))
        self.seen.append(entry)

        async def record(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
            await send(message)

        await self.app(scope, receive, record)


@dataclass
class Running:
    base: str
    log: RequestLog
    notified: NotifyRecorder
    hello: Artifact
    big: Artifact


@pytest.fixture
def server(tmp_path: Path, packages: dict[str, Path]) -> Iterator[Running]:
    database = f"sqlite+aiosqlite:///{tmp_path / 'interop.db'}"
    storage = LocalArtifactStorage(tmp_path / "store")

    async def prepare() -> tuple[Artifact, Artifact]:
        engine = create_async_engine(database, poolclass=NullPool)
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        try:
            sessions = async_sessionmaker(engine, expire_on_commit=False)
            async with sessions() as db:
                hello = await add_artifact(db, storage, "hello-1.0.0.omp", packages["signed"])
            async with sessions() as db:
                big = await add_artifact(db, storage, "big-1.0.0.omp", packages["big"])
            return hello, big
        finally:
            await engine.dispose()

    hello, big = asyncio.run(prepare())

    # The app's engine connects lazily, inside uvicorn's event loop (NullPool: no connection
    # outlives the loop that made it).
    sessions = async_sessionmaker(create_async_engine(database, poolclass=NullPool))
    notified = NotifyRecorder()
    log = RequestLog(Starlette(routes=artifact_routes(sessions, storage, SECRET, on_install_notify=notified)))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(log, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield Running(f"http://127.0.0.1:{port}", log, notified, hello, big)
    finally:
        uv.should_exit = True
        thread.join(10)
        sock.close()


def downloader(tmp_path: Path) -> Downloader:
    return Downloader(scratch=tmp_path / "device", retries=0, timeout=10, sleep=lambda _s: None)


class Interrupted(Exception):
    pass


def test_resumed_download(server: Running, tmp_path: Path, packages: dict[str, Path]) -> None:
    data = packages["big"].read_bytes()
    url = download_url(server.base, server.big, DEVICE, int(time.time()) + 600, SECRET)
    dest = tmp_path / "device" / "big.omp"

    def cut(done: int, total: int | None) -> None:
        if done >= 100_000:
            raise Interrupted(f"link lost at {done} bytes")

    with downloader(tmp_path) as agent:
        with pytest.raises(Interrupted):
            agent.download(
                url, dest, expected_size=len(data), expected_sha256=server.big.sha256, progress=cut
            )
        held = part_path(dest).stat().st_size
        assert 100_000 <= held < len(data)
        assert meta_path(dest).exists()
        assert not dest.exists()

        result = agent.download(url, dest, expected_size=len(data), expected_sha256=server.big.sha256)

    assert result.path == dest
    assert dest.read_bytes() == data
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert not part_path(dest).exists()
    first, second = server.log.seen
    assert (first.range, first.status) == (None, 200)
    assert second.range == f"bytes={held}-"
    assert second.if_range == f'"{server.big.sha256}"'
    assert second.status == 206


def test_resume_with_a_stale_validator_gets_the_whole_file(
    server: Running, tmp_path: Path, packages: dict[str, Path]
) -> None:
    """If the .part came from other bytes (another ETag), If-Range fails and 200 restarts it."""
    data = packages["big"].read_bytes()
    url = download_url(server.base, server.big, DEVICE, int(time.time()) + 600, SECRET)
    dest = tmp_path / "device" / "big.omp"

    def cut(done: int, total: int | None) -> None:
        if done >= 100_000:
            raise Interrupted

    with downloader(tmp_path) as agent:
        with pytest.raises(Interrupted):
            agent.download(url, dest, progress=cut)
        meta = json.loads(meta_path(dest).read_text())
        assert meta["etag"] == f'"{server.big.sha256}"'
        meta["etag"] = '"' + "f" * 64 + '"'
        meta_path(dest).write_text(json.dumps(meta))
        result = agent.download(url, dest, expected_sha256=server.big.sha256)
    assert dest.read_bytes() == data
    assert result.size == len(data)
    second = server.log.seen[1]
    assert second.range is not None and second.range.startswith("bytes=")
    assert (second.if_range, second.status) == (meta["etag"], 200)


def test_descriptor_flow_with_install_notify(
    server: Running, tmp_path: Path, packages: dict[str, Path]
) -> None:
    expires = int(time.time()) + 600
    dd_url = descriptor_url(server.base, server.hello, DEVICE, expires, SECRET, correlator="job-42")
    with downloader(tmp_path) as agent:
        result = agent.download(dd_url, tmp_path / "device" / "hello.omp")
        assert result.descriptor is not None
        assert result.url == download_url(server.base, server.hello, DEVICE, expires, SECRET)
        assert result.path.read_bytes() == packages["signed"].read_bytes()
        assert agent.report_install(result.descriptor, InstallNotifyStatus.SUCCESS)
    assert server.notified.calls == [("job-42", 900, "Success")]
    assert [(s.method, s.status) for s in server.log.seen] == [("GET", 200), ("GET", 200), ("POST", 200)]


def test_expired_link_is_an_authentication_failure_for_the_agent(server: Running, tmp_path: Path) -> None:
    url = download_url(server.base, server.hello, DEVICE, int(time.time()) - 1, SECRET)
    with downloader(tmp_path) as agent, pytest.raises(DownloadError) as caught:
        agent.download(url, tmp_path / "device" / "hello.omp")
    assert caught.value.result == ScomoResult.ALTERNATE_DOWNLOAD_AUTHENTICATION_FAILURE
    assert caught.value.http_status == 403
