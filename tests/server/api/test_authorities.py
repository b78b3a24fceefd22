"""Management authorities: two DM server identities sharing a server, and a device.

Authorities ``a`` and ``b`` are made through ``/api/v1/authorities`` by the default
authority's admin, each with a viewer, an operator and an admin token. The same DevId is
registered in both with different credentials; each authority's tokens see only their own
devices, jobs, packages, campaigns and audit entries, and anything of the other is a 404.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from omadm.package.build import build_package
from omadm.server.registry import find_device, resolve_authority
from omadm.server.store.models import (
    DEFAULT_AUTHORITY_PK,
    Artifact,
    Device,
    InventoryEntry,
)

from .conftest import EXAMPLES, PUBLISHER_KEY, PUBLISHER_PEM, Api, problem

pytestmark = pytest.mark.anyio

DEV = "IMEI:490154203237518"
RAW = {"Content-Type": "application/octet-stream"}
COMPONENT = "com.example.hello"


@pytest.fixture
def package(tmp_path: Path) -> Path:
    out = tmp_path / "hello-1.0.0.omp"
    build_package(EXAMPLES / "hello-package", out, signing_key=PUBLISHER_KEY)
    return out


@pytest.fixture
async def two(api: Api) -> Api:
    """Authorities a (ServerID dm-a) and b (dm-b), tokens "a:viewer" ... "b:admin" in api.tokens."""
    for name in ("a", "b"):
        response = await api.post(
            "/authorities",
            role="admin",
            json={"name": name, "server_id": f"dm-{name}", "description": f"operator {name.upper()}"},
        )
        assert response.status_code == 201, response.text
        for role in ("viewer", "operator", "admin"):
            response = await api.post(
                "/tokens", role="admin", json={"name": f"{name}-{role}", "role": role, "authority": name}
            )
            assert response.status_code == 201, response.text
            assert response.json()["authority"] == name
            api.tokens[f"{name}:{role}"] = response.json()["token"]
        trusted = await api.post(
            "/publishers", role=f"{name}:admin", json={"name": "tests", "public_key": PUBLISHER_PEM}
        )
        assert trusted.status_code == 201, trusted.text
    return api


async def register(api: Api, authority: str, username: str, device_id: str = DEV) -> None:
    body = {"device_id": device_id, "username": username, "password": f"{username}-secret"}
    response = await api.post("/devices", role=f"{authority}:operator", json=body)
    assert response.status_code == 201, response.text


async def upload(api: Api, package: Path, role: str) -> int:
    response = await api.post(
        "/packages", role=role, params={"filename": package.name}, content=package.read_bytes(), headers=RAW
    )
    assert response.status_code == 201, response.text
    package_id: int = response.json()["id"]
    return package_id


async def test_the_default_admin_creates_lists_shows_and_deletes_authorities(api: Api) -> None:
    response = await api.post("/authorities", role="admin", json={"name": "a", "server_id": "dm-a"})
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["name"] == "a" and created["server_id"] == "dm-a"
    assert created["devices"] == created["tokens"] == created["packages"] == created["campaigns"] == 0

    listed = (await api.get("/authorities", role="admin")).json()
    assert [(a["name"], a["server_id"]) for a in listed] == [("default", None), ("a", "dm-a")]
    assert listed[0]["tokens"] == 3  # the fixture's viewer, operator and admin
    assert (await api.get("/authorities/a", role="admin")).json()["server_id"] == "dm-a"
    problem(await api.get("/authorities/nope", role="admin"), 404)

    same_name = await api.post("/authorities", role="admin", json={"name": "a", "server_id": "dm-x"})
    assert "exists already" in problem(same_name, 409)["detail"]
    same_id = await api.post("/authorities", role="admin", json={"name": "x", "server_id": "dm-a"})
    assert "authority 'a'" in problem(same_id, 409)["detail"]
    own = await api.post("/authorities", role="admin", json={"name": "x", "server_id": "omadm"})
    assert "the server's own" in problem(own, 409)["detail"]
    problem(await api.post("/authorities", role="operator", json={"name": "x", "server_id": "x"}), 403)

    assert (await api.delete("/authorities/a", role="admin")).status_code == 204
    assert (
        "cannot be deleted" in problem(await api.delete("/authorities/default", role="admin"), 409)["detail"]
    )
    actions = [(r.action, r.target, r.authority_pk) for r in await api.audit_rows()]
    assert ("authority.add", "authority a", DEFAULT_AUTHORITY_PK) in actions
    assert ("authority.delete", "authority a", DEFAULT_AUTHORITY_PK) in actions


async def test_only_admins_of_the_default_authority_manage_authorities(two: Api) -> None:
    refused = problem(await two.get("/authorities", role="a:admin"), 403)
    assert "default" in refused["detail"]
    problem(await two.post("/authorities", role="a:admin", json={"name": "c", "server_id": "c"}), 403)
    # A's admin makes tokens of its own authority only, and sees only those.
    other = await two.post("/tokens", role="a:admin", json={"name": "x", "role": "viewer", "authority": "b"})
    problem(other, 403)
    own = await two.post("/tokens", role="a:admin", json={"name": "a-bot", "role": "viewer"})
    assert own.status_code == 201 and own.json()["authority"] == "a"
    names = {t["name"] for t in (await two.get("/tokens", role="a:admin")).json()}
    assert names == {"a-viewer", "a-operator", "a-admin", "a-bot"}
    everyone = (await two.get("/tokens", role="admin")).json()
    assert {t["authority"] for t in everyone} == {"default", "a", "b"}
    b_viewer = next(t["id"] for t in everyone if t["name"] == "b-viewer")
    problem(await two.delete(f"/tokens/{b_viewer}", role="a:admin"), 404)  # not revealed


async def test_the_same_device_in_two_authorities_keeps_its_own_credentials(two: Api) -> None:
    await register(two, "a", "alice")
    await register(two, "b", "bob")
    conflict = await two.post(
        "/devices", role="a:operator", json={"device_id": DEV, "username": "u", "password": "p"}
    )
    assert "already registered" in problem(conflict, 409)["detail"]

    for authority, username in (("a", "alice"), ("b", "bob")):
        page = (await two.get("/devices", role=f"{authority}:viewer")).json()
        assert [(d["device_id"], d["username"]) for d in page["items"]] == [(DEV, username)]
        assert (await two.get(f"/devices/{DEV}", role=f"{authority}:viewer")).json()["username"] == username
    assert (await two.get("/devices", role="viewer")).json()["total"] == 0  # the default sees neither
    problem(await two.get(f"/devices/{DEV}", role="viewer"), 404)

    async with two.sessions() as db:
        rows = (await db.scalars(select(Device).where(Device.device_id == DEV).order_by(Device.id))).all()
        assert [(r.username, r.password) for r in rows] == [("alice", "alice-secret"), ("bob", "bob-secret")]
        a = await resolve_authority(db, "dm-a", configured_server_id="omadm")
        b = await resolve_authority(db, "b", configured_server_id="omadm")  # by name too
        default = await resolve_authority(db, "omadm", configured_server_id="omadm")
        assert a is not None and b is not None and default is not None
        assert (a.name, b.name, default.id) == ("a", "b", DEFAULT_AUTHORITY_PK)
        assert await resolve_authority(db, "dm-unknown", configured_server_id="omadm") is None
        in_a = await find_device(db, DEV, authority_pk=a.id)
        in_b = await find_device(db, DEV, authority_pk=b.id)
        assert in_a is not None and in_b is not None and in_a.id != in_b.id
        assert await find_device(db, DEV) is None  # not in the default authority


async def test_jobs_and_packages_are_the_authoritys_own(two: Api, package: Path) -> None:
    await register(two, "a", "alice")
    await register(two, "b", "bob")
    a_package = await upload(two, package, "a:operator")
    b_package = await upload(two, package, "b:operator")  # the same bytes: B's own package
    assert a_package != b_package
    for role, mine in (("a:viewer", a_package), ("b:viewer", b_package)):
        listed = (await two.get("/packages", role=role)).json()
        assert [p["id"] for p in listed["items"]] == [mine] and listed["total"] == 1
    problem(await two.get(f"/packages/{a_package}", role="b:viewer"), 404)

    job = {"device_id": DEV, "kind": "install", "artifact_id": a_package}
    refused = problem(await two.post("/jobs", role="b:operator", json=job), 404)  # A's package
    assert refused["detail"] == f"no artifact {a_package}"
    problem(await two.post("/jobs", role="a:viewer", json=job), 403)  # a viewer changes nothing
    created = await two.post("/jobs", role="a:operator", json=job)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    problem(await two.get(f"/jobs/{job_id}", role="b:viewer"), 404)
    problem(await two.post(f"/jobs/{job_id}/cancel", role="b:operator"), 404)
    assert (await two.get("/jobs", role="b:viewer")).json()["total"] == 0
    assert [j["id"] for j in (await two.get("/jobs", role="a:viewer")).json()["items"]] == [job_id]
    assert (await two.get("/jobs", role="a:viewer", params={"device": DEV})).json()["total"] == 1

    # B deletes its package: the blob A's package shares stays.
    problem(await two.delete(f"/packages/{a_package}", role="b:operator"), 404)
    assert (await two.delete(f"/packages/{b_package}", role="b:operator")).status_code == 204
    async with two.sessions() as db:
        kept = await db.get(Artifact, a_package)
        assert kept is not None
    storage = two.app.state.storage
    assert await storage.exists(kept.storage_key)


async def test_campaigns_target_only_the_authoritys_devices(two: Api, package: Path) -> None:
    await register(two, "a", "alice")
    await register(two, "b", "bob")
    await register(two, "b", "bob", device_id="IMEI:2")
    a_package = await upload(two, package, "a:operator")
    b_package = await upload(two, package, "b:operator")
    async with two.sessions() as db, db.begin():
        for device in (await db.scalars(select(Device))).all():
            db.add(
                InventoryEntry(
                    device_pk=device.id, kind="deployed", node="c0", ident=COMPONENT, version="0.9"
                )
            )

    def campaign(artifact: int) -> dict[str, object]:
        return {
            "name": "hello",
            "kind": "update",
            "artifact_id": artifact,
            "target": {"devices": [DEV, "IMEI:2"]},
        }

    problem(await two.post("/campaigns", role="b:operator", json=campaign(a_package)), 404)
    made = await two.post("/campaigns", role="b:operator", json=campaign(b_package))
    assert made.status_code == 201, made.text
    assert made.json()["wave_counters"][0]["size"] == 2  # B's two devices, not A's
    b_campaign = made.json()["id"]
    a_made = await two.post("/campaigns", role="a:operator", json=campaign(a_package))
    assert a_made.status_code == 201, a_made.text
    assert a_made.json()["wave_counters"][0]["size"] == 1  # the same DevId, A's registration only

    problem(await two.get(f"/campaigns/{b_campaign}", role="a:viewer"), 404)
    problem(await two.post(f"/campaigns/{b_campaign}/start", role="a:operator"), 404)
    assert [c["id"] for c in (await two.get("/campaigns", role="a:viewer")).json()["items"]] == [
        a_made.json()["id"]
    ]
    started = await two.post(f"/campaigns/{b_campaign}/start", role="b:operator")
    assert started.status_code == 200, started.text
    jobs = (await two.get("/jobs", role="b:viewer")).json()["items"]
    assert len(jobs) == 2 and {j["campaign_id"] for j in jobs} == {b_campaign}
    assert (await two.get("/jobs", role="a:viewer")).json()["total"] == 0


async def test_audit_entries_carry_the_authority_and_the_actor(two: Api) -> None:
    await register(two, "a", "alice")
    await register(two, "b", "bob")
    await two.post(f"/devices/{DEV}/reject", role="b:operator")
    a_log = (await two.get("/audit", role="a:admin")).json()["items"]
    b_log = (await two.get("/audit", role="b:admin")).json()["items"]
    assert {e["authority"] for e in a_log} == {"a"} and {e["authority"] for e in b_log} == {"b"}
    assert [(e["actor"], e["action"], e["target"]) for e in a_log if e["action"].startswith("device")] == [
        ("a-operator", "device.add", DEV)
    ]
    assert [(e["actor"], e["action"]) for e in b_log if e["action"].startswith("device")] == [
        ("b-operator", "device.reject"),
        ("b-operator", "device.add"),
    ]
    # The tokens the default admin made for A are in A's log, under that admin's name.
    assert ("admin-bot", "token.add", "token a-viewer") in {
        (e["actor"], e["action"], e["target"]) for e in a_log
    }
    default_log = (await two.get("/audit", role="admin")).json()["items"]
    assert {e["action"] for e in default_log} == {"authority.add"}


async def test_an_authority_that_owns_anything_cannot_be_deleted(two: Api) -> None:
    await register(two, "b", "bob")
    refused = problem(await two.delete("/authorities/b", role="admin"), 409)
    assert "1 devices" in refused["detail"] and "3 tokens" in refused["detail"]
    assert (
        await two.post("/authorities", role="admin", json={"name": "c", "server_id": "dm-c"})
    ).status_code == 201
    assert (await two.delete("/authorities/c", role="admin")).status_code == 204
    problem(await two.get("/authorities/c", role="admin"), 404)


async def test_a_package_used_by_a_campaign_not_over_cannot_be_deleted(api: Api, package: Path) -> None:
    body = {"device_id": DEV, "username": "u", "password": "p"}
    assert (await api.post("/devices", json=body)).status_code == 201
    package_id = await upload(api, package, "operator")
    made = await api.post(
        "/campaigns",
        json={"name": "hello", "kind": "install", "artifact_id": package_id, "all_devices": True},
    )
    assert made.status_code == 201, made.text
    campaign_id = made.json()["id"]
    refused = problem(await api.delete(f"/packages/{package_id}"), 409)
    assert refused["detail"] == f"artifact {package_id} is still used by campaign {campaign_id} (draft)"
    assert (await api.post(f"/campaigns/{campaign_id}/cancel")).status_code == 200
    assert (await api.delete(f"/packages/{package_id}")).status_code == 204
