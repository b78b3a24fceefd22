"""WBXML SyncML DM messages read straight into message objects, as the tree path would read them.

``codec.decode`` of WBXML built an lxml tree (:func:`wbxml.decode`) and then read it with
``xml_codec.message_from_element``, the XML path's reader. For a device's Pkg#1 that was
~90 µs of tree (WBXML to XML text, lxml's parser; ~200 µs node by node before that) plus
~125 µs of reading it. Here one pass over the tokens builds light ``(name, children, text)``
tuples and a second reads them into messages, with none of lxml's per-node proxies:
``bench/codec.py`` decodes a WBXML Pkg#1 in ~131 µs (was ~333; XML ~157), a 20-command
Pkg#2 in ~300 µs (was ~786; XML ~381) and a 64 KB chunk in ~93 µs (was ~373; XML ~98).

It reads the canonical document only and returns ``None`` for anything else, so that the tree
path decodes it, and makes its refusals, exactly as before: text between child elements,
binary or embedded OPAQUE, ENTITY, LITERAL, attributes, code page 2 tags, the ``MetInf``
wrapper, a repeated, unknown or forbidden element, a missing mandatory one, a value the
message classes refuse, any malformation or limit. What it accepts it reads with
``xml_codec``'s rules (identifiers trimmed, ``Format`` lower-cased, ``Item/Data`` exact, the
SyncHdr Status's missing ``CmdRef`` as ``0``); tests hold it to the tree path's messages.
"""

from __future__ import annotations

from typing import Any, Final

from . import wbxml
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

__all__ = ["to_message"]

#: ``(local name, child nodes or None, text or None)``; text and children never both.
_Node = tuple[str, "list[_Node] | None", "str | None"]

_NAMES: Final = {page: wbxml._LOCAL_NAMES[page] for page in (0, 1)}


class _Decline(Exception):
    """Not a canonical document: the tree path decides."""


def to_message(data: bytes, *, max_size: int, max_depth: int) -> Message | None:
    """The message the tree path would decode from ``data``, or ``None`` to use the tree path."""
    data = bytes(data)  # bytearray / memoryview too (bytes itself is not copied)
    if len(data) > max_size:
        return None
    try:
        root = _read_nodes(data, max_size, max_depth)
        if root is None:
            return None
        return _message(root, max_depth)
    except Exception:  # any doubt (a model class refusing a value included): the tree path
        return None


# -- pass 1: tokens to nodes ---------------------------------------------------------------


def _read_nodes(data: bytes, max_size: int, max_depth: int) -> _Node | None:
    """The element tree as nested tuples; ``None`` (or an exception) for anything unusual."""
    header = wbxml._parse_header(data, 0)
    codec = header.codec
    strtbl = header.strtbl
    decode_string = wbxml._decode_string
    names = _NAMES[0]
    budget = max_size
    # Open elements: [name, children, text pieces]; a closed one becomes a _Node.
    stack: list[tuple[str, list[_Node], list[str]]] = []
    root: _Node | None = None
    pos = header.body
    end = len(data)
    find = data.find
    while pos < end:
        token = data[pos]
        low = token & 0x3F
        if low >= 0x05:  # a tag
            name = names[low]
            if name is None or token & 0x80 or root is not None:
                return None
            if stack:
                parent = stack[-1]
                if parent[2] or len(stack) >= max_depth:
                    return None  # text before a child element, or too deep
                siblings = parent[1]
            elif max_depth <= 0:
                return None
            else:
                siblings = None
            if not token & 0x40:
                node: _Node = (name, None, None)
            elif data[pos + 1] == 0x03 and (nul := find(b"\0", pos + 2)) > 0 and data[nul + 1] == 0x01:
                # The usual leaf, <Tag>STR_I</Tag>, in one step.
                text = decode_string(data[pos + 2 : nul], codec)
                if text is None:
                    return None
                node = (name, None, text)
                pos = nul + 1
            else:
                stack.append((name, [], []))
                pos += 1
                continue
            if siblings is None:
                root = node
            else:
                siblings.append(node)
            pos += 1
        elif token == 0x01:  # END
            if not stack:
                return None
            name, children, pieces = stack.pop()
            if children and pieces:
                return None  # text after a child element
            node = (name, children or None, "".join(pieces) if pieces else None)
            if stack:
                stack[-1][1].append(node)
            else:
                root = node
            pos += 1
        elif token == 0x03:  # STR_I
            nul = find(b"\0", pos + 1)
            if nul < 0 or not stack:
                return None
            text = decode_string(data[pos + 1 : nul], codec)
            if text is None:
                return None
            stack[-1][2].append(text)
            pos = nul + 1
        elif token == 0x00:  # SWITCH_PAGE
            page = data[pos + 1]
            if page not in _NAMES:
                return None  # page 2 (DDF) or unknown: the tree path
            names = _NAMES[page]
            pos += 2
        elif token == 0x83:  # STR_T
            if not stack:
                return None
            offset, pos = wbxml._read_mb(data, pos + 1, 0)
            if offset >= len(strtbl):
                return None
            nul = strtbl.find(b"\0", offset)
            text = decode_string(strtbl[offset:] if nul < 0 else strtbl[offset:nul], codec)
            if text is None:
                return None
            budget -= len(text)
            if budget < 0:
                return None
            stack[-1][2].append(text)
        elif token == 0xC3:  # OPAQUE
            if not stack:
                return None
            length, start = wbxml._read_mb(data, pos + 1, 0)
            if length > end - start:
                return None
            blob = data[start : start + length]
            if wbxml._looks_like_ddf_document(blob):
                return None
            text = decode_string(blob, "utf-8")
            if text is None:
                return None  # binary: the tree path marks it base64
            stack[-1][2].append(text)
            pos = start + length
        else:
            return None
    if stack:
        return None
    return root


