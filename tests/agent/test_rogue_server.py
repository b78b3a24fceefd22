"""A rogue or man-in-the-middle DM server against the agent (issue 13: points 1, 2, 4, 8, 10, 11).

Each test plays the attacker over 127.0.0.1 (a scripted DM server, raw HTTP, datagrams) and
checks that the agent does not do what it is told: with the code before these fixes, each
of them failed.
"""

from __future__ import annotations

import base64
import logging
import socket
import time
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omadm.agent.config import AccountConfig, AgentConfig, ConfigError, DeviceConfig, load_config, save_config
from omadm.agent.listener import MAX_PACKAGE0_BYTES, HTTPNotificationListener, NotificationGate
from omadm.agent.runner import Agent, Outcome
from omadm.cli import app
from omadm.protocol.auth import RESYNC_NONCE
from omadm.protocol.codes import AuthType
from omadm.protocol.messages import Add, Exec, Item, Meta, Replace, Target
from omadm.protocol.notification import Notification, encode_notification
from omadm.protocol.session import Credentials, Event, ServerSession, StatusReceived
from tests.e2e.dmserver import DeviceAccount, TestDMServer

DEVICE = "IMEI:131313131313131"
SERVER_ID, OTHER_ID = "srv", "oem"


def make_config(tmp_path: Path, url: str, **account_changes: object) -> AgentConfig:
    account = AccountConfig(SERVER_ID, url, "u", "p", server_password="sp")
    other = AccountConfig(OTHER_ID, "http://127.0.0.1:9/oem", "ou", "op", server_password="osp")
    return AgentConfig(
        device=DeviceConfig(id=DEVICE),
        data_dir=tmp_path / "data",
        accounts=(replace(account, **account_changes), other),  # type: ignore[arg-type]
        poll_interval=0,
        retries=0,
        retry_backoff=0.01,
        timeout=5,
    )


class Once:
    """A server script: these commands, as soon as the session is open (authenticated or not)."""

    def __init__(self, *commands: object, needs_auth: bool = False) -> None:
        self.commands = list(commands)
        self.needs_auth = needs_auth

    def __call__(self, events: list[Event], session: ServerSession) -> None:
        if self.commands and (session.authenticated or not self.needs_auth):
            for command in self.commands:
                session.queue(command)  # type: ignore[arg-type]
            self.commands = []


def rogue(scheme: AuthType = AuthType.MD5, **changes: object) -> DeviceAccount:
    """The device's account as a server that knows its client credentials but not SRVCRED."""
    return replace(DeviceAccount(Credentials(scheme, "u", "p"), client_nonce=b"n0"), **changes)  # type: ignore[arg-type]


def honest() -> DeviceAccount:
    return rogue(server_credentials=Credentials(AuthType.MD5, SERVER_ID, "sp"), send_server_cred=True)


def statuses(server: TestDMServer) -> list[tuple[str, int]]:
    return [(e.command.name, e.status.code) for e in server.of(StatusReceived)]


TAKEOVER = (
    Replace("0", (Item(target=Target(f"./DMAcc/{SERVER_ID}/AppAddr/1/Addr"), data="http://attacker/dm"),)),
    Replace("0", (Item(target=Target(f"./DMAcc/{SERVER_ID}/AppAuth/1/AAuthSecret"), data="stolen"),)),
    Exec("0", (Item(target=Target("./DevInfo/Mod")),)),
)


# --- 1. server authentication is on by default -------------------------------------------


def test_an_account_in_the_file_needs_a_server_password_unless_explicitly_opted_out(tmp_path: Path) -> None:
    config = make_config(tmp_path, "http://127.0.0.1:9/dm", server_password="")
    save_config(config, tmp_path / "omadm.toml")
    with pytest.raises(ConfigError, match="require_server_auth = false"):
        load_config(tmp_path / "omadm.toml")
    save_config(
        replace(config, accounts=(replace(config.accounts[0], require_server_auth=False),)),
        tmp_path / "omadm.toml",
    )
    assert load_config(tmp_path / "omadm.toml").accounts[0].require_server_auth is False


