"""DM sessions of two management authorities on one server (docs/authorities.md).

The same DevId is registered by the default authority and by ``oem`` with other
credentials; the device's second DMAcc account points at ``/dm/oem``. Each session must
reach its own authority's device row, with that authority's credentials, ServerID and
jobs, on the fast path and on the general one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from omadm.protocol import codec
from omadm.protocol.codes import AuthType
from omadm.protocol.session import Credentials, SessionAborted
from omadm.server import dm_endpoint
from omadm.server.registry import add_authority, add_device, create_job, find_device
from omadm.server.store.models import DEFAULT_AUTHORITY_PK, Device, Job, JobKind, JobState

from .dmharness import BASE, DEVICE, Harness, make_harness

pytestmark = pytest.mark.anyio

OEM_URL = f"{BASE}/dm/oem"


@pytest.fixture(params=[True, False], ids=["group-commit", "general-path"])
async def harness(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    async for h in make_harness(db_url, tmp_path, group_commit=request.param):
        async with h.sessions() as db, db.begin():
            oem = await add_authority(db, "oem", "oem-dm", configured_server_id=h.config.server_id)
            await add_device(db, DEVICE, username="dev", password="secret")
            await add_device(
                db,
                DEVICE,
                username="oemdev",
                password="oem-secret",
                server_password="srv",
                authority_pk=oem.id,
            )
        yield h


async def _rows(h: Harness) -> tuple[Device, Device]:
    async with h.sessions() as db:
        rows = list((await db.execute(select(Device).where(Device.device_id == DEVICE))).scalars())
    default = next(r for r in rows if r.authority_pk == DEFAULT_AUTHORITY_PK)
    oem = next(r for r in rows if r.authority_pk != DEFAULT_AUTHORITY_PK)
    return default, oem


async def test_each_account_reaches_its_own_authority(harness: Harness) -> None:
    h = harness
    oem_server = Credentials(AuthType.MD5, "oem-dm", "srv")
    for session_id in ("1", "2"):  # the second one is the steady state (fast path when on)
        h.nonce = b""
        responses = await h.run(
            h.client(
                "oem-secret",
                username="oemdev",
                server_uri=OEM_URL,
                session_id=session_id,
                server_credentials=oem_server,
                require_server_auth=True,  # the server must sign as oem-dm, with oem's password
            )
        )
        assert [r.status_code for r in responses] == [200] * len(responses)
        first = codec.decode(responses[-1].content, responses[-1].headers["content-type"])[0]
        assert first.header.resp_uri is None or first.header.resp_uri.startswith(f"{OEM_URL}?s=")
    default, oem = await _rows(h)
    assert oem.last_contact is not None and oem.devinfo
    assert default.last_contact is None  # the default authority's row was not touched


async def test_credentials_of_one_authority_do_not_open_the_other(harness: Harness) -> None:
    h = harness
    h.events.clear()
    await h.run(h.client("secret", server_uri=OEM_URL))  # the default's credentials at /dm/oem
    assert any(isinstance(e, SessionAborted) for e in h.events)  # refused, then Alert 1223
    default, oem = await _rows(h)
    assert oem.last_contact is None and oem.auth_failures > 0
    assert default.last_contact is None and default.auth_failures == 0


async def test_an_unknown_authority_is_http_404_and_changes_nothing(harness: Harness) -> None:
    h = harness
    out = h.client(server_uri=f"{BASE}/dm/nosuch").start()
    response = await h.post(f"{BASE}/dm/nosuch", out.body, out.content_type)
    assert response.status_code == 404 and "nosuch" in response.text
    default, oem = await _rows(h)
    assert default.last_contact is None and oem.last_contact is None


async def test_only_post_to_dm_or_dm_name_reaches_the_endpoint(harness: Harness) -> None:
    # DM messages skip FastAPI's middleware and routing (app.OmadmApp); everything else on
    # those paths is still the router's: 405 for another method, its redirect for a
    # trailing slash, 404 for deeper paths.
    h = harness
    out = h.client().start()
    assert (await h.http.get("/dm")).status_code == 405
    assert (await h.http.get("/dm/oem")).status_code == 405
    assert (await h.post(f"{BASE}/dm/", out.body, out.content_type)).status_code == 307
    assert (await h.post(f"{BASE}/dm/oem/more", out.body, out.content_type)).status_code == 404
    response = await h.post(f"{BASE}/dm", out.body, out.content_type)
    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "application/vnd.syncml.dm+xml"
    )


async def test_an_authority_created_after_a_404_is_found_once_the_short_cache_expires(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    monkeypatch.setattr(dm_endpoint, "_UNKNOWN_AUTHORITY_TTL", 0.0)  # "soon" is now, for the test
    out = h.client(server_uri=f"{BASE}/dm/late").start()
    assert (await h.post(f"{BASE}/dm/late", out.body, out.content_type)).status_code == 404
    async with h.sessions() as db, db.begin():
        late = await add_authority(db, "late", "late-dm", configured_server_id=h.config.server_id)
        await add_device(db, DEVICE, username="latedev", password="late-secret", authority_pk=late.id)
    h.nonce = b""
    responses = await h.run(h.client("late-secret", username="latedev", server_uri=f"{BASE}/dm/late"))
    assert [r.status_code for r in responses] == [200] * len(responses)


async def test_a_job_goes_only_to_its_authority_s_sessions(harness: Harness) -> None:
    h = harness
    async with h.sessions() as db, db.begin():
        _, oem_row = await _rows(h)
        oem = await find_device(db, DEVICE, authority_pk=oem_row.authority_pk)
        assert oem is not None
        job = await create_job(db, oem, JobKind.REFRESH_INVENTORY, {})
    await h.run(h.client())  # the default authority's session: not its job
    async with h.sessions() as db:
        waiting = await db.get(Job, job.id)
        assert waiting is not None and waiting.state == JobState.QUEUED.value
    h.nonce = b""
    await h.run(h.client("oem-secret", username="oemdev", server_uri=OEM_URL))
    async with h.sessions() as db:
        done = await db.get(Job, job.id)
        assert done is not None and done.state == JobState.SUCCEEDED.value
