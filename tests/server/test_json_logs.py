"""``--log-format json``: one JSON object per line, with the device, session and job when known.

A real server started with ``--log-format json`` serves a simulated device's session in
which a job is sent; every line it writes (start-up included) must parse as JSON, and the
DM lines must carry the device id, the session token and the job id. The formatters
themselves are checked in-process: context variables, a traceback, the text format's tags.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.testing import CliRunner

from omadm.cli import app as cli_app
from omadm.server.logs import DEVICE, JOB, SESSION, JsonFormatter, TextFormatter, configure
from omadm.server.registry import add_device, create_job
from omadm.server.store.models import JobKind
from omadm.server.sweeper import time_out_jobs
from omadm.sim.profile import parse_profile
from omadm.sim.register import register_fleet
from omadm.sim.run import FleetRunner, RunOptions

from .serverproc import ServerProcess

pytestmark = pytest.mark.anyio


def record(message: str, *, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("broken")
        except ValueError:
            import sys  # noqa: PLC0415

            info = sys.exc_info()
    return logging.LogRecord("omadm.server.dm", logging.WARNING, __file__, 1, message, (), info)


def test_json_lines_carry_the_context_that_is_set() -> None:
    formatter = JsonFormatter()
    plain = json.loads(formatter.format(record("nothing known")))
    assert plain["message"] == "nothing known" and plain["level"] == "WARNING"
    assert plain["logger"] == "omadm.server.dm" and isinstance(plain["pid"], int)
    assert plain["ts"].endswith("+00:00")
    assert not {"device", "session", "job"} & set(plain)

    device, session, job = DEVICE.set("IMEI:1"), SESSION.set("tok"), JOB.set(7)
    try:
        line = formatter.format(record('with "quotes"\nand a newline', exc=True))
        assert "\n" not in line  # one line, whatever the message and traceback hold
        data = json.loads(line)
        assert (data["device"], data["session"], data["job"]) == ("IMEI:1", "tok", 7)
        assert data["message"] == 'with "quotes"\nand a newline'
        assert "ValueError: broken" in data["exc"]
        text = TextFormatter().format(record("plain"))
        assert text.endswith("plain [device=IMEI:1 session=tok job=7]")
    finally:
        DEVICE.reset(device)
        SESSION.reset(session)
        JOB.reset(job)


def test_configure_replaces_only_its_own_handler() -> None:
    root = logging.getLogger()
    other = logging.NullHandler()
    root.addHandler(other)
    before = list(root.handlers)
    level = root.level
    try:
        configure("json")
        configure("json")  # a worker configures again: still one handler of ours
        ours = [h for h in root.handlers if h.get_name() == "omadm-server"]
        assert len(ours) == 1 and isinstance(ours[0].formatter, JsonFormatter)
        assert other in root.handlers
        with pytest.raises(ValueError, match="log format must be one of text, json, not 'xml'"):
            configure("xml")
    finally:
        for handler in list(root.handlers):
            if handler not in before:
                root.removeHandler(handler)
        root.removeHandler(other)
        root.setLevel(level)


async def test_a_server_in_json_mode_writes_json_lines_with_device_session_and_job(
    tmp_path: Path,
) -> None:
    server = ServerProcess(
        f"sqlite:///{tmp_path / 'srv' / 'omadm-server.sqlite'}",
        tmp_path / "srv",
        tmp_path / "server.log",
        extra=("--log-format", "json"),
    )
    server.start(timeout=60)  # an empty database gets its schema
    # In this process (in a thread: the command runs its own loop), not a new one: faster.
    args = ["server", "--db", server.db_url, "--data-dir", str(server.data_dir), "token", "add", "ops"]
    done = await asyncio.to_thread(CliRunner().invoke, cli_app, [*args, "--role", "operator"])
    assert done.exit_code == 0, done.output
    token = done.output.split()[0]
    try:
        fleet = await register_fleet(server.url, token, 1, "IMEI:88", "md5")
        device = fleet.devices[0].device_id
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as api:
            created = await api.post(
                "/api/v1/jobs",
                json={"device_id": device, "kind": "refresh-inventory"},
                headers={"Authorization": f"Bearer {token}"},
            )
        assert created.status_code == 201, created.text
        job = created.json()["id"]
        profile = parse_profile({"seed": 1, "poll": {"interval": 3600}})
        runner = FleetRunner(fleet, profile, RunOptions(duration=60, concurrency=1))
        running = asyncio.create_task(runner.run())
        deadline = time.monotonic() + 30
        while runner.stats.sessions_done < 1:
            assert time.monotonic() < deadline and not running.done(), runner.stats
            await asyncio.sleep(0.1)
        runner.stop()
        await running
    finally:
        server.stop()

    lines = [line for line in server.log.read_text().splitlines() if line.strip()]
    assert lines, "the server wrote nothing"
    parsed: list[dict[str, Any]] = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
    assert any(p["message"].startswith("serving on 127.0.0.1:") for p in parsed)
    dm = [p for p in parsed if p.get("device") == device]
    assert dm, parsed
    with_session = [p for p in dm if p.get("session")]
    assert with_session, dm
    assert all(len(p["session"]) >= 16 for p in with_session)  # the RespURI token
    jobs = [p for p in dm if "job" in p]
    assert jobs, dm
    assert {p["job"] for p in jobs} == {job}
    assert {p["logger"] for p in dm} >= {"omadm.server.dm"}


async def test_the_sweeper_names_the_job_it_times_out(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The job code outside the DM endpoint: a timed-out job's line carries its id, only it."""
    async with sessions() as db, db.begin():
        device = await add_device(db, "IMEI:99", username="u", password="p")
        job = await create_job(db, device, JobKind.REFRESH_INVENTORY, {}, timeout=1)
        job_id = job.id
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(JsonFormatter().format(record))

    handler = Capture()
    sweeper_log = logging.getLogger("omadm.server.sweeper")
    sweeper_log.addHandler(handler)
    level = sweeper_log.level
    sweeper_log.setLevel(logging.INFO)
    try:
        assert await time_out_jobs(sessions, datetime.now(UTC) + timedelta(hours=1)) == 1
    finally:
        sweeper_log.removeHandler(handler)
        sweeper_log.setLevel(level)
    timed_out = [json.loads(line) for line in lines if "timed out" in line]
    assert [line["job"] for line in timed_out] == [job_id]
    assert JOB.get() is None  # reset after the line: the sweeper's next lines name no job


def test_an_unknown_log_format_is_refused_by_name(tmp_path: Path) -> None:
    done = CliRunner().invoke(cli_app, ["server", "--data-dir", str(tmp_path), "--log-format", "xml"])
    assert done.exit_code == 1
    assert "log_format must be one of text, json, not 'xml'" in done.output
