"""SyncML DM 1.2 as XML: a hardened, lenient parser and a strict serializer.

The parser accepts what deployed peers send (OMA DM 1.2 digest, section 14):

* Meta children with the ``syncml:metinf`` namespace on each child, on ``Meta``, or
  nowhere (pitfall 22); every element is matched by its local name;
* elements out of DTD order; ``Format`` in any case (pitfall 21); ``<Final></Final>``;
  CRLF line ends; CDATA or escaped data; status codes that are not numbers;
* an optional public ``DOCTYPE`` (but never an internal DTD subset: no entities, so no
  entity bombs and no external entities), comments and processing instructions.

Anything it cannot accept raises ``MalformedMessage`` or ``UnsupportedElement`` whose
message names the element and the problem.

The serializer emits elements in DTD order (digest section 3.3) with the per-child
``xmlns="syncml:metinf"`` form, as UTF-8 bytes: these bytes are what the HMAC covers, so
send them exactly as returned.

``message_from_element`` and ``message_to_element`` are the bridge to the WBXML codec,
which works on the same element trees.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from lxml import etree

from . import xml_writer
from .errors import LocalProtocolError, MalformedMessage, RemoteProtocolError, UnsupportedElement
from .messages import (
    Add,
    Alert,
    Anchor,
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
    Mem,
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
from .wbxml import OPAQUE_ATTR

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_SIZE",
    "METINF_NS",
    "SYNCML_NS",
    "message_from_element",
    "message_to_element",
    "parse",
    "parse_element",
    "parse_fragment",
    "serialize",
    "tree_bytes",
]

SYNCML_NS = "SYNCML:SYNCML1.2"
METINF_NS = "syncml:metinf"

#: Largest XML message we parse (bytes). Peers announce far smaller MaxMsgSize values.
DEFAULT_MAX_SIZE = 16 * 1024 * 1024
#: Deepest element nesting we accept; a real DM message is about 10 deep.
DEFAULT_MAX_DEPTH = 64

_DS_ONLY = frozenset(
    {
        "Sync",
        "Map",
        "MapItem",
        "Put",
        "Search",
        "NumberOfChanges",
        "Move",
        "Filter",
        "Field",
        "Record",
        "FilterType",
        "SourceParent",
        "TargetParent",
    }
)

_E = etree._Element
_LEADING_JUNK = (b"\xef", b" ", b"\t", b"\r", b"\n")
_T = TypeVar("_T")


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        remove_comments=True,
        remove_pis=True,
        huge_tree=False,
        # Note: collect_ids=False makes libxml2 try to fetch the DOCTYPE's DTD; keep the default.
    )


# lxml parsers must not be shared between threads, but are cheap to keep one per thread.
_thread_state = threading.local()


def _get_parser() -> etree.XMLParser:
    parser: etree.XMLParser | None = getattr(_thread_state, "parser", None)
    if parser is None:
        parser = _thread_state.parser = _parser()
    return parser


# ---------------------------------------------------------------------------------------
# Parsing


def parse_element(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> _E:
    """Parse XML bytes into an element tree, refusing DTD subsets, entities and oversize input."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessage(f"XML input must be bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise MalformedMessage(
            f"message of {len(data)} bytes exceeds the {max_size}-byte limit", status_hint=413
        )
    data = bytes(data)
    if data[:1] in _LEADING_JUNK:
        # Tolerated: a UTF-8 BOM or blank lines before the XML declaration (seen from
        # servers that print a newline before the document).
        data = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not data:
        raise MalformedMessage("empty message: no XML document")
    try:
        root = etree.fromstring(data, _get_parser())
    except etree.XMLSyntaxError as exc:
        raise MalformedMessage(f"not well-formed XML: {exc.msg}") from None
    except (ValueError, etree.LxmlError) as exc:
        raise MalformedMessage(f"unreadable XML: {exc}") from None
    dtd = root.getroottree().docinfo.internalDTD
    if dtd is not None and (
        any(True for _ in dtd.iterentities())  # type: ignore[union-attr]
        or any(True for _ in dtd.iterelements())  # type: ignore[union-attr]
    ):
        raise MalformedMessage("DOCTYPE with an internal subset (entity or element declarations) refused")
    return root


