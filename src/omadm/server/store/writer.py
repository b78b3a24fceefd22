"""The DM writer: one thread, one synchronous connection, group commit for steady-state messages.

Most DM messages of a fleet are the same few statements: load the session (or find the
device), store the session's next snapshot, update the device's nonces and last contact,
append a history row. Through the async ORM each statement costs several hundred µs of
CPU (greenlet bridge, aiosqlite's thread hand-off per call, unit-of-work flush), and each
message paid its own ``COMMIT`` (an fsync on SQLite, ``synchronous=FULL``). The writer
takes these messages off that path (DESIGN rule 4: "a single writer that commits several
sessions' changes together, each reply sent only after its own change is durable"):

* a dedicated thread owns one connection of a *synchronous* engine on the same database
  (stdlib ``sqlite3``, or ``psycopg`` for PostgreSQL) and runs SQLAlchemy Core statements
  compiled once, so the types (UTC datetimes, JSON, bytes) are exactly the ORM's;
* the event loop hands it work through a queue; the thread drains whatever has queued,
  serves the reads, then commits *all* queued writes in one transaction and resolves
  their futures together - so a reply waits for its own change to be durable, and one
  ``COMMIT`` is shared by every message that arrived meanwhile;
* a write that finds its session row changed since it was loaded (``messages`` moved on: a
  repeated message served elsewhere), or its device row (``row_version`` moved on: an
  operator, the general path or another worker updated it), is refused with
  :class:`WriteConflict` and nothing of that message is written; the caller serves it on
  the general path instead. So a message may be decided on rows kept in memory from the
  device's previous message (``dm_store.RowCache``) without loading them again. A batch
  that fails is rolled back and its writes retried one transaction each, so one bad write
  fails alone.

The DM endpoint's steady-state messages come here (see ``dm_store``), and so does a new
device's first contact: its challenge, its first session and its first inventory (which
replaces whatever inventory rows the device had; nothing is read). Anything else (jobs,
alerts, an inventory that changed, enrolment) goes through the ORM in one transaction as
before. Both paths share the database's own locking, so they can interleave safely.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import queue
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, bindparam, delete, insert, select, update

from .models import Device, DeviceEvent, DmSession, InventoryEntry

__all__ = ["DmWriter", "MessageWrite", "WriteConflict", "WriterUnavailable"]

log = logging.getLogger("omadm.server.writer")

_SESSIONS = cast(Table, DmSession.__table__)
_DEVICES = cast(Table, Device.__table__)
_EVENTS = cast(Table, DeviceEvent.__table__)
_INVENTORY = cast(Table, InventoryEntry.__table__)

#: The device columns a steady-state message may change; anything else takes the ORM path.
DEVICE_COLUMNS = (
    "client_nonce",
    "server_nonce",
    "devinfo",
    "devdetail",
    "last_contact",
    "auth_failures",
    "inventory_digest",
    "inventory_updated",
)
# (``row_version`` is set by every write: the version it was decided on, plus one.)
_SESSION_COLUMNS = tuple(c.name for c in _SESSIONS.columns)
#: How many queued items one round takes at most (bounds one transaction's size).
_MAX_BATCH = 256


class WriteConflict(Exception):
    """The session changed since this message loaded it: serve the message on the general path."""


class WriterUnavailable(Exception):
    """The writer could not serve this (no connection, a statement failed): take the general path.

    The writer itself goes on: its next round opens a new connection.
    """


@dataclass
class MessageWrite:
    """What one DM message changes: its session row, some device columns, history rows."""

    session: dict[str, Any]  # every column of dm_sessions
    expected_messages: int | None  # None: a new session (INSERT); else the loaded count
    device_id: int
    device_version: int  # the device's row_version the message was decided on
    device: dict[str, Any] = field(default_factory=dict)  # a subset of DEVICE_COLUMNS
    events: list[dict[str, Any]] = field(default_factory=list)  # device_pk, at, kind, detail
    #: None: the inventory is untouched; a list: the device's inventory rows become exactly these.
    inventory: list[dict[str, Any]] | None = None


class _Item:
    __slots__ = ("future", "run", "write")

    def __init__(
        self, future: asyncio.Future[Any], run: Callable[[Connection], Any] | None, write: MessageWrite | None
    ) -> None:
        self.future = future
        self.run = run
        self.write = write


_Outcome = tuple[asyncio.Future[Any], Any, BaseException | None]


class _Prepared:
    """A Core statement compiled once per set of parameter names, run on the DBAPI cursor.

    SQLAlchemy's execution path (an execution context, parameter processing, a result object)
    was half of the writer's CPU per message. The statement is still compiled by SQLAlchemy
    for the dialect, and each value still goes through its column type's bind processor (UTC
    datetimes, JSON, bytes), so what is stored is exactly what the ORM stores; only the
    machinery between is skipped. Every parameter must be given: column defaults are not
    applied here (the callers pass whole rows).
    """

    def __init__(self, statement: Any, dialect: Any) -> None:
        self._statement = statement
        self._dialect = dialect
        self._forms: dict[tuple[str, ...], tuple[str, bool, list[tuple[str, Any]]]] = {}

    def run(self, cursor: Any, rows: list[dict[str, Any]]) -> int:
        """Execute for each of ``rows`` (all with the same keys); the rows it changed in all."""
        keys = tuple(rows[0])
        form = self._forms.get(keys)
        if form is None:
            form = self._forms[keys] = self._compile(keys)
        sql, positional, binds = form
        if positional:
            params: list[Any] = [
                tuple(row[name] if process is None else process(row[name]) for name, process in binds)
                for row in rows
            ]
        else:
            params = [
                {name: row[name] if process is None else process(row[name]) for name, process in binds}
                for row in rows
            ]
        if len(params) == 1:
            cursor.execute(sql, params[0])
        else:
            cursor.executemany(sql, params)
        return int(cursor.rowcount)

    def _compile(self, keys: tuple[str, ...]) -> tuple[str, bool, list[tuple[str, Any]]]:
        columns = [key for key in keys if not key.startswith("b_")]
        compiled = self._statement.compile(dialect=self._dialect, column_keys=columns)
        by_name = {name: bind for bind, name in compiled.bind_names.items()}
        names = list(compiled.positiontup) if compiled.positional else list(by_name)
        missing = [name for name in names if name not in keys]
        if missing:
            raise ValueError(f"no value for {', '.join(missing)} in {self._statement}")
        binds = [
            (name, by_name[name].type.dialect_impl(self._dialect).bind_processor(self._dialect))
            for name in names
        ]
        return compiled.string, bool(compiled.positional), binds


class _Stale(Exception):
    """A batch met a session row that moved on: redo it one write at a time."""


class DmWriter:
    """Two threads, each with its connection: reads, and writes committed together.

    Reads have their own thread so that a load never waits behind a commit (on PostgreSQL a
    commit is a network round trip and a WAL flush). Started on first use in the event loop
    that awaits it; ``close()`` stops both threads.
    """

    def __init__(self, engine: Engine) -> None:
        """``engine``: a synchronous one with two connections (``store.engine.make_sync_engine``)."""
        self._engine = engine
        self._sqlite = self._engine.dialect.name == "sqlite"
        self._reads: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._writes: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broken: WriterUnavailable | None = None
        self._load = (
            select(
                *(c.label(f"s_{c.name}") for c in _SESSIONS.columns),
                *(c.label(f"d_{c.name}") for c in _DEVICES.columns),
            )
            .join_from(_SESSIONS, _DEVICES, _SESSIONS.c.device_pk == _DEVICES.c.id)
            .where(_SESSIONS.c.token == bindparam("b_token"))
        )
        self._find = select(_DEVICES).where(
            _DEVICES.c.device_id == bindparam("b_device_id"),
            _DEVICES.c.authority_pk == bindparam("b_authority_pk"),
        )
        dialect = self._engine.dialect
        self._insert_session = _Prepared(insert(_SESSIONS), dialect)
        self._update_session = _Prepared(
            update(_SESSIONS).where(
                _SESSIONS.c.token == bindparam("b_token"), _SESSIONS.c.messages == bindparam("b_messages")
            ),
            dialect,
        )
        self._update_device = _Prepared(
            update(_DEVICES).where(
                _DEVICES.c.id == bindparam("b_id"), _DEVICES.c.row_version == bindparam("b_version")
            ),
            dialect,
        )
        self._insert_event = _Prepared(insert(_EVENTS), dialect)
        self._clear_inventory = _Prepared(
            delete(_INVENTORY).where(_INVENTORY.c.device_pk == bindparam("b_device")), dialect
        )
        self._insert_inventory = _Prepared(insert(_INVENTORY), dialect)
        # Messages written and the transactions they shared (bench/server.py prints the ratio).
        self.batches = 0
        self.writes = 0
        #: Called (in the writer's thread) with each committed transaction's message count:
        #: the app points it at the omadm_group_commit_batch_size histogram (metrics.py).
        self.on_batch: Callable[[int], None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the threads, for the running event loop (once; later calls do nothing)."""
        if self._threads:
            return
        self._loop = asyncio.get_running_loop()
        self._threads = [
            threading.Thread(
                target=self._serve, args=(self._reads, self._read_round), name="omadm-dm-reader"
            ),
            threading.Thread(
                target=self._serve, args=(self._writes, self._write_round), name="omadm-dm-writer"
            ),
        ]
        for thread in self._threads:
            thread.daemon = True
            thread.start()

    async def close(self) -> None:
        if self._threads:
            self._reads.put(None)
            self._writes.put(None)
            for thread in self._threads:
                await asyncio.to_thread(thread.join)
            self._threads = []
        self._engine.dispose()

    # -- what the event loop asks ----------------------------------------------------------------

    async def session_and_device(self, token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The session row of ``token`` and its device's row, or None."""

        def run(conn: Connection) -> tuple[dict[str, Any], dict[str, Any]] | None:
            row = conn.execute(self._load, {"b_token": token}).mappings().first()
            if row is None:
                return None
            session = {name[2:]: value for name, value in row.items() if name.startswith("s_")}
            device = {name[2:]: value for name, value in row.items() if name.startswith("d_")}
            return session, device

        result: tuple[dict[str, Any], dict[str, Any]] | None = await self._submit(self._reads, run, None)
        return result

    async def device(self, device_id: str, authority_pk: int) -> dict[str, Any] | None:
        """The row of device ``device_id`` of authority ``authority_pk``, or None."""

        def run(conn: Connection) -> dict[str, Any] | None:
            params = {"b_device_id": device_id, "b_authority_pk": authority_pk}
            row = conn.execute(self._find, params).mappings().first()
            return dict(row) if row is not None else None

        result: dict[str, Any] | None = await self._submit(self._reads, run, None)
        return result

    async def commit(self, write: MessageWrite) -> None:
        """Write one message's changes; returns once they are durable (WriteConflict if stale)."""
        await self._submit(self._writes, None, write)

    def _submit(
        self,
        to: queue.SimpleQueue[_Item | None],
        run: Callable[[Connection], Any] | None,
        write: MessageWrite | None,
    ) -> asyncio.Future[Any]:
        if self._broken is not None:
            raise self._broken
        if not self._threads:
            self.start()  # on first use: an app served without its lifespan works too
        assert self._loop is not None
        future = self._loop.create_future()
        to.put(_Item(future, run, write))
        return future

    # -- the threads -------------------------------------------------------------------------------

    def _serve(
        self,
        source: queue.SimpleQueue[_Item | None],
        round_: Callable[[Connection, list[_Item]], list[_Outcome]],
    ) -> None:
        """Take what has queued, serve it as one round, hand the outcomes back; until None.

        A round that cannot connect, or whose statements fail, answers WriterUnavailable (the
        endpoint serves those messages on the general path) and the next round connects anew,
        so the writer outlives a database restart. Only a bug outside a round stops it: then
        what is queued and what comes later fails with WriterUnavailable, logged once.
        """
        _name_os_thread(threading.current_thread().name)
        try:
            self._serve_on(source, round_)
        except Exception as exc:
            log.exception("dm writer: stopped; messages take the general path from now on")
            self._broken = WriterUnavailable(f"the DM writer stopped: {exc}")
            failed: list[_Outcome] = []
            while True:
                try:
                    item = source.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    failed.append((item.future, None, self._broken))
            if failed and self._loop is not None:
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(_resolve, failed)

    def _serve_on(
        self,
        source: queue.SimpleQueue[_Item | None],
        round_: Callable[[Connection, list[_Item]], list[_Outcome]],
    ) -> None:
        conn: Connection | None = None
        try:
            while True:
                first = source.get()
                if first is None:
                    return
                items = [first]
                stop = False
                while len(items) < _MAX_BATCH:
                    try:
                        more = source.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    items.append(more)
                if conn is None:
                    try:
                        conn = self._connect()
                    except Exception as exc:  # the database is unreachable: try again next round
                        failed = _unavailable(exc)
                        outcomes: list[_Outcome] = [(item.future, None, failed) for item in items]
                    else:
                        outcomes = round_(conn, items)
                else:
                    outcomes = round_(conn, items)
                if conn is not None and any(
                    error is not None and not isinstance(error, WriteConflict) for _, _, error in outcomes
                ):
                    # The connection may be what failed (the database restarted, a network
                    # cut): the next round starts on a new one.
                    conn.close()
                    conn = None
                assert self._loop is not None
                try:
                    self._loop.call_soon_threadsafe(_resolve, outcomes)
                except RuntimeError:  # the loop is closed: nobody waits any more
                    return
                if stop:
                    return
        finally:
            if conn is not None:
                conn.close()

    def _connect(self) -> Connection:
        return self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def _read_round(self, conn: Connection, items: list[_Item]) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        for item in items:
            assert item.run is not None
            try:
                outcomes.append((item.future, item.run(conn), None))
            except Exception as exc:
                self._recover(conn)
                outcomes.append((item.future, None, _unavailable(exc)))
        return outcomes

    def _write_round(self, conn: Connection, items: list[_Item]) -> list[_Outcome]:
        """Every queued write in one transaction; if that fails, each in its own."""
        writes = [item.write for item in items if item.write is not None]
        try:
            self._transaction(conn, writes)
        except Exception as exc:
            if not isinstance(exc, _Stale):
                log.warning("dm writer: batch of %d failed (%s); retrying one by one", len(items), exc)
            self._recover(conn)
            return [self._write_alone(conn, item) for item in items]
        self.batches += 1
        self.writes += len(items)
        if self.on_batch is not None:
            self.on_batch(len(items))
        return [(item.future, None, None) for item in items]

    def _write_alone(self, conn: Connection, item: _Item) -> _Outcome:
        assert item.write is not None
        try:
            self._transaction(conn, [item.write])
        except _Stale:
            self._recover(conn)
            return item.future, None, WriteConflict()
        except Exception as exc:
            self._recover(conn)
            return item.future, None, _unavailable(exc)
        self.batches += 1
        self.writes += 1
        if self.on_batch is not None:
            self.on_batch(1)
        return item.future, None, None

    def _transaction(self, conn: Connection, writes: list[MessageWrite]) -> None:
        """One transaction, one statement of each kind (executemany): raises _Stale on a conflict."""
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute("BEGIN IMMEDIATE" if self._sqlite else "BEGIN")
            inserts = [w.session for w in writes if w.expected_messages is None]
            if inserts:
                self._insert_session.run(cursor, inserts)
            updates = [_session_update(w) for w in writes if w.expected_messages is not None]
            if updates and self._update_session.run(cursor, updates) != len(updates):
                raise _Stale
            # Every write moves its device's row version on, and only from the version it was
            # decided on: a device changed meanwhile makes the batch stale.
            devices: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for w in writes:
                row = {
                    **w.device,
                    "row_version": w.device_version + 1,
                    "b_id": w.device_id,
                    "b_version": w.device_version,
                }
                devices.setdefault(tuple(sorted(w.device)), []).append(row)
            for rows in devices.values():
                if self._update_device.run(cursor, rows) != len(rows):
                    raise _Stale
            events = [event for w in writes for event in w.events]
            if events:
                self._insert_event.run(cursor, events)
            replaced = [w for w in writes if w.inventory is not None]
            if replaced:
                self._clear_inventory.run(cursor, [{"b_device": w.device_id} for w in replaced])
                rows = [row for w in replaced for row in w.inventory or ()]
                if rows:
                    self._insert_inventory.run(cursor, rows)
            cursor.execute("COMMIT")
        finally:
            cursor.close()

    def _recover(self, conn: Connection) -> None:
        """Leave no transaction open after a failure (ROLLBACK outside one is harmless)."""
        try:
            conn.exec_driver_sql("ROLLBACK")
        except Exception:
            log.debug("dm writer: nothing to roll back")


def _name_os_thread(name: str) -> None:
    """Show the thread's name to the OS too (``top -H``, ``/proc/<pid>/task``), on Linux."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # 15: PR_SET_NAME


def _session_update(write: MessageWrite) -> dict[str, Any]:
    params = {**write.session, "b_token": write.session["token"], "b_messages": write.expected_messages}
    del params["token"]
    return params


def _unavailable(exc: Exception) -> WriterUnavailable:
    """What the endpoint gets for a statement that failed: serve this message the general way."""
    log.warning("dm writer: %s: %s", type(exc).__name__, exc)
    error = WriterUnavailable(f"the DM writer failed: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def _resolve(outcomes: list[_Outcome]) -> None:
    for future, value, error in outcomes:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
