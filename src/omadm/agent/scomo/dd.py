"""OMA Download OTA 1.0 descriptors (DD) and the install-notify report.

A SCOMO ``PkgURL`` may name a *download descriptor* (``application/vnd.oma.dd+xml``)
instead of the package itself (SCOMO digest 7.3). The DD says where the object is
(``objectURI``), how big it is (``size``, checked against free storage *before* the
download) and what it is (``type``, checked against what actually arrives), and may name
an ``installNotifyURI`` to which the device POSTs one status line such as ``900 Success``
once the outcome is known.

Parsing goes through :func:`omadm.protocol.xml_codec.parse_element`: a DD comes from a
download server the DM server merely pointed us at, so it gets the same hardening as a
DM message (no internal DTD subset, no entity expansion, no network access, size cap).
Every way a DD can be unusable raises :class:`DescriptorError`, whose ``status`` is the
install-notify code to report (906, or 951 for a DDVersion we do not speak) and whose
``result`` is the SCOMO code for the Generic Alert (1402).

Elements are matched by local name (case-insensitively: DDs in the wild vary) in the DD
namespace or in none; elements of other namespaces are vendor extensions and ignored,
as DLOTA asks receivers to ignore what they do not understand.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from enum import IntEnum
from typing import NoReturn
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
from lxml import etree

from omadm.protocol.codes import ScomoResult
from omadm.protocol.errors import MalformedMessage
from omadm.protocol.xml_codec import parse_element

__all__ = [
    "DD_CONTENT_TYPE",
    "DD_MAX_SIZE",
    "DD_NAMESPACE",
    "DescriptorError",
    "DownloadDescriptor",
    "InstallNotifyStatus",
    "looks_like_descriptor",
    "media_type",
    "parse_descriptor",
    "redact_url",
    "send_install_notify",
]

log = logging.getLogger(__name__)

DD_CONTENT_TYPE = "application/vnd.oma.dd+xml"
DD_NAMESPACE = "http://www.openmobilealliance.org/xmlns/dd"
#: A DD is a few hundred bytes; anything past this is not one we are willing to parse.
DD_MAX_SIZE = 64 * 1024

#: DDVersion major numbers we understand (DLOTA 1.0, plus the 2.0 objectID/objectVersion).
_SUPPORTED_MAJOR_VERSIONS = frozenset({1, 2})
_SIZE_RE = re.compile(r"[0-9]+")


class InstallNotifyStatus(IntEnum):
    """DLOTA 1.0 install-notify status codes: the body of the POST to ``installNotifyURI``.

    904 and 907-913 are MIDP-OTA (JAD) codes and deliberately absent (SCOMO digest 7.3).
    """

    SUCCESS = 900
    INSUFFICIENT_MEMORY = 901
    USER_CANCELLED = 902
    LOSS_OF_SERVICE = 903
    ATTRIBUTE_MISMATCH = 905
    INVALID_DESCRIPTOR = 906
    INVALID_DD_VERSION = 951
    DEVICE_ABORTED = 952
    NON_ACCEPTABLE_CONTENT = 953
    LOADER_ERROR = 954

    @property
    def text(self) -> str:
        """The reason phrase, spelled as deployed implementations send it."""
        return _NOTIFY_TEXT[self]

    @property
    def line(self) -> str:
        """The status line POSTed to the install-notify URI, e.g. ``"900 Success"``."""
        return f"{self.value} {self.text}"

    @property
    def scomo_result(self) -> ScomoResult:
        """The SCOMO result code that reports the same outcome in the Generic Alert.

        Follows the digest's table (7.3) except for 954: DLOTA's "Loader Error" means the
        object could not be fetched from ``objectURI`` (deployed clients send it for HTTP
        errors from the object's server), so it is a download failure (1402), not an
        install failure (1405) as the digest guessed.
        """
        return _NOTIFY_TO_SCOMO[self]

    @classmethod
    def for_scomo_result(cls, code: int) -> InstallNotifyStatus:
        """The install-notify status to report for a SCOMO result (e.g. after installing).

        Lossy by nature: DLOTA has ten codes, SCOMO many more. Install and validation
        failures become 953 (the content is not acceptable to the device); anything
        unclassified becomes 952 (the device aborted).
        """
        if ScomoResult.is_success_code(code):
            return cls.SUCCESS
        return _SCOMO_TO_NOTIFY.get(code, cls.DEVICE_ABORTED)


_NOTIFY_TEXT: dict[int, str] = {
    900: "Success",
    901: "Insufficient memory",
    902: "User Cancelled",
    903: "Loss of Service",
    905: "Attribute mismatch",
    906: "Invalid descriptor",
    951: "Invalid DDVersion",
    952: "Device Aborted",
    953: "Non-Acceptable Content",
    954: "Loader Error",
}

_NOTIFY_TO_SCOMO: dict[int, ScomoResult] = {
    900: ScomoResult.SUCCESSFUL,
    901: ScomoResult.DOWNLOAD_FAILED_OUT_OF_MEMORY,
    902: ScomoResult.USER_CANCELLED,
    903: ScomoResult.DOWNLOAD_FAILED,
    905: ScomoResult.DOWNLOAD_FAILED,
    906: ScomoResult.DOWNLOAD_FAILED,
    951: ScomoResult.DOWNLOAD_FAILED,
    952: ScomoResult.DOWNLOAD_FAILED,
    953: ScomoResult.UNSUPPORTED_ENVIRONMENT,
    954: ScomoResult.DOWNLOAD_FAILED,
}

_SCOMO_TO_NOTIFY: dict[int, InstallNotifyStatus] = {
    ScomoResult.USER_CANCELLED: InstallNotifyStatus.USER_CANCELLED,
    ScomoResult.DOWNLOAD_FAILED: InstallNotifyStatus.LOADER_ERROR,
    ScomoResult.ALTERNATE_DOWNLOAD_AUTHENTICATION_FAILURE: InstallNotifyStatus.LOADER_ERROR,
    ScomoResult.ALTERNATE_DOWNLOAD_SERVER_ERROR: InstallNotifyStatus.LOADER_ERROR,
    ScomoResult.ALTERNATE_DOWNLOAD_SERVER_UNAVAILABLE: InstallNotifyStatus.LOADER_ERROR,
    ScomoResult.DOWNLOAD_FAILED_OUT_OF_MEMORY: InstallNotifyStatus.INSUFFICIENT_MEMORY,
    ScomoResult.INSTALL_FAILED_OUT_OF_MEMORY: InstallNotifyStatus.INSUFFICIENT_MEMORY,
    ScomoResult.INSTALL_FAILED: InstallNotifyStatus.NON_ACCEPTABLE_CONTENT,
    ScomoResult.FAILED_PACKAGE_VALIDATION: InstallNotifyStatus.NON_ACCEPTABLE_CONTENT,
    ScomoResult.UNSUPPORTED_ENVIRONMENT: InstallNotifyStatus.NON_ACCEPTABLE_CONTENT,
}


class DescriptorError(Exception):
    """The download descriptor cannot be used.

    ``status`` is the install-notify code to report (906 Invalid descriptor, or 951
    Invalid DDVersion); ``result`` is the SCOMO result (always 1402 Download Failed).
    ``install_notify_uri`` is set when the broken DD still named a usable notify URI, so
    the device can tell the download server why it gave up, as DLOTA expects;
    ``source_url`` is where the DD came from, against which that URI is judged by the
    local-address policy (:mod:`omadm.addresses`).
    """

    def __init__(
        self,
        message: str,
        *,
        status: InstallNotifyStatus = InstallNotifyStatus.INVALID_DESCRIPTOR,
        install_notify_uri: str | None = None,
        source_url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.install_notify_uri = install_notify_uri
        self.source_url = source_url

    @property
    def result(self) -> ScomoResult:
        return ScomoResult.DOWNLOAD_FAILED


@dataclass(frozen=True, slots=True)
class DownloadDescriptor:
    """One parsed DD. URLs are absolute once parsed (resolved against ``source_url``).

    Field names are the DLOTA element names in snake case (``objectURI`` ->
    ``object_uri``); ``types`` holds every ``type`` element in document order.
    """

    object_uri: str
    size: int
    types: tuple[str, ...]
    name: str | None = None
    dd_version: str | None = None
    vendor: str | None = None
    description: str | None = None
    install_notify_uri: str | None = None
    next_url: str | None = None
    info_url: str | None = None
    icon_uri: str | None = None
    install_param: str | None = None
    object_version: str | None = None  # DLOTA 2.0
    object_id: str | None = None  # DLOTA 2.0
    source_url: str | None = None  # where the DD itself was fetched from

    def accepts_type(self, content_type: str | None) -> bool:
        """Whether an object served as ``content_type`` matches one of the DD's types.

        A missing Content-Type cannot contradict the DD and is accepted; parameters
        (``; charset=...``) and case are ignored.
        """
        kind = media_type(content_type)
        if kind is None:
            return True
        return kind in {t.lower() for t in self.types}

    def to_xml(self) -> bytes:
        """Serialize as a DLOTA 1.0 ``media`` document (for servers and test fixtures)."""
        root = etree.Element(f"{{{DD_NAMESPACE}}}media", nsmap={None: DD_NAMESPACE})  # type: ignore[dict-item]

        def add(tag: str, value: str | None) -> None:
            if value is not None:
                etree.SubElement(root, f"{{{DD_NAMESPACE}}}{tag}").text = value

        add("DDVersion", self.dd_version)
        add("name", self.name)
        add("size", str(self.size))
        for kind in self.types:
            add("type", kind)
        add("objectURI", self.object_uri)
        add("installNotifyURI", self.install_notify_uri)
        add("vendor", self.vendor)
        add("description", self.description)
        add("nextURL", self.next_url)
        add("infoURL", self.info_url)
        add("iconURI", self.icon_uri)
        add("installParam", self.install_param)
        add("objectVersion", self.object_version)
        add("objectID", self.object_id)
        return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


#: DD element (lower-cased local name) -> dataclass field, for the single-valued ones.
_FIELDS: dict[str, str] = {
    "objecturi": "object_uri",
    "size": "size",
    "name": "name",
    "ddversion": "dd_version",
    "vendor": "vendor",
    "description": "description",
    "installnotifyuri": "install_notify_uri",
    "nexturl": "next_url",
    "infourl": "info_url",
    "iconuri": "icon_uri",
    "installparam": "install_param",
    "objectversion": "object_version",
    "objectid": "object_id",
}
#: Fields that drive behaviour: a second copy makes the DD ambiguous, so it is refused.
#: (For the informational ones the first copy wins.)
_STRICT = frozenset({"object_uri", "size", "install_notify_uri", "dd_version"})
_URL_FIELDS = ("object_uri", "install_notify_uri", "next_url", "info_url", "icon_uri")


def _split_tag(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
        return namespace, local
    return None, tag


def _text(element: etree._Element) -> str:
    for node in element.iter():
        if isinstance(node, etree._Entity):
            raise DescriptorError(f"entity reference &{node.name}; in the descriptor refused")
    return "".join(t if isinstance(t, str) else t.decode() for t in element.itertext()).strip()


def _root_is_media(root: etree._Element) -> bool:
    namespace, local = _split_tag(root.tag)
    return local == "media" and namespace in (None, DD_NAMESPACE)


def looks_like_descriptor(data: bytes) -> bool:
    """Whether ``data`` is XML whose root is a DD ``media`` element (valid or not).

    Used to sniff DDs served with a generic Content-Type from a URL ending in ``.dd``.
    """
    if len(data) > DD_MAX_SIZE:
        return False
    try:
        return _root_is_media(parse_element(data, max_size=DD_MAX_SIZE))
    except MalformedMessage:
        return False


def parse_descriptor(data: bytes, *, base_url: str | None = None) -> DownloadDescriptor:
    """Parse DD bytes; relative URLs are resolved against ``base_url`` (the DD's own URL).

    Raises:
        DescriptorError: the bytes are not a usable DD (the message says why).
    """
    try:
        root = parse_element(data, max_size=DD_MAX_SIZE)
    except MalformedMessage as exc:
        raise DescriptorError(f"download descriptor is not acceptable XML: {exc}") from None
    if not _root_is_media(root):
        raise DescriptorError(
            f"root element is <{root.tag}>, not a DLOTA <media> in namespace {DD_NAMESPACE}"
        )

    values: dict[str, str] = {}
    types: list[str] = []
    problems: list[str] = []
    for child in root:
        if isinstance(child, etree._Entity):
            raise DescriptorError(f"entity reference &{child.name}; in the descriptor refused")
        tag: object = child.tag  # comments and PIs (if the parser ever kept them) have no str tag
        if not isinstance(tag, str):
            continue
        namespace, local = _split_tag(tag)
        if namespace not in (None, DD_NAMESPACE):
            continue  # vendor extension
        key = local.lower()
        if key == "type":
            kind = _text(child)
            if kind:
                types.append(kind)
            else:
                problems.append("a <type> element is empty")
            continue
        name = _FIELDS.get(key)
        if name is None:
            continue  # unknown DLOTA/vendor element: ignored by design
        if name in values:
            if name in _STRICT:
                problems.append(f"<{local}> appears more than once")
            continue
        values[name] = _text(child)

    notify = _resolve_url(values.get("install_notify_uri"), base_url)
    notify_ok = notify is not None and _is_http_url(notify)

    def fail(message: str, status: InstallNotifyStatus = InstallNotifyStatus.INVALID_DESCRIPTOR) -> NoReturn:
        raise DescriptorError(
            message, status=status, install_notify_uri=notify if notify_ok else None, source_url=base_url
        )

    version = values.get("dd_version") or None
    if version is not None and _major(version) not in _SUPPORTED_MAJOR_VERSIONS:
        fail(
            f"unsupported DDVersion {version!r} (supported: 1.x, 2.x)", InstallNotifyStatus.INVALID_DD_VERSION
        )

    missing = [tag for tag, key in (("objectURI", "object_uri"), ("size", "size")) if not values.get(key)]
    if not types and "a <type> element is empty" not in problems:
        missing.append("type")
    if missing:
        problems.insert(0, f"lacks the mandatory {', '.join(missing)}")
    size_text = values.get("size", "")
    if size_text and not _SIZE_RE.fullmatch(size_text):
        problems.append(f"<size> must be a number of bytes, not {size_text!r}")

    resolved: dict[str, str | None] = {}
    for key in _URL_FIELDS:
        raw = values.get(key) or None
        needed = key in ("object_uri", "install_notify_uri")
        if needed and raw is not None and base_url is None and not urlsplit(raw).scheme:
            problems.append(f"relative {key} {raw!r} but the descriptor's own URL is unknown")
            raw = None
        resolved[key] = _resolve_url(raw, base_url)
    object_uri = resolved["object_uri"]
    if object_uri is not None and not _is_http_url(object_uri):
        problems.append(f"objectURI {redact_url(object_uri)!r} is not an http or https URL")
    if resolved["install_notify_uri"] is not None and not notify_ok:
        problems.append(
            f"installNotifyURI {redact_url(values['install_notify_uri'])!r} is not an http or https URL"
        )
    if problems:
        fail("invalid download descriptor: " + "; ".join(problems))
    assert object_uri is not None  # a missing objectURI is among the problems above

    def optional(key: str) -> str | None:
        return values.get(key) or None

    return DownloadDescriptor(
        object_uri=object_uri,
        size=int(values["size"]),
        types=tuple(types),
        name=optional("name"),
        dd_version=version,
        vendor=optional("vendor"),
        description=optional("description"),
        install_notify_uri=resolved["install_notify_uri"],
        next_url=resolved["next_url"],
        info_url=resolved["info_url"],
        icon_uri=resolved["icon_uri"],
        install_param=optional("install_param"),
        object_version=optional("object_version"),
        object_id=optional("object_id"),
        source_url=base_url,
    )


def _major(version: str) -> int | None:
    head = version.strip().split(".", 1)[0]
    return int(head) if head.isdigit() else None


def _resolve_url(value: str | None, base_url: str | None) -> str | None:
    if not value:
        return None
    return urljoin(base_url, value) if base_url else value


def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def media_type(content_type: str | None) -> str | None:
    """``"Text/XML; charset=utf-8"`` -> ``"text/xml"``; None for a missing or empty value."""
    if not content_type:
        return None
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind or None


def redact_url(url: str) -> str:
    """The URL without any ``user:password@`` part, for logs, messages and state files."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def send_install_notify(
    client: httpx.Client, url: str, status: InstallNotifyStatus, *, timeout: float | None = None
) -> bool:
    """POST ``status.line`` as text/plain to ``url``; True when the server answered 2xx.

    Best effort by design: the install-notify report is a courtesy to the download server
    (the SCOMO Generic Alert is the authoritative report), so failures are logged and
    never raised; the caller may keep the False and try again later. Redirects are not
    followed (a 3xx is an undelivered report): a 307 would re-POST the report to wherever
    the server names, local services included, and a report is not worth that check.
    """
    body = status.line.encode("ascii")
    where = redact_url(url)
    try:
        response = client.post(
            url,
            content=body,
            headers={"Content-Type": "text/plain"},
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            follow_redirects=False,
        )
    except Exception as exc:  # the contract is "never raises": bad URLs included
        log.warning("install-notify %r to %s failed: %s", status.line, where, exc)
        return False
    if not response.is_success:
        log.warning(
            "install-notify %r to %s answered HTTP %d %s",
            status.line,
            where,
            response.status_code,
            response.reason_phrase,
        )
        return False
    log.info("install-notify %r sent to %s", status.line, where)
    return True
