"""TLS end to end: a real ``omadm server`` over HTTPS on 127.0.0.1 and real ``omadm agent`` sessions.

The agent trusts the server through a CA file, optionally pins its key, and optionally
presents a client certificate that the server maps to the device. Every refusal ends the
session before a DM byte is exchanged, with one line naming the problem and exit code 7.
"""

from __future__ import annotations

import base64
import ssl
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from omadm.agent.cli import EXIT_OK, EXIT_TLS
from omadm.agent.config import TLSConfig, load_config, save_config
from tests.server.serverproc import ENV

from .conftest import DEVICE, OTHER_DEVICE, PKI, admin, connect, device_agent

EXIT_REFUSED = 4  # an HTTP refusal (403) is not a TLS failure: 'unreachable'


def spki_pin(cert: Path) -> str:
    """The base64 SHA-256 of a certificate's SubjectPublicKeyInfo, computed here independently."""
    import hashlib  # noqa: PLC0415

    public = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    return base64.b64encode(
        hashlib.sha256(public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).digest()
    ).decode()


def one_line(done: Any) -> str:
    """What the agent said (stdout and stderr), for assertion messages."""
    return str(done.stdout) + str(done.stderr)


def test_https_sessions_with_the_right_ca_and_pin_and_refusals_that_say_why(
    start_server: Any, pki: PKI, tmp_path: Path
) -> None:
    server = start_server(
        "plain",
        "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key),
        "--tls-client-ca", str(pki.ca),
        ca=pki.ca,
    )  # fmt: skip
    dm = f"{server.url}/dm"
    startup = server.log.read_text()
    assert f"DM endpoint: https://127.0.0.1:{server.port}/dm" in startup  # RespURI and package URLs too

    # The REST API, the console and /health answer over the same HTTPS.
    context = ssl.create_default_context(cafile=str(pki.ca))
    assert httpx.get(f"{server.url}/console/login", verify=context).status_code == 200
    assert httpx.get(f"{server.url}/api/v1/devices", verify=context).status_code == 401
    # ... and plain HTTP on that port is not served.
    try:
        plain = httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=5).status_code
    except httpx.HTTPError:
        plain = None
    assert plain != 200

    # The right CA: a whole session (the server authenticates, the device's inventory is read).
    ok = connect(device_agent(tmp_path / "ok", dm, pki), process=True)
    assert ok.returncode == EXIT_OK, one_line(ok)
    assert ": ok," in ok.stdout

    # The right CA and pins: the server's (base64, as openssl prints it) beside another key's
    # (a backup pin); then that other key's alone, refused after the handshake, before the
    # request is sent. Then the server's pin in hex, colons and all.
    ca = str(pki.ca)
    pin = spki_pin(pki.server.cert)
    wrong_pin = spki_pin(pki.expired_server.cert)
    both = TLSConfig(ca_file=ca, pin_sha256=(wrong_pin, pin))
    pinned = connect(device_agent(tmp_path / "pin", dm, pki, tls=both))
    assert pinned.returncode == EXIT_OK, one_line(pinned)
    wrong = TLSConfig(ca_file=ca, pin_sha256=(wrong_pin,))
    pinned_wrong = connect(device_agent(tmp_path / "wrongpin", dm, pki, tls=wrong))
    assert pinned_wrong.returncode == EXIT_TLS, one_line(pinned_wrong)
    assert f"the server's key (SHA-256 pin {pin}) is not one of the 1 pinned key(s)" in pinned_wrong.stdout
    hexed = TLSConfig(ca_file=ca, pin_sha256=(base64.b64decode(pin).hex(":"),))
    assert connect(device_agent(tmp_path / "hex", dm, pki, tls=hexed)).returncode == EXIT_OK

    # A wrong CA: refused, saying so (a real process: one line, exit 7, no traceback).
    stranger = connect(
        device_agent(tmp_path / "stranger", dm, pki, tls=TLSConfig(ca_file=str(pki.stranger_ca))),
        process=True,
    )
    assert stranger.returncode == EXIT_TLS, one_line(stranger)
    assert f"not signed by a CA in the CA bundle {pki.stranger_ca}" in stranger.stdout
    assert "Traceback" not in one_line(stranger)

    # A host name the certificate does not cover (it names 127.0.0.1 only).
    localhost = f"https://localhost:{server.port}/dm"
    mismatch = connect(device_agent(tmp_path / "host", localhost, pki))
    assert mismatch.returncode == EXIT_TLS, one_line(mismatch)
    assert "not for the host localhost (hostname mismatch" in mismatch.stdout

    # With a client CA and client_cert_auth = "map" (the default), a device's certificate
    # must name it; a device without a certificate is served on its DM credentials (above).
    mine = TLSConfig(ca_file=str(pki.ca), client_cert=str(pki.client.cert), client_key=str(pki.client.key))
    mapped = connect(device_agent(tmp_path / "mapped", dm, pki, tls=mine))
    assert mapped.returncode == EXIT_OK, one_line(mapped)
    borrowed = connect(device_agent(tmp_path / "borrowed", dm, pki, device=OTHER_DEVICE, tls=mine))
    assert borrowed.returncode == EXIT_REFUSED, one_line(borrowed)
    assert f"the client certificate names {DEVICE} (cn), not the device {OTHER_DEVICE}" in borrowed.stdout
    logged = f"dm refused device={OTHER_DEVICE} status=403: the client certificate names {DEVICE}"
    assert logged in server.log.read_text()

    # A package over HTTPS: the server's signed package URL is https:// (this port serves
    # nothing else), and the pinned agent downloads through the same checks, installs, reports.
    admin(server, "publisher", "add", "tests", str(pki.publisher_key))
    artifact = admin(server, "artifact", "add", str(pki.package)).split()[1].rstrip(":")
    admin(server, "job", "add", DEVICE, "install", "--artifact", artifact)
    installer = device_agent(tmp_path / "install", dm, pki, tls=TLSConfig(ca_file=ca, pin_sha256=(pin,)))
    installed = connect(installer, process=True)  # the job, the download and install, then the report
    assert installed.returncode == EXIT_OK, one_line(installed)
    (job,) = admin(server, "job", "list").splitlines()
    assert "succeeded" in job and "1200" in job, job
    assert (tmp_path / "install" / "agent" / "components" / "archive" / "com.example.hello").is_dir()


