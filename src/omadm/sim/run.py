"""The fleet runner: every device of a fleet file, in one asyncio process, for a given time.

(``--processes P`` runs P of these over slices of the fleet and merges their figures:
:mod:`omadm.sim.multi`.)

Shape, and why:

* **One scheduler, a fixed number of session workers.** Each device's next wake-up (its
  arrival, its next poll, a SCOMO phase ending, a report to send) is an entry in one heap;
  due sessions go into a queue that ``concurrency`` workers take from. A device at rest is
  therefore only its :class:`~omadm.sim.device.SimDevice` record, with no task, coroutine or
  connection of its own, which is what keeps 10,000 idle devices in a few megabytes; and
  ``concurrency`` bounds both the sessions in progress and the HTTP connections (shared
  ``httpx.AsyncClient`` pools of 4 connections each; see ``FleetRunner._clients`` for why
  not one pool).
* **Overload is honoured, not fought**, exactly as the agent's transport
  (``omadm.agent.transport``) does it: a 503 or 429 with ``Retry-After`` (seconds or an HTTP
  date, read by the agent's own ``retry_after_seconds``) is an appointment, kept after the
  given time plus the agent's jitter (``busy_wait``: up to a second and a tenth more, so that
  devices told the same second do not come back in the same millisecond), capped at
  ``http.max_retry_after``, ``http.busy_retries`` times per message; timeouts, connection
  errors and 408/429/500/502/503/504 without a Retry-After are failures, retried
  ``http.retries`` times with exponential backoff (with jitter). A retry re-sends the *same*
  bytes: a server answers a repeated MsgID from its cache.
* A device waiting out a Retry-After keeps its session slot (a real device is still in its
  session then) but not a connection. Its SCOMO phases never end during one of its sessions
  (the agent works between sessions, and the session holds the device's tree): they wait.
* **Everything is counted** (:class:`Stats`): sessions by outcome, messages, errors by kind,
  503s with their Retry-After, session times (p50/p90/p99), SCOMO results per code, and the
  process's RSS per device.

SCOMO work happens between sessions, as on a real device: each phase starts (its Status node
says "progressing"), lasts the profile's latency, and ends with a result drawn from the
profile's failure rates; the last phase queues the Generic Alert and asks for a session to
deliver it. Downloads:

* ``--downloads skip``: a download "succeeds" after its latency without fetching anything;
* ``--downloads real``: the device fetches the PkgURL (:mod:`omadm.sim.download`: Range
  resume, size, SHA-256, signed manifest) over one HTTP client shared by the fleet, at most
  ``--concurrency`` downloads at once; the download phase lasts as long as the fetch does
  (so a ``latency.download`` is refused), ends with the agent's result code when the fetch
  fails, and otherwise with a result drawn from the profile's rates (a device can still run
  out of memory after a good fetch). The install then deploys the manifest's components.

**Power cuts** (``faults.power_cut``: the chance per SCOMO operation with a download or
install phase). When an operation starts, the draw decides whether power will fail, in which
of those phases, and how far into it (a fraction of its latency, or of the package's bytes).
At that moment the device stops: a session in progress is abandoned (its next message is
never sent; what its commands already did to the tree stays, as the agent's tree is
durable), the phase's timers are void (:attr:`SimJob.epoch`), and the device is off for
``faults.power_off_seconds`` (polls and reports wait). Then it does what the agent's start-up
recovery does (``ScomoService.recover`` and the journal): every accepted job is still there
(the journal is written before the 202), the phase that was cut starts again: a download
resumes from the bytes it had (its ``.part`` survives; ``--downloads skip``: the rest of its
latency), an install is rolled back by the installer and redone from the start, and its
result is drawn again. The job still ends exactly once, with one Generic Alert; reports
already queued before the cut are journaled and sent after it. Each cut is counted.

**Package #0**: when devices of the fleet file have notification addresses (``omadm sim
register --notify PORT``), the process listens on that UDP port with one socket
(:mod:`omadm.sim.notify`); a trigger the addressed device accepts
(:meth:`SimDevice.accept_trigger`: digest, nonce, session-id) starts a server-initiated
session (Alert 1200, the trigger's session-id) as soon as a worker is free. A device whose
power is off, or that went silent, ignores it. Triggers received, acted on and ignored are
counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import os
import random
import resource
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from multiprocessing.connection import Connection
from typing import Any

import httpx
from rich.table import Table

from omadm import __version__
from omadm.agent.transport import busy_wait, retry_after_seconds
from omadm.mo.scomo_codes import parse_scomo_alert_data
from omadm.protocol.auth import HMAC_HEADER
from omadm.protocol.codec import Encoding
from omadm.protocol.codes import AlertCode
from omadm.protocol.errors import ProtocolError
from omadm.protocol.messages import Alert
from omadm.protocol.session import Outgoing

from .device import DeviceSession, DeviceTemplate, SimDevice
from .download import FetchError, PackageFetcher, Partial
from .fleet import Fleet
from .notify import NotifyError, Package0Listener, parse_notify_address
from .profile import Profile
from .scomo import Phase, SimJob, phases_of

__all__ = [
    "DOWNLOAD_MODES",
    "FleetRunner",
    "RunError",
    "RunOptions",
    "Stats",
    "Summary",
    "progress_line",
    "run_fleet",
    "summary_table",
]

DOWNLOAD_MODES = ("skip", "real")
log = logging.getLogger("omadm.sim")

#: HTTP statuses retried as failures when no Retry-After came with them (the agent's set).
_RETRYABLE = {408, 429, 500, 502, 503, 504}
#: Connections per HTTP client (see FleetRunner._clients).
_PER_CLIENT = 4
#: Session times kept for the percentiles.
_TIME_SAMPLE = 100_000
#: How long after a failed session a device with reports to deliver tries again, seconds.
_AFTER_FAILURE = 10.0


class RunError(Exception):
    """A run cannot start (bad options); the message says which and why."""


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What the command line adds to the fleet file and the profile."""

    duration: float
    concurrency: int = 100
    downloads: str = "skip"
    seed: int | None = None
    processes: int = 1  # see omadm.sim.multi

    def check(self, profile: Profile | None = None) -> None:
        """Refuse options that cannot run, and a profile these options cannot honour."""
        if profile is not None:
            if self.downloads == "real" and Phase.DOWNLOAD in profile.latency:
                raise RunError(
                    f"profile {profile.name}: latency.download does not apply with --downloads real "
                    "(a download lasts as long as the server takes to send the package); remove it"
                )
            if self.downloads != "real" and profile.packages.given:
                raise RunError(
                    f"profile {profile.name}: [packages] only applies with --downloads real "
                    "(with skip nothing is fetched, so nothing can be verified)"
                )
        if not self.duration > 0:
            raise RunError(f"--duration must be a positive number of seconds, not {self.duration}")
        if self.concurrency < 1:
            raise RunError(f"--concurrency must be at least 1, not {self.concurrency}")
        if self.processes < 1:
            raise RunError(f"--processes must be at least 1, not {self.processes}")
        if self.downloads not in DOWNLOAD_MODES:
            raise RunError(f"--downloads must be one of {', '.join(DOWNLOAD_MODES)}, not {self.downloads!r}")


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) of ``values`` by nearest rank, or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Stats:
    """Counters of a run, updated as it goes (the progress display reads them live)."""

    devices: int = 0
    silent: int = 0
    sessions_started: int = 0
    sessions: Counter[str] = field(default_factory=Counter)  # by outcome: ok, transport-error, ...
    messages: int = 0  # POSTs sent, retries included
    errors: Counter[str] = field(default_factory=Counter)  # by kind: "http 500", "timeout", ...
    retry_after_503: int = 0
    retry_after_capped: int = 0
    retry_after_waited: float = 0.0  # seconds spent waiting out Retry-After, all devices together
    retry_after_max: float = 0.0  # the longest Retry-After a server gave
    retries: int = 0
    session_seconds: list[float] = field(default_factory=list)  # a uniform sample, see add_session_time
    session_times_seen: int = 0
    jobs_accepted: int = 0
    scomo_results: Counter[int] = field(default_factory=Counter)
    alerts_delivered: int = 0
    alerts_duplicated: int = 0
    power_cuts: int = 0
    package0_received: int = 0
    package0_accepted: int = 0  # sessions started by a Package #0
    package0_ignored: int = 0  # not verified, repeated, unknown address, device off or silent
    downloads: int = 0  # packages fetched to the end (--downloads real)
    download_bytes: int = 0
    downloads_resumed: int = 0  # 206 answers to a Range request
    rss_baseline: int = 0
    rss_devices: int = 0  # RSS after the devices were created (idle fleet)
    rss_peak: int = 0
    rss_end: int = 0  # RSS when the run ended (every device has had its sessions)
    started: float = 0.0
    elapsed: float = 0.0
    cpu_seconds: float = 0.0  # this process's CPU time during the run (is the simulator the bottleneck?)
    first_session: float | None = None  # run clock (s) when the first session started
    last_session: float = 0.0  # run clock (s) when the last finished session ended

    @property
    def busy(self) -> float:
        """Seconds from the first session's start to the last one's end: the rate's denominator.

        A storm of 1,000 first contacts may be over in 30 s of a 60 s run; its rate is
        sessions per busy second, not per run second.
        """
        return (
            max(self.last_session - (self.first_session or 0.0), 1e-9)
            if self.first_session is not None
            else 0.0
        )

    @property
    def sessions_done(self) -> int:
        return sum(self.sessions.values())

    def add_session_time(self, seconds: float, rng: random.Random) -> None:
        """Keep a uniform sample of at most :data:`_TIME_SAMPLE` session times (reservoir sampling).

        A long run of a big fleet has millions of sessions; their percentiles from a 100,000
        sample are within a fraction of a percent, and the memory stays flat.
        """
        self.session_times_seen += 1
        if len(self.session_seconds) < _TIME_SAMPLE:
            self.session_seconds.append(seconds)
            return
        slot = rng.randrange(self.session_times_seen)
        if slot < _TIME_SAMPLE:
            self.session_seconds[slot] = seconds


