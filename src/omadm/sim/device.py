"""One simulated DM device: a compact record at rest, a real DM tree and ClientSession in a session.

Why the tree is built per session: measured (tracemalloc, Python 3.11), a ``DMTree`` with
DevInfo, DevDetail, DMAcc and SCOMO (45 nodes) over the dict store below costs ~9.5 KB per
device kept alive, and every installed component adds ~30 more nodes (~10 KB); a SQLite
store (the agent's) costs far more. Inside the 30 KB per idle device the fleet aims for at
10,000 devices, but with little room. So a device at rest is a :class:`SimDevice`
(identity, nonces, session counter, pending alerts, SCOMO jobs, and the *changes* its tree
has seen, as a short tuple of node records with interned strings): ~0.7 KB after a first
contact (0.8-1.5 KB of RSS per device at 1,000 and 10,000 devices), ~5 KB with one installed
component. :meth:`SimDevice.tree` rebuilds the whole tree in ~0.3 ms from

1. the fleet's :class:`DeviceTemplate`: one tree built once with every MO mounted; every
   device's tree starts from a shallow copy of it (its node records are immutable, shared);
2. the device's own values (DevId, account name and secrets) written over it;
3. the device's overlay: every node its sessions and jobs added, changed or deleted.

When the session or job step ends, the tree is compared with (1)+(2) and what differs becomes
the new overlay; the tree is dropped. Nothing here does I/O: :class:`DeviceSession` turns
server bytes into the next client bytes (the runner, ``omadm.sim.run``, moves them), exactly as
the agent's ``Agent.connect`` drives ``ClientSession`` over its transport.

A Package #0 is checked as the agent's ``NotificationGate`` checks it
(:meth:`SimDevice.accept_trigger`), and answered with a server-initiated session carrying the
trigger's session-id (``session(AlertCode.SERVER_INITIATED_MGMT, session_id=...)``).

The DM behaviour is the real one: ``omadm.protocol.session.ClientSession`` for the protocol
(auth, nonces, chunking, XML and WBXML), ``omadm.tree.tree.DMTree`` for every command (ACLs,
MO checks, status codes), ``omadm.mo`` for the MOs, ``omadm.sim.scomo`` for SCOMO.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from omadm import __version__
from omadm.mo.devdetail import DEVDETAIL
from omadm.mo.devinfo import DEVINFO
from omadm.mo.dmacc import DMACC
from omadm.mo.model import MODef
from omadm.mo.scomo import scomo_mo
from omadm.protocol.auth import RESYNC_NONCE
from omadm.protocol.codec import Encoding
from omadm.protocol.codes import AlertCode, AuthType
from omadm.protocol.errors import MalformedMessage
from omadm.protocol.messages import Alert
from omadm.protocol.notification import VerifyResult, decode_notification, verify_with_resync
from omadm.protocol.session import (
    AuthenticationFailed,
    ClientConfig,
    ClientSession,
    Credentials,
    Event,
    NonceIssued,
    NonceReceived,
    Outcome,
    Outgoing,
    SessionAborted,
    StatusReceived,
)
from omadm.tree.store import NodeRecord, TreeStore, TreeStoreError
from omadm.tree.tree import DMTree, NodeHandler, utc_now

from .fleet import AUTH_SCHEMES, FleetDevice
from .scomo import SimJob, SimScomo, operation_patterns

__all__ = [
    "DeviceSession",
    "DeviceTemplate",
    "MemoryTreeStore",
    "SessionResult",
    "SimDevice",
]

_AAUTH_TYPE = {AuthType.BASIC: "BASIC", AuthType.MD5: "DIGEST", AuthType.HMAC: "HMAC"}
_ACCOUNT = "./DMAcc/sim"
_ROOT = "."
_LANG = "en-US"


class MemoryTreeStore(TreeStore):
    """``TreeStore``'s interface over a dict of ``NodeRecord``: no SQLite, no disk.

    Transactions keep an undo log (the previous record of every path written), so a refused
    Item or a failed Atomic rolls back exactly as SQLite's savepoints do in the agent.
    Children come back in insertion order, as ``ORDER BY rowid`` gives them on disk.
    """

    def __init__(self, nodes: dict[str, NodeRecord] | None = None) -> None:  # no super(): no database
        self.path = ":sim:"
        self.nodes: dict[str, NodeRecord] = dict(nodes) if nodes else {}
        self._depth = 0
        self._undo: list[tuple[str, NodeRecord | None]] = []
        self._settings: dict[str, str] = {}

    def close(self) -> None:
        """Nothing to release."""

    @contextmanager
    def transaction(self) -> Iterator[None]:
        mark = len(self._undo)
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            for path, old in reversed(self._undo[mark:]):
                if old is None:
                    self.nodes.pop(path, None)
                else:
                    self.nodes[path] = old
            del self._undo[mark:]
            raise
        self._depth -= 1
        if self._depth == 0:
            self._undo.clear()

    def get(self, path: str) -> NodeRecord | None:
        return self.nodes.get(path)

    def children(self, path: str) -> list[NodeRecord]:
        return [r for r in self.nodes.values() if r.parent == path]

    def subtree(self, path: str) -> list[NodeRecord]:
        top = self.nodes.get(path)
        if top is None:
            return []
        out: list[NodeRecord] = []
        stack = [top]
        while stack:
            node = stack.pop()
            out.append(node)
            if node.is_interior:
                stack.extend(reversed(self.children(node.path)))
        return out

    def count(self) -> int:
        return len(self.nodes)

    def all_paths(self) -> list[str]:
        return sorted(self.nodes)

    def put(self, record: NodeRecord) -> None:
        self._require_transaction()
        self._undo.append((record.path, self.nodes.get(record.path)))
        self.nodes[record.path] = record

    def delete_subtree(self, path: str) -> int:
        self._require_transaction()
        prefix = path + "/"
        gone = [p for p in self.nodes if p == path or p.startswith(prefix)]
        for p in gone:
            self._undo.append((p, self.nodes.pop(p)))
        return len(gone)

    def rename_subtree(self, old: str, new: str, new_name: str) -> None:
        self._require_transaction()
        for node in self.subtree(old):
            moved_path = new + node.path[len(old) :]
            moved_parent = node.parent if node.path == old else new + (node.parent or "")[len(old) :]
            name = new_name if node.path == old else node.name
            self._undo.append((node.path, self.nodes.pop(node.path)))
            self.put(node.with_(path=moved_path, parent=moved_parent, name=name))

    def get_setting(self, key: str) -> str | None:
        return self._settings.get(key)

    def set_setting(self, key: str, value: str) -> None:
        self._settings[key] = value

    def integrity_problems(self) -> list[str]:
        problems = []
        for record in self.nodes.values():
            parent = self.nodes.get(record.parent) if record.parent is not None else None
            if record.parent is not None and (parent is None or not parent.is_interior):
                problems.append(f"node {record.path} has no interior parent")
        if _ROOT not in self.nodes:
            problems.append("the root node is missing")
        return problems

    def _require_transaction(self) -> None:
        if self._depth == 0:
            raise TreeStoreError("tree writes must happen inside TreeStore.transaction()")


@dataclass(frozen=True, slots=True)
class DeviceTemplate:
    """What every device of a fleet shares: the server's address, the MOs, the base tree.

    ``nodes`` is the tree every device starts from: built once, when the template is made,
    and only read afterwards (its records are immutable, so every device's tree can start
    from the same objects).
    """

    server_id: str
    server_url: str
    scomo_root: str = "./SCOMO"
    scomo_version: str = "1.0"
    manufacturer: str = "omadm-sim"
    model: str = "SimDevice"
    device_type: str = "simulated"
    firmware_version: str = "1.0"
    max_msg_size: int = 16384
    max_obj_size: int = 4 * 1024 * 1024
    clock: Callable[[], datetime] = utc_now
    nodes: dict[str, NodeRecord] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        """Build the base tree once (``nodes`` is filled here; the template is frozen otherwise)."""
        store = MemoryTreeStore()
        tree = DMTree(store, clock=self.clock)
        self._mount(tree)
        sid = self.server_id
        with store.transaction():
            tree.system_add_interior(_ACCOUNT, acl=f"Add={sid}&Delete={sid}&Get={sid}&Replace={sid}")
        tree.system_set(f"{_ACCOUNT}/AppID", "w7")
        tree.system_set(f"{_ACCOUNT}/ServerID", sid)
        tree.system_set(f"{_ACCOUNT}/AppAddr/1/Addr", self.server_url)
        tree.system_set(f"{_ACCOUNT}/AppAddr/1/AddrType", "URI")
        tree.system_set(f"{_ACCOUNT}/AAuthPref", "DIGEST")
        # Placeholders: every device writes its own values over these records (same Format/Type).
        for index, level, name in ((1, "CLCRED", "-"), (2, "SRVCRED", sid)):
            auth = f"{_ACCOUNT}/AppAuth/{index}"
            tree.system_set(f"{auth}/AAuthLevel", level)
            tree.system_set(f"{auth}/AAuthType", "DIGEST")
            tree.system_set(f"{auth}/AAuthName", name)
            tree.system_set(f"{auth}/AAuthSecret", "-")
            tree.system_set(f"{auth}/AAuthData", b"", format="bin", type="application/octet-stream")
        self.nodes.update(store.nodes)

    def _mount(self, tree: DMTree, device_id: str = "") -> None:
        tree.mount(
            DEVINFO,
            values={
                "DevId": device_id,
                "Man": self.manufacturer,
                "Mod": self.model,
                "DmV": f"omadm {__version__}",
                "Lang": _LANG,
            },
        )
        tree.mount(
            DEVDETAIL,
            values={
                "URI/MaxDepth": "0",
                "URI/MaxTotLen": "0",
                "URI/MaxSegLen": "0",
                "DevTyp": self.device_type,
                "OEM": self.manufacturer,
                "FwV": self.firmware_version,
                "SwV": f"omadm-sim {__version__}",
                "HwV": "sim",
                "LrgObj": "true",
            },
        )
        tree.mount(DMACC)
        tree.mount(_scomo_mo(self.scomo_version, self.scomo_root), self.scomo_root)

    def devinfo(self, device_id: str) -> tuple[tuple[str, str], ...]:
        return (
            ("./DevInfo/DevId", device_id),
            ("./DevInfo/Man", self.manufacturer),
            ("./DevInfo/Mod", self.model),
            ("./DevInfo/DmV", f"omadm {__version__}"),
            ("./DevInfo/Lang", _LANG),
        )


_SCOMO_MOS: dict[tuple[str, str], MODef] = {}


def _scomo_mo(version: str, root: str) -> MODef:
    """The SCOMO MO declaration, built once per (version, root) for the whole process."""
    key = (version, root)
    if key not in _SCOMO_MOS:
        _SCOMO_MOS[key] = scomo_mo(version, root)
    return _SCOMO_MOS[key]


class _ScomoHandler(NodeHandler):
    """Routes Execs on SCOMO operation nodes to the device's SCOMO state (made on the first one)."""

    def __init__(self, device: SimDevice) -> None:
        self.device = device

    def execute(
        self, tree: DMTree, path: str, data: str | bytes | None, correlator: str | None, server_id: str
    ) -> Outcome:
        return self.device.scomo.accept(tree, path, correlator, server_id)


