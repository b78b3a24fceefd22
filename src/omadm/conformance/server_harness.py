"""The device the server runner plays, and what a SERVER case can do with it.

Two ways to talk to the DM server under test:

* **A real device session** (:meth:`ServerCaseContext.session`): the simulator's in-memory
  device (:class:`omadm.sim.device.SimDevice`: DevInfo, DevDetail, DMAcc and the full SCOMO
  MO over ``omadm.protocol.session.ClientSession``) runs a whole session; every message pair
  is kept in a :class:`Transcript` for the case to inspect. The device's SCOMO jobs stay
  pending until the case finishes them (:meth:`ServerCaseContext.finish_jobs`), so a case
  decides when, and with which result code, the device reports.
* **Raw messages** (:class:`RawSession`): the case builds each message itself (a missing or
  wrong Cred, a stale nonce, a package split over messages, a chunked object, an abort), so
  negative tests can send what no well-behaved device would.

The device (its tree, nonces, jobs) lives for the whole run in :class:`ServerTarget`; each
case gets a fresh :class:`ServerCaseContext` around it with its own exchange log.
"""

from __future__ import annotations

import dataclasses
import itertools
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from omadm.protocol import auth
from omadm.protocol.codec import Encoding, decode, encode
from omadm.protocol.codes import AlertCode, AuthType, ScomoResult
from omadm.protocol.errors import ProtocolError
from omadm.protocol.messages import (
    Alert,
    Command,
    Cred,
    Item,
    Message,
    Meta,
    Replace,
    Source,
    Status,
    SyncHdr,
    Target,
)
from omadm.protocol.session import Outgoing
from omadm.sim.device import DeviceTemplate, SimDevice
from omadm.sim.scomo import SimJob

from .model import CaseFailed, Clock, Exchange, Inconclusive
from .server_triggers import TriggerError, TriggerRunner

__all__ = [
    "RawSession",
    "Reply",
    "ServerCaseContext",
    "ServerTarget",
    "Transcript",
    "Turn",
]

_AUTH_NAMES = {AuthType.MD5: "md5", AuthType.HMAC: "hmac", AuthType.BASIC: "basic"}
#: The client MaxMsgSize the runner announces unless a case asks for another.
DEFAULT_MAX_MSG_SIZE = 16384


@dataclass
class Reply:
    """The server's answer to one POST: HTTP status, headers, body, and the message if it decodes."""

    status: int
    headers: httpx.Headers
    body: bytes
    message: Message | None
    error: str = ""

    @property
    def content_type(self) -> str:
        return str(self.headers.get("content-type", ""))

    @property
    def statuses(self) -> list[Status]:
        return [c for c in self.message.commands if isinstance(c, Status)] if self.message else []

    @property
    def commands(self) -> list[Command]:
        """Everything but Status: what the server asks the device to do."""
        return [c for c in self.message.commands if not isinstance(c, Status)] if self.message else []

    @property
    def header_status(self) -> Status | None:
        for status in self.statuses:
            if status.cmd_ref == "0":
                return status
        return None

    def status_for(self, msg_ref: str, cmd_ref: str) -> list[Status]:
        return [s for s in self.statuses if s.cmd_ref == cmd_ref and s.msg_ref == msg_ref]

    def next_nonce(self) -> bytes | None:
        """The NextNonce of the SyncHdr Status's Chal, if any."""
        status = self.header_status
        if status is None or status.chal is None:
            return None
        return auth.nonce_from_chal(status.chal)

    def describe(self) -> str:
        if self.message is None:
            return f"HTTP {self.status}: {self.error or self.body[:200]!r}"
        parts = [
            f"{c.name}({c.data})" if isinstance(c, Status | Alert) else c.name for c in self.message.commands
        ]
        return f"HTTP {self.status} MsgID {self.message.header.msg_id}: {' '.join(parts)}"


@dataclass
class Turn:
    """One message the device sent and the server's answer to it."""

    sent: Message
    body: bytes
    reply: Reply


