"""SCOMO-SRV-*: what a DM server must do with SCOMO, checked with omadm playing the device.

The server is made to act through triggers (queue an install, an activation, a removal); the
simulated device answers each Exec with 202 and reports when the case says, with the result
code the case chooses. What the server did is read from its messages and, where only the
server knows (a job's state), through the ``job`` and ``inventory`` query triggers.
"""

from __future__ import annotations

from omadm.protocol.codes import AlertCode, ScomoResult
from omadm.protocol.messages import Add, Exec, Get, Replace

from ..model import Role, case, check
from ..server_flows import (
    SCOMO,
    SCOMO_ACTIVATION,
    SCOMO_DOWNLOAD,
    SCOMO_INSTALL_INACTIVE,
    SCOMO_INVENTORY_REFRESH,
    alert_statuses,
    ensure_component,
    job_state,
    prepare_toggle,
    queue_operation,
    report,
)
from ..server_harness import ServerCaseContext, Transcript

SC = "scomo.md"
TRIGGER = "A trigger (file or operator) that makes the server queue the operation"


def _leaf_values(transcript: Transcript) -> dict[str, str]:
    """Node -> value of every Add/Replace leaf the server sent (data as text)."""
    out: dict[str, str] = {}
    for command in transcript.received("Add", "Replace"):
        assert isinstance(command, Add | Replace)
        for item in command.items:
            if item.target is not None and item.data is not None:
                data = item.data.decode("utf-8", "replace") if isinstance(item.data, bytes) else item.data
                out[item.target.loc_uri] = data
    return out


def _inventory_gets(transcript: Transcript, after_turn: int = 0) -> list[str]:
    root = "./SCOMO/Inventory"
    return [
        uri
        for turn in transcript.turns[after_turn:]
        for command in turn.reply.commands
        if isinstance(command, Get)
        for uri in (i.target.loc_uri for i in command.items if i.target is not None)
        if uri.startswith(root)
    ]


# ---------------------------------------------------------------------------------------- the Exec


@case(
    "SCOMO-SRV-EXEC-001",
    "A DownloadInstall job sets PkgID and PkgURL before its Exec",
    rule=f"{SC} §8(a), §2.2; ets.md SC-S-02",
    role=Role.SERVER,
    capability=SCOMO,
    preconditions=(TRIGGER,),
    steps=("Fire the install trigger", "Run the session in which the server sends the job"),
    pass_criteria=(
        "Download/<X>/PkgID and Download/<X>/PkgURL are set (Add or Replace) in the session",
        "They come before the Exec on Download/<X>/Operations/DownloadInstall",
    ),
)
async def exec_download_install(ctx: ServerCaseContext) -> None:
    op = await queue_operation(ctx, "install")
    uri = op.exec_uri
    check(uri.startswith("./SCOMO/Download/") and uri.endswith("/Operations/DownloadInstall"),
          "an Exec on ./SCOMO/Download/<X>/Operations/DownloadInstall", uri)  # fmt: skip
    entry = uri.rsplit("/Operations/", 1)[0]
    leaves = _leaf_values(op.transcript)
    for leaf in ("PkgID", "PkgURL"):
        check(bool(leaves.get(f"{entry}/{leaf}")), f"{entry}/{leaf} set before the Exec", sorted(leaves))
    order = [c for c in op.transcript.received("Add", "Replace", "Exec")]
    last_leaf = max(
        i
        for i, c in enumerate(order)
        if isinstance(c, Add | Replace)
        and any(it.target is not None and it.target.loc_uri.startswith(entry) for it in c.items)
    )
    first_exec = min(i for i, c in enumerate(order) if isinstance(c, Exec))
    check(last_leaf < first_exec, "the entry's leaves before the Exec", [c.name for c in order])
    await report(ctx)


@case(
    "SCOMO-SRV-EXEC-002",
    "Every SCOMO Exec carries a Correlator",
    rule=f"{SC} §6.1; ets.md SC-S-02",
    role=Role.SERVER,
    capability=SCOMO,
    preconditions=(TRIGGER,),
    steps=("Fire the install trigger", "Look at the Exec the server sends"),
    pass_criteria=("The Exec has a non-empty Correlator",),
)
async def exec_correlator(ctx: ServerCaseContext) -> None:
    op = await queue_operation(ctx, "install")
    check(bool(op.exec.correlator), "a Correlator on the Exec", op.exec.correlator)
    await report(ctx)


