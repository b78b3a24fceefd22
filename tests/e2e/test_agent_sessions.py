"""The real agent process against a real DM server over HTTP on 127.0.0.1.

Each test writes an ``omadm.toml``, starts ``omadm agent connect`` as its own process, lets
the test server (``ServerSession`` behind an HTTP listener) script the session, and then
opens the agent's persistent tree to see what landed.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from omadm.agent.config import AccountConfig, AgentConfig, DeviceConfig, load_config, save_config
from omadm.protocol import codec
from omadm.protocol.codec import Encoding
from omadm.protocol.codes import AuthType
from omadm.protocol.messages import (
    Add,
    Atomic,
    Copy,
    Delete,
    Exec,
    Get,
    Item,
    Message,
    Meta,
    Replace,
    Source,
    Status,
    Target,
)
from omadm.protocol.session import (
    AuthenticationFailed,
    Credentials,
    Event,
    ResultsReceived,
    ServerSession,
    SessionStarted,
    StatusReceived,
    _Out,
)
from omadm.tree.store import TreeStore

from .dmserver import DeviceAccount, TestDMServer

DEVICE_ID = "IMEI:351756051523999"
USER, PASSWORD = "dev-user", "dev-secret"
SERVER_ID, SERVER_PASSWORD = "omadm-test", "srv-secret"

pytestmark = pytest.mark.e2e


def write_config(tmp_path: Path, url: str, **account_changes: object) -> Path:
    account = AccountConfig(
        server_id=SERVER_ID, url=url, username=USER, password=PASSWORD, server_password=SERVER_PASSWORD
    )
    account = replace(account, **account_changes)  # type: ignore[arg-type]
    config = AgentConfig(
        device=DeviceConfig(id=DEVICE_ID),
        data_dir=tmp_path / "data",
        accounts=(account,),
        poll_interval=0,
        retries=1,
        retry_backoff=0.05,
        timeout=10,
    )
    path = tmp_path / "omadm.toml"
    save_config(config, path)
    return path


def set_agent(path: Path, **changes: object) -> None:
    config = load_config(path)
    save_config(replace(config, **changes), path)  # type: ignore[arg-type]


def connect(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "omadm", "agent", "connect", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def tree_value(tmp_path: Path, path: str) -> bytes | None:
    store = TreeStore(tmp_path / "data" / "tree.sqlite")
    try:
        record = store.get(path)
        return None if record is None else record.value
    finally:
        store.close()


def tree_paths(tmp_path: Path) -> list[str]:
    store = TreeStore(tmp_path / "data" / "tree.sqlite")
    try:
        return store.all_paths()
    finally:
        store.close()


def account(scheme: AuthType = AuthType.MD5, **changes: object) -> DeviceAccount:
    acc = DeviceAccount(
        Credentials(scheme, USER, PASSWORD),
        client_nonce=b"server-nonce-0",
        server_credentials=Credentials(scheme, SERVER_ID, SERVER_PASSWORD),
        send_server_cred=True,
    )
    return replace(acc, **changes)  # type: ignore[arg-type]


class Steps:
    """A server script: one batch of commands per round trip, each once the last is answered."""

    def __init__(self, *batches: list[object]) -> None:
        self.batches = list(batches)
        self.tags: dict[str, object] = {}

    def __call__(self, events: list[Event], session: ServerSession) -> None:
        if session.authenticated and session.pending == 0 and self.batches:
            for command in self.batches.pop(0):
                self.tags[session.queue(command)] = command  # type: ignore[arg-type]


def statuses(server: TestDMServer) -> list[tuple[str, int]]:
    return [(e.command.name, e.status.code) for e in server.of(StatusReceived)]


def test_commands_round_trip_into_the_persistent_tree(tmp_path: Path) -> None:
    steps = Steps(
        [
            Add("0", (Item(target=Target("./Vendor"), meta=Meta(format="node")),)),
            Add("0", (Item(target=Target("./Vendor/Level"), meta=Meta(format="int"), data="3"),)),
            Add(
                "0",
                (
                    Item(
                        target=Target("./Vendor/Blob"),
                        meta=Meta(format="b64"),
                        data=base64.b64encode(b"\x00\xff").decode(),
                    ),
                ),
            ),
            Add("0", (Item(target=Target("./Vendor/Old"), data="bye"),)),
        ],
        [
            Replace("0", (Item(target=Target("./Vendor/Level"), meta=Meta(format="int"), data="4"),)),
            Copy("0", (Item(target=Target("./Vendor/Copied"), source=Source("./Vendor/Level")),)),
            Delete("0", (Item(target=Target("./Vendor/Old")),)),
            Atomic(
                "0",
                (
                    Add("0", (Item(target=Target("./Vendor/A"), data="a"),)),
                    Replace("0", (Item(target=Target("./Vendor/Missing"), data="x"),)),
                ),
            ),
            Get("0", (Item(target=Target("./Vendor/Level")),)),
            Get("0", (Item(target=Target("./DevInfo/Man")),)),
            Exec("0", (Item(target=Target("./Vendor/Level")),), correlator="job-1"),
        ],
    )
    with TestDMServer({DEVICE_ID: account()}, steps) as server:
        config = write_config(tmp_path, server.url)
        run = connect(config)
    assert run.returncode == 0, run.stderr + run.stdout
    assert f"session 1 with {SERVER_ID}: ok" in run.stdout
    assert statuses(server) == [
        ("Add", 200),
        ("Add", 200),
        ("Add", 200),
        ("Add", 200),
        ("Replace", 200),
        ("Copy", 200),
        ("Delete", 200),
        ("Atomic", 507),
        ("Get", 200),
        ("Get", 200),
        # ./Vendor got the automatic ACL of a node added without Replace on the root
        # (Add, Delete, Get, Replace for its creator): no Exec right, so 425 and nothing runs.
        ("Exec", 425),
    ]
    results = [e.results.items[0].data for e in server.of(ResultsReceived)]
    assert results == ["4", "omadm"]
    assert tree_value(tmp_path, "./Vendor/Level") == b"4"
    assert tree_value(tmp_path, "./Vendor/Copied") == b"4"
    assert tree_value(tmp_path, "./Vendor/Blob") == b"\x00\xff"
    paths = tree_paths(tmp_path)
    assert "./Vendor/Old" not in paths and "./Vendor/A" not in paths  # deleted; rolled back


def test_md5_challenged_both_ways_then_the_next_session_needs_no_challenge(tmp_path: Path) -> None:
    # The device requires the server to authenticate; the server sends no Cred until challenged,
    # and its stored nonce for the device is stale, so it challenges the device too.
    acc = account(client_nonce=b"stale-on-purpose", send_server_cred=False)
    steps = Steps([Get("0", (Item(target=Target("./DevDetail/SwV")),))])
    with TestDMServer({DEVICE_ID: acc}, steps) as server:
        config = write_config(tmp_path, server.url, require_server_auth=True)
        first = connect(config)
        failures_first = len(server.of(AuthenticationFailed))
        steps.batches.append([Get("0", (Item(target=Target("./DevInfo/Lang")),))])
        acc.send_server_cred = True
        second = connect(config)
    assert first.returncode == 0, first.stderr + first.stdout
    assert second.returncode == 0, second.stderr + second.stdout
    assert failures_first >= 1
    assert len(server.of(AuthenticationFailed)) == failures_first  # none in the second session
    assert [e.results.items[0].data for e in server.of(ResultsReceived)] == ["0.1.0", "en-US"]
    # The second session's first message was accepted at once: two messages in all.
    assert server.record.sessions[-1].authenticated
    assert tree_value(tmp_path, "./DMAcc/omadm-test/AppAuth/1/AAuthData") == acc.client_nonce


@pytest.mark.parametrize("scheme", [AuthType.BASIC, AuthType.HMAC])
def test_basic_and_hmac_sessions(tmp_path: Path, scheme: AuthType) -> None:
    steps = Steps(
        [Add("0", (Item(target=Target("./DMAcc/omadm-test/Name"), data="lab"),))],
        [Get("0", (Item(target=Target("./DMAcc/omadm-test/Name")),))],
    )
    auth = {AuthType.BASIC: "basic", AuthType.HMAC: "hmac"}[scheme]
    with TestDMServer({DEVICE_ID: account(scheme)}, steps) as server:
        config = write_config(tmp_path, server.url, auth=auth)
        run = connect(config)
    assert run.returncode == 0, run.stderr + run.stdout
    assert statuses(server)[-1] == ("Get", 200)
    assert [e.results.items[0].data for e in server.of(ResultsReceived)] == ["lab"]


@pytest.mark.parametrize("encoding", [Encoding.XML, Encoding.WBXML])
def test_a_200_kb_value_moves_as_a_large_object_under_max_msg_size_4096(
    tmp_path: Path, encoding: Encoding
) -> None:
    big = "".join(f"{i:08d} é <&>\n" for i in range(200 * 1024 // 16))
    steps = Steps(
        [Add("0", (Item(target=Target("./Big"), data=big),))], [Get("0", (Item(target=Target("./Big")),))]
    )
    with TestDMServer({DEVICE_ID: account()}, steps, max_msg_size=4096) as server:
        config = write_config(tmp_path, server.url)
        set_agent(config, max_msg_size=4096, encoding=encoding)
        run = connect(config)
    assert run.returncode == 0, run.stderr + run.stdout
    assert tree_value(tmp_path, "./Big") == big.encode()
    (results,) = server.of(ResultsReceived)
    assert results.results.items[0].data == big
    assert all(len(body) <= 4096 for body in server.record.bodies + server.record.replies)
    assert len(server.record.bodies) > 80


def test_two_management_authorities_see_only_what_their_acls_grant(tmp_path: Path) -> None:
    other = AccountConfig(
        server_id="other-ma", url="http://unused", username="u2", password="p2", server_password="p2s"
    )
    first = Steps(
        [
            Add("0", (Item(target=Target("./Vendor"), meta=Meta(format="node")),)),
            Add("0", (Item(target=Target("./Vendor/Secret"), data="mine"),)),
        ]
    )
    with TestDMServer({DEVICE_ID: account()}, first) as server_a:
        config = write_config(tmp_path, server_a.url)
        assert connect(config).returncode == 0
    # The second authority: its own account, pointed at its own server.
    second = Steps(
        [
            Get("0", (Item(target=Target("./Vendor/Secret")),)),
            Replace("0", (Item(target=Target("./Vendor/Secret"), data="theirs"),)),
            Get("0", (Item(target=Target("./DMAcc/omadm-test/ServerID")),)),
            Get("0", (Item(target=Target("./DevInfo/Mod")),)),
        ]
    )
    b_account = DeviceAccount(
        Credentials(AuthType.MD5, "u2", "p2"),
        client_nonce=b"n",
        server_credentials=Credentials(AuthType.MD5, "other-ma", "p2s"),
        send_server_cred=True,
    )
    with TestDMServer({DEVICE_ID: b_account}, second) as server_b:
        cfg = load_config(config)
        save_config(replace(cfg, accounts=(*cfg.accounts, replace(other, url=server_b.url))), config)
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "omadm",
                "agent",
                "connect",
                "--config",
                str(config),
                "--server-id",
                "other-ma",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert run.returncode == 0, run.stderr + run.stdout
    # ./Vendor was created by omadm-test without Replace on the root: it carries omadm-test's rights only.
    assert statuses(server_b) == [("Get", 425), ("Replace", 425), ("Get", 425), ("Get", 200)]
    assert tree_value(tmp_path, "./Vendor/Secret") == b"mine"


# --- bad input from a server ------------------------------------------------------------


class Raw(TestDMServer):
    """A server that answers the device's second message with whatever bytes the test gives."""

    __test__ = False

    def __init__(self, accounts: dict[str, DeviceAccount], script: Steps, second_reply: bytes) -> None:
        super().__init__(accounts, script)
        self.second_reply = second_reply

    def handle(
        self, body: bytes, token: str, content_type: str | None, hmac_header: str | None
    ) -> tuple[int, bytes, dict[str, str]]:
        if len(self.record.bodies) == 1:
            self.record.bodies.append(body)
            return 200, self.second_reply, {"Content-Type": "application/vnd.syncml.dm+xml"}
        return super().handle(body, token, content_type, hmac_header)


