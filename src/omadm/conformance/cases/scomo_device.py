"""SCOMO-DEV-*: software component management on the device (SCOMO 1.0), omadm playing the server.

The runner serves its own test packages (:mod:`~omadm.conformance.device_packages`), all
installing the component ``org.omadm.conformance.probe`` (or, for the unsupported
environment, ``org.omadm.conformance.alien``), so every case can reach the state it needs
with the primitives themselves: each case first brings the component where it must be
(absent, inactive, active) and then checks one rule. Asynchronous outcomes are read from the
Generic Alert (1226) the device sends in a later session of its own; a case waits for it.

A device that checks package signatures must trust the runner's signing key
(``--signing-key``). Direct delivery, signature checks and the unsupported-environment
refusal are capabilities of the ICS.
"""

from __future__ import annotations

import base64
import secrets
import socket

from omadm.mo.scomo_codes import SCOMO_ALERT_TYPES, parse_scomo_alert_data
from omadm.protocol.messages import Alert, Command, Exec

from .. import ics
from ..device import DeviceContext
from ..device_packages import ALIEN_COMPONENT, COMPONENT
from ..device_steps import add, check_code, code_of, execute, node, result_value
from ..model import CaseFailed, Inconclusive, Role, case, check

SCOMO = "scomo.md"
DIRECT = ics.declare(
    "scomo-direct-delivery", "the device accepts a package delivered in the session (Delivered/<X>/Data)"
)
SIGNED = ics.declare(
    "scomo-signatures", "the device refuses a package whose signature it cannot validate (1407)"
)
ENV = ics.declare(
    "scomo-env-check", "the device refuses a component for an execution environment it lacks (1413)"
)
DLOTA = ics.declare("scomo-dlota", "the device follows a PkgURL to an OMA download descriptor (DLOTA 1.0)")
STRUCT = ics.declare("list-struct", "the client answers Get ?list=Struct and ?list=StructData")
_ROLE = Role.DEVICE

SUCCESS = 1200


def _root(ctx: DeviceContext) -> str:
    return ctx.options.scomo_root


def _download_node(ctx: DeviceContext) -> str:
    return f"{_root(ctx)}/Download"


def _delivered(ctx: DeviceContext) -> str:
    return f"{_root(ctx)}/Inventory/Delivered"


def _deployed(ctx: DeviceContext, component: str = COMPONENT) -> str:
    return f"{_root(ctx)}/Inventory/Deployed/{component}"


def op(node_path: str, primitive: str) -> str:
    return f"{node_path}/Operations/{primitive}"


def _name(ctx: DeviceContext) -> str:
    return f"{ctx.case.id.rsplit('-', 2)[-2].lower()}{ctx.case.id[-3:]}{secrets.token_hex(2)}"


def _download(
    ctx: DeviceContext, name: str, url: str, primitive: str, correlator: str | None
) -> list[Command]:
    """Add ``Download/<name>`` with PkgID, Name, PkgURL and the operation node; Exec ``primitive``."""
    base = f"{_download_node(ctx)}/{name}"
    return [
        node(base),
        add(f"{base}/PkgID", f"pkg-{name}"),
        add(f"{base}/Name", f"conformance package {name}"),
        add(f"{base}/PkgURL", url),
        node(f"{base}/Operations"),
        add(op(base, primitive)),
        execute(op(base, primitive), correlator),
    ]


async def _exec(ctx: DeviceContext, commands: list[Command], allowed: set[int] | None = None) -> int:
    """Send ``commands`` in one session; the last is the Exec; returns the Exec's Status code."""
    session = await ctx.session()
    statuses = await session.run(*commands)
    for command, status in zip(commands[:-1], statuses[:-1], strict=True):
        if code_of(status) not in (200, 418):
            raise CaseFailed(f"200 for the set-up {command.name}", f"Status {code_of(status)}")
    code = check_code(statuses[-1], allowed or {200, 202}, f"the Exec {commands[-1].name}")
    await session.close()
    return code


async def _report(ctx: DeviceContext, correlator: str, source: str | None = None) -> Alert:
    """The Generic Alert carrying ``correlator``, from the device's next session(s).

    A SCOMO report for the Exec'd ``source`` with another (or no) Correlator fails the case:
    the server could not match it to its job.
    """
    for _ in range(4):
        session = await ctx.next_session(timeout=60.0)
        await session.close()
        for alert in session.alerts:
            if alert.correlator == correlator:
                return alert
        for alert in session.alerts:
            item = alert.items[0] if alert.items else None
            if source is not None and item is not None and item.source and item.source.loc_uri == source:
                raise CaseFailed(
                    f"the report for {source} with Correlator {correlator}", f"Correlator {alert.correlator}"
                )
    raise Inconclusive(f"no Generic Alert with Correlator {correlator} within four device sessions")


def _outcome(alert: Alert) -> tuple[int, str | None]:
    check(alert.code == 1226, "Alert 1226 (Generic Alert)", alert.data)
    check(len(alert.items) >= 1, "an Item in the Generic Alert", "none")
    data = alert.items[0].data
    try:
        return parse_scomo_alert_data(data if isinstance(data, str) else (data or b"").decode())
    except ValueError as exc:
        raise CaseFailed("<ResultCode> and <Identifier> in the alert's Data", str(exc)) from None


