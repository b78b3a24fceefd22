"""DM 1.2 session state machines, sans-IO: bytes in, bytes and events out.

``ClientSession`` and ``ServerSession`` own no sockets, files or clocks. Each turn is:

1. ``receive(body, hmac_header=...)`` decodes the peer's message, checks credentials,
   matches statuses and results to what we sent, reassembles large objects, and returns
   the events the application must know about. The client also *executes* the server's
   commands here, through the ``CommandHandler`` it was given.
2. The application reacts (the server queues commands with ``queue()``).
3. ``reply()`` returns the next ``Outgoing`` message, or ``None`` when the session is over.

Both sides share the message mechanics in ``_Endpoint``: MsgID/CmdID bookkeeping, one
Status per received command with the SyncHdr Status first, Results after their Status,
multi-message packages bounded by the peer's MaxMsgSize (Alert 1222, no Final until the
package ends), large objects bounded by MaxObjSize (MoreData, Meta/Size on the first chunk,
213 per chunk, 424 on a size mismatch, 1225 on interruption), and abort (Alert 1223).

The rules that decide *when* a session may move are kept in one table, ``TRANSITIONS``;
``docs/protocol-core.md`` shows them as a table. Everything else here computes *what* to send.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from . import auth
from ._pickling import speed_up_pickling
from .codec import Encoding, decode, encode
from .codes import AlertCode, AuthType, StatusCode
from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .messages import (
    Add,
    Alert,
    Atomic,
    Chal,
    Command,
    Copy,
    Cred,
    Delete,
    Exec,
    Get,
    Item,
    ItemCommand,
    Message,
    Meta,
    Replace,
    Results,
    Sequence,
    Source,
    Status,
    SyncHdr,
    Target,
)

__all__ = [
    "TRANSITIONS",
    "AlertReceived",
    "Authenticated",
    "AuthenticationFailed",
    "ClientConfig",
    "ClientSession",
    "CommandHandler",
    "Credentials",
    "DevInfoReceived",
    "Event",
    "NonceIssued",
    "NonceReceived",
    "Outcome",
    "Outgoing",
    "ReplyTooLarge",
    "ResultsReceived",
    "ServerConfig",
    "ServerSession",
    "SessionAborted",
    "SessionEnded",
    "SessionStarted",
    "State",
    "StatusReceived",
]

# ---------------------------------------------------------------------------------------
# Public values


@dataclass(frozen=True, slots=True)
class Credentials:
    """One side's identity for one scheme: AAuthType, AAuthName and AAuthSecret."""

    auth_type: AuthType
    username: str
    password: str


class ReplyTooLarge(LocalProtocolError):
    """(server) The peer's MaxMsgSize cannot carry any reply, not even a Status and an abort.

    The DM reply the peer asked for cannot be sent within its own limit, so the answer has
    to travel outside DM (the server endpoint refuses the request at the HTTP level).
    ``limit`` is the peer's MaxMsgSize, ``needed`` the size of the smallest reply.
    """

    def __init__(self, limit: int, needed: int) -> None:
        super().__init__(
            f"MaxMsgSize {limit} is too small for any reply: the smallest, a Status and an abort, "
            f"takes {needed} bytes",
            status_hint=StatusCode.REQUEST_ENTITY_TOO_LARGE,
        )
        self.limit = limit
        self.needed = needed


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message ready to send: POST ``body`` to ``url`` (client) or return it (server)."""

    body: bytes
    content_type: str
    headers: dict[str, str]
    message: Message
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What executing one command (or one of its items) gave, for its Status and Results.

    ``results`` is the Items of a Results element (for Get); ``items`` go into the Status
    itself (user input of UI alerts, failing URIs).
    """

    code: int
    target_ref: str | None = None
    results: tuple[Item, ...] | None = None
    results_meta: Meta | None = None
    items: tuple[Item, ...] = ()


class CommandHandler(Protocol):
    """What the client's management tree provides to the session.

    ``execute`` gets Add, Replace, Delete, Copy, Get, Exec and UI Alerts (1100-1104), one
    at a time, with large objects already reassembled; it returns one ``Outcome`` for the
    command, or one per item. Atomic is bracketed by ``begin_atomic`` and
    ``end_atomic(commit)``: on ``commit=False`` every change since ``begin_atomic`` must
    be undone.
    """

    def execute(self, command: ItemCommand | Alert) -> list[Outcome]: ...

    def begin_atomic(self) -> None: ...

    def end_atomic(self, commit: bool) -> None: ...


class Event:
    """Base of everything ``receive()`` reports."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class SessionStarted(Event):
    """(server) A client opened a session with Alert 1200 (server-initiated) or 1201."""

    alert_code: int
    device_id: str
    session_id: str


@dataclass(frozen=True, slots=True)
class DevInfoReceived(Event):
    """(server) The DevInfo values of the client's Replace, keyed by node URI."""

    values: dict[str, str]


@dataclass(frozen=True, slots=True)
class Authenticated(Event):
    """The peer's credentials were accepted (``scheme`` is the scheme used)."""

    peer: str
    scheme: AuthType


@dataclass(frozen=True, slots=True)
class AuthenticationFailed(Event):
    """The peer's credentials were missing or wrong; ``final`` when we gave up.

    ``after_challenge``: the peer had already been challenged in this session, so it
    failed with a nonce we gave it. A first failure is most often the expected start of a
    session (no credentials yet, or a nonce the peer kept from long ago); a failure after
    a challenge means wrong credentials.
    """

    reason: str
    status: int
    final: bool = False
    after_challenge: bool = False


@dataclass(frozen=True, slots=True)
class NonceIssued(Event):
    """We gave the peer a new nonce: persist it (server: the client's; client: the server's)."""

    nonce: bytes


@dataclass(frozen=True, slots=True)
class NonceReceived(Event):
    """The authenticated peer gave us a nonce for our next credentials: persist it."""

    nonce: bytes


@dataclass(frozen=True, slots=True)
class StatusReceived(Event):
    """The peer's final status for a command we queued under ``tag``."""

    tag: str
    command: Command
    status: Status


@dataclass(frozen=True, slots=True)
class ResultsReceived(Event):
    """(server) Results for the Get queued under ``tag`` (large objects reassembled)."""

    tag: str
    command: Command
    results: Results


@dataclass(frozen=True, slots=True)
class AlertReceived(Event):
    """(server) A Generic Alert (1226), client event (1224) or other client alert."""

    alert: Alert


@dataclass(frozen=True, slots=True)
class SessionAborted(Event):
    """The session was aborted with Alert 1223 (``by_peer``) or by us."""

    by_peer: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class SessionEnded(Event):
    """The session ended normally: no side has anything more to say."""


class State(Enum):
    """Where a session is. See ``TRANSITIONS``."""

    IDLE = "idle"  # client: nothing sent yet
    AWAITING_REPLY = "awaiting-reply"  # we sent a message, the peer must answer it
    REPLY_DUE = "reply-due"  # we received a message, reply() is next
    ENDED = "ended"
    ABORTED = "aborted"
    FAILED = "failed"  # a protocol error; nothing more can be sent


#: The whole session life cycle as data: (state, step) -> next state. ``receive`` and
#: ``reply`` look their move up here and refuse moves that are not listed.
TRANSITIONS: dict[tuple[State, str], State] = {
    (State.IDLE, "start"): State.AWAITING_REPLY,
    (State.AWAITING_REPLY, "receive"): State.REPLY_DUE,
    (State.AWAITING_REPLY, "receive-abort"): State.ABORTED,
    (State.AWAITING_REPLY, "abort"): State.ABORTED,
    (State.REPLY_DUE, "reply"): State.AWAITING_REPLY,
    (State.REPLY_DUE, "reply-last"): State.ENDED,
    (State.REPLY_DUE, "nothing-to-say"): State.ENDED,
    (State.REPLY_DUE, "abort"): State.ABORTED,
    (State.AWAITING_REPLY, "receive-again"): State.REPLY_DUE,  # server: a repeated message
    (State.ENDED, "receive-again"): State.ENDED,
    (State.ENDED, "reply"): State.ENDED,
    (State.AWAITING_REPLY, "give-up"): State.FAILED,
    (State.REPLY_DUE, "give-up"): State.FAILED,
    (State.FAILED, "abort"): State.ABORTED,  # client: tell the server why we stop
}

