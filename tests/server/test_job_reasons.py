"""Failures that say why: the device's reason reaches the job's detail, and a standard server is undisturbed.

The reason rides in the OperationComplete Item's ``Meta/EMI`` (``omadm.mo.scomo_reason``);
these tests check the server side (parsing, bounding, the job's detail in the API, ``omadm
ctl`` and the console) and, end to end, a real agent whose install hook fails.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from omadm.cli import app
from omadm.mo.scomo_codes import SCOMO_ALERT_TYPE, scomo_alert_data
from omadm.mo.scomo_reason import MAX_REASON_BYTES, REASON_EMI_PREFIX, reason_of, with_reason
from omadm.package.build import build_package
from omadm.package.signing import generate_key, save_public_key
from omadm.protocol.codec import Encoding, decode, encode
from omadm.protocol.messages import Alert, Item, Message, Meta, Source, SyncHdr, Target
from omadm.server.jobs import outcome_from_status, outcome_of_reports, scomo_reports
from omadm.server.store.models import InventoryEntry, JobKind, JobState

from .serverproc import ENV, SERVER_PASSWORD, ServerProcess, agent_config, agent_connect, running_server

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEVICE = "IMEI:490154203237519"
SOURCE = "./SCOMO/Download/omadm-1/Operations/DownloadInstall"


def failed_alert(reason: str | None) -> Alert:
    """A device's report of a failed install (1405), with ``reason`` in the Item's EMI if given."""
    item = Item(
        source=Source(SOURCE),
        meta=Meta(type=SCOMO_ALERT_TYPE, format="xml", mark="critical"),
        data=scomo_alert_data(1405, "com.example.hello"),
    )
    return Alert("3", data="1226", correlator="c-1", items=(with_reason(item, reason),))


def over_the_wire(alert: Alert, encoding: Encoding) -> Alert:
    """``alert`` as the server decodes it from a device's message."""
    header = SyncHdr("1", "1", Target("http://dm.example/dm"), Source(DEVICE))
    (decoded,) = decode(encode(Message(header, (alert,)), encoding))[0].commands
    assert isinstance(decoded, Alert)
    return decoded


@pytest.mark.parametrize("encoding", [Encoding.XML, Encoding.WBXML])
def test_the_reason_crosses_the_wire_and_becomes_the_job_s_detail(encoding: Encoding) -> None:
    reason = "install hook of com.example.hello 1.0.0 exited with status 3; last output:\nno <space> & more"
    (report,) = scomo_reports(over_the_wire(failed_alert(reason), encoding))
    assert (report.result, report.identifier, report.reason) == (1405, "com.example.hello", reason)
    outcome = outcome_of_reports([report])
    assert outcome.state is JobState.FAILED and outcome.result_code == 1405
    assert outcome.detail == f"1405 Install failed (com.example.hello: 1405): {reason}"


def test_a_server_that_ignores_the_emi_reads_the_same_report() -> None:
    """The standard part of the Item is untouched: without the EMI, the same 1405, no reason."""
    with_emi = over_the_wire(failed_alert("the hook said no"), Encoding.XML)
    (item,) = with_emi.items
    assert item.meta is not None and item.meta.emi  # the carrier is there ...
    stripped = replace(with_emi, items=(replace(item, meta=replace(item.meta, emi=())),))
    assert stripped == over_the_wire(failed_alert(None), Encoding.XML)  # ... and only the carrier differs
    (plain,) = scomo_reports(stripped)
    assert (plain.result, plain.identifier, plain.reason) == (1405, "com.example.hello", None)
    assert outcome_of_reports([plain]).detail == "1405 Install failed (com.example.hello: 1405)"


def test_other_emi_values_are_not_taken_for_a_reason() -> None:
    item = Item(meta=Meta(type=SCOMO_ALERT_TYPE, emi=("vendor:x=1", "urn:omadm:reasonless")))
    assert reason_of(item) is None
    assert reason_of(Item(meta=Meta(emi=(REASON_EMI_PREFIX,)))) is None  # empty: no reason


def test_a_device_s_reason_is_bounded_and_cleaned_by_the_server() -> None:
    """Whatever a device sends, the detail keeps at most 1 KiB of printable text."""
    noisy = "start\x1b[31m\x00 red\r\n" + "é" * 5000 + "\x07the end"
    item = Item(
        source=Source(SOURCE),
        meta=Meta(type=SCOMO_ALERT_TYPE, format="xml", emi=(f"{REASON_EMI_PREFIX}{noisy}",)),
        data=scomo_alert_data(1405, "x"),
    )
    (report,) = scomo_reports(Alert("3", data="1226", items=(item,)))
    assert report.reason is not None
    assert len(report.reason.encode()) <= MAX_REASON_BYTES
    assert report.reason.startswith("start[31m red\n") and report.reason.endswith("the end")
    assert " [...] " in report.reason
    assert not any(ord(c) < 32 and c != "\n" for c in report.reason)


def test_each_failing_item_s_reason_is_kept_once() -> None:
    items = tuple(
        with_reason(
            Item(source=Source(SOURCE), meta=Meta(type=SCOMO_ALERT_TYPE), data=scomo_alert_data(code, ident)),
            why,
        )
        for code, ident, why in (
            (1200, "a", None),
            (1405, "b", "b's hook failed"),
            (1405, "c", "b's hook failed"),
        )
    )
    detail = outcome_of_reports(scomo_reports(Alert("3", data="1226", items=items))).detail
    assert detail == "1405 Install failed (a: 1200; b: 1405; c: 1405): b's hook failed"


