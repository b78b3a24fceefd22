"""The pieces of the SCOMO power-loss test (test_scomo_crash.py).

* ``Variant`` / ``build_variants``: the packages the campaign installs (version 1.0.0, a
  2.0.0 whose install hook fails, a good 2.0.0), each with a few MB of payload and hooks
  that take a little time, so kills land inside every step.
* ``SlowPackageServer``: the packages over HTTP at a set rate, with Range/If-Range, so a
  kill leaves a partial download that the agent must resume.
* ``Campaign``: the DM server's script. One operation at a time on one device, the next
  only once the Generic Alert of the last one arrived; an Exec whose 202 never came back
  (the agent died in the session) is sent again. Every alert received is kept.
* ``AgentForkServer`` / ``AgentRun``: the real agent (``omadm agent run``), each run a
  process of its own, and a kill that takes its hook processes down with it (hooks run in
  sessions of their own).
* ``inspect``: what must hold after a kill, checked on a copy of the data directory
  after the agent's own start-up recovery has run on it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from omadm.agent.alerts import alert_from_json, alert_to_json
from omadm.agent.config import AgentConfig
from omadm.agent.runner import Agent
from omadm.mo.scomo_codes import parse_scomo_alert_data
from omadm.package.build import build_package
from omadm.protocol.codes import ScomoResult
from omadm.protocol.messages import Add, Alert, Command, Exec, Item, Meta, Target
from omadm.protocol.session import AlertReceived, Event, ServerSession, StatusReceived
from omadm.tree.store import TreeStore

__all__ = [
    "ABSENT",
    "AgentForkServer",
    "AgentRun",
    "Campaign",
    "Inspection",
    "Model",
    "SlowPackageServer",
    "Step",
    "Variant",
    "build_variants",
    "check_report",
    "inspect",
    "read_journal",
    "same_alerts",
]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
COMPONENT = "com.example.hello"
DEPLOYED = f"./SCOMO/Inventory/Deployed/{COMPONENT}"
ZYGOTE = Path(__file__).with_name("scomo_crash_agent.py")
#: Set in the test process only: the offline recoveries run the hooks without their pauses.
FAST_HOOKS = "OMADM_CRASH_FAST_HOOKS"

# -- packages ---------------------------------------------------------------------------------

_HOOK = """#!/bin/sh
set -eu
{check}printf '%s %s\\n' "$OMADM_ACTION" "$OMADM_COMPONENT_VERSION" >> "$OMADM_COMPONENT_STATE_DIR/hooks.log"
[ -n "${{{fast}:-}}" ] || sleep {pause}
{tail}"""


@dataclass(frozen=True)
class Variant:
    """One package the campaign installs: its file, and the files its component must have."""

    name: str
    version: str
    package: Path
    files: dict[str, str]  # path inside the component -> SHA-256: what a complete install holds

    @property
    def greeting(self) -> str:
        return f"(version {self.version})"


def build_variants(workdir: Path, key: Ed25519PrivateKey, payload_bytes: int) -> dict[str, Variant]:
    """v1 (1.0.0), v2bad (2.0.0, its install hook exits 3) and v2 (2.0.0), signed with ``key``."""
    variants = {}
    specs = (("v1", "hello-package", "1.0.0", False), ("v2bad", "hello-package-2", "2.0.0", True))
    for name, example, version, broken in (*specs, ("v2", "hello-package-2", "2.0.0", False)):
        source = workdir / "src" / name
        shutil.copytree(EXAMPLES / example, source)
        component = source / COMPONENT
        for action in ("install", "activate", "deactivate", "remove"):
            check = 'test -x "$OMADM_COMPONENT_DIR/bin/hello"\n' if action == "install" else ""
            fails = broken and action == "install"
            tail = 'echo "this version never installs" >&2\nexit 3\n' if fails else ""
            hook = component / "hooks" / action
            hook.write_text(_HOOK.format(check=check, fast=FAST_HOOKS, pause="0.1", tail=tail))
            hook.chmod(0o755)
        (component / "share").mkdir(exist_ok=True)
        (component / "share" / "payload.bin").write_bytes(random.Random(name).randbytes(payload_bytes))
        package = workdir / "dist" / f"hello-{name}.omp"
        package.parent.mkdir(exist_ok=True)
        build_package(source, package, signing_key=key)
        files = {
            str(p.relative_to(component)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(component.rglob("*"))
            if p.is_file()
        }
        variants[name] = Variant(name, version, package, files)
    return variants


class SlowPackageServer:
    """Files over HTTP at ``rate`` bytes/s; ``Range: bytes=N-`` with ``If-Range`` (ETag) honoured."""

    def __init__(self, files: dict[str, bytes], rate: float) -> None:
        self.files = files
        self.rate = rate
        self.requests: list[tuple[str, str | None]] = []  # (path, Range)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                body = owner.files.get(path)
                owner.requests.append((path, self.headers.get("Range")))
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                start, status = 0, 200
                wanted = re.fullmatch(r"bytes=(\d+)-", (self.headers.get("Range") or "").strip())
                if wanted and self.headers.get("If-Range", etag) == etag:
                    start, status = int(wanted[1]), 206
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("ETag", etag)
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                began, sent, chunk = time.monotonic(), 0, 32 * 1024
                try:
                    for offset in range(start, len(body), chunk):
                        self.wfile.write(body[offset : offset + chunk])
                        sent += min(chunk, len(body) - offset)
                        ahead = began + sent / owner.rate - time.monotonic()
                        if ahead > 0:
                            time.sleep(ahead)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the agent was killed mid-body: it resumes from its .part

            def log_message(self, format: str, *args: object) -> None:
                pass

        class Quiet(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)  # type: ignore[arg-type]

        self._http = Quiet(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}{path}"

    def __enter__(self) -> SlowPackageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()


# -- the campaign (the DM server's side) ------------------------------------------------------

#: What is installed: (variant name or None, active).
Model = tuple[str | None, bool]
ABSENT: Model = (None, False)


@dataclass
class Step:
    """One SCOMO operation of the campaign and what the server saw of it."""

    kind: str
    exec_uri: str
    correlator: str
    expect: int
    before: Model
    after: Model
    commands: tuple[Command, ...]
    target: str | None  # the alert's Target
    identifier: str  # the alert's Identifier
    sent_in: set[int] = field(default_factory=set)  # id() of the sessions it was queued in
    sent_at: float | None = None
    exec_statuses: list[int] = field(default_factory=list)
    done_at: float | None = None

    @property
    def accepted(self) -> bool:
        return 202 in self.exec_statuses


class Campaign:
    """The server script: ``TestDMServer(accounts, campaign)``; one operation at a time, in cycles.

    A cycle: DownloadInstall v1 (every other cycle DownloadInstallInactive, then Activate);
    DownloadInstall of a 2.0.0 whose install hook fails (1405, 1.0.0 must still run);
    DownloadInstall v2 (an upgrade in place); Deactivate; Activate; Remove; Download v1 alone;
    InstallInactive (every other cycle Install) of that delivered package; Remove; then Remove
    of two delivered packages (the failed one, the one just installed from Delivered; the
    other two stay). Cycles repeat, with fresh Download/<X> names and correlators, until
    ``stop`` is set; the step in flight then still runs to its end.
    """

    def __init__(self, urls: dict[str, str]) -> None:
        self.urls = urls
        self.lock = threading.Lock()
        self.steps: list[Step] = []
        self.by_correlator: dict[str, Step] = {}
        self.alerts: dict[str, list[Alert]] = {}
        self.problems: list[str] = []
        self.stop = False
        self._planned: list[Step] = []
        self._cycle = 0

    # the plan ---------------------------------------------------------------------------

    def _plan_cycle(self) -> None:
        c = self._cycle = self._cycle + 1
        ok, failed = ScomoResult.SUCCESSFUL, ScomoResult.INSTALL_FAILED
        v1_on, v1_off, v2_on, v2_off = ("v1", True), ("v1", False), ("v2", True), ("v2", False)
        download, delivered = f"./SCOMO/Download/c{c}", f"./SCOMO/Inventory/Delivered/c{c}"
        pkg = {x: f"hello-{v}-c{c}" for x, v in (("a", "v1"), ("b", "v2bad"), ("c", "v2"), ("d", "v1"))}
        # kind, node, primitive, result, before, after, package (x of Download/c<n><x>), alert
        # Target and Identifier (digest 6.2: Deployed node and DC ID, Delivered node and PkgID...)
        plan: list[tuple[str, str, str, int, Model, Model, str | None, str | None, str]]
        if c % 2:
            plan = [
                (
                    "download-install",
                    f"{download}a",
                    "DownloadInstall",
                    ok,
                    ABSENT,
                    v1_on,
                    "a",
                    DEPLOYED,
                    COMPONENT,
                )
            ]
        else:  # every other cycle: installed inactive, then activated
            plan = [
                (
                    "download-install-inactive",
                    f"{download}a",
                    "DownloadInstallInactive",
                    ok,
                    ABSENT,
                    v1_off,
                    "a",
                    DEPLOYED,
                    COMPONENT,
                ),
                ("activate", DEPLOYED, "Activate", ok, v1_off, v1_on, None, None, COMPONENT),
            ]
        plan += [
            ("upgrade-fails", f"{download}b", "DownloadInstall", failed, v1_on, v1_on, "b", None, COMPONENT),
            ("upgrade", f"{download}c", "DownloadInstall", ok, v1_on, v2_on, "c", DEPLOYED, COMPONENT),
            ("deactivate", DEPLOYED, "Deactivate", ok, v2_on, v2_off, None, None, COMPONENT),
            ("activate", DEPLOYED, "Activate", ok, v2_off, v2_on, None, None, COMPONENT),
            ("remove", DEPLOYED, "Remove", ok, v2_on, ABSENT, None, None, COMPONENT),
            ("download", f"{download}d", "Download", ok, ABSENT, ABSENT, "d", f"{delivered}d", pkg["d"]),
        ]
        if c % 2:  # from Delivered: inactive, or (every other cycle) active
            plan += [
                (
                    "install-inactive",
                    f"{delivered}d",
                    "InstallInactive",
                    ok,
                    ABSENT,
                    v1_off,
                    None,
                    DEPLOYED,
                    COMPONENT,
                ),
                ("remove-inactive", DEPLOYED, "Remove", ok, v1_off, ABSENT, None, None, COMPONENT),
            ]
        else:
            plan += [
                ("install", f"{delivered}d", "Install", ok, ABSENT, v1_on, None, DEPLOYED, COMPONENT),
                ("remove", DEPLOYED, "Remove", ok, v1_on, ABSENT, None, None, COMPONENT),
            ]
        plan += [
            # the failed upgrade's package, and the one installed from Delivered (a, c stay)
            ("remove-delivered", f"{delivered}b", "Remove", ok, ABSENT, ABSENT, None, None, pkg["b"]),
            ("remove-delivered", f"{delivered}d", "Remove", ok, ABSENT, ABSENT, None, None, pkg["d"]),
        ]
        variant_of = {"a": "v1", "b": "v2bad", "c": "v2", "d": "v1"}
        for kind, node, primitive, expect, before, after, x, target, identifier in plan:
            exec_uri = f"{node}/Operations/{primitive}"
            correlator = f"c{c}-{len(self._planned) + 1}-{kind}"
            commands: list[Command] = []
            if x is not None:
                commands += [
                    Add("0", (Item(target=Target(node), meta=Meta(format="node")),)),
                    Add("0", (Item(target=Target(f"{node}/PkgID"), data=pkg[x]),)),
                    Add("0", (Item(target=Target(f"{node}/PkgURL"), data=self.urls[variant_of[x]]),)),
                    Add("0", (Item(target=Target(f"{node}/Operations"), meta=Meta(format="node")),)),
                    Add("0", (Item(target=Target(exec_uri)),)),
                ]
            commands.append(Exec("0", (Item(target=Target(exec_uri)),), correlator=correlator))
            step = Step(
                kind, exec_uri, correlator, expect, before, after, tuple(commands), target, identifier
            )
            self._planned.append(step)

    # the script -------------------------------------------------------------------------

    def current(self) -> Step | None:
        """The step sent and not yet reported, if any."""
        if self.steps and self.steps[-1].done_at is None:
            return self.steps[-1]
        return None

    def upcoming(self) -> Step:
        """The step in flight, or the one the next session will start."""
        current = self.current()
        if current is not None:
            return current
        if not self._planned:
            self._plan_cycle()
        return self._planned[0]

    def __call__(self, events: list[Event], session: ServerSession) -> None:
        with self.lock:
            now = time.monotonic()
            for event in events:
                if isinstance(event, AlertReceived) and event.alert.correlator is not None:
                    correlator = event.alert.correlator
                    self.alerts.setdefault(correlator, []).append(event.alert)
                    step = self.by_correlator.get(correlator)
                    if step is None:
                        self.problems.append(f"an alert for an operation never started: {correlator}")
                    elif step.done_at is None:
                        step.done_at = now
                elif isinstance(event, StatusReceived):
                    code = event.status.code
                    if isinstance(event.command, Exec):
                        step = self.by_correlator[str(event.command.correlator)]
                        step.exec_statuses.append(code)
                        if code != 202:
                            self.problems.append(f"Exec {step.exec_uri} ({step.correlator}) answered {code}")
                    elif code not in (200, 418):  # 418: an Add sent again after a kill
                        self.problems.append(f"{event.command.name} answered {code}")
            if not session.authenticated or session.pending:
                return
            step = self.current()
            if step is None:
                if self.stop:
                    return
                step = self.upcoming()
                self._planned.pop(0)
                self.steps.append(step)
                self.by_correlator[step.correlator] = step
                step.sent_at = now
            elif step.accepted or id(session) in step.sent_in:
                return
            # New, or sent in a session the agent did not live to answer: (again) in this one.
            step.sent_in.add(id(session))
            for command in step.commands:
                session.queue(command)

    # what the server knows ------------------------------------------------------------

    def all_reported(self) -> bool:
        with self.lock:
            return all(s.done_at is not None for s in self.steps)


# -- the agent process ------------------------------------------------------------------------


class AgentForkServer:
    """Starts ``omadm agent run`` processes, imported in advance (see scomo_crash_agent.py)."""

    def __init__(self, config: Path, data_dir: Path, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != FAST_HOOKS and not k.startswith("OMADM_AGENT_")}
        self.config = config
        self.data_dir = data_dir
        self.log = log
        log.touch()
        self.proc = subprocess.Popen(
            [sys.executable, str(ZYGOTE), str(config), str(log)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        assert self._line() == "ready"

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()
        assert line, f"the agent fork server ended ({self.proc.wait(timeout=10)})"
        return line

    def start(self, *, freeze_after: int = 0, timeout: float = 30.0) -> AgentRun:
        """Power on: a new agent process; returns once it holds the data directory.

        ``freeze_after``: the process stops itself right after that many durable writes.
        """
        assert self.proc.stdin is not None
        began = time.monotonic()
        offset = self.log.stat().st_size
        self.proc.stdin.write(f"go {freeze_after}\n".encode())
        self.proc.stdin.flush()
        word, pid = self._line().split()
        assert word == "pid"
        run = AgentRun(self, int(pid), began, offset)
        lock = self.data_dir / "agent.lock"
        while True:
            try:
                if lock.read_text().strip() == pid:
                    break
            except FileNotFoundError:
                pass
            if not _alive(run.pid):
                raise AssertionError(f"the agent exited at start (wait status {run.reap()})")
            if time.monotonic() - began > timeout:
                raise AssertionError("the agent did not take its data directory in time")
            time.sleep(0.002)
        run.working = time.monotonic()
        return run

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class AgentRun:
    """One agent process, from power-on to its end."""

    def __init__(self, server: AgentForkServer, pid: int, started: float, log_offset: int) -> None:
        self.server = server
        self.pid = pid
        self.started = started
        self.working = started  # when it held the data directory's lock (Agent() was running)
        self.status: int | None = None
        self.log_offset = log_offset

    def alive(self) -> bool:
        return self.status is None and _alive(self.pid)

    def frozen(self) -> bool:
        """Whether it stopped itself after its durable write (``freeze_after``)."""
        return self.status is None and _state(self.pid) == "T"

    def durable_writes(self) -> list[str]:
        """The durable writes this run logged once its start-up was over, in order."""
        with open(self.server.log, "rb") as log:
            log.seek(self.log_offset)
            text = log.read().decode(errors="replace")
        return [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("--- durable write ")]

    def reap(self) -> int:
        """The wait status, once the fork server saw the process end (blocks until then)."""
        if self.status is None:
            word, status = self.server._line().split()
            assert word == "exit"
            self.status = int(status)
        return self.status

    def kill(self) -> None:
        """Power loss: freeze the agent, SIGKILL its hooks' process groups and its own."""
        pgid = self.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGSTOP)
        hooks = _descendants(self.pid)
        groups = {group for _, group in hooks} - {pgid, os.getpgid(0)}
        for sig in (signal.SIGSTOP, signal.SIGKILL):  # hooks have sessions of their own
            for group in groups:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, sig)
        for pid, _ in hooks:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        status = self.reap()
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
            f"the agent ended by itself before the kill (wait status {status})"
        )
        deadline = time.monotonic() + 5
        while any(_alive(pid) for pid, _ in hooks) and time.monotonic() < deadline:
            time.sleep(0.005)

    def stop(self) -> int:
        """A clean shutdown (SIGTERM: the agent ends its loop turn and exits); the exit code."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        status = self.reap()
        return os.waitstatus_to_exitcode(status)


def _processes() -> Iterator[tuple[int, int, int, str]]:
    """(pid, ppid, pgid, state) of every process, from /proc."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        yield int(entry), int(fields[1]), int(fields[2]), fields[0]


