"""SCOMO jobs as DM commands, and DM answers as job outcomes (no I/O).

A job is one operation for one device (install by URL, direct delivery, download only,
install a delivered package, update, remove, activate, deactivate, refresh the inventory).
``plan_job`` turns it into the command sequence of the SCOMO digest's flows (section 8):
``Add`` the ``Download/<X>`` or ``Delivered/<X>`` entry and its operation node, then ``Exec``
the primitive with the job's Correlator. Every command carries a tag ``job:<id>:<step>``
so that the Status coming back, possibly in another worker, names its job.

Only the Exec's Status moves the job: 202 accepted (the Generic Alert will finish it), 200
finished inside the session, anything else failed (with the DM status in the detail). The
Adds before it may answer 418 (already exists: a retried job), which is harmless; other
failures there show up as the Exec's own failure (typically 404).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from omadm.mo.scomo_codes import (
    SCOMO_ALERT_TYPES,
    DeliveredStatus,
    DeployedStatus,
    DownloadStatus,
    parse_scomo_alert_data,
)
from omadm.mo.scomo_reason import bound_reason, reason_of
from omadm.protocol.codes import AlertCode, ScomoResult, StatusCode
from omadm.protocol.messages import Add, Alert, Command, Exec, Get, Item, Meta, Target

from .inventory import inventory_uri, normalize_path
from .store.models import JobKind, JobState

__all__ = [
    "PACKAGE_CONTENT_TYPE",
    "AlertReport",
    "JobPlan",
    "Outcome",
    "exec_outcome",
    "outcome_of_reports",
    "parse_tag",
    "plan_job",
    "scomo_reports",
]

#: The MIME type of an omadm package, sent as Delivered/<X>/Data's Meta Type.
PACKAGE_CONTENT_TYPE = "application/vnd.omadm.package"

_PRIMITIVE = {
    JobKind.INSTALL: "DownloadInstall",
    JobKind.UPDATE: "DownloadInstall",
    JobKind.INSTALL_INACTIVE: "DownloadInstallInactive",
    JobKind.DOWNLOAD: "Download",
    JobKind.INSTALL_DIRECT: "Install",
    JobKind.INSTALL_DELIVERED: "Install",
    JobKind.REMOVE_DELIVERED: "Remove",
    JobKind.REMOVE: "Remove",
    JobKind.ACTIVATE: "Activate",
    JobKind.DEACTIVATE: "Deactivate",
}
_BY_URL = {JobKind.INSTALL, JobKind.UPDATE, JobKind.INSTALL_INACTIVE, JobKind.DOWNLOAD}
_ON_DEPLOYED = {JobKind.REMOVE, JobKind.ACTIVATE, JobKind.DEACTIVATE}


@dataclass(frozen=True)
class JobPlan:
    """What to queue in the session, in order, each with its tag; and the Exec's node."""

    commands: tuple[tuple[Command, str], ...]
    exec_uri: str  # "" for a refresh (a Get, no Exec)


@dataclass(frozen=True)
class Outcome:
    """Where a job goes next: its new state, the SCOMO result (if final) and why."""

    state: JobState
    result_code: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class AlertReport:
    """One Item of a SCOMO Generic Alert: which operation, on what, with which result."""

    correlator: str | None
    source: str
    target: str
    result: int
    identifier: str | None
    reason: str | None = None  # why it failed, when an omadm device said (omadm.mo.scomo_reason)


def tag(job_id: int, step: str) -> str:
    return f"job:{job_id}:{step}"


def parse_tag(value: str | None) -> tuple[int, str] | None:
    """``(job id, step)`` from a command tag, or None for commands that are not a job's."""
    if not value or not value.startswith("job:"):
        return None
    _, job_id, step = value.split(":", 2)
    try:
        return int(job_id), step
    except ValueError:
        return None


def entry_name(job_id: int) -> str:
    """The <X> of the Download or Delivered entry a job creates: unique, so never 418."""
    return f"omadm-{job_id}"


