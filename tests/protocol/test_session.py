"""Client and server session state machines, joined in memory (no sockets, no clocks)."""

from __future__ import annotations

import base64
import itertools

import pytest

from omadm.protocol import auth, codec
from omadm.protocol.codec import Encoding
from omadm.protocol.codes import AlertCode, AuthType, StatusCode
from omadm.protocol.errors import LocalProtocolError, RemoteProtocolError
from omadm.protocol.messages import (
    Add,
    Alert,
    Atomic,
    Delete,
    Exec,
    Get,
    Item,
    Message,
    Meta,
    Replace,
    Results,
    Sequence,
    Source,
    Status,
    SyncHdr,
    Target,
)
from omadm.protocol.session import (
    AlertReceived,
    Authenticated,
    AuthenticationFailed,
    ClientConfig,
    ClientSession,
    Credentials,
    DevInfoReceived,
    NonceIssued,
    NonceReceived,
    ResultsReceived,
    ServerConfig,
    ServerSession,
    SessionAborted,
    SessionEnded,
    SessionStarted,
    State,
    StatusReceived,
)

from .session_helpers import DictTree, Transcript, generic_alert, once_started, run

DEVINFO = (
    ("./DevInfo/DevId", "IMEI:493005100592800"),
    ("./DevInfo/Man", "Acme"),
    ("./DevInfo/Mod", "Gateway-1"),
    ("./DevInfo/DmV", "omadm-0.1"),
    ("./DevInfo/Lang", "en-US"),
)
CLIENT = Credentials(AuthType.MD5, "dev-user", "dev-secret")
SERVER = Credentials(AuthType.MD5, "omadm.example", "srv-secret")


def _nonces() -> itertools.count[int]:
    return itertools.count(1)


def _nonce_factory() -> object:
    counter = _nonces()
    return lambda: next(counter).to_bytes(16, "big")


def make_pair(
    *,
    client_creds: Credentials | None = CLIENT,
    server_knows: Credentials | None = CLIENT,
    client_nonce: bytes = b"stale",
    server_issued_nonce: bytes = b"fresh-nonce",
    encoding: Encoding = Encoding.XML,
    client_max_msg: int | None = 16384,
    client_max_obj: int | None = 4 * 1024 * 1024,
    server_max_msg: int | None = 65536,
    server_max_obj: int | None = 16 * 1024 * 1024,
    require_server_auth: bool = False,
    server_creds: Credentials | None = None,
    send_server_cred: bool = False,
    tree: DictTree | None = None,
) -> tuple[ClientSession, ServerSession, DictTree]:
    tree = tree or DictTree()
    client = ClientSession(
        ClientConfig(
            device_id="IMEI:493005100592800",
            server_uri="http://127.0.0.1:8080/dm",
            credentials=client_creds,
            client_nonce=client_nonce,
            server_credentials=SERVER,
            server_nonce=b"server-nonce-1",
            require_server_auth=require_server_auth,
            session_id="1A2B",
            devinfo=DEVINFO,
            encoding=encoding,
            max_msg_size=client_max_msg,
            max_obj_size=client_max_obj,
            nonce_factory=_nonce_factory(),  # type: ignore[arg-type]
        ),
        tree,
    )
    server = ServerSession(
        ServerConfig(
            server_uri="http://127.0.0.1:8080/dm",
            resp_uri="http://127.0.0.1:8080/dm?s=tok1",
            client_credentials=server_knows,
            client_nonce=server_issued_nonce,
            server_credentials=server_creds,
            server_nonce=b"server-nonce-1",
            send_server_cred=send_server_cred,
            max_msg_size=server_max_msg,
            max_obj_size=server_max_obj,
            nonce_factory=_nonce_factory(),  # type: ignore[arg-type]
        )
    )
    return client, server, tree


def statuses(t: Transcript) -> dict[str, int]:
    return {e.tag: e.status.code for e in t.of("server", StatusReceived)}


# --- the basic flow ------------------------------------------------------------------


