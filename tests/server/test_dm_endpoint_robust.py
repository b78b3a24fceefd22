"""The DM endpoint against hostile and odd clients (issue 15): never a 5xx, never unbounded writes.

* a MaxMsgSize too small for the reply: a minimal DM abort when one fits, HTTP 400 when none can;
* header fields larger than the store's columns: HTTP 400 with a one-line reason;
* failed authentication: no session row, no device update beyond a bounded counter;
* clients that ignore RespURI: their next message continues the session (device + SessionID);
* devices managed without DM credentials: last contact and history like any device.

Run on SQLite and PostgreSQL (``db_url``): the bounds are the columns' lengths, which only
PostgreSQL enforces.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from omadm.protocol import codec
from omadm.protocol.codec import Encoding
from omadm.protocol.messages import Alert, Message, Meta
from omadm.server.registry import add_device, create_job, find_device
from omadm.server.store.models import Device, DeviceEvent, DmSession, Job, JobKind, JobState

from .dmharness import BASE, DEVICE, Harness, make_harness

pytestmark = pytest.mark.anyio

XML = "application/vnd.syncml.dm+xml"


@pytest.fixture
async def harness(db_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async for h in make_harness(db_url, tmp_path):
        async with h.sessions() as db, db.begin():
            await add_device(db, DEVICE, username="dev", password="secret")
        yield h


def pkg1(
    *,
    session_id: str = "1",
    msg_id: str = "1",
    source: str = DEVICE,
    target: str = f"{BASE}/dm",
    loc_name: str | None = "dev",
    max_msg_size: str | None = None,
    cred: str | None = None,
) -> bytes:
    """A client-initiated Pkg#1 written by hand, so that any header field can be anything."""
    meta = ""
    if max_msg_size is not None:
        meta = f'<Meta><MaxMsgSize xmlns="syncml:metinf">{escape(max_msg_size)}</MaxMsgSize></Meta>'
    cred_xml = ""
    if cred is not None:
        cred_xml = (
            '<Cred><Meta><Format xmlns="syncml:metinf">b64</Format><Type xmlns="syncml:metinf">'
            f"syncml:auth-md5</Type></Meta><Data>{escape(cred)}</Data></Cred>"
        )
    name = f"<LocName>{escape(loc_name)}</LocName>" if loc_name is not None else ""
    return (
        '<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto>'
        f"<SessionID>{escape(session_id)}</SessionID><MsgID>{escape(msg_id)}</MsgID>"
        f"<Target><LocURI>{escape(target)}</LocURI></Target>"
        f"<Source><LocURI>{escape(source)}</LocURI>{name}</Source>"
        f"{cred_xml}{meta}</SyncHdr>"
        "<SyncBody><Alert><CmdID>1</CmdID><Data>1201</Data></Alert>"
        f"<Replace><CmdID>2</CmdID><Item><Source><LocURI>./DevInfo/DevId</LocURI></Source>"
        f"<Data>{escape(source)}</Data></Item></Replace><Final/></SyncBody></SyncML>"
    ).encode()


def decoded(body: bytes, content_type: str = XML) -> Message:
    return codec.decode(body, content_type)[0]


async def rows(h: Harness) -> tuple[int, int, tuple[object, ...]]:
    """Session rows, history rows, and the device row's values (what a message may change)."""
    async with h.sessions() as db:
        device = (await db.execute(select(Device).where(Device.device_id == DEVICE))).scalar_one()
        values = tuple(getattr(device, c.name) for c in Device.__table__.columns)
    return await h.count(DmSession), await h.count(DeviceEvent), values


# -- 1. MaxMsgSize and header sizes ----------------------------------------------------------


