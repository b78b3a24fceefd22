"""HTTP transport for the agent: one POST per DM message, with retries and clear errors.

The protocol core produces the bytes, the content type and the ``x-syncml-hmac`` header;
this module only moves them (httpx) and turns every failure into a ``TransportError``
that says what went wrong. A retry re-sends the *same* message: servers answer a repeated
MsgID with their cached reply, so nothing runs twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from omadm import __version__
from omadm.protocol.auth import HMAC_HEADER
from omadm.protocol.codec import encoding_for_content_type

from .config import AgentConfig

__all__ = ["HTTPTransport", "Reply", "TransportError"]

log = logging.getLogger(__name__)

#: HTTP statuses worth another try (the Motorola/Android client retries on these).
_RETRYABLE = {408, 429, 500, 502, 503, 504}


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
        verify: bool | str = config.tls.verify
        if config.tls.verify and config.tls.ca_file:
            verify = config.tls.ca_file
        cert: str | tuple[str, str] | None = None
        if config.tls.client_cert:
            cert = (
                (config.tls.client_cert, config.tls.client_key)
                if config.tls.client_key
                else config.tls.client_cert
            )
        self._client = client or httpx.Client(
            verify=verify,
            cert=cert,
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