# ---------------------------------------------------------------------------------------
# Internals shared by both roles

_HDR = "0"
_UNAUTH = (StatusCode.INVALID_CREDENTIALS, StatusCode.MISSING_CREDENTIALS)
#: Bytes kept free in every message for what size estimation cannot see exactly.
_SIZE_MARGIN = 32


@dataclass(slots=True)
class _Out:
    """A queued outgoing element. ``command.cmd_id`` is assigned when a message is built."""

    command: Command
    tag: str | None = None
    expects_status: bool = False


@dataclass(slots=True)
class _Chunking:
    """An outgoing large object being sent one chunk per message."""

    out: _Out
    data: str | bytes
    position: int = 0


@dataclass(slots=True)
class _Reassembly:
    """An incoming large object: the first chunk's command and the chunks so far."""

    command: Command
    item: Item
    declared_size: int | None
    chunks: list[str | bytes] = field(default_factory=list)
    received: int = 0

    def key(self) -> tuple[str, str | None, str | None]:
        return _item_key(self.command, self.item)


def _item_key(command: Command, item: Item) -> tuple[str, str | None, str | None]:
    return (
        command.name,
        item.target.loc_uri if item.target else None,
        item.source.loc_uri if item.source else None,
    )


class _Counter:
    """Hands out CmdIDs within one message (they restart at 1 in every message)."""

    __slots__ = ("_next",)

    def __init__(self, start: int) -> None:
        self._next = start

    def __call__(self) -> str:
        value = self._next
        self._next += 1
        return str(value)


@dataclass(frozen=True, slots=True)
class _Rendered:
    message: Message
    body: bytes
    pairs: list[tuple[_Out, Command]]


def _with_cmd_id(command: Command, cmd_id: str) -> Command:
    return dataclasses.replace(command, cmd_id=cmd_id)  # type: ignore[type-var]


def _renumber(command: Command, next_id: Callable[[], str]) -> Command:
    if isinstance(command, Atomic | Sequence):
        own = next_id()
        inner = tuple(_renumber(c, next_id) for c in command.commands)
        return dataclasses.replace(command, cmd_id=own, commands=inner)
    return _with_cmd_id(command, next_id())


def _transmitted_size(data: str | bytes) -> int:
    return len(data.encode("utf-8")) if isinstance(data, str) else len(data)


def _single_item(command: Command) -> Item | None:
    items: tuple[Item, ...] = getattr(command, "items", ())
    return items[0] if len(items) == 1 else None


def _join_chunks(chunks: list[str | bytes]) -> str | bytes:
    if all(isinstance(c, str) for c in chunks):
        return "".join(c for c in chunks if isinstance(c, str))
    return b"".join(c.encode("utf-8") if isinstance(c, str) else c for c in chunks)


def _effective_format(command: Command, item: Item) -> str | None:
    if item.meta is not None and item.meta.format:
        return item.meta.format
    meta: Meta | None = getattr(command, "meta", None)
    return meta.format if meta is not None else None


