"""A server session kept as bytes between messages, as a stateless server keeps it in its store.

Each test runs the same session twice: once with one ``ServerSession`` object, once with the
session saved after every reply and restored into a fresh object before the next message
(what two workers serving alternate messages do). The bytes on the wire must be identical.
"""

from __future__ import annotations

import base64

import pytest

from omadm.protocol import auth
from omadm.protocol.codec import Encoding
from omadm.protocol.codes import AuthType
from omadm.protocol.errors import LocalProtocolError
from omadm.protocol.messages import Add, Exec, Get, Item, Target
from omadm.protocol.session import (
    ClientConfig,
    ClientSession,
    Credentials,
    Event,
    ResultsReceived,
    ServerConfig,
    ServerSession,
    StatusReceived,
)

from .session_helpers import DictTree, generic_alert

CLIENT = Credentials(AuthType.MD5, "dev-user", "dev-secret")
SERVER = Credentials(AuthType.MD5, "omadm.example", "srv-secret")
_issued = {"nonces": 0}


def counting_nonce() -> bytes:
    """Module level, so a snapshot can refer to it (lambdas do not pickle)."""
    _issued["nonces"] += 1
    return _issued["nonces"].to_bytes(16, "big")


def make(encoding: Encoding) -> tuple[ClientSession, ServerSession, DictTree]:
    _issued["nonces"] = 0
    tree = DictTree()
    tree.nodes["./Big"] = None
    tree.nodes["./Big/Up"] = bytes(range(256)) * 200
    client = ClientSession(
        ClientConfig(
            device_id="IMEI:1",
            server_uri="http://127.0.0.1/dm",
            credentials=CLIENT,
            client_nonce=b"stale",
            server_credentials=SERVER,
            server_nonce=b"device-issued",
            require_server_auth=True,
            session_id="7",
            devinfo=(("./DevInfo/DevId", "IMEI:1"),),
            encoding=encoding,
            max_msg_size=4096,
            nonce_factory=counting_nonce,
        ),
        tree,
    )
    client.queue_alert(generic_alert("job-9", 1405))
    server = ServerSession(
        ServerConfig(
            server_uri="http://127.0.0.1/dm",
            resp_uri="http://127.0.0.1/dm?s=t",
            client_credentials=CLIENT,
            client_nonce=b"fresh",
            server_credentials=SERVER,
            server_nonce=b"stale-server-nonce",
            max_msg_size=4096,
            nonce_factory=counting_nonce,
        )
    )
    return client, server, tree


def drive(encoding: Encoding, *, snapshots: bool) -> tuple[list[bytes], list[Event], DictTree]:
    client, server, tree = make(encoding)
    steps = iter(
        [
            [
                Add("0", (Item(target=Target("./Big/Down"), data="x" * 20000),)),
                Get("0", (Item(target=Target("./Big/Up")),)),
            ],
            [Exec("0", (Item(target=Target("./Big/Up")),), correlator="c1")],
        ]
    )
    bodies: list[bytes] = []
    events: list[Event] = []
    out = client.start()
    for _ in range(200):
        bodies.append(out.body)
        if snapshots:
            server = ServerSession.restore(server.snapshot())
        events += server.receive(
            out.body, content_type=out.content_type, hmac_header=out.headers.get(auth.HMAC_HEADER)
        )
        if server.authenticated and server.pending == 0:
            for cmd in next(steps, []):
                server.queue(cmd)
        reply = server.reply()
        events += server.events()
        bodies.append(reply.body)
        client.receive(reply.body, content_type=reply.content_type)
        out = client.reply()
        if out is None:
            return bodies, events, tree
    raise AssertionError("the session did not end")


@pytest.mark.parametrize("encoding", [Encoding.XML, Encoding.WBXML])
def test_a_session_saved_and_restored_after_every_message_sends_the_same_bytes(encoding: Encoding) -> None:
    plain_bodies, plain_events, _ = drive(encoding, snapshots=False)
    bodies, events, tree = drive(encoding, snapshots=True)
    assert bodies == plain_bodies
    assert [type(e).__name__ for e in events] == [type(e).__name__ for e in plain_events]
    assert tree.nodes["./Big/Down"] == "x" * 20000
    assert len(bodies) > 20  # large objects really were chunked across the restores
    (results,) = [e for e in events if isinstance(e, ResultsReceived)]
    data = results.results.items[0].data
    assert (base64.b64decode(data) if isinstance(data, str) else data) == bytes(range(256)) * 200
    assert [e.status.code for e in events if isinstance(e, StatusReceived) and e.command.name == "Exec"]


def test_a_snapshot_refuses_uncollected_events_and_foreign_bytes() -> None:
    client, server, _ = make(Encoding.XML)
    out = client.start()
    server.receive(out.body, content_type=out.content_type)
    server.reply()  # may raise SessionEnded-type events that were not collected
    server._events.append(ResultsReceived.__new__(ResultsReceived))  # an event nobody took
    with pytest.raises(LocalProtocolError, match="collect the session's events"):
        server.snapshot()
    with pytest.raises(LocalProtocolError, match="not a ServerSession snapshot"):
        ServerSession.restore(b"\x80\x04K\x01.")
    with pytest.raises(LocalProtocolError, match="unreadable"):
        ServerSession.restore(b"omadm-server-session:2\ngarbage")
    with pytest.raises(LocalProtocolError, match="not a ServerSession snapshot of this omadm version"):
        ServerSession.restore(b"omadm-server-session:1\n" + b"\x80\x05K\x01.")  # an earlier shape