def parse(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE, max_depth: int = DEFAULT_MAX_DEPTH) -> Message:
    """Decode one XML SyncML DM message.

    Raises:
        MalformedMessage: the bytes are not a well-formed, acceptable SyncML document.
        UnsupportedElement: the document uses an element DM does not use (e.g. DS ``Sync``).
    """
    return message_from_element(parse_element(data, max_size=max_size), max_depth=max_depth)


_LOCAL_NAMES: dict[str, str] = {}


def _local(tag: object) -> str:
    """The local name of a tag (``{ns}Name`` -> ``Name``); empty for comments and PIs."""
    if not isinstance(tag, str):
        return ""
    name = _LOCAL_NAMES.get(tag)
    if name is None:
        name = tag.rpartition("}")[2]
        if len(_LOCAL_NAMES) < 4096:  # bounded: tags come from peers
            _LOCAL_NAMES[tag] = name
    return name


def _name(child: _E, parent: _E) -> str:
    """The local name of a child element; "" for a comment or PI; an entity reference is refused."""
    # The hottest call of decoding: one type test per child (an element's tag is a str;
    # comments, PIs and entity references have lxml's factory functions as their tag).
    tag = child.tag
    if tag.__class__ is str:
        return _LOCAL_NAMES.get(tag) or _local(tag)
    if tag is etree.Entity:
        name = getattr(child, "name", "")
        raise MalformedMessage(f"entity reference &{name}; in <{_local(parent.tag)}> refused")
    return ""


def _children(el: _E) -> Iterator[tuple[str, _E]]:
    for child in el:
        name = _name(child, el)
        if name:
            yield name, child


def _text(el: _E) -> str:
    """Text of a simple element, whitespace-trimmed (identifiers, codes, URIs)."""
    if len(el):
        for child in el:
            if isinstance(child, etree._Entity):
                raise MalformedMessage(f"entity reference &{child.name}; in <{_local(el.tag)}> refused")
            if _local(child.tag):
                parent, found = _local(el.tag), _local(child.tag)
                raise MalformedMessage(f"<{parent}> must hold text, found element <{found}>")
    text = el.text
    return text.strip() if text else ""


def _int(el: _E) -> int:
    text = _text(el)
    try:
        value = int(text)
    except ValueError:
        raise MalformedMessage(f"<{_local(el.tag)}> must be a non-negative integer, got {text!r}") from None
    if value < 0:
        raise MalformedMessage(f"<{_local(el.tag)}> must be a non-negative integer, got {text!r}")
    return value


def _unknown(parent: str, name: str) -> RemoteProtocolError:
    if name in _DS_ONLY:
        return UnsupportedElement(
            f"<{name}> in <{parent}> is a SyncML DS element that device management does not use",
            status_hint=406,
        )
    return UnsupportedElement(f"unknown element <{name}> in <{parent}>")


class _Fields:
    """Collects an element's children by local name, rejecting unknown ones."""

    __slots__ = ("_parent", "values")

    def __init__(self, parent: str) -> None:
        self._parent = parent
        self.values: dict[str, object] = {}

    def one(self, name: str, value: object) -> None:
        if name in self.values:
            raise MalformedMessage(f"<{self._parent}> has more than one <{name}>")
        self.values[name] = value

    def many(self, name: str, value: object) -> None:
        lst = self.values.setdefault(name, [])
        assert isinstance(lst, list)
        lst.append(value)

    def get(self, name: str, kind: type[_T]) -> _T | None:
        value = self.values.get(name)
        return value if isinstance(value, kind) else None

    def required(self, name: str, kind: type[_T]) -> _T:
        value = self.values.get(name)
        if not isinstance(value, kind):
            raise MalformedMessage(f"<{self._parent}> lacks the mandatory <{name}>")
        return value

    def tuple_of(self, name: str, kind: type[_T]) -> tuple[_T, ...]:
        value = self.values.get(name)
        if not isinstance(value, list):
            return ()
        return tuple(v for v in value if isinstance(v, kind))