async def _run_primitive(
    ctx: DeviceContext, commands: list[Command], correlator: str
) -> tuple[int, Alert | None]:
    """Exec; on 202 wait for the report. Returns (the result code, the alert when there was one)."""
    code = await _exec(ctx, commands)
    if code == 200:
        return SUCCESS, None
    last = commands[-1]
    source = (
        last.items[0].target.loc_uri
        if isinstance(last, Exec) and last.items and last.items[0].target
        else None
    )
    alert = await _report(ctx, correlator, source)
    result, _ = _outcome(alert)
    return result, alert


async def _values(ctx: DeviceContext, *uris: str) -> list[str | None]:
    """The values of ``uris`` read in one session (None for a node that is not there)."""
    session = await ctx.session()
    answers = await session.get_many(list(uris))
    await session.close()
    out: list[str | None] = []
    for status, results in answers:
        value = (
            results.items[0].data
            if code_of(status) == 200 and results is not None and results.items
            else None
        )
        out.append(value.decode() if isinstance(value, bytes) else value)
    return out


async def _value(ctx: DeviceContext, uri: str) -> str | None:
    (value,) = await _values(ctx, uri)
    return value


async def _expect(ctx: DeviceContext, *pairs: tuple[str, str, str]) -> None:
    """Fail unless each leaf ``uri`` of the ``(uri, wanted, what)`` pairs reads ``wanted``."""
    values = await _values(ctx, *(uri for uri, _, _ in pairs))
    for (_, wanted, what), value in zip(pairs, values, strict=True):
        check(value == wanted, what, value)


async def _present(ctx: DeviceContext, uri: str) -> bool:
    session = await ctx.session()
    status, _ = await session.get(uri)
    await session.close()
    return code_of(status) == 200


async def _install(
    ctx: DeviceContext, package: str = "probe-1", *, active: bool = True
) -> tuple[int, Alert | None]:
    name = _name(ctx)
    correlator = f"{ctx.case.id}-{secrets.token_hex(3)}"
    primitive = "DownloadInstall" if active else "DownloadInstallInactive"
    return await _run_primitive(
        ctx, _download(ctx, name, ctx.packages.url(package), primitive, correlator), correlator
    )


async def _absent(ctx: DeviceContext, component: str = COMPONENT) -> None:
    """Remove the component if an earlier case left it installed."""
    deployed = _deployed(ctx, component)
    if await _present(ctx, deployed):
        correlator = f"{ctx.case.id}-cleanup-{secrets.token_hex(3)}"
        result, _ = await _run_primitive(ctx, [execute(op(deployed, "Remove"), correlator)], correlator)
        if result != SUCCESS or await _present(ctx, deployed):
            raise Inconclusive(f"cannot remove {component} left by an earlier case (result {result})")


async def _state(ctx: DeviceContext, *, active: bool) -> None:
    """The component installed, in the wanted state."""
    deployed = _deployed(ctx)
    (state,) = await _values(ctx, f"{deployed}/State")
    if state is None:
        result, _ = await _install(ctx, active=active)
        if result != SUCCESS:
            raise Inconclusive(f"cannot install the probe component (result {result})")
        return
    if state != ("20" if active else "10"):
        primitive = "Activate" if active else "Deactivate"
        correlator = f"{ctx.case.id}-setup-{secrets.token_hex(3)}"
        result, _ = await _run_primitive(ctx, [execute(op(deployed, primitive), correlator)], correlator)
        if result != SUCCESS:
            raise Inconclusive(f"cannot {primitive} the probe component (result {result})")


def _check_report(
    alert: Alert | None, *, correlator: str, source: str, result: int, target: str | None = None
) -> None:
    check(alert is not None, "a Generic Alert for the asynchronous primitive", "a synchronous 200")
    assert alert is not None
    check(alert.correlator == correlator, f"Correlator {correlator}", alert.correlator)
    seen, _ = _outcome(alert)
    check(seen == result, f"ResultCode {result}", seen)
    item = alert.items[0]
    check(item.source is not None and item.source.loc_uri == source, f"Source {source}", item.source)
    if target is not None:
        check(item.target is not None and item.target.loc_uri == target, f"Target {target}", item.target)
    meta = item.meta
    check(
        meta is not None and meta.type in SCOMO_ALERT_TYPES,
        f"Meta/Type {SCOMO_ALERT_TYPES[0]}",
        meta.type if meta else None,
    )


# -- Download/<X> primitives ------------------------------------------------------------------