def plan_job(
    job_id: int,
    kind: JobKind,
    params: dict[str, Any],
    correlator: str,
    scomo_root: str,
    *,
    package_url: str | None = None,
    package_bytes: bytes | None = None,
) -> JobPlan:
    """The commands for one job.

    ``params`` by kind: by URL (install, update, install-inactive, download) ``pkg_id`` and
    ``name`` (optional ``description``, ``install_params``); ``package_url`` is the URL the
    device fetches (a signed artifact URL, a DD URL or an external URL). Direct delivery:
    ``pkg_id``, ``name``, ``package_bytes`` (the whole package; the session sends it as a
    Large Object when it exceeds the device's MaxMsgSize) and optional ``inactive``.
    Delivered entry: ``node`` (its <X>) and optional ``inactive``. Deployed entry: ``node``.

    Raises:
        ValueError: a parameter the kind needs is missing (the message names it).
    """
    root = normalize_path(scomo_root)
    if kind is JobKind.REFRESH_INVENTORY:
        get = Get("0", (Item(target=Target(inventory_uri(root))),))
        return JobPlan(((get, tag(job_id, "inventory")),), "")
    primitive = _PRIMITIVE[kind]
    if params.get("inactive") and primitive == "Install":
        primitive = "InstallInactive"
    commands: list[tuple[Command, str]] = []
    if kind in _BY_URL:
        if not package_url:
            raise ValueError(f"a {kind.value} job needs the package URL")
        node = f"{root}/Download/{entry_name(job_id)}"
        leaves = {
            "PkgID": _required(params, "pkg_id", kind),
            "Name": params.get("name") or params["pkg_id"],
            "PkgURL": package_url,
        }
        if params.get("description"):
            leaves["Description"] = str(params["description"])
        if params.get("install_params"):
            leaves["InstallParams"] = str(params["install_params"])
        commands += _create_entry(job_id, node, leaves, primitive)
    elif kind is JobKind.INSTALL_DIRECT:
        if not package_bytes:
            raise ValueError("an install-direct job needs the package bytes")
        node = f"{root}/Inventory/Delivered/{entry_name(job_id)}"
        leaves = {"PkgID": _required(params, "pkg_id", kind), "Name": params.get("name") or params["pkg_id"]}
        if params.get("install_params"):
            leaves["InstallParams"] = str(params["install_params"])
        commands += _create_entry(job_id, node, leaves, primitive, data=package_bytes)
    elif kind in (JobKind.INSTALL_DELIVERED, JobKind.REMOVE_DELIVERED):
        node = f"{root}/Inventory/Delivered/{_required(params, 'node', kind)}"
    elif kind in _ON_DEPLOYED:
        node = f"{root}/Inventory/Deployed/{_required(params, 'node', kind)}"
    else:  # pragma: no cover - every JobKind is handled above
        raise ValueError(f"unknown job kind {kind}")
    exec_uri = f"{node}/Operations/{primitive}"
    commands.append((Exec("0", (Item(target=Target(exec_uri)),), correlator=correlator), tag(job_id, "exec")))
    return JobPlan(tuple(commands), exec_uri)


def _required(params: dict[str, Any], key: str, kind: JobKind) -> str:
    value = params.get(key)
    if not value:
        raise ValueError(f"a {kind.value} job needs {key!r}")
    return str(value)


def _create_entry(
    job_id: int, node: str, leaves: dict[str, str], primitive: str, *, data: bytes | None = None
) -> list[tuple[Command, str]]:
    """Add the entry, its leaves, its Operations node and the one operation leaf to Exec.

    The server Adds the operation node itself (digest 2.2: devices differ on whether they
    create it, and 418 on it is harmless).
    """
    prep = tag(job_id, "prep")
    out: list[tuple[Command, str]] = [
        (Add("0", (Item(target=Target(node), meta=Meta(format="node")),)), prep)
    ]
    for leaf, value in leaves.items():
        out.append((Add("0", (Item(target=Target(f"{node}/{leaf}"), data=value),)), prep))
    if data is not None:
        meta = Meta(format="bin", type=PACKAGE_CONTENT_TYPE)
        out.append((Add("0", (Item(target=Target(f"{node}/Data"), meta=meta, data=data),)), prep))
    out.append((Add("0", (Item(target=Target(f"{node}/Operations"), meta=Meta(format="node")),)), prep))
    out.append((Add("0", (Item(target=Target(f"{node}/Operations/{primitive}")),)), prep))
    return out