@pytest.mark.parametrize("encoding", [Encoding.XML, Encoding.WBXML])
async def test_a_max_msg_size_that_fits_only_an_abort_gets_a_minimal_abort(
    harness: Harness, encoding: Encoding
) -> None:
    # Large enough for Status(SyncHdr) + Alert 1223, too small for the challenge's statuses.
    client = harness.client(encoding=encoding, max_msg_size=None)
    out = client.start()
    message = decoded(out.body, out.content_type)
    smallest = None
    for limit in range(150, 2000, 10):
        header = replace(message.header, meta=Meta(max_msg_size=limit))
        body = codec.encode(replace(message, header=header), encoding)
        response = await harness.post(f"{BASE}/dm", body, out.content_type)
        assert response.status_code < 500, (limit, response.text)
        if response.status_code != 200:
            assert response.status_code == 400 and "MaxMsgSize" in response.text
            continue
        assert len(response.content) <= limit
        reply = decoded(response.content, response.headers["content-type"])
        if smallest is None:
            smallest = limit  # the first reply that fits: the abort, and nothing else
            assert [type(c).__name__ for c in reply.commands] == ["Status", "Alert"]
            assert any(isinstance(c, Alert) and c.data == "1223" for c in reply.commands)
        if any(getattr(c, "cmd", "") == "Alert" for c in reply.commands):
            break  # from here on the normal challenge (with a Status for the Alert) fits
    assert smallest is not None and smallest < limit


@pytest.mark.parametrize("limit", ["10", "300"])
async def test_a_max_msg_size_too_small_for_any_reply_is_refused_with_400(
    harness: Harness, limit: str
) -> None:
    before = await rows(harness)
    response = await harness.post(f"{BASE}/dm", pkg1(max_msg_size=limit), XML)
    assert response.status_code == 400
    assert f"MaxMsgSize {limit}" in response.text and "\n" not in response.text.strip()
    assert await rows(harness) == before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("session_id", "1" * 17_000),
        ("msg_id", "9" * 100),
        ("source", "IMEI:" + "7" * 300),
        ("target", f"{BASE}/dm?" + "x" * 5000),
        ("loc_name", "n" * 1000),
        ("cred", "A" * 5000),
    ],
)
async def test_header_fields_beyond_their_bounds_get_400_with_a_reason(
    harness: Harness, field: str, value: str
) -> None:
    before = await rows(harness)
    response = await harness.post(f"{BASE}/dm", pkg1(**{field: value}), XML)
    assert response.status_code == 400, response.text
    assert len(response.text) < 200 and response.text.count("\n") == 1
    assert await rows(harness) == before


_odd_text = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=80),
    st.sampled_from(["", "0", "-1", "1e9", "ï»¿", "../../etc", "1" * 70, "x" * 300, "99999999999999999999"]),
)


def _or_valid(valid: str | None) -> st.SearchStrategy[str | None]:
    """Half the time the field's good value, so that the odd ones meet a known device."""
    return st.one_of(st.just(valid), _odd_text)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    fields=st.fixed_dictionaries(
        {
            "session_id": _or_valid("1"),
            "msg_id": _or_valid("1"),
            "source": _or_valid(DEVICE),
            "target": _or_valid(f"{BASE}/dm"),
            "loc_name": st.none() | _or_valid("dev"),
            "max_msg_size": st.none() | _odd_text | st.integers(-10, 70_000).map(str),
            "cred": st.none() | _odd_text,
        }
    )
)
async def test_odd_pkg1_headers_never_get_a_5xx(harness: Harness, fields: dict[str, str | None]) -> None:
    response = await harness.post(f"{BASE}/dm", pkg1(**fields), XML)  # type: ignore[arg-type]
    assert response.status_code < 500, response.text


# -- 5. devices managed without DM credentials -------------------------------------------------


async def test_a_device_without_credentials_gets_last_contact_and_history(
    db_url: str, tmp_path: Path
) -> None:
    async for h in make_harness(db_url, tmp_path, unknown_devices="accept"):
        responses = await h.run(h.client(device_id=DEVICE))
        assert [r.status_code for r in responses] == [200] * len(responses)
        device = await h.device()
        assert device.auth_type == "" and device.last_contact is not None
        async with h.sessions() as db:
            kinds = [e.kind for e in (await db.execute(select(DeviceEvent))).scalars()]
        assert kinds.count("session") == 1
        await h.run(h.client(device_id=DEVICE, session_id="2"))
        async with h.sessions() as db:
            kinds = [e.kind for e in (await db.execute(select(DeviceEvent))).scalars()]
        assert kinds.count("session") == 2