# -- pass 2: nodes to messages, with xml_codec's rules ---------------------------------------


def _text(node: _Node) -> str:
    """``xml_codec._text``: the text of a simple element, trimmed."""
    if node[1] is not None:
        raise _Decline
    text = node[2]
    return text.strip() if text else ""


def _int(node: _Node) -> int:
    value = int(_text(node))
    if value < 0:
        raise _Decline
    return value


def _meta(node: _Node) -> Meta:
    values: dict[str, Any] = {}
    emi: list[str] = []
    for child in node[1] or ():
        name = child[0]
        if name == "EMI":
            if child[1] is not None:
                raise _Decline
            emi.append((child[2] or "").strip())
            continue
        if name in values:
            raise _Decline
        if name == "Format":
            values[name] = _text(child).lower()
        elif name in ("Type", "Mark", "Version", "NextNonce"):
            values[name] = _text(child)
        elif name in ("Size", "MaxMsgSize", "MaxObjSize"):
            values[name] = _int(child)
        elif name == "FieldLevel":
            values[name] = True
        elif name == "Anchor":
            values[name] = _anchor(child)
        elif name == "Mem":
            values[name] = _mem(child)
        else:  # MetInf wrappers, unknown elements
            raise _Decline
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


def _anchor(node: _Node) -> Anchor:
    values: dict[str, str] = {}
    for child in node[1] or ():
        name = child[0]
        if name not in ("Last", "Next") or name in values:
            raise _Decline
        values[name] = _text(child)
    return Anchor(last=values.get("Last"), next=values.get("Next"))


def _mem(node: _Node) -> Mem:
    shared = False
    values: dict[str, int] = {}
    for child in node[1] or ():
        name = child[0]
        if name == "SharedMem" and not shared:
            shared = True
        elif name in ("FreeMem", "FreeID") and name not in values:
            values[name] = _int(child)
        else:
            raise _Decline
    return Mem(shared_mem=shared, free_mem=values.get("FreeMem"), free_id=values.get("FreeID"))


def _locator(node: _Node, kind: type[Target] | type[Source]) -> Target | Source:
    uri: str | None = None
    loc_name: str | None = None
    for child in node[1] or ():
        name = child[0]
        if name == "LocURI" and uri is None:
            uri = _text(child)
        elif name == "LocName" and loc_name is None:
            loc_name = _text(child)
        else:
            raise _Decline
    if uri is None:
        raise _Decline
    return kind(uri, loc_name)


