"""HTTP transport for the agent: one POST per DM message, with retries and clear errors.

The protocol core produces the bytes, the content type and the ``x-syncml-hmac`` header;
this module only moves them (httpx) and turns every failure into a ``TransportError``
that says what went wrong. A retry re-sends the *same* message: servers answer a repeated
MsgID with their cached reply, so nothing runs twice.

A server shedding load answers 503 (or 429) with ``Retry-After``: that is not a failure but
an appointment, kept with a little jitter (``busy_wait``) and with its own bounded budget
(``busy_retries``), apart from the few retries that real failures get.

A reply is never read whole before it is measured. The agent announces ``MaxMsgSize``
(``max_msg_size``) and ``MaxObjSize`` (``max_obj_size``) to the server, and no honest
reply is larger than one message, or one message carrying one whole object of the largest
size we accept (a server that does not split large objects). So the body is streamed and
refused past::

    reply_limit = max_msg_size + ceil(max_obj_size * 4 / 3) + 64 KiB

(4/3: a binary object in an XML message is base64; 64 KiB: the envelope around it). With
the defaults (16 KiB, 4 MiB) that is about 5.4 MiB. A ``Content-Length`` above the limit
is refused before a byte of the body is read; a body (chunked or close-delimited) that
passes the limit is refused at that point, and the connection is dropped. Both are
``TransportError(retryable=False)`` naming the limit: asking again would get the same
answer. Compression is not asked for (``Accept-Encoding: identity``); a server that
compresses anyway (gzip or deflate) is decoded chunk by chunk with the decoder's output
capped by the same limit, so a small compressed bomb cannot expand in memory either.

Memory: a device keeps this process for months, so the clients are made on first use, one
per scheme. ``httpx.HTTPTransport`` builds an ``ssl.SSLContext`` with certifi's CA bundle
for every client, even one that only ever speaks ``http://`` (about 2 MB resident for
good: OpenSSL's first context and the parsed bundle). An ``http://`` server gets a client
whose transport (``PlainHTTPTransport``) has no TLS context at all and refuses any other
scheme; the ``https://`` client is made, with the configured CA, pins and client
certificate, the first time an ``https://`` URL is used. Nothing is verified less: no
redirect is followed, and a URL only ever goes to the client of its own scheme.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from omadm import __version__
from omadm.protocol.auth import HMAC_HEADER
from omadm.protocol.codec import encoding_for_content_type

from .config import AgentConfig, ConfigError
from .tls import client_certificate_refused, client_context, closed_after_handshake, describe_tls_error

__all__ = [
    "HTTPTransport",
    "PlainHTTPTransport",
    "Reply",
    "TransportError",
    "busy_wait",
    "reply_limit",
    "retry_after_seconds",
    "tls_context",
]

log = logging.getLogger(__name__)

#: HTTP statuses worth another try (the Motorola/Android client retries on these).
_RETRYABLE = {408, 429, 500, 502, 503, 504}
#: Room for the SyncML envelope around an object of ``max_obj_size`` in one reply.
_REPLY_SLACK = 64 * 1024


def reply_limit(max_msg_size: int, max_obj_size: int) -> int:
    """The most bytes a DM reply may have (see the module docstring for the reasoning)."""
    return max_msg_size + -(-max_obj_size * 4 // 3) + _REPLY_SLACK


def tls_context(
    verify: bool,
    ca_file: str | None,
    client_cert: str | None,
    client_key: str | None,
    pins: Collection[bytes] = (),
) -> ssl.SSLContext | bool:
    """What httpx's ``verify=`` takes for these TLS settings (0.28 deprecates the string forms).

    Raises ``ValueError`` naming the files when a CA bundle or certificate cannot be loaded.
    ``pins``: server key digests to accept (see ``omadm.agent.tls``).
    """
    return client_context(verify, ca_file, client_cert, client_key, pins)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header in seconds (delay-seconds or an HTTP-date); None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def busy_wait(retry_after: float, rng: random.Random) -> float:
    """How long to wait for a ``Retry-After`` of ``retry_after`` s: a little more, at random.

    The server books each refused device its own time (an appointment); jitter only keeps
    the devices told the same second from arriving in the same millisecond, so it is small:
    up to one second plus a tenth of the wait.
    """
    return retry_after + rng.random() * (1.0 + 0.1 * retry_after)


class TransportError(Exception):
    """The message could not be delivered or the answer was not a DM message.

    ``retry_after``: the server is busy and said when to come back (seconds). ``tls``: the
    TLS checks refused the server (or the server our certificate): not retried.
    """

    def __init__(
        self, message: str, *, retryable: bool, retry_after: float | None = None, tls: bool = False
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.tls = tls


@dataclass(frozen=True, slots=True)
class Reply:
    body: bytes
    content_type: str | None
    hmac_header: str | None


class PlainHTTPTransport(httpx.HTTPTransport):
    """httpx's own transport for ``http://`` URLs only, made without a TLS context.

    ``httpx.HTTPTransport.__init__`` always builds an ``ssl.SSLContext`` (certifi's bundle
    unless told otherwise), which a client of an ``http://`` server never uses but keeps
    resident (see the module docstring). This builds the same httpcore connection pool
    with no context and otherwise is httpx's transport (its request handling, exception
    mapping and streaming). A URL of any other scheme is refused before a connection is
    made (``httpx.UnsupportedProtocol``), so it can never open a TLS connection that
    nothing verifies. Proxies from the environment still work: httpx mounts its own
    transports for them.
    """

    def __init__(self, limits: httpx.Limits | None = None) -> None:
        import httpcore  # noqa: PLC0415 - httpx's own dependency; loaded with httpx anyway

        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        # Not super().__init__(): that is where the context is built. ``_pool`` is what
        # httpx's handle_request and close use; tests/agent/test_transport_memory.py checks
        # that a session and a close go through it.
        self._pool = httpcore.ConnectionPool(
            ssl_context=None,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "http":
            raise httpx.UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{request.url.scheme}://'"
                " (this client speaks http:// only).",
                request=request,
            )
        return super().handle_request(request)


class HTTPTransport:
    """POSTs DM messages with httpx; ``sleep`` is injectable so tests need not wait.

    ``client``, when given, carries every URL (tests inject httpx transports that way);
    otherwise a client per scheme is made on first use (see the module docstring).
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
        client: httpx.Client | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._sleep = sleep
        self._rng = rng or random.Random()
        tls = config.tls
        try:
            verify = tls_context(
                tls.verify, tls.ca_file or None, tls.client_cert or None, tls.client_key or None, tls.pins
            )
        except ValueError as exc:
            raise ConfigError(f"[tls]: {exc}") from None
        self._verify = verify  # also for the check after a connection dropped unanswered
        self._injected = client
        self._clients: dict[str, httpx.Client] = {}
        self._clients_lock = threading.Lock()

    def client_for(self, url: str) -> httpx.Client:
        """The client that carries ``url``: the injected one, else its scheme's (made on first use)."""
        if self._injected is not None:
            return self._injected
        scheme = "https" if url[:6].lower() == "https:" else "http"
        with self._clients_lock:
            client = self._clients.get(scheme)
            if client is None:
                client = self._clients[scheme] = self._new_client(scheme)
            return client

    def _new_client(self, scheme: str) -> httpx.Client:
        headers = {"User-Agent": f"omadm-agent/{__version__}", "Cache-Control": "private"}
        timeout = self.config.timeout
        if scheme == "https":  # the TLS context: the configured CA, pins, client certificate
            return httpx.Client(verify=self._verify, timeout=timeout, headers=headers, follow_redirects=False)
        return httpx.Client(
            transport=PlainHTTPTransport(), timeout=timeout, headers=headers, follow_redirects=False
        )

    def close(self) -> None:
        with self._clients_lock:
            clients = [self._injected] if self._injected is not None else list(self._clients.values())
            self._clients.clear()
        for client in clients:
            client.close()

    def post(self, url: str, body: bytes, content_type: str, headers: dict[str, str]) -> Reply:
        """Send one message; wait out a busy server; retry transient failures with backoff."""
        delay = self.config.retry_backoff
        failures = busy = 0
        while True:
            try:
                return self._post_once(url, body, content_type, headers)
            except TransportError as exc:
                if exc.retry_after is not None and busy < self.config.busy_retries:
                    busy += 1
                    wait = busy_wait(min(exc.retry_after, self.config.max_retry_after), self._rng)
                    log.info(
                        "POST %s: the server is busy; back in %.1fs (%d/%d)",
                        url,
                        wait,
                        busy,
                        self.config.busy_retries,
                    )
                    self._sleep(wait)
                    continue
                failures += 1
                if not exc.retryable or failures > self.config.retries:
                    raise
                log.warning(
                    "POST %s failed (%s); retrying in %.1fs (%d/%d)",
                    url,
                    exc,
                    delay,
                    failures,
                    self.config.retries,
                )
                self._sleep(delay)
                delay *= 2

    @property
    def reply_limit(self) -> int:
        """The most bytes a reply may have: ``reply_limit(max_msg_size, max_obj_size)``."""
        return reply_limit(self.config.max_msg_size, self.config.max_obj_size)

    def _post_once(self, url: str, body: bytes, content_type: str, headers: dict[str, str]) -> Reply:
        """One POST; the reply is streamed so that its size is checked before it is all in memory."""
        request_headers = {
            "Content-Type": content_type,
            "Accept": content_type,
            "Accept-Encoding": "identity",  # a compressed reply could not be measured before decoding
            **headers,
        }
        try:
            client = self.client_for(url)
            with client.stream("POST", url, content=body, headers=request_headers) as response:
                if response.status_code != 200:
                    retry_after = (
                        retry_after_seconds(response.headers.get("retry-after"))
                        if response.status_code in (429, 503)
                        else None
                    )
                    raise TransportError(
                        f"{url} answered HTTP {response.status_code} {response.reason_phrase}"
                        + _refusal_text(response),
                        retryable=response.status_code in _RETRYABLE,
                        retry_after=retry_after,
                    )
                content = self._read_reply(response, url)
        except httpx.TimeoutException:
            raise TransportError(
                f"no answer from {url} within {self.config.timeout:.0f}s", retryable=True
            ) from None
        except httpx.TransportError as exc:
            tls = self.config.tls
            problem = describe_tls_error(
                exc, ca_file=tls.ca_file, client_cert=tls.client_cert, host=httpx.URL(url).host
            )
            if problem is None and self._dropped_at_handshake(exc, url):
                problem = client_certificate_refused(tls.client_cert)
            if problem is not None:  # asking again gets the same certificate: not retried
                raise TransportError(f"TLS with {url}: {problem}", retryable=False, tls=True) from None
            raise TransportError(f"cannot reach {url}: {exc}", retryable=True) from None
        content_type_back = response.headers.get("content-type")
        if content_type_back and encoding_for_content_type(content_type_back) is None:
            log.info("server sent Content-Type %r; decoding by the bytes", content_type_back)
        return Reply(content, content_type_back, response.headers.get(HMAC_HEADER))

    def _dropped_at_handshake(self, exc: httpx.TransportError, url: str) -> bool:
        """Whether an HTTPS server that sent no answer drops every connection after the handshake.

        (A client certificate refused under TLS 1.3 looks like that: see ``closed_after_handshake``.)
        """
        target = httpx.URL(url)
        if target.scheme != "https" or not isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
            return False
        return closed_after_handshake(target.host, target.port or 443, self._verify)

    def _read_reply(self, response: httpx.Response, url: str) -> bytes:
        """The reply's body, refused (without reading on) once it passes ``reply_limit``."""
        limit = self.reply_limit
        why = f"the agent's limit (max_msg_size + 4/3 max_obj_size + 64 KiB is {limit} bytes)"
        length = response.headers.get("content-length", "").strip()
        if length.isdigit() and int(length) > limit:
            raise TransportError(f"{url} announced a reply of {length} bytes, over {why}", retryable=False)
        if response.is_stream_consumed:  # built in memory (a test double): already decoded
            inflate, chunks = None, iter([response.content])
        else:
            inflate, chunks = _inflater(response, url), response.iter_raw()
        received = bytearray()
        for raw in chunks:
            chunk = raw if inflate is None else inflate(raw, limit - len(received) + 1)
            if len(received) + len(chunk) > limit:
                message = f"{url} sent a reply of more than {limit} bytes, over {why}; the rest was not read"
                raise TransportError(message, retryable=False)
            received += chunk
        return bytes(received)


