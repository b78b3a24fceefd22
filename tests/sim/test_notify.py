"""Package #0 for simulated devices: loopback addresses, one socket, the device's gate, and a real
server that wakes a device which never polls."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from omadm.package.build import build_package
from omadm.package.signing import generate_key, public_key_pem
from omadm.protocol.auth import RESYNC_NONCE
from omadm.protocol.codes import AlertCode, UiMode
from omadm.protocol.notification import Initiator, Notification, encode_notification
from omadm.server.store.engine import database_url
from omadm.server.store.migrate import migrate
from omadm.sim.device import DeviceTemplate, SimDevice
from omadm.sim.fleet import Fleet, FleetDevice
from omadm.sim.notify import NotifyError, Package0Listener, notify_address, parse_notify_address
from omadm.sim.profile import parse_profile
from omadm.sim.register import new_devices, register_fleet
from omadm.sim.run import FleetRunner, RunError, RunOptions, Summary

from ..server.serverproc import ServerProcess, free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_every_device_counter_has_its_own_loopback_address() -> None:
    assert notify_address(0, 2948) == "udp://127.1.0.0:2948"
    assert notify_address(65536 + 257, 9) == "udp://127.2.1.1:9"
    ip, port = parse_notify_address(notify_address(300, 4000))
    assert port == 4000 and ip == int.from_bytes(bytes([127, 1, 1, 44]), "big")
    with pytest.raises(NotifyError):
        parse_notify_address("udp://10.0.0.1:2948")
    with pytest.raises(NotifyError):
        notify_address(-1, 2948)
    devices = new_devices("SIM", 3, start=5, notify_port=7000)
    assert [d.notify_address for d in devices] == [
        "udp://127.1.0.5:7000",
        "udp://127.1.0.6:7000",
        "udp://127.1.0.7:7000",
    ]
    assert "notify_address" not in new_devices("SIM", 1)[0].to_json()


def test_one_socket_tells_the_devices_apart() -> None:
    port = free_udp_port()
    got: list[tuple[int, bytes]] = []

    async def main() -> Package0Listener:
        loop = asyncio.get_running_loop()
        listener = Package0Listener(
            [
                (7, parse_notify_address(notify_address(5, port))),
                (9, parse_notify_address(notify_address(6, port))),
            ],
            lambda index, data: got.append((index, data)),
        )
        listener.start(loop)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
                out.sendto(b"six", ("127.1.0.6", port))
                out.sendto(b"five", ("127.1.0.5", port))
                out.sendto(b"nobody", ("127.1.0.99", port))
            deadline = time.monotonic() + 5
            while listener.received < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        finally:
            listener.close(loop)
        return listener

    listener = asyncio.run(main())
    assert got == [(9, b"six"), (7, b"five")] and listener.unknown == 1


def test_ports_must_agree() -> None:
    with pytest.raises(NotifyError, match="same port"):
        Package0Listener([(0, (1, 1000)), (1, (2, 1001))], lambda index, data: None)
    fleet = Fleet(
        "http://sim.test/dm", "omadm", (FleetDevice("A1", "a", "p", notify_address="udp://10.1.1.1:2948"),)
    )
    with pytest.raises(RunError, match=r"127\.x\.y\.z"):
        FleetRunner(fleet, parse_profile({}), RunOptions(duration=1))


def trigger(server_id: str, session_id: int, password: str, nonce: bytes) -> bytes:
    note = Notification(
        server_id=server_id, session_id=session_id, ui_mode=UiMode.BACKGROUND, initiator=Initiator.SERVER
    )
    return encode_notification(note, password, nonce)


def test_the_device_checks_a_trigger_as_the_agent_does() -> None:
    template = DeviceTemplate("omadm", "http://sim.test/dm")
    dev = SimDevice(template, "IMEI:1", "dev", "secret", server_password="srv")
    dev.server_nonce = b"nonce-1"
    assert dev.accept_trigger(b"garbage") is None
    assert dev.accept_trigger(trigger("omadm", 0x2A, "wrong", b"nonce-1")) is None
    assert dev.accept_trigger(trigger("other", 0x2A, "srv", b"nonce-1")) is None
    assert dev.accept_trigger(trigger("omadm", 0x2A, "srv", b"nonce-1")) == "2A"
    assert dev.accept_trigger(trigger("omadm", 0x2A, "srv", b"nonce-1")) is None  # a repeat
    # A server that lost our nonce uses the resync nonce: accepted, and both nonces restart from it.
    assert dev.accept_trigger(trigger("omadm", 0x2B, "srv", RESYNC_NONCE)) == "2B"
    assert dev.server_nonce == RESYNC_NONCE and dev.client_nonce == RESYNC_NONCE
    session = dev.session(AlertCode.SERVER_INITIATED_MGMT, session_id="2B")
    first = session.start().body
    assert b"<SessionID>2B</SessionID>" in first and b"<Data>1200</Data>" in first
    session.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    base = tmp_path_factory.mktemp("simnotify")
    db_url = database_url(None, base)
    migrate(db_url)
    proc = ServerProcess(db_url, base / "server", base / "server.log", port=free_port())
    proc.start()
    try:
        yield proc, base
    finally:
        proc.stop()


@pytest.mark.e2e
def test_a_device_that_never_polls_gets_its_job_through_package_0(server: tuple[ServerProcess, Path]) -> None:
    """Poll interval 0: after its first contact a device only connects when the server wakes it."""
    proc, base = server
    key = generate_key()
    build_package(EXAMPLES / "hello-package", base / "hello.omp", signing_key=key)
    (base / "sim-publisher.pub.pem").write_bytes(public_key_pem(key))
    proc.run("publisher", "add", "sim", str(base / "sim-publisher.pub.pem"))  # uploads must be vouched for
    artifact = int(proc.run("artifact", "add", str(base / "hello.omp")).split()[1].rstrip(":"))
    token = proc.run("token", "add", "sim-notify", "--role", "operator").strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}"}
    port = free_udp_port()
    fleet = asyncio.run(register_fleet(proc.url, token, 2, prefix="WAKE", notify_port=port))
    assert fleet.devices[0].notify_address == f"udp://127.1.0.1:{port}"
    profile = parse_profile({"poll": {"interval": 0}})

    async def main() -> Summary:
        runner = FleetRunner(fleet, profile, RunOptions(duration=90, concurrency=2))
        task = asyncio.create_task(runner.run())
        deadline = time.monotonic() + 30
        while runner.stats.sessions.get("ok", 0) < 2:  # the first contacts (arrival)
            assert time.monotonic() < deadline and not task.done(), runner.stats
            await asyncio.sleep(0.1)
        async with httpx.AsyncClient(base_url=proc.url, headers=headers, timeout=30) as api:
            body = {"device_id": fleet.devices[0].device_id, "kind": "install", "artifact_id": artifact}
            response = await api.post("/api/v1/jobs", json=body)
            assert response.status_code == 201, response.text
        while runner.stats.alerts_delivered < 1:
            assert time.monotonic() < deadline + 30 and not task.done(), runner.stats
            await asyncio.sleep(0.1)
        runner.stop()
        return await task

    data = asyncio.run(main()).to_json()
    assert data["package0"]["accepted"] >= 1 and data["package0"]["received"] >= 1, data
    assert data["scomo"]["results"] == {"1200": 1}, data
    with httpx.Client(base_url=proc.url, headers=headers, timeout=30) as api:
        jobs = api.get("/api/v1/jobs", params={"device": fleet.devices[0].device_id}).json()["items"]
        assert [(job["state"], job["result_code"]) for job in jobs] == [("succeeded", 1200)]
        history = api.get(f"/api/v1/devices/{fleet.devices[0].device_id}/history").json()["items"]
        assert any(event["kind"] == "notified" for event in history), history


# -- --processes ---------------------------------------------------------------------------------


def test_stats_of_processes_add_up() -> None:
    from collections import Counter  # noqa: PLC0415

    from omadm.sim.multi import merge_stats  # noqa: PLC0415
    from omadm.sim.run import Stats  # noqa: PLC0415

    a = Stats(
        devices=3, sessions=Counter(ok=3), session_seconds=[0.1, 0.2], first_session=1.0, last_session=5.0
    )
    b = Stats(devices=2, sessions=Counter(ok=1, dropped=1), session_seconds=[0.3], first_session=None)
    a.scomo_results[1200] += 2
    b.scomo_results[1402] += 1
    merged = merge_stats([a, b])
    assert merged.devices == 5 and merged.sessions == Counter(ok=4, dropped=1)
    assert sorted(merged.session_seconds) == [0.1, 0.2, 0.3]
    assert merged.first_session == 1.0 and merged.last_session == 5.0
    assert merged.scomo_results == {1200: 2, 1402: 1}


@pytest.mark.e2e
def test_two_processes_share_one_fleet_and_its_package_0(server: tuple[ServerProcess, Path]) -> None:
    """Four devices over two processes; the parent's socket passes a Package #0 to the right one."""
    import threading  # noqa: PLC0415

    from omadm.sim.multi import run_processes  # noqa: PLC0415
    from omadm.sim.run import Stats  # noqa: PLC0415

    proc, _ = server
    token = proc.run("token", "add", "sim-multi", "--role", "operator").strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}"}
    port = free_udp_port()
    fleet = asyncio.run(register_fleet(proc.url, token, 4, prefix="MULTI", notify_port=port))
    target = fleet.devices[3]  # in the second process
    posted: list[int] = []

    def post_job() -> None:
        with httpx.Client(base_url=proc.url, headers=headers, timeout=30) as api:
            response = api.post(
                "/api/v1/jobs", json={"device_id": target.device_id, "kind": "refresh-inventory"}
            )
            posted.append(response.status_code)

    def progress(stats: Stats) -> None:
        if stats.sessions.get("ok", 0) >= 4 and not posted:
            posted.append(0)
            threading.Thread(target=post_job).start()

    summary = run_processes(
        fleet,
        parse_profile({"poll": {"interval": 0}}),
        RunOptions(duration=15, concurrency=4, processes=2),
        on_progress=progress,
    )
    data = summary.to_json()
    assert data["devices"] == 4 and posted[-1] == 201, (data, posted)
    assert data["package0"]["accepted"] >= 1, data
    assert data["sessions"]["by_outcome"].get("ok", 0) >= 5, data
    with httpx.Client(base_url=proc.url, headers=headers, timeout=30) as api:
        jobs = api.get("/api/v1/jobs", params={"device": target.device_id}).json()["items"]
        assert [job["state"] for job in jobs] == ["succeeded"], jobs
