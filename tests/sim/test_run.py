"""The fleet runner: against an in-process DM server (httpx.MockTransport over the protocol core's
ServerSession) for overload, faults and failure draws, and against a REAL ``omadm server``
process for first contact and an install job end to end.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from omadm.mo.scomo_codes import parse_scomo_alert_data
from omadm.package.build import build_package
from omadm.package.signing import generate_key, public_key_pem
from omadm.protocol import auth
from omadm.protocol.codes import AuthType
from omadm.protocol.messages import Alert, Command
from omadm.protocol.session import AlertReceived, Credentials, ServerConfig, ServerSession, SessionStarted
from omadm.server.jobs import plan_job
from omadm.server.store.engine import database_url
from omadm.server.store.migrate import migrate
from omadm.server.store.models import JobKind
from omadm.sim.fleet import Fleet, FleetDevice, save_fleet
from omadm.sim.profile import Profile, parse_profile
from omadm.sim.run import FleetRunner, RunError, RunOptions, Summary, summary_table

from ..server.serverproc import ServerProcess, free_port

URL = "http://sim.test/dm"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class MockDM:
    """A DM server in process: one ServerSession per session, found again through its RespURI."""

    def __init__(self, commands: Callable[[str], list[tuple[Command, str]]] | None = None) -> None:
        self.commands = commands
        self.sessions: dict[str, ServerSession] = {}
        self.alerts: list[Alert] = []
        self.before: Callable[[httpx.Request], httpx.Response | None] | None = None
        self.posts = 0
        self.given: set[str] = set()
        self.opened = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.posts += 1
        if self.before is not None:
            early = self.before(request)
            if early is not None:
                return early
        key = request.url.path.rsplit("/", 1)[1]
        if key == "dm":
            self.opened += 1
            key = str(self.opened)
            self.sessions[key] = ServerSession(
                ServerConfig(
                    URL,
                    resp_uri=f"{URL}/{key}",
                    client_credentials=Credentials(AuthType.MD5, "dev", "secret"),
                )
            )
        server = self.sessions[key]
        events = server.receive(
            request.content,
            hmac_header=request.headers.get(auth.HMAC_HEADER),
            content_type=request.headers.get("content-type"),
        )
        for event in events:
            device_id = server.device_id
            if (
                isinstance(event, SessionStarted)
                and self.commands
                and device_id
                and device_id not in self.given
            ):
                self.given.add(device_id)  # one job per device, in its first session
                for command, tag in self.commands(device_id):
                    server.queue(command, tag)
            elif isinstance(event, AlertReceived):
                self.alerts.append(event.alert)
        reply = server.reply()
        server.events()
        if server.finished:
            del self.sessions[key]  # its RespURI key is never reused (``opened`` only grows)
        return httpx.Response(
            200, content=reply.body, headers={"content-type": reply.content_type, **reply.headers}
        )


def fleet_of(n: int) -> Fleet:
    return Fleet(URL, "omadm", tuple(FleetDevice(f"IMEI:35{i:013d}", "dev", "secret") for i in range(n)))


def run(
    mock: MockDM,
    profile: Profile,
    n: int = 3,
    *,
    until: Callable[[FleetRunner], bool],
    timeout: float = 20,
) -> tuple[FleetRunner, Summary]:
    async def main() -> tuple[FleetRunner, Summary]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(mock.handle)) as client:
            runner = FleetRunner(
                fleet_of(n), profile, RunOptions(duration=timeout, concurrency=4), client=client
            )
            task = asyncio.create_task(runner.run())
            while not until(runner) and not task.done():
                await asyncio.sleep(0.01)
            runner.stop()
            return runner, await task

    return asyncio.run(main())


def test_503_with_retry_after_is_waited_out_and_counted() -> None:
    mock = MockDM()
    refusals = iter(range(4))

    def overloaded(request: httpx.Request) -> httpx.Response | None:
        if next(refusals, None) is not None:
            return httpx.Response(503, headers={"Retry-After": "0"})
        return None

    mock.before = overloaded
    runner, summary = run(mock, parse_profile({}), until=lambda r: r.stats.sessions_done == 3)
    stats = runner.stats
    assert stats.sessions == {"ok": 3}
    assert stats.retry_after_503 == 4 and stats.retries == 4 and stats.errors == {"http 503": 4}
    data = summary.to_json()
    assert data["http_503"]["answered"] == 4 and data["sessions"]["by_outcome"] == {"ok": 3}
    assert data["session_time_s"]["p50"] is not None
    assert summary_table(summary).row_count > 5


def test_retries_are_bounded_and_a_long_retry_after_capped() -> None:
    mock = MockDM()
    mock.before = lambda request: httpx.Response(503, headers={"Retry-After": "3600"})
    profile = parse_profile({"http": {"busy_retries": 2, "retries": 0, "max_retry_after": 0.01}})
    runner, _ = run(mock, profile, n=1, until=lambda r: r.stats.sessions_done == 1)
    assert runner.stats.sessions == {"transport-error": 1}
    assert runner.stats.errors["http 503"] == 3 and runner.stats.retry_after_capped == 2


def test_timeouts_and_other_statuses_are_errors_by_kind() -> None:
    mock = MockDM()
    calls = iter(["timeout", "404"])

    def flaky(request: httpx.Request) -> httpx.Response | None:
        what = next(calls, None)
        if what == "timeout":
            raise httpx.ReadTimeout("slow", request=request)
        if what == "404":
            return httpx.Response(404)
        return None

    mock.before = flaky
    profile = parse_profile({"http": {"retries": 0}})
    runner, _ = run(mock, profile, n=3, until=lambda r: r.stats.sessions_done == 3)
    assert runner.stats.errors == {"timeout": 1, "http 404": 1}
    assert runner.stats.sessions == {"transport-error": 2, "ok": 1}


def test_dropped_connections_are_a_fault_of_their_own() -> None:
    runner, _ = run(
        MockDM(), parse_profile({"faults": {"drop": 1.0}}), until=lambda r: r.stats.sessions_done == 3
    )
    assert runner.stats.sessions == {"dropped (fault)": 3}


def test_silent_devices_never_connect() -> None:
    mock = MockDM()
    runner, _ = run(mock, parse_profile({"faults": {"silent": 1.0}}), until=lambda r: False, timeout=0.3)
    assert runner.stats.silent == 3 and mock.posts == 0


def install_job(device_id: str) -> list[tuple[Command, str]]:
    plan = plan_job(
        1, JobKind.INSTALL, {"pkg_id": "p1", "name": "P"}, f"c-{device_id}", "./SCOMO", package_url="u"
    )
    return list(plan.commands)


def test_a_failure_rate_of_one_gives_that_code_in_the_alert() -> None:
    mock = MockDM(install_job)
    profile = parse_profile(
        {"failures": {"1404": 1.0}, "latency": {"download": {"dist": "fixed", "value": 0.05}}}
    )
    runner, summary = run(mock, profile, n=2, until=lambda r: r.stats.alerts_delivered == 2)
    assert runner.stats.scomo_results == {1404: 2} and runner.stats.jobs_accepted == 2
    assert sorted(a.correlator or "" for a in mock.alerts) == [
        "c-IMEI:350000000000000",
        "c-IMEI:350000000000001",
    ]
    assert {parse_scomo_alert_data(str(a.items[0].data))[0] for a in mock.alerts} == {1404}
    assert summary.to_json()["scomo"]["results"] == {"1404": 2}


def test_job_steps_wait_for_the_session_that_holds_the_tree() -> None:
    """Slow sessions, quick phases, frequent polls: phases end while sessions run, and must wait."""
    mock = MockDM(install_job)

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.03)
        return mock.handle(request)

    profile = parse_profile(
        {
            "poll": {"interval": 0.05},
            "latency": {
                "download": {"dist": "uniform", "min": 0.0, "max": 0.05},
                "install": {"dist": "uniform", "min": 0.0, "max": 0.05},
            },
        }
    )

    async def main() -> FleetRunner:
        async with httpx.AsyncClient(transport=httpx.MockTransport(slow)) as client:
            runner = FleetRunner(fleet_of(4), profile, RunOptions(duration=20, concurrency=4), client=client)
            task = asyncio.create_task(runner.run())
            while runner.stats.alerts_delivered < 4 and not task.done():
                await asyncio.sleep(0.01)
            runner.stop()
            await task
            return runner

    runner = asyncio.run(main())
    assert runner.stats.scomo_results == {1200: 4} and runner.stats.errors == {}
    for device in runner.devices:
        with device.tree() as tree:
            assert tree.system_value("./SCOMO/Inventory/Deployed/p1/State") == "20"


def test_duplicate_alerts_are_sent_again() -> None:
    mock = MockDM(install_job)
    profile = parse_profile({"faults": {"duplicate_alerts": 1.0}})
    # Every delivery is duplicated (1.0): stop after the third copy.
    runner, _ = run(mock, profile, n=1, until=lambda r: r.stats.alerts_delivered >= 3)
    assert runner.stats.alerts_duplicated >= 2
    assert len({a.correlator for a in mock.alerts}) == 1 and len(mock.alerts) >= 3


def test_the_run_command_prints_a_summary_and_refuses_bad_input(tmp_path: Path) -> None:
    """``omadm sim run`` end to end against a port nobody listens on: errors counted, JSON out."""
    from typer.testing import CliRunner  # noqa: PLC0415

    from omadm.cli import app  # noqa: PLC0415

    fleet = tmp_path / "fleet.json"
    dead = Fleet(f"http://127.0.0.1:{free_port()}/dm", "omadm", fleet_of(2).devices)
    save_fleet(dead, fleet)
    profile = tmp_path / "p.toml"
    profile.write_text("[http]\nretries = 0\ntimeout = 2\n")
    cli = CliRunner()
    done = cli.invoke(app, ["sim", "run", str(fleet), "--profile", str(profile), "--duration", "1", "--json"])
    assert done.exit_code == 0, done.output
    data = json.loads(done.stdout[done.stdout.index("{") :])
    assert data["devices"] == 2 and data["errors"] == {"connection error": 2}
    assert data["sessions"]["by_outcome"] == {"transport-error": 2}
    table = cli.invoke(app, ["sim", "run", str(fleet), "--profile", str(profile), "--duration", "0.5"])
    assert table.exit_code == 0 and "sessions/s" in table.stdout
    profile.write_text("[faults]\nclock_skew = 5\n")
    refused = cli.invoke(app, ["sim", "run", str(fleet), "--profile", str(profile), "--duration", "1"])
    assert refused.exit_code == 2 and "clock_skew is not supported yet" in refused.output
    campaign = str(EXAMPLES / "sim" / "campaign.toml")
    real = cli.invoke(
        app, ["sim", "run", str(fleet), "--profile", campaign, "--duration", "1", "--downloads", "real"]
    )
    assert real.exit_code == 2 and "latency.download does not apply with --downloads real" in real.output


def test_options_a_profile_cannot_honour_are_refused() -> None:
    with pytest.raises(RunError, match=r"latency\.download does not apply"):
        RunOptions(duration=1, downloads="real").check(
            parse_profile({"latency": {"download": {"dist": "fixed", "value": 1}}})
        )
    with pytest.raises(RunError, match=r"\[packages\] only applies with --downloads real"):
        RunOptions(duration=1).check(parse_profile({"packages": {}}))
    with pytest.raises(RunError, match="--duration"):
        RunOptions(duration=0).check()


# -- against a real omadm server -------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    base = tmp_path_factory.mktemp("sim")
    db_url = database_url(None, base)
    migrate(db_url)
    proc = ServerProcess(db_url, base / "server", base / "server.log")
    proc.start()
    try:
        yield proc, base
    finally:
        proc.stop()


@pytest.mark.e2e
def test_twenty_devices_against_a_real_server(server: tuple[ServerProcess, Path]) -> None:
    """First contact for 20 devices (half WBXML), then an install job each; the server records 1200."""
    proc, base = server
    key = generate_key()
    build_package(EXAMPLES / "hello-package", base / "hello.omp", signing_key=key)
    (base / "sim-publisher.pub.pem").write_bytes(public_key_pem(key))
    proc.run("publisher", "add", "sim", str(base / "sim-publisher.pub.pem"))  # uploads must be vouched for
    artifact = int(proc.run("artifact", "add", str(base / "hello.omp")).split()[1].rstrip(":"))
    token = proc.run("token", "add", "sim", "--role", "operator").strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=proc.url, headers=headers, timeout=30) as api:
        who = api.get("/api/v1/whoami").json()
        devices = []
        for i in range(20):
            device = FleetDevice(f"IMEI:35{i:013d}", f"user{i}", f"pw-{i}", "md5", f"srv-{i}")
            body = {
                "device_id": device.device_id,
                "username": device.username,
                "password": device.password,
                "server_password": device.server_password,
            }
            response = api.post("/api/v1/devices", json=body)
            assert response.status_code == 201, response.text
            devices.append(device)
    fleet = Fleet(who["dm_url"], who["server_id"], tuple(devices))
    profile = parse_profile(
        {
            "seed": 5,
            "arrival": {"mode": "spread", "over": 1.0},
            "poll": {"interval": 1.0, "jitter": 0.2},
            "encoding": {"wbxml": 0.5},
            "latency": {"download": {"dist": "uniform", "min": 0.1, "max": 0.3}},
        }
    )

    async def main() -> Summary:
        runner = FleetRunner(fleet, profile, RunOptions(duration=90, concurrency=10))
        task = asyncio.create_task(runner.run())
        deadline = time.monotonic() + 40
        while runner.stats.sessions.get("ok", 0) < 20:
            assert time.monotonic() < deadline and not task.done(), runner.stats
            await asyncio.sleep(0.1)
        async with httpx.AsyncClient(base_url=proc.url, headers=headers, timeout=30) as api:
            for device in devices:
                body = {"device_id": device.device_id, "kind": "install", "artifact_id": artifact}
                response = await api.post("/api/v1/jobs", json=body)
                assert response.status_code == 201, response.text
        while runner.stats.alerts_delivered < 20:
            assert time.monotonic() < deadline + 20 and not task.done(), runner.stats
            await asyncio.sleep(0.1)
        runner.stop()
        return await task

    summary = asyncio.run(main())
    data = summary.to_json()
    assert data["errors"] == {}, data
    assert data["scomo"]["results"] == {"1200": 20} and data["scomo"]["jobs_accepted"] == 20
    with httpx.Client(base_url=proc.url, headers=headers, timeout=30) as api:
        jobs = api.get("/api/v1/jobs", params={"limit": 100}).json()["items"]
        assert len(jobs) == 20
        assert {(job["state"], job["result_code"]) for job in jobs} == {("succeeded", 1200)}
        inventory = api.get(f"/api/v1/devices/{devices[0].device_id}/inventory").json()
        deployed = [(c["ident"], c["pkg_id_ref"]) for c in inventory if c["kind"] == "deployed"]
        assert deployed == [("com.example.hello-package", "com.example.hello-package")], inventory


def _register(
    proc: ServerProcess, headers: dict[str, str], prefix: str, n: int
) -> tuple[Fleet, list[FleetDevice]]:
    devices = []
    with httpx.Client(base_url=proc.url, headers=headers, timeout=30) as api:
        who = api.get("/api/v1/whoami").json()
        for i in range(n):
            device = FleetDevice(f"{prefix}{i:06d}", f"{prefix.lower()}{i}", f"pw-{i}", "md5", f"srv-{i}")
            body = {
                "device_id": device.device_id,
                "username": device.username,
                "password": device.password,
                "server_password": device.server_password,
            }
            response = api.post("/api/v1/devices", json=body)
            assert response.status_code == 201, response.text
            devices.append(device)
    return Fleet(who["dm_url"], who["server_id"], tuple(devices)), devices


@pytest.mark.e2e
def test_real_downloads_and_power_cuts_against_a_real_server(server: tuple[ServerProcess, Path]) -> None:
    """Four devices fetch a real signed package, each loses power once during its download or
    install, comes back, and reports: the server ends with exactly one 1200 per job, and the
    inventory holds the manifest's component and version (not the PkgID and 0.0.0-sim)."""
    proc, base = server
    key = generate_key()
    build_package(EXAMPLES / "hello-package", base / "hello-cut.omp", signing_key=key)
    (base / "publisher.pub.pem").write_bytes(public_key_pem(key))
    proc.run("publisher", "add", "sim-cut", str(base / "publisher.pub.pem"))
    artifact = int(proc.run("artifact", "add", str(base / "hello-cut.omp")).split()[1].rstrip(":"))
    token = proc.run("token", "add", "sim-cut", "--role", "operator").strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}"}
    fleet, devices = _register(proc, headers, "CUT", 4)
    profile = parse_profile(
        {
            "seed": 7,
            "poll": {"interval": 0.5},
            "latency": {"install": {"dist": "uniform", "min": 0.2, "max": 0.4}},
            "faults": {"power_cut": 1.0, "power_off_seconds": 0.3},
            "packages": {"trusted_keys": ["publisher.pub.pem"], "require_signature": True},
        },
        base=base,
    )

    async def main() -> Summary:
        runner = FleetRunner(fleet, profile, RunOptions(duration=90, concurrency=4, downloads="real"))
        task = asyncio.create_task(runner.run())
        deadline = time.monotonic() + 40
        while runner.stats.sessions.get("ok", 0) < 4:
            assert time.monotonic() < deadline and not task.done(), runner.stats
            await asyncio.sleep(0.1)
        async with httpx.AsyncClient(base_url=proc.url, headers=headers, timeout=30) as api:
            for device in devices:
                body = {"device_id": device.device_id, "kind": "install", "artifact_id": artifact}
                response = await api.post("/api/v1/jobs", json=body)
                assert response.status_code == 201, response.text
        while runner.stats.alerts_delivered < 4:
            assert time.monotonic() < deadline + 20 and not task.done(), runner.stats
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # a few more polls: nothing may be reported twice
        runner.stop()
        return await task

    summary = asyncio.run(main())
    data = summary.to_json()
    assert data["faults"]["power_cuts"] == 4, data
    assert data["scomo"]["results"] == {"1200": 4} and data["scomo"]["alerts_delivered"] == 4, data
    assert data["downloads"]["completed"] == 4, data
    with httpx.Client(base_url=proc.url, headers=headers, timeout=30) as api:
        for device in devices:
            jobs = api.get("/api/v1/jobs", params={"device": device.device_id}).json()["items"]
            assert [(job["state"], job["result_code"]) for job in jobs] == [("succeeded", 1200)], jobs
            inventory = api.get(f"/api/v1/devices/{device.device_id}/inventory").json()
            deployed = [
                (c["ident"], c["version"], c["pkg_id_ref"]) for c in inventory if c["kind"] == "deployed"
            ]
            assert deployed == [("com.example.hello", "1.0.0", "com.example.hello-package")], inventory


