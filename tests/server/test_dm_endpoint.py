"""The DM endpoint in process (ASGI), on SQLite and PostgreSQL: admission, authentication,
bad input, repeated and restarted messages. Real ``ClientSession`` messages, no sockets.

Every refusal must say why and change nothing: the tests count the rows before and after.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from omadm.protocol import codec
from omadm.protocol.codec import Encoding
from omadm.protocol.messages import Message
from omadm.protocol.session import (
    AuthenticationFailed,
    ServerSession,
    SessionAborted,
)
from omadm.protocol.testing import MemoryTree
from omadm.server.config import EnrolConfig
from omadm.server.registry import add_device, create_job, find_device
from omadm.server.store.models import (
    DeviceEvent,
    DeviceState,
    DmSession,
    InventoryEntry,
    Job,
    JobKind,
    JobState,
)

from .dmharness import BASE, DEVICE, Harness, make_harness

pytestmark = pytest.mark.anyio


@pytest.fixture
async def harness(db_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async for h in make_harness(db_url, tmp_path):
        async with h.sessions() as db, db.begin():
            await add_device(db, DEVICE, username="dev", password="secret")
        yield h


def dm_status_of_header(response: httpx.Response) -> int:
    message: Message = codec.decode(response.content, response.headers["content-type"])[0]
    (status,) = [c for c in message.commands if getattr(c, "cmd_ref", None) == "0"]
    return int(status.data)  # type: ignore[attr-defined]


async def test_a_device_authenticates_with_md5_after_a_challenge_and_then_without(harness: Harness) -> None:
    first = await harness.run(harness.client())
    assert [r.status_code for r in first] == [200] * len(first)
    assert dm_status_of_header(first[0]) == 401  # no nonce yet: challenged with one
    device = await harness.device()
    assert device.last_contact is not None and device.devinfo["./DevInfo/Man"] == "Acme"
    assert device.devdetail["./DevDetail/FwV"] == ""  # asked once; this client has no DevDetail
    assert device.client_nonce == harness.nonce != b""
    second = await harness.run(harness.client(session_id="2"))
    assert dm_status_of_header(second[0]) == 212  # the rotated nonce was kept on both sides


@pytest.mark.parametrize("encoding", [Encoding.XML, Encoding.WBXML])
async def test_the_reply_is_in_the_client_encoding_and_names_its_resp_uri(
    harness: Harness, encoding: Encoding
) -> None:
    responses = await harness.run(harness.client(encoding=encoding))
    for response in responses:
        assert response.headers["content-type"].startswith(
            "application/vnd.syncml.dm+wbxml"
            if encoding is Encoding.WBXML
            else "application/vnd.syncml.dm+xml"
        )
        message = codec.decode(response.content, response.headers["content-type"])[0]
        assert message.header.resp_uri is not None and message.header.resp_uri.startswith(f"{BASE}/dm?s=")


async def test_a_wrong_password_is_refused_logged_and_sends_no_job(harness: Harness) -> None:
    async with harness.sessions() as db, db.begin():
        device = await find_device(db, DEVICE)
        assert device is not None
        await create_job(db, device, JobKind.REFRESH_INVENTORY, {})
    responses = await harness.run(harness.client("wrong"))
    assert [dm_status_of_header(r) for r in responses if r.status_code == 200][-1] == 401
    assert any(isinstance(e, AuthenticationFailed) and e.final for e in harness.events) or any(
        isinstance(e, SessionAborted) for e in harness.events
    )
    device = await harness.device()
    assert device.auth_failures >= 1 and device.last_contact is None
    async with harness.sessions() as db:
        job = (await db.execute(select(Job))).scalar_one()
        kinds = [e.kind for e in (await db.execute(select(DeviceEvent))).scalars()]
    assert job.state == JobState.QUEUED.value
    assert "auth-failed" in kinds


async def test_a_replayed_credential_is_challenged_not_accepted(harness: Harness) -> None:
    await harness.run(harness.client())
    used = harness.nonce
    await harness.run(harness.client(session_id="2"))  # rotates the nonce again
    assert harness.nonce != used
    # A captured Pkg#1 built with the old nonce, replayed: the server challenges it.
    replay = harness.client(session_id="3", nonce=used, max_auth_attempts=1)
    responses = await harness.run(replay)
    assert dm_status_of_header(responses[0]) == 401


async def test_malformed_and_oversized_bodies_get_http_errors_and_change_nothing(harness: Harness) -> None:
    before = (await harness.count(DmSession), await harness.count(DeviceEvent))
    bad = await harness.post(f"{BASE}/dm", b"<SyncML><SyncHdr>", "application/vnd.syncml.dm+xml")
    assert bad.status_code == 400 and "not a DM message" in bad.text
    binary = await harness.post(f"{BASE}/dm", b"\x03\x01\x6a\x00\xff\xff", "application/vnd.syncml.dm+wbxml")
    assert binary.status_code == 400
    big = await harness.post(
        f"{BASE}/dm", b"<" * (harness.config.max_body + 1), "application/vnd.syncml.dm+xml"
    )
    assert big.status_code == 413 and str(harness.config.max_body) in big.text
    assert (await harness.count(DmSession), await harness.count(DeviceEvent)) == before


async def test_a_message_from_another_session_is_refused_without_side_effects(harness: Harness) -> None:
    await harness.run(harness.client(session_id="7"))  # learn the nonce: the next session is stored at once
    client = harness.client()
    out = client.start()
    first = await harness.post(f"{BASE}/dm", out.body, out.content_type)
    resp_uri = codec.decode(first.content, first.headers["content-type"])[0].header.resp_uri
    assert resp_uri
    other = harness.client(session_id="99")
    stray = other.start()
    # MsgID 1 on an existing token starts a new session (a client restarting), but a later
    # MsgID with a foreign SessionID is refused.
    msg = codec.decode(stray.body, stray.content_type)[0]
    forged = codec.encode(replace(msg, header=replace(msg.header, msg_id="2")), Encoding.XML)
    before = await harness.count(DeviceEvent)
    refused = await harness.post(resp_uri, forged, "application/vnd.syncml.dm+xml")
    assert refused.status_code == 400 and "SessionID" in refused.text
    assert await harness.count(DeviceEvent) == before


async def test_a_repeated_message_gets_the_same_reply_and_sends_nothing_twice(harness: Harness) -> None:
    await harness.run(harness.client())  # learn the nonce
    async with harness.sessions() as db, db.begin():
        device = await find_device(db, DEVICE)
        assert device is not None
        await create_job(db, device, JobKind.REFRESH_INVENTORY, {})
    client = harness.client(session_id="5")
    out = client.start()
    first = await harness.post(f"{BASE}/dm", out.body, out.content_type)
    resp_uri = codec.decode(first.content, first.headers["content-type"])[0].header.resp_uri
    client.receive(first.content, content_type=first.headers["content-type"])
    pkg3 = client.reply()
    assert pkg3 is not None and resp_uri
    one = await harness.post(resp_uri, pkg3.body, pkg3.content_type)
    again = await harness.post(resp_uri, pkg3.body, pkg3.content_type)  # the reply was "lost"
    assert one.status_code == again.status_code == 200
    assert one.content == again.content
    async with harness.sessions() as db:
        job = (await db.execute(select(Job))).scalar_one()
    assert job.attempts == 1


async def test_msg_id_1_with_an_old_token_starts_a_new_session(harness: Harness) -> None:
    await harness.run(harness.client())
    async with harness.sessions() as db:
        token = (await db.execute(select(DmSession.token))).scalars().first()
    client = harness.client(session_id="1")  # a device that restarted and reuses its SessionID
    out = client.start()
    response = await harness.post(f"{BASE}/dm?s={token}", out.body, out.content_type)
    assert response.status_code == 200
    new_token = codec.decode(response.content, response.headers["content-type"])[0].header.resp_uri
    assert new_token is not None and token not in new_token


@pytest.mark.parametrize("policy", ["reject", "pending", "accept"])
async def test_unknown_devices_follow_the_policy(db_url: str, tmp_path: Path, policy: str) -> None:
    enrol = EnrolConfig("fleet", "fleet-secret")
    async for h in make_harness(db_url, tmp_path, unknown_devices=policy, enrol=enrol):
        responses = await h.run(h.client("fleet-secret", username="fleet", device_id="IMEI:000000000000001"))
        async with h.sessions() as db:
            device = await find_device(db, "IMEI:000000000000001")
        if policy == "reject":
            assert responses[0].status_code == 403 and "unknown device" in responses[0].text
            assert device is None
        elif policy == "pending":
            assert responses[0].status_code == 403 and "pending" in responses[0].text
            assert device is not None and device.state == DeviceState.PENDING.value
            again = await h.run(h.client("fleet-secret", username="fleet", device_id="IMEI:000000000000001"))
            assert again[0].status_code == 403  # still pending until an operator accepts it
        else:
            assert all(r.status_code == 200 for r in responses)
            assert device is not None and device.state == DeviceState.ACCEPTED.value
            assert device.last_contact is not None


async def test_a_rejected_device_is_refused(harness: Harness) -> None:
    async with harness.sessions() as db, db.begin():
        device = await find_device(db, DEVICE)
        assert device is not None
        device.state = DeviceState.REJECTED.value
    responses = await harness.run(harness.client())
    assert responses[0].status_code == 403 and "rejected" in responses[0].text


@pytest.mark.parametrize(
    "content_type",
    ["application/vnd.syncml+xml", "application/vnd.syncml.dm+xml; charset=UTF-8", "text/plain", ""],
)
async def test_the_ds_content_types_and_a_wrong_or_missing_one_are_sniffed(
    harness: Harness, content_type: str
) -> None:
    client = harness.client()
    out = client.start()
    response = await harness.http.post(f"{BASE}/dm", content=out.body, headers={"content-type": content_type})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/vnd.syncml.dm+xml")


async def test_a_wbxml_body_under_the_ds_type_is_answered_in_wbxml(harness: Harness) -> None:
    out = harness.client(encoding=Encoding.WBXML).start()
    response = await harness.http.post(
        f"{BASE}/dm", content=out.body, headers={"content-type": "application/vnd.syncml+wbxml"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/vnd.syncml.dm+wbxml")


async def test_a_chunked_request_body_is_read_whole(harness: Harness) -> None:
    out = harness.client().start()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(out.body), 100):
            yield out.body[i : i + 100]

    response = await harness.http.post(
        f"{BASE}/dm", content=chunks(), headers={"content-type": out.content_type}
    )
    assert response.status_code == 200
    assert dm_status_of_header(response) == 401  # read and understood: the usual first challenge


async def _paths(h: Harness, caplog: pytest.LogCaptureFixture, session_id: str) -> list[str]:
    caplog.clear()
    with caplog.at_level("DEBUG", logger="omadm.server.dm"):
        responses = await h.run(h.client(session_id=session_id))
    assert [r.status_code for r in responses] == [200] * len(responses)
    return [
        r.getMessage().rsplit(" path=", 1)[1].split()[0] for r in caplog.records if " path=" in r.getMessage()
    ]


async def test_rows_kept_from_the_last_message_yield_to_a_change_made_elsewhere(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The fast path decides a device's next message on the rows it last wrote (RowCache);
    # a change made meanwhile by someone else (an operator, another worker) moves the row
    # version on, so that decision is not written and the message is decided again.
    async for h in make_harness(db_url, tmp_path, group_commit=True):
        async with h.sessions() as db, db.begin():
            await add_device(db, DEVICE, username="dev", password="secret")
        await _paths(h, caplog, "1")
        assert set(await _paths(h, caplog, "2")) == {"fast"}
        assert set(await _paths(h, caplog, "3")) == {"fast"}  # decided on kept rows
        async with h.sessions() as db, db.begin():  # an operator rejects it, in another process
            device = await find_device(db, DEVICE)
            assert device is not None
            device.state = DeviceState.REJECTED.value
        out = h.client(session_id="4").start()
        response = await h.post(f"{BASE}/dm", out.body, out.content_type)
        assert response.status_code == 403 and "rejected" in response.text
        async with h.sessions() as db:
            device = await find_device(db, DEVICE)
            assert device is not None and device.state == DeviceState.REJECTED.value
            sessions = (await db.execute(select(func.count()).select_from(DmSession))).scalar_one()
            assert sessions == 3  # the refused message started none


@pytest.mark.parametrize("group_commit", [True, False])
async def test_steady_state_sessions_take_the_fast_path_and_end_the_same(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, group_commit: bool
) -> None:
    async for h in make_harness(db_url, tmp_path, group_commit=group_commit):
        async with h.sessions() as db, db.begin():
            await add_device(db, DEVICE, username="dev", password="secret")
        await _paths(h, caplog, "1")  # first contact: challenged, DevDetail asked (general path)
        paths = await _paths(h, caplog, "2")
        assert len(paths) >= 2
        assert set(paths) == ({"fast"} if group_commit else {"general"})
        # A queued job needs the general path: it is sent, and the session still ends well.
        async with h.sessions() as db, db.begin():
            device = await find_device(db, DEVICE)
            assert device is not None
            job = await create_job(db, device, JobKind.REFRESH_INVENTORY, {})
        paths = await _paths(h, caplog, "3")
        assert "general" in paths
        async with h.sessions() as db:
            sent = await db.get(Job, job.id)
            assert sent is not None and sent.state == JobState.SUCCEEDED.value
            kinds = [
                e.kind
                for e in (await db.execute(select(DeviceEvent).order_by(DeviceEvent.id))).scalars()
                if e.kind == "session"
            ]
            assert len(kinds) == 3  # one history row per authenticated session, on either path
            records = list((await db.execute(select(DmSession))).scalars())
            assert len(records) >= 3 and all(r.messages >= 1 for r in records)
            device = await find_device(db, DEVICE)
            assert device is not None and device.client_nonce == h.nonce  # nonces kept in step


async def test_a_new_devices_first_contact_and_first_inventory_take_the_group_commit_path(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    tree = MemoryTree()
    base = "./SCOMO/Inventory/Deployed/hello"
    for node in (
        "./SCOMO",
        "./SCOMO/Inventory",
        "./SCOMO/Inventory/Delivered",
        "./SCOMO/Inventory/Deployed",
        base,
    ):
        tree.nodes[node] = None
    tree.nodes.update(
        {
            f"{base}/ID": "com.example.hello",
            f"{base}/Name": "Hello",
            f"{base}/Version": "1.0.0",
            f"{base}/State": "20",
            f"{base}/Status": "0",
        }
    )
    caplog.set_level(logging.DEBUG, logger="omadm.server.dm")
    responses = await harness.run(harness.client(tree=tree))
    assert [r.status_code for r in responses] == [200] * len(responses)
    paths = [
        r.getMessage().rpartition("path=")[2].split()[0] for r in caplog.records if "path=" in r.getMessage()
    ]
    assert paths and set(paths) == {"fast"}, paths  # challenge, session and inventory: no ORM transaction
    assert any("challenged" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
    async with harness.sessions() as db:
        entries = (await db.execute(select(InventoryEntry))).scalars().all()
        kinds = [e.kind for e in (await db.execute(select(DeviceEvent))).scalars()]
    assert [(e.ident, e.version) for e in entries] == [("com.example.hello", "1.0.0")]
    assert "inventory" in kinds
    device = await harness.device()
    assert device.inventory_digest and device.inventory_updated is not None
    # The same inventory again: nothing written; a changed one goes through the general path.
    caplog.clear()
    tree.nodes[f"{base}/Version"] = "2.0.0"
    await harness.run(harness.client(tree=tree, session_id="2"))
    async with harness.sessions() as db:
        entries = (await db.execute(select(InventoryEntry))).scalars().all()
    assert [(e.ident, e.version) for e in entries] == [("com.example.hello", "2.0.0")]


async def test_a_session_s_next_message_is_decided_on_the_object_its_last_write_kept(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await harness.run(harness.client())  # first contact: the nonce is known from now on
    restored: list[bytes] = []
    restore = ServerSession.restore

    def counting(cls: type[ServerSession], data: bytes) -> ServerSession:
        restored.append(data)
        return restore(data)

    monkeypatch.setattr(ServerSession, "restore", classmethod(counting))
    responses = await harness.run(harness.client(session_id="2"))
    assert len(responses) >= 2 and [r.status_code for r in responses] == [200] * len(responses)
    assert restored == []  # no snapshot unsealed or unpickled: the kept object went on
    # A message decided on the kept object whose write is refused (an operator queued a
    # job meanwhile: the device row moved on) is served again from the stored snapshot, and
    # the object the refused attempt changed is never used again.
    client = harness.client(session_id="3")
    out = client.start()
    first = await harness.post(f"{BASE}/dm", out.body, out.content_type, out.headers)
    client.receive(first.content, content_type=first.headers["content-type"])
    async with harness.sessions() as db, db.begin():
        device = await find_device(db, DEVICE)
        assert device is not None
        job = await create_job(db, device, JobKind.REFRESH_INVENTORY, {})
    following = client.reply()
    assert following is not None
    second = await harness.post(following.url or f"{BASE}/dm", following.body, following.content_type)
    assert second.status_code == 200 and len(restored) == 1
    async with harness.sessions() as db:
        assert (await db.get(Job, job.id)).state != JobState.QUEUED.value  # type: ignore[union-attr]
