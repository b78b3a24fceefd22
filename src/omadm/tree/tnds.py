"""TNDS: whole sub-trees as one XML object (``application/vnd.syncml.dmtnds+xml``; digest 7.7).

The module has three layers:

* a neutral model, ``TNDSDocument`` of ``TNDSNode`` values, independent of the tree store;
* ``decode_tnds`` (lenient, hardened) and ``encode_tnds`` (strict, DTD order);
* bridges to the tree: ``placed`` (where each decoded node goes under a command Target)
  and ``from_records`` (a ``?list=TNDS`` answer from stored nodes).

Where a node goes
-----------------
Digest 7.7: "Paths inside the TNDS are relative to the command's Target URI" and
"NodeName (may be empty -> name from command Target's last segment)". So a top-level
``<Node>`` with a name is a *child* of the Target (the printed example adds ``E-Mail``
under Target ``OperatorX``), and a top-level ``<Node>`` with an empty NodeName *is* the
Target node itself. Each ``TNDSNode`` records:

* ``path``: the canonical (escaped) relative URI of its parent, ``""`` for "the Target";
* ``name``: its decoded name, ``""`` only for the Target node itself.

``relpath`` joins both (``""`` is the Target). Nested ``<Node>`` elements and flat lists
with ``<Path>`` (and any mix) decode to the same model; a document always lists parents
before their children (depth first, siblings in document order).

Decisions on points the spec copy leaves open (for docs/protocol-decisions.md):

* The decoder accepts no namespace or any namespace; VerDTD 1.1 and 1.2 (other: 415); a
  missing VerDTD (the printed examples omit it); ``<Format>`` as ``<chr/>`` in any case or
  as text; ``<Type>`` as ``<MIME>``/``<DDFName>`` or as text; DDF-style ``DFProperties``
  (``DFFormat``/``DFType`` fill in what ``RTProperties`` does not give; the rest is
  ignored); unknown children of ``RTProperties``/``DFProperties`` are ignored, unknown
  children of ``Node``/``MgmtTree`` are refused; a leading ``./`` in ``<Path>``.
* Refused with 400: no ``NodeName``; an empty NodeName anywhere but on a top-level node
  without Path; a Value on a node with Format ``node`` or with child nodes; child nodes
  under a leaf Format; a node defined twice; a nested node whose ``<Path>`` disagrees
  with its position; a bad ACL. An unknown Format token is 415 ("Format/Type not
  supported"). Oversize input is 413, nesting beyond ``max_depth`` 400.
* Value text is kept exactly (no trimming): b64 stays b64 text, CDATA is plain text.
  Identifiers (NodeName, Path, Type, ACL, Size, TStamp, VerNo, Title, Name) are trimmed.
* The encoder writes nested ``<Node>`` elements (``<Path>`` only for a top-level node
  whose parent is not in the document), ``xmlns="syncml:dmddf1.2"``, VerDTD ``1.2``, and
  no XML declaration (the object travels inside ``<Data>``). It writes ``RTProperties``
  only when a node has a property, and then always with a ``Type`` (the TNDS table says
  Type MUST be encoded): ``<DDFName>`` for an interior node (Format ``node`` or child
  nodes, or no Format and a type that is not a MIME type), else ``<MIME>``; a missing type
  becomes ``<DDFName/>`` on an interior node and ``<MIME>text/plain</MIME>`` on a leaf.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar, cast

from lxml import etree

from omadm.protocol.codes import StatusCode
from omadm.protocol.errors import MalformedMessage
from omadm.protocol.xml_codec import DEFAULT_MAX_SIZE, parse_element

from .acl import InvalidACL, parse_acl
from .errors import TreeError
from .uri import TNDS_PROPERTIES, URI, InvalidURI, escape_segment, parse_uri, unescape_segment

__all__ = [
    "DDF_NAMESPACE",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_NODES",
    "FORMATS",
    "TNDS_WBXML_TYPE",
    "TNDS_XML_TYPE",
    "InvalidTNDS",
    "NodeRecordLike",
    "TNDSDocument",
    "TNDSNode",
    "decode_tnds",
    "decode_tnds_element",
    "encode_tnds",
    "from_records",
    "placed",
]

TNDS_XML_TYPE = "application/vnd.syncml.dmtnds+xml"
TNDS_WBXML_TYPE = "application/vnd.syncml.dmtnds+wbxml"
DDF_NAMESPACE = "syncml:dmddf1.2"
#: The Format tokens of the DTD: ``Format{b64|bin|bool|chr|int|node|null|xml|date|time|float}``.
FORMATS: frozenset[str] = frozenset(
    ("b64", "bin", "bool", "chr", "int", "node", "null", "xml", "date", "time", "float")
)
#: Deepest ``<Node>`` nesting decoded; real MOs are about ten deep.
DEFAULT_MAX_DEPTH = 128
#: Most nodes decoded from one object.
DEFAULT_MAX_NODES = 100_000

_VERSIONS = ("1.1", "1.2")
_E = etree._Element
# A MIME type has exactly one "/" between two tokens; MO identifiers are URNs (no "/") or
# "<reversed-domain>/<major>.<minor>/<name>..." (two or more).
_MIME = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+*-]+(\s*;.*)?")
# Characters XML 1.0 cannot carry, not even as character references.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class InvalidTNDS(TreeError):
    """A TNDS object that cannot be accepted: 400 malformed, 415 unsupported version or
    Format, 413 too large."""

    def __init__(self, message: str, status: int = StatusCode.BAD_REQUEST) -> None:
        super().__init__(message, status)


# ---------------------------------------------------------------------------------------
# Model


def _canonical_relative(path: str) -> str:
    """A relative URI text in canonical escaped form (``""`` for the Target itself)."""
    text = path.strip()
    if text in ("", ".", "./"):
        return ""
    return "/".join(escape_segment(s) for s in parse_uri(text).segments)


@dataclass(frozen=True)
class TNDSNode:
    """One node of a TNDS object, with the properties it carries (None = not present).

    ``path`` is the canonical relative URI of the parent (``""`` = the Target), ``name``
    the decoded NodeName (``""`` = the Target node itself). ``value`` is the Value text as
    written (``""`` for an empty ``<Value/>``). ``acl`` is canonical ACL text. ``size``,
    ``tstamp`` and ``verno`` are the texts of the read-only properties; ``name_property``
    is the RTProperties ``Name``. ``has_children`` is derived: ``TNDSDocument`` sets it.
    """

    path: str
    name: str
    format: str | None = None
    type: str | None = None
    value: str | None = None
    acl: str | None = None
    title: str | None = None
    size: str | None = None
    tstamp: str | None = None
    verno: str | None = None
    name_property: str | None = None
    has_children: bool = False

    def __post_init__(self) -> None:
        try:
            path = _canonical_relative(self.path)
        except InvalidURI as exc:
            raise InvalidTNDS(f"node {self.name!r}: bad Path {self.path!r}: {exc.message}") from None
        object.__setattr__(self, "path", path)
        if self.name == "":
            if path:
                raise InvalidTNDS(
                    f"a node under {path!r} has an empty NodeName; only a top-level node without Path may "
                    "leave it empty (it then names the command's Target)"
                )
        else:
            try:
                escape_segment(self.name)
            except InvalidURI as exc:
                raise InvalidTNDS(f"bad NodeName under {path or '(the Target)'!r}: {exc.message}") from None
        label = self.label
        if self.format is not None:
            fmt = self.format.strip().lower()
            if fmt not in FORMATS:
                raise InvalidTNDS(
                    f"node {label}: unsupported Format {self.format!r} (one of {', '.join(sorted(FORMATS))})",
                    StatusCode.UNSUPPORTED_MEDIA_TYPE,
                )
            object.__setattr__(self, "format", fmt)
        if self.value is not None and self.format == "node":
            raise InvalidTNDS(f"node {label} has Format node (interior) but carries a Value")
        if self.acl is not None:
            try:
                object.__setattr__(self, "acl", parse_acl(self.acl).format())
            except InvalidACL as exc:
                raise InvalidTNDS(f"node {label}: {exc.message}") from None

    @property
    def relpath(self) -> str:
        """This node's canonical URI relative to the Target (``""`` = the Target itself)."""
        if not self.name:
            return ""
        name = escape_segment(self.name)
        return f"{self.path}/{name}" if self.path else name

    @property
    def parent_relpath(self) -> str | None:
        """The parent's ``relpath``; None for the Target node itself."""
        return self.path if self.name else None

    @property
    def segments(self) -> tuple[str, ...]:
        """Decoded names from the Target down to this node (``()`` = the Target)."""
        if not self.name:
            return ()
        parents = tuple(unescape_segment(s) for s in self.path.split("/")) if self.path else ()
        return (*parents, self.name)

    @property
    def is_interior(self) -> bool:
        """Format ``node``, or child nodes in the document."""
        return self.format == "node" or self.has_children

    @property
    def label(self) -> str:
        return repr(self.relpath) if self.name else "(the Target node)"