# -- power cuts and real downloads, in process ---------------------------------------------------


def test_power_cuts_end_each_job_exactly_once() -> None:
    """Every operation loses power once (download or install); each still ends with one report."""
    mock = MockDM(install_job)
    profile = parse_profile(
        {
            "seed": 11,
            "latency": {
                "download": {"dist": "fixed", "value": 0.1},
                "install": {"dist": "fixed", "value": 0.1},
            },
            "faults": {"power_cut": 1.0, "power_off_seconds": 0.1},
        }
    )
    runner, summary = run(mock, profile, n=3, until=lambda r: r.stats.alerts_delivered >= 3)
    assert runner.stats.power_cuts == 3 and summary.to_json()["faults"] == {"power_cuts": 3}
    assert runner.stats.scomo_results == {1200: 3}
    assert len(mock.alerts) == 3 and len({a.correlator for a in mock.alerts}) == 3
    for device in runner.devices:
        assert device.jobs == [] and not device.alerts
        with device.tree() as tree:
            assert tree.system_value("./SCOMO/Inventory/Deployed/p1/State") == "20"


def test_a_power_cut_abandons_the_session_in_progress() -> None:
    mock = MockDM()
    holder: list[FleetRunner] = []

    def cut_first_message(request: httpx.Request) -> httpx.Response | None:
        if mock.posts == 1:
            holder[0]._power_cut(0)
        return None

    mock.before = cut_first_message
    profile = parse_profile({"poll": {"interval": 0.2}, "faults": {"power_off_seconds": 0.1}})

    async def main() -> FleetRunner:
        async with httpx.AsyncClient(transport=httpx.MockTransport(mock.handle)) as client:
            runner = FleetRunner(fleet_of(1), profile, RunOptions(duration=10, concurrency=1), client=client)
            holder.append(runner)
            task = asyncio.create_task(runner.run())
            while runner.stats.sessions.get("ok", 0) < 1 and not task.done():
                await asyncio.sleep(0.01)
            runner.stop()
            await task
            return runner

    runner = asyncio.run(main())
    assert runner.stats.sessions["power-cut"] == 1 and runner.stats.power_cuts == 1
    assert runner.stats.sessions["ok"] >= 1  # it came back and polled


