"""The download, descriptor and install-notify routes, in-process over httpx's ASGI transport."""

from __future__ import annotations

from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.applications import Starlette

from omadm.agent.scomo.dd import parse_descriptor
from omadm.server.artifacts import (
    DD_CONTENT_TYPE,
    LocalArtifactStorage,
    add_artifact,
    artifact_routes,
    descriptor_url,
    download_url,
    notify_url,
    parse_range,
)
from omadm.server.artifacts.routes import MAX_NOTIFY_BODY, Unsatisfiable
from omadm.server.store.models import Artifact

from .helpers import BASE, LATER, NOW, SECRET, NotifyRecorder

pytestmark = pytest.mark.anyio

DEVICE = "IMEI:490154203237518"


def link(artifact: Artifact, device: str = DEVICE, expires: int = LATER) -> str:
    return download_url(BASE, artifact, device, expires, SECRET)


def content(packages: dict[str, Path]) -> bytes:
    return packages["signed"].read_bytes()


# --------------------------------------------------------------------------- parse_range


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", (0, 100)),
        ("bytes=10-", (10, 1000)),
        ("bytes=-100", (900, 1000)),
        ("bytes=-5000", (0, 1000)),
        ("bytes=990-5000", (990, 1000)),
        ("bytes=999-999", (999, 1000)),
        ("Bytes = 5-6", (5, 7)),
        ("bytes=0-0,5-6", None),  # several ranges: the whole file
        ("bytes=5-4", None),  # invalid: ignored
        ("bytes=-", None),
        ("bytes=a-b", None),
        ("items=0-1", None),
        ("bytes=", None),
    ],
)
def test_parse_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=1000-", 1000), ("bytes=1000-1001", 1000), ("bytes=-0", 1000), ("bytes=-1", 0), ("bytes=0-", 0)],
)
def test_parse_range_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(Unsatisfiable):
        parse_range(header, size)


# --------------------------------------------------------------------------- downloads


async def test_get_whole_file(client: httpx.AsyncClient, hello: Artifact, packages: dict[str, Path]) -> None:
    response = await client.get(link(hello))
    assert response.status_code == 200
    assert response.content == content(packages)
    headers = response.headers
    assert headers["content-length"] == str(hello.size)
    assert headers["content-type"] == "application/vnd.omadm.package"
    assert headers["etag"] == f'"{hello.sha256}"'
    assert headers["accept-ranges"] == "bytes"
    assert parsedate_to_datetime(headers["last-modified"]).timestamp() == int(hello.created.timestamp())
    assert "content-range" not in headers


async def test_file_names_are_escaped_in_links(
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    storage: LocalArtifactStorage,
    packages: dict[str, Path],
) -> None:
    async with sessions() as db:
        artifact = await add_artifact(db, storage, "héllo 1.0 #1?.omp", packages["unsigned"])
    url = link(artifact)
    assert "h%C3%A9llo%201.0%20%231%3F.omp?" in url
    response = await client.get(url)
    assert response.status_code == 200
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content == packages["unsigned"].read_bytes()


async def test_head(client: httpx.AsyncClient, hello: Artifact) -> None:
    response = await client.head(link(hello))
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(hello.size)
    assert response.headers["etag"] == f'"{hello.sha256}"'
    ranged = await client.head(link(hello), headers={"Range": "bytes=10-19"})
    assert ranged.status_code == 206
    assert ranged.headers["content-length"] == "10"
    assert ranged.headers["content-range"] == f"bytes 10-19/{hello.size}"


@pytest.mark.parametrize(
    ("header", "span"),
    [
        ("bytes=0-99", (0, 100)),
        ("bytes=100-", (100, None)),
        ("bytes=-50", (-50, None)),
        ("bytes=7-999999", (7, None)),
    ],
)
async def test_ranges(
    client: httpx.AsyncClient,
    hello: Artifact,
    packages: dict[str, Path],
    header: str,
    span: tuple[int, int | None],
) -> None:
    start, stop = span
    data = content(packages)
    response = await client.get(link(hello), headers={"Range": header})
    assert response.status_code == 206
    assert response.content == data[start:stop]
    first = start % len(data)
    last = (stop if stop is not None else len(data)) - 1
    assert response.headers["content-range"] == f"bytes {first}-{last}/{len(data)}"
    assert response.headers["content-length"] == str(len(response.content))


