"""uvicorn protocols that hand the client's TLS certificate to the application.

uvicorn verifies a client certificate (``ssl_ca_certs``, ``ssl_cert_reqs``) but does not
put it in the ASGI scope, so the application cannot know who connected. These subclasses
add the ASGI TLS extension to every request of a TLS connection: ``client_cert_chain``
(the verified leaf, PEM; Python's ``ssl`` does not give the rest of the chain before 3.13),
``client_cert_name`` (its subject, RFC 4514), ``client_cert_error`` (None: uvicorn has
already refused a certificate that failed verification), ``tls_version`` and
``cipher_suite`` (None: Python does not give its number).

The certificate is read once per connection, in ``connection_made``: asyncio (and uvloop)
call it after the TLS handshake, when the peer's certificate is known. Only
``connection_made`` is extended; request parsing stays uvicorn's.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["TLSH11Protocol", "TLSHttpToolsProtocol", "tls_extension"]

_TLS_VERSIONS = {"TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def tls_extension(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    """The ASGI TLS extension's values for ``transport``; None when it is not TLS."""
    ssl_object = transport.get_extra_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    der = ssl_object.getpeercert(binary_form=True)
    chain: list[str] = []
    name = None
    if der:
        chain.append(ssl.DER_cert_to_PEM_cert(der))
        from cryptography import x509  # noqa: PLC0415 - only for connections with a certificate

        name = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    version = ssl_object.version()
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(version or ""),
        "cipher_suite": None,
    }


class _WithTLSExtension:
    """Wraps the connection's ASGI app so that each request's scope carries the TLS extension."""

    app: Any

    def _add_tls_extension(self, transport: asyncio.BaseTransport) -> None:
        extension = tls_extension(transport)
        if extension is None:
            return
        app = self.app

        async def with_tls(scope: Any, receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})["tls"] = extension
            await app(scope, receive, send)

        self.app = with_tls


class TLSH11Protocol(_WithTLSExtension, H11Protocol):
    """uvicorn's h11 protocol with the ASGI TLS extension."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._add_tls_extension(transport)


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed: uvicorn uses h11 (tls.py picks TLSH11Protocol)
    TLSHttpToolsProtocol: type[Any] = TLSH11Protocol
else:

    class _TLSHttpToolsProtocol(_WithTLSExtension, HttpToolsProtocol):
        """uvicorn's httptools protocol with the ASGI TLS extension."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._add_tls_extension(transport)

    TLSHttpToolsProtocol = _TLSHttpToolsProtocol
