"""The SCOMO operation journal: every operation is written down before it changes anything.

An Exec on a SCOMO operation node becomes a ``Job`` row *before* the device answers 202,
and every step of the job (downloaded, verified, installed, activated) is recorded before
the next one starts. After a crash or power loss the agent reads the journal and either
resumes the job or rolls it back; the installers' own write-ahead state makes each step
idempotent.

The journal shares its SQLite database with the Generic Alert queue, so that finishing a
job and queueing its report is *one* transaction: a crash can never lose the report nor
send it twice.

It also remembers which publisher key signed each installed component (``scomo_publishers``,
the pins of :mod:`.trust_policy`): kept by the agent rather than by each installer, so that
pinning holds for plug-in installers too, and kept after a component is removed, so that
Remove then Install is no way around it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum

from omadm.agent.alerts import AlertQueue, alert_to_json
from omadm.protocol.messages import Alert

__all__ = ["Job", "JobState", "Journal", "Primitive"]


class Primitive(StrEnum):
    """The eight SCOMO primitives (the Remove on Delivered and on Deployed differ by node)."""

    DOWNLOAD = "Download"
    DOWNLOAD_INSTALL = "DownloadInstall"
    DOWNLOAD_INSTALL_INACTIVE = "DownloadInstallInactive"
    INSTALL = "Install"
    INSTALL_INACTIVE = "InstallInactive"
    REMOVE = "Remove"
    ACTIVATE = "Activate"
    DEACTIVATE = "Deactivate"


class JobState(StrEnum):
    QUEUED = "queued"  # accepted (202), nothing done yet
    DOWNLOADING = "downloading"  # the package may be partly on disk (.part)
    DOWNLOADED = "downloaded"  # complete and checked against size/hash; not yet verified
    DELIVERED = "delivered"  # verified and recorded under Inventory/Delivered (or Data stored as a file)
    INSTALLING = "installing"  # the installer's own journal says how far it got
    DONE = "done"  # finished; its report is in the alert queue (same transaction)


@dataclass
class Job:
    """One SCOMO operation the device accepted."""

    id: int
    server_id: str
    primitive: Primitive
    node: str  # the Download/<X>, Delivered/<X> or Deployed/<X> node the Exec was on
    exec_uri: str  # the Operations/<Primitive> node (the alert's Source)
    correlator: str | None
    state: JobState = JobState.QUEUED
    data: dict[str, object] = field(default_factory=dict)  # step results: package path, component ids...
    result: int | None = None
    attempts: int = 0


_SCHEMA = """
CREATE TABLE IF NOT EXISTS scomo_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    server_id TEXT NOT NULL,
    primitive TEXT NOT NULL,
    node TEXT NOT NULL,
    exec_uri TEXT NOT NULL,
    correlator TEXT,
    state TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}',
    result INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    created TEXT DEFAULT CURRENT_TIMESTAMP,
    updated TEXT DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE IF NOT EXISTS scomo_publishers (
    component TEXT PRIMARY KEY,           -- the component id
    fingerprint TEXT NOT NULL,            -- SHA-256 of the signing key (omadm.package.verify.key_fingerprint)
    pkg_id TEXT,                          -- the package that installed it when it was pinned
    pinned TEXT DEFAULT CURRENT_TIMESTAMP
);
"""


class Journal:
    """Jobs in the alert queue's database (see the module docstring for why)."""

    def __init__(self, alerts: AlertQueue) -> None:
        self._alerts = alerts
        self._db: sqlite3.Connection = alerts._db
        self._db.executescript(_SCHEMA)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def add(self, job: Job) -> Job:
        """Record an accepted operation; durable when this returns (before the 202 goes out)."""
        with self._transaction():
            cur = self._db.execute(
                "INSERT INTO scomo_jobs (server_id, primitive, node, exec_uri, correlator, state, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    job.server_id,
                    job.primitive.value,
                    job.node,
                    job.exec_uri,
                    job.correlator,
                    job.state.value,
                    json.dumps(job.data),
                ),
            )
        job.id = int(cur.lastrowid or 0)
        return job

    def find(self, exec_uri: str, correlator: str | None) -> Job | None:
        """An unfinished job for the same Exec (a retried session must not start it twice)."""
        for job in self.unfinished():
            if job.exec_uri == exec_uri and job.correlator == correlator:
                return job
        return None

    def find_finished(self, exec_uri: str, correlator: str | None) -> Job | None:
        """A finished job for the same Exec and Correlator (a server that never got our Status)."""
        if not correlator:
            return None  # without a Correlator two Execs of one node cannot be told apart
        row = self._db.execute(
            "SELECT id, server_id, primitive, node, exec_uri, correlator, state, data, result, attempts "
            "FROM scomo_jobs WHERE state = ? AND exec_uri = ? AND correlator = ? ORDER BY id DESC LIMIT 1",
            (JobState.DONE.value, exec_uri, correlator),
        ).fetchone()
        return None if row is None else self._job(row)

    def report_again(self, job: Job) -> bool:
        """Queue a finished job's report once more, unless it is still waiting to be delivered."""
        report = job.data.get("report")
        if not isinstance(report, list) or not report:
            return False
        for (payload,) in self._db.execute(
            "SELECT alert FROM alerts WHERE server_id = ?", (job.server_id,)
        ).fetchall():
            if payload in report:
                return False  # still queued: it goes out in this or the next session anyway
        with self._transaction():
            for payload in report:
                self._db.execute(
                    "INSERT INTO alerts (server_id, alert) VALUES (?, ?)", (job.server_id, payload)
                )
        return True

    def unfinished(self) -> list[Job]:
        rows = self._db.execute(
            "SELECT id, server_id, primitive, node, exec_uri, correlator, state, data, result, attempts "
            "FROM scomo_jobs WHERE state != ? ORDER BY id",
            (JobState.DONE.value,),
        ).fetchall()
        return [self._job(r) for r in rows]

    def get(self, job_id: int) -> Job | None:
        row = self._db.execute(
            "SELECT id, server_id, primitive, node, exec_uri, correlator, state, data, result, attempts "
            "FROM scomo_jobs WHERE id = ?",
            (job_id,),
        ).fetchone()
        return None if row is None else self._job(row)

    def busy(self, node: str) -> bool:
        """Whether an unfinished job works on ``node`` (a second one must wait or be refused)."""
        return any(j.node == node for j in self.unfinished())

    def advance(self, job: Job, state: JobState, **data: object) -> None:
        """Record that ``job`` reached ``state`` (with what the step produced)."""
        job.state = state
        job.data.update(data)
        with self._transaction():
            self._db.execute(
                "UPDATE scomo_jobs SET state = ?, data = ?, attempts = ?, updated = CURRENT_TIMESTAMP "
                "WHERE id = ?",
                (state.value, json.dumps(job.data), job.attempts, job.id),
            )

    def finish(self, job: Job, result: int, alerts: list[Alert]) -> None:
        """Mark ``job`` done and queue its report(s), atomically."""
        job.state, job.result = JobState.DONE, result
        job.data["report"] = [alert_to_json(a) for a in alerts]  # to send again if the server asks again
        with self._transaction():
            self._db.execute(
                "UPDATE scomo_jobs SET state = ?, result = ?, data = ?, updated = CURRENT_TIMESTAMP "
                "WHERE id = ?",
                (JobState.DONE.value, result, json.dumps(job.data), job.id),
            )
            for alert in alerts:
                self._db.execute(
                    "INSERT INTO alerts (server_id, alert) VALUES (?, ?)",
                    (job.server_id, alert_to_json(alert)),
                )

    # -- publisher pins ------------------------------------------------------------------

    def publishers(self) -> dict[str, str]:
        """The key fingerprint each pinned component id was signed with."""
        rows = self._db.execute("SELECT component, fingerprint FROM scomo_publishers").fetchall()
        return {str(component): str(fingerprint) for component, fingerprint in rows}

    def pin_publishers(self, fingerprint: str, components: list[str], pkg_id: str | None) -> None:
        """Record that ``fingerprint``'s key signed these installed components (one transaction)."""
        with self._transaction():
            for component in components:
                self._db.execute(
                    "INSERT OR REPLACE INTO scomo_publishers (component, fingerprint, pkg_id) "
                    "VALUES (?, ?, ?)",
                    (component, fingerprint, pkg_id),
                )

    @staticmethod
    def _job(row: tuple[object, ...]) -> Job:
        jid, server_id, primitive, node, exec_uri, correlator, state, data, result, attempts = row
        return Job(
            id=int(jid),  # type: ignore[call-overload]
            server_id=str(server_id),
            primitive=Primitive(str(primitive)),
            node=str(node),
            exec_uri=str(exec_uri),
            correlator=None if correlator is None else str(correlator),
            state=JobState(str(state)),
            data=json.loads(str(data)),
            result=None if result is None else int(result),  # type: ignore[call-overload]
            attempts=int(attempts),  # type: ignore[call-overload]
        )
