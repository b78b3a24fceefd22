"""The DM endpoint: one HTTP POST in, one DM message out, one database transaction between.

Stateless by design (DESIGN rule 4): the ``ServerSession`` of a DM session lives in
``dm_sessions`` as a signed snapshot keyed by the token in its ``RespURI``, so any worker can
serve any message. Per message the endpoint

1. decodes the body (XML or WBXML; both content-type families; the first byte decides when
   the type is missing or wrong) - a body it cannot read is HTTP 400, never a 500;
2. loads the session (or starts one: the device is found by its SyncHdr Source; MsgID 1
   always starts a new session, even when a client repeats an old token);
3. lets the session take the message, and applies what happened to the registry: nonces,
   DevInfo, last contact, Exec statuses to jobs, Results to the inventory, Generic Alerts to
   the jobs they finish (by Correlator; by Source URI when a device drops the Correlator);
4. once the device is authenticated, asks for its inventory (once per session, and again
   after each SCOMO alert) and sends its queued jobs;
5. saves the session and the changes, commits, and answers.

A retried session cannot install twice: a job is marked sent in the transaction that queues
its commands, a repeated message gets the cached reply from the snapshot, a repeated alert
finds its job already final, and the device itself answers a repeated Exec (same node and
Correlator) without starting it again.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import Request
from starlette.responses import Response

from omadm.protocol import codec
from omadm.protocol.auth import HMAC_HEADER, new_nonce
from omadm.protocol.codes import AuthType
from omadm.protocol.errors import LocalProtocolError, ProtocolError
from omadm.protocol.messages import Get, Item, Message, Source, Target
from omadm.protocol.session import (
    AlertReceived,
    Authenticated,
    AuthenticationFailed,
    Credentials,
    DevInfoReceived,
    Event,
    NonceIssued,
    NonceReceived,
    ReplyTooLarge,
    ResultsReceived,
    ServerSession,
    SessionAborted,
    SessionEnded,
    StatusReceived,
)
from omadm.protocol.session import (
    ServerConfig as SessionConfig,
)

from . import jobs as jobplan
from . import logs, metrics
from .admission import DEFAULT_LIMIT, Admission
from .config import ServerConfig
from .dm_store import AuthorityRef, FastUnit, FullPathNeeded, OrmUnit, RowCache, Unit
from .inventory import inventory_uri, normalize_path, parse_inventory
from .registry import deployed_node, record_event, resolve_authority
from .store.models import (
    Campaign,
    CampaignState,
    Device,
    DeviceState,
    DmSession,
    InventoryEntry,
    InventoryKind,
    Job,
    JobKind,
    JobState,
    utc_now,
)
from .store.writer import DmWriter, WriteConflict, WriterUnavailable
from .tls import client_identities
from .version_key import version_key

__all__ = ["DMEndpoint", "PackageLocator"]

log = logging.getLogger("omadm.server.dm")

#: ``locate(db, job, device) -> (package URL or None, package bytes or None)`` for a job.
PackageLocator = Callable[[AsyncSession, Job, Device], Awaitable[tuple[str | None, bytes | None]]]

_INVENTORY_TAG = "inventory"
_REMOVALS = (JobKind.REMOVE, JobKind.REMOVE_DELIVERED)
_LIST_TAG = "inventory-list"
_DEVDETAIL_TAG = "devdetail"
_DEVDETAIL_LEAVES = ("DevTyp", "OEM", "FwV", "SwV", "HwV", "LrgObj")
_LEAVES_TAG = "inventory-leaves"
#: What the node-by-node inventory reads of each entry (devices without ?list=StructData).
_INVENTORY_LEAVES = {
    "Deployed": ("ID", "Name", "Version", "State", "Status", "PkgIDRef", "EnvType"),
    "Delivered": ("PkgID", "Name", "State", "Status"),
}
_MAC_SIZE = 32
_OPEN_JOB_STATES = (JobState.QUEUED.value, JobState.SENT.value, JobState.ACCEPTED.value)
# Bounds of SyncHdr fields (HTTP 400 beyond them): the store's columns, or generous limits.
_MAX_SESSION_ID = 64  # dm_sessions.session_id
_MAX_MSG_ID = 20
_MAX_DEVICE_ID = 255  # devices.device_id
_MAX_NAME = 255  # devices.username
_MAX_URI = 2048
_MAX_CRED = 1024
_MAX_TOKEN = 64  # dm_sessions.token
_MAX_AUTHORITY = 100  # authorities.name
#: A stateless challenge counts at most this many earlier ones (from the client's MsgID).
_MAX_CHALLENGED = 1000
#: Failed sessions recorded in a device's history per run of failures (the counter goes on).
_FAILURES_IN_HISTORY = 3
#: The scope key of a message's note (``_message`` fills it, ``__call__`` counts it).
_NOTE = "omadm.dm_note"
_AUTHORITY_TTL = 30.0  # seconds an authority's name is trusted without looking again
#: The device ids this request's verified client certificate names (None: none, or not checked).
_CLIENT_IDENTITIES: ContextVar[frozenset[str] | None] = ContextVar("omadm_client_identities", default=None)
_UNKNOWN_AUTHORITY_TTL = 2.0


class _Refusal(Exception):
    """An HTTP-level refusal (unknown device, pending, rejected): status and reason.

    ``keep``: what the transaction did so far is kept (a device held as pending is
    remembered); otherwise it is rolled back and the refusal changes nothing.
    """

    def __init__(self, status: int, reason: str, *, keep: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.keep = keep


class DMEndpoint:
    """The ``POST /dm`` route (a plain Starlette endpoint: FastAPI's machinery is not needed)."""

    def __init__(
        self,
        config: ServerConfig,
        sessions: async_sessionmaker[AsyncSession],
        *,
        locate: PackageLocator | None = None,
        writer: DmWriter | None = None,
    ) -> None:
        self.config = config
        self.sessions = sessions
        self.locate = locate or _external_url_only
        #: The fast path's writer (None: every message takes the general path).
        self.writer = writer
        #: The rows the fast path last wrote: a device's next message need not load them.
        self.rows = RowCache()
        #: How many messages may be served at once; the others get 503 with Retry-After.
        self.admission = Admission(
            config.dm_max_in_flight or DEFAULT_LIMIT, max_retry_after=config.max_retry_after
        )
        self._secret = hashlib.sha256(b"omadm-session-snapshot:" + config.secret_bytes()).digest()
        # Authority name -> (what it is, when to look again); None: no such authority.
        self._authorities: dict[str, tuple[AuthorityRef | None, float]] = {}

    async def __call__(self, request: Request) -> Response:
        started = time.perf_counter()
        # A message that continues a session carries its token (RespURI): those come first.
        continuing = bool(request.query_params.get("s"))
        if not self.admission.enter(continuing=continuing):
            await _read_body(request, self.config.max_body)  # keeps the connection reusable
            metrics.DM_SHED.labels("in_flight").inc()
            response = self._busy("over the in-flight limit", continuing)
        else:
            try:
                response = await self._message(request)
            except SQLAlchemyTimeoutError:
                # The database pool had no connection in time: a load problem, not a bug.
                metrics.DM_SHED.labels("database").inc()
                response = self._busy("no database connection in time", continuing)
            except Exception:
                metrics.MESSAGE_OUTCOMES["error"].inc()  # the caller logs it and answers 500
                raise
            finally:
                self.admission.leave()
        _count(response.status_code, request.scope.get(_NOTE, {}), time.perf_counter() - started)
        return response

    def _busy(self, why: str, continuing: bool) -> Response:
        """HTTP 503 with Retry-After: the device comes back later (agents and the simulator do)."""
        retry_after = self.admission.retry_after(continuing=continuing)
        if self.admission.shed % 1000 == 1:  # a storm would flood the log: one line in a thousand
            log.warning(
                "dm busy: %s (%d in flight, limit %d, %d shed so far); Retry-After %d s",
                why,
                self.admission.in_flight,
                self.admission.limit,
                self.admission.shed,
                retry_after,
            )
        kind = "a session under way" if continuing else "a new session"
        return Response(
            f"the DM server is busy ({why}); {kind} should retry after {retry_after} s\n",
            status_code=503,
            media_type="text/plain",
            headers={"Retry-After": str(retry_after)},
        )

    async def _message(self, request: Request) -> Response:
        started = time.perf_counter()
        # What the message did (path, session, events): the log line and metrics read it.
        note: dict[str, Any] = request.scope.setdefault(_NOTE, {})
        body = await _read_body(request, self.config.max_body)
        if body is None:
            log.warning("dm refused: body larger than %d bytes", self.config.max_body)
            return _text(413, f"a DM message may not exceed {self.config.max_body} bytes")
        content_type = request.headers.get("content-type")
        try:
            message, encoding = codec.decode(body, content_type)
        except ProtocolError as exc:
            log.warning("dm refused: unreadable body (%d bytes, %s): %s", len(body), content_type, exc)
            return _text(400, f"not a DM message: {exc}")
        token = request.query_params.get("s", "")
        name = request.path_params.get("authority", "")
        problem = _header_problem(message) or _bounded("the session token (s=)", token, _MAX_TOKEN)
        if problem is not None:
            log.warning("dm refused: %s", problem)
            return _text(400, f"message refused: {problem}")
        # On every log line of this message from here: checked first (bounded, no control
        # characters), so that a device id cannot forge or flood log lines.
        logs.DEVICE.set(message.header.source.loc_uri)
        if _bounded("authority", name, _MAX_AUTHORITY) is not None:
            return _text(404, "no such management authority on this server")
        authority = await self._authority(name)
        if authority is None:
            log.warning(
                "dm refused device=%s: no management authority %r", message.header.source.loc_uri, name
            )
            return _text(404, f"no management authority {name!r} on this server")
        note.update(encoding=encoding, authority=authority)
        if self.config.tls_client_ca and self.config.client_cert_auth != "off":
            problem = self._certificate_problem(request, message.header.source.loc_uri)
            if problem is not None:
                log.warning("dm refused device=%s status=403: %s", message.header.source.loc_uri, problem)
                return _text(403, problem)
        try:
            reply = await self._serve(message, body, token, request.headers.get(HMAC_HEADER), note)
        except _Refusal as refusal:
            log.warning(
                "dm refused device=%s status=%d: %s",
                message.header.source.loc_uri,
                refusal.status,
                refusal.reason,
            )
            return _text(refusal.status, refusal.reason)
        # One line per message. A fast-path message is routine (a known device polling, a first
        # contact): DEBUG, since at fleet rates the line cost a tenth of the message's CPU. What
        # took the general path (jobs, alerts, a changed inventory) is INFO.
        level = logging.DEBUG if note.get("path") == "fast" else logging.INFO
        if not log.isEnabledFor(level):
            return Response(reply.body, media_type=reply.content_type, headers=reply.headers)
        log.log(
            level,
            "dm device=%s session=%s msg=%s in=%dB out=%dB events=%s sent=%s path=%s ms=%.1f",
            message.header.source.loc_uri,
            note.get("token", ""),
            message.header.msg_id,
            len(body),
            len(reply.body),
            _compact(note.get("events", [])),
            ",".join(note.get("sent", [])) or "-",
            note.get("path", "general"),
            (time.perf_counter() - started) * 1000,
        )
        return Response(reply.body, media_type=reply.content_type, headers=reply.headers)

    def _certificate_problem(self, request: Request, device_id: str) -> str | None:
        """Why the client certificate does not let this message in (None: it does).

        ``client_cert_auth = "map"``: a certificate must name the device; ``"require"``: one
        must be there too. The names are kept (``_CLIENT_IDENTITIES``) so that ``_handle``
        checks them against the session's device too: a continued session is found by its
        token, not by its Source.
        """
        identities = client_identities(request.scope, self.config.client_cert_identity)
        _CLIENT_IDENTITIES.set(identities)
        if identities is None:
            if self.config.client_cert_auth == "require":
                return "this server requires a client certificate naming the device, and none was presented"
            return None
        if device_id not in identities:
            names = ", ".join(sorted(identities)) or "no device id"
            return (
                f"the client certificate names {names} ({self.config.client_cert_identity}), "
                f"not the device {device_id}"
            )
        return None

    # -- one message ------------------------------------------------------------------------

    async def _serve(
        self, message: Message, body: bytes, token: str, hmac_header: str | None, note: dict[str, Any]
    ) -> Any:
        """The fast path when it can serve the message, else the general path (``dm_store``)."""
        authority: AuthorityRef = note["authority"]
        if self.writer is not None:
            unit = FastUnit(self.writer, authority, self.rows)
            try:
                reply = await self._handle(unit, message, body, token, hmac_header=hmac_header, note=note)
                write = unit.write()
                if write is not None:  # None: a challenge, which stores nothing
                    await self.writer.commit(write)
            except (FullPathNeeded, WriteConflict, WriterUnavailable, _Refusal) as why:
                if isinstance(why, _Refusal) and not unit.cached:
                    raise  # decided on rows just loaded: the general path would refuse it too
                log.debug("dm general path: %r", why)
                self.rows.forget(unit.device_pk, token)
                encoding = note["encoding"]
                note.clear()  # what the abandoned attempt noted did not happen
                note.update(encoding=encoding, authority=authority)
            else:
                unit.committed()
                note["path"] = "fast"
                return reply
        try:
            return await self._transaction(message, body, token, hmac_header, note)
        finally:
            # The general path changed the device's row (its version moved on): what the
            # fast path kept of it would only cost a refused write.
            self.rows.forget(note.get("device_pk"), note.get("token") or token)

    async def _transaction(
        self, message: Message, body: bytes, token: str, hmac_header: str | None, note: dict[str, Any]
    ) -> Any:
        """One transaction for the whole message: committed with the reply, or rolled back."""
        kept: _Refusal | None = None
        async with self.sessions() as db, db.begin():
            try:
                # Changes are flushed once, at commit: no statement per attribute change.
                with db.no_autoflush:
                    unit = OrmUnit(db, note["authority"])
                    return await self._handle(unit, message, body, token, hmac_header=hmac_header, note=note)
            except _Refusal as refusal:
                if not refusal.keep:
                    raise
                kept = refusal  # commit what was recorded (a pending device), then refuse
        assert kept is not None  # the try returned otherwise
        raise kept

    async def _handle(
        self,
        unit: Unit,
        message: Message,
        body: bytes,
        token: str,
        *,
        hmac_header: str | None,
        note: dict[str, Any],
    ) -> Any:
        record, session, device, new = await self._load(unit, message, token)
        identities = _CLIENT_IDENTITIES.get()
        if identities is not None and device.device_id not in identities:
            why = f"the client certificate does not name the session's device {device.device_id}"
            raise _Refusal(403, why)
        note["token"] = record.token
        logs.SESSION.set(record.token)
        note["device_pk"] = device.id
        try:
            events = session.receive_message(
                message, body, hmac_header=hmac_header, encoding=note["encoding"]
            )
        except ProtocolError as exc:
            # The message breaks the session's rules: refuse it and change nothing (the
            # transaction rolls back), so the client may send a correct one.
            raise _Refusal(400, f"message refused: {exc}") from None
        await self._apply(unit, record, device, events, note)
        if session.authenticated:
            # Also a device managed without DM credentials, which never sends any: its
            # session counts as contact and history the same.
            self._contact(unit, record, device)
        if session.authenticated and not session.finished and device.state == DeviceState.ACCEPTED.value:
            await self._send_work(unit, record, session, device, note)
        try:
            reply = session.reply()
        except ReplyTooLarge as exc:
            # Not even an abort fits the device's MaxMsgSize: no DM answer can be sent, so the
            # refusal travels in HTTP; nothing of this message is kept.
            raise _Refusal(400, str(exc)) from None
        await self._apply(unit, record, device, session.events(), note)
        note["authenticated"] = session.authenticated
        if new and not session.authenticated:
            # A challenge (no or wrong credentials) keeps no session: failed attempts, however
            # many, cost no rows. The device's next message, credentials and all, is served as
            # this one was, and its MsgID says how many were challenged before (``_load``).
            session.events()
            return reply
        if new:
            unit.add_session(record)
            note["new_session"] = True  # counted once the message is answered (metrics.py)
        await self._save(record, session)
        unit.keep_live(session)
        return reply

    async def _load(
        self, unit: Unit, message: Message, token: str
    ) -> tuple[DmSession, ServerSession, Device, bool]:
        """The message's session row, session and device; True: a new session (no row yet)."""
        header = message.header
        found = None
        if header.msg_id != "1":
            if token:
                found = await unit.session_for(token)
            else:
                # A client that ignores RespURI and posts every message to the same URL (as
                # lenient servers allow): the session its device authenticated in, by SessionID.
                found = await unit.session_of(
                    header.source.loc_uri, header.session_id, self.config.session_timeout
                )
        if found is not None:
            record, device = found  # finished too: a repeated last message gets its reply again
            session = unit.live_session(token)
            if session is None:
                try:
                    session = ServerSession.restore(self._unseal(record.snapshot))
                except LocalProtocolError as exc:
                    why = f"session {record.token} cannot be resumed ({exc}); start a new one"
                    raise _Refusal(410, why) from None
            return record, session, device, False
        device = await self._admit(unit, message)
        token = secrets.token_urlsafe(18)
        # No stored session for a later message: every earlier one was challenged (see _handle).
        msg_id = int(header.msg_id) if header.msg_id.isdigit() else 1
        challenged = min(max(msg_id - 1, 0), _MAX_CHALLENGED)
        session = ServerSession(self._session_config(device, token, unit.authority, challenged))
        record = DmSession(
            token=token,
            device_pk=device.id,
            session_id=header.session_id,
            snapshot=b"",
            context={},
            created=utc_now(),
            updated=utc_now(),
        )
        return record, session, device, True

    async def _admit(self, unit: Unit, message: Message) -> Device:
        device_id = message.header.source.loc_uri
        device = await unit.device(device_id)
        policy = self.config.unknown_devices
        if device is None:
            if policy == "reject":
                raise _Refusal(403, f"unknown device {device_id}: not registered on this server")
            enrol = self.config.enrol
            state = DeviceState.ACCEPTED if policy == "accept" else DeviceState.PENDING
            device = Device(
                device_id=device_id,
                state=state.value,
                auth_type=AuthType.MD5.value if enrol.username else "",
                username=enrol.username,
                password=enrol.password,
                devinfo={},
                devdetail={},
                tags={},
                client_nonce=new_nonce(),  # never empty: see registry.add_device
                server_nonce=b"",
            )
            await unit.enrol(device)
            unit.event(device, "enrolled", policy=policy)
            if state is DeviceState.PENDING:
                # Remember it (the operator sees it and its DevInfo), but manage nothing.
                device.devinfo = _devinfo_of(message)
                raise _Refusal(403, f"device {device_id} is pending acceptance by an operator", keep=True)
        if device.state == DeviceState.REJECTED.value:
            raise _Refusal(403, f"device {device_id} is rejected on this server")
        if device.state == DeviceState.PENDING.value:
            raise _Refusal(403, f"device {device_id} is pending acceptance by an operator")
        return device

    async def _authority(self, name: str) -> AuthorityRef | None:
        """The authority named in the URL (``/dm``: the default one), looked up at most every 30 s."""
        cached = self._authorities.get(name)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        config = self.config
        async with self.sessions() as db:
            found = await resolve_authority(db, name, configured_server_id=config.server_id)
        ref = None
        if found is not None and (not name or found.name == name):
            dm_url = config.dm_url if not name else f"{config.dm_url}/{name}"
            ref = AuthorityRef(found.id, found.server_id or config.server_id, dm_url)
        if len(self._authorities) > 1024:  # names come from URLs: keep the cache bounded
            self._authorities.clear()
        # An unknown name is looked up again soon: an authority created a moment ago must work.
        self._authorities[name] = (ref, now + (_AUTHORITY_TTL if ref is not None else _UNKNOWN_AUTHORITY_TTL))
        return ref

    def _session_config(
        self, device: Device, token: str, authority: AuthorityRef, challenged: int = 0
    ) -> SessionConfig:
        config = self.config
        client: Credentials | None = None
        scheme = AuthType(device.auth_type) if device.auth_type else None
        if scheme is not None:
            client = Credentials(scheme, device.username, device.password)
        server: Credentials | None = None
        if device.server_password:
            server = Credentials(scheme or AuthType.MD5, authority.server_id, device.server_password)
        return SessionConfig(
            server_uri=authority.dm_url,
            resp_uri=f"{authority.dm_url}?s={token}",
            client_credentials=client,
            client_nonce=device.client_nonce or b"",
            server_credentials=server,
            server_nonce=device.server_nonce or b"",
            send_server_cred=server is not None,
            max_msg_size=config.max_msg_size,
            max_obj_size=config.max_obj_size,
            challenged_before=challenged,
        )

    # -- what happened ------------------------------------------------------------------------

    async def _apply(
        self, unit: Unit, record: DmSession, device: Device, events: list[Event], note: dict[str, Any]
    ) -> None:
        names = note.setdefault("events", [])
        for event in events:
            names.append(type(event).__name__)
            if isinstance(event, NonceIssued):
                device.client_nonce = event.nonce
            elif isinstance(event, NonceReceived):
                device.server_nonce = event.nonce
            elif isinstance(event, DevInfoReceived):
                device.devinfo = {**(device.devinfo or {}), **event.values}
            elif isinstance(event, Authenticated):
                self._contact(unit, record, device)
            elif isinstance(event, AuthenticationFailed):
                if event.after_challenge or event.final:
                    log.warning("dm device=%s authentication failed: %s", device.device_id, event.reason)
                else:  # a session's first message often has no (or outdated) credentials
                    log.info("dm device=%s challenged: %s", device.device_id, event.reason)
                if event.after_challenge and not event.final:  # final: a summary of the others
                    note["auth_failures"] = note.get("auth_failures", 0) + 1
                    # Wrong credentials (the nonce we gave was used): one counter per device,
                    # reset by the next success, is all a failure stores, however many there
                    # are. A first message's failure is the normal start of a session.
                    device.auth_failures = (device.auth_failures or 0) + 1
                if event.final and (device.auth_failures or 0) <= _FAILURES_IN_HISTORY:
                    # The history shows the first few of a run of failures, not every one.
                    unit.event(device, "auth-failed", reason=event.reason)
            elif isinstance(event, StatusReceived):
                await self._on_status(unit, record, device, event)
            elif isinstance(event, ResultsReceived):
                await self._on_results(unit, record, device, event)
            elif isinstance(event, AlertReceived):
                await self._on_alert(unit, record, device, event)
            elif isinstance(event, SessionAborted | SessionEnded):
                record.finished = True
        context = record.context
        if (
            context.get("inventory_fallback") == "reading"
            and int(context.get("inventory_leaves_left", 1)) <= 0
        ):
            items = [
                Item(source=Source(path), data=value) for path, value in context.get("inventory_items", [])
            ]
            record.context = {
                k: v for k, v in context.items() if not k.startswith("inventory_") or k == "inventory_asked"
            }
            await self._replace_inventory(unit, record, device, items)
            for job_id in context.get("inventory_jobs", []):
                await self._inventory_job_done(unit.orm(), device, int(job_id))

    @staticmethod
    def _contact(unit: Unit, record: DmSession, device: Device) -> None:
        """The device proved who it is in this session (or needs not): contact and history, once."""
        if device.auth_failures or not record.context.get("authenticated"):
            device.auth_failures = 0
            record.context = {**record.context, "authenticated": True}
            unit.event(device, "session", token=record.token)
            device.last_contact = utc_now()

    async def _on_status(self, unit: Unit, record: DmSession, device: Device, event: StatusReceived) -> None:
        code = event.status.code
        parsed = jobplan.parse_tag(event.tag)
        if event.tag == _INVENTORY_TAG or (parsed is not None and parsed[1] == "inventory"):
            if code != 200:
                # No ?list=StructData on this device: read the inventory node by node instead.
                waiting = [*record.context.get("inventory_jobs", []), *([parsed[0]] if parsed else [])]
                record.context = {**record.context, "inventory_fallback": "list", "inventory_jobs": waiting}
                log.info(
                    "dm device=%s: ?list=StructData answered %s, reading node by node", device.device_id, code
                )
            return
        if event.tag == _DEVDETAIL_TAG:
            if code != 200:  # a leaf this device does not have: known as absent, not asked again
                items = getattr(event.command, "items", ())
                if items and items[0].target is not None:
                    path = normalize_path(items[0].target.loc_uri)
                    device.devdetail = {**(device.devdetail or {}), path: ""}
            return
        if event.tag == _LIST_TAG:
            if code != 200:  # e.g. no Delivered subtree (it is optional): nothing there
                items = getattr(event.command, "items", ())
                uri = items[0].target.loc_uri if items and items[0].target else ""
                branch = uri.rstrip("/").rsplit("/", 1)[-1]
                children = {**record.context.get("inventory_children", {}), branch: []}
                record.context = {**record.context, "inventory_children": children}
                if len(children) >= 2:
                    record.context = {**record.context, "inventory_fallback": "leaves"}
            return
        if event.tag == _LEAVES_TAG:
            left = int(record.context.get("inventory_leaves_left", 0)) - 1
            record.context = {**record.context, "inventory_leaves_left": left}
            return
        if parsed is None:
            return
        job_id, step = parsed
        db = unit.orm()
        job = await db.get(Job, job_id, with_for_update=True)
        if job is None or job.device_pk != device.id:
            return
        if step == "poll":
            if code == 404 and JobState(job.state) is JobState.ACCEPTED:
                outcome = jobplan.outcome_from_status(JobKind(job.kind), None, entry_missing=True)
                if outcome is not None:
                    await self._move(db, device, job, outcome)
            return
        if step == "prep":
            if code not in (200, 418) and not job.detail:  # the first refusal is the cause
                job.detail = f"{event.command.name} answered {code} before the Exec"
            return
        if step != "exec" or JobState(job.state) is not JobState.SENT:
            return
        outcome = jobplan.exec_outcome(code)
        if code == 404 and JobKind(job.kind) in _REMOVALS and (job.attempts or 0) > 1:
            # A Remove sent again after a session died: the entry is gone, so the first one ran.
            outcome = jobplan.Outcome(
                JobState.SUCCEEDED, 1200, "removed (the entry was gone when sent again)"
            )
        if outcome.state is JobState.FAILED and job.detail:
            outcome = jobplan.Outcome(outcome.state, None, f"{outcome.detail}; {job.detail}")
        await self._move(db, device, job, outcome)

    async def _on_results(
        self, unit: Unit, record: DmSession, device: Device, event: ResultsReceived
    ) -> None:
        parsed = jobplan.parse_tag(event.tag)
        if parsed is not None and parsed[1] == "poll":
            await self._on_poll(unit.orm(), device, parsed[0], event)
            return
        if event.tag == _DEVDETAIL_TAG:
            values = dict(device.devdetail or {})
            for item in event.results.items:
                if item.source is not None and isinstance(item.data, str):
                    values[normalize_path(item.source.loc_uri)] = item.data
            device.devdetail = values
            return
        if event.tag == _LIST_TAG:
            self._on_children(record, device, event)
            return
        if event.tag == _LEAVES_TAG:
            items = [*record.context.get("inventory_items", [])]
            for item in event.results.items:
                if item.source is not None and item.data is not None:
                    value = (
                        item.data.decode("utf-8", "replace") if isinstance(item.data, bytes) else item.data
                    )
                    items.append([item.source.loc_uri, value])
            record.context = {**record.context, "inventory_items": items}
            return
        is_job = parsed is not None and parsed[1] == "inventory"
        if event.tag != _INVENTORY_TAG and not is_job:
            return
        await self._replace_inventory(unit, record, device, event.results.items)
        if parsed is not None and is_job:
            await self._inventory_job_done(unit.orm(), device, parsed[0])

    def _on_children(self, record: DmSession, device: Device, event: ResultsReceived) -> None:
        """The names under Deployed and Delivered (node-by-node inventory): then read their leaves."""
        children = dict(record.context.get("inventory_children", {}))
        for item in event.results.items:
            if item.source is None:
                continue
            branch = item.source.loc_uri.rstrip("/").rsplit("/", 1)[-1]
            data = item.data.decode() if isinstance(item.data, bytes) else (item.data or "")
            children[branch] = [name for name in data.split("/") if name]
        record.context = {**record.context, "inventory_children": children}
        if len(children) >= 2:
            record.context = {**record.context, "inventory_fallback": "leaves"}

    async def _replace_inventory(
        self, unit: Unit, record: DmSession, device: Device, items: Sequence[Item]
    ) -> None:
        """Make the stored inventory exactly what the device reported now (``items``: its answer).

        The digest is taken over the answer as it came (each item's path and value, in
        order), so an unchanged inventory - nearly every session's - is recognised without
        being parsed. A device that reorders or re-encodes the same inventory costs one
        rewrite, which changes nothing that is stored.
        """
        digest = _items_digest(items)
        record.context = {**record.context, "inventory_fresh": True}
        if digest == device.inventory_digest:
            return  # unchanged: the usual case, and no write at all
        records = parse_inventory(items, device.scomo_root)
        now = utc_now()
        rows = [
            {
                "device_pk": device.id,
                "kind": entry.kind.value,
                "node": entry.node,
                "ident": entry.ident,
                "name": entry.name,
                "version": entry.version,
                "version_key": version_key(entry.version),
                "state": entry.state,
                "status": entry.status,
                "env_type": entry.env_type,
                "pkg_id_ref": entry.pkg_id_ref,
                "description": entry.description,
                "updated": now,
            }
            for entry in records
        ]
        summary = {r.ident: r.version for r in records if r.kind is InventoryKind.DEPLOYED}
        if not device.inventory_digest:
            # The device's first inventory: nothing stored to compare with, so the fast path
            # can write it too (a fleet's first contact needs no transaction of its own).
            await unit.replace_inventory(device, rows)
            device.inventory_updated = now
            device.inventory_digest = digest
            if summary:
                unit.event(device, "inventory", deployed=summary)
            return
        db = unit.orm()
        device.inventory_updated = now  # when it last changed (last_contact says when it was read)
        device.inventory_digest = digest
        before = await db.execute(
            select(InventoryEntry.ident, InventoryEntry.version).where(
                InventoryEntry.device_pk == device.id, InventoryEntry.kind == InventoryKind.DEPLOYED.value
            )
        )
        old_summary = {ident: version for ident, version in before.all()}
        await unit.replace_inventory(device, rows)
        if summary != old_summary:
            await record_event(db, device, "inventory", deployed=summary)

    async def _inventory_job_done(self, db: AsyncSession, device: Device, job_id: int) -> None:
        job = await db.get(Job, job_id, with_for_update=True)
        if job is not None and JobState(job.state) is JobState.SENT:
            outcome = jobplan.Outcome(JobState.SUCCEEDED, None, "inventory refreshed")
            await self._move(db, device, job, outcome)

    async def _on_poll(self, db: AsyncSession, device: Device, job_id: int, event: ResultsReceived) -> None:
        job = await db.get(Job, job_id, with_for_update=True)
        if job is None or job.device_pk != device.id or JobState(job.state) is not JobState.ACCEPTED:
            return
        item = event.results.items[0] if event.results.items else None
        data = item.data if item is not None else None
        text_ = data.decode("utf-8", "replace") if isinstance(data, bytes) else (data or "")
        status = int(text_.strip()) if text_.strip().isdigit() else None
        outcome = jobplan.outcome_from_status(JobKind(job.kind), status, entry_missing=False)
        if outcome is not None:
            await self._move(db, device, job, outcome)

    async def _poll_overdue(
        self, db: AsyncSession, record: DmSession, session: ServerSession, device: Device, overdue: list[Job]
    ) -> None:
        """Jobs accepted long ago without a report: read the inventory, else ask their Status."""
        record.context = {**record.context, "polled": True}
        if not overdue:
            return
        await db.flush()  # the inventory may have just been rewritten in this message
        rows = await db.execute(select(InventoryEntry).where(InventoryEntry.device_pk == device.id))
        entries = list(rows.scalars())
        deployed = {
            e.ident: (e.version, e.state, e.pkg_id_ref)
            for e in entries
            if e.kind == InventoryKind.DEPLOYED.value
        }
        delivered = {e.node for e in entries if e.kind == InventoryKind.DELIVERED.value}
        for job in overdue:
            outcome = jobplan.outcome_from_inventory(
                JobKind(job.kind), job.params or {}, job.id, deployed, delivered
            )
            if outcome is not None:
                await self._move(db, device, job, outcome)
            elif job.exec_uri:
                get = Get("0", (Item(target=Target(jobplan.poll_uri(job.exec_uri))),))
                session.queue(get, jobplan.tag(job.id, "poll"))

    async def _on_alert(self, unit: Unit, record: DmSession, device: Device, event: AlertReceived) -> None:
        reports = jobplan.scomo_reports(event.alert)
        if not reports:
            return
        db = unit.orm()
        job = await self._job_for_alert(db, device, reports)
        if job is None:
            log.warning(
                "dm device=%s SCOMO alert matches no job (correlator %r, source %r)",
                device.device_id,
                reports[0].correlator,
                reports[0].source,
            )
            await record_event(
                db, device, "alert-unmatched", correlator=reports[0].correlator, result=reports[0].result
            )
        elif job.state == JobState.CANCELLED.value:
            await self._report_after_cancel(db, device, job, jobplan.outcome_of_reports(reports))
        elif JobState(job.state).final:
            log.info("dm device=%s repeated report for job %s ignored", device.device_id, job.id)
        else:
            await self._move(db, device, job, jobplan.outcome_of_reports(reports))
        record.context = {**record.context, "inventory_asked": False}  # ask again: it changed

    async def _job_for_alert(
        self, db: AsyncSession, device: Device, reports: list[jobplan.AlertReport]
    ) -> Job | None:
        correlator = reports[0].correlator
        if correlator:
            found = await db.execute(select(Job).where(Job.correlator == correlator).with_for_update())
            job = found.scalar_one_or_none()
            if job is not None and job.device_pk == device.id:
                return job
        source = reports[0].source
        found = await db.execute(
            select(Job)
            .where(
                Job.device_pk == device.id,
                Job.exec_uri == source,
                Job.state.in_([JobState.SENT.value, JobState.ACCEPTED.value]),
            )
            .order_by(Job.id.desc())
            .with_for_update()
        )
        return found.scalars().first()

    async def _report_after_cancel(
        self, db: AsyncSession, device: Device, job: Job, outcome: jobplan.Outcome
    ) -> None:
        """A report for a job cancelled after it was sent: the device ran it anyway. The job
        stays cancelled (no campaign counts it again), but what the device did is kept: its
        result code, the report in the detail, and an event in the device's history."""
        if job.result_code is not None:
            log.info("dm device=%s repeated report for cancelled job %s ignored", device.device_id, job.id)
            return
        job.result_code = outcome.result_code
        job.detail = f"{job.detail}; reported after the cancel: {outcome.detail}"
        job.updated = utc_now()
        await record_event(
            db,
            device,
            "job-report-after-cancel",
            job=job.id,
            state=outcome.state.value,
            result=outcome.result_code,
            detail=outcome.detail,
        )

    async def _move(self, db: AsyncSession, device: Device, job: Job, outcome: jobplan.Outcome) -> None:
        logs.JOB.set(job.id)
        now = utc_now()
        job.state = outcome.state.value
        job.updated = now
        if outcome.result_code is not None:
            job.result_code = outcome.result_code
        if outcome.detail:
            job.detail = outcome.detail
        if outcome.state is JobState.ACCEPTED:
            job.accepted_at = now
            if job.deadline is None:
                job.deadline = now + timedelta(seconds=self.config.job_timeout)
        if outcome.state.final:
            job.finished_at = now
        await record_event(
            db,
            device,
            "job",
            job=job.id,
            state=outcome.state.value,
            result=job.result_code,
            detail=job.detail,
        )

    # -- what to send ------------------------------------------------------------------------

    async def _send_work(
        self,
        unit: Unit,
        record: DmSession,
        session: ServerSession,
        device: Device,
        note: dict[str, Any],
    ) -> None:
        sent = note.setdefault("sent", [])
        if not device.devdetail and not record.context.get("devdetail_asked"):
            # Once per device: what it is (firmware, hardware). One Get per leaf, since a
            # missing optional leaf must not hide the others.
            for leaf in _DEVDETAIL_LEAVES:
                session.queue(Get("0", (Item(target=Target(f"./DevDetail/{leaf}")),)), _DEVDETAIL_TAG)
            record.context = {**record.context, "devdetail_asked": True}
        if not record.context.get("inventory_asked"):
            session.queue(Get("0", (Item(target=Target(inventory_uri(device.scomo_root))),)), _INVENTORY_TAG)
            record.context = {**record.context, "inventory_asked": True}
            sent.append("inventory")
        fallback = record.context.get("inventory_fallback")
        root = normalize_path(device.scomo_root)
        if fallback == "list":
            for branch in ("Deployed", "Delivered"):
                session.queue(Get("0", (Item(target=Target(f"{root}/Inventory/{branch}")),)), _LIST_TAG)
            record.context = {**record.context, "inventory_fallback": "listing"}
        elif fallback == "leaves":
            children = record.context.get("inventory_children", {})
            gets = 0
            for branch, names in children.items():
                for name in names:
                    for leaf in _INVENTORY_LEAVES[branch]:
                        # One Get per leaf: one Status each, whatever the device does with a
                        # missing optional leaf, so the server knows when it has them all.
                        target = Target(f"{root}/Inventory/{branch}/{name}/{leaf}")
                        session.queue(Get("0", (Item(target=target),)), _LEAVES_TAG)
                        gets += 1
            record.context = {
                **record.context,
                "inventory_fallback": "reading",
                "inventory_leaves_left": gets,
                "inventory_items": [],
            }
            if gets == 0:  # nothing installed, nothing delivered
                jobs_waiting = record.context.get("inventory_jobs", [])
                record.context = {
                    k: v
                    for k, v in record.context.items()
                    if not k.startswith("inventory_") or k == "inventory_asked"
                }
                await self._replace_inventory(unit, record, device, [])
                for job_id in jobs_waiting:
                    await self._inventory_job_done(unit.orm(), device, int(job_id))
        if not device.has_open_jobs:
            return  # the common case: nothing to send, nothing to wait for, no query
        db = unit.orm()
        # The device row's lock first: a job created meanwhile raises the flag with an UPDATE
        # of this row (registry.raise_open_jobs), so that job is either committed before the
        # query below (and found) or raises the flag after this transaction clears it.
        await db.execute(select(Device.id).where(Device.id == device.id).with_for_update())
        # One query for every unfinished job of the device: what to send, what to poll.
        found = await db.execute(
            select(Job)
            .where(Job.device_pk == device.id, Job.state.in_(_OPEN_JOB_STATES))
            .order_by(Job.id)
            .with_for_update(skip_locked=True)
        )
        open_jobs = list(found.scalars())
        if not open_jobs:
            # A job skipped because another transaction holds it (the sweeper, a cancel)
            # is still open: the flag stays up, and a later session looks again.
            held = await db.scalar(
                select(Job.id).where(Job.device_pk == device.id, Job.state.in_(_OPEN_JOB_STATES)).limit(1)
            )
            if held is None:
                device.has_open_jobs = False
            return
        if record.context.get("inventory_fresh") and not record.context.get("polled"):
            overdue_since = utc_now() - timedelta(seconds=self.config.report_grace)
            overdue = [
                j
                for j in open_jobs
                if j.state == JobState.ACCEPTED.value
                and j.accepted_at is not None
                and j.accepted_at <= overdue_since
            ]
            await self._poll_overdue(db, record, session, device, overdue)
        if session.pending > 1 + len(_DEVDETAIL_LEAVES):
            return  # one batch at a time: the next message carries the rest
        # Queued jobs, and jobs sent in a session that ended before their Exec was answered:
        # sent again (the Adds get 418, and the device answers a repeated Exec - same node,
        # same Correlator - without running it twice).
        paused = await _held_campaigns(db, open_jobs)
        for job in open_jobs:
            if job.state == JobState.QUEUED.value and job.campaign_id in paused:
                continue  # its campaign is paused: the job waits for the resume
            if job.state == JobState.QUEUED.value or (
                job.state == JobState.SENT.value and job.session_token != record.token
            ):
                if (job.attempts or 0) >= self.config.max_attempts:
                    # Sent that often and never answered: a device that fails on it (crashes,
                    # loses the session) would otherwise get it at every contact until its deadline.
                    detail = (
                        f"not sent again: sent {job.attempts} times (max_attempts "
                        f"{self.config.max_attempts}) without the device answering its Exec"
                    )
                    await self._move(db, device, job, jobplan.Outcome(JobState.FAILED, None, detail))
                    continue
                await self._send_job(db, record, session, device, job)
                sent.append(f"job{job.id}")

    async def _send_job(
        self, db: AsyncSession, record: DmSession, session: ServerSession, device: Device, job: Job
    ) -> None:
        logs.JOB.set(job.id)
        kind = JobKind(job.kind)
        params = dict(job.params or {})
        try:
            if kind in (JobKind.REMOVE, JobKind.ACTIVATE, JobKind.DEACTIVATE) and not params.get("node"):
                node = await deployed_node(db, device, str(params.get("component_id", "")))
                if node is None:
                    raise ValueError(f"the device no longer reports component {params.get('component_id')!r}")
                params["node"] = node
            url, data = await self.locate(db, job, device)
            plan = jobplan.plan_job(
                job.id, kind, params, job.correlator, device.scomo_root, package_url=url, package_bytes=data
            )
        except (ValueError, LookupError) as exc:
            await self._move(db, device, job, jobplan.Outcome(JobState.FAILED, None, f"not sent: {exc}"))
            return
        for command, tag in plan.commands:
            session.queue(command, tag)
        job.state = JobState.SENT.value
        job.exec_uri = plan.exec_uri
        job.session_token = record.token
        job.attempts = (job.attempts or 0) + 1
        job.sent_at = job.updated = utc_now()

    # -- persistence ---------------------------------------------------------------------------

    async def _save(self, record: DmSession, session: ServerSession) -> None:
        leftover = session.events()
        if leftover:  # nothing should be left; never lose them silently
            log.debug("events after reply: %s", leftover)
        record.snapshot = self._seal(session.snapshot())
        record.messages = (record.messages or 0) + 1
        record.session_id = session.session_id
        record.finished = record.finished or session.finished
        record.updated = utc_now()

    def _seal(self, snapshot: bytes) -> bytes:
        return hmac.new(self._secret, snapshot, hashlib.sha256).digest() + snapshot

    def _unseal(self, sealed: bytes) -> bytes:
        mac, snapshot = sealed[:_MAC_SIZE], sealed[_MAC_SIZE:]
        if not hmac.compare_digest(mac, hmac.new(self._secret, snapshot, hashlib.sha256).digest()):
            raise LocalProtocolError("the stored session was not written by this server (bad seal)")
        return snapshot


def _items_digest(items: Sequence[Item]) -> str:
    """SHA-256 over the items' paths and values, in order (what ``inventory_digest`` holds)."""
    parts: list[bytes] = []
    for item in items:
        data = item.data
        parts.append((item.source.loc_uri if item.source is not None else "").encode())
        parts.append(data if isinstance(data, bytes) else (data or "").encode())
    return hashlib.sha256(b"\0".join(parts)).hexdigest()


#: C0 controls and DEL: never part of an identifier the store keeps (a regex: checked on every
#: message's header fields, where a per-character generator cost ~30 µs a message).
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f]")