@case(
    "SCOMO-SRV-EXEC-003",
    "Two jobs get two different Correlators",
    rule=f"{SC} §6.1; ets.md SC-S-02 (unique Correlator)",
    role=Role.SERVER,
    capability=SCOMO,
    preconditions=(TRIGGER,),
    steps=("Install twice, each job reported before the next",),
    pass_criteria=("The two Execs' Correlators differ",),
)
async def exec_correlator_unique(ctx: ServerCaseContext) -> None:
    seen = []
    for _ in range(2):
        op = await queue_operation(ctx, "install")
        seen.append(op.exec.correlator)
        await report(ctx)
    check(seen[0] != seen[1] and all(seen), "two different Correlators", seen)


@case(
    "SCOMO-SRV-EXEC-004",
    "The PkgURL is an absolute http(s) URL",
    rule=f"{SC} §7.2",
    role=Role.SERVER,
    capability=SCOMO,
    preconditions=(TRIGGER,),
    steps=("Fire the install trigger", "Read the PkgURL the server writes"),
    pass_criteria=("PkgURL starts with http:// or https://",),
)
async def exec_pkg_url(ctx: ServerCaseContext) -> None:
    op = await queue_operation(ctx, "install")
    urls = [v for k, v in _leaf_values(op.transcript).items() if k.endswith("/PkgURL")]
    check(bool(urls) and urls[0].startswith(("http://", "https://")), "an http(s) PkgURL", urls)
    await report(ctx)


async def _exec_on_deployed(ctx: ServerCaseContext, trigger: str, primitive: str) -> None:
    component = await ensure_component(ctx)
    node = ctx.deployed()[component]
    await prepare_toggle(ctx, trigger, component)
    op = await queue_operation(ctx, trigger, component_id=component)
    check(
        op.exec_uri == f"{node}/Operations/{primitive}", f"Exec on {node}/Operations/{primitive}", op.exec_uri
    )
    check(bool(op.exec.correlator), "a Correlator", op.exec.correlator)
    await report(ctx)


@case(
    "SCOMO-SRV-EXEC-005",
    "Activate goes to the component's Deployed/<X>/Operations/Activate, with a Correlator",
    rule=f"{SC} §3.1, §8(e)",
    role=Role.SERVER,
    capability=SCOMO_ACTIVATION,
    preconditions=("A deployed component (installed first if none)", TRIGGER),
    steps=("Deactivate the component", "Fire the activate trigger with its ID"),
    pass_criteria=(
        "Exec on the node the device reported for the component, /Operations/Activate, with a Correlator",
    ),
)
async def exec_activate(ctx: ServerCaseContext) -> None:
    await _exec_on_deployed(ctx, "activate", "Activate")


@case(
    "SCOMO-SRV-EXEC-006",
    "Deactivate goes to Deployed/<X>/Operations/Deactivate, with a Correlator",
    rule=f"{SC} §3.1, §8(e)",
    role=Role.SERVER,
    capability=SCOMO_ACTIVATION,
    preconditions=("A deployed component", TRIGGER),
    steps=("Fire the deactivate trigger with the component's ID",),
    pass_criteria=("Exec on <node>/Operations/Deactivate with a Correlator",),
)
async def exec_deactivate(ctx: ServerCaseContext) -> None:
    await _exec_on_deployed(ctx, "deactivate", "Deactivate")


@case(
    "SCOMO-SRV-EXEC-007",
    "Remove goes to Deployed/<X>/Operations/Remove, with a Correlator",
    rule=f"{SC} §3.1, §8(d)",
    role=Role.SERVER,
    capability=SCOMO,
    preconditions=("A deployed component", TRIGGER),
    steps=("Fire the remove trigger with the component's ID",),
    pass_criteria=("Exec on <node>/Operations/Remove with a Correlator",),
)
async def exec_remove(ctx: ServerCaseContext) -> None:
    await _exec_on_deployed(ctx, "remove", "Remove")


