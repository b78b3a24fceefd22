"""What the DM endpoint asks of the store, served two ways: the general path and the fast path.

The endpoint's logic is written once, against a :class:`Unit` (one DM message's view of
the store). Two units serve it:

* :class:`OrmUnit`, the general path: an ``AsyncSession`` in one transaction, rows locked
  as they are read; it serves everything (jobs, alerts, inventory changes, enrolment);
* :class:`FastUnit`, the fast path for the steady state (a known device polls, nothing to
  do): it loads through the :class:`~omadm.server.store.writer.DmWriter` and hands it the
  message's changes to commit together with other messages' (group commit). It serves
  only what such a message needs; anything else raises :class:`FullPathNeeded` *before*
  anything is written, and the endpoint serves the message again on the general path.

So the fast path cannot change what a message does, only what it costs: the same code
decides, and the rarer work keeps its single transaction and row locks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .registry import find_device
from .store.models import Device, DeviceEvent, DmSession, utc_now
from .store.writer import DEVICE_COLUMNS, DmWriter, MessageWrite

__all__ = ["AuthorityRef", "FastUnit", "FullPathNeeded", "OrmUnit", "Unit"]

_DEVICE_NAMES = tuple(c.name for c in Device.__table__.columns)
_SESSION_NAMES = tuple(c.name for c in DmSession.__table__.columns)


@dataclass(frozen=True)
class AuthorityRef:
    """The management authority a DM message is addressed to (its URL says which)."""

    pk: int
    server_id: str  # the DM ServerID its devices know it by (sent in server credentials)
    dm_url: str  # where its devices send DM messages (the session's server URI and RespURI)


class FullPathNeeded(Exception):
    """This message needs what only the general path does (nothing was written)."""


class Unit:
    """One DM message's view of the store. Every call here needs the general path."""

    authority: AuthorityRef

    async def session_for(self, token: str) -> tuple[DmSession, Device] | None:
        """The session of ``token`` (locked for this message) and its device."""
        raise FullPathNeeded("load a session")

    async def device(self, device_id: str) -> Device | None:
        """The device whose DevId is ``device_id``."""
        raise FullPathNeeded("find a device")

    async def enrol(self, device: Device) -> None:
        """Store a device seen for the first time (it gets its id)."""
        raise FullPathNeeded("enrol a device")

    def add_session(self, record: DmSession) -> None:
        raise FullPathNeeded("start a session")

    def event(self, device: Device, what: str, **detail: Any) -> None:
        """Append to the device's history."""
        raise FullPathNeeded("record an event")

    def orm(self) -> AsyncSession:
        """The transaction itself, for what only the general path does."""
        raise FullPathNeeded("the general path")


class OrmUnit(Unit):
    """The general path: the message's one ORM transaction."""

    def __init__(self, db: AsyncSession, authority: AuthorityRef) -> None:
        self.db = db
        self.authority = authority

    async def session_for(self, token: str) -> tuple[DmSession, Device] | None:
        found = await self.db.execute(
            select(DmSession, Device)
            .join(Device, Device.id == DmSession.device_pk)
            .where(DmSession.token == token, Device.authority_pk == self.authority.pk)
            .with_for_update(of=DmSession)
        )
        row = found.first()
        return None if row is None else (row[0], row[1])

    async def device(self, device_id: str) -> Device | None:
        return await find_device(self.db, device_id, authority_pk=self.authority.pk)

    async def enrol(self, device: Device) -> None:
        device.authority_pk = self.authority.pk
        self.db.add(device)
        await self.db.flush()

    def add_session(self, record: DmSession) -> None:
        self.db.add(record)

    def event(self, device: Device, what: str, **detail: Any) -> None:
        self.db.add(DeviceEvent(device_pk=device.id, kind=what, detail=detail, at=utc_now()))

    def orm(self) -> AsyncSession:
        return self.db


class FastUnit(Unit):
    """The fast path: rows loaded through the writer, changes collected for its next commit.

    The objects it hands out are *transient* ORM instances (never attached to a session), so
    the endpoint's code reads and sets them as usual; :meth:`write` then compares them with
    the rows as loaded.
    """

    def __init__(self, writer: DmWriter, authority: AuthorityRef) -> None:
        self.writer = writer
        self.authority = authority
        self._record: DmSession | None = None
        self._loaded_messages: int | None = None
        self._device: Device | None = None
        self._device_row: dict[str, Any] = {}
        self._events: list[dict[str, Any]] = []

    async def session_for(self, token: str) -> tuple[DmSession, Device] | None:
        rows = await self.writer.session_and_device(token)
        if rows is None:
            return None
        session_row, device_row = rows
        if device_row["authority_pk"] != self.authority.pk:
            return None  # another authority's session: not this endpoint's
        self._record = DmSession(**session_row)
        self._loaded_messages = int(session_row["messages"] or 0)
        return self._record, self._adopt(device_row)

    async def device(self, device_id: str) -> Device | None:
        row = await self.writer.device(device_id, self.authority.pk)
        return None if row is None else self._adopt(row)

    def add_session(self, record: DmSession) -> None:
        self._record = record
        self._loaded_messages = None

    def event(self, device: Device, what: str, **detail: Any) -> None:
        self._events.append({"device_pk": device.id, "kind": what, "detail": detail, "at": utc_now()})

    def write(self) -> MessageWrite:
        """The message's changes for the writer; FullPathNeeded if it changed more than it may."""
        record, device = self._record, self._device
        if record is None or device is None:
            raise FullPathNeeded("no session")
        changed: dict[str, Any] = {}
        for name in _DEVICE_NAMES:
            value = getattr(device, name)
            if value != self._device_row[name]:
                if name not in DEVICE_COLUMNS:
                    raise FullPathNeeded(f"device column {name} changed")
                changed[name] = value
        return MessageWrite(
            session={name: getattr(record, name) for name in _SESSION_NAMES},
            expected_messages=self._loaded_messages,
            device_id=device.id,
            device=changed,
            events=self._events,
        )

    def _adopt(self, row: dict[str, Any]) -> Device:
        self._device_row = row
        self._device = Device(**row)
        return self._device