def _count(status: int, note: dict[str, Any], seconds: float) -> None:
    """A message answered: its outcome, latency and what it did to its session (metrics.py).

    Read from ``note`` after the answer, so that a fast-path attempt abandoned for the
    general path (which clears the note) is counted once, as what finally happened.
    """
    if status == 200:
        metrics.MESSAGE_OUTCOMES["ok"].inc()
    elif status == 503:
        metrics.MESSAGE_OUTCOMES["busy"].inc()
    elif status >= 500:
        metrics.MESSAGE_OUTCOMES["error"].inc()
    else:
        metrics.MESSAGE_OUTCOMES["refused"].inc()
    metrics.LATENCY_PATHS[note.get("path", "general") if "token" in note else "none"].observe(seconds)
    if note.get("new_session"):
        metrics.DM_SESSIONS_STARTED.inc()
    failures = note.get("auth_failures", 0)
    if failures:
        metrics.AUTH_FAILURES.labels("dm", "credentials").inc(failures)
    names = note.get("events")
    if names and ("SessionEnded" in names or "SessionAborted" in names):
        if not note.get("authenticated"):
            outcome = "unauthenticated"  # ended by the server after failed credentials
        else:
            outcome = "completed" if "SessionEnded" in names else "aborted"
        metrics.DM_SESSIONS_FINISHED.labels(outcome).inc()


