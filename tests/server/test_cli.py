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
