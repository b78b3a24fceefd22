"""``scripts/demo``: a software rollout, live: a DM server, real device agents, signed packages.

Everything runs on this machine, in a temporary directory, over HTTP on 127.0.0.1:

1. a publisher key and two versions of a small component, built and signed;
2. ``omadm server`` on SQLite, with the devices registered, the publisher's public key in
   the server's trust store (uploads must be signed by a trusted publisher) and the
   packages uploaded;
3. a few ``omadm agent run`` processes, each a device with its own tree and install root,
   listening for Package #0 on UDP;
4. three campaigns, each in two waves (one device first, then the others, released when the
   first succeeded): install version 1.0.0 without activating it
   (DownloadInstallInactive), activate it, then update it to 2.0.0. For each device the
   server queues a SCOMO job and wakes the device with a Package #0; the device downloads
   from a signed per-device URL, verifies, installs (or activates), and reports with a
   Generic Alert.

The table shows each job as the server sees it. Afterwards the demo prints what each device
runs and the commands to look around; it keeps the fleet running until Ctrl-C (``--once``:
exit at the end, 0 when every job succeeded).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table
from sqlalchemy import select

from omadm.agent.config import AccountConfig, AgentConfig, DeviceConfig, save_config
from omadm.package.build import build_package
from omadm.package.signing import generate_key, key_id, save_public_key
from omadm.server.artifacts.publishers import add_publisher, trust_store
from omadm.server.artifacts.service import add_artifact
from omadm.server.artifacts.storage import LocalArtifactStorage
from omadm.server.campaigns import create_campaign, get_campaign
from omadm.server.campaigns import start_campaign as start_campaign_
from omadm.server.registry import add_device
from omadm.server.store.engine import database_url, make_engine, session_factory
from omadm.server.store.models import DEFAULT_AUTHORITY_PK, Artifact, Campaign, Device, Job, JobKind, JobState

__all__ = ["main"]

COMPONENT = "com.example.hello"
SERVER_PASSWORD = "demo-server-secret"


@dataclass
class Fleet:
    root: Path
    server_dir: Path
    port: int
    devices: list[str]
    processes: list[subprocess.Popen[bytes]]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db(self) -> str:
        return database_url(None, self.server_dir)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_component(directory: Path, version: str, greeting: str) -> Path:
    """The source of a one-component package: a program, its greeting, lifecycle hooks."""
    comp = directory / COMPONENT
    (comp / "bin").mkdir(parents=True)
    (comp / "etc").mkdir()
    (comp / "hooks").mkdir()
    (comp / "etc" / "greeting").write_text(greeting + "\n")
    program = comp / "bin" / "hello"
    program.write_text(
        "#!/bin/sh\nprintf '%s (version " + version + ')\\n\' "$(cat "$(dirname "$0")/../etc/greeting")"\n'
    )
    program.chmod(0o755)
    for action in ("install", "activate", "deactivate", "remove"):
        hook = comp / "hooks" / action
        hook.write_text(
            "#!/bin/sh\nset -eu\n"
            'echo "$OMADM_ACTION $OMADM_COMPONENT_VERSION" >> "$OMADM_COMPONENT_STATE_DIR/hooks.log"\n'
        )
        hook.chmod(0o755)
    (directory / "omadm-package.toml").write_text(
        textwrap.dedent(
            f"""\
            [package]
            id = "com.example.hello-package"
            name = "Hello"
            version = "{version}"
            description = "The omadm demo component."

            [[component]]
            id = "{COMPONENT}"
            name = "Hello"
            version = "{version}"
            env_type = "archive"
            hooks = {{ install = "hooks/install", activate = "hooks/activate", \
            deactivate = "hooks/deactivate", remove = "hooks/remove" }}
            """
        )
    )
    return directory


def run_cli(*args: str, cwd: Path) -> None:
    subprocess.run([sys.executable, "-m", "omadm", *args], cwd=cwd, check=True, capture_output=True)


@contextmanager
def fleet(root: Path, count: int, console: Console) -> Iterator[Fleet]:
    """Server and agents as real processes; all stopped on the way out."""
    server_dir = root / "server"
    port = free_port()
    config = root / "omadm-server.toml"
    config.write_text(
        textwrap.dedent(
            f"""\
            [server]
            port = {port}
            data_dir = "{server_dir}"
            sweep_interval = 0.5
            notify_interval = 2.0
            report_grace = 60.0
            """
        )
    )
    processes: list[subprocess.Popen[bytes]] = []
    devices = [f"IMEI:35693803{i:07d}" for i in range(1, count + 1)]
    try:
        run_cli("server", "--config", str(config), "migrate", cwd=root)
        server_log = (root / "server.log").open("wb")
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "omadm", "server", "--config", str(config)],
                stdout=server_log,
                stderr=subprocess.STDOUT,
                cwd=root,
            )
        )
        fleet_ = Fleet(root, server_dir, port, devices, processes)
        wait_for(f"{fleet_.url}/health", processes[0], root / "server.log")
        console.print(f"server     {fleet_.url}/dm  (SQLite in {server_dir}; log {root / 'server.log'})")
        for i, device in enumerate(devices):
            udp = free_port(socket.SOCK_DGRAM)
            asyncio.run(register(fleet_, device, f"dev{i + 1}", f"secret-{i + 1}", f"udp://127.0.0.1:{udp}"))
            agent_dir = root / f"device{i + 1}"
            (agent_dir / "data" / "trust").mkdir(parents=True)
            shutil.copy(root / "publisher.pub.pem", agent_dir / "data" / "trust")
            save_config(
                AgentConfig(
                    device=DeviceConfig(id=device, manufacturer="Acme", model=f"Gateway-{i + 1}"),
                    data_dir=agent_dir / "data",
                    accounts=(
                        AccountConfig(
                            "omadm",
                            f"{fleet_.url}/dm",
                            f"dev{i + 1}",
                            f"secret-{i + 1}",
                            server_password=SERVER_PASSWORD,
                        ),
                    ),
                    poll_interval=30,
                    listen_udp=f"127.0.0.1:{udp}",
                    retries=3,
                    retry_backoff=0.5,
                ),
                agent_dir / "omadm.toml",
            )
            log = (agent_dir / "agent.log").open("wb")
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "omadm",
                        "agent",
                        "run",
                        "--config",
                        str(agent_dir / "omadm.toml"),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=agent_dir,
                )
            )
            console.print(f"device     {device}  (agent in {agent_dir}; Package #0 on udp {udp})")
        yield fleet_
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"the server did not start; its log:\n{log.read_text()}")


async def register(fleet_: Fleet, device_id: str, username: str, password: str, notify: str) -> None:
    engine = make_engine(fleet_.db)
    try:
        async with session_factory(engine)() as db, db.begin():
            await add_device(
                db,
                device_id,
                username=username,
                password=password,
                server_password=SERVER_PASSWORD,
                notify_address=notify,
            )
    finally:
        await engine.dispose()


async def trust(fleet_: Fleet, name: str, public_key: Path) -> None:
    """Put the publisher's key into the server's trust store, as 'omadm server publisher add' does."""
    engine = make_engine(fleet_.db)
    try:
        async with session_factory(engine)() as db, db.begin():
            await add_publisher(db, name, public_key.read_bytes(), authority_pk=DEFAULT_AUTHORITY_PK)
    finally:
        await engine.dispose()


async def upload(fleet_: Fleet, package: Path) -> Artifact:
    """Upload as 'omadm server artifact add' does: checked against the trust store."""
    engine = make_engine(fleet_.db)
    try:
        async with session_factory(engine)() as db:
            async with db.begin():
                publishers = await trust_store(db, authority_pk=DEFAULT_AUTHORITY_PK)
            storage = LocalArtifactStorage(fleet_.server_dir / "artifacts")
            return await add_artifact(db, storage, package.name, package, publishers=publishers)
    finally:
        await engine.dispose()


async def start_campaign(fleet_: Fleet, name: str, kind: JobKind, artifact: Artifact | None) -> int:
    """A campaign over every device, in two waves: one device first, then the rest.

    ``artifact`` for the package kinds; None for activate (the demo's component).
    """
    engine = make_engine(fleet_.db)
    try:
        async with session_factory(engine)() as db, db.begin():
            campaign = await create_campaign(
                db,
                name,
                kind,
                target={"devices": fleet_.devices},
                artifact_id=artifact.id if artifact is not None else None,
                component_id=None if artifact is not None else COMPONENT,
                waves=[1, "100%"],
                success_threshold=1.0,
                error_threshold=0.0,
            )
            await start_campaign_(db, campaign)
            return campaign.id
    finally:
        await engine.dispose()


async def campaign_rows(fleet_: Fleet, campaign_id: int) -> tuple[Campaign, list[tuple[str, Job]]]:
    engine = make_engine(fleet_.db)
    try:
        async with session_factory(engine)() as db:
            campaign = await get_campaign(db, campaign_id)
            rows = await db.execute(
                select(Device.device_id, Job)
                .join(Device, Device.id == Job.device_pk)
                .where(Job.campaign_id == campaign_id)
            )
            return campaign, [(device_id, job) for device_id, job in rows.all()]
    finally:
        await engine.dispose()


_STYLE = {
    "queued": "dim",
    "sent": "yellow",
    "accepted": "cyan",
    "succeeded": "green",
    "failed": "red",
    "timed-out": "red",
    "cancelled": "magenta",
}


def table(title: str, rows: list[tuple[str, Job]], started: float) -> Table:
    out = Table(title=f"{title}  ({time.monotonic() - started:.1f} s)", title_justify="left")
    out.add_column("device")
    out.add_column("job")
    out.add_column("state")
    out.add_column("result")
    out.add_column("detail", overflow="fold", max_width=60)
    for device_id, job in sorted(rows, key=lambda r: r[0]):
        style = _STYLE.get(job.state, "")
        detail = "" if job.state == JobState.SUCCEEDED.value else job.detail
        out.add_row(
            device_id, f"{job.id} {job.kind}", f"[{style}]{job.state}[/]", str(job.result_code or ""), detail
        )
    return out


def watch(console: Console, fleet_: Fleet, title: str, campaign_id: int, timeout: float) -> bool:
    """Show the campaign live until it ends; True when it finished with every job succeeded."""
    started = time.monotonic()
    campaign, rows = asyncio.run(campaign_rows(fleet_, campaign_id))

    def view() -> Table:
        heading = f"{title}: campaign {campaign.state}, wave {campaign.current_wave + 1} of 2"
        return table(heading, rows, started)

    with Live(view(), console=console, refresh_per_second=4, transient=False) as live:
        while time.monotonic() - started < timeout:
            campaign, rows = asyncio.run(campaign_rows(fleet_, campaign_id))
            live.update(view())
            if campaign.state in ("finished", "stopped", "cancelled", "paused"):
                break
            time.sleep(0.3)
    console.print()
    return campaign.state == "finished" and all(job.state == JobState.SUCCEEDED.value for _, job in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/demo", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    parser.add_argument(
        "--once", action="store_true", help="exit when the rollout is over (0: all succeeded)"
    )
    parser.add_argument("--devices", type=int, default=3, help="how many device agents to run (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory afterwards")
    args = parser.parse_args(argv)
    console = Console(highlight=False)
    root = Path(tempfile.mkdtemp(prefix="omadm-demo-"))
    console.rule("omadm: a software rollout over OMA DM 1.2 with SCOMO")
    ok = False
    try:
        key = generate_key()
        save_public_key(key.public_key(), root / "publisher.pub.pem")
        packages = root / "packages"
        packages.mkdir()
        v1 = build_package(
            write_component(root / "src-1", "1.0.0", "Hello from the omadm demo"),
            packages / "hello-1.0.0.omp",
            signing_key=key,
        )
        v2 = build_package(
            write_component(root / "src-2", "2.0.0", "Hello again, updated over the air"),
            packages / "hello-2.0.0.omp",
            signing_key=key,
        )
        public = root / "publisher.pub.pem"
        console.print(f"packages   {v1.id} {v1.version} and {v2.version}, signed (public key {public})")
        with fleet(root, args.devices, console) as fleet_:
            asyncio.run(trust(fleet_, "demo publisher", public))
            console.print(
                f"trusted    publisher 'demo publisher' (key {key_id(key)}): uploads must be signed by it"
            )
            first = asyncio.run(upload(fleet_, packages / "hello-1.0.0.omp"))
            second = asyncio.run(upload(fleet_, packages / "hello-2.0.0.omp"))
            console.rule("campaign 1: install 1.0.0, not yet active (wave 1: one device; wave 2: the others)")
            install = asyncio.run(start_campaign(fleet_, "hello 1.0.0", JobKind.INSTALL_INACTIVE, first))
            ok = watch(console, fleet_, "install 1.0.0 (inactive)", install, 90)
            if ok:
                console.rule("campaign 2: activate it, in two waves again")
                activate = asyncio.run(start_campaign(fleet_, "activate hello", JobKind.ACTIVATE, None))
                ok = watch(console, fleet_, "activate", activate, 90)
            if ok:
                console.rule("campaign 3: update to 2.0.0 (the same component, upgraded in place)")
                update = asyncio.run(start_campaign(fleet_, "hello 2.0.0", JobKind.UPDATE, second))
                ok = watch(console, fleet_, "update to 2.0.0", update, 90)
            console.rule("what the devices run now")
            for i, device in enumerate(fleet_.devices):
                installed = root / f"device{i + 1}" / "data" / "components" / "archive" / COMPONENT
                program = installed / "current" / "bin" / "hello"
                said = subprocess.run([str(program)], capture_output=True, text=True, check=False).stdout
                console.print(f"{device}: {said.strip() or '(not installed)'}")
            console.print(
                "[green]rollout complete[/]" if ok else "[red]rollout failed: see the tables above[/]"
            )
            if not args.once:
                explore(console, root, fleet_)
    finally:
        if args.keep or not args.once:
            console.print(f"files kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


def explore(console: Console, root: Path, fleet_: Fleet) -> None:
    """Print where to look, then keep the fleet running until Ctrl-C."""
    script = Path(sys.executable).with_name("omadm")
    omadm = str(script) if script.exists() else f"{sys.executable} -m omadm"
    server = f"{omadm} server --config {root / 'omadm-server.toml'}"
    made = subprocess.run(
        [
            *omadm.split(),
            "server",
            "--config",
            str(root / "omadm-server.toml"),
            "token",
            "add",
            "demo",
            "--role",
            "admin",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    token = made.stdout.split()[-1] if made.returncode == 0 and made.stdout.split() else "<token>"
    ctl = f"OMADM_URL={fleet_.url} OMADM_TOKEN={token} {omadm} ctl"
    console.rule("look around (the fleet keeps running; Ctrl-C to stop)")
    console.print(
        f"{ctl} campaigns list\n"
        f"{ctl} campaigns show 3\n"
        f"{ctl} devices show {fleet_.devices[0]}\n"
        f"{fleet_.url}/console  (the web console: log in with the token above)\n"
        f"{fleet_.url}/api/docs  (the REST API; the token above authorises it)\n"
        f"{server} job list\n"
        f"{server} device show {fleet_.devices[0]}\n"
        f"{server} job add {fleet_.devices[0]} deactivate --component {COMPONENT}\n"
        f"{omadm} agent components --config {root / 'device1' / 'omadm.toml'}\n"
        f"logs: {root / 'server.log'}, {root / 'device1' / 'agent.log'}",
        soft_wrap=True,
    )
    try:
        while all(p.poll() is None for p in fleet_.processes):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
