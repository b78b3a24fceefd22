"""``omadm server`` administration commands, in process, on a fresh SQLite database."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from omadm.cli import app

runner = CliRunner()


@pytest.fixture
def server(tmp_path: Path) -> list[str]:
    base = ["server", "--data-dir", str(tmp_path / "srv")]
    done = runner.invoke(app, [*base, "migrate"])
    assert done.exit_code == 0, done.output
    assert "is at revision" in done.output
    return base


def run(base: list[str], *args: str) -> tuple[int, str]:
    done = runner.invoke(app, [*base, *args])
    return done.exit_code, done.output


def test_devices_and_jobs_with_clear_errors(server: list[str]) -> None:
    assert run(server, "device", "add", "IMEI:1", "--username", "u", "--password", "p") == (
        0,
        "device IMEI:1 registered\n",
    )
    code, out = run(server, "device", "add", "IMEI:1", "--username", "u", "--password", "p")
    assert code == 1 and "already registered" in out
    code, out = run(server, "job", "add", "IMEI:1", "install")
    assert code == 1 and "needs an artifact_id or a url" in out
    code, out = run(server, "job", "add", "IMEI:1", "activate", "--component", "com.x")
    assert code == 1 and "has no deployed component 'com.x'" in out
    code, out = run(server, "job", "add", "IMEI:1", "explode")
    assert code == 1 and "unknown job kind 'explode'" in out
    code, out = run(server, "job", "add", "IMEI:1", "install", "--url", "http://127.0.0.1:9/p.omp")
    assert code == 1 and "needs pkg_id" in out
    url = "http://127.0.0.1:9/p.omp"
    code, out = run(server, "job", "add", "IMEI:1", "install", "--url", url, "--pkg-id", "com.x.pkg")
    assert code == 0 and "job 1 queued (install" in out
    assert run(server, "job", "cancel", "1") == (0, "job 1 cancelled\n")
    code, out = run(server, "job", "cancel", "1")
    assert code == 1 and "already cancelled" in out
    code, out = run(server, "device", "show", "IMEI:1")
    assert code == 0 and "job        1  install  cancelled" in out and "history" in out


def test_a_pending_device_is_accepted_with_credentials_or_rejected(server: list[str], tmp_path: Path) -> None:
    import asyncio  # noqa: PLC0415

    from omadm.server.registry import add_device  # noqa: PLC0415
    from omadm.server.store.engine import database_url, make_engine, session_factory  # noqa: PLC0415
    from omadm.server.store.models import DeviceState  # noqa: PLC0415

    async def pending() -> None:
        engine = make_engine(database_url(None, tmp_path / "srv"))
        async with session_factory(engine)() as db, db.begin():
            await add_device(db, "IMEI:2", username="", password="", state=DeviceState.PENDING)
        await engine.dispose()

    asyncio.run(pending())
    code, out = run(server, "device", "accept", "IMEI:2")
    assert code == 1 and "has no credentials yet" in out
    assert run(server, "device", "accept", "IMEI:2", "--username", "u", "--password", "p") == (
        0,
        "device IMEI:2 accepted\n",
    )
    assert run(server, "device", "accept", "IMEI:2", "--reject") == (0, "device IMEI:2 rejected\n")
    code, out = run(server, "device", "list")
    assert "IMEI:2  rejected" in out


def _audit_rows(tmp_path: Path) -> list[tuple[str, str, str, str]]:
    """(authority name, actor, action, target) of every audit entry, oldest first."""
    import asyncio  # noqa: PLC0415

    from sqlalchemy import select  # noqa: PLC0415

    from omadm.server.store.engine import database_url, make_engine, session_factory  # noqa: PLC0415
    from omadm.server.store.models import AuditEntry, Authority  # noqa: PLC0415

    async def rows() -> list[tuple[str, str, str, str]]:
        engine = make_engine(database_url(None, tmp_path / "srv"))
        try:
            async with session_factory(engine)() as db:
                query = (
                    select(Authority.name, AuditEntry.actor, AuditEntry.action, AuditEntry.target)
                    .join(Authority, Authority.id == AuditEntry.authority_pk)
                    .order_by(AuditEntry.id)
                )
                return [(a, b, c, d) for a, b, c, d in (await db.execute(query)).all()]
        finally:
            await engine.dispose()

    return asyncio.run(rows())


def test_authorities_from_the_shell_and_every_change_audited(
    server: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from omadm.package.build import build_package  # noqa: PLC0415
    from omadm.package.signing import generate_key, save_public_key  # noqa: PLC0415

    monkeypatch.setattr("getpass.getuser", lambda: "alice")
    assert run(server, "authority", "add", "acme", "--server-id", "acme-dm", "--description", "Acme") == (
        0,
        "authority acme created (ServerID acme-dm)\n",
    )
    code, out = run(server, "authority", "add", "other", "--server-id", "acme-dm")
    assert code == 1 and "ServerID 'acme-dm' is authority 'acme''s already" in out
    code, out = run(server, "authority", "add", "own", "--server-id", "omadm")
    assert code == 1 and "the server's own" in out
    code, out = run(server, "authority", "list")
    assert out.splitlines() == [
        "default  omadm (the server's own)  The server's own identity (its configured server_id).",
        "acme  acme-dm  Acme",
    ]

    # The same DevId in both authorities, each with its own credentials.
    for authority, user in (("default", "d"), ("acme", "a")):
        done = run(
            server, "device", "add", "IMEI:1", "--username", user, "--password", "p", "--authority", authority
        )
        assert done == (0, "device IMEI:1 registered\n")
    code, out = run(
        server, "device", "add", "IMEI:1", "--username", "x", "--password", "p", "--authority", "nope"
    )
    assert code == 1 and "no authority 'nope'" in out
    assert "IMEI:1  accepted" in run(server, "device", "list", "--authority", "acme")[1]
    package = tmp_path / "hello.omp"
    key = generate_key()
    save_public_key(key, tmp_path / "publisher.pub.pem")
    build_package(
        Path(__file__).resolve().parents[2] / "examples" / "hello-package", package, signing_key=key
    )
    trusted = run(
        server, "publisher", "add", "tests", str(tmp_path / "publisher.pub.pem"), "--authority", "acme"
    )
    assert trusted[0] == 0, trusted
    code, out = run(server, "artifact", "add", str(package), "--authority", "acme")
    assert code == 0 and out.startswith("artifact 1:")
    code, out = run(server, "job", "add", "IMEI:1", "install", "--artifact", "1")
    assert code == 1 and "no artifact 1" in out  # acme's package, not the default authority's
    code, out = run(server, "job", "add", "IMEI:1", "install", "--artifact", "1", "--authority", "acme")
    assert code == 0 and out.startswith("job 1 queued")
    assert run(server, "job", "list")[1] == ""  # the default authority's: none
    assert run(server, "job", "cancel", "1") == (0, "job 1 cancelled\n")
    code, out = run(server, "token", "add", "acme-ops", "--role", "operator", "--authority", "acme")
    assert code == 0
    code, out = run(server, "token", "list")
    assert "acme-ops  operator  acme  created" in out
    assert run(server, "token", "revoke", "acme-ops") == (0, "token 'acme-ops' revoked\n")
    assert run(server, "device", "accept", "IMEI:1", "--reject", "--authority", "acme")[0] == 0

    assert _audit_rows(tmp_path) == [
        ("default", "shell:alice", "authority.add", "authority acme"),
        ("default", "shell:alice", "device.add", "IMEI:1"),
        ("acme", "shell:alice", "device.add", "IMEI:1"),
        ("acme", "shell:alice", "publisher.add", "publisher tests"),
        ("acme", "shell:alice", "package.add", "package 1"),
        ("acme", "shell:alice", "job.add", "job 1"),
        ("acme", "shell:alice", "job.cancel", "job 1"),
        ("acme", "shell:alice", "token.add", "token acme-ops"),
        ("acme", "shell:alice", "token.revoke", "token acme-ops"),
        ("acme", "shell:alice", "device.reject", "IMEI:1"),
    ]
