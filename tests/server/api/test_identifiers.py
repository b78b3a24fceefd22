"""Identifiers and text that once broke the API: any DevId is reachable, NUL is a 422.

A DevId is whatever the device says it is (``IMEI:...``, a serial with a ``/``, a name with
spaces or ``?``): registered, it must be shown, changed and deleted like any other. A NUL
character cannot be stored (PostgreSQL) or looked up (SQLite JSON paths): it is refused as
invalid input on every route, never answered with a 500.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from omadm.server.store.models import DEFAULT_AUTHORITY_PK, Device
from omadm.server.targets import Target

from .conftest import V1, Api, problem

pytestmark = pytest.mark.anyio

ODD_IDS = ["a/b", "x?y#z", "IMEI:1 2", "ü", "a/b/inventory/c", "%2F", "dev/"]


def path(device_id: str) -> str:
    return f"/devices/{quote(device_id, safe='')}"


@pytest.mark.parametrize("device_id", ODD_IDS)
async def test_every_device_id_is_reachable_on_every_device_route(api: Api, device_id: str) -> None:
    body = {"device_id": device_id, "username": "dev", "password": "secret"}
    assert (await api.post("/devices", json=body)).status_code == 201
    await api.post("/devices", json={**body, "device_id": "a"})  # a shorter DevId beside it

    shown = await api.get(path(device_id))
    assert shown.status_code == 200, shown.text
    assert shown.json()["device_id"] == device_id
    assert (await api.get(path(device_id) + "/inventory")).json() == []
    history = (await api.get(path(device_id) + "/history")).json()
    assert [e["kind"] for e in history["items"]] == ["registered"]
    assert (await api.post(path(device_id) + "/reject")).json()["state"] == "rejected"
    assert (await api.post(path(device_id) + "/accept")).json()["state"] == "accepted"
    assert (await api.put(path(device_id) + "/tags", json={"t": "1"})).json()["tags"] == {"t": "1"}
    patched = await api.http.patch(
        V1 + path(device_id), headers=api.auth("operator"), json={"password": "p2"}
    )
    assert patched.status_code == 200 and patched.json()["device_id"] == device_id
    listed = (await api.get("/devices", params={"q": device_id})).json()["items"]
    assert [d["device_id"] for d in listed] == [device_id]

    assert (await api.delete(path(device_id))).status_code == 204
    problem(await api.get(path(device_id)), 404)
    assert (await api.get("/devices/a")).status_code == 200  # the other one untouched


# ------------------------------------------------------------------ NUL characters


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _sample(spec: dict[str, Any], schema: dict[str, Any], depth: int = 0) -> Any:
    """A value of the schema's shape whose every string (and free key) holds a NUL."""
    schema = _resolve(spec, schema)
    for union in ("anyOf", "oneOf", "allOf"):
        if union in schema:
            options = [s for s in schema[union] if _resolve(spec, s).get("type") != "null"]
            return _sample(spec, options[0], depth)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "string":
        return "n\x00l"
    if kind in ("integer", "number"):
        return max(1, int(schema.get("minimum", 1)))
    if kind == "boolean":
        return False
    if kind == "array":
        return [_sample(spec, schema.get("items", {}), depth + 1)]
    if kind == "object" or "properties" in schema:
        if depth > 3:
            return {}
        value = {name: _sample(spec, sub, depth + 1) for name, sub in schema.get("properties", {}).items()}
        if not value and (schema.get("additionalProperties") or schema.get("patternProperties")):
            value = {"k\x00": "v"}
        return value
    return "n\x00l"


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), route, operation)
        for route, methods in spec["paths"].items()
        for method, operation in methods.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


def _nul_refused(response: Any, where: str) -> None:
    assert response.status_code == 422, f"{where}: {response.status_code} {response.text}"
    messages = [e["message"] for e in response.json()["errors"]]
    assert "holds a NUL character" in messages, f"{where}: {messages}"


