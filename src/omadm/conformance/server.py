"""``omadm conformance server URL``: omadm plays a device against a DM server under test.

The runner registers nothing on the server: the device (``--device-id``, ``--username``,
``--password``, ``--auth``) must be known to it already, and for SCOMO cases a package the
server can install must be at hand (its trigger file says how to queue the install). Every
SERVER case of the catalogue runs in turn against one simulated device whose state (tree,
nonces, SCOMO jobs) carries over from case to case, as a real device's would; each case's
messages go to the report.

Exit status, as ``omadm conformance device``: 0 when every applicable case passed, 1 when one
failed, 2 when none failed but one was inconclusive (a run that could not decide is not a pass)
or for a usage error (a bad option, an unreadable ICS or trigger file).
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from omadm.protocol.codes import AuthType

from .ics import Ics, IcsError, load_ics
from .model import Case, CaseResult, Role, Verdict, cases_for, load_all, select
from .runner import Progress, run_cases
from .server_harness import ServerCaseContext, ServerTarget
from .server_triggers import TriggerError, TriggerRunner, load_triggers

__all__ = ["ServerOptions", "command", "exit_code", "reachable", "run_server_suite"]

_SCHEMES = {"md5": AuthType.MD5, "hmac": AuthType.HMAC, "basic": AuthType.BASIC}


class AuthChoice(StrEnum):
    md5 = "md5"
    hmac = "hmac"
    basic = "basic"


class EncodingChoice(StrEnum):
    xml = "xml"
    wbxml = "wbxml"


class ServerOptions:
    """Everything a run needs, already checked (the CLI and tests build one)."""

    def __init__(
        self,
        url: str,
        *,
        device_id: str,
        username: str,
        password: str,
        auth: str = "md5",
        server_id: str = "omadm",
        server_password: str = "",
        trigger_file: Path | None = None,
        values: dict[str, str] | None = None,
        ics: Ics | None = None,
        only: str | None = None,
        encoding: str = "xml",
        timeout: float = 60.0,
    ) -> None:
        if auth not in _SCHEMES:
            raise ValueError(f"--auth must be one of {', '.join(_SCHEMES)}, not {auth!r}")
        if encoding not in ("xml", "wbxml"):
            raise ValueError(f"--encoding must be xml or wbxml, not {encoding!r}")
        self.url = url
        self.device_id = device_id
        self.username = username
        self.password = password
        self.auth = auth
        self.server_id = server_id
        self.server_password = server_password
        self.trigger_file = trigger_file
        self.values = dict(values or {})
        self.ics = ics or Ics()
        self.only = only
        self.encoding = encoding
        self.timeout = timeout

    def cases(self) -> list[Case]:
        return select(cases_for(Role.SERVER), self.only)

    def triggers(self) -> TriggerRunner:
        triggers, variables = load_triggers(self.trigger_file) if self.trigger_file else ({}, {})
        return TriggerRunner(triggers, {**variables, **self.values})


async def run_server_suite(options: ServerOptions, *, progress: Progress | None = None) -> list[CaseResult]:
    """Run the selected SERVER cases against ``options.url``; one result per case."""
    target = ServerTarget(
        options.url,
        device_id=options.device_id,
        username=options.username,
        password=options.password,
        auth_type=_SCHEMES[options.auth],
        server_id=options.server_id,
        server_password=options.server_password,
        triggers=options.triggers(),
    )

    async def make_context(case: Case, encoding: str) -> ServerCaseContext:
        return ServerCaseContext(target, encoding)

    try:
        return await run_cases(
            options.cases(),
            encoding=options.encoding,
            ics=options.ics,
            make_context=make_context,
            timeout=options.timeout,
            progress=progress,
        )
    finally:
        await target.close()


def reachable(url: str, timeout: float = 10.0) -> str | None:
    """Why ``url`` cannot be tested (nothing answers HTTP there), or None when something does.

    Any HTTP answer will do (a DM server refuses an empty POST): this only keeps a typo in the
    URL or a server that is down from turning every case into an inconclusive.
    """
    try:
        httpx.post(url, content=b"", timeout=timeout)
    except httpx.HTTPError as exc:
        return f"nothing answers HTTP at {url}: {exc or type(exc).__name__}"
    return None


def exit_code(results: Sequence[CaseResult]) -> int:
    """1 when a case failed, 2 when none failed but one was inconclusive, else 0 (as ``device``)."""
    if any(r.verdict is Verdict.FAIL for r in results):
        return 1
    return 2 if any(r.verdict is Verdict.INCONCLUSIVE for r in results) else 0


class _PlainProgress:
    """One line per case, for when the rich progress of ``reports`` is not available."""

    def started(self, case: Case, encoding: str) -> None:
        pass

    def finished(self, result: CaseResult) -> None:
        line = f"{result.verdict.value.upper():<15} {result.case.id} [{result.encoding}] {result.case.title}"
        if result.verdict is Verdict.FAIL:
            line += f"\n    expected {result.expected}\n    seen     {result.seen}"
        elif result.reason:
            line += f"\n    {result.reason}"
        typer.echo(line)


def _reports() -> Any:
    try:
        return importlib.import_module("omadm.conformance.reports")
    except ModuleNotFoundError as exc:
        if exc.name != "omadm.conformance.reports":
            raise
        return None


def _parse_values(pairs: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise typer.BadParameter(f"--set takes NAME=VALUE, not {pair!r}", param_hint="--set")
        values[name.strip()] = value
    return values


def command(  # noqa: PLR0917 - Typer maps each parameter to an option
    url: Annotated[str, typer.Argument(help="The DM server's URL, e.g. http://host:8080/dm")],
    device_id: Annotated[str, typer.Option("--device-id", help="The DevId the server knows the device by.")],
    username: Annotated[str, typer.Option("--username", help="The device's user name (CLCRED).")],
    password: Annotated[str, typer.Option("--password", help="The device's password (CLCRED).")],
    auth: Annotated[AuthChoice, typer.Option("--auth", help="md5, hmac or basic.")] = AuthChoice.md5,
    trigger: Annotated[
        Path | None,
        typer.Option("--trigger", help="TOML file: how to make the server act (REST calls or commands)."),
    ] = None,
    ics: Annotated[
        Path | None, typer.Option("--ics", help="TOML ICS: the optional features claimed.")
    ] = None,
    only: Annotated[
        str | None, typer.Option("--only", help="Only cases whose id matches (globs, comma-separated).")
    ] = None,
    encoding: Annotated[
        EncodingChoice, typer.Option("--encoding", help="xml or wbxml.")
    ] = EncodingChoice.xml,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write JUnit XML, Markdown and HTML here.")
    ] = None,
    server_id: Annotated[
        str, typer.Option("--server-id", help="The server's ServerID (device ACLs).")
    ] = "omadm",
    server_password: Annotated[
        str,
        typer.Option(
            "--server-password", help="SRVCRED: the device then requires the server to authenticate."
        ),
    ] = "",
    set_values: Annotated[
        list[str] | None, typer.Option("--set", help="NAME=VALUE for a trigger placeholder (repeatable).")
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds before a case is inconclusive.")
    ] = 60.0,
) -> None:
    """Test a DM server: omadm plays a device (SERVER cases: DM-SRV-*, SCOMO-SRV-*, IOP-*)."""
    load_all()  # the cases declare their capabilities: the ICS is checked against them
    try:
        loaded_ics = load_ics(ics)
        options = ServerOptions(
            url,
            device_id=device_id,
            username=username,
            password=password,
            auth=auth.value,
            server_id=server_id,
            server_password=server_password,
            trigger_file=trigger,
            values=_parse_values(set_values or []),
            ics=loaded_ics,
            only=only,
            encoding=encoding.value,
            timeout=timeout,
        )
        options.triggers()  # read the trigger file now: a mistake is a usage error, not 50 inconclusives
    except (IcsError, TriggerError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if not options.cases():
        typer.echo(f"error: no SERVER case matches --only {only!r}", err=True)
        raise typer.Exit(2)
    problem = reachable(url)
    if problem is not None:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)
    reports = _reports()
    if reports is not None:
        from rich.console import Console  # noqa: PLC0415

        console = Console()
        with reports.RichProgress(console, total=len(options.cases())) as progress:
            results = asyncio.run(run_server_suite(options, progress=progress))
        reports.print_summary(results, console)
    else:
        results = asyncio.run(run_server_suite(options, progress=_PlainProgress()))
        counts = {v: sum(r.verdict is v for r in results) for v in Verdict}
        typer.echo(", ".join(f"{n} {v.value}" for v, n in counts.items()))
    if report is not None:
        if reports is None:
            typer.echo("warning: reports are not available in this installation; --report ignored", err=True)
        else:
            title = f"omadm conformance: DM server at {url} ({encoding.value})"
            try:
                written = reports.write_all(results, report, title=title, ics=loaded_ics)
            except OSError as exc:  # reports.ReportError names the directory and the reason
                typer.echo(f"error: the report could not be written: {exc}", err=True)
                raise typer.Exit(2) from None
            for path in written:
                typer.echo(f"report: {path}")
    sys.stdout.flush()
    raise typer.Exit(exit_code(results))
