"""A tiny in-memory management tree and a driver that joins a client and a server session."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

from omadm.protocol import auth, codec
from omadm.protocol.codes import AlertCode, StatusCode
from omadm.protocol.messages import Add, Alert, Copy, Delete, Exec, Get, Item, ItemCommand, Meta, Replace, Source
from omadm.protocol.session import (
    ClientSession,
    Event,
    Outcome,
    ServerSession,
)


class DictTree:
    """Just enough of a DM tree for session tests: leaves hold str or bytes, interiors None."""

    def __init__(self) -> None:
        self.nodes: dict[str, str | bytes | None] = {".": None}
        self.execs: list[tuple[str, str | None]] = []
        self._snapshot: dict[str, str | bytes | None] | None = None
        self.ui_answer = StatusCode.OK

    # CommandHandler -----------------------------------------------------------------
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

    # ----------------------------------------------------------------------------------
    def _one(self, command: ItemCommand, item: Item) -> Outcome:
        uri = item.target.loc_uri if item.target else ""
        parent = uri.rpartition("/")[0] or "."
        fmt = (item.meta.format if item.meta and item.meta.format else None) or (
            command.meta.format if command.meta and command.meta.format else "chr"
        )
        if isinstance(command, Add):
            if uri in self.nodes:
                return Outcome(StatusCode.ALREADY_EXISTS)
            if parent not in self.nodes:
                return Outcome(StatusCode.NOT_FOUND)
            self.nodes[uri] = None if fmt == "node" else self._value(item, fmt)
            return Outcome(StatusCode.OK)
        if isinstance(command, Replace):
            if uri not in self.nodes:
                return Outcome(StatusCode.NOT_FOUND)
            self.nodes[uri] = self._value(item, fmt)
            return Outcome(StatusCode.OK)
        if isinstance(command, Delete):
            if uri not in self.nodes:
                return Outcome(StatusCode.NOT_FOUND)
            for key in [k for k in self.nodes if k == uri or k.startswith(uri + "/")]:
                del self.nodes[key]
            return Outcome(StatusCode.OK)
        if isinstance(command, Get):
            if uri not in self.nodes:
                return Outcome(StatusCode.NOT_FOUND)
            value = self.nodes[uri]
            if value is None:
                children = sorted(k.rpartition("/")[2] for k in self.nodes if k.rpartition("/")[0] == uri)
                return Outcome(StatusCode.OK, results=(Item(source=Source(uri), meta=Meta(format="node"),
                                                            data="/".join(children)),))
            meta = Meta(format="bin") if isinstance(value, bytes) else None
            return Outcome(StatusCode.OK, results=(Item(source=Source(uri), meta=meta, data=value),))
        if isinstance(command, Exec):
            if uri not in self.nodes:
                return Outcome(StatusCode.NOT_FOUND)
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
            return auth.decode_nonce_lenient(data)  # plain base64 decoding, whitespace tolerant
        return data


ServerScript = Callable[[list[Event], ServerSession], None]


@dataclass
class Transcript:
    """Everything that crossed the wire, and every event each side raised."""

    client_bodies: list[bytes] = field(default_factory=list)
    server_bodies: list[bytes] = field(default_factory=list)
    client_events: list[Event] = field(default_factory=list)
    server_events: list[Event] = field(default_factory=list)

    def all_bodies(self) -> list[bytes]:
        return [*self.client_bodies, *self.server_bodies]

    def of(self, side: str, kind: type) -> list:  # type: ignore[type-arg]
        events = self.client_events if side == "client" else self.server_events
        return [e for e in events if isinstance(e, kind)]


def run(client: ClientSession, server: ServerSession, script: ServerScript | None = None,
        *, max_round_trips: int = 500) -> Transcript:
    """Drive one whole session in memory; ``script`` queues server commands as events arrive."""
    t = Transcript()
    import os
    trace = os.environ.get("TRACE")
    out = client.start()
    for _ in range(max_round_trips):
        t.client_bodies.append(out.body)
        if trace: print("C>", summary(out.body))
        events = server.receive(out.body, hmac_header=out.headers.get(auth.HMAC_HEADER),
                                content_type=out.content_type)
        t.server_events.extend(events)
        if script is not None and not server.finished:
            script(events, server)
        reply = server.reply()
        t.server_events.extend(server.events())
        t.server_bodies.append(reply.body)
        if trace: print("S>", summary(reply.body))
        t.client_events.extend(client.receive(reply.body, hmac_header=reply.headers.get(auth.HMAC_HEADER),
                                              content_type=reply.content_type))
        next_out = client.reply()
        t.client_events.extend(client.events())
        if next_out is None:
            return t
        out = next_out
    raise AssertionError("session did not end")


def once_started(*commands: object) -> ServerScript:
    """A script that queues ``commands`` when the session starts."""

    def script(events: list[Event], server: ServerSession) -> None:
        from omadm.protocol.session import SessionStarted

        if any(isinstance(e, SessionStarted) for e in events):
            for command in commands:
                server.queue(command)  # type: ignore[arg-type]

    return script


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


def summary(body: bytes) -> str:
    """One line per message for tracing a session: element names, codes, MoreData, Final."""
    msg, _ = codec.decode(body)
    parts = []
    for cmd in msg.commands:
        code = getattr(cmd, "data", None)
        more = any(i.more_data for i in getattr(cmd, "items", ()))
        parts.append(f"{cmd.name}{'(' + str(code) + ')' if code else ''}{'+more' if more else ''}")
    return f"#{msg.header.msg_id} {len(body)}B {' '.join(parts)}{' FINAL' if msg.final else ''}"
