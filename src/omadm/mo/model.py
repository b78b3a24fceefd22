"""Management objects declared as data: the one definition every other part derives from.

DESIGN rule 3 ("One definition per MO"): DevInfo, DevDetail, DMAcc (and later SCOMO) are
each declared once, as a tree of :class:`NodeDef` under an :class:`MODef`. The device tree
(:mod:`omadm.tree`) builds and checks nodes from it, the server validates what devices report
against it, and the DDF documents in ``docs/mo/`` are generated from it
(:meth:`MODef.to_ddf`, :mod:`omadm.mo.ddf`). Nothing here does I/O.

The vocabulary is the one of the OMA DM Device Description Framework 1.2 (DDF): Format,
AccessType, Occurrence, Scope, DFType (MIME or DDFName), CaseSense, DefaultValue, DFTitle.
A node name written ``<X>`` is a *placeholder* (the DDF's empty ``NodeName``): the name is
chosen when the node is created, and any name matches it.

:func:`validate` refuses declarations that contradict DM 1.2 (an interior node with a value,
a secret a server could read, two siblings with the same name, ...). Declarations are not
checked when built, so that a DDF imported from a vendor can be inspected before it is
judged; :func:`omadm.mo.registry.register` always validates.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Flag, StrEnum
from typing import ClassVar

from omadm.protocol.errors import ProtocolError
from omadm.protocol.xml_codec import parse_element

__all__ = [
    "ACL_COMMANDS",
    "Access",
    "Format",
    "InvalidModelError",
    "MODef",
    "NodeDef",
    "Occurrence",
    "Scope",
    "acl_error",
    "validate",
    "value_error",
]


class InvalidModelError(ValueError):
    """A management-object declaration (or an imported DDF) breaks a DM 1.2 rule.

    ``problems`` lists every problem found, each as ``"<node path>: <what is wrong>"``, so
    one run of :func:`validate` reports them all rather than one per fix-and-retry.
    """

    def __init__(self, problems: str | tuple[str, ...] | list[str]) -> None:
        self.problems: tuple[str, ...] = (problems,) if isinstance(problems, str) else tuple(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            message = f"{len(self.problems)} problems:\n" + "\n".join(f"  {p}" for p in self.problems)
        super().__init__(message)


class Format(StrEnum):
    """A node's Format: ``node`` for interior nodes, the value's representation for leaves.

    The values are the DDF ``DFFormat`` / TNDS ``Format`` element names (digest 7.3).
    """

    B64 = "b64"
    BIN = "bin"
    BOOL = "bool"
    CHR = "chr"
    INT = "int"
    NODE = "node"
    NULL = "null"
    XML = "xml"
    DATE = "date"
    TIME = "time"
    FLOAT = "float"


class Access(Flag):
    """The DDF AccessType: which DM commands a node accepts at all, whatever the ACL says.

    The ACL decides *who* may run a command; the AccessType decides whether the command makes
    sense on the node (a Get on a secret, a Delete on a permanent node: 405 for everyone).
    """

    NONE = 0
    ADD = 1
    COPY = 2
    DELETE = 4
    EXEC = 8
    GET = 16
    REPLACE = 32
    #: Every command.
    ALL = ADD | COPY | DELETE | EXEC | GET | REPLACE
    #: Readable, nothing else: the usual AccessType of device-reported values.
    READ_ONLY = GET

    @property
    def ddf_tags(self) -> tuple[str, ...]:
        """The AccessType child element names, in DDF DTD order (Add Copy Delete Exec Get Replace)."""
        return tuple(tag for tag, flag in _ACCESS_TAGS if flag in self)


_ACCESS_TAGS: tuple[tuple[str, Access], ...] = (
    ("Add", Access.ADD),
    ("Copy", Access.COPY),
    ("Delete", Access.DELETE),
    ("Exec", Access.EXEC),
    ("Get", Access.GET),
    ("Replace", Access.REPLACE),
)


class Scope(StrEnum):
    """Permanent nodes are built in (servers can neither add nor delete them); Dynamic ones are not."""

    PERMANENT = "Permanent"
    DYNAMIC = "Dynamic"


@dataclass(frozen=True)
class Occurrence:
    """How many instances of a node may exist under one parent (DDF ``Occurrence``).

    Only what the DDF can express is accepted: a minimum of 0 or 1 and a maximum that is
    unbounded (``None``) or at least 1 (``ZeroOrN`` / ``OneOrN`` carry the N).
    """

    minimum: int
    maximum: int | None

    ONE: ClassVar[Occurrence]
    ZERO_OR_ONE: ClassVar[Occurrence]
    ZERO_OR_MORE: ClassVar[Occurrence]
    ONE_OR_MORE: ClassVar[Occurrence]

    def __post_init__(self) -> None:
        if self.minimum not in (0, 1):
            raise InvalidModelError(f"occurrence minimum must be 0 or 1 (DDF), got {self.minimum}")
        if self.maximum is not None and self.maximum < 1:
            raise InvalidModelError(f"occurrence maximum must be at least 1 or None, got {self.maximum}")

    @classmethod
    def zero_or_n(cls, n: int) -> Occurrence:
        """``ZeroOrN``: optional, at most ``n`` instances."""
        return cls(0, n)

    @classmethod
    def one_or_n(cls, n: int) -> Occurrence:
        """``OneOrN``: at least one, at most ``n`` instances."""
        return cls(1, n)

    @property
    def allows_many(self) -> bool:
        """True when more than one instance may exist (only placeholders can do that)."""
        return self.maximum is None or self.maximum > 1

    @property
    def optional(self) -> bool:
        """True when the node may be absent."""
        return self.minimum == 0

    @property
    def ddf_tag(self) -> str:
        """The DDF element name: One, ZeroOrOne, ZeroOrMore, OneOrMore, ZeroOrN or OneOrN."""
        prefix = "Zero" if self.minimum == 0 else "One"
        if self.maximum is None:
            return f"{prefix}OrMore"
        if self.maximum == 1:
            return "One" if self.minimum == 1 else "ZeroOrOne"
        return f"{prefix}OrN"

    @property
    def ddf_count(self) -> int | None:
        """The N of ``ZeroOrN`` / ``OneOrN``, else None."""
        return self.maximum if self.maximum is not None and self.maximum > 1 else None

    def __str__(self) -> str:
        n = self.ddf_count
        return self.ddf_tag if n is None else f"{self.ddf_tag}({n})"


Occurrence.ONE = Occurrence(1, 1)
Occurrence.ZERO_OR_ONE = Occurrence(0, 1)
Occurrence.ZERO_OR_MORE = Occurrence(0, None)
Occurrence.ONE_OR_MORE = Occurrence(1, None)

#: A leaf without an explicit MIME type is plain text (the DM default Type).
DEFAULT_MIME = "text/plain"

_PLACEHOLDER = re.compile(r"<[A-Za-z][A-Za-z0-9_]*>")


@dataclass(frozen=True)
class NodeDef:
    """One node of a management object as the DDF describes it.

    ``mime`` of a leaf defaults to ``text/plain`` (filled in when built, so two declarations
    that mean the same compare equal); interior nodes have no MIME type and may carry a
    ``ddf_name`` (the MO identifier on an MO or sub-object root).

    A leaf whose AccessType lacks Get is ``secret`` (filled in when built): no server can read
    it, and the tree must not leak it through ``?list=StructData``, TNDS or Copy either. The
    converse is checked by :func:`validate` (a secret that allows Get or Copy is refused).

    An interior node without declared children is *open*: the MO leaves what lies below to
    the implementation (``Ext`` and ``Bearer`` in the standard objects).
    """

    name: str
    format: Format
    access: Access
    occurrence: Occurrence = Occurrence.ONE
    scope: Scope = Scope.PERMANENT
    mime: str | None = None
    ddf_name: str | None = None
    description: str = ""
    title: str | None = None
    default: str | None = None
    children: tuple[NodeDef, ...] = ()
    case_sensitive: bool = True
    secret: bool = False
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Normalise what the DDF cannot tell apart, so that a declaration and the DDF parsed
        # back from it compare equal: a leaf's MIME defaults to text/plain, and a leaf
        # nobody may Get is a secret.
        if self.format is not Format.NODE:
            if self.mime is None:
                object.__setattr__(self, "mime", DEFAULT_MIME)
            if Access.GET not in self.access:
                object.__setattr__(self, "secret", True)

    @property
    def is_placeholder(self) -> bool:
        """True for a run-time-named node such as ``<X>`` (empty NodeName in the DDF)."""
        return self.name.startswith("<") and self.name.endswith(">")

    @property
    def is_interior(self) -> bool:
        """True for an interior node (Format ``node``)."""
        return self.format is Format.NODE

    @property
    def is_leaf(self) -> bool:
        """True for a leaf (any Format but ``node``)."""
        return self.format is not Format.NODE

    @property
    def is_open(self) -> bool:
        """True for an interior node whose sub-tree the MO leaves to the implementation."""
        return self.is_interior and not self.children

    @property
    def placeholder_child(self) -> NodeDef | None:
        """The run-time-named child, if the node declares one."""
        return next((c for c in self.children if c.is_placeholder), None)

    def child(self, name: str) -> NodeDef | None:
        """The definition a child called ``name`` follows.

        The fixed child of that name (compared without case when that child is declared
        case-insensitive, DDF ``CIS``), else the placeholder child, else None.
        """
        folded = name.casefold()
        placeholder = None
        for c in self.children:
            if c.is_placeholder:
                placeholder = c
            elif c.name == name or (not c.case_sensitive and c.name.casefold() == folded):
                return c
        return placeholder

    def walk(self, path: str = "") -> Iterator[tuple[str, NodeDef]]:
        """Yield ``(path, node)`` for this node and every declared descendant, depth first.

        Paths are joined with ``/`` from ``path`` (this node's own path); placeholders appear
        under their placeholder names.
        """
        here = path or self.name
        yield here, self
        for c in self.children:
            yield from c.walk(f"{here}/{c.name}")

    def value_error(self, value: str) -> str | None:
        """Why ``value`` cannot be this node's value, or None if it can.

        Checks the Format (:func:`value_error`) and, for leaves that enumerate them, the
        allowed values.
        """
        if self.is_interior:
            return "an interior node has no value"
        problem = value_error(self.format, value)
        if problem is None and self.values and value not in self.values:
            problem = f"{value!r} is not one of the allowed values ({', '.join(self.values)})"
        return problem


@dataclass(frozen=True)
class MODef:
    """A management object: its identifier, root node, where it is mounted, its default ACL.

    ``description`` defaults to the root node's description. ``default_acl`` is put on the
    MO root when the device tree is built; None leaves the root's ACL empty (inherited).
    """

    name: str
    urn: str
    root: NodeDef
    default_path: str
    default_acl: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not self.description:
            object.__setattr__(self, "description", self.root.description)

    def resolve(self, relative: str) -> NodeDef | None:
        """The definition of the node at ``relative`` (a path below the MO root), or None.

        ``""`` is the root. Placeholders match any segment, so ``"<acct>/AppAddr/1/Addr"``
        in DMAcc resolves to the ``Addr`` leaf. Nothing resolves below an open interior node
        (the MO does not describe it) or a leaf.
        """
        node: NodeDef | None = self.root
        if relative == "":
            return node
        for segment in relative.split("/"):
            if node is None or not segment:
                return None
            node = node.child(segment)
        return node

    def walk(self) -> Iterator[tuple[str, NodeDef]]:
        """Yield ``(path relative to the root, node)`` for every declared node; the root is ``""``."""
        yield "", self.root
        for c in self.root.children:
            yield from c.walk(c.name)

    def to_ddf(self, *, man: str | None = None, mod: str | None = None) -> bytes:
        """This MO as a DDF 1.2 document (UTF-8, XML declaration, public DOCTYPE, pretty printed).

        ``man`` and ``mod`` fill the optional MgmtTree ``Man`` / ``Mod`` (a device's own DDF).
        """
        from .ddf import to_ddf  # noqa: PLC0415 - ddf.py builds on this module's types

        return to_ddf(self, man=man, mod=mod)


# ---------------------------------------------------------------------------------------
# Values


_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?INF|NaN")
_ORDINAL_DATE = re.compile(r"([0-9]{4})-?([0-9]{3})")
_INT32 = (-(2**31), 2**31 - 1)


def value_error(fmt: Format, value: str) -> str | None:
    """Why ``value`` is not a valid textual value of Format ``fmt``, or None if it is.

    The forms are those of digest section 7.3: ``int`` a 32-bit signed decimal, ``bool``
    ``true``/``false``, ``float`` an XML Schema float, ``date``/``time`` ISO 8601 (calendar,
    week and ordinal dates; extended or basic times), ``b64`` and ``bin`` base64 text (a
    binary value written as text is always base64), ``null`` empty, ``xml`` well-formed XML.
    """
    match fmt:
        case Format.CHR:
            return None
        case Format.NODE:
            return "an interior node has no value"
        case Format.NULL:
            return None if value == "" else "a null node has no value"
        case Format.INT:
            if not _INT.fullmatch(value):
                return f"{value!r} is not a decimal integer"
            if not _INT32[0] <= int(value) <= _INT32[1]:
                return f"{value!r} does not fit a 32-bit signed integer"
            return None
        case Format.BOOL:
            return None if value in ("true", "false") else f"{value!r} is not 'true' or 'false'"
        case Format.FLOAT:
            return None if _FLOAT.fullmatch(value) else f"{value!r} is not an XML Schema float"
        case Format.DATE:
            return None if _is_iso_date(value) else f"{value!r} is not an ISO 8601 date"
        case Format.TIME:
            return None if _is_iso_time(value) else f"{value!r} is not an ISO 8601 time"
        case Format.B64 | Format.BIN:
            try:
                base64.b64decode("".join(value.split()), validate=True)
            except (binascii.Error, ValueError):
                return f"{value!r} is not base64"
            return None
        case Format.XML:
            return _xml_error(value)
    raise AssertionError(fmt)  # pragma: no cover - the match is exhaustive


def _is_iso_date(value: str) -> bool:
    if not value.isascii():
        return False
    try:
        _dt.date.fromisoformat(value)  # calendar and week dates, extended or basic (3.11+)
    except ValueError:
        pass
    else:
        return True
    m = _ORDINAL_DATE.fullmatch(value)
    if m is None:
        return False
    try:
        _dt.datetime.strptime(f"{m[1]}-{m[2]}", "%Y-%j")
    except ValueError:
        return False
    return 1 <= int(m[2]) <= 366


def _is_iso_time(value: str) -> bool:
    if not value.isascii() or not value[:1].isdigit():
        return False
    try:
        _dt.time.fromisoformat(value)
    except ValueError:
        return False
    return True


def _xml_error(value: str) -> str | None:
    # The protocol's hardened parser: no DTD subset, no entities, no network.
    try:
        parse_element(value.encode("utf-8"))
    except ProtocolError as exc:
        return f"not acceptable XML: {exc}"
    return None


# ---------------------------------------------------------------------------------------
# ACL syntax (digest 7.5)

#: The commands an ACL may name (Copy has no entry: it needs Get, Add and Replace rights).
ACL_COMMANDS = ("Add", "Delete", "Exec", "Get", "Replace")
_SERVER_ID = re.compile(r"[^=&*+\s]+")


def acl_error(acl: str) -> str | None:
    """Why ``acl`` is not a well-formed DM ACL value, or None if it is (``""`` is valid: inherit)."""
    if acl == "":
        return None
    seen: set[str] = set()
    for entry in acl.split("&"):
        command, sep, servers = entry.partition("=")
        if not sep:
            return f"ACL entry {entry!r} has no '='"
        if command not in ACL_COMMANDS:
            return f"ACL entry {entry!r}: unknown command (expected one of {', '.join(ACL_COMMANDS)})"
        if command in seen:
            return f"ACL names {command} twice"
        seen.add(command)
        if servers == "*":
            continue
        if not servers:
            return f"ACL entry {entry!r} grants to no server"
        for server in servers.split("+"):
            if not _SERVER_ID.fullmatch(server):
                return f"ACL entry {entry!r}: {server!r} is not a server identifier"
    return None


# ---------------------------------------------------------------------------------------
# Validation

_MIME = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*(?:;.*)?")
# An MO identifier: a registered URN, or <reversed-domain>/<major>.<minor>/<name>[/<name>]* (digest 7.3).
_MO_ID = re.compile(
    r"urn:[A-Za-z0-9][A-Za-z0-9-]{0,31}:\S+"
    r"|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+/[0-9]+\.[0-9]+/[^/\s]+(?:/[^/\s]+)*"
)
_FORBIDDEN_IN_NAME = re.compile(r"[/?\x00-\x1f\x7f]")
_Reporter = Callable[[str], None]


def validate(mo: MODef) -> None:
    """Check a management object declaration against the rules of DM 1.2 and the DDF.

    Raises:
        InvalidModelError: listing every problem as ``"<node path>: <problem>"``.
    """
    problems: list[str] = []
    _check_mo(mo, problems)
    _check_node(mo.root, mo.root.name, problems)
    if problems:
        raise InvalidModelError(problems)


def _check_mo(mo: MODef, problems: list[str]) -> None:
    where = mo.name or "<MO>"
    if not mo.name:
        problems.append(f"{where}: the MO has no name")
    if not _MO_ID.fullmatch(mo.urn):
        problems.append(f"{where}: {mo.urn!r} is not an MO identifier (URN or reversed-domain form)")
    if mo.root.is_leaf:
        problems.append(f"{where}: the MO root must be an interior node (Format node)")
    if mo.root.ddf_name != mo.urn:
        problems.append(f"{where}: the root's DDFName must be the MO identifier {mo.urn!r}")
    path = mo.default_path
    segments = path.split("/")
    if segments[0] != "." or len(segments) < 2 or not all(segments[1:]):
        problems.append(f"{where}: default path {path!r} must be an absolute URI such as './{mo.root.name}'")
    elif not mo.root.is_placeholder and segments[-1] != mo.root.name:
        problems.append(f"{where}: default path {path!r} must end with the root's name {mo.root.name!r}")
    if mo.default_acl is not None and (problem := acl_error(mo.default_acl)) is not None:
        problems.append(f"{where}: default ACL: {problem}")


def _check_node(node: NodeDef, path: str, problems: list[str]) -> None:
    def bad(problem: str) -> None:
        problems.append(f"{path}: {problem}")

    _check_name(node, bad)
    if node.is_interior:
        if node.mime is not None:
            bad("an interior node has no MIME type (use ddf_name for an MO identifier)")
        if node.default is not None:
            bad("an interior node has no value, so no default value")
        if node.values:
            bad("allowed values apply to chr leaves only")
        if node.secret:
            bad("only a leaf can be secret")
    else:
        if node.children:
            bad(f"a leaf (Format {node.format}) cannot have children; interior nodes have Format node")
        if node.ddf_name is not None:
            bad("a DDFName (MO identifier) belongs on an interior node; leaves have a MIME type")
        if node.mime is not None and not _MIME.fullmatch(node.mime):
            bad(f"{node.mime!r} is not a MIME type")
        if node.secret and node.access & (Access.GET | Access.COPY):
            bad("a secret leaf must allow neither Get nor Copy (its value would be disclosed)")
        _check_values(node, bad)
    if node.ddf_name is not None and not _MO_ID.fullmatch(node.ddf_name):
        bad(f"{node.ddf_name!r} is not an MO identifier (URN or reversed-domain form)")
    if not node.is_placeholder and node.occurrence.allows_many:
        bad(f"a fixed-name node occurs at most once (occurrence {node.occurrence}); use a placeholder")
    if node.is_placeholder and node.scope is Scope.PERMANENT and not node.occurrence.allows_many:
        bad("a placeholder must be Dynamic or allow several instances")
    if node.scope is Scope.PERMANENT and node.access & (Access.ADD | Access.DELETE):
        bad("a permanent node can be neither added nor deleted by a server (no Add or Delete access)")
    if node.is_placeholder and not node.title:
        bad("a placeholder needs a title (DFTitle): its NodeName is empty in the DDF")
    _check_children(node, path, problems)


def _check_name(node: NodeDef, bad: _Reporter) -> None:
    name = node.name
    if not name:
        bad("empty node name")
    elif node.is_placeholder:
        if not _PLACEHOLDER.fullmatch(name):
            bad(f"placeholder {name!r} must look like <X> (a letter, then letters, digits or _)")
    elif _FORBIDDEN_IN_NAME.search(name):
        bad(f"node name {name!r} contains '/', '?' or a control character")
    elif name in (".", ".."):
        bad(f"node name {name!r} is reserved in URIs")
    elif "<" in name or ">" in name:
        bad(f"node name {name!r}: '<' and '>' are only for placeholders such as <X>")


def _check_values(node: NodeDef, bad: _Reporter) -> None:
    if node.values:
        if node.format is not Format.CHR:
            bad(f"allowed values apply to chr leaves only (this one is {node.format})")
        if len(set(node.values)) != len(node.values):
            bad("allowed values repeat")
        if any(v == "" or "`" in v for v in node.values):
            bad("allowed values must be non-empty and contain no backquote")
    if node.default is not None:
        problem = node.value_error(node.default)
        if problem is not None:
            bad(f"default value: {problem}")


def _check_children(node: NodeDef, path: str, problems: list[str]) -> None:
    placeholders = [c for c in node.children if c.is_placeholder]
    if len(placeholders) > 1:
        names = ", ".join(c.name for c in placeholders)
        problems.append(f"{path}: at most one placeholder child ({names})")
    seen: dict[str, str] = {}
    for c in node.children:
        if c.is_placeholder:
            continue
        key = c.name.casefold()
        if key in seen:
            problems.append(
                f"{path}: sibling names {seen[key]!r} and {c.name!r} are equal or differ only in case"
            )
        seen[key] = c.name
    for c in node.children:
        _check_node(c, f"{path}/{c.name}", problems)
