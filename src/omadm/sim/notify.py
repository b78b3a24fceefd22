"""Package #0 for a simulated fleet: one UDP socket per process, one loopback address per device.

A real device listens for server-alerted triggers on its own address. Ten thousand sockets
would cost ten thousand descriptors (and a kernel socket buffer each), so the simulator gives
every device its own *address* instead: all of ``127.0.0.0/8`` is loopback on Linux, so
device number ``n`` (the counter of its DevId, see :func:`notify_address`) is registered
with ``udp://127.A.B.C:PORT`` where ``A.B.C`` encodes ``n``, and one socket bound to
``0.0.0.0:PORT`` receives every device's datagrams. ``IP_PKTINFO`` tells, for each
datagram, which address it was sent to (``recvmsg`` ancillary data), and so which device it
is for. Cost per device: 8 bytes (its address and its index, in two sorted arrays).

What a device does with a datagram is the agent's ``NotificationGate``
(``omadm.agent.listener``): decode it, check the digest with the device's server password
and the nonce it last issued to the server (or the resync nonce, which then resets both
nonces), ignore a repeated (server, session-id), and open a session with Alert 1200
(server-initiated) and the trigger's session-id. That part is :meth:`SimDevice.accept_trigger`;
this module only moves the bytes.

Linux only (``IP_PKTINFO``); elsewhere a fleet with notification addresses is refused with
a clear error.
"""

from __future__ import annotations

import asyncio
import bisect
import ipaddress
import socket
import struct
import sys
from array import array
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

__all__ = ["MAX_NOTIFY_DEVICES", "NotifyError", "Package0Listener", "notify_address", "parse_notify_address"]

#: Device counters that fit in 127.1.0.0 .. 127.126.255.255 (127.0/16 is left to the host).
MAX_NOTIFY_DEVICES = 126 * 65536
_FIRST = int(ipaddress.IPv4Address("127.1.0.0"))
_MAX_DATAGRAM = 2048
#: Linux's IP_PKTINFO (``<linux/in.h>``: 8); Python's socket module names it only from 3.14 on.
_IP_PKTINFO: int = getattr(socket, "IP_PKTINFO", 8 if sys.platform == "linux" else 0)
_PKTINFO = struct.Struct("@I4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr


class NotifyError(Exception):
    """Notification addresses cannot be used (bad address, port taken, not Linux)."""


def notify_address(counter: int, port: int) -> str:
    """The Package #0 address of the device with DevId counter ``counter``: ``udp://127.A.B.C:port``."""
    if not 0 <= counter < MAX_NOTIFY_DEVICES:
        raise NotifyError(f"device counter {counter} has no loopback address (0 to {MAX_NOTIFY_DEVICES - 1})")
    if not 1 <= port <= 65535:
        raise NotifyError(f"the notification port must be 1 to 65535, not {port}")
    return f"udp://{ipaddress.IPv4Address(_FIRST + counter)}:{port}"


def parse_notify_address(address: str) -> tuple[int, int]:
    """``(IPv4 address as int, port)`` of a ``udp://127.x.y.z:port`` address; NotifyError otherwise."""
    try:
        parts = urlsplit(address)
        port = parts.port
        ip = ipaddress.IPv4Address(parts.hostname or "")
    except ValueError as exc:
        raise NotifyError(f"notification address {address!r}: {exc}") from None
    if parts.scheme != "udp" or port is None or not ip.is_loopback:
        raise NotifyError(
            f"notification address {address!r}: the simulator listens on udp://127.x.y.z:PORT addresses only"
        )
    return int(ip), port


class Package0Listener:
    """One UDP socket for every device of the process; ``on_datagram(index, bytes)`` per datagram."""

    def __init__(
        self, addresses: Sequence[tuple[int, tuple[int, int]]], on_datagram: Callable[[int, bytes], None]
    ) -> None:
        """``addresses``: ``[(device index, (address, port))]`` (see :func:`parse_notify_address`)."""
        if not _IP_PKTINFO:
            raise NotifyError("Package #0 for simulated devices needs IP_PKTINFO (Linux)")
        ports = {port for _, (_, port) in addresses}
        if len(ports) != 1:
            raise NotifyError(
                f"every device's notification address must have the same port; the fleet has {sorted(ports)}"
            )
        self.port = ports.pop()
        pairs = sorted((ip, index) for index, (ip, _) in addresses)
        self._ips = array("I", (ip for ip, _ in pairs))
        self._index = array("I", (index for _, index in pairs))
        self._on_datagram = on_datagram
        self._sock: socket.socket | None = None
        self.received = 0
        self.unknown = 0  # datagrams to an address no device has

    def device_of(self, ip: int) -> int | None:
        at = bisect.bisect_left(self._ips, ip)
        return self._index[at] if at < len(self._ips) and self._ips[at] == ip else None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
            sock.bind(("0.0.0.0", self.port))
        except OSError as exc:
            sock.close()
            raise NotifyError(
                f"cannot listen for Package #0 on UDP port {self.port}: {exc.strerror or exc}"
            ) from None
        sock.setblocking(False)
        self._sock = sock
        loop.add_reader(sock.fileno(), self._readable)

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._sock is not None:
            loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        while True:
            try:
                data, ancillary, _flags, _peer = sock.recvmsg(_MAX_DATAGRAM, socket.CMSG_SPACE(_PKTINFO.size))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self.received += 1
            index = None
            for level, kind, info in ancillary:
                if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(info) >= _PKTINFO.size:
                    destination = _PKTINFO.unpack_from(info)[2]
                    index = self.device_of(int.from_bytes(destination, "big"))
            if index is None:
                self.unknown += 1
                continue
            self._on_datagram(index, data)
