"""TLS for the agent: the context its HTTPS connections use, key pinning, and plain-words failures.

The agent verifies the server the usual way (a CA bundle: ``[tls] ca_file``, or httpx's
default one) and can also *pin* the server's key: ``[tls] pin_sha256`` lists the SHA-256
digests of the SubjectPublicKeyInfo of the keys it accepts (base64, as HPKP and
``openssl ... | openssl dgst -sha256 -binary | base64`` write them, or hex). A pin protects
against a certificate that a trusted CA issued wrongly, or a CA in the bundle that should
not be trusted for this server: the key must be the one the device was set up with. Give a
second (backup) key's pin before rotating the server's key, or devices will refuse it.

The pin is checked inside the handshake, before a byte of the request is sent: the
context's ``sslsocket_class`` is a subclass of ``ssl.SSLSocket`` whose ``do_handshake``
compares the peer's key once the handshake has finished and raises ``PinMismatchError`` (an
``ssl.SSLError``, so every HTTP library treats it as the failed handshake it is). With
``verify = false`` and a pin, exactly the pinned key is trusted (a self-signed server).

``describe_tls_error`` turns whatever a failed TLS connection raised into one sentence that
names the problem: an unknown CA, an expired certificate, a certificate for another host, a
key that is not pinned, or our client certificate refused by the server.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import socket
import ssl
from collections.abc import Collection

__all__ = [
    "PinMismatchError",
    "client_certificate_refused",
    "client_context",
    "closed_after_handshake",
    "describe_tls_error",
    "parse_pin",
    "spki_sha256",
]

# OpenSSL's X509_V_ERR_* codes (x509_vfy.h) that mean one thing to an operator.
_UNTRUSTED = {2, 18, 19, 20, 21, 27, 28}  # issuer unknown, self-signed, untrusted, rejected
_EXPIRED = 10
_NOT_YET_VALID = 9
_HOST_MISMATCH = {62, 64}  # hostname, IP address
#: Alerts a server sends when it does not accept our certificate (OpenSSL's reason names).
_CLIENT_CERT_REFUSED = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    "SSLV3_ALERT_BAD_CERTIFICATE",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    "SSLV3_ALERT_CERTIFICATE_REVOKED",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
    "TLSV1_ALERT_UNKNOWN_CA",
    "TLSV1_ALERT_ACCESS_DENIED",
    "TLSV1_ALERT_DECRYPT_ERROR",
}


class PinMismatchError(ssl.SSLError):
    """The server's key is not one of the pinned keys; the connection was closed before use."""


def parse_pin(value: str) -> bytes:
    """A pin as its 32 bytes: base64 (standard or URL-safe, padded or not) or hex (colons allowed).

    Raises ``ValueError`` saying what a pin looks like.
    """
    text = value.strip()
    if text.lower().startswith("sha256/"):  # the form HPKP and curl write
        text = text[len("sha256/") :]
    hexdigits = text.replace(":", "")
    if len(hexdigits) == 64:
        try:
            return bytes.fromhex(hexdigits)
        except ValueError:
            pass
    try:
        raw = base64.b64decode(
            text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True
        )
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ValueError(
            f"{value!r} is not a SHA-256 pin: give the 32-byte digest of the server's "
            "SubjectPublicKeyInfo in base64 (44 characters) or hex (64 digits)"
        )
    return raw


def spki_sha256(der_certificate: bytes) -> bytes:
    """The SHA-256 of a DER certificate's SubjectPublicKeyInfo: what a pin is compared with."""
    # Loaded here: cryptography costs an agent ~7 MB resident, and only pinning needs it.
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # noqa: PLC0415

    public_key = x509.load_der_x509_certificate(der_certificate).public_key()
    return hashlib.sha256(public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).digest()


def _pinned_socket_class(pins: frozenset[bytes]) -> type[ssl.SSLSocket]:
    """An ``SSLSocket`` that refuses a server whose key is not in ``pins`` once the handshake ends."""

    class PinnedSSLSocket(ssl.SSLSocket):
        def do_handshake(self, block: bool = False) -> None:
            super().do_handshake(block)
            der = self.getpeercert(binary_form=True)
            found = spki_sha256(der) if der else b""
            if found not in pins:
                shown = base64.b64encode(found).decode() if found else "none"
                raise PinMismatchError(
                    f"the server's key (SHA-256 pin {shown}) is not one of the {len(pins)} pinned "
                    "key(s) ([tls] pin_sha256)"
                )

    return PinnedSSLSocket