@case(
    "SCOMO-SRV-EXEC-008",
    "A Download job Execs Download/<X>/Operations/Download",
    rule=f"{SC} §3.1, §8(b)",
    role=Role.SERVER,
    capability=SCOMO_DOWNLOAD,
    preconditions=(TRIGGER,),
    steps=("Fire the download trigger",),
    pass_criteria=("PkgID and PkgURL set on the entry, then an Exec on its /Operations/Download",),
)
async def exec_download(ctx: ServerCaseContext) -> None:
    op = await queue_operation(ctx, "download")
    check(op.exec_uri.endswith("/Operations/Download") and "/Download/" in op.exec_uri,
          "Exec on ./SCOMO/Download/<X>/Operations/Download", op.exec_uri)  # fmt: skip
    entry = op.exec_uri.rsplit("/Operations/", 1)[0]
    leaves = _leaf_values(op.transcript)
    check(bool(leaves.get(f"{entry}/PkgURL")), f"{entry}/PkgURL set", sorted(leaves))
    await report(ctx)


@case(
    "SCOMO-SRV-EXEC-009",
    "An install without activation Execs DownloadInstallInactive",
    rule=f"{SC} §3.1",
    role=Role.SERVER,
    capability=SCOMO_INSTALL_INACTIVE,
    preconditions=(TRIGGER,),
    steps=("Fire the install_inactive trigger",),
    pass_criteria=("Exec on ./SCOMO/Download/<X>/Operations/DownloadInstallInactive",),
)
async def exec_install_inactive(ctx: ServerCaseContext) -> None:
    op = await queue_operation(ctx, "install_inactive")
    check(
        op.exec_uri.endswith("/Operations/DownloadInstallInactive"),
        "Exec DownloadInstallInactive",
        op.exec_uri,
    )
    await report(ctx)


@case(
    "SCOMO-SRV-EXEC-010",
    "An Exec sent again after a lost session keeps its Correlator",
    rule=f"{SC} §6.1; {'oma-dm-1.2.md'} §2.2 (unsignalled loss)",
    role=Role.SERVER,
    capability=SCOMO,
    preconditions=(TRIGGER,),
    steps=(
        "Fire the install trigger",
        "The device takes the Exec but the session is lost before it answers (nothing more is sent)",
        "Run the next session",
    ),
    pass_criteria=("The server sends the Exec again on the same node with the same Correlator",),
)
async def exec_resent(ctx: ServerCaseContext) -> None:
    await ctx.drain()
    await ctx.trigger("install")
    first = await ctx.session(drop_on="Exec")
    execs = [c for c in first.received("Exec") if isinstance(c, Exec)]
    check(bool(execs), "the Exec in the first session", [r.describe() for r in first.replies])
    second = await ctx.session()
    again = [c for c in second.received("Exec") if isinstance(c, Exec)]
    check(bool(again), "the Exec sent again in the next session", [r.describe() for r in second.replies])
    check(
        again[0].correlator == execs[0].correlator, f"Correlator {execs[0].correlator}", again[0].correlator
    )
    check(again[0].items[0].target == execs[0].items[0].target, "the same node", again[0].items[0].target)
    await report(ctx)


@case(
    "SCOMO-SRV-EXEC-011",
    "The server addresses the device's SCOMO root",
    rule=f"{SC} §2.1; ets.md SC-S-01",
    role=Role.SERVER,
    capability=SCOMO,
    preconditions=(TRIGGER,),
    steps=("Fire the install trigger",),
    pass_criteria=("Every SCOMO node the server writes or executes lies under ./SCOMO (the device's root)",),
)
async def exec_scomo_root(ctx: ServerCaseContext) -> None:
    op = await queue_operation(ctx, "install")
    targets = op.transcript.targets("Add", "Replace", "Exec")
    outside = [t for t in targets if not t.startswith("./SCOMO/")]
    check(not outside, "every target under ./SCOMO/", outside)
    await report(ctx)


# ---------------------------------------------------------------------------------------- the report


@case(
    "SCOMO-SRV-ALERT-001",
    "The server answers 200 to the device's Generic Alert 1226 (OperationComplete)",
    rule=f"{SC} §6.1, §6.3; oma-dm-1.2.md §4.2",
    role=Role.SERVER,
    capability=SCOMO,
    preconditions=(TRIGGER,),
    steps=(
        "Install; the device answers 202",
        "In the next session the device sends the OperationComplete alert",
    ),
    pass_criteria=("Status 200 for the alert",),
)
async def alert_answered(ctx: ServerCaseContext) -> None:
    await queue_operation(ctx, "install")
    transcript = await report(ctx)
    for alert, status in alert_statuses(transcript):
        check(
            status is not None and status.code == 200,
            "Status 200 for the Generic Alert",
            status.data if status else "none",
        )
        del alert