@dataclass(frozen=True)
class TNDSDocument:
    """A TNDS object: its nodes, parents before children, plus the optional Man and Mod.

    Construction orders the nodes depth first (siblings keep their order; shallower
    top-level nodes first, so every ancestor comes before its descendants), sets every
    node's ``has_children`` and refuses duplicates, Values on nodes with children and
    children under leaf Formats (``InvalidTNDS``, 400).
    """

    nodes: tuple[TNDSNode, ...] = ()
    man: str | None = None
    mod: str | None = None

    def __post_init__(self) -> None:
        nodes = tuple(self.nodes)
        by_path: dict[str, TNDSNode] = {}
        children: dict[str, list[str]] = {}
        roots: list[str] = []
        for node in nodes:
            rel = node.relpath
            if rel in by_path:
                raise InvalidTNDS(f"node {node.label} is defined twice")
            by_path[rel] = node
        for node in nodes:
            parent = node.parent_relpath
            if parent is not None and parent in by_path:
                children.setdefault(parent, []).append(node.relpath)
            else:
                roots.append(node.relpath)
        # A root may sit below another root's sub-tree (a flat node whose Path names nodes
        # defined elsewhere): shallower roots first keeps every ancestor before its
        # descendants, so the tree can create the nodes in this order.
        roots.sort(key=lambda rel: rel.count("/") + 1 if rel else 0)
        ordered: list[TNDSNode] = []
        stack = list(reversed(roots))
        while stack:
            rel = stack.pop()
            node = by_path[rel]
            kids = children.get(rel, [])
            if kids:
                if node.value is not None:
                    raise InvalidTNDS(f"node {node.label} has both a Value and child nodes")
                if node.format not in (None, "node"):
                    raise InvalidTNDS(f"node {node.label} has Format {node.format} (a leaf) but child nodes")
            if node.has_children != bool(kids):
                node = replace(node, has_children=bool(kids))
            ordered.append(node)
            stack.extend(reversed(kids))
        object.__setattr__(self, "nodes", tuple(ordered))

    def find(self, relpath: str) -> TNDSNode | None:
        """The node at ``relpath`` (canonical, relative to the Target), if present."""
        for node in self.nodes:
            if node.relpath == relpath:
                return node
        return None

    def children_of(self, relpath: str) -> tuple[TNDSNode, ...]:
        """The nodes whose parent is ``relpath``, in order."""
        return tuple(n for n in self.nodes if n.parent_relpath == relpath)


