"""``/api/v1/devices``: register, list with filters and paging, detail, inventory, history,
admission, tags; each change audited with its actor."""

from __future__ import annotations

import base64
import random
from typing import Any

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession

from omadm.server.api import devices as devices_api
from omadm.server.registry import add_device, find_device, record_event
from omadm.server.store.models import Device, DeviceState, InventoryEntry, utc_now

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
    assert page["total"] == 8 and page["total_exact"] is True
    assert page["limit"] == 3 and page["offset"] == 0 and page["next_cursor"]
    assert [d["device_id"] for d in page["items"]] == ["IMEI:100", "IMEI:101", "IMEI:102"]
    page = (await api.get("/devices", params={"limit": 3, "cursor": page["next_cursor"]})).json()
    assert [d["device_id"] for d in page["items"]] == ["IMEI:103", "IMEI:104", "IMEI:105"]
    page = (await api.get("/devices", params={"limit": 3, "cursor": page["next_cursor"]})).json()
    assert [d["device_id"] for d in page["items"]] == ["IMEI:106", "MAC:aa-bb"]
    assert page["next_cursor"] is None and page["total"] == 8
    page = (await api.get("/devices", params={"limit": 3, "offset": 6})).json()  # still accepted
    assert [d["device_id"] for d in page["items"]] == ["IMEI:106", "MAC:aa-bb"]
    assert page["next_cursor"] is None and page["total"] == 8 and page["offset"] == 6

    page = (await api.get("/devices", params={"state": "pending"})).json()
    assert [d["device_id"] for d in page["items"]] == ["MAC:aa-bb"]
    page = (await api.get("/devices", params={"tag": "site=lab"})).json()
    assert [d["device_id"] for d in page["items"]] == ["IMEI:101", "IMEI:103", "IMEI:105"]
    page = (await api.get("/devices", params=[("tag", "site=lab"), ("tag", "ring=0")])).json()
    assert [d["device_id"] for d in page["items"]] == ["IMEI:103"]
    page = (await api.get("/devices", params={"q": "MAC:aa"})).json()  # a DevId prefix
    assert [d["device_id"] for d in page["items"]] == ["MAC:aa-bb"]
    for q in ("mac:AA", "aa-bb", "%", "MAC:_a"):  # case matters; no "contains", no wildcard
        page = (await api.get("/devices", params={"q": q})).json()
        assert page["items"] == [] and page["total"] == 0, q
    page = (await api.get("/devices", params={"q": "IMEI:10", "tag": "ring=1"})).json()
    assert [d["device_id"] for d in page["items"]] == ["IMEI:101", "IMEI:104"]

    assert "name=value" in problem(await api.get("/devices", params={"tag": "site"}), 422)["detail"]
    problem(await api.get("/devices", params={"limit": 501}), 422)
    problem(await api.get("/devices", params={"offset": -1}), 422)
    problem(await api.get("/devices", params={"offset": 10_001}), 422)  # deeper: the cursor
    problem(await api.get("/devices", params={"state": "asleep"}), 422)


async def set_devinfo(api: Api, device_id: str, devinfo: dict[str, Any]) -> None:
    """What a device's first session does (the API cannot set DevInfo)."""
    async with api.sessions() as db, db.begin():
        await db.execute(update(Device).where(Device.device_id == device_id).values(devinfo=devinfo))


async def deploy(api: Api, device_id: str, ident: str, version: str) -> None:
    """A deployed component in the device's inventory, as its session would report it."""
    async with api.sessions() as db, db.begin():
        device = await find_device(db, device_id)
        assert device is not None
        db.add(
            InventoryEntry(
                device_pk=device.id,
                kind="deployed",
                node=ident.rsplit(".", 1)[-1],
                ident=ident,
                version=version,
            )
        )


async def listed(api: Api, params: Any) -> list[str]:
    response = await api.get("/devices", params=params)
    assert response.status_code == 200, response.text
    return [d["device_id"] for d in response.json()["items"]]