@case(
    "SCOMO-DEV-DL-001",
    "DownloadInstall by URL: 202, then a 1200 report; the component is Deployed and Active",
    rule=f"{SCOMO} §3.1",
    role=_ROLE,
    preconditions=("The probe component is not installed.", "The device trusts the runner's signing key."),
    steps=(
        "Add Download/<X> with PkgID, Name, PkgURL and Operations/DownloadInstall.",
        "Exec DownloadInstall with a Correlator.",
        "Wait for the Generic Alert.",
    ),
    pass_criteria=(
        "The Exec gets 202 (or 200).",
        "The alert has the Correlator, ResultCode 1200, Source the operation node, Target Deployed/<ID>.",
        "Deployed/<ID>/State is 20 (Active).",
    ),
)
async def dl_download_install(ctx: DeviceContext) -> None:
    await _absent(ctx)
    name, correlator = _name(ctx), f"{ctx.case.id}-{secrets.token_hex(3)}"
    result, alert = await _run_primitive(
        ctx, _download(ctx, name, ctx.packages.url("probe-1"), "DownloadInstall", correlator), correlator
    )
    if alert is not None:
        _check_report(
            alert,
            correlator=correlator,
            source=op(f"{_download_node(ctx)}/{name}", "DownloadInstall"),
            result=SUCCESS,
            target=_deployed(ctx),
        )
    check(result == SUCCESS, "ResultCode 1200", result)
    await _expect(ctx, (f"{_deployed(ctx)}/State", "20", "State 20 (Active)"))


@case(
    "SCOMO-DEV-DL-002",
    "DownloadInstallInactive: the component is Deployed and Inactive",
    rule=f"{SCOMO} §3.1",
    role=_ROLE,
    preconditions=("The probe component is not installed.",),
    steps=(
        "Exec DownloadInstallInactive on a new Download/<X>.",
        "Wait for the report; Get Deployed/<ID>/State.",
    ),
    pass_criteria=("ResultCode 1200.", "State 10 (Inactive)."),
)
async def dl_install_inactive(ctx: DeviceContext) -> None:
    await _absent(ctx)
    result, _ = await _install(ctx, active=False)
    check(result == SUCCESS, "ResultCode 1200", result)
    state = await _value(ctx, f"{_deployed(ctx)}/State")
    check(state == "10", "State 10 (Inactive)", state)


@case(
    "SCOMO-DEV-DL-003",
    "Download only: the package appears in Inventory/Delivered with State 10",
    rule=f"{SCOMO} §3.1",
    role=_ROLE,
    steps=("Exec Download on a new Download/<X>.", "Wait for the report; list Inventory/Delivered."),
    pass_criteria=("ResultCode 1200.", "A Delivered/<Y> with the PkgID and State 10 (Delivered)."),
)
async def dl_download_only(ctx: DeviceContext) -> None:
    name, correlator = _name(ctx), f"{ctx.case.id}-{secrets.token_hex(3)}"
    result, _ = await _run_primitive(
        ctx, _download(ctx, name, ctx.packages.url("probe-1"), "Download", correlator), correlator
    )
    check(result == SUCCESS, "ResultCode 1200", result)
    delivered = await _find_delivered(ctx, f"pkg-{name}")
    check(delivered is not None, f"a Delivered node with PkgID pkg-{name}", "none")
    assert delivered is not None
    state = await _value(ctx, f"{delivered}/State")
    check(state == "10", "Delivered State 10", state)


async def _find_delivered(ctx: DeviceContext, pkg_id: str) -> str | None:
    session = await ctx.session()
    status, results = await session.get(_delivered(ctx))
    names = [
        n for n in str(result_value(results, "Delivered") if code_of(status) == 200 else "").split("/") if n
    ]
    answers = await session.get_many([f"{_delivered(ctx)}/{n}/PkgID" for n in names])
    await session.close()
    for name, (_, value) in zip(names, answers, strict=True):
        if value is not None and value.items and value.items[0].data == pkg_id:
            return f"{_delivered(ctx)}/{name}"
    return None


@case(
    "SCOMO-DEV-DL-004",
    "Download/<X>/Status returns to 10 (Idle) after a successful DownloadInstall",
    rule=f"{SCOMO} §4.1",
    role=_ROLE,
    steps=("DownloadInstall from a new Download/<X>.", "Get Download/<X>/Status after the report."),
    pass_criteria=("Status 10.",),
)
async def dl_status_idle(ctx: DeviceContext) -> None:
    await _absent(ctx)
    name, correlator = _name(ctx), f"{ctx.case.id}-{secrets.token_hex(3)}"
    result, _ = await _run_primitive(
        ctx, _download(ctx, name, ctx.packages.url("probe-1"), "DownloadInstall", correlator), correlator
    )
    check(result == SUCCESS, "ResultCode 1200", result)
    status = await _value(ctx, f"{_download_node(ctx)}/{name}/Status")
    check(status == "10", "Download Status 10 (Idle)", status)


async def _failing_download(
    ctx: DeviceContext, url: str, expected: set[int], status_after: str | None
) -> None:
    name, correlator = _name(ctx), f"{ctx.case.id}-{secrets.token_hex(3)}"
    result, alert = await _run_primitive(
        ctx, _download(ctx, name, url, "DownloadInstall", correlator), correlator
    )
    shown = " or ".join(str(c) for c in sorted(expected))
    check(result in expected, f"ResultCode {shown}", result)
    if alert is not None:
        meta = alert.items[0].meta
        check(
            meta is None or meta.mark != "informational",
            "a Mark other than informational on failure",
            meta.mark if meta else None,
        )
    if status_after is not None:
        status = await _value(ctx, f"{_download_node(ctx)}/{name}/Status")
        check(status == status_after, f"Download Status {status_after}", status)


