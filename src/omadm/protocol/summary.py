"""Human-oriented views of DM documents, for tools (``omadm codec``) and logs.

A command line tool meets more than SyncML messages: operators also convert TNDS and
DDF ``MgmtTree`` documents between XML and WBXML. :func:`load` therefore decodes a
``<SyncML>`` document through the message model (so it is validated exactly as a peer's
message would be) and keeps any other well-formed document as an element tree, which
:func:`convert` can still re-encode.

:func:`describe` gives a one-line summary of a message; :func:`lint` lists what a
*strict* sender would not have done. The decoders are deliberately lenient (they accept
what deployed peers send), so a message that decodes may still deserve a warning.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from lxml import etree

from . import codec, wbxml, xml_codec
from .codec import Encoding
from .errors import MalformedMessage, RemoteProtocolError
from .messages import Atomic, Command, Message, Sequence, Status

__all__ = [
    "EXPECTED_VER_DTD",
    "EXPECTED_VER_PROTO",
    "TIMES",
    "Document",
    "convert",
    "describe",
    "describe_document",
    "lint",
    "load",
]

_E = etree._Element

#: The versions a DM 1.2 sender must put in every SyncHdr.
EXPECTED_VER_DTD = "1.2"
EXPECTED_VER_PROTO = "DM/1.2"
#: Joins a repeated command's name and its count in :func:`describe`.
TIMES = "\N{MULTIPLICATION SIGN}"


@dataclass(frozen=True, slots=True)
class Document:
    """A decoded input: a validated ``message``, or the ``tree`` of a non-SyncML document.

    Exactly one of ``message`` and ``tree`` is set. ``encoding`` is the input's encoding.
    """

    encoding: Encoding
    message: Message | None = None
    tree: _E | None = None

    @property
    def root_name(self) -> str:
        """Local name of the root element (``SyncML`` for a message)."""
        if self.message is not None:
            return "SyncML"
        assert self.tree is not None
        return _local(self.tree.tag)


def load(
    data: bytes, content_type: str | None = None, *, max_size: int = xml_codec.DEFAULT_MAX_SIZE
) -> Document:
    """Decode XML or WBXML: a ``<SyncML>`` root through the message model, anything else as a tree.

    A document whose root *is* ``SyncML`` but which the model refuses is an error, never
    silently downgraded to a tree: the point of checking a message is to validate it.

    Raises:
        RemoteProtocolError: the bytes are neither XML nor WBXML, not well-formed, or a
            SyncML message the decoders refuse.
    """
    if not data:
        raise MalformedMessage("empty input: no XML or WBXML document")
    try:
        message, encoding = codec.decode(data, content_type, max_size=max_size)
    except RemoteProtocolError as exc:
        failure = exc
    else:
        return Document(encoding, message=message)
    encoding = codec.detect_encoding(data, content_type)
    try:
        tree = _parse_tree(data, encoding, max_size)
    except RemoteProtocolError:
        raise failure from None
    if _local(tree.tag) == "SyncML":
        raise failure
    return Document(encoding, tree=tree)


def convert(document: Document, encoding: Encoding) -> bytes:
    """Encode a loaded document in ``encoding``; XML comes out pretty-printed for people.

    Pretty XML is for reading and editing: its whitespace is not part of any value the
    model keeps, but do not MAC or send these bytes in place of :func:`codec.encode`'s.

    Raises:
        LocalProtocolError: the document cannot be expressed in WBXML (e.g. an element
            no SyncML code page has a token for).
    """
    if document.message is not None:
        if encoding is Encoding.XML:
            return xml_codec.serialize(document.message, pretty=True)
        return codec.encode(document.message, Encoding.WBXML)
    assert document.tree is not None
    if encoding is Encoding.WBXML:
        return wbxml.encode(document.tree)
    tree = copy.deepcopy(document.tree)
    # XML carries binary values as base64 text: the WBXML decoder's marker has no place in it.
    opaque = [el for el in tree.iter() if el.get(wbxml.OPAQUE_ATTR) is not None]
    for el in opaque:
        del el.attrib[wbxml.OPAQUE_ATTR]
    if opaque:
        etree.cleanup_namespaces(tree)
    etree.indent(tree, space="  ")
    out: bytes = etree.tostring(tree, encoding="UTF-8", xml_declaration=True, pretty_print=True)
    return out


def describe(message: Message, encoding: Encoding) -> str:
    """One line naming the message's encoding, versions, identity and commands.

    Example: ``SyncML DM message, XML, 1.2/DM/1.2, SessionID 1, MsgID 2, 5 commands
    (Status×3, Get, Replace), Final``. Top-level commands are listed in order of first
    appearance, a repeated name with :data:`TIMES` and its count; an Atomic or Sequence
    counts once, as the container a reader looks for.
    """  # noqa: RUF002
    hdr = message.header
    counts = Counter(cmd.name for cmd in message.commands)
    names = ", ".join(name if n == 1 else f"{name}{TIMES}{n}" for name, n in counts.items())
    total = len(message.commands)
    commands = f"{total} command{'' if total == 1 else 's'}" + (f" ({names})" if names else "")
    return ", ".join(
        [
            "SyncML DM message",
            encoding.value.upper(),
            f"{hdr.ver_dtd or '?'}/{hdr.ver_proto or '?'}",
            f"SessionID {hdr.session_id}",
            f"MsgID {hdr.msg_id}",
            commands,
            "Final" if message.final else "no Final",
        ]
    )


def describe_document(document: Document) -> str:
    """:func:`describe` for messages; a shorter line for TNDS/DDF and other documents."""
    if document.message is not None:
        return describe(document.message, document.encoding)
    assert document.tree is not None
    tree = document.tree
    name = _local(tree.tag)
    fmt = document.encoding.value.upper()
    if name == "MgmtTree":
        nodes = sum(1 for el in tree.iter() if _local(el.tag) == "Node")
        ver = next(((el.text or "").strip() for el in tree if _local(el.tag) == "VerDTD"), "") or "?"
        return (
            f"DM DDF/TNDS MgmtTree document, {fmt}, VerDTD {ver}, {nodes} node{'' if nodes == 1 else 's'}"
            " (not a SyncML message: checked for well-formedness only)"
        )
    return f"<{name}> document, {fmt} (not a SyncML message: checked for well-formedness only)"


def lint(message: Message, data: bytes | None = None, encoding: Encoding | None = None) -> list[str]:
    """What a strict DM 1.2 sender would not do, as readable sentences (empty if nothing).

    ``data`` (the raw input) and its ``encoding`` let the check see ``Meta/Format`` as
    sent: the model stores it lower-cased (pitfall 21), so only the raw bytes tell.
    """
    problems: list[str] = []
    hdr = message.header
    for element, value, expected in (
        ("VerDTD", hdr.ver_dtd, EXPECTED_VER_DTD),
        ("VerProto", hdr.ver_proto, EXPECTED_VER_PROTO),
    ):
        if not value:
            problems.append(f"SyncHdr lacks <{element}> (expected {expected})")
        elif value != expected:
            problems.append(f"<{element}> is {value!r}, expected {expected!r}")

    seen: set[str] = set()
    for cmd in _walk(message.commands):
        cmd_id = cmd.cmd_id
        if not (cmd_id.isascii() and cmd_id.isdigit()):
            problems.append(f"<{cmd.name}> has a non-numeric CmdID {cmd_id!r}")
        elif int(cmd_id) == 0:
            problems.append(f"<{cmd.name}> has CmdID 0, which Status/CmdRef uses for the SyncHdr")
        if cmd_id in seen:
            problems.append(f"CmdID {cmd_id!r} is used by more than one command (<{cmd.name}>)")
        seen.add(cmd_id)

    for index, cmd in enumerate(message.commands):
        if isinstance(cmd, Status) and (cmd.cmd == "SyncHdr" or cmd.cmd_ref == "0") and index > 0:
            problems.append(
                f"the Status for the SyncHdr is command #{index + 1} of the body; it must come first"
            )

    if data is not None and encoding is not None:
        for value in sorted(set(_raw_formats(data, encoding))):
            if value != value.lower():
                problems.append(
                    f"Meta/Format {value!r} is not lower case (a strict sender writes {value.lower()!r})"
                )

    if not message.final:
        problems.append("no <Final/>: the package continues in a later message")
    return problems


def _walk(commands: Iterable[Command]) -> Iterator[Command]:
    """Every command, containers before their contents."""
    for cmd in commands:
        yield cmd
        if isinstance(cmd, Atomic | Sequence):
            yield from _walk(cmd.commands)


_XML_FORMAT = re.compile(rb"<(?:[\w.-]+:)?Format\b[^>]*>\s*([^<]*?)\s*</")


def _raw_formats(data: bytes, encoding: Encoding) -> list[str]:
    """``Format`` texts as sent: a regex scan of XML, the element tree of WBXML."""
    if encoding is Encoding.XML:
        return [m.group(1).decode("utf-8", "replace") for m in _XML_FORMAT.finditer(data)]
    try:
        tree = wbxml.decode(data)
    except RemoteProtocolError:
        return []
    return [
        (el.text or "").strip() for el in tree.iter("{*}Format") if len(el) == 0 and (el.text or "").strip()
    ]


def _parse_tree(data: bytes, encoding: Encoding, max_size: int) -> _E:
    if encoding is Encoding.WBXML:
        return wbxml.decode(data, max_size=max_size)
    return xml_codec.parse_element(data, max_size=max_size)


def _local(tag: object) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""
