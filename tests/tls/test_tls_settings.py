"""TLS settings and their checks, without a network: pins, names in certificates, refusals of bad
configuration on both sides, and the sentences TLS failures become."""

from __future__ import annotations

import base64
import hashlib
import ssl
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from typer.testing import CliRunner

from omadm.agent.cli import EXIT_CONFIG
from omadm.agent.config import ConfigError, TLSConfig, load_config, save_config
from omadm.agent.tls import (
    PinMismatchError,
    client_context,
    describe_tls_error,
    parse_pin,
    spki_sha256,
)
from omadm.cli import app
from omadm.server.config import ConfigError as ServerConfigError
from omadm.server.config import load_server_config
from omadm.server.tls import TLSSetupError, check_tls_files, identities_of, uvicorn_options

from .conftest import DEVICE, PKI, device_agent


def test_pins_read_in_base64_hex_and_the_hpkp_form(pki: PKI) -> None:
    certificate = x509.load_pem_x509_certificate(pki.server.cert.read_bytes())
    digest = hashlib.sha256(
        certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ).digest()
    assert spki_sha256(certificate.public_bytes(Encoding.DER)) == digest
    b64 = base64.b64encode(digest).decode()
    for form in (b64, b64.rstrip("="), base64.urlsafe_b64encode(digest).decode(), f"sha256/{b64}"):
        assert parse_pin(form) == digest
    assert parse_pin(digest.hex()) == digest
    assert parse_pin(digest.hex(":").upper()) == digest
    for bad in ("", "abc", digest.hex()[:-2], base64.b64encode(digest[:20]).decode(), "z" * 64):
        with pytest.raises(ValueError, match="is not a SHA-256 pin"):
            parse_pin(bad)


def test_the_names_a_client_certificate_gives(pki: PKI) -> None:
    pem = pki.client.cert.read_text()
    assert identities_of(pem, "cn") == {DEVICE}
    assert identities_of(pem, "san-uri") == {DEVICE}
    assert identities_of(pem, "san-dns") == frozenset()
    assert identities_of(pki.other_client.cert.read_text(), "san-uri") == frozenset()  # no SAN at all


def test_server_tls_settings_that_cannot_work_are_refused_naming_them(tmp_path: Path, pki: PKI) -> None:
    base: dict[str, Any] = {"data_dir": tmp_path}
    cases: dict[str, dict[str, Any]] = {
        "tls_key needs tls_cert": {"tls_key": "k.pem"},
        "tls_client_ca needs tls_cert": {"tls_client_ca": "ca.pem"},
        "tls_require_client_cert needs tls_client_ca": {"tls_cert": "c.pem", "tls_require_client_cert": True},
        "client_cert_auth must be one of off, map, require": {"client_cert_auth": "maybe"},
        'client_cert_auth = "require" needs tls_client_ca': {"tls_cert": "c", "client_cert_auth": "require"},
        "client_cert_identity must be one of cn, san-uri, san-dns": {"client_cert_identity": "email"},
        "public_url is http:// but the server serves HTTPS": {"tls_cert": "c", "public_url": "http://dm/"},
    }
    for message, values in cases.items():
        with pytest.raises(ServerConfigError, match=message.replace("(", r"\(")):
            load_server_config(None, **base, **values)
    served = load_server_config(None, **base, tls_cert=str(pki.server.cert), tls_key=str(pki.server.key))
    assert served.base_url == "https://127.0.0.1:8700"
    assert served.dm_url == "https://127.0.0.1:8700/dm"
    assert load_server_config(None, **base).base_url == "http://127.0.0.1:8700"


def test_server_tls_files_are_checked_before_serving(tmp_path: Path, pki: PKI) -> None:
    good = load_server_config(
        None,
        data_dir=tmp_path,
        tls_cert=str(pki.server.cert),
        tls_key=str(pki.server.key),
        tls_client_ca=str(pki.ca),
    )
    assert isinstance(check_tls_files(good), ssl.SSLContext)
    options = uvicorn_options(good)
    assert options["ssl_certfile"] == str(pki.server.cert) and options["ssl_cert_reqs"] == ssl.CERT_OPTIONAL
    assert options["http"].startswith("omadm.server._tls_asgi:TLS")
    assert uvicorn_options(replace(good, tls_require_client_cert=True))["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert uvicorn_options(replace(good, tls_cert="", tls_key="", tls_client_ca="")) == {}
    for name in ("tls_cert", "tls_key", "tls_client_ca"):
        with pytest.raises(TLSSetupError, match=f"^{name}: no such file .*missing.pem$"):
            missing: dict[str, Any] = {name: str(tmp_path / "missing.pem")}
            check_tls_files(replace(good, **missing))
    with pytest.raises(TLSSetupError, match=r"cannot load the certificate .* does the key belong"):
        check_tls_files(replace(good, tls_key=str(pki.client.key)))  # another key
    (tmp_path / "garbage.pem").write_text("not a CA\n")
    with pytest.raises(TLSSetupError, match="cannot load the client CA bundle"):
        check_tls_files(replace(good, tls_client_ca=str(tmp_path / "garbage.pem")))


def test_the_server_command_stops_in_one_line_on_a_key_that_is_not_the_certificate_s(
    tmp_path: Path, pki: PKI
) -> None:
    done = CliRunner().invoke(
        app,
        [
            "server", "--data-dir", str(tmp_path), "--port", "1",
            "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.client.key),
        ],
    )  # fmt: skip
    assert done.exit_code == 1, done.output
    assert (
        f"error: cannot load the certificate {pki.server.cert} with the key {pki.client.key}" in done.output
    )
    assert "Traceback" not in done.output


def test_server_settings_file_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "omadm-server.toml").write_text(
        '[server]\ntls_cert = "tls/server.pem"\ntls_key = "/etc/omadm/server.key"\nclient_cert_auth = "off"\n'
    )
    config = load_server_config(tmp_path / "omadm-server.toml")
    assert config.tls_cert == str(tmp_path / "tls" / "server.pem")
    assert config.tls_key == "/etc/omadm/server.key" and config.client_cert_auth == "off"


