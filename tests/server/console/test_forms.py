"""The console's forms: register a device, upload a package, queue a job, preview then create
and start a campaign; each through the REST API (audited), refused errors shown on the form
with the values kept, and nothing shown to a role that could only be refused."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from omadm.server.api.schemas import CampaignCreate
from omadm.server.console.client import ApiClient
from omadm.server.store.models import Device, InventoryEntry

from .conftest import Browser, Console

pytestmark = pytest.mark.anyio

DEV = "IMEI:490154203237518"


async def add_device(console: Console, device_id: str, **extra: Any) -> None:
    body = {"device_id": device_id, "username": "dev", "password": "secret", **extra}
    assert (await console.api.post("/devices", json=body)).status_code == 201


async def upload(browser: Browser, package: Path, *, csrf: str | None = None) -> Any:
    """The upload form as a browser posts it: the CSRF field first, then the file."""
    return await browser.http.post(
        "/console/packages/new",
        data={"csrf": browser.csrf if csrf is None else csrf},
        files={"package": (package.name, package.read_bytes(), "application/octet-stream")},
    )


def hidden(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, page
    return html.unescape(found[1])


# ------------------------------------------------------------------ what each role is shown


async def test_each_role_sees_only_what_it_may_do(console: Console) -> None:
    await add_device(console, DEV)
    links = {
        "/console/devices": 'href="/console/new-device"',
        "/console/packages": 'href="/console/packages/new"',
        "/console/campaigns": 'href="/console/campaigns/new"',
        f"/console/devices/{DEV}": 'action="/console/devices/IMEI%3A490154203237518/jobs"',
    }
    for role in ("viewer", "operator", "admin"):
        browser = await console.login(role)
        for url, link in links.items():
            page = (await browser.get(url)).text
            assert (link in page) is (role != "viewer"), (role, url)
            # The audit log is for admins: an operator was shown a link to a 403.
            assert ('href="/console/audit"' in page) is (role == "admin"), (role, url)
            if role == "viewer":  # no form that changes anything, but the logout
                assert page.count('method="post"') == 1 and 'action="/console/logout"' in page, url
    viewer = await console.login("viewer")
    for form in ("new-device", "packages/new", "campaigns/new"):
        response = await viewer.get(f"/console/{form}")
        assert response.status_code == 403, form
        assert "needs the <code>operator</code> role; this token is a viewer" in response.text
        assert 'method="post" action="/console/' + form not in response.text


# ------------------------------------------------------------------ register a device


async def test_an_operator_registers_a_device(console: Console) -> None:
    browser = await console.login("operator")
    page = (await browser.get("/console/new-device")).text
    for field in ("device_id", "username", "password", "auth", "server_password", "tags", "notify_address"):
        assert f'name="{field}"' in page, field
    form = {
        "device_id": DEV,
        "username": "dev1",
        "password": "s3cret",
        "auth": "hmac",
        "server_password": "srv-s3cret",
        "tags": "ring=beta, region = eu",
        "notify_address": "udp://10.0.0.7:2948",
    }
    response = await browser.post("/console/new-device", form)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/devices/IMEI%3A490154203237518"
    page = (await browser.follow(response)).text
    assert f"Device {DEV} registered." in page and "ring=beta" in page and "udp://10.0.0.7:2948" in page

    shown = (await console.api.get(f"/devices/{DEV}")).json()
    assert shown["state"] == "accepted" and shown["auth"] == "hmac" and shown["username"] == "dev1"
    assert shown["has_server_password"] and shown["tags"] == {"ring": "beta", "region": "eu"}
    rows = [(r.actor, r.action, r.target) for r in await console.api.audit_rows()]
    assert ("operator-bot", "device.add", DEV) in rows


async def test_a_server_password_the_api_made_is_shown_once_on_a_page_of_its_own(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device registered with a notification address and no server password gets one made
    by the API, which answers it once (``generated_server_password``): the console shows it
    on the answer's page, never in a redirect's cookie nor on the device's page."""
    post, made = ApiClient.post, []

    async def api_that_makes_one(self: ApiClient, path: str, json: dict[str, Any] | None = None) -> Any:
        found = await post(self, path, json)  # (an API that makes none yet: pretend it does)
        if path == "/devices" and json and json["notify_address"] and not json["server_password"]:
            made.append(found.setdefault("generated_server_password", "made-by-the-server-0123"))
        return found

    monkeypatch.setattr(ApiClient, "post", api_that_makes_one)
    browser = await console.login("operator")
    await browser.get("/console/new-device")
    form = {"device_id": DEV, "username": "dev1", "password": "pw", "notify_address": "udp://10.0.0.7:2948"}
    response = await browser.post("/console/new-device", form)
    assert response.status_code == 201 and "set-cookie" not in response.headers
    assert response.headers["cache-control"] == "no-store"
    assert len(made) == 1 and made[0]
    assert f'<code class="secret">{made[0]}</code>' in response.text
    assert "it is not shown again" in response.text
    assert 'href="/console/devices/IMEI%3A490154203237518"' in response.text
    assert made[0] not in (await browser.get(f"/console/devices/{DEV}")).text

    plain = {**form, "device_id": "IMEI:2", "notify_address": ""}
    response = await browser.post("/console/new-device", plain)
    assert response.status_code == 303  # nothing made: the usual redirect


