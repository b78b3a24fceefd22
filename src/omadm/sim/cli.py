"""``omadm sim``: the fleet simulator's commands. Glue only: the logic is in the modules they call.

One Typer app, one function per command. The server and the token are found as ``omadm ctl``
finds them: ``--server``/``--token``, else ``OMADM_URL``/``OMADM_TOKEN``, else the ``[ctl]``
table of ``OMADM_CTL_CONFIG`` (default ``~/.config/omadm/ctl.toml``), else
``http://127.0.0.1:8700``. Exit codes: 0 done; 1 the server refused (its reason is printed);
2 usage (bad options, a fleet file that exists or cannot be written); 4 the server could not
be reached.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from omadm.ctl import DEFAULT_URL, EXIT_REFUSED, EXIT_UNREACHABLE
from omadm.ctl import _config_file as ctl_config_file

from .fleet import AUTH_SCHEMES, Fleet, FleetError, save_fleet
from .register import MAX_BATCH, RegistrationError, register_fleet
from .run import DOWNLOAD_MODES

__all__ = ["EXIT_REFUSED", "EXIT_UNREACHABLE", "EXIT_USAGE", "sim_app"]

EXIT_USAGE = 2

sim_app = typer.Typer(
    help="Fleet simulator: register devices in bulk and drive them against any DM server.",
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _fail(code: int, message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@sim_app.command("register")
def register_command(
    count: Annotated[int, typer.Option("--count", min=1, help="How many devices.", show_default=False)],
    prefix: Annotated[
        str, typer.Option("--prefix", help="DevId prefix; IMEI: prefixes are padded to 15 digits.")
    ] = "IMEI:35",
    server: Annotated[
        str | None,
        typer.Option(
            "--server", envvar="OMADM_URL", help=f"The omadm server [{DEFAULT_URL}].", show_default=False
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="OMADM_TOKEN", help="An API token (operator).", show_default=False),
    ] = None,
    auth: Annotated[str, typer.Option("--auth", help="md5, hmac or basic.")] = "md5",
    out: Annotated[Path, typer.Option("--out", "-o", help="The fleet file to write.")] = Path("fleet.json"),
    start: Annotated[int, typer.Option("--start", min=0, help="The first counter value.")] = 1,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=MAX_BATCH, help="Devices per request.")
    ] = MAX_BATCH,
    dm_url: Annotated[
        str | None,
        typer.Option("--dm-url", help="The DM URL devices use [what the server says].", show_default=False),
    ] = None,
    server_id: Annotated[
        str | None,
        typer.Option(
            "--server-id", help="The ServerID devices expect [what the server says].", show_default=False
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing fleet file.")] = False,
    notify: Annotated[
        int | None,
        typer.Option(
            "--notify",
            metavar="PORT",
            min=1,
            max=65535,
            help="Give each device a Package #0 address udp://127.A.B.C:PORT (run listens there).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Register COUNT new devices on an omadm server and write their fleet file.

    DevIds are PREFIX and a counter from START (IMEI:35 -> IMEI:350000000000001...);
    passwords and server passwords are random. The devices join the token's management
    authority; the fleet file records its DM URL and ServerID for `omadm sim run`. The file
    holds the passwords (mode 0600) and is not overwritten without --force: the devices
    of an older file would be lost to the simulator.
    """
    if auth not in AUTH_SCHEMES:
        _fail(EXIT_USAGE, f"--auth is one of {', '.join(AUTH_SCHEMES)}, not {auth!r}")
    if out.exists() and not force:
        _fail(
            EXIT_USAGE, f"{out} exists: give another --out, or --force to replace it (its devices are lost)"
        )
    directory = out.parent
    if not directory.is_dir() or not os.access(directory, os.W_OK):
        _fail(EXIT_USAGE, f"cannot write {out}: {directory} is not a writable directory")
    file = ctl_config_file()
    url = (server or file.get("url") or DEFAULT_URL).rstrip("/")

    def progress(done: int, total: int) -> None:
        typer.echo(f"registered {done} of {total} devices", err=True)

    try:
        fleet = asyncio.run(
            register_fleet(
                url,
                token or file.get("token") or "",
                count,
                prefix,
                auth,
                start=start,
                batch_size=batch_size,
                dm_url=dm_url,
                server_id=server_id,
                notify_port=notify,
                on_batch=progress,
            )
        )
    except RegistrationError as exc:
        if exc.registered is not None:
            _save(exc.registered, out)
            typer.echo(f"the {len(exc.registered.devices)} devices registered before are in {out}", err=True)
        _fail(EXIT_UNREACHABLE if exc.unreachable else EXIT_REFUSED, str(exc))
    _save(fleet, out)
    first, last = fleet.devices[0].device_id, fleet.devices[-1].device_id
    typer.echo(
        f"registered {len(fleet.devices)} devices ({first} .. {last}) on {url}\n"
        f"fleet file: {out} (DM URL {fleet.dm_url}, ServerID {fleet.server_id})"
    )


def _save(fleet: Fleet, out: Path) -> None:
    try:
        save_fleet(fleet, out)
    except FleetError as exc:
        _fail(EXIT_USAGE, f"{exc}; the devices are registered but their secrets are lost")


@sim_app.command("run")
def run_command(
    fleet_file: Annotated[
        Path, typer.Argument(metavar="FLEET.json", help="A fleet file (omadm sim register).")
    ],
    profile_file: Annotated[Path, typer.Option("--profile", help="The profile (TOML; see examples/sim/).")],
    duration: Annotated[float, typer.Option("--duration", help="Seconds to run.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON (stdout).")] = False,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Sessions (and HTTP connections) at once.")
    ] = 100,
    downloads: Annotated[
        str,
        typer.Option(
            "--downloads",
            help=f"{' or '.join(DOWNLOAD_MODES)}; skip: no fetching; real: fetch and verify packages.",
        ),
    ] = "skip",
    seed: Annotated[
        int | None, typer.Option("--seed", help="Overrides the profile's seed.", show_default=False)
    ] = None,
    processes: Annotated[
        int,
        typer.Option("--processes", min=1, help="Spread the fleet over this many processes (cores)."),
    ] = 1,
) -> None:
    """Drive every device of FLEET.json against its DM server for --duration seconds.

    Live progress goes to stderr; the summary (a table, or JSON with --json) to stdout.
    Ctrl-C ends the run early and still prints the summary.
    """
    from rich.console import Console  # noqa: PLC0415 - only this command needs rich
    from rich.live import Live  # noqa: PLC0415

    from .fleet import load_fleet  # noqa: PLC0415
    from .multi import run_processes  # noqa: PLC0415
    from .profile import ProfileError, load_profile  # noqa: PLC0415
    from .run import RunError, RunOptions, progress_line, summary_table  # noqa: PLC0415

    try:
        fleet = load_fleet(fleet_file)
        profile = load_profile(profile_file)
        options = RunOptions(duration, concurrency, downloads, seed, processes)
        options.check(profile)
    except (FleetError, ProfileError, RunError) as exc:
        _fail(EXIT_USAGE, str(exc))
    err = Console(stderr=True)
    try:
        with Live(console=err, refresh_per_second=4, transient=False) as live:
            summary = run_processes(
                fleet, profile, options, on_progress=lambda s: live.update(progress_line(s, duration))
            )
    except RunError as exc:  # found when the run starts: notification addresses, a port taken
        _fail(EXIT_USAGE, str(exc))
    if as_json:
        typer.echo(json.dumps(summary.to_json(), indent=2))
    else:
        Console().print(summary_table(summary))
