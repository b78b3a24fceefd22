"""The agent runtime: configuration, the alert queue, the transport, Package #0, sessions."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from omadm.agent.alerts import AlertQueue, alert_from_json, alert_to_json
from omadm.agent.config import (
    AccountConfig,
    AgentConfig,
    ConfigError,
    DeviceConfig,
    TLSConfig,
    load_config,
    save_config,
)
from omadm.agent.listener import NotificationGate
from omadm.agent.runner import Agent, Outcome, SessionRequest
from omadm.agent.transport import HTTPTransport, TransportError, retry_after_seconds
from omadm.protocol import wbxml, xml_codec
from omadm.protocol.auth import RESYNC_NONCE
from omadm.protocol.codes import AuthType
from omadm.protocol.messages import Alert, Get, Item, Meta, Source, Target
from omadm.protocol.notification import Notification, encode_notification
from omadm.protocol.session import AlertReceived, Credentials, SessionStarted
from tests.e2e.dmserver import DeviceAccount, TestDMServer

DEVICE = "IMEI:111111111111111"


def make_config(tmp_path: Path, url: str = "http://127.0.0.1:9/dm", **changes: object) -> AgentConfig:
    account = AccountConfig(server_id="srv", url=url, username="u", password="p", server_password="sp")
    config = AgentConfig(
        device=DeviceConfig(id=DEVICE),
        data_dir=tmp_path / "data",
        accounts=(account,),
        poll_interval=0,
        retries=1,
        retry_backoff=0.01,
        timeout=5,
    )
    return replace(config, **changes)  # type: ignore[arg-type]


def generic_alert(correlator: str) -> Alert:
    return Alert(
        "0",
        data="1226",
        correlator=correlator,
        items=(
            Item(
                source=Source("./SCOMO/Download/1"),
                meta=Meta(type="urn:oma:at:scomo:1.0:OperationComplete", format="int", mark="critical"),
                data="1200",
            ),
        ),
    )


# --- configuration ---------------------------------------------------------------------


def test_config_round_trips_through_toml_and_is_private(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    config = replace(config, scomo=replace(config.scomo, servers=("omadm", "oem-dm")))
    save_config(config, tmp_path / "omadm.toml")
    assert (tmp_path / "omadm.toml").stat().st_mode & 0o777 == 0o600
    loaded = load_config(tmp_path / "omadm.toml")
    assert replace(loaded, path=None) == config


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ("[device]\nid = 'x'\nfoo = 1\n", "unknown setting(s) in [device]: foo"),
        ("[device]\n", "[device]"),
        ("[device]\nid='x'\n[agent]\nencoding='json'\n", "encoding must be 'xml' or 'wbxml'"),
        (
            "[device]\nid='x'\n[[server]]\nserver_id='s'\nurl='ftp://x'\nusername='u'\npassword='p'\n",
            "url must start with http",
        ),
        (
            "[device]\nid='x'\n[[server]]\nserver_id='s'\nurl='http://x'\nusername='u'\npassword='p'\nauth='rot13'\n",
            "auth must be one of",
        ),
        ("[device\n", "cannot read"),
        ("[device]\nid='x'\n[scomo]\nservers=['a+b']\n", "[scomo] servers: 'a+b' is not a ServerID"),
    ],
)
def test_bad_configuration_is_refused_with_a_clear_reason(tmp_path: Path, toml: str, words: str) -> None:
    path = tmp_path / "omadm.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert words in str(info.value)


def test_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_config(make_config(tmp_path), tmp_path / "omadm.toml")
    monkeypatch.setenv("OMADM_AGENT_POLL_INTERVAL", "12.5")
    monkeypatch.setenv("OMADM_AGENT_ENCODING", "WBXML")
    config = load_config(tmp_path / "omadm.toml")
    assert config.poll_interval == 12.5 and config.encoding.value == "wbxml"


def test_missing_configuration_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="omadm agent init"):
        load_config(tmp_path / "nope.toml")


# --- the alert queue -------------------------------------------------------------------


def test_alerts_survive_a_reopen_and_leave_only_when_done(tmp_path: Path) -> None:
    queue = AlertQueue(tmp_path / "alerts.sqlite")
    first = queue.push("srv", generic_alert("job-1"))
    queue.push("other", generic_alert("job-2"))
    queue.close()
    queue = AlertQueue(tmp_path / "alerts.sqlite")
    pending = queue.pending("srv")
    assert [q.alert.correlator for q in pending] == ["job-1"]
    assert pending[0].alert == alert_from_json(alert_to_json(generic_alert("job-1")))
    queue.done(first)
    assert queue.pending("srv") == [] and queue.servers_with_pending() == ["other"]


# --- the transport ---------------------------------------------------------------------


def test_transport_retries_transient_failures_then_gives_up_clearly(tmp_path: Path) -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) < 2:
            return httpx.Response(503)
        return httpx.Response(
            200, content=b"<SyncML/>", headers={"Content-Type": "application/vnd.syncml.dm+xml"}
        )

    slept: list[float] = []
    config = make_config(tmp_path, retries=2, retry_backoff=0.5)
    transport = HTTPTransport(
        config, sleep=slept.append, client=httpx.Client(transport=httpx.MockTransport(handler))
    )
    reply = transport.post("http://x/dm", b"<SyncML/>", "application/vnd.syncml.dm+xml", {})
    assert reply.body == b"<SyncML/>" and len(calls) == 2 and slept == [0.5]

    refusing = HTTPTransport(
        config,
        sleep=slept.append,
        client=httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(404))),
    )
    with pytest.raises(TransportError, match="HTTP 404") as info:
        refusing.post("http://x/dm", b"x", "application/vnd.syncml.dm+xml", {})
    assert not info.value.retryable


def test_unreadable_tls_files_are_a_configuration_error(tmp_path: Path) -> None:
    config = make_config(tmp_path, tls=TLSConfig(ca_file=str(tmp_path / "missing-ca.pem")))
    with pytest.raises(ConfigError, match=r"\[tls\]: cannot load the CA bundle .*missing-ca.pem"):
        HTTPTransport(config)


# --- sessions and durable alerts -------------------------------------------------------


def server_account() -> DeviceAccount:
    return DeviceAccount(
        Credentials(AuthType.MD5, "u", "p"),
        client_nonce=b"n0",
        server_credentials=Credentials(AuthType.MD5, "srv", "sp"),
        send_server_cred=True,
    )


def test_a_generic_alert_waits_until_a_server_acknowledges_it(tmp_path: Path) -> None:
    agent = Agent(make_config(tmp_path))  # the server is unreachable at first
    agent.raise_alert(generic_alert("job-7"))
    report = agent.connect()
    assert report.outcome == Outcome.TRANSPORT_ERROR
    assert [q.alert.correlator for q in agent.alerts.pending()] == ["job-7"]
    agent.close()
    with TestDMServer({DEVICE: server_account()}) as server:
        config = make_config(tmp_path, url=server.url)
        agent = Agent(config)
        # The account in the tree still points at the old URL: the server updates it in practice;
        # here the device's operator re-points it.
        agent.tree.system_set("./DMAcc/srv/AppAddr/1/Addr", server.url)
        report = agent.connect()
        agent.close()
    assert report.ok, report.line()
    assert report.alerts_delivered == 1
    (received,) = server.of(AlertReceived)
    assert received.alert.correlator == "job-7" and received.alert.items[0].meta.mark == "critical"  # type: ignore[union-attr]
    agent = Agent(config)
    assert agent.alerts.pending() == []
    agent.close()


def test_nonces_are_persisted_so_the_next_session_needs_no_challenge(tmp_path: Path) -> None:
    with TestDMServer({DEVICE: server_account()}) as server:
        agent = Agent(make_config(tmp_path, url=server.url))
        first = agent.connect()
        second = agent.connect()
        agent.close()
    assert first.ok and second.ok
    assert first.messages == 2 and second.messages == 1  # challenged once, then straight through


# --- Package #0 ------------------------------------------------------------------------


def _pkg0(session_id: int, nonce: bytes, password: str = "sp") -> bytes:
    return encode_notification(
        Notification(server_id="srv", session_id=session_id, ui_mode=1), password, nonce
    )


def test_package_0_is_verified_before_any_session_starts(tmp_path: Path) -> None:
    agent = Agent(make_config(tmp_path))
    gate = NotificationGate(agent)
    nonce = agent.account().server_nonce
    assert gate.accept(_pkg0(0x1A2B, nonce, password="wrong")) is None
    assert gate.accept(b"\x00" * 10) is None
    request = gate.accept(_pkg0(0x1A2B, nonce))
    assert request == SessionRequest("srv", 1200, "1A2B", reason="package #0")
    assert gate.accept(_pkg0(0x1A2B, nonce)) is None  # the same notification twice: one session
    agent.close()


def test_package_0_with_the_resync_nonce_resets_both_nonces(tmp_path: Path) -> None:
    agent = Agent(make_config(tmp_path))
    agent.tree.system_set("./DMAcc/srv/AppAuth/2/AAuthData", b"lost-nonce", format="bin")
    request = NotificationGate(agent).accept(_pkg0(7, RESYNC_NONCE))
    assert request is not None and request.session_id == "7"
    account = agent.account()
    assert account.server_nonce == RESYNC_NONCE and account.client_nonce == RESYNC_NONCE
    agent.close()


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.e2e
def test_a_running_agent_answers_package_0_over_udp_with_a_server_initiated_session(tmp_path: Path) -> None:
    port = _free_udp_port()
    gets = [Get("0", (Item(target=Target("./DevInfo/Mod")),))]

    def script(events: list[object], session: object) -> None:
        if gets and any(isinstance(e, SessionStarted) for e in events):
            session.queue(gets.pop())  # type: ignore[attr-defined]

    with TestDMServer({DEVICE: server_account()}, script) as server:  # type: ignore[arg-type]
        config = make_config(tmp_path, url=server.url, listen_udp=f"127.0.0.1:{port}", poll_interval=0)
        save_config(config, tmp_path / "omadm.toml")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "omadm", "agent", "run", "--config", str(tmp_path / "omadm.toml")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        try:
            nonce = b""  # a fresh device: the SRVCRED nonce is empty until the first session
            deadline = time.monotonic() + 20
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                while not server.of(SessionStarted) and time.monotonic() < deadline:
                    sock.sendto(_pkg0(0x00AB, nonce), ("127.0.0.1", port))
                    time.sleep(0.3)
            deadline = time.monotonic() + 10
            while gets == [] and not server.record.replies[-1:] and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)
        finally:
            proc.terminate()
            output, _ = proc.communicate(timeout=10)
    started = server.of(SessionStarted)
    assert started and started[0].alert_code == 1200 and started[0].session_id == "AB", output
    assert proc.returncode == 0, output


# --- bootstrap from TNDS ---------------------------------------------------------------

BOOTSTRAP = Path(__file__).with_name("bootstrap-dmacc.xml")


@pytest.mark.parametrize("encoding", ["xml", "wbxml"])
def test_a_bootstrap_tnds_document_creates_a_usable_account(tmp_path: Path, encoding: str) -> None:
    data = BOOTSTRAP.read_bytes()
    if encoding == "wbxml":  # the DM bootstrap profile is WBXML
        data = wbxml.encode(xml_codec.parse_element(data))
    agent = Agent(replace(make_config(tmp_path), accounts=()))
    written = agent.bootstrap_tnds(data)
    assert "./DMAcc/boot1/AppAuth/1/AAuthSecret" in written
    account = agent.account("boot-srv")
    assert account.url == "http://127.0.0.1:9/dm"
    assert account.client == Credentials(AuthType.MD5, "bootuser", "bootpass")
    assert account.client_nonce == b"\x00\x01\x02\x03"
    assert agent.store.get("./DMAcc/boot1").acl == "Get=boot-srv&Replace=boot-srv"  # type: ignore[union-attr]
    agent.close()


def test_init_from_a_bootstrap_document_on_the_command_line(tmp_path: Path) -> None:
    config = tmp_path / "omadm.toml"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "omadm",
            "agent",
            "init",
            "--device-id",
            "IMEI:9",
            "--bootstrap",
            str(BOOTSTRAP),
            "--data-dir",
            str(tmp_path / "data"),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "accounts: boot-srv" in run.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "omadm", "agent", "bootstrap", str(config), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 1 and "not a usable bootstrap TNDS document" in bad.stderr


def test_transport_waits_out_a_busy_server_as_told_with_jitter_and_a_bound(tmp_path: Path) -> None:
    calls: list[int] = []

    def busy_twice(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) <= 2:
            return httpx.Response(503, headers={"Retry-After": "4"})
        return httpx.Response(
            200, content=b"<SyncML/>", headers={"Content-Type": "application/vnd.syncml.dm+xml"}
        )

    slept: list[float] = []
    # retries=0: a busy answer is an appointment, not one of the few failures allowed.
    config = make_config(tmp_path, retries=0, busy_retries=3)
    transport = HTTPTransport(
        config, sleep=slept.append, client=httpx.Client(transport=httpx.MockTransport(busy_twice))
    )
    reply = transport.post("http://x/dm", b"<SyncML/>", "application/vnd.syncml.dm+xml", {})
    assert reply.body == b"<SyncML/>" and len(calls) == 3
    assert len(slept) == 2 and all(4.0 <= s < 5.4 for s in slept)

    always_busy = HTTPTransport(
        config,
        sleep=slept.append,
        client=httpx.Client(
            transport=httpx.MockTransport(lambda r: httpx.Response(503, headers={"Retry-After": "1"}))
        ),
    )
    slept.clear()
    with pytest.raises(TransportError, match="HTTP 503") as info:
        always_busy.post("http://x/dm", b"x", "application/vnd.syncml.dm+xml", {})
    assert info.value.retry_after == 1.0 and len(slept) == 3  # busy_retries, then it gives up


def test_retry_after_takes_seconds_and_http_dates() -> None:
    now = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds("Sun, 06 Dec 2026 12:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Sun, 06 Dec 2026 11:00:00 GMT", now) == 0.0  # in the past: now
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None