# -- 2. failed authentication costs no rows ----------------------------------------------------


async def test_many_bad_credential_attempts_leave_no_rows_and_one_bounded_counter(harness: Harness) -> None:
    sessions, events, device = await rows(harness)
    columns = [c.name for c in Device.__table__.columns]
    for attempt in range(40):
        body = pkg1(session_id=str(attempt), msg_id=str(1 + attempt % 4), cred="Zz6EivR3yeaaENcRN6lpAQ==")
        response = await harness.post(f"{BASE}/dm", body, XML)
        assert response.status_code == 200
    wrong = harness.client("wrong", session_id="99")
    assert all(r.status_code == 200 for r in await harness.run(wrong))
    after_sessions, after_events, after_device = await rows(harness)
    assert after_sessions == sessions  # no session row for a device that never authenticated
    assert after_events - events <= 3  # "auth-failed" history: the first few of the run only
    changed = {name for name, old, new in zip(columns, device, after_device, strict=True) if old != new}
    assert changed <= {"auth_failures", "row_version"}
    # The device with the right password still gets in, and its counter starts again.
    assert all(r.status_code == 200 for r in await harness.run(harness.client(session_id="100")))
    assert (await harness.device()).auth_failures == 0
    assert await harness.count(DmSession) == sessions + 1


async def test_a_first_contact_challenge_writes_nothing(harness: Harness) -> None:
    before = await rows(harness)
    out = harness.client().start()  # no nonce yet: challenged
    response = await harness.post(f"{BASE}/dm", out.body, out.content_type)
    assert response.status_code == 200
    assert await rows(harness) == before


# -- 4. clients that ignore RespURI --------------------------------------------------------------


async def test_a_client_that_ignores_resp_uri_continues_its_session(harness: Harness) -> None:
    async with harness.sessions() as db, db.begin():
        device = await find_device(db, DEVICE)
        assert device is not None
        job = await create_job(db, device, JobKind.REFRESH_INVENTORY, {})
    client = harness.client(session_id="42")
    out = client.start()
    server_msg_ids = []
    while out is not None:
        response = await harness.post(f"{BASE}/dm", out.body, out.content_type)  # never the RespURI
        assert response.status_code == 200, response.text
        server_msg_ids.append(decoded(response.content).header.msg_id)
        client.receive(response.content, content_type=response.headers["content-type"])
        client.events()
        out = client.reply()
    assert server_msg_ids == [str(n) for n in range(1, len(server_msg_ids) + 1)]
    assert len(server_msg_ids) >= 3  # challenge, authenticated with the job, its Results
    async with harness.sessions() as db:
        done = await db.get(Job, job.id)
        records = list((await db.execute(select(DmSession))).scalars())
    assert done is not None and done.state == JobState.SUCCEEDED.value  # the Results were taken
    assert len(records) == 1 and records[0].session_id == "42" and records[0].finished


async def test_a_message_without_token_does_not_join_a_session_the_device_did_not_authenticate_in(
    harness: Harness,
) -> None:
    # Another device's SessionID, or a session never authenticated, is not continued: the
    # message is served as a new (challenged) one.
    out = harness.client(session_id="43").start()
    first = await harness.post(f"{BASE}/dm", out.body, out.content_type)
    assert first.status_code == 200
    forged = pkg1(session_id="43", msg_id="2", cred="Zz6EivR3yeaaENcRN6lpAQ==")
    second = await harness.post(f"{BASE}/dm", forged, XML)
    assert second.status_code == 200
    statuses = [c for c in decoded(second.content).commands if getattr(c, "cmd", "") == "SyncHdr"]
    assert [s.data for s in statuses] == ["401"]  # type: ignore[attr-defined]
    assert await harness.count(DmSession) == 0