async def test_a_refused_registration_shows_the_form_again_with_the_values_but_not_the_passwords(
    console: Console,
) -> None:
    await add_device(console, DEV)
    browser = await console.login("operator")
    await browser.get("/console/new-device")
    form = {"device_id": DEV, "username": "dev1", "password": "pw-XYZ", "server_password": "srv-XYZ"}
    response = await browser.post("/console/new-device", {**form, "tags": "ring=beta"})
    assert response.status_code == 409, response.text
    assert 'role="alert"' in response.text and DEV in response.text
    assert f'value="{DEV}"' in response.text and 'value="ring=beta"' in response.text
    assert "pw-XYZ" not in response.text and "srv-XYZ" not in response.text

    response = await browser.post("/console/new-device", {**form, "device_id": "IMEI:2", "tags": "ring"})
    assert response.status_code == 422
    assert "<code>tags</code>: &#39;ring&#39; is not name=value" in response.text
    response = await browser.post("/console/new-device", {**form, "device_id": "IMEI:2", "auth": "rot13"})
    assert response.status_code == 422 and 'role="alert"' in response.text
    assert (await console.api.get("/devices/IMEI:2")).status_code == 404

    refused = await browser.post("/console/new-device", {**form, "device_id": "IMEI:3", "csrf": "0" * 64})
    assert refused.status_code == 403 and "CSRF check failed" in refused.text
    assert (await console.api.get("/devices/IMEI:3")).status_code == 404


# ------------------------------------------------------------------ upload a package


async def test_an_operator_uploads_a_package_as_a_browser_sends_a_file(
    console: Console, package: Path
) -> None:
    browser = await console.login("operator")
    page = (await browser.get("/console/packages/new")).text
    assert 'enctype="multipart/form-data"' in page and 'type="file" name="package"' in page
    assert page.index('name="csrf"', page.index("/console/packages/new")) < page.index('name="package"')

    response = await upload(browser, package)
    assert response.status_code == 303, response.text
    found = (await console.api.get("/packages")).json()["items"]
    assert len(found) == 1 and found[0]["filename"] == package.name
    assert found[0]["size"] == package.stat().st_size
    assert response.headers["location"] == f"/console/packages/{found[0]['id']}"
    page = (await browser.follow(response)).text
    assert f"Package {found[0]['id']} ({package.name}) uploaded." in page and found[0]["sha256"] in page

    again = await browser.follow(await upload(browser, package))
    assert "these bytes were uploaded before" in again.text
    assert (await console.api.get("/packages")).json()["total"] == 1
    assert [r.action for r in await console.api.audit_rows()].count("package.add") == 1