def _descendants(root: int) -> list[tuple[int, int]]:
    """(pid, pgid) of every live descendant of ``root`` (hooks and what they started)."""
    if not os.path.isdir("/proc"):
        return []
    children: dict[int, list[tuple[int, int]]] = {}
    for pid, ppid, pgid, state in _processes():
        if state != "Z":
            children.setdefault(ppid, []).append((pid, pgid))
    found, todo = [], [root]
    while todo:
        for pid, pgid in children.get(todo.pop(), []):
            found.append((pid, pgid))
            todo.append(pid)
    return found


def _state(pid: int) -> str | None:
    """The process's state letter (R, S, T, Z...; "?" without /proc), None once it is gone."""
    if not os.path.isdir("/proc"):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return "?"
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def _alive(pid: int) -> bool:
    return _state(pid) not in (None, "Z")


# -- what must hold after a kill --------------------------------------------------------------


@dataclass
class JobRow:
    id: int
    primitive: str
    node: str
    correlator: str
    state: str
    result: int | None


@dataclass
class Inspection:
    """What a kill left, once the agent's start-up recovery ran on a copy of it."""

    jobs: list[JobRow]
    model: Model  # what is installed after recovery
    phase: str  # where the kill landed, from what was written down
    in_flight: bool  # an operation was accepted and not finished