def test_a_session_with_no_commands_ends_after_package_2() -> None:
    client, server, _ = make_pair(client_nonce=b"fresh-nonce")
    t = run(client, server)
    assert len(t.client_bodies) == 1 and len(t.server_bodies) == 1
    started = t.of("server", SessionStarted)
    assert started == [SessionStarted(1201, "IMEI:493005100592800", "1A2B")]
    (devinfo,) = t.of("server", DevInfoReceived)
    assert devinfo.values["./DevInfo/Man"] == "Acme"
    assert client.state is State.ENDED and server.state is State.ENDED
    assert t.of("client", SessionEnded) and t.of("server", SessionEnded)


def test_management_commands_are_executed_and_answered_with_status_and_results() -> None:
    client, server, tree = make_pair(client_nonce=b"fresh-nonce")
    script = once_started(
        Add("0", (Item(target=Target("./Vendor"), meta=Meta(format="node")),)),
        Add("0", (Item(target=Target("./Vendor/Level"), meta=Meta(format="int"), data="3"),)),
        Get("0", (Item(target=Target("./Vendor/Level")),)),
        Get("0", (Item(target=Target("./Missing")),)),
        Exec("0", (Item(target=Target("./Vendor/Level"), data="go"),), correlator="job-1"),
    )
    t = run(client, server, script)
    assert list(statuses(t).values()) == [200, 200, 200, 404, 202]
    (results,) = t.of("server", ResultsReceived)
    assert results.results.items[0].data == "3"
    assert results.results.items[0].source is not None
    assert results.results.items[0].source.loc_uri == "./Vendor/Level"
    assert tree.nodes["./Vendor/Level"] == "3"
    assert tree.execs == [("./Vendor/Level", "go")]


def test_statuses_follow_command_order_with_synchdr_status_first() -> None:
    client, server, _ = make_pair(client_nonce=b"fresh-nonce")
    script = once_started(
        Get("0", (Item(target=Target(".")),)),
        Delete("0", (Item(target=Target("./nope")),)),
    )
    t = run(client, server, script)
    pkg3, _ = codec.decode(t.client_bodies[1])
    names = [(c.name, getattr(c, "cmd", None)) for c in pkg3.commands]
    assert names == [("Status", "SyncHdr"), ("Status", "Get"), ("Results", None), ("Status", "Delete")]
    assert pkg3.final


def test_generic_alert_from_the_client_reaches_the_server_and_is_acknowledged() -> None:
    client, server, _ = make_pair(client_nonce=b"fresh-nonce")
    tag = client.queue_alert(generic_alert("job-42"))
    t = run(client, server)
    (received,) = t.of("server", AlertReceived)
    assert received.alert.correlator == "job-42"
    acks = [e for e in t.of("client", StatusReceived) if e.tag == tag]
    assert [a.status.code for a in acks] == [200]


# --- authentication ---------------------------------------------------------------------


def test_md5_challenge_on_each_side_then_nonces_carry_over_to_the_next_session() -> None:
    # The client's stored nonce is stale, and the client requires the server to authenticate.
    client, server, tree = make_pair(
        client_nonce=b"stale", require_server_auth=True, server_creds=SERVER, send_server_cred=False
    )
    script = once_started(Add("0", (Item(target=Target("./x"), data="1"),)))
    t = run(client, server, script)

    # Server challenged the client (401 + Chal), the client retried Pkg#1 with the new nonce.
    failed = t.of("server", AuthenticationFailed)
    assert failed and failed[0].status == StatusCode.INVALID_CREDENTIALS
    assert t.of("server", Authenticated) == [Authenticated("dev-user", AuthType.MD5)]
    first_reply, _ = codec.decode(t.server_bodies[0])
    hdr_status = first_reply.commands[0]
    assert isinstance(hdr_status, Status) and hdr_status.code == 401 and hdr_status.chal is not None
    assert all(isinstance(c, Status) for c in first_reply.commands)
    # The client challenged the server's commands (407), the server resent them with Cred.
    assert t.of("client", AuthenticationFailed)[0].status == StatusCode.MISSING_CREDENTIALS
    assert t.of("client", Authenticated) == [Authenticated("omadm.example", AuthType.MD5)]
    assert tree.nodes["./x"] == "1"
    assert list(statuses(t).values()) == [200]

    # What each side persisted is what the other will use next time: no challenge then.
    next_client_nonce = t.of("client", NonceReceived)[-1].nonce
    assert next_client_nonce == t.of("server", NonceIssued)[-1].nonce
    next_server_nonce = t.of("client", NonceIssued)[-1].nonce
    client2, server2, _ = make_pair(
        client_nonce=next_client_nonce,
        server_issued_nonce=next_client_nonce,
        require_server_auth=True,
        server_creds=SERVER,
        send_server_cred=True,
    )
    client2._peer.nonce = next_server_nonce
    server2._own.nonce = next_server_nonce
    t2 = run(client2, server2, once_started(Get("0", (Item(target=Target("./x")),))))
    assert not t2.of("server", AuthenticationFailed) and not t2.of("client", AuthenticationFailed)
    assert len(t2.client_bodies) == 2


