"""Which operator-given URLs the server accepts: notification addresses and package URLs.

An operator (or a compromised operator account) chooses these URLs; the server then sends
to a notification address itself, and devices fetch the package URLs. Unchecked, a
``file:///etc/passwd`` or ``http://169.254.169.254/latest/meta-data`` turns the server or a
whole fleet into a proxy against a cloud metadata service or the device's own files. So:

* only the schemes that make sense: ``udp``, ``http``, ``https`` for Package #0 (what
  :mod:`omadm.server.notify` sends over), ``http`` and ``https`` for packages;
* no address of a kind :func:`omadm.addresses.local_kind` refuses (link-local, where cloud
  metadata services live; unspecified; multicast; reserved; IPv6 site-local) and no cloud
  metadata address or name elsewhere. Loopback is allowed: the demo, the simulator and
  single-host labs run devices (and their Package #0 listeners) beside the server;
* ``allow_local_urls = true`` in the server configuration lifts the address rules (not
  the scheme rules), for labs on link-local networks.

A literal address is judged when the URL is given; a host name is judged by name then and
by every address it resolves to when the server sends to it (:func:`check_resolved`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from omadm.addresses import IPAddress, local_kind, parse_ip

__all__ = [
    "NOTIFY_SCHEMES",
    "PACKAGE_SCHEMES",
    "UrlRefused",
    "check_notify_address",
    "check_package_url",
    "check_resolved",
]

NOTIFY_SCHEMES = ("udp", "http", "https")
PACKAGE_SCHEMES = ("http", "https")
#: Cloud metadata services outside the link-local range (Alibaba; AWS over IPv6).
_METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("100.100.100.200"), ipaddress.ip_address("fd00:ec2::254")}
)
_METADATA_NAMES = frozenset(
    {"metadata", "metadata.google.internal", "instance-data", "instance-data.ec2.internal"}
)


class UrlRefused(ValueError):
    """The URL may not be used; the message names the URL's problem (for an HTTP 422)."""


def check_notify_address(address: str, *, allow_local: bool = False) -> None:
    """Refuse a Package #0 address the server must not send to (see the module docstring)."""
    _check(address, "notification address", NOTIFY_SCHEMES, allow_local)


def check_package_url(url: str, *, allow_local: bool = False) -> None:
    """Refuse a package URL devices must not be sent to (see the module docstring)."""
    _check(url, "package URL", PACKAGE_SCHEMES, allow_local)


def check_resolved(
    what: str, host: str, addresses: Iterable[IPAddress], *, allow_local: bool = False
) -> None:
    """Refuse ``host`` when an address it resolved to is refused (checked when sending)."""
    if allow_local:
        return
    for address in addresses:
        problem = _address_problem(address)
        if problem is not None:
            raise UrlRefused(f"{what} host {host} resolves to {address}, {problem}")


def _check(url: str, what: str, schemes: tuple[str, ...], allow_local: bool) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise UrlRefused(f"{what} {url!r} is not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        given = f"{scheme}:" if scheme else "no scheme"
        raise UrlRefused(f"{what} {url!r} has {given}; use {' or '.join(s + '://' for s in schemes)}")
    host = (parts.hostname or "").lower()
    if not host:
        raise UrlRefused(f"{what} {url!r} names no host")
    if allow_local:
        return
    if host.rstrip(".") in _METADATA_NAMES:
        raise UrlRefused(f"{what} {url!r} names a cloud metadata service (allow_local_urls allows it)")
    address = parse_ip(host)
    if address is not None:
        problem = _address_problem(address)
        if problem is not None:
            raise UrlRefused(f"{what} {url!r}: {problem} (allow_local_urls allows it)")


def _address_problem(address: IPAddress) -> str | None:
    if address in _METADATA_ADDRESSES:
        return "a cloud metadata address"
    kind = local_kind(address)
    if kind is None or kind == "loopback":
        return None
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} address"
