"""A device's life after registration: ``PATCH`` and ``DELETE /api/v1/devices/{device_id}``.

Credentials leak and change, notification addresses move, devices leave the fleet: each of
these is an audited change, with the same rules as at registration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from omadm.cli import app
from omadm.server.registry import create_job, find_device
from omadm.server.store.models import (
    Campaign,
    CampaignDevice,
    Device,
    DeviceAttribute,
    DeviceEvent,
    InventoryEntry,
    Job,
    JobKind,
    JobState,
)

from ..serverproc import ServerProcess
from .conftest import Api, problem

pytestmark = pytest.mark.anyio

DEV = "IMEI:490154203237518"


async def register(api: Api, device_id: str = DEV, **extra: Any) -> dict[str, Any]:
    body = {"device_id": device_id, "username": "dev", "password": "secret", **extra}
    response = await api.post("/devices", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_an_operator_changes_credentials_address_and_tags_and_it_is_audited(api: Api) -> None:
    await register(api, server_password="old-srv", tags={"site": "lab"})
    response = await api.http.patch(
        f"/api/v1/devices/{DEV}",
        headers=api.auth("operator"),
        json={
            "username": "dev2",
            "password": "new-secret",
            "auth": "hmac",
            "server_password": "new-srv",
            "notify_address": "udp://10.0.0.9:2948",
            "tags": {"site": "field", "ring": "beta"},
        },
    )
    assert response.status_code == 200, response.text
    device = response.json()
    assert device["username"] == "dev2" and device["auth"] == "hmac"
    assert device["notify_address"] == "udp://10.0.0.9:2948"
    assert device["tags"] == {"site": "field", "ring": "beta"}
    assert device["generated_server_password"] is None
    assert (await api.get(f"/devices/{DEV}")).json()["tags"] == {"site": "field", "ring": "beta"}
    async with api.sessions() as db:
        stored = await find_device(db, DEV)
        assert stored is not None
        assert (stored.password, stored.server_password, stored.auth_type) == (
            "new-secret",
            "new-srv",
            "syncml:auth-MAC",
        )
        kinds = (await db.scalars(select(DeviceEvent.kind).where(DeviceEvent.device_pk == stored.id))).all()
        assert "updated" in kinds
        tags = (
            await db.execute(
                select(DeviceAttribute.name, DeviceAttribute.value).where(
                    DeviceAttribute.device_pk == stored.id, DeviceAttribute.kind == "tag"
                )
            )
        ).all()
        assert sorted(tags) == [("ring", "beta"), ("site", "field")]  # filters see the new tags
    rows = await api.audit_rows()
    entry = rows[-1]
    assert (entry.actor, entry.action, entry.target) == ("operator-bot", "device.update", DEV)
    assert entry.detail["password"] == "changed" and entry.detail["server_password"] == "changed"
    assert entry.detail["auth"] == "hmac" and entry.detail["username"] == "dev2"
    assert "new-secret" not in str(entry.detail) and "new-srv" not in str(entry.detail)

    # Only what is given changes; a PATCH that changes nothing is not audited.
    response = await api.http.patch(
        f"/api/v1/devices/{DEV}",
        headers=api.auth("operator"),
        json={"tags": {"site": "field", "ring": "beta"}},
    )
    assert response.status_code == 200 and response.json()["username"] == "dev2"
    assert len(await api.audit_rows()) == len(rows)


async def test_an_update_follows_the_rules_of_registration(api: Api) -> None:
    await register(api)

    async def patch(body: dict[str, Any], role: str = "operator") -> Any:
        return await api.http.patch(f"/api/v1/devices/{DEV}", headers=api.auth(role), json=body)

    problem(await patch({"password": "x"}, role="viewer"), 403)
    assert "auth must be one of" in problem(await patch({"auth": "sha1"}), 422)["detail"]
    assert (
        "notification address"
        in problem(await patch({"notify_address": "file:///etc/passwd"}), 422)["detail"]
    )
    detail = problem(await patch({"notify_address": "http://169.254.169.254/latest"}), 422)["detail"]
    assert "169.254.169.254" in detail
    problem(await patch({"password": ""}), 422)
    problem(await patch({"state": "accepted"}), 422)
    unknown = await api.http.patch("/api/v1/devices/IMEI:404", headers=api.auth("operator"), json={})
    assert problem(unknown, 404)["detail"] == "no device IMEI:404"

    # A notification address without a server password: one is made and shown this once.
    response = await patch({"notify_address": "udp://10.0.0.2:2948"})
    assert response.status_code == 200, response.text
    generated = response.json()["generated_server_password"]
    assert generated and response.json()["has_server_password"] is True
    assert (await api.get(f"/devices/{DEV}")).json().get("generated_server_password") is None
    # Removing it while the address stays is refused; removing both is not.
    assert "server password" in problem(await patch({"server_password": ""}), 422)["detail"]
    response = await patch({"server_password": "", "notify_address": ""})
    assert response.status_code == 200, response.text
    assert response.json()["has_server_password"] is False and response.json()["notify_address"] == ""


async def test_delete_removes_the_device_with_everything_that_is_its_own(api: Api) -> None:
    await register(api, tags={"site": "lab"})
    await register(api, "IMEI:2")
    async with api.sessions() as db, db.begin():
        device = await find_device(db, DEV)
        assert device is not None
        pk = device.id
        await create_job(db, device, JobKind.REFRESH_INVENTORY, {})  # queued: goes with it
        done = await create_job(db, device, JobKind.REFRESH_INVENTORY, {})
        done.state = JobState.SUCCEEDED.value
        db.add(InventoryEntry(device_pk=pk, kind="deployed", node="app", ident="com.example.app"))
        campaign = Campaign(name="c", kind="install", success_threshold=1.0, error_threshold=0.5)
        db.add(campaign)
        await db.flush()
        db.add(CampaignDevice(campaign_id=campaign.id, device_pk=pk, wave=0))

    problem(await api.delete(f"/devices/{DEV}", role="viewer"), 403)
    response = await api.delete(f"/devices/{DEV}")
    assert response.status_code == 204, response.text
    problem(await api.get(f"/devices/{DEV}"), 404)
    problem(await api.delete(f"/devices/{DEV}"), 404)
    assert (await api.get("/devices/IMEI:2")).status_code == 200  # the others stay
    async with api.sessions() as db:
        for model in (Job, InventoryEntry, DeviceEvent, CampaignDevice, DeviceAttribute):
            left = await db.scalar(select(func.count()).select_from(model).where(model.device_pk == pk))
            assert left == 0, model.__name__
        assert await db.scalar(select(func.count()).select_from(Campaign)) == 1  # the campaign stays
    entry = (await api.audit_rows())[-1]
    assert (entry.action, entry.target) == ("device.delete", DEV)
    assert entry.detail["jobs"] == 2 and entry.detail["campaigns"] == 1

    # The DevId can be registered again, as a new device.
    assert (await register(api))["state"] == "accepted"


@pytest.mark.parametrize("state", [JobState.SENT, JobState.ACCEPTED])
async def test_delete_is_refused_while_the_device_works_on_a_job(api: Api, state: JobState) -> None:
    await register(api)
    async with api.sessions() as db, db.begin():
        device = await find_device(db, DEV)
        assert device is not None
        job = await create_job(db, device, JobKind.REFRESH_INVENTORY, {})
        job.state = state.value
        job_id = job.id
    body = problem(await api.delete(f"/devices/{DEV}"), 409)
    assert f"job(s) {job_id}" in body["detail"]
    assert (await api.get(f"/devices/{DEV}")).status_code == 200
    async with api.sessions() as db, db.begin():
        await db.execute(update(Job).where(Job.id == job_id).values(state=JobState.FAILED.value))
    assert (await api.delete(f"/devices/{DEV}")).status_code == 204
    async with api.sessions() as db:
        assert await db.scalar(select(func.count()).select_from(Device)) == 0


# ------------------------------------------------------------------ the command lines


def _run(args: list[str], stdin: str | None = None) -> tuple[int, str]:
    done = CliRunner().invoke(app, args, input=stdin)
    return done.exit_code, done.output


@pytest.mark.e2e
def test_ctl_updates_and_deletes_any_device_id(tmp_path: Path) -> None:
    proc = ServerProcess(
        f"sqlite:///{tmp_path / 'srv' / 'omadm-server.sqlite'}", tmp_path / "srv", tmp_path / "log"
    )
    proc.run("migrate")
    token = proc.run("token", "add", "ops", "--role", "operator").split()[-1]
    proc.start()
    try:
        ctl = ["ctl", "--url", proc.url, "--token", token]
        for odd in ("a/b", "x?y#z", "IMEI:1 2", "ü"):
            code, out = _run([*ctl, "devices", "add", odd, "--username", "u", "--password", "p"])
            assert code == 0, out
            code, out = _run([*ctl, "devices", "show", odd, "--json"])
            assert code == 0 and json.loads(out)["device"]["device_id"] == odd, out
            code, out = _run([*ctl, "devices", "tag", odd, "ring=beta"])
            assert code == 0 and "ring=beta" in out, out
            code, out = _run([*ctl, "devices", "update", odd, "--password", "p2", "--auth", "hmac", "--json"])
            assert code == 0 and json.loads(out)["auth"] == "hmac", out
            code, out = _run([*ctl, "devices", "update", odd, "--notify", "udp://10.0.0.2:2948"])
            assert code == 0 and "server password (shown once): " in out, out
            code, out = _run([*ctl, "devices", "delete", odd], stdin="n\n")
            assert code == 1 and "not deleted" in out
            code, out = _run([*ctl, "devices", "delete", odd, "--yes"])
            assert code == 0 and f"device {odd} deleted" in out, out
            code, out = _run([*ctl, "devices", "show", odd])
            assert code == 1 and f"404: no device {odd}" in out, out
        code, out = _run([*ctl, "devices", "update", "IMEI:404"])
        assert code == 2 and "nothing to change" in out
        code, out = _run([*ctl, "devices", "update", "IMEI:404", "--password", "x"])
        assert code == 1 and "404: no device IMEI:404" in out
    finally:
        proc.stop()


def test_server_cli_updates_and_deletes_a_device(tmp_path: Path) -> None:
    server = ["server", "--data-dir", str(tmp_path / "srv")]
    assert _run([*server, "migrate"])[0] == 0
    assert _run([*server, "device", "add", "a/b", "--username", "u", "--password", "p"])[0] == 0
    code, out = _run(
        [*server, "device", "update", "a/b", "--password", "p2", "--auth", "hmac", "--tag", "s=1"]
    )
    assert code == 0 and out == "device a/b: password, auth, tags changed\n", out
    code, out = _run([*server, "device", "update", "a/b", "--notify", "udp://10.0.0.2:2948"])
    assert code == 1 and "needs a server password" in out
    code, out = _run([*server, "device", "update", "a/b", "--notify", "http://169.254.169.254/"])
    assert code == 1 and "169.254.169.254" in out
    code, out = _run([*server, "device", "update", "a/b", "--auth", "sha1"])
    assert code == 1 and "auth must be one of" in out
    code, out = _run([*server, "device", "update", "a/b", "--tag", "oops"])
    assert code == 1 and "a tag is key=value" in out
    code, out = _run([*server, "device", "show", "a/b"])
    assert code == 0 and "history" in out and "updated" in out
    code, out = _run([*server, "device", "delete", "a/b", "--yes"])
    assert code == 0 and out == "device a/b deleted (with 0 job(s))\n", out
    code, out = _run([*server, "device", "delete", "a/b", "--yes"])
    assert code == 1 and "no device a/b" in out
