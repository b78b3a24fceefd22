"""``omadm agent`` as an operator uses it: init's options, changing an account, what exit codes say.

The commands run in process (typer's runner); the last test runs a real ``omadm server``.
"""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding as PemEncoding
from cryptography.hazmat.primitives.serialization import PublicFormat
from typer.testing import CliRunner

from omadm.agent.cli import EXIT_AUTH
from omadm.agent.config import load_config
from omadm.agent.runner import Agent, Outcome
from omadm.cli import app
from omadm.protocol.codec import Encoding
from omadm.protocol.codes import AuthType
from omadm.protocol.session import Credentials
from tests.agent.test_agent import DEVICE, make_config, server_account
from tests.e2e.dmserver import TestDMServer

runner = CliRunner()


def agent(*args: str) -> tuple[int, str]:
    done = runner.invoke(app, ["agent", *args])
    return done.exit_code, done.output


def public_key(path: Path) -> Path:
    """A new publisher's public key, PEM, at ``path``."""
    key = Ed25519PrivateKey.generate().public_key()
    path.write_bytes(key.public_bytes(PemEncoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return path


def init_args(
    tmp_path: Path, *extra: str, password: str = "secret", url: str = "http://127.0.0.1:9/dm"
) -> list[str]:
    return [
        "init",
        "--device-id",
        DEVICE,
        "--server",
        url,
        "--username",
        "dev",
        "--password",
        password,
        "--server-password",
        "srv-secret",
        "--data-dir",
        str(tmp_path / "data"),
        "--config",
        str(tmp_path / "omadm.toml"),
        *extra,
    ]


def tree_account(
    config: Path, server_id: str = "omadm"
) -> tuple[str, Credentials | None, Credentials | None]:
    opened = Agent(load_config(config), inspect_only=True)
    try:
        account = opened.account(server_id)
        return account.url, account.client, account.server
    finally:
        opened.close()


def test_init_sets_up_package_0_over_udp_wbxml_and_trusted_publishers(tmp_path: Path) -> None:
    first, second = public_key(tmp_path / "vendor-a.pub.pem"), public_key(tmp_path / "vendor-b.key")
    code, out = agent(
        *init_args(tmp_path),
        "--listen-udp",
        "0.0.0.0:2948",
        "--encoding",
        "wbxml",
        "--trust-key",
        str(first),
        "--trust-key",
        str(second),
    )
    assert code == 0, out
    config = load_config(tmp_path / "omadm.toml")
    assert config.listen_udp == "0.0.0.0:2948"
    assert config.encoding is Encoding.WBXML
    trust = tmp_path / "data" / "trust"
    assert (trust / "vendor-a.pub.pem").read_bytes() == first.read_bytes()
    assert (trust / "vendor-b.key.pem").read_bytes() == second.read_bytes()  # the trust dir reads *.pem
    assert (trust / "vendor-a.pub.pem").stat().st_mode & 0o777 == 0o600
    assert "answers Package #0 on udp 0.0.0.0:2948" in out


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--listen-udp", "2948", "--listen-udp: listen address must be host:port"),
        ("--encoding", "json", "--encoding must be xml or wbxml"),
        ("--trust-key", "missing.pem", "--trust-key:"),
        ("--trust-key", "omadm.toml", "not a PEM public key"),
    ],
)
def test_init_refuses_a_bad_option_before_writing_anything(
    tmp_path: Path, option: str, value: str, words: str
) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "omadm.toml").write_text("not a key\n")
    path = str(tmp_path / "elsewhere" / value) if option == "--trust-key" else value
    code, out = agent(*init_args(tmp_path), option, path)
    assert code == 1 and words in out, out
    assert not (tmp_path / "omadm.toml").exists()


def test_polling_only_is_said_at_init(tmp_path: Path) -> None:
    code, out = agent(*init_args(tmp_path))
    assert code == 0 and "without --listen-udp the device only polls" in out


def test_init_force_rewrites_the_account_in_the_tree(tmp_path: Path) -> None:
    assert agent(*init_args(tmp_path))[0] == 0
    code, out = agent(*init_args(tmp_path, "--force", password="new-secret", url="http://127.0.0.1:8/dm"))
    assert code == 0, out
    url, client, _ = tree_account(tmp_path / "omadm.toml")
    assert url == "http://127.0.0.1:8/dm"
    assert client == Credentials(AuthType.MD5, "dev", "new-secret")


