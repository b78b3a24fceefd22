"""A durable queue of Generic Alerts: written before anything else, deleted only when acknowledged.

A device reports the outcome of asynchronous work (a SCOMO install, say) in a Generic Alert
1226. The report must survive power loss and network loss: it is stored here (SQLite,
WAL, ``synchronous=FULL``) the moment it exists, sent in every session with its server
until the server answers it with a 2xx Status, and only then removed. A server that
answers 4xx/5xx also ends the alert's life, with the answer logged: sending the same bytes
again would not change its mind.

The database also holds the SCOMO journal (package URLs, reports): its file is created 0600
before SQLite opens it, and its side files follow (:mod:`omadm.tree.files`).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from omadm.protocol.messages import Alert, Item, Meta, Source, Target
from omadm.tree.files import prepare_private_database

__all__ = ["AlertQueue", "QueuedAlert", "alert_from_json", "alert_to_json"]


@dataclass(frozen=True, slots=True)
class QueuedAlert:
    id: int
    server_id: str
    alert: Alert
    attempts: int


def alert_to_json(alert: Alert) -> str:
    items: list[dict[str, object]] = []
    for item in alert.items:
        data = item.data
        items.append(
            {
                "source": item.source.loc_uri if item.source else None,
                "target": item.target.loc_uri if item.target else None,
                "type": item.meta.type if item.meta else None,
                "format": item.meta.format if item.meta else None,
                "mark": item.meta.mark if item.meta else None,
                "data": data.hex() if isinstance(data, bytes) else data,
                "binary": isinstance(data, bytes),
            }
        )
        if item.meta is not None and item.meta.emi:  # only then: older reports stay byte-identical
            items[-1]["emi"] = list(item.meta.emi)
    return json.dumps({"data": alert.data, "correlator": alert.correlator, "items": items}, sort_keys=True)


def alert_from_json(text: str) -> Alert:
    raw = json.loads(text)
    items = []
    for it in raw["items"]:
        meta = None
        emi = tuple(str(e) for e in it.get("emi") or ())  # a failure's reason (omadm.mo.scomo_reason)
        if it["type"] or it["format"] or it["mark"] or emi:
            meta = Meta(format=it["format"], type=it["type"], mark=it["mark"], emi=emi)
        data = bytes.fromhex(it["data"]) if it["binary"] and it["data"] is not None else it["data"]
        items.append(
            Item(
                source=Source(it["source"]) if it["source"] else None,
                target=Target(it["target"]) if it["target"] else None,
                meta=meta,
                data=data,
            )
        )
    return Alert("0", data=raw["data"], correlator=raw["correlator"], items=tuple(items))


class AlertQueue:
    """Pending alerts per server, in the order they were raised."""

    def __init__(self, path: str | Path) -> None:
        prepare_private_database(path)  # 0600 before SQLite creates it with the umask's 0644
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        prepare_private_database(path)  # side files an older omadm left readable
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS alerts (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "server_id TEXT NOT NULL, alert TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, "
            "created TEXT DEFAULT CURRENT_TIMESTAMP)"
        )

    def close(self) -> None:
        self._db.close()

    def push(self, server_id: str, alert: Alert) -> int:
        """Store an alert for ``server_id``; durable when this returns."""
        cur = self._db.execute(
            "INSERT INTO alerts (server_id, alert) VALUES (?, ?)", (server_id, alert_to_json(alert))
        )
        return int(cur.lastrowid or 0)

    def pending(self, server_id: str | None = None) -> list[QueuedAlert]:
        sql = "SELECT id, server_id, alert, attempts FROM alerts"
        args: tuple[str, ...] = ()
        if server_id is not None:
            sql += " WHERE server_id = ?"
            args = (server_id,)
        rows = self._db.execute(sql + " ORDER BY id", args).fetchall()
        return [QueuedAlert(int(r[0]), str(r[1]), alert_from_json(str(r[2])), int(r[3])) for r in rows]

    def servers_with_pending(self) -> list[str]:
        return [
            str(r[0]) for r in self._db.execute("SELECT DISTINCT server_id FROM alerts ORDER BY server_id")
        ]

    def attempted(self, alert_id: int) -> None:
        self._db.execute("UPDATE alerts SET attempts = attempts + 1 WHERE id = ?", (alert_id,))

    def done(self, alert_id: int) -> None:
        """The server answered the alert: forget it."""
        self._db.execute("DELETE FROM alerts WHERE id = ?", (alert_id,))
