"""add/get/list/delete artifacts: only packages a device would accept; nothing left by a refusal."""

from __future__ import annotations

import gzip
import io
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from omadm.package.signing import generate_key
from omadm.server.artifacts import (
    ArtifactError,
    LocalArtifactStorage,
    add_artifact,
    delete_artifact,
    get_artifact,
    list_artifacts,
    service,
)
from omadm.server.artifacts.service import PACKAGE_CONTENT_TYPE, safe_filename
from omadm.server.store.models import Artifact

pytestmark = pytest.mark.anyio

Sessions = async_sessionmaker[AsyncSession]


async def count(sessions: Sessions) -> int:
    async with sessions() as db:
        return int(await db.scalar(select(func.count()).select_from(Artifact)) or 0)


def stored_files(storage: LocalArtifactStorage) -> list[Path]:
    return [p for p in storage.root.rglob("*") if p.is_file()]


async def stream(data: bytes) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), 4096):
        yield data[offset : offset + 4096]


async def test_upload_a_signed_package(
    sessions: Sessions, storage: LocalArtifactStorage, packages: dict[str, Path], key: Ed25519PrivateKey
) -> None:
    data = packages["signed"].read_bytes()
    async with sessions() as db:
        artifact = await add_artifact(
            db,
            storage,
            "hello-1.0.0.omp",
            io.BytesIO(data),
            trusted_keys=[key.public_key()],
            require_signature=True,
        )
    assert artifact.id is not None
    assert artifact.filename == "hello-1.0.0.omp"
    assert artifact.size == len(data)
    assert artifact.storage_key == artifact.sha256
    assert artifact.content_type == PACKAGE_CONTENT_TYPE
    assert (artifact.package_id, artifact.version) == ("com.example.hello-package", "1.0.0")
    manifest = artifact.manifest
    assert manifest["name"] == "Hello"
    assert manifest["signed"] is True
    assert manifest["key_id"]
    [component] = manifest["components"]
    assert (component["id"], component["version"], component["env_type"]) == (
        "com.example.hello",
        "1.0.0",
        "archive",
    )
    assert component["files"] == 6
    assert "files" not in manifest  # the file lists stay in the package
    assert artifact.created is not None
    path = storage.local_path(artifact.storage_key)
    assert path is not None
    assert path.read_bytes() == data


async def test_upload_from_async_chunks_and_from_a_path(
    sessions: Sessions, storage: LocalArtifactStorage, packages: dict[str, Path]
) -> None:
    async with sessions() as db:
        from_chunks = await add_artifact(db, storage, "big.omp", stream(packages["big"].read_bytes()))
    async with sessions() as db:
        from_path = await add_artifact(db, storage, "hello.omp", packages["unsigned"])
    assert from_chunks.package_id == "com.example.big"
    assert from_path.manifest["signed"] is False
    assert await count(sessions) == 2


async def test_duplicate_upload_returns_the_existing_artifact(
    sessions: Sessions, storage: LocalArtifactStorage, packages: dict[str, Path]
) -> None:
    async with sessions() as db:
        first = await add_artifact(db, storage, "hello.omp", packages["signed"])
    async with sessions() as db:
        again = await add_artifact(db, storage, "renamed.omp", io.BytesIO(packages["signed"].read_bytes()))
    assert again.id == first.id
    assert again.filename == "hello.omp"
    assert await count(sessions) == 1
    assert len(stored_files(storage)) == 1


async def test_duplicate_upload_restores_a_lost_blob(
    sessions: Sessions, storage: LocalArtifactStorage, packages: dict[str, Path]
) -> None:
    async with sessions() as db:
        first = await add_artifact(db, storage, "hello.omp", packages["signed"])
    await storage.delete(first.storage_key)
    async with sessions() as db:
        again = await add_artifact(db, storage, "hello.omp", packages["signed"])
    assert again.id == first.id
    assert await storage.exists(first.storage_key)