class SimDevice:
    """One simulated device at rest: a few hundred bytes plus whatever its tree gained.

    ``overlay`` holds the records that differ from the template-plus-identity tree and
    ``deleted`` the template paths its tree lost; both stay empty for a device nothing was
    ever done to. ``alerts`` are Generic Alerts waiting for a session (sent in every session
    until the server answers them, as the agent's alert queue does).
    """

    __slots__ = (
        "_last_trigger",
        "_scomo",
        "_tree_open",
        "alerts",
        "auth_type",
        "client_nonce",
        "deleted",
        "device_id",
        "encoding",
        "overlay",
        "password",
        "server_nonce",
        "server_password",
        "session_counter",
        "template",
        "username",
    )

    def __init__(
        self,
        template: DeviceTemplate,
        device_id: str,
        username: str,
        password: str,
        *,
        auth: str = "md5",
        server_password: str = "",
        encoding: Encoding = Encoding.XML,
    ) -> None:
        if auth not in AUTH_SCHEMES:
            raise ValueError(
                f"device {device_id}: auth must be one of {', '.join(AUTH_SCHEMES)}, not {auth!r}"
            )
        self.template = template
        self.device_id = device_id
        self.username = username
        self.password = password
        self.auth_type = AUTH_SCHEMES[auth]
        self.server_password = server_password
        self.encoding = encoding
        self.client_nonce = b""
        self.server_nonce = b""
        self.session_counter = 0
        self.overlay: tuple[NodeRecord, ...] = ()
        self.deleted: tuple[str, ...] = ()
        self.alerts: list[Alert] | None = None
        self._scomo: SimScomo | None = None
        self._tree_open = False
        self._last_trigger = 0  # the session-id of the last Package #0 acted on

    @classmethod
    def from_fleet(cls, template: DeviceTemplate, device: FleetDevice, encoding: Encoding) -> SimDevice:
        """The simulated device for one entry of a fleet file."""
        return cls(
            template,
            device.device_id,
            device.username,
            device.password,
            auth=device.auth,
            server_password=device.server_password,
            encoding=encoding,
        )

    # -- SCOMO state (created on first use) --------------------------------------------------

    @property
    def scomo(self) -> SimScomo:
        if self._scomo is None:
            self._scomo = SimScomo(self.template.scomo_root, self._report)
        return self._scomo

    @property
    def jobs(self) -> list[SimJob]:
        """Accepted SCOMO jobs not finished yet."""
        return self._scomo.jobs if self._scomo is not None else []

    def _report(self, alert: Alert) -> None:
        if self.alerts is None:
            self.alerts = []
        self.alerts.append(alert)

    @property
    def pending_alerts(self) -> list[Alert]:
        return list(self.alerts or ())

    # -- the tree ------------------------------------------------------------------------

    def _base(self) -> MemoryTreeStore:
        """Template plus this device's own values, inside one store."""
        store = MemoryTreeStore(self.template.nodes)
        nodes = store.nodes
        _put_value(nodes, "./DevInfo/DevId", self.device_id)
        aauth = _AAUTH_TYPE[self.auth_type]
        _put_value(nodes, f"{_ACCOUNT}/AAuthPref", aauth)
        auth = f"{_ACCOUNT}/AppAuth/1"
        _put_value(nodes, f"{auth}/AAuthType", aauth)
        _put_value(nodes, f"{auth}/AAuthName", self.username)
        _put_value(nodes, f"{auth}/AAuthSecret", self.password)
        srv = f"{_ACCOUNT}/AppAuth/2"
        if self.server_password:
            _put_value(nodes, f"{srv}/AAuthType", aauth)
            _put_value(nodes, f"{srv}/AAuthSecret", self.server_password)
        else:
            for path in [p for p in nodes if p == srv or p.startswith(srv + "/")]:
                del nodes[path]
        return store

    def _open_tree(self) -> tuple[DMTree, dict[str, NodeRecord]]:
        if self._tree_open:  # two trees of one device: the first to close would lose the other's changes
            raise RuntimeError(
                f"device {self.device_id}: its tree is already open (a session or job step runs)"
            )
        store = self._base()
        base = dict(store.nodes)
        for record in self.overlay:
            store.nodes[record.path] = record
        for path in self.deleted:
            store.nodes.pop(path, None)
        tree = DMTree(store, clock=self.template.clock)
        self.template._mount(tree, self.device_id)  # mounts only: every node is already there
        handler = _ScomoHandler(self)
        for pattern in operation_patterns(self.template.scomo_root):
            tree.register_handler(pattern, handler)
        self._tree_open = True
        return tree, base

    def _close_tree(self, tree: DMTree, base: dict[str, NodeRecord]) -> None:
        self._tree_open = False
        nodes = tree.store.nodes  # type: ignore[attr-defined]
        kept = {id(r) for r in self.overlay}
        self.overlay = tuple(
            r if id(r) in kept else _compact(r) for p, r in nodes.items() if base.get(p) is not r
        )
        self.deleted = tuple(sys.intern(p) for p in base if p not in nodes)

    @contextmanager
    def tree(self) -> Iterator[DMTree]:
        """The device's whole tree for a moment; what changes in it is kept, the rest dropped."""
        tree, base = self._open_tree()
        try:
            yield tree
        finally:
            self._close_tree(tree, base)

    # -- Package #0 ----------------------------------------------------------------------

    def accept_trigger(self, data: bytes) -> str | None:
        """The session-id (hex) to open a server-initiated session with, or None to ignore ``data``.

        The agent's ``NotificationGate``: a malformed trigger, one from another server, one
        whose digest does not verify with our server password and the nonce we last issued
        (or the resync nonce: then both nonces restart from it), and a repeat of the last
        session-id are ignored, as the standard asks (nobody may make devices call out).
        """
        try:
            decoded = decode_notification(data)
        except MalformedMessage:
            return None
        note = decoded.notification
        if note.server_id != self.template.server_id or not self.server_password:
            return None
        result = verify_with_resync(
            decoded, self.server_password, self.server_nonce or None, server_name=self.template.server_id
        )
        if result is VerifyResult.FAILED or note.session_id == self._last_trigger:
            return None
        self._last_trigger = note.session_id
        if result is VerifyResult.OK_RESYNC:
            self.client_nonce = self.server_nonce = RESYNC_NONCE
        return note.session_id_hex

    # -- sessions ------------------------------------------------------------------------

    def session(
        self,
        alert_code: int = AlertCode.CLIENT_INITIATED_MGMT,
        *,
        session_id: str | None = None,
        nonce_factory: Callable[[], bytes] | None = None,
    ) -> DeviceSession:
        """Open one DM session (build the tree, queue pending alerts); drive it with the result.

        ``session_id``: a Package #0's (hex), for a server-initiated session (Alert 1200).
        """
        self.session_counter = self.session_counter % 0xFFFF + 1
        tree, base = self._open_tree()
        server = None
        if self.server_password:
            server = Credentials(self.auth_type, self.template.server_id, self.server_password)
        config = ClientConfig(
            device_id=self.device_id,
            server_uri=self.template.server_url,
            credentials=Credentials(self.auth_type, self.username, self.password),
            client_nonce=self.client_nonce,
            server_credentials=server,
            server_nonce=self.server_nonce,
            require_server_auth=server is not None,
            session_id=session_id or format(self.session_counter, "X"),
            alert_code=alert_code,
            devinfo=self.template.devinfo(self.device_id),
            encoding=self.encoding,
            max_msg_size=self.template.max_msg_size,
            max_obj_size=self.template.max_obj_size,
        )
        if nonce_factory is not None:
            config = dataclasses.replace(config, nonce_factory=nonce_factory)
        client = ClientSession(config, tree.session(self.template.server_id))
        return DeviceSession(self, client, tree, base)


