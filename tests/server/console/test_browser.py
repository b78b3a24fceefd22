"""The console in a real browser: headless Chromium (Debian's ``chromium``, driven by
Playwright) against a real ``omadm server`` process, with simulated devices that really run.

An operator logs in through the login page, registers two devices, uploads a signed package,
previews a campaign targeted by tag, creates and starts it, and watches its page (refreshed in
place by ``console.js``) until it finishes: the devices (:mod:`omadm.sim`, with the
credentials typed in the browser) download the package over HTTP, verify its signature,
install it and report, exactly as they would for a campaign made with ``omadm ctl``. A viewer
then sees the fleet but no form.

The tests skip only when ``/usr/bin/chromium`` or the ``playwright`` package is missing;
``.ci/run`` installs both. Playwright's own browser download is never used.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from omadm.package.build import build_package
from omadm.package.signing import generate_key, save_public_key
from omadm.server.store.engine import database_url
from omadm.server.store.migrate import migrate
from omadm.sim.fleet import Fleet, FleetDevice
from omadm.sim.profile import parse_profile
from omadm.sim.run import FleetRunner, RunOptions

from ..api.conftest import EXAMPLES
from ..serverproc import ServerProcess

try:
    from playwright.async_api import Dialog, Page, async_playwright, expect
except ImportError:  # pragma: no cover - CI installs it (a dev extra)
    async_playwright = None

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.anyio,
    pytest.mark.skipif(
        async_playwright is None, reason="the playwright package is missing: pip install -e '.[dev]'"
    ),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"
    ),
]

#: How long one step may wait in the browser (a page, a flash message), in milliseconds.
STEP_MS = 15_000
#: How long the rollout may take from "Create and start" to "finished".
ROLLOUT_MS = 45_000


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A real server on SQLite: the browser test is about the console, not the engines."""
    db = database_url(None, tmp_path)
    migrate(db)
    settings = tmp_path / "omadm-server.toml"
    settings.write_text("[server]\nsweep_interval = 0.3\nnotify_interval = 3600\n")
    proc = ServerProcess(db, tmp_path / "server", tmp_path / "server.log", extra=("--config", str(settings)))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def new_token(server: ServerProcess, name: str, role: str) -> str:
    return server.run("token", "add", name, "--role", role).strip().splitlines()[-1]


async def log_in(page: Page, server: ServerProcess, token: str, asked: str) -> None:
    """Ask for a page, be sent to the login page, paste the token, land on the page asked."""
    await page.goto(f"{server.url}{asked}")
    await expect(page).to_have_url(re.compile(r"/console/login\?next="))
    await page.get_by_label("API token").fill(token)
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(f"{server.url}{asked}")


async def flash(page: Page, text: str | re.Pattern[str]) -> None:
    await expect(page.locator(".flash-ok")).to_have_text(text)


