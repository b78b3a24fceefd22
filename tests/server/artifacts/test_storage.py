"""LocalArtifactStorage: content-addressed, atomic puts; ranged reads; nothing outside its root."""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from omadm.server.artifacts import ArtifactStorage, BlobNotFound, LocalArtifactStorage
from omadm.server.artifacts.storage import CHUNK_SIZE

pytestmark = pytest.mark.anyio

DATA = os.urandom(3 * CHUNK_SIZE + 123)
KEY = hashlib.sha256(DATA).hexdigest()


async def chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


async def read(storage: LocalArtifactStorage, key: str, start: int = 0, stop: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in storage.open_range(key, start, stop)])


def test_local_storage_implements_the_protocol(storage: LocalArtifactStorage) -> None:
    assert isinstance(storage, ArtifactStorage)


async def test_put_from_a_file_is_content_addressed(storage: LocalArtifactStorage) -> None:
    blob = await storage.put(io.BytesIO(DATA))
    assert (blob.key, blob.sha256, blob.size, blob.created) == (KEY, KEY, len(DATA), True)
    path = storage.local_path(KEY)
    assert path is not None
    assert path.read_bytes() == DATA
    assert path.stat().st_mode & 0o777 == 0o444
    assert await storage.exists(KEY)
    assert await storage.size(KEY) == len(DATA)
    assert list((storage.root / "tmp").iterdir()) == []


async def test_put_from_async_chunks_and_again_is_not_created(storage: LocalArtifactStorage) -> None:
    first = await storage.put(chunks(DATA))
    second = await storage.put(io.BytesIO(DATA))
    assert first.created and not second.created
    assert first.key == second.key == KEY
    assert list((storage.root / "tmp").iterdir()) == []


async def test_empty_blob(storage: LocalArtifactStorage) -> None:
    blob = await storage.put(io.BytesIO(b""))
    assert blob.size == 0
    assert await read(storage, blob.key) == b""


async def test_open_range(storage: LocalArtifactStorage) -> None:
    await storage.put(io.BytesIO(DATA))
    assert await read(storage, KEY) == DATA
    assert await read(storage, KEY, 10) == DATA[10:]
    assert await read(storage, KEY, 10, 20) == DATA[10:20]
    assert (
        await read(storage, KEY, CHUNK_SIZE - 1, 2 * CHUNK_SIZE + 5)
        == DATA[CHUNK_SIZE - 1 : 2 * CHUNK_SIZE + 5]
    )
    assert await read(storage, KEY, 5, 5) == b""
    assert await read(storage, KEY, len(DATA) - 1, len(DATA) + 100) == DATA[-1:]
    with pytest.raises(ValueError, match="invalid byte range"):
        await read(storage, KEY, 20, 10)


async def test_unknown_keys(storage: LocalArtifactStorage) -> None:
    missing = "0" * 64
    assert not await storage.exists(missing)
    assert not await storage.delete(missing)
    with pytest.raises(BlobNotFound):
        await storage.size(missing)
    with pytest.raises(BlobNotFound):
        await read(storage, missing)


@pytest.mark.parametrize("key", ["../../etc/passwd", "A" * 64, "0" * 63, "", "0" * 64 + "/x"])
async def test_keys_that_are_not_digests_never_touch_the_file_system(
    storage: LocalArtifactStorage, key: str
) -> None:
    assert not await storage.exists(key)
    assert not await storage.delete(key)
    with pytest.raises(BlobNotFound):
        await storage.size(key)
    with pytest.raises(BlobNotFound):
        storage.local_path(key)


async def test_delete(storage: LocalArtifactStorage) -> None:
    await storage.put(io.BytesIO(DATA))
    assert await storage.delete(KEY)
    assert not await storage.exists(KEY)
    assert not await storage.delete(KEY)


async def test_a_failing_source_leaves_no_temp_file(storage: LocalArtifactStorage) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"some bytes"
        raise ConnectionError("upload interrupted")

    with pytest.raises(ConnectionError):
        await storage.put(broken())
    assert list((storage.root / "tmp").iterdir()) == []
    assert not any(path.is_file() for path in (storage.root / "blobs").rglob("*"))


async def test_clean_temporary_removes_only_old_files(storage: LocalArtifactStorage, tmp_path: Path) -> None:
    tmp = storage.root / "tmp"
    tmp.mkdir(parents=True)
    old, fresh = tmp / "put-old", tmp / "put-fresh"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    an_hour_ago = time.time() - 7200
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert await storage.clean_temporary() == 1
    assert sorted(p.name for p in tmp.iterdir()) == ["put-fresh"]
    assert await LocalArtifactStorage(tmp_path / "nowhere").clean_temporary() == 0
