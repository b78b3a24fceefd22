"""Faults planted in a test server process: imported at interpreter start-up (``sitecustomize``).

``tests/conformance/test_planted_faults_server.py`` puts this directory first on the
``PYTHONPATH`` of an ``omadm server`` child and names one fault in ``OMADM_PLANTED_FAULT``; the
fault is patched into the server's code before it serves anything. Without the variable this
module does nothing, so the same environment can run the admin commands (``migrate``...).

Each fault is a realistic server bug, and each must make one named conformance case fail.
"""

from __future__ import annotations

import dataclasses
import os

FAULT = os.environ.get("OMADM_PLANTED_FAULT", "")


def _patch_build(mutate):  # type: ignore[no-untyped-def]
    """Rewrite every message the server builds with ``mutate(commands) -> commands``."""
    from omadm.protocol.codec import encode
    from omadm.protocol.session import ServerSession

    original = ServerSession._build

    def build(self):  # type: ignore[no-untyped-def]
        message, _body = original(self)
        changed = dataclasses.replace(message, commands=tuple(mutate(list(message.commands))))
        return changed, encode(changed, self.encoding)

    ServerSession._build = build


def _status_last(commands):  # type: ignore[no-untyped-def]
    """The SyncHdr Status moved behind the other Statuses (ordering rule broken)."""
    head = [c for c in commands if getattr(c, "cmd_ref", None) == "0" and c.name == "Status"]
    rest = [c for c in commands if c not in head]
    return [*rest, *head]


def _cmd_ref_off_by_one(commands):  # type: ignore[no-untyped-def]
    """Statuses for commands reference the next CmdID (a counting bug)."""
    out = []
    for c in commands:
        if c.name == "Status" and c.cmd_ref != "0" and c.cmd_ref.isdigit():
            c = dataclasses.replace(c, cmd_ref=str(int(c.cmd_ref) + 1))
        out.append(c)
    return out


def _install() -> None:
    if FAULT == "hdr-status-not-first":
        _patch_build(_status_last)
    elif FAULT == "wrong-cmdref":
        _patch_build(_cmd_ref_off_by_one)
    elif FAULT == "no-nonce-rotation":
        from omadm.protocol import auth
        from omadm.protocol.session import NonceIssued, _PeerAuth

        def fresh_chal(self):  # type: ignore[no-untyped-def]
            if not self.nonce:
                self.nonce = self._new_nonce()
                self._events.append(NonceIssued(self.nonce))
            return auth.make_chal(self.expected.auth_type, self.nonce)  # the same nonce for ever

        _PeerAuth._fresh_chal = fresh_chal
    elif FAULT == "no-respuri":
        from omadm.server.dm_endpoint import DMEndpoint

        original = DMEndpoint._session_config

        def session_config(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return dataclasses.replace(original(self, *args, **kwargs), resp_uri=None)

        DMEndpoint._session_config = session_config
    elif FAULT == "no-correlator-match":
        from omadm.server.dm_endpoint import DMEndpoint

        async def job_for_alert(self, db, device, reports):  # type: ignore[no-untyped-def]
            return None  # every report "matches no job"

        DMEndpoint._job_for_alert = job_for_alert
    elif FAULT == "generic-alert-not-200":
        from omadm.protocol.codes import AlertCode
        from omadm.protocol.session import AlertReceived, ServerSession

        original_handle = ServerSession._handle_client_command

        def handle(self, cmd):  # type: ignore[no-untyped-def]
            if cmd.name == "Alert" and cmd.code == AlertCode.GENERIC_ALERT:
                self._queue_status(cmd, 406)  # processed, but answered "optional feature not supported"
                self._events.append(AlertReceived(cmd))
                return
            original_handle(self, cmd)

        ServerSession._handle_client_command = handle
    elif FAULT == "exec-without-correlator":
        from omadm.protocol.messages import Exec
        from omadm.server import jobs

        original_plan = jobs.plan_job

        def plan_job(*args, **kwargs):  # type: ignore[no-untyped-def]
            plan = original_plan(*args, **kwargs)
            commands = tuple(
                (dataclasses.replace(c, correlator=None) if isinstance(c, Exec) else c, tag)
                for c, tag in plan.commands
            )
            return dataclasses.replace(plan, commands=commands)

        jobs.plan_job = plan_job
    elif FAULT == "challenge-without-chal":
        from omadm.protocol.session import _PeerAuth, _Verdict

        original_challenge = _PeerAuth._challenge

        def challenge(self, code, reason):  # type: ignore[no-untyped-def]
            verdict = original_challenge(self, code, reason)
            return _Verdict(verdict.code, None, ok=False, reason=verdict.reason)

        _PeerAuth._challenge = challenge
    elif FAULT:
        raise SystemExit(f"sitecustomize: unknown planted fault {FAULT!r}")


_install()
