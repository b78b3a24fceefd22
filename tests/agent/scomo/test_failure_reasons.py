"""A failed SCOMO operation says why: the reason rides in its Generic Alert and stays in the journal.

The carrier is the report Item's ``Meta/EMI`` (``urn:omadm:reason:<text>``, see
``omadm.mo.scomo_reason``); the text is bounded to 1 KiB of printable UTF-8.
"""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

from omadm.agent.alerts import alert_from_json, alert_to_json
from omadm.agent.config import AccountConfig, AgentConfig, DeviceConfig
from omadm.agent.runner import Agent
from omadm.mo.scomo_codes import SCOMO_ALERT_TYPE, parse_scomo_alert_data
from omadm.mo.scomo_reason import MAX_REASON_BYTES, REASON_EMI_PREFIX, bound_reason, reason_of, with_reason
from omadm.package.build import build_package
from omadm.package.signing import generate_key, save_public_key
from omadm.protocol.codes import AuthType, ScomoResult
from omadm.protocol.messages import Add, Alert, Exec, Item, Meta, Source, Target
from omadm.protocol.session import AlertReceived, Credentials, Event, ServerSession, SessionStarted
from omadm.sim.device import DeviceTemplate
from omadm.sim.scomo import Phase, operation_complete_alert
from tests.agent.scomo.pkgserver import PackageServer
from tests.e2e.dmserver import DeviceAccount, TestDMServer
from tests.sim.test_device import URL, converse, device, install_commands, run_job

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "hello-package"
DOWNLOAD = "./SCOMO/Download/j1"


def test_a_reason_keeps_newlines_and_loses_control_characters() -> None:
    assert (
        bound_reason("exit 3;\tlast output:\r\nline\x1b[0m\x00 two\x7f\u0085  ")
        == "exit 3; last output:\nline[0m two"
    )
    assert bound_reason(None) == "" and bound_reason(" \x00 ") == ""


def test_a_long_reason_keeps_its_start_and_its_end_within_one_kib() -> None:
    text = "install hook exited with status 3; last output:\n" + "€" * 2000 + "\nfatal: the real cause"
    bounded = bound_reason(text)
    assert len(bounded.encode("utf-8")) <= MAX_REASON_BYTES
    assert bounded.startswith("install hook exited with status 3")
    assert bounded.endswith("\nfatal: the real cause")
    assert " [...] " in bounded
    bounded.encode("utf-8").decode("utf-8")  # cut on character boundaries


def test_the_reason_survives_the_alert_queue_and_old_queued_alerts_still_load() -> None:
    item = Item(source=Source("./x"), meta=Meta(type=SCOMO_ALERT_TYPE, format="xml"), data="d")
    alert = Alert("0", data="1226", correlator="c", items=(with_reason(item, "the hook said no"),))
    (back,) = alert_from_json(alert_to_json(alert)).items
    assert reason_of(back) == "the hook said no"
    assert back.meta is not None and back.meta.emi == (f"{REASON_EMI_PREFIX}the hook said no",)
    plain = Alert("0", data="1226", correlator="c", items=(item,))
    assert "emi" not in alert_to_json(plain)  # queued reports without a reason are written as before
    assert alert_from_json(alert_to_json(plain)) == plain


def _failing_package(tmp_path: Path) -> tuple[bytes, Path]:
    source = tmp_path / "pkg"
    shutil.copytree(EXAMPLE, source)
    hook = source / "com.example.hello" / "hooks" / "install"
    hook.write_text(
        '#!/bin/sh\nfor i in $(seq 1 25); do echo "line $i"; done\necho "no space left on /opt" >&2\nexit 7\n'
    )
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    key = generate_key()
    (tmp_path / "data" / "trust").mkdir(parents=True)
    save_public_key(key.public_key(), tmp_path / "data" / "trust" / "publisher.pem")
    build_package(source, tmp_path / "failing.omp", signing_key=key)
    return (tmp_path / "failing.omp").read_bytes(), tmp_path / "data"


def test_a_failing_install_hook_reports_its_exit_status_and_output_tail(tmp_path: Path) -> None:
    package, data_dir = _failing_package(tmp_path)
    with PackageServer({"/failing.omp": package}) as packages:
        commands = [
            Add("0", (Item(target=Target(DOWNLOAD), meta=Meta(format="node")),)),
            Add("0", (Item(target=Target(f"{DOWNLOAD}/PkgID"), data="failing-1"),)),
            Add("0", (Item(target=Target(f"{DOWNLOAD}/PkgURL"), data=packages.url("/failing.omp")),)),
            Add("0", (Item(target=Target(f"{DOWNLOAD}/Operations"), meta=Meta(format="node")),)),
            Add("0", (Item(target=Target(f"{DOWNLOAD}/Operations/DownloadInstall")),)),
            Exec("0", (Item(target=Target(f"{DOWNLOAD}/Operations/DownloadInstall")),), correlator="job-1"),
        ]

        def script(events: list[Event], session: ServerSession) -> None:
            if any(isinstance(e, SessionStarted) for e in events):
                while commands:
                    session.queue(commands.pop(0))

        account = DeviceAccount(
            Credentials(AuthType.MD5, "u", "p"),
            client_nonce=b"n",
            server_credentials=Credentials(AuthType.MD5, "srv", "sp"),
            send_server_cred=True,
        )
        with TestDMServer({"IMEI:5": account}, script) as server:
            config = AgentConfig(
                device=DeviceConfig(id="IMEI:5"),
                data_dir=data_dir,
                accounts=(AccountConfig("srv", server.url, "u", "p", server_password="sp"),),
                poll_interval=0,
                retries=1,
                retry_backoff=0.01,
            )
            agent = Agent(config)
            try:
                assert agent.connect().ok
                assert agent.work() == 1
                assert agent.connect().alerts_delivered == 1
                scomo = agent.scomo
                assert scomo is not None
                job = scomo.journal.get(1)
            finally:
                agent.close()
    (alert,) = [e.alert for e in server.of(AlertReceived)]
    (item,) = alert.items  # still one Item per report: the reason is in its Meta
    assert isinstance(item.data, str) and parse_scomo_alert_data(item.data) == (1405, "com.example.hello")
    reason = reason_of(item)  # as the server decoded it from the wire
    assert reason is not None, item
    assert reason.startswith("install hook of com.example.hello 1.0.0 exited with status 7; last output:\n")
    assert "line 25\nno space left on /opt" in reason
    assert "line 5\n" not in reason  # the output's tail, not all of it
    assert (
        job is not None and job.result == 1405 and job.data["reason"] == reason
    )  # journaled with the result


def test_a_success_carries_no_reason() -> None:
    alert = operation_complete_alert(
        "./SCOMO/Download/x/Operations/Download", "c", 1200, [(None, "p")], "ignored"
    )
    (item,) = alert.items
    assert reason_of(item) is None


def test_a_simulated_device_says_why_its_injected_failure_happened() -> None:
    dev = device(DeviceTemplate("omadm", URL))
    converse(dev, install_commands())
    run_job(dev, {Phase.DOWNLOAD: ScomoResult.DOWNLOAD_FAILED_OUT_OF_MEMORY})
    (alert,) = dev.pending_alerts
    (item,) = alert.items
    assert parse_scomo_alert_data(str(item.data))[0] == 1404
    assert (
        reason_of(item)
        == "the download phase failed with 1404 Download failed: device out of memory (simulated device)"
    )
