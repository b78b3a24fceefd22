"""The DM client runtime: the device's tree, its accounts, and sessions over HTTP.

``Agent`` opens the persistent tree (building DevInfo, DevDetail and DMAcc from the
configuration the first time), runs one session with a server on request (``connect``),
and, in ``run``, keeps doing so: every poll interval, whenever a verified Package #0 asks
for it, and whenever Generic Alerts wait to be delivered.

Accounts live in the tree (``./DMAcc/<x>``), not in the configuration file: a server may
change its own account, and the nonces each side issues (AAuthData) are stored there as raw
bytes after every session, so the next session authenticates without a challenge.
"""

from __future__ import annotations

import base64
import fcntl
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from omadm import __version__
from omadm.mo.devdetail import DEVDETAIL
from omadm.mo.devinfo import DEVINFO
from omadm.mo.dmacc import DMACC
from omadm.protocol import auth, codec, wbxml
from omadm.protocol.codes import AlertCode, AuthType, StatusCode
from omadm.protocol.errors import ProtocolError
from omadm.protocol.messages import Alert, Status
from omadm.protocol.session import (
    AuthenticationFailed,
    ClientConfig,
    ClientSession,
    Credentials,
    Event,
    NonceIssued,
    NonceReceived,
    Outgoing,
    SessionAborted,
    StatusReceived,
)
from omadm.tree.errors import TreeError
from omadm.tree.files import private_opener, secure_data_dir
from omadm.tree.store import TreeStore
from omadm.tree.tree import DMTree, NodeHandler, utc_now
from omadm.tree.uri import ROOT as ROOT_URI
from omadm.tree.uri import escape_segment

from .alerts import AlertQueue
from .config import AccountConfig, AgentConfig, ConfigError
from .transport import HTTPTransport, Reply, TransportError

if TYPE_CHECKING:
    from .scomo.operations import ScomoService

__all__ = ["Account", "Agent", "Outcome", "SessionReport", "SessionRequest"]

log = logging.getLogger("omadm.agent")

_AAUTH_TYPE = {AuthType.BASIC: "BASIC", AuthType.MD5: "DIGEST", AuthType.HMAC: "HMAC"}


class Outcome:
    """How a session ended, for reports and the CLI's exit codes."""

    OK = "ok"
    AUTH_FAILED = "auth-failed"
    TRANSPORT_ERROR = "transport-error"
    #: The server failed the TLS checks (CA, validity, host name, pinned key) or refused ours.
    TLS_ERROR = "tls-error"
    PROTOCOL_ERROR = "protocol-error"
    ABORTED = "aborted"


@dataclass(frozen=True, slots=True)
class Account:
    """A DMAcc account as read from the tree."""

    node: str
    server_id: str
    url: str
    client: Credentials | None
    client_nonce: bytes
    client_auth_node: str | None
    server: Credentials | None
    server_nonce: bytes
    server_auth_node: str | None


@dataclass(frozen=True, slots=True)
class SessionRequest:
    """Why a session should start: a poll, a Package #0, pending alerts, a user."""

    server_id: str | None = None
    alert_code: int = AlertCode.CLIENT_INITIATED_MGMT
    session_id: str | None = None
    reason: str = "requested"


@dataclass
class SessionReport:
    """What one session did; ``line()`` is the one log line per session."""

    server_id: str
    session_id: str
    outcome: str = Outcome.OK
    reason: str = ""
    messages: int = 0
    commands: int = 0
    alerts_delivered: int = 0
    seconds: float = 0.0
    events: list[Event] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.OK

    def line(self) -> str:
        text = (
            f"session {self.session_id} with {self.server_id}: {self.outcome}, {self.messages} messages, "
            f"{self.commands} commands, {self.alerts_delivered} alerts delivered, {self.seconds:.2f}s"
        )
        return text + (f" ({self.reason})" if self.reason else "")


_REFUSED = (int(StatusCode.INVALID_CREDENTIALS), int(StatusCode.MISSING_CREDENTIALS))


def _credentials_refused(reply: Reply) -> int | None:
    """The 401 or 407 the server put on our SyncHdr in ``reply``, None when it did not.

    The session machine has already taken the message apart; this looks again only on the
    rare path of a server's abort, to tell "our password is wrong" from "the server broke off".
    """
    try:
        message, _ = codec.decode(reply.body, reply.content_type)
    except ProtocolError:
        return None
    for command in message.commands:
        if isinstance(command, Status) and command.cmd_ref == "0":
            return command.code if command.code in _REFUSED else None
    return None


