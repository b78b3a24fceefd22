"""SCOMO on the device: the eight primitives, from Exec to Generic Alert.

``ScomoService`` mounts the SCOMO MO in the agent's tree and plugs a handler into every
``Operations/<Primitive>`` node. An Exec is checked at once (the node, PkgID, PkgURL,
Data, the component: a missing precondition is a 4xx Status), written to the journal, and
answered 202. The work itself runs after the session (``work()``): download with resume,
verification (size, SHA-256, signature; then the signer's right to the component ids, see
:mod:`.trust_policy`, and the downgrade rule with InstallParams, see :mod:`.install_params`),
install through the installer the EnvType names, activation, removal. Every step updates
the ``Status``/``State`` nodes first, so a server that polls sees what a server that waits
for the alert will be told; the last step queues the Generic Alert 1226 in the same
transaction that closes the job.

At start-up ``recover()`` lets the installers finish or undo half-done steps, resumes or
fails unfinished jobs, and rebuilds ``Inventory/Deployed`` from what is really installed.

What only the work needs loads when a job first needs it: the downloader (and its DD
parser), the package manifest's version rules, InstallParams, the trust policy and
``subprocess`` (the confirmation command). An agent keeps this module for months, mostly
idle, and those cost it about 1 MB resident (``bench/agent_rss.py``); the installers are
loaded at start, since ``recover()`` needs them.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from omadm.mo.scomo import scomo_mo
from omadm.mo.scomo_codes import (
    SCOMO_ALERT_TYPE,
    DeliveredState,
    DeliveredStatus,
    DeployedState,
    DeployedStatus,
    DownloadStatus,
    scomo_alert_data,
)
from omadm.mo.scomo_reason import bound_reason, with_reason
from omadm.package.errors import PackageError
from omadm.protocol.codes import AlertCode, ScomoResult, StatusCode
from omadm.protocol.messages import Alert, Item, Meta, Source, Target
from omadm.protocol.session import Outcome
from omadm.tree.tree import DMTree, NodeHandler
from omadm.tree.uri import escape_segment, parse_uri

from .installers.base import InstalledComponent, Installer, InstallError, installer_for, load_installers
from .journal import Job, JobState, Journal, Primitive

if TYPE_CHECKING:
    from omadm.agent.runner import Agent
    from omadm.package.manifest import ComponentManifest
    from omadm.package.verify import VerifiedPackage

    from .download import Downloader
    from .install_params import InstallParams

__all__ = ["LOCAL_SERVER", "ScomoService"]

#: The server_id of jobs started on the device itself (``omadm agent install``): no alert.
LOCAL_SERVER = ""

#: (result code, alert Target, Identifier, [(Deployed node, component id)] - one alert Item each)
_Outcome = tuple[int, str | None, str, list[tuple[str, str]]]

log = logging.getLogger("omadm.agent.scomo")

_DOWNLOADS = {Primitive.DOWNLOAD, Primitive.DOWNLOAD_INSTALL, Primitive.DOWNLOAD_INSTALL_INACTIVE}
_DELIVERED_OPS = {Primitive.INSTALL, Primitive.INSTALL_INACTIVE, Primitive.REMOVE}
_DEPLOYED_OPS = {Primitive.ACTIVATE, Primitive.DEACTIVATE, Primitive.REMOVE}
_ACTIVE = {Primitive.DOWNLOAD_INSTALL, Primitive.INSTALL}
#: Prefix of the directories in data_dir where a package's component is extracted to be installed.
_STAGING = "omadm-install-"


class _OperationHandler(NodeHandler):
    def __init__(self, service: ScomoService) -> None:
        self.service = service

    def execute(
        self, tree: DMTree, path: str, data: str | bytes | None, correlator: str | None, server_id: str
    ) -> Outcome:
        return self.service.accept(path, correlator, server_id)


class ScomoService:
    """The SCOMO MO of one device and the work its Execs start."""

    def __init__(
        self,
        agent: Agent,
        *,
        downloader: Downloader | None = None,
        installers: dict[str, Installer] | None = None,
    ) -> None:
        self.agent = agent
        self.tree = agent.tree
        config = agent.config
        self.root = parse_uri(config.scomo.path).path
        self.mo = scomo_mo(config.scomo.version, self.root)
        self.tree.mount(self.mo, self.root)
        if config.scomo.servers:  # only these management authorities may manage software here
            who = "+".join(config.scomo.servers)
            commands = ("Add", "Delete", "Exec", "Get", "Replace")  # SCOMO_DEFAULT_ACL's, narrowed
            self.tree.system_set_acl(self.root, "&".join(f"{c}={who}" for c in commands))
        self.packages = config.data_dir / "packages"
        self.packages.mkdir(parents=True, exist_ok=True)
        self.journal = Journal(agent.alerts)
        reserve = config.scomo.reserve_bytes
        self.installers = (
            installers
            if installers is not None
            else load_installers(
                config.install_root,
                hook_timeout=config.scomo.hook_timeout,
                free_space_margin=reserve,
                extra=config.scomo.installers,
            )
        )
        self._downloader = downloader
        handler = _OperationHandler(self)
        for branch, ops in (
            ("Download", _DOWNLOADS),
            ("Inventory/Delivered", _DELIVERED_OPS),
            ("Inventory/Deployed", _DEPLOYED_OPS),
        ):
            for op in ops:
                self.tree.register_handler(f"{self.root}/{branch}/*/Operations/{op.value}", handler)

    @property
    def downloader(self) -> Downloader:
        """The package downloader: the one given, else one from the configuration, made on first use."""
        if self._downloader is None:
            from .download import Downloader, disk_free  # noqa: PLC0415 - see the module docstring

            reserve = self.agent.config.scomo.reserve_bytes
            self._downloader = Downloader.from_config(
                self.agent.config, free_space=lambda directory: disk_free(directory) - reserve
            )
        return self._downloader

    @downloader.setter
    def downloader(self, downloader: Downloader) -> None:
        self._downloader = downloader

    # -- accepting an Exec (inside the DM session) ------------------------------------------

    def accept(self, path: str, correlator: str | None, server_id: str) -> Outcome:
        """Check an Exec's preconditions, journal the job, answer 202 (or the 4xx that says why)."""
        uri = parse_uri(path)
        assert uri.parent is not None and uri.parent.parent is not None
        primitive = Primitive(uri.name)
        node = uri.parent.parent.path
        # A repeated Exec (same node and Correlator: a server that lost our Status and sends
        # the job again) is the same job: never started twice. Checked first, since a finished
        # Remove has taken its node away.
        if self.journal.find(path, correlator) is not None:
            return Outcome(StatusCode.ACCEPTED_FOR_PROCESSING, target_ref=path)
        finished = self.journal.find_finished(path, correlator)
        if finished is not None:
            log.info("Exec %s repeats job %s (done: %s); reported again", path, finished.id, finished.result)
            self.journal.report_again(finished)
            return Outcome(StatusCode.ACCEPTED_FOR_PROCESSING, target_ref=path)
        problem = self._precondition(primitive, node)
        if problem is not None:
            code, reason = problem
            log.info("Exec %s refused (%s): %s", path, code, reason)
            return Outcome(code, target_ref=path)
        if self.journal.busy(node):
            log.info("Exec %s refused: another operation is in progress on %s", path, node)
            return Outcome(StatusCode.COMMAND_NOT_ALLOWED, target_ref=path)
        if self._already_done(primitive, node):
            # Activate on an active component (or Deactivate on an inactive one): the state
            # asked for is the state there is, so the final result is the Status (digest 6.1).
            log.info("Exec %s: nothing to do, answered 200", path)
            return Outcome(StatusCode.OK, target_ref=path)
        self.journal.add(Job(0, server_id, primitive, node, path, correlator))
        return Outcome(StatusCode.ACCEPTED_FOR_PROCESSING, target_ref=path)

    def _already_done(self, primitive: Primitive, node: str) -> bool:
        if primitive not in (Primitive.ACTIVATE, Primitive.DEACTIVATE) or self._branch(node) == "Download":
            return False
        installer = self._installer_of(self._value(f"{node}/ID"))
        component = installer.get(self._value(f"{node}/ID")) if installer is not None else None
        return component is not None and component.active == (primitive is Primitive.ACTIVATE)

    def _branch(self, node: str) -> str:
        return node[len(self.root) + 1 :].rsplit("/", 1)[0]

    def _value(self, path: str) -> str:
        value = self.tree.system_value(path)
        return value if isinstance(value, str) else ""

    def _precondition(self, primitive: Primitive, node: str) -> tuple[int, str] | None:
        branch = self._branch(node)
        if self.tree.system_get(node) is None:
            return StatusCode.NOT_FOUND, f"{node} does not exist"
        if branch == "Download":
            if not self._value(f"{node}/PkgID") or not self._value(f"{node}/PkgURL"):
                return StatusCode.INCOMPLETE_COMMAND, f"{node} needs PkgID and PkgURL before {primitive}"
        elif branch == "Inventory/Delivered":
            if not self._value(f"{node}/PkgID"):
                return StatusCode.INCOMPLETE_COMMAND, f"{node} needs a PkgID before {primitive}"
            if (
                primitive is not Primitive.REMOVE
                and not self._package_of(node).exists()
                and self.tree.system_get(f"{node}/Data") is None
            ):
                return StatusCode.INCOMPLETE_COMMAND, f"{node} has no package (Data) to install"
        elif branch == "Inventory/Deployed" and not self._value(f"{node}/ID"):
            return StatusCode.INCOMPLETE_COMMAND, f"{node} has no ID"
        return None

    # -- doing the work (after the session) -----------------------------------------------

    def pending(self) -> bool:
        return bool(self.journal.unfinished())

    def work(self) -> int:
        """Run every accepted operation to its end; returns how many finished."""
        done = 0
        for job in self.journal.unfinished():
            job.attempts += 1
            try:
                self._run(job)
            except Exception as exc:  # a bug must not leave the job open for ever
                log.exception("SCOMO job %s (%s on %s) failed unexpectedly", job.id, job.primitive, job.node)
                self._finish(
                    job,
                    ScomoResult.UNDEFINED_ERROR,
                    target=None,
                    identifier=self._identifier(job),
                    reason=f"the agent failed unexpectedly: {type(exc).__name__}: {exc}",
                )
            done += 1
        return done

    def _run(self, job: Job) -> None:
        branch = self._branch(job.node)
        if not job.data.get("confirmed"):
            refusal = self._confirm(job)
            if refusal is not None:
                if branch == "Download":
                    self._status(f"{job.node}/Status", DownloadStatus.DOWNLOAD_FAILED)
                self._finish(
                    job,
                    ScomoResult.USER_CANCELLED,
                    target=None,
                    identifier=self._identifier(job),
                    reason=refusal,
                )
                return
            self.journal.advance(job, job.state, confirmed=True)
        if branch == "Download":
            self._run_download(job)
        elif branch == "Inventory/Delivered":
            if job.primitive is Primitive.REMOVE:
                self._remove_delivered(job)
            else:
                self._install_delivered(job)
        else:
            self._run_deployed(job)

    # Download, DownloadInstall, DownloadInstallInactive ----------------------------------

    def _run_download(self, job: Job) -> None:
        from .download import DownloadError  # noqa: PLC0415 - see the module docstring

        node = job.node
        pkg_id = self._value(f"{node}/PkgID")
        if job.state in (JobState.QUEUED, JobState.DOWNLOADING):
            self._status(f"{node}/Status", DownloadStatus.DOWNLOAD_PROGRESSING)
            self.journal.advance(job, JobState.DOWNLOADING)
            target = self.packages / f"{escape_segment(pkg_id)}.omp"
            try:
                result = self.downloader.download(self._value(f"{node}/PkgURL"), target)
            except DownloadError as exc:  # the downloader told the DD's notify URI itself
                log.warning("download for %s failed (%s): %s", node, exc.result, exc)
                self._status(f"{node}/Status", DownloadStatus.DOWNLOAD_FAILED)
                self._finish(
                    job, exc.result, target=None, identifier=pkg_id, reason=f"download failed: {exc}"
                )
                return
            descriptor = result.descriptor.to_xml().decode() if result.descriptor is not None else None
            self.journal.advance(job, JobState.DOWNLOADED, package=str(result.path), descriptor=descriptor)
            self._status(f"{node}/Status", DownloadStatus.DOWNLOAD_COMPLETE)
        outcome = self._deliver_and_install(job, pkg_id)
        self._notify_descriptor(job, outcome[0])
        self._finish(job, outcome[0], target=outcome[1], identifier=outcome[2], items=outcome[3])

    def _deliver_and_install(self, job: Job, pkg_id: str) -> _Outcome:
        """After the download: verify, record under Delivered, and install if the job says so."""
        node = job.node
        package = Path(str(job.data["package"]))
        if job.state is JobState.DOWNLOADED:
            stored = self._package_of(self._delivered_node(node))
            if not package.exists() and stored.exists():
                package = stored  # moved into place just before a crash
            try:
                verified = self._verify(package)
            except PackageError as exc:
                log.warning("package for %s refused (%s): %s", node, exc.result, exc)
                package.unlink(missing_ok=True)
                self._status(f"{node}/Status", DownloadStatus.DOWNLOAD_FAILED)
                self._why(job, f"package refused: {exc}")
                return exc.result, None, pkg_id, []
            delivered = self._deliver(node, verified, package)
            package = self._package_of(delivered)
            self.journal.advance(job, JobState.DELIVERED, package=str(package), delivered=delivered)
        delivered = str(job.data["delivered"])
        if job.primitive is Primitive.DOWNLOAD:
            self._status(f"{node}/Status", DownloadStatus.IDLE)
            return ScomoResult.SUCCESSFUL, delivered, pkg_id, []
        try:
            verified = self._verify(package)  # the file moved: check it where it lies
        except PackageError as exc:
            self._status(f"{node}/Status", DownloadStatus.INSTALL_FAILED_WITHOUT_DATA)
            self._why(job, f"package refused: {exc}")
            return exc.result, None, pkg_id, []
        self._status(f"{node}/Status", DownloadStatus.INSTALL_PROGRESSING)
        self.journal.advance(job, JobState.INSTALLING)
        outcome = self._install(job, verified, pkg_id, active=job.primitive in _ACTIVE)
        if outcome[0] == ScomoResult.SUCCESSFUL:
            self._status(f"{node}/Status", DownloadStatus.IDLE)
            self._status(f"{delivered}/State", DeliveredState.INSTALLED)
        else:
            self._status(f"{node}/Status", DownloadStatus.INSTALL_FAILED_WITH_DATA)
        return outcome

    def _notify_descriptor(self, job: Job, result: int) -> None:
        """Tell a DD's installNotifyURI how the install went (DLOTA 900 means "installed").

        For Download alone, 900 is sent once the package is delivered: the device has
        accepted the content, which is all that primitive promises. Sent before the job is
        closed, so a crash in between repeats the POST rather than losing it.
        """
        descriptor_xml = job.data.get("descriptor")
        if not isinstance(descriptor_xml, str):
            return
        from .dd import DescriptorError, InstallNotifyStatus, parse_descriptor  # noqa: PLC0415 - see the module docstring

        try:
            descriptor = parse_descriptor(descriptor_xml.encode())
        except DescriptorError:  # it parsed once; never expected
            log.exception("the stored download descriptor of job %s no longer parses", job.id)
            return
        self.downloader.report_install(descriptor, InstallNotifyStatus.for_scomo_result(result))

    def _delivered_node(self, download_node: str) -> str:
        return f"{self.root}/Inventory/Delivered/{download_node.rsplit('/', 1)[1]}"

    def _deliver(self, download_node: str, verified: VerifiedPackage, package: Path) -> str:
        """Record a downloaded package under Inventory/Delivered (the same <X> name).

        The file is moved first and the node written in one transaction after, so a crash
        leaves either no Delivered entry (and the job redoes this step) or a whole one.
        """
        node = self._delivered_node(download_node)
        stored = self._package_of(node)
        if package != stored:
            os.replace(package, stored)
        manifest = verified.manifest
        tree = self.tree
        with self.agent.store.transaction():
            tree.system_add_interior(node)
            tree.system_set(f"{node}/PkgID", self._value(f"{download_node}/PkgID") or manifest.id)
            tree.system_set(f"{node}/Name", self._value(f"{download_node}/Name") or manifest.name)
            description = self._value(f"{download_node}/Description") or manifest.description
            if description:
                tree.system_set(f"{node}/Description", description)
            for leaf in ("InstallParams", "EnvType", "PkgType"):
                value = self._value(f"{download_node}/{leaf}")
                if value and self.mo.resolve(f"Inventory/Delivered/X/{leaf}") is not None:
                    tree.system_set(f"{node}/{leaf}", value)
            tree.system_set(f"{node}/Status", str(int(DeliveredStatus.IDLE)), format="int")
            tree.system_set(f"{node}/State", str(int(DeliveredState.DELIVERED)), format="int")
            for op in ("Install", "InstallInactive", "Remove"):
                if tree.system_get(f"{node}/Operations/{op}") is None:
                    tree.system_set(f"{node}/Operations/{op}", None, format="null")
        return node

    def package_path(self, delivered_node: str) -> Path:
        """Where the package of an ``Inventory/Delivered/<X>`` entry is kept."""
        return self._package_of(delivered_node)

    def already_done(self, primitive: Primitive, node: str) -> bool:
        """Whether Activate/Deactivate on Deployed ``node`` would change nothing."""
        return self._already_done(primitive, node)

    def deployed_ids(self) -> list[str]:
        """The IDs of the components in ``Inventory/Deployed``."""
        base = f"{self.root}/Inventory/Deployed"
        return [self._value(f"{r.path}/ID") for r in self.agent.store.children(base)]

    def deployed_node_of(self, component_id: str) -> str | None:
        """The ``Inventory/Deployed/<X>`` node of a component, or None."""
        base = f"{self.root}/Inventory/Deployed"
        for record in self.agent.store.children(base):
            if self._value(f"{record.path}/ID") == component_id:
                return record.path
        return None

    def _package_of(self, delivered_node: str) -> Path:
        return self.packages / f"delivered-{escape_segment(delivered_node.rsplit('/', 1)[1])}.omp"

    def _verify(self, package: Path) -> VerifiedPackage:
        # Loaded here, not at start: the verifier brings cryptography (~7 MB resident), which
        # an idle agent does not need (issue 17: an agent's idle RSS of 35 MB at most).
        from omadm.package.signing import load_public_keys  # noqa: PLC0415
        from omadm.package.verify import open_package  # noqa: PLC0415

        config = self.agent.config
        keys = load_public_keys([config.trust_dir]) if config.trust_dir.exists() else []
        return open_package(package, keys, require_signature=config.scomo.require_signature)

    # Install, InstallInactive, Remove on Inventory/Delivered ------------------------------

    def _install_delivered(self, job: Job) -> None:
        node = job.node
        pkg_id = self._value(f"{node}/PkgID")
        package = self._package_of(node)
        if job.state is JobState.QUEUED:
            data = self.tree.system_value(f"{node}/Data")
            if isinstance(data, bytes) and data:
                # Direct delivery: the bytes came in the DM session. Stored as a file (written
                # whole, then renamed) before the node is emptied, so a crash loses neither.
                part = package.with_suffix(".part")
                part.write_bytes(data)
                os.replace(part, package)
                self.tree.system_delete(f"{node}/Data")
            self.journal.advance(job, JobState.DELIVERED)
        self._status(f"{node}/Status", DeliveredStatus.INSTALL_PROGRESSING)
        if self.tree.system_get(f"{node}/State") is None:  # a DP the server delivered itself
            self._status(f"{node}/State", DeliveredState.DELIVERED)
        try:
            verified = self._verify(package)
        except PackageError as exc:
            log.warning("package of %s refused (%s): %s", node, exc.result, exc)
            self._status(f"{node}/Status", DeliveredStatus.INSTALL_FAILED_WITHOUT_DATA)
            package.unlink(missing_ok=True)
            self._finish(job, exc.result, target=None, identifier=pkg_id, reason=f"package refused: {exc}")
            return
        self.journal.advance(job, JobState.INSTALLING)
        result, target, identifier, items = self._install(
            job, verified, pkg_id, active=job.primitive in _ACTIVE
        )
        if result == ScomoResult.SUCCESSFUL:
            self._status(f"{node}/Status", DeliveredStatus.IDLE)
            self._status(f"{node}/State", DeliveredState.INSTALLED)
        else:
            self._status(f"{node}/Status", DeliveredStatus.INSTALL_FAILED_WITH_DATA)
        self._finish(job, result, target=target, identifier=identifier, items=items)

    def _remove_delivered(self, job: Job) -> None:
        node = job.node
        # Journaled before the node goes: a crash after the delete must still report the PkgID.
        pkg_id = str(job.data.get("pkg_id") or self._value(f"{node}/PkgID"))
        if self.tree.system_get(node) is not None:
            self.journal.advance(job, job.state, pkg_id=pkg_id)
            self._status(f"{node}/Status", DeliveredStatus.REMOVE_PROGRESSING)
            self._package_of(node).unlink(missing_ok=True)
            self.tree.system_delete(node)
        self._finish(job, ScomoResult.SUCCESSFUL, target=None, identifier=pkg_id)

    # the install itself ------------------------------------------------------------------

    def _install(self, job: Job, verified: VerifiedPackage, pkg_id: str, *, active: bool) -> _Outcome:
        """Install every component of a package; all or nothing.

        ``pkg_id`` is the server's PkgID of the package (each Deployed entry's PkgIDRef).
        Returns (result code, Target of the first component, Identifier, [(Deployed node,
        component id)] for one alert Item per component).
        """
        from .install_params import InstallParamsError, parse_install_params  # noqa: PLC0415 - module docstring

        manifest = verified.manifest
        pkg_id = pkg_id or manifest.id
        params = self._value(f"{job.node}/InstallParams") or None
        installed_now: list[tuple[Installer, ComponentManifest, InstalledComponent | None]] = []
        refusal = self._check_publisher(verified)
        if refusal is not None:
            log.warning(
                "package %s refused (%s): %s", manifest.id, ScomoResult.FAILED_PACKAGE_VALIDATION, refusal
            )
            self._why(job, f"package refused: {refusal}")
            return ScomoResult.FAILED_PACKAGE_VALIDATION, None, pkg_id, []
        try:
            settings = parse_install_params(params)
        except InstallParamsError as exc:
            log.warning("package %s refused (%s): %s", manifest.id, exc.result, exc)
            self._why(job, f"InstallParams refused: {exc}")
            return exc.result, None, pkg_id, []
        problem = self._check_components(manifest.components, manifest.allow_downgrade, settings)
        if problem is not None:
            log.warning("package %s refused: %s", manifest.id, problem[1])
            self._why(job, f"package refused: {problem[1]}")
            return problem[0], None, pkg_id, []  # the server's PkgID: what it can match (digest 6.3)
        done: list[tuple[str, str]] = []
        for component in manifest.components:
            installer = installer_for(component.env_type, self.installers)
            before = installer.get(component.id)
            if (
                job.state is JobState.INSTALLING
                and before is not None
                and before.version == component.version
                and before.pkg_id == pkg_id
            ):
                # Already there: this job was interrupted after this component (recovery).
                done.append((self._deployed_node(before), before.id))
                continue
            staging = Path(tempfile.mkdtemp(prefix=_STAGING, dir=self.agent.config.data_dir))
            try:
                source = verified.extract_component(component.id, staging / "files")
                installed = installer.install(
                    component.id,
                    component.name,
                    component.version,
                    source,
                    pkg_id=pkg_id,
                    hooks=dict(component.hooks),
                    active=active,
                    params=params,
                    description=component.description,
                )
            except Exception as exc:  # a plug-in's bug too: 1412, and the others are taken back
                result = _result_of(exc, ScomoResult.INSTALL_FAILED)
                log.warning(
                    "installing %s %s failed (%s): %s",
                    component.id,
                    component.version,
                    result,
                    exc,
                    exc_info=result == ScomoResult.UNDEFINED_ERROR,
                )
                self._why(job, _explain(exc))
                self._undo(installed_now)
                self.sync_inventory()
                return result, None, component.id, []
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            installed_now.append((installer, component, before))
            done.append((self._deployed_node(installed), installed.id))
        self.sync_inventory()
        if verified.key_fingerprint is not None:  # who signed what is installed now (trust_policy)
            self.journal.pin_publishers(verified.key_fingerprint, [c.id for c in manifest.components], pkg_id)
        first = done[0] if done else (None, manifest.id)
        return ScomoResult.SUCCESSFUL, first[0], first[1], done

    def _check_publisher(self, verified: VerifiedPackage) -> str | None:
        """Why this package's signer may not publish its components here, or None (1407 if not).

        The trust policy file is read at every install, so an operator's change applies to
        the next one without a restart; see :mod:`.trust_policy` for the rules.
        """
        from .trust_policy import (  # noqa: PLC0415 - see the module docstring
            POLICY_FILE,
            Signer,
            TrustPolicyError,
            check_publisher,
            key_names,
            load_policy,
        )

        config = self.agent.config
        trust_dir = config.trust_dir
        path = Path(config.scomo.trust_policy) if config.scomo.trust_policy else trust_dir / POLICY_FILE
        try:
            policy = load_policy(path, trust_dir)
        except TrustPolicyError as exc:
            return f"{exc}; no package is installed until it is fixed"
        fingerprint = verified.key_fingerprint
        signer = (
            None if fingerprint is None else Signer(fingerprint, key_names(trust_dir).get(fingerprint, ()))
        )
        return check_publisher(
            [c.id for c in verified.manifest.components],
            signer,
            policy=policy,
            pins=self.journal.publishers(),
            policy_path=path,
        )

    def _check_components(
        self, components: tuple[ComponentManifest, ...], allow_downgrade: bool, params: InstallParams
    ) -> tuple[int, str] | None:
        """Why the package's components may not be installed here (code, reason), or None.

        A downgrade (an older version over a newer one) needs the package's manifest or the
        InstallParams (``allow-downgrade``, parsed: see :mod:`.install_params`) to allow it,
        and is refused whatever they say when ``[scomo] refuse_downgrades`` is set. Refused
        with 1405 (Install Failed): the package is valid, this device will not install it.
        """
        from omadm.package.manifest import compare_versions  # noqa: PLC0415 - see the module docstring

        present = {c.id: c.version for i in self.installers.values() for c in i.inventory()}
        incoming = {c.id: c.version for c in components}
        refuse_all = self.agent.config.scomo.refuse_downgrades
        downgrade_ok = (allow_downgrade or params.allow_downgrade) and not refuse_all
        for component in components:
            if component.env_type not in self.installers:
                return ScomoResult.UNSUPPORTED_ENVIRONMENT, f"no installer for EnvType {component.env_type!r}"
            old = present.get(component.id)
            if old is not None and compare_versions(component.version, old) < 0 and not downgrade_ok:
                why = (
                    "this device refuses every downgrade ([scomo] refuse_downgrades)"
                    if refuse_all
                    else "neither the package nor its InstallParams allow it"
                )
                return ScomoResult.INSTALL_FAILED, (
                    f"{component.id} {component.version} would downgrade {old}; {why}"
                )
            for dep in component.depends:
                version = incoming.get(dep.id) or present.get(dep.id)
                if version is None or not dep.satisfied_by(version):
                    return ScomoResult.INSTALL_FAILED, (
                        f"{component.id} needs {dep.id} {dep.min_version or ''}..{dep.max_version or ''}, "
                        f"found {version or 'nothing'}"
                    )
        return None

    def _undo(self, installed: list[tuple[Installer, ComponentManifest, InstalledComponent | None]]) -> None:
        """Take back the components this job installed before one failed."""
        for installer, component, before in reversed(installed):
            try:
                if before is None:
                    installer.remove(component.id)
                else:
                    installer.rollback(component.id)
            except InstallError as exc:
                log.error("could not take back %s after a failed install: %s", component.id, exc)

    # Activate, Deactivate, Remove on Inventory/Deployed ---------------------------------

    def _run_deployed(self, job: Job) -> None:
        node = job.node
        # Journaled when the step starts: recovery may have deleted the node since (a removal).
        component_id = str(job.data.get("component") or self._value(f"{node}/ID"))
        installer = self._installer_of(component_id)
        if installer is None:
            if job.primitive is Primitive.REMOVE and job.state is JobState.INSTALLING:
                # Interrupted after its remove hook: the installer's recovery finished the removal.
                self.sync_inventory()
                self._finish(job, ScomoResult.SUCCESSFUL, target=None, identifier=component_id)
                return
            self._finish(
                job,
                ScomoResult.UNDEFINED_ERROR,
                target=None,
                identifier=component_id,
                reason=f"no installer has component {component_id!r} any more",
            )
            return
        steps: dict[Primitive, tuple[DeployedStatus, DeployedStatus, Callable[[str], object], int]] = {
            Primitive.ACTIVATE: (
                DeployedStatus.ACTIVATE_PROGRESSING,
                DeployedStatus.ACTIVATE_FAILED,
                installer.activate,
                ScomoResult.ACTIVATE_FAILED,
            ),
            Primitive.DEACTIVATE: (
                DeployedStatus.DEACTIVATE_PROGRESSING,
                DeployedStatus.DEACTIVATE_FAILED,
                installer.deactivate,
                ScomoResult.DEACTIVATE_FAILED,
            ),
            Primitive.REMOVE: (
                DeployedStatus.REMOVE_PROGRESSING,
                DeployedStatus.REMOVE_FAILED,
                installer.remove,
                ScomoResult.REMOVE_FAILED,
            ),
        }
        progressing, failed, action, failure = steps[job.primitive]
        self._status(f"{node}/Status", progressing)
        self.journal.advance(job, JobState.INSTALLING, component=component_id)
        try:
            action(component_id)
        except Exception as exc:  # a plug-in's bug too (1412): Status must not stay "progressing"
            result = _result_of(exc, failure)
            log.warning(
                "%s of %s failed (%s): %s",
                job.primitive,
                component_id,
                result,
                exc,
                exc_info=result == ScomoResult.UNDEFINED_ERROR,
            )
            self._status(f"{node}/Status", failed)
            self._finish(job, result, target=None, identifier=component_id, reason=_explain(exc))
            return
        self.sync_inventory()
        if self.tree.system_get(node) is not None:
            self._status(f"{node}/Status", DeployedStatus.IDLE)
        self._finish(job, ScomoResult.SUCCESSFUL, target=None, identifier=component_id)

    def _confirm(self, job: Job) -> str | None:
        """Ask the device's user (``confirm_command``) whether this operation may go ahead.

        Returns None for yes, else why not (the job's failure reason).

        The command gets the operation in ``OMADM_OPERATION``, ``OMADM_NODE``, ``OMADM_PKG_ID``,
        ``OMADM_PKG_URL``, ``OMADM_NAME`` and ``OMADM_COMPONENT_ID``; exit 0 is yes, anything else
        (a timeout and a command that cannot start included) is no: an operation the user was
        asked about never runs without a yes. Asked once per job, the answer is journaled.
        """
        command = self.agent.config.scomo.confirm_command
        if not command:
            return None
        import subprocess  # noqa: PLC0415 - see the module docstring

        env = {
            **os.environ,
            "OMADM_OPERATION": job.primitive.value,
            "OMADM_NODE": job.node,
            "OMADM_PKG_ID": self._value(f"{job.node}/PkgID"),
            "OMADM_PKG_URL": self._value(f"{job.node}/PkgURL"),
            "OMADM_NAME": self._value(f"{job.node}/Name"),
            "OMADM_COMPONENT_ID": self._value(f"{job.node}/ID"),
        }
        try:
            answer = subprocess.run(
                command,
                shell=True,
                env=env,
                timeout=self.agent.config.scomo.hook_timeout,
                capture_output=True,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning(
                "confirm_command for %s on %s gave no answer (%s): taken as no", job.primitive, job.node, exc
            )
            return f"confirm_command gave no answer ({exc}): taken as no"
        if answer.returncode != 0:
            log.info(
                "the user declined %s on %s (confirm_command exit %s)",
                job.primitive,
                job.node,
                answer.returncode,
            )
            output = answer.stdout.decode("utf-8", "replace").strip().splitlines()[-3:]
            said = "; it said: " + " / ".join(output) if output else ""
            return f"the user declined (confirm_command exit status {answer.returncode}){said}"
        return None

    def _installer_of(self, component_id: str) -> Installer | None:
        for installer in self.installers.values():
            if installer.get(component_id) is not None:
                return installer
        return None

    # the inventory ----------------------------------------------------------------------

    def _deployed_node(self, component: InstalledComponent) -> str:
        base = f"{self.root}/Inventory/Deployed"
        for record in self.agent.store.children(base):
            if self._value(f"{record.path}/ID") == component.id:
                return record.path
        return f"{base}/{escape_segment(component.id)}"

    def sync_inventory(self) -> None:
        """Make Inventory/Deployed say exactly what the installers have (at boot and after work)."""
        base = f"{self.root}/Inventory/Deployed"
        actual = {c.id: c for installer in self.installers.values() for c in installer.inventory()}
        for record in self.agent.store.children(base):
            cid = self._value(f"{record.path}/ID")
            if cid not in actual:
                self.tree.system_delete(record.path)
        for component in actual.values():
            node = self._deployed_node(component)
            tree = self.tree
            if tree.system_get(node) is None:
                tree.system_add_interior(node)
            tree.system_set(f"{node}/ID", component.id)
            tree.system_set(f"{node}/Name", component.name)
            tree.system_set(f"{node}/Version", component.version)
            tree.system_set(f"{node}/PkgIDRef", component.pkg_id or "-1")
            if component.description:
                tree.system_set(f"{node}/Description", component.description)
            tree.system_set(f"{node}/EnvType", component.env_type)
            state = DeployedState.ACTIVE if component.state == "active" else DeployedState.INACTIVE
            tree.system_set(f"{node}/State", str(int(state)), format="int")
            if tree.system_get(f"{node}/Status") is None:
                tree.system_set(f"{node}/Status", str(int(DeployedStatus.IDLE)), format="int")
            for op in ("Activate", "Deactivate", "Remove"):
                if tree.system_get(f"{node}/Operations/{op}") is None:
                    tree.system_set(f"{node}/Operations/{op}", None, format="null")

    def recover(self) -> None:
        """After a restart: installers first, then the journal, then the inventory."""
        for installer in self.installers.values():
            installer.recover()
        # Packages extracted for an install a crash interrupted (no other agent works here: the lock).
        for leftover in self.agent.config.data_dir.glob(f"{_STAGING}*"):
            shutil.rmtree(leftover, ignore_errors=True)
        self.sync_inventory()

    # reporting --------------------------------------------------------------------------

    def _identifier(self, job: Job) -> str:
        for leaf in ("ID", "PkgID"):
            value = self._value(f"{job.node}/{leaf}")
            if value:
                return value
        return job.node

    def _finish(
        self,
        job: Job,
        result: int,
        *,
        target: str | None,
        identifier: str,
        items: list[tuple[str, str]] | None = None,
        reason: str | None = None,
    ) -> None:
        """Close the job and queue its Generic Alert(s), in one transaction.

        A failure's ``reason`` (else the one a step noted with :meth:`_why`) is kept in the
        journal record and rides in the alert's first Item as an EMI (:mod:`omadm.mo.scomo_reason`),
        so that the server can say why, not only that; a success carries none.
        """
        success = ScomoResult.is_success_code(int(result))
        meta = Meta(type=SCOMO_ALERT_TYPE, format="xml", mark="informational" if success else "critical")
        pairs = items if items else [(target, identifier)]
        alert_items = [
            Item(
                source=Source(job.exec_uri),
                target=Target(t) if t else None,
                meta=meta,
                data=scomo_alert_data(int(result), ident),
            )
            for t, ident in pairs
        ]
        noted = job.data.pop("reason", None)
        why = "" if success else bound_reason(reason or (noted if isinstance(noted, str) else None))
        if why:
            job.data["reason"] = why
            alert_items[0] = with_reason(alert_items[0], why)
        alert = Alert(
            "0", data=str(int(AlertCode.GENERIC_ALERT)), correlator=job.correlator, items=tuple(alert_items)
        )
        self.journal.finish(job, int(result), [alert] if job.server_id != LOCAL_SERVER else [])
        log.info("SCOMO %s on %s finished: %s", job.primitive, job.node, int(result))

    def _why(self, job: Job, reason: str) -> None:
        """Note why ``job`` is failing, for :meth:`_finish` to report (journaled with the result)."""
        job.data["reason"] = bound_reason(reason)

    def _status(self, path: str, value: int) -> None:
        self.tree.system_set(path, str(int(value)), format="int")


def _explain(exc: BaseException) -> str:
    """An installer's exception as a reason: its message (a hook's exit status and output tail),
    with the exception's type when nobody classified it (1412) or it has no message."""
    if isinstance(exc, InstallError | PackageError) and str(exc):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _result_of(exc: BaseException, default: int) -> int:
    """The SCOMO result an installer's exception stands for.

    1411 for a step it lacks, 1406 for a full disk, the error's own ``result`` (else
    ``default``) for the failures installers report, 1412 for an exception nobody classified.
    """
    if isinstance(exc, NotImplementedError):
        return ScomoResult.NOT_IMPLEMENTED
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ScomoResult.INSTALL_FAILED_OUT_OF_MEMORY  # the disk filled while extracting
    if not isinstance(exc, InstallError | PackageError | OSError):
        return ScomoResult.UNDEFINED_ERROR
    result = getattr(exc, "result", None)
    return int(result) if result else default
