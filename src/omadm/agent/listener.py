"""Package #0 listeners: a server asks the device to call it back (UDP and HTTP).

The listener threads only receive bytes and hand them to ``Agent.notify``; the agent's own
thread checks them with ``NotificationGate`` (the tree is not shared between threads).

A notification is trusted only when its digest verifies with the server's SRVCRED secret
and the nonce the device issued to that server (or, failing that, the four-zero-byte resync
nonce: then both sides restart from it). Anything else is logged and ignored, as the
standard asks: an attacker must not be able to make devices call out. A device starts at
most one session per (server, session id) it was notified with.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from omadm.protocol.auth import RESYNC_NONCE
from omadm.protocol.codes import AlertCode
from omadm.protocol.errors import MalformedMessage
from omadm.protocol.notification import (
    VerifyResult,
    decode_notification,
    is_notification_content_type,
    verify_with_resync,
)

from .runner import Agent, SessionRequest

__all__ = ["HTTPNotificationListener", "NotificationGate", "UDPNotificationListener", "parse_address"]

log = logging.getLogger("omadm.agent.listener")


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"listen address must be host:port, not {text!r}")
    return host.strip("[]"), int(port)


class NotificationGate:
    """Checks a Package #0 and turns it into a session request for the agent.

    ``accept(data)`` returns the request it made, or None with the reason logged.
    """

    def __init__(
        self, agent: Agent, *, clock: Callable[[], float] = time.monotonic, memory: float = 600.0
    ) -> None:
        self.agent = agent
        self._clock = clock
        self._memory = memory
        self._seen: dict[tuple[str, int], float] = {}
        self._lock = threading.Lock()

    def accept(self, data: bytes) -> SessionRequest | None:
        try:
            decoded = decode_notification(data)
        except MalformedMessage as exc:
            log.warning("ignored a malformed Package #0: %s", exc)
            return None
        note = decoded.notification
        try:
            account = self.agent.account(note.server_id)
        except LookupError:
            log.warning("ignored a Package #0 from unknown server %r", note.server_id)
            return None
        if account.server is None:
            log.warning("ignored a Package #0 from %s: no SRVCRED secret to verify it", note.server_id)
            return None
        result = verify_with_resync(
            decoded, account.server.password, account.server_nonce, server_name=account.server.username
        )
        if result is VerifyResult.FAILED:
            log.warning("ignored a Package #0 from %s: the digest does not verify", note.server_id)
            return None
        key = (note.server_id, note.session_id)
        with self._lock:
            now = self._clock()
            self._seen = {k: t for k, t in self._seen.items() if now - t < self._memory}
            if key in self._seen:
                log.info(
                    "ignored a repeated Package #0 from %s for session %s",
                    note.server_id,
                    note.session_id_hex,
                )
                return None
            self._seen[key] = now
        if result is VerifyResult.OK_RESYNC:
            # Nonce resynchronisation (Notification 1.2): both sides start again from 0x00000000.
            log.info("Package #0 from %s verified with the resync nonce", note.server_id)
            for node in (account.client_auth_node, account.server_auth_node):
                if node:
                    self.agent.tree.system_set(
                        f"{node}/AAuthData", RESYNC_NONCE, format="bin", type="application/octet-stream"
                    )
        return SessionRequest(
            note.server_id, AlertCode.SERVER_INITIATED_MGMT, note.session_id_hex, reason="package #0"
        )


class UDPNotificationListener(threading.Thread):
    """Receives Package #0 datagrams (WDP port 2948 by default, any address you bind)."""

    def __init__(self, agent: Agent, address: tuple[str, int], stop: threading.Event) -> None:
        super().__init__(name="omadm-pkg0-udp", daemon=True)
        self.agent = agent
        self.stop = stop
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.5)
        self.address = self.sock.getsockname()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                data, peer = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                break
            log.debug("Package #0 datagram from %s", peer)
            self.agent.notify(data)
        self.sock.close()


class HTTPNotificationListener:
    """Receives Package #0 as an HTTP POST of ``application/vnd.syncml.notification``.

    Answers 202 as soon as the bytes are queued: the digest is checked by the agent's
    thread, and a failed check is only logged (as for SMS and UDP, the sender learns nothing).
    """

    def __init__(self, agent: Agent, address: tuple[str, int]) -> None:
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > 4096:
                    self.send_error(413, "a Package #0 is at most a few hundred bytes")
                    return
                body = self.rfile.read(length)
                content_type = self.headers.get("Content-Type", "")
                if content_type and not is_notification_content_type(content_type):
                    self.send_error(415, "expected application/vnd.syncml.notification")
                    return
                listener.agent.notify(body)
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                log.debug("pkg0 http: " + format, *args)

        self.agent = agent
        self.server = ThreadingHTTPServer(address, Handler)
        self.address = self.server.server_address
        self._thread = threading.Thread(target=self.server.serve_forever, name="omadm-pkg0-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