def _server_message(body: str) -> bytes:
    return (
        '<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto>'
        "<SessionID>1</SessionID><MsgID>2</MsgID><Target><LocURI>" + DEVICE_ID + "</LocURI></Target>"
        "<Source><LocURI>http://127.0.0.1/dm</LocURI></Source></SyncHdr><SyncBody>"
        + body
        + "</SyncBody></SyncML>"
    ).encode()


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (b"<SyncML><SyncHdr>", "not well-formed"),
        (
            _server_message("<Frobnicate><CmdID>2</CmdID></Frobnicate><Final/>"),
            "unknown element <Frobnicate>",
        ),
        (b"\x00\x01\x02garbage", "not well-formed"),  # the Content-Type said XML
    ],
)
def test_a_malformed_server_message_ends_the_session_cleanly_and_changes_nothing(
    tmp_path: Path, reply: bytes, words: str
) -> None:
    with Raw({DEVICE_ID: account(client_nonce=b"stale")}, Steps(), reply) as server:
        config = write_config(tmp_path, server.url)
        before = tree_paths(tmp_path) if (tmp_path / "data").exists() else None
        run = connect(config)
    assert run.returncode == 5, run.stdout + run.stderr
    assert words in run.stdout + run.stderr
    after = tree_paths(tmp_path)
    assert before is None or before == after
    assert not any(p.startswith("./Vendor") for p in after)


