"""What an installer is: the contract between SCOMO operations and one execution environment.

A SCOMO delivery package names an ``EnvType`` per component; the device hands each component
to the installer of that environment (SCOMO digest 1, "EnvType"; result 1413 when there is
none). The operations layer does everything environment-neutral first (download, hash and
signature checks, extraction, downgrade and dependency policy), so an installer only moves
verified files into place, runs the environment's own steps, and reports what is installed.

Installers are plug-ins: the built-in ``archive`` installer (:mod:`.archive`) plus any factory
published under the ``omadm.installers`` entry-point group, so a product can add e.g. a
``deb`` or ``container`` environment without touching omadm. A plug-in that cannot be loaded
is logged and skipped: one bad plug-in must not keep the agent (and so every other
environment, and remote repair) from starting.

Every installer must survive a crash at any instant: :meth:`Installer.recover` runs at start-up
and leaves each component fully in its old or fully in its new form (DESIGN rule 5).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from omadm.protocol.codes import ScomoResult

__all__ = [
    "DEFAULT_ENV_TYPE",
    "ENTRY_POINT_GROUP",
    "ComponentState",
    "InstallError",
    "InstalledComponent",
    "Installer",
    "InstallerFactory",
    "installer_for",
    "load_installers",
]

log = logging.getLogger(__name__)

#: The entry-point group plug-in installers are published under.
ENTRY_POINT_GROUP = "omadm.installers"
#: The environment of the built-in installer, and of components whose package names none.
DEFAULT_ENV_TYPE = "archive"

#: A component is usable ("active", Deployed State 20) or installed but disabled ("inactive", 10).
ComponentState = Literal["active", "inactive"]


@dataclass(frozen=True)
class InstalledComponent:
    """One installed component as its installer knows it: what ``Inventory/Deployed/<X>`` shows.

    ``pkg_id`` is the PkgID of the delivery package that installed it (``PkgIDRef``), None for
    components that did not come through SCOMO (factory or hand-installed).
    """

    id: str
    name: str
    version: str
    env_type: str
    state: ComponentState
    pkg_id: str | None
    description: str = ""

    @property
    def active(self) -> bool:
        """True when the component is usable (Deployed State 20)."""
        return self.state == "active"


class InstallError(Exception):
    """An installer operation failed; ``result`` is the SCOMO result code to report.

    Typically 1405 (install failed), 1406 (out of memory/storage), 1408 (remove failed), 1409
    (activate failed), 1410 (deactivate failed) or 1413 (unsupported environment). The message
    names the cause (a hook's exit status and last output lines, an OS error) so that the log
    line and the operator see why, not only that.
    """

    def __init__(self, result: int, message: str) -> None:
        super().__init__(message)
        self.result = int(result)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"InstallError({self.result}, {self.message!r})"


@runtime_checkable
class Installer(Protocol):
    """One execution environment's installer.

    Methods raise :class:`InstallError` on failure and leave the component as it was
    (failures roll back). An environment that has no such step (a platform where components
    cannot be deactivated, say) raises ``NotImplementedError``: the device reports 1411 Not
    Implemented; anything else unexpected is 1412 Undefined Error. Methods may be slow (they
    run hooks) and are called from the agent's SCOMO worker, one at a time per installer.
    """

    #: The EnvType this installer serves (the key in :func:`load_installers`' result).
    env_type: str

    def install(
        self,
        component_id: str,
        name: str,
        version: str,
        source_dir: Path,
        *,
        pkg_id: str | None,
        hooks: Mapping[str, str],
        active: bool,
        params: str | None,
        description: str = "",
    ) -> InstalledComponent:
        """Install (or upgrade, reinstall, downgrade: whatever version is asked) a component.

        ``source_dir`` holds the component's files, already extracted and verified; the
        installer takes it over (moves or copies it, the caller must not reuse it). ``hooks``
        maps actions (``install``, ``activate``, ``deactivate``, ``remove``) to executables
        inside the component; ``params`` are the DP's InstallParams. A component with the
        same id is upgraded in place, keeping its id; whether that is allowed is the caller's
        decision.
        """
        ...

    def activate(self, component_id: str) -> InstalledComponent:
        """Make the component usable (1409 on failure, state unchanged)."""
        ...

    def deactivate(self, component_id: str) -> InstalledComponent:
        """Make the component unusable without removing it (1410 on failure, state unchanged)."""
        ...

    def remove(self, component_id: str) -> None:
        """Uninstall the component (1408 on failure, nothing removed)."""
        ...

    def rollback(self, component_id: str) -> InstalledComponent | None:
        """Go back to the version installed before the last upgrade; None if there is none."""
        ...

    def get(self, component_id: str) -> InstalledComponent | None:
        """The installed component with that id, or None."""
        ...

    def inventory(self) -> list[InstalledComponent]:
        """Every component installed in this environment, however it got there (the truth at boot)."""
        ...

    def recover(self) -> None:
        """Finish or undo whatever a crash interrupted; idempotent, called at start-up."""
        ...


#: What an ``omadm.installers`` entry point loads: called with the agent's data directory.
InstallerFactory = Callable[[Path], Installer]


def load_installers(
    data_dir: Path,
    *,
    hook_timeout: float | None = None,
    free_space_margin: int | None = None,
    extra: Sequence[str] = (),
) -> dict[str, Installer]:
    """The installers of this device by EnvType: ``archive`` plus every working plug-in.

    The built-in archive installer keeps its components in ``data_dir / "archive"`` (with
    ``hook_timeout`` and ``free_space_margin`` when given); plug-ins get ``data_dir`` and
    should likewise use a directory named after their EnvType. Plug-ins come from the
    ``omadm.installers`` entry points, then from ``extra`` (``"module:factory"`` strings from
    the agent's configuration, for products that do not ship a Python distribution). One that
    fails to load or to build, that returns no :class:`Installer`, or that claims an EnvType
    already taken is logged and skipped.
    """
    from .archive import ArchiveInstaller  # noqa: PLC0415 - archive.py builds on this module

    options: dict[str, Any] = {}
    if hook_timeout is not None:
        options["hook_timeout"] = hook_timeout
    if free_space_margin is not None:
        options["free_space_margin"] = free_space_margin
    installers: dict[str, Installer] = {}
    builtin = ArchiveInstaller(data_dir / DEFAULT_ENV_TYPE, **options)
    installers[builtin.env_type] = builtin
    sources: list[tuple[str, Callable[[], Any]]] = []
    if "importlib.metadata" in sys.modules or may_publish_entry_points(ENTRY_POINT_GROUP):
        from importlib import metadata  # noqa: PLC0415 - see may_publish_entry_points

        sources += [
            (f"installer plug-in {ep.name!r} ({ep.value})", ep.load)
            for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)
        ]
    sources += [(f"installer plug-in {spec!r}", _loader(spec)) for spec in extra]
    for origin, load in sources:
        try:
            factory = load()
            installer = factory(data_dir)
        except Exception:
            log.exception("%s could not be loaded; skipped", origin)
            continue
        if not isinstance(installer, Installer):
            log.error("%s returned %r, which is not an installer; skipped", origin, installer)
            continue
        env_type = installer.env_type
        if not isinstance(env_type, str) or not env_type:
            log.error("%s has no EnvType (env_type=%r); skipped", origin, env_type)
            continue
        if env_type in installers:
            log.error(
                "%s serves EnvType %r, which another installer already serves; skipped", origin, env_type
            )
            continue
        installers[env_type] = installer
        log.info("%s serves EnvType %r", origin, env_type)
    return installers


def may_publish_entry_points(group: str, path: Sequence[str] | None = None) -> bool:
    """Whether a distribution on ``path`` (``sys.path``) may publish entry points in ``group``.

    ``importlib.metadata`` costs an agent about half a megabyte resident for as long as it
    runs (it brings ``zipfile`` and ``csv``; ``bench/agent_rss.py``), and on most devices no
    plug-in is installed. So ``load_installers`` asks it only when this says there may be
    one. False means certain: every entry of the path is a directory (or does not exist),
    none holds an ``.egg``, and no ``*.dist-info`` or ``*.egg-info`` in them has an
    ``entry_points.txt`` that mentions ``group``; and no finder other than the standard one
    on ``sys.meta_path`` can list distributions. Anything else (a zip file on the path, an
    egg, an unreadable directory listing, another distribution finder) is True, and
    ``importlib.metadata`` decides as before.
    """
    if any(finder is not PathFinder and hasattr(finder, "find_distributions") for finder in sys.meta_path):
        return True
    entries: Sequence[object] = sys.path if path is None else path  # sys.path may hold anything
    for entry in entries:
        if not isinstance(entry, str):
            return True
        directory = entry or "."
        try:
            names = os.listdir(directory)
        except (FileNotFoundError, NotADirectoryError) as exc:
            if isinstance(exc, NotADirectoryError) or os.path.exists(directory):
                return True  # a zip file (importlib.metadata reads those)
            continue  # nothing there
        except OSError:
            return True
        for name in names:
            if name.endswith(".egg"):
                return True
            if not name.endswith((".dist-info", ".egg-info")):
                continue
            try:
                with open(os.path.join(directory, name, "entry_points.txt"), encoding="utf-8") as file:
                    if group in file.read():
                        return True
            except (FileNotFoundError, NotADirectoryError):
                continue  # no entry points (or a PKG-INFO-only .egg-info file)
            except (OSError, UnicodeDecodeError):
                return True
    return False


def _loader(spec: str) -> Callable[[], Any]:
    """Import ``"module:attribute"`` lazily (errors surface in ``load_installers``' loop)."""

    def load() -> Any:
        module_name, _, attribute = spec.partition(":")
        if not module_name or not attribute:
            raise ValueError(f"{spec!r} is not 'module:factory'")
        return getattr(importlib.import_module(module_name), attribute)

    return load


def installer_for(env_type: str | None, installers: Mapping[str, Installer]) -> Installer:
    """The installer for ``env_type`` (None or empty: :data:`DEFAULT_ENV_TYPE`).

    An exact match wins; otherwise a match ignoring case, since servers type EnvType by hand.

    Raises:
        InstallError: 1413 (unsupported environment), naming the environments this device has.
    """
    wanted = env_type or DEFAULT_ENV_TYPE
    installer = installers.get(wanted)
    if installer is not None:
        return installer
    folded = [i for name, i in installers.items() if name.casefold() == wanted.casefold()]
    if len(folded) == 1:
        return folded[0]
    known = ", ".join(sorted(installers)) or "none"
    raise InstallError(
        ScomoResult.UNSUPPORTED_ENVIRONMENT,
        f"no installer for EnvType {wanted!r}; this device supports: {known}",
    )
