"""Every model through the database and back; constraints; cascades. On both engines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from omadm.server.store.models import (
    DEFAULT_AUTHORITY_PK,
    Artifact,
    Authority,
    Base,
    Device,
    DeviceEvent,
    DmSession,
    InventoryEntry,
    InventoryKind,
    Job,
    JobKind,
    JobState,
)

pytestmark = pytest.mark.anyio

Sessions = async_sessionmaker[AsyncSession]
CEST = timezone(timedelta(hours=2))
WHEN = datetime(2025, 11, 25, 23, 30, 15, 123456, tzinfo=CEST)  # 21:30:15.123456 UTC


async def _add(sessions: Sessions, *objects: Base) -> None:
    async with sessions.begin() as session:
        session.add_all(objects)


async def _device(sessions: Sessions, device_id: str = "IMEI:490154203237518") -> int:
    device = Device(device_id=device_id)
    await _add(sessions, device)
    return device.id


async def _reload(sessions: Sessions, model: type[Base], key: Any) -> Any:
    async with sessions() as session:  # a new session: the values come from the database
        return await session.get(model, key)


def _columns(obj: Base) -> dict[str, Any]:
    return {column.key: getattr(obj, column.key) for column in obj.__table__.columns}


async def test_device_round_trip(sessions: Sessions) -> None:
    device = Device(
        device_id="IMEI:490154203237518",
        state="pending",
        username="dev-user",
        password="dev-secret",
        server_password="srv-secret",
        client_nonce=bytes(range(256)),
        server_nonce=b"\x00\xff\x00",
        auth_failures=2,
        notify_address="udp://10.0.0.7:2948",
        last_notified=WHEN,
        devinfo={"DevId": "IMEI:490154203237518", "Man": "Acme", "Lang": "en-GB", "DmV": "1.2"},
        devdetail={"SwV": "2.1", "LrgObj": True, "MaxDepth": 8, "Ext": {"nested": [1, 2, None]}},
        tags={"site": "Zürich", "ring": 1},
        last_contact=WHEN,
    )
    await _add(sessions, device)
    loaded = await _reload(sessions, Device, device.id)
    assert _columns(loaded) == _columns(device)
    assert loaded.created.tzinfo is UTC
    assert loaded.last_notified == WHEN
    assert loaded.last_notified.tzinfo is UTC
    assert loaded.last_notified.hour == 21
    assert loaded.inventory_updated is None
    assert loaded.scomo_root == "./SCOMO"


async def test_dm_session_round_trip(sessions: Sessions) -> None:
    device_pk = await _device(sessions)
    dm = DmSession(
        token="t" * 64,
        device_pk=device_pk,
        session_id="1A2B",
        snapshot=b"\x80\x05" + bytes(70_000),
        messages=3,
        finished=True,
        context={"inventory": "asked", "jobs": [1, 2]},
        created=WHEN,
        updated=WHEN + timedelta(seconds=1),
    )
    await _add(sessions, dm)
    loaded = await _reload(sessions, DmSession, "t" * 64)
    assert _columns(loaded) == _columns(dm)
    assert loaded.updated.tzinfo is UTC
    assert loaded.finished is True


async def test_inventory_round_trip(sessions: Sessions) -> None:
    device_pk = await _device(sessions)
    entry = InventoryEntry(
        device_pk=device_pk,
        kind=InventoryKind.DEPLOYED.value,
        node="c1",
        ident="com.example.app",
        name="App",
        version="2.0.1",
        state=20,
        status=None,
        env_type="archive",
        description="ünïcode ✓",
    )
    await _add(sessions, entry)
    loaded = await _reload(sessions, InventoryEntry, entry.id)
    assert _columns(loaded) == _columns(entry)


async def test_job_round_trip(sessions: Sessions) -> None:
    device_pk = await _device(sessions)
    job = Job(
        device_pk=device_pk,
        kind=JobKind.INSTALL.value,
        params={"artifact": 7, "url": "https://dm.example/p/7?t=x", "inactive": False},
        state=JobState.ACCEPTED.value,
        correlator="job-1",
        exec_uri="./SCOMO/Download/job-1/Operations/DownloadInstall",
        result_code=1200,
        attempts=1,
        sent_at=WHEN,
        accepted_at=WHEN,
        deadline=WHEN + timedelta(days=1),
    )
    await _add(sessions, job)
    loaded = await _reload(sessions, Job, job.id)
    assert _columns(loaded) == _columns(job)
    assert loaded.deadline.tzinfo is UTC
    assert loaded.finished_at is None


async def test_artifact_and_event_round_trip(sessions: Sessions) -> None:
    device_pk = await _device(sessions)
    artifact = Artifact(
        filename="app-2.0.1.omadm",
        storage_key="sha256/ab/abcdef",
        size=5 * 2**32,  # BigInteger: more than 4 GiB
        sha256="ab" * 32,
        package_id="com.example.app",
        version="2.0.1",
        manifest={"files": ["bin/app"], "signature": {"alg": "ed25519"}},
    )
    event = DeviceEvent(device_pk=device_pk, kind="session", detail={"alert": 1201}, at=WHEN)
    await _add(sessions, artifact, event)
    assert _columns(await _reload(sessions, Artifact, artifact.id)) == _columns(artifact)
    assert _columns(await _reload(sessions, DeviceEvent, event.id)) == _columns(event)


async def test_datetimes_compare_in_queries(sessions: Sessions) -> None:
    """Filters on timestamps work across time zones: values are stored as UTC instants."""
    device_pk = await _device(sessions)
    await _add(
        sessions,
        *(
            Job(device_pk=device_pk, kind="install", correlator=f"j{i}", deadline=WHEN + timedelta(hours=i))
            for i in range(3)
        ),
    )
    later = (WHEN + timedelta(minutes=30)).astimezone(timezone(timedelta(hours=-5)))
    async with sessions() as session:
        overdue = (await session.execute(select(Job.correlator).where(Job.deadline < later))).scalars().all()
    assert overdue == ["j0"]


async def test_naive_datetimes_are_refused(sessions: Sessions) -> None:
    device = Device(device_id="IMEI:1", last_contact=datetime(2025, 1, 1, 12, 0))
    with pytest.raises(StatementError, match="naive datetime"):
        await _add(sessions, device)


async def test_correlator_is_unique(sessions: Sessions) -> None:
    device_pk = await _device(sessions)
    await _add(sessions, Job(device_pk=device_pk, kind="install", correlator="c-1"))
    with pytest.raises(IntegrityError):
        await _add(sessions, Job(device_pk=device_pk, kind="remove", correlator="c-1"))


async def test_device_id_is_unique_per_authority(sessions: Sessions) -> None:
    first = await _device(sessions, "IMEI:1")
    with pytest.raises(IntegrityError):
        await _device(sessions, "IMEI:1")
    other = Authority(name="acme", server_id="acme-dm")
    await _add(sessions, other)
    twin = Device(device_id="IMEI:1", authority_pk=other.id)  # the same device, another authority
    await _add(sessions, twin)
    assert twin.id != first
    async with sessions() as session:
        device = await session.get_one(Device, first)
        assert device.authority_pk == DEFAULT_AUTHORITY_PK  # the default when none is given
    with pytest.raises(IntegrityError):  # ServerIDs are unique too
        await _add(sessions, Authority(name="acme2", server_id="acme-dm"))


async def test_inventory_node_is_unique_per_device_and_kind(sessions: Sessions) -> None:
    first, second = await _device(sessions, "IMEI:1"), await _device(sessions, "IMEI:2")
    await _add(
        sessions,
        InventoryEntry(device_pk=first, kind="deployed", node="c1"),
        InventoryEntry(device_pk=first, kind="delivered", node="c1"),
        InventoryEntry(device_pk=second, kind="deployed", node="c1"),
    )
    with pytest.raises(IntegrityError):
        await _add(sessions, InventoryEntry(device_pk=first, kind="deployed", node="c1"))


async def test_foreign_keys_are_enforced(sessions: Sessions) -> None:
    with pytest.raises(IntegrityError):
        await _add(sessions, Job(device_pk=12345, kind="install", correlator="orphan"))


async def test_deleting_a_device_deletes_what_belongs_to_it(sessions: Sessions) -> None:
    doomed, kept = await _device(sessions, "IMEI:1"), await _device(sessions, "IMEI:2")
    for pk in (doomed, kept):
        await _add(
            sessions,
            DmSession(token=f"tok{pk}", device_pk=pk, snapshot=b"s"),
            InventoryEntry(device_pk=pk, kind="deployed", node="c1"),
            Job(device_pk=pk, kind="install", correlator=f"c{pk}"),
            DeviceEvent(device_pk=pk, kind="created"),
        )
    async with sessions.begin() as session:
        await session.delete(await session.get_one(Device, doomed))
    async with sessions() as session:
        for model in (DmSession, InventoryEntry, Job, DeviceEvent):
            owners = (await session.execute(select(model.device_pk))).scalars().all()  # type: ignore[attr-defined]
            assert owners == [kept], model.__name__
        assert (await session.execute(select(func.count()).select_from(Device))).scalar_one() == 1
