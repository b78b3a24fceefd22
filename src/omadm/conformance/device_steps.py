"""Building blocks the DEVICE cases share: commands, status checks, the protocol-discipline checks.

The cases in ``cases/dm_client.py``, ``cases/mo_client.py`` and ``cases/scomo_device.py`` are
short scripts; what they have in common lives here so that each rule is checked one way
everywhere (e.g. "one Status per command, the SyncHdr's first" is the same check whether a
case sends one Get or forty).
"""

from __future__ import annotations

from collections.abc import Iterable

from omadm.protocol.messages import (
    Add,
    Alert,
    Command,
    Container,
    Copy,
    Delete,
    Exec,
    Get,
    Item,
    Message,
    Meta,
    Replace,
    Results,
    Source,
    Status,
    Target,
)

from .device_session import DeviceSession
from .model import CaseFailed, check

__all__ = [
    "add",
    "check_code",
    "check_replies",
    "code_of",
    "copy",
    "delete",
    "execute",
    "get",
    "replace",
    "result_value",
]


def _item(uri: str, data: str | bytes | None = None, fmt: str | None = None, type: str | None = None) -> Item:
    meta = Meta(format=fmt, type=type) if fmt or type else None
    return Item(target=Target(uri), meta=meta, data=data)


def add(uri: str, data: str | bytes | None = None, *, fmt: str | None = None, type: str | None = None) -> Add:
    return Add("0", (_item(uri, data, fmt, type),))


def node(uri: str) -> Add:
    """Add an interior node."""
    return Add("0", (_item(uri, None, "node"),))


def replace(uri: str, data: str | bytes, *, fmt: str | None = None, type: str | None = None) -> Replace:
    return Replace("0", (_item(uri, data, fmt, type),))


def get(uri: str) -> Get:
    return Get("0", (Item(target=Target(uri)),))


def delete(uri: str) -> Delete:
    return Delete("0", (Item(target=Target(uri)),))


def copy(source: str, target: str) -> Copy:
    return Copy("0", (Item(target=Target(target), source=Source(source)),))


def execute(uri: str, correlator: str | None = None, data: str | None = None) -> Exec:
    return Exec("0", (Item(target=Target(uri), data=data),), correlator=correlator)


def code_of(status: Status | None) -> int | None:
    return None if status is None else status.code


def check_code(status: Status | None, allowed: int | Iterable[int], what: str) -> int:
    """Fail unless ``status`` came and has one of ``allowed``; returns the code."""
    codes = {allowed} if isinstance(allowed, int) else set(allowed)
    shown = " or ".join(str(c) for c in sorted(codes))
    check(status is not None, f"a Status {shown} for {what}", "no Status")
    assert status is not None
    check(status.code in codes, f"Status {shown} for {what}", f"Status {status.data}")
    return status.code


def result_value(results: Results | None, what: str) -> str | bytes | None:
    check(results is not None, f"Results for {what}", "no Results")
    assert results is not None
    check(len(results.items) >= 1, f"an Item in the Results for {what}", "a Results without Item")
    return results.items[0].data


async def ensure_node(session: DeviceSession, uri: str) -> None:
    """Create the interior node ``uri`` and its missing parents (418 for one that exists is fine)."""
    parts = uri.split("/")
    for depth in range(2, len(parts) + 1):
        path = "/".join(parts[:depth])
        (status,) = await session.run(node(path))
        if status is None or status.code not in (200, 418):
            raise CaseFailed(f"200 or 418 for Add {path} (the scratch node)", f"Status {code_of(status)}")


def _commands(message: Message) -> list[Command]:
    return [c for c in message.commands if not isinstance(c, Status | Results)]


def _flat(commands: Iterable[Command]) -> list[Command]:
    out: list[Command] = []
    for command in commands:
        out.append(command)
        if isinstance(command, Container):
            out.extend(_flat(command.commands))
    return out


def replies(session: DeviceSession) -> list[tuple[Message, Message]]:
    """(server message, the device message that answers it) pairs of the session, in order."""
    pairs = []
    for index, sent in enumerate(session.sent):
        if index + 1 < len(session.received):
            pairs.append((sent, session.received[index + 1].message))
    return pairs


def check_replies(session: DeviceSession) -> None:
    """The Status discipline of every device reply in ``session`` (oma-dm-1.2.md §2.3, §3.5).

    * the first element of each reply is the Status for the SyncHdr (CmdRef 0, MsgRef = the
      server message's MsgID);
    * every server command (nested ones too) gets exactly one Status with the right MsgRef,
      CmdRef and Cmd, unless it asked for none (NoResp) or the reply continues a package;
    * every Results comes after the Status of its Get.
    """
    answered: set[tuple[str, str]] = set()
    for sent, reply in replies(session):
        first = reply.commands[0] if reply.commands else None
        check(
            isinstance(first, Status) and first.cmd_ref == "0" and first.cmd == "SyncHdr",
            f"the Status for the SyncHdr first in the reply to message {sent.header.msg_id}",
            f"{first.name if first is not None else 'nothing'} first",
        )
        assert isinstance(first, Status)
        check(
            first.msg_ref == sent.header.msg_id,
            f"MsgRef {sent.header.msg_id} in the SyncHdr Status",
            f"MsgRef {first.msg_ref}",
        )
        statuses = [c for c in reply.commands if isinstance(c, Status)]
        for command in _flat(_commands(sent)):
            if getattr(command, "no_resp", False):
                continue
            if isinstance(command, Alert) and command.code == 1222:
                continue
            mine = [s for s in statuses if s.msg_ref == sent.header.msg_id and s.cmd_ref == command.cmd_id]
            items = len(getattr(command, "items", ())) or 1
            check(
                1 <= len(mine) <= items,
                f"one Status for {command.name} CmdID {command.cmd_id} of message {sent.header.msg_id}",
                f"{len(mine)} Statuses",
            )
            for status in mine:
                check(
                    status.cmd == command.name,
                    f"Cmd {command.name} in the Status for CmdID {command.cmd_id}",
                    f"Cmd {status.cmd}",
                )
        for element in reply.commands:
            if isinstance(element, Status) and element.cmd == "Get":
                answered.add((element.msg_ref, element.cmd_ref))
            if isinstance(element, Results):
                check(
                    (element.msg_ref or sent.header.msg_id, element.cmd_ref) in answered
                    or any(ref == element.cmd_ref for _, ref in answered),
                    f"the Status of Get {element.cmd_ref} before its Results",
                    "Results before (or without) the Status",
                )