def _cred(node: _Node) -> Cred:
    meta: Meta | None = None
    data: str | None = None
    for child in node[1] or ():
        name = child[0]
        if name == "Meta" and meta is None:
            meta = _meta(child)
        elif name == "Data" and data is None:
            data = _text(child)
        else:
            raise _Decline
    if data is None:
        raise _Decline
    return Cred(data=data, meta=meta)


def _chal(node: _Node) -> Chal:
    meta: Meta | None = None
    for child in node[1] or ():
        if child[0] != "Meta" or meta is not None:
            raise _Decline
        meta = _meta(child)
    return Chal(meta=meta or Meta())


def _item(node: _Node) -> Item:
    target: Target | Source | None = None
    source: Target | Source | None = None
    meta: Meta | None = None
    data: str | None = None
    seen: set[str] = set()
    for child in node[1] or ():
        name = child[0]
        if name in seen:
            raise _Decline
        seen.add(name)
        if name == "Source":
            source = _locator(child, Source)
        elif name == "Data":
            if child[1] is not None:
                raise _Decline  # embedded XML: the tree path serializes it
            data = child[2] or ""
        elif name == "Meta":
            meta = _meta(child)
        elif name == "Target":
            target = _locator(child, Target)
        elif name != "MoreData":
            raise _Decline
    assert target is None or isinstance(target, Target)
    assert source is None or isinstance(source, Source)
    return Item(target=target, source=source, meta=meta, data=data, more_data="MoreData" in seen)


_ITEM_COMMANDS: Final[dict[str, type[ItemCommand]]] = {
    "Add": Add,
    "Replace": Replace,
    "Copy": Copy,
    "Delete": Delete,
    "Get": Get,
    "Exec": Exec,
}
_COMMAND_NAMES: Final = frozenset({*_ITEM_COMMANDS, "Alert", "Atomic", "Sequence", "Status", "Results"})
_TEXT_FIELDS: Final = frozenset({"CmdID", "MsgRef", "CmdRef", "Cmd", "Correlator", "Lang", "Data"})
_FLAGS: Final = frozenset({"NoResp", "Archive", "SftDel", "NoResults"})
# The children ``xml_codec._parse_command`` forbids, per command.
_NOT_IN_ITEM_COMMAND: Final = ("MsgRef", "CmdRef", "Cmd", "TargetRef", "SourceRef", "Chal", "Data")
_NOT_IN_ALERT: Final = ("MsgRef", "CmdRef", "Cmd", "TargetRef", "SourceRef", "Chal", "Meta")
_NOT_IN_CONTAINER: Final = ("MsgRef", "CmdRef", "Cmd", "TargetRef", "SourceRef", "Chal", "Data", "Item")


