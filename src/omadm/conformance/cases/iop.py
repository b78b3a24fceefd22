"""IOP-*: end-to-end SCOMO flows between a DM server under test and omadm's device.

Each scenario of ets.md §4.3 runs as the two sides would in the field: the server queues the
operation, the device takes it (and for a download, really fetches the package over HTTP),
reports, and the case checks both sides: the device's tree and what the server records
(through the ``job`` and ``inventory`` query triggers).
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from omadm.mo.scomo_codes import DeliveredState, DeployedState
from omadm.protocol.codes import ScomoResult
from omadm.protocol.messages import Add, Replace

from ..model import Inconclusive, Role, case, check
from ..server_flows import (
    SCOMO,
    SCOMO_ACTIVATION,
    SCOMO_DOWNLOAD,
    SCOMO_INSTALL_INACTIVE,
    SCOMO_INVENTORY_REFRESH,
    SCOMO_UPDATE,
    ensure_component,
    inventory,
    job_state,
    prepare_toggle,
    queue_operation,
    report,
)
from ..server_harness import ServerCaseContext

ETS = "ets.md §4.3"
SC = "scomo.md"
PRE = ("Triggers for the operation and the 'job' and 'inventory' queries", "A package the server can install")


async def _fetch_package(ctx: ServerCaseContext, op_transcript_urls: list[str]) -> bytes:
    check(bool(op_transcript_urls), "a PkgURL in the job", "none")
    url = op_transcript_urls[0]
    try:
        response = await ctx.target.http.get(url, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise Inconclusive(f"the package at {url} could not be fetched: {exc}") from None
    ctx.note(f"GET {url}: HTTP {response.status_code}, {len(response.content)} bytes")
    check(
        response.status_code == 200 and len(response.content) > 0,
        f"the package at {url}",
        f"HTTP {response.status_code}",
    )
    return response.content


def _urls(transcript_commands: Sequence[object]) -> list[str]:
    out = []
    for command in transcript_commands:
        if isinstance(command, Add | Replace):
            for item in command.items:
                if item.target is not None and item.target.loc_uri.endswith("/PkgURL") and item.data:
                    data = item.data.decode() if isinstance(item.data, bytes) else item.data
                    out.append(data)
    return out


async def _succeeded(ctx: ServerCaseContext) -> None:
    state, code = await job_state(ctx)
    check(state == "succeeded" and code in (1200, None), "the server's job succeeded", f"{state} {code}")


@case(
    "IOP-001",
    "Install by URL: the server's job, the download, the report and both inventories agree",
    rule=f"{ETS} SC-I-02; {SC} §8(a)",
    role=Role.SERVER,
    capability=SCOMO,
    preconditions=PRE,
    steps=(
        "Fire the install trigger; the device takes the DownloadInstall (202)",
        "The device fetches the PkgURL over HTTP, installs, reports 1200",
        "Read the job and the inventory from the server",
    ),
    pass_criteria=(
        "The package downloads (HTTP 200, not empty)",
        "The job succeeded; the server lists the component the device now has",
    ),
)
async def install_by_url(ctx: ServerCaseContext) -> None:
    before = set(ctx.deployed())
    op = await queue_operation(ctx, "install")
    await _fetch_package(ctx, _urls(op.transcript.received("Add", "Replace")))
    await report(ctx)
    await _succeeded(ctx)
    deployed = set(ctx.deployed())
    check(bool(deployed), "a component on the device", "none")
    listed = await inventory(ctx)
    missing = sorted(deployed - set(listed))
    check(not missing, f"the server lists {sorted(deployed)}", listed)
    del before


async def _toggle(ctx: ServerCaseContext, trigger: str, state: int) -> None:
    component = await ensure_component(ctx)
    node = ctx.deployed()[component]
    await prepare_toggle(ctx, trigger, component)
    await queue_operation(ctx, trigger, component_id=component)
    await report(ctx)
    await _succeeded(ctx)
    check(
        ctx.tree_value(f"{node}/State") == str(state),
        f"State {state} on the device",
        ctx.tree_value(f"{node}/State"),
    )


@case(
    "IOP-002",
    "Deactivate a deployed component",
    rule=f"{ETS} SC-I-02; {SC} §8(e), §4.3",
    role=Role.SERVER,
    capability=SCOMO_ACTIVATION,
    preconditions=PRE,
    steps=("Fire the deactivate trigger for the component", "The device deactivates it and reports"),
    pass_criteria=("The job succeeded; the component's State is 10 (inactive)",),
)
async def deactivate(ctx: ServerCaseContext) -> None:
    await _toggle(ctx, "deactivate", DeployedState.INACTIVE)


@case(
    "IOP-003",
    "Activate an inactive component",
    rule=f"{ETS} SC-I-02; {SC} §8(e), §4.3",
    role=Role.SERVER,
    capability=SCOMO_ACTIVATION,
    preconditions=PRE,
    steps=("Deactivate the component", "Fire the activate trigger", "The device activates it and reports"),
    pass_criteria=("The job succeeded; the component's State is 20 (active)",),
)
async def activate(ctx: ServerCaseContext) -> None:
    await _toggle(ctx, "activate", DeployedState.ACTIVE)


@case(
    "IOP-004",
    "Remove a deployed component: gone on both sides",
    rule=f"{ETS} SC-I-02; {SC} §8(d)",
    role=Role.SERVER,
    capability=SCOMO,
    preconditions=PRE,
    steps=("Fire the remove trigger for the component", "The device removes it and reports"),
    pass_criteria=("The job succeeded", "Neither the device nor the server's inventory lists the component"),
)
async def remove(ctx: ServerCaseContext) -> None:
    component = await ensure_component(ctx)
    await queue_operation(ctx, "remove", component_id=component)
    await report(ctx)
    await _succeeded(ctx)
    check(component not in ctx.deployed(), f"{component} gone from the device", sorted(ctx.deployed()))
    listed = await inventory(ctx)
    check(component not in listed, f"{component} gone from the server's inventory", listed)


@case(
    "IOP-005",
    "Update a deployed component with a new package",
    rule=f"{ETS} SC-I-05; {SC} §8(c)",
    role=Role.SERVER,
    capability=SCOMO_UPDATE,
    preconditions=PRE,
    steps=("Fire the update trigger for the component", "The device installs the package and reports"),
    pass_criteria=("A DownloadInstall was sent; the job succeeded; the component is still listed",),
)
async def update(ctx: ServerCaseContext) -> None:
    component = await ensure_component(ctx)
    op = await queue_operation(ctx, "update", component_id=component)
    check(op.exec_uri.endswith("/Operations/DownloadInstall"), "a DownloadInstall Exec", op.exec_uri)
    await report(ctx)
    await _succeeded(ctx)
    listed = await inventory(ctx)
    check(component in listed, f"{component} still listed", listed)


@case(
    "IOP-006",
    "A failed install is reported with its code and leaves the inventory as it was",
    rule=f"{ETS} SC-I-06; {SC} §5",
    role=Role.SERVER,
    capability=SCOMO,
    preconditions=PRE,
    steps=("Fire the install trigger", "The device fails the download with 1402 and reports it"),
    pass_criteria=("The job failed with result code 1402", "The server's inventory is unchanged"),
)
async def failed_install(ctx: ServerCaseContext) -> None:
    await ctx.drain()
    listed_before = sorted(await inventory(ctx))
    await queue_operation(ctx, "install")
    await report(ctx, ScomoResult.DOWNLOAD_FAILED)
    state, code = await job_state(ctx)
    check(state == "failed" and code == ScomoResult.DOWNLOAD_FAILED, "failed with 1402", f"{state} {code}")
    check(
        sorted(await inventory(ctx)) == listed_before,
        f"the inventory unchanged: {listed_before}",
        await inventory(ctx),
    )


@case(
    "IOP-007",
    "Inventory read on request: the server's list matches the device",
    rule=f"{ETS} SC-I-01; {SC} §8(f)",
    role=Role.SERVER,
    capability=SCOMO_INVENTORY_REFRESH,
    preconditions=PRE,
    steps=(
        "Make sure a component is deployed",
        "Fire refresh_inventory; run a session",
        "Read the server's inventory",
    ),
    pass_criteria=("The job succeeded; the server lists exactly the device's deployed components",),
)
async def inventory_read(ctx: ServerCaseContext) -> None:
    await ensure_component(ctx)
    await ctx.trigger("refresh_inventory")
    await ctx.session()
    await _succeeded(ctx)
    listed = await inventory(ctx)
    check(
        sorted(listed) == sorted(ctx.deployed()), f"the device's components {sorted(ctx.deployed())}", listed
    )


@case(
    "IOP-008",
    "Download now: the package ends under Inventory/Delivered",
    rule=f"{ETS} SC-I-03; {SC} §8(b)",
    role=Role.SERVER,
    capability=SCOMO_DOWNLOAD,
    preconditions=PRE,
    steps=("Fire the download trigger", "The device downloads and reports"),
    pass_criteria=("The job succeeded; the device holds a Delivered entry in State 10 (delivered)",),
)
async def download_only(ctx: ServerCaseContext) -> None:
    op = await queue_operation(ctx, "download")
    await _fetch_package(ctx, _urls(op.transcript.received("Add", "Replace")))
    await report(ctx)
    await _succeeded(ctx)
    entry = op.exec_uri.rsplit("/Operations/", 1)[0].rsplit("/", 1)[1]
    state = ctx.tree_value(f"./SCOMO/Inventory/Delivered/{entry}/State")
    check(state == str(int(DeliveredState.DELIVERED)), "Delivered State 10", state)


@case(
    "IOP-009",
    "Install without activation: the component arrives inactive",
    rule=f"{SC} §3.1, §4.3",
    role=Role.SERVER,
    capability=SCOMO_INSTALL_INACTIVE,
    preconditions=PRE,
    steps=("Fire the install_inactive trigger", "The device installs and reports"),
    pass_criteria=("The job succeeded; the component's State is 10 (inactive)",),
)
async def install_inactive(ctx: ServerCaseContext) -> None:
    op = await queue_operation(ctx, "install_inactive")
    await report(ctx)
    await _succeeded(ctx)
    leaves = {
        i.target.loc_uri: i.data
        for c in op.transcript.received("Add", "Replace")
        for i in getattr(c, "items", ())
        if i.target is not None
    }
    pkg_ids = [v for k, v in leaves.items() if k.endswith("/PkgID")]
    node = ctx.deployed().get(str(pkg_ids[0])) if pkg_ids else None
    check(node is not None, f"component {pkg_ids} deployed", sorted(ctx.deployed()))
    assert node is not None
    check(
        ctx.tree_value(f"{node}/State") == str(int(DeployedState.INACTIVE)),
        "State 10",
        ctx.tree_value(f"{node}/State"),
    )