@pytest.mark.parametrize("header", ["bytes=0-1,5-9", "bytes=9-3", "pages=1-2"])
async def test_ranges_served_whole(
    client: httpx.AsyncClient, hello: Artifact, packages: dict[str, Path], header: str
) -> None:
    response = await client.get(link(hello), headers={"Range": header})
    assert response.status_code == 200
    assert response.content == content(packages)


@pytest.mark.parametrize("header", ["bytes={size}-", "bytes={size}-{size}", "bytes=-0"])
async def test_unsatisfiable_range_is_416(client: httpx.AsyncClient, hello: Artifact, header: str) -> None:
    response = await client.get(link(hello), headers={"Range": header.format(size=hello.size)})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{hello.size}"


async def test_if_range(client: httpx.AsyncClient, hello: Artifact, packages: dict[str, Path]) -> None:
    data = content(packages)
    etag = f'"{hello.sha256}"'
    modified = (await client.head(link(hello))).headers["last-modified"]
    for validator in (etag, modified):
        same = await client.get(link(hello), headers={"Range": "bytes=100-", "If-Range": validator})
        assert same.status_code == 206, validator
        assert same.content == data[100:]
    earlier = format_datetime(parsedate_to_datetime(modified).replace(year=2001), usegmt=True)
    for validator in ('"0000"', f"W/{etag}", earlier, "not a date"):
        changed = await client.get(link(hello), headers={"Range": "bytes=100-", "If-Range": validator})
        assert changed.status_code == 200, validator
        assert changed.content == data
        assert "content-range" not in changed.headers


async def test_bad_links_are_403(client: httpx.AsyncClient, hello: Artifact) -> None:
    expired = await client.get(link(hello, expires=NOW))
    assert expired.status_code == 403
    assert "expired" in expired.text
    url = link(hello)
    for tampered in (
        url.replace("d=IMEI", "d=IMSI"),  # another device
        url.replace(f"e={LATER}", f"e={LATER + 1}"),
        url.split("&s=")[0],
        url.split("?")[0],
    ):
        response = await client.get(tampered)
        assert response.status_code == 403, tampered
        assert "expired" not in response.text
    other_device = await client.get(
        link(hello, device="IMEI:000000000000000").replace(
            "d=IMEI%3A000000000000000", "d=IMEI%3A490154203237518"
        )
    )
    assert other_device.status_code == 403
    head = await client.head(link(hello, expires=NOW))
    assert head.status_code == 403


async def test_unknown_artifact_or_name_is_404(client: httpx.AsyncClient, hello: Artifact) -> None:
    ghost = Artifact(id=hello.id + 1, filename=hello.filename)
    assert (await client.get(link(ghost))).status_code == 404
    huge = Artifact(id=2**70, filename="x.omp")
    assert (await client.get(link(huge))).status_code == 404
    renamed = Artifact(id=hello.id, filename="other.omp")
    assert (await client.get(link(renamed))).status_code == 404
    assert (await client.post(link(hello))).status_code == 405


async def test_missing_bytes_are_a_server_error(
    client: httpx.AsyncClient, hello: Artifact, storage: LocalArtifactStorage
) -> None:
    await storage.delete(hello.storage_key)
    response = await client.get(link(hello))
    assert response.status_code == 500
    assert "missing or damaged" in response.text


async def test_many_chunks(
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    storage: LocalArtifactStorage,
    packages: dict[str, Path],
) -> None:
    async with sessions() as db:
        big = await add_artifact(db, storage, "big.omp", packages["big"])
    data = packages["big"].read_bytes()
    whole = await client.get(link(big))
    assert whole.content == data
    part = await client.get(link(big), headers={"Range": "bytes=70000-200000"})
    assert part.content == data[70000:200001]


# --------------------------------------------------------------------------- descriptors


