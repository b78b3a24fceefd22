"""The HTTP side of the device runner: a small asyncio HTTP/1.1 listener that hands POSTs over.

The runner plays a DM server, so it must answer each of the device's POSTs with the next
scripted message, and a case decides *when* (after it looked at what came in). Each POST
becomes a :class:`Request` with a future for its answer; the runner awaits the requests and
resolves the futures. Only what DM over HTTP needs is implemented: ``POST`` with a
``Content-Length`` body, keep-alive, and a plain error for anything else. It is not a general
web server, and keeping it this small keeps it robust (no framework, no chunked bodies).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["MAX_BODY_BYTES", "HttpListener", "Request", "Response"]

log = logging.getLogger("omadm.conformance.device")

#: A DM message larger than this is refused with 413 (the runner's own MaxMsgSize is far lower).
MAX_BODY_BYTES = 8 * 1024 * 1024
_MAX_HEADER_BYTES = 16 * 1024
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Too Large"}
_REASONS |= {500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass(frozen=True)
class Response:
    """What to send back for one request."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    """One POST from the device; the runner answers it by resolving ``reply``."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    reply: asyncio.Future[Response]

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class HttpListener:
    """``await HttpListener(handler).start(host, port)``: every request goes to ``handler``.

    ``handler`` gets the :class:`Request` and must eventually resolve its ``reply`` (it may
    return at once and resolve it later). An unresolved reply after ``reply_timeout`` seconds
    is answered with 503, so a case that stopped half-way never leaves the device hanging.
    """

    def __init__(self, handler: Callable[[Request], Awaitable[None]], *, reply_timeout: float = 60.0) -> None:
        self._handler = handler
        self._reply_timeout = reply_timeout
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._serve, host, port)
        sock = self._server.sockets[0].getsockname()
        return str(sock[0]), int(sock[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                keep_alive = await self._one(reader, writer)
                if not keep_alive:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > _MAX_HEADER_BYTES:
            await _write(writer, Response(400, b"header too large"), keep_alive=False)
            return False
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await _write(writer, Response(400, b"not an HTTP/1.x request line"), keep_alive=False)
            return False
        method, path, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        keep_alive = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            await _write(
                writer, Response(400, b"chunked bodies are not accepted; send Content-Length"), False
            )
            return False
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            await _write(writer, Response(400, b"Content-Length is not a number"), keep_alive=False)
            return False
        if length < 0 or length > MAX_BODY_BYTES:
            await _write(writer, Response(413, b"body too large for a DM message"), keep_alive=False)
            return False
        body = await reader.readexactly(length) if length else b""
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        request = Request(method.upper(), path, headers, body, future)
        try:
            await self._handler(request)
            response = await asyncio.wait_for(asyncio.shield(future), self._reply_timeout)
        except TimeoutError:
            response = Response(503, b"the conformance runner has no answer for this message")
        except Exception as exc:  # a bug in the runner must not kill the listener
            log.exception("the runner failed on a request")
            response = Response(500, f"conformance runner error: {exc}".encode())
        await _write(writer, response, keep_alive)
        return keep_alive


async def _write(writer: asyncio.StreamWriter, response: Response, keep_alive: bool) -> None:
    reason = _REASONS.get(response.status, "Status")
    headers = {"Content-Type": "text/plain", **response.headers}
    headers["Content-Length"] = str(len(response.body))
    headers["Connection"] = "keep-alive" if keep_alive else "close"
    head = f"HTTP/1.1 {response.status} {reason}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    writer.write(head.encode("latin-1") + response.body)
    await writer.drain()