def client_context(
    verify: bool,
    ca_file: str | None,
    client_cert: str | None,
    client_key: str | None,
    pins: Collection[bytes] = (),
) -> ssl.SSLContext | bool:
    """What httpx's ``verify=`` takes for these settings (``verify`` itself when nothing is set).

    Raises ``ValueError`` naming the file when a CA bundle or certificate cannot be loaded.
    """
    if not ca_file and not client_cert and not pins:
        return verify
    import httpx  # noqa: PLC0415 - its default CA bundle (certifi) when no ca_file is given

    try:
        if verify and ca_file:
            context = ssl.create_default_context(cafile=ca_file)
        else:
            context = httpx.create_ssl_context(verify=verify)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load the CA bundle {ca_file}: {_reason(exc)}") from exc
    if client_cert:
        try:
            context.load_cert_chain(client_cert, client_key or None)
        except (OSError, ssl.SSLError) as exc:
            key = f" with the key {client_key}" if client_key else ""
            raise ValueError(
                f"cannot load the client certificate {client_cert}{key}: {_reason(exc)} "
                "(is it PEM, and does the key belong to it?)"
            ) from exc
    if pins:
        context.sslsocket_class = _pinned_socket_class(frozenset(pins))
    return context


def describe_tls_error(
    exc: BaseException, *, ca_file: str = "", client_cert: str = "", host: str = ""
) -> str | None:
    """One sentence naming why TLS failed, if ``exc`` (or what caused it) is a TLS failure; else None."""
    error = _ssl_error(exc)
    if error is None:
        return None
    trusted = f"the CA bundle {ca_file} ([tls] ca_file)" if ca_file else "the default CA bundle"
    if isinstance(error, PinMismatchError):
        return f"refused: {error.args[0] if error.args else error}"
    if isinstance(error, ssl.SSLCertVerificationError):
        code = error.verify_code
        detail = error.verify_message or str(error)
        if code == _EXPIRED:
            return f"the server's certificate has expired ({detail}): refused"
        if code == _NOT_YET_VALID:
            return f"the server's certificate is not valid yet ({detail}): refused"
        if code in _HOST_MISMATCH:
            where = f" {host}" if host else ""
            return (
                f"the server's certificate is not for the host{where} (hostname mismatch: {detail}): refused"
            )
        if code in _UNTRUSTED:
            return f"the server's certificate is not signed by a CA in {trusted} ({detail}): refused"
        return f"the server's certificate was refused: {detail}"
    reason = str(error.reason or "")
    if reason in _CLIENT_CERT_REFUSED:
        if not client_cert:
            return (
                f"the server asks for a client certificate and none is configured ([tls] client_cert): "
                f"{_reason(error)}"
            )
        return f"the server refused our client certificate {client_cert}: {_reason(error)}"
    return f"TLS with the server failed: {_reason(error)}"


def closed_after_handshake(
    host: str, port: int, context: ssl.SSLContext | bool, *, timeout: float = 1.5
) -> bool:
    """Whether the server at ``host:port`` drops a TLS connection as soon as its handshake ends.

    That is how a server that requires a client certificate refuses a missing or untrusted
    one under TLS 1.3: the client's side of the handshake has finished before the server
    checks the certificate, and asyncio servers (uvicorn) close without sending the alert, so
    the request only meets a closed connection. A server that accepted the handshake waits for
    a request instead (the read times out). Asked only after a request on a fresh connection
    got no answer at all, to tell this apart from a server that went away.
    """
    if not isinstance(context, ssl.SSLContext):
        import httpx  # noqa: PLC0415

        context = httpx.create_ssl_context(verify=context)
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            try:
                return tls.recv(1) == b""
            except TimeoutError:
                return False  # waiting for our request: the handshake was accepted
    except ssl.SSLError as exc:
        # The handshake itself was cut (TLS 1.2 refuses there): refused, unless it is our check
        # of the server that failed (then the failure is not about our certificate).
        return not isinstance(exc, ssl.SSLCertVerificationError | PinMismatchError)
    except (ConnectionResetError, BrokenPipeError):
        return True
    except OSError:
        return False  # not reachable at all: not a TLS refusal


def client_certificate_refused(client_cert: str) -> str:
    """The sentence for a server that dropped the connection right after the handshake."""
    if not client_cert:
        return (
            "the server closed the connection right after the TLS handshake: it requires a client "
            "certificate and none is configured ([tls] client_cert)"
        )
    return (
        "the server closed the connection right after the TLS handshake: it refused our client "
        f"certificate {client_cert} (not issued by a CA it trusts, or expired)"
    )


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """The ``ssl.SSLError`` at the root of ``exc``'s chain of causes, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    return str(exc)
