"""Which network addresses a URL we did not choose may lead us to: the local-address policy.

A management or download server may send the device elsewhere (an HTTP redirect, a
download descriptor's ``objectURI``). Followed blindly, that turns the device into a
proxy against its own services and its neighbours' (server-side request forgery): a
redirect to ``http://127.0.0.1:8080/admin``, to a cloud metadata service at
``169.254.169.254`` or to ``[::1]`` would be fetched with the device's own network
position. So a target the server *pointed us at* must resolve to addresses that are none
of these:

=================  ==============================================================
kind               addresses
=================  ==============================================================
``loopback``       127.0.0.0/8, ::1
``link-local``     169.254.0.0/16, fe80::/10 (metadata services live here)
``site-local``     fec0::/10 (deprecated, never global)
``unspecified``    0.0.0.0/8 ("this network": Linux connects 0.0.0.0 to itself), ::
``multicast``      224.0.0.0/4, ff00::/8
``reserved``       240.0.0.0/4 (with 255.255.255.255), IPv6 ::/8 and other IETF-reserved blocks
=================  ==============================================================

Private LAN ranges (10/8, 172.16/12, 192.168/16, fc00::/7) are *not* refused: package
servers on the site's own network are the normal case for devices.

An IPv6 address that carries an IPv4 one (IPv4-mapped ``::ffff:a.b.c.d``, 6to4
``2002::/16``, the NAT64 prefix ``64:ff9b::/96``) is judged by that IPv4 address, so
``[::ffff:127.0.0.1]`` is loopback while a NAT64 address of a public host passes (an
IPv6-only device behind DNS64 reaches every IPv4 host that way).

A name passes only when *every* address it resolves to passes: the connection may use any
of them. The check cannot pin the address the HTTP client then connects to, so a DNS
server that answers differently a moment later (DNS rebinding) is not stopped here; that
needs the connection itself to be made to the checked address.

Pure functions over :mod:`ipaddress` plus one :func:`socket.getaddrinfo` call, with the
resolver injectable, so the server can apply the same policy to URLs it is given.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable

__all__ = [
    "IPAddress",
    "LocalAddressError",
    "Resolver",
    "check_host",
    "is_local",
    "local_kind",
    "parse_ip",
    "resolve",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``resolver(host, port) -> addresses``; raises ``OSError`` when the name does not resolve.
Resolver = Callable[[str, int | None], Iterable[IPAddress]]

_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class LocalAddressError(ValueError):
    """``host`` resolves to ``address``, which is of a ``kind`` the policy refuses."""

    def __init__(self, host: str, address: IPAddress, kind: str) -> None:
        shown = host if host == str(address) else f"{host} ({address})"
        article = "an" if kind[0] in "aeiou" else "a"
        super().__init__(f"{shown} is {article} {kind} address")
        self.host = host
        self.address = address
        self.kind = kind


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for, when it is a translation of one."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def local_kind(address: IPAddress) -> str | None:
    """Why ``address`` must not be the target of a redirect (a kind of the table), or None."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return local_kind(embedded)
    if address.is_unspecified or (isinstance(address, ipaddress.IPv4Address) and address in _THIS_NETWORK):
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "site-local"
    if address.is_multicast:
        return "multicast"
    if address.is_reserved:
        return "reserved"
    return None


def is_local(address: IPAddress) -> bool:
    """Whether the policy refuses ``address`` (see :func:`local_kind`)."""
    return local_kind(address) is not None


def parse_ip(host: str) -> IPAddress | None:
    """``host`` as an IP address when it is a literal (``[::1]`` brackets allowed), else None."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def resolve(host: str, port: int | None = None) -> tuple[IPAddress, ...]:
    """Every address ``host`` resolves to (a literal is returned as is, without DNS).

    Raises:
        OSError: the name does not resolve (``socket.gaierror``).
    """
    literal = parse_ip(host)
    if literal is not None:
        return (literal,)
    found: list[IPAddress] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])  # no zone index
        if address not in found:
            found.append(address)
    if not found:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
    return tuple(found)


def check_host(host: str, port: int | None = None, *, resolver: Resolver = resolve) -> tuple[IPAddress, ...]:
    """The addresses of ``host``, when none of them is local; see the module docstring.

    Raises:
        LocalAddressError: an address ``host`` resolves to is local (the first one found).
        OSError: the name does not resolve.
    """
    addresses = tuple(resolver(host, port))
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
    for address in addresses:
        kind = local_kind(address)
        if kind is not None:
            raise LocalAddressError(host, address, kind)
    return addresses
