"""The S3 backend against moto's standalone S3 server process: blobs, multipart, presigned URLs.

Everything goes over HTTP to a real server process (:mod:`.s3proc`): the store's puts and
ranged reads, presigned URLs fetched with Range by httpx as a device would, their expiry and
signature (checked as AWS checks them), the download routes' redirect and the DD's
``objectURI`` with an S3 store, and the settings' refusals.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.applications import Starlette

from omadm.agent.scomo.dd import parse_descriptor
from omadm.server.artifacts import ArtifactError, add_artifact, artifact_routes, delete_artifact
from omadm.server.artifacts.backends import open_storage, presigner
from omadm.server.artifacts.s3 import MAX_PRESIGN_EXPIRY, S3ArtifactStorage, S3Settings
from omadm.server.artifacts.storage import ArtifactStoreError, BlobNotFound
from omadm.server.artifacts.urls import descriptor_url, download_url
from omadm.server.config import ConfigError, load_server_config

from .helpers import BASE, LATER, NOW, SECRET
from .s3proc import ACCESS_KEY, REGION, SECRET_KEY, S3Endpoint, s3_endpoint

pytestmark = pytest.mark.anyio
__all__ = ["s3_endpoint"]  # the fixture, imported for pytest

DEVICE = "IMEI:490154203237518"
MiB = 1024 * 1024


def settings(endpoint: S3Endpoint, bucket: str, **changes: object) -> S3Settings:
    values: dict[str, object] = {
        "bucket": bucket,
        "prefix": "pkgs/",
        "endpoint_url": endpoint.url,
        "region": REGION,
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
        "multipart_threshold": 5 * MiB,
        "multipart_chunksize": 5 * MiB,
        **changes,
    }
    return S3Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def bucket(s3_endpoint: S3Endpoint) -> str:
    return s3_endpoint.bucket()


@pytest.fixture
def s3(s3_endpoint: S3Endpoint, bucket: str) -> S3ArtifactStorage:
    return S3ArtifactStorage(settings(s3_endpoint, bucket))


async def read(store: S3ArtifactStorage, key: str, start: int = 0, stop: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in store.open_range(key, start, stop)])


async def test_blobs_round_trip_through_the_bucket(s3: S3ArtifactStorage, s3_endpoint: S3Endpoint) -> None:
    data = os.urandom(200_000)
    key = hashlib.sha256(data).hexdigest()
    blob = await s3.put(io.BytesIO(data))
    assert (blob.key, blob.size, blob.sha256, blob.created) == (key, len(data), key, True)
    # The object is in the bucket under the prefix, with its SHA-256 as metadata.
    head = s3_endpoint.client().head_object(Bucket=s3.bucket, Key=f"pkgs/blobs/{key}")
    assert head["ContentLength"] == len(data)
    assert head["Metadata"] == {"sha256": key}
    assert await s3.exists(key) and await s3.size(key) == len(data)
    assert await read(s3, key) == data
    assert await read(s3, key, 1000, 70_000) == data[1000:70_000]  # spans several chunks
    assert await read(s3, key, len(data) - 5) == data[-5:]
    assert await read(s3, key, 10, 10) == b""

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 4096):
            yield data[i : i + 4096]

    again = await s3.put(chunks())  # the same bytes, from an upload stream: already there
    assert (again.key, again.created) == (key, False)
    assert s3.local_path(key) is None
    assert await s3.delete(key) is True
    assert await s3.delete(key) is False
    assert not await s3.exists(key)
    with pytest.raises(BlobNotFound):
        await s3.size(key)
    with pytest.raises(BlobNotFound):
        await read(s3, key)
    assert not await s3.exists("../../etc/passwd")  # not a key: never an object name
    with pytest.raises(BlobNotFound):
        await read(s3, "not-a-key")


async def test_a_big_package_goes_up_in_parts(s3: S3ArtifactStorage, s3_endpoint: S3Endpoint) -> None:
    data = os.urandom(11 * MiB)  # three parts of at most 5 MiB
    blob = await s3.put(io.BytesIO(data))
    head = s3_endpoint.client().head_object(Bucket=s3.bucket, Key=f"pkgs/blobs/{blob.key}")
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]  # a multipart upload's ETag
    assert hashlib.sha256(await read(s3, blob.key)).hexdigest() == blob.key


async def test_presigned_urls_serve_ranges_and_expire(s3: S3ArtifactStorage) -> None:
    data = os.urandom(300_000)
    blob = await s3.put(io.BytesIO(data))
    url = await s3.presigned_url(blob.key, 600, filename="hello 1.0.omp", content_type="application/x-omp")
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["600"] and query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-SignedHeaders"] == ["host"]  # a device may add Range

    async with httpx.AsyncClient() as http:
        whole = await http.get(url)
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["content-type"] == "application/x-omp"
        assert "hello%201.0.omp" in whole.headers["content-disposition"]

        part = await http.get(url, headers={"Range": "bytes=1000-1999"})
        assert part.status_code == 206
        assert part.content == data[1000:2000]
        assert part.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
        resume = await http.get(url, headers={"Range": f"bytes={len(data) - 10}-"})
        assert resume.status_code == 206 and resume.content == data[-10:]

        # Another object under the same signature: refused as AWS refuses it.
        other = await s3.put(io.BytesIO(b"other bytes"))
        forged = url.replace(blob.key, other.key)
        refused = await http.get(forged)
        assert refused.status_code == 403 and "SignatureDoesNotMatch" in refused.text

        # Expiry: a one-second URL works at once and is refused once the second has passed.
        short = await s3.presigned_url(blob.key, 1)
        assert parse_qs(urlsplit(short).query)["X-Amz-Expires"] == ["1"]
        time.sleep(2.1)
        expired = await http.get(short, headers={"Range": "bytes=0-9"})
        assert expired.status_code == 403
        assert "Request has expired" in expired.text
        assert (await http.get(url, headers={"Range": "bytes=0-9"})).status_code == 206  # the 600 s one


async def test_expiry_defaults_to_presign_expiry_and_is_capped(s3_endpoint: S3Endpoint, bucket: str) -> None:
    store = S3ArtifactStorage(settings(s3_endpoint, bucket, presign_expiry=1234))
    blob = await store.put(io.BytesIO(b"x" * 10))
    assert parse_qs(urlsplit(await store.presigned_url(blob.key)).query)["X-Amz-Expires"] == ["1234"]
    capped = await store.presigned_url(blob.key, 10 * MAX_PRESIGN_EXPIRY)
    assert parse_qs(urlsplit(capped).query)["X-Amz-Expires"] == [str(MAX_PRESIGN_EXPIRY)]


async def test_store_failures_name_the_bucket_and_the_cause(s3_endpoint: S3Endpoint) -> None:
    missing = S3ArtifactStorage(settings(s3_endpoint, "omadm-no-such-bucket"))
    with pytest.raises(
        ArtifactStoreError, match=r"bucket omadm-no-such-bucket at http://127.0.0.1:.*does not exist"
    ):
        await missing.check()
    with pytest.raises(ArtifactStoreError, match=r"uploading pkgs/blobs/.*the bucket does not exist"):
        await missing.put(io.BytesIO(b"some bytes"))
    down = S3ArtifactStorage(settings(s3_endpoint, "omadm", endpoint_url="http://127.0.0.1:9"))
    with pytest.raises(
        ArtifactStoreError,
        match=r"at http://127.0.0.1:9, region us-east-1: checking the bucket failed: cannot reach the store",
    ):
        await down.check()


def test_settings_refused_with_the_setting_named(tmp_path: Path) -> None:
    good = S3Settings(bucket="b")
    assert good.problems() == []
    cases = {
        "bucket is required": S3Settings(bucket=""),
        "endpoint_url must start with http": S3Settings(bucket="b", endpoint_url="minio:9000"),
        "access_key_id and secret_access_key go together": S3Settings(bucket="b", access_key_id="k"),
        "presign_expiry must be whole seconds from 1 to 604800": S3Settings(
            bucket="b", presign_expiry=604801
        ),
        "multipart_chunksize must be whole bytes, at least 5242880": S3Settings(
            bucket="b", multipart_chunksize=1
        ),
        "addressing_style must be one of auto, path, virtual": S3Settings(bucket="b", addressing_style="dns"),
        "prefix must not start with '/'": S3Settings(bucket="b", prefix="/x/"),
    }
    for message, bad in cases.items():
        assert any(message in problem for problem in bad.problems()), (message, bad.problems())
        with pytest.raises(ValueError, match=message):
            S3ArtifactStorage(bad)

    config = tmp_path / "omadm-server.toml"
    config.write_text('[server]\nport = 8700\n[artifacts]\nbackend = "s3"\n')
    with pytest.raises(ConfigError, match=r'\[artifacts\] bucket is required with backend = "s3"'):
        load_server_config(config)
    config.write_text('[server]\nartifacts = { backend = "s3" }\n')
    with pytest.raises(ConfigError, match=r"go in an \[artifacts\] table"):
        load_server_config(config)
    config.write_text('[artifacts]\nbackend = "gcs"\n')
    with pytest.raises(ConfigError, match="backend must be one of local, s3, not 'gcs'"):
        load_server_config(config)
    config.write_text('[artifacts]\nbackend = "s3"\nbucket = "b"\nexpiry = 5\n')
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) in \[artifacts\]: expiry"):
        load_server_config(config)
    config.write_text('[artifacts]\nbackend = "s3"\nbucket = "b"\npresign_expiry = 0\n')
    with pytest.raises(ConfigError, match="presign_expiry must be whole seconds"):
        load_server_config(config)
    config.write_text(
        '[artifacts]\nbackend = "s3"\nbucket = "pkgs"\nprefix = "omadm/"\nendpoint_url = "http://127.0.0.1:9"\n'
        'region = "eu-west-1"\npresign_expiry = 3600\n'
    )
    loaded = load_server_config(config)
    assert (loaded.artifacts.bucket, loaded.artifacts.presign_expiry) == ("pkgs", 3600)
    store = open_storage(loaded)
    assert isinstance(store, S3ArtifactStorage) and presigner(store) is store
    assert store.object_key("a" * 64) == "omadm/blobs/" + "a" * 64
    assert presigner(open_storage(load_server_config(None))) is None  # the local default


async def test_uploads_and_links_with_an_s3_store(
    sessions: async_sessionmaker[AsyncSession],
    s3: S3ArtifactStorage,
    s3_endpoint: S3Endpoint,
    packages: dict[str, Path],
) -> None:
    """The service stores uploads in the bucket; the server's links send devices to it."""
    async with sessions() as db:
        artifact = await add_artifact(db, s3, "hello-1.0.0.omp", packages["signed"])
    content = packages["signed"].read_bytes()
    listing = s3_endpoint.client().list_objects_v2(Bucket=s3.bucket)["Contents"]
    assert [o["Key"] for o in listing] == [f"pkgs/blobs/{artifact.sha256}"]

    app = Starlette(routes=artifact_routes(sessions, s3, SECRET, clock=lambda: NOW))
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as server,
        httpx.AsyncClient() as http,
    ):
        # A signed download link of the server: a redirect to the bucket, for the link's remaining life.
        moved = await server.get(download_url(BASE, artifact, DEVICE, LATER, SECRET))
        assert moved.status_code == 307
        target = moved.headers["location"]
        assert target.startswith(s3_endpoint.url) and parse_qs(urlsplit(target).query)["X-Amz-Expires"] == [
            str(LATER - NOW)
        ]
        part = await http.get(target, headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == content[100:200]
        # Refusals are the server's, before any redirect.
        assert (await server.get(download_url(BASE, artifact, DEVICE, NOW - 1, SECRET))).status_code == 403

        # A DD names the bucket's URL as its objectURI; the device downloads from there.
        dd = await server.get(descriptor_url(BASE, artifact, DEVICE, LATER, SECRET, correlator="job-1"))
        assert dd.status_code == 200
        descriptor = parse_descriptor(dd.content)
        assert descriptor.object_uri.startswith(s3_endpoint.url)
        assert descriptor.size == len(content)
        assert (await http.get(descriptor.object_uri)).content == content

    # Deleting the artifact removes its object.
    async with sessions() as db:
        await delete_artifact(db, s3, artifact.id)
    assert "Contents" not in s3_endpoint.client().list_objects_v2(Bucket=s3.bucket)


async def test_an_upload_the_store_refuses_is_a_503_and_leaves_no_row(
    sessions: async_sessionmaker[AsyncSession], s3_endpoint: S3Endpoint, packages: dict[str, Path]
) -> None:
    missing = S3ArtifactStorage(settings(s3_endpoint, "omadm-gone-bucket"))
    async with sessions() as db:
        with pytest.raises(ArtifactError) as refused:
            await add_artifact(db, missing, "hello-1.0.0.omp", packages["signed"])
        assert refused.value.status == 503
        assert "bucket omadm-gone-bucket" in refused.value.reason
        assert "the bucket does not exist" in refused.value.reason
    async with sessions() as db:
        from omadm.server.artifacts import list_artifacts  # noqa: PLC0415

        assert await list_artifacts(db) == []
