"""Installers: the archive installer with real shell hooks, its crash recovery at every step,
and the plug-in registry (entry points, broken plug-ins skipped)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from omadm.agent.scomo.installers import (
    DEFAULT_ENV_TYPE,
    ENTRY_POINT_GROUP,
    ArchiveInstaller,
    InstalledComponent,
    Installer,
    InstallError,
    installer_for,
    load_installers,
)
from omadm.agent.scomo.installers import archive as archive_module
from omadm.protocol.codes import ScomoResult

CID = "com.example.app"

# A hook that logs "<action> <version>" and keeps a "running" marker in the persistent state
# dir, so tests can tell which version is live and whether it was (re)started.
LOGGING_HOOK = 'echo "$OMADM_ACTION $OMADM_COMPONENT_VERSION" >> "$HOOK_LOG"\n'
ACTIVATE = LOGGING_HOOK + 'echo "$OMADM_COMPONENT_VERSION" > "$OMADM_COMPONENT_STATE_DIR/running"\n'
DEACTIVATE = LOGGING_HOOK + 'rm -f "$OMADM_COMPONENT_STATE_DIR/running"\n'
STANDARD = {"install": LOGGING_HOOK, "activate": ACTIVATE, "deactivate": DEACTIVATE, "remove": LOGGING_HOOK}


class Crash(BaseException):
    """Stands for the process dying: no ``except Exception`` handler sees it."""


@pytest.fixture
def hook_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "hooks.log"
    monkeypatch.setenv("HOOK_LOG", str(log))
    return log


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "archive"


@pytest.fixture
def inst(root: Path, hook_log: Path) -> ArchiveInstaller:
    return ArchiveInstaller(root, free_space_margin=0)


class Packages:
    """Builds component source directories with shell hooks."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.count = 0

    def __call__(
        self, version: str, hooks: dict[str, str] | None = None, files: dict[str, str] | None = None
    ) -> tuple[Path, dict[str, str]]:
        self.count += 1
        src = self.base / f"src-{self.count}"
        (src / "hooks").mkdir(parents=True)
        for name, text in {"app.txt": version, **(files or {})}.items():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_text(text)
        mapping = {}
        for action, body in (STANDARD if hooks is None else hooks).items():
            script = src / "hooks" / action
            script.write_text("#!/bin/sh\nset -e\n" + body)
            script.chmod(0o755)
            mapping[action] = f"hooks/{action}"
        return src, mapping


@pytest.fixture
def pkg(tmp_path: Path) -> Packages:
    return Packages(tmp_path / "sources")


def install(
    inst: ArchiveInstaller,
    pkg: Packages,
    version: str,
    *,
    hooks: dict[str, str] | None = None,
    active: bool = True,
    cid: str = CID,
    params: str | None = None,
) -> InstalledComponent:
    src, mapping = pkg(version, hooks)
    return inst.install(
        cid, "Example", version, src, pkg_id=f"pkg-{version}", hooks=mapping, active=active, params=params
    )


def log_lines(hook_log: Path) -> list[str]:
    return hook_log.read_text().splitlines() if hook_log.exists() else []


def state(root: Path, cid: str = CID) -> dict[str, Any]:
    data = json.loads((root / cid / "state.json").read_text())
    assert isinstance(data, dict)
    return data


def live(root: Path, cid: str = CID) -> str:
    """The version ``current`` serves (read through the symlink)."""
    return (root / cid / "current" / "app.txt").read_text()


def running(root: Path, cid: str = CID) -> str | None:
    marker = root / cid / "state" / "running"
    return marker.read_text().strip() if marker.exists() else None


def versions(root: Path, cid: str = CID) -> list[str]:
    return sorted(p.name for p in (root / cid / "versions").iterdir())


def assert_clean(root: Path) -> None:
    """No temporary names left anywhere, no pending step."""
    for path in root.rglob(".*"):
        raise AssertionError(f"leftover {path}")
    for state_file in root.glob("*/state.json"):
        assert json.loads(state_file.read_text())["pending"] is None


# ---------------------------------------------------------------------------------------
# Happy paths


def test_a_fresh_install_puts_files_in_place_and_activates(
    inst: ArchiveInstaller, pkg: Packages, root: Path, hook_log: Path
) -> None:
    src, mapping = pkg("1.0")
    component = inst.install(
        CID, "Example", "1.0", src, pkg_id="p1", hooks=mapping, active=True, params=None, description="An app"
    )
    assert component == InstalledComponent(CID, "Example", "1.0", "archive", "active", "p1", "An app")
    assert component.active
    assert not src.exists()  # the installer took the files over
    assert os.readlink(root / CID / "current") == "versions/1.0"
    assert live(root) == "1.0" and running(root) == "1.0"
    assert log_lines(hook_log) == ["install 1.0", "activate 1.0"]
    saved = state(root)
    assert saved["version"] == "1.0" and saved["previous_version"] is None and saved["state"] == "active"
    assert saved["hooks"] == mapping and saved["pending"] is None
    assert inst.get(CID) == component and inst.inventory() == [component]
    assert_clean(root)