def exec_outcome(code: int) -> Outcome:
    """The job's next state from the DM Status of its Exec (SCOMO digest 3.2)."""
    if code == StatusCode.ACCEPTED_FOR_PROCESSING:
        return Outcome(JobState.ACCEPTED, None, "accepted by the device (202); waiting for its report")
    if code == StatusCode.OK:
        return Outcome(JobState.SUCCEEDED, int(ScomoResult.SUCCESSFUL), "done inside the session (200)")
    return Outcome(JobState.FAILED, None, f"the device refused the Exec with DM status {code}")


def scomo_reports(alert: Alert) -> list[AlertReport]:
    """The SCOMO reports in a Generic Alert (1226; 1224 as Windows sends it), else []."""
    if alert.data not in (str(int(AlertCode.GENERIC_ALERT)), "1224"):
        return []
    reports = []
    for item in alert.items:
        mtype = _alert_type(item.meta.type if item.meta is not None else None)
        if mtype is not None and mtype not in SCOMO_ALERT_TYPES:
            continue
        data = item.data.decode("utf-8", "replace") if isinstance(item.data, bytes) else (item.data or "")
        try:
            result, identifier = parse_scomo_alert_data(data)
        except ValueError:
            continue
        reports.append(
            AlertReport(
                correlator=alert.correlator,
                source=normalize_path(item.source.loc_uri) if item.source else "",
                target=normalize_path(item.target.loc_uri) if item.target else "",
                result=result,
                identifier=identifier,
                reason=reason_of(item),
            )
        )
    return reports


def _alert_type(value: str | None) -> str | None:
    """The alert type without the ``Reversed-Domain-Name:`` prefix some devices add (pitfall 23)."""
    if value is None:
        return None
    value = value.strip()
    for prefix in ("Reversed-Domain-Name:", "Content-Type:"):
        if value[: len(prefix)].lower() == prefix.lower():
            value = value[len(prefix) :].strip()
    return value or None


def outcome_of_reports(reports: list[AlertReport]) -> Outcome:
    """A job's final outcome from its alert's Items: the first failure wins, else success.

    The detail says the result, each Item's code, then why, when the device said (an omadm
    device's reason: a hook's exit status and last output lines, the download or validation
    error), bounded again as a whole since every Item may carry one.
    """
    failed = [r for r in reports if not ScomoResult.is_success_code(r.result)]
    chosen = failed[0] if failed else reports[0]
    try:
        meaning = ScomoResult(chosen.result).description
    except ValueError:
        meaning = "vendor-specific result"
    parts = "; ".join(f"{r.identifier or r.target or r.source}: {r.result}" for r in reports)
    state = JobState.FAILED if failed else JobState.SUCCEEDED
    detail = f"{chosen.result} {meaning} ({parts})"
    reasons = list(dict.fromkeys(r.reason for r in (failed or reports) if r.reason))
    if reasons:
        detail += ": " + bound_reason("; ".join(reasons))
    return Outcome(state, chosen.result, detail)


# -- when no report comes: ask the device (Status polling) ---------------------------------