@dataclass(frozen=True)
class Summary:
    """The end of a run, in figures (``to_json`` is what ``--json`` prints)."""

    stats: Stats
    duration: float
    concurrency: int
    profile: str

    def to_json(self) -> dict[str, Any]:
        s = self.stats
        busy = s.busy or 1e-9
        per_device = (s.rss_devices - s.rss_baseline) / s.devices if s.devices else 0.0
        return {
            "profile": self.profile,
            "devices": s.devices,
            "silent_devices": s.silent,
            "duration_s": round(s.elapsed, 3),
            "concurrency": self.concurrency,
            "sessions": {
                "started": s.sessions_started,
                "finished": s.sessions_done,
                "by_outcome": dict(sorted(s.sessions.items())),
                "busy_s": round(s.busy, 3),
                "per_second": round(s.sessions_done / busy, 2),
                "ok_per_second": round(s.sessions.get("ok", 0) / busy, 2),
            },
            "session_time_s": {
                "p50": _round(percentile(s.session_seconds, 0.5)),
                "p90": _round(percentile(s.session_seconds, 0.9)),
                "p99": _round(percentile(s.session_seconds, 0.99)),
                "max": _round(max(s.session_seconds) if s.session_seconds else None),
            },
            "messages": {"sent": s.messages, "per_second": round(s.messages / busy, 2)},
            "errors": dict(sorted(s.errors.items())),
            "http_503": {
                "answered": s.retry_after_503,
                "retry_after_max_s": round(s.retry_after_max, 3),
                "retry_after_capped": s.retry_after_capped,
                "waited_s": round(s.retry_after_waited, 3),
            },
            "retries": s.retries,
            "scomo": {
                "jobs_accepted": s.jobs_accepted,
                "results": {str(code): n for code, n in sorted(s.scomo_results.items())},
                "alerts_delivered": s.alerts_delivered,
                "alerts_duplicated": s.alerts_duplicated,
            },
            "faults": {"power_cuts": s.power_cuts},
            "package0": {
                "received": s.package0_received,
                "accepted": s.package0_accepted,
                "ignored": s.package0_ignored,
            },
            "downloads": {
                "completed": s.downloads,
                "bytes": s.download_bytes,
                "resumed": s.downloads_resumed,
            },
            "simulator_cpu": {
                "seconds": round(s.cpu_seconds, 3),
                "ms_per_session": round(1000 * s.cpu_seconds / s.sessions_done, 3)
                if s.sessions_done
                else None,
            },
            "memory": {
                "rss_bytes_before_devices": s.rss_baseline,
                "rss_bytes_idle_fleet": s.rss_devices,
                "rss_bytes_peak": s.rss_peak,
                "idle_bytes_per_device": round(per_device),
                "rss_bytes_end": s.rss_end,
                "end_bytes_per_device": round((s.rss_end - s.rss_baseline) / s.devices) if s.devices else 0,
            },
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def rss_bytes() -> int:
    """This process's resident set size now (Linux ``/proc``; else the peak from getrusage)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _Kind(IntEnum):
    POLL = 1  # arrival or poll: a session, and the next poll scheduled
    SESSION = 2  # reports to deliver: a session
    PHASE = 3  # a SCOMO phase ends
    CUT = 4  # the power fails during a SCOMO phase
    POWER_ON = 5  # the power comes back


class _PowerCut(Exception):
    """Raised from a download's progress callback: the power fails at this byte."""


class _SessionFailed(Exception):
    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome


class FleetRunner:
    """Runs one fleet with one profile; ``await run()`` returns the summary."""

    def __init__(
        self,
        fleet: Fleet,
        profile: Profile,
        options: RunOptions,
        *,
        client: httpx.AsyncClient | None = None,
        on_progress: Callable[[Stats], None] | None = None,
        template: DeviceTemplate | None = None,
        triggers: Connection | None = None,
    ) -> None:
        """``triggers``: Package #0 datagrams ``(device index, bytes)`` from a parent process that
        listens for the whole fleet (``omadm.sim.multi``); without it the runner listens itself."""
        options.check(profile)
        self.fleet = fleet
        self.profile = profile
        self.options = options
        self.stats = Stats()
        self.on_progress = on_progress
        seed = options.seed if options.seed is not None else profile.seed
        self.rng = random.Random(seed)
        self._client = client
        self._template = template or DeviceTemplate(fleet.server_id, fleet.dm_url)
        self.devices: list[SimDevice] = []
        self._heap: list[tuple[float, int, _Kind, int, SimJob | None, int]] = []
        self._seq = itertools.count()
        self._ready: asyncio.Queue[int] = asyncio.Queue()
        self._busy: bytearray = bytearray()  # 1: queued or in a session
        self._again: bytearray = bytearray()  # 1: wants another session when this one ends
        self._active: bytearray = bytearray()  # 1: in a session now (its tree is open)
        # Phases that ended during their device's session, with their result (None: draw one).
        self._deferred: dict[int, list[tuple[SimJob, int | None]]] = {}
        self._off: bytearray = bytearray()  # 1: the power is off
        self._boots: bytearray = bytearray()  # power cycles (mod 256): a session outlived by one is void
        # id(job) -> its fetch (--downloads real); a device may download for two jobs at once.
        self._downloads: dict[int, asyncio.Task[None]] = {}
        self._fetcher: PackageFetcher | None = None
        self._notifies: set[asyncio.Task[None]] = set()  # DD install-notify POSTs in flight
        self._triggers: dict[int, str] = {}  # device index -> session-id of the Package #0 to answer
        self._listener: Package0Listener | None = None
        self._triggers_in = triggers
        try:
            addresses = [
                (i, parse_notify_address(d.notify_address))
                for i, d in enumerate(fleet.devices)
                if d.notify_address
            ]
            if addresses and triggers is None:
                self._listener = Package0Listener(addresses, self._package0)
        except NotifyError as exc:
            raise RunError(str(exc)) from None
        self._download_slots = asyncio.Semaphore(options.concurrency)
        self._silent_at: dict[int, float] = {}
        self._wake = asyncio.Event()
        self._start = 0.0
        self._end = 0.0

    # -- set-up -----------------------------------------------------------------------------

    def _build_devices(self) -> None:
        self.stats.rss_baseline = rss_bytes()
        rng = self.rng
        wbxml = self.profile.wbxml
        self.devices = [
            SimDevice.from_fleet(self._template, d, Encoding.WBXML if rng.random() < wbxml else Encoding.XML)
            for d in self.fleet.devices
        ]
        n = len(self.devices)
        self._busy = bytearray(n)
        self._again = bytearray(n)
        self._active = bytearray(n)
        self._off = bytearray(n)
        self._boots = bytearray(n)
        self.stats.devices = n
        faults = self.profile.faults
        for index in range(n):
            if faults.silent and rng.random() < faults.silent:
                self._silent_at[index] = faults.silent_after
        self.stats.silent = len(self._silent_at)
        for index, offset in enumerate(self.profile.arrival.offsets(n, rng)):
            self._push(offset, _Kind.POLL, index)
        self.stats.rss_devices = rss_bytes()

    def _push(self, offset: float, kind: _Kind, index: int, job: SimJob | None = None) -> None:
        epoch = job.epoch if job is not None else 0
        heapq.heappush(self._heap, (self._start + offset, next(self._seq), kind, index, job, epoch))
        self._wake.set()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    # -- running ----------------------------------------------------------------------------

    def stop(self) -> None:
        """End the run now (sessions in progress are cancelled); ``run()`` then returns."""
        self._end = self._now()
        self._wake.set()

    async def run(self) -> Summary:
        loop = asyncio.get_running_loop()
        self._start = loop.time()
        self._end = self._start + self.options.duration
        self.stats.started = time.time()
        cpu_before = time.process_time()
        self._build_devices()
        if self._listener is not None:
            try:
                self._listener.start(loop)
            except NotifyError as exc:
                raise RunError(str(exc)) from None
        if self._triggers_in is not None:
            loop.add_reader(self._triggers_in.fileno(), self._forwarded_triggers)
        n_workers = min(self.options.concurrency, len(self.devices))
        clients = [self._client] if self._client is not None else self._clients(n_workers)
        own_download_client: httpx.AsyncClient | None = None
        if self.options.downloads == "real":
            http = self.profile.http
            if self._client is None:
                own_download_client = self._download_client()
            self._fetcher = PackageFetcher(
                self._client or own_download_client or clients[0],
                trusted_keys=self.profile.packages.trusted_keys,
                require_signature=self.profile.packages.require_signature,
                retries=http.retries,
                retry_backoff=http.retry_backoff,
            )
        workers = [
            asyncio.create_task(self._worker(clients[min(i // _PER_CLIENT, len(clients) - 1)]))
            for i in range(n_workers)
        ]
        progress = asyncio.create_task(self._progress()) if self.on_progress is not None else None
        try:
            await self._schedule()
        finally:
            downloads = list(self._downloads.values())
            for task in workers + downloads:
                task.cancel()
            if progress is not None:
                progress.cancel()
            await asyncio.gather(
                *workers, *downloads, *([progress] if progress else []), return_exceptions=True
            )
            if self._client is None:
                for client in clients:
                    await client.aclose()
            if own_download_client is not None:
                await own_download_client.aclose()
            if self._listener is not None:
                self._listener.close(loop)
                self.stats.package0_ignored += self._listener.unknown
            if self._triggers_in is not None:
                loop.remove_reader(self._triggers_in.fileno())
            if self._fetcher is not None:
                self.stats.download_bytes = self._fetcher.bytes_received
                self.stats.downloads_resumed = self._fetcher.resumed
        self.stats.elapsed = loop.time() - self._start
        self.stats.cpu_seconds = time.process_time() - cpu_before
        self.stats.rss_end = rss_bytes()
        self.stats.rss_peak = max(self.stats.rss_peak, self.stats.rss_end)
        if self.on_progress is not None:
            self.on_progress(self.stats)
        return Summary(self.stats, self.options.duration, self.options.concurrency, self.profile.name)

    def _clients(self, connections: int) -> list[httpx.AsyncClient]:
        """HTTP clients sharing ``connections`` connections, :data:`_PER_CLIENT` at most each.

        Why not one client for the whole fleet: httpcore's pool looks at *every* connection it
        holds, for every waiting request, each time a request starts or ends (``is_idle``,
        ``has_expired``, which asks the socket whether it is readable): its CPU cost grows with
        the square of the pool. Measured here against a real server (600 first contacts),
        simulator CPU per session with one pool: 9.6 ms at 20 sessions at once, 25 ms at 150;
        with pools of 4: 6.3 ms and 7.2 ms. The total stays ``--concurrency`` connections.
        """
        http = self.profile.http
        tls = httpx.create_ssl_context()  # one for all: loading the CA bundle costs ~25 ms each
        out = []
        for begin in range(0, max(connections, 1), _PER_CLIENT):
            size = min(_PER_CLIENT, connections - begin) if connections else 1
            out.append(
                httpx.AsyncClient(
                    verify=tls,
                    timeout=http.timeout,
                    limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
                    headers={"User-Agent": f"omadm-sim/{__version__}", "Cache-Control": "private"},
                    follow_redirects=False,
                )
            )
        return out

    def _download_client(self) -> httpx.AsyncClient:
        """The one client every device's package download goes through (redirects followed, as CDNs need).

        Downloads are few next to DM messages (one per job) and long, so one pool of
        ``--concurrency`` connections does (see :meth:`_clients` for why DM uses many small ones).
        """
        size = self.options.concurrency
        return httpx.AsyncClient(
            timeout=self.profile.http.timeout,
            limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            headers={"User-Agent": f"omadm-sim/{__version__}"},
            follow_redirects=True,
        )

    async def _progress(self) -> None:
        assert self.on_progress is not None
        while True:
            await asyncio.sleep(0.5)
            self.stats.elapsed = self._now() - self._start
            self.stats.rss_peak = max(self.stats.rss_peak, rss_bytes())
            self.on_progress(self.stats)

    async def _schedule(self) -> None:
        """Hand due work to the workers until the duration is over."""
        while True:
            now = self._now()
            if now >= self._end:
                return
            while self._heap and self._heap[0][0] <= now:
                _, _, kind, index, job, epoch = heapq.heappop(self._heap)
                if self._is_silent(index, now):
                    continue
                if kind is _Kind.POLL:
                    self._want_session(index)  # not while the power is off
                    wait = self.profile.poll.next_wait(self.rng)
                    if wait is not None:
                        self._push(now - self._start + wait, _Kind.POLL, index)
                elif kind is _Kind.SESSION:
                    self._want_session(index)
                elif kind is _Kind.POWER_ON:
                    self._power_on(index)
                elif job is None or epoch != job.epoch:
                    continue  # a timer of a phase a power cut interrupted
                elif kind is _Kind.CUT:
                    self._power_cut(index)
                else:
                    self._phase_over(index, job, None)
            deadline = min(self._heap[0][0] if self._heap else self._end, self._end)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, deadline - self._now()))

    def _is_silent(self, index: int, now: float) -> bool:
        at = self._silent_at.get(index)
        return at is not None and now - self._start >= at

    def _want_session(self, index: int) -> None:
        if self._off[index]:
            return  # the device looks at what it owes when the power comes back
        if self._busy[index]:
            self._again[index] = 1
            return
        self._busy[index] = 1
        self._ready.put_nowait(index)

    async def _worker(self, client: httpx.AsyncClient) -> None:
        while True:
            index = await self._ready.get()
            try:
                await self._session(client, index)
            except Exception as exc:  # a bug must not take a worker (a slot of concurrency) away
                log.exception("session of device %s failed unexpectedly", self.devices[index].device_id)
                self.stats.sessions["internal-error"] += 1
                self.stats.errors[f"internal error ({type(exc).__name__})"] += 1
            finally:
                self._busy[index] = 0
            if self._again[index]:
                self._again[index] = 0
                self._want_session(index)

    # -- one session ------------------------------------------------------------------------

    async def _session(self, client: httpx.AsyncClient, index: int) -> None:
        device = self.devices[index]
        stats = self.stats
        rng = self.rng
        started = self._now()
        stats.sessions_started += 1
        if stats.first_session is None:
            stats.first_session = started - self._start
        drop = self.profile.faults.drop
        boot = self._boots[index]
        trigger = self._triggers.pop(index, None)
        session = (
            device.session(AlertCode.SERVER_INITIATED_MGMT, session_id=trigger)
            if trigger
            else device.session()
        )
        self._active[index] = 1
        try:
            out: Outgoing | None = session.start()
            while out is not None:
                reply = await self._post(client, out)
                if self._boots[index] != boot:  # the power failed while the message was out
                    raise _SessionFailed("power-cut", "the device lost power during the session")
                if drop and rng.random() < drop:  # the server did its part; the answer is lost
                    raise _SessionFailed("dropped (fault)", "the connection was dropped (profile fault)")
                try:
                    out = session.receive(
                        reply.content, reply.headers.get("content-type"), reply.headers.get(HMAC_HEADER)
                    )
                except ProtocolError as exc:
                    stats.errors["protocol error"] += 1
                    abort = session.abort(str(exc))
                    if abort is not None:
                        with contextlib.suppress(_SessionFailed, httpx.HTTPError):
                            await self._post(client, abort)
                    raise _SessionFailed("protocol-error", str(exc)) from None
        except _SessionFailed as exc:
            session.fail(exc.outcome, str(exc))
        finally:
            result = session.close()
            self._active[index] = 0
            for waiting, code in self._deferred.pop(index, ()):
                self._end_phase_safely(index, waiting, code)
        outcome = result.outcome
        stats.sessions[outcome] += 1
        if outcome in ("auth-failed", "aborted", "dropped (fault)", "power-cut"):
            stats.errors[outcome] += 1  # transport and protocol errors were counted by kind already
        ended = self._now()
        stats.add_session_time(ended - started, rng)
        stats.last_session = ended - self._start
        stats.alerts_delivered += result.alerts_delivered
        stats.jobs_accepted += result.jobs_accepted
        self._after_session(index, device, result.ok, session)

    def _after_session(self, index: int, device: SimDevice, ok: bool, session: DeviceSession) -> None:
        now = self._now() - self._start
        if self._off[index]:
            return  # jobs and reports wait for the power (see _power_on)
        for job in device.jobs:
            if not job.started:
                self._start_job(index, device, job)
        duplicate = self.profile.faults.duplicate_alerts
        for alert in session.delivered:
            if duplicate and self.rng.random() < duplicate:
                device.scomo.report(alert)  # as a device that lost the server's answer would
                self.stats.alerts_duplicated += 1
        if device.alerts:
            # Reports wait: send them now (the agent's run loop), or after a pause if this failed.
            self._push(now + (0.0 if ok else _AFTER_FAILURE * (1 + self.rng.random())), _Kind.SESSION, index)

    # -- SCOMO work between sessions --------------------------------------------------------

    def _start_job(self, index: int, device: SimDevice, job: SimJob) -> None:
        """Begin a job's first phase; draw now whether (and where) the power will fail in it."""
        job.started = True
        rate = self.profile.faults.power_cut
        if rate and self.rng.random() < rate:
            phases = phases_of(job)
            exposed = [i for i, ph in enumerate(phases) if ph in (Phase.DOWNLOAD, Phase.INSTALL)]
            if exposed:
                job.cut_phase = self.rng.choice(exposed)
                job.cut_at = self.rng.random()
        self._begin_phase(index, device, job)

    def _begin_phase(self, index: int, device: SimDevice, job: SimJob) -> None:
        with device.tree() as tree:
            phase = device.scomo.begin(tree, job)
            if phase is Phase.DOWNLOAD and self._fetcher is not None:
                url = tree.system_value(f"{job.node}/PkgURL")
                job.url = url if isinstance(url, str) else ""
        now = self._now() - self._start
        cut = job.cut_phase == job.phase
        if phase is Phase.DOWNLOAD and self._fetcher is not None:
            self._downloads[id(job)] = asyncio.create_task(self._download(index, job, job.epoch, cut))
            return
        if job.remaining is not None:  # a simulated download a power cut interrupted: the rest of it
            latency, job.remaining = job.remaining, None
        else:
            latency = self.profile.latency_of(phase).sample(self.rng)
        if cut:
            if phase is Phase.DOWNLOAD:
                job.remaining = latency * (1 - job.cut_at)  # what a resumed download still needs
            self._push(now + latency * job.cut_at, _Kind.CUT, index, job)
        self._push(now + latency, _Kind.PHASE, index, job)

    async def _download(self, index: int, job: SimJob, epoch: int, cut: bool) -> None:
        """Fetch the job's package; the phase ends with the agent's code or a drawn one."""
        fetcher = self._fetcher
        assert fetcher is not None
        partial = job.partial if job.partial is not None else Partial()
        job.partial = partial

        def progress(done: int, total: int | None) -> None:
            if cut and job.cut_phase == job.phase and (total is None or done >= job.cut_at * total):
                raise _PowerCut

        result: int | None = None
        try:
            async with self._download_slots:
                job.package = await fetcher.fetch(job.url, partial, progress)
            self.stats.downloads += 1
        except FetchError as exc:
            log.info("device %s: download failed (%s): %s", self.devices[index].device_id, exc.result, exc)
            result = exc.result
        except _PowerCut:
            self._downloads.pop(id(job), None)
            self._power_cut(index)
            return
        finally:
            self.stats.download_bytes = fetcher.bytes_received
        if self._downloads.get(id(job)) is asyncio.current_task():
            del self._downloads[id(job)]
        if epoch == job.epoch:
            self._phase_over(index, job, result)

    def _phase_over(self, index: int, job: SimJob, result: int | None) -> None:
        if self._active[index]:
            # The agent does its work between sessions, never during one (and the session
            # holds this device's tree): the phase ends as soon as the session does.
            self._deferred.setdefault(index, []).append((job, result))
        else:
            self._end_phase_safely(index, job, result)

    def _end_phase_safely(self, index: int, job: SimJob, result: int | None = None) -> None:
        try:
            self._end_phase(index, job, result)
        except Exception as exc:  # a bug in one device's job must not end the run
            log.exception("SCOMO job of device %s failed unexpectedly", self.devices[index].device_id)
            self.stats.errors[f"internal error ({type(exc).__name__})"] += 1

    def _end_phase(self, index: int, job: SimJob, result: int | None) -> None:
        """End the job's phase with ``result`` (a real download's failure), else a drawn one."""
        device = self.devices[index]
        phase = phases_of(job)[job.phase]
        if result is None:
            result = self.profile.draw_result(phase, job.phase == 0, self.rng)
        descriptor = job.partial.descriptor if job.partial is not None else None
        with device.tree() as tree:
            over = device.scomo.end(tree, job, result)
        if not over:
            self._begin_phase(index, device, job)
            return
        alert = device.alerts[-1] if device.alerts else None
        code = _result_of(alert, result)
        self.stats.scomo_results[code] += 1
        if descriptor is not None and self._fetcher is not None:
            task = asyncio.get_running_loop().create_task(self._fetcher.notify(descriptor, code))
            self._notifies.add(task)  # a reference, or the loop may collect it half-way
            task.add_done_callback(self._notifies.discard)
        self._want_session(index)

    # -- Package #0 ---------------------------------------------------------------------------

    def _forwarded_triggers(self) -> None:
        conn = self._triggers_in
        assert conn is not None
        try:
            while conn.poll():
                index, data = conn.recv()
                self._package0(index, data)
        except (EOFError, OSError):  # the parent is gone: no more triggers
            asyncio.get_running_loop().remove_reader(conn.fileno())

    def _package0(self, index: int, data: bytes) -> None:
        """A datagram for device ``index``: a session if the device accepts it (as the agent's gate)."""
        stats = self.stats
        stats.package0_received += 1
        device = self.devices[index]
        if self._off[index] or self._is_silent(index, self._now()):
            stats.package0_ignored += 1
            return
        session_id = device.accept_trigger(data)
        if session_id is None:
            stats.package0_ignored += 1
            log.info("device %s ignored a Package #0 (not verified, or repeated)", device.device_id)
            return
        stats.package0_accepted += 1
        self._triggers[index] = session_id
        self._want_session(index)

    # -- power ------------------------------------------------------------------------------

    def _power_cut(self, index: int) -> None:
        """The device stops at once; what was not journaled is lost (see the module docstring)."""
        device = self.devices[index]
        self.stats.power_cuts += 1
        self._off[index] = 1
        self._boots[index] = (self._boots[index] + 1) % 256
        for job in device.jobs:
            job.epoch += 1  # its phase's timers are void
            job.cut_phase = -1  # one cut per operation
            task = self._downloads.pop(id(job), None)
            if task is not None and task is not asyncio.current_task():
                task.cancel()  # the .part (job.partial) stays
        self._deferred.pop(index, None)  # phases done in memory, never journaled: redone
        self._again[index] = 0
        self._push(self._now() - self._start + self.profile.faults.power_off_seconds, _Kind.POWER_ON, index)

    def _power_on(self, index: int) -> None:
        """Start-up after a power loss: the agent's ``recover()``, then the journal's jobs resume."""
        if self._active[index]:
            # The abandoned session has not noticed yet (its message is still out): a moment later.
            self._push(self._now() - self._start + 0.05, _Kind.POWER_ON, index)
            return
        self._off[index] = 0
        device = self.devices[index]
        for job in list(device.jobs):
            if job.started:
                self._begin_phase(index, device, job)  # the interrupted phase, from its journaled state
            else:
                self._start_job(index, device, job)
        if device.alerts:
            self._want_session(index)

    # -- HTTP -------------------------------------------------------------------------------

    async def _post(self, client: httpx.AsyncClient, out: Outgoing) -> httpx.Response:
        """POST one message as the agent's transport does; raises ``_SessionFailed`` when it gives up.

        A 503 or 429 with ``Retry-After`` is an appointment (``http.busy_retries`` of them per
        message); timeouts, connection errors and 408/429/500/502/503/504 without one are
        failures (``http.retries`` per message, exponential backoff from ``http.retry_backoff``).
        """
        stats = self.stats
        http = self.profile.http
        headers = {"Content-Type": out.content_type, "Accept": out.content_type, **out.headers}
        url = out.url or self.fleet.dm_url
        backoff = http.retry_backoff
        failures = busy = 0
        while True:
            stats.messages += 1
            retry_after: float | None = None
            try:
                response = await client.post(url, content=out.body, headers=headers)
            except httpx.TimeoutException:
                kind, retryable = "timeout", True
                reason = f"no answer from {url} within {http.timeout}s"
            except httpx.TransportError as exc:
                kind, retryable = "connection error", True
                reason = f"cannot reach {url}: {exc or type(exc).__name__}"
            else:
                code = response.status_code
                if code == 200:
                    return response
                kind, retryable = f"http {code}", code in _RETRYABLE
                reason = f"{url} answered HTTP {code}"
                if code == 503:
                    stats.retry_after_503 += 1
                if code in (429, 503):
                    retry_after = retry_after_seconds(response.headers.get("retry-after"))
            stats.errors[kind] += 1
            if retry_after is not None and busy < http.busy_retries:
                busy += 1
                stats.retry_after_max = max(stats.retry_after_max, retry_after)
                if retry_after > http.max_retry_after:
                    stats.retry_after_capped += 1
                    retry_after = http.max_retry_after
                wait = busy_wait(retry_after, self.rng)  # the agent's own jitter
                stats.retry_after_waited += wait
                stats.retries += 1
                await asyncio.sleep(wait)
                continue
            failures += 1
            if not retryable or failures > http.retries:
                raise _SessionFailed("transport-error", reason)
            stats.retries += 1
            await asyncio.sleep(backoff * (1 + 0.5 * self.rng.random()))
            backoff *= 2


def _result_of(alert: Alert | None, fallback: int) -> int:
    if alert is None or not alert.items:
        return fallback
    data = alert.items[0].data
    try:
        return parse_scomo_alert_data(data.decode() if isinstance(data, bytes) else data or "")[0]
    except ValueError:
        return fallback


async def run_fleet(
    fleet: Fleet,
    profile: Profile,
    options: RunOptions,
    *,
    on_progress: Callable[[Stats], None] | None = None,
) -> Summary:
    """Run ``fleet`` with ``profile`` for ``options.duration`` seconds; the summary at the end.

    Ctrl-C (SIGINT) ends the run early and still returns the summary of what happened.
    """
    runner = FleetRunner(fleet, profile, options, on_progress=on_progress)
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, runner.stop)
    except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
        return await runner.run()
    try:
        return await runner.run()
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def progress_line(stats: Stats, duration: float) -> str:
    """One line for the live display: time, sessions, rate, errors, SCOMO results."""
    busy = stats.busy or 1e-9
    errors = sum(stats.errors.values())
    p50 = percentile(stats.session_seconds[-2000:], 0.5)
    scomo = " ".join(f"{code}:{n}" for code, n in sorted(stats.scomo_results.items())) or "-"
    return (
        f"{stats.elapsed:6.1f}/{duration:.0f}s  sessions {stats.sessions.get('ok', 0)} ok "
        f"/ {stats.sessions_done} done / {stats.sessions_started - stats.sessions_done} running  "
        f"{stats.sessions_done / busy:7.1f}/s  p50 {p50 or 0:.3f}s  errors {errors}  "
        f"503 {stats.retry_after_503}  jobs {stats.jobs_accepted}  results {scomo}  "
        f"RSS {stats.rss_peak / 2**20:.0f} MiB"
    )


def summary_table(summary: Summary) -> Table:
    """The end-of-run table the CLI prints (the same figures as ``Summary.to_json``)."""
    data = summary.to_json()
    table = Table(
        title=f"omadm sim run: {data['devices']} devices, profile {data['profile']}", show_header=False
    )
    table.add_column("what", style="bold")
    table.add_column("value")
    sessions = data["sessions"]
    times = data["session_time_s"]
    memory = data["memory"]

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.1f} ms"

    h503 = data["http_503"]
    cpu = data["simulator_cpu"]
    rows = [
        ("duration", f"{data['duration_s']:.1f} s (concurrency {data['concurrency']})"),
        ("devices", f"{data['devices']} ({data['silent_devices']} silent)"),
        (
            "sessions",
            f"{sessions['finished']} finished of {sessions['started']} started: "
            + ", ".join(f"{k} {v}" for k, v in sessions["by_outcome"].items()),
        ),
        (
            "sessions/s",
            f"{sessions['per_second']} ({sessions['ok_per_second']} ok), over the {sessions['busy_s']:.1f} s "
            "from the first session's start to the last one's end",
        ),
        (
            "session time",
            f"p50 {seconds(times['p50'])}  p90 {seconds(times['p90'])}  p99 {seconds(times['p99'])}  "
            f"max {seconds(times['max'])}",
        ),
        ("messages", f"{data['messages']['sent']} ({data['messages']['per_second']}/s)"),
        ("errors", ", ".join(f"{k} {v}" for k, v in data["errors"].items()) or "none"),
        (
            "HTTP 503",
            f"{h503['answered']} (longest Retry-After {h503['retry_after_max_s']} s, "
            f"capped {h503['retry_after_capped']}, waited {h503['waited_s']} s in all); "
            f"retries {data['retries']}",
        ),
        (
            "simulator CPU",
            f"{cpu['seconds']} s ({cpu['ms_per_session']} ms per session)",
        ),
        ("SCOMO jobs accepted", str(data["scomo"]["jobs_accepted"])),
        (
            "SCOMO results",
            ", ".join(f"{code} x{n}" for code, n in data["scomo"]["results"].items()) or "none",
        ),
        (
            "downloads",
            f"{data['downloads']['completed']} completed, {data['downloads']['bytes']} bytes, "
            f"{data['downloads']['resumed']} resumed",
        ),
        ("power cuts", str(data["faults"]["power_cuts"])),
        (
            "Package #0",
            f"{data['package0']['received']} received, {data['package0']['accepted']} acted on, "
            f"{data['package0']['ignored']} ignored",
        ),
        (
            "alerts delivered",
            f"{data['scomo']['alerts_delivered']} "
            f"({data['scomo']['alerts_duplicated']} duplicated on purpose)",
        ),
        (
            "memory",
            f"RSS {memory['rss_bytes_idle_fleet'] / 2**20:.1f} MiB idle fleet, "
            f"{memory['rss_bytes_peak'] / 2**20:.1f} MiB peak; "
            f"{memory['idle_bytes_per_device']} B per device before its first session, "
            f"{memory['end_bytes_per_device']} B at the end (RSS growth / devices)",
        ),
    ]
    for what, value in rows:
        table.add_row(what, value)
    return table
