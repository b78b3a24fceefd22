"""``omadm ctl campaigns show|watch`` against a real server process (issue 15, section 6): each
wave's devices with their state, job and reason, through ``GET /campaigns/{id}/devices``;
``watch`` prints line by line when its output is not a terminal and exits non-zero when the
campaign pauses (5) or stops or is cancelled (6)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omadm.cli import app
from omadm.server.registry import find_device
from omadm.server.store.engine import database_url, make_engine, session_factory
from omadm.server.store.models import InventoryEntry

from .serverproc import ServerProcess, running_server

pytestmark = pytest.mark.e2e
runner = CliRunner()
COMPONENT = "com.example.hello"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    with running_server(tmp_path) as started:
        yield started


def deployed(data_dir: Path, device_ids: list[str]) -> None:
    """Give the devices the component in their inventory, as a DM session would."""

    async def write() -> None:
        engine = make_engine(database_url(None, data_dir))
        try:
            async with session_factory(engine)() as db, db.begin():
                for device_id in device_ids:
                    device = await find_device(db, device_id)
                    assert device is not None
                    db.add(
                        InventoryEntry(device_pk=device.id, kind="deployed", node="hello", ident=COMPONENT)
                    )
        finally:
            await engine.dispose()

    asyncio.run(write())


def ctl(server: ServerProcess, token: str, *args: str) -> tuple[int, str]:
    done = runner.invoke(app, ["ctl", "--url", server.url, "--token", token, *args])
    return done.exit_code, done.output


def test_show_lists_each_waves_devices_and_watch_ends_with_the_campaigns_state(
    server: tuple[ServerProcess, str], tmp_path: Path
) -> None:
    proc, token = server
    for n in (1, 2, 3):
        code, out = ctl(
            proc,
            token,
            "devices",
            "add",
            f"IMEI:{n}",
            "--username",
            f"u{n}",
            "--password",
            "p",
            "--tag",
            "ring=b",
        )
        assert code == 0, out
    deployed(tmp_path / "srv", ["IMEI:1", "IMEI:2", "IMEI:3"])
    create = ["campaigns", "create", "roll", "remove", "--component", COMPONENT, "--tag", "ring=b"]
    code, out = ctl(proc, token, *create, "--wave", "1", "--wave", "2", "--json")
    assert code == 0, out
    cid = str(json.loads(out)["id"])
    assert ctl(proc, token, "campaigns", "start", cid)[0] == 0

    code, out = ctl(proc, token, "campaigns", "show", cid, "--json")
    assert code == 0, out
    devices = json.loads(out)["devices"]
    assert [(d["device_id"], d["wave"], d["state"], d["job_state"]) for d in devices["items"]] == [
        ("IMEI:1", 1, "running", "queued"),
        ("IMEI:2", 2, "pending", None),
        ("IMEI:3", 2, "pending", None),
    ]
    code, out = ctl(proc, token, "campaigns", "show", cid, "--wave", "2", "--limit", "1")
    assert code == 0 and "IMEI:2" in out and "IMEI:1" not in out and "1 of 2 devices" in out, out

    assert ctl(proc, token, "campaigns", "pause", cid)[0] == 0
    code, out = ctl(proc, token, "campaigns", "watch", cid, "--interval", "0.1")
    assert code == 5, out  # paused: an operator must decide
    lines = out.splitlines()
    assert lines[0].startswith(f"campaign {cid} paused wave 1/2: 2 pending, 1 running"), out
    assert "  wave 1 IMEI:1 running (job " in lines[1] and "queued" in lines[1], out
    assert lines[-1] == f"campaign {cid}: paused (paused by an operator)"
    assert "\x1b[" not in out  # through a pipe: plain lines, no redrawing

    assert ctl(proc, token, "campaigns", "cancel", cid)[0] == 0
    code, out = ctl(proc, token, "campaigns", "watch", cid)
    assert code == 6 and "cancelled by an operator (before that: paused by an operator)" in out, out
