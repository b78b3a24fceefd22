"""The server suite catches faults: each planted server bug makes its expected case fail.

Faults are patched into a real ``omadm server`` process at start-up (``planted/sitecustomize.py``),
each dormant until a control file names it; the runner then plays a fresh device against the
server with one fault switched on at a time. Each fault must turn the named case into a failure
(not an inconclusive), which proves the case checks what it claims; with the control file empty
the same cases pass (checked here too, so a case that fails for another reason is not counted).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from omadm.conformance.model import Verdict
from omadm.conformance.server import run_server_suite

from .server_under_test import Setup, conformance_server, explain

pytestmark = pytest.mark.e2e

#: fault -> the case that must fail.
FAULTS = {
    "hdr-status-not-first": "DM-SRV-HDR-001",
    "wrong-cmdref": "DM-SRV-STS-002",
    "no-nonce-rotation": "DM-SRV-AUTH-005",
    "no-respuri": "DM-SRV-RESP-002",
    "challenge-without-chal": "DM-SRV-AUTH-001",
    "no-correlator-match": "SCOMO-SRV-ALERT-002",
    "generic-alert-not-200": "SCOMO-SRV-ALERT-001",
    "exec-without-correlator": "SCOMO-SRV-EXEC-002",
}


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Setup, Path]]:
    directory = tmp_path_factory.mktemp("planted")
    control = directory / "fault"
    control.write_text("")
    with conformance_server(directory, faults=control) as setup:
        yield setup, control


def test_without_a_fault_the_cases_pass(planted: tuple[Setup, Path]) -> None:
    setup, control = planted
    control.write_text("")
    device = setup.add_device("PLANTED-NONE")
    results = asyncio.run(run_server_suite(setup.options(device, only=",".join(FAULTS.values()))))
    assert len(results) == len(FAULTS)
    assert all(r.verdict is Verdict.PASS for r in results), explain(results)


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_planted_server_fault_fails_its_case(fault: str, planted: tuple[Setup, Path]) -> None:
    setup, control = planted
    expected = FAULTS[fault]
    device = setup.add_device(f"PLANTED-{fault}")
    control.write_text(fault)
    try:
        results = asyncio.run(run_server_suite(setup.options(device, only=expected)))
    finally:
        control.write_text("")
    assert [r.case.id for r in results] == [expected]
    result = results[0]
    assert result.verdict is Verdict.FAIL, (
        f"{fault}: {expected} was {result.verdict.value}\n{explain(results)}"
    )
    assert result.expected and result.seen