def _parse_meta(el: _E) -> Meta:
    # On most Items (Format, Type): a dict of parsed fields, each parsed by its own function.
    values: dict[str, Any] = {}
    emi: list[str] = []
    _meta_fields(el, values, emi)
    if not emi and len(values) == 1 and "Format" in values:  # the usual Item Meta
        return Meta(format=values["Format"])
    get = values.get
    return Meta(
        format=get("Format"),
        type=get("Type"),
        mark=get("Mark"),
        size=get("Size"),
        anchor=get("Anchor"),
        version=get("Version"),
        next_nonce=get("NextNonce"),
        max_msg_size=get("MaxMsgSize"),
        max_obj_size=get("MaxObjSize"),
        emi=tuple(emi),
        mem=get("Mem"),
        field_level="FieldLevel" in values,
    )


def _meta_fields(container: _E, values: dict[str, Any], emi: list[str]) -> None:
    for child in container:
        name = _name(child, container)
        if not name:
            continue  # a comment or processing instruction
        if name == "MetInf":  # a wrapper some encoders emit; its children are the fields
            _meta_fields(child, values, emi)
        elif name == "EMI":
            emi.append((child.text or "").strip())
        else:
            parse = _META_PARTS.get(name)
            if parse is None:
                raise _unknown("Meta", name)
            if name in values:
                raise MalformedMessage(f"<Meta> has more than one <{name}>")
            values[name] = parse(child)


def _parse_anchor(el: _E) -> Anchor:
    f = _Fields("Anchor")
    for name, child in _children(el):
        if name in ("Last", "Next"):
            f.one(name, _text(child))
        else:
            raise _unknown("Anchor", name)
    return Anchor(last=f.get("Last", str), next=f.get("Next", str))


def _parse_mem(el: _E) -> Mem:
    f = _Fields("Mem")
    for name, child in _children(el):
        if name == "SharedMem":
            f.one(name, True)
        elif name in ("FreeMem", "FreeID"):
            f.one(name, _int(child))
        else:
            raise _unknown("Mem", name)
    return Mem(
        shared_mem=bool(f.get("SharedMem", bool)),
        free_mem=f.get("FreeMem", int),
        free_id=f.get("FreeID", int),
    )


_META_PARTS: dict[str, Callable[[_E], Any]] = {
    "Format": lambda child: _text(child).lower(),
    "Type": _text,
    "Mark": _text,
    "Version": _text,
    "NextNonce": _text,
    "Size": _int,
    "MaxMsgSize": _int,
    "MaxObjSize": _int,
    "FieldLevel": lambda child: True,
    "Anchor": _parse_anchor,
    "Mem": _parse_mem,
}


def _parse_locator(el: _E, kind: Callable[[str, str | None], _T]) -> _T:
    # Every Item has one or two: the child loop inline (no generator), same checks, same errors.
    uri: str | None = None
    name_: str | None = None
    for child in el:
        name = _name(child, el)
        if not name:
            continue  # a comment or processing instruction
        if name == "LocURI":
            if uri is not None:
                raise MalformedMessage(f"<{_local(el.tag)}> has more than one <LocURI>")
            uri = _text(child)
        elif name == "LocName":
            if name_ is not None:
                raise MalformedMessage(f"<{_local(el.tag)}> has more than one <LocName>")
            name_ = _text(child)
        else:
            raise _unknown(_local(el.tag), name)
    if uri is None:
        raise MalformedMessage(f"<{_local(el.tag)}> lacks the mandatory <LocURI>")
    return kind(uri, name_)


def _parse_cred(el: _E) -> Cred:
    f = _Fields("Cred")
    for name, child in _children(el):
        if name == "Meta":
            f.one(name, _parse_meta(child))
        elif name == "Data":
            f.one(name, _text(child))
        else:
            raise _unknown("Cred", name)
    return Cred(data=f.required("Data", str), meta=f.get("Meta", Meta))


