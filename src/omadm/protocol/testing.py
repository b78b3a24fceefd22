"""Test doubles that ship with the protocol core: an in-memory tree and an in-memory link.

``MemoryTree`` is the smallest ``CommandHandler`` that behaves like a DM tree (nodes,
interior child lists, Add/Replace/Delete/Get/Exec/Copy with their status codes, Atomic
rollback), and ``run_in_memory`` joins a ``ClientSession`` and a ``ServerSession`` without
sockets. The test suite, the demo and anyone writing a DM application on top of the core
use them to watch a whole session happen. They are not the agent's persistent tree.
"""

from __future__ import annotations

import base64
import binascii
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from . import auth, codec
from .codes import StatusCode
from .messages import (
    Add,
    Alert,
    Atomic,
    Command,
    Copy,
    Delete,
    Exec,
    Get,
    Item,
    ItemCommand,
    Message,
    Meta,
    Replace,
    Sequence,
    Source,
)
from .session import ClientSession, Event, Outcome, Outgoing, ServerSession, SessionStarted

__all__ = ["MemoryTree", "ServerScript", "Transcript", "describe", "queue_when_started", "run_in_memory"]

_E = TypeVar("_E", bound=Event)


class MemoryTree:
    """A management tree in a dict: leaves hold str or bytes, interior nodes hold None."""

    def __init__(self) -> None:
        self.nodes: dict[str, str | bytes | None] = {".": None}
        self.execs: list[tuple[str, str | None]] = []
        #: How the "user" answers UI alerts (1100-1104): 200 yes/ok, 304 no, 214 cancel.
        self.ui_answer: int = StatusCode.OK
        self._snapshot: dict[str, str | bytes | None] | None = None

    # CommandHandler ---------------------------------------------------------------------
    def execute(self, command: ItemCommand | Alert) -> list[Outcome]:
        if isinstance(command, Alert):
            return [Outcome(self.ui_answer)]
        return [self._one(command, item) for item in command.items]

    def begin_atomic(self) -> None:
        self._snapshot = copy.deepcopy(self.nodes)

    def end_atomic(self, commit: bool) -> None:
        if not commit and self._snapshot is not None:
            self.nodes = self._snapshot
        self._snapshot = None

    # ------------------------------------------------------------------------------------
    def children(self, uri: str) -> list[str]:
        return sorted(k.rpartition("/")[2] for k in self.nodes if k != uri and k.rpartition("/")[0] == uri)

    def _one(self, command: ItemCommand, item: Item) -> Outcome:
        uri = item.target.loc_uri if item.target else ""
        parent = uri.rpartition("/")[0] or "."
        fmt = (item.meta.format if item.meta and item.meta.format else None) or (
            command.meta.format if command.meta and command.meta.format else "chr"
        )
        if isinstance(command, Add):
            if uri in self.nodes:
                return Outcome(StatusCode.ALREADY_EXISTS)
            if parent not in self.nodes or self.nodes[parent] is not None:
                return Outcome(StatusCode.NOT_FOUND)
            self.nodes[uri] = None if fmt == "node" else self._value(item, fmt)
            return Outcome(StatusCode.OK)
        if uri not in self.nodes:
            return Outcome(StatusCode.NOT_FOUND)
        if isinstance(command, Replace):
            self.nodes[uri] = self._value(item, fmt)
            return Outcome(StatusCode.OK)
        if isinstance(command, Delete):
            for key in [k for k in self.nodes if k == uri or k.startswith(uri + "/")]:
                del self.nodes[key]
            return Outcome(StatusCode.OK)
        if isinstance(command, Get):
            value = self.nodes[uri]
            if value is None:
                data = "/".join(self.children(uri))
                return Outcome(
                    StatusCode.OK, results=(Item(source=Source(uri), meta=Meta(format="node"), data=data),)
                )
            meta = Meta(format="bin") if isinstance(value, bytes) else None
            return Outcome(StatusCode.OK, results=(Item(source=Source(uri), meta=meta, data=value),))
        if isinstance(command, Exec):
            self.execs.append((uri, item.data if isinstance(item.data, str) else None))
            return Outcome(StatusCode.ACCEPTED_FOR_PROCESSING)
        if isinstance(command, Copy):
            source = item.source.loc_uri if item.source else ""
            if source not in self.nodes:
                return Outcome(StatusCode.NOT_FOUND)
            self.nodes[uri] = self.nodes[source]
            return Outcome(StatusCode.OK)
        return Outcome(StatusCode.COMMAND_NOT_IMPLEMENTED)

    @staticmethod
    def _value(item: Item, fmt: str) -> str | bytes:
        data = item.data if item.data is not None else ""
        if fmt == "b64" and isinstance(data, str):
            try:
                return base64.b64decode(data)
            except (binascii.Error, ValueError):
                return data
        return data


