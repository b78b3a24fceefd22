"""Every DEVICE case against a real ``omadm agent run``, in XML and in WBXML.

The agent is made as an operator would make it (``tests/conformance/device_agent.py``) and
woken by the runner's Package #0 over HTTP; it polls never, so every session is one a case
asked for. Every applicable case must pass; a case may be "not applicable" only for a reason
the catalogue states (another encoding, an authentication scheme this run does not use), and
never inconclusive. Failures print what the rule expected and what the agent did.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from omadm.conformance.device import run_device_suite
from omadm.conformance.model import CaseResult, Role, Verdict, cases_for
from omadm.protocol.codec import Encoding

from .device_agent import AgentUnderTest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> AgentUnderTest:
    return AgentUnderTest(tmp_path_factory.mktemp("conformance-device"))


def _explain(results: list[CaseResult]) -> str:
    lines = []
    for r in results:
        if r.verdict is Verdict.FAIL:
            lines.append(
                f"FAIL {r.case.id} [{r.encoding}] ({r.case.rule}): expected {r.expected}; seen {r.seen}"
            )
        elif r.verdict is Verdict.INCONCLUSIVE:
            lines.append(f"INCONCLUSIVE {r.case.id} [{r.encoding}]: {r.reason}")
    return "\n".join(lines)


ALLOWED_NOT_APPLICABLE = ("the case does not run in", "the run uses --auth")


def test_every_device_case_passes_against_the_omadm_agent_in_xml_and_wbxml(
    agent: AgentUnderTest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Both encodings at once, each against its own agent: the runs wait on the agents far more
    than they compute, so running them side by side halves the time."""
    cases = cases_for(Role.DEVICE)
    assert len(cases) >= 80
    agents = {
        Encoding.XML: agent,
        Encoding.WBXML: AgentUnderTest(tmp_path_factory.mktemp("conformance-wbxml")),
    }

    async def both() -> list[list[CaseResult]]:
        return list(
            await asyncio.gather(
                *(
                    run_device_suite(device.options(encoding), cases=cases)
                    for encoding, device in agents.items()
                )
            )
        )

    with ExitStack() as stack:
        for encoding, device in agents.items():
            stack.enter_context(device.running(encoding))
        runs = asyncio.run(both())
    for (encoding, device), results in zip(agents.items(), runs, strict=True):
        assert len(results) == len(cases)
        bad = [r for r in results if r.verdict in (Verdict.FAIL, Verdict.INCONCLUSIVE)]
        assert not bad, _explain(bad) + "\n--- agent log tail ---\n" + device.log(encoding)[-3000:]
        for r in results:
            if r.verdict is Verdict.NOT_APPLICABLE:
                assert r.reason.startswith(ALLOWED_NOT_APPLICABLE), (r.case.id, r.reason)
        passed = {r.case.id for r in results if r.verdict is Verdict.PASS}
        assert len(passed) >= 80, (encoding, len(passed))
        assert all(r.encoding == encoding.value for r in results)
        # the exchanged messages are kept for the report, both directions, as XML text
        sample = next(r for r in results if r.case.id == "DM-CLI-IDS-001")
        assert {e.direction for e in sample.exchanges} == {"sent", "received"}
        assert all("<SyncML" in e.text for e in sample.exchanges)
    wbxml_only = {r.case.id for r in runs[1] if r.verdict is Verdict.PASS} - {
        r.case.id for r in runs[0] if r.verdict is Verdict.PASS
    }
    assert "DM-CLI-ENC-002" in wbxml_only


def test_the_command_runs_a_selection_and_writes_the_reports(agent: AgentUnderTest, tmp_path: Path) -> None:
    """``omadm conformance device`` itself: --only, --report, exit code 0 when nothing failed."""
    options = agent.options(Encoding.XML)
    report = tmp_path / "report"
    with agent.running(Encoding.XML):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "omadm",
                "conformance",
                "device",
                "--listen",
                f"127.0.0.1:{options.listen[1]}",
                "--server-id",
                options.server_id,
                "--device-id",
                options.device_id or "",
                "--username",
                options.username,
                "--password",
                options.password,
                "--server-password",
                options.server_password,
                "--notify",
                options.notify or "",
                "--signing-key",
                str(options.signing_key),
                "--only",
                "DM-CLI-SESS-00[12],MO-CLI-DEVINFO-*",
                "--report",
                str(report),
                "--session-timeout",
                "15",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    names = sorted(p.name for p in report.iterdir())
    assert any(n.endswith(".xml") for n in names) and any(n.endswith(".md") for n in names), names
    markdown = next(p for p in report.iterdir() if p.suffix == ".md").read_text()
    assert "DM-CLI-SESS-001" in markdown and "MO-CLI-DEVINFO-007" in markdown
    assert "DM-CLI-CMD-001" not in markdown


#: The authentication cases again with the other schemes. (DM-CLI-AUTH-005 under HMAC found a
#: protocol-core bug: the client took a nonce it had issued in a session's last package as
#: sent; tests/protocol/test_session_nonce_carry.py covers it since.)
OTHER_SCHEMES = {
    "basic": "DM-CLI-AUTH-*,DM-CLI-SESS-001,DM-CLI-IDS-001,DM-CLI-CMD-001,DM-CLI-ACL-002",
    "hmac": "DM-CLI-AUTH-*,DM-CLI-SESS-001,DM-CLI-IDS-001,DM-CLI-CMD-001",
}


@pytest.mark.parametrize("scheme", list(OTHER_SCHEMES))
def test_the_authentication_cases_with_a_basic_or_hmac_account(
    tmp_path_factory: pytest.TempPathFactory, scheme: str
) -> None:
    other = AgentUnderTest(tmp_path_factory.mktemp(f"conformance-{scheme}"), auth=scheme)
    with other.running(Encoding.XML):
        results = asyncio.run(run_device_suite(other.options(Encoding.XML), only=OTHER_SCHEMES[scheme]))
    bad = [r for r in results if r.verdict in (Verdict.FAIL, Verdict.INCONCLUSIVE)]
    assert not bad, _explain(bad)
    passed = {r.case.id for r in results if r.verdict is Verdict.PASS}
    own = {"basic": "DM-CLI-AUTH-003", "hmac": "DM-CLI-AUTH-002"}[scheme]
    assert own in passed and "DM-CLI-AUTH-008" in passed and "DM-CLI-AUTH-009" in passed
