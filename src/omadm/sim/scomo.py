"""SCOMO for simulated devices: the agent's semantics over an in-memory tree, no disk.

What a simulated device does with an Exec on ``.../Operations/<Primitive>`` is what the real
agent (``omadm.agent.scomo.operations.ScomoService``) does, step for step, on the same
declarations: the SCOMO MO (:func:`omadm.mo.scomo.scomo_mo`), the Status/State numbers and
the OperationComplete alert Data (:mod:`omadm.mo.scomo_codes`), the result codes
(:class:`omadm.protocol.codes.ScomoResult`) and the primitive names
(:class:`omadm.agent.scomo.journal.Primitive`):

* at Exec time, inside the session: 404 for a missing entry, 412 for a missing PkgID/PkgURL
  (or Data for an Install on Delivered, or ID on Deployed), 405 while another operation runs
  on the same entry, 200 for Activate/Deactivate of a component already in that state, else
  202 and a queued job; a repeated Exec (same node and Correlator) is the same job, and one
  repeating a finished job has its report sent again;
* after the session, phase by phase (download, install, activate, deactivate, remove): the
  entry's Status goes to "progressing" when the phase starts and to Idle or the phase's
  failure value when it ends; a successful download records ``Inventory/Delivered/<X>``
  (State 10), a successful install records ``Inventory/Deployed/<component>`` and moves the
  Delivered State to 20, Remove deletes the entry;
* the job ends with a Generic Alert 1226 (``urn:oma:at:scomo:1.0:OperationComplete``, the
  Exec's Correlator, Source = the Exec's node, ``<ResultCode>``/``<Identifier>``), sent in the
  device's next session.

Why this is a separate module and not ``ScomoService`` itself: ``ScomoService`` is built
around an ``Agent`` (a data directory, a file lock, a SQLite journal shared with a SQLite
alert queue, a downloader writing ``.part`` files, installers that unpack archives and run
hooks). Running it per simulated device would cost two SQLite databases and a directory per
device: measured, the agent's tree store and alert queue alone (WAL, MOs mounted) take ~330 KB
of RSS and 6 file descriptors per device, eleven times the fleet's budget of 30 KB per idle
device at 10,000 devices (and 60,000 descriptors). And its decisions (the precondition
checks, which Status value each step writes, how the alert is built) are interleaved with the
journal and installer calls inside the same methods, so they cannot be called without them.

What a later refactor should share (both sides would then import it):

1. ``precondition(primitive, branch, values) -> (StatusCode, reason) | None``: the Exec-time
   checks of ``ScomoService._precondition`` / ``_already_done`` (here :meth:`SimScomo.accept`).
2. A table ``primitive -> phases`` with, per phase, the Status node written when it starts,
   on success and on failure (here :func:`phases_of` and ``_STATUS``); the agent spells these out
   in ``_run_download`` / ``_install_delivered`` / ``_run_deployed``.
3. ``operation_complete_alert(exec_uri, correlator, result, [(target, identifier)])``: the
   alert construction of ``ScomoService._finish`` (here :func:`operation_complete_alert`,
   written to produce the same Alert).
4. The Delivered/Deployed node writers (``_deliver`` and ``sync_inventory``'s per-component
   part), taking plain values instead of a ``VerifiedPackage`` / ``InstalledComponent``.

The journal, the downloader and the installers would stay agent-only; the simulator replaces
them with latencies and failure draws (``omadm.sim.profile``).

Where the simulator knowingly differs: what the agent finds out (a user's no, 1401; a full
disk, 1404/1406; a missing dependency, 1405) the simulator draws from the profile's failure
rates instead (with ``--downloads real`` a bad download, hash or signature, an EnvType
without installer and a refused downgrade are found out for real, as the agent does); and a
repeated Exec of a finished job is recognised among the last four jobs only (the agent's
journal keeps them all).

What the simulator cannot know without fetching the package (``--downloads skip``): the
manifest. A simulated install therefore deploys one component whose ID is the PkgID, whose
Name is the Download entry's Name, and whose Version is :data:`SIM_VERSION`. With
``--downloads real`` the package is fetched (``omadm.sim.download``) and its signed manifest
read: the install then deploys the manifest's components (ID, Name, Version, EnvType,
Description), refuses an EnvType the device has no installer for (1413; a simulated device
has the agent's built-in ``archive`` installer only) and a downgrade the package does not
allow (1405), and reports one alert Item per component, as the agent's ``_install`` does.
The package's bytes are never kept: a device keeps its :class:`~omadm.sim.download.PackageInfo`
(shared between all devices that fetched the same package) for as long as the Delivered
entry may still be installed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from omadm.agent.scomo.journal import Primitive
from omadm.mo.scomo_codes import (
    SCOMO_ALERT_TYPE,
    DeliveredState,
    DeliveredStatus,
    DeployedState,
    DeployedStatus,
    DownloadStatus,
    scomo_alert_data,
)
from omadm.mo.scomo_reason import with_reason
from omadm.package.errors import PackageError
from omadm.package.manifest import compare_versions
from omadm.protocol.codes import AlertCode, ScomoResult, StatusCode
from omadm.protocol.messages import Alert, Item, Meta, Source, Target
from omadm.protocol.session import Outcome
from omadm.tree.tree import DMTree
from omadm.tree.uri import escape_segment, parse_uri

if TYPE_CHECKING:
    from .download import PackageInfo, Partial

__all__ = [
    "GENERIC_FAILURES",
    "PHASE_FAILURES",
    "SIM_INSTALLERS",
    "SIM_VERSION",
    "Phase",
    "SimJob",
    "SimScomo",
    "operation_complete_alert",
    "operation_patterns",
    "phases_of",
]

#: The Version of a component a simulated install deploys (the manifest is never fetched).
SIM_VERSION = "0.0.0-sim"
#: The EnvType of simulated components.
SIM_ENV_TYPE = "sim"
#: The EnvTypes a simulated device can install with ``--downloads real``: the agent's built-in one.
SIM_INSTALLERS = frozenset({"archive"})


class Phase(StrEnum):
    """One timed step of a SCOMO operation; each has a latency and failure codes in a profile."""

    DOWNLOAD = "download"
    INSTALL = "install"
    ACTIVATE = "activate"
    DEACTIVATE = "deactivate"
    REMOVE = "remove"


#: The result codes a phase can end with when it fails (SCOMO digest 5), in draw order.
PHASE_FAILURES: dict[Phase, tuple[int, ...]] = {
    Phase.DOWNLOAD: (
        ScomoResult.DOWNLOAD_FAILED,
        ScomoResult.ALTERNATE_DOWNLOAD_AUTHENTICATION_FAILURE,
        ScomoResult.DOWNLOAD_FAILED_OUT_OF_MEMORY,
        ScomoResult.FAILED_PACKAGE_VALIDATION,
        ScomoResult.ALTERNATE_DOWNLOAD_SERVER_ERROR,
        ScomoResult.ALTERNATE_DOWNLOAD_SERVER_UNAVAILABLE,
    ),
    Phase.INSTALL: (
        ScomoResult.INSTALL_FAILED,
        ScomoResult.INSTALL_FAILED_OUT_OF_MEMORY,
        ScomoResult.UNSUPPORTED_ENVIRONMENT,
    ),
    Phase.ACTIVATE: (ScomoResult.ACTIVATE_FAILED,),
    Phase.DEACTIVATE: (ScomoResult.DEACTIVATE_FAILED,),
    Phase.REMOVE: (ScomoResult.REMOVE_FAILED,),
}
#: Codes any operation can end with; drawn once, in its first phase (the user said no, the
#: device lacks the primitive, something nobody classified).
GENERIC_FAILURES: tuple[int, ...] = (
    ScomoResult.USER_CANCELLED,
    ScomoResult.NOT_IMPLEMENTED,
    ScomoResult.UNDEFINED_ERROR,
)


@dataclass(slots=True)
class SimJob:
    """One accepted SCOMO operation, waiting for (or in) its phases; small on purpose."""

    primitive: Primitive
    node: str  # the Download/<X>, Delivered/<X> or Deployed/<X> entry
    exec_uri: str  # Operations/<Primitive>: the alert's Source
    correlator: str | None
    server_id: str
    phase: int = 0  # index into phases_of(self)
    started: bool = False  # the runner has begun its first phase
    # -- what the runner keeps while the job runs (see omadm.sim.run) --
    epoch: int = 0  # bumped by a power cut: timers of the phase it interrupted are stale
    cut_phase: int = -1  # the phase a power cut will interrupt (-1: none) ...
    cut_at: float = 0.0  # ... after this fraction of it
    remaining: float | None = None  # seconds left of a simulated download a power cut interrupted
    url: str = ""  # the PkgURL (--downloads real)
    partial: Partial | None = None  # the download so far (--downloads real)
    package: PackageInfo | None = None  # the package's manifest, once downloaded or read


def phases_of(job: SimJob) -> tuple[Phase, ...]:
    """The phases of a job, in order (depends on the primitive and on the entry's branch)."""
    branch = _branch(job.node)
    p = job.primitive
    if branch == "Download":
        return (Phase.DOWNLOAD,) if p is Primitive.DOWNLOAD else (Phase.DOWNLOAD, Phase.INSTALL)
    if p is Primitive.REMOVE:
        return (Phase.REMOVE,)
    if p is Primitive.ACTIVATE:
        return (Phase.ACTIVATE,)
    if p is Primitive.DEACTIVATE:
        return (Phase.DEACTIVATE,)
    return (Phase.INSTALL,)


def operation_complete_alert(
    exec_uri: str,
    correlator: str | None,
    result: int,
    items: list[tuple[str | None, str]],
    reason: str | None = None,
) -> Alert:
    """The Generic Alert 1226 reporting a finished primitive, built as the agent's ``_finish`` does.

    ``items`` is ``[(target node or None, identifier)]``: one alert Item per component. A
    failure's ``reason`` rides in the first Item as the agent sends it (:mod:`omadm.mo.scomo_reason`).
    """
    success = ScomoResult.is_success_code(int(result))
    meta = Meta(type=SCOMO_ALERT_TYPE, format="xml", mark="informational" if success else "critical")
    alert_items = [
        Item(
            source=Source(exec_uri),
            target=Target(target) if target else None,
            meta=meta,
            data=scomo_alert_data(int(result), identifier),
        )
        for target, identifier in items
    ]
    if reason and not success and alert_items:
        alert_items[0] = with_reason(alert_items[0], reason)
    return Alert("0", data=str(int(AlertCode.GENERIC_ALERT)), correlator=correlator, items=tuple(alert_items))


@functools.cache
def operation_patterns(root: str) -> tuple[str, ...]:
    """The operation node patterns a tree routes to :meth:`SimScomo.accept` (as the agent's)."""
    out: list[str] = []
    for branch, ops in (
        ("Download", _DOWNLOADS),
        ("Inventory/Delivered", _DELIVERED_OPS),
        ("Inventory/Deployed", _DEPLOYED_OPS),
    ):
        out += [f"{root}/{branch}/*/Operations/{op.value}" for op in sorted(ops)]
    return tuple(out)


def _branch(node: str) -> str:
    """``Download``, ``Inventory/Delivered`` or ``Inventory/Deployed`` for an entry node."""
    parts = node.split("/")
    return "/".join(parts[2:-1])


#: Status node values per phase: (progressing, failed) for the entry's branch.
_STATUS: dict[tuple[str, Phase], tuple[int, int]] = {
    ("Download", Phase.DOWNLOAD): (DownloadStatus.DOWNLOAD_PROGRESSING, DownloadStatus.DOWNLOAD_FAILED),
    ("Download", Phase.INSTALL): (
        DownloadStatus.INSTALL_PROGRESSING,
        DownloadStatus.INSTALL_FAILED_WITH_DATA,
    ),
    ("Inventory/Delivered", Phase.INSTALL): (
        DeliveredStatus.INSTALL_PROGRESSING,
        DeliveredStatus.INSTALL_FAILED_WITH_DATA,
    ),
    ("Inventory/Delivered", Phase.REMOVE): (
        DeliveredStatus.REMOVE_PROGRESSING,
        DeliveredStatus.REMOVE_FAILED,
    ),
    ("Inventory/Deployed", Phase.ACTIVATE): (
        DeployedStatus.ACTIVATE_PROGRESSING,
        DeployedStatus.ACTIVATE_FAILED,
    ),
    ("Inventory/Deployed", Phase.DEACTIVATE): (
        DeployedStatus.DEACTIVATE_PROGRESSING,
        DeployedStatus.DEACTIVATE_FAILED,
    ),
    ("Inventory/Deployed", Phase.REMOVE): (DeployedStatus.REMOVE_PROGRESSING, DeployedStatus.REMOVE_FAILED),
}

_DOWNLOADS = {Primitive.DOWNLOAD, Primitive.DOWNLOAD_INSTALL, Primitive.DOWNLOAD_INSTALL_INACTIVE}
_DELIVERED_OPS = {Primitive.INSTALL, Primitive.INSTALL_INACTIVE, Primitive.REMOVE}
_DEPLOYED_OPS = {Primitive.ACTIVATE, Primitive.DEACTIVATE, Primitive.REMOVE}
_ACTIVE = {Primitive.DOWNLOAD_INSTALL, Primitive.INSTALL}
#: Finished jobs remembered per device, so a repeated Exec is reported again, not redone.
_REMEMBERED = 4


class SimScomo:
    """The SCOMO state of one simulated device that is not in its tree: jobs and reports.

    The tree (built only while a session or a job step runs, see ``omadm.sim.device``) holds
    the SCOMO nodes; this object holds the accepted jobs and the finished ones a repeated
    Exec may ask about. Alerts are handed to ``report`` (the device's pending alert list).
    """

    __slots__ = ("_finished", "jobs", "packages", "report", "root")

    def __init__(self, root: str, report: Callable[[Alert], None]) -> None:
        self.root = root
        self.report = report
        self.jobs: list[SimJob] = []
        #: Delivered entry -> its package's manifest (``--downloads real`` only; None: none yet).
        self.packages: dict[str, PackageInfo] | None = None
        #: (Exec URI, Correlator, result, alert items) of the last finished jobs: values, not
        #: Alert objects, which are several times bigger and rebuilt only for a repeated Exec.
        self._finished: list[tuple[str, str | None, int, tuple[tuple[str | None, str], ...]]] = []

    # -- inside a session: the Exec ---------------------------------------------------------

    def accept(self, tree: DMTree, path: str, correlator: str | None, server_id: str) -> Outcome:
        """Check an Exec's preconditions and queue the job (202), or say why not (the agent's checks)."""
        uri = parse_uri(path)
        assert uri.parent is not None and uri.parent.parent is not None
        primitive = Primitive(uri.name)
        node = uri.parent.parent.path
        if any(j.exec_uri == path and j.correlator == correlator for j in self.jobs):
            return Outcome(StatusCode.ACCEPTED_FOR_PROCESSING, target_ref=path)
        for exec_uri, corr, result, items in self._finished:
            if exec_uri == path and corr == correlator:  # the server lost our report: send it again
                self.report(operation_complete_alert(exec_uri, corr, result, list(items)))
                return Outcome(StatusCode.ACCEPTED_FOR_PROCESSING, target_ref=path)
        problem = self._precondition(tree, primitive, node)
        if problem is not None:
            return Outcome(problem, target_ref=path)
        if any(j.node == node for j in self.jobs):
            return Outcome(StatusCode.COMMAND_NOT_ALLOWED, target_ref=path)
        if primitive in (Primitive.ACTIVATE, Primitive.DEACTIVATE) and _branch(node) == "Inventory/Deployed":
            active = _value(tree, f"{node}/State") == str(int(DeployedState.ACTIVE))
            if active == (primitive is Primitive.ACTIVATE):
                return Outcome(StatusCode.OK, target_ref=path)
        self.jobs.append(SimJob(primitive, node, path, correlator, server_id))
        return Outcome(StatusCode.ACCEPTED_FOR_PROCESSING, target_ref=path)

    def _precondition(self, tree: DMTree, primitive: Primitive, node: str) -> int | None:
        branch = _branch(node)
        if tree.system_get(node) is None:
            return StatusCode.NOT_FOUND
        if branch == "Download":
            if not _value(tree, f"{node}/PkgID") or not _value(tree, f"{node}/PkgURL"):
                return StatusCode.INCOMPLETE_COMMAND
        elif branch == "Inventory/Delivered":
            if not _value(tree, f"{node}/PkgID"):
                return StatusCode.INCOMPLETE_COMMAND
            delivered = tree.system_get(f"{node}/State") is not None  # came through a Download
            if (
                primitive is not Primitive.REMOVE
                and not delivered
                and tree.system_get(f"{node}/Data") is None
            ):
                return StatusCode.INCOMPLETE_COMMAND
        elif branch == "Inventory/Deployed" and not _value(tree, f"{node}/ID"):
            return StatusCode.INCOMPLETE_COMMAND
        return None

    # -- after the session: the phases --------------------------------------------------------

    def begin(self, tree: DMTree, job: SimJob) -> Phase:
        """Start the job's current phase: its entry's Status says "progressing"."""
        phase = phases_of(job)[job.phase]
        branch = _branch(job.node)
        if tree.system_get(job.node) is not None:
            _status(tree, f"{job.node}/Status", _STATUS[(branch, phase)][0])
            if branch == "Inventory/Delivered" and tree.system_get(f"{job.node}/State") is None:
                _status(tree, f"{job.node}/State", DeliveredState.DELIVERED)  # a DP the server delivered
        return phase

    def end(self, tree: DMTree, job: SimJob, result: int) -> bool:
        """End the current phase with ``result``; True when the job is over (its alert queued)."""
        phase = phases_of(job)[job.phase]
        branch = _branch(job.node)
        node = job.node
        pkg_id = _value(tree, f"{node}/PkgID")
        if tree.system_get(node) is None and phase is not Phase.REMOVE:
            # The server deleted the entry while we worked: the agent's "bug" path (1412).
            why = f"the entry {node} was deleted while the {phase} ran (simulated device)"
            self._finish(job, ScomoResult.UNDEFINED_ERROR, [(None, pkg_id or node)], why)
            return True
        if not ScomoResult.is_success_code(result):
            _status(tree, f"{node}/Status", _STATUS[(branch, phase)][1])
            identifier = _value(tree, f"{node}/ID") or pkg_id or node
            self._finish(job, result, [(None, identifier)], _failure_reason(phase, result))
            return True
        if phase is Phase.DOWNLOAD:
            delivered = self._deliver(tree, node, job.package)
            if job.primitive is Primitive.DOWNLOAD:
                _status(tree, f"{node}/Status", DownloadStatus.IDLE)
                self._finish(job, result, [(delivered, pkg_id)])
                return True
            _status(tree, f"{node}/Status", DownloadStatus.DOWNLOAD_COMPLETE)
            job.phase += 1
            return False
        if phase is Phase.INSTALL:
            delivered = node if branch == "Inventory/Delivered" else self._delivered_node(node)
            package = job.package or (self.packages or {}).get(delivered)
            items: list[tuple[str | None, str]]
            if package is None:
                items = [self._deploy(tree, node, active=job.primitive in _ACTIVE)]
            else:
                refused = self._check_components(tree, node, package)
                if refused is not None:
                    _status(tree, f"{node}/Status", _STATUS[(branch, phase)][1])
                    why = (
                        "no installer for the package's EnvType (simulated device)"
                        if refused == ScomoResult.UNSUPPORTED_ENVIRONMENT
                        else "the package would downgrade an installed component (simulated device)"
                    )
                    self._finish(job, refused, [(None, pkg_id or package.id)], why)
                    return True
                items = self._deploy_package(tree, node, pkg_id or package.id, package, job)
            _status(tree, f"{node}/Status", DownloadStatus.IDLE)  # 10 in all three tables
            if tree.system_get(delivered) is not None:
                _status(tree, f"{delivered}/State", DeliveredState.INSTALLED)
            if branch == "Inventory/Delivered" and tree.system_get(f"{node}/Data") is not None:
                tree.system_delete(f"{node}/Data")  # the agent keeps the payload as a file, not a node
            self._finish(job, result, items)
            return True
        identifier = _value(tree, f"{node}/ID") or pkg_id or node
        if phase is Phase.REMOVE:
            tree.system_delete(node)
        else:
            state = DeployedState.ACTIVE if phase is Phase.ACTIVATE else DeployedState.INACTIVE
            _status(tree, f"{node}/State", state)
            _status(tree, f"{node}/Status", DeployedStatus.IDLE)
        self._finish(job, result, [(None, identifier)])
        return True

    def _delivered_node(self, download_node: str) -> str:
        return f"{self.root}/Inventory/Delivered/{download_node.rsplit('/', 1)[1]}"

    def _deliver(self, tree: DMTree, download_node: str, package: PackageInfo | None = None) -> str:
        """Record a downloaded package under Inventory/Delivered (the agent's ``_deliver``).

        With a real download the manifest fills what the Download entry leaves empty, and the
        package is remembered for a later Install on the Delivered entry.
        """
        node = self._delivered_node(download_node)
        if tree.system_get(node) is None:
            tree.system_add_interior(node)
        pkg_id = _value(tree, f"{download_node}/PkgID") or (package.id if package else "")
        tree.system_set(f"{node}/PkgID", pkg_id)
        tree.system_set(
            f"{node}/Name", _value(tree, f"{download_node}/Name") or (package.name if package else pkg_id)
        )
        for leaf in ("Description", "InstallParams"):
            value = _value(tree, f"{download_node}/{leaf}")
            if not value and leaf == "Description" and package is not None:
                value = package.description
            if value:
                tree.system_set(f"{node}/{leaf}", value)
        if package is not None:
            self.remember(node, package)
        _status(tree, f"{node}/Status", DeliveredStatus.IDLE)
        _status(tree, f"{node}/State", DeliveredState.DELIVERED)
        for op in ("Install", "InstallInactive", "Remove"):
            if tree.system_get(f"{node}/Operations/{op}") is None:
                tree.system_set(f"{node}/Operations/{op}", None, format="null")
        return node

    def _deploy(self, tree: DMTree, entry: str, *, active: bool) -> tuple[str, str]:
        """Record the installed component under Inventory/Deployed (``sync_inventory``'s writes)."""
        pkg_id = _value(tree, f"{entry}/PkgID")
        component = pkg_id or entry.rsplit("/", 1)[1]
        node = f"{self.root}/Inventory/Deployed/{escape_segment(component)}"
        if tree.system_get(node) is None:
            tree.system_add_interior(node)
        tree.system_set(f"{node}/ID", component)
        tree.system_set(f"{node}/Name", _value(tree, f"{entry}/Name") or component)
        tree.system_set(f"{node}/Version", SIM_VERSION)
        tree.system_set(f"{node}/PkgIDRef", pkg_id or "-1")
        tree.system_set(f"{node}/EnvType", SIM_ENV_TYPE)
        _status(tree, f"{node}/State", DeployedState.ACTIVE if active else DeployedState.INACTIVE)
        _status(tree, f"{node}/Status", DeployedStatus.IDLE)
        for op in ("Activate", "Deactivate", "Remove"):
            if tree.system_get(f"{node}/Operations/{op}") is None:
                tree.system_set(f"{node}/Operations/{op}", None, format="null")
        return node, component

    def remember(self, delivered_node: str, package: PackageInfo) -> None:
        """Keep what a Delivered entry's package installs (the agent keeps the file)."""
        if self.packages is None:
            self.packages = {}
        self.packages[delivered_node] = package

    def _check_components(self, tree: DMTree, entry: str, package: PackageInfo) -> int | None:
        """The agent's ``_check_components``: an EnvType without installer, or a refused downgrade."""
        params = _value(tree, f"{entry}/InstallParams")
        downgrade_ok = package.allow_downgrade or "allow-downgrade" in params
        for component in package.components:
            if component.env_type not in SIM_INSTALLERS:
                return ScomoResult.UNSUPPORTED_ENVIRONMENT
            node = self._deployed_of(tree, component.id)
            old = _value(tree, f"{node}/Version") if node is not None else ""
            if old and not downgrade_ok and _older(component.version, old):
                return ScomoResult.INSTALL_FAILED
        return None

    def _deployed_of(self, tree: DMTree, component_id: str) -> str | None:
        base = f"{self.root}/Inventory/Deployed"
        for record in tree.store.children(base):
            if _value(tree, f"{record.path}/ID") == component_id:
                return record.path
        return None

    def _deploy_package(
        self, tree: DMTree, entry: str, pkg_id: str, package: PackageInfo, job: SimJob
    ) -> list[tuple[str | None, str]]:
        """Record every component of a package under Inventory/Deployed; one alert Item each."""
        active = job.primitive in _ACTIVE
        items: list[tuple[str | None, str]] = []
        for component in package.components:
            node = self._deployed_of(tree, component.id)
            if node is None:
                node = f"{self.root}/Inventory/Deployed/{escape_segment(component.id)}"
                tree.system_add_interior(node)
            tree.system_set(f"{node}/ID", component.id)
            tree.system_set(f"{node}/Name", component.name)
            tree.system_set(f"{node}/Version", component.version)
            tree.system_set(f"{node}/PkgIDRef", pkg_id or "-1")
            if component.description:
                tree.system_set(f"{node}/Description", component.description)
            tree.system_set(f"{node}/EnvType", component.env_type)
            _status(tree, f"{node}/State", DeployedState.ACTIVE if active else DeployedState.INACTIVE)
            _status(tree, f"{node}/Status", DeployedStatus.IDLE)
            for op in ("Activate", "Deactivate", "Remove"):
                if tree.system_get(f"{node}/Operations/{op}") is None:
                    tree.system_set(f"{node}/Operations/{op}", None, format="null")
            items.append((node, component.id))
        return items

    def _finish(
        self, job: SimJob, result: int, items: list[tuple[str | None, str]], reason: str | None = None
    ) -> None:
        alert = operation_complete_alert(job.exec_uri, job.correlator, int(result), items, reason)
        self.jobs.remove(job)
        job.partial = None  # nothing of a finished download is kept
        if self.packages is not None and job.primitive is Primitive.REMOVE:
            self.packages.pop(job.node, None)
        self._finished.append((job.exec_uri, job.correlator, int(result), tuple(items)))
        del self._finished[:-_REMEMBERED]
        self.report(alert)


def _failure_reason(phase: Phase, result: int) -> str:
    """What a simulated device says about a failed phase: which phase and the code's meaning.

    The code was drawn from the profile (or found by a real download); either way the fleet's
    jobs show a reason, as the agent's do.
    """
    try:
        meaning = ScomoResult(result).description
    except ValueError:
        meaning = "vendor-specific result"
    return f"the {phase.value} phase failed with {int(result)} {meaning} (simulated device)"


def _older(new: str, old: str) -> bool:
    """Whether version ``new`` is below ``old`` (versions that do not parse never count as older)."""
    try:
        return compare_versions(new, old) < 0
    except PackageError:
        return False


def _value(tree: DMTree, path: str) -> str:
    value = tree.system_value(path)
    return value if isinstance(value, str) else ""


def _status(tree: DMTree, path: str, value: int) -> None:
    tree.system_set(path, str(int(value)), format="int")
