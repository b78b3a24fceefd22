"""The sweeper's lease: one worker sweeps at a time, across processes and hosts.

Every worker runs the sweeper loop (:func:`omadm.server.sweeper.run_sweeper`), but only the
one holding the lease sweeps; the others stand by and try to take the lease at each tick, so
that when the holder dies another worker takes over within one ``sweep_interval``.

Why a lease when every sweep step already locks its rows with ``FOR UPDATE SKIP LOCKED``:
the row locks make concurrent sweeps *safe* (no job timed out twice, no device notified
twice), but N workers sweeping every few seconds still cost N times the queries, and N
sweepers releasing campaign waves and sending Package #0 at once make the log and the
timing of a rollout hard to follow. The lease makes the sweeper one process; the row locks
stay as the guarantee for the moments the lease changes hands (a holder whose connection was
cut may finish the sweep it is in while the new holder starts one).

* **PostgreSQL** (:class:`PostgresLease`): a session-level advisory lock
  (``pg_try_advisory_lock``) held by a dedicated connection of the worker (autocommit, so it
  is never idle in a transaction), named ``omadm-sweeper <host>:<pid> port <port>`` in
  ``pg_stat_activity``. The lock belongs to the connection: when the process dies (SIGKILL,
  a crash, a lost host) the database drops the connection and the lock with it, with no
  expiry time to wait for. The holder checks at every tick that its connection is alive and
  still holds the lock (``pg_locks``); if not, it stops sweeping and competes again like the
  others. Advisory locks are per database, so two installations on one PostgreSQL server do
  not share a lease.
* **SQLite** (:class:`FileLease`): one host by definition; an exclusive ``flock`` on a file
  next to the database, so that the processes of ``--workers N`` on one SQLite file sweep
  one at a time too. The kernel releases it when the process dies. An in-memory database
  (:class:`LocalLease`) is one process: the lease is always held.

Every change is logged: the worker that takes the lease says so (INFO), a holder that loses
it says why (WARNING), and a standing-by worker names the holder when it first sees it or
when it changes.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

__all__ = [
    "LEASE_KEY",
    "FileLease",
    "LocalLease",
    "PostgresLease",
    "SweepLease",
    "lease_holder",
    "sweep_lease",
    "worker_name",
]

log = logging.getLogger("omadm.server.lease")

#: The advisory lock's two-int key: ("omad" as a 32-bit number, 1 = the sweeper).
LEASE_KEY = (0x6F6D6164, 1)
_CLASSID, _OBJID = LEASE_KEY

_TRY = text(f"SELECT pg_try_advisory_lock({_CLASSID}, {_OBJID})")
_UNLOCK = text(f"SELECT pg_advisory_unlock({_CLASSID}, {_OBJID})")
# objsubid 2: the two-int4 form of the key (the bigint form is 1).
_LOCKS = (
    f"FROM pg_locks l WHERE l.locktype = 'advisory' AND l.classid = {_CLASSID} AND l.objid = {_OBJID}"
    " AND l.objsubid = 2 AND l.granted"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
_MINE = text(f"SELECT count(*) {_LOCKS} AND l.pid = pg_backend_pid()")
_HOLDER = text(
    "SELECT coalesce(nullif(a.application_name, ''), 'pid ' || l.pid::text)"
    f" {_LOCKS.replace('FROM pg_locks l', 'FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid')}"
)


def worker_name(port: int | None = None) -> str:
    """How this worker is named in the lease's log lines and in ``pg_stat_activity``."""
    name = f"omadm-sweeper {socket.gethostname()}:{os.getpid()}"
    return f"{name} port {port}" if port else name


class SweepLease(Protocol):
    """What the sweeper loop needs: hold the lease (take it, or confirm it is still ours)."""

    name: str

    async def hold(self) -> bool:
        """True when this worker holds the lease now (taking it if it is free)."""
        ...

    async def release(self) -> None:
        """Give the lease up (shutdown); safe to call when not held."""
        ...