@case(
    "SCOMO-SRV-ALERT-002",
    "The report finishes the job it names by Correlator",
    rule=f"{SC} §6.1; ets.md SC-S-03",
    role=Role.SERVER,
    capability=SCOMO,
    preconditions=(TRIGGER, "A query trigger 'job' that reads the job's state and result code"),
    steps=("Install; the device answers 202 and reports 1200 with the Exec's Correlator",),
    pass_criteria=("The server's job is succeeded with result code 1200",),
)
async def alert_matched(ctx: ServerCaseContext) -> None:
    await queue_operation(ctx, "install")
    await report(ctx)
    state, code = await job_state(ctx)
    check(state == "succeeded" and code == 1200, "the job succeeded with 1200", f"{state} {code}")


@case(
    "SCOMO-SRV-ALERT-003",
    "A failure result code is recorded as the job's failure, with its code",
    rule=f"{SC} §5, §6.1; ets.md SC-S-05",
    role=Role.SERVER,
    capability=SCOMO,
    preconditions=(TRIGGER, "A query trigger 'job'"),
    steps=("Install; the device answers 202 and reports 1405 (install failed)",),
    pass_criteria=("Status 200 for the alert", "The job is failed with result code 1405"),
)
async def alert_failure(ctx: ServerCaseContext) -> None:
    await queue_operation(ctx, "install")
    transcript = await report(ctx, ScomoResult.INSTALL_FAILED)
    statuses = alert_statuses(transcript)
    check(all(s is not None and s.code == 200 for _, s in statuses), "200 for the failure report", statuses)
    state, code = await job_state(ctx)
    check(state == "failed" and code == ScomoResult.INSTALL_FAILED, "failed with 1405", f"{state} {code}")


@case(
    "SCOMO-SRV-ALERT-004",
    "A report sent again is answered 200 and changes nothing",
    rule=f"{SC} §6.1 (the device repeats an unacknowledged alert)",
    role=Role.SERVER,
    capability=SCOMO,
    preconditions=(TRIGGER, "A query trigger 'job'"),
    steps=("Install and report 1200", "Send the same alert (same Correlator) again in the next session"),
    pass_criteria=("Status 200 for the repeated alert", "The job stays succeeded with 1200"),
)
async def alert_repeated(ctx: ServerCaseContext) -> None:
    await queue_operation(ctx, "install")
    transcript = await report(ctx)
    alert = alert_statuses(transcript)[0][0]
    ctx.device.alerts = [alert]
    again = await ctx.session()
    statuses = alert_statuses(again)
    check(
        bool(statuses) and statuses[0][1] is not None and statuses[0][1].code == 200,
        "200 for the repeat",
        statuses,
    )
    state, code = await job_state(ctx)
    check(state == "succeeded" and code == 1200, "the job unchanged (succeeded, 1200)", f"{state} {code}")


@case(
    "SCOMO-SRV-ALERT-005",
    "A report with an unknown Correlator is still answered 200",
    rule=f"{SC} §6.1; ets.md SC-S-09",
    role=Role.SERVER,
    capability=SCOMO,
    preconditions=("The device is registered on the server",),
    steps=("Send an OperationComplete alert whose Correlator and Source no job of the server has",),
    pass_criteria=("Status 200, so that the device stops sending it",),
)
async def alert_unknown_correlator(ctx: ServerCaseContext) -> None:
    from omadm.sim.scomo import operation_complete_alert  # noqa: PLC0415

    await ctx.drain()
    alert = operation_complete_alert(
        "./SCOMO/Download/unknown-entry/Operations/DownloadInstall", "conformance-unknown-correlator", 1200,
        [(None, "unknown.component")],
    )  # fmt: skip
    ctx.device.alerts = [alert]
    transcript = await ctx.session()
    statuses = alert_statuses(transcript)
    check(bool(statuses) and statuses[0][1] is not None and statuses[0][1].code == 200, "200", statuses)
    check(not ctx.device.pending_alerts, "the alert delivered", ctx.device.pending_alerts)