async def test_descriptor_names_a_working_download_and_notify_url(
    client: httpx.AsyncClient, hello: Artifact, packages: dict[str, Path], notified: NotifyRecorder
) -> None:
    url = descriptor_url(BASE, hello, DEVICE, LATER, SECRET, correlator="job-42")
    response = await client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == DD_CONTENT_TYPE
    dd = parse_descriptor(response.content, base_url=url)
    assert dd.object_uri == link(hello)
    assert dd.install_notify_uri == notify_url(BASE, "job-42", SECRET)
    assert dd.size == hello.size
    assert dd.types == (hello.content_type,)
    assert dd.name == "Hello 1.0.0"
    assert dd.dd_version == "1.0"
    assert dd.vendor == "omadm"
    assert dd.description == "A one-component example package for the omadm SCOMO demo."
    assert (await client.get(dd.object_uri)).content == content(packages)
    assert (await client.post(dd.install_notify_uri, content=b"900 Success")).status_code == 200
    assert notified.calls == [("job-42", 900, "Success")]
    head = await client.head(url)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(response.content))


async def test_descriptor_without_correlator_and_refusals(client: httpx.AsyncClient, hello: Artifact) -> None:
    url = descriptor_url(BASE, hello, DEVICE, LATER, SECRET)
    dd = parse_descriptor((await client.get(url)).content, base_url=url)
    assert dd.install_notify_uri is None
    expired = await client.get(descriptor_url(BASE, hello, DEVICE, NOW, SECRET))
    assert expired.status_code == 403
    assert "expired" in expired.text
    assert (await client.get(url.replace("d=IMEI", "d=IMSI"))).status_code == 403
    ghost = Artifact(id=hello.id + 1, filename=hello.filename)
    assert (await client.get(descriptor_url(BASE, ghost, DEVICE, LATER, SECRET))).status_code == 404


async def test_descriptor_uses_the_public_url(
    sessions: async_sessionmaker[AsyncSession], storage: LocalArtifactStorage, hello: Artifact
) -> None:
    app = Starlette(
        routes=artifact_routes(
            sessions, storage, SECRET, public_url="https://cdn.example/dm/", clock=lambda: NOW
        )
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://internal"
    ) as client:
        url = descriptor_url("http://internal", hello, DEVICE, LATER, SECRET, correlator="c1")
        dd = parse_descriptor((await client.get(url)).content)
    assert dd.object_uri.startswith("https://cdn.example/dm/artifacts/")
    assert dd.install_notify_uri is not None
    assert urlsplit(dd.install_notify_uri).path == "/dm/artifacts/notify/c1"


# --------------------------------------------------------------------------- install-notify


async def test_install_notify(client: httpx.AsyncClient, notified: NotifyRecorder) -> None:
    url = notify_url(BASE, "job/7", SECRET)
    ok = await client.post(url, content=b"954 Loader Error\r\n", headers={"Content-Type": "text/plain"})
    assert ok.status_code == 200
    assert notified.calls == [("job/7", 954, "Loader Error")]


async def test_install_notify_refusals(client: httpx.AsyncClient, notified: NotifyRecorder) -> None:
    url = notify_url(BASE, "job-7", SECRET)
    forged = await client.post(url.replace("job-7", "job-8"), content=b"900 Success")
    assert forged.status_code == 403
    assert (await client.post(url.split("?")[0], content=b"900 Success")).status_code == 403
    bad = await client.post(url, content=b"200 OK")
    assert bad.status_code == 400
    assert "outside 900-999" in bad.text
    huge = await client.post(url, content=b"900 " + b"x" * MAX_NOTIFY_BODY)
    assert huge.status_code == 413
    assert (await client.get(url)).status_code == 405
    assert notified.calls == []


async def test_install_notify_without_a_hook(
    sessions: async_sessionmaker[AsyncSession], storage: LocalArtifactStorage
) -> None:
    app = Starlette(routes=artifact_routes(sessions, storage, SECRET))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        response = await client.post(notify_url(BASE, "j", SECRET), content=b"900 Success")
    assert response.status_code == 200


def test_a_short_secret_is_refused_when_the_routes_are_made(storage: LocalArtifactStorage) -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        artifact_routes(async_sessionmaker(), storage, b"too short")
