"""``omadm mo``: list the management objects and print their DDF."""

from __future__ import annotations

from pathlib import Path

from lxml import etree
from typer.testing import CliRunner

from omadm import cli
from omadm.mo import DEVINFO, DMACC, parse_ddf

runner = CliRunner()


def test_list() -> None:
    result = runner.invoke(cli.app, ["mo", "list"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        "DevInfo    urn:oma:mo:oma-dm-devinfo:1.0    ./DevInfo",
        "DevDetail  urn:oma:mo:oma-dm-devdetail:1.0  ./DevDetail",
        "DMAcc      urn:oma:mo:oma-dm-dmacc:1.0      ./DMAcc",
    ]


def test_ddf_prints_well_formed_xml() -> None:
    result = runner.invoke(cli.app, ["mo", "ddf", "DevInfo"])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == DEVINFO.to_ddf()
    root = etree.fromstring(result.stdout_bytes, etree.XMLParser(resolve_entities=False, no_network=True))
    assert etree.QName(root).localname == "MgmtTree"


def test_ddf_accepts_any_case_and_urns_and_writes_files(tmp_path: Path) -> None:
    out = tmp_path / "dmacc.ddf"
    result = runner.invoke(cli.app, ["mo", "ddf", "urn:oma:mo:oma-dm-dmacc:1.0", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert parse_ddf(out.read_bytes()) == DMACC
    assert runner.invoke(cli.app, ["mo", "ddf", "dmacc"]).stdout_bytes == DMACC.to_ddf()


def test_an_unknown_name_fails_listing_the_known_ones() -> None:
    result = runner.invoke(cli.app, ["mo", "ddf", "FUMO"])
    assert result.exit_code == 1
    assert result.stdout == ""
    known = "DevInfo, DevDetail, DMAcc, SCOMO"
    assert result.stderr == f"error: unknown management object 'FUMO'; known: {known}\n"


def test_an_unwritable_output_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(cli.app, ["mo", "ddf", "DevInfo", "-o", str(tmp_path / "missing" / "x.ddf")])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: cannot write")


def test_help() -> None:
    result = runner.invoke(cli.app, ["mo", "--help"])
    assert result.exit_code == 0
    assert "list" in result.stdout and "ddf" in result.stdout
