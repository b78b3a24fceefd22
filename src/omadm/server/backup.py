"""``omadm server backup DEST``: an online, consistent copy of the SQLite database.

Copying the SQLite file with ``cp`` while the server runs can catch a page half-written, and
misses whatever still sits in the write-ahead log (``-wal``). SQLite's backup API
(``sqlite3.Connection.backup``) copies the database page by page as of one read
transaction: in WAL mode (the server's, see ``store/engine.py``) that transaction is a
snapshot that writers do not wait for, so the server keeps serving while the copy is made,
and the copy is exactly the database at one moment. It is done in one step (``pages=-1``):
a copy made in several steps restarts whenever another connection writes in between, which
a busy server always does.

The copy is written to a temporary file next to ``DEST``, checked (``PRAGMA
quick_check``, the schema revision it holds), switched to the rollback journal (one
self-contained file, no ``-wal`` beside it), flushed to disk and only then renamed to
``DEST``: an interrupted backup never leaves a half file under the final name.

PostgreSQL is refused with the way to do it there (``pg_dump``): its own tool makes a
consistent dump of a running database, and restores it with ``pg_restore``.

The database is not all of an installation: package files (``artifacts_dir``, by default
``<data_dir>/artifacts``) and the server secret (``<data_dir>/secret``, unless configured)
are files to copy as well; :func:`backup_sqlite` does not copy them and ``docs/deploy.md``
says how.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from omadm.package._archive import fsync_directory

from .store.engine import database_url, mask_url

__all__ = ["BackupError", "BackupResult", "backup_sqlite", "backup_target", "pg_dump_advice"]


class BackupError(Exception):
    """The backup cannot be made; the message says why and what to do."""


@dataclass(frozen=True)
class BackupResult:
    source: Path
    dest: Path
    size: int  # bytes
    revision: str | None  # the Alembic revision the copy holds (None: no omadm schema)


def pg_dump_advice(url: str) -> str:
    """What to say when asked to back up a PostgreSQL database."""
    parsed = make_url(url).set(drivername="postgresql")
    shown = mask_url(parsed)
    return (
        f"the database is PostgreSQL ({shown}): back it up with PostgreSQL's own tool, which "
        f"makes a consistent dump of a running database, e.g. "
        f"pg_dump --format=custom --file omadm.dump '{shown}' "
        f"(restore: pg_restore --clean --if-exists --dbname '{shown}' omadm.dump); see docs/deploy.md"
    )


def backup_target(dest: Path, now: datetime | None = None) -> Path:
    """``dest`` itself, or a time-stamped file name inside it when it is a directory."""
    if dest.is_dir():
        stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        return dest / f"omadm-server-{stamp}.sqlite"
    return dest


def backup_sqlite(url: str, dest: Path, *, overwrite: bool = False) -> BackupResult:
    """Copy the SQLite database ``url`` (any form omadm accepts) to ``dest``, online."""
    parsed = make_url(database_url(url, Path()))
    if parsed.get_backend_name() == "postgresql":
        raise BackupError(pg_dump_advice(url))
    if parsed.get_backend_name() != "sqlite":
        raise BackupError(f"cannot back up {mask_url(url)}: not an SQLite or PostgreSQL database")
    database = parsed.database
    if not database or database == ":memory:" or parsed.query.get("mode") == "memory":
        raise BackupError("the database is in memory: there is nothing on disk to back up")
    source = Path(database)
    if not source.is_file():
        raise BackupError(f"no database at {source} (check --db, --data-dir or --config)")
    target = backup_target(dest)
    if target.resolve() == source.resolve():
        raise BackupError(f"{target} is the database itself: choose another destination")
    if target.exists() and not overwrite:
        raise BackupError(f"{target} already exists (give --overwrite to replace it)")
    if not target.parent.is_dir():
        raise BackupError(f"{target.parent} is not a directory")
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    part = Path(temporary)
    try:
        # Read-only: the backup never writes to (nor creates) the server's database.
        src = sqlite3.connect(f"{source.absolute().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            dst = sqlite3.connect(part)
            try:
                src.backup(dst, pages=-1)  # one step: one snapshot (see the module docstring)
                check = dst.execute("PRAGMA quick_check").fetchone()
                if not check or check[0] != "ok":
                    raise BackupError(f"the copy of {source} failed its integrity check: {check}")
                dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
                revision = _revision(dst)
            finally:
                dst.close()
        finally:
            src.close()
        with part.open("rb") as fh:
            os.fsync(fh.fileno())
        part.chmod(0o600)  # it holds device credentials, as the database does
        os.replace(part, target)
    except sqlite3.Error as exc:
        raise BackupError(f"backing up {source} to {target} failed: {exc}") from None
    except OSError as exc:
        raise BackupError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        part.unlink(missing_ok=True)
    fsync_directory(target.parent)
    return BackupResult(source, target, target.stat().st_size, revision)


def _revision(db: sqlite3.Connection) -> str | None:
    try:
        row = db.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:
        return None
    return str(row[0]) if row else None
