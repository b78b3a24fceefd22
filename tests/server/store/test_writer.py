"""The DM writer on both engines: group commit, stale writes refused, one bad write fails alone.

The writer's statements go through its own synchronous connection; the tests read back
through the ORM (the async engine), so they also check that the two agree on types.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from omadm.server.registry import add_device
from omadm.server.store.engine import make_sync_engine, sync_url
from omadm.server.store.models import Device, DeviceEvent, DmSession, utc_now
from omadm.server.store.writer import DmWriter, MessageWrite, WriteConflict, WriterUnavailable

from ..conftest import _admin

pytestmark = pytest.mark.anyio


@pytest.fixture
async def writer(db_url: str) -> AsyncIterator[DmWriter]:
    engine = make_sync_engine(db_url)
    assert engine is not None
    dm_writer = DmWriter(engine)
    yield dm_writer
    await dm_writer.close()


async def _device(sessions: async_sessionmaker[AsyncSession], name: str) -> int:
    async with sessions() as db, db.begin():
        device = await add_device(db, name, username="u", password="p")
        return device.id


async def _version(sessions: async_sessionmaker[AsyncSession], pk: int) -> int:
    async with sessions() as db:
        return (await db.execute(select(Device.row_version).where(Device.id == pk))).scalar_one()


def _session(token: str, device_pk: int, messages: int) -> dict[str, Any]:
    now = utc_now()
    return {
        "token": token,
        "device_pk": device_pk,
        "session_id": "1",
        "snapshot": b"snap" + str(messages).encode(),
        "messages": messages,
        "finished": False,
        "context": {"inventory_asked": True, "n": messages},
        "created": now,
        "updated": now,
    }


async def test_concurrent_messages_share_commits_and_read_back_through_the_orm(
    writer: DmWriter, sessions: async_sessionmaker[AsyncSession]
) -> None:
    pks = [await _device(sessions, f"IMEI:{i}") for i in range(20)]
    seen = utc_now()
    writes = [
        MessageWrite(
            session=_session(f"t{i}", pk, 1),
            expected_messages=None,
            device_id=pk,
            device_version=await _version(sessions, pk),
            device={
                "client_nonce": f"nonce{i}".encode(),
                "last_contact": seen,
                "devinfo": {"./DevInfo/Man": "A"},
            },
            events=[{"device_pk": pk, "kind": "session", "detail": {"token": f"t{i}"}, "at": seen}],
        )
        for i, pk in enumerate(pks)
    ]
    await asyncio.gather(*(writer.commit(w) for w in writes))
    assert writer.writes == 20
    assert writer.batches < 20  # some messages shared a transaction
    loaded = await writer.session_and_device("t7")
    assert loaded is not None
    session_row, device_row = loaded
    assert session_row["context"] == {"inventory_asked": True, "n": 1}
    assert device_row["client_nonce"] == b"nonce7" and device_row["last_contact"] == seen
    async with sessions() as db:
        record = await db.get(DmSession, "t7")
        assert record is not None and record.snapshot == b"snap1" and record.created.tzinfo is not None
        events = (await db.execute(select(func.count()).select_from(DeviceEvent))).scalar_one()
        assert events >= 20


async def test_a_stale_write_is_refused_and_writes_nothing_while_the_others_land(
    writer: DmWriter, sessions: async_sessionmaker[AsyncSession]
) -> None:
    a, b = await _device(sessions, "IMEI:a"), await _device(sessions, "IMEI:b")
    va, vb = await _version(sessions, a), await _version(sessions, b)
    await writer.commit(MessageWrite(_session("ta", a, 1), None, a, va))
    await writer.commit(MessageWrite(_session("tb", b, 1), None, b, vb))
    stale = MessageWrite(
        _session("ta", a, 5),
        expected_messages=3,
        device_id=a,
        device_version=va + 1,
        device={"auth_failures": 9},
    )  # loaded at 3, but the row says 1: another worker served a message meanwhile
    good = MessageWrite(
        _session("tb", b, 2),
        expected_messages=1,
        device_id=b,
        device_version=vb + 1,
        device={"auth_failures": 1},
    )
    results = await asyncio.gather(writer.commit(stale), writer.commit(good), return_exceptions=True)
    assert isinstance(results[0], WriteConflict) and results[1] is None
    row_a = await writer.session_and_device("ta")
    row_b = await writer.session_and_device("tb")
    assert row_a is not None and row_a[0]["messages"] == 1 and row_a[1]["auth_failures"] == 0
    assert row_b is not None and row_b[0]["messages"] == 2 and row_b[1]["auth_failures"] == 1
    assert row_a[1]["row_version"] == va + 1 and row_b[1]["row_version"] == vb + 2


async def test_a_write_decided_on_an_outdated_device_row_is_refused(
    writer: DmWriter, sessions: async_sessionmaker[AsyncSession]
) -> None:
    pk = await _device(sessions, "IMEI:v")
    version = await _version(sessions, pk)
    await writer.commit(MessageWrite(_session("tv", pk, 1), None, pk, version))
    assert await _version(sessions, pk) == version + 1  # the writer's own write moved it on
    async with sessions() as db, db.begin():  # an operator's change through the ORM
        device = await db.get(Device, pk)
        assert device is not None
        device.state = "rejected"
    assert await _version(sessions, pk) == version + 2  # the trigger moved it on
    outdated = MessageWrite(
        _session("tv", pk, 2),
        expected_messages=1,
        device_id=pk,
        device_version=version + 1,
        device={"auth_failures": 4},
    )
    with pytest.raises(WriteConflict):
        await writer.commit(outdated)
    loaded = await writer.session_and_device("tv")
    assert loaded is not None
    assert loaded[0]["messages"] == 1 and loaded[1]["auth_failures"] == 0 and loaded[1]["state"] == "rejected"
    current = MessageWrite(
        _session("tv", pk, 2),
        expected_messages=1,
        device_id=pk,
        device_version=version + 2,
        device={"auth_failures": 4},
    )
    await writer.commit(current)
    assert await _version(sessions, pk) == version + 3


async def test_a_failing_write_fails_alone(
    writer: DmWriter, sessions: async_sessionmaker[AsyncSession]
) -> None:
    pk, other = await _device(sessions, "IMEI:c"), await _device(sessions, "IMEI:c2")
    await writer.commit(MessageWrite(_session("dup", pk, 1), None, pk, await _version(sessions, pk)))
    version = await _version(sessions, pk)
    duplicate = MessageWrite(_session("dup", pk, 1), None, pk, version)  # the token exists: unique violation
    fine = MessageWrite(_session("fine", other, 1), None, other, await _version(sessions, other))
    results = await asyncio.gather(writer.commit(duplicate), writer.commit(fine), return_exceptions=True)
    assert isinstance(results[0], WriterUnavailable)  # the endpoint serves it the general way
    assert results[1] is None
    assert await writer.session_and_device("fine") is not None
    await writer.commit(MessageWrite(_session("after", pk, 1), None, pk, version))  # still serving


async def test_the_writer_outlives_a_lost_connection(
    writer: DmWriter, sessions: async_sessionmaker[AsyncSession], db_url: str
) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("a connection cut from outside is a PostgreSQL event (pg_terminate_backend)")
    pk = await _device(sessions, "IMEI:d")
    await writer.commit(MessageWrite(_session("before", pk, 1), None, pk, await _version(sessions, pk)))
    assert await writer.session_and_device("before") is not None
    version = await _version(sessions, pk)
    await _admin(
        db_url,
        (
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()",
        ),
    )  # as a database restart would
    # The write in flight fails (the endpoint then serves it on the general path), or is
    # retried alone on a new connection and applied whole: never half.
    try:
        await writer.commit(MessageWrite(_session("lost", pk, 1), None, pk, version))
    except WriterUnavailable:
        lost_written = False
    else:
        lost_written = True
        version += 1
    with pytest.raises(WriterUnavailable):
        await writer.session_and_device("before")
    await writer.commit(MessageWrite(_session("after", pk, 1), None, pk, version))  # reconnected
    assert await writer.session_and_device("after") is not None
    assert (await writer.session_and_device("lost") is not None) == lost_written


async def test_a_writer_that_cannot_connect_says_so(tmp_path: Path) -> None:
    engine = make_sync_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'db.sqlite'}")
    assert engine is not None
    broken = DmWriter(engine)
    try:
        with pytest.raises(WriterUnavailable):
            await broken.session_and_device("x")
        with pytest.raises(WriterUnavailable):  # and later calls fail at once
            await broken.device("IMEI:1", 1)
    finally:
        await broken.close()


def test_in_memory_sqlite_has_no_writer() -> None:
    assert sync_url("sqlite+aiosqlite:///:memory:") is None
    assert sync_url("sqlite+aiosqlite:///tmp/x.sqlite") == "sqlite+pysqlite:///tmp/x.sqlite"
    assert sync_url("postgresql+asyncpg://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
