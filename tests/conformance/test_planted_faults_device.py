"""The device suite catches faults planted in omadm's own agent, each in the case that checks its rule.

Each fault is planted in a child agent process (``planted_agent.py``: a monkeypatch before the
agent starts) and the suite runs the case that must catch it, plus one that must not be
affected (a control, so a fault that simply breaks the agent is not mistaken for a catch).
Without the fault the same cases pass (test_device_e2e runs them all).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from omadm.conformance.device import run_device_suite
from omadm.conformance.model import Verdict
from omadm.protocol.codec import Encoding

from .device_agent import AgentUnderTest

pytestmark = pytest.mark.e2e

WRAPPER = Path(__file__).with_name("planted_agent.py")

#: fault -> (the case that must fail, words of the rule it must name, a control case that must pass)
FAULTS = {
    "deactivate-keeps-active": ("SCOMO-DEV-DEP-002", "State 10", "SCOMO-DEV-DEP-005"),
    "report-without-correlator": ("SCOMO-DEV-ALERT-001", "Correlator", "DM-CLI-SESS-001"),
    "unknown-node-500": ("DM-CLI-CMD-006", "404", "DM-CLI-SESS-002"),
    "results-before-status": ("DM-CLI-IDS-003", "before its Results", "DM-CLI-SESS-004"),
    "nonce-not-rotated": ("DM-CLI-AUTH-006", "different nonce", "DM-CLI-CMD-001"),
    "acl-not-enforced": ("DM-CLI-ACL-001", "425", "DM-CLI-CMD-003"),
}


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> AgentUnderTest:
    return AgentUnderTest(tmp_path_factory.mktemp("planted"))


@pytest.mark.parametrize("fault", list(FAULTS))
def test_the_suite_reports_the_planted_fault_in_its_case(agent: AgentUnderTest, fault: str) -> None:
    expected, rule_words, control = FAULTS[fault]
    with agent.running(Encoding.XML, wrapper=WRAPPER, env={"OMADM_TEST_PLANTED_FAULT": fault}):
        results = asyncio.run(run_device_suite(agent.options(Encoding.XML), only=f"{expected},{control}"))
    verdicts = {r.case.id: r for r in results}
    caught = verdicts[expected]
    assert caught.verdict is Verdict.FAIL, (
        fault,
        caught.verdict,
        caught.reason,
        agent.log(Encoding.XML)[-2000:],
    )
    assert rule_words in caught.expected and caught.seen, (caught.expected, caught.seen)
    assert verdicts[control].verdict is Verdict.PASS, (
        fault,
        control,
        verdicts[control].seen,
        verdicts[control].reason,
    )