# -- end to end: a real agent, a real server, a hook that fails ------------------------------


@pytest.fixture
def failing_package(tmp_path: Path) -> tuple[Path, Path]:
    """hello-package whose install hook prints 30 lines and exits 3; and the publisher key."""
    source = tmp_path / "failing-package"
    shutil.copytree(EXAMPLES / "hello-package", source)
    hook = source / "com.example.hello" / "hooks" / "install"
    hook.write_text(
        "#!/bin/sh\n"
        'for i in $(seq 1 30); do echo "step $i of the install"; done\n'
        'echo "fatal: cannot write /opt/hello: Read-only file system" >&2\n'
        "exit 3\n"
    )
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    key = generate_key()
    save_public_key(key.public_key(), tmp_path / "publisher.pub.pem")
    build_package(source, tmp_path / "failing.omp", signing_key=key)
    return tmp_path / "failing.omp", tmp_path / "publisher.pub.pem"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    with running_server(tmp_path) as started:
        yield started


def test_a_failing_install_hook_s_exit_status_and_output_reach_the_operator(
    server: tuple[ServerProcess, str], failing_package: tuple[Path, Path], tmp_path: Path
) -> None:
    proc, token = server
    package, key = failing_package
    config = agent_config(tmp_path / "device", f"{proc.url}/dm", DEVICE, key)
    proc.run(
        "device",
        "add",
        DEVICE,
        "--username",
        "dev",
        "--password",
        "secret",
        "--server-password",
        SERVER_PASSWORD,
    )
    trusted = subprocess.run(
        [*proc.base, "publisher", "add", "acme", str(key)], check=False, capture_output=True, env=ENV
    )
    assert trusted.returncode == 0 or b"No such command" in trusted.stderr  # servers before the trust store
    artifact = proc.run("artifact", "add", str(package)).split()[1].rstrip(":")
    proc.run("job", "add", DEVICE, "install", "--artifact", artifact)
    agent_connect(config)  # Exec answered 202; the install runs after the session and fails
    agent_connect(config)  # the report

    auth = {"Authorization": f"Bearer {token}"}
    (job,) = httpx.get(f"{proc.url}/api/v1/jobs", headers=auth, timeout=30).json()["items"]
    assert (job["state"], job["result_code"]) == ("failed", 1405)
    detail = job["detail"]
    assert detail.startswith("1405 Install failed (com.example.hello: 1405): ")
    assert "install hook of com.example.hello 1.0.0 exited with status 3" in detail
    assert "fatal: cannot write /opt/hello: Read-only file system" in detail  # the output's tail
    assert "step 30 of the install" in detail
    assert "step 1 of the install" not in detail  # only the last lines

    runner = CliRunner()
    shown = runner.invoke(
        app, ["ctl", "--url", proc.url, "--token", token, "jobs", "show", str(job["id"]), "--json"]
    )
    assert shown.exit_code == 0 and json.loads(shown.output)["detail"] == detail
    wide = {"COLUMNS": "400"}  # one table row per job, not wrapped
    listed = runner.invoke(app, ["ctl", "--url", proc.url, "--token", token, "jobs", "list"], env=wide)
    assert listed.exit_code == 0 and "exited with status 3" in listed.output, listed.output

    with httpx.Client(base_url=proc.url, timeout=30) as browser:
        assert browser.post("/console/login", data={"token": token}).status_code == 303
        page = browser.get(f"/console/jobs/{job['id']}").text
        assert "exited with status 3" in page and "Read-only file system" in page
        device_page = browser.get(f"/console/devices/{DEVICE}").text
        assert '<td class="detail" title="1405 Install failed' in device_page  # the job list says why
        assert "exited with status 3" in device_page.split('<td class="detail"', 1)[1]
        assert "<td>delivered (10)</td>" in device_page  # the package stayed delivered: State in words

    (delivered,) = httpx.get(f"{proc.url}/api/v1/devices/{DEVICE}/inventory", headers=auth, timeout=30).json()
    assert (delivered["kind"], delivered["state"], delivered["state_name"]) == ("delivered", 10, "delivered")
    assert delivered["status"] is None or delivered["status_name"] is not None
    shown = runner.invoke(
        app, ["ctl", "--url", proc.url, "--token", token, "devices", "show", DEVICE], env=wide
    )
    assert shown.exit_code == 0 and "delivered (10)" in shown.output, shown.output


def test_scomo_state_and_status_numbers_have_words_per_entry_kind() -> None:
    deployed = InventoryEntry(kind="deployed", state=20, status=40)
    assert (deployed.state_name, deployed.status_name) == ("active", "activate_failed")
    delivered = InventoryEntry(kind="delivered", state=20, status=50)
    assert (delivered.state_name, delivered.status_name) == ("installed", "install_failed_with_data")
    vendor = InventoryEntry(kind="deployed", state=99, status=None)
    assert (vendor.state_name, vendor.status_name) == (None, None)


def test_a_polled_failure_names_the_status_it_read() -> None:
    outcome = outcome_from_status(JobKind.INSTALL, 60, entry_missing=False)
    assert outcome is not None and "Status 60 (install_failed_with_data)" in outcome.detail
