"""OMA Download OTA 1.0 download descriptors (DD) for artifacts (SCOMO digest 7.3).

A ``PkgURL`` may name a DD (``application/vnd.oma.dd+xml``) instead of the package: the
device reads the object's size (to check free storage before downloading), type and URL
from it, and POSTs a status line (``900 Success``) to ``installNotifyURI`` once the outcome
is known. We write DLOTA 1.0 ``media`` documents with exactly the 1.0 elements the digest
lists; devices parse them by local name, and the agent's parser is our test oracle.
"""

from __future__ import annotations

import re

from lxml import etree

from omadm.server.store.models import Artifact

__all__ = [
    "DD_CONTENT_TYPE",
    "DD_NAMESPACE",
    "DD_VERSION",
    "InstallNotifyError",
    "build_descriptor",
    "descriptor_name",
    "parse_install_notify",
]

DD_CONTENT_TYPE = "application/vnd.oma.dd+xml"
DD_NAMESPACE = "http://www.openmobilealliance.org/xmlns/dd"
DD_VERSION = "1.0"

#: The install-notify body: a 3-digit status code, then optional reason text.
_STATUS_LINE = re.compile(r"([0-9]{3})(?:[ \t]+(.*?))?[ \t]*")


class InstallNotifyError(ValueError):
    """The body POSTed to an install-notify URI is not a DLOTA status report."""


def descriptor_name(artifact: Artifact) -> str:
    """The user-readable ``name``: the package's name and version, else the file name."""
    manifest = artifact.manifest or {}
    name = manifest.get("name")
    if isinstance(name, str) and name:
        return f"{name} {artifact.version}".strip()
    return artifact.filename


def build_descriptor(
    artifact: Artifact,
    object_uri: str,
    *,
    install_notify_uri: str | None = None,
    vendor: str = "omadm",
    name: str | None = None,
    description: str | None = None,
) -> bytes:
    """The DD bytes (UTF-8 XML) announcing ``artifact`` at ``object_uri``.

    ``name`` defaults to :func:`descriptor_name`, ``description`` to the manifest's
    description (omitted when empty). ``object_uri`` and ``install_notify_uri`` should be
    absolute: a relative URL would be resolved against the DD's own URL by the device.
    """
    if description is None:
        text = (artifact.manifest or {}).get("description")
        description = text if isinstance(text, str) else None
    root = etree.Element(f"{{{DD_NAMESPACE}}}media", nsmap={None: DD_NAMESPACE})  # type: ignore[dict-item]

    def add(tag: str, value: str | None) -> None:
        if value:
            etree.SubElement(root, f"{{{DD_NAMESPACE}}}{tag}").text = value

    add("type", artifact.content_type)
    add("size", str(artifact.size))
    add("objectURI", object_uri)
    add("installNotifyURI", install_notify_uri)
    add("name", name if name is not None else descriptor_name(artifact))
    add("DDVersion", DD_VERSION)
    add("vendor", vendor)
    add("description", description)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def parse_install_notify(body: bytes) -> tuple[int, str]:
    """``b"900 Success"`` -> ``(900, "Success")``: the first non-blank line of a DLOTA report.

    DLOTA 1.0 status codes are 900-999 (900 Success, 901 Insufficient memory, ... 954 Loader
    Error; SCOMO digest 7.3); anything else raises :class:`InstallNotifyError`. Later lines
    and surrounding blanks are ignored; the text is kept as sent (may be empty).
    """
    text = body.decode("utf-8", errors="replace").lstrip("\ufeff")
    line = next((candidate.strip() for candidate in text.splitlines() if candidate.strip()), "")
    match = _STATUS_LINE.fullmatch(line)
    if match is None:
        shown = line[:60] + ("..." if len(line) > 60 else "")
        raise InstallNotifyError(f"not an install-notify status line: {shown!r}")
    code = int(match.group(1))
    if not 900 <= code <= 999:
        raise InstallNotifyError(f"install-notify status {code} is outside 900-999")
    return code, match.group(2) or ""