def read_journal(data_dir: Path) -> tuple[list[JobRow], list[Alert]]:
    db = sqlite3.connect(str(data_dir / "alerts.sqlite"))
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        rows = []
        if "scomo_jobs" in tables:
            rows = [
                JobRow(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), r[5])
                for r in db.execute(
                    "SELECT id, primitive, node, correlator, state, result FROM scomo_jobs ORDER BY id"
                )
            ]
        alerts = []
        if "alerts" in tables:
            alerts = [alert_from_json(r[0]) for r in db.execute("SELECT alert FROM alerts ORDER BY id")]
        return rows, alerts
    finally:
        db.close()


def same_alerts(alerts: list[Alert]) -> bool:
    return len({alert_to_json(a) for a in alerts}) == 1


def check_journal(
    jobs: list[JobRow], queued: list[Alert], steps: dict[str, Step], results: dict[str, int]
) -> None:
    """One job per Exec, each with the expected result and never another; its report queued with it."""
    correlators = [j.correlator for j in jobs]
    assert len(correlators) == len(set(correlators)), f"an Exec became two jobs: {correlators}"
    unfinished = [j for j in jobs if j.state != "done"]
    assert len(unfinished) <= 1, f"several operations in flight at once: {unfinished}"
    assert not unfinished or unfinished[0] is jobs[-1], f"an older job is unfinished: {unfinished}"
    for job in jobs:
        step = steps.get(job.correlator)
        assert step is not None, f"a job the server never asked for: {job}"
        if job.state == "done":
            assert job.result == step.expect, (
                f"{step.kind} ({job.correlator}) finished with {job.result}, expected {step.expect}"
            )
            assert results.setdefault(job.correlator, job.result) == job.result, (
                f"{job.correlator} finished twice: {results[job.correlator]} then {job.result}"
            )
    done = {j.correlator: j for j in jobs if j.state == "done"}
    for alert in queued:
        owner = done.get(str(alert.correlator))
        assert owner is not None, f"a report queued for an unfinished or unknown job: {alert_to_json(alert)}"
        check_report(alert, steps[owner.correlator])


