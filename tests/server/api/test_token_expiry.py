"""API tokens with an expiry and rotation (issue 17, point 8), on SQLite and PostgreSQL.

An expired token, a secret replaced by a rotation and an unknown token are each refused
with HTTP 401 and their own message (and ``code``); a rotation's grace period keeps the old
secret working until it ends; the CLI and the REST API offer the same; a database of the
previous revision keeps its tokens (never expiring) when migrated.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text, update
from typer.testing import CliRunner

from omadm.cli import app as cli_app
from omadm.server import metrics
from omadm.server.api.auth import hash_token, parse_duration, resolve_expiry
from omadm.server.app import create_app
from omadm.server.config import ServerConfig
from omadm.server.registry import RegistryError
from omadm.server.store.engine import make_engine
from omadm.server.store.migrate import migrate
from omadm.server.store.models import ApiToken, AuditEntry

from .conftest import V1, Api, problem

pytestmark = pytest.mark.anyio


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def whoami(api: Api, token: str) -> httpx.Response:
    return await api.http.get(f"{V1}/whoami", headers=bearer(token))


async def set_times(api: Api, name: str, **values: Any) -> None:
    """Move a token's times (the clock cannot be moved for a test: its rows can)."""
    async with api.sessions() as db, db.begin():
        await db.execute(update(ApiToken).where(ApiToken.name == name).values(**values))


def failures(reason: str) -> float:
    return float(metrics.AUTH_FAILURES.labels("api", reason)._value.get())


async def create(api: Api, name: str, **body: Any) -> httpx.Response:
    return await api.post("/tokens", role="admin", json={"name": name, "role": "viewer", **body})


async def test_an_expired_token_is_refused_with_its_own_message(api: Api) -> None:
    created = await create(api, "ci", expires_in="1h")
    assert created.status_code == 201, created.text
    out = created.json()
    expires = datetime.fromisoformat(out["expires"])
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)
    assert out["rotated"] is None and out["previous_expires"] is None
    token = out["token"]
    assert (await whoami(api, token)).status_code == 200

    before = failures("expired")
    past = datetime.now(UTC) - timedelta(minutes=1)
    await set_times(api, "ci", expires=past)
    body = problem(await whoami(api, token), 401)
    assert body["code"] == "token-expired"
    assert body["detail"].startswith("token 'ci' expired at ")
    assert "omadm server token rotate ci" in body["detail"]
    assert failures("expired") == before + 1

    unknown = problem(await whoami(api, "omadm_not-a-token"), 401)
    assert unknown["detail"] == "the bearer token is not valid (unknown or revoked)"
    assert "code" not in unknown
    missing = problem(await api.http.get(f"{V1}/whoami"), 401)
    assert "needs a bearer token" in missing["detail"]

    listed = {t["name"]: t for t in (await api.get("/tokens", role="admin")).json()}
    assert datetime.fromisoformat(listed["ci"]["expires"]) == past
    assert listed["viewer-bot"]["expires"] is None  # made without an expiry: never


async def test_expiry_given_as_a_moment_and_bad_expiries(api: Api) -> None:
    at = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    created = await create(api, "at", expires_at=at.isoformat())
    assert created.status_code == 201, created.text
    assert datetime.fromisoformat(created.json()["expires"]) == at

    cases = {
        "expires_in soon": ({"expires_in": "soon"}, "expires-in must be a whole number with a unit"),
        "both": ({"expires_in": "1d", "expires_at": at.isoformat()}, "not both"),
        "past": ({"expires_at": "2020-01-01T00:00:00Z"}, "is not in the future"),
        "naive": ({"expires_at": "2030-01-01T00:00:00"}, "needs a timezone"),
        "zero": ({"expires_in": "0"}, "must be more than 0"),
        "huge": ({"expires_in": "100000d"}, "at most 3660 days"),
    }
    for n, (body, message) in enumerate(cases.values()):
        refused = problem(await create(api, f"bad-{n}", **body), 422)
        assert message in refused["detail"], (body, refused)
    names = {t["name"] for t in (await api.get("/tokens", role="admin")).json()}
    assert not any(name.startswith("bad-") for name in names)  # nothing was created


