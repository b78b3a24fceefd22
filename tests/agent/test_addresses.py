"""The local-address policy: which targets a server may not send the device to."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from omadm.addresses import (
    IPAddress,
    LocalAddressError,
    check_host,
    is_local,
    local_kind,
    parse_ip,
    resolve,
)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.0.0.2", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),  # cloud metadata services
        ("fe80::1", "link-local"),
        ("fec0::1", "site-local"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),  # "this network"
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped: judged by the IPv4 address
        ("::ffff:169.254.1.1", "link-local"),
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("::7f00:1", "reserved"),  # IPv4-compatible (deprecated), in ::/8
    ],
)
def test_local_kinds(address: str, kind: str) -> None:
    assert local_kind(ipaddress.ip_address(address)) == kind
    assert is_local(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    [
        "93.184.216.34",
        "10.0.0.1",  # the site's own package server: normal for devices
        "192.168.1.10",
        "172.16.0.1",
        "100.64.0.1",  # carrier-grade NAT
        "fc00::1",  # unique local
        "2001:db8::1",
        "2606:4700::1111",
        "::ffff:93.184.216.34",
        "64:ff9b::5db8:d822",  # NAT64 of a public host: how IPv6-only devices reach IPv4
    ],
)
def test_addresses_that_pass(address: str) -> None:
    assert local_kind(ipaddress.ip_address(address)) is None


def test_parse_ip_takes_literals_with_or_without_brackets() -> None:
    assert parse_ip("[::1]") == ipaddress.ip_address("::1")
    assert parse_ip("::1") == ipaddress.ip_address("::1")
    assert parse_ip("127.0.0.1") == ipaddress.ip_address("127.0.0.1")
    assert parse_ip("example.com") is None
    assert parse_ip("[example.com]") is None


def test_literals_are_not_sent_to_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: object, **kwargs: object) -> object:
        raise AssertionError("getaddrinfo called for a literal")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    assert resolve("[::1]", 80) == (ipaddress.ip_address("::1"),)
    with pytest.raises(LocalAddressError, match=r"169\.254\.169\.254 is a link-local address"):
        check_host("169.254.169.254")


def test_names_are_resolved_and_localhost_is_loopback() -> None:
    addresses = resolve("localhost", 80)
    assert addresses and all(a.is_loopback for a in addresses)
    with pytest.raises(
        LocalAddressError, match=r"localhost \((127\.0\.0\.1|::1)\) is a loopback address"
    ) as caught:
        check_host("localhost", 80)
    assert caught.value.host == "localhost" and caught.value.kind == "loopback"


def test_every_address_of_a_name_must_pass() -> None:
    answers: dict[str, list[IPAddress]] = {
        "cdn.example": [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("2606:4700::1111")],
        "rebind.example": [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("127.0.0.1")],
    }

    def resolver(host: str, port: int | None) -> list[IPAddress]:
        return answers[host]

    assert check_host("cdn.example", 443, resolver=resolver) == tuple(answers["cdn.example"])
    with pytest.raises(LocalAddressError) as caught:
        check_host("rebind.example", 443, resolver=resolver)
    assert caught.value.address == ipaddress.ip_address("127.0.0.1")
    assert str(caught.value) == "rebind.example (127.0.0.1) is a loopback address"


def test_a_name_without_addresses_is_an_oserror() -> None:
    with pytest.raises(OSError):
        check_host("nothing.example", resolver=lambda host, port: [])
    with pytest.raises(OSError):
        resolve("no-such-host.invalid", 80)  # .invalid never resolves (RFC 6761)