def test_an_expired_server_certificate_is_refused(start_server: Any, pki: PKI, tmp_path: Path) -> None:
    server = start_server(
        "expired",
        "--tls-cert",
        str(pki.expired_server.cert),
        "--tls-key",
        str(pki.expired_server.key),
        ca=None,
    )
    assert "expired on" in server.log.read_text()  # the operator is told at start
    done = connect(device_agent(tmp_path / "agent", f"{server.url}/dm", pki), process=True)
    assert done.returncode == EXIT_TLS, one_line(done)
    assert "the server's certificate has expired (certificate has expired)" in done.stdout

    # 'agent run' stops on it with the same exit code and sentence, rather than poll in vain.
    config = device_agent(tmp_path / "runner", f"{server.url}/dm", pki)
    save_config(replace(load_config(config), poll_interval=1), config)
    ran = subprocess.run(
        [sys.executable, "-m", "omadm", "agent", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=120, check=False, env=ENV,
    )  # fmt: skip
    assert ran.returncode == EXIT_TLS, one_line(ran)
    assert "error: stopped: TLS with https://127.0.0.1:" in ran.stderr
    assert "the server's certificate has expired" in ran.stderr and "Traceback" not in one_line(ran)
    assert "Traceback" not in one_line(done)


def test_required_client_certificates_known_by_the_device_id(
    start_server: Any, pki: PKI, tmp_path: Path
) -> None:
    """``tls_require_client_cert`` and ``client_cert_auth = "require"``, identity by SAN URI."""
    server = start_server(
        "mtls",
        ca=pki.ca,
        client=pki.client,
        settings=(
            f'tls_cert = "{pki.server.cert}"\ntls_key = "{pki.server.key}"\ntls_client_ca = "{pki.ca}"\n'
            'tls_require_client_cert = true\nclient_cert_auth = "require"\nclient_cert_identity = "san-uri"'
        ),
    )
    dm = f"{server.url}/dm"
    mine = TLSConfig(ca_file=str(pki.ca), client_cert=str(pki.client.cert), client_key=str(pki.client.key))
    accepted = connect(device_agent(tmp_path / "mine", dm, pki, tls=mine))
    assert accepted.returncode == EXIT_OK, one_line(accepted)

    missing = connect(device_agent(tmp_path / "none", dm, pki), process=True)
    assert missing.returncode == EXIT_TLS, one_line(missing)
    assert "it requires a client certificate and none is configured ([tls] client_cert)" in missing.stdout

    stranger = TLSConfig(
        ca_file=str(pki.ca),
        client_cert=str(pki.stranger_client.cert),
        client_key=str(pki.stranger_client.key),
    )
    refused = connect(device_agent(tmp_path / "stranger", dm, pki, tls=stranger))
    assert refused.returncode == EXIT_TLS, one_line(refused)
    assert f"refused our client certificate {pki.stranger_client.cert}" in refused.stdout

    # A certificate of the CA that names no device by SAN URI (only a CN): refused by the DM endpoint.
    other = TLSConfig(
        ca_file=str(pki.ca), client_cert=str(pki.other_client.cert), client_key=str(pki.other_client.key)
    )
    unnamed = connect(device_agent(tmp_path / "other", dm, pki, device=OTHER_DEVICE, tls=other))
    assert unnamed.returncode == EXIT_REFUSED, one_line(unnamed)
    assert (
        f"the client certificate names no device id (san-uri), not the device {OTHER_DEVICE}"
        in unnamed.stdout
    )