@case(
    "SCOMO-SRV-ASYNC-001",
    "202 then a late report: the job stays open until the report, then succeeds",
    rule=f"{SC} §3.2, §6.1; ets.md SC-S-03",
    role=Role.SERVER,
    capability=SCOMO,
    preconditions=(TRIGGER, "A query trigger 'job'"),
    steps=(
        "Install; the device answers the Exec with 202",
        "Run a session without a report",
        "Report 1200 in a later session",
    ),
    pass_criteria=("The job is not final before the report", "It is succeeded (1200) after it"),
)
async def async_late_report(ctx: ServerCaseContext) -> None:
    await queue_operation(ctx, "install")
    await ctx.session()
    state, code = await job_state(ctx)
    check(state not in ("succeeded", "failed"), "an open job before the report", f"{state} {code}")
    await report(ctx)
    state, code = await job_state(ctx)
    check(state == "succeeded" and code == 1200, "succeeded with 1200 after the report", f"{state} {code}")


@case(
    "SCOMO-SRV-ASYNC-002",
    "A job the device accepted (202) is not sent again while its report is due",
    rule=f"{SC} §3.2, §6.1",
    role=Role.SERVER,
    capability=SCOMO,
    preconditions=(TRIGGER,),
    steps=("Install; the device answers 202", "Run another session before reporting"),
    pass_criteria=("No Exec in the second session",),
)
async def async_not_resent(ctx: ServerCaseContext) -> None:
    await queue_operation(ctx, "install")
    transcript = await ctx.session()
    check(not transcript.received("Exec"), "no Exec while the report is due", transcript.targets("Exec"))
    await report(ctx)


@case(
    "SCOMO-SRV-ASYNC-003",
    "An Exec answered with an error Status fails the job at once",
    rule=f"{SC} §3.2 (DM-level Status for the Exec)",
    role=Role.SERVER,
    capability=SCOMO,
    preconditions=("A deployed component", TRIGGER, "A query trigger 'job'"),
    steps=(
        "Delete the component from the device behind the server's back",
        "Fire the remove trigger; the device answers the Exec 404",
    ),
    pass_criteria=("The job is failed (not left waiting for a report)",),
)
async def exec_refused(ctx: ServerCaseContext) -> None:
    component = await ensure_component(ctx)
    node = ctx.deployed()[component]
    await ctx.trigger("remove", component_id=component)
    with ctx.device.tree() as tree:
        tree.system_delete(node)
    transcript = await ctx.session()
    check(bool(transcript.received("Exec")), "the Remove sent", [r.describe() for r in transcript.replies])
    state, code = await job_state(ctx)
    check(state == "failed", "the job failed on the 404", f"{state} {code}")


# ---------------------------------------------------------------------------------------- inventory


@case(
    "SCOMO-SRV-INV-001",
    "The server reads the SCOMO inventory",
    rule=f"{SC} §8(f)",
    role=Role.SERVER,
    capability=SCOMO,
    preconditions=("The device is registered on the server",),
    steps=("Run a session",),
    pass_criteria=("The server Gets the Inventory (or its Deployed/Delivered branches) in the session",),
)
async def inventory_read(ctx: ServerCaseContext) -> None:
    transcript = await ctx.session()
    check(bool(_inventory_gets(transcript)), "a Get under ./SCOMO/Inventory", transcript.targets("Get"))


@case(
    "SCOMO-SRV-INV-002",
    "After an operation's report the server reads the inventory again",
    rule=f"{SC} §8(a) (refresh after the operation)",
    role=Role.SERVER,
    capability=SCOMO,
    preconditions=(TRIGGER,),
    steps=("Install and report 1200",),
    pass_criteria=("After the Status for the alert, the server Gets the inventory in the same session",),
)
async def inventory_after_report(ctx: ServerCaseContext) -> None:
    await queue_operation(ctx, "install")
    transcript = await report(ctx)
    index = next(
        i
        for i, t in enumerate(transcript.turns)
        if any(getattr(c, "code", None) == AlertCode.GENERIC_ALERT for c in t.sent.commands)
    )
    check(
        bool(_inventory_gets(transcript, after_turn=index)),
        "an inventory Get after the alert",
        transcript.targets("Get"),
    )