@dataclass
class Transcript:
    """The messages of one device session, in order, and how it ended."""

    turns: list[Turn] = field(default_factory=list)
    outcome: str = "ok"
    reason: str = ""
    server_authenticated: bool = False
    #: SCOMO jobs the device accepted (Exec answered 202) in this session.
    jobs: list[SimJob] = field(default_factory=list)

    @property
    def replies(self) -> list[Reply]:
        return [t.reply for t in self.turns]

    def received(self, *names: str) -> list[Command]:
        """Every command of these element names the server sent, in order."""
        return [c for r in self.replies for c in r.commands if not names or c.name in names]

    def targets(self, *names: str) -> list[str]:
        out = []
        for command in self.received(*names):
            for item in getattr(command, "items", ()):
                if item.target is not None:
                    out.append(item.target.loc_uri)
        return out


class ServerTarget:
    """The server under test and the one device the runner plays against it, for a whole run."""

    def __init__(
        self,
        url: str,
        *,
        device_id: str,
        username: str,
        password: str,
        auth_type: AuthType = AuthType.MD5,
        server_id: str = "omadm",
        server_password: str = "",
        triggers: TriggerRunner | None = None,
        timeout: float = 30.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the server URL must start with http:// or https://, not {url!r}")
        self.url = url
        self.device_id = device_id
        self.username = username
        self.password = password
        self.auth_type = auth_type
        self.server_id = server_id
        self.server_password = server_password
        self.timeout = timeout
        self.triggers = triggers or TriggerRunner()
        self.triggers.values.setdefault("device_id", device_id)
        self.triggers.values.setdefault("server_url", url)
        self.template = DeviceTemplate(server_id=server_id, server_url=url)
        self._templates: dict[int, DeviceTemplate] = {self.template.max_msg_size: self.template}
        self.device = SimDevice(
            self.template,
            device_id,
            username,
            password,
            auth=_AUTH_NAMES[auth_type],
            server_password=server_password,
        )
        self._counter = itertools.count(1)
        self.http = httpx.AsyncClient(timeout=timeout)

    @property
    def auth_name(self) -> str:
        return _AUTH_NAMES[self.auth_type]

    def template_for(self, max_msg_size: int) -> DeviceTemplate:
        if max_msg_size not in self._templates:
            self._templates[max_msg_size] = dataclasses.replace(self.template, max_msg_size=max_msg_size)
        return self._templates[max_msg_size]

    def new_session_id(self) -> str:
        """A SessionID no earlier session of this run used (upper-case hex, as devices send)."""
        return format(0x100 + next(self._counter) * 7 + secrets.randbelow(7), "X")[-4:]

    async def close(self) -> None:
        await self.http.aclose()


class ServerCaseContext:
    """What one SERVER case works with: the target, its device, triggers, and the exchange log."""

    def __init__(self, target: ServerTarget, encoding: str) -> None:
        self.target = target
        self.encoding = Encoding(encoding)
        self.exchanges: list[Exchange] = []
        self.clock = Clock()
        self._log_start = len(target.triggers.log)

    # -- what the case may read -------------------------------------------------------------

    @property
    def device(self) -> SimDevice:
        return self.target.device

    @property
    def auth_type(self) -> AuthType:
        return self.target.auth_type

    def note(self, text: str) -> None:
        """A line of the case's own in the report's exchanges (a trigger fired, a package fetched).

        Recorded as sent by the tester (the report attributes every other direction to the
        implementation under test), marked as not being a DM message.
        """
        self.exchanges.append(Exchange("sent", f"(the runner, not a DM message) {text}", self.clock()))

    # -- HTTP ---------------------------------------------------------------------------------

    async def post(
        self, body: bytes, *, url: str | None = None, headers: dict[str, str] | None = None
    ) -> Reply:
        """POST one message (exactly ``body``) and decode the answer; both go to the exchange log."""
        content_type = self.encoding.content_type
        self.exchanges.append(Exchange("sent", _readable(body), self.clock()))
        try:
            response = await self.target.http.post(
                url or self.target.url,
                content=body,
                headers={"Content-Type": content_type, "Accept": content_type, **(headers or {})},
            )
        except httpx.HTTPError as exc:
            raise Inconclusive(f"the server at {url or self.target.url} did not answer: {exc}") from None
        reply = Reply(response.status_code, response.headers, response.content, None)
        if response.status_code == 200 and response.content:
            try:
                reply.message, _ = decode(response.content, response.headers.get("content-type"))
            except ProtocolError as exc:
                reply.error = f"undecodable DM message: {exc}"
        self.exchanges.append(
            Exchange(
                "received",
                _readable(response.content)
                if reply.message
                else f"HTTP {response.status_code}: " + response.content[:2000].decode("utf-8", "replace"),
                self.clock(),
            )
        )
        return reply

    # -- a whole device session ----------------------------------------------------------------

    async def session(
        self,
        *,
        alert_code: int = AlertCode.CLIENT_INITIATED_MGMT,
        max_msg_size: int | None = None,
        abort_after: int | None = None,
        drop_on: str | None = None,
        allow_failure: bool = False,
        max_messages: int = 40,
    ) -> Transcript:
        """One session of the simulated device against the server, driven to its end.

        ``abort_after``: send Alert 1223 instead of the device's message after that many
        server replies. ``drop_on``: after the first reply holding that command (``"Exec"``) the
        device executes it and goes silent (coverage lost: nothing more sent, no Status).
        A session that fails (HTTP error, undecodable reply, authentication)
        fails the case unless ``allow_failure``.
        """
        device = self.device
        device.encoding = self.encoding
        saved = device.template
        if max_msg_size is not None:
            device.template = self.target.template_for(max_msg_size)
        jobs_before = {id(j) for j in device.jobs}
        transcript = Transcript()
        try:
            running = device.session(alert_code)
        finally:
            device.template = saved
        try:
            outgoing: Outgoing | None = running.start()
            while outgoing is not None:
                if len(transcript.turns) >= max_messages:
                    raise CaseFailed(
                        f"a session of at most {max_messages} messages", "the server kept the session going"
                    )
                reply = await self.post(outgoing.body, url=outgoing.url, headers=outgoing.headers)
                transcript.turns.append(Turn(outgoing.message, outgoing.body, reply))
                if reply.message is None:
                    running.fail("http", reply.describe())
                    break
                if abort_after is not None and len(transcript.turns) >= abort_after:
                    try:
                        events = running.client.receive(
                            reply.body,
                            hmac_header=reply.headers.get(auth.HMAC_HEADER),
                            content_type=reply.content_type,
                        )
                    except ProtocolError as exc:
                        running.fail("protocol", str(exc))
                        break
                    running._handle(events + running.client.events())
                    abort = running.client.abort("the conformance case aborts")
                    answer = await self.post(abort.body, url=abort.url, headers=abort.headers)
                    transcript.turns.append(Turn(abort.message, abort.body, answer))
                    running.fail("aborted-by-case", "the case sent Alert 1223")
                    break
                try:
                    outgoing = running.receive(
                        reply.body, reply.content_type, reply.headers.get(auth.HMAC_HEADER)
                    )
                except ProtocolError as exc:
                    running.fail("protocol", f"the device could not accept the server's message: {exc}")
                    break
                if drop_on is not None and any(c.name == drop_on for c in reply.commands):
                    transcript.outcome = "dropped"
                    break
        finally:
            result = running.close()
            transcript.server_authenticated = running.client.server_authenticated
        transcript.outcome, transcript.reason = result.outcome, result.reason
        transcript.jobs = [j for j in device.jobs if id(j) not in jobs_before]
        if not result.ok and not allow_failure and result.outcome != "aborted-by-case":
            last = transcript.replies[-1].describe() if transcript.turns else "no reply"
            raise CaseFailed(
                "a device session that runs to its end",
                f"{result.outcome}: {result.reason} (last reply: {last})",
            )
        return transcript

    # -- the device's SCOMO jobs ------------------------------------------------------------------

    def finish_jobs(
        self, result: int = ScomoResult.SUCCESSFUL, *, jobs: Iterable[SimJob] | None = None
    ) -> int:
        """Run the device's accepted jobs to their end; each queues its Generic Alert 1226.

        A failing ``result`` ends the job in its first phase with that code (as a device that
        finds the failure at once would); returns how many jobs finished.
        """
        device = self.device
        chosen = list(jobs if jobs is not None else device.jobs)
        finished = 0
        for job in chosen:
            if job not in device.jobs:
                continue
            with device.tree() as tree:
                while True:
                    device.scomo.begin(tree, job)
                    if device.scomo.end(tree, job, int(result)):
                        break
            finished += 1
        return finished

    def tree_value(self, path: str) -> str | None:
        with self.device.tree() as tree:
            value = tree.system_value(path)
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        return value

    def deployed(self) -> dict[str, str]:
        """Component ID -> its Deployed node, as the device's tree holds them now."""
        root = f"{self.device.template.scomo_root}/Inventory/Deployed"
        out: dict[str, str] = {}
        with self.device.tree() as tree:
            for record in tree.store.children(root):
                value = tree.system_value(f"{record.path}/ID")
                if isinstance(value, str):
                    out[value] = record.path
        return out

    async def drain(self, *, rounds: int = 6) -> None:
        """Sessions until the server has nothing left for the device (no Exec, no report owed).

        Cases about SCOMO start here, so that what an earlier case left queued on the server
        (or unreported on the device) does not land in their transcript.
        """
        for _ in range(rounds):
            transcript = await self.session()
            self.finish_jobs()
            if not transcript.received("Exec") and not self.device.pending_alerts:
                return
        raise Inconclusive(f"the server still sent Exec commands after {rounds} sessions")

    # -- triggers --------------------------------------------------------------------------------

    async def trigger(self, name: str, **values: str) -> dict[str, Any]:
        """Fire a trigger (REST call, command or operator prompt); a failure is inconclusive."""
        runner = self.target.triggers
        try:
            result = await runner.fire(name, **values)
        except TriggerError as exc:
            raise Inconclusive(f"the trigger {name!r} failed: {exc}") from None
        finally:
            for line in runner.log[self._log_start :]:
                self.note(line)
            self._log_start = len(runner.log)
        return result

    # -- raw messages ----------------------------------------------------------------------------

    def raw(
        self, *, session_id: str | None = None, max_msg_size: int | None = DEFAULT_MAX_MSG_SIZE
    ) -> RawSession:
        return RawSession(self, session_id or self.target.new_session_id(), max_msg_size=max_msg_size)


class RawSession:
    """A session whose messages the case builds: MsgIDs, RespURI, Cred/HMAC and nonces tracked.

    ``send`` numbers the message, addresses it to the last RespURI, adds the Status for the
    server's last SyncHdr (``header_status=True``) and credentials as asked, and keeps the
    NextNonce the server sends. ``nonce`` is the nonce the next credential is computed with
    (the device's stored one at first).
    """

    def __init__(self, context: ServerCaseContext, session_id: str, *, max_msg_size: int | None) -> None:
        self.context = context
        self.target = context.target
        self.session_id = session_id
        self.msg_id = 0
        self.url = self.target.url
        self.nonce = context.device.client_nonce
        self.max_msg_size = max_msg_size
        self.last: Reply | None = None
        self.authenticated = False
        #: The nonce the last automatic credentials were computed with.
        self.device_nonce_used = self.nonce
        self._cmd_ids = itertools.count(1)

    def cmd_id(self) -> str:
        return str(next(self._cmd_ids))

    def devinfo(self) -> Replace:
        items = tuple(
            Item(source=Source(uri), data=v) for uri, v in self.target.template.devinfo(self.target.device_id)
        )
        return Replace(self.cmd_id(), items)

    def alert(self, code: int, **kw: Any) -> Alert:
        return Alert(self.cmd_id(), data=str(int(code)), **kw)

    def package1(self, *extra: Command, alert_code: int = AlertCode.CLIENT_INITIATED_MGMT) -> list[Command]:
        return [self.alert(alert_code), self.devinfo(), *extra]

    def cred(
        self, *, password: str | None = None, nonce: bytes | None = None, scheme: AuthType | None = None
    ) -> Cred | None:
        scheme = scheme or self.target.auth_type
        if scheme is AuthType.HMAC:
            return None
        return auth.make_cred(
            scheme, self.target.username, password if password is not None else self.target.password,
            self.nonce if nonce is None else nonce,
        )  # fmt: skip

    def header(self, *, cred: Cred | None, meta: Meta | None = None) -> SyncHdr:
        loc_name = self.target.username if self.target.auth_type is not AuthType.HMAC else None
        if meta is None and self.max_msg_size is not None:
            meta = Meta(max_msg_size=self.max_msg_size, max_obj_size=4 * 1024 * 1024)
        return SyncHdr(
            session_id=self.session_id,
            msg_id=str(self.msg_id),
            target=Target(self.url),
            source=Source(self.target.device_id, loc_name),
            cred=cred,
            meta=meta,
        )

    def hmac_headers(
        self, body: bytes, *, password: str | None = None, nonce: bytes | None = None
    ) -> dict[str, str]:
        if self.target.auth_type is not AuthType.HMAC:
            return {}
        mac = auth.hmac_mac(
            self.target.username, password if password is not None else self.target.password,
            self.nonce if nonce is None else nonce, body,
        )  # fmt: skip
        return {auth.HMAC_HEADER: auth.build_hmac_header(self.target.username, mac)}

    def status_for_last(self, code: int = 200) -> list[Status]:
        """Status for the server's SyncHdr (and 200 for each of its commands, optionally)."""
        if self.last is None or self.last.message is None:
            return []
        header = self.last.message.header
        return [
            Status(
                self.cmd_id(), msg_ref=header.msg_id, cmd_ref="0", cmd="SyncHdr", data=str(code),
                target_refs=(header.target.loc_uri,), source_refs=(header.source.loc_uri,),
            )
        ]  # fmt: skip

    def answer_commands(self) -> list[Status]:
        """A Status for every command of the server's last message (Gets answered 404)."""
        if self.last is None or self.last.message is None:
            return []
        msg_ref = self.last.message.header.msg_id
        out = []
        for command in self.last.commands:
            code = "404" if command.name == "Get" else "200"
            if command.name == "Alert":
                code = "200"
            out.append(
                Status(self.cmd_id(), msg_ref=msg_ref, cmd_ref=command.cmd_id, cmd=command.name, data=code)
            )
        return out

    async def send(
        self,
        commands: Iterable[Command],
        *,
        final: bool = True,
        cred: Cred | str | None = "auto",
        header_status: bool = True,
        headers: dict[str, str] | None = None,
        meta: Meta | None = None,
        password: str | None = None,
    ) -> Reply:
        """Send one message; ``cred="auto"``: credentials until the server accepted them.

        ``password`` replaces the device's (a wrong one, for negative tests) in the automatic
        Cred and HMAC header; ``headers`` given replace the automatic HMAC header.
        """
        self.msg_id += 1
        if cred == "auto":
            cred = None if self.authenticated else self.cred(password=password)
            if not self.authenticated:
                self.device_nonce_used = self.nonce
        assert not isinstance(cred, str)
        body_commands: list[Command] = []
        if header_status:
            body_commands += self.status_for_last()
        body_commands += list(commands)
        message = Message(self.header(cred=cred, meta=meta), tuple(body_commands), final=final)
        body = encode(message, self.context.encoding)
        extra = dict(headers) if headers is not None else self.hmac_headers(body, password=password)
        reply = await self.context.post(body, url=self.url, headers=extra)
        self.last = reply
        self._cmd_ids = itertools.count(1)
        if reply.message is not None:
            if reply.message.header.resp_uri:
                self.url = reply.message.header.resp_uri
            status = reply.header_status
            nonce = reply.next_nonce()
            if status is not None and status.code in (200, 212) and status.msg_ref == str(self.msg_id):
                self.authenticated = True
            if nonce is not None:
                self.nonce = nonce
                if status is not None and status.code in (200, 212):
                    self.context.device.client_nonce = nonce  # the device keeps it for its next session
        return reply

    async def open(self, *extra: Command, attempts: int = 3, challenged: bool = False) -> Reply:
        """Package #1 with credentials, answering challenges, until the server accepts them.

        ``challenged``: the last message was already challenged; start with the retry.
        """
        if challenged and self.last is not None:
            reply = self.last
        else:
            reply = await self.send(self.package1(*extra), header_status=False)
        for _ in range(attempts):
            status = reply.header_status
            if status is None or status.code not in (401, 407):
                break
            reply = await self.send(self.package1(*extra), header_status=False)
        status = reply.header_status
        if status is None or status.code not in (200, 212):
            raise Inconclusive(f"the server did not accept the device's credentials: {reply.describe()}")
        return reply

    async def abort(self) -> Reply:
        """Alert 1223 (and the Status for the server's SyncHdr): ends the session."""
        return await self.send([*self.answer_commands(), self.alert(AlertCode.SESSION_ABORT)])


def _readable(body: bytes) -> str:
    """A message as XML text for the report (WBXML decoded first); bytes that do not decode as they are."""
    try:
        message, encoding = decode(body)
    except ProtocolError:
        return body[:4000].decode("utf-8", "replace")
    if encoding is Encoding.XML:
        return body.decode("utf-8", "replace")
    return "(WBXML, shown as XML)\n" + encode(message, Encoding.XML).decode("utf-8", "replace")
