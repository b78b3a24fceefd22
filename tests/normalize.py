"""Compare DM messages decoded by different codecs: the same tree up to representation."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

from lxml import etree

_PARSER = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True)


def _canonical_data(data: str | bytes) -> str | bytes:
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(data).decode("ascii")
    text = data.strip()
    if text.startswith("<"):
        try:
            root = etree.fromstring(text.encode("utf-8"), _PARSER)
        except etree.XMLSyntaxError:
            return text
        for el in root.iter():
            if el.text is not None and not el.text.strip():
                el.text = None
            if el.tail is not None and not el.tail.strip():
                el.tail = None
        return etree.tostring(root, method="c14n").decode("utf-8")
    return text


def normalize(value: Any) -> Any:
    """Data trimmed, embedded XML canonicalised, binary as base64, ``+wbxml`` types as ``+xml``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {}
        for f in dataclasses.fields(value):
            current = getattr(value, f.name)
            if f.name == "data" and isinstance(current, str | bytes) and type(value).__name__ == "Item":
                changes[f.name] = _canonical_data(current)
            elif f.name == "type" and isinstance(current, str):
                changes[f.name] = current.replace("dmtnds+wbxml", "dmtnds+xml").replace(
                    "dmddf+wbxml", "dmddf+xml"
                )
            else:
                changes[f.name] = normalize(current)
        return dataclasses.replace(value, **changes)
    if isinstance(value, tuple):
        return tuple(normalize(v) for v in value)
    return value
