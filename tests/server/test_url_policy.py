"""Operator-given URLs (issue 15): notification addresses and package URLs pass a policy.

Only udp/http(s) notification addresses and http(s) package URLs; no link-local, cloud
metadata, unspecified, multicast or reserved address unless ``allow_local_urls``. Refusals
are 422 naming the problem in REST (and so ``omadm ctl``) and ``omadm server device add``.
A notification address without a server password gets one generated, shown once (REST),
or is refused (CLI, bulk).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from omadm.cli import app
from omadm.server.notify import NotifyError, send_package0
from omadm.server.registry import RegistryError, add_device, check_job, find_device
from omadm.server.store.models import JobKind
from omadm.server.url_policy import UrlRefused, check_notify_address, check_package_url

from .api.conftest import Api, api, problem  # noqa: F401 - api: the REST fixture, used by name

pytestmark = pytest.mark.anyio

REFUSED_NOTIFY = [
    ("file:///etc/passwd", "file:"),
    ("gopher://10.0.0.1/", "gopher:"),
    ("udp://169.254.169.254:2948", "link-local"),
    ("http://[fe80::1]:8080/pkg0", "link-local"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
    ("udp://100.100.100.200:2948", "metadata"),
    ("udp://0.0.0.0:2948", "unspecified"),
    ("udp://224.0.0.1:2948", "multicast"),
    ("udp://240.0.0.1:2948", "reserved"),
    ("http://[::ffff:169.254.169.254]/", "link-local"),
    ("udp://", "no host"),
]
ACCEPTED_NOTIFY = [
    "udp://10.0.0.2:2948",
    "udp://127.0.0.1:2948",
    "http://192.168.1.20:8080/pkg0",
    "https://device.example.com/pkg0",
]


@pytest.mark.parametrize(("address", "named"), REFUSED_NOTIFY)
def test_notification_addresses_that_are_refused_name_their_problem(address: str, named: str) -> None:
    with pytest.raises(UrlRefused, match=named):
        check_notify_address(address)


@pytest.mark.parametrize("address", ACCEPTED_NOTIFY)
def test_usual_notification_addresses_pass(address: str) -> None:
    check_notify_address(address)


def test_allow_local_lifts_the_address_rules_not_the_scheme_rules() -> None:
    check_notify_address("udp://169.254.1.1:2948", allow_local=True)
    check_package_url("http://169.254.169.254/latest/meta-data", allow_local=True)
    with pytest.raises(UrlRefused, match="file:"):
        check_notify_address("file:///etc/passwd", allow_local=True)


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("file:///etc/passwd", "file:"),
        ("ftp://pkgs.example.com/p.omp", "ftp:"),
        ("udp://pkgs.example.com/p.omp", "udp:"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://[fe80::2]/p.omp", "link-local"),
    ],
)
def test_package_urls_are_http_or_https_to_no_local_address(url: str, named: str) -> None:
    with pytest.raises(UrlRefused, match=named):
        check_package_url(url)
    with pytest.raises(RegistryError, match=named) as raised:
        check_job(JobKind.INSTALL, {"url": url})
    assert raised.value.status == 422
    check_package_url("https://pkgs.example.com/hello.omp")


async def test_package0_is_not_sent_to_a_refused_address() -> None:
    for address in ("udp://169.254.169.254:2948", "http://[fe80::1]/pkg0"):
        with pytest.raises(NotifyError, match="URL policy"):
            await send_package0(address, b"x" * 24)


def new_device(device_id: str, **extra: Any) -> dict[str, Any]:
    return {"device_id": device_id, "username": "dev", "password": "secret", **extra}


async def test_rest_refuses_bad_addresses_with_422_and_generates_a_server_password_once(
    api: Api,  # noqa: F811 - the fixture imported above
) -> None:
    for n, (address, named) in enumerate(REFUSED_NOTIFY[:6]):
        body = problem(
            await api.post(
                "/devices", json=new_device(f"IMEI:{n}", notify_address=address, server_password="s")
            ),
            422,
        )
        assert named in body["detail"]
    created = await api.post("/devices", json=new_device("IMEI:50", notify_address="udp://10.0.0.9:2948"))
    assert created.status_code == 201, created.text
    generated = created.json()["generated_server_password"]
    assert generated and len(generated) >= 20
    shown = (await api.get("/devices/IMEI:50")).json()
    assert shown["has_server_password"] is True and shown["generated_server_password"] is None
    given = await api.post(
        "/devices", json=new_device("IMEI:51", notify_address="udp://10.0.0.9:2948", server_password="mine")
    )
    assert given.json()["generated_server_password"] is None
    bulk = await api.post(
        "/devices/bulk", json={"devices": [new_device("IMEI:52", notify_address="udp://10.0.0.9:2948")]}
    )
    assert "server password" in problem(bulk, 422)["detail"]
    bulk = await api.post(
        "/devices/bulk",
        json={"devices": [new_device("IMEI:53", notify_address="file:///x", server_password="s")]},
    )
    assert "file:" in problem(bulk, 422)["detail"]


async def test_the_registry_refuses_a_notify_address_without_server_password_unless_asked_to_make_one(
    sessions: Any,
) -> None:
    async with sessions() as db, db.begin():
        with pytest.raises(RegistryError, match="server password") as raised:
            await add_device(db, "IMEI:60", username="u", password="p", notify_address="udp://10.0.0.1:2948")
        assert raised.value.status == 422
        device = await add_device(
            db,
            "IMEI:61",
            username="u",
            password="p",
            notify_address="udp://10.0.0.1:2948",
            generate_server_password=True,
        )
        assert device.server_password
        assert await find_device(db, "IMEI:60") is None


def test_server_device_add_refuses_with_the_reason(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["server", "--data-dir", str(tmp_path / "srv")]
    assert runner.invoke(app, [*base, "migrate"]).exit_code == 0
    common = ["device", "add", "IMEI:70", "--username", "u", "--password", "p"]
    done = runner.invoke(app, [*base, *common, "--notify", "file:///etc/passwd", "--server-password", "s"])
    assert done.exit_code == 1 and "file:" in done.output
    done = runner.invoke(
        app, [*base, *common, "--notify", "udp://169.254.169.254:2948", "--server-password", "s"]
    )
    assert done.exit_code == 1 and "link-local" in done.output
    done = runner.invoke(app, [*base, *common, "--notify", "udp://10.0.0.1:2948"])
    assert done.exit_code == 1 and "server password" in done.output


async def test_a_job_by_a_link_local_url_is_refused_unless_the_server_allows_local_urls(
    api: Api,  # noqa: F811 - the fixture imported above
) -> None:
    assert (await api.post("/devices", json=new_device("IMEI:70"))).status_code == 201
    job = {"device_id": "IMEI:70", "kind": "install", "url": "http://169.254.10.10/p.omp", "pkg_id": "p"}
    assert "link-local" in problem(await api.post("/jobs", json=job), 422)["detail"]
    api.app.state.config = replace(api.app.state.config, allow_local_urls=True)
    allowed = await api.post("/jobs", json=job)
    assert allowed.status_code == 201, allowed.text