async def test_an_operator_rolls_a_package_out_from_the_console_to_devices_that_run(
    server: ServerProcess, tmp_path: Path
) -> None:
    key = generate_key()
    package = tmp_path / "hello-1.0.0.omp"
    build_package(EXAMPLES / "hello-package", package, signing_key=key)
    save_public_key(key, tmp_path / "publisher.pub.pem")
    server.run("publisher", "add", "tests", str(tmp_path / "publisher.pub.pem"))  # uploads need it
    operator = new_token(server, "browser-operator", "operator")
    viewer = new_token(server, "browser-viewer", "viewer")
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {operator}"}) as api:
        server_id = (await api.get("/api/v1/whoami")).json()["server_id"]
    devices = tuple(
        FleetDevice(
            device_id=f"IMEI:35000000000000{n}",
            username=f"imei{n}",
            password=secrets.token_urlsafe(12),
            auth="md5",
            server_password=secrets.token_urlsafe(12),
        )
        for n in (1, 2)
    )
    profile = parse_profile(
        {
            "seed": 7,
            "poll": {"interval": 0.5, "jitter": 0.1},
            "latency": {"install": {"dist": "uniform", "min": 0.05, "max": 0.1}},
            "packages": {"trusted_keys": ["publisher.pub.pem"], "require_signature": True},
        },
        base=tmp_path,
    )
    runner: FleetRunner | None = None
    running: asyncio.Task[Any] | None = None

    assert async_playwright is not None
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = await browser.new_page()
            page.set_default_timeout(STEP_MS)

            async def confirm(dialog: Dialog) -> None:
                await dialog.accept()  # console.js asks before "Create and start"

            page.on("dialog", confirm)
            await log_in(page, server, operator, "/console/devices")
            assert await page.get_by_role("link", name="Audit log").count() == 0  # for admins only

            # Register the two devices, as an operator types them in.
            for device in devices:
                await page.goto(f"{server.url}/console/devices")
                await page.get_by_role("link", name="Register a device").click()
                await page.locator('input[name="device_id"]').fill(device.device_id)
                await page.locator('select[name="auth"]').select_option(device.auth)
                await page.locator('input[name="username"]').fill(device.username)
                await page.locator('input[name="password"]').fill(device.password)
                await page.locator('input[name="server_password"]').fill(device.server_password)
                await page.locator('input[name="tags"]').fill("ring=browser, site=lab")
                await page.get_by_role("button", name="Register").click()
                await flash(page, f"Device {device.device_id} registered.")
                await expect(page.locator("h1")).to_contain_text(device.device_id)

            # The devices start: first contact, then they poll every half second.
            fleet = Fleet(f"{server.url}/dm", server_id, devices)
            runner = FleetRunner(fleet, profile, RunOptions(duration=120, concurrency=2, downloads="real"))
            running = asyncio.create_task(runner.run())

            # Upload the package through the file input.
            await page.goto(f"{server.url}/console/packages")
            await page.get_by_role("link", name="Upload a package").click()
            await page.locator('input[name="package"]').set_input_files(package)
            await page.get_by_role("button", name="Upload").click()
            await flash(page, re.compile(r"Package \d+ \(hello-1\.0\.0\.omp\) uploaded\."))
            artifact = page.url.rsplit("/", 1)[-1]

            # A campaign by tag in two waves: previewed first, then created and started.
            await page.goto(f"{server.url}/console/campaigns")
            await page.get_by_role("link", name="New campaign").click()
            await expect(page.get_by_role("button", name="Create and start")).to_have_count(0)
            await page.locator('input[name="name"]').fill("hello from the browser")
            await page.locator('select[name="kind"]').select_option("install")
            await page.locator('select[name="artifact_id"]').select_option(artifact)
            await page.locator('input[name="tags"]').fill("ring=browser")
            await page.locator('input[name="waves"]').fill("1, 100%")
            await page.get_by_role("button", name="Preview").click()
            await expect(page.locator(".preview-devices")).to_have_text("2")
            preview = page.locator("section.preview")
            await expect(preview).to_contain_text("wave 1: 1")
            await expect(preview).to_contain_text("wave 2: 1")
            await expect(preview).to_contain_text(devices[0].device_id)
            await page.get_by_role("button", name="Create and start").click()
            await flash(page, re.compile(r"Campaign \d+ created and started: it is running\."))
            campaign_url = page.url

            # Watch it: console.js refreshes the page in place until the campaign is over.
            await expect(page.locator("h1 .badge")).to_have_text("finished", timeout=ROLLOUT_MS)
            assert page.url == campaign_url  # refreshed in place, never navigated
            await expect(page.locator("main")).to_contain_text("2 of 2 devices done (100.0%)")
            await expect(page.locator("main .counts")).to_contain_text("succeeded 2")

            # Each device's page shows its install job, succeeded.
            await page.goto(f"{server.url}/console/devices/{devices[1].device_id.replace(':', '%3A')}")
            await expect(page.locator("table.list .badge", has_text="succeeded")).to_have_count(1)

            # A viewer sees the same fleet, and no form but the logout.
            viewer_page = await (await browser.new_context()).new_page()
            viewer_page.set_default_timeout(STEP_MS)
            await log_in(viewer_page, server, viewer, campaign_url.removeprefix(server.url))
            await expect(viewer_page.locator("h1 .badge")).to_have_text("finished")
            for listing in ("devices", "packages", "campaigns"):
                await viewer_page.goto(f"{server.url}/console/{listing}")
                await expect(viewer_page.locator("form[method=post]")).to_have_count(1)  # logout
                await expect(viewer_page.locator("p.new a")).to_have_count(0)
        finally:
            await browser.close()
            if runner is not None and running is not None:
                runner.stop()
                await running

    assert runner is not None and running is not None
    summary = running.result().to_json()
    assert summary["errors"] == {}, summary
    assert summary["scomo"]["results"] == {"1200": 2}, summary  # both devices installed it
