"""Helpers for the session tests, over the test doubles shipped in ``omadm.protocol.testing``."""

from __future__ import annotations

import os

from omadm.protocol.codes import AlertCode
from omadm.protocol.messages import Alert, Item, Meta, Source
from omadm.protocol.session import ClientSession, Outgoing, ServerSession
from omadm.protocol.testing import MemoryTree, ServerScript, Transcript, describe, run_in_memory
from omadm.protocol.testing import queue_when_started as once_started

__all__ = ["DictTree", "Transcript", "generic_alert", "once_started", "run"]

DictTree = MemoryTree


def _trace(direction: str, out: Outgoing) -> None:
    print(direction, describe(out.body))


def run(
    client: ClientSession,
    server: ServerSession,
    script: ServerScript | None = None,
    *,
    max_round_trips: int = 500,
) -> Transcript:
    """``run_in_memory``, printing every message when TRACE is set in the environment."""
    observe = _trace if os.environ.get("TRACE") else None
    return run_in_memory(client, server, script, max_round_trips=max_round_trips, observe=observe)


def generic_alert(correlator: str, result: int = 1200) -> Alert:
    return Alert(
        "0",
        data=str(int(AlertCode.GENERIC_ALERT)),
        correlator=correlator,
        items=(
            Item(
                source=Source("./SCOMO/Download/1"),
                meta=Meta(type="urn:oma:at:scomo:1.0:OperationComplete", format="int"),
                data=str(result),
            ),
        ),
    )
