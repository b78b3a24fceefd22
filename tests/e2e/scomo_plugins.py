"""Installer plug-ins for the SCOMO end-to-end tests, loaded by the agent process itself.

The agent under test names them in ``[scomo] installers`` (``"tests.e2e.scomo_plugins:..."``;
the test puts the repository root on its ``PYTHONPATH``), exactly as a product would name its
own. Each serves one EnvType and fails its install the way a real plug-in might:

* ``unfinished`` (EnvType ``stub``): an environment whose installer has no install step yet
  (``NotImplementedError``): the device must report 1411 Not Implemented.
* ``crashing`` (EnvType ``crashy``): an installer with a bug (an exception it did not
  classify): the device must report 1412 Undefined Error, not crash or hang.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from omadm.agent.scomo.installers.base import InstalledComponent


class _FailingInstaller:
    """An installer that knows no components and whose every change raises ``failure()``."""

    def __init__(self, env_type: str, failure: Callable[[str], Exception]) -> None:
        self.env_type = env_type
        self._failure = failure

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
        raise self._failure(f"install {component_id} {version}")

    def activate(self, component_id: str) -> InstalledComponent:
        raise self._failure(f"activate {component_id}")

    def deactivate(self, component_id: str) -> InstalledComponent:
        raise self._failure(f"deactivate {component_id}")

    def remove(self, component_id: str) -> None:
        raise self._failure(f"remove {component_id}")

    def rollback(self, component_id: str) -> InstalledComponent | None:
        return None

    def get(self, component_id: str) -> InstalledComponent | None:
        return None

    def inventory(self) -> list[InstalledComponent]:
        return []

    def recover(self) -> None:
        pass


def unfinished(data_dir: Path) -> _FailingInstaller:
    """EnvType ``stub``: every step is missing (``NotImplementedError``, result 1411)."""
    return _FailingInstaller("stub", lambda what: NotImplementedError(f"the stub environment cannot {what}"))


def crashing(data_dir: Path) -> _FailingInstaller:
    """EnvType ``crashy``: every step hits a bug (``RuntimeError``, result 1412)."""
    return _FailingInstaller("crashy", lambda what: RuntimeError(f"crashy installer bug during {what}"))