def _parse_chal(el: _E) -> Chal:
    f = _Fields("Chal")
    for name, child in _children(el):
        if name == "Meta":
            f.one(name, _parse_meta(child))
        else:
            raise _unknown("Chal", name)
    return Chal(meta=f.get("Meta", Meta) or Meta())


def _parse_data(el: _E) -> str | bytes:
    """Item data: exact text, bytes for WBXML OPAQUE, or embedded XML (e.g. TNDS) as text."""
    if el.get(OPAQUE_ATTR) is not None:
        try:
            return base64.b64decode(el.text or "", validate=True)
        except (binascii.Error, ValueError):
            raise MalformedMessage("<Data> holds undecodable binary content") from None
    if not len(el):  # the usual case: plain text
        return el.text or ""
    elements = [child for child in el if isinstance(child.tag, str)]
    for child in el:
        if isinstance(child, etree._Entity):
            raise MalformedMessage(f"entity reference &{child.name}; in <Data> refused")
    if not elements:
        return el.text or ""
    # Embedded XML (a TNDS MgmtTree, a DS DevInf): hand it on as one XML text.
    parts = [] if not (el.text and el.text.strip()) else [el.text.strip()]
    for child in elements:
        tail, child.tail = child.tail, None
        parts.append(etree.tostring(child, encoding="unicode"))
        child.tail = tail
    return "".join(parts)


def _parse_item(el: _E) -> Item:
    # The most frequent element of a message (inventory Results carry dozens): the child loop
    # inline, each part in a local, refused when it comes twice.
    target: Target | None = None
    source: Source | None = None
    meta: Meta | None = None
    data: str | bytes | None = None
    seen: set[str] = set()
    for child in el:
        name = _name(child, el)
        if not name:
            continue  # a comment or processing instruction
        if name in seen:
            raise MalformedMessage(f"<Item> has more than one <{name}>")
        seen.add(name)
        if name == "Source":
            source = _parse_locator(child, Source)
        elif name == "Data":
            data = _parse_data(child)
        elif name == "Meta":
            meta = _parse_meta(child)
        elif name == "Target":
            target = _parse_locator(child, Target)
        elif name != "MoreData":
            raise _unknown("Item", name)
    return Item(target=target, source=source, meta=meta, data=data, more_data="MoreData" in seen)


_ITEM_COMMANDS: dict[str, type[ItemCommand]] = {
    "Add": Add,
    "Replace": Replace,
    "Copy": Copy,
    "Delete": Delete,
    "Get": Get,
    "Exec": Exec,
}