class _FilesAndDM:
    """One transport for both: the DM server (MockDM) and a file server with one package."""

    def __init__(self, mock: MockDM, package: bytes) -> None:
        self.mock, self.package = mock, package
        self.file_status = 200

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.host != "files.test":
            return self.mock.handle(request)
        if self.file_status != 200:
            return httpx.Response(self.file_status)
        return httpx.Response(200, content=self.package, headers={"Content-Type": "application/octet-stream"})


def url_install_job(device_id: str) -> list[tuple[Command, str]]:
    plan = plan_job(
        1,
        JobKind.INSTALL,
        {"pkg_id": "hello", "name": "Hello"},
        f"c-{device_id}",
        "./SCOMO",
        package_url="http://files.test/hello.omp",
    )
    return list(plan.commands)


@pytest.fixture(scope="module")
def hello_package(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("pkg") / "hello.omp"
    build_package(EXAMPLES / "hello-package", path, signing_key=generate_key())
    return path.read_bytes()


def _run_real(both: _FilesAndDM, profile: Profile, n: int) -> FleetRunner:
    async def main() -> FleetRunner:
        async with httpx.AsyncClient(transport=httpx.MockTransport(both.handle)) as client:
            runner = FleetRunner(
                fleet_of(n), profile, RunOptions(duration=20, concurrency=2, downloads="real"), client=client
            )
            task = asyncio.create_task(runner.run())
            while runner.stats.alerts_delivered < n and not task.done():
                await asyncio.sleep(0.01)
            runner.stop()
            await task
            return runner

    return asyncio.run(main())


def test_a_real_download_installs_the_manifests_component(hello_package: bytes) -> None:
    both = _FilesAndDM(MockDM(url_install_job), hello_package)
    runner = _run_real(both, parse_profile({}), 2)
    assert runner.stats.scomo_results == {1200: 2} and runner.stats.downloads == 2
    assert runner.stats.download_bytes == 2 * len(hello_package)
    for device in runner.devices:
        assert device.jobs == [] and all(job.partial is None for job in device.jobs)
        with device.tree() as tree:
            node = "./SCOMO/Inventory/Deployed/com.example.hello"
            assert tree.system_value(f"{node}/Version") == "1.0.0"
            assert tree.system_value(f"{node}/PkgIDRef") == "hello"
            assert tree.system_value(f"{node}/EnvType") == "archive"
    alert = both.mock.alerts[0]
    assert parse_scomo_alert_data(str(alert.items[0].data)) == (1200, "com.example.hello")


def test_a_failed_real_download_reports_the_agents_code(hello_package: bytes) -> None:
    both = _FilesAndDM(MockDM(url_install_job), hello_package)
    both.file_status = 404
    runner = _run_real(both, parse_profile({}), 1)
    assert runner.stats.scomo_results == {1402: 1}
    with runner.devices[0].tree() as tree:
        assert tree.system_get("./SCOMO/Inventory/Deployed/com.example.hello") is None
