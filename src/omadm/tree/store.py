"""The DM tree on disk: one SQLite database, written so that a kill at any instant is harmless.

Why SQLite: a device may lose power at any moment. With WAL journaling and
``synchronous=FULL`` every committed transaction is on stable storage, and every
uncommitted one is rolled back when the database is next opened, so the tree is always
the state after some whole number of DM commands. The tree engine wraps each command in a
transaction (an Atomic in one outer savepoint), never a partial one.

The store knows nothing of DM semantics: it keeps rows (``NodeRecord``) keyed by the
canonical path (``.`` for the root, ``./A/B`` below it) and hands out transactions.

The database holds secrets (the DMAcc credentials, in plaintext because digest
authentication needs them), so its file is created 0600 before SQLite opens it, and its
side files follow (see :mod:`omadm.tree.files` for why this way).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omadm.tree.files import prepare_private_database

__all__ = ["SCHEMA_VERSION", "NodeRecord", "TreeStore", "TreeStoreError"]

#: Bumped whenever the tables change; ``TreeStore`` refuses databases it does not know.
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    path      TEXT PRIMARY KEY,          -- canonical: '.' or './A/B'
    parent    TEXT,                      -- canonical path of the parent; NULL for the root
    name      TEXT NOT NULL,
    format    TEXT NOT NULL,             -- 'node' for interior nodes
    type      TEXT,                      -- MIME type, or the MO identifier on an MO root
    value     BLOB,                      -- leaf value: UTF-8 text, or raw bytes for 'bin'
    acl       TEXT NOT NULL DEFAULT '',  -- empty: inherit from the nearest ancestor
    title     TEXT,
    tstamp    TEXT,                      -- UTC, ISO 8601 basic: 20261125T183817Z
    verno     INTEGER NOT NULL DEFAULT 0,
    permanent INTEGER NOT NULL DEFAULT 0 -- created by the device, not deletable by servers
);
CREATE INDEX IF NOT EXISTS nodes_parent ON nodes(parent);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class TreeStoreError(Exception):
    """The database cannot be used (another schema version, corruption, unwritable disk)."""


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One node as stored. ``value`` is None for interior nodes and for null leaves."""

    path: str
    parent: str | None
    name: str
    format: str
    type: str | None = None
    value: bytes | None = None
    acl: str = ""
    title: str | None = None
    tstamp: str | None = None
    verno: int = 0
    permanent: bool = False

    @property
    def is_interior(self) -> bool:
        return self.format == "node"

    def with_(self, **changes: object) -> NodeRecord:
        return replace(self, **changes)  # type: ignore[arg-type]


_COLUMNS = "path, parent, name, format, type, value, acl, title, tstamp, verno, permanent"


def _record(row: tuple[Any, ...]) -> NodeRecord:
    path, parent, name, fmt, typ, value, acl, title, tstamp, verno, permanent = row
    return NodeRecord(
        path=str(path),
        parent=None if parent is None else str(parent),
        name=str(name),
        format=str(fmt),
        type=None if typ is None else str(typ),
        value=None if value is None else bytes(value),
        acl=str(acl),
        title=None if title is None else str(title),
        tstamp=None if tstamp is None else str(tstamp),
        verno=int(verno),
        permanent=bool(permanent),
    )