def _parse_command(name: str, el: _E, depth: int, max_depth: int) -> Command:
    if depth > max_depth:
        raise MalformedMessage(f"<{name}> nested deeper than {max_depth} levels")
    f = _Fields(name)
    inner: list[Command] = []
    for child_name, child in _children(el):
        if child_name in ("CmdID", "MsgRef", "CmdRef", "Cmd", "Correlator", "Lang") or child_name == "Data":
            f.one(child_name, _text(child))
        elif child_name in ("TargetRef", "SourceRef"):
            f.many(child_name, _text(child))
        elif child_name in ("NoResp", "Archive", "SftDel", "NoResults"):
            f.one(child_name, True)
        elif child_name == "Meta":
            f.one(child_name, _parse_meta(child))
        elif child_name == "Cred":
            f.one(child_name, _parse_cred(child))
        elif child_name == "Chal":
            f.one(child_name, _parse_chal(child))
        elif child_name == "Item":
            f.many(child_name, _parse_item(child))
        elif name in ("Atomic", "Sequence") and child_name in _COMMAND_NAMES:
            inner.append(_parse_command(child_name, child, depth + 1, max_depth))
        else:
            raise _unknown(name, child_name)

    cmd_id = f.required("CmdID", str)
    if not cmd_id:
        raise MalformedMessage(f"<{name}> has an empty <CmdID>")
    items = f.tuple_of("Item", Item)
    meta = f.get("Meta", Meta)
    cred = f.get("Cred", Cred)
    no_resp = "NoResp" in f.values
    if name in _ITEM_COMMANDS:
        _forbid(f, name, ("MsgRef", "CmdRef", "Cmd", "TargetRef", "SourceRef", "Chal", "Data"))
        if name == "Exec":
            return Exec(cmd_id, items, meta, cred, no_resp, correlator=f.get("Correlator", str))
        _forbid(f, name, ("Correlator",))
        if name == "Get":
            return Get(cmd_id, items, meta, cred, no_resp, lang=f.get("Lang", str))
        if name == "Delete":
            return Delete(
                cmd_id,
                items,
                meta,
                cred,
                no_resp,
                archive="Archive" in f.values,
                sft_del="SftDel" in f.values,
            )
        return _ITEM_COMMANDS[name](cmd_id, items, meta, cred, no_resp)
    if name == "Alert":
        _forbid(f, name, ("MsgRef", "CmdRef", "Cmd", "TargetRef", "SourceRef", "Chal", "Meta"))
        return Alert(
            cmd_id,
            data=f.get("Data", str),
            items=items,
            correlator=f.get("Correlator", str),
            cred=cred,
            no_resp=no_resp,
        )
    if name == "Status":
        return Status(
            cmd_id,
            msg_ref=f.required("MsgRef", str),
            cmd_ref=_status_cmd_ref(f),
            cmd=f.required("Cmd", str),
            data=f.required("Data", str),
            target_refs=f.tuple_of("TargetRef", str),
            source_refs=f.tuple_of("SourceRef", str),
            cred=cred,
            chal=f.get("Chal", Chal),
            items=items,
        )
    if name == "Results":
        target_refs = f.tuple_of("TargetRef", str)
        source_refs = f.tuple_of("SourceRef", str)
        return Results(
            cmd_id,
            cmd_ref=f.required("CmdRef", str),
            msg_ref=f.get("MsgRef", str),
            items=items,
            meta=meta,
            target_ref=target_refs[0] if target_refs else None,
            source_ref=source_refs[0] if source_refs else None,
        )
    # Atomic / Sequence
    _forbid(f, name, ("MsgRef", "CmdRef", "Cmd", "TargetRef", "SourceRef", "Chal", "Data", "Item"))
    container = Atomic if name == "Atomic" else Sequence
    return container(cmd_id, commands=tuple(inner), meta=meta, no_resp=no_resp)


def _status_cmd_ref(f: _Fields) -> str:
    """CmdRef of a Status; printed spec examples omit it on the SyncHdr's Status, where it is 0."""
    ref = f.get("CmdRef", str)
    if ref is None and f.get("Cmd", str) == "SyncHdr":
        return "0"
    return f.required("CmdRef", str)


def _forbid(f: _Fields, name: str, children: tuple[str, ...]) -> None:
    for child in children:
        if child in f.values:
            raise UnsupportedElement(f"<{child}> is not allowed in <{name}>")


_COMMAND_NAMES = frozenset({*_ITEM_COMMANDS, "Alert", "Atomic", "Sequence", "Status", "Results"})


def _parse_header(el: _E) -> SyncHdr:
    f = _Fields("SyncHdr")
    for name, child in _children(el):
        if name in ("VerDTD", "VerProto", "SessionID", "MsgID", "RespURI"):
            f.one(name, _text(child))
        elif name == "Target":
            f.one(name, _parse_locator(child, Target))
        elif name == "Source":
            f.one(name, _parse_locator(child, Source))
        elif name == "NoResp":
            f.one(name, True)
        elif name == "Cred":
            f.one(name, _parse_cred(child))
        elif name == "Meta":
            f.one(name, _parse_meta(child))
        else:
            raise _unknown("SyncHdr", name)
    session_id = f.required("SessionID", str)
    msg_id = f.required("MsgID", str)
    if not session_id or not msg_id:
        raise MalformedMessage("<SyncHdr> has an empty <SessionID> or <MsgID>")
    return SyncHdr(
        session_id=session_id,
        msg_id=msg_id,
        target=f.required("Target", Target),
        source=f.required("Source", Source),
        ver_dtd=f.get("VerDTD", str) or "",
        ver_proto=f.get("VerProto", str) or "",
        resp_uri=f.get("RespURI", str) or None,
        no_resp="NoResp" in f.values,
        cred=f.get("Cred", Cred),
        meta=f.get("Meta", Meta),
    )


