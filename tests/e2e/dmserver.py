"""A small DM server for end-to-end tests: ``ServerSession`` behind a real HTTP listener.

It serves POSTs on 127.0.0.1, keeps one ``ServerSession`` per session keyed by the token in
its RespURI (as a real server must, pitfall 17), and lets a test script what each session
does: ``script(events, session)`` runs after every client message and may queue commands.
Everything received is kept for assertions.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from omadm.protocol import codec
from omadm.protocol.auth import HMAC_HEADER
from omadm.protocol.errors import ProtocolError
from omadm.protocol.session import Credentials, Event, NonceIssued, NonceReceived, ServerConfig, ServerSession

Script = Callable[[list[Event], ServerSession], None]


@dataclass
class DeviceAccount:
    """What the server knows about one device."""

    credentials: Credentials | None
    client_nonce: bytes = b""
    server_credentials: Credentials | None = None
    server_nonce: bytes = b""
    send_server_cred: bool = False


@dataclass
class Record:
    events: list[Event] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    replies: list[bytes] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sessions: list[ServerSession] = field(default_factory=list)


class TestDMServer:
    """``with TestDMServer(...) as srv: srv.url`` - a DM server on a free port of 127.0.0.1."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        accounts: dict[str, DeviceAccount],
        script: Script | None = None,
        *,
        max_msg_size: int | None = 65536,
        max_obj_size: int | None = 16 * 1024 * 1024,
    ) -> None:
        self.accounts = accounts
        self.script = script
        self.max_msg_size = max_msg_size
        self.max_obj_size = max_obj_size
        self.record = Record()
        self._sessions: dict[str, ServerSession] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                token = parse_qs(urlparse(self.path).query).get("s", [""])[0]
                status, reply, headers = server.handle(
                    body, token, self.headers.get("Content-Type"), self.headers.get(HMAC_HEADER)
                )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._http.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/dm"
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> TestDMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()

    def handle(
        self, body: bytes, token: str, content_type: str | None, hmac_header: str | None
    ) -> tuple[int, bytes, dict[str, str]]:
        with self._lock:
            self.record.bodies.append(body)
            try:
                message, _ = codec.decode(body, content_type)
            except ProtocolError as exc:
                self.record.errors.append(str(exc))
                return 400, str(exc).encode(), {"Content-Type": "text/plain"}
            session = self._sessions.get(token)
            if session is None or (session.finished and message.header.msg_id == "1"):
                token = secrets.token_hex(8)
                account = self.accounts.get(message.header.source.loc_uri)
                if account is None:
                    self.record.errors.append(f"unknown device {message.header.source.loc_uri}")
                    return 403, b"unknown device", {"Content-Type": "text/plain"}
                session = ServerSession(
                    ServerConfig(
                        server_uri=self.url,
                        resp_uri=f"{self.url}?s={token}",
                        client_credentials=account.credentials,
                        client_nonce=account.client_nonce,
                        server_credentials=account.server_credentials,
                        server_nonce=account.server_nonce,
                        send_server_cred=account.send_server_cred,
                        max_msg_size=self.max_msg_size,
                        max_obj_size=self.max_obj_size,
                    )
                )
                session.account = account  # type: ignore[attr-defined]
                self._sessions[token] = session
                self.record.sessions.append(session)
            try:
                events = session.receive_message(message, body, hmac_header=hmac_header)
            except ProtocolError as exc:
                self.record.errors.append(str(exc))
                return 400, str(exc).encode(), {"Content-Type": "text/plain"}
            self._remember_nonces(session, events)
            self.record.events.extend(events)
            if self.script is not None and not session.finished:
                self.script(events, session)
            out = session.reply()
            later = session.events()
            self._remember_nonces(session, later)
            self.record.events.extend(later)
            self.record.replies.append(out.body)
            return 200, out.body, {"Content-Type": out.content_type, **out.headers}

    @staticmethod
    def _remember_nonces(session: ServerSession, events: list[Event]) -> None:
        account: DeviceAccount = session.account  # type: ignore[attr-defined]
        for event in events:
            if isinstance(event, NonceIssued):
                account.client_nonce = event.nonce
            elif isinstance(event, NonceReceived):
                account.server_nonce = event.nonce

    def of(self, kind: type) -> list:  # type: ignore[type-arg]
        return [e for e in self.record.events if isinstance(e, kind)]