async def test_the_list_filters_as_campaign_targets_do(api: Api) -> None:
    for n in range(6):
        body = new_device(f"IMEI:20{n}", tags={"ring": "beta" if n < 3 else "prod"})
        assert (await api.post("/devices", json=body)).status_code == 201
    await set_devinfo(api, "IMEI:200", {"Man": "Acme", "Mod": "W7", "Lang": "en"})
    await set_devinfo(api, "IMEI:201", {"Man": "Acme", "Mod": "W8"})
    await set_devinfo(api, "IMEI:203", {"Man": "Acme", "Mod": "W7"})
    await deploy(api, "IMEI:200", "com.example.hello", "1.0")
    await deploy(api, "IMEI:201", "com.example.hello", "1.10.0")
    await deploy(api, "IMEI:202", "com.example.hello", "2.0rc1")
    await deploy(api, "IMEI:203", "com.example.hello", "2.0")
    await deploy(api, "IMEI:204", "com.example.other", "0.1")
    async with api.sessions() as db, db.begin():  # one delivered, not deployed: not a match
        device = await find_device(db, "IMEI:205")
        assert device is not None
        db.add(InventoryEntry(device_pk=device.id, kind="delivered", node="p", ident="com.example.hello"))

    assert await listed(api, {"devinfo": "Mod=W7"}) == ["IMEI:200", "IMEI:203"]
    assert await listed(api, [("devinfo", "Man=Acme"), ("devinfo", "Mod=W8")]) == ["IMEI:201"]
    assert await listed(api, {"devinfo": "Man=acme"}) == []  # values compare as they are
    assert await listed(api, {"devinfo": "Mod=W7", "tag": "ring=prod"}) == ["IMEI:203"]
    hello = {"component": "com.example.hello"}
    assert await listed(api, hello) == ["IMEI:200", "IMEI:201", "IMEI:202", "IMEI:203"]
    assert await listed(api, {**hello, "version": "1.0.0"}) == ["IMEI:200"]  # PEP 440: 1.0 == 1.0.0
    assert await listed(api, {**hello, "version_below": "2.0"}) == ["IMEI:200", "IMEI:201", "IMEI:202"]
    assert await listed(api, {**hello, "version_below": "1.9"}) == ["IMEI:200"]  # 1.10 > 1.9
    assert await listed(api, {**hello, "version_below": "2.0", "tag": "ring=beta", "q": "IMEI:20"}) == [
        "IMEI:200",
        "IMEI:201",
        "IMEI:202",
    ]
    assert await listed(api, {"component": "com.example.nothing"}) == []
    page = (await api.get("/devices", params={**hello, "version_below": "2.0", "limit": 2})).json()
    assert page["total"] == 3 and page["total_exact"] is True and page["next_cursor"]

    body = problem(await api.get("/devices", params={"version_below": "2.0"}), 422)
    assert "needs a component" in body["detail"]
    body = problem(await api.get("/devices", params={"version": "1.0"}), 422)
    assert "needs a component" in body["detail"]
    body = problem(await api.get("/devices", params={**hello, "version": "not a version"}), 422)
    assert "is not a version" in body["detail"]
    body = problem(await api.get("/devices", params={"devinfo": "Mod"}), 422)
    assert "devinfo" in body["detail"] and "name=value" in body["detail"]
    for name, value in (("q", "IMEI:\x00"), ("tag", "a=\x00"), ("devinfo", "\x00=x"), ("component", "\x00")):
        body = problem(await api.get("/devices", params={name: value}), 422)  # not a 500 on PostgreSQL
        assert body["detail"].startswith(f"{name}: ") and "NUL" in body["detail"]


