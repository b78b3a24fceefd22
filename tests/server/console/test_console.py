"""The web console: login and logout, every page with real data put in through the API,
operators' actions (audited), a viewer's refusal, CSRF, escaping, and API errors on the page."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from omadm.server.api import devices as devices_api
from omadm.server.console import views
from omadm.server.store.models import Device, InventoryEntry

from .conftest import Console

pytestmark = pytest.mark.anyio

DEV = "IMEI:490154203237518"
DEV2 = "IMEI:490154203237519"
PENDING = "IMEI:490154203237520"
RAW = {"Content-Type": "application/octet-stream"}
PAGES = ["dashboard", "devices", "packages", "jobs", "campaigns", "audit"]


async def seed(console: Console, package: Path) -> dict[str, Any]:
    """Three devices (one pending, one with DevInfo and inventory), a package, a job, a campaign."""
    api = console.api
    for device_id in (DEV, DEV2, PENDING):
        body = {"device_id": device_id, "username": "dev", "password": "secret", "tags": {"ring": "beta"}}
        assert (await api.post("/devices", json=body)).status_code == 201
    async with api.sessions() as db, db.begin():
        await db.execute(update(Device).where(Device.device_id == PENDING).values(state="pending"))
        await db.execute(
            update(Device)
            .where(Device.device_id == DEV)
            .values(devinfo={"Man": "Acme", "Mod": "Widget-7", "DevId": DEV}, devdetail={"FwV": "fw-3.1"})
        )
        pk = await db.scalar(select(Device.id).where(Device.device_id == DEV))
        assert pk is not None
        db.add(
            InventoryEntry(device_pk=pk, kind="deployed", node="c0", ident="com.example.base", version="0.9")
        )
    response = await api.post(
        "/packages", params={"filename": package.name}, content=package.read_bytes(), headers=RAW
    )
    assert response.status_code == 201, response.text
    artifact = response.json()
    response = await api.post(
        "/jobs", json={"device_id": DEV, "kind": "install", "artifact_id": artifact["id"]}
    )
    assert response.status_code == 201, response.text
    job = response.json()
    body = {
        "name": "hello rollout",
        "kind": "install",
        "artifact_id": artifact["id"],
        "target": {"devices": [DEV2]},
        "waves": [1],
    }
    response = await api.post("/campaigns", json=body)
    assert response.status_code == 201, response.text
    return {"artifact": artifact, "job": job, "campaign": response.json()}


# ------------------------------------------------------------------ login, logout, redirects


async def test_login_with_a_good_token_keeps_it_in_a_strict_httponly_cookie(console: Console) -> None:
    browser = await console.browser()
    page = await browser.get("/console/login")
    assert page.status_code == 200 and 'name="token"' in page.text

    response = await browser.post("/console/login", {"token": console.tokens["viewer"]}, csrf=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/dashboard"
    cookie = response.headers["set-cookie"].lower()
    assert cookie.startswith("omadm_console=omadm_")
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie

    dashboard = await browser.follow(response)
    assert dashboard.status_code == 200
    assert "<h1>Dashboard</h1>" in dashboard.text
    assert "Content-Security-Policy" in dashboard.headers and dashboard.headers["x-frame-options"] == "DENY"


async def test_login_with_a_bad_token_is_refused(console: Console) -> None:
    browser = await console.browser()
    for token in ("omadm_not-a-real-token", ""):
        response = await browser.post("/console/login", {"token": token}, csrf=False)
        assert response.status_code == 401, response.text
        assert 'role="alert"' in response.text
        assert "set-cookie" not in response.headers
    assert "not valid" in response.text or "paste an API token" in response.text
    assert (await browser.get("/console/dashboard")).status_code == 303


async def test_logged_out_pages_and_actions_redirect_to_the_login(console: Console) -> None:
    browser = await console.browser()
    response = await browser.get("/console")
    assert response.status_code == 303 and response.headers["location"] == "/console/dashboard"
    for name in [*PAGES, "devices/X", "jobs/1", "campaigns/1", "packages/1"]:
        response = await browser.get(f"/console/{name}", params={"state": "queued"})
        assert response.status_code == 303, name
        location = response.headers["location"]
        assert location.startswith("/console/login?next=%2Fconsole%2F"), location
    response = await browser.post("/console/jobs/1/cancel", {"csrf": "0" * 64}, csrf=False)
    assert response.status_code == 303 and response.headers["location"] == "/console/login"


async def test_login_goes_back_to_the_page_asked_but_never_to_another_site(console: Console) -> None:
    browser = await console.browser()
    token = console.tokens["viewer"]
    asked = await browser.get("/console/jobs?state=queued")
    login = await browser.follow(asked)
    assert 'name="next" value="/console/jobs?state=queued"' in login.text
    response = await browser.post("/console/login", {"token": token, "next": "/console/jobs?state=queued"})
    assert response.headers["location"] == "/console/jobs?state=queued"
    for evil in ("https://evil.example/", "//evil.example/console/", "/console\\@evil.example"):
        response = await browser.post("/console/login", {"token": token, "next": evil}, csrf=False)
        assert response.headers["location"] == "/console/dashboard", evil


async def test_logout_forgets_the_token_and_needs_the_csrf_token(console: Console) -> None:
    browser = await console.login("viewer")
    refused = await browser.post("/console/logout", {"csrf": "f" * 64})
    assert refused.status_code == 403 and "did not come from this console session" in refused.text
    assert (await browser.get("/console/dashboard")).status_code == 200

    response = await browser.post("/console/logout")
    assert response.status_code == 303 and response.headers["location"] == "/console/login"
    assert 'omadm_console=""' in response.headers["set-cookie"]
    assert (await browser.get("/console/dashboard")).status_code == 303


async def test_a_revoked_token_logs_the_console_out(console: Console) -> None:
    browser = await console.login("operator")
    tokens = (await console.api.get("/tokens", role="admin")).json()
    operator = next(t for t in tokens if t["name"] == "operator-bot")
    assert (await console.api.delete(f"/tokens/{operator['id']}", role="admin")).status_code == 204

    response = await browser.get("/console/devices")
    assert response.status_code == 303 and response.headers["location"].startswith("/console/login")
    login = await browser.follow(response)
    assert "not accepted any more" in login.text
    assert (await browser.get("/console/devices")).status_code == 303  # the cookie is gone


# ------------------------------------------------------------------ pages


async def test_every_page_shows_the_fleet(console: Console, package: Path) -> None:
    data = await seed(console, package)
    browser = await console.login("admin")
    job, artifact, campaign = data["job"], data["artifact"], data["campaign"]

    page = (await browser.get("/console/dashboard")).text
    assert '<span class="num">3</span> devices' in page
    assert '<span class="num">1</span> pending' in page
    assert '<span class="num">1</span> jobs queued' in page
    assert f'href="/console/jobs/{job["id"]}"' in page
    assert "No campaign is running or paused." in page

    page = (await browser.get("/console/devices")).text
    for device_id in (DEV, DEV2, PENDING):
        assert f'href="/console/devices/{device_id.replace(":", "%3A")}"' in page
    assert "Widget-7" in page and "ring=beta" in page and "1-3 of 3" in page
    page = (await browser.get("/console/devices", params={"state": "pending", "q": "", "tag": ""})).text
    assert PENDING in page and DEV2 not in page

    response = await browser.get(f"/console/devices/{DEV}")
    assert response.status_code == 200
    page = response.text
    assert "Acme" in page and "fw-3.1" in page  # DevInfo, DevDetail
    assert "com.example.base" in page and "0.9" in page  # SCOMO inventory
    assert f'href="/console/jobs/{job["id"]}"' in page  # jobs
    assert "ring=beta" in page
    assert f"job {job['id']} (install) queued</td>" in page  # history in words, not JSON

    page = (await browser.get("/console/packages")).text
    assert "hello-1.0.0.omp" in page and "com.example.hello-package" in page
    page = (await browser.get(f"/console/packages/{artifact['id']}")).text
    assert artifact["sha256"] in page and "com.example.hello" in page

    page = (await browser.get("/console/jobs", params={"state": "queued", "kind": "install"})).text
    assert f"#{job['id']}" in page and DEV in page
    page = (await browser.get(f"/console/jobs/{job['id']}")).text
    assert job["correlator"] in page and "Cancel job" in page

    page = (await browser.get("/console/campaigns")).text
    assert "hello rollout" in page and "draft" in page
    page = (await browser.get(f"/console/campaigns/{campaign['id']}")).text
    assert "hello rollout" in page and "<h2>Waves</h2>" in page and ">Start</button>" in page
    assert 'data-refresh=""' in page  # a draft does not refresh itself

    page = (await browser.get("/console/audit")).text
    assert "device.add" in page and "job.add" in page
    assert "operator-bot" in page


async def test_pages_page_through_long_lists_keeping_their_filters(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(views, "PAGE_SIZE", 2)
    for i in range(5):
        body = {"device_id": f"DEV:{i}", "username": "u", "password": "p", "tags": {"ring": "beta"}}
        assert (await console.api.post("/devices", json=body)).status_code == 201
    browser = await console.login("viewer")
    page = (await browser.get("/console/devices", params={"tag": "ring=beta"})).text
    assert "1-2 of 5" in page and "DEV:0" in page and "DEV:2" not in page
    assert "first page" not in page
    seen = ["DEV:0", "DEV:1"]
    for expected in (["DEV:2", "DEV:3"], ["DEV:4"]):  # the next page by the API's cursor
        found = re.search(r'<a href="([^"]*)">next page →</a>', page)
        assert found, page
        link = html.unescape(found[1])
        assert link.startswith("/console/devices?tag=ring%3Dbeta&cursor=")
        page = (await browser.get(link)).text
        assert f"{len(expected)} more of 5" in page and 'href="/console/devices?tag=ring%3Dbeta">' in page
        assert all(d in page for d in expected) and not any(f">{d}<" in page for d in seen)
        seen += expected
    assert "next page →" not in page
    # An offset link (an older bookmark) still works.
    page = (await browser.get("/console/devices", params={"tag": "ring=beta", "offset": "4"})).text
    assert "5-5 of 5" in page and "DEV:4" in page and "next page →" not in page


async def test_the_device_list_finds_devids_by_prefix_and_marks_estimates(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    for device_id in ("IMEI:1", "IMEI:2", "imei:3", "MAC:4"):
        body = {"device_id": device_id, "username": "u", "password": "p"}
        assert (await console.api.post("/devices", json=body)).status_code == 201
    browser = await console.login("viewer")
    page = (await browser.get("/console/devices")).text
    assert "DevId starts with" in page
    page = (await browser.get("/console/devices", params={"q": "IMEI:"})).text
    assert "1-2 of 2" in page and ">IMEI:1<" in page and ">IMEI:2<" in page and ">imei:3<" not in page
    page = (await browser.get("/console/devices", params={"q": "EI:"})).text  # a start, not a part
    assert "Nothing matches." in page

    monkeypatch.setattr(devices_api, "COUNT_BOUND", 2)  # 4 devices are "many"
    dashboard = (await browser.get("/console/dashboard")).text
    page = (await browser.get("/console/devices")).text
    if console.api.app.state.engine.dialect.name == "postgresql":
        assert '<span class="num">about ' in dashboard  # the API's estimate, said to be one
    else:
        assert '<span class="num">4</span> devices' in dashboard
    assert "1-4 of 4" in page  # one page holds them all: counted, whatever the engine


async def test_a_running_campaign_page_refreshes_itself_with_progress_per_wave(
    console: Console, package: Path
) -> None:
    data = await seed(console, package)
    browser = await console.login("operator")
    url = f"/console/campaigns/{data['campaign']['id']}"
    await browser.get(url)
    response = await browser.post(f"{url}/start")
    assert response.status_code == 303 and response.headers["location"] == url
    page = (await browser.follow(response)).text
    assert "Campaign 1 started: it is running." in page
    assert 'data-refresh="2"' in page and '<meta http-equiv="refresh" content="2">' in page
    assert '<svg class="bar"' in page and 'class="seg-running"' in page  # wave 1's job is out
    devices = page.split('class="list campaign-devices"', 1)[1].split("</table>", 1)[0]
    assert DEV2 in devices and "running" in devices and "queued" in devices  # each device, its job
    filtered = (await browser.get(url, params={"state": "failed"})).text
    assert "No device matches these filters." in filtered
    assert ">Pause</button>" in page

    dashboard = (await browser.get("/console/dashboard")).text
    assert "hello rollout" in dashboard and 'data-refresh="5"' in dashboard

    page = (await browser.follow(await browser.post(f"{url}/pause"))).text
    assert "paused" in page and 'data-refresh=""' in page and ">Resume</button>" in page
    page = (await browser.follow(await browser.post(f"{url}/resume"))).text
    assert "it is running" in page
    page = (await browser.follow(await browser.post(f"{url}/cancel"))).text
    assert "it is cancelled" in page and 'data-refresh=""' in page

    actions = [(r.actor, r.action) for r in await console.api.audit_rows()]
    for verb in ("start", "pause", "resume", "cancel"):
        assert ("operator-bot", f"campaign.{verb}") in actions


async def test_api_errors_are_shown_on_the_page(console: Console) -> None:
    browser = await console.login("operator")
    response = await browser.get("/console/devices/IMEI:nope")
    assert response.status_code == 404 and "no device IMEI:nope" in response.text

    response = await browser.get("/console/jobs/abc")
    assert response.status_code == 422 and "the request is not valid" in response.text

    response = await browser.get("/console/devices", params={"state": "bogus"})
    assert response.status_code == 422 and "<code>query.state</code>" in response.text

    response = await browser.get("/console/audit")
    assert response.status_code == 403
    assert "The audit log is for administrators" in response.text and "this needs admin" in response.text

    page = await browser.follow(await browser.post("/console/campaigns/99/start"))
    assert page.status_code == 404 and "Failed (404 Not Found): no campaign 99" in page.text


async def test_console_routes_stay_out_of_the_openapi_document(console: Console) -> None:
    browser = await console.browser()
    schema = (await browser.get("/api/openapi.json")).json()
    assert not [path for path in schema["paths"] if path.startswith("/console")]
    css = await browser.get("/console/static/console.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


# ------------------------------------------------------------------ actions, roles, CSRF


async def test_a_viewer_is_refused_an_action_with_a_clear_message(console: Console, package: Path) -> None:
    data = await seed(console, package)
    browser = await console.login("viewer")
    url = f"/console/jobs/{data['job']['id']}"
    shown = (await browser.get(url)).text
    assert "Cancel job" not in shown  # no button a viewer could only be refused
    assert "viewer-bot · viewer · default" in shown  # who is logged in (GET /api/v1/whoami)
    response = await browser.post(f"{url}/cancel")  # posted anyway: the API refuses it
    assert response.status_code == 303 and response.headers["location"] == url
    page = (await browser.follow(response)).text
    assert (
        "Refused (403 Forbidden): token &#39;viewer-bot&#39; has the role viewer; this needs operator" in page
    )
    assert (await console.api.get(f"/jobs/{data['job']['id']}")).json()["state"] == "queued"
    assert "job.cancel" not in [r.action for r in await console.api.audit_rows()]
    again = await browser.get(url)  # the message is shown once
    assert "Refused" not in again.text


async def test_an_operator_cancels_a_job_and_accepts_and_rejects_devices(
    console: Console, package: Path
) -> None:
    data = await seed(console, package)
    browser = await console.login("operator")
    url = f"/console/jobs/{data['job']['id']}"
    assert "Cancel job" in (await browser.get(url)).text
    page = (await browser.follow(await browser.post(f"{url}/cancel"))).text
    assert f"Job {data['job']['id']} cancelled." in page and "Cancel job" not in page
    assert (await console.api.get(f"/jobs/{data['job']['id']}")).json()["state"] == "cancelled"

    device_url = f"/console/devices/{PENDING}"
    page = (await browser.get(device_url)).text
    assert ">Accept</button>" in page
    form = {"username": "dev3", "password": "s3", "next": "/console/devices?state=pending"}
    response = await browser.post(f"{device_url}/accept", form)
    assert response.headers["location"] == "/console/devices?state=pending"
    page = (await browser.follow(response)).text
    assert f"Device {PENDING} accepted." in page
    shown = (await console.api.get(f"/devices/{PENDING}")).json()
    assert shown["state"] == "accepted" and shown["username"] == "dev3"

    page = (await browser.follow(await browser.post(f"/console/devices/{DEV2}/reject"))).text
    assert f"Device {DEV2} rejected." in page
    assert (await console.api.get(f"/devices/{DEV2}")).json()["state"] == "rejected"

    rows = [(r.actor, r.action, r.target) for r in await console.api.audit_rows()]
    assert ("operator-bot", "job.cancel", f"job {data['job']['id']}") in rows
    assert ("operator-bot", "device.accept", PENDING) in rows
    assert ("operator-bot", "device.reject", DEV2) in rows
    audit = (await (await console.login("admin")).get("/console/audit", params={"action": "job.cancel"})).text
    assert "operator-bot" in audit and "device.reject" not in audit


@pytest.mark.parametrize("csrf", ["missing", "wrong", "another session's"])
async def test_an_action_without_the_right_csrf_token_is_refused(
    console: Console, package: Path, csrf: str
) -> None:
    data = await seed(console, package)
    browser = await console.login("operator")
    other = await console.login("admin")
    assert other.csrf != browser.csrf
    form = {"missing": {}, "wrong": {"csrf": "0" * 64}, "another session's": {"csrf": other.csrf}}[csrf]
    response = await browser.post(f"/console/jobs/{data['job']['id']}/cancel", form, csrf=False)
    assert response.status_code == 403
    assert "CSRF check failed" in response.text
    assert (await console.api.get(f"/jobs/{data['job']['id']}")).json()["state"] == "queued"
    assert "job.cancel" not in [r.action for r in await console.api.audit_rows()]


async def test_device_ids_and_tags_are_escaped(console: Console) -> None:
    script = "<script>alert(1)</script>"
    attribute = '"><img src=x onerror=alert(2)>'
    for device_id in (script, attribute):
        body = {"device_id": device_id, "username": "u", "password": "p", "tags": {"note": "<b>bold</b>"}}
        assert (await console.api.post("/devices", json=body)).status_code == 201
    browser = await console.login("viewer")
    page = (await browser.get("/console/devices")).text
    assert script not in page and "<img src=x" not in page and "<b>bold" not in page
    assert html.escape(script, quote=False) in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page

    response = await browser.get("/console/devices/" + attribute.replace(" ", "%20"))
    assert response.status_code == 200, response.text
    assert "<img src=x" not in response.text
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in response.text