def placed(document: TNDSDocument, target: URI) -> Iterator[tuple[str, TNDSNode]]:
    """Each node with the canonical URI text it takes under the command's ``target``.

    Parents come before children. A node with an empty NodeName is ``target`` itself.
    The texts are canonical, so ``parse_uri(text, limits=...)`` checks them against the
    device's URI limits.
    """
    for node in document.nodes:
        yield URI(target.segments + node.segments).path, node


# ---------------------------------------------------------------------------------------
# Decoding


def _local(tag: object) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _elements(el: _E) -> Iterator[tuple[str, _E]]:
    """Child elements by local name (comments and processing instructions skipped)."""
    for child in el:
        if isinstance(child, etree._Entity):
            raise InvalidTNDS(f"entity reference &{child.name}; in <{_local(el.tag)}> refused")
        if isinstance(child.tag, str):
            yield _local(child.tag), child


def _plain(el: _E, where: str) -> str:
    """The trimmed text of an element that must hold text only."""
    for name, _ in _elements(el):
        raise InvalidTNDS(f"{where}: <{_local(el.tag)}> must hold text, found <{name}>")
    return (el.text or "").strip()


def _value_text(el: _E) -> str:
    """Value text exactly as written; embedded markup (an ``xml`` value written unescaped)
    is handed on as XML text."""
    inner = list(_elements(el))
    if not inner:
        return el.text or ""
    parts = [el.text.strip()] if el.text and el.text.strip() else []
    for _, child in inner:
        tail, child.tail = child.tail, None
        parts.append(etree.tostring(child, encoding="unicode"))
        child.tail = tail
    return "".join(parts)