def _refusal_text(response: httpx.Response, limit: int = 500) -> str:
    """``": <why>"`` from a 4xx plain-text refusal (the server says which check failed), else ``""``.

    At most ``limit`` bytes are read: the answer is a sentence, not a reply to measure.
    """
    if not 400 <= response.status_code < 500 or "text/plain" not in response.headers.get("content-type", ""):
        return ""
    received = b""
    try:
        for chunk in response.iter_bytes():
            received += chunk
            if len(received) >= limit:
                break
    except httpx.HTTPError:
        return ""
    text = " ".join(received[:limit].decode("utf-8", "replace").split())
    return f": {text}" if text else ""


#: Content-Encoding -> zlib ``wbits``; HTTP's "deflate" is the zlib format (32: or gzip).
_ZLIB_WBITS = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS | 32}


def _inflater(response: httpx.Response, url: str) -> Callable[[bytes, int], bytes] | None:
    """``inflate(data, at_most)`` for a compressed reply (None when it is not compressed).

    zlib's ``max_length`` bounds what one call produces, which httpx's own decoders do not:
    they expand a whole network read at once, up to a thousand times its size.
    """
    codings = [c.strip().lower() for c in response.headers.get("content-encoding", "").split(",")]
    codings = [c for c in codings if c not in ("", "identity")]
    if not codings:
        return None
    if len(codings) > 1 or codings[0] not in _ZLIB_WBITS:
        raise TransportError(
            f"{url} sent Content-Encoding {', '.join(codings)}; only identity, gzip and deflate "
            "are understood",
            retryable=False,
        )
    coding = codings[0]
    decompressor = zlib.decompressobj(_ZLIB_WBITS[coding])

    def inflate(data: bytes, at_most: int) -> bytes:
        try:
            return decompressor.decompress(data, max(1, at_most))
        except zlib.error as exc:
            raise TransportError(
                f"cannot decode the {coding} reply from {url}: {exc}", retryable=False
            ) from None

    return inflate
