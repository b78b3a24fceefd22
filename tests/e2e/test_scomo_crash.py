"""Power loss during SCOMO operations: SIGKILL the real agent hundreds of times, it keeps its word.

A DM server runs a campaign on one device, one operation at a time (DownloadInstall, a
failing upgrade, an upgrade, Deactivate, Activate, Remove, Download, Install and
InstallInactive from Delivered, Remove of delivered packages; see ``Campaign``), over real
HTTP, with packages served slowly enough that downloads are cut half-way. The agent
(``omadm agent run``, a new process each time: see scomo_crash_agent.py) is killed with
SIGKILL, hooks included, at a random instant of whatever it is doing, or (some runs) right
after one of its durable writes, restarted, killed again, until ``OMADM_CRASH_KILLS``
(default 200) kills have landed while an operation was in flight (accepted and not finished).

After every kill, on a copy of the data directory as the kill left it: the tree is intact;
the journal has one job per Exec and each finished job has the expected result, the same at
every look; once the agent's own start-up recovery ran, the component is whole (all files
of exactly one good version, its program runs), in the state before or after the operation
in flight and nothing between, a failed upgrade leaves the previous version running, and
Inventory/Deployed says what is installed. At the end, the agent runs undisturbed: every
operation was reported to the server with the expected result, each report's copies (a
kill after the server took a report and before the device saw the answer makes it send
again: DM delivers at least once) are identical, and nothing is left to send.

``OMADM_CRASH_SECONDS`` bounds the time (default 900 s; the test fails if the kills do not
fit); ``OMADM_CRASH_SEED`` fixes the random instants.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from omadm.agent.config import AccountConfig, AgentConfig, DeviceConfig, ScomoConfig, save_config
from omadm.package.signing import generate_key, save_public_key
from omadm.protocol.codes import AuthType
from omadm.protocol.session import Credentials
from omadm.tree.store import TreeStore

from .dmserver import DeviceAccount, TestDMServer
from .scomo_crash_support import (
    FAST_HOOKS,
    AgentForkServer,
    AgentRun,
    Campaign,
    Inspection,
    SlowPackageServer,
    Step,
    Variant,
    build_variants,
    check_report,
    inspect,
    read_journal,
    same_alerts,
)

pytestmark = pytest.mark.crash

KILLS = int(os.environ.get("OMADM_CRASH_KILLS", "200"))
TIME_LIMIT = float(os.environ.get("OMADM_CRASH_SECONDS", "900"))
SEED = int(os.environ.get("OMADM_CRASH_SEED") or random.randrange(1 << 30))
PAYLOAD = 1536 * 1024  # bytes of payload per package version
RATE = 6 * 1024 * 1024  # bytes/s the package server sends
DEVICE_ID, USER, PASSWORD = "IMEI:490154203237518", "dev-user", "dev-secret"


class Windows:
    """How long after start-up to kill, per kind of operation: learnt from the runs that got
    through one, so that most kills land inside the operation and some just after it."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __getitem__(self, kind: str) -> float:
        return self.seconds.get(kind, 1.5)

    def learn(self, steps: list[Step], since: float, until: float) -> None:
        for step in steps:
            if step.done_at is not None and since <= step.done_at <= until and step.sent_at is not None:
                took = step.done_at - max(since, step.sent_at)
                self.seconds[step.kind] = 0.6 * self[step.kind] + 0.4 * max(0.2, 1.25 * took)


def test_sigkill_at_random_instants_of_scomo_operations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    began = time.monotonic()
    monkeypatch.setenv(FAST_HOOKS, "1")  # for the recoveries run here; the agent's hooks take their time
    data = tmp_path / "data"
    key = generate_key()
    (data / "trust").mkdir(parents=True)
    save_public_key(key.public_key(), data / "trust" / "publisher.pem")
    variants = build_variants(tmp_path, key, PAYLOAD)
    files = {f"/{v.package.name}": v.package.read_bytes() for v in variants.values()}
    with SlowPackageServer(files, RATE) as packages:
        campaign = Campaign({name: packages.url(f"/{v.package.name}") for name, v in variants.items()})
        account = DeviceAccount(
            Credentials(AuthType.MD5, USER, PASSWORD),
            client_nonce=b"nonce-0",
            server_credentials=Credentials(AuthType.MD5, "omadm-crash", "srv-secret"),
            send_server_cred=True,
        )
        with TestDMServer({DEVICE_ID: account}, campaign) as server:
            config = AgentConfig(
                device=DeviceConfig(id=DEVICE_ID),
                data_dir=data,
                accounts=(
                    AccountConfig("omadm-crash", server.url, USER, PASSWORD, server_password="srv-secret"),
                ),
                poll_interval=0.3,
                retries=2,
                retry_backoff=0.05,
                timeout=10,
                scomo=ScomoConfig(hook_timeout=30),
            )
            save_config(config, tmp_path / "omadm.toml")
            agents = AgentForkServer(tmp_path / "omadm.toml", data, tmp_path / "agent.log")
            copies = Path(tempfile.mkdtemp(prefix="omadm-crash-", dir=_tmpfs()))
            rig = Rig(campaign, config, tmp_path / "omadm.toml", tmp_path, variants, agents, copies)
            try:
                report = rig.crash_loop(random.Random(SEED))
                rig.finish(report)
            except AssertionError as exc:
                raise AssertionError(
                    f"{exc} (seed {SEED})\n--- agent log (end) ---\n{rig.log_tail()}"
                ) from exc
            finally:
                agents.close()
                shutil.rmtree(copies, ignore_errors=True)
            errors = len(server.record.errors)
        resumed = sum(1 for _, wanted in packages.requests if wanted)
    report["package requests resuming a partial download (Range)"] = resumed
    report["seconds"] = round(time.monotonic() - began, 1)
    report["server messages cut by a kill"] = errors
    print(f"\nSCOMO crash test (seed {SEED}):")
    for name, value in report.items():
        if isinstance(value, Counter):
            print(f"  {name}:")
            for phase, count in sorted(value.items()):
                print(f"    {count:4d}  {phase}")
        else:
            print(f"  {name}: {value}")


