"""The scripted DM server of the device runner: sessions the cases drive message by message.

:class:`ScriptedServer` receives the device's POSTs (:mod:`.device_http`) and sorts them into
:class:`DeviceSession` objects: a new session when the request carries no RespURI token of
ours, the open session otherwise. Each session wraps the protocol core's
:class:`~omadm.protocol.session.ServerSession`, which does the DM bookkeeping a server must
get right for the case to test the *device* (CmdIDs, Status for every device command,
authentication both ways, large objects, 1222), while the case decides what to send and
when, and can look at every decoded message the device sent (``received``) to check the
rules the session core is lenient about. :meth:`DeviceSession.reply_raw` lets a case answer
with bytes of its own (a replayed message, a forged credential): the wrapped session is no
longer used after that.

Credentials and nonces live in :class:`DeviceTarget`, shared by every session, so that nonce
rotation carries over from one session to the next as it does on a real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlparse

from omadm.protocol import auth, codec
from omadm.protocol.codec import Encoding
from omadm.protocol.codes import AuthType
from omadm.protocol.errors import ProtocolError
from omadm.protocol.messages import (
    Alert,
    Command,
    Get,
    Item,
    Message,
    Results,
    Source,
    Status,
    SyncHdr,
    Target,
)
from omadm.protocol.session import (
    AlertReceived,
    AuthenticationFailed,
    Credentials,
    Event,
    NonceIssued,
    NonceReceived,
    ResultsReceived,
    ServerConfig,
    ServerSession,
    StatusReceived,
)

from .device_http import Request, Response

__all__ = ["DeviceSession", "DeviceTarget", "Received", "ScriptedServer"]


@dataclass
class DeviceTarget:
    """The device under test as the scripted server knows it: its account and the nonces.

    ``client_nonce`` is the nonce the runner issued to the device (for its md5 Cred or MAC);
    ``server_nonce`` the one the device issued to the runner (for the runner's own Cred and
    the Package #0 digest); None while unknown (the resync nonce then wakes the device).
    """

    server_id: str
    username: str
    password: str
    server_password: str
    auth: AuthType = AuthType.MD5
    device_id: str | None = None
    client_nonce: bytes = b""
    server_nonce: bytes | None = None
    #: The server nonce before the last one the device issued (a replay uses it).
    previous_server_nonce: bytes = b""
    max_msg_size: int = 64 * 1024
    max_obj_size: int = 16 * 1024 * 1024

    def client_credentials(self) -> Credentials:
        return Credentials(self.auth, self.username, self.password)

    def server_credentials(self) -> Credentials:
        return Credentials(self.auth, self.server_id, self.server_password)


@dataclass(frozen=True)
class Received:
    """One message from the device as it came: decoded, its bytes, its encoding, its HTTP headers."""

    message: Message
    body: bytes
    encoding: Encoding
    headers: dict[str, str]
    #: The request path (with the RespURI token when the device followed it).
    path: str = ""


def render(message: Message) -> str:
    """A message as XML text for the report (WBXML messages are shown in their XML form)."""
    try:
        return codec.encode(message, Encoding.XML).decode("utf-8", "replace")
    except ProtocolError as exc:
        return f"<!-- cannot render the message: {exc} -->"


@dataclass
class _Channel:
    """Requests routed to one session, oldest first."""

    queue: asyncio.Queue[tuple[Request, Received]] = field(default_factory=asyncio.Queue)


class DeviceSession:
    """One DM session with the device; a case drives it with ``run``, ``turn``, ``close``."""

    def __init__(
        self,
        server: ScriptedServer,
        token: str,
        *,
        max_msg_size: int | None = None,
        max_obj_size: int | None = None,
        server_nonce: bytes | None = None,
    ) -> None:
        target = server.target
        self.server = server
        self.token = token
        self.resp_uri = f"{server.url}?s={token}"
        nonce = target.server_nonce if server_nonce is None else server_nonce
        self.core = ServerSession(
            ServerConfig(
                server_uri=server.url,
                resp_uri=self.resp_uri,
                client_credentials=target.client_credentials(),
                client_nonce=target.client_nonce,
                server_credentials=target.server_credentials(),
                server_nonce=nonce or b"",
                send_server_cred=True,
                max_msg_size=max_msg_size or target.max_msg_size,
                max_obj_size=max_obj_size or target.max_obj_size,
            )
        )
        self.received: list[Received] = []
        self.sent: list[Message] = []
        self.sent_bodies: list[bytes] = []
        self.events: list[Event] = []
        self.statuses: dict[str, Status] = {}
        self.results: dict[str, Results] = {}
        self.alerts: list[Alert] = []
        self.ended = False
        self.raw = False
        self._channel = _Channel()
        self._pending: Request | None = None

    # -- what the device said ----------------------------------------------------------

    @property
    def first(self) -> Message:
        return self.received[0].message

    @property
    def encoding(self) -> Encoding:
        return self.received[0].encoding

    @property
    def last(self) -> Message:
        return self.received[-1].message

    @property
    def authenticated(self) -> bool:
        return self.core.authenticated

    def auth_failures(self) -> list[AuthenticationFailed]:
        return [e for e in self.events if isinstance(e, AuthenticationFailed)]

    # -- driving the session -----------------------------------------------------------

    def queue(self, command: Command, tag: str | None = None) -> str:
        return self.core.queue(command, tag)

    async def run(self, *commands: Command, timeout: float | None = None) -> list[Status | None]:
        """Send ``commands`` and exchange messages until each has its Status (or the session ends).

        Returns the Statuses in the order of ``commands`` (None where none came).
        """
        tags = [self.core.queue(c) for c in commands]
        while not self.ended and any(t not in self.statuses for t in tags):
            if not await self.turn(timeout=timeout):
                break
        return [self.statuses.get(t) for t in tags]

    async def get(self, uri: str, *, timeout: float | None = None) -> tuple[Status | None, Results | None]:
        """Get ``uri``; returns its Status and Results (None when they did not come)."""
        tag = self.core.queue(Get("0", (Item(target=Target(uri)),)))
        while not self.ended and (tag not in self.statuses or self._results_due(tag)):
            if not await self.turn(timeout=timeout):
                break
        return self.statuses.get(tag), self.results.get(tag)

    async def get_many(
        self, uris: list[str], *, timeout: float | None = None
    ) -> list[tuple[Status | None, Results | None]]:
        """Get every URI of ``uris`` in as few exchanges as the sizes allow."""
        tags = [self.core.queue(Get("0", (Item(target=Target(uri)),))) for uri in uris]
        while not self.ended and any(t not in self.statuses or self._results_due(t) for t in tags):
            if not await self.turn(timeout=timeout):
                break
        return [(self.statuses.get(t), self.results.get(t)) for t in tags]

    def _results_due(self, tag: str) -> bool:
        status = self.statuses.get(tag)
        return status is not None and status.code == 200 and tag not in self.results

    async def turn(self, *, timeout: float | None = None) -> bool:
        """Answer the device's last message and wait for its next; False once the session ended."""
        if self.ended:
            return False
        out = self.core.reply()
        self._absorb(self.core.events())
        self._answer(Response(200, out.body, {"Content-Type": out.content_type, **out.headers}), out.message)
        if self.core.finished:
            self.ended = True
            return False
        return await self._next(timeout)

    async def close(self, *, timeout: float | None = None) -> None:
        """Let the session end normally: answer with nothing more to do until the device stops."""
        while not self.ended and not self.raw:
            if not await self.turn(timeout=timeout):
                break
        self._abandon()

    async def abort(self, *, timeout: float | None = None) -> None:
        """Answer the device's last message with Alert 1223 (session abort)."""
        if self.ended or self._pending is None:
            return
        out = self.core.abort("the conformance case aborts the session")
        self._absorb(self.core.events())
        self._answer(Response(200, out.body, {"Content-Type": out.content_type, **out.headers}), out.message)
        self.ended = True

    async def reply_raw(
        self,
        message: Message | bytes,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        status: int = 200,
    ) -> Received | None:
        """Answer with a message of the case's own; returns the device's next message, if any."""
        self.raw = True
        body = message if isinstance(message, bytes) else codec.encode(message, self.encoding)
        shown = message if isinstance(message, Message) else None
        if shown is None:
            with contextlib.suppress(ProtocolError):
                shown = codec.decode(body)[0]
        content_type = self.encoding.content_type
        self._answer(Response(status, body, {"Content-Type": content_type, **(headers or {})}), shown)
        try:
            request, received = await asyncio.wait_for(
                self._channel.queue.get(), timeout if timeout is not None else self.server.message_timeout
            )
        except TimeoutError:
            self.ended = True
            return None
        self._pending = request
        self._record_received(received)
        return received

    def compose(
        self,
        commands: Iterable[Command],
        *,
        msg_id: str | None = None,
        statuses: bool = True,
        cred: bool = False,
        final: bool = True,
    ) -> Message:
        """A server message for a raw reply: header, Status for the device's last message, ``commands``.

        Statuses answer every command of the device's last message with 200 (the header's
        with 212 when ``cred``); ``cred`` adds the runner's own credential for the current nonce.
        """
        last = self.last
        numbers = [int(m.header.msg_id) for m in self.sent if m.header.msg_id.isdigit()]
        msg_id = msg_id or str(max(numbers, default=0) + 1)
        body: list[Command] = []
        next_id = iter(range(1, 10_000))
        if statuses:
            body.append(
                Status(
                    str(next(next_id)),
                    last.header.msg_id,
                    "0",
                    "SyncHdr",
                    "212" if self.authenticated else "200",
                    target_refs=(last.header.target.loc_uri,),
                    source_refs=(last.header.source.loc_uri,),
                )
            )
            for command in last.commands:
                if not isinstance(command, Status | Results):
                    body.append(
                        Status(str(next(next_id)), last.header.msg_id, command.cmd_id, command.name, "200")
                    )
        for command in commands:
            body.append(_with_id(command, str(next(next_id))))
        target = self.server.target
        credential = None
        if cred and target.auth is not AuthType.HMAC:
            credential = auth.make_cred(
                target.auth, target.server_id, target.server_password, target.server_nonce or b""
            )
        header = SyncHdr(
            session_id=last.header.session_id,
            msg_id=msg_id,
            target=Target(last.header.source.loc_uri),
            source=Source(self.server.url),
            resp_uri=self.resp_uri,
            cred=credential,
        )
        return Message(header, tuple(body), final=final)

    def mac_headers(self, body: bytes) -> dict[str, str]:
        """The x-syncml-hmac header for ``body`` with the nonce the device issued (HMAC accounts)."""
        target = self.server.target
        if target.auth is not AuthType.HMAC:
            return {}
        mac = auth.hmac_mac(target.server_id, target.server_password, target.server_nonce or b"", body)
        return {auth.HMAC_HEADER: auth.build_hmac_header(target.server_id, mac)}

    # -- internals ---------------------------------------------------------------------

    async def _next(self, timeout: float | None) -> bool:
        try:
            request, received = await asyncio.wait_for(
                self._channel.queue.get(), timeout if timeout is not None else self.server.message_timeout
            )
        except TimeoutError:
            self.ended = True
            return False
        self._accept(request, received)
        return True

    def _accept(self, request: Request, received: Received) -> None:
        self._pending = request
        self._record_received(received)
        try:
            events = self.core.receive_message(
                received.message,
                received.body,
                hmac_header=request.header(auth.HMAC_HEADER),
                encoding=received.encoding,
            )
        except ProtocolError as exc:
            self._answer(Response(400, str(exc).encode()), None)
            self.ended = True
            raise
        self._absorb(events)

    def _record_received(self, received: Received) -> None:
        self.received.append(received)
        self.server.record("received", render(received.message))

    def _absorb(self, events: list[Event]) -> None:
        target = self.server.target
        for event in events:
            self.events.append(event)
            if isinstance(event, NonceIssued):
                target.client_nonce = event.nonce
            elif isinstance(event, NonceReceived):
                if target.server_nonce and target.server_nonce != event.nonce:
                    target.previous_server_nonce = target.server_nonce
                target.server_nonce = event.nonce
            elif isinstance(event, StatusReceived):
                self.statuses[event.tag] = event.status
            elif isinstance(event, ResultsReceived):
                self.results[event.tag] = event.results
            elif isinstance(event, AlertReceived):
                self.alerts.append(event.alert)

    def _answer(self, response: Response, message: Message | None) -> None:
        if message is not None:
            self.sent.append(message)
            self.sent_bodies.append(response.body)
            self.server.record("sent", render(message))
        if self._pending is not None and not self._pending.reply.done():
            self._pending.reply.set_result(response)
        self._pending = None

    def _abandon(self) -> None:
        """Answer a message still waiting (with an abort) so that the device is never left hanging."""
        if self._pending is not None and not self._pending.reply.done():
            if not self.raw and not self.core.finished:
                with contextlib.suppress(ProtocolError):
                    out = self.core.abort("the conformance case ended")
                    self._answer(
                        Response(200, out.body, {"Content-Type": out.content_type, **out.headers}),
                        out.message,
                    )
                    self.ended = True
                    return
            self._pending.reply.set_result(Response(400, b"the conformance case ended this session"))
        self._pending = None
        self.ended = True
        self.server.forget(self)


def _with_id(command: Command, cmd_id: str) -> Command:
    return dataclasses.replace(command, cmd_id=cmd_id)  # type: ignore[type-var]


class ScriptedServer:
    """Sorts the device's POSTs into sessions; new sessions wait in ``incoming`` for a case."""

    def __init__(
        self,
        target: DeviceTarget,
        url: str,
        *,
        message_timeout: float = 30.0,
        record: Callable[[str, str], None] | None = None,
    ) -> None:
        self.target = target
        self.url = url
        self.message_timeout = message_timeout
        self.incoming: asyncio.Queue[DeviceSession] = asyncio.Queue()
        self._sessions: dict[str, DeviceSession] = {}
        self._recorder = record
        #: Session settings for the next new session (a case sets them before waking the device).
        self.next_settings: dict[str, object] = {}
        #: Problems with requests that belong to no session (shown when a case is inconclusive).
        self.problems: list[str] = []

    def record(self, direction: str, text: str) -> None:
        if self._recorder is not None:
            self._recorder(direction, text)

    def set_recorder(self, record: Callable[[str, str], None] | None) -> None:
        self._recorder = record

    def forget(self, session: DeviceSession) -> None:
        self._sessions.pop(session.token, None)

    async def handle(self, request: Request) -> None:
        if request.method != "POST":
            request.reply.set_result(Response(405, b"DM messages are POSTed", {"Allow": "POST"}))
            return
        try:
            message, encoding = codec.decode(request.body, request.header("content-type"))
        except ProtocolError as exc:
            self.problems.append(f"an undecodable message: {exc}")
            request.reply.set_result(Response(400, f"not a DM message: {exc}".encode()))
            return
        received = Received(message, request.body, encoding, dict(request.headers), request.path)
        token = parse_qs(urlparse(request.path).query).get("s", [""])[0]
        session = self._sessions.get(token) if token else self._by_session_id(message)
        if session is not None and not session.ended:
            await session._channel.queue.put((request, received))
            return
        if session is not None:  # a message after the session ended: the core answers repeats
            request.reply.set_result(Response(400, b"this session has ended"))
            return
        settings = dict(self.next_settings)
        session = DeviceSession(self, secrets.token_hex(8), **settings)  # type: ignore[arg-type]
        self._sessions[session.token] = session
        try:
            session._accept(request, received)
        except ProtocolError as exc:
            self.problems.append(f"package 1 refused: {exc}")
            return
        await self.incoming.put(session)

    def _by_session_id(self, message: Message) -> DeviceSession | None:
        """A device that ignores RespURI: its open session with the same SessionID and source."""
        if message.header.msg_id == "1":
            return None
        for session in self._sessions.values():
            header = session.first.header
            if header.session_id == message.header.session_id and header.source == message.header.source:
                return session
        return None
