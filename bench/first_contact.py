"""First contact: the server's CPU per first-contact DM session, with a load generator that costs little.

Run ``python bench/first_contact.py`` (both engines, 2,000 devices, 32 at a time, about a
minute). Each device makes its very first session: Pkg#1 without a nonce (the server
challenges it), Pkg#1 with MD5 credentials, Pkg#3 with the Results of the server's Gets
(DevDetail, the SCOMO inventory): three POSTs, four DM messages counting the challenge. The
server is ``bench/server.py``'s omadm endpoint (the app ``omadm server`` serves, one uvicorn
worker) on a freshly migrated database with the devices registered; the load comes from this
process over raw keep-alive HTTP/1.1 connections (``bench/server.py``'s ``RawConnection``), so
that the figure is the server's: its CPU comes from ``/proc/<pid>`` (all threads).

``bench/fleet.py`` drives the same sessions with ``omadm sim`` (httpx, WBXML, admission
control under a storm); this script is the before/after instrument for the server's own cost:
it needs nothing but the server app, so it runs against an older checkout too
(``PYTHONPATH=<checkout>/src python bench/first_contact.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import server as bench
from omadm.protocol.auth import HMAC_HEADER
from omadm.protocol.codec import Encoding
from omadm.protocol.codes import AuthType
from omadm.protocol.session import ClientConfig, ClientSession, Credentials, Outgoing


async def first_contacts(
    port: int, pid: int, devices: int, clients: int, encoding: Encoding
) -> dict[str, Any]:
    """Every device's first session, ``clients`` at a time; the server's CPU over the run."""
    loop = asyncio.get_running_loop()
    waiting = list(range(devices))
    counts = {"sessions": 0, "posts": 0}

    async def client() -> None:
        _, connection = await loop.create_connection(lambda: bench.RawConnection(port), bench.HOST, port)
        tree = bench.inventory_tree()
        try:
            while waiting:
                index = waiting.pop()
                session = ClientSession(
                    ClientConfig(
                        device_id=bench.device_id(index),
                        server_uri=f"http://{bench.HOST}:{port}/dm",
                        credentials=Credentials(AuthType.MD5, bench.username(index), bench.PASSWORD),
                        client_nonce=b"",  # never talked to this server: it challenges
                        session_id="1",
                        devinfo=bench.devinfo(index),
                        encoding=encoding,
                    ),
                    tree,
                )
                out: Outgoing | None = session.start()
                while out is not None:
                    reply = await connection.post(
                        bench._target(out.url), out.body, out.content_type, out.headers
                    )
                    counts["posts"] += 1
                    if reply.status != 200:
                        raise bench.BenchError(f"HTTP {reply.status}: {reply.body[:300]!r}")
                    session.receive(
                        reply.body,
                        hmac_header=reply.headers.get(HMAC_HEADER),
                        content_type=reply.headers.get("content-type"),
                    )
                    out = session.reply()
                if session.commands_received == 0:  # authenticated devices are asked for DevDetail
                    raise bench.BenchError(f"{bench.device_id(index)}: the server sent no command")
                counts["sessions"] += 1
        finally:
            connection.close()

    cpu, threads, started = bench.process_cpu(pid) or 0.0, bench.thread_cpu(pid), time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - started
    used = (bench.process_cpu(pid) or 0.0) - cpu
    after = bench.thread_cpu(pid)
    sessions = counts["sessions"]
    return {
        "sessions": sessions,
        "posts": counts["posts"],
        "wall": wall,
        "per_second": sessions / wall,
        "cpu_ms_per_session": 1000 * used / sessions,
        "threads_ms_per_session": {
            name: 1000 * (value - threads.get(name, 0.0)) / sessions
            for name, value in after.items()
            if value - threads.get(name, 0.0) > 0.005
        },
    }


def run(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"omadm-first-contact-{kind}-"))
    profile = workdir / "server.pstats" if args.profile else None
    encoding = Encoding(args.encoding)
    with bench.database(kind, workdir, args.pg_admin) as url:
        bench.prepare(url, args.devices)
        server = bench.start_server("omadm", url, workdir, log="info", profile=profile)
        try:
            pid = server.process.pid
            figures = asyncio.run(first_contacts(server.port, pid, args.devices, args.clients, encoding))
        finally:
            server.stop()
    if profile is not None:
        # The main thread's CPU under cProfile, by where it goes (bench/server.py's report).
        figures["profile"] = bench.profile_report(profile, figures["posts"])
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32, help="sessions at once [32]")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--encoding", choices=("xml", "wbxml"), default="xml")
    parser.add_argument("--profile", action="store_true", help="also profile the server's main thread")
    parser.add_argument("--pg-admin", default=bench.DEFAULT_PG_ADMIN)
    args = parser.parse_args(argv)
    import omadm  # noqa: PLC0415 - which checkout is measured

    print(f"omadm from {Path(omadm.__file__).parent}, nproc {os.cpu_count()}")
    print(
        f"{args.devices:,} {args.encoding.upper()} devices, {args.clients} at a time; server CPU from /proc"
    )
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    for kind in kinds:
        for number in range(1, args.runs + 1):
            figures = run(kind, args)
            threads = ", ".join(f"{k} {v:.2f}" for k, v in sorted(figures["threads_ms_per_session"].items()))
            print(
                f"{kind:<10} run {number}: {figures['sessions']:,} sessions ({figures['posts']:,} POSTs) "
                f"in {figures['wall']:.1f} s: {figures['per_second']:.0f} sessions/s; server CPU "
                f"{figures['cpu_ms_per_session']:.2f} ms per session ({threads})"
            )
            for line in figures.get("profile", []):
                print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