def test_missing_credentials_get_407_and_wrong_scheme_is_a_failure() -> None:
    client, server, _ = make_pair(client_creds=None)
    t = run(client, server)
    assert [e.status for e in t.of("server", AuthenticationFailed)][:1] == [StatusCode.MISSING_CREDENTIALS]
    assert t.of("client", AuthenticationFailed)[-1].final
    assert client.state is State.FAILED

    basic = Credentials(AuthType.BASIC, CLIENT.username, CLIENT.password)
    client, server, _ = make_pair(client_creds=basic, server_knows=CLIENT)
    t = run(client, server)
    # Challenged for md5, the client switches scheme and succeeds.
    assert t.of("server", Authenticated) == [Authenticated("dev-user", AuthType.MD5)]


def test_wrong_password_fails_after_the_retry_limit_and_nothing_is_executed() -> None:
    wrong = Credentials(AuthType.MD5, CLIENT.username, "guess")
    client, server, tree = make_pair(client_creds=wrong)
    t = run(client, server, once_started(Add("0", (Item(target=Target("./x"), data="1"),))))
    assert "./x" not in tree.nodes
    assert t.of("server", AuthenticationFailed)[-1].final or t.of("client", AuthenticationFailed)[-1].final
    assert not t.of("server", SessionStarted)


def test_basic_authentication() -> None:
    basic = Credentials(AuthType.BASIC, "Bruce2", "OhBehave")
    client, server, _ = make_pair(client_creds=basic, server_knows=basic)
    t = run(client, server)
    assert t.of("server", Authenticated) == [Authenticated("Bruce2", AuthType.BASIC)]
    pkg1, _ = codec.decode(t.client_bodies[0])
    assert pkg1.header.cred is not None and pkg1.header.cred.data == "QnJ1Y2UyOk9oQmVoYXZl"


@pytest.mark.parametrize("encoding", [Encoding.XML, Encoding.WBXML])
def test_hmac_session_macs_every_message_and_rotates_the_nonce(encoding: Encoding) -> None:
    hmac_client = Credentials(AuthType.HMAC, CLIENT.username, CLIENT.password)
    hmac_server = Credentials(AuthType.HMAC, SERVER.username, SERVER.password)
    client, server, tree = make_pair(
        client_creds=hmac_client,
        server_knows=hmac_client,
        client_nonce=b"stale",
        encoding=encoding,
        require_server_auth=True,
        server_creds=hmac_server,
        send_server_cred=True,
    )
    tree.nodes["./a"] = "A"
    gets = [Get("0", (Item(target=Target("./a")),))]

    def script(events: list[object], srv: ServerSession) -> None:
        if gets and srv.authenticated and srv.pending == 0:
            srv.queue(gets.pop())
            srv.queue(Replace("0", (Item(target=Target("./a"), data="B"),)))

    t = run(client, server, script)  # type: ignore[arg-type]
    assert tree.nodes["./a"] == "B"
    # Every authenticated server reply carried 200 + a new NextNonce for the client's next MAC.
    issued = t.of("server", NonceIssued)
    assert len({e.nonce for e in issued}) == len(issued) >= 2
    for body in t.server_bodies[1:]:
        hdr = codec.decode(body)[0].commands[0]
        assert isinstance(hdr, Status) and hdr.code == 200 and hdr.chal is not None
    assert t.of("client", Authenticated) and t.of("server", Authenticated)