def test_wrong_server_credentials_are_refused_and_nothing_runs(tmp_path: Path) -> None:
    impostor = account(
        send_server_cred=True, server_credentials=Credentials(AuthType.MD5, SERVER_ID, "guessed")
    )
    steps = Steps([Add("0", (Item(target=Target("./Evil"), data="x"),))] * 5)
    with TestDMServer({DEVICE_ID: impostor}, steps) as server:
        config = write_config(tmp_path, server.url, require_server_auth=True)
        run = connect(config)
    assert run.returncode in (3, 5), run.stdout + run.stderr
    assert "./Evil" not in tree_paths(tmp_path)
    assert all(code in (401, 407) for _, code in statuses(server))


def test_an_absurd_object_size_is_refused_with_413(tmp_path: Path) -> None:
    chunk = Add("0", (Item(target=Target("./Huge"), meta=Meta(size=10**12), data="x" * 100, more_data=True),))

    def script(events: list[Event], session: ServerSession) -> None:
        if any(isinstance(e, SessionStarted) for e in events):
            session._outbox.append(_raw_out(chunk))  # what a broken server would send

    with TestDMServer({DEVICE_ID: account()}, script) as server:
        config = write_config(tmp_path, server.url)
        run = connect(config)
    assert run.returncode == 0, run.stdout + run.stderr
    assert statuses(server) == [("Add", 413)]
    assert "./Huge" not in tree_paths(tmp_path)


