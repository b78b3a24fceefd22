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

The fast path need not even load: :class:`RowCache` keeps the session and device rows as its
last write left them, so a device's next message is decided on those copies. That is safe
because the write is conditional on the rows being unchanged (the session's ``messages``, the
device's ``row_version``, which every other UPDATE moves on): a message decided on an outdated
copy writes nothing and is served again on the general path, which reads the rows afresh.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import configure_mappers

from .registry import find_device
from .store.models import Device, DeviceEvent, DmSession, InventoryEntry, utc_now
from .store.writer import DEVICE_COLUMNS, DmWriter, MessageWrite

__all__ = ["AuthorityRef", "FastUnit", "FullPathNeeded", "OrmUnit", "RowCache", "Unit"]

configure_mappers()  # _transient builds instances without the ORM's first-use hook
_Row = TypeVar("_Row", Device, DmSession)
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

    async def session_of(
        self, device_id: str, session_id: str, max_age: float
    ) -> tuple[DmSession, Device] | None:
        """The latest session (locked) ``device_id`` authenticated in under ``session_id``.

        For clients that ignore RespURI: their later messages carry no token. Only sessions
        updated within ``max_age`` seconds count (an idle one is over).
        """
        raise FullPathNeeded("find a session by SessionID")

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

    async def replace_inventory(self, device: Device, rows: list[dict[str, Any]]) -> None:
        """Make the device's stored inventory exactly ``rows`` (``inventory`` table columns)."""
        raise FullPathNeeded("replace an inventory")

    def live_session(self, token: str) -> Any | None:
        """The session object the worker's last committed write of ``token`` left, if it kept it.

        None: restore it from the row's snapshot. Taken, not shared: whatever happens to this
        message, the object is not handed out again (only a committed write keeps one).
        """
        return None

    def keep_live(self, session: Any) -> None:
        """The session object as this message leaves it (kept if the message's write commits)."""

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

    async def session_of(
        self, device_id: str, session_id: str, max_age: float
    ) -> tuple[DmSession, Device] | None:
        device = await self.device(device_id)
        if device is None:
            return None
        found = await self.db.execute(
            select(DmSession)
            .where(
                DmSession.device_pk == device.id,
                DmSession.session_id == session_id,
                DmSession.updated >= utc_now() - timedelta(seconds=max_age),
            )
            .order_by(DmSession.updated.desc())
            .limit(1)
            .with_for_update()
        )
        record = found.scalar_one_or_none()
        if record is None or not (record.context or {}).get("authenticated"):
            return None
        return record, device

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

    async def replace_inventory(self, device: Device, rows: list[dict[str, Any]]) -> None:
        await self.db.execute(delete(InventoryEntry).where(InventoryEntry.device_pk == device.id))
        self.db.add_all(InventoryEntry(**row) for row in rows)

    def orm(self) -> AsyncSession:
        return self.db


class RowCache:
    """The rows the fast path last wrote, per device and per open session (bounded, LRU).

    Only rows as a committed fast-path write left them go in, so each copy is exactly what
    the database held at that moment; the next write on it is conditional on that still
    being so. Finished sessions are dropped; the least recently used entries go first.
    """

    def __init__(self, max_devices: int = 16384, max_sessions: int = 4096, max_live: int = 1024) -> None:
        self.max_devices = max_devices
        self.max_sessions = max_sessions
        self.max_live = max_live
        self._devices: OrderedDict[int, dict[str, Any]] = OrderedDict()  # pk -> row
        self._by_name: dict[tuple[int, str], int] = {}  # (authority pk, DevId) -> pk
        self._sessions: OrderedDict[str, dict[str, Any]] = OrderedDict()  # token -> row
        # token -> the ServerSession object of the session row kept above (saves unsealing and
        # unpickling it at the session's next message; fewer, since each is ~10x its snapshot).
        self._live: OrderedDict[str, Any] = OrderedDict()
        self.hits = 0  # messages decided without loading (bench/server.py prints it)

    def device(self, authority_pk: int, device_id: str) -> dict[str, Any] | None:
        pk = self._by_name.get((authority_pk, device_id))
        row = None if pk is None else self._device(pk)
        self.hits += row is not None
        return row

    def session(self, token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        row = self._sessions.get(token)
        if row is None:
            return None
        device = self._device(row["device_pk"])
        if device is None:
            return None
        self._sessions.move_to_end(token)
        self.hits += 1
        return row, device

    def take_live(self, token: str) -> Any | None:
        """The session object kept with ``token``'s row, removed from the cache (or None)."""
        return self._live.pop(token, None)

    def store(self, session: dict[str, Any], device: dict[str, Any], live: Any | None = None) -> None:
        """Remember the rows a committed write left (a finished session is forgotten)."""
        pk = device["id"]
        self._devices[pk] = device
        self._devices.move_to_end(pk)
        self._by_name[(device["authority_pk"], device["device_id"])] = pk
        while len(self._devices) > self.max_devices:
            _, old = self._devices.popitem(last=False)
            self._by_name.pop((old["authority_pk"], old["device_id"]), None)
        token = session["token"]
        self._live.pop(token, None)
        if session["finished"]:
            self._sessions.pop(token, None)
            return
        self._sessions[token] = session
        self._sessions.move_to_end(token)
        while len(self._sessions) > self.max_sessions:
            dropped, _ = self._sessions.popitem(last=False)
            self._live.pop(dropped, None)
        if live is not None:
            self._live[token] = live
            while len(self._live) > self.max_live:
                self._live.popitem(last=False)

    def forget(self, device_pk: int | None, token: str = "") -> None:
        """Drop what is kept of a device (and a session): the next message loads them."""
        if token:
            self._sessions.pop(token, None)
            self._live.pop(token, None)
        if device_pk is not None:
            old = self._devices.pop(device_pk, None)
            if old is not None:
                self._by_name.pop((old["authority_pk"], old["device_id"]), None)

    def _device(self, pk: int) -> dict[str, Any] | None:
        row = self._devices.get(pk)
        if row is not None:
            self._devices.move_to_end(pk)
        return row


class FastUnit(Unit):
    """The fast path: rows from the cache or loaded through the writer, changes for its next commit.

    The objects it hands out are *transient* ORM instances (never attached to a session), so
    the endpoint's code reads and sets them as usual; :meth:`write` then compares them with
    the rows as loaded.
    """

    def __init__(self, writer: DmWriter, authority: AuthorityRef, cache: RowCache | None = None) -> None:
        self.writer = writer
        self.authority = authority
        self.cache = cache
        #: Whether the message was decided on kept rows (a refusal then must be checked afresh).
        self.cached = False
        self._record: DmSession | None = None
        self._loaded_messages: int | None = None
        self._device: Device | None = None
        self._device_row: dict[str, Any] = {}
        self._events: list[dict[str, Any]] = []
        self._inventory: list[dict[str, Any]] | None = None
        self._written: MessageWrite | None = None
        self._live: Any | None = None

    async def session_for(self, token: str) -> tuple[DmSession, Device] | None:
        rows = self.cache.session(token) if self.cache is not None else None
        if rows is not None:
            self.cached = True
        else:
            rows = await self.writer.session_and_device(token)
            if rows is None:
                return None
        session_row, device_row = rows
        if device_row["authority_pk"] != self.authority.pk:
            return None  # another authority's session: not this endpoint's
        self._record = _transient(DmSession, session_row)
        self._loaded_messages = int(session_row["messages"] or 0)
        return self._record, self._adopt(device_row)

    async def device(self, device_id: str) -> Device | None:
        row = self.cache.device(self.authority.pk, device_id) if self.cache is not None else None
        if row is not None:
            self.cached = True
        else:
            row = await self.writer.device(device_id, self.authority.pk)
        return None if row is None else self._adopt(row)

    def add_session(self, record: DmSession) -> None:
        self._record = record
        self._loaded_messages = None

    def event(self, device: Device, what: str, **detail: Any) -> None:
        self._events.append({"device_pk": device.id, "kind": what, "detail": detail, "at": utc_now()})

    async def replace_inventory(self, device: Device, rows: list[dict[str, Any]]) -> None:
        self._inventory = rows

    def live_session(self, token: str) -> Any | None:
        # Only with rows from the cache: rows loaded afresh may be newer than a kept object.
        if not self.cached or self.cache is None:
            return None
        return self.cache.take_live(token)

    def keep_live(self, session: Any) -> None:
        self._live = session

    @property
    def device_pk(self) -> int | None:
        """The message's device, once known (what to forget when the message goes elsewhere)."""
        return self._device.id if self._device is not None else None

    def write(self) -> MessageWrite | None:
        """The message's changes for the writer; FullPathNeeded if it changed more than it may.

        None: the message changed nothing (a challenge, which keeps no session).
        """
        record, device = self._record, self._device
        if device is None:
            raise FullPathNeeded("no device")
        changed: dict[str, Any] = {}
        for name in _DEVICE_NAMES:
            value = getattr(device, name)
            if value != self._device_row[name]:
                if name not in DEVICE_COLUMNS:
                    raise FullPathNeeded(f"device column {name} changed")
                changed[name] = value
        if record is None:
            if changed or self._events or self._inventory is not None:
                raise FullPathNeeded("changes without a session")  # the writer writes sessions
            return None
        self._written = MessageWrite(
            session={name: getattr(record, name) for name in _SESSION_NAMES},
            expected_messages=self._loaded_messages,
            device_id=device.id,
            device_version=int(self._device_row["row_version"]),
            device=changed,
            events=self._events,
            inventory=self._inventory,
        )
        return self._written

    def committed(self) -> None:
        """The write is durable: keep its rows for the device's next message."""
        if self.cache is None or self._written is None:
            return
        written = self._written
        device = {**self._device_row, **written.device, "row_version": written.device_version + 1}
        self.cache.store(written.session, device, self._live)

    def _adopt(self, row: dict[str, Any]) -> Device:
        self._device_row = row
        self._device = _transient(Device, row)
        return self._device


def _transient(cls: type[_Row], row: dict[str, Any]) -> _Row:
    """An instance holding ``row``, as the ORM's own loading makes one.

    The constructor would set each column through the attribute instrumentation (about 30
    events per row); a message only reads most of them.
    """
    instance: _Row = cls._sa_class_manager.new_instance()  # type: ignore[attr-defined]
    instance.__dict__.update(row)
    return instance