class LocalLease:
    """Always held: one process is the only sweeper there can be (an in-memory database)."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or worker_name()

    async def hold(self) -> bool:
        return True

    async def release(self) -> None:
        return None


class FileLease:
    """An exclusive ``flock`` on ``path``: one sweeper among the processes of one host."""

    def __init__(self, path: Path, name: str | None = None) -> None:
        self.path = path
        self.name = name or worker_name()
        self._fd: int | None = None
        self._warned = False

    async def hold(self) -> bool:
        if self._fd is not None:
            return True
        import fcntl  # noqa: PLC0415 - POSIX only; the lease is the only user

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            if not self._warned:
                log.warning("sweeper lease: cannot open %s (%s); this worker does not sweep", self.path, exc)
                self._warned = True
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{self.name}\n".encode())
        self._fd = fd
        log.info("sweeper lease taken by %s (%s)", self.name, self.path)
        return True

    async def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


class PostgresLease:
    """``pg_try_advisory_lock`` on a dedicated autocommit connection (see the module docstring)."""

    def __init__(self, url: str, name: str | None = None, *, connect_timeout: float = 10.0) -> None:
        self.name = name or worker_name()
        # A connection of its own, outside the worker's pool: the lease lives exactly as long
        # as this connection, and the pool recycles its connections (pool_recycle) at will.
        self._engine: AsyncEngine = create_async_engine(
            make_url(url),
            poolclass=NullPool,
            connect_args={
                "server_settings": {"application_name": self.name[:63]},
                "timeout": connect_timeout,
                "command_timeout": connect_timeout,
            },
        )
        self._conn: AsyncConnection | None = None
        self._holds = False
        self._last_holder: str | None = None
        self._last_error: str | None = None

    async def hold(self) -> bool:
        if self._holds and self._conn is not None:
            try:
                if await self._conn.scalar(_MINE):
                    return True
                reason = "the database no longer lists the lock as this connection's"
            except Exception as exc:  # the connection was cut, the server restarted...
                reason = f"{type(exc).__name__}: {exc}".strip()
            log.warning("sweeper lease lost by %s (%s); sweeping stops here", self.name, reason)
            await self._drop()
        try:
            if self._conn is None:
                conn = await self._engine.connect()
                self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            got = bool(await self._conn.scalar(_TRY))
            holder = None if got else await self._conn.scalar(_HOLDER)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}".strip()
            if error != self._last_error:
                log.warning("sweeper lease: cannot reach the database (%s); not sweeping", error)
                self._last_error = error
            await self._drop()
            return False
        self._last_error = None
        if got:
            self._holds = True
            self._last_holder = self.name
            log.info("sweeper lease taken by %s", self.name)
            return True
        holder = str(holder) if holder is not None else "a worker that is just letting go"
        if holder != self._last_holder:
            log.info("sweeper lease held by %s; %s stands by", holder, self.name)
            self._last_holder = holder
        return False

    async def holder(self) -> str | None:
        """Who holds the lease now (its ``application_name``), or None when nobody does."""
        async with self._engine.connect() as conn:
            value = await conn.scalar(_HOLDER)
        return None if value is None else str(value)

    async def _drop(self) -> None:
        self._holds = False
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:  # already broken: nothing to give back
                await conn.invalidate()

    async def release(self) -> None:
        if self._holds and self._conn is not None:
            try:
                await self._conn.scalar(_UNLOCK)
                log.info("sweeper lease released by %s", self.name)
            except Exception:  # closing the connection below releases it anyway
                pass
        await self._drop()
        await self._engine.dispose()


async def lease_holder(engine: AsyncEngine) -> str | None:
    """Who holds the sweeper lease of ``engine``'s PostgreSQL database (None: nobody, or SQLite)."""
    if engine.url.get_backend_name() != "postgresql":
        return None
    async with engine.connect() as conn:
        value = await conn.scalar(_HOLDER)
    return None if value is None else str(value)


def sweep_lease(engine: AsyncEngine, port: int | None = None) -> SweepLease:
    """The lease that fits ``engine``'s database (see the module docstring)."""
    url = engine.url
    name = worker_name(port)
    if url.get_backend_name() == "postgresql":
        return PostgresLease(url.render_as_string(hide_password=False), name)
    database = url.database
    if not database or database == ":memory:" or url.query.get("mode") == "memory":
        return LocalLease(name)
    return FileLease(Path(f"{database}.sweeper-lock"), name)