#: Short leaf values shared by every device that holds them ("10", "20", "node"...).
_SMALL_VALUES: dict[bytes, bytes] = {}
_SMALL = 24


def _compact(record: NodeRecord) -> NodeRecord:
    """The same record with its strings interned and a short value shared between devices.

    Thousands of devices hold the same SCOMO paths, names, formats, types and TStamps (to the
    second); sharing them makes an installed component cost a device about a third as much.
    """
    value = record.value
    if value is not None and len(value) <= _SMALL:
        value = _SMALL_VALUES.setdefault(value, value)
    return NodeRecord(
        sys.intern(record.path),
        sys.intern(record.parent) if record.parent is not None else None,
        sys.intern(record.name),
        sys.intern(record.format),
        sys.intern(record.type) if record.type is not None else None,
        value,
        sys.intern(record.acl),
        record.title,
        sys.intern(record.tstamp) if record.tstamp is not None else None,
        record.verno,
        record.permanent,
    )


def _put_value(nodes: dict[str, NodeRecord], path: str, value: str) -> None:
    """Give a template leaf this device's value (the record keeps the template's Format/Type)."""
    nodes[path] = nodes[path].with_(value=value.encode())


@dataclass(slots=True)
class SessionResult:
    """How one session of one device ended (``ok`` False: ``outcome`` and ``reason`` say why)."""

    outcome: str = "ok"
    reason: str = ""
    messages: int = 0
    alerts_delivered: int = 0
    jobs_accepted: int = 0

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


