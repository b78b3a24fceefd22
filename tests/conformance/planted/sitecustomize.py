# ruff: noqa: PLC0415 - the server is imported only when the faults are switched on
"""Faults planted in a test server process: imported at interpreter start-up (``sitecustomize``).

``tests/conformance/test_planted_faults_server.py`` puts this directory first on the
``PYTHONPATH`` of an ``omadm server`` child and names a control file in
``OMADM_PLANTED_FAULT_FILE``. Every fault below is patched in at start-up but stays dormant
until the file names it: one server process then serves fault after fault (the test writes the
next name before running the case it must break). Without the variable this module does
nothing, so the same environment can run the admin commands (``migrate``...).

Each fault is a realistic server bug, and each must make one named conformance case fail.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

CONTROL = os.environ.get("OMADM_PLANTED_FAULT_FILE", "")


def active(name: str) -> bool:
    """Whether the control file names this fault now (read at every call: cheap, and live)."""
    try:
        return Path(CONTROL).read_text(encoding="utf-8").strip() == name
    except OSError:
        return False


def _status_last(commands: list[Any]) -> list[Any]:
    """The SyncHdr Status moved behind the other elements (ordering rule broken)."""
    head = [c for c in commands if c.name == "Status" and c.cmd_ref == "0"]
    return [*[c for c in commands if c not in head], *head]


def _cmd_ref_off_by_one(commands: list[Any]) -> list[Any]:
    """Statuses for commands reference the next CmdID (a counting bug)."""
    out = []
    for c in commands:
        if c.name == "Status" and c.cmd_ref != "0" and c.cmd_ref.isdigit():
            c = dataclasses.replace(c, cmd_ref=str(int(c.cmd_ref) + 1))
        out.append(c)
    return out


def _install() -> None:
    from omadm.protocol import auth
    from omadm.protocol.codec import encode
    from omadm.protocol.codes import AlertCode
    from omadm.protocol.messages import Exec
    from omadm.protocol.session import AlertReceived, NonceIssued, ServerSession, _PeerAuth, _Verdict
    from omadm.server import jobs
    from omadm.server.dm_endpoint import DMEndpoint

    original_build = ServerSession._build

    def build(self: ServerSession) -> Any:
        message, body = original_build(self)
        for name, mutate in (("hdr-status-not-first", _status_last), ("wrong-cmdref", _cmd_ref_off_by_one)):
            if active(name):
                message = dataclasses.replace(message, commands=tuple(mutate(list(message.commands))))
                body = encode(message, self.encoding)
        return message, body

    ServerSession._build = build  # type: ignore[method-assign]

    original_fresh = _PeerAuth._fresh_chal

    def fresh_chal(self: _PeerAuth) -> Any:
        if not active("no-nonce-rotation") or not self.nonce or self.expected is None:
            return original_fresh(self)
        self._events.append(NonceIssued(self.nonce))
        return auth.make_chal(self.expected.auth_type, self.nonce)  # the same nonce for ever

    _PeerAuth._fresh_chal = fresh_chal  # type: ignore[method-assign]

    original_challenge = _PeerAuth._challenge

    def challenge(self: _PeerAuth, code: int, reason: str) -> Any:
        verdict = original_challenge(self, code, reason)
        if active("challenge-without-chal"):
            return _Verdict(verdict.code, None, ok=False, reason=verdict.reason)
        return verdict

    _PeerAuth._challenge = challenge  # type: ignore[method-assign]

    original_config = DMEndpoint._session_config

    def session_config(self: DMEndpoint, *args: Any, **kwargs: Any) -> Any:
        config = original_config(self, *args, **kwargs)
        return dataclasses.replace(config, resp_uri=None) if active("no-respuri") else config

    DMEndpoint._session_config = session_config  # type: ignore[method-assign]

    original_match = DMEndpoint._job_for_alert

    async def job_for_alert(self: DMEndpoint, db: Any, device: Any, reports: Any) -> Any:
        if active("no-correlator-match"):
            return None  # every report "matches no job"
        return await original_match(self, db, device, reports)

    DMEndpoint._job_for_alert = job_for_alert  # type: ignore[method-assign]

    original_handle = ServerSession._handle_client_command

    def handle(self: ServerSession, cmd: Any) -> None:
        if active("generic-alert-not-200") and cmd.name == "Alert" and cmd.code == AlertCode.GENERIC_ALERT:
            self._queue_status(cmd, 406)  # processed, but answered "optional feature not supported"
            self._events.append(AlertReceived(cmd))
            return
        original_handle(self, cmd)

    ServerSession._handle_client_command = handle  # type: ignore[method-assign]

    original_plan = jobs.plan_job

    def plan_job(*args: Any, **kwargs: Any) -> Any:
        plan = original_plan(*args, **kwargs)
        if not active("exec-without-correlator"):
            return plan
        commands = tuple(
            (dataclasses.replace(c, correlator=None) if isinstance(c, Exec) else c, tag)
            for c, tag in plan.commands
        )
        return dataclasses.replace(plan, commands=commands)

    jobs.plan_job = plan_job


if CONTROL:
    _install()
