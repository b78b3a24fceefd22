"""``omadm conformance server`` against a real ``omadm server``: every SERVER case, both encodings.

The runner plays the device (omadm's simulator tree and SCOMO over the protocol core, plus raw
messages for the negative cases); the server is made to act through the example trigger file
(its REST API). Every applicable case must pass: a case the run cannot apply (an auth scheme
other than the device's) must say so, and nothing may be inconclusive.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from omadm.conformance.model import Role, Verdict, cases_for
from omadm.conformance.server import run_server_suite

from ..server.serverproc import ENV
from .server_under_test import PASSWORD, TRIGGERS, Setup, conformance_server, explain

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with conformance_server(tmp_path_factory.mktemp("conformance-server")) as started:
        yield started


@pytest.mark.parametrize("encoding", ["xml", "wbxml"])
def test_every_server_case_passes_against_omadm_server(setup: Setup, encoding: str) -> None:
    device = setup.add_device(f"CONF-{encoding.upper()}")
    results = asyncio.run(run_server_suite(setup.options(device, encoding=encoding)))
    assert len(results) == len(cases_for(Role.SERVER)) >= 50
    bad = [r for r in results if r.verdict in (Verdict.FAIL, Verdict.INCONCLUSIVE)]
    assert not bad, explain(results)
    skipped = [r for r in results if r.verdict is Verdict.NOT_APPLICABLE]
    # md5 runs every case but the hmac/basic-only ones.
    assert {r.case.id for r in skipped} == {
        "DM-SRV-AUTH-010",
        "DM-SRV-AUTH-011",
        "DM-SRV-AUTH-012",
        "DM-SRV-AUTH-013",
    }


@pytest.mark.parametrize("auth", ["hmac", "basic"])
def test_protocol_cases_pass_with_hmac_and_basic(setup: Setup, auth: str) -> None:
    device = setup.add_device(f"CONF-{auth.upper()}", auth=auth)
    results = asyncio.run(run_server_suite(setup.options(device, auth=auth, only="DM-SRV-*")))
    assert not [r for r in results if r.verdict in (Verdict.FAIL, Verdict.INCONCLUSIVE)], explain(results)
    passed = {r.case.id for r in results if r.verdict is Verdict.PASS}
    own = {"hmac": {"DM-SRV-AUTH-010", "DM-SRV-AUTH-011", "DM-SRV-AUTH-012"}, "basic": {"DM-SRV-AUTH-013"}}[
        auth
    ]
    assert own <= passed


def test_the_cli_reports_and_exits_by_verdict(setup: Setup, tmp_path: Path) -> None:
    device = setup.add_device("CONF-CLI")
    base = [
        sys.executable, "-m", "omadm", "conformance", "server", f"{setup.proc.url}/dm",
        "--device-id", device, "--username", "dev", "--server-password", "srv-secret",
        "--trigger", str(TRIGGERS), "--set", f"artifact_id={setup.artifact}",
        "--set", f"api={setup.proc.url}/api/v1",
    ]  # fmt: skip
    env = {**ENV, "OMADM_TOKEN": setup.token}
    good = subprocess.run([*base, "--password", PASSWORD, "--only", "DM-SRV-HDR-*,SCOMO-SRV-ALERT-001",
                           "--encoding", "wbxml", "--report", str(tmp_path / "report")],
                          capture_output=True, text=True, timeout=120, env=env, check=False)  # fmt: skip
    assert good.returncode == 0, good.stdout + good.stderr
    assert {p.suffix for p in (tmp_path / "report").iterdir()} >= {".xml", ".md", ".html"}
    assert (
        "DM-SRV-HDR-001"
        in (
            tmp_path / "report" / next(p.name for p in (tmp_path / "report").iterdir() if p.suffix == ".md")
        ).read_text()
    )
    bad = subprocess.run([*base, "--password", "wrong", "--only", "DM-SRV-HDR-001"],
                         capture_output=True, text=True, timeout=120, env=env, check=False)  # fmt: skip
    assert bad.returncode == 1, bad.stdout + bad.stderr
    usage = subprocess.run([*base, "--password", PASSWORD, "--only", "NO-SUCH-*"],
                           capture_output=True, text=True, timeout=60, env=env, check=False)  # fmt: skip
    assert usage.returncode == 2 and "no SERVER case matches" in usage.stderr
