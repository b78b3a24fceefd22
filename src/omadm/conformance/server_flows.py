"""SCOMO flows the SERVER cases share: queue an operation, let the device take it, report it.

Each flow starts from a quiet device (:meth:`ServerCaseContext.drain`), fires the trigger that
makes the server queue the operation, runs the session in which the server sends it (the
simulated device answers the Exec with 202 and keeps the job), and hands back what was sent.
The case then decides how the device reports (:meth:`ServerCaseContext.finish_jobs`) and
checks what the server did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omadm.mo.scomo_codes import DeployedState
from omadm.protocol.codes import AlertCode, ScomoResult
from omadm.protocol.messages import Alert, Exec, Status
from omadm.sim.scomo import SimJob

from .ics import declare
from .model import CaseFailed, Inconclusive, check
from .server_harness import ServerCaseContext, Transcript

__all__ = [
    "SCOMO",
    "SCOMO_ACTIVATION",
    "SCOMO_DOWNLOAD",
    "SCOMO_INSTALL_INACTIVE",
    "SCOMO_INVENTORY_REFRESH",
    "SCOMO_UPDATE",
    "Operation",
    "alert_statuses",
    "ensure_component",
    "job_state",
    "prepare_toggle",
    "queue_operation",
    "report",
]

SCOMO = declare("scomo", "The server manages software components with SCOMO (install by URL, inventory)")
SCOMO_ACTIVATION = declare("scomo-activation", "The server can Activate and Deactivate a deployed component")
SCOMO_DOWNLOAD = declare("scomo-download", "The server can send a Download without install")
SCOMO_INSTALL_INACTIVE = declare("scomo-install-inactive", "The server can install without activating")
SCOMO_UPDATE = declare("scomo-update", "The server can update a deployed component with a new package")
SCOMO_INVENTORY_REFRESH = declare(
    "scomo-inventory-refresh", "The server reads a device's inventory when an operator asks it to"
)

#: Job states, as servers word them, that mean done well / done badly.
_SUCCEEDED = {"succeeded", "success", "successful", "done", "completed", "complete", "ok"}
_FAILED = {"failed", "failure", "error", "errored"}


@dataclass
class Operation:
    """What the server sent for one queued operation."""

    transcript: Transcript
    execs: list[Exec]
    job: SimJob | None

    @property
    def exec(self) -> Exec:
        return self.execs[0]

    @property
    def exec_uri(self) -> str:
        item = self.exec.items[0] if self.exec.items else None
        return item.target.loc_uri if item is not None and item.target is not None else ""


async def queue_operation(
    ctx: ServerCaseContext, trigger: str, *, expect_job: bool = True, **values: str
) -> Operation:
    """Drain, fire ``trigger``, run the session that carries the server's Exec."""
    await ctx.drain()
    await ctx.trigger(trigger, **values)
    transcript = await ctx.session()
    execs = [c for c in transcript.received("Exec") if isinstance(c, Exec)]
    if not execs:
        raise CaseFailed(
            f"an Exec in the session after the {trigger!r} trigger",
            "; ".join(r.describe() for r in transcript.replies),
        )
    job = transcript.jobs[0] if transcript.jobs else None
    if expect_job and job is None:
        raise CaseFailed("an Exec the device accepts (202)", f"Exec on {execs[0].items[0].target}")
    return Operation(transcript, execs, job)


def alert_statuses(
    transcript: Transcript, code: int = AlertCode.GENERIC_ALERT
) -> list[tuple[Alert, Status | None]]:
    """Every alert of ``code`` the device sent, with the server's Status for it (None: none)."""
    out: list[tuple[Alert, Status | None]] = []
    for turn in transcript.turns:
        for command in turn.sent.commands:
            if isinstance(command, Alert) and command.code == code:
                found = turn.reply.status_for(turn.sent.header.msg_id, command.cmd_id)
                out.append((command, found[0] if found else None))
    return out


async def report(ctx: ServerCaseContext, result: int = ScomoResult.SUCCESSFUL) -> Transcript:
    """Finish the device's jobs with ``result`` and run the session that delivers the alert."""
    finished = ctx.finish_jobs(result)
    if not finished:
        raise Inconclusive("the device had no job to report")
    transcript = await ctx.session()
    check(bool(alert_statuses(transcript)), "the device's Generic Alert sent", "none")
    return transcript


async def job_state(ctx: ServerCaseContext) -> tuple[str, int | None]:
    """The server's view of the last job a trigger created: ("succeeded"|"failed"|other, code)."""
    values: dict[str, Any] = await ctx.trigger("job")
    state = str(values.get("state", "")).strip().lower()
    raw = values.get("result_code")
    try:
        code = int(raw) if raw not in (None, "", "None", "null") else None
    except (TypeError, ValueError):
        code = None
    if state in _SUCCEEDED:
        state = "succeeded"
    elif state in _FAILED:
        state = "failed"
    return state, code


async def inventory(ctx: ServerCaseContext) -> list[str]:
    """The deployed component IDs the server lists for the device."""
    values = await ctx.trigger("inventory")
    components = values.get("components") or []
    kinds = values.get("kinds") or ["deployed"] * len(components)
    if not isinstance(components, list):
        components = [components]
    return [str(c) for c, k in zip(components, kinds, strict=False) if str(k).lower() == "deployed"]


async def ensure_component(ctx: ServerCaseContext) -> str:
    """A component deployed on the device (and known to the server): installed now if none."""
    await ctx.drain()
    deployed = ctx.deployed()
    if deployed:
        return sorted(deployed)[0]
    await queue_operation(ctx, "install")
    await report(ctx)
    deployed = ctx.deployed()
    if not deployed:
        raise Inconclusive("the install the precondition needs left no component on the device")
    return sorted(deployed)[0]


async def prepare_toggle(ctx: ServerCaseContext, trigger: str, component: str) -> None:
    """Put the component in the state an Activate/Deactivate changes (a device answers an
    Activate of an active component with 200 at once, and no report follows)."""
    if trigger not in ("activate", "deactivate"):
        return
    node = ctx.deployed()[component]
    active = ctx.tree_value(f"{node}/State") == str(int(DeployedState.ACTIVE))
    if active == (trigger == "activate"):
        other = "deactivate" if trigger == "activate" else "activate"
        await queue_operation(ctx, other, component_id=component)
        await report(ctx)
