"""Fleet benchmark: a real ``omadm server`` process driven by ``omadm sim``, one worker.

Run ``python bench/fleet.py`` (both engines, 10,000 devices: about 40 minutes on the
project's 2-core machine) or ``python bench/fleet.py --quick`` (1,000 devices, SQLite, a few
minutes). It is a script, not a test: it prints figures, and it says FAILED (exit 1) when a
scenario breaks its promise (a device that never completed, an HTTP 5xx, a lost or doubled
job result), since a fast figure over a broken run means nothing.

For each engine it migrates a fresh database, starts ``omadm server`` as ``omadm server``
runs in production (one uvicorn worker, the configured admission control), makes an operator
token, registers the fleet through the REST API (``omadm sim register``, bulk) and runs:

* **storm**: every device's first contact (Pkg#1, the challenge, Pkg#1 with credentials,
  Pkg#3) within ``--storm-over`` seconds (10); the simulator keeps up to ``--concurrency``
  sessions open at once, far more than the worker admits, so the server must shed load as
  503 + Retry-After and every device must still complete;
* **steady**: the same devices polling every ``--poll`` seconds with jitter for
  ``--steady-seconds`` (120): the server's CPU per steady-state message and session;
* **campaign**: a signed package installed (DownloadInstall) on every device by a campaign
  in three waves (1 %, 30 %, the rest), downloads skipped, with 2 % injected failures and 1 %
  power cuts (a device that loses power mid-download or mid-install comes back 20 s later and
  recovers as the agent does); devices are woken by Package #0 (UDP, each device its own
  loopback address) and poll only every ``--campaign-poll`` seconds (1800: a fleet that
  polls every minute spends the server on polls, which the steady scenario measures);
* **campaign-real**: the same for ``--real-devices`` (1,000) more devices that really
  download the package from the server (Range, SHA-256, the signed manifest checked).

A campaign must finish with one job per device and one result each, and the server's results
must be the devices' results code by code (none lost, none doubled); the simulator is stopped
once the campaign is over.

Figures: sessions per second (over the busy part of the run), the server's CPU per session and
per message (``/proc/<pid>/stat``: all threads of the worker), session time p50/p99 as the
devices saw it, errors by kind (HTTP status, 503 with Retry-After, timeouts, connection
errors), the server's RSS, and the simulator's own CPU and memory per idle device. The
simulator runs on the same 2 cores, so it takes CPU from the server: the server's CPU per
session is the figure that compares across machines, the rate is this machine's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import tomli_w

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DEFAULT_PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
HOST = "127.0.0.1"


class BenchError(Exception):
    """The benchmark cannot go on (a server that does not start, a command that fails)."""


# ============================================================================ processes


def omadm(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> str:
    """Run ``python -m omadm ARGS`` and return its standard output (BenchError on failure)."""
    done = subprocess.run(
        [sys.executable, "-m", "omadm", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    if done.returncode != 0:
        raise BenchError(f"omadm {' '.join(args[:3])} ... failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", 0))
        port: int = sock.getsockname()[1]
        return port


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_rss(pid: int) -> int:
    """Resident memory of ``pid`` in bytes, from /proc (0 once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Server:
    """``omadm server`` as production runs it (one worker), in a process of its own.

    ``env`` is the process environment (None: this one; ``bench/registry.py`` sets PYTHONPATH
    to measure another checkout); ``config``, a TOML file for ``--config``.
    """

    db: str
    data_dir: Path
    log: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def admin(self, *args: str) -> str:
        return omadm("server", "--db", self.db, "--data-dir", str(self.data_dir), *args, env=self.env)

    def start(self, config: Path | None = None) -> None:
        command = [
            sys.executable, "-m", "omadm", "server", "--db", self.db, "--data-dir", str(self.data_dir),
            "--host", HOST, "--port", str(self.port), "--workers", "1",
            *(["--config", str(config)] if config is not None else []),
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        if not self.responsive(60):
            raise BenchError(
                f"the server did not answer /health within 60 s:\n{self.log.read_text()[-3000:]}"
            )

    def responsive(self, within: float) -> bool:
        """Whether /health answers within ``within`` seconds (each try given 1 s)."""
        assert self.process is not None
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(
                    f"the server exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            with suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def database(kind: str, workdir: Path, pg_admin: str) -> Iterator[str]:
    """A fresh database: an SQLite file in ``workdir`` or a PostgreSQL database of its own."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'omadm.sqlite'}"
        return
    import asyncpg  # type: ignore[import-untyped]  # noqa: PLC0415

    name = f"omadm_fleet_{os.getpid()}"

    async def admin(*statements: str) -> None:
        connection = await asyncpg.connect(pg_admin.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"'))
    try:
        yield pg_admin.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# ============================================================================ scenarios


@dataclass
class Outcome:
    """One scenario's figures and whether it kept its promises."""

    name: str
    engine: str
    figures: dict[str, Any]
    problems: list[str]


def write_profile(
    path: Path, *, seed: int, over: float, poll: float, wbxml: float, **sections: dict[str, Any]
) -> Path:
    """A simulator profile (``examples/sim/`` explains the keys): arrivals spread over ``over``
    seconds, polls every ``poll`` seconds (0: none) with 20 % jitter, the ``wbxml`` share,
    the given sections, and patient HTTP (a 503 is waited out, never a failure here)."""
    document: dict[str, Any] = {
        "seed": seed,
        "arrival": {"mode": "spread", "over": over},
        "poll": {"interval": poll, "jitter": 0.2} if poll else {"interval": 0},
        "encoding": {"wbxml": wbxml},
        **sections,
    }
    document["http"] = {"timeout": 60, "retries": 30, **sections.get("http", {})}
    path.write_text(tomli_w.dumps(document))
    return path


def simulate(
    fleet: Path,
    profile: Path,
    duration: float,
    server: Server,
    out: Path,
    *,
    concurrency: int,
    downloads: str = "skip",
    until: Callable[[], bool] | None = None,
) -> tuple[dict[str, Any], float, float]:
    """Run ``omadm sim run`` while measuring the server: (summary, server CPU s, wall s).

    ``until``: checked every 2 s; once true (and 5 s more for the last reports to land), the
    simulator is stopped as Ctrl-C stops it, and still prints its summary.
    """
    cpu_before, started = process_cpu(server.pid), time.perf_counter()
    command = [
        sys.executable, "-m", "omadm", "sim", "run", str(fleet), "--profile", str(profile),
        "--duration", str(duration), "--concurrency", str(concurrency), "--downloads", downloads, "--json",
    ]  # fmt: skip
    with out.open("w") as stdout:
        process = subprocess.Popen(command, stdout=stdout, stderr=subprocess.DEVNULL)
        try:
            while process.poll() is None:
                time.sleep(2)
                if until is not None and process.poll() is None and until():
                    time.sleep(5)
                    process.send_signal(signal.SIGINT)
                    break
            process.wait(timeout=duration + 600)
        finally:
            if process.poll() is None:
                process.kill()
    wall, cpu = time.perf_counter() - started, process_cpu(server.pid) - cpu_before
    if process.returncode != 0:
        raise BenchError(
            f"omadm sim run failed ({process.returncode}); its output: {out.read_text()[-2000:]}"
        )
    summary: dict[str, Any] = json.loads(out.read_text())
    return summary, cpu, wall


def errors_of(summary: dict[str, Any]) -> tuple[dict[str, int], list[str]]:
    """The run's errors by kind, and the problems among them (5xx, connection errors)."""
    errors: dict[str, int] = summary.get("errors", {})
    problems = []
    for kind, count in errors.items():
        if kind.startswith("http 5") and kind != "http 503":
            problems.append(f"{count} x {kind}")
        if "connect" in kind:
            problems.append(f"{count} x {kind}")
    return errors, problems


def figures_of(summary: dict[str, Any], cpu: float, server: Server) -> dict[str, Any]:
    sessions = summary["sessions"]
    ok = sessions["by_outcome"].get("ok", 0)
    messages = summary["messages"]["sent"]
    return {
        "devices": summary["devices"],
        "sessions_ok": ok,
        "sessions_per_s": sessions["ok_per_second"],
        "server_cpu_ms_per_session": round(1000 * cpu / ok, 2) if ok else None,
        "server_cpu_us_per_message": round(1e6 * cpu / messages) if messages else None,
        "p50_s": summary["session_time_s"]["p50"],
        "p99_s": summary["session_time_s"]["p99"],
        "http_503": summary["http_503"]["answered"],
        "retry_after_max_s": summary["http_503"]["retry_after_max_s"],
        "errors": summary.get("errors", {}),
        "server_rss_mb": round(process_rss(server.pid) / 2**20, 1),
        "sim_cpu_ms_per_session": summary["simulator_cpu"]["ms_per_session"],
        "sim_idle_bytes_per_device": summary["memory"]["idle_bytes_per_device"],
    }


def storm(args: argparse.Namespace, server: Server, fleet: Path, work: Path, engine: str) -> Outcome:
    profile = write_profile(
        work / "storm.toml", seed=1, over=args.storm_over, poll=0, wbxml=0.5, http={"max_retry_after": 60}
    )
    duration = args.storm_over + max(60.0, args.devices / 40)
    summary, cpu, _ = simulate(
        fleet, profile, duration, server, work / "storm.json", concurrency=args.concurrency
    )
    figures = figures_of(summary, cpu, server)
    _, problems = errors_of(summary)
    if figures["sessions_ok"] < args.devices:
        problems.append(f"only {figures['sessions_ok']} of {args.devices} devices completed a session")
    return Outcome("storm", engine, figures, problems)


def steady(args: argparse.Namespace, server: Server, fleet: Path, work: Path, engine: str) -> Outcome:
    profile = write_profile(work / "steady.toml", seed=2, over=args.poll, poll=args.poll, wbxml=0.1)
    summary, cpu, _ = simulate(
        fleet, profile, args.steady_seconds, server, work / "steady.json", concurrency=args.concurrency
    )
    figures = figures_of(summary, cpu, server)
    _, problems = errors_of(summary)
    failed = {k: v for k, v in summary["sessions"]["by_outcome"].items() if k != "ok"}
    if failed:
        problems.append(f"sessions that did not end well: {failed}")
    return Outcome("steady", engine, figures, problems)


#: What both campaign scenarios share: installs of 1-3 s, and 1 % power cuts of 20 s.
_INSTALL_LATENCY = {"install": {"dist": "uniform", "min": 1.0, "max": 3.0}}
_POWER_CUTS = {"power_cut": 0.01, "power_off_seconds": 20}


def campaign(args: argparse.Namespace, server: Server, fleet: Path, work: Path, engine: str) -> Outcome:
    """DownloadInstall to the whole fleet in three waves, downloads skipped."""
    profile = write_profile(
        work / "campaign.toml",
        seed=3,
        over=args.poll,
        poll=args.campaign_poll,
        wbxml=0.25,
        latency={"download": {"dist": "lognormal", "median": 4.0, "sigma": 0.5}, **_INSTALL_LATENCY},
        failures={"1402": 0.005, "1404": 0.005, "1405": 0.01},
        faults=_POWER_CUTS,
    )
    return run_campaign(
        args, server, fleet, work, engine, name="campaign", profile=profile, downloads="skip", devices=None
    )


def campaign_real(args: argparse.Namespace, server: Server, fleet: Path, work: Path, engine: str) -> Outcome:
    """DownloadInstall to ``--real-devices`` more devices that really fetch the package."""
    real = work / "fleet-real.json"
    omadm(
        "sim", "register", "--count", str(args.real_devices), "--prefix", "IMEI:36", "--server", server.url,
        "--token", args.token, "--out", str(real), "--notify", str(free_udp_port()),
    )  # fmt: skip
    profile = write_profile(
        work / "campaign-real.toml",
        seed=4,
        over=args.poll,
        poll=args.campaign_poll,
        wbxml=0.25,
        latency=_INSTALL_LATENCY,  # no download latency: the fetch takes what it takes
        failures={"1405": 0.02},
        faults=_POWER_CUTS,
        packages={"trusted_keys": [str(work / "publisher.pub.pem")], "require_signature": True},
    )
    devices = [d["device_id"] for d in json.loads(real.read_text())["devices"]]
    return run_campaign(
        args,
        server,
        real,
        work,
        engine,
        name="campaign-real",
        profile=profile,
        downloads="real",
        devices=devices,
    )


def run_campaign(
    args: argparse.Namespace,
    server: Server,
    fleet: Path,
    work: Path,
    engine: str,
    *,
    name: str,
    profile: Path,
    downloads: str,
    devices: list[str] | None,
) -> Outcome:
    """A campaign in three waves over ``fleet`` (or its ``devices``), run until it is over."""
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {args.token}"}, timeout=120)
    artifact = package(args, work, api, server)
    body: dict[str, Any] = {
        "name": f"fleet bench {name}",
        "kind": "install",
        "artifact_id": artifact,
        "waves": ["1%", "30%", "100%"],
        "success_threshold": 0.9,
        "error_threshold": 0.1,
    }
    if devices is not None:
        body["target"] = {"devices": devices}
    else:
        body["all_devices"] = True  # required for an empty target since issue 15
    created = api.post("/api/v1/campaigns", json=body)
    if created.status_code == 422 and "all_devices" in created.text and "all_devices" in body:
        del body["all_devices"]  # a server from before the flag (--source)
        created = api.post("/api/v1/campaigns", json=body)
    if created.status_code != 201:
        raise BenchError(f"campaign: {created.status_code} {created.text}")
    campaign_id = created.json()["id"]
    api.post(f"/api/v1/campaigns/{campaign_id}/start").raise_for_status()

    api_errors: Counter[str] = Counter()

    def over() -> bool:
        # The operator's view while the fleet works: a refusal or a timeout here is counted
        # (the REST API shares the worker and its pool with the campaign), not fatal.
        try:
            response = api.get(f"/api/v1/campaigns/{campaign_id}")
        except httpx.HTTPError as exc:
            api_errors[type(exc).__name__] += 1
            return False
        if response.status_code != 200:
            api_errors[f"http {response.status_code}"] += 1
            return False
        state = response.json()
        return bool(state["state"] != "running" and state["counters"]["running"] == 0)

    summary, cpu, _ = simulate(
        fleet, profile, args.campaign_seconds, server, work / f"{name}.json",
        concurrency=args.concurrency, downloads=downloads, until=over,
    )  # fmt: skip
    figures = figures_of(summary, cpu, server)
    _, problems = errors_of(summary)
    state = api.get(f"/api/v1/campaigns/{campaign_id}").json()
    api.close()
    jobs, made = campaign_results(server.db, campaign_id)
    counters = state["counters"]
    members = len(devices) if devices is not None else args.devices
    results = {int(code): n for code, n in summary["scomo"]["results"].items()}
    on_server = Counter(code for code in jobs.values())
    figures["campaign"] = {"state": state["state"], **counters}
    figures["rest_api_errors_while_running"] = dict(api_errors)
    figures["results_on_devices"] = dict(sorted(results.items()))
    figures["results_on_server"] = dict(sorted(on_server.items()))
    figures["power_cuts"] = summary.get("faults", {}).get("power_cuts", summary.get("power_cuts"))
    if state["state"] != "finished":
        problems.append(f"the campaign ended {state['state']}, not finished")
    if len(jobs) != members or made != members:
        problems.append(f"{len(jobs)} of {members} devices have a result, from {made} jobs")
    if on_server != Counter(results):
        problems.append(f"results differ: server {dict(on_server)}, devices {results}")
    return Outcome(name, engine, figures, problems)


def package(args: argparse.Namespace, work: Path, api: httpx.Client, server: Server) -> int:
    """The signed hello package, its publisher trusted, uploaded once per server (its id)."""
    key = work / "publisher.pem"
    built = work / "hello-1.0.0.omp"
    if not built.exists():
        omadm("package", "keygen", "--output", str(key))
        omadm("package", "build", str(EXAMPLES / "hello-package"), "--output", str(built), "--key", str(key))
    server.admin("publisher", "add", "bench", str(work / "publisher.pub.pem"))  # again: already trusted
    uploaded = api.post("/api/v1/packages", params={"filename": built.name}, content=built.read_bytes())
    if uploaded.status_code not in (200, 201):
        raise BenchError(f"package upload: {uploaded.status_code} {uploaded.text}")
    artifact: int = uploaded.json()["id"]
    return artifact


def campaign_results(db: str, campaign_id: int) -> tuple[dict[str, int | None], int]:
    """Each campaign device's final job result (DevId -> code), and how many jobs were made.

    Read from the database (the REST API lists jobs but not by campaign): a device with two
    finished jobs in one campaign, or none, is what "lost or doubled" means.
    """
    from sqlalchemy import select  # noqa: PLC0415

    from omadm.server.store.engine import database_url, make_engine, session_factory  # noqa: PLC0415
    from omadm.server.store.models import Device, Job  # noqa: PLC0415

    async def read() -> tuple[dict[str, int | None], int]:
        engine = make_engine(database_url(db, Path()))
        try:
            async with session_factory(engine)() as session:
                rows = (
                    await session.execute(
                        select(Device.device_id, Job.state, Job.result_code)
                        .join(Device, Device.id == Job.device_pk)
                        .where(Job.campaign_id == campaign_id)
                    )
                ).all()
        finally:
            await engine.dispose()
        final = {device: code for device, state, code in rows if state in ("succeeded", "failed")}
        return final, len(rows)

    return asyncio.run(read())


SCENARIOS = {"storm": storm, "steady": steady, "campaign": campaign, "campaign-real": campaign_real}


# ============================================================================ main


def run_engine(args: argparse.Namespace, engine: str) -> list[Outcome]:
    outcomes: list[Outcome] = []
    work = Path(tempfile.mkdtemp(prefix=f"omadm-fleet-{engine}-"))
    try:
        with database(engine, work, args.pg_admin) as db:
            server = Server(db, work / "server", work / "server.log")
            omadm("server", "--db", db, "--data-dir", str(server.data_dir), "migrate")
            config = work / "omadm-server.toml"
            # notify_interval 60 (the default): a device whose Package #0 was lost, or that gave
            # up on a busy server, is woken again a minute later rather than at its next poll.
            config.write_text("[server]\nsweep_interval = 1.0\nnotify_interval = 60\n")
            server.start(config)
            try:
                args.token = (
                    server.admin("token", "add", "bench", "--role", "operator").strip().splitlines()[-1]
                )
                fleet = work / "fleet.json"
                started = time.perf_counter()
                omadm(
                    "sim", "register", "--count", str(args.devices), "--server", server.url,
                    "--token", args.token, "--out", str(fleet), "--notify", str(free_udp_port()),
                )  # fmt: skip
                took = time.perf_counter() - started
                print(f"  {engine}: registered {args.devices:,} devices in {took:.1f} s")
                for name in args.scenarios:
                    outcome = SCENARIOS[name](args, server, fleet, work, engine)
                    outcomes.append(outcome)
                    verdict = "ok" if not outcome.problems else "FAILED: " + "; ".join(outcome.problems)
                    print(f"  {engine} {name}: {json.dumps(outcome.figures)} -> {verdict}", flush=True)
            finally:
                server.stop()
    finally:
        if args.keep:
            print(f"  kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return outcomes


def table(outcomes: list[Outcome]) -> list[str]:
    header = ("engine", "scenario", "sessions", "sessions/s", "srv ms/session", "srv µs/msg", "p50 s",
              "p99 s", "503s", "errors", "srv RSS MB", "sim B/device")  # fmt: skip
    rows = [
        (
            o.engine,
            o.name,
            f"{o.figures['sessions_ok']:,}",
            f"{o.figures['sessions_per_s']:,.0f}",
            f"{o.figures['server_cpu_ms_per_session']}",
            f"{o.figures['server_cpu_us_per_message']}",
            f"{o.figures['p50_s']}",
            f"{o.figures['p99_s']}",
            f"{o.figures['http_503']:,}",
            ", ".join(f"{k}: {v}" for k, v in o.figures["errors"].items()) or "-",
            f"{o.figures['server_rss_mb']}",
            f"{o.figures['sim_idle_bytes_per_device']:,}",
        )
        for o in outcomes
    ]
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument(
        "--scenarios", default="storm,steady,campaign,campaign-real", help="comma-separated, in order"
    )
    parser.add_argument("--concurrency", type=int, default=1000, help="the simulator's sessions at once")
    parser.add_argument("--storm-over", type=float, default=10.0, help="seconds the storm's arrivals take")
    parser.add_argument("--poll", type=float, default=60.0, help="poll interval of steady and campaign")
    parser.add_argument("--steady-seconds", type=float, default=120.0)
    parser.add_argument(
        "--campaign-seconds", type=float, default=2400.0, help="at most; ends with the campaign"
    )
    parser.add_argument(
        "--campaign-poll",
        type=float,
        default=1800.0,
        help="poll interval under a campaign: Package #0 brings the jobs, as in a real fleet",
    )
    parser.add_argument("--real-devices", type=int, default=1000, help="devices of campaign-real")
    parser.add_argument("--pg-admin", default=DEFAULT_PG_ADMIN)
    parser.add_argument("--quick", action="store_true", help="1,000 devices, SQLite, shorter runs")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, summaries)")
    args = parser.parse_args(argv)
    if args.quick:
        args.devices, args.db = min(args.devices, 1000), "sqlite"
        args.steady_seconds, args.campaign_seconds, args.poll = 40.0, 600.0, 20.0
        args.campaign_poll = 300.0
        args.real_devices = min(args.real_devices, 200)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)} (known: {', '.join(SCENARIOS)})")
    print(f"machine {platform.machine()}, nproc {os.cpu_count()}, Python {platform.python_version()}")
    print(
        f"{args.devices:,} devices, scenarios {', '.join(args.scenarios)}, sim concurrency {args.concurrency}"
    )
    engines = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    outcomes: list[Outcome] = []
    try:
        for engine in engines:
            outcomes += run_engine(args, engine)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print()
    for line in table(outcomes):
        print(line)
    failed = [o for o in outcomes if o.problems]
    for o in failed:
        print(f"FAILED {o.engine} {o.name}: {'; '.join(o.problems)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