ServerScript = Callable[[list[Event], ServerSession], None]


@dataclass
class Transcript:
    """Everything that crossed the link, and every event each side raised, in order."""

    client_bodies: list[bytes] = field(default_factory=list)
    server_bodies: list[bytes] = field(default_factory=list)
    client_events: list[Event] = field(default_factory=list)
    server_events: list[Event] = field(default_factory=list)

    def all_bodies(self) -> list[bytes]:
        return [*self.client_bodies, *self.server_bodies]

    def of(self, side: str, kind: type[_E]) -> list[_E]:
        """The events of one kind raised by ``side`` (``"client"`` or ``"server"``)."""
        events = self.client_events if side == "client" else self.server_events
        return [e for e in events if isinstance(e, kind)]


def run_in_memory(
    client: ClientSession,
    server: ServerSession,
    script: ServerScript | None = None,
    *,
    max_round_trips: int = 1000,
    observe: Callable[[str, Outgoing], None] | None = None,
) -> Transcript:
    """Drive one whole session between ``client`` and ``server``.

    ``script(events, server)`` runs after each client message and may queue commands;
    ``observe(direction, outgoing)`` sees every message (``"C>S"`` or ``"S>C"``).
    """
    t = Transcript()
    out: Outgoing | None = client.start()
    for _ in range(max_round_trips):
        assert out is not None
        t.client_bodies.append(out.body)
        if observe:
            observe("C>S", out)
        events = server.receive(
            out.body, hmac_header=out.headers.get(auth.HMAC_HEADER), content_type=out.content_type
        )
        t.server_events.extend(events)
        if script is not None and not server.finished:
            script(events, server)
        reply = server.reply()
        t.server_events.extend(server.events())
        t.server_bodies.append(reply.body)
        if observe:
            observe("S>C", reply)
        t.client_events.extend(
            client.receive(
                reply.body, hmac_header=reply.headers.get(auth.HMAC_HEADER), content_type=reply.content_type
            )
        )
        if client.finished:
            t.client_events.extend(client.events())
            return t
        out = client.reply()
        t.client_events.extend(client.events())
        if out is None:
            return t
    raise RuntimeError(f"the session did not end within {max_round_trips} round trips")


def queue_when_started(*commands: Command) -> ServerScript:
    """A server script that queues ``commands`` as soon as the session has started."""

    def script(events: list[Event], server: ServerSession) -> None:
        if any(isinstance(e, SessionStarted) for e in events):
            for command in commands:
                server.queue(command)

    return script


def describe(body: bytes) -> str:
    """One line for a message: MsgID, size, each element with its code, MoreData, Final."""
    msg, encoding = codec.decode(body)
    return f"#{msg.header.msg_id} {encoding.value} {len(body)}B " + _elements(msg)


def _elements(msg: Message) -> str:
    parts = []
    for cmd in msg.commands:
        parts.append(_element(cmd))
    return " ".join(parts) + (" Final" if msg.final else "")


def _element(cmd: Command) -> str:
    if isinstance(cmd, Atomic | Sequence):
        return f"{cmd.name}[{' '.join(_element(c) for c in cmd.commands)}]"
    code = getattr(cmd, "data", None)
    label = cmd.name
    if cmd.name == "Status":
        label = f"Status({getattr(cmd, 'cmd', '')}={code})"
    elif code:
        label = f"{cmd.name}({code})"
    items: tuple[Item, ...] = getattr(cmd, "items", ())
    if items and cmd.name not in ("Status", "Alert"):
        first = items[0]
        uri = first.target.loc_uri if first.target else first.source.loc_uri if first.source else ""
        if uri:
            label += f" {uri}" + (f" +{len(items) - 1}" if len(items) > 1 else "")
    if any(i.more_data for i in items):
        label += "+MoreData"
    return label