@case(
    "SCOMO-DEV-DL-005",
    "A PkgURL the server answers with 404: ResultCode 1402, Download Status 20",
    rule=f"{SCOMO} §5",
    role=_ROLE,
    steps=("DownloadInstall from a URL that does not exist on the runner.",),
    pass_criteria=("ResultCode 1402 (Download Failed).", "Download/<X>/Status 20 (Download Failed)."),
)
async def dl_not_found(ctx: DeviceContext) -> None:
    await _failing_download(ctx, ctx.packages.url("no-such-package"), {1402}, "20")


@case(
    "SCOMO-DEV-DL-006",
    "A PkgURL nobody answers: ResultCode 1501 (or 1402)",
    rule=f"{SCOMO} §5",
    role=_ROLE,
    steps=("DownloadInstall from a port where nothing listens.",),
    pass_criteria=("ResultCode 1501 (Alternate Download Server Unavailable) or 1402.",),
)
async def dl_unreachable(ctx: DeviceContext) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    host = ctx.packages.base_url.split("//", 1)[1].rsplit(":", 1)[0]
    await _failing_download(ctx, f"http://{host}:{port}/nothing.omp", {1501, 1402}, "20")


@case(
    "SCOMO-DEV-DL-007",
    "A package whose bytes changed after signing is refused: ResultCode 1407",
    rule=f"{SCOMO} §5",
    role=_ROLE,
    capability=SIGNED,
    steps=("DownloadInstall a package whose payload differs from its signed manifest.",),
    pass_criteria=("ResultCode 1407 (Failed Package Validation); nothing deployed.",),
)
async def dl_hash_mismatch(ctx: DeviceContext) -> None:
    await _absent(ctx)
    await _failing_download(ctx, ctx.packages.url("probe-tampered"), {1407}, None)
    check(not await _present(ctx, _deployed(ctx)), "nothing deployed", "the component deployed")


@case(
    "SCOMO-DEV-DL-008",
    "A package signed by an untrusted key is refused: ResultCode 1407",
    rule=f"{SCOMO} §5",
    role=_ROLE,
    capability=SIGNED,
    steps=("DownloadInstall a package signed by a key the device does not trust.",),
    pass_criteria=("ResultCode 1407; nothing deployed.",),
)
async def dl_untrusted(ctx: DeviceContext) -> None:
    await _absent(ctx)
    await _failing_download(ctx, ctx.packages.url("probe-untrusted"), {1407}, None)
    check(not await _present(ctx, _deployed(ctx)), "nothing deployed", "the component deployed")


@case(
    "SCOMO-DEV-DL-009",
    "A component for an execution environment the device lacks: ResultCode 1413",
    rule=f"{SCOMO} §5",
    role=_ROLE,
    capability=ENV,
    steps=("DownloadInstall a package whose component names an unknown EnvType.",),
    pass_criteria=("ResultCode 1413 (Unsupported Environment).",),
)
async def dl_unknown_env(ctx: DeviceContext) -> None:
    await _failing_download(ctx, ctx.packages.url("alien"), {1413}, None)
    check(not await _present(ctx, _deployed(ctx, ALIEN_COMPONENT)), "nothing deployed", "deployed")


@case(
    "SCOMO-DEV-DL-010",
    "An install step that fails: ResultCode 1405, the package kept (Download Status 60)",
    rule=f"{SCOMO} §4.1",
    role=_ROLE,
    steps=("DownloadInstall a package whose install step refuses.",),
    pass_criteria=("ResultCode 1405 (Install Failed).", "Download/<X>/Status 60 (or 70)."),
)
async def dl_install_fails(ctx: DeviceContext) -> None:
    await _absent(ctx)
    name, correlator = _name(ctx), f"{ctx.case.id}-{secrets.token_hex(3)}"
    result, _ = await _run_primitive(
        ctx,
        _download(ctx, name, ctx.packages.url("probe-refuses"), "DownloadInstall", correlator),
        correlator,
    )
    check(result == 1405, "ResultCode 1405", result)
    status = await _value(ctx, f"{_download_node(ctx)}/{name}/Status")
    check(status in ("60", "70"), "Download Status 60 or 70", status)
    check(not await _present(ctx, _deployed(ctx)), "nothing deployed", "the component deployed")


@case(
    "SCOMO-DEV-DL-011",
    "Exec without its preconditions (no PkgURL) is refused in the session",
    rule=f"{SCOMO} §3.2",
    role=_ROLE,
    steps=("Add Download/<X> with PkgID and the operation node but no PkgURL.", "Exec DownloadInstall."),
    pass_criteria=("The Exec gets a 4xx Status (no 202) and no report follows.",),
)
async def dl_no_url(ctx: DeviceContext) -> None:
    name = _name(ctx)
    base = f"{_download_node(ctx)}/{name}"
    commands = [
        node(base),
        add(f"{base}/PkgID", f"pkg-{name}"),
        node(f"{base}/Operations"),
        add(op(base, "DownloadInstall")),
    ]
    session = await ctx.session()
    await session.run(*commands)
    (status,) = await session.run(execute(op(base, "DownloadInstall"), f"{ctx.case.id}-x"))
    check(status is not None and 400 <= status.code < 500, "a 4xx Status for the Exec", code_of(status))
    await session.close()


