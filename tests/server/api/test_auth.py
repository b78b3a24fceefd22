"""Tokens and roles, problem documents for every refusal, OpenAPI, the tokens endpoints, the CLI."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from omadm.cli import app as cli_app
from omadm.server.api.auth import hash_token
from omadm.server.app import create_app
from omadm.server.config import ServerConfig
from omadm.server.store.models import ApiToken

from .conftest import V1, Api, problem

pytestmark = pytest.mark.anyio


async def test_missing_or_unknown_token_is_401(api: Api) -> None:
    response = await api.http.get(f"{V1}/devices")
    body = problem(response, 401)
    assert "bearer token" in body["detail"]
    assert response.headers["www-authenticate"].startswith("Bearer")
    response = await api.http.get(f"{V1}/devices", headers={"Authorization": "Bearer omadm_nope"})
    assert "not valid" in problem(response, 401)["detail"]
    response = await api.http.get(f"{V1}/devices", headers={"Authorization": "Basic dTpw"})
    problem(response, 401)


async def test_whoami_names_the_token_its_role_and_authority(api: Api) -> None:
    for role in ("viewer", "operator", "admin"):
        response = await api.get("/whoami", role)
        assert response.status_code == 200
        assert response.json() == {
            "name": f"{role}-bot",
            "role": role,
            "authority": "default",
            "server_id": "omadm",  # the configured one: the default authority has none of its own
            "dm_url": "http://127.0.0.1:8700/dm",
        }
    problem(await api.http.get(f"{V1}/whoami"), 401)


async def test_whoami_gives_another_authority_s_server_id_and_dm_url(api: Api) -> None:
    """What a device's DMAcc account for that authority needs (``omadm sim register`` asks)."""
    response = await api.post("/authorities", "admin", json={"name": "acme", "server_id": "acme-dm"})
    assert response.status_code == 201, response.text
    response = await api.post(
        "/tokens", "admin", json={"name": "acme-eyes", "role": "viewer", "authority": "acme"}
    )
    token = response.json()["token"]
    response = await api.http.get(f"{V1}/whoami", headers={"Authorization": f"Bearer {token}"})
    assert response.json() == {
        "name": "acme-eyes",
        "role": "viewer",
        "authority": "acme",
        "server_id": "acme-dm",
        "dm_url": "http://127.0.0.1:8700/dm/acme",
    }


async def test_roles_are_ordered_viewer_operator_admin(api: Api) -> None:
    body = problem(await api.post("/jobs", "viewer", json={"device_id": "IMEI:1", "kind": "install"}), 403)
    assert body["detail"] == "token 'viewer-bot' has the role viewer; this needs operator"
    problem(
        await api.post("/devices", "viewer", json={"device_id": "X", "username": "u", "password": "p"}), 403
    )
    problem(await api.get("/audit", "viewer"), 403)
    problem(await api.get("/audit", "operator"), 403)
    problem(await api.get("/tokens", "operator"), 403)
    for role in ("viewer", "operator", "admin"):
        assert (await api.get("/devices", role)).status_code == 200
    assert (await api.get("/audit", "admin")).status_code == 200
    # a refused request changes nothing and is not audited
    assert await api.audit_rows() == []


async def test_last_used_is_recorded(api: Api) -> None:
    async with api.sessions() as db:
        row = await db.scalar(select(ApiToken).where(ApiToken.name == "viewer-bot"))
        assert row is not None and row.last_used is None
    await api.get("/devices")
    async with api.sessions() as db:
        row = await db.scalar(select(ApiToken).where(ApiToken.name == "viewer-bot"))
        assert row is not None and row.last_used is not None
        assert row.token_hash == hash_token(api.tokens["viewer"])


async def test_admin_creates_and_revokes_tokens(api: Api) -> None:
    response = await api.post("/tokens", "admin", json={"name": "ci", "role": "operator"})
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["role"] == "operator" and created["token"].startswith("omadm_")
    ci = {"Authorization": f"Bearer {created['token']}"}
    assert (await api.http.get(f"{V1}/devices", headers=ci)).status_code == 200
    listed = (await api.get("/tokens", "admin")).json()
    assert [t["name"] for t in listed] == ["admin-bot", "ci", "operator-bot", "viewer-bot"]
    assert all("token" not in t and "token_hash" not in t for t in listed)
    assert (
        "already"
        in problem(await api.post("/tokens", "admin", json={"name": "ci", "role": "viewer"}), 409)["detail"]
    )
    body = problem(await api.post("/tokens", "admin", json={"name": "x", "role": "root"}), 422)
    assert body["errors"][0]["field"] == "body.role"
    assert (await api.delete(f"/tokens/{created['id']}", "admin")).status_code == 204
    problem(await api.http.get(f"{V1}/devices", headers=ci), 401)
    problem(await api.delete(f"/tokens/{created['id']}", "admin"), 404)
    actions = [(r.actor, r.action, r.target, r.detail) for r in await api.audit_rows()]
    assert actions == [
        ("admin-bot", "token.add", "token ci", {"role": "operator"}),
        ("admin-bot", "token.revoke", "token ci", {"role": "operator"}),
    ]