def _tmpfs() -> str | None:
    """/dev/shm if it can be used: the checks' copies and recoveries then cost no disk syncs."""
    shm = Path("/dev/shm")
    usable = shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 256 * 1024 * 1024
    return str(shm) if usable else None


@dataclass
class Rig:
    """The device under test and the server's campaign."""

    campaign: Campaign
    config: AgentConfig
    config_path: Path
    workdir: Path  # the test's tmp_path: the packages, omadm.toml, agent.log
    variants: dict[str, Variant]
    agents: AgentForkServer
    copies: Path  # where the data directory is copied to be checked (tmpfs when there is one)

    @property
    def data(self) -> Path:
        return self.config.data_dir

    def log_tail(self, lines: int = 60) -> str:
        text = (self.workdir / "agent.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def inspect(self, steps: dict[str, Step], results: dict[str, int]) -> Inspection:
        return inspect(
            self.data, self.copies, self.config, steps=steps, variants=self.variants, results=results
        )

    def crash_loop(self, rng: random.Random) -> dict[str, object]:
        """Start, kill at a random instant, check; until KILLS kills landed in an operation."""
        campaign = self.campaign
        windows = Windows()
        results: dict[str, int] = {}
        in_flight: Counter[str] = Counter()
        elsewhere: Counter[str] = Counter()
        kills = after_failed_upgrade = 0
        timing: dict[str, float] = defaultdict(float)
        writes: dict[str, int] = {}  # durable writes seen in a run's jobs, per kind of operation
        trapped: Counter[str] = Counter()  # kills right after a durable write, by the write
        sweep: Counter[str] = Counter()  # the next durable write to kill after, per kind
        last, same = None, 0
        started = time.monotonic()
        agent: AgentRun | None = None
        try:
            while sum(in_flight.values()) < KILLS:
                assert time.monotonic() - started < TIME_LIMIT, (
                    f"only {sum(in_flight.values())} of {KILLS} kills in flight within {TIME_LIMIT:g} s"
                )
                with campaign.lock:
                    step = campaign.upcoming()
                same = same + 1 if step is last else 0
                last = step
                window = windows[step.kind]
                # Mostly inside the window; now and then later, so the instants after an
                # operation get a share, and ever later after many kills in one step (a window
                # learnt too short must not stall the campaign).
                late = same >= 8 or rng.random() < 0.1
                stretch = window * max(1, same - 6)
                delay = stretch * rng.uniform(1.0, 2.5) if late else rng.uniform(0.0, window)
                # Some runs freeze right after a durable write instead (scomo_crash_agent.py),
                # the timed kill staying the fallback: the gaps between writes are mostly too
                # short for a random instant. Per kind of operation, the runs sweep its writes.
                trap = 0
                if not late and rng.random() < 0.4:
                    trap = sweep[step.kind] % max(4, writes.get(step.kind, 20)) + 1
                    sweep[step.kind] += 1
                agent = self.agents.start(freeze_after=trap)
                timing["starting"] += agent.working - agent.started
                if trap:
                    delay = window * 2.5
                while time.monotonic() < agent.working + delay and not agent.frozen():
                    assert agent.alive(), f"the agent exited by itself (wait status {agent.reap()})"
                    time.sleep(min(0.005, max(0.0, agent.working + delay - time.monotonic())))
                frozen = agent.frozen()
                agent.kill()
                killed_at = time.monotonic()
                kills += 1
                seen_writes = agent.durable_writes()
                if not trap:
                    writes[step.kind] = max(writes.get(step.kind, 0), len(seen_writes))
                if frozen:
                    trapped[seen_writes[-1]] += 1
                with campaign.lock:
                    steps = dict(campaign.by_correlator)
                    windows.learn(list(campaign.steps), agent.working, killed_at)
                timing["running"] += killed_at - agent.working
                try:
                    seen = self.inspect(steps, results)
                except AssertionError as exc:
                    raise AssertionError(f"after kill {kills} (agent pid {agent.pid}): {exc}") from exc
                agent = None
                timing["checking"] += time.monotonic() - killed_at
                kinds = [steps[j.correlator].kind for j in seen.jobs]
                if kinds[-1:] == ["upgrade-fails"] or (kinds[-2:-1] == ["upgrade-fails"] and seen.in_flight):
                    after_failed_upgrade += 1
                (in_flight if seen.in_flight else elsewhere)[seen.phase] += 1
        finally:
            if agent is not None and agent.status is None:
                agent.kill()
        with campaign.lock:
            done = Counter(s.kind for s in campaign.steps if s.done_at is not None)
        return {
            "kills": kills,
            "kills while an operation was in flight": sum(in_flight.values()),
            "in flight, by operation/journal state [installer step]": in_flight,
            "not in flight": elsewhere,
            "kills right after a durable write (these runs only), by the write": trapped,
            "checks with a failed upgrade just behind or in flight": after_failed_upgrade,
            "operations completed during the kills": done,
            "kill windows learnt (s)": {k: round(v, 2) for k, v in sorted(windows.seconds.items())},
            "kill phase seconds": round(time.monotonic() - started, 1),
            "of which starting, running, checking": [
                round(timing[k], 1) for k in ("starting", "running", "checking")
            ],
        }

    def finish(self, report: dict[str, object]) -> None:
        """No more kills: the operation in flight ends, every report goes out; then check it all."""
        campaign = self.campaign
        with campaign.lock:
            campaign.stop = True
        for _ in range(5):
            agent = self.agents.start()
            try:
                deadline = time.monotonic() + 120
                while not campaign.all_reported():
                    assert time.monotonic() < deadline, "the last operation was never reported"
                    assert agent.alive(), f"the agent exited by itself (wait status {agent.reap()})"
                    time.sleep(0.05)
                time.sleep(0.5)
            finally:
                code = agent.stop()
            assert code == 0, f"the agent stopped with exit code {code}"
            jobs, queued = read_journal(self.data)
            if not queued:
                break
        with campaign.lock:
            steps = list(campaign.steps)
            alerts = {c: list(a) for c, a in campaign.alerts.items()}
            problems = list(campaign.problems)
        assert problems == []
        duplicates = 0
        for step in steps:
            got = alerts.get(step.correlator, [])
            assert got, f"{step.kind} ({step.correlator}) was never reported"
            assert same_alerts(got), f"{step.kind} ({step.correlator}) was reported differently: {got}"
            check_report(got[0], step)
            duplicates += len(got) - 1
        assert set(alerts) == {s.correlator for s in steps}
        assert queued == [], "reports left undelivered"
        expected = [(s.correlator, "done", s.expect) for s in steps]
        assert [(j.correlator, j.state, j.result) for j in jobs] == expected
        final = self.inspect({s.correlator: s for s in steps}, {})
        assert not final.in_flight and final.model == steps[-1].after
        store = TreeStore(self.data / "tree.sqlite")
        try:
            delivered = check_status_nodes(store, steps)
        finally:
            store.close()
        # Every package file belongs to an Inventory/Delivered entry: no partial or orphan file.
        kept = sorted(p.name for p in (self.data / "packages").iterdir())
        assert kept == sorted(f"delivered-{name}.omp" for name in delivered)
        assert not any((self.data / "downloads").glob("*")), "download leftovers"
        report["operations"] = len(steps)
        report["operations sent again (the kill cut the session before the 202)"] = sum(
            len(s.sent_in) > 1 for s in steps
        )
        report["reports received"] = sum(len(a) for a in alerts.values())
        report["duplicate reports (identical copies)"] = duplicates
        report["final state"] = final.model


#: Download/<X>/Status once each kind of download step is over (SCOMO digest 4.1).
DOWNLOAD_STATUS = {
    "download-install": b"10",
    "download-install-inactive": b"10",
    "upgrade": b"10",
    "upgrade-fails": b"60",
    "download": b"10",
}


def check_status_nodes(store: TreeStore, steps: list[Step]) -> list[str]:
    """The Status/State nodes a polling server reads say what the reports said; returns the
    names of the Inventory/Delivered entries."""

    def value(path: str) -> bytes | None:
        record = store.get(path)
        return None if record is None else record.value

    installed_from_delivered = set()
    for step in steps:
        node = step.exec_uri.rsplit("/Operations/", 1)[0]
        if step.kind in DOWNLOAD_STATUS:
            assert value(f"{node}/Status") == DOWNLOAD_STATUS[step.kind], f"{node}/Status after {step.kind}"
        if step.kind in (
            "download-install",
            "download-install-inactive",
            "upgrade",
            "install",
            "install-inactive",
        ):
            installed_from_delivered.add(node.rsplit("/", 1)[1])
    delivered = [r.name for r in store.children("./SCOMO/Inventory/Delivered")]
    for name in delivered:
        node = f"./SCOMO/Inventory/Delivered/{name}"
        assert value(f"{node}/Status") == b"10", f"{node}/Status"
        assert value(f"{node}/State") == (b"20" if name in installed_from_delivered else b"10"), (
            f"{node}/State"
        )
    for record in store.children("./SCOMO/Inventory/Deployed"):
        assert value(f"{record.path}/Status") == b"10", f"{record.path}/Status"
    return delivered
