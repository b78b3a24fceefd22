"""The device agent's idle memory: VmRSS of a real ``omadm agent run`` after its first session.

Run ``python bench/agent_rss.py``. It makes a temporary directory, starts ``omadm server`` on
SQLite there (unless ``--server URL`` names one already running, or ``--no-server`` points the
agent at a closed port), registers a device, sets the agent up with ``omadm agent init`` (a
small tree: DevInfo, DevDetail, DMAcc, SCOMO; a UDP listener for Package #0), starts ``omadm
agent run`` and waits for its first session to end. Then the agent is idle: it waits for the
next poll or a notification. The figure is ``VmRSS`` from ``/proc/<pid>/status`` once it has
stayed put (and the process used no CPU) for ``--settle`` seconds.

Why idle after a session: a device spends nearly all its life there, and that resident set
is what the agent costs the device's other software; the peak of a session is printed
beside it (``VmHWM``). The target of issue 17 is 35 MB; the script exits 1 above ``--limit``
so that it can be used as a check, 0 otherwise. ``--importtime`` also lists the modules
that cost the agent most to import (``python -X importtime``), the usual place to save
memory.

Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DEVICE_ID = "IMEI:490154203237518"
USERNAME = "rss-device"
PASSWORD = "rss-secret"
SERVER_PASSWORD = "rss-server-secret"
HOST = "127.0.0.1"
#: The agent's log line at the end of a session (runner's SessionReport.line()).
SESSION_LINE = re.compile(r"session \d+ with \S+: .*")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def omadm(*args: str, python: str = sys.executable) -> list[str]:
    """The ``omadm`` command line of an interpreter (what the console script runs)."""
    return [python, "-m", "omadm", *args]


def status(pid: int) -> dict[str, int]:
    """The ``kB`` fields of ``/proc/<pid>/status`` (VmRSS, VmHWM, RssAnon, RssFile...)."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            fields[name] = int(parts[0])
    return fields


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (fields 14 and 15 of ``/proc/<pid>/stat``)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"error: {what} failed ({done.returncode}): {done.stderr.strip() or done.stdout}")


@contextmanager
def dm_server(workdir: Path) -> Iterator[str]:
    """A real ``omadm server`` on SQLite with the device registered; yields its DM URL."""
    data = workdir / "server"
    port = free_port()
    data.mkdir()
    run(omadm("server", "--data-dir", str(data), "migrate"), "omadm server migrate")
    run(
        omadm(
            "server",
            "--data-dir",
            str(data),
            "device",
            "add",
            DEVICE_ID,
            "--username",
            USERNAME,
            "--password",
            PASSWORD,
            "--server-password",
            SERVER_PASSWORD,
        ),
        "omadm server device add",
    )
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen(
        omadm("server", "--data-dir", str(data), "--port", str(port)),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise SystemExit(f"error: omadm server exited: {(workdir / 'server.log').read_text()}")
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("error: omadm server did not listen within 60 s") from None
                time.sleep(0.2)
        yield f"http://{HOST}:{port}/dm"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def measure(
    workdir: Path, url: str, *, python: str, settle: float, timeout: float, importtime: bool
) -> dict[str, int]:
    """Start ``omadm agent run`` against ``url``; VmRSS and friends once it is idle after a session."""
    config = workdir / "omadm.toml"
    run(
        omadm(
            "agent",
            "init",
            "--config",
            str(config),
            "--server",
            url,
            "--device-id",
            DEVICE_ID,
            "--username",
            USERNAME,
            "--password",
            PASSWORD,
            "--server-password",
            SERVER_PASSWORD,
            "--data-dir",
            str(workdir / "agent"),
            "--listen-udp",
            f"{HOST}:{free_port(socket.SOCK_DGRAM)}",
            python=python,
        ),
        "omadm agent init",
    )
    log_path = workdir / "agent.log"
    command = omadm("agent", "run", "--config", str(config), python=python)
    if importtime:
        command.insert(1, "-Ximporttime")
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not SESSION_LINE.search(log_path.read_text(errors="replace")):
            if process.poll() is not None:
                raise SystemExit(f"error: omadm agent run exited: {log_path.read_text()}")
            if time.monotonic() > deadline:
                raise SystemExit(f"error: no session ended within {timeout:.0f} s: {log_path.read_text()}")
            time.sleep(0.1)
        # Idle: the resident set and the CPU time stay put for `settle` seconds.
        quiet_since, last = time.monotonic(), (status(process.pid)["VmRSS"], cpu_ticks(process.pid))
        while time.monotonic() - quiet_since < settle:
            if time.monotonic() > deadline:
                raise SystemExit(f"error: the agent was not idle within {timeout:.0f} s")
            time.sleep(0.2)
            now = (status(process.pid)["VmRSS"], cpu_ticks(process.pid))
            if now != last:
                quiet_since, last = time.monotonic(), now
        figures = status(process.pid)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    session = SESSION_LINE.search(log_path.read_text(errors="replace"))
    print(f"session: {session.group(0) if session else '?'}")
    if importtime:
        print_importtime(log_path.read_text(errors="replace"))
    return figures


def print_importtime(log: str, top: int = 25) -> None:
    """The top-level packages that cost the agent most to import (cumulative microseconds)."""
    costs: dict[str, int] = {}
    for line in log.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if match and len(match.group(2)) == 1:  # one space: imported by the agent itself
            name = match.group(3).split(".")[0]
            costs[name] = costs.get(name, 0) + int(match.group(1))
    print(f"imports at agent start, top {top} (cumulative ms):")
    for name, micros in sorted(costs.items(), key=lambda item: -item[1])[:top]:
        print(f"  {micros / 1000:8.1f}  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--server", metavar="URL", help="a DM server already running, device registered")
    where.add_argument(
        "--no-server", action="store_true", help="point the agent at a closed port (its session fails)"
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the agent's interpreter, e.g. a venv with 'pip install omadm' alone [this one]",
    )
    parser.add_argument("--settle", type=float, default=2.0, help="seconds without change = idle [2]")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up after this many seconds [60]")
    parser.add_argument("--limit", type=float, default=35.0, help="exit 1 above this many MB [35]")
    parser.add_argument("--importtime", action="store_true", help="list what the agent imports at start")
    args = parser.parse_args(argv)
    if not Path("/proc/self/status").exists():
        parser.error("needs Linux's /proc")
    options: dict[str, Any] = {
        "python": args.python,
        "settle": args.settle,
        "timeout": args.timeout,
        "importtime": args.importtime,
    }
    workdir = Path(tempfile.mkdtemp(prefix="omadm-agent-rss-"))
    try:
        if args.server:
            figures = measure(workdir, args.server, **options)
        elif args.no_server:
            url = f"http://{HOST}:{free_port()}/dm"
            figures = measure(workdir, url, **options)
        else:
            with dm_server(workdir) as url:
                figures = measure(workdir, url, **options)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rss = figures["VmRSS"] / 1024
    anon, file = figures.get("RssAnon", 0) / 1024, figures.get("RssFile", 0) / 1024
    print(
        f"agent idle VmRSS: {rss:.1f} MB (peak VmHWM {figures['VmHWM'] / 1024:.1f} MB; "
        f"RssAnon {anon:.1f} MB, RssFile {file:.1f} MB)"
    )
    print(f"the agent ran as {args.python} -m omadm agent run")
    if rss > args.limit:
        print(f"above the limit of {args.limit:.0f} MB")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