def _format_token(el: _E, where: str) -> str:
    inner = list(_elements(el))
    if len(inner) > 1:
        raise InvalidTNDS(f"{where}: <{_local(el.tag)}> names more than one format")
    token = inner[0][0] if inner else (el.text or "").strip()
    if not token:
        raise InvalidTNDS(f"{where}: empty <{_local(el.tag)}>")
    if token.lower() not in FORMATS:
        raise InvalidTNDS(
            f"{where}: unsupported Format {token!r} (one of {', '.join(sorted(FORMATS))})",
            StatusCode.UNSUPPORTED_MEDIA_TYPE,
        )
    return token.lower()


def _type_text(el: _E, where: str) -> str:
    inner = list(_elements(el))
    if len(inner) > 1:
        raise InvalidTNDS(f"{where}: <{_local(el.tag)}> holds more than one of MIME/DDFName")
    if not inner:
        return (el.text or "").strip()
    name, child = inner[0]
    if name not in ("MIME", "DDFName"):
        raise InvalidTNDS(f"{where}: <{_local(el.tag)}> holds <{name}>; expected <MIME> or <DDFName>")
    return _plain(child, where)


_SIMPLE = {
    "ACL": "acl",
    "Name": "name_property",
    "Size": "size",
    "Title": "title",
    "TStamp": "tstamp",
    "VerNo": "verno",
}


def _rt_properties(el: _E, where: str) -> dict[str, str]:
    props: dict[str, str] = {}
    for name, child in _elements(el):
        key = _SIMPLE.get(name) or {"Format": "format", "Type": "type"}.get(name)
        if key is None:
            continue  # lenient: a property this version does not know
        if key in props:
            raise InvalidTNDS(f"{where}: <RTProperties> has more than one <{name}>")
        if key == "format":
            props[key] = _format_token(child, where)
        elif key == "type":
            props[key] = _type_text(child, where)
        else:
            props[key] = _plain(child, where)
    return props


def _df_properties(el: _E, where: str) -> dict[str, str]:
    props: dict[str, str] = {}
    for name, child in _elements(el):
        if name == "DFFormat" and "format" not in props:
            props["format"] = _format_token(child, where)
        elif name == "DFType" and "type" not in props:
            props["type"] = _type_text(child, where)
    return props