def test_a_server_that_does_not_authenticate_gets_none_of_its_commands_run(tmp_path: Path) -> None:
    with TestDMServer({DEVICE: rogue()}, Once(*TAKEOVER)) as server:
        agent = Agent(make_config(tmp_path, server.url))
        report = agent.connect()
        account = agent.account(SERVER_ID)
        agent.close()
    assert report.outcome == Outcome.AUTH_FAILED, report.line()
    assert all(code != 200 for _, code in statuses(server)), statuses(server)
    assert account.url == server.url and account.client == Credentials(AuthType.MD5, "u", "p")


def test_a_bootstrapped_account_without_srvcred_is_refused_before_any_request(tmp_path: Path) -> None:
    with TestDMServer({DEVICE: rogue()}, Once(*TAKEOVER)) as server:
        agent = Agent(replace(make_config(tmp_path, server.url), accounts=()))
        agent.bootstrap_tnds(Path(__file__).with_name("bootstrap-dmacc.xml").read_bytes())
        agent.tree.system_set("./DMAcc/boot1/AppAddr/1/Addr", server.url)
        report = agent.connect()
        agent.close()
    assert report.outcome == Outcome.AUTH_FAILED and "SRVCRED" in report.reason
    assert server.record.bodies == []  # not even contacted


def test_the_opt_out_is_explicit_and_loud(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gets = Once(Replace("0", (Item(target=Target("./DevInfo/Lang"), data="fr-FR"),)))
    with TestDMServer({DEVICE: rogue()}, gets) as server:
        agent = Agent(make_config(tmp_path, server.url, server_password="", require_server_auth=False))
        with caplog.at_level(logging.WARNING, logger="omadm.agent"):
            report = agent.connect()
        agent.close()
    assert report.ok, report.line()
    assert "WITHOUT authentication" in caplog.text


def test_an_honest_server_still_manages_the_device(tmp_path: Path) -> None:
    with TestDMServer({DEVICE: honest()}, Once(TAKEOVER[0], needs_auth=True)) as server:
        agent = Agent(make_config(tmp_path, server.url))
        report = agent.connect()
        moved = agent.account(SERVER_ID).url
        agent.close()
    assert report.ok, report.line()
    assert statuses(server) == [("Replace", 200)] and moved == "http://attacker/dm"


def test_agent_init_asks_for_a_server_password_and_says_what_the_server_needs(tmp_path: Path) -> None:
    base = ["agent", "init", "--device-id", "IMEI:7", "--server", "http://127.0.0.1:9/dm"]
    base += ["--username", "u", "--password", "p", "--data-dir", str(tmp_path / "data")]
    runner = CliRunner()
    refused = runner.invoke(app, [*base, "--config", str(tmp_path / "a.toml")])
    assert refused.exit_code != 0 and "--server-password" in refused.output
    made = runner.invoke(app, [*base, "--server-password", "sp", "--config", str(tmp_path / "b.toml")])
    assert made.exit_code == 0, made.output
    assert "same --server-password" in made.output
    insecure = runner.invoke(
        app, [*base, "--no-require-server-auth", "--config", str(tmp_path / "c.toml"), "--force"]
    )
    assert insecure.exit_code == 0, insecure.output
    assert "trusted without authentication" in insecure.output


# --- 2. a ServerID cannot be taken over ----------------------------------------------------


def test_a_server_cannot_rename_its_account_to_another_authority(tmp_path: Path) -> None:
    steal = Replace("0", (Item(target=Target(f"./DMAcc/{SERVER_ID}/ServerID"), data=OTHER_ID),))
    with TestDMServer({DEVICE: honest()}, Once(steal, needs_auth=True)) as server:
        agent = Agent(make_config(tmp_path, server.url))
        report = agent.connect()
        oem = agent.account(OTHER_ID)
        agent.close()
    assert report.ok, report.line()
    assert statuses(server) == [("Replace", 405)]
    assert oem.node == f"./DMAcc/{OTHER_ID}" and oem.url == "http://127.0.0.1:9/oem"


def test_a_server_cannot_add_a_second_account_with_another_authoritys_server_id(tmp_path: Path) -> None:
    add = [
        Add("0", (Item(target=Target("./DMAcc/evil"), meta=Meta(format="node")),)),
        Add("0", (Item(target=Target("./DMAcc/evil/ServerID"), data=OTHER_ID),)),
        Add("0", (Item(target=Target("./DMAcc/evil/ServerID2"), data="x"),)),
    ]
    with TestDMServer({DEVICE: honest()}, Once(*add[:2], needs_auth=True)) as server:
        agent = Agent(make_config(tmp_path, server.url))
        agent.tree.system_set_acl("./DMAcc", f"Get=*&Add={SERVER_ID}")  # a device that lets it add accounts
        report = agent.connect()
        oem = agent.account(OTHER_ID)
        agent.close()
    assert report.ok, report.line()
    assert statuses(server) == [("Add", 200), ("Add", 418)]
    assert oem.node == f"./DMAcc/{OTHER_ID}"


def test_two_accounts_with_one_server_id_are_refused_not_guessed(tmp_path: Path) -> None:
    agent = Agent(make_config(tmp_path, "http://127.0.0.1:9/dm"))
    agent.tree.system_set(f"./DMAcc/{SERVER_ID}/ServerID", OTHER_ID)  # a tree made before the guard
    with pytest.raises(LookupError, match="2 DMAcc accounts name ServerID"):
        agent.account(OTHER_ID)
    agent.close()


# --- 4. no downgrade to Basic on a rogue challenge -------------------------------------------


def test_an_md5_account_does_not_send_its_password_when_a_rogue_server_asks_for_basic(tmp_path: Path) -> None:
    with TestDMServer({DEVICE: rogue(AuthType.BASIC)}) as server:
        agent = Agent(make_config(tmp_path, server.url))
        report = agent.connect()
        agent.close()
    clear = base64.b64encode(b"u:p")
    assert not any(clear in body for body in server.record.bodies)
    assert report.outcome == Outcome.AUTH_FAILED and "basic" in report.reason


# --- 8. an HTTP Package #0 with a bad length -----------------------------------------------


@pytest.mark.parametrize("length", ["-1", "", "abc", str(MAX_PACKAGE0_BYTES + 1)])
def test_an_http_package_0_without_a_valid_small_length_is_refused_at_once(
    tmp_path: Path, length: str
) -> None:
    agent = Agent(make_config(tmp_path, "http://127.0.0.1:9/dm"))
    listener = HTTPNotificationListener(agent, ("127.0.0.1", 0))
    listener.start()
    try:
        with socket.create_connection(listener.address[:2], timeout=5) as sock:
            header = f"Content-Length: {length}\r\n" if length else ""
            sock.sendall(f"POST / HTTP/1.1\r\nHost: x\r\n{header}\r\n".encode() + b"x" * 1000)
            started = time.monotonic()
            answer = sock.recv(200)  # the connection stays open: an answer must come anyway
        assert time.monotonic() - started < 3
        assert answer.split(b" ")[1] in (b"411", b"413"), answer
    finally:
        listener.close()
        agent.close()


# --- 10. a Package #0 replayed after a restart ---------------------------------------------


def test_a_package_0_replayed_after_a_restart_starts_no_session(tmp_path: Path) -> None:
    config = make_config(tmp_path, "http://127.0.0.1:9/dm")
    agent = Agent(config)
    captured = encode_notification(
        Notification(server_id=SERVER_ID, session_id=0x42, ui_mode=1),
        "sp",
        agent.account(SERVER_ID).server_nonce,
    )
    assert NotificationGate(agent).accept(captured) is not None
    agent.close()
    agent = Agent(config)  # a reboot
    assert NotificationGate(agent).accept(captured) is None
    agent.close()


def test_a_resync_package_0_is_not_replayable_once_the_window_has_passed(tmp_path: Path) -> None:
    agent = Agent(make_config(tmp_path, "http://127.0.0.1:9/dm"))
    captured = encode_notification(
        Notification(server_id=SERVER_ID, session_id=0x43, ui_mode=1), "sp", RESYNC_NONCE
    )
    now = [1_000_000.0]
    gate = NotificationGate(agent, clock=lambda: now[0])
    assert gate.accept(captured) is not None
    now[0] += 3600  # long after the per-session window
    assert gate.accept(captured) is None  # the same bytes: remembered by their digest
    agent.close()


# --- 11. a Package #0 flood is bounded ------------------------------------------------------


def test_a_flood_of_package_0_datagrams_is_bounded(tmp_path: Path) -> None:
    agent = Agent(make_config(tmp_path, "http://127.0.0.1:9/dm"))
    taken = sum(agent.notify(b"\x00" * 2000) for _ in range(5000))
    agent.close()
    assert taken == Agent.MAX_PENDING_NOTIFICATIONS
