"""``/api/v1/devices``: register, list with filters and paging, detail, inventory, history,
admission, tags; each change audited with its actor."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession

from omadm.server.registry import add_device, find_device, record_event
from omadm.server.store.models import DeviceState, InventoryEntry, utc_now

from .conftest import Api, problem

pytestmark = pytest.mark.anyio

DEV = "IMEI:490154203237518"


def new_device(device_id: str = DEV, **extra: Any) -> dict[str, Any]:
    return {"device_id": device_id, "username": "dev", "password": "secret", **extra}


async def test_register_show_and_refuse_duplicates(api: Api) -> None:
    response = await api.post(
        "/devices",
        json=new_device(
            auth="hmac", server_password="s", notify_address="udp://10.0.0.2:2948", tags={"site": "lab"}
        ),
    )
    assert response.status_code == 201, response.text
    device = response.json()
    assert device["device_id"] == DEV
    assert device["state"] == "accepted"
    assert device["auth"] == "hmac"
    assert device["has_server_password"] is True
    assert device["tags"] == {"site": "lab"}
    assert "password" not in device and "server_password" not in device
    shown = (await api.get(f"/devices/{DEV}")).json()
    assert shown == device

    body = problem(await api.post("/devices", json=new_device()), 409)
    assert body["detail"] == f"device {DEV} is already registered"
    body = problem(await api.post("/devices", json=new_device("IMEI:2", auth="sha1")), 422)
    assert "auth must be one of" in body["detail"]
    body = problem(await api.post("/devices", json={"device_id": "IMEI:3"}), 422)
    assert {e["field"] for e in body["errors"]} == {"body.username", "body.password"}
    body = problem(await api.post("/devices", json=new_device("IMEI:4", tags={"a=b": "c"})), 422)
    problem(await api.get("/devices/IMEI:404"), 404)
    assert problem(await api.get("/devices/IMEI:404/inventory"), 404)["detail"] == "no device IMEI:404"

    rows = await api.audit_rows()
    assert [(r.actor, r.action, r.target) for r in rows] == [("operator-bot", "device.add", DEV)]
    assert rows[0].detail["tags"] == {"site": "lab"}
    assert "password" not in rows[0].detail


async def test_list_filters_and_paging(api: Api) -> None:
    for n in range(7):
        tags = {"site": "lab" if n % 2 else "field", "ring": str(n % 3)}
        assert (await api.post("/devices", json=new_device(f"IMEI:10{n}", tags=tags))).status_code == 201
    async with api.sessions() as db, db.begin():
        await add_device(db, "MAC:aa-bb", username="", password="", state=DeviceState.PENDING)

    page = (await api.get("/devices", params={"limit": 3})).json()
    assert page["total"] == 8 and page["limit"] == 3 and page["offset"] == 0
    assert [d["device_id"] for d in page["items"]] == ["IMEI:100", "IMEI:101", "IMEI:102"]
    page = (await api.get("/devices", params={"limit": 3, "offset": 6})).json()
    assert [d["device_id"] for d in page["items"]] == ["IMEI:106", "MAC:aa-bb"]

    page = (await api.get("/devices", params={"state": "pending"})).json()
    assert [d["device_id"] for d in page["items"]] == ["MAC:aa-bb"]
    page = (await api.get("/devices", params={"tag": "site=lab"})).json()
    assert [d["device_id"] for d in page["items"]] == ["IMEI:101", "IMEI:103", "IMEI:105"]
    page = (await api.get("/devices", params=[("tag", "site=lab"), ("tag", "ring=0")])).json()
    assert [d["device_id"] for d in page["items"]] == ["IMEI:103"]
    page = (await api.get("/devices", params={"q": "mac:AA"})).json()
    assert [d["device_id"] for d in page["items"]] == ["MAC:aa-bb"]
    page = (await api.get("/devices", params={"q": "%"})).json()  # no wildcard
    assert page["total"] == 0

    assert "key=value" in problem(await api.get("/devices", params={"tag": "site"}), 422)["detail"]
    problem(await api.get("/devices", params={"limit": 501}), 422)
    problem(await api.get("/devices", params={"offset": -1}), 422)
    problem(await api.get("/devices", params={"state": "asleep"}), 422)


async def test_inventory_and_history(api: Api) -> None:
    await api.post("/devices", json=new_device())
    async with api.sessions() as db, db.begin():
        device = await find_device(db, DEV)
        assert device is not None
        for kind, node, ident, state in (
            ("deployed", "hello", "com.example.hello", 20),
            ("delivered", "pkg1", "com.example.pkg", 10),
        ):
            db.add(
                InventoryEntry(
                    device_pk=device.id,
                    kind=kind,
                    node=node,
                    ident=ident,
                    version="1.0",
                    state=state,
                    updated=utc_now(),
                )
            )
        for n in range(3):
            await record_event(db, device, "session", n=n)

    inventory = (await api.get(f"/devices/{DEV}/inventory")).json()
    assert [(e["kind"], e["node"], e["ident"], e["state"]) for e in inventory] == [
        ("delivered", "pkg1", "com.example.pkg", 10),
        ("deployed", "hello", "com.example.hello", 20),
    ]
    deployed = (await api.get(f"/devices/{DEV}/inventory", params={"kind": "deployed"})).json()
    assert [e["node"] for e in deployed] == ["hello"]

    history = (await api.get(f"/devices/{DEV}/history", params={"limit": 2})).json()
    assert history["total"] == 4  # registered + 3 sessions
    assert [e["detail"] for e in history["items"]] == [{"n": 2}, {"n": 1}]
    history = (await api.get(f"/devices/{DEV}/history", params={"offset": 3})).json()
    assert [e["kind"] for e in history["items"]] == ["registered"]
    problem(await api.get("/devices/IMEI:404/history"), 404)


async def test_accept_and_reject(api: Api) -> None:
    async with api.sessions() as db, db.begin():
        await add_device(db, "IMEI:77", username="", password="", state=DeviceState.PENDING)

    body = problem(await api.post("/devices/IMEI:77/accept"), 422)
    assert "no credentials yet" in body["detail"]
    body = problem(await api.post("/devices/IMEI:77/accept", json={"username": "u"}), 422)
    assert "both" in body["detail"]
    body = problem(await api.post("/devices/IMEI:77/accept", json={"auth": "hmac"}), 422)
    assert "auth goes with new credentials" in body["detail"]
    response = await api.post("/devices/IMEI:77/accept", json={"username": "u77", "password": "p77"})
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "accepted" and response.json()["username"] == "u77"
    async with api.sessions() as db:
        device = await find_device(db, "IMEI:77")
        assert device is not None and device.password == "p77"

    response = await api.post("/devices/IMEI:77/reject")
    assert response.status_code == 200 and response.json()["state"] == "rejected"
    response = await api.post("/devices/IMEI:77/accept")  # has credentials now
    assert response.status_code == 200 and response.json()["state"] == "accepted"
    problem(await api.post("/devices/IMEI:404/reject"), 404)
    problem(await api.post("/devices/IMEI:77/reject", "viewer"), 403)

    rows = await api.audit_rows()
    assert [(r.actor, r.action, r.target, r.detail) for r in rows] == [
        ("operator-bot", "device.accept", "IMEI:77", {"before": "pending", "username": "u77", "auth": "md5"}),
        ("operator-bot", "device.reject", "IMEI:77", {"before": "accepted"}),
        ("operator-bot", "device.accept", "IMEI:77", {"before": "rejected"}),
    ]
    history = (await api.get("/devices/IMEI:77/history")).json()["items"]
    assert [e["detail"].get("state") for e in history if e["kind"] == "admission"] == [
        "accepted",
        "rejected",
        "accepted",
    ]


async def test_tags_are_replaced(api: Api) -> None:
    await api.post("/devices", json=new_device(tags={"site": "lab"}))
    response = await api.put(f"/devices/{DEV}/tags", json={"site": "field", "ring": "1"})
    assert response.status_code == 200, response.text
    assert response.json()["tags"] == {"site": "field", "ring": "1"}
    page = (await api.get("/devices", params={"tag": "ring=1"})).json()
    assert [d["device_id"] for d in page["items"]] == [DEV]
    problem(await api.put(f"/devices/{DEV}/tags", json={"site": 3}), 422)
    problem(await api.put(f"/devices/{DEV}/tags", json=["site"]), 422)
    problem(await api.put("/devices/IMEI:404/tags", json={}), 404)
    rows = await api.audit_rows()
    assert (rows[-1].action, rows[-1].detail) == (
        "device.tags",
        {"before": {"site": "lab"}, "after": {"site": "field", "ring": "1"}},
    )


async def test_no_database_connection_in_time_is_a_503_with_retry_after(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_connection(*args: Any, **kw: Any) -> Any:
        raise SQLAlchemyTimeoutError("QueuePool limit of size 1 overflow 0 reached")

    monkeypatch.setattr(AsyncSession, "execute", no_connection)
    monkeypatch.setattr(AsyncSession, "scalar", no_connection)
    response = await api.get("/devices")
    body = problem(response, 503)
    assert "busy" in body["detail"] and int(response.headers["retry-after"]) >= 1