@case(
    "SCOMO-SRV-INV-003",
    "Asked to, the server reads the inventory",
    rule=f"{SC} §8(f); ets.md SC-I-01",
    role=Role.SERVER,
    capability=SCOMO_INVENTORY_REFRESH,
    preconditions=("A trigger 'refresh_inventory'",),
    steps=("Fire the refresh_inventory trigger", "Run a session"),
    pass_criteria=("The session holds a Get under ./SCOMO/Inventory",),
)
async def inventory_refresh(ctx: ServerCaseContext) -> None:
    await ctx.drain()
    await ctx.trigger("refresh_inventory")
    transcript = await ctx.session()
    check(bool(_inventory_gets(transcript)), "an inventory Get", transcript.targets("Get"))


# ---------------------------------------------------------------------------------------- report variants


@case(
    "SCOMO-SRV-ALERT-006",
    "Report variants are accepted: the draft alert type, CDATA data, no Mark",
    rule=f"{SC} §6.2; ets.md SC-S-04",
    role=Role.SERVER,
    capability=SCOMO,
    preconditions=(TRIGGER, "A query trigger 'job'"),
    steps=(
        "Install; the device answers 202",
        "Report 1200 with Meta/Type org.openmobilealliance.dm.softwarecomponent.OperationComplete,",
        "the Data wrapped in CDATA, and no Mark",
    ),
    pass_criteria=("Status 200 for the alert", "The job succeeded with 1200"),
)
async def alert_variant(ctx: ServerCaseContext) -> None:
    from dataclasses import replace  # noqa: PLC0415

    from omadm.mo.scomo_codes import SCOMO_ALERT_TYPE_DRAFT  # noqa: PLC0415

    await queue_operation(ctx, "install")
    check(ctx.finish_jobs() == 1, "one job to report", len(ctx.device.jobs))
    variants = []
    for alert in ctx.device.pending_alerts:
        items = tuple(
            replace(
                item,
                meta=replace(item.meta, type=SCOMO_ALERT_TYPE_DRAFT, mark=None) if item.meta else None,
                data=f"<![CDATA[{item.data}]]>" if isinstance(item.data, str) else item.data,
            )
            for item in alert.items
        )
        variants.append(replace(alert, items=items))
    ctx.device.alerts = variants
    transcript = await ctx.session()
    statuses = alert_statuses(transcript)
    check(bool(statuses) and all(s is not None and s.code == 200 for _, s in statuses), "200", statuses)
    state, code = await job_state(ctx)
    check(state == "succeeded" and code == 1200, "succeeded with 1200", f"{state} {code}")


async def _report_code(ctx: ServerCaseContext, code: int) -> tuple[str, int | None]:
    await queue_operation(ctx, "install")
    transcript = await report(ctx, code)
    statuses = alert_statuses(transcript)
    check(
        all(s is not None and s.code == 200 for _, s in statuses), f"200 for the report of {code}", statuses
    )
    return await job_state(ctx)


@case(
    "SCOMO-SRV-ALERT-007",
    "A download-server error (15xx) is a failure with its code",
    rule=f"{SC} §5; ets.md SC-S-05",
    role=Role.SERVER,
    capability=SCOMO,
    preconditions=(TRIGGER, "A query trigger 'job'"),
    steps=("Install; the device reports 1501 (alternate download server unavailable)",),
    pass_criteria=("Status 200 for the alert", "The job failed with 1501"),
)
async def alert_server_error(ctx: ServerCaseContext) -> None:
    state, code = await _report_code(ctx, ScomoResult.ALTERNATE_DOWNLOAD_SERVER_UNAVAILABLE)
    check(state == "failed" and code == 1501, "failed with 1501", f"{state} {code}")


@case(
    "SCOMO-SRV-ALERT-008",
    "A vendor success code (1250-1299) is a success, kept verbatim",
    rule=f"{SC} §5; ets.md SC-S-05",
    role=Role.SERVER,
    capability=SCOMO,
    preconditions=(TRIGGER, "A query trigger 'job'"),
    steps=("Install; the device reports 1250 (a vendor-specific success)",),
    pass_criteria=("The job succeeded with result code 1250",),
)
async def alert_vendor_success(ctx: ServerCaseContext) -> None:
    state, code = await _report_code(ctx, 1250)
    check(state == "succeeded" and code == 1250, "succeeded with 1250", f"{state} {code}")
