"""Package #0 from the server, and the sweeper (deadlines, idle sessions), on SQLite and PostgreSQL.

The triggers are caught by real sockets on 127.0.0.1 (a UDP socket, a small HTTP server) and
checked with the device's side of :mod:`omadm.protocol.notification`; the last test runs the
real ``omadm server`` and a real ``omadm agent run`` that never polls, so a job can only reach
it through the Package #0.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from omadm.agent.config import load_config, save_config
from omadm.package.build import build_package
from omadm.package.signing import generate_key, save_public_key
from omadm.protocol.auth import RESYNC_NONCE
from omadm.protocol.codes import UiMode
from omadm.protocol.notification import (
    NOTIFICATION_CONTENT_TYPE,
    NOTIFICATION_VERSION,
    Initiator,
    VerifyResult,
    decode_notification,
    verify_with_resync,
)
from omadm.server.app import create_app
from omadm.server.cli import _as_env
from omadm.server.config import ConfigError, ServerConfig, load_server_config
from omadm.server.notify import RESYNC_PATIENCE, notify_device, notify_due, send_package0
from omadm.server.registry import add_authority, add_device, create_job, find_device
from omadm.server.store.models import Device, DeviceEvent, DmSession, Job, JobKind, JobState, utc_now
from omadm.server.sweeper import sweep

from .serverproc import ENV, ServerProcess, agent_config

pytestmark = pytest.mark.anyio

DEVICE = "IMEI:351756051523001"
SERVER_PASSWORD = "srv-secret"
NONCE = bytes(range(1, 17))
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


# -- receivers -------------------------------------------------------------------------------------


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    try:
        yield sock
    finally:
        sock.close()


def udp_address(sock: socket.socket) -> str:
    return f"udp://127.0.0.1:{sock.getsockname()[1]}"


def datagrams(sock: socket.socket) -> list[bytes]:
    """Every datagram waiting on ``sock`` (loopback sends are delivered before sendto returns)."""
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096))
    except BlockingIOError:
        return out
    finally:
        sock.settimeout(2)


@dataclass
class HTTPReceiver:
    url: str
    status: int = 202
    received: list[tuple[str, str, bytes]] = field(default_factory=list)  # path, content type, body


@pytest.fixture
def http_receiver() -> Iterator[HTTPReceiver]:
    receiver = HTTPReceiver("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            receiver.received.append((self.path, self.headers.get("Content-Type", ""), body))
            self.send_response(receiver.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/pkg0"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


# -- helpers ---------------------------------------------------------------------------------------


def config(**changes: Any) -> ServerConfig:
    return ServerConfig(server_id="omadm-test", **changes)


async def make_device(
    sessions: async_sessionmaker[AsyncSession],
    address: str,
    *,
    device_id: str = DEVICE,
    jobs: int = 1,
    server_password: str = SERVER_PASSWORD,
) -> None:
    async with sessions() as db, db.begin():
        device = await add_device(
            db,
            device_id,
            username="dev",
            password="secret",
            server_password=server_password,
        )
        # Stored as is, past the registration's URL policy: the sender must cope with any row
        # (one stored before the policy, or edited in the database).
        device.notify_address = address
        device.server_nonce = NONCE
        for _ in range(jobs):
            await create_job(db, device, JobKind.REFRESH_INVENTORY, {})


async def add_job(sessions: async_sessionmaker[AsyncSession], device_id: str = DEVICE) -> None:
    async with sessions() as db, db.begin():
        device = await find_device(db, device_id)
        assert device is not None
        await create_job(db, device, JobKind.REFRESH_INVENTORY, {})


async def change_device(sessions: async_sessionmaker[AsyncSession], **values: Any) -> None:
    async with sessions() as db, db.begin():
        device = await find_device(db, DEVICE)
        assert device is not None
        for name, value in values.items():
            setattr(device, name, value)


async def get_device(sessions: async_sessionmaker[AsyncSession], device_id: str = DEVICE) -> Device:
    async with sessions() as db:
        device = await find_device(db, device_id)
        assert device is not None
        return device


async def events(sessions: async_sessionmaker[AsyncSession], *kinds: str) -> list[DeviceEvent]:
    async with sessions() as db:
        query = select(DeviceEvent).where(DeviceEvent.kind.in_(kinds)).order_by(DeviceEvent.id)
        return list((await db.execute(query)).scalars())


def check_package0(data: bytes, server_id: str = "omadm-test", *, resync: bool = False) -> str:
    """Decode and verify a trigger as the device does; returns its session-id in hex.

    ``resync``: the trigger must verify only with the resync nonce (an unanswered one's successor).
    """
    decoded = decode_notification(data)
    note = decoded.notification
    assert note.server_id == server_id
    assert note.version == NOTIFICATION_VERSION
    assert note.ui_mode is UiMode.BACKGROUND
    assert note.initiator is Initiator.SERVER
    expected = VerifyResult.OK_RESYNC if resync else VerifyResult.OK
    assert verify_with_resync(decoded, SERVER_PASSWORD, NONCE, server_name=server_id) is expected
    assert verify_with_resync(decoded, "wrong", NONCE, server_name=server_id) is VerifyResult.FAILED
    return note.session_id_hex


# -- sending -----------------------------------------------------------------------------------------


async def test_a_device_with_queued_jobs_gets_a_verifiable_package0_over_udp(
    sessions: async_sessionmaker[AsyncSession], udp: socket.socket
) -> None:
    await make_device(sessions, udp_address(udp))
    now = utc_now()
    report = await sweep(sessions, config(), now)
    assert (report.notified, report.notify_failed) == (1, 0)
    (data,) = datagrams(udp)
    session_id = check_package0(data)
    device = await get_device(sessions)
    assert device.last_notified == now
    (event,) = await events(sessions, "notified", "notify-failed")
    assert event.kind == "notified"
    assert event.detail == {"address": udp_address(udp), "session_id": session_id}


async def test_a_device_of_another_authority_is_woken_in_that_authority_s_name(
    sessions: async_sessionmaker[AsyncSession], udp: socket.socket
) -> None:
    async with sessions() as db, db.begin():
        oem = await add_authority(db, "oem", "oem-dm", configured_server_id="omadm-test")
        device = await add_device(
            db,
            DEVICE,
            username="dev",
            password="secret",
            server_password=SERVER_PASSWORD,
            notify_address=udp_address(udp),
            authority_pk=oem.id,
        )
        device.server_nonce = NONCE
        await create_job(db, device, JobKind.REFRESH_INVENTORY, {})
    report = await sweep(sessions, config(), utc_now())
    assert report.notified == 1
    (data,) = datagrams(udp)
    check_package0(data, server_id="oem-dm")  # signed as oem-dm: what the device's DMAcc knows
    woken = await notify_device(sessions, config(), DEVICE, force=True, authority_pk=oem.id)
    assert woken.sent
    assert "no device" in (await notify_device(sessions, config(), DEVICE, force=True)).reason


async def test_the_http_receiver_gets_the_package0_as_a_post(
    sessions: async_sessionmaker[AsyncSession], http_receiver: HTTPReceiver
) -> None:
    await make_device(sessions, http_receiver.url)
    (result,) = await notify_due(sessions, config())
    assert result.sent, result.reason
    ((path, content_type, body),) = http_receiver.received
    assert (path, content_type) == ("/pkg0", NOTIFICATION_CONTENT_TYPE)
    assert check_package0(body) == result.session_id


async def test_each_notification_has_a_fresh_session_id(
    sessions: async_sessionmaker[AsyncSession], udp: socket.socket
) -> None:
    await make_device(sessions, udp_address(udp))
    now = utc_now()
    ids = []
    for minutes in range(4):
        (result,) = await notify_due(sessions, config(), now + timedelta(minutes=minutes))
        ids.append(result.session_id)
    assert [check_package0(d) for d in datagrams(udp)] == ids
    assert len(set(ids)) > 1  # random 16-bit ids: four equal ones would be a 1 in 2^48 fluke


async def test_after_an_unanswered_trigger_the_next_resynchronises_the_nonces(
    sessions: async_sessionmaker[AsyncSession], udp: socket.socket
) -> None:
    """A device that holds other nonces than ours drops every trigger we sign; resync mends it.

    Notification 1.2: a trigger signed with the resync nonce verifies whatever the device holds,
    and both ends start their nonces again from it. Used only once triggers went unanswered for
    RESYNC_PATIENCE (a fleet held back by load shedding is not reset for nothing), and not again
    while the device answers.
    """
    await make_device(sessions, udp_address(udp))
    settings = config(notify_interval=60)
    t0 = utc_now()
    await change_device(sessions, created=t0 - timedelta(seconds=5))
    for seconds in (0, 60, 120, RESYNC_PATIENCE.total_seconds() - 30):  # unanswered, but not for long
        await notify_due(sessions, settings, t0 + timedelta(seconds=seconds))
        check_package0(datagrams(udp)[0])
    device = await get_device(sessions)
    assert bytes(device.server_nonce) == NONCE
    t1 = t0 + RESYNC_PATIENCE + timedelta(seconds=30)
    await notify_due(sessions, settings, t1)  # still no contact since it was registered
    check_package0(datagrams(udp)[0], resync=True)
    device = await get_device(sessions)
    assert (bytes(device.server_nonce), bytes(device.client_nonce)) == (RESYNC_NONCE, RESYNC_NONCE)
    # The device answers and its session gives us fresh nonces: triggers use them again.
    await change_device(sessions, last_contact=t1 + timedelta(seconds=1), server_nonce=NONCE)
    await notify_due(sessions, settings, t1 + timedelta(seconds=61))
    check_package0(datagrams(udp)[0])
    # Silent again, and for long since its last contact: resync again.
    await notify_due(sessions, settings, t1 + RESYNC_PATIENCE + timedelta(seconds=2))
    check_package0(datagrams(udp)[0], resync=True)


async def test_the_rate_limit_holds_until_the_interval_has_passed(
    sessions: async_sessionmaker[AsyncSession], udp: socket.socket
) -> None:
    await make_device(sessions, udp_address(udp))
    settings = config(notify_interval=60)
    t0 = utc_now()
    assert len(await notify_due(sessions, settings, t0)) == 1
    await add_job(sessions)  # new work, but the device has not answered the last trigger
    assert await notify_due(sessions, settings, t0 + timedelta(seconds=10)) == []
    assert await notify_due(sessions, settings, t0 + timedelta(seconds=59)) == []
    assert len(await notify_due(sessions, settings, t0 + timedelta(seconds=60))) == 1
    assert len(datagrams(udp)) == 2
    assert len(await events(sessions, "notified")) == 2


async def test_a_job_queued_after_the_device_answered_is_announced_at_once(
    sessions: async_sessionmaker[AsyncSession], udp: socket.socket
) -> None:
    await make_device(sessions, udp_address(udp))
    settings = config(notify_interval=60)
    t0 = utc_now()
    assert len(await notify_due(sessions, settings, t0)) == 1
    # The device came (its session took nothing, say) but no new job: nothing to announce.
    await change_device(sessions, last_contact=t0 + timedelta(seconds=1))
    assert await notify_due(sessions, settings, t0 + timedelta(seconds=5)) == []
    await add_job(sessions)  # created after t0, and the device answered since: tell it now
    assert len(await notify_due(sessions, settings, t0 + timedelta(seconds=6))) == 1
    assert len(datagrams(udp)) == 2


async def test_devices_without_address_or_queued_jobs_or_acceptance_are_not_notified(
    sessions: async_sessionmaker[AsyncSession], udp: socket.socket
) -> None:
    await make_device(sessions, "", device_id="IMEI:1")  # polls: its next poll takes the job
    await make_device(sessions, udp_address(udp), device_id="IMEI:2", jobs=0)
    await make_device(sessions, udp_address(udp), device_id="IMEI:3")
    async with sessions() as db, db.begin():
        pending = await find_device(db, "IMEI:3")
        assert pending is not None
        pending.state = "pending"
    report = await sweep(sessions, config())
    assert (report.notified, report.notify_failed) == (0, 0)
    assert datagrams(udp) == []
    assert await events(sessions, "notified", "notify-failed") == []
    assert (await get_device(sessions, "IMEI:1")).last_notified is None
    result = await notify_device(sessions, config(), "IMEI:1", force=True)
    assert not result.sent and "next poll" in result.reason
    assert "no queued jobs" in (await notify_device(sessions, config(), "IMEI:2")).reason
    assert "no device" in (await notify_device(sessions, config(), "IMEI:404")).reason


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("sms://+4912345", "unsupported notification address"),
        ("udp://127.0.0.1:notaport", "bad notification address"),
        ("udp://:2948", "no host"),
        ("http://127.0.0.1:{closed}/pkg0", "ConnectError"),
    ],
)
async def test_failures_are_logged_and_recorded_never_raised(
    sessions: async_sessionmaker[AsyncSession], address: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    address = address.format(closed=closed)
    await make_device(sessions, address)
    now = utc_now()
    report = await sweep(sessions, config(), now)
    assert (report.notified, report.notify_failed, report.failed_steps) == (0, 1, ())
    (event,) = await events(sessions, "notified", "notify-failed")
    assert event.kind == "notify-failed"
    assert event.detail["address"] == address and reason in event.detail["reason"]
    assert reason in caplog.text and DEVICE in caplog.text
    # The attempt counts for the rate limit: no retry storm every sweep.
    assert (await get_device(sessions)).last_notified == now
    assert (await sweep(sessions, config(), now + timedelta(seconds=5))).notify_failed == 0


async def test_an_http_receiver_refusing_is_a_failure(
    sessions: async_sessionmaker[AsyncSession], http_receiver: HTTPReceiver
) -> None:
    http_receiver.status = 415
    await make_device(sessions, http_receiver.url)
    (result,) = await notify_due(sessions, config())
    assert not result.sent and "HTTP 415" in result.reason


async def test_send_package0_refuses_what_it_cannot_send() -> None:
    from omadm.server.notify import NotifyError  # noqa: PLC0415

    for address in ("mailto:x@example.org", "udp://", "http:///nohost", "udp://[::1"):
        with pytest.raises(NotifyError):
            await send_package0(address, b"x" * 24)


async def test_an_operator_can_wake_a_device_despite_the_rate_limit(
    sessions: async_sessionmaker[AsyncSession], udp: socket.socket
) -> None:
    await make_device(sessions, udp_address(udp), jobs=0)
    settings = config()
    assert "no queued jobs" in (await notify_device(sessions, settings, DEVICE)).reason
    first = await notify_device(sessions, settings, DEVICE, force=True)
    await add_job(sessions)
    limited = await notify_device(sessions, settings, DEVICE)
    assert not limited.sent and "rate limit" in limited.reason
    again = await notify_device(sessions, settings, DEVICE, force=True)
    assert first.sent and again.sent
    assert [check_package0(d) for d in datagrams(udp)] == [first.session_id, again.session_id]


async def test_concurrent_sweeps_notify_a_device_once(
    sessions: async_sessionmaker[AsyncSession], udp: socket.socket
) -> None:
    for i in range(5):
        await make_device(sessions, udp_address(udp), device_id=f"IMEI:{i}")
    now = utc_now()
    reports = await asyncio.gather(*(sweep(sessions, config(), now) for _ in range(3)))
    assert sum(r.notified for r in reports) == 5
    assert len(datagrams(udp)) == 5
    assert len(await events(sessions, "notified")) == 5


# -- deadlines and idle sessions -------------------------------------------------------------------


async def test_jobs_past_their_deadline_time_out(sessions: async_sessionmaker[AsyncSession]) -> None:
    now = utc_now()
    past, future = now - timedelta(seconds=1), now + timedelta(hours=1)
    cases = [  # (state, deadline) -> expected state
        (JobState.QUEUED, past, JobState.TIMED_OUT),
        (JobState.SENT, past, JobState.TIMED_OUT),
        (JobState.ACCEPTED, past, JobState.TIMED_OUT),
        (JobState.ACCEPTED, future, JobState.ACCEPTED),
        (JobState.ACCEPTED, None, JobState.ACCEPTED),
        (JobState.SUCCEEDED, past, JobState.SUCCEEDED),
        (JobState.CANCELLED, past, JobState.CANCELLED),
    ]
    async with sessions() as db, db.begin():
        device = await add_device(db, DEVICE, username="dev", password="secret")
        ids = []
        for state, deadline, _ in cases:
            job = await create_job(db, device, JobKind.REFRESH_INVENTORY, {})
            job.state, job.deadline = state.value, deadline
            if state is JobState.SUCCEEDED:
                job.result_code = 1200
            ids.append(job.id)
    report = await sweep(sessions, config(), now)
    assert report.timed_out == 3
    async with sessions() as db:
        jobs = {j.id: j for j in (await db.execute(select(Job))).scalars()}
    for job_id, (_, _, expected) in zip(ids, cases, strict=True):
        assert jobs[job_id].state == expected.value
    queued, sent, accepted = (jobs[i] for i in ids[:3])
    assert "did not connect" in queued.detail
    assert "no status arrived" in sent.detail
    assert "no report arrived" in accepted.detail
    for job in (queued, sent, accepted):
        assert job.result_code is None and job.finished_at == now
    assert jobs[ids[5]].result_code == 1200
    recorded = [e.detail for e in await events(sessions, "job")]
    assert [(d["job"], d["state"], d["result"]) for d in recorded] == [
        (i, "timed-out", None) for i in ids[:3]
    ]
    assert (await sweep(sessions, config(), now + timedelta(seconds=5))).timed_out == 0


async def test_a_timed_out_job_is_not_announced(
    sessions: async_sessionmaker[AsyncSession], udp: socket.socket
) -> None:
    await make_device(sessions, udp_address(udp), jobs=0)
    async with sessions() as db, db.begin():
        device = await find_device(db, DEVICE)
        assert device is not None
        await create_job(db, device, JobKind.REFRESH_INVENTORY, {}, timeout=1)
    report = await sweep(sessions, config(), utc_now() + timedelta(seconds=2))
    assert (report.timed_out, report.notified) == (1, 0)
    assert datagrams(udp) == []


async def test_idle_dm_sessions_are_deleted(sessions: async_sessionmaker[AsyncSession]) -> None:
    now = utc_now()
    async with sessions() as db, db.begin():
        device = await add_device(db, DEVICE, username="dev", password="secret")
        for token, age in (("old", 601), ("older", 7200), ("fresh", 599), ("new", 0)):
            updated = now - timedelta(seconds=age)
            db.add(DmSession(token=token, device_pk=device.id, snapshot=b"", context={}, updated=updated))
    report = await sweep(sessions, config(session_timeout=600), now)
    assert report.sessions_deleted == 2
    async with sessions() as db:
        left = set((await db.execute(select(DmSession.token))).scalars())
    assert left == {"fresh", "new"}


# -- configuration and the app's background task -------------------------------------------------------


def test_intervals_are_configurable_and_checked(tmp_path: Path) -> None:
    assert (ServerConfig().notify_interval, ServerConfig().sweep_interval) == (60.0, 5.0)
    path = tmp_path / "server.toml"
    path.write_text("[server]\nnotify_interval = 300\nsweep_interval = 0.5\n")
    loaded = load_server_config(path)
    assert (loaded.notify_interval, loaded.sweep_interval) == (300, 0.5)
    for bad in ("notify_interval = -1", "sweep_interval = 'soon'"):
        path.write_text(f"[server]\n{bad}\n")
        with pytest.raises(ConfigError, match=bad.split()[0]):
            load_server_config(path)
    # Worker processes rebuild the settings from what `omadm server` hands them.
    values = _as_env(loaded)
    assert (values["notify_interval"], values["sweep_interval"]) == (300, 0.5)


async def test_the_app_sweeps_in_the_background_and_stops_cleanly(
    db_url: str, tmp_path: Path, udp: socket.socket
) -> None:
    app = create_app(config(db=db_url, data_dir=tmp_path / "server", sweep_interval=0.05))
    sessions: async_sessionmaker[AsyncSession] = app.state.sessions
    async with app.router.lifespan_context(app):
        await make_device(sessions, udp_address(udp))
        received: list[bytes] = []
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            received = datagrams(udp)
        tasks = {t.get_name() for t in asyncio.all_tasks()}
        assert "omadm-sweeper" in tasks
    assert len(received) == 1
    check_package0(received[0])
    assert "omadm-sweeper" not in {t.get_name() for t in asyncio.all_tasks() if not t.done()}


# -- end to end: a real server wakes a real agent -----------------------------------------------------


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("pkg")
    key = generate_key()
    save_public_key(key.public_key(), base / "publisher.pub.pem")
    build_package(EXAMPLES / "hello-package", base / "hello-1.0.0.omp", signing_key=key)
    return base / "publisher.pub.pem", base / "hello-1.0.0.omp"


@pytest.fixture
async def agent_port() -> AsyncIterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    yield port


@pytest.mark.e2e
async def test_a_real_agent_that_never_polls_is_woken_by_the_server(
    db_url: str,
    sessions: async_sessionmaker[AsyncSession],
    package: tuple[Path, Path],
    tmp_path: Path,
    agent_port: int,
) -> None:
    key, pkg = package
    settings_file = tmp_path / "omadm-server.toml"  # sweep often: the test waits less
    settings_file.write_text("[server]\nsweep_interval = 0.5\nnotify_interval = 30\n")
    server = ServerProcess(
        db_url, tmp_path / "server", tmp_path / "server.log", extra=("--config", str(settings_file))
    )
    await asyncio.to_thread(server.start)
    agent: subprocess.Popen[bytes] | None = None
    agent_log = tmp_path / "agent.log"
    try:
        server.run("publisher", "add", "tests", str(key))
        artifact = server.run("artifact", "add", str(pkg)).split()[1].rstrip(":")
        server.run(
            "device", "add", DEVICE, "--username", "dev", "--password", "secret",
            "--server-password", SERVER_PASSWORD, "--notify", f"udp://127.0.0.1:{agent_port}",
        )  # fmt: skip
        path = agent_config(tmp_path / "agent", f"{server.url}/dm", DEVICE, key, poll=0)
        settings = load_config(path)
        account = replace(settings.accounts[0], server_password=SERVER_PASSWORD)
        save_config(replace(settings, accounts=(account,), listen_udp=f"127.0.0.1:{agent_port}"), path)
        with agent_log.open("wb") as out:
            agent = subprocess.Popen(
                [sys.executable, "-m", "omadm", "agent", "run", "--config", str(path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=ENV,
            )
        await _wait_for(lambda: "listening for Package #0 on udp" in agent_log.read_text(), agent_log, 30)
        server.run("job", "add", DEVICE, "install", "--artifact", artifact)

        def done() -> bool:
            return server.jobs()[-1][3] in ("succeeded", "failed", "timed-out")

        await _wait_for(done, agent_log, 30)
        assert server.jobs()[-1][2:5] == ["install", "succeeded", "1200"], agent_log.read_text()
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(timeout=15)
        server.stop()
    (notified,) = await events(sessions, "notified")
    text = agent_log.read_text()
    # The agent's first session is the one the trigger asked for (its session-id), and it
    # never polled: every session it had was that one or the report of the install.
    sessions_run = [line.split("session ", 1)[1] for line in text.splitlines() if " with omadm: " in line]
    assert sessions_run[0].startswith(f"{notified.detail['session_id']} with omadm: ok"), text
    assert len(sessions_run) == 2, text  # the woken session and the one that reports the install
    assert "ignored" not in text, text


async def _wait_for(condition: Any, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, log.read_text()
        await asyncio.sleep(0.2)
