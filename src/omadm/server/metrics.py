"""The server's Prometheus metrics: what ``GET /metrics`` exposes (issue 17, point 2).

Two kinds, kept apart because of what they cost on the DM hot path:

* **Counted as things happen**: DM messages by outcome, sessions started and finished,
  authentication failures, messages shed with 503, the message latency histogram, the
  group commit's batch sizes and the database connections in use. Each is a counter or
  histogram update (a lock and an addition, about a microsecond), done once per message
  after it is answered, never per command inside it.
* **Read from the database when scraped**: jobs by state, campaigns by state and the
  progress of the running and paused campaigns (their devices by state). They would cost a
  query per message if kept up to date as they move; instead :class:`FleetCollector` runs
  two small ``GROUP BY`` queries at scrape time and keeps the answer for ``ttl`` seconds,
  so several Prometheus servers (or a dashboard refreshing) cost one query per interval.

**Several workers** (``--workers N``, separate processes behind one port): a scrape reaches
one worker at random, so each worker's own counters would be a random sample. The server
therefore runs prometheus-client's multi-process mode: ``omadm server`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before it forks the workers, each worker
writes its counters to memory-mapped files there, and the worker that answers a scrape adds
them all up (:func:`exposition`). Gauges of connections in use are summed over the live
workers (``livesum``); a worker that stops removes its files (:func:`worker_stopped`). The
database-derived gauges are the same whichever worker answers. With one worker, the
metrics live in the process (plus prometheus-client's process metrics: CPU, memory, open
files), and no directory is used.

The names are listed in the README ("Health, metrics and logs"); all begin with ``omadm_``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from .store.models import Campaign, CampaignDevice, CampaignState, Job

__all__ = [
    "AUTH_FAILURES",
    "CONTENT_TYPE",
    "DB_POOL_IN_USE",
    "DB_POOL_SIZE",
    "DM_LATENCY",
    "DM_MESSAGES",
    "DM_SESSIONS_FINISHED",
    "DM_SESSIONS_STARTED",
    "DM_SHED",
    "GROUP_COMMIT_BATCH",
    "MULTIPROC_ENV",
    "FleetCollector",
    "exposition",
    "multiprocess_mode",
    "watch_pool",
    "worker_stopped",
]

log = logging.getLogger("omadm.server.metrics")

#: prometheus-client's own variable: set (by ``omadm server`` with several workers, or by the
#: operator) before the workers start, it turns on the multi-process mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

#: The metrics counted as things happen. Their own registry, not prometheus-client's global
#: one: importing omadm into another program adds nothing to that program's /metrics.
REGISTRY = CollectorRegistry(auto_describe=True)

DM_MESSAGES = Counter(
    "omadm_dm_messages",
    "DM messages answered, by outcome: ok (a DM reply), refused (4xx: unreadable, unknown or "
    "pending device, broken session rules), busy (503, shed), error (500).",
    ["outcome"],
    registry=REGISTRY,
)
DM_SESSIONS_STARTED = Counter(
    "omadm_dm_sessions_started",
    "DM sessions the server kept a session for (the device authenticated, or needs not).",
    registry=REGISTRY,
)
DM_SESSIONS_FINISHED = Counter(
    "omadm_dm_sessions_finished",
    "DM sessions that ended, by outcome: completed (the device's last message), aborted "
    "(either side sent Alert 1223, or the session broke) or unauthenticated (ended after "
    "failed credentials).",
    ["outcome"],
    registry=REGISTRY,
)
AUTH_FAILURES = Counter(
    "omadm_auth_failures",
    "Authentication failures: interface dm (wrong DM credentials after a challenge) or api "
    "(a REST request with a missing, unknown, expired or rotated-out token).",
    ["interface", "reason"],
    registry=REGISTRY,
)
DM_SHED = Counter(
    "omadm_dm_shed",
    "DM messages answered 503 with Retry-After (admission.py): reason in_flight (over the "
    "worker's in-flight limit) or database (no pool connection in time).",
    ["reason"],
    registry=REGISTRY,
)
DM_LATENCY = Histogram(
    "omadm_dm_message_seconds",
    "Time to answer one DM message, from its arrival to its reply, by path: fast (the group "
    "commit writer), general (one ORM transaction) or none (refused before either).",
    ["path"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
GROUP_COMMIT_BATCH = Histogram(
    "omadm_group_commit_batch_size",
    "DM messages written per group-commit transaction of the DM writer (store/writer.py).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    registry=REGISTRY,
)
DB_POOL_IN_USE = Gauge(
    "omadm_db_pool_connections_in_use",
    "Database connections checked out of the worker pools (summed over live workers).",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
DB_POOL_SIZE = Gauge(
    "omadm_db_pool_size",
    "Connections the worker pools keep (summed over live workers; each may open up to max_overflow more).",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)

# Children bound once: a labelled metric looks its child up by the label values on every
# call otherwise (a dict lookup under a lock), on the hot path.
MESSAGE_OUTCOMES = {outcome: DM_MESSAGES.labels(outcome) for outcome in ("ok", "refused", "busy", "error")}
LATENCY_PATHS = {path: DM_LATENCY.labels(path) for path in ("fast", "general", "none")}


def multiprocess_mode() -> bool:
    """True when the workers share their metrics through ``PROMETHEUS_MULTIPROC_DIR``."""
    return bool(os.environ.get(MULTIPROC_ENV))


if not multiprocess_mode():
    # CPU, memory, open files of this process; not in multi-process mode, where a scrape
    # would only show the worker that answered it.
    ProcessCollector(registry=REGISTRY)


def watch_pool(engine: AsyncEngine) -> int:
    """Count the engine's connections in use with pool events (check-out and check-in).

    Returns the connections it added to ``omadm_db_pool_size``: the app takes them off again
    when it stops (tests build many apps in one process).
    """
    from sqlalchemy import event  # noqa: PLC0415 - only here

    pool = engine.sync_engine.pool
    size = getattr(pool, "size", None)
    # SQLite's single shared connection (StaticPool) and the like have no size: one.
    added = int(size()) if callable(size) else 1
    DB_POOL_SIZE.inc(added)

    @event.listens_for(pool, "checkout")
    def _out(*_: Any) -> None:
        DB_POOL_IN_USE.inc()

    @event.listens_for(pool, "checkin")
    def _in(*_: Any) -> None:
        DB_POOL_IN_USE.dec()

    return added


def worker_stopped() -> None:
    """A worker stops: its ``livesum`` gauges leave the sum (multi-process mode only)."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class FleetCollector(Collector):
    """Jobs by state and campaign progress, read from the database at scrape time.

    ``refresh`` (awaited by the ``/metrics`` route before it renders) runs the queries at
    most once per ``ttl`` seconds; ``collect`` (called by prometheus-client while rendering,
    synchronously) yields what the last refresh read. A refresh that fails leaves
    ``omadm_database_up`` at 0 and no fleet gauges: stale numbers would look current.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, ttl: float = 10.0) -> None:
        self.sessions = sessions
        self.ttl = ttl
        self.queries = 0  # refreshes that reached the database (tests read it)
        self._read_at = -float("inf")
        self._lock = asyncio.Lock()
        self._up = 0
        self._jobs: list[tuple[str, int]] = []
        self._campaigns: list[tuple[str, int]] = []
        self._progress: list[tuple[str, str, str, int]] = []

    async def refresh(self) -> None:
        async with self._lock:  # concurrent scrapes: one query, the others wait for it
            if time.monotonic() - self._read_at < self.ttl:
                return
            try:
                await self._read()
            except Exception as exc:
                log.warning("metrics: cannot read jobs and campaigns from the database: %s", exc)
                self._up = 0
                self._jobs, self._campaigns, self._progress = [], [], []
            else:
                self._up = 1
            self._read_at = time.monotonic()

    async def _read(self) -> None:
        async with self.sessions() as db, db.begin():
            jobs = (await db.execute(select(Job.state, func.count()).group_by(Job.state))).all()
            campaigns = (
                await db.execute(select(Campaign.state, func.count()).group_by(Campaign.state))
            ).all()
            active = (CampaignState.RUNNING.value, CampaignState.PAUSED.value)
            progress = (
                await db.execute(
                    select(Campaign.id, Campaign.name, CampaignDevice.state, func.count())
                    .join(CampaignDevice, CampaignDevice.campaign_id == Campaign.id)
                    .where(Campaign.state.in_(active))
                    .group_by(Campaign.id, Campaign.name, CampaignDevice.state)
                )
            ).all()
        self.queries += 1
        self._jobs = [(str(state), int(n)) for state, n in jobs]
        self._campaigns = [(str(state), int(n)) for state, n in campaigns]
        self._progress = [(str(cid), str(name), str(state), int(n)) for cid, name, state, n in progress]

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "omadm_database_up", "1 when the last scrape-time read of the database worked, else 0."
        )
        up.add_metric([], self._up)
        yield up
        if not self._up:
            return
        yield _family("omadm_jobs", "Jobs by state (read at scrape time).", ["state"], self._jobs)
        yield _family(
            "omadm_campaigns", "Campaigns by state (read at scrape time).", ["state"], self._campaigns
        )
        progress = GaugeMetricFamily(
            "omadm_campaign_devices",
            "Devices of each running or paused campaign by their state in it: pending, running, "
            "succeeded, failed, cancelled (read at scrape time).",
            labels=["campaign", "name", "state"],
        )
        for campaign_id, name, state, count in self._progress:
            progress.add_metric([campaign_id, name, state], count)
        yield progress

    def describe(self) -> Iterable[Metric]:
        return []  # built at scrape time: nothing to check for name clashes in advance


def _family(name: str, documentation: str, labels: list[str], rows: list[tuple[str, int]]) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for label, value in rows:
        family.add_metric([label], value)
    return family


async def exposition(fleet: FleetCollector) -> bytes:
    """The text a scrape gets: this process's metrics (or every worker's) and the fleet's."""
    await fleet.refresh()
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_mode():
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Forward(REGISTRY))
    registry.register(fleet)
    return generate_latest(registry)


class _Forward(Collector):
    """Another registry's metrics, collected into this one (the scrape's own registry)."""

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        yield from self.source.collect()