async def test_a_nul_anywhere_in_any_route_is_a_422_naming_it(api: Api) -> None:
    spec = api.app.openapi()
    headers = {"Authorization": f"Bearer {api.tokens['admin']}"}
    walked = 0
    for method, route, operation in _operations(spec):
        params = operation.get("parameters", [])
        path_values = {
            p["name"]: ("1" if _resolve(spec, p["schema"]).get("type") == "integer" else "n%00l")
            for p in params
            if p["in"] == "path"
        }
        url = route.format(**path_values)
        if any(v == "n%00l" for v in path_values.values()):
            _nul_refused(await api.http.request(method, url, headers=headers), f"{method} {route} path")
        clean = route.format(**{name: "1" if v == "1" else "x" for name, v in path_values.items()})
        for query in (p["name"] for p in params if p["in"] == "query"):
            response = await api.http.request(method, clean, headers=headers, params={query: "n\x00l"})
            _nul_refused(response, f"{method} {route} ?{query}")
        content = operation.get("requestBody", {}).get("content", {})
        if "application/json" in content:
            body = _sample(spec, content["application/json"]["schema"])
            response = await api.http.request(method, clean, headers=headers, json=body)
            _nul_refused(response, f"{method} {route} body")
        walked += 1
    assert walked > 30  # every route of the API, not a few


async def test_a_nul_in_a_registration_is_refused_and_nothing_is_stored(api: Api) -> None:
    for field in ("device_id", "username", "password", "notify_address"):
        body = {"device_id": "IMEI:1", "username": "dev", "password": "secret", field: "a\x00b"}
        detail = problem(await api.post("/devices", json=body), 422)
        assert detail["errors"] == [{"field": f"body.{field}", "message": "holds a NUL character"}]
    body = {"device_id": "IMEI:1", "username": "dev", "password": "secret", "tags": {"s\x00": "v"}}
    problem(await api.post("/devices", json=body), 422)
    assert (await api.get("/devices")).json()["total"] == 0


# ------------------------------------------------------------------ DevInfo names


async def test_devinfo_filters_take_the_leaf_or_the_uri_a_device_reports(api: Api) -> None:
    for device_id in ("IMEI:1", "IMEI:2", "IMEI:3"):
        await api.post("/devices", json={"device_id": device_id, "username": "u", "password": "p"})
    async with api.sessions() as db, db.begin():
        reported = {  # as the DM endpoint stores a device's DevInfo: by URI
            "IMEI:1": {"./DevInfo/Man": "Acme", "./DevInfo/Mod": "W7"},
            "IMEI:2": {"./DevInfo/Man": "Acme", "./DevInfo/Mod": "W8"},
            "IMEI:3": {"Man": "Acme", "Mod": "W7"},  # by leaf, as an older import may have
        }
        for device_id, devinfo in reported.items():
            await db.execute(update(Device).where(Device.device_id == device_id).values(devinfo=devinfo))

    async def listed(*filters: str) -> list[str]:
        page = (await api.get("/devices", params=[("devinfo", f) for f in filters])).json()
        return [d["device_id"] for d in page["items"]]

    assert await listed("Mod=W7") == ["IMEI:1", "IMEI:3"]
    assert await listed("./DevInfo/Mod=W7") == ["IMEI:1", "IMEI:3"]
    assert await listed("Man=Acme", "./DevInfo/Mod=W8") == ["IMEI:2"]
    assert await listed("Mod=W9") == []
    # A campaign's target reads the same way (its preview counts what it would take).
    async with api.sessions() as db:
        for devinfo in ({"Mod": "W7"}, {"./DevInfo/Mod": "W7"}):
            where = Target.from_campaign({"devinfo": devinfo}).where(DEFAULT_AUTHORITY_PK, dialect(db))
            found = (await db.scalars(select(Device.device_id).where(where).order_by(Device.device_id))).all()
            assert list(found) == ["IMEI:1", "IMEI:3"]


def dialect(db: AsyncSession) -> str:
    return db.get_bind().dialect.name