def _bounded(what: str, value: str | None, limit: int) -> str | None:
    """Why ``value`` cannot be stored or looked up as it is (too long, control characters), or None."""
    if value is None:
        return None
    if len(value) > limit:
        return f"{what} is {len(value)} characters long; at most {limit} are accepted"
    if _CONTROL_CHARACTER.search(value) is not None:
        return f"{what} contains control characters"
    return None


def _header_problem(message: Message) -> str | None:
    """Why the SyncHdr cannot be served (a field beyond what is stored of it), or None.

    The bounds are the store's column sizes (PostgreSQL refuses longer values, which would be
    an error after the work was done) and generous multiples of what real clients send.
    """
    header = message.header
    checks = (
        ("SessionID", header.session_id, _MAX_SESSION_ID),
        ("MsgID", header.msg_id, _MAX_MSG_ID),
        ("Source/LocURI (the device id)", header.source.loc_uri, _MAX_DEVICE_ID),
        ("Source/LocName", header.source.loc_name, _MAX_NAME),
        ("Target/LocURI", header.target.loc_uri, _MAX_URI),
        ("Target/LocName", header.target.loc_name, _MAX_NAME),
        ("Cred/Data", header.cred.data if header.cred is not None else None, _MAX_CRED),
    )
    for what, value, limit in checks:
        problem = _bounded(what, value, limit)
        if problem is not None:
            return problem
    if not header.source.loc_uri:
        return "Source/LocURI (the device id) is empty"
    return None