def _raw_out(command: object) -> object:
    return _Out(command, tag="raw", expects_status=True)  # type: ignore[arg-type]


def test_an_unreachable_server_gives_exit_code_4(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9/dm")
    run = connect(config)
    assert run.returncode == 4
    assert "cannot reach" in run.stdout


class ReplayServer(TestDMServer):
    """Serves one honest session, then replays its recorded credentials with other commands.

    MD5 server credentials do not cover the message body, so an attacker who recorded a
    server message can re-send its ``Cred`` with any commands and any header. The device
    must refuse it because it issued the server a new nonce since.
    """

    __test__ = False

    def __init__(self, accounts: dict[str, DeviceAccount], script: Steps) -> None:
        super().__init__(accounts, script)
        self.recorded: Message | None = None
        self.replaying = False

    def handle(
        self, body: bytes, token: str, content_type: str | None, hmac_header: str | None
    ) -> tuple[int, bytes, dict[str, str]]:
        if not self.replaying:
            status, reply, headers = super().handle(body, token, content_type, hmac_header)
            message = codec.decode(reply)[0]
            if self.recorded is None and message.header.cred is not None:
                self.recorded = message
            return status, reply, headers
        self.record.bodies.append(body)
        request = codec.decode(body)[0]
        assert self.recorded is not None
        evil = (
            (Add("9", (Item(target=Target("./Vendor/Evil"), data="x"),)),)
            if request.header.msg_id == "1"
            else ()
        )
        header = replace(
            self.recorded.header, session_id=request.header.session_id, msg_id=request.header.msg_id
        )
        hdr_status = Status("1", request.header.msg_id, "0", "SyncHdr", "212")
        forged = Message(header, (hdr_status, *evil))
        self.record.replies.append(codec.encode(forged))
        return 200, self.record.replies[-1], {"Content-Type": "application/vnd.syncml.dm+xml"}


def test_replayed_server_credentials_are_refused_and_nothing_runs(tmp_path: Path) -> None:
    acc = account(send_server_cred=True, server_nonce=b"")
    steps = Steps([Add("0", (Item(target=Target("./Vendor"), meta=Meta(format="node")),))])
    with ReplayServer({DEVICE_ID: acc}, steps) as server:
        config = write_config(tmp_path, server.url, require_server_auth=True)
        honest = connect(config)
        server.replaying = True
        replayed = connect(config)
    assert honest.returncode == 0, honest.stdout + honest.stderr
    assert replayed.returncode == 3, replayed.stdout + replayed.stderr
    assert "never proved its identity" in replayed.stdout
    assert "./Vendor/Evil" not in tree_paths(tmp_path)
    answer = codec.decode(server.record.bodies[-1])[0]
    refused = [c for c in answer.commands if isinstance(c, Status) and c.cmd == "Add"]
    assert [s.code for s in refused] == [401]  # the device challenged the replayed Cred
