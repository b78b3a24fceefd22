"""A package (download) server for tests: files over HTTP(S) on 127.0.0.1, with faults on demand.

Used by the downloader's unit tests and by end-to-end SCOMO tests, so it behaves like a
real static file server where that matters (Content-Length, strong ETag, Last-Modified,
``Range``/``If-Range`` with 206 and 416) and can misbehave on request, per path::

    with PackageServer() as srv:
        srv.add("/app.bin", data)                                # plain file
        srv.add("/auth.bin", data, auth=("user", "secret"))      # Basic auth, 401 otherwise
        srv.add("/flaky.bin", data, fail_times=2)                # 503 twice, then the file
        srv.add("/drop.bin", data, drop_after=1000, drop_times=1)  # close mid-body once
        srv.add("/wrong.bin", data, content_type="text/html")     # misleading Content-Type
        srv.add_descriptor("/app.dd", "/app.bin")                 # a DD pointing at /app.bin
        url = srv.url("/app.dd")
        ...
        srv.requests_for("/drop.bin")[1].headers["range"]         # what the client sent
        srv.notifications                                         # install-notify POSTs

Every request is recorded (``requests``); every POST is taken as an install-notify report
and recorded (``notifications``), answered with ``notify_status`` (200 by default).
Files may also come from ``directory`` (looked up when a path is not registered).
``tls=(certfile, keyfile)`` serves HTTPS; ``self_signed_cert`` makes a pair for 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import shutil
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from omadm.agent.scomo.dd import DD_CONTENT_TYPE, DownloadDescriptor

__all__ = ["Notification", "PackageServer", "RequestRecord", "Resource", "self_signed_cert"]


@dataclass
class Resource:
    """One servable file and the faults to inject when it is requested.

    ``fail_times`` requests are answered ``fail_status`` before the file is served;
    ``drop_times`` responses are cut (socket closed) after ``drop_after`` body bytes.
    ``ignore_range`` makes the server answer 200 to every Range request (allowed by HTTP).
    ``send_length=False`` sends the body close-delimited, without Content-Length.
    ``before_reply`` is called (in the server's thread) before each answer with the file, while
    the client waits for it: end-to-end tests use it to look at the device mid-download.
    """

    body: bytes
    content_type: str = "application/octet-stream"
    auth: tuple[str, str] | None = None
    fail_status: int = 503
    fail_times: int = 0
    drop_after: int | None = None
    drop_times: int = 0
    ignore_range: bool = False
    delay: float = 0.0
    before_reply: Callable[[], None] | None = None
    send_etag: bool = True
    send_last_modified: bool = True
    send_length: bool = True
    headers: dict[str, str] = field(default_factory=dict)
    modified: float = field(default_factory=time.time)

    @property
    def etag(self) -> str:
        """A strong validator derived from the content, as many servers do."""
        return '"' + hashlib.sha256(self.body).hexdigest()[:20] + '"'

    @property
    def last_modified(self) -> str:
        return formatdate(self.modified, usegmt=True)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it (header names lower-cased) and the status it got."""

    method: str
    path: str
    headers: dict[str, str]
    status: int


@dataclass(frozen=True)
class Notification:
    """One POST (an install-notify report): path, decoded body and Content-Type."""

    path: str
    body: str
    content_type: str | None


class PackageServer:
    """``with PackageServer() as srv: srv.url(path)``: a threaded file server on a free port."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        files: dict[str, bytes | Resource] | None = None,
        *,
        directory: Path | None = None,
        tls: tuple[Path | str, Path | str] | None = None,
        notify_status: int = 200,
    ) -> None:
        self.resources: dict[str, Resource] = {}
        self.directory = directory
        self.notify_status = notify_status
        self.requests: list[RequestRecord] = []
        self.notifications: list[Notification] = []
        self._lock = threading.Lock()
        for path, value in (files or {}).items():
            if isinstance(value, Resource):
                self.resources[path] = value
            else:
                self.add(path, value)
        self._http = _QuietServer(("127.0.0.1", 0), _make_handler(self))
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self._http.socket = context.wrap_socket(self._http.socket, server_side=True)
            self.scheme = "https"
        self.port = self._http.server_address[1]
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    # -- set-up ---------------------------------------------------------------------------

    def add(self, path: str, body: bytes, **options: object) -> Resource:
        """Serve ``body`` at ``path``; ``options`` are :class:`Resource` fields."""
        resource = Resource(body, **options)  # type: ignore[arg-type]
        with self._lock:
            self.resources[path] = resource
        return resource

    def add_descriptor(
        self,
        path: str,
        object_path: str,
        *,
        size: int | None = None,
        types: tuple[str, ...] | None = None,
        notify_path: str | None = "",
        absolute: bool = False,
        content_type: str = DD_CONTENT_TYPE,
        **fields: str,
    ) -> Resource:
        """Serve a DLOTA DD at ``path`` for the object at ``object_path``.

        ``size`` and ``types`` default to the object's real size and Content-Type (pass
        others to provoke a 905). The DD names ``notify_path`` as installNotifyURI
        (``"/notify" + path`` by default; None for no notify URI). URLs are written
        relative unless ``absolute``. ``fields`` are further :class:`DownloadDescriptor`
        fields (``name``, ``dd_version``, ``vendor`` ...).
        """
        target = self.resources[object_path]
        notify = "/notify" + path if notify_path == "" else notify_path
        descriptor = DownloadDescriptor(
            object_uri=self.url(object_path) if absolute else object_path,
            size=len(target.body) if size is None else size,
            types=types or (target.content_type,),
            install_notify_uri=(self.url(notify) if absolute else notify) if notify else None,
            **fields,
        )
        return self.add(path, descriptor.to_xml(), content_type=content_type)

    def update(self, path: str, body: bytes) -> Resource:
        """Change a file's content: new ETag and a later Last-Modified (If-Range then fails)."""
        with self._lock:
            resource = self.resources[path]
            resource.body = body
            resource.modified = max(time.time(), resource.modified + 1)
        return resource

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    # -- what happened --------------------------------------------------------------------

    def requests_for(self, path: str, method: str = "GET") -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.requests if r.path == path and r.method == method]

    # -- life cycle -----------------------------------------------------------------------

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> PackageServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- used by the handler --------------------------------------------------------------

    def _lookup(self, path: str) -> Resource | None:
        with self._lock:
            resource = self.resources.get(path)
        if resource is not None or self.directory is None:
            return resource
        base = self.directory.resolve()
        candidate = (base / unquote(path).lstrip("/")).resolve()
        if not candidate.is_relative_to(base) or not candidate.is_file():
            return None
        kind = DD_CONTENT_TYPE if candidate.suffix == ".dd" else mimetypes.guess_type(candidate.name)[0]
        resource = Resource(
            candidate.read_bytes(),
            content_type=kind or "application/octet-stream",
            modified=candidate.stat().st_mtime,
        )
        with self._lock:
            self.resources[path] = resource
        return resource

    def _take(self, resource: Resource, counter: str) -> bool:
        """Use up one of ``fail_times``/``drop_times``; True when a fault is due now."""
        with self._lock:
            left: int = getattr(resource, counter)
            if left <= 0:
                return False
            setattr(resource, counter, left - 1)
            return True

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up (aborted downloads, refused TLS handshakes) are not errors here."""

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | ssl.SSLError | TimeoutError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


def _parse_range(header: str, length: int) -> tuple[int, int] | bool | None:
    """(first, last) for one satisfiable range; None to ignore the header; False if unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # multiple ranges: answering 200 is allowed
    first_text, dash, last_text = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if not first_text:  # suffix range: the last N bytes
            count = int(last_text)
            return (max(0, length - count), length - 1) if count > 0 and length > 0 else False
        first = int(first_text)
        last = int(last_text) if last_text else length - 1
    except ValueError:
        return None
    if first >= length or last < first:
        return False
    return first, min(last, length - 1)


