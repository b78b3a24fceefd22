"""``python planted_agent.py agent run ...``: omadm's agent with one fault planted, for the suite to find.

The fault is named by ``OMADM_TEST_PLANTED_FAULT`` and planted by monkeypatching this child
process only, before the agent starts; nothing in the agent's code knows about it. Each fault
breaks one rule a DEVICE case checks (see ``FAULTS`` in test_planted_faults_device.py).
"""

from __future__ import annotations

import os
import types
from typing import Any

from omadm.__main__ import main
from omadm.agent.scomo import operations
from omadm.mo.scomo_codes import DeployedState
from omadm.protocol import auth, session
from omadm.protocol.codes import AuthType
from omadm.protocol.messages import Alert, Results
from omadm.tree import tree
from omadm.tree.acl import ACL


def _deactivate_keeps_active() -> None:
    # the inventory then records every deployed component as Active, whatever its state
    operations.DeployedState = types.SimpleNamespace(  # type: ignore[assignment,attr-defined]
        ACTIVE=DeployedState.ACTIVE, INACTIVE=DeployedState.ACTIVE
    )


def _report_without_correlator() -> None:
    def alert(*args: Any, **kwargs: Any) -> Alert:
        kwargs["correlator"] = None
        return Alert(*args, **kwargs)

    operations.Alert = alert  # type: ignore[attr-defined,assignment]


def _unknown_node_500() -> None:
    original = tree._fail

    def fail(status: int, message: str) -> Any:
        return original(500 if status == 404 else status, message)

    tree._fail = fail


def _results_before_status() -> None:
    original = session.ClientSession._run_one

    def run_one(self: Any, cmd: Any) -> int:
        before = len(self._outbox)
        code = original(self, cmd)
        new = self._outbox[before:]
        results = [o for o in new if isinstance(o.command, Results)]
        self._outbox[before:] = results + [o for o in new if o not in results]
        return code

    session.ClientSession._run_one = run_one  # type: ignore[method-assign]


def _nonce_not_rotated() -> None:
    original = session._PeerAuth._fresh_chal

    def fresh_chal(self: Any) -> Any:
        if self.nonce and self.expected is not None and self.expected.auth_type is not AuthType.BASIC:
            self._events.append(session.NonceIssued(self.nonce))
            return auth.make_chal(self.expected.auth_type, self.nonce)  # the same nonce again
        return original(self)

    session._PeerAuth._fresh_chal = fresh_chal  # type: ignore[method-assign]


def _acl_not_enforced() -> None:
    ACL.allows = lambda self, command, server_id: True  # type: ignore[method-assign]


PLANTERS = {
    "deactivate-keeps-active": _deactivate_keeps_active,
    "report-without-correlator": _report_without_correlator,
    "unknown-node-500": _unknown_node_500,
    "results-before-status": _results_before_status,
    "nonce-not-rotated": _nonce_not_rotated,
    "acl-not-enforced": _acl_not_enforced,
}


if __name__ == "__main__":
    PLANTERS[os.environ["OMADM_TEST_PLANTED_FAULT"]]()

    main()
