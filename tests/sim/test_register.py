"""``omadm sim register``: a fleet registered through the bulk endpoint of a real server app
(in process, SQLite and PostgreSQL; and a real server process for the command line), its
file written and read back, and its devices able to run DM sessions with what the file says."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from omadm.cli import app
from omadm.protocol.session import Credentials
from omadm.server.store.models import AuditEntry, Device
from omadm.sim.fleet import load_fleet, save_fleet
from omadm.sim.register import RegistrationError, fleet_device_ids, new_devices, register_fleet
from tests.server.api.conftest import Api
from tests.server.dmharness import Harness
from tests.server.serverproc import ServerProcess, free_port

runner = CliRunner()


async def register(api: Api, count: int, role: str = "operator", **kw: Any) -> Any:
    return await register_fleet(
        "http://test", api.tokens[role], count, transport=httpx.ASGITransport(app=api.app), **kw
    )


async def devices_on_server(api: Api) -> int:
    async with api.sessions() as db:
        return int(await db.scalar(select(func.count()).select_from(Device)) or 0)


def test_devids_are_the_prefix_and_a_padded_counter() -> None:
    assert fleet_device_ids("IMEI:35", 3) == [
        "IMEI:350000000000001",
        "IMEI:350000000000002",
        "IMEI:350000000000003",
    ]
    assert fleet_device_ids("IMEI:", 1, start=7) == ["IMEI:000000000000007"]
    assert fleet_device_ids("sim-", 2, start=999_999) == [
        "sim-0999999",
        "sim-1000000",
    ]  # one width: they sort
    assert fleet_device_ids("MAC:", 1) == ["MAC:000001"]
    with pytest.raises(RegistrationError, match="2 digits are left for the counter; use a shorter prefix"):
        fleet_device_ids("IMEI:3500000000000", 100)
    with pytest.raises(RegistrationError, match="only digits after IMEI:"):
        fleet_device_ids("IMEI:35a", 1)
    with pytest.raises(RegistrationError, match="count must be at least 1"):
        fleet_device_ids("IMEI:35", 0)


def test_new_devices_get_their_own_random_secrets_and_a_basic_safe_name() -> None:
    devices = new_devices("IMEI:35", 100, "basic")
    assert devices[0].username == "imei350000000000001"
    assert len({d.password for d in devices} | {d.server_password for d in devices}) == 200
    assert all(len(d.password) >= 20 and ":" not in d.username for d in devices)
    with pytest.raises(RegistrationError, match="auth must be one of md5, hmac, basic, not 'sha1'"):
        new_devices("IMEI:35", 1, "sha1")


@pytest.mark.anyio
async def test_a_fleet_is_registered_in_batches_and_its_file_round_trips(api: Api, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    fleet = await register(api, 2500, batch_size=1250, auth="hmac", on_batch=lambda *a: seen.append(a))
    assert seen == [(1250, 2500), (2500, 2500)]
    assert (fleet.dm_url, fleet.server_id) == ("http://127.0.0.1:8700/dm", "omadm")  # what whoami says
    assert len(fleet.devices) == 2500 and fleet.devices[-1].device_id == "IMEI:350000000002500"
    assert {d.auth for d in fleet.devices} == {"hmac"}
    assert await devices_on_server(api) == 2500
    async with api.sessions() as db:
        audit = (await db.scalars(select(AuditEntry).order_by(AuditEntry.id))).all()
    assert [(a.action, a.detail["count"]) for a in audit] == [("device.add-bulk", 1250)] * 2
    path = tmp_path / "fleet.json"
    save_fleet(fleet, path)
    assert load_fleet(path) == fleet


@pytest.mark.anyio
async def test_a_registered_device_runs_a_dm_session_with_what_the_fleet_file_says(
    api: Api, tmp_path: Path
) -> None:
    save_fleet(await register(api, 3, batch_size=2), tmp_path / "fleet.json")
    fleet = load_fleet(tmp_path / "fleet.json")
    device = fleet.devices[2]
    harness = Harness(api.http, api.sessions, api.app.state.config)
    client = harness.client(
        device.password,
        device_id=device.device_id,
        username=device.username,
        auth=device.auth_type,
        server_uri=fleet.dm_url,
        server_credentials=Credentials(device.auth_type, fleet.server_id, device.server_password),
        require_server_auth=True,  # the server must prove itself with the fleet's server password
    )
    responses = await harness.run(client)
    assert [r.status_code for r in responses] == [200] * len(responses)
    async with api.sessions() as db:
        row = await db.scalar(select(Device).where(Device.device_id == device.device_id))
    assert row is not None and row.last_contact is not None and row.auth_failures == 0


@pytest.mark.anyio
async def test_another_authority_s_fleet_gets_its_dm_url_and_server_id(api: Api) -> None:
    response = await api.post("/authorities", "admin", json={"name": "acme", "server_id": "acme-dm"})
    assert response.status_code == 201, response.text
    response = await api.post(
        "/tokens", "admin", json={"name": "acme-ops", "role": "operator", "authority": "acme"}
    )
    api.tokens["acme"] = response.json()["token"]
    fleet = await register(api, 2, role="acme")
    assert (fleet.dm_url, fleet.server_id) == ("http://127.0.0.1:8700/dm/acme", "acme-dm")
    fleet = await register(api, 1, start=5, dm_url="https://dm.example.com/dm/acme", server_id="x")
    assert (fleet.dm_url, fleet.server_id) == ("https://dm.example.com/dm/acme", "x")


@pytest.mark.anyio
async def test_a_refused_batch_says_why_and_keeps_the_batches_registered_before(api: Api) -> None:
    taken = {"device_id": "IMEI:350000000000004", "username": "u", "password": "p"}
    assert (await api.post("/devices", json=taken)).status_code == 201
    with pytest.raises(RegistrationError) as caught:
        await register(api, 5, batch_size=3)
    error = caught.value
    assert str(error) == (
        "batch 2 (IMEI:350000000000004 .. IMEI:350000000000005) refused: "
        "409: 1 device(s) of the batch are already registered: IMEI:350000000000004"
    )
    assert not error.unreachable
    assert error.registered is not None
    assert [d.device_id for d in error.registered.devices] == fleet_device_ids("IMEI:35", 3)
    assert await devices_on_server(api) == 4


@pytest.mark.anyio
async def test_a_bad_token_a_viewer_and_no_server_are_one_clear_message(api: Api) -> None:
    api.tokens["bogus"] = "omadm_nope"
    with pytest.raises(
        RegistrationError, match=r"^the server refused the token: 401: the bearer token is not"
    ):
        await register(api, 1, role="bogus")
    with pytest.raises(RegistrationError) as caught:
        await register(api, 1, role="viewer")
    assert str(caught.value).endswith(
        "refused: 403: token 'viewer-bot' has the role viewer; this needs operator"
    )
    assert caught.value.registered is None
    with pytest.raises(RegistrationError, match=r"^cannot reach http://127.0.0.1:\d+: ") as caught:
        await register_fleet(f"http://127.0.0.1:{free_port()}", "t", 1)
    assert caught.value.unreachable
    assert await devices_on_server(api) == 0


# -- the command line, against a real server process ------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ServerProcess, str, str]]:
    proc = ServerProcess(
        f"sqlite:///{tmp_path / 'srv' / 'omadm.sqlite'}", tmp_path / "srv", tmp_path / "srv.log"
    )
    proc.run("migrate")
    operator = proc.run("token", "add", "ops", "--role", "operator").split()[-1]
    viewer = proc.run("token", "add", "eyes", "--role", "viewer").split()[-1]
    proc.start()
    try:
        yield proc, operator, viewer
    finally:
        proc.stop()


@pytest.mark.e2e
def test_the_command_registers_writes_the_file_and_refuses_clearly(
    server: tuple[ServerProcess, str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc, operator, viewer = server
    monkeypatch.setenv("OMADM_CTL_CONFIG", str(tmp_path / "none.toml"))
    out = tmp_path / "fleet.json"
    args = ["sim", "register", "--server", proc.url, "--out", str(out), "--batch-size", "10"]
    done = runner.invoke(
        app, [*args, "--token", operator, "--auth", "hmac", "--count", "25", "--start", "11"]
    )
    assert done.exit_code == 0, done.output
    assert "registered 25 devices (IMEI:350000000000011 .. IMEI:350000000000035)" in done.output
    assert f"DM URL {proc.url}/dm, ServerID omadm" in done.output
    fleet = load_fleet(out)
    assert len(fleet.devices) == 25 and fleet.dm_url == f"{proc.url}/dm"
    listed = runner.invoke(app, ["ctl", "--url", proc.url, "--token", viewer, "devices", "list", "--json"])
    assert json.loads(listed.output)["total"] == 25
    assert {d.notify_address for d in fleet.devices} == {""}

    woken = tmp_path / "notify.json"
    notify = ["sim", "register", "--server", proc.url, "--out", str(woken), "--token", operator]
    done = runner.invoke(app, [*notify, "--count", "2", "--start", "500", "--notify", "4000"])
    assert done.exit_code == 0, done.output
    assert [d.notify_address for d in load_fleet(woken).devices] == [
        "udp://127.1.1.244:4000",
        "udp://127.1.1.245:4000",
    ]

    again = runner.invoke(app, [*args, "--token", operator, "--count", "1", "--start", "90"])
    assert again.exit_code == 2 and "fleet.json exists: give another --out, or --force" in again.output
    monkeypatch.setenv("OMADM_TOKEN", viewer)  # as with ctl: the token from the environment
    refused = runner.invoke(app, [*args, "--force", "--count", "1", "--start", "90"])
    assert refused.exit_code == 1
    assert "error: batch 1 (IMEI:350000000000090 .. IMEI:350000000000090) refused: 403:" in refused.output
    assert "Traceback" not in refused.output
    assert load_fleet(out) == fleet  # refused before any batch was registered: the file is left alone

    monkeypatch.setenv("OMADM_TOKEN", operator)
    partial = runner.invoke(app, [*args, "--force", "--count", "20", "--start", "1"])
    assert partial.exit_code == 1
    assert (
        "error: batch 2 (IMEI:350000000000011 .. IMEI:350000000000020) refused: 409: "
        "10 device(s) of the batch are already registered: " in partial.output
    )
    assert f"the 10 devices registered before are in {out}" in partial.output
    assert [d.device_id for d in load_fleet(out).devices] == fleet_device_ids("IMEI:35", 10)

    elsewhere = ["--server", f"http://127.0.0.1:{free_port()}", "--out", str(tmp_path / "x.json")]
    unreachable = runner.invoke(app, ["sim", "register", "--count", "1", *elsewhere])
    assert unreachable.exit_code == 4 and "error: cannot reach" in unreachable.output
    assert not (tmp_path / "x.json").exists()
