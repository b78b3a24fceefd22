"""SCOMO numbers both sides share: Status/State node values and the OperationComplete alert.

The device writes the ``Status`` and ``State`` leaves of ``Download/<X>``,
``Inventory/Delivered/<X>`` and ``Inventory/Deployed/<X>`` at every transition, and the server
reads them when no alert arrived; both must agree on the numbers (SCOMO digest 4.1-4.3, where
Red Bend, MediaTek and Verizon agree). The result codes themselves (1200, 1405, ...) are
:class:`omadm.protocol.codes.ScomoResult`; this module adds the alert's ``Meta/Type`` values
and the ``<ResultCode>..</ResultCode><Identifier>..</Identifier>`` Data (digest 6.2).

Alert Data is parsed leniently because devices disagree on how to wrap it (plain fragment,
CDATA, XML-escaped text, comments, ``text/plain`` with only the code), and a server that
refused a report would make the device resend it forever.
"""

from __future__ import annotations

import re
from enum import IntEnum

from lxml import etree

from omadm.protocol.errors import ProtocolError
from omadm.protocol.xml_codec import parse_element

__all__ = [
    "SCOMO_ALERT_TYPE",
    "SCOMO_ALERT_TYPES",
    "SCOMO_ALERT_TYPE_DRAFT",
    "DeliveredState",
    "DeliveredStatus",
    "DeployedState",
    "DeployedStatus",
    "DownloadStatus",
    "parse_scomo_alert_data",
    "scomo_alert_data",
]

#: The registered Generic Alert type of a finished SCOMO primitive (OMNA; SCOMO 1.1 keeps it).
SCOMO_ALERT_TYPE = "urn:oma:at:scomo:1.0:OperationComplete"
#: The pre-release value Nokia/Symbian devices send; servers accept it too.
SCOMO_ALERT_TYPE_DRAFT = "org.openmobilealliance.dm.softwarecomponent.OperationComplete"
#: Every alert type a server treats as a SCOMO OperationComplete report (devices send the first).
SCOMO_ALERT_TYPES: tuple[str, ...] = (SCOMO_ALERT_TYPE, SCOMO_ALERT_TYPE_DRAFT)


class DownloadStatus(IntEnum):
    """``Download/<X>/Status``: progress of Download / DownloadInstall(Inactive) (digest 4.1).

    10 is both "not started" and "DownloadInstall finished" (the DCs then appear in Deployed).
    """

    IDLE = 10
    DOWNLOAD_FAILED = 20
    DOWNLOAD_PROGRESSING = 30
    DOWNLOAD_COMPLETE = 40
    INSTALL_PROGRESSING = 50
    INSTALL_FAILED_WITH_DATA = 60
    INSTALL_FAILED_WITHOUT_DATA = 70


class DeliveredStatus(IntEnum):
    """``Inventory/Delivered/<X>/Status``: progress of Install(Inactive) / Remove on a DP (digest 4.2).

    Verizon's table puts "install failed without data" at 70, most likely a copy error from
    the Download table; Red Bend and MediaTek use 60, and so do we.
    """

    IDLE = 10
    REMOVE_FAILED = 20
    REMOVE_PROGRESSING = 30
    INSTALL_PROGRESSING = 40
    INSTALL_FAILED_WITH_DATA = 50
    INSTALL_FAILED_WITHOUT_DATA = 60


class DeliveredState(IntEnum):
    """``Inventory/Delivered/<X>/State``: whether the DP's components were installed (it stays either way)."""

    DELIVERED = 10
    INSTALLED = 20


class DeployedStatus(IntEnum):
    """``Inventory/Deployed/<X>/Status``: progress of Remove / Activate / Deactivate on a DC (digest 4.3)."""

    IDLE = 10
    REMOVE_FAILED = 20
    REMOVE_PROGRESSING = 30
    ACTIVATE_FAILED = 40
    ACTIVATE_PROGRESSING = 50
    DEACTIVATE_FAILED = 60
    DEACTIVATE_PROGRESSING = 70


class DeployedState(IntEnum):
    """``Inventory/Deployed/<X>/State``: whether the component is usable."""

    INACTIVE = 10
    ACTIVE = 20