def test_account_set_changes_what_is_given_in_the_tree_and_the_file(tmp_path: Path) -> None:
    config = tmp_path / "omadm.toml"
    assert agent(*init_args(tmp_path))[0] == 0
    code, out = agent(
        "account", "set", "--server-id", "omadm", "--password", "rotated", "--config", str(config)
    )
    assert code == 0, out
    url, client, server = tree_account(config)
    assert url == "http://127.0.0.1:9/dm"  # not given: as it was
    assert client == Credentials(AuthType.MD5, "dev", "rotated")
    assert server == Credentials(AuthType.MD5, "omadm", "srv-secret")
    (written,) = tomllib.loads(config.read_text())["server"]
    assert written["password"] == "rotated" and written["url"] == "http://127.0.0.1:9/dm"

    code, out = agent(
        "account",
        "set",
        "--server-id",
        "omadm",
        "--server",
        "https://dm.example.com/dm",
        "--auth",
        "hmac",
        "--server-password",
        "srv-2",
        "--config",
        str(config),
    )
    assert code == 0, out
    url, client, server = tree_account(config)
    assert url == "https://dm.example.com/dm"
    assert client == Credentials(AuthType.HMAC, "dev", "rotated")
    assert server == Credentials(AuthType.HMAC, "omadm", "srv-2")
    assert load_config(config).account("omadm").auth == "hmac"


def test_account_set_adds_an_account_only_with_its_address_and_credentials(tmp_path: Path) -> None:
    config = tmp_path / "omadm.toml"
    assert agent(*init_args(tmp_path))[0] == 0
    code, out = agent("account", "set", "--server-id", "oem", "--password", "x", "--config", str(config))
    assert code == 1 and "no account for server 'oem'" in out
    code, out = agent(
        "account",
        "set",
        "--server-id",
        "oem",
        "--server",
        "http://127.0.0.1:7/dm",
        "--username",
        "d",
        "--password",
        "x",
        "--server-password",
        "s",
        "--config",
        str(config),
    )
    assert code == 0, out
    assert tree_account(config, "oem")[1] == Credentials(AuthType.MD5, "d", "x")
    assert [a.server_id for a in load_config(config).accounts] == ["omadm", "oem"]
    code, out = agent("account", "set", "--server-id", "omadm", "--auth", "rsa", "--config", str(config))
    assert code == 1 and "--auth must be one of" in out


def test_a_server_that_gives_up_on_our_password_is_an_auth_failure(tmp_path: Path) -> None:
    """The server answers a wrong password with 401 on our SyncHdr, then Alert 1223."""
    with TestDMServer({DEVICE: server_account()}) as server:
        config = make_config(tmp_path, url=server.url)
        account = config.accounts[0]
        opened = Agent(replace(config, accounts=(replace(account, password="wrong"),)))
        try:
            report = opened.connect()
        finally:
            opened.close()
    assert report.outcome == Outcome.AUTH_FAILED, report.line()
    assert report.reason.startswith("the server refused our credentials (401 on our SyncHdr")


def test_a_wrong_password_exits_3_against_a_real_server_and_account_set_fixes_it(tmp_path: Path) -> None:
    from tests.server.serverproc import SERVER_PASSWORD, ServerProcess  # noqa: PLC0415

    server = ServerProcess(f"sqlite:///{tmp_path / 'srv.sqlite'}", tmp_path / "srv", tmp_path / "server.log")
    server.run("migrate")
    server.run(
        "device",
        "add",
        DEVICE,
        "--username",
        "dev",
        "--password",
        "secret",
        "--server-password",
        SERVER_PASSWORD,
    )
    server.start()
    try:
        config = tmp_path / "omadm.toml"
        code, out = agent(
            "init",
            "--device-id",
            DEVICE,
            "--server",
            f"{server.url}/dm",
            "--username",
            "dev",
            "--password",
            "wrong",
            "--server-password",
            SERVER_PASSWORD,
            "--data-dir",
            str(tmp_path / "data"),
            "--config",
            str(config),
        )
        assert code == 0, out
        code, out = agent("connect", "--config", str(config))
        assert code == EXIT_AUTH, out
        assert "auth-failed" in out and "the server refused our credentials" in out
        code, out = agent(
            "account", "set", "--server-id", "omadm", "--password", "secret", "--config", str(config)
        )
        assert code == 0, out
        code, out = agent("connect", "--config", str(config))
        assert code == 0, out
    finally:
        server.stop()