class _Decoder:
    def __init__(self, max_depth: int, max_nodes: int) -> None:
        self.max_depth = max_depth
        self.max_nodes = max_nodes
        self.nodes: list[TNDSNode] = []
        self.top_level = 0

    def node(self, el: _E, parent_rel: str | None, depth: int) -> None:
        if depth > self.max_depth:
            raise InvalidTNDS(f"<Node> elements nested deeper than {self.max_depth} levels")
        if len(self.nodes) >= self.max_nodes:
            raise InvalidTNDS(
                f"TNDS object has more than {self.max_nodes} nodes", StatusCode.REQUEST_ENTITY_TOO_LARGE
            )
        if parent_rel is None:
            self.top_level += 1
            where = f"top-level <Node> #{self.top_level}"
        else:
            where = f"a <Node> under {parent_rel or '(the Target)'!r}"
        single: dict[str, _E] = {}
        kids: list[_E] = []
        problems: list[str] = []  # reported once the NodeName is known, to name the node
        for name, child in _elements(el):
            if name == "Node":
                kids.append(child)
            elif name in ("NodeName", "Path", "RTProperties", "DFProperties", "Value"):
                if name in single:
                    problems.append(f"has more than one <{name}>")
                single.setdefault(name, child)
            else:
                problems.append(f"holds the unknown element <{name}>")
        if "NodeName" not in single:
            raise InvalidTNDS(f"{where} has no <NodeName>")
        name = _plain(single["NodeName"], where)
        where = f"node {name!r}" + (f" under {parent_rel!r}" if parent_rel else "")
        if problems:
            raise InvalidTNDS(f"{where} {problems[0]}")
        if "Path" in single:
            try:
                path = _canonical_relative(_plain(single["Path"], where))
            except InvalidURI as exc:
                raise InvalidTNDS(f"{where}: bad <Path>: {exc.message}") from None
            if parent_rel is not None and path != parent_rel:
                raise InvalidTNDS(f"{where}: <Path> {path!r} disagrees with its place in the nesting")
        else:
            path = parent_rel or ""
        if not name and parent_rel is not None:
            raise InvalidTNDS(
                f"a nested node under {parent_rel or '(the Target)'!r} has an empty NodeName; only a "
                "top-level node may leave it empty (it then names the command's Target)"
            )
        props: dict[str, str] = {}
        if "DFProperties" in single:
            props.update(_df_properties(single["DFProperties"], where))
        if "RTProperties" in single:
            props.update(_rt_properties(single["RTProperties"], where))
        value = _value_text(single["Value"]) if "Value" in single else None
        if value is not None and kids:
            raise InvalidTNDS(f"{where} has both a <Value> and child <Node> elements")
        node = TNDSNode(
            path=path,
            name=name,
            format=props.get("format"),
            type=props.get("type"),
            value=value,
            acl=props.get("acl"),
            title=props.get("title"),
            size=props.get("size"),
            tstamp=props.get("tstamp"),
            verno=props.get("verno"),
            name_property=props.get("name_property"),
        )
        self.nodes.append(node)
        for kid in kids:
            self.node(kid, node.relpath, depth + 1)


def decode_tnds_element(
    root: _E, *, max_depth: int = DEFAULT_MAX_DEPTH, max_nodes: int = DEFAULT_MAX_NODES
) -> TNDSDocument:
    """Decode a parsed ``<MgmtTree>`` element (e.g. one found inside a message)."""
    name = _local(root.tag)
    if name != "MgmtTree":
        raise InvalidTNDS(f"a TNDS object's root element is <MgmtTree>, not <{name}>")
    decoder = _Decoder(max_depth, max_nodes)
    header: dict[str, str] = {}
    for local, child in _elements(root):
        if local == "Node":
            decoder.node(child, None, 1)
        elif local in ("VerDTD", "Man", "Mod"):
            if local in header:
                raise InvalidTNDS(f"<MgmtTree> has more than one <{local}>")
            header[local] = _plain(child, "<MgmtTree>")
        else:
            raise InvalidTNDS(f"unknown element <{local}> in <MgmtTree>")
    version = header.get("VerDTD")
    if version is not None and version not in _VERSIONS:
        raise InvalidTNDS(
            f"TNDS VerDTD {version!r} is not supported (1.1 or 1.2)", StatusCode.UNSUPPORTED_MEDIA_TYPE
        )
    return TNDSDocument(tuple(decoder.nodes), man=header.get("Man"), mod=header.get("Mod"))