async def test_rotation_with_a_grace_period_then_the_old_secret_says_rotated(api: Api) -> None:
    old = (await create(api, "deploy", expires_in="30d")).json()
    rotated = await api.post(f"/tokens/{old['id']}/rotate", role="admin", json={"grace": "1h"})
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert new["id"] == old["id"] and new["name"] == "deploy" and new["role"] == "viewer"
    assert new["token"] != old["token"]
    # The token's own lifetime (30 days) again, from the rotation.
    lifetime = datetime.fromisoformat(new["expires"]) - datetime.fromisoformat(new["rotated"])
    assert abs(lifetime - timedelta(days=30)) < timedelta(seconds=5)
    grace = datetime.fromisoformat(new["previous_expires"]) - datetime.fromisoformat(new["rotated"])
    assert abs(grace - timedelta(hours=1)) < timedelta(seconds=5)

    # In the grace period both secrets work, as the same token.
    for token in (old["token"], new["token"]):
        answer = await whoami(api, token)
        assert answer.status_code == 200 and answer.json()["name"] == "deploy"

    await set_times(api, "deploy", previous_expires=datetime.now(UTC) - timedelta(seconds=1))
    before = failures("rotated")
    body = problem(await whoami(api, old["token"]), 401)
    assert body["code"] == "token-rotated"
    assert "token 'deploy' was replaced by a rotation at" in body["detail"]
    assert failures("rotated") == before + 1
    assert (await whoami(api, new["token"])).status_code == 200

    # Without grace the old secret stops at once; a second rotation forgets the first secret.
    again = (await api.post(f"/tokens/{old['id']}/rotate", role="admin", json={})).json()
    assert problem(await whoami(api, new["token"]), 401)["code"] == "token-rotated"
    assert problem(await whoami(api, old["token"]), 401)["detail"].endswith("(unknown or revoked)")
    assert (await whoami(api, again["token"])).status_code == 200

    actions = [(e.action, e.actor, e.detail.get("grace_s")) for e in await api.audit_rows()]
    assert ("token.rotate", "admin-bot", 3600) in actions and ("token.rotate", "admin-bot", 0) in actions


async def test_an_expired_token_rotated_works_again_and_rotation_is_for_admins(api: Api) -> None:
    made = (await create(api, "lapsed", expires_in="1d")).json()
    await set_times(
        api,
        "lapsed",
        created=datetime.now(UTC) - timedelta(days=3),
        expires=datetime.now(UTC) - timedelta(days=2),
    )
    assert problem(await whoami(api, made["token"]), 401)["code"] == "token-expired"
    path = f"/tokens/{made['id']}/rotate"
    assert problem(await api.post(path, role="operator", json={}), 403)
    never = await api.post(path, role="admin", json={"never_expires": True, "grace": "1h"})
    assert never.status_code == 200, never.text
    fresh = never.json()
    assert fresh["expires"] is None
    assert (await whoami(api, fresh["token"])).status_code == 200
    # The old secret's grace never outlives the token's own (past) expiry: it stays refused.
    assert problem(await whoami(api, made["token"]), 401)["code"] == "token-rotated"

    bad = {
        "grace": ({"grace": "-1h"}, "grace must be a whole number"),
        "both": ({"never_expires": True, "expires_in": "1d"}, "never_expires cannot go with"),
        "past": ({"expires_at": "2020-01-01T00:00:00Z"}, "is not in the future"),
    }
    for body, message in bad.values():
        assert message in problem(await api.post(path, role="admin", json=body), 422)["detail"]
    assert problem(await api.post("/tokens/999999/rotate", role="admin", json={}), 404)