async def test_errors_under_api_are_problems_elsewhere_unchanged(api: Api) -> None:
    body = problem(await api.get("/nothing-here"), 404)
    assert body["detail"] == "no such resource: GET /api/v1/nothing-here"
    problem(await api.put("/devices"), 405)
    response = await api.http.get("/not-api")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": "Not Found"}


async def test_openapi_describes_the_v1_api(api: Api) -> None:
    response = await api.http.get("/api/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    paths = set(spec["paths"])
    assert {
        "/api/v1/devices",
        "/api/v1/devices/{device_id}",
        "/api/v1/devices/{device_id}/inventory",
        "/api/v1/devices/{device_id}/history",
        "/api/v1/devices/{device_id}/accept",
        "/api/v1/devices/{device_id}/reject",
        "/api/v1/devices/{device_id}/tags",
        "/api/v1/packages",
        "/api/v1/packages/{package_id}",
        "/api/v1/jobs",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/cancel",
        "/api/v1/audit",
        "/api/v1/tokens",
    } <= paths
    assert "/dm" not in paths
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    upload = spec["paths"]["/api/v1/packages"]["post"]["requestBody"]["content"]
    assert "application/octet-stream" in upload
    refused = spec["paths"]["/api/v1/jobs"]["post"]["responses"]
    assert refused["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ProblemOut"
    }
    assert {"401", "403", "404"} <= set(refused)


async def test_audit_log_filters_and_paging(api: Api) -> None:
    for n in range(3):
        body = {"device_id": f"IMEI:{n}", "username": "u", "password": "p"}
        assert (await api.post("/devices", json=body)).status_code == 201
    assert (await api.post("/devices/IMEI:1/reject", "admin")).status_code == 200
    page = (await api.get("/audit", "admin")).json()
    assert page["total"] == 4
    assert [(e["actor"], e["action"], e["target"]) for e in page["items"]] == [
        ("admin-bot", "device.reject", "IMEI:1"),
        ("operator-bot", "device.add", "IMEI:2"),
        ("operator-bot", "device.add", "IMEI:1"),
        ("operator-bot", "device.add", "IMEI:0"),
    ]
    page = (
        await api.get("/audit", "admin", params={"actor": "operator-bot", "limit": 1, "offset": 1})
    ).json()
    assert page["total"] == 3 and [e["target"] for e in page["items"]] == ["IMEI:1"]
    page = (await api.get("/audit", "admin", params={"target": "IMEI:1"})).json()
    assert [e["action"] for e in page["items"]] == ["device.reject", "device.add"]
    page = (await api.get("/audit", "admin", params={"action": "device.reject"})).json()
    assert page["total"] == 1
    first = page["items"][0]["at"]
    assert (await api.get("/audit", "admin", params={"since": first})).json()["total"] >= 1
    assert (await api.get("/audit", "admin", params={"since": "2999-01-01T00:00:00Z"})).json()["total"] == 0
    problem(await api.get("/audit", "admin", params={"since": "2026-01-01T00:00:00"}), 422)


def test_cli_token_add_prints_a_working_token(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["server", "--data-dir", str(tmp_path / "srv")]
    assert runner.invoke(cli_app, [*base, "migrate"]).exit_code == 0
    done = runner.invoke(cli_app, [*base, "token", "add", "alice", "--role", "operator"])
    assert done.exit_code == 0, done.output
    token = done.stdout.strip()
    assert token.startswith("omadm_")
    done = runner.invoke(cli_app, [*base, "token", "add", "alice"])
    assert done.exit_code == 1 and "exists already" in done.output
    done = runner.invoke(cli_app, [*base, "token", "add", "bob", "--role", "root"])
    assert done.exit_code == 1 and "role must be one of" in done.output
    listed = runner.invoke(cli_app, [*base, "token", "list"]).stdout
    assert "alice  operator" in listed and token not in listed

    async def use() -> tuple[int, int]:
        app = create_app(ServerConfig(data_dir=tmp_path / "srv", sweep_interval=0))
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                auth = {"Authorization": f"Bearer {token}"}
                created = await http.post(
                    f"{V1}/devices",
                    headers=auth,
                    json={"device_id": "IMEI:9", "username": "u", "password": "p"},
                )
                audit = await http.get(f"{V1}/audit", headers=auth)
                return created.status_code, audit.status_code
        finally:
            await app.state.engine.dispose()

    assert anyio.run(use) == (201, 403)
    done = runner.invoke(cli_app, [*base, "token", "revoke", "alice"])
    assert done.exit_code == 0, done.output
    assert runner.invoke(cli_app, [*base, "token", "revoke", "alice"]).exit_code == 1