def test_agent_init_stores_the_tls_options_and_refuses_bad_ones(tmp_path: Path, pki: PKI) -> None:
    digest = spki_sha256(
        x509.load_pem_x509_certificate(pki.server.cert.read_bytes()).public_bytes(Encoding.DER)
    )
    pin = base64.b64encode(digest).decode()
    common = [
        "agent", "init", "--device-id", DEVICE, "--server", "https://127.0.0.1:8700/dm",
        "--username", "dev", "--password", "secret", "--server-password", "s",
        "--data-dir", str(tmp_path / "data"),
    ]  # fmt: skip
    config = tmp_path / "omadm.toml"
    done = CliRunner().invoke(
        app,
        [
            *common, "--config", str(config), "--ca-file", str(pki.ca), "--pin-sha256", pin,
            "--pin-sha256", digest.hex(),
            "--client-cert", str(pki.client.cert), "--client-key", str(pki.client.key),
        ],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    tls = tomllib.loads(config.read_text())["tls"]
    assert tls == {
        "verify": True,
        "ca_file": str(pki.ca),
        "client_cert": str(pki.client.cert),
        "client_key": str(pki.client.key),
        "pin_sha256": [pin, digest.hex()],
    }
    assert load_config(config).tls.pins == (digest, digest)

    refusals = {
        "--pin-sha256: 'nope' is not a SHA-256 pin": ["--pin-sha256", "nope"],
        "--ca-file: no such file": ["--ca-file", str(tmp_path / "none.pem")],
        "--client-key needs --client-cert": ["--client-key", str(pki.client.key)],
        "cannot load the client certificate": ["--client-cert", str(pki.ca)],  # a certificate without its key
    }
    for index, (message, options) in enumerate(refusals.items()):
        path = tmp_path / f"bad{index}.toml"
        done = CliRunner().invoke(app, [*common, "--config", str(path), *options])
        assert done.exit_code == EXIT_CONFIG, done.output
        assert message in done.output, done.output


def test_agent_config_refuses_a_bad_pin_and_a_key_without_its_certificate(tmp_path: Path, pki: PKI) -> None:
    path = device_agent(tmp_path, "https://127.0.0.1:1/dm", pki)
    config = load_config(path)
    save_config(replace(config, tls=TLSConfig(pin_sha256=("short",))), path)
    with pytest.raises(ConfigError, match=r"\[tls\] pin_sha256: 'short' is not a SHA-256 pin"):
        load_config(path)
    save_config(replace(config, tls=TLSConfig(client_key=str(pki.client.key))), path)
    with pytest.raises(ConfigError, match=r"\[tls\] client_key needs client_cert"):
        load_config(path)
    # One pin may be written as a plain string.
    save_config(config, path)
    text = path.read_text()
    assert "pin_sha256 = []" in text
    path.write_text(text.replace("pin_sha256 = []", 'pin_sha256 = "' + "ab" * 32 + '"'))
    assert load_config(path).tls.pin_sha256 == ("ab" * 32,)


def test_tls_failures_become_one_sentence() -> None:
    def verification(code: int, message: str) -> ssl.SSLCertVerificationError:
        error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
        error.verify_code, error.verify_message = code, message
        return error

    def wrapped(error: BaseException) -> Exception:
        """As httpx raises it: the ssl error two causes down."""
        middle = OSError("connect failed")
        middle.__cause__ = error
        top = RuntimeError("httpx.ConnectError")
        top.__cause__ = middle
        return top

    expired = describe_tls_error(wrapped(verification(10, "certificate has expired")))
    assert expired == "the server's certificate has expired (certificate has expired): refused"
    unknown = describe_tls_error(
        wrapped(verification(20, "unable to get local issuer certificate")), ca_file="/ca"
    )
    assert unknown is not None and "not signed by a CA in the CA bundle /ca ([tls] ca_file)" in unknown
    host = describe_tls_error(verification(62, "Hostname mismatch"), host="dm.example")
    assert host is not None and "not for the host dm.example (hostname mismatch" in host
    pin = describe_tls_error(wrapped(PinMismatchError("the server's key (SHA-256 pin x) is not one of ...")))
    assert pin == "refused: the server's key (SHA-256 pin x) is not one of ..."
    alert = ssl.SSLError(1, "tlsv13 alert certificate required")
    alert.reason = "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    assert "none is configured ([tls] client_cert)" in (describe_tls_error(alert) or "")
    assert "refused our client certificate /c.pem" in (describe_tls_error(alert, client_cert="/c.pem") or "")
    assert describe_tls_error(wrapped(ConnectionRefusedError(111, "refused"))) is None


def test_a_pinned_context_keeps_the_default_trust_and_checks_in_the_handshake(pki: PKI) -> None:
    assert client_context(True, None, None, None) is True  # nothing set: httpx's default
    context = client_context(True, str(pki.ca), None, None, [b"x" * 32])
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert issubclass(context.sslsocket_class, ssl.SSLSocket)
    assert context.sslsocket_class is not ssl.SSLSocket
    unverified = client_context(False, None, None, None, [b"x" * 32])  # pin alone: exactly that key
    assert isinstance(unverified, ssl.SSLContext) and unverified.verify_mode == ssl.CERT_NONE
    with pytest.raises(ValueError, match="cannot load the CA bundle"):
        client_context(True, str(pki.client.key), None, None)