class TreeStore:
    """Rows of the DM tree in SQLite (WAL, ``synchronous=FULL``).

    Use ``":memory:"`` for a throw-away tree. Not shareable between threads: one agent
    process owns its tree.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        try:
            prepare_private_database(self.path)  # 0600 from the start: it holds the credentials
        except OSError as exc:
            raise TreeStoreError(f"cannot create the tree database {self.path}: {exc}") from None
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            prepare_private_database(self.path)  # side files an older omadm left readable
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            self._check_version()
        except sqlite3.DatabaseError as exc:
            raise TreeStoreError(f"cannot open the tree database {self.path}: {exc}") from None
        self._depth = 0
        self._lock = threading.RLock()

    def _check_version(self) -> None:
        row = self._db.execute("SELECT value FROM settings WHERE key = 'schema_version'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO settings VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif row[0] != str(SCHEMA_VERSION):
            raise TreeStoreError(
                f"the tree database {self.path} has schema version {row[0]}; "
                f"this omadm knows version {SCHEMA_VERSION}"
            )

    def close(self) -> None:
        self._db.close()

    # -- transactions ------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside happen together or not at all; nesting makes savepoints."""
        with self._lock:
            name = f"sp{self._depth}"
            self._db.execute("BEGIN IMMEDIATE" if self._depth == 0 else f"SAVEPOINT {name}")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    self._db.execute("ROLLBACK")
                else:
                    self._db.execute(f"ROLLBACK TO {name}")
                    self._db.execute(f"RELEASE {name}")
                raise
            self._depth -= 1
            self._db.execute("COMMIT" if self._depth == 0 else f"RELEASE {name}")

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    # -- reads -------------------------------------------------------------------------

    def get(self, path: str) -> NodeRecord | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM nodes WHERE path = ?", (path,)).fetchone()
        return None if row is None else _record(row)

    def children(self, path: str) -> list[NodeRecord]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM nodes WHERE parent = ? ORDER BY rowid", (path,))
        return [_record(r) for r in rows]

    def subtree(self, path: str) -> list[NodeRecord]:
        """The node and all below it, parents before children, siblings in creation order."""
        out: list[NodeRecord] = []
        top = self.get(path)
        if top is None:
            return out
        stack = [top]
        while stack:
            node = stack.pop()
            out.append(node)
            if node.is_interior:
                stack.extend(reversed(self.children(node.path)))
        return out

    def count(self) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM nodes").fetchone()
        return int(row[0])

    def all_paths(self) -> list[str]:
        return [str(r[0]) for r in self._db.execute("SELECT path FROM nodes ORDER BY path")]

    # -- writes (call inside ``transaction()``) -------------------------------------------

    def put(self, record: NodeRecord) -> None:
        self._require_transaction()
        self._db.execute(
            f"INSERT OR REPLACE INTO nodes ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.path,
                record.parent,
                record.name,
                record.format,
                record.type,
                record.value,
                record.acl,
                record.title,
                record.tstamp,
                record.verno,
                int(record.permanent),
            ),
        )

    def delete_subtree(self, path: str) -> int:
        """Remove a node and everything below it; returns how many rows went."""
        self._require_transaction()
        prefix = path + "/"
        cur = self._db.execute(
            "DELETE FROM nodes WHERE path = ? OR substr(path, 1, ?) = ?", (path, len(prefix), prefix)
        )
        return cur.rowcount

    def rename_subtree(self, old: str, new: str, new_name: str) -> None:
        """Move a node and its sub-tree to ``new`` (the Name property was replaced)."""
        self._require_transaction()
        for node in self.subtree(old):
            moved_path = new + node.path[len(old) :]
            moved_parent = node.parent if node.path == old else new + (node.parent or "")[len(old) :]
            name = new_name if node.path == old else node.name
            self._db.execute("DELETE FROM nodes WHERE path = ?", (node.path,))
            self.put(node.with_(path=moved_path, parent=moved_parent, name=name))

    def get_setting(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_setting(self, key: str, value: str) -> None:
        with self.transaction():
            self._db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, value))

    def integrity_problems(self) -> list[str]:
        """What is wrong with the stored tree, if anything (used after crashes and in tests)."""
        problems: list[str] = []
        check = self._db.execute("PRAGMA integrity_check").fetchone()
        if check is None or check[0] != "ok":
            problems.append(f"sqlite integrity_check: {check}")
        orphans = self._db.execute(
            "SELECT path FROM nodes n WHERE parent IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM nodes p WHERE p.path = n.parent AND p.format = 'node')"
        ).fetchall()
        problems += [f"node {row[0]} has no interior parent" for row in orphans]
        if self.get(".") is None:
            problems.append("the root node is missing")
        return problems

    def _require_transaction(self) -> None:
        if self._depth == 0:
            raise TreeStoreError("tree writes must happen inside TreeStore.transaction()")
