"""``POST /api/v1/devices/bulk``: a batch of devices registered all or none, in one transaction,
with one audit entry; the rows are those ``POST /devices`` makes, so the devices can run DM
sessions at once. On SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from omadm.protocol.codes import AuthType
from omadm.protocol.session import Credentials
from omadm.server.registry import MAX_BULK_DEVICES
from omadm.server.store.models import Device, DeviceEvent

from ..dmharness import BASE, Harness
from .conftest import Api, problem

pytestmark = pytest.mark.anyio


def batch(*device_ids: str, **extra: Any) -> dict[str, Any]:
    return {
        "devices": [
            {"device_id": d, "username": f"user{n}", "password": f"secret{n}", **extra}
            for n, d in enumerate(device_ids)
        ]
    }


async def count_devices(api: Api) -> int:
    async with api.sessions() as db:
        return int(await db.scalar(select(func.count()).select_from(Device)) or 0)


async def test_a_batch_is_registered_and_answered_with_its_count_only(api: Api) -> None:
    ids = [f"IMEI:35{n:013d}" for n in range(1, 1201)]
    response = await api.post("/devices/bulk", json=batch(*ids, tags={"fleet": "sim"}))
    assert response.status_code == 201, response.text
    assert response.json() == {"created": 1200}
    assert await count_devices(api) == 1200
    page = (await api.get("/devices", params={"tag": "fleet=sim", "limit": 2})).json()
    assert page["total"] == 1200
    assert [d["device_id"] for d in page["items"]] == ids[:2]
    assert page["items"][0]["state"] == "accepted" and page["items"][0]["auth"] == "md5"


async def test_a_bulk_row_is_the_row_a_single_registration_makes(api: Api) -> None:
    fields = {
        "username": "u",
        "password": "p",
        "auth": "hmac",
        "server_password": "s",
        "notify_address": "udp://10.0.0.2:2948",
        "tags": {"site": "lab"},
    }
    assert (await api.post("/devices", json={"device_id": "IMEI:1", **fields})).status_code == 201
    response = await api.post("/devices/bulk", json={"devices": [{"device_id": "IMEI:2", **fields}]})
    assert response.status_code == 201, response.text
    async with api.sessions() as db:
        one, two = (await db.scalars(select(Device).order_by(Device.id))).all()
        events = (await db.scalars(select(DeviceEvent).order_by(DeviceEvent.id))).all()
    differ = {"id", "device_id", "client_nonce", "created"}
    columns = [c.key for c in Device.__table__.columns if c.key not in differ]
    assert {c: getattr(two, c) for c in columns} == {c: getattr(one, c) for c in columns}
    assert len(two.client_nonce) == len(one.client_nonce) == 16 and two.client_nonce != one.client_nonce
    assert two.has_open_jobs is False and two.row_version == 0  # no job yet: the fast path
    assert [(e.device_pk, e.kind, e.detail) for e in events] == [
        (one.id, "registered", {"state": "accepted"}),
        (two.id, "registered", {"state": "accepted"}),
    ]
    shown = (await api.get("/devices/IMEI:2")).json()
    assert shown["auth"] == "hmac" and shown["has_server_password"] is True


async def test_a_devid_twice_in_the_batch_refuses_the_batch_and_names_it(api: Api) -> None:
    body = problem(await api.post("/devices/bulk", json=batch("IMEI:1", "IMEI:2", "IMEI:1", "IMEI:3")), 422)
    assert body["detail"] == "1 DevId(s) appear more than once in the batch: IMEI:1"
    assert body["device_ids"] == ["IMEI:1"]
    assert await count_devices(api) == 0


async def test_a_devid_registered_already_refuses_the_batch_and_names_every_one(api: Api) -> None:
    assert (await api.post("/devices/bulk", json=batch("IMEI:2", "IMEI:4"))).status_code == 201
    many = [f"IMEI:{n}" for n in range(1, 20)] + [f"IMEI:x{n}" for n in range(20)]
    assert (await api.post("/devices/bulk", json=batch(*many[19:]))).status_code == 201
    body = problem(await api.post("/devices/bulk", json=batch(*many)), 409)
    assert body["device_ids"] == ["IMEI:2", "IMEI:4", *many[19:]]
    assert body["detail"].startswith("22 device(s) of the batch are already registered: IMEI:2, IMEI:4, ")
    assert body["detail"].endswith(" and 12 more")
    assert await count_devices(api) == 22
    rows = [r for r in await api.audit_rows() if r.action == "device.add-bulk"]
    assert len(rows) == 2  # the refused batch left no entry


async def test_another_authority_may_register_the_same_devids(api: Api) -> None:
    assert (await api.post("/devices/bulk", json=batch("IMEI:1", "IMEI:2"))).status_code == 201
    response = await api.post("/authorities", "admin", json={"name": "acme", "server_id": "acme-dm"})
    assert response.status_code == 201, response.text
    response = await api.post(
        "/tokens", "admin", json={"name": "acme-ops", "role": "operator", "authority": "acme"}
    )
    token = response.json()["token"]
    response = await api.http.post(
        "/api/v1/devices/bulk", json=batch("IMEI:1", "IMEI:2"), headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 201, response.text
    assert await count_devices(api) == 4


async def test_more_than_the_limit_empty_batches_and_bad_fields_are_422(api: Api) -> None:
    too_many = batch(*(f"IMEI:{n}" for n in range(MAX_BULK_DEVICES + 1)))
    body = problem(await api.post("/devices/bulk", json=too_many), 422)
    assert body["errors"][0]["field"] == "body.devices"
    assert str(MAX_BULK_DEVICES) in body["detail"]
    body = problem(await api.post("/devices/bulk", json={"devices": []}), 422)
    assert body["errors"][0]["field"] == "body.devices"
    body = problem(await api.post("/devices/bulk", json=batch("IMEI:1", "IMEI:2", auth="sha1")), 422)
    assert body["detail"] == "auth must be one of md5, hmac, basic; not so for IMEI:1, IMEI:2"
    assert body["device_ids"] == ["IMEI:1", "IMEI:2"]
    body = problem(await api.post("/devices/bulk", json={"devices": [{"device_id": "IMEI:1"}]}), 422)
    assert {e["field"] for e in body["errors"]} == {"body.devices.0.username", "body.devices.0.password"}
    assert await count_devices(api) == 0


async def test_a_viewer_may_not_register_and_no_token_is_401(api: Api) -> None:
    body = problem(await api.post("/devices/bulk", "viewer", json=batch("IMEI:1")), 403)
    assert body["detail"] == "token 'viewer-bot' has the role viewer; this needs operator"
    problem(await api.http.post("/api/v1/devices/bulk", json=batch("IMEI:1")), 401)
    assert await count_devices(api) == 0


async def test_one_audit_entry_records_the_batch_without_secrets(api: Api) -> None:
    ids = [f"IMEI:35{n:013d}" for n in range(1, 301)]
    assert (await api.post("/devices/bulk", json=batch(*ids, server_password="s"))).status_code == 201
    rows = await api.audit_rows()
    assert [(r.actor, r.action, r.target) for r in rows] == [
        ("operator-bot", "device.add-bulk", f"{ids[0]} .. {ids[-1]}")
    ]
    assert rows[0].detail == {"count": 300, "first": ids[0], "last": ids[-1]}
    shown = (await api.get("/audit", "admin", params={"action": "device.add-bulk"})).json()
    assert shown["total"] == 1 and shown["items"][0]["detail"]["count"] == 300


@pytest.mark.parametrize("auth", [AuthType.MD5, AuthType.HMAC, AuthType.BASIC])
async def test_a_bulk_registered_device_runs_dm_sessions(api: Api, auth: AuthType) -> None:
    """Its credentials, both ways, and its nonce work: challenged once, then accepted at once."""
    name = {AuthType.MD5: "md5", AuthType.HMAC: "hmac", AuthType.BASIC: "basic"}[auth]
    devices = [
        {
            "device_id": f"IMEI:35000000000000{n}",
            "username": f"sim{n}",
            "password": f"pw{n}",
            "auth": name,
            "server_password": f"srv{n}",
        }
        for n in range(3)
    ]
    assert (await api.post("/devices/bulk", json={"devices": devices})).status_code == 201
    whoami = (await api.get("/whoami")).json()
    assert whoami["dm_url"] == f"{BASE}/dm"
    harness = Harness(api.http, api.sessions, api.app.state.config)
    device = devices[1]
    kw: dict[str, Any] = {
        "device_id": device["device_id"],
        "username": device["username"],
        "auth": auth,
        "server_uri": whoami["dm_url"],
        "server_credentials": Credentials(auth, whoami["server_id"], device["server_password"]),
        "require_server_auth": auth is not AuthType.BASIC,
    }
    first = await harness.run(harness.client(device["password"], **kw))
    assert [r.status_code for r in first] == [200] * len(first)
    second = await harness.run(harness.client(device["password"], session_id="2", **kw))
    assert [r.status_code for r in second] == [200] * len(second)
    async with api.sessions() as db:
        row = await db.scalar(select(Device).where(Device.device_id == device["device_id"]))
        assert row is not None
        kinds = [
            e.kind for e in (await db.scalars(select(DeviceEvent).where(DeviceEvent.device_pk == row.id)))
        ]
    assert row.last_contact is not None and row.auth_failures == 0
    assert row.devinfo["./DevInfo/Man"] == "Acme"
    assert kinds[0] == "registered" and "auth-failed" not in kinds


async def test_a_job_for_a_bulk_registered_device_goes_out_in_its_next_session(api: Api) -> None:
    """Bulk rows start without the open-jobs flag (as single ones): creating a job must raise it."""
    assert (await api.post("/devices/bulk", json=batch("IMEI:1", "IMEI:2"))).status_code == 201
    harness = Harness(api.http, api.sessions, api.app.state.config)
    kw: dict[str, Any] = {"device_id": "IMEI:2", "username": "user1"}
    assert {r.status_code for r in await harness.run(harness.client("secret1", **kw))} == {200}
    response = await api.post("/jobs", json={"device_id": "IMEI:2", "kind": "refresh-inventory"})
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["state"] == "queued"
    responses = await harness.run(harness.client("secret1", session_id="2", **kw))
    assert {r.status_code for r in responses} == {200}
    assert (await api.get(f"/jobs/{job['id']}")).json()["state"] != "queued"