@case(
    "SCOMO-DEV-DL-012",
    "A re-sent Exec of a finished job is reported again, not run again",
    rule=f"{SCOMO} §6.1",
    role=_ROLE,
    steps=(
        "DownloadInstall with Correlator C; wait for the report.",
        "Send the same Exec (same node, same Correlator) again.",
    ),
    pass_criteria=(
        "The second Exec gets 202 or 200.",
        "A report with C and ResultCode 1200 comes again; nothing is installed twice.",
    ),
)
async def dl_resent(ctx: DeviceContext) -> None:
    await _absent(ctx)
    name, correlator = _name(ctx), f"{ctx.case.id}-{secrets.token_hex(3)}"
    commands = _download(ctx, name, ctx.packages.url("probe-1"), "DownloadInstall", correlator)
    first, _ = await _run_primitive(ctx, commands, correlator)
    check(first == SUCCESS, "ResultCode 1200 the first time", first)
    again, _ = await _run_primitive(ctx, commands, correlator)
    check(again == SUCCESS, "ResultCode 1200 reported again", again)
    await _expect(ctx, (f"{_deployed(ctx)}/Version", "1.0.0", "Version 1.0.0"))


@case(
    "SCOMO-DEV-DL-013",
    "An update: DownloadInstall of a newer version over the deployed one",
    rule=f"{SCOMO} §8",
    role=_ROLE,
    steps=("Have version 1.0.0 deployed.", "DownloadInstall version 2.0.0 of the same component."),
    pass_criteria=("ResultCode 1200.", "Deployed/<ID>/Version is 2.0.0."),
)
async def dl_update(ctx: DeviceContext) -> None:
    await _absent(ctx)
    await _state(ctx, active=True)
    result, _ = await _install(ctx, "probe-2")
    check(result == SUCCESS, "ResultCode 1200", result)
    version = await _value(ctx, f"{_deployed(ctx)}/Version")
    check(version == "2.0.0", "Version 2.0.0", version)


@case(
    "SCOMO-DEV-DL-014",
    "A report for an Exec without Correlator carries none",
    rule="oma-dm-1.2.md §9",
    role=_ROLE,
    steps=("DownloadInstall without a Correlator.", "Wait for the device's next session."),
    pass_criteria=("The Generic Alert for the job has no Correlator.",),
)
async def dl_no_correlator(ctx: DeviceContext) -> None:
    await _absent(ctx)
    name = _name(ctx)
    code = await _exec(ctx, _download(ctx, name, ctx.packages.url("probe-1"), "DownloadInstall", None))
    if code == 200:
        return
    source = op(f"{_download_node(ctx)}/{name}", "DownloadInstall")
    for _ in range(4):
        session = await ctx.next_session(timeout=60.0)
        await session.close()
        mine = [
            a for a in session.alerts if a.items and a.items[0].source and a.items[0].source.loc_uri == source
        ]
        if mine:
            check(mine[0].correlator is None, "no Correlator", mine[0].correlator)
            return
    raise Inconclusive("no report for the job within four device sessions")


@case(
    "SCOMO-DEV-DL-015",
    "A package server that wants credentials the device lacks: ResultCode 1403",
    rule=f"{SCOMO} §5",
    role=_ROLE,
    steps=("DownloadInstall from a PkgURL that answers 401 (HTTP Basic) to every request.",),
    pass_criteria=("ResultCode 1403 (Alternate Download Authentication Failure).", "Download Status 20."),
)
async def dl_download_auth(ctx: DeviceContext) -> None:
    await _failing_download(ctx, ctx.packages.protected_url("probe-1"), {1403}, "20")


@case(
    "SCOMO-DEV-DL-016",
    "A package server that fails (500): ResultCode 1500",
    rule=f"{SCOMO} §5",
    role=_ROLE,
    steps=("DownloadInstall from a PkgURL whose server answers 500.",),
    pass_criteria=("ResultCode 1500 (Alternate Download Server Error).", "Download Status 20."),
)
async def dl_server_error(ctx: DeviceContext) -> None:
    await _failing_download(ctx, ctx.packages.failing_url("probe-1"), {1500}, "20")


