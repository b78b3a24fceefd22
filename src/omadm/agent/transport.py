"""HTTP transport for the agent: one POST per DM message, with retries and clear errors.

The protocol core produces the bytes, the content type and the ``x-syncml-hmac`` header;
this module only moves them (httpx) and turns every failure into a ``TransportError``
that says what went wrong. A retry re-sends the *same* message: servers answer a repeated
MsgID with their cached reply, so nothing runs twice.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from omadm import __version__
from omadm.protocol.auth import HMAC_HEADER
from omadm.protocol.codec import encoding_for_content_type

from .config import AgentConfig, ConfigError

__all__ = ["HTTPTransport", "Reply", "TransportError", "tls_context"]

log = logging.getLogger(__name__)

#: HTTP statuses worth another try (the Motorola/Android client retries on these).
_RETRYABLE = {408, 429, 500, 502, 503, 504}


def tls_context(
    verify: bool, ca_file: str | None, client_cert: str | None, client_key: str | None
) -> ssl.SSLContext | bool:
    """What httpx's ``verify=`` takes for these TLS settings (0.28 deprecates the string forms).

    Raises ``ValueError`` naming the files when a CA bundle or certificate cannot be loaded.
    """
    if not ca_file and not client_cert:
        return verify
    try:
        if verify and ca_file:
            context = ssl.create_default_context(cafile=ca_file)
        else:
            context = httpx.create_ssl_context(verify=verify)
        if client_cert:
            context.load_cert_chain(client_cert, client_key or None)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load the TLS files ({ca_file or ''} {client_cert or ''}): {exc}") from exc
    return context


class TransportError(Exception):
    """The message could not be delivered or the answer was not a DM message."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class Reply:
    body: bytes
    content_type: str | None
    hmac_header: str | None


class HTTPTransport:
    """POSTs DM messages with httpx; ``sleep`` is injectable so tests need not wait."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
        client: httpx.Client | None = None,
    ) -> None:
        self.config = config
        self._sleep = sleep
        tls = config.tls
        try:
            verify = tls_context(
                tls.verify, tls.ca_file or None, tls.client_cert or None, tls.client_key or None
            )
        except ValueError as exc:
            raise ConfigError(f"[tls]: {exc}") from None
        self._client = client or httpx.Client(
            verify=verify,
            timeout=config.timeout,
            headers={"User-Agent": f"omadm-agent/{__version__}", "Cache-Control": "private"},
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    def post(self, url: str, body: bytes, content_type: str, headers: dict[str, str]) -> Reply:
        """Send one message; retry transient failures with exponential backoff."""
        delay = self.config.retry_backoff
        attempts = max(1, self.config.retries + 1)
        for attempt in range(1, attempts + 1):
            try:
                return self._post_once(url, body, content_type, headers)
            except TransportError as exc:
                if not exc.retryable or attempt == attempts:
                    raise
                log.warning(
                    "POST %s failed (%s); retrying in %.1fs (%d/%d)", url, exc, delay, attempt, attempts - 1
                )
                self._sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _post_once(self, url: str, body: bytes, content_type: str, headers: dict[str, str]) -> Reply:
        request_headers = {"Content-Type": content_type, "Accept": content_type, **headers}
        try:
            response = self._client.post(url, content=body, headers=request_headers)
        except httpx.TimeoutException:
            raise TransportError(
                f"no answer from {url} within {self.config.timeout:.0f}s", retryable=True
            ) from None
        except httpx.TransportError as exc:
            raise TransportError(f"cannot reach {url}: {exc}", retryable=True) from None
        if response.status_code != 200:
            raise TransportError(
                f"{url} answered HTTP {response.status_code} {response.reason_phrase}",
                retryable=response.status_code in _RETRYABLE,
            )
        content_type_back = response.headers.get("content-type")
        if content_type_back and encoding_for_content_type(content_type_back) is None:
            log.info("server sent Content-Type %r; decoding by the bytes", content_type_back)
        return Reply(response.content, content_type_back, response.headers.get(HMAC_HEADER))
