"""``omadm ctl`` against a real server process: the operator's round trips and their errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omadm.cli import app
from omadm.package.build import build_package
from omadm.package.signing import generate_key, save_public_key

from .serverproc import ServerProcess, free_port

pytestmark = pytest.mark.e2e
runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ServerProcess, str, str]]:
    db = f"sqlite:///{tmp_path / 'srv' / 'omadm-server.sqlite'}"
    proc = ServerProcess(db, tmp_path / "srv", tmp_path / "server.log")
    proc.run("migrate")
    operator = proc.run("token", "add", "ops", "--role", "operator").split()[-1]
    viewer = proc.run("token", "add", "eyes", "--role", "viewer").split()[-1]
    proc.start()
    try:
        yield proc, operator, viewer
    finally:
        proc.stop()


def ctl(server: ServerProcess, token: str, *args: str) -> tuple[int, str]:
    done = runner.invoke(app, ["ctl", "--url", server.url, "--token", token, *args])
    return done.exit_code, done.output


def test_an_operator_manages_devices_packages_and_jobs(
    server: tuple[ServerProcess, str, str], tmp_path: Path
) -> None:
    proc, operator, viewer = server
    code, out = ctl(
        proc, operator, "devices", "add", "IMEI:1", "--username", "u", "--password", "p", "--tag", "site=lyon"
    )
    assert code == 0, out
    code, out = ctl(proc, operator, "devices", "tag", "IMEI:1", "ring=beta", "site=")
    assert code == 0 and "ring=beta" in out and "site" not in out
    code, out = ctl(proc, viewer, "devices", "list", "--tag", "ring=beta", "--json")
    assert code == 0 and [d["device_id"] for d in json.loads(out)["items"]] == ["IMEI:1"]
    code, out = ctl(proc, operator, "devices", "add", "IMEI:9", "--username", "u9", "--password", "p")
    assert code == 0, out
    code, out = ctl(proc, viewer, "devices", "list", "--limit", "1", "--count", "exact")
    assert code == 0 and "IMEI:1" in out and "1 device of 2; next page: --cursor " in out, out
    cursor = out.rsplit("--cursor ", 1)[1].split()[0]
    code, out = ctl(proc, viewer, "devices", "list", "--limit", "1", "--cursor", cursor)
    assert code == 0 and "IMEI:9" in out and "IMEI:1" not in out and "next page" not in out, out
    code, out = ctl(proc, viewer, "devices", "list", "--prefix", "IMEI:9", "--count", "none", "--json")
    page = json.loads(out)
    assert [d["device_id"] for d in page["items"]] == ["IMEI:9"] and page["total"] is None
    code, out = ctl(proc, viewer, "devices", "list", "--q", "imei:", "--devinfo", "Mod=W7")
    assert code == 0 and "0 devices of 0" in out
    code, out = ctl(proc, viewer, "devices", "list", "--component", "com.example.hello", "--version", "1.0")
    assert code == 0 and "0 devices of 0" in out
    package = tmp_path / "hello.omp"
    key = generate_key()
    save_public_key(key, tmp_path / "publisher.pub.pem")
    build_package(EXAMPLES / "hello-package", package, signing_key=key)
    proc.run("publisher", "add", "tests", str(tmp_path / "publisher.pub.pem"))
    code, out = ctl(proc, operator, "packages", "upload", str(package), "--json")
    assert code == 0, out
    package_id = json.loads(out)["id"]
    code, out = ctl(
        proc, operator, "jobs", "create", "IMEI:1", "install", "--package", str(package_id), "--json"
    )
    assert code == 0, out
    job = json.loads(out)
    assert job["state"] == "queued" and job["kind"] == "install"
    code, out = ctl(proc, viewer, "jobs", "list", "--device", "IMEI:1")
    assert code == 0 and "install" in out and "queued" in out
    code, out = ctl(proc, operator, "jobs", "cancel", str(job["id"]))
    assert code == 0 and "cancelled" in out
    code, out = ctl(proc, viewer, "devices", "show", "IMEI:1")
    assert code == 0 and "history" in out

    create = ["campaigns", "create", "hello", "install", "--package", str(package_id), "--tag", "ring=beta"]
    code, out = ctl(proc, viewer, *create, "--wave", "1", "--wave", "100%", "--dry-run")
    assert code == 0 and "would target" in out and "first: IMEI:" in out, out
    code, out = ctl(proc, viewer, "campaigns", "list", "--json")
    assert code == 0 and json.loads(out)["items"] == []  # the dry run created nothing
    code, out = ctl(proc, operator, *create, "--wave", "1", "--wave", "100%", "--json")
    assert code == 0, out
    campaign = json.loads(out)
    assert campaign["state"] == "draft"
    for action, state in (("start", "running"), ("pause", "paused"), ("cancel", "cancelled")):
        code, out = ctl(proc, operator, "campaigns", action, str(campaign["id"]), "--json")
        assert code == 0 and json.loads(out)["state"] == state, out
    code, out = ctl(proc, viewer, "campaigns", "show", str(campaign["id"]))
    assert code == 0 and "cancelled" in out and "wave" in out


def test_refusals_and_an_unreachable_server_say_why(server: tuple[ServerProcess, str, str]) -> None:
    proc, operator, viewer = server
    code, out = ctl(proc, viewer, "devices", "add", "IMEI:2", "--username", "u", "--password", "p")
    assert code == 1 and "403" in out
    code, out = ctl(proc, operator, "jobs", "create", "IMEI:404", "install", "--url", "http://x/p.omp")
    assert code == 1 and "404" in out and "IMEI:404" in out
    code, out = ctl(proc, "omadm_not-a-token", "devices", "list")
    assert code == 1 and "401" in out
    code, out = ctl(proc, operator, "devices", "tag", "IMEI:2", "novalue")
    assert code == 2 and "key=value" in out
    code, out = ctl(proc, viewer, "devices", "list", "--version-below", "2.0")
    assert code == 1 and "422" in out and "needs a component" in out
    code, out = ctl(proc, viewer, "devices", "list", "--cursor", "nonsense!")
    assert code == 1 and "422" in out and "cursor" in out
    done = runner.invoke(app, ["ctl", "--url", f"http://127.0.0.1:{free_port()}", "devices", "list"])
    assert done.exit_code == 4 and "cannot reach" in done.output


def test_an_admin_of_the_default_authority_manages_authorities(
    server: tuple[ServerProcess, str, str],
) -> None:
    proc, operator, _ = server
    admin = proc.run("token", "add", "root", "--role", "admin").split()[-1]
    code, out = ctl(proc, admin, "authorities", "add", "acme", "--server-id", "acme-dm", "--json")
    assert code == 0, out
    assert json.loads(out)["server_id"] == "acme-dm"
    code, out = ctl(proc, admin, "authorities", "list", "--json")
    assert code == 0 and [(a["name"], a["server_id"]) for a in json.loads(out)] == [
        ("default", None),
        ("acme", "acme-dm"),
    ]
    code, out = ctl(proc, operator, "authorities", "list")
    assert code == 1 and "403" in out
