"""Migration 0005 (management authorities) on a database that has data at 0004, both engines.

The rows made before authorities land in ``default`` and keep working; afterwards the same
DevId can be registered by a second authority; downgrading refuses while it is, and works
once it is not.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from omadm.server.registry import add_authority, add_device, find_device, resolve_authority
from omadm.server.store.engine import make_engine, session_factory
from omadm.server.store.migrate import MigrationError, current_revision, downgrade, head_revision, migrate
from omadm.server.store.models import (
    DEFAULT_AUTHORITY_PK,
    ApiToken,
    Artifact,
    AuditEntry,
    Authority,
    Campaign,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


async def _run(url: str, statements: list[tuple[str, dict[str, object]]]) -> None:
    engine = make_engine(url, pool_size=1)
    try:
        async with engine.begin() as connection:
            for statement, params in statements:
                await connection.execute(text(statement), params)
    finally:
        await engine.dispose()


def _seed_0004(url: str) -> None:
    """A device with a job, a token, an artifact, a campaign, an audit entry."""
    when = NOW.replace(tzinfo=None) if url.startswith("sqlite") else NOW
    device = (
        "INSERT INTO devices (device_id, state, auth_type, username, password, server_password,"
        " client_nonce, server_nonce, auth_failures, notify_address, devinfo, devdetail, tags, scomo_root,"
        " created, inventory_digest, has_open_jobs) VALUES ('IMEI:1', 'accepted', 'syncml:auth-md5',"
        " 'old', 'old-secret', '', :nonce, :nonce, 0, '', '{}', '{}', '{}', './SCOMO', :at, '', true)"
    )
    job = (
        "INSERT INTO jobs (device_pk, kind, params, state, correlator, exec_uri, detail, session_token,"
        " attempts, created, updated) VALUES ((SELECT max(id) FROM devices), 'remove', '{}', 'queued',"
        " 'c-1', '', '', '', 0, :at, :at)"
    )
    artifact = (
        "INSERT INTO artifacts (filename, storage_key, size, sha256, content_type, package_id, version,"
        " manifest, created) VALUES ('p.omp', 'k1', 1, :sha, 'x', 'p', '1.0', '{}', :at)"
    )
    token = "INSERT INTO api_tokens (name, role, token_hash, created) VALUES ('ops', 'operator', 'h', :at)"
    campaign = (
        "INSERT INTO campaigns (name, kind, artifact_id, component_id, target, waves, success_threshold,"
        " error_threshold, max_retries, state, current_wave, skipped, detail, created, updated)"
        " VALUES ('c', 'install', (SELECT max(id) FROM artifacts), 'p', '{}', '[]', 1.0, 0.0, 0, 'draft',"
        " 0, 0, '', :at, :at)"
    )
    audit = (
        "INSERT INTO audit_log (at, actor, action, target, detail)"
        " VALUES (:at, 'ops', 'device.add', 'IMEI:1', '{}')"
    )
    asyncio.run(
        _run(
            url,
            [
                (device, {"nonce": b"n", "at": when}),
                (job, {"at": when}),
                (artifact, {"sha": "0" * 64, "at": when}),
                (token, {"at": when}),
                (campaign, {"at": when}),
                (audit, {"at": when}),
            ],
        )
    )


async def _check_upgraded(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as db, db.begin():
        default = await db.get(Authority, DEFAULT_AUTHORITY_PK)
        assert default is not None and (default.name, default.server_id) == ("default", None)
        for model in (ApiToken, Artifact, Campaign, AuditEntry):
            rows = (await db.execute(text(f"SELECT authority_pk FROM {model.__tablename__}"))).scalars().all()  # type: ignore[attr-defined]
            assert rows == [DEFAULT_AUTHORITY_PK], model.__name__
        device = await find_device(db, "IMEI:1")  # the default authority's, as before
        assert device is not None and device.username == "old" and device.authority_pk == DEFAULT_AUTHORITY_PK
        # A new authority (id after the default's on both engines) registers the same DevId.
        other = await add_authority(db, "acme", "acme-dm", configured_server_id="omadm")
        assert other.id != DEFAULT_AUTHORITY_PK
        twin = await add_device(db, "IMEI:1", username="acme", password="p", authority_pk=other.id)
        assert twin.id != device.id
        assert await resolve_authority(db, "acme-dm", configured_server_id="omadm") is other


def test_0005_upgrades_a_0004_database_with_data_into_the_default_authority(empty_db_url: str) -> None:
    migrate(empty_db_url, "0004")
    _seed_0004(empty_db_url)
    migrate(empty_db_url)
    assert current_revision(empty_db_url) == head_revision()

    async def check() -> None:
        engine = make_engine(empty_db_url, pool_size=1)
        try:
            await _check_upgraded(engine)
        finally:
            await engine.dispose()

    asyncio.run(check())

    # The DevId is now registered twice: the old schema cannot hold that.
    with pytest.raises(MigrationError, match="registered by several authorities"):
        downgrade(empty_db_url, "0004")
    assert current_revision(empty_db_url) == head_revision()
    asyncio.run(
        _run(
            empty_db_url,
            [
                ("DELETE FROM devices WHERE authority_pk <> 1", {}),
                ("DELETE FROM authorities WHERE id <> 1", {}),
            ],
        )
    )
    downgrade(empty_db_url, "0004")
    assert current_revision(empty_db_url) == "0004"
    migrate(empty_db_url)  # and up again
    assert current_revision(empty_db_url) == head_revision()