async def test_a_bad_upload_is_refused_on_the_form(console: Console, tmp_path: Path) -> None:
    browser = await console.login("operator")
    await browser.get("/console/packages/new")
    junk = tmp_path / "junk.omp"
    junk.write_bytes(b"not a package at all")
    response = await upload(browser, junk)
    assert response.status_code == 422, response.text
    assert 'role="alert"' in response.text and 'type="file" name="package"' in response.text

    nothing = await browser.http.post(
        "/console/packages/new",
        data={"csrf": browser.csrf},
        files={"package": ("", b"", "application/octet-stream")},
    )
    assert nothing.status_code == 422 and "choose a package file" in nothing.text

    assert (await upload(browser, junk, csrf="0" * 64)).status_code == 403
    not_multipart = await browser.post("/console/packages/new", {"package": "x"})
    assert not_multipart.status_code == 400 and "multipart/form-data" in not_multipart.text
    assert (await console.api.get("/packages")).json()["total"] == 0


async def test_an_upload_whose_csrf_field_comes_after_the_file_is_refused(
    console: Console, package: Path
) -> None:
    """The file is passed on as it arrives: its CSRF field must have been seen before it."""
    browser = await console.login("operator")
    await browser.get("/console/packages/new")
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="package"; filename="{package.name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + package.read_bytes()
        + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{browser.csrf}'
        f"\r\n--{boundary}--\r\n".encode()
    )
    response = await browser.http.post(
        "/console/packages/new",
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 403 and "CSRF check failed" in response.text
    assert (await console.api.get("/packages")).json()["total"] == 0


async def test_a_viewer_upload_is_refused_by_the_api(console: Console, package: Path) -> None:
    browser = await console.login("viewer")
    await browser.get("/console/devices")  # the CSRF token of the session
    response = await upload(browser, package)
    assert response.status_code == 403 and "this needs operator" in response.text
    assert (await console.api.get("/packages")).json()["total"] == 0


# ------------------------------------------------------------------ a job for a device


async def test_an_operator_queues_jobs_from_the_device_page(console: Console, package: Path) -> None:
    await add_device(console, DEV)
    async with console.api.sessions() as db, db.begin():
        pk = await db.scalar(select(Device.id).where(Device.device_id == DEV))
        assert pk is not None
        db.add(InventoryEntry(device_pk=pk, kind="deployed", node="c0", ident="com.x", version="0.9"))
    browser = await console.login("operator")
    artifact = (await browser.follow(await upload(browser, package))).url.path.rsplit("/", 1)[-1]
    page = (await browser.get(f"/console/devices/{DEV}")).text
    assert f'<option value="{artifact}">#{artifact} {package.name}' in page
    assert '<option value="com.x">' in page  # the components it reported, offered
    url = f"/console/devices/{DEV}/jobs"

    response = await browser.post(url, {"kind": "install", "artifact_id": artifact, "component_id": "x"})
    assert response.status_code == 303 and response.headers["location"].startswith("/console/jobs/")
    page = (await browser.follow(response)).text
    job_id = response.headers["location"].rsplit("/", 1)[-1]
    assert f"Job {job_id} queued: install on {DEV}." in page
    job = (await console.api.get(f"/jobs/{job_id}")).json()
    assert job["kind"] == "install" and job["params"]["artifact_id"] == int(artifact)
    assert "component_id" not in job["params"]

    for kind in ("remove", "activate", "deactivate"):
        response = await browser.post(url, {"kind": kind, "artifact_id": artifact, "component_id": "com.x"})
        location = response.headers["location"]
        assert location.startswith("/console/jobs/"), (await browser.follow(response)).text
        job = (await console.api.get(f"/jobs/{location.rsplit('/', 1)[-1]}")).json()
        assert job["kind"] == kind and job["params"]["component_id"] == "com.x"
        assert "artifact_id" not in job["params"]

    device_page = f"/console/devices/{DEV}"
    for form, said in (
        ({"kind": "remove", "artifact_id": artifact}, "component_id: name the component to remove"),
        ({"kind": "update"}, "artifact_id: choose the package to update"),
        ({"kind": "reboot"}, "Failed (422"),
    ):
        response = await browser.post(url, form)
        assert response.headers["location"] == device_page, form
        assert said in (await browser.follow(response)).text, form
    assert (await console.api.get("/jobs")).json()["total"] == 4
    actions = [r.action for r in await console.api.audit_rows()]
    assert actions.count("job.add") == 4


async def test_a_rejected_device_offers_no_new_job(console: Console) -> None:
    await add_device(console, DEV)
    browser = await console.login("operator")
    assert ">Queue job</button>" in (await browser.get(f"/console/devices/{DEV}")).text
    async with console.api.sessions() as db, db.begin():
        await db.execute(update(Device).where(Device.device_id == DEV).values(state="rejected"))
    assert "Queue job" not in (await browser.get(f"/console/devices/{DEV}")).text  # the API refuses it


# ------------------------------------------------------------------ a campaign


async def fleet(console: Console) -> None:
    """Four devices: three in ring beta (two made by Acme, one of them with hello 0.9)."""
    for n, tags in enumerate(({"ring": "beta"}, {"ring": "beta"}, {"ring": "beta"}, {"ring": "prod"})):
        await add_device(console, f"IMEI:{n}", tags=tags)
    async with console.api.sessions() as db, db.begin():
        for n in (0, 1):
            devinfo = {"Man": "Acme", "Mod": "W7", "DevId": f"IMEI:{n}"}
            await db.execute(update(Device).where(Device.device_id == f"IMEI:{n}").values(devinfo=devinfo))


async def test_a_campaign_is_previewed_then_created_and_started(console: Console, package: Path) -> None:
    await fleet(console)
    browser = await console.login("operator")
    artifact = (await browser.follow(await upload(browser, package))).url.path.rsplit("/", 1)[-1]
    page = (await browser.get("/console/campaigns/new")).text
    assert 'value="preview">Preview</button>' in page and 'value="start"' not in page  # preview first
    assert f'<option value="{artifact}">#{artifact} {package.name}' in page

    form = {
        "name": "hello to beta",
        "kind": "install",
        "artifact_id": artifact,
        "tags": "ring=beta",
        "waves": "1, 100%",
        "success_threshold": "90%",
        "error_threshold": "0.2",
        "max_retries": "1",
        "window": "00:00-23:59",
        "do": "preview",
    }
    response = await browser.post("/console/campaigns/new", form)
    assert response.status_code == 200, response.text
    page = response.text
    assert '<strong class="preview-devices">3</strong> devices' in page
    assert "wave 1: 1" in page and "wave 2: 2" in page
    assert ">IMEI:0</a>" in page and ">IMEI:3</a>" not in page
    assert 'value="start"' in page and 'value="hello to beta"' in page and 'value="90%"' in page
    previewed = hidden(page, "previewed")
    assert previewed
    assert (await console.api.get("/campaigns")).json()["total"] == 0  # a preview creates nothing

    # The form changed since its preview (DevInfo narrows it): previewed again, not created.
    changed = {**form, "devinfo": "Man=Acme", "previewed": previewed, "do": "start"}
    page = (await browser.post("/console/campaigns/new", changed)).text
    assert "The form changed since its last preview" in page
    assert '<strong class="preview-devices">2</strong> devices' in page
    assert (await console.api.get("/campaigns")).json()["total"] == 0

    started = {**changed, "previewed": hidden(page, "previewed"), "name": "hello to Acme beta"}
    response = await browser.post("/console/campaigns/new", started)  # a new name changes no device
    assert response.status_code == 303, response.text
    page = (await browser.follow(response)).text
    campaign_id = response.headers["location"].rsplit("/", 1)[-1]
    assert f"Campaign {campaign_id} created and started: it is running." in page
    campaign = (await console.api.get(f"/campaigns/{campaign_id}")).json()
    assert campaign["name"] == "hello to Acme beta" and campaign["state"] == "running"
    assert campaign["target"] == {"tags": {"ring": "beta"}, "devinfo": {"Man": "Acme"}}
    assert campaign["waves"] == [1, "100%"] and campaign["artifact_id"] == int(artifact)
    assert campaign["success_threshold"] == 0.9 and campaign["error_threshold"] == 0.2
    assert campaign["max_retries"] == 1 and campaign["window"] == "00:00-23:59"
    assert [w["size"] for w in campaign["wave_counters"]] == [1, 1]
    actions = [(r.actor, r.action) for r in await console.api.audit_rows()]
    assert ("operator-bot", "campaign.add") in actions and ("operator-bot", "campaign.start") in actions


async def test_a_campaign_by_inventory_is_created_as_a_draft(console: Console) -> None:
    await fleet(console)
    browser = await console.login("operator")
    await browser.get("/console/campaigns/new")
    form = {
        "name": "remove old hello",
        "kind": "remove",
        "component_id": "com.example.hello",
        "has_component": "com.example.hello",
        "version_below": "1.0",
        "devices": "IMEI:0\nIMEI:1, IMEI:2",
        "skip_busy": "on",
        "do": "preview",
    }
    page = (await browser.post("/console/campaigns/new", form)).text
    assert '<strong class="preview-devices">0</strong> devices' in page  # no inventory read yet
    assert 'value="create"' not in page  # nothing to create

    response = await browser.post("/console/campaigns/new", {**form, "version_below": "x", "do": "preview"})
    assert response.status_code == 422 and 'role="alert"' in response.text
    assert 'value="remove old hello"' in response.text

    # Posted anyway: the API refuses a campaign of no device, and the form says why.
    form = {**form, "previewed": hidden(page, "previewed"), "do": "create"}
    response = await browser.post("/console/campaigns/new", form)
    assert response.status_code == 422 and "the target filter selects no device" in response.text
    assert (await console.api.get("/campaigns")).json()["total"] == 0

    # With an inventory, the same form previews two devices, and creates a draft of them.
    async with console.api.sessions() as db, db.begin():
        for n, version in ((0, "0.9"), (1, "0.5"), (3, "0.1")):
            pk = await db.scalar(select(Device.id).where(Device.device_id == f"IMEI:{n}"))
            assert pk is not None
            entry = InventoryEntry(
                device_pk=pk, kind="deployed", node="c0", ident="com.example.hello", version=version
            )
            db.add(entry)
    page = (await browser.post("/console/campaigns/new", {**form, "do": "preview"})).text
    assert '<strong class="preview-devices">2</strong> devices' in page
    response = await browser.post("/console/campaigns/new", {**form, "previewed": hidden(page, "previewed")})
    assert response.status_code == 303
    page = (await browser.follow(response)).text
    assert "created as a draft." in page and ">Start</button>" in page
    created = (await console.api.get("/campaigns")).json()["items"]
    assert len(created) == 1 and created[0]["state"] == "draft" and created[0]["kind"] == "remove"
    for field in ("success_threshold", "error_threshold", "max_retries"):  # left empty: the API's
        assert created[0][field] == CampaignCreate.model_fields[field].default, field
    assert created[0]["target"] == {
        "devices": ["IMEI:0", "IMEI:1", "IMEI:2"],
        "has_component": "com.example.hello",
        "version_below": "1.0",
    }


async def test_a_campaign_of_the_whole_fleet_needs_the_all_devices_box(console: Console) -> None:
    await fleet(console)
    browser = await console.login("operator")
    page = (await browser.get("/console/campaigns/new")).text
    assert 'name="all_devices"' in page and 'href="/console/publishers"' in page
    form = {
        "name": "off everywhere",
        "kind": "deactivate",
        "component_id": "com.example.hello",
        "do": "preview",
    }
    response = await browser.post("/console/campaigns/new", form)
    assert response.status_code == 422 and "no target, so it would act on every device" in response.text
    response = await browser.post("/console/campaigns/new", {**form, "all_devices": "on"})
    assert response.status_code == 200 and 'class="preview-devices"' in response.text, response.text
    assert 'name="all_devices" checked' in response.text


async def test_campaign_form_values_the_console_cannot_read_are_said_on_the_form(console: Console) -> None:
    browser = await console.login("operator")
    await browser.get("/console/campaigns/new")
    for field, value, said in (
        ("success_threshold", "most", "is not a share (0.9) or a percentage (90%)"),
        ("max_retries", "two", "is not a whole number"),
        ("tags", "ring", "is not name=value"),
        ("artifact_id", "", "choose the package to install"),
    ):
        form = {"name": "c", "kind": "install", "artifact_id": "1", field: value, "do": "preview"}
        response = await browser.post("/console/campaigns/new", form)
        assert response.status_code == 422, field
        assert f"<code>{field}</code>: " in response.text and html.escape(said) in response.text, field