def scomo_alert_data(result: int, identifier: str) -> str:
    """The Data of an OperationComplete alert: ``<ResultCode>1200</ResultCode><Identifier>..</Identifier>``.

    The identifier (a DC ID, or a PkgID for DP-level operations) is XML-escaped, so the
    fragment stays well-formed whatever the server or the package named it.
    """
    if isinstance(result, bool) or not isinstance(result, int):
        raise TypeError(f"a SCOMO result code is an int, not {type(result).__name__}")
    # Imported here, as below: the xml.sax package stays out of an idle device agent (which
    # imports this module with the SCOMO MO and keeps what it imports; bench/agent_rss.py).
    from xml.sax.saxutils import escape  # noqa: PLC0415

    return f"<ResultCode>{int(result)}</ResultCode><Identifier>{escape(identifier)}</Identifier>"


_CDATA = re.compile(r"<!\[CDATA\[(.*?)\]\]>", re.DOTALL)
_ONLY_CODE = re.compile(r"[0-9]{4}")
_ESCAPED_RESULT = re.compile(r"&lt;\s*ResultCode", re.IGNORECASE)
_RESULT_RE = re.compile(r"<\s*ResultCode\s*>\s*([0-9]+)\s*<\s*/\s*ResultCode\s*>", re.IGNORECASE)
_IDENTIFIER_RE = re.compile(
    r"<\s*Identifier\s*>(?:<!\[CDATA\[)?(.*?)(?:\]\]>)?<\s*/\s*Identifier\s*>", re.IGNORECASE | re.DOTALL
)
_ENTITIES = {"&quot;": '"', "&apos;": "'"}


def parse_scomo_alert_data(text: str) -> tuple[int, str | None]:
    """``(result code, identifier or None)`` from the Data of a SCOMO OperationComplete alert.

    Accepted, because devices send all of them: the plain fragment, the fragment inside
    ``<![CDATA[...]]>`` (whole or per element), the fragment XML-escaped once more
    (``&lt;ResultCode&gt;...``), surrounding white space and XML comments, element names in
    any case, and a bare four-digit code (``text/plain`` devices). A fragment that is not
    well-formed XML (typically a bare ``&`` in the identifier) is read with patterns as a last
    resort. A missing or empty ``Identifier`` gives None.

    Raises:
        ValueError: there is no readable ResultCode; the message quotes the start of the data.
    """
    body = text.strip()
    if _ONLY_CODE.fullmatch(body):
        return int(body), None
    unwrapped = _CDATA.fullmatch(body)
    if unwrapped is not None:
        body = unwrapped.group(1).strip()
    if _ESCAPED_RESULT.search(body) and "<" not in body.replace("<![CDATA[", ""):
        from xml.sax.saxutils import unescape  # noqa: PLC0415 - see scomo_alert_data

        body = unescape(body, _ENTITIES).strip()
    try:
        root = parse_element(f"<Data>{body}</Data>".encode())
    except ProtocolError as exc:
        return _parse_broken(body, text, exc)
    code_text: str | None = None
    identifier: str | None = None
    found_code = False
    for child in root.iter():
        if not isinstance(child.tag, str) or child is root:
            continue
        name = etree.QName(child).localname.casefold()
        if name == "resultcode" and not found_code:
            found_code = True
            code_text = _text(child).strip()
        elif name == "identifier" and identifier is None:
            identifier = _text(child).strip() or None
    if not found_code:
        raise ValueError(f"SCOMO alert data has no <ResultCode>: {_quote(text)}")
    if code_text is None or not code_text.isdigit() or not code_text.isascii():
        raise ValueError(f"SCOMO alert <ResultCode> {code_text!r} is not a number: {_quote(text)}")
    return int(code_text), identifier


def _text(element: etree._Element) -> str:
    return "".join(t if isinstance(t, str) else t.decode() for t in element.itertext())


def _parse_broken(body: str, text: str, error: ProtocolError) -> tuple[int, str | None]:
    """The not-well-formed fallback: a bare ``&`` in the identifier is the usual culprit."""
    code = _RESULT_RE.search(body)
    if code is None:
        raise ValueError(f"SCOMO alert data is not an XML fragment ({error}): {_quote(text)}")
    from xml.sax.saxutils import unescape  # noqa: PLC0415 - see scomo_alert_data

    ident = _IDENTIFIER_RE.search(body)
    identifier = unescape(ident.group(1), _ENTITIES).strip() if ident is not None else ""
    return int(code.group(1)), identifier or None


def _quote(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