class AgentBusy(ConfigError):
    """Another agent process works on the same data directory."""


def _lock_data_dir(data_dir: Path) -> IO[str]:
    """Hold an exclusive lock on ``<data_dir>/agent.lock`` until the file is closed.

    The kernel drops the lock when the process dies, SIGKILL included, so a crash never
    leaves a stale lock behind. The file names the holder's pid for the error message.
    """
    handle = open(data_dir / "agent.lock", "a+", encoding="ascii", opener=private_opener)  # noqa: SIM115 - held for the agent's life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise AgentBusy(
            f"another omadm agent (pid {holder}) is working on {data_dir}; stop it first, "
            "or use 'omadm agent status' and 'omadm agent tree', which only look"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


class _ServerIdGuard(NodeHandler):
    """Refuses a ServerID that another DMAcc account already has (418).

    A ServerID is the principal ACLs grant rights to and the name a Package #0 is checked
    against: a server that could give an account of its own another authority's ServerID
    would become that authority on this device. The MO already forbids replacing a ServerID
    (405); this closes the other ways in: an added account, a TNDS document, a Copy.
    """

    def check(self, tree: DMTree, path: str, command: str) -> None:
        if command == "Delete":
            return
        value = tree.system_value(path)
        account = path.rsplit("/", 1)[0]
        for record in tree.store.children("./DMAcc"):
            if record.path != account and tree.system_value(f"{record.path}/ServerID") == value:
                raise TreeError(
                    f"ServerID {value!r} belongs to the account {record.path}: it is unique on a device",
                    int(StatusCode.ALREADY_EXISTS),
                )