def parse_fragment(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> Command | Item | SyncHdr | Meta:
    """Decode one element of a message on its own: a command, an ``Item``, ``SyncHdr`` or ``Meta``.

    For tools and tests that handle the fragments printed in specifications and logs.
    """
    root = parse_element(data, max_size=max_size)
    name = _local(root.tag)
    try:
        if name in _COMMAND_NAMES:
            return _parse_command(name, root, 1, DEFAULT_MAX_DEPTH)
        if name == "Item":
            return _parse_item(root)
        if name == "SyncHdr":
            return _parse_header(root)
        if name == "Meta":
            return _parse_meta(root)
    except LocalProtocolError as exc:
        raise MalformedMessage(str(exc), status_hint=exc.status_hint) from None
    raise _unknown("fragment", name)


def message_from_element(root: _E, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Message:
    """Build a ``Message`` from an element tree (from the XML parser or the WBXML decoder)."""
    try:
        return _message_from_element(root, max_depth)
    except RemoteProtocolError:
        raise
    except LocalProtocolError as exc:  # a model constructor refused a value the peer sent
        raise MalformedMessage(str(exc), status_hint=exc.status_hint) from None
    except RecursionError:
        raise MalformedMessage("message nested too deeply") from None


def _message_from_element(root: _E, max_depth: int) -> Message:
    if _local(root.tag) != "SyncML":
        raise MalformedMessage(f"root element is <{_local(root.tag) or root.tag}>, expected <SyncML>")
    header: SyncHdr | None = None
    body: _E | None = None
    for name, child in _children(root):
        if name == "SyncHdr" and header is None:
            header = _parse_header(child)
        elif name == "SyncBody" and body is None:
            body = child
        else:
            raise (
                _unknown("SyncML", name)
                if name not in ("SyncHdr", "SyncBody")
                else MalformedMessage(f"<SyncML> has more than one <{name}>")
            )
    if body is None:
        raise MalformedMessage("<SyncML> lacks the mandatory <SyncBody>")
    # The body first: a SyncML DS message is refused for its DS elements, whatever its header.
    commands: list[Command] = []
    final = False
    for name, child in _children(body):
        if name == "Final":
            final = True
        elif name in _COMMAND_NAMES:
            commands.append(_parse_command(name, child, 1, max_depth))
        else:
            raise _unknown("SyncBody", name)
    if header is None:
        raise MalformedMessage("<SyncML> lacks the mandatory <SyncHdr>")
    return Message(header=header, commands=tuple(commands), final=final)


# ---------------------------------------------------------------------------------------
# Serializing

_METINF_NSMAP = {None: METINF_NS}


def _sub(parent: _E, tag: str, text: str | None = None) -> _E:
    el = etree.SubElement(parent, f"{{{SYNCML_NS}}}{tag}")
    if text is not None:
        el.text = text
    return el


def _put_meta(parent: _E, meta: Meta | None) -> None:
    if meta is None:
        return
    el = _sub(parent, "Meta")

    def field(tag: str, text: str | None = None) -> _E:
        child = etree.SubElement(el, f"{{{METINF_NS}}}{tag}", nsmap=_METINF_NSMAP)  # type: ignore[arg-type]
        if text is not None:
            child.text = text
        return child

    if meta.format is not None:
        field("Format", meta.format)
    if meta.type is not None:
        field("Type", meta.type)
    if meta.mark is not None:
        field("Mark", meta.mark)
    if meta.size is not None:
        field("Size", str(meta.size))
    if meta.anchor is not None:
        anchor = field("Anchor")
        for tag, value in (("Last", meta.anchor.last), ("Next", meta.anchor.next)):
            if value is not None:
                etree.SubElement(anchor, f"{{{METINF_NS}}}{tag}").text = value
    if meta.version is not None:
        field("Version", meta.version)
    if meta.next_nonce is not None:
        field("NextNonce", meta.next_nonce)
    if meta.max_msg_size is not None:
        field("MaxMsgSize", str(meta.max_msg_size))
    if meta.max_obj_size is not None:
        field("MaxObjSize", str(meta.max_obj_size))
    for emi in meta.emi:
        field("EMI", emi)
    if meta.mem is not None:
        mem = field("Mem")
        if meta.mem.shared_mem:
            etree.SubElement(mem, f"{{{METINF_NS}}}SharedMem")
        if meta.mem.free_mem is not None:
            etree.SubElement(mem, f"{{{METINF_NS}}}FreeMem").text = str(meta.mem.free_mem)
        if meta.mem.free_id is not None:
            etree.SubElement(mem, f"{{{METINF_NS}}}FreeID").text = str(meta.mem.free_id)
    if meta.field_level:
        field("FieldLevel")


def _put_locator(parent: _E, tag: str, loc: Target | Source | None) -> None:
    if loc is None:
        return
    el = _sub(parent, tag)
    _sub(el, "LocURI", loc.loc_uri)
    if loc.loc_name is not None:
        _sub(el, "LocName", loc.loc_name)


def _put_cred(parent: _E, cred: Cred | None) -> None:
    if cred is None:
        return
    el = _sub(parent, "Cred")
    _put_meta(el, cred.meta)
    _sub(el, "Data", cred.data)


def _put_item(parent: _E, item: Item) -> None:
    el = _sub(parent, "Item")
    _put_locator(el, "Target", item.target)
    _put_locator(el, "Source", item.source)
    _put_meta(el, item.meta)
    if item.data is not None:
        data = _sub(el, "Data")
        if isinstance(item.data, bytes):
            data.set(OPAQUE_ATTR, "base64")
            data.text = base64.b64encode(item.data).decode("ascii")
        else:
            data.text = item.data
    if item.more_data:
        _sub(el, "MoreData")


def _put_items(parent: _E, items: tuple[Item, ...]) -> None:
    for item in items:
        _put_item(parent, item)


def _put_command(parent: _E, cmd: Command) -> None:
    el = _sub(parent, cmd.name)
    _sub(el, "CmdID", cmd.cmd_id)
    if isinstance(cmd, Status):
        _sub(el, "MsgRef", cmd.msg_ref)
        _sub(el, "CmdRef", cmd.cmd_ref)
        _sub(el, "Cmd", cmd.cmd)
        for ref in cmd.target_refs:
            _sub(el, "TargetRef", ref)
        for ref in cmd.source_refs:
            _sub(el, "SourceRef", ref)
        _put_cred(el, cmd.cred)
        if cmd.chal is not None:
            _put_meta(_sub(el, "Chal"), cmd.chal.meta)
        _sub(el, "Data", cmd.data)
        _put_items(el, cmd.items)
    elif isinstance(cmd, Results):
        if cmd.msg_ref is not None:
            _sub(el, "MsgRef", cmd.msg_ref)
        _sub(el, "CmdRef", cmd.cmd_ref)
        _put_meta(el, cmd.meta)
        if cmd.target_ref is not None:
            _sub(el, "TargetRef", cmd.target_ref)
        if cmd.source_ref is not None:
            _sub(el, "SourceRef", cmd.source_ref)
        _put_items(el, cmd.items)
    elif isinstance(cmd, ItemCommand):
        if cmd.no_resp:
            _sub(el, "NoResp")
        if isinstance(cmd, Delete):
            if cmd.archive:
                _sub(el, "Archive")
            if cmd.sft_del:
                _sub(el, "SftDel")
        if isinstance(cmd, Get) and cmd.lang is not None:
            _sub(el, "Lang", cmd.lang)
        _put_cred(el, cmd.cred)
        _put_meta(el, cmd.meta)
        if isinstance(cmd, Exec) and cmd.correlator is not None:
            _sub(el, "Correlator", cmd.correlator)
        _put_items(el, cmd.items)
    elif isinstance(cmd, Alert):
        if cmd.no_resp:
            _sub(el, "NoResp")
        _put_cred(el, cmd.cred)
        if cmd.data is not None:
            _sub(el, "Data", cmd.data)
        if cmd.correlator is not None:
            _sub(el, "Correlator", cmd.correlator)
        _put_items(el, cmd.items)
    elif isinstance(cmd, Atomic | Sequence):
        if cmd.no_resp:
            _sub(el, "NoResp")
        _put_meta(el, cmd.meta)
        for inner in cmd.commands:
            _put_command(el, inner)
    else:  # pragma: no cover - Command is closed to this module's classes
        raise LocalProtocolError(f"cannot serialize {type(cmd).__name__}")


def message_to_element(msg: Message) -> _E:
    """Build the element tree of a message, children in DTD order."""
    root = etree.Element(f"{{{SYNCML_NS}}}SyncML", nsmap={None: SYNCML_NS})  # type: ignore[dict-item]
    hdr = msg.header
    h = _sub(root, "SyncHdr")
    _sub(h, "VerDTD", hdr.ver_dtd)
    _sub(h, "VerProto", hdr.ver_proto)
    _sub(h, "SessionID", hdr.session_id)
    _sub(h, "MsgID", hdr.msg_id)
    _put_locator(h, "Target", hdr.target)
    _put_locator(h, "Source", hdr.source)
    if hdr.resp_uri is not None:
        _sub(h, "RespURI", hdr.resp_uri)
    if hdr.no_resp:
        _sub(h, "NoResp")
    _put_cred(h, hdr.cred)
    _put_meta(h, hdr.meta)
    body = _sub(root, "SyncBody")
    for cmd in msg.commands:
        _put_command(body, cmd)
    if msg.final:
        _sub(body, "Final")
    return root


def serialize(msg: Message, *, pretty: bool = False) -> bytes:
    """Encode a message as UTF-8 XML bytes (the exact bytes to send and to MAC).

    Binary item data (``bytes``) is written as base64 text and its item's ``Meta/Format``
    becomes ``b64``: OMA DM requires binary values to travel as b64 over XML. The compact
    form is written as text by ``xml_writer`` (the same bytes as :func:`tree_bytes`, faster);
    the pretty one, for people, goes through the element tree.
    """
    if not pretty:
        return xml_writer.to_bytes(msg)
    return tree_bytes(msg, pretty=True)


def tree_bytes(msg: Message, *, pretty: bool = False) -> bytes:
    """``serialize`` through the element tree (``message_to_element``) and lxml's writer."""
    root = message_to_element(msg)
    binary = [data for data in root.iter(f"{{{SYNCML_NS}}}Data") if data.get(OPAQUE_ATTR) is not None]
    for data in binary:
        del data.attrib[OPAQUE_ATTR]
        _mark_b64(data.getparent())
    if binary:
        etree.cleanup_namespaces(root)
    out: bytes = etree.tostring(root, encoding="UTF-8", xml_declaration=True, pretty_print=pretty)
    return out


def _mark_b64(item: _E | None) -> None:
    """Give the Item holding binary data ``Meta/Format`` b64, creating Meta if needed."""
    if item is None:
        return
    meta = item.find(f"{{{SYNCML_NS}}}Meta")
    if meta is None:
        meta = etree.Element(f"{{{SYNCML_NS}}}Meta")
        anchor = item.find(f"{{{SYNCML_NS}}}Data")
        assert anchor is not None
        anchor.addprevious(meta)
    fmt = meta.find(f"{{{METINF_NS}}}Format")
    if fmt is None:
        fmt = etree.Element(f"{{{METINF_NS}}}Format", nsmap=_METINF_NSMAP)  # type: ignore[arg-type]
        meta.insert(0, fmt)
    fmt.text = "b64"
