"""One entry point for both wire formats: detect, decode and encode DM messages.

DM peers send ``application/vnd.syncml.dm+xml`` or ``…+wbxml``; some send the SyncML DS
types ``application/vnd.syncml+xml`` / ``+wbxml`` instead (pitfall 30), with or without
``; charset=`` parameters. The first byte decides when the header is missing or wrong:
``<`` (after optional BOM and white space) is XML, ``0x01``-``0x03`` is WBXML.
"""

from __future__ import annotations

from enum import StrEnum

from . import wbxml, wbxml_reader, wbxml_writer, xml_codec
from .errors import MalformedMessage
from .messages import Message

__all__ = [
    "CONTENT_TYPES",
    "Encoding",
    "decode",
    "detect_encoding",
    "encode",
    "encoding_for_content_type",
]


class Encoding(StrEnum):
    """The two encodings of a SyncML DM message."""

    XML = "xml"
    WBXML = "wbxml"

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self]


CONTENT_TYPES: dict[Encoding, str] = {
    Encoding.XML: "application/vnd.syncml.dm+xml",
    Encoding.WBXML: "application/vnd.syncml.dm+wbxml",
}

_TYPE_NAMES: dict[str, Encoding] = {
    "application/vnd.syncml.dm+xml": Encoding.XML,
    "application/vnd.syncml+xml": Encoding.XML,
    "application/xml": Encoding.XML,
    "text/xml": Encoding.XML,
    "application/vnd.syncml.dm+wbxml": Encoding.WBXML,
    "application/vnd.syncml+wbxml": Encoding.WBXML,
}


def encoding_for_content_type(content_type: str | None) -> Encoding | None:
    """The encoding a Content-Type names, ignoring parameters and case; None if unknown."""
    if not content_type:
        return None
    return _TYPE_NAMES.get(content_type.split(";", 1)[0].strip().lower())


def detect_encoding(data: bytes, content_type: str | None = None) -> Encoding:
    """Decide how to decode ``data``: the bytes win over a Content-Type that contradicts them."""
    if wbxml.is_wbxml(data):
        return Encoding.WBXML
    head = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        return Encoding.XML
    named = encoding_for_content_type(content_type)
    if named is not None:
        return named
    raise MalformedMessage("neither XML nor WBXML: the message starts with " + repr(bytes(data[:8])))


def decode(
    data: bytes,
    content_type: str | None = None,
    *,
    max_size: int = xml_codec.DEFAULT_MAX_SIZE,
) -> tuple[Message, Encoding]:
    """Decode a DM message in either encoding; returns the message and the encoding found.

    Raises only ``RemoteProtocolError`` subclasses.
    """
    encoding = detect_encoding(data, content_type)
    if encoding is Encoding.WBXML:
        # Straight to messages when the document is canonical; the element tree otherwise
        # (wbxml_reader declines anything it would not read exactly as the tree path does).
        message = wbxml_reader.to_message(data, max_size=max_size, max_depth=xml_codec.DEFAULT_MAX_DEPTH)
        if message is not None:
            return message, encoding
        root = wbxml.decode(data, max_size=max_size, max_depth=xml_codec.DEFAULT_MAX_DEPTH)
        return xml_codec.message_from_element(root), encoding
    return xml_codec.parse(data, max_size=max_size), encoding


def encode(message: Message, encoding: Encoding = Encoding.XML) -> bytes:
    """Encode a message; the returned bytes are exactly what must be sent (and MAC'd).

    Both encodings are written straight from the message objects (``xml_writer``,
    ``wbxml_writer``), each held byte for byte to the element-tree path by property tests.
    """
    if encoding is Encoding.WBXML:
        return wbxml_writer.to_bytes(message)
    return xml_codec.serialize(message)