def _devinfo_of(message: Message) -> dict[str, Any]:
    """The DevInfo values of a Pkg#1 (readable before authentication), for a pending device."""
    values: dict[str, Any] = {}
    for command in message.commands:
        if command.name in ("Replace", "Add"):
            for item in getattr(command, "items", ()):
                if item.source is not None and item.source.loc_uri.startswith("./DevInfo/"):
                    values[item.source.loc_uri] = item.data if isinstance(item.data, str) else ""
    return values


async def _held_campaigns(db: AsyncSession, jobs: Sequence[Job]) -> set[int]:
    """The paused campaigns among those of the queued ``jobs``: their jobs are held, not sent.

    Pausing a campaign stops its sending, including the jobs already queued for a device
    (resuming releases them); jobs the device already has are not called back. One query,
    only when a queued job belongs to a campaign.
    """
    queued = (job for job in jobs if job.state == JobState.QUEUED.value)
    ids = {job.campaign_id for job in queued if job.campaign_id is not None}
    if not ids:
        return set()
    found = await db.scalars(
        select(Campaign.id).where(Campaign.id.in_(sorted(ids)), Campaign.state == CampaignState.PAUSED.value)
    )
    return set(found)


async def _external_url_only(db: AsyncSession, job: Job, device: Device) -> tuple[str | None, bytes | None]:
    url = (job.params or {}).get("url")
    if job.kind in (JobKind.INSTALL_DIRECT.value,) or (
        job.kind
        in (
            JobKind.INSTALL.value,
            JobKind.UPDATE.value,
            JobKind.DOWNLOAD.value,
            JobKind.INSTALL_INACTIVE.value,
        )
        and not url
    ):
        raise LookupError("this server has no artifact store configured")
    return (str(url) if url else None), None


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The request body (chunked or not), or None as soon as it exceeds ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _compact(names: list[str]) -> str:
    """``A,B,B,B,C`` as ``A,Bx3,C``: one short log field however many commands a message had."""
    out: list[str] = []
    for name, group in itertools.groupby(names):
        count = len(list(group))
        out.append(f"{name}x{count}" if count > 1 else name)
    return ",".join(out) or "-"


def _text(status: int, message: str) -> Response:
    return Response(message + "\n", status_code=status, media_type="text/plain; charset=utf-8")
