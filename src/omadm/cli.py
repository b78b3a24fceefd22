"""The ``omadm`` command line.

This module is glue only: it reads and writes bytes, maps errors to exit codes and
messages, and leaves every protocol decision to :mod:`omadm.protocol` (decoding and
validation in :mod:`~omadm.protocol.codec`, summaries and lint in
:mod:`~omadm.protocol.summary`). User errors end with one ``error: ...`` line on stderr
and a documented exit code, never a traceback; a traceback means a bug.

Commands that grow their own families (``agent``, ``server``, ``mo``, ``ctl``, ``sim``) are
separate Typer apps attached with ``add_typer``; single actions such as ``codec`` are plain
commands. ``main`` imports only the family the command line names (``omadm agent ...``
does not import the server's FastAPI and SQLAlchemy: about a second less per start of
the agent on a small device); ``app`` is the whole command line, every family attached.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from . import __version__
from .mo import registry as mo_registry
from .protocol import summary
from .protocol.codec import Encoding
from .protocol.errors import ProtocolError

__all__ = ["EXIT_INVALID", "EXIT_NEEDS_EXTRA", "EXIT_OK", "EXIT_USAGE", "app", "main"]  # noqa: F822 - app: module __getattr__

#: Success (``--check``: the input is valid, possibly with warnings).
EXIT_OK = 0
#: The input is not an acceptable document: any ``ProtocolError`` (bad XML/WBXML, a
#: message the model refuses, a tree WBXML cannot encode).
EXIT_INVALID = 1
#: The command could not run: unreadable input, unwritable output, bad options (the
#: same code Click uses for usage errors).
EXIT_USAGE = 2
#: The command needs an optional part of omadm that is not installed (``omadm server`` without
#: the ``server`` extra): one line says what to ``pip install``.
EXIT_NEEDS_EXTRA = 3

STDIO = "-"

_root = typer.Typer(
    name="omadm",
    help="OMA DM 1.2 with SCOMO: DM server, device agent, packages, operator CLI, message codec.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # a bug's traceback must not dump 64 KB payloads
    rich_markup_mode=None,  # help texts show brackets and layout literally
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"omadm {__version__}")
        raise typer.Exit(EXIT_OK)


@_root.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", help="Show the version and exit.", callback=_version, is_eager=True),
    ] = False,
) -> None:
    """OMA DM 1.2 with SCOMO: DM server, device agent, packages, operator CLI, message codec."""


@_root.command("codec")
def codec_command(
    source: Annotated[
        str,
        typer.Argument(metavar="INPUT", help="File to read, or - for standard input.", show_default=False),
    ],
    to: Annotated[
        Encoding | None,
        typer.Option(
            "--to",
            case_sensitive=False,
            help="Output encoding. Default: the other one (XML -> WBXML, WBXML -> XML).",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            metavar="OUTPUT",
            help="File to write, or - for standard output (the default).",
            show_default=False,
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="Validate and summarize the input instead of converting it."),
    ] = False,
) -> None:
    """Convert a document between XML and WBXML, or check it.

    The input format is detected from its first bytes. Supported inputs:

    \b
      * SyncML DM 1.2 messages (<SyncML> root), XML or WBXML: decoded and
        validated by the message model, then re-encoded (XML pretty-printed);
      * DM TNDS / DDF documents (<MgmtTree> root, namespace syncml:dmddf1.2
        or none) and other SyncML-vocabulary XML: converted element by
        element, checked for well-formedness only.

    WBXML is binary: it is not written to a terminal; use -o or a redirection.

    With --check, print a one-line summary (OK: ...) and warnings about what a
    strict DM 1.2 sender would not do (version values, CmdIDs, Meta/Format case,
    Status for the SyncHdr not first, no Final).

    \b
    Exit codes: 0 done (--check: valid, warnings included)
                1 invalid input (error: FILE: reason)
                2 unreadable input, unwritable output or bad options
    """
    name, data = _read(source)
    if check:
        if to is not None or output is not None:
            _fail(EXIT_USAGE, "error: --check only reports; it takes neither --to nor -o")
        _check(name, data)
        return
    try:
        document = summary.load(data)
        target = to if to is not None else _other(document.encoding)
        out = summary.convert(document, target)
    except ProtocolError as exc:
        _fail(EXIT_INVALID, f"error: {name}: {exc}")
    _write(output, out, binary=target is Encoding.WBXML)


def _check(name: str, data: bytes) -> None:
    try:
        document = summary.load(data)
    except ProtocolError as exc:
        _fail(EXIT_INVALID, f"error: {name}: {exc}")
    if document.message is not None:
        for problem in summary.lint(document.message, data, document.encoding):
            typer.echo(f"warning: {name}: {problem}", err=True)
    typer.echo(f"OK: {summary.describe_document(document)}")


def _other(encoding: Encoding) -> Encoding:
    return Encoding.WBXML if encoding is Encoding.XML else Encoding.XML


def _read(source: str) -> tuple[str, bytes]:
    """The display name and bytes of the input; unreadable input ends the command."""
    if source == STDIO:
        return "<stdin>", sys.stdin.buffer.read()
    try:
        return source, Path(source).read_bytes()
    except OSError as exc:
        _fail(EXIT_USAGE, f"error: cannot read {source}: {exc.strerror or exc}")


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def _write(output: str | None, data: bytes, *, binary: bool) -> None:
    """Write bytes to the output file or, binary-safe, to standard output."""
    if output is not None and output != STDIO:
        try:
            Path(output).write_bytes(data)
        except OSError as exc:
            _fail(EXIT_USAGE, f"error: cannot write {output}: {exc.strerror or exc}")
        return
    if binary and _stdout_is_terminal():
        _fail(
            EXIT_USAGE,
            "error: refusing to write binary WBXML to a terminal; use -o FILE or redirect standard output",
        )
    sys.stdout.flush()
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error of ours, and no traceback at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(EXIT_OK) from None


def _fail(code: int, message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(code)


mo_app = typer.Typer(
    name="mo",
    help="Management objects (DevInfo, DevDetail, DMAcc, ...): list them, print their DDF.",
    no_args_is_help=True,
)
_root.add_typer(mo_app, name="mo")

#: The command families that live in their own modules: name -> (module, Typer app).
_FAMILIES: dict[str, tuple[str, str]] = {
    "agent": ("omadm.agent.cli", "agent_app"),
    "package": ("omadm.package.cli", "package_app"),
    "server": ("omadm.server.cli", "server_app"),
    "ctl": ("omadm.ctl", "ctl_app"),
    "sim": ("omadm.sim.cli", "sim_app"),
    "conformance": ("omadm.conformance.cli", "conformance_app"),
}
_attached: set[str] = set()

#: Top-level modules that only the ``server`` extra installs (pyproject.toml). A family whose
#: import stops at one of them is a slim install (``pip install omadm``, for devices), not a bug.
_SERVER_EXTRA_MODULES = frozenset(
    {
        "aiobotocore",
        "aiosqlite",
        "alembic",
        "asyncpg",
        "boto3",
        "botocore",
        "fastapi",
        "fastapi_offline",
        "httptools",
        "jinja2",
        "prometheus_client",
        "psycopg",
        "sqlalchemy",
        "starlette",
        "uvicorn",
        "uvloop",
    }
)
NEEDS_SERVER_EXTRA = 'error: omadm {family} needs the server extra: pip install "omadm[server]"'


def _missing_extra(exc: ModuleNotFoundError) -> bool:
    return (exc.name or "").partition(".")[0] in _SERVER_EXTRA_MODULES


def _not_installed(family: str) -> typer.Typer:
    """A stand-in for a family whose extra is missing: listed by ``omadm --help``, says what to install."""
    stand_in = typer.Typer(
        name=family,
        help=f'Not installed here: pip install "omadm[server]" adds omadm {family}.',
        invoke_without_command=True,
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )

    @stand_in.callback()
    def _explain() -> None:
        _fail(EXIT_NEEDS_EXTRA, NEEDS_SERVER_EXTRA.format(family=family))

    return stand_in


def _attach(names: list[str], *, requested: str | None = None) -> typer.Typer:
    """Attach the named families; ``requested`` is the one the command line runs, if any.

    A family that needs the ``server`` extra on a slim install ends the command with one line
    saying what to install (exit code ``EXIT_NEEDS_EXTRA``) when it is the one asked for, and
    stands in the overview with that hint otherwise.
    """
    for name in names:
        if name not in _attached:
            module, attribute = _FAMILIES[name]
            try:
                family = getattr(importlib.import_module(module), attribute)
            except ModuleNotFoundError as exc:
                if not _missing_extra(exc):
                    raise
                if name == requested:
                    _fail(EXIT_NEEDS_EXTRA, NEEDS_SERVER_EXTRA.format(family=name))
                family = _not_installed(name)
            _root.add_typer(family, name=name)
            _attached.add(name)
    return _root


def __getattr__(name: str) -> typer.Typer:
    if name == "app":  # the whole command line (tests, documentation tools)
        return _attach(list(_FAMILIES))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@mo_app.command("list")
def mo_list_command() -> None:
    """List the known management objects: name, MO identifier (URN), default path."""
    mos = mo_registry.all_mos()
    width = max(len(m.name) for m in mos)
    urn_width = max(len(m.urn) for m in mos)
    for m in mos:
        typer.echo(f"{m.name:<{width}}  {m.urn:<{urn_width}}  {m.default_path}")


@mo_app.command("ddf")
def mo_ddf_command(
    name: Annotated[
        str,
        typer.Argument(metavar="NAME", help="MO name (any case) or URN, e.g. DevInfo.", show_default=False),
    ],
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            metavar="OUTPUT",
            help="File to write, or - for standard output (the default).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Print the DDF 1.2 document (XML) of a management object.

    \b
    Exit codes: 0 done
                1 unknown management object (error: ... lists the known ones)
                2 unwritable output or bad options
    """
    try:
        mo = mo_registry.get(name)
    except mo_registry.UnknownMOError as exc:
        _fail(EXIT_INVALID, f"error: {exc}")
    _write(output, mo.to_ddf(), binary=False)


def main() -> None:
    """Console-script entry point (``omadm``): only the family named on the command line is loaded."""
    first = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    # The overview (--help) lists every family; a root command (codec, mo) needs none.
    families = list(_FAMILIES) if first is None else [first] if first in _FAMILIES else []
    try:
        root = _attach(families, requested=first)
    except typer.Exit as exc:  # a family that needs an extra which is not installed
        sys.exit(exc.exit_code)
    root(prog_name="omadm")


if __name__ == "__main__":
    main()