@case(
    "SCOMO-DEV-DL-017",
    "PkgURL names a DLOTA download descriptor: the object is fetched, installed, and 900 notified",
    rule=f"{SCOMO} §7.3",
    role=_ROLE,
    capability=DLOTA,
    steps=(
        "DownloadInstall with PkgURL pointing at a DD (application/vnd.oma.dd+xml) whose objectURI is "
        "the package.",
        "Wait for the report.",
    ),
    pass_criteria=(
        "ResultCode 1200 and the component deployed.",
        "The device POSTs '900 Success' to the DD's installNotifyURI.",
    ),
)
async def dl_dlota(ctx: DeviceContext) -> None:
    await _absent(ctx)
    name, correlator = _name(ctx), f"{ctx.case.id}-{secrets.token_hex(3)}"
    before = len(ctx.packages.notifications)
    result, _ = await _run_primitive(
        ctx,
        _download(ctx, name, ctx.packages.descriptor_url("probe-1"), "DownloadInstall", correlator),
        correlator,
    )
    check(result == SUCCESS, "ResultCode 1200", result)
    check(await _present(ctx, _deployed(ctx)), "the component deployed", "not deployed")
    notified = [line for _, line in ctx.packages.notifications[before:]]
    check(any(line.startswith("900") for line in notified), "an install notification 900", notified)


# -- Inventory/Delivered primitives -------------------------------------------------------------


async def _delivered_package(ctx: DeviceContext) -> str:
    name, correlator = _name(ctx), f"{ctx.case.id}-dl-{secrets.token_hex(3)}"
    result, _ = await _run_primitive(
        ctx, _download(ctx, name, ctx.packages.url("probe-1"), "Download", correlator), correlator
    )
    if result != SUCCESS:
        raise Inconclusive(f"the Download the case needs failed ({result})")
    delivered = await _find_delivered(ctx, f"pkg-{name}")
    if delivered is None:
        raise Inconclusive("the downloaded package is not in Inventory/Delivered")
    return delivered


@case(
    "SCOMO-DEV-DLV-001",
    "Install from Inventory/Delivered: Active component, Delivered State 20",
    rule=f"{SCOMO} §3.1",
    role=_ROLE,
    steps=("Download a package (Download only).", "Exec Delivered/<X>/Operations/Install."),
    pass_criteria=("ResultCode 1200.", "Deployed/<ID>/State 20.", "Delivered/<X>/State 20 (Installed)."),
)
async def dlv_install(ctx: DeviceContext) -> None:
    await _absent(ctx)
    delivered = await _delivered_package(ctx)
    correlator = f"{ctx.case.id}-{secrets.token_hex(3)}"
    result, alert = await _run_primitive(ctx, [execute(op(delivered, "Install"), correlator)], correlator)
    if alert is not None:
        _check_report(
            alert,
            correlator=correlator,
            source=op(delivered, "Install"),
            result=SUCCESS,
            target=_deployed(ctx),
        )
    check(result == SUCCESS, "ResultCode 1200", result)
    await _expect(
        ctx,
        (f"{_deployed(ctx)}/State", "20", "Deployed State 20"),
        (f"{delivered}/State", "20", "Delivered State 20"),
    )


@case(
    "SCOMO-DEV-DLV-002",
    "InstallInactive from Inventory/Delivered: Inactive component",
    rule=f"{SCOMO} §3.1",
    role=_ROLE,
    steps=("Download a package.", "Exec Delivered/<X>/Operations/InstallInactive."),
    pass_criteria=("ResultCode 1200.", "Deployed/<ID>/State 10."),
)
async def dlv_install_inactive(ctx: DeviceContext) -> None:
    await _absent(ctx)
    delivered = await _delivered_package(ctx)
    correlator = f"{ctx.case.id}-{secrets.token_hex(3)}"
    result, _ = await _run_primitive(ctx, [execute(op(delivered, "InstallInactive"), correlator)], correlator)
    check(result == SUCCESS, "ResultCode 1200", result)
    await _expect(ctx, (f"{_deployed(ctx)}/State", "10", "Deployed State 10"))


@case(
    "SCOMO-DEV-DLV-003",
    "Remove of a delivered package deletes its Delivered node",
    rule=f"{SCOMO} §3.1",
    role=_ROLE,
    steps=("Download a package.", "Exec Delivered/<X>/Operations/Remove."),
    pass_criteria=("ResultCode 1200 (or a 200 Status).", "Delivered/<X> no longer exists."),
)
async def dlv_remove(ctx: DeviceContext) -> None:
    delivered = await _delivered_package(ctx)
    correlator = f"{ctx.case.id}-{secrets.token_hex(3)}"
    result, _ = await _run_primitive(ctx, [execute(op(delivered, "Remove"), correlator)], correlator)
    check(result == SUCCESS, "ResultCode 1200", result)
    check(not await _present(ctx, delivered), f"{delivered} gone", "still there")


@case(
    "SCOMO-DEV-DLV-004",
    "Direct delivery: the package in Delivered/<X>/Data, then Install",
    rule=f"{SCOMO} §7.1",
    role=_ROLE,
    capability=DIRECT,
    steps=("Add Delivered/<X> with PkgID, Name and Data (the package, b64).", "Exec Install."),
    pass_criteria=("ResultCode 1200.", "The component is deployed."),
)
async def dlv_direct(ctx: DeviceContext) -> None:
    await _absent(ctx)
    name, correlator = _name(ctx), f"{ctx.case.id}-{secrets.token_hex(3)}"
    base = f"{_delivered(ctx)}/{name}"
    package = base64.b64encode(ctx.packages.bytes_of("probe-1")).decode()
    commands: list[Command] = [
        node(base),
        add(f"{base}/PkgID", f"pkg-{name}"),
        add(f"{base}/Name", f"directly delivered {name}"),
        add(f"{base}/Data", package, fmt="b64", type="application/octet-stream"),
        node(f"{base}/Operations"),
        add(op(base, "Install")),
        execute(op(base, "Install"), correlator),
    ]
    result, _ = await _run_primitive(ctx, commands, correlator)
    check(result == SUCCESS, "ResultCode 1200", result)
    check(await _present(ctx, _deployed(ctx)), "the component deployed", "not deployed")


