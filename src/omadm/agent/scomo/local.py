"""SCOMO operations started on the device itself (``omadm agent install`` and friends).

An operator at the device, or a provisioning script, sometimes has to install a package
without a DM server: first boot in a factory, a lab bench, a field repair. These commands
go through exactly the same path as a server's Exec (the same nodes, journal, verification,
installers, rollback and crash recovery), so a package that installs locally installs the
same way remotely. Only the report differs: a local job has no server to alert (its
``server_id`` is :data:`LOCAL_SERVER`); the servers see the change in the inventory.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from urllib.parse import urlsplit

from omadm.mo.scomo_codes import DeliveredState, DeliveredStatus

from .journal import Job, Primitive
from .operations import LOCAL_SERVER, ScomoService

__all__ = ["LocalOperations"]


class LocalOperations:
    """Start one SCOMO operation locally and run it to its end."""

    def __init__(self, service: ScomoService) -> None:
        self.service = service
        self.tree = service.tree

    def install(
        self, source: str, *, inactive: bool = False, pkg_id: str | None = None, params: str | None = None
    ) -> Job:
        """Install a package from an http(s) URL (downloaded, resumable) or a local file.

        Raises:
            FileNotFoundError: ``source`` is neither a URL nor an existing file.
        """
        if urlsplit(source).scheme in ("http", "https"):
            return self._download_install(source, inactive=inactive, pkg_id=pkg_id, params=params)
        path = Path(source[7:] if source.startswith("file://") else source)
        if not path.is_file():
            raise FileNotFoundError(f"{source} is neither an http(s) URL nor a package file")
        return self._install_file(path, inactive=inactive, pkg_id=pkg_id, params=params)

    def on_component(self, primitive: Primitive, component_id: str) -> Job | None:
        """Activate, Deactivate or Remove the deployed component with that ID.

        Returns None when the component is already in the state asked for (nothing to do).

        Raises:
            LookupError: no deployed component has that ID.
        """
        service = self.service
        node = service.deployed_node_of(component_id)
        if node is None:
            known = ", ".join(service.deployed_ids()) or "none"
            raise LookupError(f"no deployed component {component_id!r} (deployed: {known})")
        if service.already_done(primitive, node):
            return None
        return self._run(primitive, node)

    # ---------------------------------------------------------------------------------------

    def _download_install(self, url: str, *, inactive: bool, pkg_id: str | None, params: str | None) -> Job:
        name = _node_name()
        node = f"{self.service.root}/Download/{name}"
        primitive = Primitive.DOWNLOAD_INSTALL_INACTIVE if inactive else Primitive.DOWNLOAD_INSTALL
        tree = self.tree
        with self.service.agent.store.transaction():
            tree.system_add_interior(node)
            tree.system_set(f"{node}/PkgID", pkg_id or Path(urlsplit(url).path).stem or name)
            tree.system_set(f"{node}/Name", Path(urlsplit(url).path).name or name)
            tree.system_set(f"{node}/PkgURL", url)
            if params:
                tree.system_set(f"{node}/InstallParams", params)
            tree.system_set(f"{node}/Status", "10", format="int")
            tree.system_set(f"{node}/Operations/{primitive.value}", None, format="null")
        try:
            return self._run(primitive, node)
        finally:
            tree.system_delete(node)  # our own scratch entries: the installer keeps what it needs
            self._discard(f"{self.service.root}/Inventory/Delivered/{name}")

    def _install_file(self, path: Path, *, inactive: bool, pkg_id: str | None, params: str | None) -> Job:
        name = _node_name()
        service = self.service
        node = f"{service.root}/Inventory/Delivered/{name}"
        primitive = Primitive.INSTALL_INACTIVE if inactive else Primitive.INSTALL
        stored = service.package_path(node)
        part = stored.with_suffix(".part")
        shutil.copyfile(path, part)
        part.replace(stored)
        tree = self.tree
        with service.agent.store.transaction():
            tree.system_add_interior(node)
            tree.system_set(f"{node}/PkgID", pkg_id or path.stem)
            tree.system_set(f"{node}/Name", path.name)
            if params:
                tree.system_set(f"{node}/InstallParams", params)
            tree.system_set(f"{node}/Status", str(int(DeliveredStatus.IDLE)), format="int")
            tree.system_set(f"{node}/State", str(int(DeliveredState.DELIVERED)), format="int")
            for op in ("Install", "InstallInactive", "Remove"):
                tree.system_set(f"{node}/Operations/{op}", None, format="null")
        try:
            return self._run(primitive, node)
        finally:
            self._discard(node)

    def _discard(self, delivered_node: str) -> None:
        """Drop a local job's Delivered entry and package file (a server's stay until it removes them)."""
        if self.tree.system_get(delivered_node) is not None:
            self.tree.system_delete(delivered_node)
        self.service.package_path(delivered_node).unlink(missing_ok=True)

    def _run(self, primitive: Primitive, node: str) -> Job:
        service = self.service
        job = service.journal.add(
            Job(0, LOCAL_SERVER, primitive, node, f"{node}/Operations/{primitive.value}", None)
        )
        service.work()
        done = service.journal.get(job.id)
        assert done is not None and done.result is not None, "work() finishes every job it is given"
        return done


def _node_name() -> str:
    return f"local-{secrets.token_hex(4)}"
