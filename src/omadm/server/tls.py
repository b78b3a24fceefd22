"""HTTPS for ``omadm server``: the checked TLS files, uvicorn's options, and who a client is.

``omadm server --tls-cert F --tls-key F`` serves everything (DM, REST, console, artifacts)
over HTTPS with uvicorn's own TLS; the public base URL becomes ``https://`` so that RespURI
and package URLs keep devices on TLS. The files are loaded here once before uvicorn starts,
so a missing file, a key that does not match the certificate or an unreadable CA bundle is
one ``error:`` line, not a traceback per worker; a certificate outside its validity period
is served (an operator may need to, briefly) with a warning, since every device will refuse it.

With ``--tls-client-ca F`` the server asks every client for a certificate and verifies one
that is presented against that CA (``tls_require_client_cert``: a handshake without one fails).
A verified certificate names a device (``client_cert_identity``: its subject's CN, or its
SAN URIs or DNS names), and ``client_cert_auth`` says what the DM endpoint makes of it:

``off``      the certificate is checked by TLS only; the DM layer ignores who it names.
``map``      (the default) a DM message that comes with a certificate must come from the device
             the certificate names (SyncHdr Source and the session's device); one without a
             certificate is served on its DM credentials as before.
``require``  every DM message must come with a certificate naming its device.

In every mode the device's DM credentials are still checked as the registry says: the
certificate is a second factor bound to the device, not a replacement (a device registered
without DM credentials is then known by its certificate alone). ``docs/security.md`` has the
reasoning.

uvicorn does not pass the client's certificate to the application, so ``uvicorn_options``
picks a protocol class from ``omadm.server._tls_asgi`` that adds the ASGI TLS extension
(``scope["extensions"]["tls"]``) to each request of a TLS connection; ``client_identities``
reads the names from it.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.x509.oid import NameOID

if TYPE_CHECKING:
    from .config import ServerConfig

__all__ = [
    "CLIENT_CERT_AUTH",
    "CLIENT_CERT_IDENTITIES",
    "TLSSetupError",
    "certificate_warnings",
    "check_tls_files",
    "client_identities",
    "identities_of",
    "uvicorn_options",
]

#: What the DM endpoint makes of a verified client certificate (see the module docstring).
CLIENT_CERT_AUTH = ("off", "map", "require")
#: Which names of a client certificate are device ids.
CLIENT_CERT_IDENTITIES = ("cn", "san-uri", "san-dns")


class TLSSetupError(ValueError):
    """A TLS file cannot be used; the message names the file and the reason."""


def check_tls_files(config: ServerConfig) -> ssl.SSLContext | None:
    """Load the configured certificate, key and client CA the way uvicorn will; None without TLS.

    Raises ``TLSSetupError`` naming the file and the problem.
    """
    if not config.tls_cert:
        return None
    for name, path in (
        ("tls_cert", config.tls_cert),
        ("tls_key", config.tls_key),
        ("tls_client_ca", config.tls_client_ca),
    ):
        if path and not os.path.isfile(path):
            raise TLSSetupError(f"{name}: no such file {path}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key or None)
    except (OSError, ssl.SSLError) as exc:
        key = f" with the key {config.tls_key}" if config.tls_key else " (key in the same file)"
        raise TLSSetupError(
            f"cannot load the certificate {config.tls_cert}{key}: {_reason(exc)} "
            "(is it PEM, and does the key belong to the certificate?)"
        ) from None
    if config.tls_client_ca:
        try:
            context.load_verify_locations(config.tls_client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise TLSSetupError(
                f"cannot load the client CA bundle {config.tls_client_ca}: {_reason(exc)}"
            ) from None
    return context


def certificate_warnings(path: str, now: datetime | None = None) -> list[str]:
    """What an operator should hear about the server certificate at ``path`` (expired, not yet valid)."""
    try:
        with open(path, "rb") as fh:
            certificate = x509.load_pem_x509_certificate(fh.read())
    except (OSError, ValueError):
        return []  # check_tls_files already loaded it; a bundle ssl reads but we cannot is not our worry
    now = now or datetime.now(UTC)
    if certificate.not_valid_after_utc < now:
        when = certificate.not_valid_after_utc.isoformat()
        return [f"the certificate {path} expired on {when}: devices that verify it will refuse every session"]
    if certificate.not_valid_before_utc > now:
        when = certificate.not_valid_before_utc.isoformat()
        return [f"the certificate {path} is not valid before {when}: devices will refuse it until then"]
    return []


def uvicorn_options(config: ServerConfig) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` that serve ``config``'s TLS (none without TLS)."""
    if not config.tls_cert:
        return {}
    options: dict[str, Any] = {"ssl_certfile": config.tls_cert}
    if config.tls_key:
        options["ssl_keyfile"] = config.tls_key
    if config.tls_client_ca:
        options["ssl_ca_certs"] = config.tls_client_ca
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED if config.tls_require_client_cert else ssl.CERT_OPTIONAL
        # An import string: workers are spawned processes that import it themselves.
        options["http"] = f"omadm.server._tls_asgi:{_protocol_name()}"
    return options


def _protocol_name() -> str:
    """The TLS-extension protocol over the parser uvicorn itself would choose (httptools, else h11)."""
    try:
        import httptools  # noqa: F401, PLC0415
    except ImportError:
        return "TLSH11Protocol"
    return "TLSHttpToolsProtocol"


def client_identities(scope: Mapping[str, Any], kind: str) -> frozenset[str] | None:
    """The device ids the verified client certificate of this request names; None: no certificate."""
    tls = scope.get("extensions", {}).get("tls")
    if not tls:
        return None
    chain = tls.get("client_cert_chain") or ()
    if not chain:
        return None
    return identities_of(chain[0], kind)


@functools.lru_cache(maxsize=4096)
def identities_of(pem: str, kind: str) -> frozenset[str]:
    """The names of kind ``kind`` (``CLIENT_CERT_IDENTITIES``) in a PEM certificate.

    Cached: a device's certificate comes with each of its messages and parsing it every time
    would cost more than the comparison.
    """
    certificate = x509.load_pem_x509_certificate(pem.encode("ascii"))
    if kind == "cn":
        common_names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return frozenset(str(attribute.value) for attribute in common_names)
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    if kind == "san-dns":
        return frozenset(names.get_values_for_type(x509.DNSName))
    return frozenset(names.get_values_for_type(x509.UniformResourceIdentifier))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    return str(exc)