# -- Inventory/Deployed primitives --------------------------------------------------------------


async def _component_primitive(ctx: DeviceContext, primitive: str) -> tuple[int, Alert | None, str]:
    correlator = f"{ctx.case.id}-{secrets.token_hex(3)}"
    result, alert = await _run_primitive(
        ctx, [execute(op(_deployed(ctx), primitive), correlator)], correlator
    )
    if alert is not None:
        _check_report(alert, correlator=correlator, source=op(_deployed(ctx), primitive), result=result)
    return result, alert, correlator


@case(
    "SCOMO-DEV-DEP-001",
    "Activate an inactive component: 1200 and State 20",
    rule=f"{SCOMO} §4.3",
    role=_ROLE,
    preconditions=("The probe component is deployed and inactive.",),
    steps=("Exec Deployed/<ID>/Operations/Activate.",),
    pass_criteria=("ResultCode 1200 (or 200 in the session).", "State 20; Status 10."),
)
async def dep_activate(ctx: DeviceContext) -> None:
    await _state(ctx, active=False)
    result, _, _ = await _component_primitive(ctx, "Activate")
    check(result == SUCCESS, "ResultCode 1200", result)
    await _expect(
        ctx, (f"{_deployed(ctx)}/State", "20", "State 20"), (f"{_deployed(ctx)}/Status", "10", "Status 10")
    )


@case(
    "SCOMO-DEV-DEP-002",
    "Deactivate an active component: 1200 and State 10",
    rule=f"{SCOMO} §4.3",
    role=_ROLE,
    preconditions=("The probe component is deployed and active.",),
    steps=("Exec Deployed/<ID>/Operations/Deactivate.",),
    pass_criteria=("ResultCode 1200.", "State 10; Status 10."),
)
async def dep_deactivate(ctx: DeviceContext) -> None:
    await _state(ctx, active=True)
    result, _, _ = await _component_primitive(ctx, "Deactivate")
    check(result == SUCCESS, "ResultCode 1200", result)
    await _expect(
        ctx, (f"{_deployed(ctx)}/State", "10", "State 10"), (f"{_deployed(ctx)}/Status", "10", "Status 10")
    )


@case(
    "SCOMO-DEV-DEP-003",
    "Activate an active component changes nothing",
    rule=f"{SCOMO} §3.2",
    role=_ROLE,
    preconditions=("The probe component is deployed and active.",),
    steps=("Exec Activate again.",),
    pass_criteria=("200, 405, or 202 with a report; State stays 20.",),
)
async def dep_activate_again(ctx: DeviceContext) -> None:
    await _state(ctx, active=True)
    correlator = f"{ctx.case.id}-{secrets.token_hex(3)}"
    code = await _exec(ctx, [execute(op(_deployed(ctx), "Activate"), correlator)], {200, 202, 405})
    if code == 202:
        await _report(ctx, correlator)
    await _expect(ctx, (f"{_deployed(ctx)}/State", "20", "State 20"))


@case(
    "SCOMO-DEV-DEP-004",
    "Remove a deployed component: 1200, its Deployed node deleted",
    rule=f"{SCOMO} §3.1",
    role=_ROLE,
    preconditions=("The probe component is deployed.",),
    steps=("Exec Deployed/<ID>/Operations/Remove.",),
    pass_criteria=("ResultCode 1200 with Identifier the component ID.", "Deployed/<ID> gone."),
)
async def dep_remove(ctx: DeviceContext) -> None:
    await _state(ctx, active=False)
    result, alert, _ = await _component_primitive(ctx, "Remove")
    check(result == SUCCESS, "ResultCode 1200", result)
    if alert is not None:
        _, identifier = _outcome(alert)
        check(identifier == COMPONENT, f"Identifier {COMPONENT}", identifier)
    check(not await _present(ctx, _deployed(ctx)), "Deployed/<ID> gone", "still there")


@case(
    "SCOMO-DEV-DEP-005",
    "A primitive on an unknown component is 404",
    rule=f"{SCOMO} §3.2",
    role=_ROLE,
    steps=("Exec Deployed/<unknown>/Operations/Activate.",),
    pass_criteria=("Status 404; no report.",),
)
async def dep_unknown(ctx: DeviceContext) -> None:
    session = await ctx.session()
    (status,) = await session.run(
        execute(op(_deployed(ctx, "org.omadm.conformance.nobody"), "Activate"), "x")
    )
    check_code(status, 404, "Exec on an unknown component")
    await session.close()


