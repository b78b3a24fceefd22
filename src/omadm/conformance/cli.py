"""``omadm conformance``: list the catalogue, and test a device or a DM server against it.

The ``device`` and ``server`` commands live beside their runners
(:mod:`omadm.conformance.device`, :mod:`omadm.conformance.server`) and are attached here.
"""

from __future__ import annotations

import importlib
import json
from enum import StrEnum
from typing import Annotated

import typer

from .model import Case, load_all

__all__ = ["conformance_app"]

conformance_app = typer.Typer(
    help="The conformance suite: test a DM client or a DM server against the OMA DM 1.2 and SCOMO rules.",
    no_args_is_help=True,
)


class CatalogueFormat(StrEnum):
    md = "md"
    json = "json"


def case_as_dict(case: Case) -> dict[str, object]:
    return {
        "id": case.id,
        "title": case.title,
        "rule": case.rule,
        "role": case.role.value,
        "preconditions": list(case.preconditions),
        "steps": list(case.steps),
        "pass_criteria": list(case.pass_criteria),
        "capability": case.capability,
        "encodings": list(case.encodings),
        "executable": case.executable,
    }


@conformance_app.command("catalogue")
def catalogue_command(
    format: Annotated[CatalogueFormat, typer.Option("--format", help="md or json")] = CatalogueFormat.md,
) -> None:
    """Print every test case of the catalogue."""
    cases = list(load_all().values())
    if format is CatalogueFormat.json:
        typer.echo(json.dumps([case_as_dict(c) for c in cases], indent=2))
        return
    typer.echo("| id | role | title | rule | capability |\n| --- | --- | --- | --- | --- |")
    for c in cases:
        typer.echo(f"| {c.id} | {c.role.value} | {c.title} | {c.rule} | {c.capability or ''} |")


def _attach_runners() -> None:
    for name, module in (("device", "omadm.conformance.device"), ("server", "omadm.conformance.server")):
        try:
            command = importlib.import_module(module).command
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        conformance_app.command(name)(command)


_attach_runners()
