"""Package #0 listeners: a server asks the device to call it back (UDP and HTTP).

The listener threads only receive bytes and hand them to ``Agent.notify``; the agent's own
thread checks them with ``NotificationGate`` (the tree is not shared between threads).

A notification is trusted only when its digest verifies with the server's SRVCRED secret
and the nonce the device issued to that server (or, failing that, the four-zero-byte resync
nonce: then both sides restart from it). Anything else is logged and ignored, as the
standard asks: an attacker must not be able to make devices call out.

Replays: a device starts at most one session per (server, session id) within ``memory``
seconds, and never two for the same bytes among the last ``MAX_REMEMBERED`` it accepted.
Both are kept in the tree's store, so a restart does not forget them (captured bytes
replayed after a reboot are refused). Past that window, the digest itself stops a replay:
each session with an authenticated server issues it a new nonce, which the next Package #0
must be signed with (the resync nonce is the exception the standard makes, and the
remembered bytes cover it).

Floods: the agent queues at most ``Agent.MAX_PENDING_NOTIFICATIONS`` unchecked Package #0s
and drops the rest; the HTTP listener refuses a body without a valid length of at most
``MAX_PACKAGE0_BYTES`` before reading it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable

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

__all__ = [
    "MAX_PACKAGE0_BYTES",
    "MAX_REMEMBERED",
    "HTTPNotificationListener",
    "NotificationGate",
    "UDPNotificationListener",
    "parse_address",
]

log = logging.getLogger("omadm.agent.listener")

#: A Package #0 is a few hundred bytes (digest, header, a vendor part): more is not one.
MAX_PACKAGE0_BYTES = 4096
#: Accepted Package #0s remembered (by digest of their bytes) to refuse an exact replay.
MAX_REMEMBERED = 512
#: Where the gate keeps what it has seen (the tree store's settings: one small JSON value).
_SEEN_SETTING = "package0_seen"


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
        self, agent: Agent, *, clock: Callable[[], float] = time.time, memory: float = 600.0
    ) -> None:
        self.agent = agent
        self._clock = clock  # wall time: what is remembered must outlive the process
        self._memory = memory
        self._lock = threading.Lock()

    def _load(self) -> tuple[dict[str, float], list[str]]:
        """(``server session`` -> when, the digests of the last accepted), as stored."""
        raw = self.agent.store.get_setting(_SEEN_SETTING)
        try:
            data = json.loads(raw) if raw else {}
            sessions = {str(k): float(v) for k, v in dict(data.get("sessions", {})).items()}
            digests = [str(d) for d in list(data.get("digests", []))]
        except (ValueError, TypeError, AttributeError):
            log.warning("the stored Package #0 replay window was unreadable; starting a new one")
            return {}, []
        return sessions, digests

    def _remember(self, key: str, digest: str) -> bool:
        """Record an accepted Package #0; False when it is a replay (seen before)."""
        with self._lock:
            now = self._clock()
            sessions, digests = self._load()
            sessions = {k: t for k, t in sessions.items() if now - t < self._memory}
            if key in sessions or digest in digests:
                return False
            sessions[key] = now
            digests = [*digests, digest][-MAX_REMEMBERED:]
            self.agent.store.set_setting(
                _SEEN_SETTING, json.dumps({"sessions": sessions, "digests": digests})
            )
            return True

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
        key = f"{note.server_id} {note.session_id}"
        if not self._remember(key, hashlib.sha256(data).hexdigest()):
            log.info(
                "ignored a repeated Package #0 from %s for session %s", note.server_id, note.session_id_hex
            )
            return None
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
        # Loaded here: only this listener needs http.server, and a UDP-only agent keeps
        # what it imports resident for months (bench/agent_rss.py).
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: PLC0415

        listener = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10.0  # seconds for a slow sender: a Package #0 is one small write

            def do_POST(self) -> None:
                if self.headers.get("Transfer-Encoding"):
                    self.send_error(411, "send a Package #0 with a Content-Length, not chunked")
                    return
                declared = (self.headers.get("Content-Length") or "").strip()
                if not declared.isdigit():  # missing, negative ("-1" read to the end) or not a number
                    self.send_error(411, f"Content-Length must be a number of bytes, not {declared!r}")
                    return
                length = int(declared)
                if length > MAX_PACKAGE0_BYTES:
                    self.send_error(413, f"a Package #0 is at most {MAX_PACKAGE0_BYTES} bytes")
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