def tampered(package: Path) -> bytes:
    """The package with one byte of a component file changed (recompressed, so gzip is valid)."""
    raw = bytearray(gzip.decompress(package.read_bytes()))
    index = raw.index(b"#!/bin/sh", 2048)
    raw[index + 2] ^= 0x20
    return gzip.compress(bytes(raw))


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("garbage", "not a gzip file"),
        ("empty", "not a gzip file"),
        ("gzip-not-tar", "not an acceptable omadm package"),
        ("tampered", "does not match its SHA-256"),
        ("truncated", "not an acceptable omadm package"),
    ],
)
async def test_invalid_files_are_refused_with_422_and_leave_nothing(
    sessions: Sessions, storage: LocalArtifactStorage, packages: dict[str, Path], kind: str, reason: str
) -> None:
    signed = packages["signed"].read_bytes()
    data = {
        "garbage": b"this is not a package at all" * 10,
        "empty": b"",
        "gzip-not-tar": gzip.compress(b"hello world" * 100),
        "tampered": tampered(packages["signed"]),
        "truncated": signed[: len(signed) // 2],
    }[kind]
    async with sessions() as db:
        with pytest.raises(ArtifactError) as caught:
            await add_artifact(db, storage, "bad.omp", io.BytesIO(data))
    assert caught.value.status == 422
    assert reason in caught.value.reason
    assert await count(sessions) == 0
    assert stored_files(storage) == []


async def test_a_concurrent_insert_of_the_same_bytes_wins(
    sessions: Sessions,
    storage: LocalArtifactStorage,
    packages: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with sessions() as db:
        theirs = await add_artifact(db, storage, "theirs.omp", packages["signed"])
    real = service._by_key
    calls = 0

    async def unseen_once(db: AsyncSession, key: str, authority_pk: int) -> Artifact | None:
        nonlocal calls
        calls += 1
        # As if the other insert came just after.
        return None if calls == 1 else await real(db, key, authority_pk)

    monkeypatch.setattr(service, "_by_key", unseen_once)
    async with sessions() as db:
        ours = await add_artifact(db, storage, "ours.omp", packages["signed"])
    assert ours.id == theirs.id
    assert ours.filename == "theirs.omp"
    assert await storage.exists(theirs.storage_key)  # shared: not removed by the loser
    assert await count(sessions) == 1


async def test_a_failed_commit_removes_the_new_blob(
    sessions: Sessions,
    storage: LocalArtifactStorage,
    packages: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken_commit() -> None:
        raise OSError("database is gone")

    async with sessions() as db:
        monkeypatch.setattr(db, "commit", broken_commit)
        with pytest.raises(OSError, match="database is gone"):
            await add_artifact(db, storage, "hello.omp", packages["signed"])
    assert stored_files(storage) == []
    assert await count(sessions) == 0


async def test_signature_policy(
    sessions: Sessions, storage: LocalArtifactStorage, packages: dict[str, Path], key: Ed25519PrivateKey
) -> None:
    async with sessions() as db:
        with pytest.raises(ArtifactError, match="not signed") as unsigned:
            await add_artifact(
                db,
                storage,
                "u.omp",
                packages["unsigned"],
                trusted_keys=[key.public_key()],
                require_signature=True,
            )
        with pytest.raises(ArtifactError, match="does not verify with any trusted key") as foreign:
            await add_artifact(
                db, storage, "s.omp", packages["signed"], trusted_keys=[generate_key().public_key()]
            )
    assert unsigned.value.status == foreign.value.status == 422
    assert await count(sessions) == 0
    assert stored_files(storage) == []


async def test_a_duplicate_is_checked_against_the_callers_policy(
    sessions: Sessions, storage: LocalArtifactStorage, packages: dict[str, Path], key: Ed25519PrivateKey
) -> None:
    async with sessions() as db:
        existing = await add_artifact(db, storage, "u.omp", packages["unsigned"])
    async with sessions() as db:
        with pytest.raises(ArtifactError, match="not signed"):
            await add_artifact(
                db,
                storage,
                "u.omp",
                packages["unsigned"],
                trusted_keys=[key.public_key()],
                require_signature=True,
            )
    assert await storage.exists(existing.storage_key)  # the refusal did not remove the shared blob


async def test_max_size(sessions: Sessions, storage: LocalArtifactStorage, packages: dict[str, Path]) -> None:
    async with sessions() as db:
        for source in (io.BytesIO(packages["signed"].read_bytes()), packages["signed"]):
            with pytest.raises(ArtifactError, match="larger than the limit of 100 bytes") as caught:
                await add_artifact(db, storage, "hello.omp", source, max_size=100)
            assert caught.value.status == 413
    assert stored_files(storage) == []


async def test_the_spool_file_is_removed(
    sessions: Sessions, storage: LocalArtifactStorage, packages: dict[str, Path], tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    async with sessions() as db:
        await add_artifact(
            db, storage, "hello.omp", io.BytesIO(packages["signed"].read_bytes()), spool_dir=spool
        )
        with pytest.raises(ArtifactError):
            await add_artifact(db, storage, "bad.omp", io.BytesIO(b"junk"), spool_dir=spool)
    assert list(spool.iterdir()) == []


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("hello.omp", "hello.omp"),
        ("C:\\Users\\me\\hello.omp", "hello.omp"),
        ("../../etc/hello.omp", "hello.omp"),
        (".hidden.omp", "hidden.omp"),
        ("bad\x00\nname.omp", "badname.omp"),
        ("", "package.omp"),
        ("dir/", "package.omp"),
        ("dd", "dd.omp"),
        ("x" * 300 + ".omp", "x" * 196 + ".omp"),
    ],
)
def test_safe_filename(given: str, kept: str) -> None:
    assert safe_filename(given) == kept


async def test_get_and_list(
    sessions: Sessions, storage: LocalArtifactStorage, packages: dict[str, Path]
) -> None:
    async with sessions() as db:
        hello = await add_artifact(db, storage, "hello.omp", packages["signed"])
    async with sessions() as db:
        big = await add_artifact(db, storage, "big.omp", packages["big"])
    async with sessions() as db:
        assert (await get_artifact(db, hello.id)).filename == "hello.omp"
        with pytest.raises(ArtifactError, match="no artifact 999") as caught:
            await get_artifact(db, 999)
        assert caught.value.status == 404
        assert [a.id for a in await list_artifacts(db)] == [big.id, hello.id]
        assert [a.id for a in await list_artifacts(db, package_id="com.example.big")] == [big.id]
        assert [a.id for a in await list_artifacts(db, package_id="com.example.big", version="2.0")] == []
        assert [a.id for a in await list_artifacts(db, limit=1, offset=1)] == [hello.id]


async def test_delete(sessions: Sessions, storage: LocalArtifactStorage, hello: Artifact) -> None:
    async with sessions() as db:
        await delete_artifact(db, storage, hello.id)
    assert await count(sessions) == 0
    assert not await storage.exists(hello.storage_key)
    async with sessions() as db:
        with pytest.raises(ArtifactError) as caught:
            await delete_artifact(db, storage, hello.id)
    assert caught.value.status == 404


async def test_delete_is_refused_while_referenced(
    sessions: Sessions, storage: LocalArtifactStorage, hello: Artifact
) -> None:
    seen: list[int] = []

    async def references(db: AsyncSession, artifact: Artifact) -> Sequence[str]:
        seen.append(artifact.id)
        return [f"job {n}" for n in range(1, 6)]

    async with sessions() as db:
        with pytest.raises(ArtifactError) as caught:
            await delete_artifact(db, storage, hello.id, references=references)
    assert caught.value.status == 409
    assert caught.value.reason == f"artifact {hello.id} is still used by job 1, job 2, job 3 and 2 more"
    assert seen == [hello.id]
    assert await count(sessions) == 1
    assert await storage.exists(hello.storage_key)

    async def unused(db: AsyncSession, artifact: Artifact) -> Sequence[str]:
        return []

    async with sessions() as db:
        await delete_artifact(db, storage, hello.id, references=unused)
    assert await count(sessions) == 0