_DOWNLOAD_FAILURES = {
    20: ScomoResult.DOWNLOAD_FAILED,
    60: ScomoResult.INSTALL_FAILED,
    70: ScomoResult.INSTALL_FAILED,
}
_DELIVERED_FAILURES = {50: ScomoResult.INSTALL_FAILED, 60: ScomoResult.INSTALL_FAILED}
_ENTRY_FAILURES: dict[JobKind, dict[int, ScomoResult]] = {
    # Download/<X>/Status: 20 download failed; 60/70 install failed (digest 4.1)
    JobKind.INSTALL: _DOWNLOAD_FAILURES,
    JobKind.UPDATE: _DOWNLOAD_FAILURES,
    JobKind.INSTALL_INACTIVE: _DOWNLOAD_FAILURES,
    JobKind.DOWNLOAD: _DOWNLOAD_FAILURES,
    # Delivered/<X>/Status: 50/60 install failed, 20 remove failed (digest 4.2)
    JobKind.INSTALL_DIRECT: _DELIVERED_FAILURES,
    JobKind.INSTALL_DELIVERED: _DELIVERED_FAILURES,
    JobKind.REMOVE_DELIVERED: {20: ScomoResult.REMOVE_FAILED},
    # Deployed/<X>/Status (digest 4.3)
    JobKind.REMOVE: {20: ScomoResult.REMOVE_FAILED},
    JobKind.ACTIVATE: {40: ScomoResult.ACTIVATE_FAILED},
    JobKind.DEACTIVATE: {60: ScomoResult.DEACTIVATE_FAILED},
}
#: The table an entry's Status number is read in, per job kind (the words for the detail).
_STATUS_WORDS: dict[JobKind, type[IntEnum]] = {
    **dict.fromkeys(
        (JobKind.INSTALL, JobKind.UPDATE, JobKind.INSTALL_INACTIVE, JobKind.DOWNLOAD), DownloadStatus
    ),
    **dict.fromkeys(
        (JobKind.INSTALL_DIRECT, JobKind.INSTALL_DELIVERED, JobKind.REMOVE_DELIVERED), DeliveredStatus
    ),
    **dict.fromkeys((JobKind.REMOVE, JobKind.ACTIVATE, JobKind.DEACTIVATE), DeployedStatus),
}
_POLLED = " (inferred: no report arrived in time, so the server asked)"


def poll_uri(exec_uri: str) -> str:
    """The Status leaf of the entry an Exec was on (``.../<X>/Operations/Y`` -> ``.../<X>/Status``)."""
    return exec_uri.rsplit("/Operations/", 1)[0] + "/Status"


def outcome_from_status(kind: JobKind, status: int | None, *, entry_missing: bool) -> Outcome | None:
    """A job's outcome from its entry's Status (None: still undecided, keep waiting).

    Only failures can be read from a Status: 10 (Idle) means both "not started yet" and
    "finished" (digest 4.1). A removal whose entry is gone has succeeded.
    """
    if entry_missing:
        if kind in (JobKind.REMOVE, JobKind.REMOVE_DELIVERED):
            return Outcome(JobState.SUCCEEDED, int(ScomoResult.SUCCESSFUL), "the entry is gone" + _POLLED)
        return None
    result = _ENTRY_FAILURES.get(kind, {}).get(status) if status is not None else None
    if result is None or status is None:
        return None
    word = _STATUS_WORDS[kind](status).name.lower()  # a failure value of kind's own table
    return Outcome(
        JobState.FAILED,
        int(result),
        f"{int(result)} {ScomoResult(result).description}: Status {status} ({word}){_POLLED}",
    )


def outcome_from_inventory(
    kind: JobKind,
    params: dict[str, Any],
    job_id: int,
    deployed: dict[str, tuple[str, int | None, str]],
    delivered: set[str],
) -> Outcome | None:
    """A job's success read from the device's fresh inventory (None: undecided).

    ``deployed`` maps component ID to (version, State, PkgIDRef); ``delivered`` holds the
    Delivered <X> names. Used only for jobs whose report is overdue.
    """
    done = Outcome(JobState.SUCCEEDED, int(ScomoResult.SUCCESSFUL), "the inventory shows it done" + _POLLED)
    component = str(params.get("component_id") or "")
    if kind in (JobKind.INSTALL, JobKind.UPDATE, JobKind.INSTALL_INACTIVE, JobKind.INSTALL_DIRECT):
        pkg_id = str(params.get("pkg_id") or "")
        return done if pkg_id and any(ref == pkg_id for _, _, ref in deployed.values()) else None
    if kind is JobKind.DOWNLOAD:
        return done if entry_name(job_id) in delivered else None
    if kind is JobKind.REMOVE:
        return done if component and component not in deployed else None
    if kind in (JobKind.ACTIVATE, JobKind.DEACTIVATE):
        wanted = 20 if kind is JobKind.ACTIVATE else 10
        return done if component in deployed and deployed[component][1] == wanted else None
    return None