def _make_handler(server: PackageServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass  # the records are in server.requests

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            path = urlsplit(self.path).path
            server._record(RequestRecord("POST", path, self._headers(), server.notify_status))
            with server._lock:
                server.notifications.append(
                    Notification(path, body.decode("utf-8", "replace"), self.headers.get("Content-Type"))
                )
            self._reply_empty(server.notify_status)

        def _headers(self) -> dict[str, str]:
            return {name.lower(): value for name, value in self.headers.items()}

        def _reply_empty(self, status: int, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _serve(self, *, head: bool) -> None:
            path = urlsplit(self.path).path
            resource = server._lookup(path)

            def record(status: int) -> None:
                server._record(RequestRecord(self.command, path, self._headers(), status))

            if resource is None:
                record(404)
                self._reply_empty(404)
                return
            if resource.auth is not None:
                expected = "Basic " + base64.b64encode(":".join(resource.auth).encode()).decode()
                if self.headers.get("Authorization") != expected:
                    record(401)
                    self._reply_empty(401, {"WWW-Authenticate": 'Basic realm="packages"'})
                    return
            if resource.delay:
                time.sleep(resource.delay)
            if resource.before_reply is not None:
                resource.before_reply()
            if server._take(resource, "fail_times"):
                record(resource.fail_status)
                self._reply_empty(resource.fail_status)
                return

            body = resource.body
            status, first, last = 200, 0, len(body) - 1
            wanted = self.headers.get("Range")
            if wanted and not resource.ignore_range and self._if_range_holds(resource):
                span = _parse_range(wanted, len(body))
                if span is False:
                    record(416)
                    self._reply_empty(416, {"Content-Range": f"bytes */{len(body)}"})
                    return
                if isinstance(span, tuple):
                    status, (first, last) = 206, span
            payload = body[first : last + 1]
            record(status)
            self.send_response(status)
            self.send_header("Content-Type", resource.content_type)
            self.send_header("Accept-Ranges", "bytes")
            if resource.send_etag:
                self.send_header("ETag", resource.etag)
            if resource.send_last_modified:
                self.send_header("Last-Modified", resource.last_modified)
            if status == 206:
                self.send_header("Content-Range", f"bytes {first}-{last}/{len(body)}")
            if resource.send_length:
                self.send_header("Content-Length", str(len(payload)))
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            for name, value in resource.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if head:
                return
            if resource.drop_after is not None and server._take(resource, "drop_times"):
                self.wfile.write(payload[: resource.drop_after])
                self.wfile.flush()
                self.close_connection = True  # the socket closes with the body incomplete
                return
            self.wfile.write(payload)

        def _if_range_holds(self, resource: Resource) -> bool:
            """RFC 9110 If-Range: honour Range only if the validator still matches."""
            validator = self.headers.get("If-Range")
            if validator is None:
                return True
            if validator.startswith(('"', "W/")):
                return resource.send_etag and validator == resource.etag
            return resource.send_last_modified and validator == resource.last_modified

    return Handler


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for ``127.0.0.1`` made with the openssl CLI (test use only).

    Raises:
        FileNotFoundError: no ``openssl`` on PATH (tests should skip then).
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("openssl is not installed")
    cert, key = directory / "server.pem", directory / "server.key"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