def check_report(alert: Alert, step: Step) -> None:
    """The report says what happened: Source, result code, Target and Identifier (digest 6.2)."""
    (item,) = alert.items
    assert item.source is not None and item.source.loc_uri == step.exec_uri, alert_to_json(alert)
    assert isinstance(item.data, str), alert_to_json(alert)
    target = item.target.loc_uri if item.target is not None else None
    assert (parse_scomo_alert_data(item.data), target) == ((step.expect, step.identifier), step.target), (
        f"{step.kind} ({step.correlator}) reported {item.data} for {target}"
    )


def allowed_models(jobs: list[JobRow], steps: dict[str, Step]) -> set[Model]:
    """What may be installed once recovery ran: the state after the last finished operation, or,
    while one is in flight, that state or (once the operation reached the installer) the next."""
    done = [j for j in jobs if j.state == "done"]
    after = steps[done[-1].correlator].after if done else ABSENT
    unfinished = [j for j in jobs if j.state != "done"]
    if not unfinished:
        return {after}
    step = steps[unfinished[0].correlator]
    assert step.before == after, f"{step.kind} started from {after}, planned from {step.before}"
    if unfinished[0].state == "installing":
        return {step.before, step.after}
    return {step.before}


def phase_of(data_dir: Path, jobs: list[JobRow], queued: list[Alert], steps: dict[str, Step]) -> str:
    """Where a kill landed, from the journal, the installer's write-ahead state and the .part files."""
    unfinished = [j for j in jobs if j.state != "done"]
    if not unfinished:
        return "reporting" if queued else "between operations"
    job = unfinished[0]
    phase = f"{steps[job.correlator].kind}/{job.state}"
    if job.state == "downloading" and any((data_dir / "packages").glob("*.part")):
        phase += " (partial file on disk)"
    if job.state == "installing":
        try:
            record = json.loads((data_dir / "components" / "archive" / COMPONENT / "state.json").read_text())
        except (OSError, ValueError):
            record = {}
        pending = record.get("pending") or {}
        phase += f" [{pending['action']} at {pending['step']}]" if pending else " [installer idle]"
    return phase


