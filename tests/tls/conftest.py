"""A private PKI made with ``cryptography``, and real ``omadm server`` processes serving HTTPS.

``pki`` (once per session) writes two CAs (the trusted one and a stranger's), server
certificates for 127.0.0.1 (a valid one, an expired one) and client certificates: one per
device (the device id as CN and as a SAN URI), one for another device, one issued by the
stranger's CA. EC P-256 keys: quick to make.

``TLSServer`` is ``tests/server/serverproc.ServerProcess`` over HTTPS: it waits for
``/health`` verifying the server with the test CA (or not at all, for the expired one).
"""

from __future__ import annotations

import datetime as dt
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from omadm.agent.config import TLSConfig, load_config, save_config
from omadm.cli import app
from omadm.package.build import build_package
from omadm.package.signing import generate_key, save_public_key
from tests.server.serverproc import ENV, SERVER_PASSWORD, ServerProcess, agent_config

CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEVICE = "IMEI:490154203237518"
OTHER_DEVICE = "IMEI:490154203237599"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


class Authority:
    """A CA that issues certificates into ``directory``."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(self.key, hashes.SHA256())
        )
        self.pem = directory / f"{name}.pem"
        self.pem.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        filename: str,
        common_name: str,
        *,
        ips: tuple[str, ...] = (),
        dns: tuple[str, ...] = (),
        uris: tuple[str, ...] = (),
        server: bool = True,
        expired: bool = False,
    ) -> Issued:
        import ipaddress  # noqa: PLC0415

        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        start, end = (
            (now - dt.timedelta(days=10), now - dt.timedelta(days=1))
            if expired
            else (
                now - dt.timedelta(hours=1),
                now + dt.timedelta(days=10),
            )
        )
        names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        names += [x509.DNSName(name) for name in dns]
        names += [x509.UniformResourceIdentifier(uri) for uri in uris]
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        certificate = builder.sign(self.key, hashes.SHA256())
        cert = self.directory / f"{filename}.pem"
        key_path = self.directory / f"{filename}.key"
        cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return Issued(cert, key_path)


@dataclass(frozen=True)
class PKI:
    ca: Path
    stranger_ca: Path
    server: Issued  # 127.0.0.1 only (so "localhost" is another host name)
    expired_server: Issued
    client: Issued  # CN and SAN URI: DEVICE
    other_client: Issued  # CN: OTHER_DEVICE
    stranger_client: Issued  # CN: DEVICE, issued by the stranger's CA
    publisher_key: Path
    package: Path  # examples/hello-package, signed with the publisher's key


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    directory = tmp_path_factory.mktemp("pki")
    ca = Authority(directory, "omadm-test-ca")
    stranger = Authority(directory, "stranger-ca")
    publisher = directory / "publisher.pub.pem"
    signing_key = generate_key()
    save_public_key(signing_key.public_key(), publisher)
    build_package(EXAMPLES / "hello-package", directory / "hello.omp", signing_key=signing_key)
    return PKI(
        ca=ca.pem,
        stranger_ca=stranger.pem,
        server=ca.issue("server", "omadm test server", ips=("127.0.0.1",)),
        expired_server=ca.issue("expired", "omadm expired server", ips=("127.0.0.1",), expired=True),
        client=ca.issue("client", DEVICE, uris=(DEVICE,), server=False),
        other_client=ca.issue("other-client", OTHER_DEVICE, server=False),
        stranger_client=stranger.issue("stranger-client", DEVICE, server=False),
        publisher_key=publisher,
        package=directory / "hello.omp",
    )


@dataclass
class TLSServer(ServerProcess):
    """An ``omadm server`` over HTTPS; ``ca``: what ``start`` verifies it with (None: nothing)."""

    ca: Path | None = None
    client: Issued | None = None  # presented while waiting for /health (a server that requires one)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> TLSServer:
        args = [*self.base, "--port", str(self.port), *self.extra]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=ENV)
        verify: ssl.SSLContext | bool = False
        if self.ca is not None:
            verify = ssl.create_default_context(cafile=str(self.ca))
            if self.client is not None:
                verify.load_cert_chain(str(self.client.cert), str(self.client.key))
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=1, verify=verify).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start:\n{self.log.read_text()}")
            time.sleep(0.1)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., TLSServer]]:
    """``start_server(name, *options, ca=..., settings=...)``: a migrated HTTPS server with DEVICE
    and OTHER_DEVICE registered; stopped at the end of the test."""
    started: list[TLSServer] = []

    def start(
        name: str, *options: str, ca: Path | None, settings: str = "", client: Issued | None = None
    ) -> TLSServer:
        directory = tmp_path / name
        directory.mkdir()
        extra = list(options)
        if settings:
            (directory / "omadm-server.toml").write_text(f"[server]\n{settings}\n")
            extra += ["--config", str(directory / "omadm-server.toml")]
        server = TLSServer(
            f"sqlite:///{directory / 'srv' / 'omadm-server.sqlite'}",
            directory / "srv",
            directory / "server.log",
            extra=tuple(extra),
            ca=ca,
            client=client,
        )
        admin(server, "migrate")
        for device in (DEVICE, OTHER_DEVICE):
            admin(
                server, "device", "add", device, "--username", "dev", "--password", "secret",
                "--server-password", SERVER_PASSWORD,
            )  # fmt: skip
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop()


def admin(server: ServerProcess, *args: str) -> str:
    """``omadm server ARGS`` on ``server``'s database, in this process (a subprocess costs a second)."""
    done = CliRunner().invoke(app, ["server", *server.base[4:], *args])
    assert done.exit_code == 0, f"{args}: {done.output}"
    return done.output


def device_agent(
    directory: Path, url: str, pki: PKI, *, device: str = DEVICE, tls: TLSConfig | None = None
) -> Path:
    """An agent's omadm.toml for ``device`` at ``url`` (the DM endpoint) with these TLS settings."""
    path = agent_config(directory, url, device, pki.publisher_key, retries=0)
    config = load_config(path)
    save_config(replace(config, tls=tls or TLSConfig(ca_file=str(pki.ca))), path)
    return path


@dataclass(frozen=True)
class Done:
    """How ``omadm agent connect`` ended: its exit code and what it printed."""

    returncode: int
    stdout: str
    stderr: str


def connect(config: Path, *, process: bool = False) -> Done:
    """``omadm agent connect`` (one session), not checked: in a process of its own, or (quicker,
    the same command) in this one."""
    if process:
        done = subprocess.run(
            [sys.executable, "-m", "omadm", "agent", "connect", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=ENV,
        )
        return Done(done.returncode, done.stdout, done.stderr)
    result = CliRunner().invoke(app, ["agent", "connect", "--config", str(config)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Done(result.exit_code, result.stdout, result.stderr)
