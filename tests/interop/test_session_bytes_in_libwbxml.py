"""Every byte our sessions exchange in WBXML is read the same way by libwbxml."""

from __future__ import annotations

import dataclasses
import re

import pytest

from omadm.protocol import codec, xml_codec
from omadm.protocol.codec import Encoding
from omadm.protocol.codes import AuthType
from omadm.protocol.messages import (
    Add,
    Alert,
    Atomic,
    Command,
    Exec,
    Get,
    Item,
    Message,
    Meta,
    Replace,
    Sequence,
    Target,
)
from omadm.protocol.session import Credentials, ResultsReceived, ServerSession
from tests.libwbxml import needs_libwbxml, wbxml2xml
from tests.normalize import normalize
from tests.protocol.session_helpers import Transcript, generic_alert, once_started, run
from tests.protocol.test_session import CLIENT, SERVER, make_pair

pytestmark = [pytest.mark.libwbxml, needs_libwbxml]


def _has_binary(message: Message) -> bool:
    def walk(cmds: tuple[Command, ...]) -> bool:
        for cmd in cmds:
            if isinstance(cmd, Atomic | Sequence) and walk(cmd.commands):
                return True
            if any(isinstance(i.data, bytes) for i in getattr(cmd, "items", ())):
                return True
        return False

    return walk(message.commands)


def _check_every_body(t: Transcript) -> None:
    for body in t.all_bodies():
        ours, encoding = codec.decode(body)
        assert encoding is Encoding.WBXML
        theirs = wbxml2xml(body)  # libwbxml decodes every message we sent
        if _has_binary(ours):
            # libwbxml prints OPAQUE binary raw (NUL bytes and all), which is not XML:
            # compare everything but the binary Data.
            theirs = re.sub(
                rb"<Data>[^<]*?[\x00-\x08\x0b\x0c\x0e-\x1f][^<]*?</Data>", b"<Data/>", theirs, flags=re.S
            )
            ours = _strip_binary(ours)
        assert normalize(xml_codec.parse(theirs)) == normalize(ours)


def _strip_binary(message: Message) -> Message:
    def strip(cmd: Command) -> Command:
        if isinstance(cmd, Atomic | Sequence):
            return dataclasses.replace(cmd, commands=tuple(strip(c) for c in cmd.commands))
        items = getattr(cmd, "items", ())
        if not any(isinstance(i.data, bytes) for i in items):
            return cmd
        new = tuple(dataclasses.replace(i, data="") if isinstance(i.data, bytes) else i for i in items)
        return dataclasses.replace(cmd, items=new)  # type: ignore[type-var]

    return dataclasses.replace(message, commands=tuple(strip(c) for c in message.commands))


def test_md5_both_ways_with_atomic_sequence_and_generic_alert() -> None:
    client, server, tree = make_pair(
        client_nonce=b"stale", encoding=Encoding.WBXML, require_server_auth=True, server_creds=SERVER
    )
    client.queue_alert(generic_alert("job-9"))
    script = once_started(
        Atomic(
            "0",
            (
                Add("0", (Item(target=Target("./a"), meta=Meta(format="node")),)),
                Add(
                    "0", (Item(target=Target("./a/b"), meta=Meta(format="int", type="text/plain"), data="7"),)
                ),
            ),
        ),
        Sequence(
            "0",
            (
                Replace("0", (Item(target=Target("./a/b"), data="8"),)),
                Get("0", (Item(target=Target("./a")),)),
                Exec("0", (Item(target=Target("./a/b")),), correlator="c-1"),
            ),
        ),
        Alert("0", data="1100", items=(Item(data="MINDT=5"), Item(data="Updating"))),
    )
    t = run(client, server, script)
    assert tree.nodes["./a/b"] == "8"
    _check_every_body(t)


def test_hmac_session() -> None:
    hmac_client = Credentials(AuthType.HMAC, CLIENT.username, CLIENT.password)
    client, server, _ = make_pair(client_creds=hmac_client, server_knows=hmac_client, encoding=Encoding.WBXML)
    t = run(client, server, once_started(Get("0", (Item(target=Target(".")),))))
    _check_every_body(t)


def test_large_objects_both_ways_and_binary_opaque_data() -> None:
    client, server, tree = make_pair(
        client_nonce=b"fresh-nonce", encoding=Encoding.WBXML, client_max_msg=4096, server_max_msg=4096
    )
    tree.nodes["./Bin"] = bytes(range(256)) * 60
    steps = iter(
        [
            [Add("0", (Item(target=Target("./Txt"), data="é<&>" * 5000),))],
            [Get("0", (Item(target=Target("./Bin")),))],
        ]
    )

    def drive(events: list[object], srv: ServerSession) -> None:
        if srv.authenticated and srv.pending == 0:
            for cmd in next(steps, []):
                srv.queue(cmd)

    t = run(client, server, drive)  # type: ignore[arg-type]
    assert tree.nodes["./Txt"] == "é<&>" * 5000
    (results,) = t.of("server", ResultsReceived)
    assert results.results.items[0].data == bytes(range(256)) * 60
    _check_every_body(t)