def test_hmac_over_tampered_body_is_refused() -> None:
    hmac_client = Credentials(AuthType.HMAC, CLIENT.username, CLIENT.password)
    client, server, _ = make_pair(
        client_creds=hmac_client, server_knows=hmac_client, client_nonce=b"fresh-nonce"
    )
    out = client.start()
    tampered = out.body.replace(b"Acme", b"Acne")
    server.receive(tampered, hmac_header=out.headers[auth.HMAC_HEADER])
    reply = server.reply()
    hdr = codec.decode(reply.body)[0].commands[0]
    assert isinstance(hdr, Status) and hdr.code == 401


# --- large objects and multi-message packages -----------------------------------------


@pytest.mark.parametrize("encoding", [Encoding.XML, Encoding.WBXML])
def test_a_300_kb_object_goes_both_ways_under_max_msg_size_4096(encoding: Encoding) -> None:
    big_text = "".join(f"line {i:06d} <&> é\n" for i in range(300 * 1024 // 20))[: 300 * 1024]
    big_binary = bytes(range(256)) * (300 * 1024 // 256)
    client, server, tree = make_pair(
        client_nonce=b"fresh-nonce",
        encoding=encoding,
        client_max_msg=4096,
        server_max_msg=4096,
        client_max_obj=1024 * 1024,
        server_max_obj=1024 * 1024,
    )
    tree.nodes["./Big"] = None
    tree.nodes["./Big/Up"] = big_binary
    script = once_started(
        Replace("0", (Item(target=Target("./Big/Up")),)),  # placeholder replaced below
    )
    del script
    steps = iter(
        [
            [Add("0", (Item(target=Target("./Big/Down"), data=big_text),))],
            [Get("0", (Item(target=Target("./Big/Up")),))],
        ]
    )

    def drive(events: list[object], srv: ServerSession) -> None:
        if srv.authenticated and srv.pending == 0:
            for cmd in next(steps, []):
                srv.queue(cmd)

    t = run(client, server, drive)  # type: ignore[arg-type]
    assert tree.nodes["./Big/Down"] == big_text
    (results,) = t.of("server", ResultsReceived)
    data = results.results.items[0].data
    received = base64.b64decode(data) if isinstance(data, str) else data
    assert received == big_binary
    assert all(len(body) <= 4096 for body in t.all_bodies())
    assert len(t.client_bodies) > 100  # really chunked both ways
    # Chunks: Meta/Size on the first only, MoreData on all but the last, 213 for each.
    with_adds = [
        m
        for m in (codec.decode(b)[0] for b in t.server_bodies)
        if any(isinstance(c, Add) for c in m.commands)
    ]
    first_chunk = with_adds[0]
    add = next(c for c in first_chunk.commands if isinstance(c, Add))
    assert all(next(c for c in m.commands if isinstance(c, Add)).items[0].meta is None for m in with_adds[1:])
    assert add.items[0].more_data and add.items[0].meta is not None and add.items[0].meta.size
    assert not first_chunk.final


def test_objects_beyond_max_obj_size_are_refused_with_413() -> None:
    client, server, tree = make_pair(
        client_nonce=b"fresh-nonce",
        client_max_msg=4096,
        server_max_msg=4096,
        client_max_obj=100_000,
        server_max_obj=100_000,
    )
    tree.nodes["./Up"] = "u" * 300_000
    refused: list[Exception] = []

    def drive(events: list[object], srv: ServerSession) -> None:
        if any(isinstance(e, SessionStarted) for e in events):
            try:
                srv.queue(Add("0", (Item(target=Target("./Down"), data="d" * 300_000),)))
            except LocalProtocolError as exc:
                refused.append(exc)
            srv.queue(Add("0", (Item(target=Target("./Small"), data="s" * 90_000),)))
            srv.queue(Get("0", (Item(target=Target("./Up")),)))

    t = run(client, server, drive)  # type: ignore[arg-type]
    assert refused and "MaxObjSize" in str(refused[0])
    assert list(statuses(t).values()) == [200, 413]  # the 90 KB Add fits; the 300 KB Results do not
    assert tree.nodes["./Small"] == "s" * 90_000
    assert "./Down" not in tree.nodes


def test_a_size_mismatch_gives_424_and_nothing_is_stored() -> None:
    client, _, tree = make_pair(client_nonce=b"fresh-nonce")
    client.start()
    # Hand-craft a server message whose chunked Add declares the wrong total size.
    server_msgs = []
    for i, (data, more) in enumerate([("abc", True), ("def", False)]):
        meta = Meta(size=99) if i == 0 else None
        server_msgs.append(
            Message(
                header=_server_header(str(i + 1)),
                commands=(Add("2", (Item(target=Target("./x"), meta=meta, data=data, more_data=more),)),),
                final=not more,
            )
        )
    client.receive(codec.encode(server_msgs[0]))
    assert client.reply() is not None
    client.receive(codec.encode(server_msgs[1]))
    out = client.reply()
    assert out is not None
    reply, _ = codec.decode(out.body)
    add_status = [c for c in reply.commands if isinstance(c, Status) and c.cmd == "Add"]
    assert [s.code for s in add_status] == [424]
    assert "./x" not in tree.nodes


def test_interrupted_large_object_is_answered_with_alert_1225() -> None:
    client, _, tree = make_pair(client_nonce=b"fresh-nonce")
    client.start()
    first = Message(
        _server_header("1"),
        (Add("2", (Item(target=Target("./x"), meta=Meta(size=6), data="abc", more_data=True),)),),
        final=False,
    )
    client.receive(codec.encode(first))
    client.reply()
    second = Message(_server_header("2"), (Add("2", (Item(target=Target("./y"), data="new"),)),))
    client.receive(codec.encode(second))
    out = client.reply()
    assert out is not None
    reply, _ = codec.decode(out.body)
    alerts = [c for c in reply.commands if isinstance(c, Alert)]
    assert [a.code for a in alerts] == [AlertCode.NO_END_OF_DATA]
    assert alerts[0].items[0].target == Target("./x")
    assert tree.nodes["./y"] == "new" and "./x" not in tree.nodes


def test_a_server_package_larger_than_max_msg_size_spans_messages() -> None:
    client, server, tree = make_pair(client_nonce=b"fresh-nonce", client_max_msg=4096)
    adds = [Add("0", (Item(target=Target(f"./n{i}"), data="v" * 50),)) for i in range(120)]
    t = run(client, server, once_started(*adds))
    assert all(len(b) <= 4096 for b in t.server_bodies)
    assert len(statuses(t)) == 120 and set(statuses(t).values()) == {200}
    assert all(tree.nodes[f"./n{i}"] == "v" * 50 for i in range(120))
    non_final = [codec.decode(b)[0] for b in t.server_bodies if not codec.decode(b)[0].final]
    assert non_final, "the server package should have needed several messages"
    # The client asked for the rest with Alert 1222 and did not close its package early.
    for body in t.client_bodies[1:]:
        msg, _ = codec.decode(body)
        if any(isinstance(c, Alert) and c.code == AlertCode.NEXT_MESSAGE for c in msg.commands):
            assert not msg.final


def test_a_client_package_larger_than_max_msg_size_spans_messages() -> None:
    client, server, tree = make_pair(client_nonce=b"fresh-nonce", server_max_msg=4096)
    for i in range(200):
        tree.nodes[f"./k{i}"] = "x" * 40
    gets = [Get("0", (Item(target=Target(f"./k{i}")),)) for i in range(200)]
    t = run(client, server, once_started(*gets))
    assert len(t.of("server", ResultsReceived)) == 200
    assert all(len(b) <= 4096 for b in t.client_bodies)
    next_msgs = [codec.decode(b)[0] for b in t.server_bodies]
    assert any(
        not m.final and any(isinstance(c, Alert) and c.code == 1222 for c in m.commands) for m in next_msgs
    )


# --- Atomic, Sequence, abort --------------------------------------------------------------


def test_atomic_commits_all_or_rolls_back_all() -> None:
    client, server, tree = make_pair(client_nonce=b"fresh-nonce")
    good = Atomic(
        "0",
        (
            Add("0", (Item(target=Target("./a"), data="1"),)),
            Add("0", (Item(target=Target("./b"), data="2"),)),
        ),
    )
    bad = Atomic(
        "0",
        (
            Add("0", (Item(target=Target("./c"), data="3"),)),
            Replace("0", (Item(target=Target("./missing"), data="4"),)),
            Add("0", (Item(target=Target("./d"), data="5"),)),
        ),
    )
    t = run(client, server, once_started(good, bad))
    assert tree.nodes["./a"] == "1" and tree.nodes["./b"] == "2"
    assert "./c" not in tree.nodes and "./d" not in tree.nodes
    assert list(statuses(t).values()) == [200, 507]
    pkg3, _ = codec.decode(t.client_bodies[1])
    codes = [(c.cmd, c.code) for c in pkg3.commands if isinstance(c, Status)][1:]
    assert codes == [
        ("Atomic", 200),
        ("Add", 200),
        ("Add", 200),
        ("Atomic", 507),
        ("Add", 216),
        ("Replace", 404),
        ("Add", 215),
    ]


def test_get_inside_atomic_fails_the_atomic_without_executing_anything() -> None:
    client, server, tree = make_pair(client_nonce=b"fresh-nonce")
    atomic = Atomic(
        "0", (Add("0", (Item(target=Target("./a"), data="1"),)), Get("0", (Item(target=Target(".")),)))
    )
    t = run(client, server, once_started(atomic))
    assert "./a" not in tree.nodes
    pkg3, _ = codec.decode(t.client_bodies[1])
    codes = [(c.cmd, c.code) for c in pkg3.commands if isinstance(c, Status)][1:]
    assert codes == [("Atomic", 507), ("Add", 215), ("Get", 500)]


def test_sequence_keeps_order_and_skips_after_the_user_says_no() -> None:
    tree = DictTree()
    tree.ui_answer = StatusCode.NOT_MODIFIED
    client, server, tree = make_pair(client_nonce=b"fresh-nonce", tree=tree)
    seq = Sequence(
        "0",
        (
            Add("0", (Item(target=Target("./a"), data="1"),)),
            Replace("0", (Item(target=Target("./a"), data="2"),)),
            Alert("0", data="1101", items=(Item(data=""), Item(data="Install now?"))),
            Add("0", (Item(target=Target("./z"), data="9"),)),
        ),
    )
    t = run(client, server, once_started(seq))
    assert tree.nodes["./a"] == "2" and "./z" not in tree.nodes
    pkg3, _ = codec.decode(t.client_bodies[1])
    codes = [(c.cmd, c.code) for c in pkg3.commands if isinstance(c, Status)][1:]
    assert codes == [("Sequence", 200), ("Add", 200), ("Replace", 200), ("Alert", 304), ("Add", 215)]


def test_server_abort_ends_the_session_and_the_client_does_not_reply() -> None:
    client, server, _ = make_pair(client_nonce=b"fresh-nonce")
    out = client.start()
    server.receive(out.body)
    reply = server.abort("maintenance")
    assert server.state is State.ABORTED
    events = client.receive(reply.body)
    assert SessionAborted(by_peer=True, reason="the server sent Alert 1223") in events
    assert client.reply() is None and client.state is State.ABORTED
    msg, _ = codec.decode(reply.body)
    assert msg.final and any(isinstance(c, Alert) and c.code == 1223 for c in msg.commands)


def test_client_abort_gets_status_and_final_from_the_server() -> None:
    client, server, _ = make_pair(client_nonce=b"fresh-nonce")
    out = client.start()
    server.receive(out.body)
    server.queue(Get("0", (Item(target=Target(".")),)))
    reply = server.reply()
    client.receive(reply.body)
    abort = client.abort("user pressed cancel")
    events = server.receive(abort.body)
    assert any(isinstance(e, SessionAborted) and e.by_peer for e in events)
    last = server.reply()
    msg, _ = codec.decode(last.body)
    assert msg.final and all(isinstance(c, Status) for c in msg.commands)
    assert server.state is State.ENDED


# --- robustness ---------------------------------------------------------------------------


def test_a_repeated_client_message_gets_the_same_reply_and_nothing_runs_twice() -> None:
    client, server, _ = make_pair(client_nonce=b"fresh-nonce")
    out = client.start()
    first_events = server.receive(out.body)
    server.queue(Exec("0", (Item(target=Target("./x")),), correlator="job-1"))
    reply1 = server.reply()
    assert server.receive(out.body) == []  # the reply was lost; the client sends again
    reply2 = server.reply()
    assert reply1.body == reply2.body
    assert any(isinstance(e, SessionStarted) for e in first_events)


def test_a_reply_with_another_session_id_is_refused() -> None:
    client, _, _ = make_pair(client_nonce=b"fresh-nonce")
    client.start()
    bogus = Message(_server_header("1", session_id="FFFF"), ())
    with pytest.raises(RemoteProtocolError, match="SessionID"):
        client.receive(codec.encode(bogus))
    assert client.state is State.FAILED


def test_state_table_refuses_moves_out_of_turn() -> None:
    client, server, _ = make_pair()
    with pytest.raises(LocalProtocolError, match="cannot"):
        client.receive(b"<SyncML/>")
    with pytest.raises(LocalProtocolError, match="cannot reply"):
        server.reply()
    with pytest.raises(LocalProtocolError, match="does not send Status"):
        server.queue(Status("1", "1", "1", "Get", "200"))
    with pytest.raises(LocalProtocolError, match="1224 and 1226"):
        client.queue_alert(Alert("0", data="1201"))


def test_resp_uri_is_used_as_the_next_url_and_target() -> None:
    client, server, _ = make_pair(client_nonce=b"fresh-nonce")
    out = client.start()
    assert out.url == "http://127.0.0.1:8080/dm"
    server.receive(out.body)
    server.queue(Get("0", (Item(target=Target(".")),)))
    client.receive(server.reply().body)
    nxt = client.reply()
    assert nxt is not None and nxt.url == "http://127.0.0.1:8080/dm?s=tok1"
    msg, _ = codec.decode(nxt.body)
    assert msg.header.target.loc_uri == "http://127.0.0.1:8080/dm?s=tok1"


def _server_header(msg_id: str, session_id: str = "1A2B") -> SyncHdr:
    return SyncHdr(session_id, msg_id, Target("IMEI:493005100592800"), Source("http://127.0.0.1:8080/dm"))


def test_results_status_from_a_peer_is_tolerated() -> None:
    # Pitfall 14: some servers send Status 200 for Results; the client ignores it.
    client, _, _ = make_pair(client_nonce=b"fresh-nonce")
    client.start()
    msg = Message(
        _server_header("1"),
        (Status("1", "1", "0", "SyncHdr", "212"), Status("2", "1", "9", "Results", "200")),
    )
    client.receive(codec.encode(msg))  # type: ignore[arg-type]
    assert client.reply() is None and client.state is State.ENDED


def test_results_are_not_confused_across_messages() -> None:
    # Regression guard: Results carry MsgRef; two Gets with the same CmdID in two messages.
    client, server, tree = make_pair(client_nonce=b"fresh-nonce")
    tree.nodes["./a"] = "A"
    tree.nodes["./b"] = "B"
    queue = [Get("0", (Item(target=Target("./a")),)), Get("0", (Item(target=Target("./b")),))]

    def drive(events: list[object], srv: ServerSession) -> None:
        if srv.authenticated and srv.pending == 0 and queue:
            srv.queue(queue.pop(0), tag=f"get{len(queue)}")

    t = run(client, server, drive)  # type: ignore[arg-type]
    got = {e.tag: e.results.items[0].data for e in t.of("server", ResultsReceived)}
    assert got == {"get1": "A", "get0": "B"}
    assert all(isinstance(e.results, Results) for e in t.of("server", ResultsReceived))