async def test_count_is_exact_estimated_or_left_out_as_asked(
    api: Api, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [f"IMEI:3{n:02d}" for n in range(12)]
    response = await api.post("/devices/bulk", json={"devices": [new_device(d) for d in ids]})
    assert response.status_code == 201, response.text

    for count in ("auto", "exact"):
        page = (await api.get("/devices", params={"limit": 5, "count": count})).json()
        assert (page["total"], page["total_exact"]) == (12, True), count
    page = (await api.get("/devices", params={"limit": 5, "count": "none"})).json()
    assert (page["total"], page["total_exact"]) == (None, False)
    assert len(page["items"]) == 5 and page["next_cursor"]
    page = (await api.get("/devices", params={"count": "none", "q": "IMEI:31"})).json()
    assert page["total"] is None and [d["device_id"] for d in page["items"]] == ids[10:]
    problem(await api.get("/devices", params={"count": "some"}), 422)

    monkeypatch.setattr(devices_api, "COUNT_BOUND", 4)  # so that 12 devices are "many"
    page = (await api.get("/devices", params={"limit": 5})).json()
    if db_url.startswith("postgresql"):
        assert page["total_exact"] is False and page["total"] >= 5  # the planner's estimate
    else:
        assert (page["total"], page["total_exact"]) == (12, True)  # SQLite always counts
    page = (await api.get("/devices", params={"limit": 5, "count": "exact"})).json()
    assert (page["total"], page["total_exact"]) == (12, True)
    page = (await api.get("/devices", params={"limit": 20, "q": "IMEI:30"})).json()
    assert (page["total"], page["total_exact"]) == (10, True)  # one page holds them all: exact
    page = (await api.get("/devices", params={"limit": 5, "tag": "ring=none"})).json()
    assert (page["total"], page["total_exact"]) == (0, True)


def cursor_of(content: bytes) -> str:
    return base64.urlsafe_b64encode(content).decode().rstrip("=")


async def test_a_bad_cursor_is_a_422_that_says_why(api: Api) -> None:
    for n in range(3):
        await api.post("/devices", json=new_device(f"IMEI:40{n}"))
    first = (await api.get("/devices", params={"limit": 1})).json()
    cursor = first["next_cursor"]
    assert [
        d["device_id"] for d in (await api.get("/devices", params={"cursor": cursor})).json()["items"]
    ] == [
        "IMEI:401",
        "IMEI:402",
    ]
    assert (await api.get("/devices", params={"cursor": cursor, "offset": 0})).status_code == 200

    body = problem(await api.get("/devices", params={"cursor": cursor, "offset": 1}), 422)
    assert "cursor or offset, not both" in body["detail"]
    for bad, why in (
        ("not a cursor!", "not base64url"),
        (cursor_of(b"\xff\xfe"), "not JSON"),
        (cursor_of(b"[1, 2]"), "names no DevId"),
        (cursor_of(b'{"after": 7}'), "names no DevId"),
        (cursor_of(b'{"before": "IMEI:401"}'), "names no DevId"),
        (cursor_of(b'{"after": "IMEI:\\u0000"}'), "names no DevId"),  # PostgreSQL text has no NUL
    ):
        body = problem(await api.get("/devices", params={"cursor": bad}), 422)
        assert why in body["detail"] and "cursor" in body["detail"], (bad, body)
    problem(await api.get("/devices", params={"cursor": "A" * 5000}), 422)
    # A cursor holds a position, not a device: one after a DevId that is gone still pages on.
    gone = cursor_of(b'{"after": "IMEI:4005"}')
    assert await listed(api, {"cursor": gone}) == ["IMEI:401", "IMEI:402"]


async def test_cursor_pages_visit_each_device_once_while_devices_come_and_go(api: Api) -> None:
    """Keyset pages from the cursor, whatever changes between them.

    A device that is there from the first page to the last is listed exactly once; one added
    after the cursor's position is listed, one added before it is not; a removed one is not
    listed after its removal; the pages are in byte order (mixed case and punctuation: the
    order of PostgreSQL's ``C`` collation and of SQLite).
    """
    rng = random.Random(1414)
    heads = ["IMEI:", "MAC:", "imei:", "Dev-", "dev_", "dev.", "ESN:", "x"]
    made: set[str] = set()

    def new_ids(how_many: int) -> list[str]:
        ids = []
        while len(ids) < how_many:
            device_id = rng.choice(heads) + "".join(rng.choices("0123456789aZ:-", k=rng.randint(1, 6)))
            if device_id not in made:
                made.add(device_id)
                ids.append(device_id)
        return ids

    async def add(ids: list[str]) -> None:
        if not ids:
            return
        devices = [new_device(d, tags={"ring": rng.choice("ab")}) for d in ids]
        response = await api.post("/devices/bulk", json={"devices": devices})
        assert response.status_code == 201, response.text

    async def remove(ids: list[str]) -> None:
        async with api.sessions() as db, db.begin():
            await db.execute(delete(Device).where(Device.device_id.in_(ids)))

    async def rings() -> dict[str, str]:
        async with api.sessions() as db:
            rows = (await db.execute(select(Device.device_id, Device.tags))).all()
        return {device_id: tags["ring"] for device_id, tags in rows}

    alive = set(new_ids(300))
    await add(sorted(alive))
    for ring in (None, "a"):  # the whole fleet, then with a filter
        matches = {d for d, r in (await rings()).items() if ring is None or r == ring}
        throughout = set(matches)  # there from the first page to the last
        must, must_not = set(), set()  # added after / before the cursor's position
        seen: list[str] = []
        cursor, position = None, ""
        while True:
            params: dict[str, Any] = {"limit": rng.randint(1, 20)}
            if ring:
                params["tag"] = f"ring={ring}"
            if cursor:
                params["cursor"] = cursor
            page = (await api.get("/devices", params=params)).json()
            items = [d["device_id"] for d in page["items"]]
            assert set(items) <= matches, "a removed device is listed"
            seen += items
            cursor = page["next_cursor"]
            if cursor is None:
                break
            position = items[-1]
            gone = rng.sample(sorted(alive), rng.randint(0, 6))
            await remove(gone)
            alive -= set(gone)
            throughout -= set(gone)
            matches -= set(gone)
            must -= set(gone)
            born = new_ids(rng.randint(0, 6))
            await add(born)
            alive |= set(born)
            current = await rings()
            for device_id in born:
                if ring is None or current[device_id] == ring:
                    matches.add(device_id)
                    (must if device_id > position else must_not).add(device_id)
        assert seen == sorted(seen) and len(seen) == len(set(seen)), "out of order or listed twice"
        assert throughout <= set(seen), sorted(throughout - set(seen))
        assert must <= set(seen), sorted(must - set(seen))
        assert not must_not & set(seen), sorted(must_not & set(seen))
        assert len(must) > 3 and len(must_not) > 3 and len(made - alive) > 10  # it was tested


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
    ((polls,),) = [history["items"]]  # consecutive routine sessions: one item, counted
    assert (polls["kind"], polls["count"]) == ("sessions", 2)
    assert polls["text"].startswith("2 DM sessions with nothing else recorded, the first at ")
    history = (await api.get(f"/devices/{DEV}/history", params={"offset": 3})).json()
    assert [(e["kind"], e["text"], e["count"]) for e in history["items"]] == [
        ("registered", "registered (accepted)", 1)
    ]
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
