"""Why a SCOMO operation failed, carried in its OperationComplete alert without breaking the standard.

A Generic Alert 1226 (SCOMO digest 6.2) says *that* an operation failed (``1405``) and on
what, never *why*: the hook's exit status and last output lines, the signature check that
refused the package, the HTTP error of the download stay on the device. omadm's device puts
that text in the report Item's ``Meta`` as one ``EMI`` element (Extended Meta Information,
SyncML MetInf 1.2: "non-standard, experimental meta information" that a receiver which does
not know it ignores), written ``urn:omadm:reason:<text>``. The Item keeps its standard
Source, Target, Type, Format, Mark and Data, so a standard server reads the same report it
always did; omadm's server reads the reason and shows it as the job's detail.

Why EMI rather than a second Item with its own Type: a second Item looks like a second report
to a server that counts Items (one per deployed component, digest 6.1 rule 4) and some answer
415 to an Alert carrying an alert type they do not know; an EMI changes no count and no type.

The text is bounded on both sides (:func:`bound_reason`): at most :data:`MAX_REASON_BYTES`
bytes of UTF-8, control characters other than newline removed, and when too long its start
and its end kept (the end of a hook's output is where the error usually is).
"""

from __future__ import annotations

import unicodedata
from dataclasses import replace

from omadm.protocol.messages import Item, Meta

__all__ = ["MAX_REASON_BYTES", "REASON_EMI_PREFIX", "bound_reason", "reason_of", "with_reason"]

#: What starts the EMI element that carries the reason (the text follows it directly).
REASON_EMI_PREFIX = "urn:omadm:reason:"
#: The most bytes (UTF-8) of reason text either side sends or keeps.
MAX_REASON_BYTES = 1024
#: Put between the start and the end of a reason that was too long.
_CUT = " [...] "
#: Of a cut reason, how many bytes come from its start (the rest from its end).
_HEAD_BYTES = 256


def bound_reason(text: str | None) -> str:
    """``text`` made safe to send and to store: printable, at most :data:`MAX_REASON_BYTES` bytes.

    Tabs become spaces and ``\\r\\n`` newlines; other control characters (C0, C1, DEL),
    surrogates and unassigned code points are dropped, since XML cannot carry most of them and a
    console must not interpret them. White space around the whole text is removed. A text still
    longer than the bound keeps its first ~256 bytes and its last bytes, joined by ``[...]``,
    cut on character boundaries. None or nothing left gives "".
    """
    if not text:
        return ""
    cleaned = "".join(_keep(ch) for ch in text.replace("\r\n", "\n").replace("\t", " ")).strip()
    raw = cleaned.encode("utf-8")
    if len(raw) <= MAX_REASON_BYTES:
        return cleaned
    cut = _CUT.encode()
    head = raw[:_HEAD_BYTES].decode("utf-8", "ignore")
    tail_room = MAX_REASON_BYTES - len(head.encode("utf-8")) - len(cut)
    tail = raw[len(raw) - tail_room :].decode("utf-8", "ignore")
    return f"{head}{_CUT}{tail}"


def _keep(ch: str) -> str:
    if ch == "\n":
        return ch
    category = unicodedata.category(ch)
    return "" if category in ("Cc", "Cs", "Cn") else ch


def with_reason(item: Item, reason: str | None) -> Item:
    """``item`` (a report Item) with ``reason`` added as an EMI of its Meta; unchanged if empty."""
    text = bound_reason(reason)
    if not text:
        return item
    meta = item.meta or Meta()
    return replace(item, meta=replace(meta, emi=(*meta.emi, f"{REASON_EMI_PREFIX}{text}")))


def reason_of(item: Item) -> str | None:
    """The reason a report Item carries (bounded again: it comes from a device), or None."""
    if item.meta is None:
        return None
    for emi in item.meta.emi:
        if emi.startswith(REASON_EMI_PREFIX):
            return bound_reason(emi[len(REASON_EMI_PREFIX) :]) or None
    return None
