"""Installers: one per execution environment (SCOMO EnvType), built in or plug-in.

:mod:`.base` holds the contract (:class:`Installer`, :class:`InstalledComponent`,
:class:`InstallError`) and the plug-in registry (:func:`load_installers`, entry-point group
``omadm.installers``); :mod:`.archive` the built-in ``archive`` installer (versioned
directories, an atomically switched ``current`` symlink, script hooks, crash recovery).
"""

from __future__ import annotations

from .archive import ArchiveInstaller
from .base import (
    DEFAULT_ENV_TYPE,
    ENTRY_POINT_GROUP,
    ComponentState,
    InstalledComponent,
    Installer,
    InstallerFactory,
    InstallError,
    installer_for,
    load_installers,
)

__all__ = [
    "DEFAULT_ENV_TYPE",
    "ENTRY_POINT_GROUP",
    "ArchiveInstaller",
    "ComponentState",
    "InstallError",
    "InstalledComponent",
    "Installer",
    "InstallerFactory",
    "installer_for",
    "load_installers",
]
