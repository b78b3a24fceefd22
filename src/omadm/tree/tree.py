"""The DM tree engine: DM commands with their status codes, ACLs, properties and MOs.

``DMTree`` owns the stored nodes (``TreeStore``), the MOs mounted in it (each declared once
in ``omadm.mo``) and the handlers that MOs plug in for dynamic values and Exec. A server
acts on the tree through ``tree.session(server_id)``, a ``CommandHandler`` for
``omadm.protocol.session.ClientSession``. The device itself writes through the
``system_*`` methods, which bypass ACLs but not the tree's structure rules.

Why every check lives here: a handler (an MO's code) must never see a command the tree
would refuse, so URI syntax, existence, the MO's declarations and the ACL are all checked
before a handler runs, and every Item of a command runs in its own transaction (each Item
gets its own Status, digest 3.5): a refused or crashed Item changes nothing, and a power
cut leaves whole Items only. An Atomic is one outer transaction around its commands.

The order of the checks is fixed, so a command that breaks several rules always gets the
same code (and a server learns nothing from the ACL about nodes it cannot address):

1. the target text: 400 malformed, 414 beyond ``./DevDetail/URI`` limits, 406 unknown
   ``?list=`` form;
2. existence: 404 (Add: 418 when the node exists, 404 when its parent does not);
3. what the tree and the MO allow whoever asks: 405 (a leaf parent, an interior Replace,
   the root or a permanent node deleted, an AccessType without the command, a secret
   read, a node the MO does not define);
4. the ACL: 425 (Add: the parent's effective ACL; the others: the node's own); then
   Exec on a node without a handler is 405;
5. the data: 415 Format against the MO, 400 a value its Format cannot hold, 413 beyond
   ``max_value_size``, 420 more instances than the MO's Occurrence allows.

Decisions where the spec copy is open (see ``docs/protocol-decisions.md``):

* An interior node added by a server without Replace on the parent gets the automatic
  ACL of TND 1.2 *plus Get*: ``Add=s&Delete=s&Get=s&Replace=s``. ACLs do not merge, so
  without Get the creator could not even read what it made.
* A node that is not readable does not hide readable descendants from ``?list=``: the
  answer holds exactly the nodes the server could Get one by one.
* VerNo and TStamp follow the value (and Format/Type, which travel with it); ACL, Title
  and Name changes leave them alone. VerNo wraps from 0xFFFF to 0.
* Missing Meta means Format ``chr`` and Type ``text/plain`` (digest 3.6), except inside a
  mounted MO where a missing Format takes the declared one and a missing Type the
  declared MIME type; an explicit Format that differs from the declaration is 415.
* A leaf Added without Data holds an empty value; for Formats where empty is not a value
  (int, bool, float, date, time) it holds no value at all.
* ``?prop=Size`` of a secret is 405 (its length is part of the secret); its other
  properties are readable with Get rights. Size of an interior node is 406.
* Replace ``?prop=Title`` longer than 255 bytes is 413. Renaming (``?prop=Name``) inside
  an MO is only possible for run-time named nodes (placeholders) and only to a name the
  MO still maps to that placeholder (405 otherwise). The root's ACL can neither become
  empty nor stop granting Add to ``*`` (405).
* Copy: 404 without a source, 405 for an interior or secret source, 425 without Get on
  the source, then Add or Replace semantics on the target with their rights; a target
  that cannot take the value for non-ACL reasons (Format, value, size) is 403.
* Occurrence beyond the MO's maximum is 420 (device full for that kind of node).
* A handler's Exec outcome that is not 2xx rolls its Item back like any failure.
* TNDS (``_tnds_write``): see ``TreeSession._tnds_write``.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from omadm.mo.model import Access, Format, MODef, NodeDef, Scope, value_error
from omadm.protocol.codes import StatusCode
from omadm.protocol.messages import (
    Add,
    Alert,
    Copy,
    Delete,
    Exec,
    Get,
    Item,
    ItemCommand,
    Meta,
    Replace,
    Source,
)
from omadm.protocol.session import Outcome

from .acl import ACL, ANY, ROOT_DEFAULT_ACL, parse_acl
from .errors import TreeError
from .store import NodeRecord, TreeStore
from .uri import PROPERTY_NAMES, URI, ListMode, Target, URILimits, escape_segment, parse_target, parse_uri

if TYPE_CHECKING:
    from . import tnds

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
#: ``tnds.TNDS_XML_TYPE`` and ``tnds.TNDS_WBXML_TYPE``, written out (tests/agent/test_idle_memory.py
#: checks that they agree) so that the TNDS codec loads only when a TNDS object is read or written,
#: not with every tree (a device agent keeps what it imports resident for months; bench/agent_rss.py).
TNDS_TYPES = frozenset({"application/vnd.syncml.dmtnds+xml", "application/vnd.syncml.dmtnds+wbxml"})
_TEXT_PLAIN = "text/plain"
_MAX_TITLE = 255
_FORMATS = frozenset(f.value for f in Format)
#: Formats for which an empty text is not a value: a leaf without Data holds none.
_NO_EMPTY_VALUE = frozenset({Format.INT, Format.BOOL, Format.FLOAT, Format.DATE, Format.TIME, Format.NULL})
#: Errors of the data a Copy target refused: 403 for Copy (digest 3.4, "non-ACL reasons").
_DATA_ERRORS = frozenset(
    {StatusCode.BAD_REQUEST, StatusCode.UNSUPPORTED_MEDIA_TYPE, StatusCode.REQUEST_ENTITY_TOO_LARGE}
)


def utc_now() -> datetime:
    """The default clock (UTC); tests and the agent inject their own."""
    return datetime.now(UTC)


def _fail(status: int, message: str) -> TreeError:
    return TreeError(message, int(status))


class NodeHandler:
    """What an MO plugs into the tree for a node pattern; override what you need.

    Patterns are canonical paths where ``*`` stands for one segment, e.g.
    ``./SCOMO/Download/*/Operations/Install``. Handlers only ever see commands that
    passed every check of the tree, inside the command's transaction.
    """

    def read(self, tree: DMTree, path: str) -> bytes | None:
        """A dynamic value for a leaf (None: use the stored value)."""
        return None

    def execute(
        self, tree: DMTree, path: str, data: str | bytes | None, correlator: str | None, server_id: str
    ) -> Outcome:
        """Run an Exec on ``path``; the default refuses (405)."""
        return Outcome(StatusCode.COMMAND_NOT_ALLOWED)

    def check(self, tree: DMTree, path: str, command: str) -> None:
        """Called inside a server's Add, Replace or Delete at or below the pattern, before it
        commits: raise :class:`TreeError` (with the status to answer) to refuse it.

        For rules the DDF cannot say, such as a value unique across instances; the tree
        already holds the new value when this runs, and a refusal rolls it back.
        """

    def changed(self, tree: DMTree, path: str, command: str) -> None:
        """Called after a server's Add, Replace or Delete at or below the pattern committed."""


@dataclass(frozen=True, slots=True)
class _Mount:
    mo: MODef
    uri: URI

    @property
    def path(self) -> str:
        return self.uri.path


def _match(pattern: tuple[str, ...], segments: tuple[str, ...]) -> bool:
    return len(pattern) == len(segments) and all(
        p in ("*", s) for p, s in zip(pattern, segments, strict=True)
    )


def _is_fixed_leaf(mo: MODef, relative: str) -> bool:
    """Whether ``relative`` names a leaf of ``mo`` through fixed (not placeholder) names."""
    node: NodeDef | None = mo.root
    for segment in relative.split("/"):
        assert node is not None
        node = next((c for c in node.children if not c.is_placeholder and c.name == segment), None)
        if node is None:
            return False
    return node is not None and node.is_leaf


def _bump(verno: int) -> int:
    """VerNo is a uint16 that wraps from 0xFFFF to 0 (digest 7.4)."""
    return (verno + 1) & 0xFFFF


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
                store.put(
                    NodeRecord(
                        path=ROOT,
                        parent=None,
                        name=".",
                        format=Format.NODE.value,
                        acl=str(ROOT_DEFAULT_ACL),
                        permanent=True,
                        tstamp=self._stamp(),
                    )
                )

    # -- setting up ---------------------------------------------------------------------

    def mount(
        self, mo: MODef, path: str | None = None, values: Mapping[str, str | bytes] | None = None
    ) -> str:
        """Put ``mo`` in the tree at ``path`` (its default path): its permanent nodes with values.

        ``values`` maps paths relative to the MO root (``"DevId"``, ``"URI/MaxDepth"``) to
        values; fixed nodes that must occur are created even without a value. Existing
        nodes keep their values (mounting again after a restart changes nothing but what
        ``values`` says). Returns the canonical path of the MO root. A key that names no
        declared leaf is a ``ValueError``: a typo would otherwise silently lose a value.
        """
        root = parse_uri(path or mo.default_path)
        given = dict(values or {})
        for key in given:
            if not _is_fixed_leaf(mo, key):
                raise ValueError(
                    f"{mo.name} declares no fixed leaf {key!r} (placeholders take no mount values)"
                )
        self._mounts = [m for m in self._mounts if m.uri != root]
        self._mounts.append(_Mount(mo, root))
        self._mounts.sort(key=lambda m: -len(m.uri.segments))
        with self.store.transaction():
            self._ensure_interiors(root.parent, permanent=True)
            self._build(mo.root, root, mo, given, "")
        return root.path

    def _build(
        self, node_def: NodeDef, uri: URI, mo: MODef, values: dict[str, str | bytes], relative: str
    ) -> None:
        is_root = relative == ""
        existing = self.store.get(uri.path)
        if existing is None:
            if node_def.is_interior:
                typ = mo.urn if is_root else node_def.ddf_name
            else:
                typ = node_def.mime or _TEXT_PLAIN
            record = NodeRecord(
                path=uri.path,
                parent=uri.parent.path if uri.parent else None,
                name=uri.name,
                format=node_def.format.value,
                type=typ,
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
                self.store.put(existing.with_(value=value, tstamp=self._stamp(), verno=_bump(existing.verno)))
        for child in node_def.children:
            if child.is_placeholder:
                continue
            child_relative = f"{relative}/{child.name}" if relative else child.name
            wanted = child.occurrence.minimum >= 1 or any(
                k == child_relative or k.startswith(child_relative + "/") for k in values
            )
            if wanted:
                self._build(child, uri.child(child.name), mo, values, child_relative)

    def register_handler(self, pattern: str, handler: NodeHandler) -> None:
        """Route reads, Execs and change notices for nodes matching ``pattern`` to ``handler``.

        ``*`` as a whole segment matches any one name; the first registered match wins.
        """
        self._handlers.append((parse_uri(pattern).segments, handler))

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

    def _mount_of(self, uri: URI) -> _Mount | None:
        for mount in self._mounts:  # deepest mount first
            if mount.uri.contains(uri):
                return mount
        return None

    def definition(self, path: str | URI) -> NodeDef | None:
        """The MO declaration of the node at ``path``, or None outside every mounted MO.

        Placeholders resolve: ``./DMAcc/acc1/AppAddr/x/Addr`` gives the ``Addr`` leaf.
        Below an open interior node (``Ext``) nothing is declared (None).
        """
        uri = path if isinstance(path, URI) else parse_uri(path)
        mount = self._mount_of(uri)
        if mount is None:
            return None
        return mount.mo.resolve("/".join(uri.segments[len(mount.uri.segments) :]))

    def in_mo(self, path: str | URI) -> bool:
        """Whether ``path`` lies in (or is the root of) a mounted MO."""
        return self._mount_of(path if isinstance(path, URI) else parse_uri(path)) is not None

    def child_definition(self, parent: str | URI, name: str) -> tuple[bool, NodeDef | None]:
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
        """``./DevDetail/URI/*`` when present (0 or anything unreadable = unlimited)."""

        def read(name: str) -> int:
            record = self.store.get(f"./DevDetail/URI/{name}")
            try:
                value = int(record.value or b"0") if record is not None else 0
            except ValueError:
                return 0
            return value if 0 <= value <= 0xFFFF else 0

        return URILimits(
            max_depth=read("MaxDepth"), max_tot_len=read("MaxTotLen"), max_seg_len=read("MaxSegLen")
        )

    # -- the device's own access (no ACL) ----------------------------------------------

    def system_get(self, path: str) -> NodeRecord | None:
        """The stored node at ``path`` (None if absent)."""
        return self.store.get(parse_uri(path).path)

    def system_value(self, path: str) -> str | bytes | None:
        """A leaf's value as the device sees it (secrets included): text, or bytes for bin."""
        record = self.system_get(path)
        if record is None or record.value is None:
            return None
        return record.value if record.format == Format.BIN else record.value.decode("utf-8", "replace")

    def system_set(
        self,
        path: str,
        value: str | bytes | None,
        *,
        format: str = "chr",
        type: str | None = None,
        create: bool = True,
    ) -> None:
        """Write a leaf (creating it and missing interior parents when ``create``).

        No ACL applies, but the value must suit its Format (400) and the node must not be
        interior (405); a missing node without ``create`` is 404.
        """
        uri = parse_uri(path)
        if uri.parent is None:
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, "the root is an interior node")
        fmt = Format(format.lower()).value
        with self.store.transaction():
            existing = self.store.get(uri.path)
            if existing is None:
                if not create:
                    raise _fail(StatusCode.NOT_FOUND, f"{uri.path} does not exist")
                self._ensure_interiors(uri.parent)
                record = NodeRecord(
                    path=uri.path, parent=uri.parent.path, name=uri.name, format=fmt, type=type or _TEXT_PLAIN
                )
            elif existing.is_interior:
                raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"{uri.path} is an interior node")
            else:
                record = existing.with_(verno=_bump(existing.verno))
            encoded = None if value is None else self._encode_value(fmt, value)
            self.store.put(
                record.with_(format=fmt, type=type or record.type, value=encoded, tstamp=self._stamp())
            )

    def system_set_acl(self, path: str, acl: str) -> None:
        """Set the ACL of an existing node (the device's own policy, e.g. at start-up)."""
        uri = parse_uri(path)
        acl_text = str(parse_acl(acl))
        with self.store.transaction():
            existing = self.store.get(uri.path)
            if existing is None:
                raise _fail(StatusCode.NOT_FOUND, f"{uri.path} does not exist")
            if existing.acl != acl_text:
                self.store.put(existing.with_(acl=acl_text, tstamp=self._stamp()))

    def system_add_interior(self, path: str, *, type: str | None = None, acl: str = "") -> None:
        """Create an interior node (and missing parents); an existing one is left as it is."""
        uri = parse_uri(path)
        acl_text = str(parse_acl(acl))
        with self.store.transaction():
            if uri.parent is not None:
                self._ensure_interiors(uri.parent)
            existing = self.store.get(uri.path)
            if existing is None:
                self.store.put(
                    NodeRecord(
                        path=uri.path,
                        parent=uri.parent.path if uri.parent else None,
                        name=uri.name,
                        format=Format.NODE.value,
                        type=type,
                        acl=acl_text,
                        tstamp=self._stamp(),
                    )
                )
            elif not existing.is_interior:
                raise _fail(StatusCode.ALREADY_EXISTS, f"{uri.path} exists and is a leaf")

    def system_delete(self, path: str) -> None:
        """Delete a node and its sub-tree (permanent or not); the root cannot go."""
        uri = parse_uri(path)
        if uri.is_root:
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, "the root cannot be deleted")
        with self.store.transaction():
            self.store.delete_subtree(uri.path)

    def _ensure_interiors(self, uri: URI | None, *, permanent: bool = False) -> None:
        """Create the missing interior nodes down to ``uri`` (empty ACLs: they inherit)."""
        chain: list[URI] = []
        while uri is not None:
            record = self.store.get(uri.path)
            if record is not None:
                if not record.is_interior:
                    raise _fail(
                        StatusCode.COMMAND_NOT_ALLOWED, f"{uri.path} is a leaf and cannot have children"
                    )
                break
            chain.append(uri)
            uri = uri.parent
        for missing in reversed(chain):
            assert missing.parent is not None
            self.store.put(
                NodeRecord(
                    path=missing.path,
                    parent=missing.parent.path,
                    name=missing.name,
                    format=Format.NODE.value,
                    tstamp=self._stamp(),
                    permanent=permanent,
                )
            )

    def session(self, server_id: str) -> TreeSession:
        """The tree as seen by the server ``server_id`` (a DMAcc ServerID) for one DM session."""
        return TreeSession(self, server_id)

    # -- values ----------------------------------------------------------------------

    def _stamp(self) -> str:
        """TStamp text: UTC, ISO 8601 basic (digest 7.4: ``20010711T163817Z``)."""
        return self.clock().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")

    def _encode_value(self, fmt: str, value: str | bytes) -> bytes:
        """The stored bytes of a leaf value; 413 beyond ``max_value_size``, 400 for a value
        its Format cannot hold (binary values are bytes and never checked)."""
        raw = value if isinstance(value, bytes) else value.encode("utf-8")
        if len(raw) > self.max_value_size:
            raise _fail(
                StatusCode.REQUEST_ENTITY_TOO_LARGE,
                f"value of {len(raw)} bytes exceeds the tree's limit of {self.max_value_size}",
            )
        if fmt != Format.BIN:
            _check_format(fmt, raw.decode("utf-8", "replace"))
        return raw

    def effective_acl(self, path: str | URI) -> ACL:
        """The ACL that governs ``path``: its own, or the nearest non-empty one above it.

        No per-command merging (digest 7.5); the root default if every ACL is empty.
        """
        uri: URI | None = path if isinstance(path, URI) else parse_uri(path)
        while uri is not None:
            record = self.store.get(uri.path)
            if record is not None and record.acl:
                return parse_acl(record.acl)
            uri = uri.parent
        return ROOT_DEFAULT_ACL


def _check_format(fmt: str, text: str) -> None:
    """Refuse a value that its Format cannot hold (section 7.3)."""
    try:
        problem = value_error(Format(fmt), text)
    except ValueError:
        problem = f"unknown Format {fmt!r}"
    if problem is not None:
        raise _fail(StatusCode.BAD_REQUEST, problem)


# ---------------------------------------------------------------------------------------


class _Refused(Exception):
    """Raised inside an Item's transaction to undo it while answering ``outcome``."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.code)
        self.outcome = outcome


class _Rollback(Exception):
    """Raised into the Atomic's transaction to undo it."""


@dataclass(frozen=True, slots=True)
class _Incoming:
    """A value as a command delivers it: Format to store, Type, bytes, whether Format was given."""

    format: str
    type: str | None
    value: bytes | None
    explicit: bool


class TreeSession:
    """The tree as one server sees it during one session: a ``CommandHandler``."""

    def __init__(self, tree: DMTree, server_id: str) -> None:
        self.tree = tree
        self.store = tree.store
        self.server_id = server_id
        self._atomic: AbstractContextManager[None] | None = None
        self._changes: list[tuple[str, str]] = []

    # CommandHandler ------------------------------------------------------------------

    def execute(self, command: ItemCommand | Alert) -> list[Outcome]:
        """One Outcome per Item, each Item in its own transaction."""
        if isinstance(command, Alert):
            # This agent has no user interface: UI alerts are answered 406 (digest 4.1).
            return [Outcome(StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED)]
        if not isinstance(command, Add | Replace | Delete | Copy | Get | Exec):
            return [Outcome(StatusCode.COMMAND_NOT_IMPLEMENTED)]
        if not command.items:
            return [Outcome(StatusCode.INCOMPLETE_COMMAND)]
        return [self._one(command, item) for item in command.items]

    def begin_atomic(self) -> None:
        """Open the Atomic's outer transaction; every command inside is a savepoint."""
        if self._atomic is not None:
            raise RuntimeError("an Atomic is already open (nested Atomic is refused by the session)")
        cm = self.store.transaction()
        cm.__enter__()
        self._atomic = cm

    def end_atomic(self, commit: bool) -> None:
        """Commit the Atomic, or undo every change since ``begin_atomic`` (VerNo, TStamp too).

        Handlers hear about the changes only once they are committed.
        """
        cm, self._atomic = self._atomic, None
        if cm is None:
            return
        if commit:
            cm.__exit__(None, None, None)
            self._flush_changes()
        else:
            cm.__exit__(_Rollback, _Rollback(), None)
            self._changes.clear()

    # ---------------------------------------------------------------------------------

    def _one(self, command: ItemCommand, item: Item) -> Outcome:
        target_ref = item.target.loc_uri if item.target is not None else None
        mark = len(self._changes)
        try:
            with self.store.transaction():
                outcome = self._dispatch(command, item)
                if not 200 <= outcome.code < 300:
                    raise _Refused(outcome)
                for path, what in self._changes[mark:]:
                    for handler in self.tree._handlers_above(parse_uri(path)):
                        handler.check(self.tree, path, what)
        except _Refused as refused:
            del self._changes[mark:]
            outcome = refused.outcome
        except TreeError as exc:
            del self._changes[mark:]
            log.info("%s %s refused with %s: %s", command.name, target_ref, exc.status, exc)
            return Outcome(exc.status, target_ref=target_ref)
        except Exception:  # a bug or a broken handler must not end the session
            del self._changes[mark:]
            log.exception("%s %s failed", command.name, target_ref)
            return Outcome(StatusCode.COMMAND_FAILED, target_ref=target_ref)
        if self._atomic is None:
            self._flush_changes()
        if outcome.target_ref is None and target_ref is not None:
            outcome = Outcome(outcome.code, target_ref, outcome.results, outcome.results_meta, outcome.items)
        return outcome

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
            raise _fail(StatusCode.INCOMPLETE_COMMAND, f"{command.name} item without a Target")
        target = parse_target(item.target.loc_uri, limits=self.tree.limits)
        if isinstance(command, Get):
            return self._get(target)
        if target.list_mode is not None:
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"?list= is only for Get, not {command.name}")
        if target.prop is not None and not isinstance(command, Replace):
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"{command.name} does not apply to a property")
        if isinstance(command, Exec):
            return self._exec(target.uri, command, item)
        if isinstance(command, Delete):
            return self._delete(target.uri)
        if isinstance(command, Copy):
            return self._copy(target.uri, item)
        if target.prop is not None:
            return self._replace_property(target, item)
        if _type_of(command, item) in TNDS_TYPES:
            return self._tnds_write(target.uri, isinstance(command, Replace), item)
        incoming = self._incoming(command, item)
        if isinstance(command, Replace):
            return self._replace(target.uri, incoming)
        return self._add(target.uri, incoming)

    # -- access checks ----------------------------------------------------------------

    def _allowed(self, uri: URI, command: str) -> bool:
        return self.tree.effective_acl(uri).allows(command, self.server_id)

    def _require(self, uri: URI, command: str) -> None:
        if not self._allowed(uri, command):
            raise _fail(
                StatusCode.PERMISSION_DENIED,
                f"the ACL of {uri.path} does not grant {command} to {self.server_id}",
            )

    @staticmethod
    def _require_access(node_def: NodeDef | None, access: Access, uri: URI, command: str) -> None:
        if node_def is not None and access not in node_def.access:
            raise _fail(
                StatusCode.COMMAND_NOT_ALLOWED, f"{command} is not allowed on {uri.path} (its MO forbids it)"
            )

    def _existing(self, uri: URI) -> NodeRecord:
        record = self.store.get(uri.path)
        if record is None:
            raise _fail(StatusCode.NOT_FOUND, f"{uri.path} does not exist")
        return record

    def _secret(self, uri: URI) -> bool:
        """A leaf no server may read: declared secret, or an AccessType without Get."""
        node_def = self.tree.definition(uri)
        return (
            node_def is not None
            and node_def.is_leaf
            and (node_def.secret or Access.GET not in node_def.access)
        )

    def _may_set_acl(self, uri: URI, interior: bool) -> bool:
        """Digest 7.5: an interior node's ACL needs Replace on the node or its parent; a
        leaf's needs Replace on the parent (its own Replace covers value and properties)."""
        parent = uri.parent
        on_parent = parent is not None and self._allowed(parent, "Replace")
        return on_parent or (interior and self._allowed(uri, "Replace"))

    # -- incoming data ----------------------------------------------------------------

    def _incoming(self, command: ItemCommand, item: Item) -> _Incoming:
        given = (item.meta.format if item.meta and item.meta.format else None) or (
            command.meta.format if command.meta and command.meta.format else None
        )
        fmt = (given or Format.CHR.value).strip().lower()
        typ = _type_of(command, item)
        if fmt not in _FORMATS:
            raise _fail(StatusCode.UNSUPPORTED_MEDIA_TYPE, f"unknown Format {fmt!r}")
        if fmt == Format.NODE:
            return _Incoming(fmt, typ, None, True)
        data = item.data
        if data is None:
            return _Incoming(fmt, typ, None, given is not None)
        if fmt == Format.B64:
            return _Incoming(Format.BIN.value, typ, _b64decode(data), True)
        raw = data if isinstance(data, bytes) else data.encode("utf-8")
        if fmt != Format.BIN:
            raw = raw.rstrip(b"\x00")  # pitfall 35: a trailing NUL counted in the length
        return _Incoming(fmt, typ, raw, given is not None)

    def _settle_format(self, node_def: NodeDef | None, incoming: _Incoming, uri: URI) -> str:
        """The Format to store, checked against the MO's declaration (415 if it differs)."""
        if node_def is None:
            return incoming.format
        declared = node_def.format.value
        if incoming.format == declared:
            return declared
        if not incoming.explicit and declared != Format.NODE:
            return declared  # no Meta/Format: the declared Format, if the value fits it
        raise _fail(
            StatusCode.UNSUPPORTED_MEDIA_TYPE, f"{uri.path} is declared {declared}, not {incoming.format}"
        )

    @staticmethod
    def _check_values(node_def: NodeDef | None, value: bytes | None, uri: URI) -> None:
        if node_def is not None and node_def.values and value is not None:
            text = value.decode("utf-8", "replace")
            if text not in node_def.values:
                raise _fail(
                    StatusCode.BAD_REQUEST,
                    f"{uri.path} takes one of {', '.join(node_def.values)}, not {text!r}",
                )

    def _stored_value(self, fmt: str, raw: bytes | None) -> bytes | None:
        """What a leaf of Format ``fmt`` stores for ``raw`` (None: no Data was given).

        Without Data a leaf holds an empty value, except for Formats where empty is not a
        value (int, bool, float, date, time, null): those hold none.
        """
        if fmt == Format.NODE:
            return None
        if raw is None:
            return None if fmt in _NO_EMPTY_VALUE else b""
        return self.tree._encode_value(fmt, raw)

    @staticmethod
    def _default_type(node_def: NodeDef | None, fmt: str) -> str | None:
        if fmt == Format.NODE:
            return node_def.ddf_name if node_def is not None else None
        return node_def.mime if node_def is not None and node_def.mime else _TEXT_PLAIN

    # -- Add --------------------------------------------------------------------------

    def _add(self, uri: URI, incoming: _Incoming) -> Outcome:
        if self.store.get(uri.path) is not None:
            raise _fail(StatusCode.ALREADY_EXISTS, f"{uri.path} already exists")
        parent_uri = uri.parent
        assert parent_uri is not None  # the root always exists
        parent = self.store.get(parent_uri.path)
        if parent is None:
            raise _fail(StatusCode.NOT_FOUND, f"the parent {parent_uri.path} does not exist")
        if not parent.is_interior:
            raise _fail(
                StatusCode.COMMAND_NOT_ALLOWED, f"{parent_uri.path} is a leaf and cannot have children"
            )
        allowed, node_def = self.tree.child_definition(parent_uri, uri.name)
        if not allowed:
            raise _fail(
                StatusCode.COMMAND_NOT_ALLOWED, f"the MO defines no node {uri.name!r} under {parent_uri.path}"
            )
        if node_def is not None and node_def.scope is Scope.PERMANENT:
            raise _fail(
                StatusCode.COMMAND_NOT_ALLOWED, f"{uri.path} is a permanent node: only the device creates it"
            )
        self._require_access(node_def, Access.ADD, uri, "Add")
        self._require(parent_uri, "Add")
        if node_def is not None:
            self._check_occurrence(node_def, parent_uri)
        fmt = self._settle_format(node_def, incoming, uri)
        value = self._stored_value(fmt, incoming.value)
        self._check_values(node_def, value, uri)
        acl = ""
        if fmt == Format.NODE and not self._allowed(parent_uri, "Replace"):
            # TND 1.2: an interior node added without Replace on the parent gets rights for its
            # creator. We grant Get too: ACLs do not merge, so without it nobody could read it.
            acl = str(ACL.from_entries({c: [self.server_id] for c in ("Add", "Delete", "Get", "Replace")}))
        self.store.put(
            NodeRecord(
                path=uri.path,
                parent=parent_uri.path,
                name=uri.name,
                format=fmt,
                type=incoming.type or self._default_type(node_def, fmt),
                value=value,
                acl=acl,
                tstamp=self.tree._stamp(),
                permanent=False,
            )
        )
        self._changes.append((uri.path, "Add"))
        return Outcome(StatusCode.OK)

    def _check_occurrence(self, node_def: NodeDef, parent: URI) -> None:
        """ZeroOrN / OneOrN: at most N instances of a placeholder under one parent (420)."""
        maximum = node_def.occurrence.maximum
        if maximum is None or not node_def.is_placeholder:
            return  # a fixed name exists at most once anyway (418)
        parent_def = self.tree.definition(parent)
        assert parent_def is not None
        taken = sum(1 for c in self.store.children(parent.path) if parent_def.child(c.name) is node_def)
        if taken >= maximum:
            raise _fail(
                StatusCode.DEVICE_FULL, f"{parent.path} holds at most {maximum} {node_def.name} nodes"
            )

    # -- Replace ------------------------------------------------------------------------

    def _replace(self, uri: URI, incoming: _Incoming) -> Outcome:
        record = self._existing(uri)
        if record.is_interior:
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"{uri.path} is an interior node: it has no value")
        node_def = self.tree.definition(uri)
        self._require_access(node_def, Access.REPLACE, uri, "Replace")
        self._require(uri, "Replace")
        fmt = self._settle_format(node_def, incoming, uri)
        if fmt == Format.NODE:
            raise _fail(
                StatusCode.UNSUPPORTED_MEDIA_TYPE, f"{uri.path} is a leaf; Format node is not a value"
            )
        value = self._stored_value(fmt, incoming.value)
        self._check_values(node_def, value, uri)
        self.store.put(
            record.with_(
                format=fmt,
                type=incoming.type or self._default_type(node_def, fmt),
                value=value,
                tstamp=self.tree._stamp(),
                verno=_bump(record.verno),
            )
        )
        self._changes.append((uri.path, "Replace"))
        return Outcome(StatusCode.OK)

    def _replace_property(self, target: Target, item: Item) -> Outcome:
        uri, prop = target.uri, target.prop or ""
        record = self._existing(uri)
        data = item.data
        text = (data.decode("utf-8", "replace") if isinstance(data, bytes) else (data or "")).rstrip("\x00")
        if prop == "ACL":
            self._set_acl(uri, record, parse_acl(text))
        elif prop == "Name":
            self._rename(uri, record, text)
        elif prop == "Title":
            self._require(uri, "Replace")
            self._set_title(record, text)
        elif prop in PROPERTY_NAMES:
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"the {prop} property cannot be replaced")
        else:
            raise _fail(StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED, f"unknown property {prop!r}")
        return Outcome(StatusCode.OK)

    def _set_acl(self, uri: URI, record: NodeRecord, acl: ACL) -> None:
        if not self._may_set_acl(uri, record.is_interior):
            raise _fail(
                StatusCode.PERMISSION_DENIED, f"{self.server_id} may not change the ACL of {uri.path}"
            )
        if uri.is_root and (acl.is_empty or not acl.allows("Add", ANY)):
            # Digest 7.5: the root always has an ACL, and Add on the root should stay "*".
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, "the root's ACL must stay non-empty and keep Add=*")
        self.store.put(record.with_(acl=str(acl)))

    def _set_title(self, record: NodeRecord, title: str) -> None:
        if len(title.encode("utf-8")) > _MAX_TITLE:
            raise _fail(StatusCode.REQUEST_ENTITY_TOO_LARGE, f"a Title holds at most {_MAX_TITLE} bytes")
        self.store.put(record.with_(title=title))

    def _rename(self, uri: URI, record: NodeRecord, name: str) -> None:
        parent = uri.parent
        if parent is None or record.permanent:
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"{uri.path} is permanent and cannot be renamed")
        try:
            new_uri = parent.child(name)
        except TreeError as exc:
            raise _fail(StatusCode.BAD_REQUEST, f"{name!r} is not a node name: {exc}") from None
        node_def = self.tree.definition(uri)
        if node_def is not None:
            if not node_def.is_placeholder:
                raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"the MO fixes the name of {uri.path}")
            self._require_access(node_def, Access.REPLACE, uri, "Replace")
            parent_def = self.tree.definition(parent)
            if parent_def is None or parent_def.child(name) is not node_def:
                raise _fail(
                    StatusCode.COMMAND_NOT_ALLOWED, f"the MO reserves the name {name!r} under {parent.path}"
                )
        self._require(uri, "Replace")
        self.tree.limits.check(new_uri)
        if new_uri == uri:
            return
        if self.store.get(new_uri.path) is not None:
            raise _fail(StatusCode.ALREADY_EXISTS, f"{new_uri.path} already exists")
        if any(r.permanent for r in self.store.subtree(uri.path)):
            raise _fail(
                StatusCode.COMMAND_NOT_ALLOWED, f"{uri.path} holds permanent nodes and cannot be renamed"
            )
        self.store.rename_subtree(uri.path, new_uri.path, name)
        self._changes.append((uri.path, "Delete"))
        self._changes.append((new_uri.path, "Add"))

    # -- Delete -------------------------------------------------------------------------

    def _delete(self, uri: URI) -> Outcome:
        if uri.is_root:
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, "the root cannot be deleted")
        self._delete_node(uri, self._existing(uri))
        return Outcome(StatusCode.OK)

    def _delete_node(self, uri: URI, record: NodeRecord) -> None:
        """Delete ``uri`` and its sub-tree with every check of a Delete command."""
        if record.permanent:
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"{uri.path} is permanent")
        self._require_access(self.tree.definition(uri), Access.DELETE, uri, "Delete")
        if record.is_interior and any(r.permanent for r in self.store.subtree(uri.path)):
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"{uri.path} holds permanent nodes")
        self._require(uri, "Delete")
        self.store.delete_subtree(uri.path)
        self._changes.append((uri.path, "Delete"))

    # -- Get --------------------------------------------------------------------------

    def _get(self, target: Target) -> Outcome:
        uri = target.uri
        record = self._existing(uri)
        if target.prop is not None:
            if target.prop == "Size" and self._secret(uri):
                raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"the size of {uri.path} is part of a secret")
            self._require(uri, "Get")
            source = Source(f"{uri.path}?prop={target.prop}")
            return Outcome(
                StatusCode.OK, results=(Item(source=source, data=self._property(record, target.prop)),)
            )
        if target.list_mode is None:
            self._require_access(self.tree.definition(uri), Access.GET, uri, "Get")
            if self._secret(uri):
                raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"{uri.path} is never readable")
        self._require(uri, "Get")
        if target.list_mode is not None:
            return self._get_list(target, record)
        return Outcome(StatusCode.OK, results=(self._item_for(record),))

    def _value_of(self, record: NodeRecord) -> bytes | None:
        handler = self.tree._handler_for(parse_uri(record.path))
        if handler is not None and not record.is_interior:
            dynamic = handler.read(self.tree, record.path)
            if dynamic is not None:
                return dynamic
        return record.value

    def _item_for(self, record: NodeRecord, *, with_data: bool = True) -> Item:
        """A Results Item: interior nodes list their children (``/``-separated, escaped;
        Meta Format ``node``); leaves carry Meta only when not ``chr``/``text/plain``."""
        source = Source(record.path)
        if record.is_interior:
            node_meta = Meta(format=Format.NODE.value, type=record.type)
            if not with_data:
                return Item(source=source, meta=node_meta)
            names = "/".join(escape_segment(c.name) for c in self.store.children(record.path))
            return Item(source=source, meta=node_meta, data=names)
        meta: Meta | None = None
        if record.format != Format.CHR or (record.type or _TEXT_PLAIN) != _TEXT_PLAIN:
            meta = Meta(format=record.format, type=record.type)
        value = self._value_of(record) if with_data else None
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
            return str(len(self._value_of(record) or b""))
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
        """``record`` and every node below it this server may Get (parents first)."""
        return [
            record,
            *(n for n in self.store.subtree(record.path)[1:] if self._allowed(parse_uri(n.path), "Get")),
        ]

    def _get_list(self, target: Target, record: NodeRecord) -> Outcome:
        nodes = self._readable_subtree(record)
        if target.list_mode is ListMode.TNDS:
            from . import tnds  # noqa: PLC0415 - see TNDS_TYPES

            document = tnds.from_records(
                record.path,
                nodes,
                include=target.tnds_include,
                exclude=target.tnds_exclude,
                value_of=lambda r: None if self._secret(parse_uri(r.path)) else self._value_of(r),
            )
            data = tnds.encode_tnds(document).decode("utf-8")
            meta = Meta(format="xml", type=tnds.TNDS_XML_TYPE)
            return Outcome(StatusCode.OK, results=(Item(source=Source(record.path), meta=meta, data=data),))
        with_data = target.list_mode is ListMode.STRUCT_DATA
        items = tuple(
            self._item_for(
                n, with_data=with_data and not n.is_interior and not self._secret(parse_uri(n.path))
            )
            for n in nodes
        )
        return Outcome(StatusCode.OK, results=items)

    # -- Exec ---------------------------------------------------------------------------

    def _exec(self, uri: URI, command: Exec, item: Item) -> Outcome:
        self._existing(uri)
        self._require_access(self.tree.definition(uri), Access.EXEC, uri, "Exec")
        # The ACL comes before the handler lookup: which nodes have code behind them is the
        # device's implementation, not the MO's declaration, and only a server allowed to
        # Exec the node learns it.
        self._require(uri, "Exec")
        handler = self.tree._handler_for(uri)
        if handler is None:
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"{uri.path} is not executable")
        return handler.execute(self.tree, uri.path, item.data, command.correlator, self.server_id)

    # -- Copy -----------------------------------------------------------------------------

    def _copy(self, target: URI, item: Item) -> Outcome:
        if item.source is None:
            raise _fail(StatusCode.INCOMPLETE_COMMAND, "Copy needs a Source (the node to copy)")
        source_uri = parse_uri(item.source.loc_uri, limits=self.tree.limits)
        source = self._existing(source_uri)
        if source.is_interior:
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, "Copy copies leaf values only")
        if self._secret(source_uri):
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"{source_uri.path} is never readable")
        self._require(source_uri, "Get")
        incoming = _Incoming(source.format, source.type, self._value_of(source), True)
        try:
            if self.store.get(target.path) is not None:
                return self._replace(target, incoming)
            return self._add(target, incoming)
        except TreeError as exc:
            if exc.status in _DATA_ERRORS:
                raise _fail(
                    StatusCode.FORBIDDEN, f"{target.path} cannot take the value: {exc.message}"
                ) from None
            raise

    # -- TNDS ---------------------------------------------------------------------------

    def _tnds_write(self, target: URI, replace: bool, item: Item) -> Outcome:
        """Add or Replace of a whole sub-tree as one TNDS object: one status, all or nothing.

        Where the nodes go (digest 7.7: paths are relative to the Target; an empty
        NodeName takes the Target's name). The *base* is the node the object describes:

        * a top-level node with an empty NodeName, or the only top-level node when its
          name equals the Target's last segment (and every other node lies below it),
          *is* the Target: the base is the Target itself, created by Add (parent must
          exist, 418 if the Target exists) or updated by Replace (404 if missing). This
          is what ``Get <uri>?list=TNDS`` returns, so it can be sent back to ``<uri>``;
        * otherwise the top-level nodes are children of the Target (the spec's example
          adds ``E-Mail`` under Target ``OperatorX``): the Target must exist and be
          interior (404, 405). To create ``./A/A`` from a node named ``A``, target
          ``./A/A`` itself.

        Add creates every node with the checks of a plain Add (418 for any node that
        exists). Replace makes the sub-tree under the base equal to the object: nodes the
        object lacks are deleted (Delete checks), new ones added (Add checks), leaves with
        a Value replaced when the value, Format or Type differs (Replace checks); a leaf
        without ``<Value>`` (a secret left out of ``?list=TNDS``) keeps its value. A node
        that changes between leaf and interior is deleted and added again. The base itself
        needs Replace rights (an interior base is not a value Replace, so 405 does not
        apply to it). RTProperties: Format and Type go with the value, ACL is applied when
        the server could set it with ``?prop=ACL`` (425 otherwise), Title when it could
        Replace the node (any new node: its creator); Name, Size, TStamp and VerNo are the
        device's and ignored. Any failure rolls the whole object back; its code is the
        command's one status.
        """
        from . import tnds  # noqa: PLC0415 - see TNDS_TYPES

        data = item.data if item.data is not None else ""
        document = tnds.decode_tnds(data)
        if not document.nodes:
            raise _fail(StatusCode.BAD_REQUEST, "the TNDS object holds no node")
        base_node, placements = _tnds_placements(document, target)
        limits = self.tree.limits
        for uri, _ in placements:
            limits.check(uri)
        if replace:
            self._tnds_replace(target, base_node, placements)
        else:
            self._tnds_add(target, base_node, placements)
        return Outcome(StatusCode.OK)

    def _tnds_add(
        self, base: URI, base_node: tnds.TNDSNode | None, placements: list[tuple[URI, tnds.TNDSNode]]
    ) -> None:
        if base_node is None:
            record = self._existing(base)
            if not record.is_interior:
                raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"{base.path} is a leaf and cannot have children")
        elif base.is_root:
            raise _fail(StatusCode.ALREADY_EXISTS, "the root always exists")
        created: set[URI] = set()
        for uri, node in placements:
            fmt, value = self._tnds_value(uri, node)
            self._add(uri, _Incoming(fmt, node.type, value, node.format is not None))
            created.add(uri)
            self._tnds_properties(uri, node, created)

    def _tnds_replace(
        self, base: URI, base_node: tnds.TNDSNode | None, placements: list[tuple[URI, tnds.TNDSNode]]
    ) -> None:
        record = self._existing(base)
        wanted = {uri: node for uri, node in placements}
        if base_node is not None and not record.is_interior:
            # The object is one leaf that is the Target: a value Replace with properties.
            fmt, value = self._tnds_value(base, base_node)
            if fmt == Format.NODE or len(placements) > 1:
                raise _fail(
                    StatusCode.COMMAND_NOT_ALLOWED, f"{base.path} is a leaf; it cannot become interior"
                )
            self._tnds_leaf(base, record, base_node, fmt, value)
            self._tnds_properties(base, base_node, set())
            return
        if not record.is_interior:
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"{base.path} is a leaf and cannot have children")
        if base_node is not None and self._tnds_value(base, base_node)[0] != Format.NODE:
            raise _fail(StatusCode.COMMAND_NOT_ALLOWED, f"{base.path} is interior; it cannot become a leaf")
        self._require_access(self.tree.definition(base), Access.REPLACE, base, "Replace")
        self._require(base, "Replace")
        keep: set[URI] = set()
        for uri in wanted:
            probe: URI | None = uri
            while probe is not None and probe != base and probe not in keep:
                keep.add(probe)
                probe = probe.parent
        # 1. Delete what the object does not have, or has as the other kind of node.
        gone: list[URI] = []
        for existing in self.store.subtree(base.path)[1:]:
            uri = parse_uri(existing.path)
            if any(g.contains(uri) for g in gone):
                continue
            node = wanted.get(uri)
            if uri in keep and (
                node is None or (self._tnds_value(uri, node)[0] == Format.NODE) == existing.is_interior
            ):
                continue
            self._delete_node(uri, existing)
            gone.append(uri)
        # 2. Add and replace in document order (parents first).
        created: set[URI] = set()
        for uri, node in placements:
            if uri == base:
                self._tnds_properties(uri, node, created)
                continue
            fmt, value = self._tnds_value(uri, node)
            current = self.store.get(uri.path)
            if current is None:
                self._add(uri, _Incoming(fmt, node.type, value, node.format is not None))
                created.add(uri)
            elif not current.is_interior:
                self._tnds_leaf(uri, current, node, fmt, value)
            self._tnds_properties(uri, node, created)

    def _tnds_leaf(
        self, uri: URI, current: NodeRecord, node: tnds.TNDSNode, fmt: str, value: bytes | None
    ) -> None:
        """Replace an existing leaf from a TNDS node, unless nothing would change."""
        if node.value is None and node.format != Format.NULL:
            return  # no <Value>: keep the value (secrets are left out of ?list=TNDS)
        incoming = _Incoming(fmt, node.type, value, node.format is not None)
        node_def = self.tree.definition(uri)
        settled = self._settle_format(node_def, incoming, uri)
        typ = node.type or self._default_type(node_def, settled)
        if (settled, typ, value) == (current.format, current.type, current.value):
            return
        self._replace(uri, incoming)

    def _tnds_properties(self, uri: URI, node: tnds.TNDSNode, created: set[URI]) -> None:
        record = self._existing(uri)
        if node.acl is not None and node.acl != record.acl:
            self._set_acl(uri, record, parse_acl(node.acl))
            record = self._existing(uri)
        if node.title is not None and node.title != (record.title or ""):
            if uri not in created:
                self._require(uri, "Replace")
            self._set_title(record, node.title)

    def _tnds_value(self, uri: URI, node: tnds.TNDSNode) -> tuple[str, bytes | None]:
        """(Format, stored bytes) of a TNDS node; binary Values are base64 text, stored as bin.

        Without a Format: child nodes make it interior; a Value makes it the declared leaf
        Format (chr outside MOs; a Value where the MO declares an interior node is then a
        Format mismatch, 415, for ``_settle_format``); neither takes the declaration, or
        interior outside MOs.
        """
        fmt = node.format
        if fmt is None:
            node_def = self.tree.definition(uri)
            if node.has_children:
                fmt = Format.NODE.value
            elif node.value is not None:
                fmt = node_def.format.value if node_def is not None and node_def.is_leaf else Format.CHR.value
            else:
                fmt = node_def.format.value if node_def is not None else Format.NODE.value
        if fmt == Format.B64:
            fmt = Format.BIN.value
        if fmt == Format.NODE:
            return fmt, None
        if node.value is None:
            return fmt, None
        if fmt == Format.BIN:
            return fmt, _b64decode(node.value)
        return fmt, node.value.encode("utf-8")


def _tnds_placements(
    document: tnds.TNDSDocument, target: URI
) -> tuple[tnds.TNDSNode | None, list[tuple[URI, tnds.TNDSNode]]]:
    """(the node that is the Target itself or None, every node with its URI), parents first.

    See ``TreeSession._tnds_write`` for the rule.
    """
    nodes = document.nodes
    base_node = next((n for n in nodes if not n.name), None)
    if base_node is None and not target.is_root:
        tops = [n for n in nodes if not n.path]
        if (
            len(tops) == 1
            and tops[0].name == target.name
            and all(n.segments[0] == target.name for n in nodes)
        ):
            return tops[0], [(URI(target.segments + n.segments[1:]), n) for n in nodes]
    return base_node, [(URI(target.segments + n.segments), n) for n in nodes]


def _b64decode(data: str | bytes) -> bytes:
    text = data.decode("ascii", "replace") if isinstance(data, bytes) else data
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _fail(
            StatusCode.BAD_REQUEST, "the data is not valid base64 although its Format is b64"
        ) from None


def _type_of(command: ItemCommand, item: Item) -> str | None:
    if item.meta is not None and item.meta.type:
        return item.meta.type
    if command.meta is not None and command.meta.type:
        return command.meta.type
    return None
