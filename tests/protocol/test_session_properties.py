"""Property tests: whatever the server queues and whatever the limits, a session completes.

Each queued command gets exactly one final Status, a Get that succeeds gets its Results,
no message exceeds the peer's MaxMsgSize, and the device's tree ends up exactly as if the
commands had been applied one by one without any protocol in between.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omadm.protocol.codec import Encoding
from omadm.protocol.codes import AuthType
from omadm.protocol.messages import Add, Command, Delete, Get, Item, ItemCommand, Meta, Replace, Target
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
from omadm.protocol.testing import MemoryTree, run_in_memory

CREDS = Credentials(AuthType.MD5, "u", "p")
NAMES = st.sampled_from(["a", "b", "c", "a/x", "b/y", "a/x/z"])
VALUES = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cn")), max_size=30),
    st.integers(min_value=0, max_value=6000).map(lambda n: "v" * n),
    st.binary(max_size=3000),
)


@st.composite
def commands(draw: st.DrawFn) -> Command:
    uri = "./" + draw(NAMES)
    kind = draw(st.sampled_from(["add-node", "add", "replace", "delete", "get"]))
    if kind == "add-node":
        return Add("0", (Item(target=Target(uri), meta=Meta(format="node")),))
    if kind in ("add", "replace"):
        value = draw(VALUES)
        meta = Meta(format="bin") if isinstance(value, bytes) else None
        cls = Add if kind == "add" else Replace
        return cls("0", (Item(target=Target(uri), meta=meta, data=value),))
    if kind == "delete":
        return Delete("0", (Item(target=Target(uri)),))
    return Get("0", (Item(target=Target(uri)),))


def _normal(value: str | bytes | None) -> str | bytes | None:
    # Over XML binary arrives as b64 and MemoryTree stores the decoded bytes: compare as bytes.
    return value.encode("utf-8") if isinstance(value, str) else value


@given(
    script=st.lists(st.lists(commands(), min_size=1, max_size=6), min_size=1, max_size=4),
    max_msg=st.sampled_from([2048, 4096, 16384, None]),
    encoding=st.sampled_from([Encoding.XML, Encoding.WBXML]),
)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_script_completes_with_one_status_per_command(
    script: list[list[Command]], max_msg: int | None, encoding: Encoding
) -> None:
    tree = MemoryTree()
    client = ClientSession(
        ClientConfig(
            device_id="dev",
            server_uri="http://s/dm",
            credentials=CREDS,
            client_nonce=b"n",
            encoding=encoding,
            max_msg_size=max_msg,
            devinfo=(("./DevInfo/DevId", "dev"),),
        ),
        tree,
    )
    server = ServerSession(
        ServerConfig(
            server_uri="http://s/dm", client_credentials=CREDS, client_nonce=b"n", max_msg_size=max_msg
        )
    )
    batches = iter(script)
    queued: dict[str, Command] = {}

    def drive(events: list[Event], srv: ServerSession) -> None:
        if srv.authenticated and srv.pending == 0:
            for command in next(batches, []):
                queued[srv.queue(command)] = command

    t = run_in_memory(client, server, drive)

    # The reference: the same commands applied directly, one by one.
    reference = MemoryTree()
    expected: dict[str, int] = {}
    for tag, command in queued.items():
        assert isinstance(command, ItemCommand)
        expected[tag] = reference.execute(command)[0].code

    got = {e.tag: e.status.code for e in t.of("server", StatusReceived)}
    assert got == expected
    assert sorted(e.tag for e in t.of("server", StatusReceived)) == sorted(queued)
    ok_gets = {tag for tag, cmd in queued.items() if isinstance(cmd, Get) and expected[tag] == 200}
    assert {e.tag for e in t.of("server", ResultsReceived)} == ok_gets
    assert {k: _normal(v) for k, v in tree.nodes.items()} == {
        k: _normal(v) for k, v in reference.nodes.items()
    }
    if max_msg:
        assert all(len(body) <= max_msg for body in t.all_bodies())
    assert client.finished and server.finished
