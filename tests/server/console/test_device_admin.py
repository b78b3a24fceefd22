"""A device's life in the console: its page opens whatever its DevId, an operator edits its
credentials and deletes it (after a confirmation), a viewer is offered neither; the list
shows the DevInfo devices report; the registration form no longer hides the DevId ``new``."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import update

from omadm.server.store.models import Device

from .conftest import Console

pytestmark = pytest.mark.anyio

DEV = "IMEI:490154203237518"
ODD_IDS = ["a/b", "x?y#z", "IMEI:1 2", "ü", "new"]


def page_of(device_id: str) -> str:
    return f"/console/devices/{quote(device_id, safe='')}"


async def add_device(console: Console, device_id: str, **extra: Any) -> None:
    body = {"device_id": device_id, "username": "dev", "password": "secret", **extra}
    assert (await console.api.post("/devices", json=body)).status_code == 201


async def test_an_operator_edits_a_device_and_it_is_audited(console: Console) -> None:
    await add_device(console, DEV, tags={"ring": "alpha"})
    browser = await console.login("operator")
    page = (await browser.get(page_of(DEV))).text
    assert f'action="{page_of(DEV).replace(" ", "%20")}/edit"' in page
    for field in ("auth", "username", "password", "server_password", "notify_address", "tags"):
        assert f'name="{field}"' in page, field
    assert 'value="ring=alpha"' in page  # the form shows the tags as they are

    form = {
        "auth": "hmac",
        "username": "dev",
        "password": "n3w",
        "server_password": "srv",
        "notify_address": "udp://10.0.0.7:2948",
        "tags": "ring=beta, site=lyon",
        "next": page_of(DEV),
    }
    response = await browser.post(page_of(DEV) + "/edit", form)
    assert response.headers["location"] == page_of(DEV)
    assert f"Device {DEV} updated." in (await browser.follow(response)).text
    shown = (await console.api.get(f"/devices/{DEV}")).json()
    assert shown["auth"] == "hmac" and shown["notify_address"] == "udp://10.0.0.7:2948"
    assert shown["tags"] == {"ring": "beta", "site": "lyon"} and shown["has_server_password"]
    entry = (await console.api.audit_rows())[-1]
    assert (entry.actor, entry.action, entry.target) == ("operator-bot", "device.update", DEV)
    assert entry.detail["password"] == "changed"

    # Blank password fields keep the passwords; an emptied address is removed.
    response = await browser.post(page_of(DEV) + "/edit", {**form, "password": "", "notify_address": ""})
    assert f"Device {DEV} updated." in (await browser.follow(response)).text
    assert (await console.api.get(f"/devices/{DEV}")).json()["notify_address"] == ""
    assert (await console.api.audit_rows())[-1].detail == {"notify_address": ""}


async def test_an_edit_the_api_refuses_says_why_and_changes_nothing(console: Console) -> None:
    await add_device(console, DEV)
    browser = await console.login("operator")
    await browser.get(page_of(DEV))
    cases = {  # address, server password, why
        "udp://10.0.0.7:2948": ("", "a notification address needs a server password"),
        "http://169.254.169.254/latest": ("srv", "169.254.169.254"),
    }
    for address, (server_password, why) in cases.items():
        form = {
            "auth": "md5",
            "notify_address": address,
            "server_password": server_password,
            "next": page_of(DEV),
        }
        response = await browser.post(page_of(DEV) + "/edit", form)
        page = (await browser.follow(response)).text
        assert "(422 " in page and why in page, page
    assert (await console.api.get(f"/devices/{DEV}")).json()["notify_address"] == ""


async def test_an_operator_deletes_a_device_after_confirming(console: Console) -> None:
    await add_device(console, DEV)
    await add_device(console, "IMEI:2")
    browser = await console.login("operator")
    page = (await browser.get(page_of(DEV))).text
    assert f'action="{page_of(DEV)}/delete" data-confirm="Delete {DEV} with its jobs' in page
    response = await browser.post(page_of(DEV) + "/delete", {"next": page_of(DEV)})
    assert response.headers["location"] == "/console/devices"
    listed = (await browser.follow(response)).text
    assert f"Device {DEV} deleted, with its jobs and history." in listed and "IMEI:2" in listed
    assert (await console.api.get(f"/devices/{DEV}")).status_code == 404
    entry = (await console.api.audit_rows())[-1]
    assert (entry.action, entry.target) == ("device.delete", DEV)


async def test_a_viewer_is_offered_neither_edit_nor_delete(console: Console) -> None:
    await add_device(console, DEV)
    browser = await console.login("viewer")
    page = (await browser.get(page_of(DEV))).text
    assert "/edit" not in page and "/delete" not in page and "Edit credentials" not in page
    response = await browser.post(page_of(DEV) + "/delete", {"next": page_of(DEV)})
    assert "Refused (403 " in (await browser.follow(response)).text
    response = await browser.post(page_of(DEV) + "/edit", {"password": "x", "next": page_of(DEV)})
    assert "Refused (403 " in (await browser.follow(response)).text
    assert (await console.api.get(f"/devices/{DEV}")).status_code == 200


@pytest.mark.parametrize("device_id", ODD_IDS)
async def test_every_device_id_has_a_page_and_its_actions_come_back_to_it(
    console: Console, device_id: str
) -> None:
    await add_device(console, device_id)
    browser = await console.login("operator")
    listed = (await browser.get("/console/devices")).text
    assert f'href="{page_of(device_id)}"' in listed
    page = await browser.get(page_of(device_id))
    assert page.status_code == 200, page.text
    assert f"<h1>{device_id} " in page.text.replace("&#34;", '"')
    for action in ("reject", "accept"):
        response = await browser.post(f"{page_of(device_id)}/{action}")
        assert response.headers["location"] == page_of(device_id), action
        assert f"Device {device_id} {action}ed." in (await browser.follow(response)).text
    form = {"auth": "md5", "password": "p2", "tags": "t=1"}
    response = await browser.post(f"{page_of(device_id)}/edit", form)
    assert response.headers["location"] == page_of(device_id)
    assert (await console.api.get(f"/devices/{quote(device_id, safe='')}")).json()["tags"] == {"t": "1"}
    response = await browser.post(f"{page_of(device_id)}/delete")
    assert response.headers["location"] == "/console/devices"
    assert (await console.api.get(f"/devices/{quote(device_id, safe='')}")).status_code == 404


async def test_the_registration_form_is_not_a_devid(console: Console) -> None:
    browser = await console.login("operator")
    form = (await browser.get("/console/new-device")).text
    assert 'action="/console/new-device"' in form and 'name="device_id"' in form
    assert (await browser.get("/console/devices/new")).status_code == 404  # no device "new" yet
    assert 'href="/console/new-device"' in (await browser.get("/console/devices")).text


async def test_the_list_shows_the_manufacturer_and_model_devices_report(console: Console) -> None:
    await add_device(console, DEV)
    await add_device(console, "IMEI:2")
    async with console.api.sessions() as db, db.begin():
        reported = {"./DevInfo/Man": "Acme", "./DevInfo/Mod": "W7", "./DevInfo/Lang": "en"}
        await db.execute(update(Device).where(Device.device_id == DEV).values(devinfo=reported))
        await db.execute(
            update(Device).where(Device.device_id == "IMEI:2").values(devinfo={"Man": "Old", "Mod": "M1"})
        )
    browser = await console.login("viewer")
    listed = (await browser.get("/console/devices")).text
    assert "<td>Acme</td>" in listed and "<td>W7</td>" in listed
    assert "<td>Old</td>" in listed and "<td>M1</td>" in listed
