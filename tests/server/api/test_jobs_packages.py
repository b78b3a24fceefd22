"""``/api/v1/packages`` and ``/api/v1/jobs``: a real package uploaded, jobs created, listed,
cancelled; a package in use cannot be deleted; every change audited."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from omadm.package.build import build_package
from omadm.server.registry import find_device
from omadm.server.store.models import Artifact, InventoryEntry, Job, utc_now

from .conftest import EXAMPLES, PUBLISHER_KEY, Api, problem

pytestmark = pytest.mark.anyio

DEV = "IMEI:490154203237518"
RAW = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def package(tmp_path: Path) -> Path:
    out = tmp_path / "hello-1.0.0.omp"
    build_package(EXAMPLES / "hello-package", out, signing_key=PUBLISHER_KEY)
    return out


async def upload(api: Api, package: Path) -> dict[str, object]:
    response = await api.post(
        "/packages", params={"filename": package.name}, content=package.read_bytes(), headers=RAW
    )
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


async def register(api: Api, device_id: str = DEV) -> None:
    body = {"device_id": device_id, "username": "dev", "password": "secret"}
    assert (await api.post("/devices", json=body)).status_code == 201


async def test_upload_list_show_and_delete_a_package(api: Api, package: Path) -> None:
    created = await upload(api, package)
    assert created["filename"] == "hello-1.0.0.omp"
    assert created["package_id"] == "com.example.hello-package" and created["version"] == "1.0.0"
    assert created["size"] == package.stat().st_size
    manifest = created["manifest"]
    assert isinstance(manifest, dict) and manifest["components"][0]["id"] == "com.example.hello"

    again = await api.post(
        "/packages", params={"filename": "x.omp"}, content=package.read_bytes(), headers=RAW
    )
    assert again.status_code == 200 and again.json()["id"] == created["id"]  # same bytes: same package

    shown = (await api.get(f"/packages/{created['id']}")).json()
    assert shown == created
    page = (await api.get("/packages", params={"package_id": "com.example.hello-package"})).json()
    assert page["total"] == 1 and [p["id"] for p in page["items"]] == [created["id"]]
    assert (await api.get("/packages", params={"version": "9.9"})).json()["total"] == 0

    body = problem(await api.post("/packages", content=b"not a package", headers=RAW), 422)
    assert body["detail"].startswith("not an acceptable omadm package")
    body = problem(await api.post("/packages", files={"file": ("a.omp", b"x")}), 415)
    assert "application/octet-stream" in body["detail"]
    problem(await api.post("/packages", "viewer", content=package.read_bytes(), headers=RAW), 403)
    problem(await api.get("/packages/999"), 404)
    problem(await api.get("/packages/abc"), 422)

    assert (await api.delete(f"/packages/{created['id']}")).status_code == 204
    problem(await api.get(f"/packages/{created['id']}"), 404)
    problem(await api.delete(f"/packages/{created['id']}"), 404)
    rows = await api.audit_rows()
    assert [(r.actor, r.action, r.target) for r in rows] == [
        ("operator-bot", "package.add", f"package {created['id']}"),
        ("operator-bot", "package.delete", f"package {created['id']}"),
    ]
    assert rows[0].detail["sha256"] == created["sha256"]


async def test_a_package_a_queued_job_uses_cannot_be_deleted(api: Api, package: Path) -> None:
    await register(api)
    artifact = await upload(api, package)
    response = await api.post(
        "/jobs", json={"device_id": DEV, "kind": "install", "artifact_id": artifact["id"]}
    )
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["params"]["artifact_id"] == artifact["id"]
    assert job["params"]["pkg_id"] == "com.example.hello-package"

    body = problem(await api.delete(f"/packages/{artifact['id']}"), 409)
    assert body["detail"] == f"artifact {artifact['id']} is still used by job {job['id']}"
    assert (await api.get(f"/packages/{artifact['id']}")).status_code == 200
    assert [r.action for r in await api.audit_rows()] == ["device.add", "package.add", "job.add"]

    assert (await api.post(f"/jobs/{job['id']}/cancel")).status_code == 200
    assert (await api.delete(f"/packages/{artifact['id']}")).status_code == 204
    async with api.sessions() as db:
        assert (await db.scalars(select(Artifact))).all() == []


async def test_create_list_show_and_cancel_jobs(api: Api) -> None:
    await register(api)
    await register(api, "IMEI:2")
    async with api.sessions() as db, db.begin():
        device = await find_device(db, DEV)
        assert device is not None
        db.add(
            InventoryEntry(
                device_pk=device.id,
                kind="deployed",
                node="hello",
                ident="com.example.hello",
                updated=utc_now(),
            )
        )

    created = []
    for body in (
        {"device_id": DEV, "kind": "install", "url": "https://pkgs.example.com/hello.omp", "pkg_id": "hello"},
        {"device_id": DEV, "kind": "deactivate", "component_id": "com.example.hello"},
        {"device_id": "IMEI:2", "kind": "refresh-inventory"},
        {"device_id": DEV, "kind": "remove-delivered", "node": "pkg1", "timeout": 60},
    ):
        response = await api.post("/jobs", json=body)
        assert response.status_code == 201, response.text
        created.append(response.json())
    assert [j["state"] for j in created] == ["queued"] * 4
    assert created[0]["params"]["url"] == "https://pkgs.example.com/hello.omp"
    assert created[3]["deadline"] is not None

    page = (await api.get("/jobs")).json()
    assert page["total"] == 4 and [j["id"] for j in page["items"]] == [j["id"] for j in reversed(created)]
    page = (await api.get("/jobs", params={"device": "IMEI:2"})).json()
    assert [j["kind"] for j in page["items"]] == ["refresh-inventory"]
    page = (await api.get("/jobs", params={"kind": "deactivate", "device": DEV})).json()
    assert [j["id"] for j in page["items"]] == [created[1]["id"]]
    page = (await api.get("/jobs", params={"limit": 1, "offset": 1})).json()
    assert page["total"] == 4 and [j["id"] for j in page["items"]] == [created[2]["id"]]
    assert (await api.get(f"/jobs/{created[0]['id']}")).json() == created[0]

    cancelled = (await api.post(f"/jobs/{created[0]['id']}/cancel")).json()
    assert cancelled["state"] == "cancelled" and cancelled["finished_at"] is not None
    assert "already cancelled" in problem(await api.post(f"/jobs/{created[0]['id']}/cancel"), 409)["detail"]
    page = (await api.get("/jobs", params={"state": "cancelled"})).json()
    assert [j["id"] for j in page["items"]] == [created[0]["id"]]
    async with api.sessions() as db, db.begin():
        sent = await db.get(Job, created[1]["id"])
        assert sent is not None
        sent.state = "sent"
    stopped = (await api.post(f"/jobs/{created[1]['id']}/cancel")).json()  # sent: no more sending
    assert stopped["state"] == "cancelled" and "while sent" in stopped["detail"]
    problem(await api.post("/jobs/999/cancel"), 404)
    problem(await api.get("/jobs/999"), 404)

    rows = await api.audit_rows()
    assert [(r.actor, r.action, r.target) for r in rows[2:]] == [
        *[("operator-bot", "job.add", f"job {j['id']}") for j in created],
        ("operator-bot", "job.cancel", f"job {created[0]['id']}"),
        ("operator-bot", "job.cancel", f"job {created[1]['id']}"),
    ]
    assert rows[2].detail["device_id"] == DEV and rows[2].detail["kind"] == "install"


async def test_jobs_are_refused_with_clear_problems(api: Api) -> None:
    await register(api)
    body = problem(
        await api.post("/jobs", json={"device_id": "IMEI:404", "kind": "install", "url": "http://x"}), 404
    )
    assert body["detail"] == "no device IMEI:404"
    body = problem(await api.post("/jobs", json={"device_id": DEV, "kind": "reboot"}), 422)
    assert body["errors"][0]["field"] == "body.kind"
    body = problem(await api.post("/jobs", json={"device_id": DEV, "kind": "install"}), 422)
    assert body["detail"] == "a install job needs an artifact_id or a url"
    body = problem(
        await api.post("/jobs", json={"device_id": DEV, "kind": "remove", "component_id": "nope"}), 422
    )
    assert "no deployed component 'nope'" in body["detail"]
    problem(await api.post("/jobs", json={"device_id": DEV, "kind": "install", "artifact_id": 999}), 404)
    problem(await api.post("/jobs", json={"device_id": DEV, "kind": "install", "surprise": 1}), 422)
    problem(await api.get("/jobs", params={"state": "lost"}), 422)
    assert (await api.post(f"/devices/{DEV}/reject")).status_code == 200
    body = problem(await api.post("/jobs", json={"device_id": DEV, "kind": "refresh-inventory"}), 409)
    assert "rejected" in body["detail"]
    assert [r.action for r in await api.audit_rows()] == ["device.add", "device.reject"]
    async with api.sessions() as db:
        assert (await db.scalars(select(Job))).all() == []


async def test_a_delete_waits_for_a_job_being_created_for_the_package(api: Api, package: Path) -> None:
    """The job's transaction share-locks the artifact: the delete waits, then sees the job."""
    await register(api)
    artifact = await upload(api, package)
    async with api.sessions() as db:
        await db.begin()
        locked = await db.get(Artifact, artifact["id"], with_for_update={"read": True})
        assert locked is not None
        device = await find_device(db, DEV)
        assert device is not None
        job = Job(
            device_pk=device.id,
            kind="install",
            params={"artifact_id": locked.id},
            correlator="omadm-race",
            created=utc_now(),
            updated=utc_now(),
        )
        db.add(job)
        await db.flush()
        deleting = asyncio.create_task(api.delete(f"/packages/{artifact['id']}"))
        await asyncio.sleep(0.5)
        assert not deleting.done()  # waiting for the job's transaction
        await db.commit()
    body = problem(await deleting, 409)
    assert body["detail"] == f"artifact {artifact['id']} is still used by job {job.id}"