def decode_tnds(
    data: bytes | bytearray | memoryview | str,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_nodes: int = DEFAULT_MAX_NODES,
) -> TNDSDocument:
    """Decode a TNDS object given as XML bytes or as text (an ``Item/Data`` string).

    Parsing reuses the message parser's hardening: no DTD subset, no entities, no network,
    a size cap. Raises ``InvalidTNDS`` naming the node and the problem.
    """
    if isinstance(data, str):
        text = data.lstrip("\ufeff \t\r\n")
        if text.startswith("<?xml"):
            # Already decoded text: the declaration's encoding no longer applies.
            end = text.find("?>")
            if end < 0:
                raise InvalidTNDS("unterminated XML declaration in the TNDS object")
            text = text[end + 2 :]
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidTNDS("TNDS text holds characters that are not valid Unicode") from None
    elif isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
    else:
        raise TypeError(f"TNDS data must be bytes or str, got {type(data).__name__}")
    try:
        root = parse_element(raw, max_size=max_size)
    except MalformedMessage as exc:
        status = StatusCode.REQUEST_ENTITY_TOO_LARGE if exc.status_hint == 413 else StatusCode.BAD_REQUEST
        raise InvalidTNDS(f"TNDS object is not acceptable XML: {exc}", status) from None
    return decode_tnds_element(root, max_depth=max_depth, max_nodes=max_nodes)


# ---------------------------------------------------------------------------------------
# Encoding


def _q(name: str) -> str:
    return f"{{{DDF_NAMESPACE}}}{name}"


def _sub(parent: _E, name: str, text: str | None = None) -> _E:
    el = etree.SubElement(parent, _q(name))
    if text is not None:
        el.text = text
    return el


def _type_kind(node: TNDSNode) -> str:
    if node.is_interior:
        return "DDFName"
    if node.format is not None or node.type is None:
        return "MIME"
    return "MIME" if _MIME.fullmatch(node.type) else "DDFName"


def _put_node(parent: _E, node: TNDSNode, with_path: bool) -> _E:
    el = _sub(parent, "Node")
    _sub(el, "NodeName", node.name)
    if with_path:
        _sub(el, "Path", node.path)
    simple = (
        ("ACL", node.acl),
        ("Format", node.format),
        ("Name", node.name_property),
        ("Size", node.size),
        ("Title", node.title),
        ("TStamp", node.tstamp),
        ("Type", node.type),
        ("VerNo", node.verno),
    )
    if any(value is not None for _, value in simple):
        rt = _sub(el, "RTProperties")
        for name, value in simple:
            if name == "Format":
                if value is not None:
                    _sub(_sub(rt, "Format"), value)
            elif name == "Type":
                kind = _type_kind(node)
                text = value if value is not None else ("" if kind == "DDFName" else "text/plain")
                _sub(_sub(rt, "Type"), kind, text)
            elif value is not None:
                _sub(rt, name, value)
    if node.value is not None:
        _sub(el, "Value", node.value)
    return el


def encode_tnds(document: TNDSDocument, *, pretty: bool = False) -> bytes:
    """The XML bytes (UTF-8, no declaration) of a TNDS object, elements in DTD order.

    Raises ``InvalidTNDS`` (500) when a text cannot be written in XML (control
    characters): send such values as ``b64`` (``from_records`` does).
    """
    # lxml takes None as the default prefix; its stubs only know str keys.
    root = etree.Element(_q("MgmtTree"), nsmap=cast("Mapping[str, str]", {None: DDF_NAMESPACE}))
    _sub(root, "VerDTD", "1.2")
    try:
        if document.man is not None:
            _sub(root, "Man", document.man)
        if document.mod is not None:
            _sub(root, "Mod", document.mod)
        placed_at: dict[str, _E] = {}
        for node in document.nodes:
            parent = node.parent_relpath
            container = placed_at.get(parent) if parent is not None else None
            el = _put_node(
                root if container is None else container, node, container is None and bool(node.path)
            )
            placed_at[node.relpath] = el
    except ValueError as exc:  # lxml: "All strings must be XML compatible"
        raise InvalidTNDS(f"TNDS object cannot be written as XML: {exc}", StatusCode.COMMAND_FAILED) from None
    return etree.tostring(root, encoding="utf-8", pretty_print=pretty)