def test_duration_and_expiry_parsing() -> None:
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration(" 12H ") == timedelta(hours=12)
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration("2w") == timedelta(weeks=2)
    assert parse_duration("45") == timedelta(seconds=45)
    for bad in ("", "1.5d", "d", "3x", "-1h"):
        with pytest.raises(RegistryError, match="whole number with a unit"):
            parse_duration(bad)
    now = datetime(2027, 1, 1, tzinfo=UTC)
    assert resolve_expiry(None, None, now=now) is None
    assert resolve_expiry("1d", None, now=now) == now + timedelta(days=1)
    assert resolve_expiry(None, "2027-01-02T00:00:00Z", now=now) == now + timedelta(days=1)
    with pytest.raises(RegistryError, match="ISO 8601"):
        resolve_expiry(None, "tomorrow", now=now)


runner = CliRunner()


def test_cli_add_with_expiry_list_and_rotate(tmp_path: Path) -> None:
    base = ["server", "--data-dir", str(tmp_path / "srv")]

    def run(*args: str) -> tuple[int, str]:
        done = runner.invoke(cli_app, [*base, *args])
        return done.exit_code, done.output

    assert run("migrate")[0] == 0
    code, out = run("token", "add", "nightly", "--role", "operator", "--expires-in", "30d")
    assert code == 0, out
    first = out.splitlines()[0]
    assert "token 'nightly' (operator, expires " in out
    code, out = run("token", "list")
    assert "nightly  operator  default  created" in out and "  expires 20" in out

    code, out = run("token", "rotate", "nightly", "--grace", "2h")
    assert code == 0, out
    second = out.splitlines()[0]
    assert second.startswith("omadm_") and second != first
    assert "token 'nightly' rotated: the new secret expires " in out
    assert "the old one still works until " in out
    code, out = run("token", "rotate", "nightly")
    assert code == 0 and "the old one revoked now" in out
    third = out.splitlines()[0]
    code, out = run("token", "list")
    assert "  rotated 20" in out

    for args, message in (
        (("token", "add", "x", "--expires-in", "3x"), "expires-in must be a whole number with a unit"),
        (("token", "add", "x", "--expires-at", "2020-01-01T00:00Z"), "is not in the future"),
        (("token", "add", "x", "--expires-at", "monday"), "expires-at must be an ISO 8601 time"),
        (("token", "rotate", "nobody"), "no token named 'nobody'"),
        (("token", "rotate", "nightly", "--grace", "soon"), "--grace must be a whole number"),
        (("token", "rotate", "nightly", "--never-expires", "--expires-in", "1d"), "cannot go with"),
    ):
        code, out = run(*args)
        assert code == 1 and message in out, (args, out)

    async def check() -> None:
        app = create_app(ServerConfig(data_dir=tmp_path / "srv", sweep_interval=0))
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                answers = [
                    (await http.get(f"{V1}/whoami", headers=bearer(t))) for t in (first, second, third)
                ]
            assert [a.status_code for a in answers] == [401, 401, 200]
            assert answers[0].json()["detail"].endswith("(unknown or revoked)")  # two rotations ago
            assert answers[1].json()["code"] == "token-rotated"
            async with app.state.sessions() as db:
                actions = [e.action for e in (await db.scalars(select(AuditEntry))).all()]
            assert actions.count("token.rotate") == 2
        finally:
            await app.state.engine.dispose()

    asyncio.run(check())


