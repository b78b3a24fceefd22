"""The DM tree engine: DM commands with their status codes, ACLs, properties and MOs.

``DMTree`` owns the stored nodes (``TreeStore``), the MOs mounted in it (each declared once
in ``omadm.mo``) and the handlers that MOs plug in for dynamic values and Exec. A server
acts on the tree through ``tree.session(server_id)``, a ``CommandHandler`` for
``omadm.protocol.session.ClientSession``: every check (URI, existence, ACL, the MO's
access types and formats) happens here, before any handler is called, and every command
is one transaction, so a failure changes nothing and a crash leaves whole commands only.

The device itself writes through the ``system_*`` methods, which bypass ACLs but not the
tree's structure rules.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from omadm.mo.model import Access, Format, MODef, NodeDef, Scope, value_error
from omadm.protocol.codes import StatusCode
from omadm.protocol.messages import Alert, Copy, Delete, Exec, Get, Item, ItemCommand, Meta, Replace, Source
from omadm.protocol.session import Outcome

from . import tnds
from .acl import ACL, ROOT_DEFAULT_ACL, parse_acl
from .errors import TreeError
from .store import NodeRecord, TreeStore
from .uri import URI, ListMode, Target, URILimits, escape_segment, parse_target, parse_uri

__all__ = [
    "ROOT",
    "TNDS_TYPES",
    "DMTree",
    "NodeHandler",
    "TreeSession",
    "utc_now",
]

log = logging.getLogger(__name__)

ROOT = "."
TNDS_TYPES = frozenset({"application/vnd.syncml.dmtnds+xml", "application/vnd.syncml.dmtnds+wbxml"})
_TEXT_PLAIN = "text/plain"
_PROPERTIES = ("ACL", "Format", "Name", "Size", "Title", "TStamp", "Type", "VerNo")
_MAX_TITLE = 255


def utc_now() -> datetime:
    return datetime.now(UTC)


def _fail(status: int, message: str) -> TreeError:
    return TreeError(message, int(status))


class NodeHandler:
    """What an MO plugs into the tree for a node pattern; override what you need.

    Patterns are canonical paths where ``*`` stands for one segment, e.g.
    ``./SCOMO/Download/*/Operations/Install``.
    """

    def read(self, tree: DMTree, path: str) -> bytes | None:
        """A dynamic value for a leaf (None: use the stored value)."""
        return None

    def execute(
        self, tree: DMTree, path: str, data: str | bytes | None, correlator: str | None, server_id: str
    ) -> Outcome:
        """Run an Exec on ``path``; the default refuses (405)."""
        return Outcome(StatusCode.COMMAND_NOT_ALLOWED)

    def changed(self, tree: DMTree, path: str, command: str) -> None:
        """Called after a server's Add, Replace or Delete at or below the pattern committed."""


@dataclass(frozen=True, slots=True)
class _Mount:
    mo: MODef
    path: str


def _match(pattern: tuple[str, ...], segments: tuple[str, ...]) -> bool:
    return len(pattern) == len(segments) and all(p in ("*", s) for p, s in zip(pattern, segments, strict=True))


class DMTree:
    """A persistent DM tree with its MOs and handlers."""

    def __init__(
        self,
        store: TreeStore,
        *,
        clock: Callable[[], datetime] = utc_now,
        max_value_size: int = 16 * 1024 * 1024,
    ) -> None:
        self.store = store
        self.clock = clock
        self.max_value_size = max_value_size
        self._mounts: list[_Mount] = []
        self._handlers: list[tuple[tuple[str, ...], NodeHandler]] = []
        if store.get(ROOT) is None:
            with store.transaction():
                store.put(NodeRecord(path=ROOT, parent=None, name=".", format="node", acl=str(ROOT_DEFAULT_ACL),
                                     permanent=True, tstamp=self._stamp()))

    # -- setting up ---------------------------------------------------------------------

    def mount(self, mo: MODef, path: str | None = None, values: Mapping[str, str | bytes] | None = None) -> str:
        """Put ``mo`` in the tree at ``path`` (its default path): its permanent nodes with values.

        ``values`` maps paths relative to the MO root (``"DevId"``, ``"URI/MaxDepth"``) to
        values; fixed nodes that must occur are created even without a value. Existing
        nodes keep their values (mounting again after a restart changes nothing but what
        ``values`` says). Returns the canonical path of the MO root.
        """
        root = parse_uri(path or mo.default_path)
        self._mounts = [m for m in self._mounts if m.path != root.path]
        self._mounts.append(_Mount(mo, root.path))
        self._mounts.sort(key=lambda m: -len(m.path))
        given = dict(values or {})
        with self.store.transaction():
            self._ensure_interiors(root.parent)
            self._build(mo.root, root, mo, given, "")
        return root.path

    def _build(
        self, node_def: NodeDef, uri: URI, mo: MODef, values: dict[str, str | bytes], relative: str
    ) -> None:
        is_root = relative == ""
        existing = self.store.get(uri.path)
        if existing is None:
            record = NodeRecord(
                path=uri.path,
                parent=uri.parent.path if uri.parent else None,
                name=uri.name,
                format=str(node_def.format),
                type=(mo.urn if is_root else node_def.ddf_name) if node_def.is_interior else (node_def.mime or _TEXT_PLAIN),
                acl=(mo.default_acl or "") if is_root else "",
                tstamp=self._stamp(),
                permanent=node_def.scope is Scope.PERMANENT,
            )
            if not node_def.is_interior:
                raw = values.get(relative, node_def.default)
                record = record.with_(value=None if raw is None else self._encode_value(node_def.format, raw))
            self.store.put(record)
        elif not node_def.is_interior and relative in values:
            value = self._encode_value(node_def.format, values[relative])
            if existing.value != value:
                self.store.put(existing.with_(value=value, tstamp=self._stamp(), verno=(existing.verno + 1) & 0xFFFF))
        for child in node_def.children:
            if child.is_placeholder:
                continue
            wanted = child.occurrence.minimum >= 1 or any(
                k == self._join(relative, child.name) or k.startswith(self._join(relative, child.name) + "/")
                for k in values
            )
            if wanted:
                self._build(child, uri.child(child.name), mo, values, self._join(relative, child.name))

    @staticmethod
    def _join(relative: str, name: str) -> str:
        return f"{relative}/{name}" if relative else name

    def register_handler(self, pattern: str, handler: NodeHandler) -> None:
        """Route reads, Execs and change notices for nodes matching ``pattern`` to ``handler``."""
        segments = tuple("*" if s == "*" else s for s in parse_uri(pattern.replace("*", "__ANY__")).segments)
        segments = tuple("*" if s == "__ANY__" else s for s in segments)
        self._handlers.append((segments, handler))

    def _handler_for(self, uri: URI) -> NodeHandler | None:
        for pattern, handler in self._handlers:
            if _match(pattern, uri.segments):
                return handler
        return None

    def _handlers_above(self, uri: URI) -> Iterator[NodeHandler]:
        seen: set[int] = set()
        probe: URI | None = uri
        while probe is not None:
            handler = self._handler_for(probe)
            if handler is not None and id(handler) not in seen:
                seen.add(id(handler))
                yield handler
            probe = probe.parent

    # -- what the MOs say --------------------------------------------------------------

    def definition(self, path: str) -> NodeDef | None:
        """The MO declaration of the node at ``path``, or None outside every mounted MO."""
        for mount in self._mounts:
            if path == mount.path:
                return mount.mo.root
            if path.startswith(mount.path + "/"):
                relative = path[len(mount.path) + 1 :]
                return mount.mo.resolve("/".join(parse_uri("./" + relative).segments))
        return None

    def in_mo(self, path: str) -> bool:
        return any(path == m.path or path.startswith(m.path + "/") for m in self._mounts)

    def child_definition(self, parent: str, name: str) -> tuple[bool, NodeDef | None]:
        """May a node ``name`` exist under ``parent``, and what declares it?

        Outside every MO, and below an interior node the MO leaves open (``Ext``,
        ``Bearer``), anything may exist: ``(True, None)``.
        """
        if not self.in_mo(parent):
            return True, None
        parent_def = self.definition(parent)
        if parent_def is None or parent_def.is_open:
            return True, None
        child = parent_def.child(name)
        return child is not None, child

    @property
    def limits(self) -> URILimits:
        """``./DevDetail/URI/*`` when present (0 = unlimited)."""

        def read(name: str) -> int:
            record = self.store.get(f"./DevDetail/URI/{name}")
            try:
                return int(record.value or b"0") if record is not None else 0
            except ValueError:
                return 0

        return URILimits(max_depth=read("MaxDepth"), max_tot_len=read("MaxTotLen"), max_seg_len=read("MaxSegLen"))

    # -- the device's own access (no ACL) ----------------------------------------------

    def system_get(self, path: str) -> NodeRecord | None:
        return self.store.get(parse_uri(path).path)

    def system_value(self, path: str) -> str | bytes | None:
        """A leaf's value as the device sees it (secrets included): text, or bytes for bin."""
        record = self.system_get(path)
        if record is None or record.value is None:
            return None
        return record.value if record.format == Format.BIN else record.value.decode("utf-8")

    def system_set(
        self, path: str, value: str | bytes | None, *, format: str = "chr", type: str | None = None,
        create: bool = True,
    ) -> None:
        """Write a leaf (creating it and missing interior parents when ``create``)."""
        uri = parse_uri(path)
        with self.store.transaction():
            existing = self.store.get(uri.path)
            if existing is None:
                if not create:
                    raise _fail(StatusCode.NOT_FOUND, f"{uri.path} does not exist")
                assert uri.parent is not None
                self._ensure_interiors(uri.parent)
                existing = NodeRecord(path=uri.path, parent=uri.parent.path, name=uri.name, format=format,
                                      type=type or _TEXT_PLAIN)
            elif existing.is_interior:
                raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"{uri.path} is an interior node")
            encoded = None if value is None else self._encode_value(format, value)
            self.store.put(existing.with_(format=format, type=type or existing.type, value=encoded,
                                          tstamp=self._stamp(), verno=(existing.verno + 1) & 0xFFFF))

    def system_add_interior(self, path: str, *, type: str | None = None, acl: str = "") -> None:
        uri = parse_uri(path)
        with self.store.transaction():
            if uri.parent is not None:
                self._ensure_interiors(uri.parent)
            if self.store.get(uri.path) is None:
                self.store.put(NodeRecord(path=uri.path, parent=uri.parent.path if uri.parent else None, name=uri.name,
                                          format="node", type=type, acl=acl, tstamp=self._stamp()))

    def system_delete(self, path: str) -> None:
        with self.store.transaction():
            self.store.delete_subtree(parse_uri(path).path)

    def _ensure_interiors(self, uri: URI | None) -> None:
        chain: list[URI] = []
        while uri is not None and self.store.get(uri.path) is None:
            chain.append(uri)
            uri = uri.parent
        for missing in reversed(chain):
            assert missing.parent is not None
            self.store.put(NodeRecord(path=missing.path, parent=missing.parent.path, name=missing.name, format="node",
                                      tstamp=self._stamp()))

    def session(self, server_id: str) -> TreeSession:
        """The tree as seen by the server ``server_id`` (a DMAcc ServerID) for one DM session."""
        return TreeSession(self, server_id)

    # -- values ----------------------------------------------------------------------

    def _stamp(self) -> str:
        return self.clock().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")

    def _encode_value(self, fmt: str, value: str | bytes) -> bytes:
        raw = value if isinstance(value, bytes) else value.encode("utf-8")
        if len(raw) > self.max_value_size:
            raise _fail(StatusCode.REQUEST_ENTITY_TOO_LARGE,
                        f"value of {len(raw)} bytes exceeds the tree's limit of {self.max_value_size}")
        if fmt != Format.BIN:
            _check_format(fmt, raw.decode("utf-8", "replace"))
        return raw

    def effective_acl(self, path: str) -> ACL:
        """The ACL that governs ``path``: its own, or the nearest non-empty one above it."""
        uri: URI | None = parse_uri(path)
        while uri is not None:
            record = self.store.get(uri.path)
            if record is not None and record.acl:
                return parse_acl(record.acl)
            uri = uri.parent
        return parse_acl(str(ROOT_DEFAULT_ACL))


def _check_format(fmt: str, text: str) -> None:
    """Refuse a value that its Format cannot hold (section 7.3)."""
    try:
        problem = value_error(Format(fmt), text)
    except ValueError:
        problem = f"unknown Format {fmt!r}"
    if problem is not None:
        raise _fail(StatusCode.BAD_REQUEST, problem)


# ---------------------------------------------------------------------------------------


class TreeSession:
    """The tree as one server sees it during one session: a ``CommandHandler``."""

    def __init__(self, tree: DMTree, server_id: str) -> None:
        self.tree = tree
        self.store = tree.store
        self.server_id = server_id
        self._atomic: Iterator[None] | None = None
        self._atomic_cm: object | None = None
        self._changes: list[tuple[str, str]] = []

    # CommandHandler ------------------------------------------------------------------

    def execute(self, command: ItemCommand | Alert) -> list[Outcome]:
        if isinstance(command, Alert):
            # This agent has no user interface: UI alerts are answered 406 (digest 4.1).
            return [Outcome(StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED)]
        if not command.items:
            return [Outcome(StatusCode.INCOMPLETE_COMMAND)]
        return [self._one(command, item) for item in command.items]

    def begin_atomic(self) -> None:
        cm = self.store.transaction()
        cm.__enter__()
        self._atomic_cm = cm

    def end_atomic(self, commit: bool) -> None:
        cm = self._atomic_cm
        self._atomic_cm = None
        if cm is None:
            return
        if commit:
            cm.__exit__(None, None, None)  # type: ignore[attr-defined]
            self._flush_changes()
        else:
            try:
                cm.__exit__(_Rollback, _Rollback(), None)  # type: ignore[attr-defined]
            except _Rollback:
                pass
            self._changes.clear()

    # ---------------------------------------------------------------------------------

    def _one(self, command: ItemCommand, item: Item) -> Outcome:
        try:
            with self.store.transaction():
                outcome = self._dispatch(command, item)
            if self._atomic_cm is None:
                self._flush_changes()
            return outcome
        except TreeError as exc:
            log.info("%s %s refused with %s: %s", command.name, _target_text(item), exc.status, exc)
            return Outcome(exc.status, target_ref=_target_text(item) or None)
        except Exception:  # a bug or a broken handler must not end the session
            log.exception("%s %s failed", command.name, _target_text(item))
            return Outcome(StatusCode.COMMAND_FAILED, target_ref=_target_text(item) or None)

    def _flush_changes(self) -> None:
        changes, self._changes = self._changes, []
        for path, what in changes:
            for handler in self.tree._handlers_above(parse_uri(path)):
                try:
                    handler.changed(self.tree, path, what)
                except Exception:
                    log.exception("handler failed on %s of %s", what, path)

    def _dispatch(self, command: ItemCommand, item: Item) -> Outcome:
        if item.target is None:
            if isinstance(command, Copy) or item.source is None:
                raise _fail(StatusCode.INCOMPLETE_COMMAND, f"{command.name} item without a Target")
        text = item.target.loc_uri if item.target is not None else ""
        target = parse_target(text, limits=self.tree.limits)
        if isinstance(command, Get):
            return self._get(target)
        if target.list_mode is not None:
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"?list= is only for Get, not {command.name}")
        if isinstance(command, Exec):
            return self._exec(target, command, item)
        if isinstance(command, Delete):
            return self._delete(target)
        if isinstance(command, Copy):
            return self._copy(target, item)
        if _type_of(command, item) in TNDS_TYPES and target.prop is None:
            return self._tnds_write(target, command, item)
        if isinstance(command, Replace):
            if target.prop is not None:
                return self._replace_property(target, item)
            return self._replace(target.uri, *self._incoming(command, item))
        # Add
        if target.prop is not None:
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, "properties are created with their node, never added")
        return self._add(target.uri, *self._incoming(command, item))

    # -- access checks ----------------------------------------------------------------

    def _require(self, path: str, command: str) -> None:
        if not self.tree.effective_acl(path).allows(command, self.server_id):
            raise _fail(StatusCode.PERMISSION_DENIED, f"the ACL of {path} does not grant {command} to {self.server_id}")

    def _require_access(self, node_def: NodeDef | None, access: Access, path: str, command: str) -> None:
        if node_def is not None and access not in node_def.access:
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"{command} is not allowed on {path} (its MO forbids it)")

    def _existing(self, uri: URI) -> NodeRecord:
        record = self.store.get(uri.path)
        if record is None:
            raise _fail(StatusCode.NOT_FOUND, f"{uri.path} does not exist")
        return record

    # -- incoming data ----------------------------------------------------------------

    def _incoming(self, command: ItemCommand, item: Item) -> tuple[str, str | None, bytes | None, bool]:
        """(format to store, type, value bytes, whether Meta/Format was given)."""
        given = (item.meta.format if item.meta and item.meta.format else None) or (
            command.meta.format if command.meta and command.meta.format else None
        )
        fmt = (given or "chr").lower()
        typ = _type_of(command, item)
        data = item.data
        if fmt == Format.NODE:
            return fmt, typ, None, True
        if data is None:
            return fmt, typ, (None if fmt == Format.NULL else b""), given is not None
        if fmt == Format.B64:
            text = data.decode("ascii", "replace") if isinstance(data, bytes) else data
            try:
                return Format.BIN, typ, base64.b64decode("".join(text.split()), validate=True), True
            except (binascii.Error, ValueError):
                raise _fail(StatusCode.BAD_REQUEST, "Data is not valid base64 although Format is b64") from None
        raw = data if isinstance(data, bytes) else data.encode("utf-8")
        if fmt != Format.BIN:
            raw = raw.rstrip(b"\x00")  # pitfall 35: a trailing NUL counted in the length
        if fmt not in {f.value for f in Format}:
            raise _fail(StatusCode.UNSUPPORTED_MEDIA_TYPE, f"unknown Format {fmt!r}")
        return fmt, typ, raw, given is not None

    def _settle_format(self, node_def: NodeDef | None, fmt: str, value: bytes | None, explicit: bool, path: str) -> str:
        """The format to store, checked against the MO's declaration."""
        if node_def is None:
            return fmt
        declared = str(node_def.format)
        if fmt == declared:
            return fmt
        if not explicit and value is not None and declared != Format.NODE:
            return declared  # no Meta/Format (default chr): accept if the value fits the declared format
        raise _fail(StatusCode.UNSUPPORTED_MEDIA_TYPE, f"{path} is declared {declared}, not {fmt}")

    # -- Add --------------------------------------------------------------------------

    def _add(self, uri: URI, fmt: str, typ: str | None, value: bytes | None, explicit: bool) -> Outcome:
        if self.store.get(uri.path) is not None:
            raise _fail(StatusCode.ALREADY_EXISTS, f"{uri.path} already exists")
        parent_uri = uri.parent
        if parent_uri is None:
            raise _fail(StatusCode.ALREADY_EXISTS, "the root always exists")
        parent = self.store.get(parent_uri.path)
        if parent is None:
            raise _fail(StatusCode.NOT_FOUND, f"the parent {parent_uri.path} does not exist")
        if not parent.is_interior:
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"{parent_uri.path} is a leaf and cannot have children")
        self._require(parent_uri.path, "Add")
        allowed, node_def = self.tree.child_definition(parent_uri.path, uri.name)
        if not allowed:
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"the MO defines no node {uri.name!r} under {parent_uri.path}")
        if node_def is not None:
            self._require_access(node_def, Access.ADD, uri.path, "Add")
            self._check_occurrence(node_def, parent_uri)
        fmt = self._settle_format(node_def, fmt, value, explicit, uri.path)
        if fmt == Format.NODE:
            value = None
        elif value is not None:
            value = self.tree._encode_value(fmt, value)
        if node_def is not None and node_def.values and value is not None and value.decode() not in node_def.values:
            raise _fail(StatusCode.BAD_REQUEST, f"{uri.path} takes one of {', '.join(node_def.values)}")
        acl = ""
        if fmt == Format.NODE and not self.tree.effective_acl(parent_uri.path).allows("Replace", self.server_id):
            # TND 1.2: an interior node added without Replace on the parent gets rights for its creator.
            # We grant Get too: without it the server could not read what it created.
            sid = self.server_id
            acl = f"Add={sid}&Delete={sid}&Get={sid}&Replace={sid}"
        default_type = None if fmt == Format.NODE else _TEXT_PLAIN
        self.store.put(
            NodeRecord(path=uri.path, parent=parent_uri.path, name=uri.name, format=fmt,
                       type=typ or (node_def.ddf_name if node_def is not None and fmt == Format.NODE else default_type),
                       value=value, acl=acl, tstamp=self.tree._stamp(), permanent=False)
        )
        self._changes.append((uri.path, "Add"))
        return Outcome(StatusCode.OK)

    def _check_occurrence(self, node_def: NodeDef, parent: URI) -> None:
        maximum = node_def.occurrence.maximum
        if maximum is None:
            return
        if node_def.is_placeholder:
            taken = [c for c in self.store.children(parent.path)
                     if (pd := self.tree.definition(parent.path)) is not None and pd.child(c.name) is node_def]
            if len(taken) >= maximum:
                raise _fail(StatusCode.DEVICE_FULL, f"{parent.path} holds at most {maximum} such nodes")

    # -- Replace ------------------------------------------------------------------------

    def _replace(self, uri: URI, fmt: str, typ: str | None, value: bytes | None, explicit: bool) -> Outcome:
        record = self._existing(uri)
        if record.is_interior:
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"{uri.path} is an interior node: it has no value")
        self._require(uri.path, "Replace")
        node_def = self.tree.definition(uri.path)
        self._require_access(node_def, Access.REPLACE, uri.path, "Replace")
        fmt = self._settle_format(node_def, fmt, value, explicit, uri.path)
        if fmt == Format.NODE:
            raise _fail(StatusCode.UNSUPPORTED_MEDIA_TYPE, f"{uri.path} is a leaf; Format node is not a value")
        if value is not None:
            value = self.tree._encode_value(fmt, value)
        if node_def is not None and node_def.values and value is not None and value.decode() not in node_def.values:
            raise _fail(StatusCode.BAD_REQUEST, f"{uri.path} takes one of {', '.join(node_def.values)}")
        self.store.put(record.with_(format=fmt, type=typ or record.type or _TEXT_PLAIN, value=value,
                                    tstamp=self.tree._stamp(), verno=(record.verno + 1) & 0xFFFF))
        self._changes.append((uri.path, "Replace"))
        return Outcome(StatusCode.OK)

    def _replace_property(self, target: Target, item: Item) -> Outcome:
        uri, prop = target.uri, target.prop or ""
        record = self._existing(uri)
        text = item.data.decode("utf-8", "replace") if isinstance(item.data, bytes) else (item.data or "")
        text = text.rstrip("\x00")
        if prop == "ACL":
            acl = parse_acl(text)
            parent = uri.parent
            if record.is_interior:
                allowed = self.tree.effective_acl(uri.path).allows("Replace", self.server_id) or (
                    parent is not None and self.tree.effective_acl(parent.path).allows("Replace", self.server_id)
                )
            else:
                allowed = parent is not None and self.tree.effective_acl(parent.path).allows("Replace", self.server_id)
            if not allowed:
                raise _fail(StatusCode.PERMISSION_DENIED, f"{self.server_id} may not change the ACL of {uri.path}")
            if parent is None and acl.is_empty:
                raise _fail(StatusCode.COMMAND_NOT_ALLOWED, "the root's ACL cannot be empty")
            self.store.put(record.with_(acl=str(acl)))
        elif prop == "Name":
            self._require(uri.path, "Replace")
            if record.permanent or uri.parent is None:
                raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"{uri.path} is permanent and cannot be renamed")
            new_uri = parse_uri(uri.parent.path + "/" + escape_segment(text), limits=self.tree.limits)
            if new_uri.parent != uri.parent or not text:
                raise _fail(StatusCode.BAD_REQUEST, f"{text!r} is not a node name")
            if self.store.get(new_uri.path) is not None:
                raise _fail(StatusCode.ALREADY_EXISTS, f"{new_uri.path} already exists")
            self.store.rename_subtree(uri.path, new_uri.path, new_uri.name)
            self._changes.append((new_uri.path, "Replace"))
        elif prop == "Title":
            self._require(uri.path, "Replace")
            if len(text.encode("utf-8")) > _MAX_TITLE:
                raise _fail(StatusCode.REQUEST_ENTITY_TOO_LARGE, f"a Title holds at most {_MAX_TITLE} bytes")
            self.store.put(record.with_(title=text))
        elif prop in _PROPERTIES:
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"the {prop} property cannot be replaced")
        else:
            raise _fail(StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED, f"unknown property {prop!r}")
        return Outcome(StatusCode.OK)

    # -- Delete -------------------------------------------------------------------------

    def _delete(self, target: Target) -> Outcome:
        uri = target.uri
        if target.prop is not None:
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, "properties cannot be deleted")
        if uri.parent is None:
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, "the root cannot be deleted")
        record = self._existing(uri)
        if record.permanent:
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"{uri.path} is permanent")
        self._require(uri.path, "Delete")
        self._require_access(self.tree.definition(uri.path), Access.DELETE, uri.path, "Delete")
        self.store.delete_subtree(uri.path)
        self._changes.append((uri.path, "Delete"))
        return Outcome(StatusCode.OK)

    # -- Get --------------------------------------------------------------------------

    def _get(self, target: Target) -> Outcome:
        uri = target.uri
        record = self._existing(uri)
        self._require(uri.path, "Get")
        node_def = self.tree.definition(uri.path)
        source = Source(_target_string(target))
        if target.prop is not None:
            return Outcome(StatusCode.OK, results=(Item(source=source, data=self._property(record, target.prop)),))
        if target.list_mode is not None:
            return self._get_list(target, record)
        self._require_access(node_def, Access.GET, uri.path, "Get")
        if node_def is not None and node_def.secret:
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"{uri.path} is never readable")
        return Outcome(StatusCode.OK, results=(self._item_for(record, source),))

    def _value_of(self, record: NodeRecord) -> bytes | None:
        handler = self.tree._handler_for(parse_uri(record.path))
        if handler is not None and not record.is_interior:
            dynamic = handler.read(self.tree, record.path)
            if dynamic is not None:
                return dynamic
        return record.value

    def _item_for(self, record: NodeRecord, source: Source, *, with_data: bool = True) -> Item:
        if record.is_interior:
            names = "/".join(escape_segment(c.name) for c in self.store.children(record.path))
            meta = Meta(format="node", type=record.type) if record.type else Meta(format="node")
            return Item(source=source, meta=meta, data=names if with_data else None)
        value = self._value_of(record) if with_data else None
        meta = None
        if record.format != "chr" or (record.type or _TEXT_PLAIN) != _TEXT_PLAIN:
            meta = Meta(format=record.format, type=record.type)
        data: str | bytes | None = None
        if value is not None:
            data = value if record.format == Format.BIN else value.decode("utf-8", "replace")
        return Item(source=source, meta=meta, data=data)

    def _property(self, record: NodeRecord, prop: str) -> str:
        if prop == "ACL":
            return record.acl
        if prop == "Format":
            return record.format
        if prop == "Name":
            return record.name
        if prop == "Size":
            if record.is_interior:
                raise _fail(StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED, "interior nodes have no Size")
            node_def = self.tree.definition(record.path)
            return str(len(record.value or b"")) if not (node_def and node_def.secret) else "0"
        if prop == "Title":
            return record.title or ""
        if prop == "TStamp":
            return record.tstamp or ""
        if prop == "Type":
            return record.type or ""
        if prop == "VerNo":
            return str(record.verno)
        raise _fail(StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED, f"unknown property {prop!r}")

    def _readable_subtree(self, record: NodeRecord) -> list[NodeRecord]:
        """The nodes under ``record`` this server may Get (a node it may not read hides its sub-tree)."""
        out: list[NodeRecord] = []
        stack = [record]
        while stack:
            node = stack.pop()
            if node is not record and not self.tree.effective_acl(node.path).allows("Get", self.server_id):
                continue
            out.append(node)
            if node.is_interior:
                stack.extend(reversed(self.store.children(node.path)))
        return out

    def _secret(self, record: NodeRecord) -> bool:
        node_def = self.tree.definition(record.path)
        return node_def is not None and (node_def.secret or Access.GET not in node_def.access)

    def _get_list(self, target: Target, record: NodeRecord) -> Outcome:
        nodes = self._readable_subtree(record)
        if target.list_mode is ListMode.TNDS:
            document = tnds.from_records(
                record.path, nodes, include=target.tnds_include, exclude=target.tnds_exclude,
                value_of=lambda r: None if self._secret(r) else self._value_of(r),
            )
            data = tnds.encode_tnds(document).decode("utf-8")
            meta = Meta(format="xml", type="application/vnd.syncml.dmtnds+xml")
            return Outcome(StatusCode.OK, results=(Item(source=Source(record.path), meta=meta, data=data),))
        with_data = target.list_mode is ListMode.STRUCT_DATA
        items = tuple(
            self._item_for(node, Source(node.path), with_data=with_data and not self._secret(node))
            if not node.is_interior
            else Item(source=Source(node.path), meta=Meta(format="node", type=node.type) if node.type
                      else Meta(format="node"))
            for node in nodes
        )
        return Outcome(StatusCode.OK, results=items)

    # -- Exec ---------------------------------------------------------------------------

    def _exec(self, target: Target, command: ItemCommand, item: Item) -> Outcome:
        uri = target.uri
        if target.prop is not None:
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, "properties cannot be executed")
        self._existing(uri)
        self._require(uri.path, "Exec")
        self._require_access(self.tree.definition(uri.path), Access.EXEC, uri.path, "Exec")
        handler = self.tree._handler_for(uri)
        if handler is None:
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"{uri.path} is not executable")
        correlator = command.correlator if isinstance(command, Exec) else None
        return handler.execute(self.tree, uri.path, item.data, correlator, self.server_id)

    # -- Copy -----------------------------------------------------------------------------

    def _copy(self, target: Target, item: Item) -> Outcome:
        if item.source is None:
            raise _fail(StatusCode.INCOMPLETE_COMMAND, "Copy needs a Source (the node to copy)")
        source_uri = parse_uri(item.source.loc_uri, limits=self.tree.limits)
        source = self._existing(source_uri)
        if source.is_interior:
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, "Copy copies leaf values only")
        self._require(source_uri.path, "Get")
        if self._secret(source):
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"{source_uri.path} is never readable")
        value = self._value_of(source)
        if self.store.get(target.uri.path) is not None:
            return self._replace(target.uri, source.format, source.type, value, True)
        return self._add(target.uri, source.format, source.type, value, True)

    # -- TNDS ---------------------------------------------------------------------------

    def _tnds_write(self, target: Target, command: ItemCommand, item: Item) -> Outcome:
        """Add or Replace of a whole sub-tree as TNDS: one status, all or nothing."""
        data = item.data if item.data is not None else ""
        document = tnds.decode_tnds(data)
        uri = target.uri
        replace = isinstance(command, Replace)
        for relative, node in tnds.placed(document, uri):
            path = parse_uri(relative, limits=self.tree.limits)
            if replace and path == uri:
                continue
            fmt = (node.format or ("node" if node.has_children else "chr")).lower()
            value: bytes | None = None
            if fmt != Format.NODE:
                raw = node.value or ""
                if fmt == Format.B64:
                    fmt, value = Format.BIN, base64.b64decode("".join(raw.split()))
                else:
                    value = raw.encode("utf-8")
            if replace and path.parent == uri and path.path == uri.path:
                continue
            existing = self.store.get(path.path)
            if existing is not None and replace:
                if existing.is_interior and fmt == Format.NODE:
                    continue
                self._replace(path, fmt, node.type, value, True)
            else:
                self._add(path, fmt, node.type, value, True)
            if node.acl is not None:
                record = self._existing(path)
                self.store.put(record.with_(acl=str(parse_acl(node.acl))))
        return Outcome(StatusCode.OK)


class _Rollback(Exception):
    """Raised into an open transaction to undo it (Atomic rollback)."""


def _type_of(command: ItemCommand, item: Item) -> str | None:
    if item.meta is not None and item.meta.type:
        return item.meta.type
    if command.meta is not None and command.meta.type:
        return command.meta.type
    return None


def _target_text(item: Item) -> str:
    return item.target.loc_uri if item.target is not None else ""


def _target_string(target: Target) -> str:
    if target.prop is not None:
        return f"{target.uri.path}?prop={target.prop}"
    return target.uri.path