def test_hooks_get_their_environment(
    inst: ArchiveInstaller, pkg: Packages, root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "env"
    out.mkdir()
    dump = (
        f'{{ echo "id=$OMADM_COMPONENT_ID"; echo "version=$OMADM_COMPONENT_VERSION"; '
        f'echo "dir=$OMADM_COMPONENT_DIR"; echo "statedir=$OMADM_COMPONENT_STATE_DIR"; '
        f'echo "params=$OMADM_INSTALL_PARAMS"; echo "previous=$OMADM_PREVIOUS_VERSION"; '
        f'echo "pwd=$(pwd -P)"; }} > "{out}/$OMADM_ACTION-$OMADM_COMPONENT_VERSION"\n'
    )

    def seen(name: str) -> dict[str, str]:
        lines = (out / name).read_text().splitlines()
        return dict(line.split("=", 1) for line in lines)

    install(inst, pkg, "1.0", hooks={"install": dump}, params="mode=fast")
    install(inst, pkg, "2.0", hooks={"install": dump, "activate": dump})
    assert seen("install-1.0") == {
        "id": CID,
        "version": "1.0",
        "dir": str(root / CID / "versions" / "1.0"),
        "statedir": str(root / CID / "state"),
        "params": "mode=fast",
        "previous": "",
        "pwd": str((root / CID / "versions" / "1.0").resolve()),
    }
    upgrade = seen("install-2.0")
    assert (upgrade["previous"], upgrade["params"]) == ("1.0", "")
    assert seen("activate-2.0")["pwd"] == str((root / CID / "versions" / "2.0").resolve())
    assert (root / CID / "state").is_dir()


def test_install_inactive_then_activate_and_deactivate(
    inst: ArchiveInstaller, pkg: Packages, root: Path, hook_log: Path
) -> None:
    assert install(inst, pkg, "1.0", active=False).state == "inactive"
    assert running(root) is None and log_lines(hook_log) == ["install 1.0"]
    assert inst.activate(CID).state == "active"
    assert running(root) == "1.0"
    assert inst.activate(CID).state == "active"  # already active: nothing runs
    assert inst.deactivate(CID).state == "inactive"
    assert inst.deactivate(CID).state == "inactive"
    assert running(root) is None
    assert log_lines(hook_log) == ["install 1.0", "activate 1.0", "deactivate 1.0"]
    assert state(root)["state"] == "inactive"
    assert_clean(root)


def test_remove_deactivates_runs_the_remove_hook_and_deletes(
    inst: ArchiveInstaller, pkg: Packages, root: Path, hook_log: Path
) -> None:
    install(inst, pkg, "1.0")
    inst.remove(CID)
    assert log_lines(hook_log)[-2:] == ["deactivate 1.0", "remove 1.0"]
    assert not (root / CID).exists()
    assert inst.get(CID) is None and inst.inventory() == []
    assert list(root.iterdir()) == []


def test_removing_an_inactive_component_runs_no_deactivate(
    inst: ArchiveInstaller, pkg: Packages, hook_log: Path
) -> None:
    install(inst, pkg, "1.0", active=False)
    inst.remove(CID)
    assert log_lines(hook_log) == ["install 1.0", "remove 1.0"]


def test_hooks_are_optional(inst: ArchiveInstaller, pkg: Packages, root: Path) -> None:
    component = install(inst, pkg, "1.0", hooks={})
    assert component.state == "active" and live(root) == "1.0"
    inst.deactivate(CID)
    inst.remove(CID)
    assert inst.get(CID) is None


# ---------------------------------------------------------------------------------------
# Upgrades, downgrades, reinstalls, rollback


def test_an_upgrade_keeps_the_previous_version_and_switches(
    inst: ArchiveInstaller, pkg: Packages, root: Path, hook_log: Path
) -> None:
    install(inst, pkg, "1.0")
    component = install(inst, pkg, "2.0")
    assert (component.version, component.state, component.pkg_id) == ("2.0", "active", "pkg-2.0")
    assert log_lines(hook_log)[2:] == ["install 2.0", "deactivate 1.0", "activate 2.0"]
    assert live(root) == "2.0" and running(root) == "2.0"
    assert versions(root) == ["1.0", "2.0"]
    saved = state(root)
    assert saved["previous_version"] == "1.0" and saved["previous"]["dir"] == "1.0"
    install(inst, pkg, "3.0")
    assert versions(root) == ["2.0", "3.0"]  # only one previous version is kept
    assert state(root)["previous_version"] == "2.0"
    assert_clean(root)


def test_the_switch_is_one_atomic_rename_of_a_symlink(
    inst: ArchiveInstaller, pkg: Packages, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(inst, pkg, "1.0")
    real_replace = os.replace
    seen: list[tuple[str, str]] = []

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(dst).name == "current":
            # up to this instant the old version is live and complete
            assert live(root) == "1.0"
            assert Path(src).is_symlink() and os.readlink(src) == "versions/2.0"
            assert (Path(src).parent / os.readlink(src) / "app.txt").read_text() == "2.0"
            seen.append((Path(src).name, Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    install(inst, pkg, "2.0")
    assert len(seen) == 1 and seen[0][0].startswith(".current-")
    assert live(root) == "2.0"


def test_an_upgrade_of_an_inactive_component_stays_inactive_unless_asked(
    inst: ArchiveInstaller, pkg: Packages, hook_log: Path
) -> None:
    install(inst, pkg, "1.0", active=False)
    assert install(inst, pkg, "2.0", active=False).state == "inactive"
    assert log_lines(hook_log) == ["install 1.0", "install 2.0"]
    assert install(inst, pkg, "3.0", active=True).state == "active"


def test_a_lower_version_installs_when_asked(inst: ArchiveInstaller, pkg: Packages, root: Path) -> None:
    install(inst, pkg, "2.0")
    assert install(inst, pkg, "1.0").version == "1.0"
    assert live(root) == "1.0" and state(root)["previous_version"] == "2.0"


def test_a_reinstall_of_the_same_version_goes_beside_it(
    inst: ArchiveInstaller, pkg: Packages, root: Path
) -> None:
    install(inst, pkg, "1.0")
    install(inst, pkg, "1.0")
    assert versions(root) == ["1.0", "1.0+1"]
    assert os.readlink(root / CID / "current") == "versions/1.0+1"
    rolled = inst.rollback(CID)
    assert rolled is not None and rolled.version == "1.0"
    assert os.readlink(root / CID / "current") == "versions/1.0" and versions(root) == ["1.0"]


def test_rollback_returns_to_the_previous_version(
    inst: ArchiveInstaller, pkg: Packages, root: Path, hook_log: Path
) -> None:
    install(inst, pkg, "1.0")
    install(inst, pkg, "2.0")
    rolled = inst.rollback(CID)
    assert rolled is not None
    assert (rolled.version, rolled.state, rolled.pkg_id) == ("1.0", "active", "pkg-1.0")
    assert log_lines(hook_log)[-2:] == ["deactivate 2.0", "activate 1.0"]
    assert live(root) == "1.0" and running(root) == "1.0" and versions(root) == ["1.0"]
    assert inst.rollback(CID) is None  # nothing older kept
    assert inst.rollback("unknown") is None
    assert_clean(root)


def test_rollback_whose_activation_fails_leaves_the_previous_version_inactive(
    inst: ArchiveInstaller, pkg: Packages, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    install(
        inst, pkg, "1.0", hooks={**STANDARD, "activate": ACTIVATE + "[ -e never-created ]\n"}, active=False
    )
    install(inst, pkg, "2.0")
    with caplog.at_level(logging.ERROR):
        rolled = inst.rollback(CID)
    assert rolled is not None and (rolled.version, rolled.state) == ("1.0", "inactive")
    assert "activate hook failed" in caplog.text


def test_no_rollback_when_the_previous_files_are_gone(
    inst: ArchiveInstaller, pkg: Packages, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    install(inst, pkg, "1.0")
    install(inst, pkg, "2.0")
    shutil.rmtree(root / CID / "versions" / "1.0")
    with caplog.at_level(logging.ERROR):
        assert inst.rollback(CID) is None
    assert "previous version's files are gone" in caplog.text
    assert live(root) == "2.0"


def test_a_foreign_directory_in_the_way_is_left_alone(
    inst: ArchiveInstaller, pkg: Packages, root: Path
) -> None:
    (root / CID / "notes").mkdir(parents=True)
    with pytest.raises(InstallError, match="it is not ours") as info:
        install(inst, pkg, "1.0")
    assert info.value.result == ScomoResult.INSTALL_FAILED
    assert (root / CID / "notes").is_dir()
    (root / CID / "notes").rmdir()  # an empty one is a harmless leftover
    assert install(inst, pkg, "1.0").version == "1.0"


# ---------------------------------------------------------------------------------------
# Failures roll back


def test_a_failing_install_hook_leaves_the_old_version_running(
    inst: ArchiveInstaller, pkg: Packages, root: Path, hook_log: Path
) -> None:
    install(inst, pkg, "1.0")
    with pytest.raises(InstallError) as info:
        install(inst, pkg, "2.0", hooks={**STANDARD, "install": 'echo "disk says no"\nexit 3\n'})
    assert info.value.result == ScomoResult.INSTALL_FAILED
    message = str(info.value)
    assert "install hook of com.example.app 2.0 exited with status 3" in message
    assert "disk says no" in message and "back at 1.0" in message
    component = inst.get(CID)
    assert component is not None and (component.version, component.state) == ("1.0", "active")
    assert live(root) == "1.0" and running(root) == "1.0"
    assert log_lines(hook_log) == ["install 1.0", "activate 1.0"]  # the old one was never stopped
    assert versions(root) == ["1.0"]
    assert_clean(root)


def test_a_failing_activate_hook_on_upgrade_restores_the_old_version(
    inst: ArchiveInstaller, pkg: Packages, root: Path, hook_log: Path
) -> None:
    install(inst, pkg, "1.0")
    with pytest.raises(InstallError) as info:
        install(inst, pkg, "2.0", hooks={**STANDARD, "activate": LOGGING_HOOK + "exit 1\n"})
    assert info.value.result == ScomoResult.ACTIVATE_FAILED
    assert log_lines(hook_log)[2:] == [
        "install 2.0",
        "deactivate 1.0",
        "activate 2.0",
        "deactivate 2.0",  # tidy the half-started new one
        "activate 1.0",
    ]
    component = inst.get(CID)
    assert component is not None and (component.version, component.state) == ("1.0", "active")
    assert live(root) == "1.0" and running(root) == "1.0" and versions(root) == ["1.0"]
    assert state(root)["previous_version"] is None
    assert_clean(root)


def test_a_failing_deactivate_of_the_old_version_aborts_the_upgrade(
    inst: ArchiveInstaller, pkg: Packages, root: Path
) -> None:
    install(inst, pkg, "1.0", hooks={**STANDARD, "deactivate": "exit 7\n"})
    with pytest.raises(InstallError) as info:
        install(inst, pkg, "2.0")
    assert info.value.result == ScomoResult.INSTALL_FAILED and "deactivate hook" in str(info.value)
    assert live(root) == "1.0" and running(root) == "1.0"


def test_a_failing_activation_of_a_new_component_removes_it(
    inst: ArchiveInstaller, pkg: Packages, root: Path, hook_log: Path
) -> None:
    with pytest.raises(InstallError) as info:
        install(inst, pkg, "1.0", hooks={**STANDARD, "activate": "exit 1\n"})
    assert info.value.result == ScomoResult.ACTIVATE_FAILED
    assert log_lines(hook_log) == ["install 1.0", "deactivate 1.0", "remove 1.0"]
    assert inst.get(CID) is None and list(root.iterdir()) == []


def test_an_os_error_while_staging_is_an_install_failure(
    inst: ArchiveInstaller, pkg: Packages, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(inst, pkg, "1.0")

    def broken(path: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(archive_module, "_fsync_tree", broken)
    with pytest.raises(InstallError) as info:
        install(inst, pkg, "2.0")
    assert info.value.result == ScomoResult.INSTALL_FAILED and "Input/output error" in str(info.value)
    assert live(root) == "1.0" and versions(root) == ["1.0"]
    assert_clean(root)


def test_a_full_disk_while_copying_is_out_of_memory(
    inst: ArchiveInstaller, pkg: Packages, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(path: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(archive_module, "_fsync_tree", full)
    with pytest.raises(InstallError) as info:
        install(inst, pkg, "1.0")
    assert info.value.result == ScomoResult.INSTALL_FAILED_OUT_OF_MEMORY
    assert list(root.iterdir()) == []


def test_files_are_copied_across_file_systems(
    inst: ArchiveInstaller, pkg: Packages, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, mapping = pkg("1.0", files={"lib/data.bin": "x" * 1000})
    (src / "link").symlink_to("app.txt")
    real_rename = os.rename

    def rename(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> None:
        if Path(a) == src:
            raise OSError(18, "Invalid cross-device link")
        real_rename(a, b)

    monkeypatch.setattr(os, "rename", rename)
    inst.install(CID, "Example", "1.0", src, pkg_id=None, hooks=mapping, active=True, params=None)
    assert not src.exists()
    version_dir = root / CID / "versions" / "1.0"
    assert (version_dir / "lib" / "data.bin").read_text() == "x" * 1000
    assert os.readlink(version_dir / "link") == "app.txt"


# ---------------------------------------------------------------------------------------
# Result codes


def test_1406_when_the_component_does_not_fit(
    root: Path, pkg: Packages, monkeypatch: pytest.MonkeyPatch, hook_log: Path
) -> None:
    inst = ArchiveInstaller(root, free_space_margin=1000)
    src, mapping = pkg("1.0", files={"big": "y" * 5000})
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: _Usage(5500))
    with pytest.raises(InstallError) as info:
        inst.install(CID, "Example", "1.0", src, pkg_id=None, hooks=mapping, active=True, params=None)
    assert info.value.result == ScomoResult.INSTALL_FAILED_OUT_OF_MEMORY
    assert "bytes needed" in str(info.value) and "5500 free" in str(info.value)
    assert src.exists() and list(root.iterdir()) == []  # nothing taken, nothing created


class _Usage:
    def __init__(self, free: int) -> None:
        self.total = self.used = 0
        self.free = free


def test_1408_when_the_remove_hook_fails_and_nothing_is_deleted(
    inst: ArchiveInstaller, pkg: Packages, root: Path, hook_log: Path
) -> None:
    install(inst, pkg, "1.0", hooks={**STANDARD, "remove": "echo cannot; exit 2\n"})
    with pytest.raises(InstallError) as info:
        inst.remove(CID)
    assert info.value.result == ScomoResult.REMOVE_FAILED and "cannot" in str(info.value)
    component = inst.get(CID)
    assert component is not None and component.state == "active"  # re-activated
    assert running(root) == "1.0" and live(root) == "1.0"
    assert log_lines(hook_log)[-2:] == ["deactivate 1.0", "activate 1.0"]
    assert_clean(root)


def test_1408_when_deactivation_before_removal_fails(inst: ArchiveInstaller, pkg: Packages) -> None:
    install(inst, pkg, "1.0", hooks={**STANDARD, "deactivate": "exit 1\n"})
    with pytest.raises(InstallError) as info:
        inst.remove(CID)
    assert info.value.result == ScomoResult.REMOVE_FAILED
    assert inst.get(CID) is not None


def test_1409_and_1410_leave_the_state_unchanged(
    inst: ArchiveInstaller, pkg: Packages, root: Path, hook_log: Path
) -> None:
    install(inst, pkg, "1.0", active=False, hooks={"activate": "exit 1\n", "deactivate": LOGGING_HOOK})
    with pytest.raises(InstallError) as info:
        inst.activate(CID)
    assert info.value.result == ScomoResult.ACTIVATE_FAILED
    assert state(root)["state"] == "inactive" and log_lines(hook_log) == ["deactivate 1.0"]  # tidied up
    install(inst, pkg, "2.0", active=True, hooks={"deactivate": "exit 1\n"})
    with pytest.raises(InstallError) as info:
        inst.deactivate(CID)
    assert info.value.result == ScomoResult.DEACTIVATE_FAILED
    component = inst.get(CID)
    assert component is not None and component.state == "active"
    assert_clean(root)


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda i: i.activate("nope"), ScomoResult.ACTIVATE_FAILED),
        (lambda i: i.deactivate("nope"), ScomoResult.DEACTIVATE_FAILED),
        (lambda i: i.remove("nope"), ScomoResult.REMOVE_FAILED),
    ],
)
def test_unknown_components(
    inst: ArchiveInstaller, call: Callable[[ArchiveInstaller], object], code: int
) -> None:
    with pytest.raises(InstallError, match="no component 'nope'") as info:
        call(inst)
    assert info.value.result == code
    assert inst.get("nope") is None


def test_1413_for_an_unknown_environment(inst: ArchiveInstaller) -> None:
    installers: dict[str, Installer] = {"archive": inst}
    assert installer_for("archive", installers) is inst
    assert installer_for("Archive", installers) is inst  # typed by hand on a server
    assert installer_for(None, installers) is inst and installer_for("", installers) is inst
    with pytest.raises(InstallError) as info:
        installer_for("osgi", installers)
    assert info.value.result == ScomoResult.UNSUPPORTED_ENVIRONMENT
    assert info.value.result == 1413
    assert str(info.value) == "no installer for EnvType 'osgi'; this device supports: archive"
    assert (
        repr(info.value)
        == "InstallError(1413, \"no installer for EnvType 'osgi'; this device supports: archive\")"
    )


def test_a_hook_that_hangs_is_killed(root: Path, pkg: Packages, hook_log: Path) -> None:
    inst = ArchiveInstaller(root, hook_timeout=0.5, free_space_margin=0)
    with pytest.raises(InstallError) as info:
        install(inst, pkg, "1.0", hooks={"install": "echo starting\nsleep 30 &\nsleep 30\n"})
    assert info.value.result == ScomoResult.INSTALL_FAILED
    assert "timed out after 0.5 s" in str(info.value) and "starting" in str(info.value)
    assert inst.get(CID) is None


def test_a_hook_that_cannot_run(inst: ArchiveInstaller, pkg: Packages) -> None:
    src, mapping = pkg("1.0")
    (src / "hooks" / "install").chmod(0o644)
    with pytest.raises(InstallError, match="could not be started") as info:
        inst.install(CID, "Example", "1.0", src, pkg_id=None, hooks=mapping, active=True, params=None)
    assert info.value.result == ScomoResult.INSTALL_FAILED


@pytest.mark.parametrize(
    ("hooks", "message"),
    [
        ({"configure": "x"}, "unknown hook 'configure'"),
        ({"install": "/bin/true"}, "relative path inside"),
        ({"install": "../../escape"}, "relative path inside"),
        ({"install": ""}, "relative path inside"),
    ],
)
def test_bad_hook_declarations_are_refused_before_anything_happens(
    inst: ArchiveInstaller, pkg: Packages, root: Path, hooks: dict[str, str], message: str
) -> None:
    src, _ = pkg("1.0")
    with pytest.raises(InstallError, match=message) as info:
        inst.install(CID, "Example", "1.0", src, pkg_id=None, hooks=hooks, active=True, params=None)
    assert info.value.result == ScomoResult.INSTALL_FAILED
    assert src.exists() and list(root.iterdir()) == []


def test_a_hook_symlinked_outside_the_component_is_refused(inst: ArchiveInstaller, pkg: Packages) -> None:
    src, _ = pkg("1.0")
    (src / "hooks" / "out").symlink_to("/bin/true")
    with pytest.raises(InstallError, match="points outside") as info:
        inst.install(
            CID, "Example", "1.0", src, pkg_id=None, hooks={"install": "hooks/out"}, active=True, params=None
        )
    assert info.value.result == ScomoResult.INSTALL_FAILED


@pytest.mark.parametrize("bad", ["", "a\x00b", "x" * 300])
def test_bad_ids_and_versions(inst: ArchiveInstaller, pkg: Packages, bad: str) -> None:
    src, mapping = pkg("1.0")
    for cid, version in ((bad, "1.0"), (CID, bad)):
        with pytest.raises(InstallError) as info:
            inst.install(cid, "n", version, src, pkg_id=None, hooks=mapping, active=True, params=None)
        assert info.value.result == ScomoResult.INSTALL_FAILED


def test_a_missing_source_directory(inst: ArchiveInstaller, tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="not a directory"):
        inst.install(CID, "n", "1.0", tmp_path / "nothing", pkg_id=None, hooks={}, active=True, params=None)


def test_any_id_and_version_string_stays_inside_the_root(
    inst: ArchiveInstaller, pkg: Packages, root: Path
) -> None:
    cid, version = "../../etc/evil", "../1.0 beta/ü"
    component = install(inst, pkg, version, cid=cid, hooks={})
    assert (component.id, component.version) == (cid, version)
    (entry,) = root.iterdir()
    assert entry.name == "%2E.%2F..%2Fetc%2Fevil"
    (version_dir,) = (entry / "versions").iterdir()
    assert version_dir.name.startswith("%2E") and "/" not in version_dir.name
    assert inst.get(cid) == component and inst.inventory() == [component]
    inst.remove(cid)
    assert list(root.iterdir()) == []


# ---------------------------------------------------------------------------------------
# Inventory


def test_the_inventory_includes_hand_installed_components_and_skips_the_rest(
    inst: ArchiveInstaller, pkg: Packages, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    install(inst, pkg, "1.0", cid="b.app")
    install(inst, pkg, "2.0", cid="a.app", active=False)
    hand = root / "tool"
    (hand / "versions" / "0.9").mkdir(parents=True)
    (hand / "versions" / "0.9" / "app.txt").write_text("0.9")
    (hand / "state.json").write_text('{"version": "0.9"}')
    (root / "half-built" / "versions").mkdir(parents=True)
    (root / "corrupt").mkdir()
    (root / "corrupt" / "state.json").write_text("{not json")
    (root / "stray-file").write_text("")
    with caplog.at_level(logging.INFO):
        found = inst.inventory()
    assert [(c.id, c.version, c.state, c.pkg_id) for c in found] == [
        ("a.app", "2.0", "inactive", "pkg-2.0"),
        ("b.app", "1.0", "active", "pkg-1.0"),
        ("tool", "0.9", "active", None),
    ]
    assert "half-built has no state.json" in caplog.text
    assert "corrupt/state.json is not valid JSON" in caplog.text
    assert (root / "half-built").exists() and (root / "corrupt").exists()
    # a hand-installed component is managed like any other; recovery gives it its current link
    inst.recover()
    assert live(root, "tool") == "0.9"
    assert inst.deactivate("tool").state == "inactive"
    inst.remove("tool")
    assert not hand.exists()


# ---------------------------------------------------------------------------------------
# Crash recovery

INSTALL_STEPS = ["stage", "install-hook", "deactivate-old", "switch", "activate", "commit"]


class Crashes:
    """Makes the installer "die" at a chosen point; :meth:`reboot` stands for a restart."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.patch = pytest.MonkeyPatch()

    def when(self, action: str, step: str, *, before: bool) -> None:
        """Die while recording ``step`` of ``action``: just before the record is durable, or just after.

        "before": the previous step was fully done and the record still names it. "after":
        the record names ``step`` but nothing of it was done.
        """
        real_write = ArchiveInstaller._write

        def write(inst: ArchiveInstaller, comp: Path, record: dict[str, Any]) -> None:
            pending = record.get("pending") or {}
            hit = pending.get("action") == action and pending.get("step") == step
            if hit and before:
                raise Crash(step)
            real_write(inst, comp, record)
            if hit:
                raise Crash(step)

        self.patch.setattr(ArchiveInstaller, "_write", write)

    def reboot(self) -> ArchiveInstaller:
        self.patch.undo()
        return ArchiveInstaller(self.root, free_space_margin=0)


@pytest.fixture
def crashes(root: Path) -> Iterator[Crashes]:
    crashes = Crashes(root)
    yield crashes
    crashes.patch.undo()


@pytest.mark.usefixtures("hook_log")
@pytest.mark.parametrize("before", [True, False], ids=["before-record", "after-record"])
@pytest.mark.parametrize("step", INSTALL_STEPS)
def test_an_upgrade_interrupted_at_any_step_is_recovered_consistently(
    pkg: Packages, crashes: Crashes, step: str, before: bool
) -> None:
    root = crashes.root
    inst = ArchiveInstaller(root, free_space_margin=0)
    install(inst, pkg, "1.0")
    crashes.when("install", step, before=before)
    with pytest.raises(Crash):
        install(inst, pkg, "2.0")
    if step == "stage" and before:
        assert state(root)["pending"] is None  # died before anything was recorded
    inst = crashes.reboot()
    inst.recover()
    component = inst.get(CID)
    assert component is not None
    # "before commit" recorded = the commit step was reached: finished; anything earlier: undone
    finished = step == "commit" and not before
    if finished:
        assert (component.version, component.state) == ("2.0", "active")
        assert live(root) == "2.0" and running(root) == "2.0" and versions(root) == ["1.0", "2.0"]
    else:
        assert (component.version, component.state) == ("1.0", "active")
        assert live(root) == "1.0" and running(root) == "1.0" and versions(root) == ["1.0"]
    assert_clean(root)
    again = [inst.get(CID), sorted(str(p) for p in root.rglob("*")), state(root)]
    inst.recover()
    assert [inst.get(CID), sorted(str(p) for p in root.rglob("*")), state(root)] == again


@pytest.mark.usefixtures("hook_log")
@pytest.mark.parametrize("before", [True, False], ids=["before-record", "after-record"])
@pytest.mark.parametrize("step", ["stage", "install-hook", "switch", "activate", "commit"])
def test_a_first_install_interrupted_at_any_step_is_all_or_nothing(
    pkg: Packages, crashes: Crashes, step: str, before: bool
) -> None:
    root = crashes.root
    inst = ArchiveInstaller(root, free_space_margin=0)
    crashes.when("install", step, before=before)
    with pytest.raises(Crash):
        install(inst, pkg, "1.0")
    inst = crashes.reboot()
    inst.recover()
    if step == "commit" and not before:
        component = inst.get(CID)
        assert component is not None and component.version == "1.0" and live(root) == "1.0"
    else:
        assert inst.get(CID) is None and list(root.iterdir()) == []
    assert_clean(root)


@pytest.mark.parametrize(
    "case",
    [
        ("deactivate", False, False),  # not started: undone
        ("remove-hook", True, False),  # deactivated only: undone (re-activated)
        ("remove-hook", False, True),  # the remove hook may have started: finished
        ("delete", True, True),
        ("delete", False, True),
    ],
)
def test_a_removal_interrupted_at_any_step(
    pkg: Packages, hook_log: Path, crashes: Crashes, case: tuple[str, bool, bool]
) -> None:
    """``case`` is (the step the crash hits, before its record?, removed after recovery?)."""
    step, before, removed = case
    root = crashes.root
    inst = ArchiveInstaller(root, free_space_margin=0)
    install(inst, pkg, "1.0")
    crashes.when("remove", step, before=before)
    with pytest.raises(Crash):
        inst.remove(CID)
    inst = crashes.reboot()
    inst.recover()
    if removed:
        assert inst.get(CID) is None and list(root.iterdir()) == []
        assert log_lines(hook_log)[-1] == "remove 1.0"
    else:
        component = inst.get(CID)
        assert component is not None and component.state == "active" and running(root) == "1.0"
    assert_clean(root)


@pytest.mark.usefixtures("hook_log")
def test_an_interrupted_removal_whose_remove_hook_now_fails_is_undone(
    pkg: Packages, crashes: Crashes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = crashes.root
    flag = tmp_path / "fail-now"
    monkeypatch.setenv("FAIL_FLAG", str(flag))
    inst = ArchiveInstaller(root, free_space_margin=0)
    install(inst, pkg, "1.0", hooks={**STANDARD, "remove": '[ ! -e "$FAIL_FLAG" ]\n'})
    crashes.when("remove", "remove-hook", before=False)
    with pytest.raises(Crash):
        inst.remove(CID)
    flag.touch()
    inst = crashes.reboot()
    inst.recover()
    component = inst.get(CID)
    assert component is not None and component.state == "active" and running(root) == "1.0"
    assert_clean(root)


def test_a_removal_interrupted_during_the_final_delete(root: Path, pkg: Packages, crashes: Crashes) -> None:
    inst = ArchiveInstaller(root, free_space_margin=0)
    install(inst, pkg, "1.0", hooks={})

    def crash_in_rmtree(path: Any, ignore_errors: bool = False) -> None:
        raise Crash("rmtree")

    crashes.patch.setattr(shutil, "rmtree", crash_in_rmtree)
    with pytest.raises(Crash):
        inst.remove(CID)
    assert [p.name.startswith(".trash-") for p in root.iterdir()] == [True]
    assert inst.inventory() == []  # the rename already took it out of sight
    inst = crashes.reboot()
    inst.recover()
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("action", ["activate", "deactivate"])
def test_an_interrupted_state_change_keeps_the_old_state(
    root: Path, pkg: Packages, hook_log: Path, crashes: Crashes, action: str
) -> None:
    inst = ArchiveInstaller(root, free_space_margin=0)
    install(inst, pkg, "1.0", active=action == "deactivate")
    crashes.when(action, "hook", before=False)
    with pytest.raises(Crash):
        getattr(inst, action)(CID)
    inst = crashes.reboot()
    inst.recover()
    component = inst.get(CID)
    assert component is not None
    assert component.state == ("inactive" if action == "activate" else "active")
    assert running(root) == (None if action == "activate" else "1.0")
    assert_clean(root)


@pytest.mark.parametrize("step", ["deactivate", "switch", "activate"])
def test_an_interrupted_rollback_is_finished(
    root: Path, pkg: Packages, hook_log: Path, crashes: Crashes, step: str
) -> None:
    inst = ArchiveInstaller(root, free_space_margin=0)
    install(inst, pkg, "1.0")
    install(inst, pkg, "2.0")
    crashes.when("rollback", step, before=False)
    with pytest.raises(Crash):
        inst.rollback(CID)
    inst = crashes.reboot()
    inst.recover()
    component = inst.get(CID)
    assert component is not None and (component.version, component.state) == ("1.0", "active")
    assert live(root) == "1.0" and running(root) == "1.0" and versions(root) == ["1.0"]
    assert_clean(root)


def test_a_crash_during_recovery_is_recovered_by_the_next_one(
    root: Path, pkg: Packages, hook_log: Path, crashes: Crashes
) -> None:
    inst = ArchiveInstaller(root, free_space_margin=0)
    install(inst, pkg, "1.0")
    crashes.when("install", "activate", before=False)
    with pytest.raises(Crash):
        install(inst, pkg, "2.0")
    inst = crashes.reboot()
    # the recovery dies too, just before it clears the pending install
    real_write = ArchiveInstaller._write

    def write(self: ArchiveInstaller, comp: Path, record: dict[str, Any]) -> None:
        if record.get("pending") is None:
            raise Crash("recovery")
        real_write(self, comp, record)

    crashes.patch.setattr(ArchiveInstaller, "_write", write)
    with pytest.raises(Crash):
        inst.recover()
    assert state(root)["pending"]["step"] == "activate"
    inst = crashes.reboot()
    inst.recover()
    component = inst.get(CID)
    assert component is not None and component.version == "1.0" and running(root) == "1.0"
    assert_clean(root)


def test_recover_sweeps_temporary_leftovers(inst: ArchiveInstaller, pkg: Packages, root: Path) -> None:
    install(inst, pkg, "1.0")
    comp = root / CID
    (comp / ".current-dead").symlink_to("versions/9.9")
    (comp / ".state.json.1234").write_text("{}")
    (comp / "versions" / ".staging-9.9").mkdir()
    (comp / "versions" / "0.1").mkdir()  # a version nothing refers to
    (root / ".trash-old-1234" / "x").mkdir(parents=True)
    (comp / "current").unlink()
    inst.recover()
    assert versions(root) == ["1.0"] and live(root) == "1.0"
    assert_clean(root)
    inst.recover()  # nothing left to do
    assert_clean(root)


def test_a_later_operation_recovers_first(
    root: Path, pkg: Packages, hook_log: Path, crashes: Crashes
) -> None:
    inst = ArchiveInstaller(root, free_space_margin=0)
    install(inst, pkg, "1.0")
    crashes.when("install", "switch", before=False)
    with pytest.raises(Crash):
        install(inst, pkg, "2.0")
    inst = crashes.reboot()
    # no recover() call: the next operation on the component finishes the job itself
    assert install(inst, pkg, "3.0").version == "3.0"
    assert versions(root) == ["1.0", "3.0"] and state(root)["previous_version"] == "1.0"


@pytest.mark.crash
def test_a_process_killed_inside_the_activate_hook(root: Path, pkg: Packages, hook_log: Path) -> None:
    inst = ArchiveInstaller(root, free_space_margin=0)
    install(inst, pkg, "1.0")
    src, mapping = pkg("2.0", {**STANDARD, "activate": LOGGING_HOOK + "kill -9 $PPID\nsleep 2\n"})
    program = textwrap.dedent(
        f"""
        from pathlib import Path
        from omadm.agent.scomo.installers import ArchiveInstaller
        installer = ArchiveInstaller(Path({str(root)!r}), free_space_margin=0)
        installer.install(
            {CID!r}, "Example", "2.0", Path({str(src)!r}),
            pkg_id="p2", hooks={mapping!r}, active=True, params=None,
        )
        """
    )
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=60, check=False)
    assert proc.returncode == -9, proc.stderr
    assert state(root)["pending"]["step"] == "activate"
    assert live(root) == "2.0"  # the switch had happened
    ArchiveInstaller(root, free_space_margin=0).recover()
    component = inst.get(CID)
    assert component is not None and (component.version, component.state) == ("1.0", "active")
    assert live(root) == "1.0" and running(root) == "1.0"
    assert_clean(root)


# ---------------------------------------------------------------------------------------
# Plug-ins


class FakeInstaller(ArchiveInstaller):
    """A plug-in installer: the archive one under another EnvType."""


def fake_factory(data_dir: Path) -> Installer:
    return FakeInstaller(data_dir / "fake", env_type="fake")


def failing_factory(data_dir: Path) -> Installer:
    raise RuntimeError("plug-in exploded")


def not_an_installer(data_dir: Path) -> object:
    return object()


def claims_archive(data_dir: Path) -> Installer:
    return ArchiveInstaller(data_dir / "other")


def no_env_type(data_dir: Path) -> Installer:
    return ArchiveInstaller(data_dir / "none", env_type="")


def _entry_points(*specs: tuple[str, str]) -> Callable[..., Any]:
    eps = [metadata.EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in specs]

    def entry_points(**params: str) -> list[metadata.EntryPoint]:
        assert params == {"group": ENTRY_POINT_GROUP}
        return eps

    return entry_points


def test_the_builtin_archive_installer_is_always_there(tmp_path: Path) -> None:
    installers = load_installers(tmp_path)
    archive = installers[DEFAULT_ENV_TYPE]
    assert isinstance(archive, ArchiveInstaller) and isinstance(archive, Installer)
    assert archive.root == tmp_path / "archive" and archive.root.is_dir()


def test_plug_ins_come_from_entry_points_and_broken_ones_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    here = __name__
    monkeypatch.setattr(
        metadata,
        "entry_points",
        _entry_points(
            ("fake", f"{here}:fake_factory"),
            ("missing", "no_such_module_for_omadm:factory"),
            ("exploding", f"{here}:failing_factory"),
            ("object", f"{here}:not_an_installer"),
            ("again", f"{here}:claims_archive"),
            ("nameless", f"{here}:no_env_type"),
        ),
    )
    with caplog.at_level(logging.INFO):
        installers = load_installers(tmp_path)
    assert sorted(installers) == ["archive", "fake"]
    assert isinstance(installers["fake"], FakeInstaller)
    text = caplog.text
    assert "'missing'" in text and "No module named 'no_such_module_for_omadm'" in text
    assert "'exploding'" in text and "plug-in exploded" in text
    assert "'object'" in text and "not an installer" in text
    assert "'again'" in text and "already serves" in text
    assert "'nameless'" in text and "no EnvType" in text
    assert installer_for("fake", installers) is installers["fake"]


def test_a_plug_in_from_an_installed_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "omadm_test_plugin.py").write_text(
        textwrap.dedent(
            """
            from omadm.agent.scomo.installers import ArchiveInstaller

            def make(data_dir):
                return ArchiveInstaller(data_dir / "tarball", env_type="tarball")
            """
        )
    )
    dist = site / "omadm_test_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: omadm-test-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\ntarball = omadm_test_plugin:make\n")
    monkeypatch.syspath_prepend(str(site))
    try:
        installers = load_installers(tmp_path / "data")
    finally:
        sys.modules.pop("omadm_test_plugin", None)
    assert sorted(installers) == ["archive", "tarball"]
    tarball = installers["tarball"]
    assert isinstance(tarball, ArchiveInstaller) and tarball.root == tmp_path / "data" / "tarball"


@pytest.fixture(autouse=True)
def _no_stray_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests see only the plug-ins they install, whatever the environment has."""
    real = metadata.entry_points

    def only_test_ones(*, group: str) -> list[metadata.EntryPoint]:
        return [ep for ep in real(group=group) if ep.value.startswith("omadm_test_plugin")]

    monkeypatch.setattr(metadata, "entry_points", only_test_ones)
    yield