class _Endpoint:
    """Message mechanics common to client and server; subclasses add the DM roles."""

    _role = ""

    def __init__(
        self,
        *,
        encoding: Encoding,
        session_id: str,
        max_msg_size: int | None,
        max_obj_size: int | None,
        nonce_factory: Callable[[], bytes],
    ) -> None:
        self.encoding = encoding
        self.session_id = session_id
        self.max_msg_size = max_msg_size
        self.max_obj_size = max_obj_size
        self._nonce_factory = nonce_factory
        self.state = State.IDLE
        self.peer_max_msg_size: int | None = None
        self.peer_max_obj_size: int | None = None
        self._out_msg_id = 0
        self._in_msg_id: str | None = None
        self._in_header: SyncHdr | None = None
        self._outbox: list[_Out] = []
        self._chunking: _Chunking | None = None
        self._reassembly: _Reassembly | None = None
        self._awaiting: dict[tuple[str, str], _Out] = {}
        self._hdr_status: Status | None = None
        self._peer_package_open = False
        self._tag_counter = 0
        self._events: list[Event] = []

    # -- state table -----------------------------------------------------------------

    def _move(self, step: str) -> None:
        try:
            self.state = TRANSITIONS[(self.state, step)]
        except KeyError:
            raise LocalProtocolError(f"{self._role} session cannot {step} while {self.state.value}") from None

    @property
    def finished(self) -> bool:
        """True once the session has ended, was aborted or failed."""
        return self.state in (State.ENDED, State.ABORTED, State.FAILED)

    # -- queueing ----------------------------------------------------------------------

    def _new_tag(self) -> str:
        self._tag_counter += 1
        return f"{self._role[0]}{self._tag_counter}"

    def _enqueue(self, command: Command, tag: str | None, expects_status: bool) -> str:
        tag = tag or self._new_tag()
        self._check_object_size(command)
        self._outbox.append(_Out(command, tag, expects_status))
        return tag

    def _check_object_size(self, command: Command) -> None:
        limit = self.peer_max_obj_size
        if not limit:
            return
        for item in getattr(command, "items", ()):
            if item.data is not None and _transmitted_size(item.data) > limit:
                raise LocalProtocolError(
                    f"{command.name} carries an object of {_transmitted_size(item.data)} bytes, "
                    f"over the peer's MaxObjSize of {limit}",
                    status_hint=StatusCode.REQUEST_ENTITY_TOO_LARGE,
                )

    def _status_for(
        self,
        command: Command,
        code: int,
        *,
        target_ref: str | None = None,
        items: tuple[Item, ...] = (),
        chal: Chal | None = None,
    ) -> Status:
        assert self._in_msg_id is not None
        item = _single_item(command)
        if target_ref is None and item is not None and item.target is not None:
            target_ref = item.target.loc_uri
        source_ref = item.source.loc_uri if item is not None and item.source is not None else None
        return Status(
            cmd_id="0",
            msg_ref=self._in_msg_id,
            cmd_ref=command.cmd_id,
            cmd=command.name,
            data=str(int(code)),
            target_refs=(target_ref,) if target_ref else (),
            source_refs=(source_ref,) if source_ref else (),
            chal=chal,
            items=items,
        )

    def _queue_status(self, command: Command, code: int, **kw: object) -> None:
        self._outbox.append(_Out(self._status_for(command, code, **kw)))  # type: ignore[arg-type]

    # -- receiving ---------------------------------------------------------------------

    def _decode(self, body: bytes, content_type: str | None) -> Message:
        message, encoding = decode(body, content_type)
        self.encoding = encoding
        return message

    def _note_header(self, header: SyncHdr) -> None:
        self._in_msg_id = header.msg_id
        self._in_header = header
        if header.meta is not None:
            if header.meta.max_msg_size:
                self.peer_max_msg_size = header.meta.max_msg_size
            if header.meta.max_obj_size:
                self.peer_max_obj_size = header.meta.max_obj_size

    @staticmethod
    def _is_next_request(message: Message) -> bool:
        """A non-final message that only says "go on": Statuses plus Alert 1222."""
        if message.final:
            return False
        saw_next = False
        for cmd in message.commands:
            if isinstance(cmd, Alert) and cmd.code == AlertCode.NEXT_MESSAGE:
                saw_next = True
            elif not isinstance(cmd, Status):
                return False
        return saw_next

    @staticmethod
    def _header_status(message: Message) -> Status | None:
        """The peer's Status for our SyncHdr (CmdRef 0), normally the first element."""
        for cmd in message.commands:
            if isinstance(cmd, Status) and cmd.cmd_ref == _HDR:
                return cmd
        return None

    def _take_statuses(self, message: Message) -> None:
        """Match the peer's Status elements for our commands to what we sent."""
        resend: list[_Out] = []
        for cmd in message.commands:
            if not isinstance(cmd, Status) or cmd.cmd_ref == _HDR:
                continue
            sent = self._awaiting.pop((cmd.msg_ref, cmd.cmd_ref), None)
            if sent is None:
                continue  # e.g. a Status for our Results (pitfall 14): tolerated, ignored
            if self._on_status(sent, cmd):
                resend.append(sent)
        if resend:  # challenged: send them again, in their order, with credentials
            at = self._first_command_index()
            self._outbox[at:at] = resend

    def _on_status(self, sent: _Out, status: Status) -> bool:
        """Handle the Status of one command we sent; True if it must be sent again."""
        chunking = self._chunking
        if chunking is not None and chunking.out is sent:
            if status.code == StatusCode.CHUNKED_ITEM_ACCEPTED:
                return False  # the next chunk goes in the next message
            self._chunking = None  # refused mid-way: report it and stop sending chunks
            self._outbox = [o for o in self._outbox if o is not sent]
        if status.code in _UNAUTH and self._requeue_on_challenge():
            return True
        if sent.tag is not None:
            self._events.append(StatusReceived(sent.tag, sent.command, status))
        return False

    def _first_command_index(self) -> int:
        for i, out in enumerate(self._outbox):
            if out.expects_status:
                return i
        return len(self._outbox)

    def _requeue_on_challenge(self) -> bool:
        """Whether a 401/407 on a command means "send it again with credentials"."""
        return False

    # -- large objects in ------------------------------------------------------------------

    def _reassemble(self, command: Command) -> Command | None:
        """Feed one received command through large-object reassembly.

        Returns the command to process now (whole, or reassembled), or None when it was a
        non-last chunk (a 213 is queued) or had to be refused (its status is queued).
        """
        if isinstance(command, Alert) and command.code in (AlertCode.NEXT_MESSAGE, AlertCode.SESSION_ABORT):
            return command  # control alerts travel between chunks without breaking them
        item = _single_item(command)
        pending = self._reassembly
        if pending is not None and (item is None or _item_key(command, item) != pending.key()):
            self._interrupted(pending)
            pending = None
        if item is None or (pending is None and not item.more_data):
            return command
        if pending is None:
            declared = item.meta.size if item.meta is not None else None
            if declared is not None and self.max_obj_size and declared > self.max_obj_size:
                self._queue_status(command, StatusCode.REQUEST_ENTITY_TOO_LARGE)
                return None
            pending = self._reassembly = _Reassembly(command, item, declared)
        data = item.data if item.data is not None else ""
        pending.chunks.append(data)
        pending.received += _transmitted_size(data)
        if self.max_obj_size and pending.received > self.max_obj_size:
            self._reassembly = None
            self._queue_status(command, StatusCode.REQUEST_ENTITY_TOO_LARGE)
            return None
        if item.more_data:
            self._queue_status(command, StatusCode.CHUNKED_ITEM_ACCEPTED)
            return None
        self._reassembly = None
        whole = _join_chunks(pending.chunks)
        if not self._size_matches(pending, whole):
            self._queue_status(command, StatusCode.SIZE_MISMATCH)
            return None
        first = pending.item
        meta = first.meta
        if meta is not None and meta.size is not None:
            meta = dataclasses.replace(meta, size=None)
            if meta.is_empty:
                meta = None
        full_item = dataclasses.replace(first, data=whole, more_data=False, meta=meta)
        return dataclasses.replace(command, items=(full_item,))  # type: ignore[type-var]

    @staticmethod
    def _size_matches(pending: _Reassembly, whole: str | bytes) -> bool:
        declared = pending.declared_size
        if declared is None:
            return True
        if _transmitted_size(whole) == declared:
            return True
        # Pitfall 24: some senders declare the decoded size of b64 data.
        if isinstance(whole, str) and _effective_format(pending.command, pending.item) == "b64":
            try:
                return len(base64.b64decode(whole)) == declared
            except (binascii.Error, ValueError):
                return False
        return False

    def _interrupted(self, pending: _Reassembly) -> None:
        """A new command arrived before the last chunk: Alert 1225 and discard (section 8)."""
        self._reassembly = None
        item = pending.item
        self._outbox.append(
            _Out(
                Alert(
                    "0",
                    data=str(int(AlertCode.NO_END_OF_DATA)),
                    items=(Item(target=item.target, source=item.source),),
                ),
                tag=self._new_tag(),
                expects_status=True,
            )
        )

    # -- building messages -------------------------------------------------------------------

    def _header(self) -> SyncHdr:
        raise NotImplementedError

    def _may_send_commands(self) -> bool:
        return True

    def _may_be_final(self) -> bool:
        return not self._peer_package_open

    def _build(self) -> tuple[Message, bytes]:
        """Build the next message from the outbox within the peer's MaxMsgSize, and record it.

        Order: Status for the SyncHdr, then the queue (Statuses, Results, commands) in
        order, then Alert 1222 when the peer's package is still open.
        """
        self._out_msg_id += 1
        header = self._header()
        hdr_status = self._hdr_status
        lead: list[Command] = [] if hdr_status is None else [_with_cmd_id(hdr_status, "1")]
        sendable = [o for o in self._outbox if not (o.expects_status and not self._may_send_commands())]
        limit = self.peer_max_msg_size

        def render(outs: list[_Out], chunk: Command | None, final: bool) -> _Rendered:
            next_id = _Counter(len(lead) + 1)
            pairs = [(out, _renumber(out.command, next_id)) for out in outs]
            if chunk is not None and self._chunking is not None:
                pairs.append((self._chunking.out, _renumber(chunk, next_id)))
            tail: tuple[Command, ...] = ()
            if self._peer_package_open:
                tail = (Alert(next_id(), data=str(int(AlertCode.NEXT_MESSAGE))),)
            msg = Message(header, (*lead, *(cmd for _, cmd in pairs), *tail), final=final)
            return _Rendered(msg, encode(msg, self.encoding), pairs)

        def fits(r: _Rendered) -> bool:
            return not limit or len(r.body) + _SIZE_MARGIN <= limit

        if self._chunking is not None:
            # Between chunks only Statuses may travel: no new command or item (section 8).
            others = [o for o in sendable if o is not self._chunking.out and isinstance(o.command, Status)]
            return self._build_chunk(render, fits, others)
        while True:
            # Fast path: everything fits (always so when the peer announced no limit).
            everything = len(sendable) == len(self._outbox) or not self._may_send_commands()
            rendered = render(sendable, None, everything and self._may_be_final())
            if fits(rendered):
                return self._record(rendered, complete=[o for o, _ in rendered.pairs])
            # The longest prefix of the queue that fits (a message only grows with commands).
            lo, hi = 0, len(sendable) - 1
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if fits(render(sendable[:mid], None, False)):
                    lo = mid
                else:
                    hi = mid - 1
            following = sendable[lo]
            data = self._chunkable_data(following)
            if data is not None and not fits(render([following], None, False)):
                # Too large for any message: a large object. Start it here if there is room.
                room = (limit or 0) - len(render(sendable[:lo], None, False).body)
                if lo == 0 or room >= (limit or 0) // 4:
                    self._chunking = _Chunking(following, data)
                    return self._build_chunk(render, fits, sendable[:lo])
            if lo > 0:
                rendered = render(sendable[:lo], None, False)
                return self._record(rendered, complete=sendable[:lo])
            if self._split_results(following):
                sendable = [
                    o for o in self._outbox if not (o.expects_status and not self._may_send_commands())
                ]
                continue
            raise LocalProtocolError(
                f"{following.command.name} does not fit in the peer's MaxMsgSize of {limit} bytes "
                "and cannot be split"
            )

    def _chunkable_data(self, out: _Out) -> str | bytes | None:
        """The data to send in chunks if ``out`` is a one-item command that may be split."""
        if not isinstance(out.command, ItemCommand | Results):
            return None
        if isinstance(out.command, Results) and len(out.command.items) > 1:
            return None
        item = _single_item(out.command)
        if item is None or not item.data:
            return None
        if isinstance(item.data, bytes) and self.encoding is Encoding.XML:
            return base64.b64encode(item.data).decode("ascii")
        return item.data

    def _split_results(self, out: _Out) -> bool:
        """A multi-item Results too large for one message becomes two Results (same CmdRef)."""
        cmd = out.command
        if not isinstance(cmd, Results) or len(cmd.items) < 2:
            return False
        half = len(cmd.items) // 2
        index = self._outbox.index(out)
        self._outbox[index : index + 1] = [
            _Out(dataclasses.replace(cmd, items=cmd.items[:half]), out.tag, out.expects_status),
            _Out(dataclasses.replace(cmd, items=cmd.items[half:]), out.tag, out.expects_status),
        ]
        return True

    def _build_chunk(
        self,
        render: Callable[[list[_Out], Command | None, bool], _Rendered],
        fits: Callable[[_Rendered], bool],
        others: list[_Out],
    ) -> tuple[Message, bytes]:
        """The next chunk of the large object in progress, as large as the message allows."""
        chunking = self._chunking
        assert chunking is not None
        command = chunking.out.command
        item = _single_item(command)
        assert item is not None
        total = len(chunking.data)
        remaining = total - chunking.position
        limit = self.peer_max_msg_size or 0

        def chunk_command(n: int) -> Command:
            piece = chunking.data[chunking.position : chunking.position + n]
            meta = item.meta
            if chunking.position == 0:
                meta = dataclasses.replace(meta or Meta(), size=_transmitted_size(chunking.data))
                if isinstance(chunking.data, str) and isinstance(item.data, bytes):
                    meta = dataclasses.replace(meta, format="b64")
            elif meta is not None and meta.size is not None:
                meta = dataclasses.replace(meta, size=None)
            new_item = dataclasses.replace(
                item, data=piece, more_data=chunking.position + n < total, meta=meta
            )
            return dataclasses.replace(command, items=(new_item,))  # type: ignore[type-var]

        overhead = len(render(others, chunk_command(0), False).body)
        n = min(remaining, max(1, limit - overhead - _SIZE_MARGIN)) if limit else remaining
        others_done = len(self._outbox) == len(others) + 1
        while True:
            last = n >= remaining
            rendered = render(others, chunk_command(n), last and others_done and self._may_be_final())
            if fits(rendered):
                break
            if n <= 1:
                raise LocalProtocolError(
                    f"the peer's MaxMsgSize of {limit} bytes cannot carry a large object"
                )
            overflow = len(rendered.body) + _SIZE_MARGIN - limit
            n = max(1, n - max(overflow, n // 32))
        chunking.position += n
        if chunking.position >= total:
            self._chunking = None
            return self._record(rendered, complete=[*others, chunking.out])
        return self._record(rendered, complete=others, awaiting_chunk=chunking.out)

    def _record(
        self, rendered: _Rendered, *, complete: list[_Out], awaiting_chunk: _Out | None = None
    ) -> tuple[Message, bytes]:
        """Drop what went out from the outbox and remember which commands await a Status."""
        done = {id(o) for o in complete}
        self._outbox = [o for o in self._outbox if id(o) not in done]
        msg_id = rendered.message.header.msg_id
        for out, cmd in rendered.pairs:
            if out.expects_status or out is awaiting_chunk:
                self._awaiting[(msg_id, cmd.cmd_id)] = out
        self._hdr_status = None
        return rendered.message, rendered.body

    def _outgoing(self, msg: Message, body: bytes, url: str | None) -> Outgoing:
        return Outgoing(
            body=body,
            content_type=self.encoding.content_type,
            headers=self._mac_headers(body),
            message=msg,
            url=url,
        )

    def _mac_headers(self, body: bytes) -> dict[str, str]:
        return {}

    def _has_content(self) -> bool:
        return bool(self._outbox) or self._chunking is not None or self._peer_package_open

    def _pop_events(self) -> list[Event]:
        events = list(self._events)
        self._events.clear()  # in place: the auth helpers append to this same list
        return events


# ---------------------------------------------------------------------------------------
# Verifying the peer's credentials (both roles use the same rules, section 6.3)


@dataclass(slots=True)
class _Verdict:
    code: int
    chal: Chal | None = None
    ok: bool = False
    reason: str = ""


class _PeerAuth:
    """Checks the credentials a peer presents, issuing nonces as the digest requires.

    ``expected`` is the peer's identity as we know it; ``nonce`` is the nonce we issued
    to the peer last (the peer computes its md5 Cred or HMAC with it).
    """

    def __init__(
        self,
        expected: Credentials | None,
        nonce: bytes,
        new_nonce: Callable[[], bytes],
        events: list[Event],
        *,
        rotate_on_failure: bool = True,
    ) -> None:
        self.expected = expected
        self.nonce = nonce
        self.authenticated = expected is None
        self.failures = 0
        self._new_nonce = new_nonce
        self._events = events
        self._rotate_on_failure = rotate_on_failure

    def _challenge(self, code: int, reason: str) -> _Verdict:
        assert self.expected is not None
        self.failures += 1
        if self._rotate_on_failure or not self.nonce or self.expected.auth_type is AuthType.BASIC:
            chal = self._fresh_chal()
        else:
            # The nonce the peer failed with stays valid until it authenticates: a failure
            # then changes nothing that must be stored (a server keeps no trace of it).
            chal = auth.make_chal(self.expected.auth_type, self.nonce)
        self._events.append(AuthenticationFailed(reason, code, after_challenge=self.failures > 1))
        return _Verdict(code, chal, ok=False, reason=reason)

    def _fresh_chal(self) -> Chal:
        assert self.expected is not None
        scheme = self.expected.auth_type
        if scheme is AuthType.BASIC:
            return auth.make_chal(scheme)
        self.nonce = self._new_nonce()
        self._events.append(NonceIssued(self.nonce))
        return auth.make_chal(scheme, self.nonce)

    def check(self, header: SyncHdr, body: bytes, hmac_header: str | None) -> _Verdict:
        expected = self.expected
        if expected is None:
            return _Verdict(StatusCode.OK, ok=True)
        scheme = expected.auth_type
        if scheme is AuthType.HMAC:
            if not hmac_header:
                return self._challenge(StatusCode.MISSING_CREDENTIALS, "no x-syncml-hmac header")
            try:
                good = auth.verify_hmac(hmac_header, expected.username, expected.password, self.nonce, body)
            except ProtocolError as exc:
                return self._challenge(StatusCode.INVALID_CREDENTIALS, str(exc))
            if not good:
                return self._challenge(StatusCode.INVALID_CREDENTIALS, "x-syncml-hmac does not match")
            self._accept(scheme)
            # HMAC: 200 and a new nonce with every message (section 6.3).
            return _Verdict(StatusCode.OK, self._fresh_chal(), ok=True)
        cred = header.cred
        if cred is None:
            if self.authenticated:
                return _Verdict(StatusCode.OK, ok=True)
            return self._challenge(StatusCode.MISSING_CREDENTIALS, "no credentials")
        if self.authenticated:
            return _Verdict(StatusCode.AUTHENTICATION_ACCEPTED, ok=True)  # a repeated Cred is harmless
        try:
            presented = auth.auth_type_of(cred)
        except ProtocolError as exc:
            return self._challenge(StatusCode.INVALID_CREDENTIALS, str(exc))
        if presented is not scheme:  # pitfall 10: a different scheme than asked is a failure
            return self._challenge(
                StatusCode.INVALID_CREDENTIALS,
                f"{presented.value} credentials where {scheme.value} is required",
            )
        if scheme is AuthType.BASIC:
            good = auth.verify_basic(cred.data, expected.username, expected.password)
        elif scheme is AuthType.MD5:
            good = auth.verify_md5(cred.data, expected.username, expected.password, self.nonce)
        else:
            return self._challenge(StatusCode.INVALID_CREDENTIALS, f"{scheme.value} is not supported")
        if not good:
            return self._challenge(StatusCode.INVALID_CREDENTIALS, f"{scheme.value} credentials do not match")
        self._accept(scheme)
        # 212: no more credentials this session; the Chal's nonce is for the next session.
        return _Verdict(
            StatusCode.AUTHENTICATION_ACCEPTED,
            self._fresh_chal() if scheme is AuthType.MD5 else None,
            ok=True,
        )

    def _accept(self, scheme: AuthType) -> None:
        assert self.expected is not None
        if not self.authenticated:
            self._events.append(Authenticated(self.expected.username, scheme))
        self.authenticated = True
        self.failures = 0


class _OwnAuth:
    """The credentials we present to the peer, and how we react to its challenges."""

    def __init__(self, creds: Credentials | None, nonce: bytes, events: list[Event]) -> None:
        self.creds = creds
        self.nonce = nonce
        self.accepted = False  # a 212 came back: no more Cred this session
        self.challenges = 0
        #: Why we stopped answering the peer's challenges (a downgrade we refused), if we did.
        self.refused: str | None = None
        self._events = events

    def cred(self) -> Cred | None:
        creds = self.creds
        if creds is None or self.accepted or creds.auth_type is AuthType.HMAC:
            return None
        return auth.make_cred(creds.auth_type, creds.username, creds.password, self.nonce)

    def mac_headers(self, body: bytes) -> dict[str, str]:
        creds = self.creds
        if creds is None or creds.auth_type is not AuthType.HMAC:
            return {}
        mac = auth.hmac_mac(creds.username, creds.password, self.nonce, body)
        return {auth.HMAC_HEADER: auth.build_hmac_header(creds.username, mac)}

    def on_header_status(self, status: Status | None, peer_trusted: bool) -> bool:
        """React to the peer's Status for our SyncHdr; True if we must resend our commands."""
        if status is None:
            return False
        chal_nonce: bytes | None = None
        if status.chal is not None:
            chal_nonce = auth.nonce_from_chal(status.chal)
        code = status.code
        if code in _UNAUTH:
            self.challenges += 1
            if self.creds is not None and status.chal is not None:
                try:
                    wanted = auth.auth_type_of(status.chal)
                except ProtocolError:
                    wanted = self.creds.auth_type
                if (
                    wanted is AuthType.BASIC
                    and self.creds.auth_type is not AuthType.BASIC
                    and not peer_trusted
                ):
                    # Basic sends the password itself: a peer that has not proved who it is
                    # does not get it by asking (a rogue server or a man in the middle would).
                    self.refused = (
                        f"a server that has not authenticated asked for basic credentials; this "
                        f"account uses {self.creds.auth_type.value}; its password is not sent in the clear"
                    )
                    return False
                if wanted in (AuthType.BASIC, AuthType.MD5, AuthType.HMAC):
                    self.creds = dataclasses.replace(self.creds, auth_type=wanted)
            if chal_nonce is not None:
                self.nonce = chal_nonce  # used for the retry, persisted only once trusted
            self.accepted = False
            return self.creds is not None
        if code == StatusCode.AUTHENTICATION_ACCEPTED:
            self.accepted = True
        if chal_nonce is not None:
            self.nonce = chal_nonce
            if peer_trusted:
                self._events.append(NonceReceived(chal_nonce))
        return False


# ---------------------------------------------------------------------------------------
# The client


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """What a DM client session needs to know (DMAcc, DevInfo and its own limits).

    ``client_nonce`` is CLCRED AAuthData (the nonce the server issued last);
    ``server_nonce`` is SRVCRED AAuthData (the nonce we issued to the server last).
    """

    device_id: str
    server_uri: str
    credentials: Credentials | None = None
    client_nonce: bytes = b""
    server_credentials: Credentials | None = None
    server_nonce: bytes = b""
    require_server_auth: bool = False
    session_id: str = "1"
    alert_code: int = AlertCode.CLIENT_INITIATED_MGMT
    devinfo: tuple[tuple[str, str], ...] = ()
    encoding: Encoding = Encoding.XML
    max_msg_size: int | None = 16384
    max_obj_size: int | None = 4 * 1024 * 1024
    max_auth_attempts: int = 3
    nonce_factory: Callable[[], bytes] = auth.new_nonce


class ClientSession(_Endpoint):
    """One DM session of a device with one server (packages 1 and 3)."""

    _role = "client"

    def __init__(self, config: ClientConfig, handler: CommandHandler) -> None:
        super().__init__(
            encoding=config.encoding,
            session_id=config.session_id,
            max_msg_size=config.max_msg_size,
            max_obj_size=config.max_obj_size,
            nonce_factory=config.nonce_factory,
        )
        self.config = config
        self.handler = handler
        self.url = config.server_uri
        self._own = _OwnAuth(config.credentials, config.client_nonce, self._events)
        self._peer = _PeerAuth(
            config.server_credentials if config.require_server_auth else None,
            config.server_nonce,
            config.nonce_factory,
            self._events,
        )
        self._resend_on_challenge = False
        #: A nonce we issued to the server while checking its last message, with the one it
        #: replaces: it exists for the server only once a message of ours carries it (the Chal
        #: of our SyncHdr Status). A session that ends on the server's package sends nothing,
        #: so the server keeps the old nonce, and so must we (found by the conformance suite:
        #: HMAC rotates on every message, MD5 on the server's first Cred).
        self._unsent_nonce: tuple[NonceIssued, bytes] | None = None
        #: That nonce once a message of ours carried it: announced (``NonceIssued``, which a
        #: device persists) only when the server's answer arrives, so a message lost on the way
        #: or refused for good leaves the device with the nonce the server still has.
        self._carried_nonce: NonceIssued | None = None
        #: Management commands received from the server (an Atomic or Sequence counts once).
        self.commands_received = 0

    # -- public API ------------------------------------------------------------------

    @property
    def server_authenticated(self) -> bool:
        """Whether the server proved its identity (always True when we do not require it)."""
        return self._peer.authenticated

    def queue_alert(self, alert: Alert, tag: str | None = None) -> str:
        """Send ``alert`` (a Generic Alert 1226, a client event 1224) in the next message.

        The returned tag comes back in a ``StatusReceived`` when the server answers it.
        """
        code = alert.code
        if code not in (AlertCode.GENERIC_ALERT, AlertCode.CLIENT_EVENT):
            raise LocalProtocolError(f"a client may queue only alerts 1224 and 1226, not {alert.data}")
        if self.finished:
            raise LocalProtocolError("the session is over; queue the alert in a new session")
        return self._enqueue(alert, tag, expects_status=True)

    def start(self) -> Outgoing:
        """Package #1: Alert 1200/1201, DevInfo, any queued alerts."""
        self._move("start")
        setup: list[_Out] = [
            _Out(Alert("0", data=str(int(self.config.alert_code))), self._new_tag(), True),
        ]
        if self.config.devinfo:
            items = tuple(Item(source=Source(uri), data=value) for uri, value in self.config.devinfo)
            setup.append(_Out(Replace("0", items), self._new_tag(), True))
        self._outbox[:0] = setup
        return self._send()

    def receive(
        self, body: bytes, *, hmac_header: str | None = None, content_type: str | None = None
    ) -> list[Event]:
        """Take the server's reply; execute its commands; return what happened."""
        if self.state is not State.AWAITING_REPLY:
            raise LocalProtocolError(f"client session cannot receive while {self.state.value}")
        try:
            message = self._decode(body, content_type)
            if message.header.session_id != self.session_id:
                raise RemoteProtocolError(
                    f"server answered SessionID {message.header.session_id!r}, ours is {self.session_id!r}"
                )
        except ProtocolError:
            self._move("give-up")
            raise
        self._note_header(message.header)
        if message.header.resp_uri:
            self.url = message.header.resp_uri
        return self._process(message, body, hmac_header)

    def reply(self) -> Outgoing | None:
        """The next client message, or None when the session has ended."""
        if self.state is not State.REPLY_DUE:
            return None
        if not self._has_content():
            self._move("nothing-to-say")
            self._settle_nonce(sent=False)
            self._events.append(SessionEnded())
            return None
        return self._send()

    def abort(self, reason: str = "") -> Outgoing:
        """Alert 1223 with Final; the session is over once this is sent.

        Also possible after the server's message was refused (state FAILED): the abort
        then carries no Status for a header we could not read.
        """
        if self.state not in (State.REPLY_DUE, State.FAILED):
            raise LocalProtocolError(f"client session cannot abort while {self.state.value}")
        if self.state is State.FAILED:
            self._hdr_status = None
        self._settle_nonce(sent=self._hdr_status is not None and self._hdr_status.chal is not None)
        outgoing = self._abort_message()
        self._move("abort")
        self._events.append(SessionAborted(by_peer=False, reason=reason))
        return outgoing

    def events(self) -> list[Event]:
        """Events raised outside ``receive`` (e.g. by ``reply``), oldest first."""
        return self._pop_events()

    # -- internals -------------------------------------------------------------------

    def _header(self) -> SyncHdr:
        creds = self._own.creds
        loc_name = creds.username if creds is not None and creds.auth_type is not AuthType.HMAC else None
        meta = None
        if self.max_msg_size or self.max_obj_size:
            meta = Meta(max_msg_size=self.max_msg_size, max_obj_size=self.max_obj_size)
        return SyncHdr(
            session_id=self.session_id,
            msg_id=str(self._out_msg_id),
            target=Target(self.url),
            source=Source(self.config.device_id, loc_name),
            cred=self._own.cred(),
            meta=meta,
        )

    def _mac_headers(self, body: bytes) -> dict[str, str]:
        return self._own.mac_headers(body)

    def _send(self) -> Outgoing:
        self._settle_nonce(sent=self._hdr_status is not None and self._hdr_status.chal is not None)
        msg, body = self._build()
        if self.state is State.REPLY_DUE:
            self._move("reply")
        return self._outgoing(msg, body, self.url)

    def _settle_nonce(self, *, sent: bool) -> None:
        """Keep the nonce issued to the server if our next message carries it, else take it back."""
        pending, self._unsent_nonce = self._unsent_nonce, None
        if pending is None:
            return
        event, previous = pending
        if sent:
            self._carried_nonce = event
        else:
            self._peer.nonce = previous

    def _abort_message(self) -> Outgoing:
        self._outbox = [o for o in self._outbox if not o.expects_status]
        self._chunking = None
        self._peer_package_open = False
        self._outbox.append(_Out(Alert("0", data=str(int(AlertCode.SESSION_ABORT)))))
        msg, body = self._build()
        return self._outgoing(msg, body, self.url)

    def _requeue_on_challenge(self) -> bool:
        return self._resend_on_challenge

    def _process(self, message: Message, body: bytes, hmac_header: str | None) -> list[Event]:
        events = self._events
        if self._carried_nonce is not None:  # the server answered the message that carried it
            events.append(self._carried_nonce)
            self._carried_nonce = None
        # 1. Who is the server? (only when we require it to authenticate)
        self._settle_nonce(sent=False)  # a nonce issued on an earlier message that was never sent
        previous_nonce, checked_from = self._peer.nonce, len(events)
        verdict = self._peer.check(message.header, body, hmac_header)
        issued = [e for e in events[checked_from:] if isinstance(e, NonceIssued)]
        if issued:
            events[checked_from:] = [e for e in events[checked_from:] if not isinstance(e, NonceIssued)]
            self._unsent_nonce = (issued[-1], previous_nonce)
        # 2. What did the server say about us?
        hdr_status = self._header_status(message)
        self._resend_on_challenge = self._own.on_header_status(hdr_status, self._peer.authenticated)
        if self._own.refused is not None:
            events.append(
                AuthenticationFailed(self._own.refused, hdr_status.code if hdr_status else 401, final=True)
            )
            self._move("give-up")
            return self._pop_events()
        if self._resend_on_challenge and self._own.challenges > self.config.max_auth_attempts:
            events.append(
                AuthenticationFailed(
                    "the server kept refusing our credentials",
                    hdr_status.code if hdr_status else 401,
                    final=True,
                )
            )
            self._move("give-up")
            return self._pop_events()
        if hdr_status is not None and hdr_status.code in _UNAUTH and not self._resend_on_challenge:
            events.append(
                AuthenticationFailed(
                    "the server refused our credentials and we have none to offer",
                    hdr_status.code,
                    final=True,
                )
            )
            self._move("give-up")
            return self._pop_events()
        self._take_statuses(message)
        commands = [c for c in message.commands if not isinstance(c, Status)]
        if any(isinstance(c, Alert) and c.code == AlertCode.SESSION_ABORT for c in commands):
            self._move("receive-abort")
            events.append(SessionAborted(by_peer=True, reason="the server sent Alert 1223"))
            return self._pop_events()
        self._move("receive")
        self._hdr_status = self._status_for_header(message.header, verdict)
        if not verdict.ok:
            if self._peer.failures > self.config.max_auth_attempts:
                events.append(
                    AuthenticationFailed("the server did not authenticate", verdict.code, final=True)
                )
                self._hdr_status = None
                self._move("give-up")
                return self._pop_events()
            if not commands and not self._resend_on_challenge:
                # Pitfall 9: never answer a command-less package with a challenge alone.
                self._hdr_status = None
            for cmd in commands:
                self._queue_status(cmd, verdict.code)
        else:
            for cmd in commands:
                whole = self._reassemble(cmd)
                if whole is not None:
                    self._execute_top(whole)
        self._peer_package_open = not message.final and not self._is_next_request(message)
        return self._pop_events()

    def _status_for_header(self, header: SyncHdr, verdict: _Verdict) -> Status:
        assert self._in_msg_id is not None
        return Status(
            cmd_id="0",
            msg_ref=self._in_msg_id,
            cmd_ref=_HDR,
            cmd="SyncHdr",
            data=str(int(verdict.code)),
            target_refs=(header.target.loc_uri,),
            source_refs=(header.source.loc_uri,),
            chal=verdict.chal,
        )

    # -- executing the server's commands ---------------------------------------------

    def _execute_top(self, cmd: Command) -> None:
        self.commands_received += 1
        if isinstance(cmd, Atomic):
            self._run_atomic(cmd)
        elif isinstance(cmd, Sequence):
            self._run_sequence(cmd)
        else:
            self._run_one(cmd)

    def _run_one(self, cmd: Command) -> int:
        """Execute one command, queue its Status (and Results); return the status code."""
        if isinstance(cmd, Alert):
            code = cmd.code
            if code in (AlertCode.NEXT_MESSAGE, AlertCode.NO_END_OF_DATA):
                if code == AlertCode.NO_END_OF_DATA and self._chunking is not None:
                    self._chunking.position = 0  # the server lost our object: send it again
                self._queue_status(cmd, StatusCode.OK)
                return StatusCode.OK
            if code is None or not (1100 <= code <= 1104):
                self._queue_status(cmd, StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED)
                return StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED
        elif not isinstance(cmd, Add | Replace | Delete | Copy | Get | Exec):
            self._queue_status(cmd, StatusCode.COMMAND_NOT_ALLOWED)
            return StatusCode.COMMAND_NOT_ALLOWED
        assert isinstance(cmd, ItemCommand | Alert)
        try:
            outcomes = self.handler.execute(cmd)
        except ProtocolError as exc:
            outcomes = [Outcome(exc.status_hint)]
        if not outcomes:
            outcomes = [Outcome(StatusCode.COMMAND_FAILED)]
        worst = StatusCode.OK.value
        for outcome in outcomes:
            code = outcome.code
            results = outcome.results
            if results is not None and self._too_large_for_peer(results):
                code, results = StatusCode.REQUEST_ENTITY_TOO_LARGE, None
            self._queue_status(cmd, code, target_ref=outcome.target_ref, items=outcome.items)
            if results is not None and 200 <= code < 300:
                assert self._in_msg_id is not None
                self._outbox.append(
                    _Out(
                        Results(
                            "0",
                            cmd_ref=cmd.cmd_id,
                            msg_ref=self._in_msg_id,
                            items=results,
                            meta=outcome.results_meta,
                        )
                    )
                )
            if not 200 <= code < 300:
                worst = code
        return worst

    def _too_large_for_peer(self, items: tuple[Item, ...]) -> bool:
        limit = self.peer_max_obj_size
        if not limit:
            return False
        return any(i.data is not None and _transmitted_size(i.data) > limit for i in items)

    def _run_sequence(self, seq: Sequence) -> None:
        self._queue_status(seq, StatusCode.OK)
        skipping = False
        for inner in seq.commands:
            if skipping:
                self._queue_status(inner, StatusCode.NOT_EXECUTED)
                continue
            if isinstance(inner, Atomic):
                self._run_atomic(inner)
                continue
            if isinstance(inner, Sequence):
                self._run_sequence(inner)
                continue
            code = self._run_one(inner)
            if isinstance(inner, Alert) and code in (StatusCode.NOT_MODIFIED, StatusCode.OPERATION_CANCELLED):
                skipping = True  # the user said No or cancelled: skip the rest (215)

    def _run_atomic(self, atomic: Atomic) -> None:
        """All or nothing (section 3.4): 507 on any failure, 216 for what was rolled back."""
        allowed = (Add, Replace, Delete, Copy, Alert)
        bad = [c for c in atomic.commands if not isinstance(c, allowed)]
        index_of_status = len(self._outbox)
        self._queue_status(atomic, StatusCode.OK)
        if bad:
            # Get, Exec, nested Atomic or Sequence inside Atomic: that element 500, the Atomic 507.
            self._outbox[index_of_status] = _Out(self._status_for(atomic, StatusCode.ATOMIC_FAILED))
            for inner in atomic.commands:
                code = StatusCode.COMMAND_FAILED if inner in bad else StatusCode.NOT_EXECUTED
                self._queue_status(inner, code)
            return
        self.handler.begin_atomic()
        done: list[tuple[int, Command]] = []  # (index in outbox of its status, command)
        failed = False
        for inner in atomic.commands:
            if failed:
                self._queue_status(inner, StatusCode.NOT_EXECUTED)
                continue
            position = len(self._outbox)
            if 200 <= self._run_one(inner) < 300:
                done.append((position, inner))
            else:
                failed = True
        self.handler.end_atomic(commit=not failed)
        if failed:
            self._outbox[index_of_status] = _Out(self._status_for(atomic, StatusCode.ATOMIC_FAILED))
            for position, inner in done:
                self._outbox[position] = _Out(self._status_for(inner, StatusCode.ATOMIC_ROLL_BACK_OK))


# ---------------------------------------------------------------------------------------
# The server


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What a DM server session needs to know about itself and the device's account.

    ``client_credentials`` is the device's CLCRED as the server knows it (None: no DM-level
    authentication, e.g. mutual TLS); ``client_nonce`` is the nonce the server issued to
    this device last. ``server_credentials`` (SRVCRED: ServerID and the per-device server
    password) and ``server_nonce`` (issued by the device) are used when ``send_server_cred``
    is set or the device challenges the server.
    """

    server_uri: str
    resp_uri: str | None = None
    client_credentials: Credentials | None = None
    client_nonce: bytes = b""
    server_credentials: Credentials | None = None
    server_nonce: bytes = b""
    send_server_cred: bool = False
    max_msg_size: int | None = 64 * 1024
    max_obj_size: int | None = 16 * 1024 * 1024
    max_auth_failures: int = 3
    nonce_factory: Callable[[], bytes] = auth.new_nonce
    #: Messages of this session answered before without anything stored: each was a challenge
    #: (a server keeps a session only once the device authenticated in it), so they count as
    #: failed attempts and the reply is numbered after them.
    challenged_before: int = 0


_SERVER_COMMANDS = (Add, Replace, Delete, Copy, Get, Exec, Alert, Atomic, Sequence)
#: Leads every snapshot; bump the digit when the session's private state changes shape.
_SNAPSHOT_MAGIC = b"omadm-server-session:2\n"


class ServerSession(_Endpoint):
    """The server's side of one DM session (packages 2 and 4), one ``receive``/``reply`` per POST."""

    _role = "server"

    def __init__(self, config: ServerConfig) -> None:
        super().__init__(
            encoding=Encoding.XML,
            session_id="",
            max_msg_size=config.max_msg_size,
            max_obj_size=config.max_obj_size,
            nonce_factory=config.nonce_factory,
        )
        self.config = config
        self.state = State.AWAITING_REPLY
        self.device_id: str | None = None
        self._peer = _PeerAuth(
            config.client_credentials,
            config.client_nonce,
            config.nonce_factory,
            self._events,
            rotate_on_failure=False,
        )
        self._peer.failures = config.challenged_before
        self._out_msg_id = config.challenged_before
        self._own = _OwnAuth(
            config.server_credentials if config.send_server_cred else None, config.server_nonce, self._events
        )
        self._own_fallback = config.server_credentials
        self._gets: dict[tuple[str, str], _Out] = {}
        self._started = False
        # The last reply as it travelled (body, content type, headers), for a client that
        # repeats its message: kept as bytes, not as its Message tree, which was most of a
        # snapshot's size and time; the Message is decoded again only for a repeat.
        self._last_wire: tuple[bytes, str, dict[str, str]] | None = None
        self._repeat = False
        self._resend_on_challenge = False
        self._give_up = False

    # -- public API ------------------------------------------------------------------

    def queue(self, command: Command, tag: str | None = None) -> str:
        """Send ``command`` to the device as soon as the protocol allows; returns its tag.

        CmdIDs are assigned when the message is built; the tag comes back in the
        ``StatusReceived`` (and ``ResultsReceived``) events for this command.
        """
        if not isinstance(command, _SERVER_COMMANDS):
            raise LocalProtocolError(f"a server does not send {command.name}")
        if self.finished:
            raise LocalProtocolError("the session is over; queue the command in a new session")
        return self._enqueue(command, tag, expects_status=True)

    @property
    def authenticated(self) -> bool:
        """Whether the device has proven its identity in this session."""
        return self._peer.authenticated

    @property
    def pending(self) -> int:
        """Commands queued or sent whose final Status has not come back."""
        return len([o for o in self._outbox if o.expects_status]) + len(self._awaiting)

    def receive(
        self, body: bytes, *, hmac_header: str | None = None, content_type: str | None = None
    ) -> list[Event]:
        """Take one client message (one HTTP POST body) and return what happened."""
        message, self.encoding = decode(body, content_type)
        return self.receive_message(message, body, hmac_header=hmac_header)

    def receive_message(
        self,
        message: Message,
        body: bytes,
        *,
        hmac_header: str | None = None,
        encoding: Encoding | None = None,
    ) -> list[Event]:
        """Like ``receive`` for a message the caller decoded already (to find the device).

        ``encoding`` is what the body was in (``codec.decode`` says): the reply uses it.
        """
        if encoding is not None:
            self.encoding = encoding
        header = message.header
        if (
            self._last_wire is not None
            and header.msg_id == self._in_msg_id
            and header.session_id == self.session_id
        ):
            # The client repeated its last message (a lost reply): answer the same again.
            self._repeat = True
            self._move("receive-again")
            return []
        if self.state is not State.AWAITING_REPLY:
            raise LocalProtocolError(f"server session cannot receive while {self.state.value}")
        if self.session_id and header.session_id != self.session_id:
            raise RemoteProtocolError(
                f"SessionID {header.session_id!r} does not belong to session {self.session_id!r}"
            )
        self.session_id = header.session_id
        self.device_id = header.source.loc_uri
        self._note_header(header)
        return self._process(message, body, hmac_header)

    def reply(self) -> Outgoing:
        """The server's answer to the message just received (every client message gets one)."""
        if self._repeat and self._last_wire is not None:
            self._repeat = False
            self._move("reply")
            body, content_type, headers = self._last_wire
            message, _ = decode(body, content_type)
            return Outgoing(body, content_type, headers, message)
        if self.state is not State.REPLY_DUE:
            raise LocalProtocolError(f"server session cannot reply while {self.state.value}")
        msg_id = self._out_msg_id
        try:
            msg, body = self._build()
        except LocalProtocolError as exc:
            msg, body = self._abort_too_small(msg_id, str(exc))
            outgoing = self._outgoing(msg, body, None)
            self._last_wire = (outgoing.body, outgoing.content_type, outgoing.headers)
            return outgoing
        outgoing = self._outgoing(msg, body, None)
        self._last_wire = (outgoing.body, outgoing.content_type, outgoing.headers)
        carries_commands = any(not isinstance(c, Status) for c in msg.commands)
        done = msg.final and not carries_commands and self._peer.authenticated and not self._outbox
        if self._give_up or done:
            self._move("reply-last")
            self._events.append(SessionEnded())
        else:
            self._move("reply")
        return outgoing

    def abort(self, reason: str = "") -> Outgoing:
        """Answer the current client message with Alert 1223 and end the session."""
        if self.state is not State.REPLY_DUE:
            raise LocalProtocolError(f"server session cannot abort while {self.state.value}")
        self._outbox = [o for o in self._outbox if not o.expects_status]
        self._chunking = None
        self._peer_package_open = False
        self._outbox.append(_Out(Alert("0", data=str(int(AlertCode.SESSION_ABORT)))))
        msg, body = self._build()
        self._move("abort")
        self._events.append(SessionAborted(by_peer=False, reason=reason))
        return self._outgoing(msg, body, None)

    def events(self) -> list[Event]:
        """Events raised outside ``receive`` (e.g. ``SessionEnded`` by ``reply``), oldest first."""
        return self._pop_events()

    def _abort_too_small(self, msg_id: int, why: str) -> tuple[Message, bytes]:
        """The reply did not fit the peer's MaxMsgSize: end the session with the smallest message.

        A device whose MaxMsgSize cannot carry the Statuses it is owed cannot be managed, and
        waiting for a larger limit would loop for ever. The protocol's way out is an abort:
        Status for the SyncHdr, Alert 1223 and Final (section 2.2 allows leaving out the other
        Statuses). If even that does not fit, no DM reply can: ``ReplyTooLarge``.
        """
        limit = self.peer_max_msg_size or 0
        self._out_msg_id = msg_id  # the failed build took a MsgID
        self._outbox = [_Out(Alert("0", data=str(int(AlertCode.SESSION_ABORT))))]
        self._chunking = None
        self._peer_package_open = False
        try:
            msg, body = self._build()
        except LocalProtocolError:
            self.peer_max_msg_size = None  # measure the abort without a limit
            self._out_msg_id = msg_id
            self._outbox = [_Out(Alert("0", data=str(int(AlertCode.SESSION_ABORT))))]
            _, smallest = self._build()
            raise ReplyTooLarge(limit, len(smallest) + _SIZE_MARGIN) from None
        self._move("abort")
        reason = f"the device's MaxMsgSize of {limit} bytes cannot carry the reply ({why})"
        self._events.append(SessionAborted(by_peer=False, reason=reason))
        return msg, body

    # -- between HTTP requests -------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole session as bytes, to keep between two messages (any worker may resume it).

        Everything is in it: the state, MsgIDs, commands queued and awaiting Status, chunking
        and large-object reassembly, nonces, the last reply (for a repeated message). Events
        not yet collected are *not*: take them before. The format is this class's own and
        versioned; :meth:`restore` refuses other versions. It is a pickle, so a server must
        only restore bytes it wrote itself (omadm's server signs them with its secret), and
        ``nonce_factory`` must be a module-level function.
        """
        if self._events:
            raise LocalProtocolError("collect the session's events before taking a snapshot")
        import pickle  # noqa: PLC0415 - the server's; a device agent never pickles a session

        return _SNAPSHOT_MAGIC + pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def restore(cls, data: bytes) -> ServerSession:
        """The session :meth:`snapshot` saved.

        Raises:
            LocalProtocolError: the bytes are not a snapshot of this version.
        """
        import pickle  # noqa: PLC0415 - see snapshot

        if not data.startswith(_SNAPSHOT_MAGIC):
            raise LocalProtocolError("not a ServerSession snapshot of this omadm version")
        try:
            session = pickle.loads(data[len(_SNAPSHOT_MAGIC) :])
        except Exception as exc:  # any unpickling failure means the same: unusable
            raise LocalProtocolError(f"unreadable ServerSession snapshot: {exc}") from None
        if not isinstance(session, cls):
            raise LocalProtocolError("the snapshot holds no ServerSession")
        return session

    # -- internals -------------------------------------------------------------------

    def _header(self) -> SyncHdr:
        assert self._in_header is not None
        meta = None
        if self.max_msg_size or self.max_obj_size:
            meta = Meta(max_msg_size=self.max_msg_size, max_obj_size=self.max_obj_size)
        return SyncHdr(
            session_id=self.session_id,
            msg_id=str(self._out_msg_id),
            target=Target(self._in_header.source.loc_uri),
            source=Source(self.config.server_uri),
            resp_uri=self.config.resp_uri,
            cred=self._own.cred(),
            meta=meta,
        )

    def _mac_headers(self, body: bytes) -> dict[str, str]:
        return self._own.mac_headers(body)

    def _may_send_commands(self) -> bool:
        return self._peer.authenticated and not self._peer_package_open and not self._give_up

    def _may_be_final(self) -> bool:
        return not self._peer_package_open

    def _requeue_on_challenge(self) -> bool:
        return self._resend_on_challenge

    def _process(self, message: Message, body: bytes, hmac_header: str | None) -> list[Event]:
        events = self._events
        verdict = self._peer.check(message.header, body, hmac_header)
        self._hdr_status = Status(
            cmd_id="0",
            msg_ref=message.header.msg_id,
            cmd_ref=_HDR,
            cmd="SyncHdr",
            data=str(int(verdict.code)),
            target_refs=(message.header.target.loc_uri,),
            source_refs=(message.header.source.loc_uri,),
            chal=verdict.chal,
        )
        self._move("receive")
        commands = [c for c in message.commands if not isinstance(c, Status)]
        if not verdict.ok:
            # Only Status elements go back, 401/407 for every command (section 6.3).
            for cmd in commands:
                self._queue_status(cmd, verdict.code)
            if self._peer.failures >= self.config.max_auth_failures:
                # Give up, and say so: Alert 1223 stops the client from retrying for ever.
                events.append(AuthenticationFailed(verdict.reason, verdict.code, final=True))
                self._outbox.append(_Out(Alert("0", data=str(int(AlertCode.SESSION_ABORT)))))
                self._give_up = True
            self._peer_package_open = False
            return self._pop_events()
        hdr_status = self._header_status(message)
        if hdr_status is not None and hdr_status.code in _UNAUTH and self._own.creds is None:
            # The device wants us to authenticate: start sending our credentials.
            self._own.creds = self._own_fallback
        self._resend_on_challenge = self._own.on_header_status(hdr_status, True)
        if self._resend_on_challenge and self._own.challenges > self.config.max_auth_failures:
            events.append(AuthenticationFailed("the device kept refusing our credentials", 401, final=True))
            self._give_up = True
        self._take_statuses(message)
        self._take_results(message)
        for cmd in commands:
            if isinstance(cmd, Results):
                continue
            self._handle_client_command(cmd)
        self._peer_package_open = not message.final and not self._is_next_request(message)
        return self._pop_events()

    def _take_results(self, message: Message) -> None:
        for cmd in message.commands:
            if not isinstance(cmd, Results):
                continue
            whole = self._reassemble(cmd)
            if whole is None:
                continue
            assert isinstance(whole, Results)
            get = self._find_get(whole)
            if get is not None and get.tag is not None:
                self._events.append(ResultsReceived(get.tag, get.command, whole))

    def _find_get(self, results: Results) -> _Out | None:
        if results.msg_ref is not None:
            return self._gets.get((results.msg_ref, results.cmd_ref))
        for (_, cmd_id), out in reversed(self._gets.items()):
            if cmd_id == results.cmd_ref:
                return out
        return None

    def _record(
        self, rendered: _Rendered, *, complete: list[_Out], awaiting_chunk: _Out | None = None
    ) -> tuple[Message, bytes]:
        result = super()._record(rendered, complete=complete, awaiting_chunk=awaiting_chunk)
        msg_id = rendered.message.header.msg_id
        for out, cmd in rendered.pairs:
            for get_id in _get_ids(cmd):
                self._gets[(msg_id, get_id)] = out
        return result

    def _handle_client_command(self, cmd: Command) -> None:
        if isinstance(cmd, Alert):
            code = cmd.code
            if code in (AlertCode.SERVER_INITIATED_MGMT, AlertCode.CLIENT_INITIATED_MGMT):
                self._queue_status(cmd, StatusCode.OK)
                if not self._started:
                    self._started = True
                    self._events.append(SessionStarted(int(code), self.device_id or "", self.session_id))
            elif code == AlertCode.SESSION_ABORT:
                self._queue_status(cmd, StatusCode.OK)
                self._outbox = [o for o in self._outbox if not o.expects_status]
                self._chunking = None
                self._give_up = True
                self._events.append(SessionAborted(by_peer=True, reason="the device sent Alert 1223"))
            elif code == AlertCode.NEXT_MESSAGE:
                self._queue_status(cmd, StatusCode.OK)
            elif code == AlertCode.NO_END_OF_DATA:
                self._queue_status(cmd, StatusCode.OK)
                if self._chunking is not None:
                    self._chunking.position = 0  # the device lost our object: send it again
            elif code in (AlertCode.GENERIC_ALERT, AlertCode.CLIENT_EVENT):
                self._queue_status(cmd, StatusCode.OK)
                self._events.append(AlertReceived(cmd))
            else:
                self._queue_status(cmd, StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED)
            return
        if isinstance(cmd, Replace):
            self._queue_status(cmd, StatusCode.OK)
            values = {
                item.source.loc_uri: item.data
                if isinstance(item.data, str)
                else (item.data or b"").decode("utf-8", "replace")
                for item in cmd.items
                if item.source is not None
            }
            self._events.append(DevInfoReceived(values))
            return
        # A client sends only Alert, Replace (DevInfo), Results and Status (section 2.1).
        self._queue_status(cmd, StatusCode.COMMAND_NOT_ALLOWED)


def _get_ids(cmd: Command) -> Iterable[str]:
    if isinstance(cmd, Get):
        yield cmd.cmd_id
    elif isinstance(cmd, Atomic | Sequence):
        for inner in cmd.commands:
            yield from _get_ids(inner)


speed_up_pickling(list(globals().values()))  # the session's own records, pickled with it