def inspect(
    data_dir: Path,
    scratch: Path,
    config: AgentConfig,
    *,
    steps: dict[str, Step],
    variants: dict[str, Variant],
    results: dict[str, int],
) -> Inspection:
    """Check a dead agent's data directory; raises AssertionError on any broken promise."""
    copy = scratch / "copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(data_dir, copy, symlinks=True, ignore=shutil.ignore_patterns("packages", "downloads"))
    try:
        jobs, queued = read_journal(copy)
        check_journal(jobs, queued, steps, results)
        allowed = allowed_models(jobs, steps)
        phase = phase_of(data_dir, jobs, queued, steps)
        store = TreeStore(copy / "tree.sqlite")
        try:
            assert store.integrity_problems() == [], "the tree is damaged as the kill left it"
        finally:
            store.close()
        agent = Agent(_with_data_dir(config, copy))  # the agent's own start-up: recovery
        try:
            model = check_installed(agent, copy, variants)
            assert agent.store.integrity_problems() == [], "the tree is damaged after recovery"
        finally:
            agent.close()
        assert model in allowed, f"after recovery {model} is installed; allowed: {allowed} ({phase})"
        in_flight = any(j.state != "done" for j in jobs)
        return Inspection(jobs, model, phase, in_flight)
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def _with_data_dir(config: AgentConfig, data_dir: Path) -> AgentConfig:
    return replace(config, data_dir=data_dir, path=None)