# ---------------------------------------------------------------------------------------
# From stored nodes (?list=TNDS)


class NodeRecordLike(Protocol):
    """What ``from_records`` reads from a stored node (``store.NodeRecord`` fits)."""

    @property
    def path(self) -> str: ...
    @property
    def format(self) -> str: ...
    @property
    def type(self) -> str | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def acl(self) -> str: ...
    @property
    def title(self) -> str | None: ...
    @property
    def tstamp(self) -> str | None: ...
    @property
    def verno(self) -> int: ...


_R = TypeVar("_R", bound=NodeRecordLike)


def _value_for(fmt: str, raw: bytes) -> tuple[str, str]:
    """(format to announce, Value text) for a stored value: binary, or text XML cannot
    carry, travels as b64 (digest 7.3: over XML "binary values MUST be sent as b64")."""
    if fmt not in ("bin", "b64"):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            if not _NOT_XML.search(text):
                return fmt, text
    return "b64", base64.b64encode(raw).decode("ascii")


def from_records(
    root_path: str,
    records: Iterable[_R],
    *,
    include: frozenset[str] | None = None,
    exclude: frozenset[str] | None = None,
    value_of: Callable[[_R], bytes | None] | None = None,
    man: str | None = None,
    mod: str | None = None,
) -> TNDSDocument:
    """The ``?list=TNDS`` answer for the sub-tree at ``root_path``.

    ``records`` are the start node and the nodes below it that the server may read (the
    caller filters by ACL), parents before children. ``include``/``exclude`` are the
    ``+``/``-`` selections of the target (both None: every property). ``value_of`` reads a
    leaf's value (default ``record.value``; return None to leave the Value out, e.g. for
    a secret).

    Placement (our decision; the spec copy does not say): the start node is the
    top-level ``<Node>``, under its own name, with paths relative to its parent, so the
    object can be added back with Target = that parent. For the root ``.``, which has no
    name, its children are the top-level nodes and the root's own properties are left out.
    Every node with an RTProperties gets its real Type (the DTD's ``RTProperties`` needs one),
    even under ``-Type``; binary values are sent as ``b64`` (and announced so in Format).
    """
    if include is not None and exclude is not None:
        raise ValueError("give include or exclude, not both")
    selected = include if include is not None else TNDS_PROPERTIES - (exclude or frozenset())
    start = parse_uri(root_path)
    base = start.parent if start.parent is not None else start
    nodes: list[TNDSNode] = []
    for record in records:
        uri = parse_uri(record.path)
        if uri.is_root or not start.contains(uri):
            continue
        assert uri.parent is not None
        interior = record.format == "node"
        raw = None if interior else (value_of(record) if value_of is not None else record.value)
        fmt, value = record.format, None
        if raw is not None and "Value" in selected:
            fmt, value = _value_for(record.format, raw)
        acl = record.acl if "ACL" in selected else None
        fmt_out = fmt if "Format" in selected else None
        name_property = uri.name if "Name" in selected else None
        size = str(len(raw)) if "Size" in selected and raw is not None else None
        title = record.title if "Title" in selected else None
        tstamp = record.tstamp if "TStamp" in selected else None
        verno = str(record.verno) if "VerNo" in selected else None
        typ: str | None = None
        if "Type" in selected or any(
            v is not None for v in (acl, fmt_out, name_property, size, title, tstamp, verno)
        ):
            typ = record.type or ("" if interior else "text/plain")
        nodes.append(
            TNDSNode(
                path=uri.parent.relative_to(base),
                name=uri.name,
                format=fmt_out,
                type=typ,
                value=value,
                acl=acl,
                title=title,
                size=size,
                tstamp=tstamp,
                verno=verno,
                name_property=name_property,
            )
        )
    return TNDSDocument(tuple(nodes), man=man, mod=mod)