def test_tokens_of_the_previous_revision_survive_the_migration(empty_db_url: str, tmp_path: Path) -> None:
    """0008 -> 0009 (and back) on each engine: existing tokens work and never expire."""
    migrate(empty_db_url, "0008")

    async def insert() -> None:
        engine = make_engine(empty_db_url, pool_size=1)
        try:
            async with engine.begin() as connection:
                await connection.execute(
                    text(
                        "INSERT INTO api_tokens (authority_pk, name, role, token_hash, created) "
                        "VALUES (1, 'old', 'viewer', :hash, :created)"
                    ),
                    {"hash": hash_token("omadm_old-secret"), "created": datetime.now(UTC)},
                )
        finally:
            await engine.dispose()

    asyncio.run(insert())
    migrate(empty_db_url)

    async def use() -> None:
        app = create_app(ServerConfig(db=empty_db_url, data_dir=tmp_path / "srv", sweep_interval=0))
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                answer = await http.get(f"{V1}/whoami", headers=bearer("omadm_old-secret"))
            assert answer.status_code == 200 and answer.json()["name"] == "old"
            async with app.state.sessions() as db:
                row = (await db.scalars(select(ApiToken))).one()
            assert row.expires is None and row.previous_hash is None
        finally:
            await app.state.engine.dispose()

    asyncio.run(use())
    from omadm.server.store.migrate import downgrade  # noqa: PLC0415

    downgrade(empty_db_url, "0008")  # and back: the columns go, the token stays
    migrate(empty_db_url)


def test_ctl_creates_rotates_and_revokes_and_shows_the_refusals(tmp_path: Path) -> None:
    """``omadm ctl tokens`` against a real server; an expired token's message reaches the shell."""
    from ..serverproc import ServerProcess  # noqa: PLC0415

    db = f"sqlite:///{tmp_path / 'srv' / 'omadm-server.sqlite'}"
    server = ServerProcess(db, tmp_path / "srv", tmp_path / "server.log")
    base = ["server", "--db", db, "--data-dir", str(tmp_path / "srv")]
    assert runner.invoke(cli_app, [*base, "migrate"]).exit_code == 0  # in-process: faster
    admin = runner.invoke(cli_app, [*base, "token", "add", "root", "--role", "admin"]).output.split()[0]
    server.start(timeout=60)

    def ctl(token: str, *args: str) -> tuple[int, str]:
        done = runner.invoke(cli_app, ["ctl", "--url", server.url, "--token", token, *args])
        return done.exit_code, done.output

    try:
        code, out = ctl(admin, "tokens", "create", "robot", "--role", "operator", "--expires-in", "7d")
        assert code == 0, out
        first = out.splitlines()[0]
        assert "token 'robot' (operator) created; it expires 20" in out
        assert ctl(first, "devices", "list")[0] == 0

        code, out = ctl(admin, "tokens", "rotate", "robot", "--grace", "0")
        assert code == 0, out
        second = out.splitlines()[0]
        assert second.startswith("omadm_") and second != first and "rotated; it expires 20" in out
        code, out = ctl(first, "devices", "list")
        assert code == 1 and "401: this secret of token 'robot' was replaced by a rotation" in out

        code, out = ctl(admin, "tokens", "list", "--json")
        robot = next(t for t in json.loads(out) if t["name"] == "robot")
        assert robot["rotated"] and robot["expires"]

        engine_url = db.replace("sqlite:///", "sqlite+aiosqlite:///")

        async def expire() -> None:
            engine = make_engine(engine_url, pool_size=1)
            try:
                async with engine.begin() as connection:
                    await connection.execute(
                        update(ApiToken)
                        .where(ApiToken.name == "robot")
                        .values(expires=datetime.now(UTC) - timedelta(seconds=1))
                    )
            finally:
                await engine.dispose()

        asyncio.run(expire())
        code, out = ctl(second, "devices", "list")
        assert code == 1 and "401: token 'robot' expired at " in out

        assert ctl(admin, "tokens", "revoke", "robot") == (0, "token 'robot' revoked\n")
        code, out = ctl(admin, "tokens", "rotate", "robot")
        assert code == 1 and "no token named 'robot'" in out
        code, out = ctl(admin, "tokens", "create", "x", "--expires-in", "soon")
        assert code == 1 and "expires-in must be a whole number with a unit" in out
    finally:
        server.stop()