@case(
    "SCOMO-DEV-DEP-006",
    "Deactivate, then Activate: the State follows each transition",
    rule=f"{SCOMO} §4.3",
    role=_ROLE,
    steps=("From Active: Deactivate, read State; Activate, read State.",),
    pass_criteria=("State 10 after Deactivate, 20 after Activate.",),
)
async def dep_transitions(ctx: DeviceContext) -> None:
    await _state(ctx, active=True)
    seen = []
    for primitive in ("Deactivate", "Activate"):
        result, _, _ = await _component_primitive(ctx, primitive)
        check(result == SUCCESS, f"ResultCode 1200 for {primitive}", result)
        seen.append(await _value(ctx, f"{_deployed(ctx)}/State"))
    check(seen == ["10", "20"], "States 10 then 20", seen)


# -- the inventory -----------------------------------------------------------------------------


@case(
    "SCOMO-DEV-INV-001",
    "The inventory: Deployed/<ID> has ID, Name, Version, State, Status, PkgIDRef and its operations",
    rule=f"{SCOMO} §2.4",
    role=_ROLE,
    preconditions=("The probe component is deployed.",),
    steps=("Get the leaves of Deployed/<ID>.",),
    pass_criteria=(
        "ID is the component ID; Version 1.0.0 or later; State 10 or 20; Status 10.",
        "Operations/Activate, Deactivate and Remove exist.",
    ),
)
async def inv_deployed(ctx: DeviceContext) -> None:
    await _state(ctx, active=True)
    deployed = _deployed(ctx)
    session = await ctx.session()
    leaves = [
        "ID",
        "Name",
        "Version",
        "State",
        "Status",
        "PkgIDRef",
        *(f"Operations/{p}" for p in ("Activate", "Deactivate", "Remove")),
    ]
    answers = await session.get_many([f"{deployed}/{leaf}" for leaf in leaves])
    await session.close()
    codes = {leaf: code_of(status) for leaf, (status, _) in zip(leaves, answers, strict=True)}
    missing = [leaf for leaf, code in codes.items() if code != 200]
    check(not missing, "every inventory node readable", f"missing {missing}")
    values = {
        leaf: (r.items[0].data if r is not None and r.items else None)
        for leaf, (_, r) in zip(leaves, answers, strict=True)
    }
    check(values["ID"] == COMPONENT, f"ID {COMPONENT}", values["ID"])
    check(values["State"] in ("10", "20"), "State 10 or 20", values["State"])
    check(values["Status"] == "10", "Status 10", values["Status"])


@case(
    "SCOMO-DEV-INV-002",
    "Get ?list=Struct of Inventory/Deployed lists the component",
    rule=f"{SCOMO} §8",
    role=_ROLE,
    capability=STRUCT,
    preconditions=("The probe component is deployed.",),
    steps=("Get Inventory/Deployed?list=Struct.",),
    pass_criteria=("An Item for Deployed/<ID> and its State leaf.",),
)
async def inv_struct(ctx: DeviceContext) -> None:
    await _state(ctx, active=True)
    session = await ctx.session()
    parent = _deployed(ctx).rsplit("/", 1)[0]
    status, results = await session.get(f"{parent}?list=Struct")
    check_code(status, 200, f"Get {parent}?list=Struct")
    uris = {i.source.loc_uri for i in (results.items if results else ()) if i.source is not None}
    check(
        {_deployed(ctx), f"{_deployed(ctx)}/State"} <= uris,
        "the component and its State listed",
        sorted(uris)[:10],
    )
    await session.close()


@case(
    "SCOMO-DEV-ALERT-001",
    "The asynchronous report: Alert 1226, SCOMO Type, Format, Correlator, Source, Identifier",
    rule=f"{SCOMO} §6.2",
    role=_ROLE,
    steps=("DownloadInstallInactive with a Correlator.", "Read the Generic Alert."),
    pass_criteria=(
        "Alert 1226 with one Item per component.",
        "Meta/Type urn:oma:at:scomo:1.0:OperationComplete; Source the operation node; Target Deployed/<ID>.",
        "Data <ResultCode>1200</ResultCode><Identifier>the component ID</Identifier>.",
    ),
)
async def alert_format(ctx: DeviceContext) -> None:
    await _absent(ctx)
    name, correlator = _name(ctx), f"{ctx.case.id}-{secrets.token_hex(3)}"
    code = await _exec(
        ctx, _download(ctx, name, ctx.packages.url("probe-1"), "DownloadInstallInactive", correlator)
    )
    check(code == 202, "202 for an asynchronous DownloadInstallInactive", code)
    alert = await _report(ctx, correlator, op(f"{_download_node(ctx)}/{name}", "DownloadInstallInactive"))
    _check_report(
        alert,
        correlator=correlator,
        source=op(f"{_download_node(ctx)}/{name}", "DownloadInstallInactive"),
        result=SUCCESS,
        target=_deployed(ctx),
    )
    _, identifier = _outcome(alert)
    check(identifier == COMPONENT, f"Identifier {COMPONENT}", identifier)