class DeviceSession:
    """One session of one device, sans-IO: ``start()``, then ``receive()`` each reply until None.

    ``close()`` must be called whatever happened (it folds the tree back into the device).
    """

    def __init__(
        self, device: SimDevice, client: ClientSession, tree: DMTree, base: dict[str, NodeRecord]
    ) -> None:
        self.device = device
        self.client = client
        self.result = SessionResult()
        self._tree = tree
        self._base = base
        self._jobs_before = len(device.jobs)
        self._alert_tags: dict[str, Alert] = {
            client.queue_alert(alert): alert for alert in (device.alerts or ())
        }
        #: Alerts the server answered in this session (the runner may send one again: a fault).
        self.delivered: list[Alert] = []
        self._closed = False

    def start(self) -> Outgoing:
        self.result.messages += 1
        return self.client.start()

    def receive(self, body: bytes, content_type: str | None, hmac_header: str | None) -> Outgoing | None:
        """Take the server's reply; the next message to POST, or None when the session is over.

        Raises ``omadm.protocol.errors.ProtocolError`` when the reply cannot be accepted
        (then :meth:`abort` gives the Alert 1223 to send, as the agent does).
        """
        events = self.client.receive(body, hmac_header=hmac_header, content_type=content_type)
        self._handle(events + self.client.events())
        if not self.result.ok:
            return None
        out = self.client.reply()
        self._handle(self.client.events())
        if out is not None:
            self.result.messages += 1
        return out

    def abort(self, reason: str) -> Outgoing | None:
        """Alert 1223 for a server message we refused; None if the session cannot say it."""
        from omadm.protocol.errors import ProtocolError  # noqa: PLC0415

        try:
            return self.client.abort(reason)
        except ProtocolError:
            return None

    def fail(self, outcome: str, reason: str) -> None:
        """Record why the session ended early (transport, protocol); the first cause wins."""
        if self.result.ok:
            self.result.outcome, self.result.reason = outcome, reason

    def _handle(self, events: list[Event]) -> None:
        device = self.device
        for event in events:
            if isinstance(event, NonceReceived):
                device.client_nonce = event.nonce
            elif isinstance(event, NonceIssued):
                device.server_nonce = event.nonce
            elif isinstance(event, StatusReceived) and event.tag in self._alert_tags:
                alert = self._alert_tags.pop(event.tag)
                self.delivered.append(alert)
                if device.alerts is not None and alert in device.alerts:
                    device.alerts.remove(alert)
                    if not device.alerts:
                        device.alerts = None
                self.result.alerts_delivered += 1
            elif isinstance(event, AuthenticationFailed) and event.final:
                self.fail("auth-failed", event.reason)
            elif isinstance(event, SessionAborted) and event.by_peer:
                self.fail("aborted", event.reason)

    def close(self) -> SessionResult:
        if not self._closed:
            self._closed = True
            if self.result.ok and self.client.finished and not self.client.server_authenticated:
                self.fail("auth-failed", "the server never proved its identity; none of its commands ran")
            self.device._close_tree(self._tree, self._base)
            self.result.jobs_accepted = max(0, len(self.device.jobs) - self._jobs_before)
        return self.result