def check_installed(agent: Agent, data_dir: Path, variants: dict[str, Variant]) -> Model:
    """The component is whole (every file of one variant, the variant's program runs), nothing is
    half-installed, and Inventory/Deployed says exactly what the installer has."""
    assert agent.scomo is not None
    root = data_dir / "components" / "archive"
    leftovers = [p.name for p in root.iterdir() if p.name != COMPONENT] if root.exists() else []
    assert leftovers == [], f"the installer left {leftovers} behind after recovery"
    extracted = [p.name for p in data_dir.glob("omadm-install-*")]
    assert extracted == [], f"packages extracted for an interrupted install are left: {extracted}"
    inventory = agent.scomo.installers["archive"].inventory()
    deployed = agent.store.children("./SCOMO/Inventory/Deployed")
    if not inventory:
        assert not (root / COMPONENT).exists(), "a component directory without a component"
        assert deployed == [], f"Inventory/Deployed lists {[r.path for r in deployed]}, nothing is installed"
        return ABSENT
    (component,) = inventory
    comp = root / COMPONENT
    record = json.loads((comp / "state.json").read_text())
    assert record["pending"] is None, f"a step is still pending after recovery: {record}"
    current = comp / "current"
    assert current.is_symlink(), "current is not a symlink"
    target = (comp / os.readlink(current)).resolve()
    assert target.parent == (comp / "versions").resolve() and target.is_dir(), f"current -> {target}"
    staging = [p.name for p in (comp / "versions").iterdir() if p.name.startswith(".")]
    assert staging == [], f"staging leftovers: {staging}"
    files = {
        str(p.relative_to(target)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(target.rglob("*"))
        if p.is_file()
    }
    matches = [v for v in variants.values() if v.files == files]
    assert len(matches) == 1, f"current ({target.name}) is no complete version: {sorted(files)}"
    variant = matches[0]
    assert variant.name != "v2bad", "the version whose install failed is current"
    assert component.version == variant.version, f"state says {component.version}, files are {variant.name}"
    run = subprocess.run([str(current / "bin" / "hello")], capture_output=True, text=True, check=False)
    assert run.returncode == 0 and variant.greeting in run.stdout, f"bin/hello: {run.stdout!r} {run.stderr!r}"
    active = component.state == "active"
    assert [r.path for r in deployed] == [DEPLOYED], f"Inventory/Deployed: {[r.path for r in deployed]}"
    value = agent.tree.system_value
    assert value(f"{DEPLOYED}/ID") == COMPONENT
    assert value(f"{DEPLOYED}/Version") == variant.version, "Inventory/Deployed has another version"
    assert value(f"{DEPLOYED}/State") == ("20" if active else "10"), "Inventory/Deployed has another State"
    return variant.name, active