class Agent:
    """A device's DM client: its persistent tree, its accounts, its sessions."""

    #: Package #0s received but not checked yet, at most; more are dropped (a flood of
    #: datagrams must not grow the agent: each is checked in turn by the agent's thread).
    MAX_PENDING_NOTIFICATIONS = 64

    def __init__(
        self,
        config: AgentConfig,
        *,
        transport: HTTPTransport | None = None,
        clock: Callable[[], object] = utc_now,
        inspect_only: bool = False,
    ) -> None:
        self.config = config
        secure_data_dir(config.data_dir)  # 0700, its files 0600: the tree holds both passwords
        # One working agent per data directory: two would run the same SCOMO job twice, and
        # one's crash recovery would undo the other's install in progress. Inspecting (status,
        # tree get) takes no lock and recovers nothing, so it is safe beside a running agent.
        self._lock = None if inspect_only else _lock_data_dir(config.data_dir)
        self.store = TreeStore(config.tree_path)
        self.tree = DMTree(self.store, clock=clock)  # type: ignore[arg-type]
        self.alerts = AlertQueue(config.data_dir / "alerts.sqlite")
        self.transport = transport or HTTPTransport(config)
        #: The last session the TLS checks stopped: ``run`` ends on it (the CLI's exit code 7).
        self.tls_failure: SessionReport | None = None
        self._requests: queue.Queue[SessionRequest | bytes] = queue.Queue()
        self._notifications = threading.BoundedSemaphore(self.MAX_PENDING_NOTIFICATIONS)
        self._dropped_notifications = 0
        self.bootstrap()
        self.scomo: ScomoService | None = None
        if config.scomo.enabled:
            from .scomo.operations import ScomoService  # noqa: PLC0415 - optional feature, heavy imports

            self.scomo = ScomoService(self)
            if not inspect_only:
                self.scomo.recover()

    def close(self) -> None:
        self.transport.close()
        self.alerts.close()
        self.store.close()
        if self._lock is not None:
            self._lock.close()  # closing the descriptor releases the lock
            self._lock = None

    # -- the tree -----------------------------------------------------------------------

    def bootstrap(self) -> None:
        """Build the standard MOs (values from the configuration) and add configured accounts."""
        d = self.config.device
        self.tree.mount(
            DEVINFO,
            values={
                "DevId": d.id,
                "Man": d.manufacturer,
                "Mod": d.model,
                "DmV": f"omadm {__version__}",
                "Lang": d.language,
            },
        )
        self.tree.mount(
            DEVDETAIL,
            values={
                "URI/MaxDepth": "0",
                "URI/MaxTotLen": "0",
                "URI/MaxSegLen": "0",
                "DevTyp": d.device_type,
                "OEM": d.oem,
                "FwV": d.firmware_version,
                "SwV": d.software_version,
                "HwV": d.hardware_version,
                "LrgObj": "true",
            },
        )
        self.tree.mount(DMACC)
        self.tree.register_handler("./DMAcc/*/ServerID", _ServerIdGuard())
        known = {a.server_id for a in self.accounts()}
        for account in self.config.accounts:
            if account.server_id not in known:
                self.add_account(account)

    def add_account(self, account: AccountConfig) -> str:
        """Write a DMAcc account for ``account``; the server gets Get/Replace/Delete/Add on it."""
        name = escape_segment(account.server_id.replace("/", "_"))[:64] or "account"
        base = f"./DMAcc/{name}"
        sid = account.server_id
        t = self.tree
        with self.store.transaction():
            t.system_add_interior(base, acl=f"Add={sid}&Delete={sid}&Get={sid}&Replace={sid}")
            t.system_set(f"{base}/AppID", "w7")
            t.system_set(f"{base}/ServerID", sid)
            if account.name:
                t.system_set(f"{base}/Name", account.name)
            self._write_account(base, account, clcred=f"{base}/AppAuth/1", srvcred=f"{base}/AppAuth/2")
        return base

    def set_account(self, account: AccountConfig) -> str:
        """Rewrite the DMAcc account of ``account.server_id`` (address, scheme, both credentials).

        The tree is the truth once it exists (a server may change its own account), so
        re-reading omadm.toml never changes an account: this is how the device's owner does,
        for a password changed on the server or a server that moved. The account keeps its
        node, its ACL and the nonces both sides hold; an account not in the tree is added.
        """
        try:
            current = self.account(account.server_id)
        except LookupError:
            if any(a.server_id == account.server_id for a in self.accounts()):
                raise  # two accounts name it: not guessed at
            return self.add_account(account)
        with self.store.transaction():
            addresses = self.store.children(f"{current.node}/AppAddr")
            address = addresses[0].path if addresses else f"{current.node}/AppAddr/1"
            self.tree.system_set(f"{address}/Addr", account.url)
            self.tree.system_set(f"{address}/AddrType", "URI")
            self._write_account(
                current.node,
                account,
                clcred=current.client_auth_node or self._free_auth_node(current.node, "1"),
                srvcred=current.server_auth_node or self._free_auth_node(current.node, "2"),
                address=False,
            )
            if account.name:
                self.tree.system_set(f"{current.node}/Name", account.name)
        return current.node

    def _free_auth_node(self, base: str, preferred: str) -> str:
        taken = {r.name for r in self.store.children(f"{base}/AppAuth")}
        name = preferred
        while name in taken:
            name = str(int(name) + 1) if name.isdigit() else name + "1"
        return f"{base}/AppAuth/{name}"

    def _write_account(
        self, base: str, account: AccountConfig, *, clcred: str, srvcred: str, address: bool = True
    ) -> None:
        """The address and credential nodes of an account (in the caller's transaction)."""
        t = self.tree
        scheme = _AAUTH_TYPE[account.auth_type]
        if address:
            t.system_set(f"{base}/AppAddr/1/Addr", account.url)
            t.system_set(f"{base}/AppAddr/1/AddrType", "URI")
        t.system_set(f"{base}/AAuthPref", scheme)
        t.system_set(f"{clcred}/AAuthLevel", "CLCRED")
        t.system_set(f"{clcred}/AAuthType", scheme)
        t.system_set(f"{clcred}/AAuthName", account.username)
        t.system_set(f"{clcred}/AAuthSecret", account.password)
        if self.store.get(f"{clcred}/AAuthData") is None:
            t.system_set(f"{clcred}/AAuthData", b"", format="bin", type="application/octet-stream")
        if account.server_password:
            t.system_set(f"{srvcred}/AAuthLevel", "SRVCRED")
            t.system_set(f"{srvcred}/AAuthType", scheme)
            t.system_set(f"{srvcred}/AAuthName", account.server_id)
            t.system_set(f"{srvcred}/AAuthSecret", account.server_password)
            if self.store.get(f"{srvcred}/AAuthData") is None:
                t.system_set(f"{srvcred}/AAuthData", b"", format="bin", type="application/octet-stream")

    def bootstrap_tnds(self, data: bytes) -> list[str]:
        """Apply a bootstrap TNDS document (XML or WBXML), as the device itself (no ACL).

        The DM bootstrap profile delivers DMAcc accounts (and connectivity settings) as TNDS;
        paths are relative to the root. Returns the paths written, parents first.
        """
        from omadm.tree import tnds  # noqa: PLC0415 - a bootstrap only (see omadm.tree.tree.TNDS_TYPES)

        if wbxml.is_wbxml(data):
            document = tnds.decode_tnds_element(wbxml.decode(data))
        else:
            document = tnds.decode_tnds(data)
        written = []
        for path, node in tnds.placed(document, ROOT_URI):
            if node.is_interior:
                self.tree.system_add_interior(path, type=node.type or None, acl=node.acl or "")
            else:
                fmt = (node.format or "chr").lower()
                value: str | bytes = node.value or ""
                if fmt == "b64":
                    fmt, value = "bin", base64.b64decode("".join(str(value).split()))
                self.tree.system_set(path, value, format=fmt, type=node.type or None)
                if node.acl:
                    record = self.store.get(path)
                    if record is not None:
                        with self.store.transaction():
                            self.store.put(record.with_(acl=node.acl))
            written.append(path)
        return written

    def accounts(self) -> list[Account]:
        """Every DMAcc account in the tree that names a server and an address."""
        out = []
        for record in self.store.children("./DMAcc"):
            account = self._read_account(record.path)
            if account is not None:
                out.append(account)
        return out

    def _read_account(self, base: str) -> Account | None:
        value = self.tree.system_value
        server_id = value(f"{base}/ServerID")
        if not isinstance(server_id, str) or not server_id:
            return None
        url = next(
            (
                v
                for r in self.store.children(f"{base}/AppAddr")
                if isinstance(v := value(f"{r.path}/Addr"), str)
            ),
            None,
        )
        if not url:
            return None
        creds: dict[str, tuple[Credentials | None, bytes, str]] = {}
        for r in self.store.children(f"{base}/AppAuth"):
            level = value(f"{r.path}/AAuthLevel")
            scheme = auth.auth_type_from_aauth_type(str(value(f"{r.path}/AAuthType") or ""))
            name, secret = value(f"{r.path}/AAuthName"), value(f"{r.path}/AAuthSecret")
            nonce = value(f"{r.path}/AAuthData")
            cred = None
            if scheme is not None and isinstance(name, str) and isinstance(secret, str):
                cred = Credentials(scheme, name, secret)
            raw_nonce = nonce if isinstance(nonce, bytes) else (nonce or "").encode()
            if isinstance(level, str):
                creds[level.upper()] = (cred, raw_nonce, r.path)
        client = creds.get("CLCRED", (None, b"", None))
        server = creds.get("SRVCRED", (None, b"", None))
        return Account(base, server_id, url, client[0], client[1], client[2], server[0], server[1], server[2])

    def account(self, server_id: str | None = None) -> Account:
        accounts = self.accounts()
        if not accounts:
            raise LookupError("this device has no DM account; run 'omadm agent init'")
        if server_id is None:
            return accounts[0]
        matches = [account for account in accounts if account.server_id == server_id]
        if len(matches) > 1:
            # A ServerID is an ACL principal: two accounts naming it would let one's address
            # and credentials stand in for the other's. The tree refuses to make a second one
            # (see _ServerIdGuard); a tree that has one anyway is not guessed at.
            raise LookupError(
                f"{len(matches)} DMAcc accounts name ServerID {server_id!r} "
                f"({', '.join(a.node for a in matches)}): remove all but one with 'omadm agent tree'"
            )
        if matches:
            return matches[0]
        raise LookupError(
            f"no DM account for server {server_id!r}; known: {', '.join(a.server_id for a in accounts)}"
        )

    def devinfo(self) -> tuple[tuple[str, str], ...]:
        out = []
        for leaf in ("DevId", "Man", "Mod", "DmV", "Lang"):
            value = self.tree.system_value(f"./DevInfo/{leaf}")
            out.append((f"./DevInfo/{leaf}", value if isinstance(value, str) else ""))
        return tuple(out)

    def next_session_id(self) -> str:
        """A client-chosen SessionID, unique per device (a persistent counter, in hex)."""
        current = int(self.store.get_setting("session_counter") or "0")
        nxt = current % 0xFFFF + 1
        self.store.set_setting("session_counter", str(nxt))
        return format(nxt, "X")

    # -- sessions -----------------------------------------------------------------------

    def raise_alert(self, alert: Alert, server_id: str | None = None) -> int:
        """Queue a Generic Alert durably; it goes out in the next session with that server."""
        return self.alerts.push(self.account(server_id).server_id, alert)

    def connect(self, request: SessionRequest | None = None) -> SessionReport:
        """Run one whole session with a server; never raises for what the network or server does."""
        request = request or SessionRequest()
        started = time.monotonic()
        account = self.account(request.server_id)
        session_id = request.session_id or self.next_session_id()
        report = SessionReport(account.server_id, session_id)
        if account.server is None:
            if not self.trusts_unauthenticated(account.server_id):
                report.outcome = Outcome.AUTH_FAILED
                report.reason = (
                    f"account {account.server_id!r} has no server credential (SRVCRED), so the server "
                    "cannot prove itself and none of its commands may run: give it a server_password "
                    "(and the same secret on the server), or opt out with require_server_auth = false"
                )
                log.error("%s", report.line())
                return report
            log.warning(
                "server %s is trusted WITHOUT authentication (require_server_auth = false): whoever "
                "answers at %s can manage this device",
                account.server_id,
                account.url,
            )
        client = ClientSession(
            self._client_config(account, session_id, request.alert_code), self.tree.session(account.server_id)
        )
        alert_tags = {client.queue_alert(q.alert): q.id for q in self.alerts.pending(account.server_id)}
        try:
            self._drive(client, account, report, alert_tags)
            if report.ok and not client.server_authenticated:
                report.outcome = Outcome.AUTH_FAILED
                report.reason = "the server never proved its identity; none of its commands ran"
        finally:
            report.seconds = time.monotonic() - started
            log.info("%s", report.line())
        return report

    def trusts_unauthenticated(self, server_id: str) -> bool:
        """Whether omadm.toml opts this server out of authentication (``require_server_auth = false``).

        Only an account in the file can be opted out: one from a bootstrap or added by a server
        always has to authenticate.
        """
        configured = next((a for a in self.config.accounts if a.server_id == server_id), None)
        return configured is not None and not configured.require_server_auth

    def _client_config(self, account: Account, session_id: str, alert_code: int) -> ClientConfig:
        return ClientConfig(
            device_id=str(self.tree.system_value("./DevInfo/DevId") or self.config.device.id),
            server_uri=account.url,
            credentials=account.client,
            client_nonce=account.client_nonce,
            server_credentials=account.server,
            server_nonce=account.server_nonce,
            # An account with a SRVCRED secret always checks the server (and so rotates the
            # nonce a Package #0 is signed with); one without runs only when opted out.
            require_server_auth=account.server is not None,
            session_id=session_id,
            alert_code=alert_code,
            devinfo=self.devinfo(),
            encoding=self.config.encoding,
            max_msg_size=self.config.max_msg_size,
            max_obj_size=self.config.max_obj_size,
        )

    def _drive(
        self, client: ClientSession, account: Account, report: SessionReport, alert_tags: dict[str, int]
    ) -> None:
        out: Outgoing | None = client.start()
        while out is not None:
            report.messages += 1
            try:
                reply = self.transport.post(out.url or account.url, out.body, out.content_type, out.headers)
            except TransportError as exc:
                report.outcome = Outcome.TLS_ERROR if exc.tls else Outcome.TRANSPORT_ERROR
                report.reason = str(exc)
                if exc.tls:
                    self.tls_failure = report
                return
            try:
                events = client.receive(
                    reply.body, hmac_header=reply.hmac_header, content_type=reply.content_type
                )
            except ProtocolError as exc:
                report.outcome = Outcome.PROTOCOL_ERROR
                report.reason = f"the server sent a message this device cannot accept: {exc}"
                self._abort(client, account)
                return
            self._handle(events + client.events(), account, report, alert_tags)
            if report.outcome == Outcome.ABORTED and (code := _credentials_refused(reply)) is not None:
                # A server gives up on a device's wrong password with 401 on its SyncHdr and
                # Alert 1223: that is a credentials problem for the operator, not a broken
                # protocol, and the exit code must say so (3, not 5).
                report.outcome = Outcome.AUTH_FAILED
                report.reason = (
                    f"the server refused our credentials ({code} on our SyncHdr, then Alert 1223): "
                    f"check the account's username and password, e.g. 'omadm agent account set "
                    f"--server-id {account.server_id} --password ...'"
                )
            if report.outcome != Outcome.OK:
                return
            report.commands = client.commands_received
            out = client.reply()
            self._handle(client.events(), account, report, alert_tags)

    def _abort(self, client: ClientSession, account: Account) -> None:
        """Tell the server we stop (Alert 1223), best effort: the session is over either way."""
        try:
            out = client.abort("unacceptable server message")
            self.transport.post(out.url or account.url, out.body, out.content_type, out.headers)
        except (ProtocolError, TransportError) as exc:
            log.debug("abort not delivered: %s", exc)

    def _handle(
        self, events: list[Event], account: Account, report: SessionReport, alert_tags: dict[str, int]
    ) -> None:
        for event in events:
            report.events.append(event)
            if isinstance(event, NonceReceived) and account.client_auth_node:
                self.tree.system_set(
                    f"{account.client_auth_node}/AAuthData",
                    event.nonce,
                    format="bin",
                    type="application/octet-stream",
                )
            elif isinstance(event, NonceIssued) and account.server_auth_node:
                self.tree.system_set(
                    f"{account.server_auth_node}/AAuthData",
                    event.nonce,
                    format="bin",
                    type="application/octet-stream",
                )
            elif isinstance(event, StatusReceived) and event.tag in alert_tags:
                code = event.status.code
                if not 200 <= code < 300:
                    log.warning(
                        "server %s refused alert %s with status %s", account.server_id, event.tag, code
                    )
                self.alerts.done(alert_tags.pop(event.tag))
                report.alerts_delivered += 1
            elif isinstance(event, AuthenticationFailed) and event.final:
                report.outcome, report.reason = Outcome.AUTH_FAILED, event.reason
            elif isinstance(event, SessionAborted) and event.by_peer:
                report.outcome, report.reason = Outcome.ABORTED, event.reason

    def work(self) -> int:
        """Carry out the operations servers started (SCOMO jobs); returns how many finished."""
        return self.scomo.work() if self.scomo is not None else 0

    # -- running --------------------------------------------------------------------------

    def request(self, request: SessionRequest) -> None:
        """Ask ``run`` for a session (thread-safe)."""
        self._requests.put(request)

    def notify(self, package0: bytes) -> bool:
        """Hand a received Package #0 to ``run``, which verifies it (thread-safe).

        False when ``MAX_PENDING_NOTIFICATIONS`` already wait: this one is dropped (logged
        once per burst), as a device drops what it cannot take; a real server notifies again.
        """
        if not self._notifications.acquire(blocking=False):
            self._dropped_notifications += 1
            if self._dropped_notifications == 1:
                log.warning(
                    "Package #0 flood: %d wait to be checked; dropping more", self.MAX_PENDING_NOTIFICATIONS
                )
            return False
        self._requests.put(bytes(package0))
        return True

    def run(self, stop: threading.Event) -> None:
        """Sessions until ``stop`` is set (or a server fails the TLS checks: ``tls_failure``):
        on every poll, Package #0 and pending alert."""
        from .listener import NotificationGate  # noqa: PLC0415 - listener imports this module

        gate = NotificationGate(self)
        interval = self.config.poll_interval
        next_poll = time.monotonic()
        # A server the TLS checks refuse stays refused until someone changes the trust settings
        # or the server's certificate: end (loudly) rather than retry in silence.
        while not stop.is_set() and self.tls_failure is None:
            self.work()
            now = time.monotonic()
            if interval and now >= next_poll:
                for account in self.accounts():
                    self.connect(SessionRequest(account.server_id, reason="poll"))
                next_poll = now + interval
                continue
            for server_id in self.alerts.servers_with_pending():
                if any(a.server_id == server_id for a in self.accounts()):
                    report = self.connect(SessionRequest(server_id, reason="pending alerts"))
                    if not report.ok:
                        break  # retried on the next turn, after a pause
            wait = max(0.05, min(next_poll - time.monotonic(), 5.0)) if interval else 5.0
            try:
                item = self._requests.get(timeout=wait)
            except queue.Empty:
                continue
            if isinstance(item, bytes):
                self._notifications.release()
                if self._dropped_notifications:
                    log.warning("dropped %d Package #0s in a flood", self._dropped_notifications)
                    self._dropped_notifications = 0
                request = gate.accept(item)
            else:
                request = item
            if request is not None:
                self.connect(request)