def _command(name: str, node: _Node, depth: int, max_depth: int) -> Command:
    """``xml_codec._parse_command``, declining wherever that one raises."""
    if depth > max_depth:
        raise _Decline
    values: dict[str, Any] = {}
    items: list[Item] = []
    target_refs: list[str] = []
    source_refs: list[str] = []
    inner: list[Command] = []
    for child in node[1] or ():
        child_name = child[0]
        if child_name == "Item":
            items.append(_item(child))
            continue
        if child_name == "TargetRef":
            target_refs.append(_text(child))
            continue
        if child_name == "SourceRef":
            source_refs.append(_text(child))
            continue
        if child_name in _COMMAND_NAMES and name in ("Atomic", "Sequence"):
            inner.append(_command(child_name, child, depth + 1, max_depth))
            continue
        if child_name in values:
            raise _Decline
        if child_name in _TEXT_FIELDS:
            values[child_name] = _text(child)
        elif child_name in _FLAGS:
            values[child_name] = True
        elif child_name == "Meta":
            values[child_name] = _meta(child)
        elif child_name == "Cred":
            values[child_name] = _cred(child)
        elif child_name == "Chal":
            values[child_name] = _chal(child)
        else:
            raise _Decline
    if items:
        values["Item"] = True
    if target_refs:
        values["TargetRef"] = True
    if source_refs:
        values["SourceRef"] = True
    cmd_id = values.get("CmdID")
    if not cmd_id:
        raise _Decline
    get = values.get
    meta, cred, no_resp = get("Meta"), get("Cred"), "NoResp" in values
    if name in _ITEM_COMMANDS:
        _forbid(values, _NOT_IN_ITEM_COMMAND)
        if name == "Exec":
            return Exec(cmd_id, tuple(items), meta, cred, no_resp, correlator=get("Correlator"))
        _forbid(values, ("Correlator",))
        if name == "Get":
            return Get(cmd_id, tuple(items), meta, cred, no_resp, lang=get("Lang"))
        if name == "Delete":
            return Delete(
                cmd_id,
                tuple(items),
                meta,
                cred,
                no_resp,
                archive="Archive" in values,
                sft_del="SftDel" in values,
            )
        return _ITEM_COMMANDS[name](cmd_id, tuple(items), meta, cred, no_resp)
    if name == "Alert":
        _forbid(values, _NOT_IN_ALERT)
        return Alert(
            cmd_id,
            data=get("Data"),
            items=tuple(items),
            correlator=get("Correlator"),
            cred=cred,
            no_resp=no_resp,
        )
    if name == "Status":
        cmd_ref = get("CmdRef")
        if cmd_ref is None and get("Cmd") == "SyncHdr":
            cmd_ref = "0"  # printed spec examples omit it on the SyncHdr's Status
        msg_ref, cmd, data = get("MsgRef"), get("Cmd"), get("Data")
        if msg_ref is None or cmd_ref is None or cmd is None or data is None:
            raise _Decline
        return Status(
            cmd_id,
            msg_ref=msg_ref,
            cmd_ref=cmd_ref,
            cmd=cmd,
            data=data,
            target_refs=tuple(target_refs),
            source_refs=tuple(source_refs),
            cred=cred,
            chal=get("Chal"),
            items=tuple(items),
        )
    if name == "Results":
        cmd_ref = get("CmdRef")
        if cmd_ref is None:
            raise _Decline
        return Results(
            cmd_id,
            cmd_ref=cmd_ref,
            msg_ref=get("MsgRef"),
            items=tuple(items),
            meta=meta,
            target_ref=target_refs[0] if target_refs else None,
            source_ref=source_refs[0] if source_refs else None,
        )
    _forbid(values, _NOT_IN_CONTAINER)
    container = Atomic if name == "Atomic" else Sequence
    return container(cmd_id, commands=tuple(inner), meta=meta, no_resp=no_resp)


def _forbid(values: dict[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        if name in values:
            raise _Decline


def _header(node: _Node) -> SyncHdr:
    values: dict[str, Any] = {}
    for child in node[1] or ():
        name = child[0]
        if name in values:
            raise _Decline
        if name in ("VerDTD", "VerProto", "SessionID", "MsgID", "RespURI"):
            values[name] = _text(child)
        elif name == "Target":
            values[name] = _locator(child, Target)
        elif name == "Source":
            values[name] = _locator(child, Source)
        elif name == "NoResp":
            values[name] = True
        elif name == "Cred":
            values[name] = _cred(child)
        elif name == "Meta":
            values[name] = _meta(child)
        else:
            raise _Decline
    get = values.get
    session_id, msg_id, target, source = get("SessionID"), get("MsgID"), get("Target"), get("Source")
    if not session_id or not msg_id or target is None or source is None:
        raise _Decline
    return SyncHdr(
        session_id=session_id,
        msg_id=msg_id,
        target=target,
        source=source,
        ver_dtd=get("VerDTD") or "",
        ver_proto=get("VerProto") or "",
        resp_uri=get("RespURI") or None,
        no_resp="NoResp" in values,
        cred=get("Cred"),
        meta=get("Meta"),
    )


def _message(root: _Node, max_depth: int) -> Message:
    if root[0] != "SyncML":
        raise _Decline
    header: SyncHdr | None = None
    body: _Node | None = None
    for child in root[1] or ():
        if child[0] == "SyncHdr" and header is None:
            header = _header(child)
        elif child[0] == "SyncBody" and body is None:
            body = child
        else:
            raise _Decline
    if header is None or body is None:
        raise _Decline
    commands: list[Command] = []
    final = False
    for child in body[1] or ():
        name = child[0]
        if name == "Final":
            final = True
        elif name in _COMMAND_NAMES:
            commands.append(_command(name, child, 1, max_depth))
        else:
            raise _Decline
    return Message(header=header, commands=tuple(commands), final=final)
