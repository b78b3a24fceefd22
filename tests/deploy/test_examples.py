"""The files of ``deploy/`` are accepted by what reads them: omadm, nginx, systemd.

An example that no longer loads (a renamed setting, a directive this nginx does not know) is
worse than none; these checks keep them honest. nginx and systemd are skipped with a reason
where they are not installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from omadm.server.config import load_server_config

from .nginx import DEPLOY, PROXY_CONF, nginx_binary


def test_the_example_server_configuration_loads() -> None:
    config = load_server_config(DEPLOY / "omadm-server.toml")
    assert config.workers > 1 and config.public_url.startswith("https://")
    assert config.host == "0.0.0.0" and config.artifacts.backend == "s3"


def _self_signed(directory: Path) -> tuple[Path, Path]:
    import datetime  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dm.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return directory / "cert.pem", directory / "key.pem"


def test_the_example_nginx_configuration_passes_nginx_t(tmp_path: Path) -> None:
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx)")
    cert, key = _self_signed(tmp_path)
    text = (DEPLOY / "nginx.conf").read_text()
    for production, here in {
        "/etc/nginx/omadm-proxy.conf": str(PROXY_CONF),
        "/etc/ssl/omadm/fullchain.pem": str(cert),
        "/etc/ssl/omadm/privkey.pem": str(key),
        "/var/log/nginx/omadm-access.log": str(tmp_path / "access.log"),
        "/run/nginx.pid": str(tmp_path / "nginx.pid"),
    }.items():
        assert production in text
        text = text.replace(production, here)
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    done = subprocess.run(
        [binary, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


@pytest.mark.parametrize("unit", ["omadm-server.service", "omadm-agent.service"])
def test_the_example_systemd_units_pass_systemd_analyze_verify(unit: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = (DEPLOY / unit).read_text()
    assert "ExecStart=" in text and "[Install]" in text
    if unit == "omadm-server.service":
        assert "omadm server --workers" in text
        # This machine has neither the omadm user nor /opt/omadm: verify the rest.
        text = text.replace("User=omadm", "User=root").replace("Group=omadm", "Group=root")
        text = text.replace("EnvironmentFile=/etc/omadm/", "EnvironmentFile=-/etc/omadm/")
    else:
        assert "omadm agent run" in text
    text = text.replace("/opt/omadm/bin/omadm ", "/bin/true ").replace("/usr/local/bin/omadm ", "/bin/true ")
    (tmp_path / unit).write_text(text)
    done = subprocess.run(
        [analyze, "verify", str(tmp_path / unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    problems = [line for line in done.stderr.splitlines() if unit in line]
    assert not problems, problems
