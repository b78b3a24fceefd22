"""The built-in ``archive`` installer: versioned directories, one atomic pointer, script hooks.

Layout under the installer's root (one directory per component)::

    <root>/<component-id>/versions/<version>/   the files of each kept version
    <root>/<component-id>/current               symlink -> versions/<version> (the live one)
    <root>/<component-id>/state/                the component's own data, kept across versions
    <root>/<component-id>/state.json            what is installed, and any step in progress

Names are percent-encoded, so any id or version string is a safe directory name; a reinstall
of the version that is already there goes beside it as ``<version>+1``.

Why this shape: an upgrade unpacks the new version *beside* the old one, runs its install
hook while the old one still serves, and then switches ``current`` with one ``rename`` (a new
symlink under a temporary name, then ``os.replace``), which is atomic on POSIX: at every
instant ``current`` names a complete version. The previous version stays on disk, so a failed
activation, or a later :meth:`ArchiveInstaller.rollback`, switches back without copying.

Write ahead (DESIGN rule 5): every operation first records ``pending`` in ``state.json``
(temporary file, fsync, rename, fsync of the directory) and updates its ``step`` before each
step, so :meth:`ArchiveInstaller.recover` knows how far a crash got. The rule: an operation
interrupted before its commit is undone (the component is fully the old version, in its old
state; a first install disappears), one interrupted at its commit is finished. Undoing is
cheap and certain as long as the old version's files are untouched, which they are until the
commit. Three cases run forwards instead, because going back would be the less consistent
choice: ``rollback`` (it is an undo itself), and a removal whose ``remove`` hook had started
(the hook is run again, then the directory deleted; only if the hook fails is the removal
undone) or finished. A new component directory is built under a temporary name and renamed
into place, and a removed one is renamed away before it is deleted, so no half-made or
half-deleted component is ever listed.

Hooks are executables inside the version directory, named by the package (``install``,
``activate``, ``deactivate``, ``remove``). They run with the version directory as working
directory, a timeout, the output captured (its last lines go into the error), and these
environment variables: ``OMADM_COMPONENT_ID``, ``OMADM_COMPONENT_VERSION``,
``OMADM_COMPONENT_DIR`` (the version directory), ``OMADM_COMPONENT_STATE_DIR`` (the persistent
``state/``), ``OMADM_ACTION``, ``OMADM_INSTALL_PARAMS`` and ``OMADM_PREVIOUS_VERSION`` (empty
unless upgrading). Hooks should be idempotent: recovery may run one again.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import shutil
import signal
import threading
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote

from omadm.protocol.codes import ScomoResult

from .base import DEFAULT_ENV_TYPE, ComponentState, InstalledComponent, InstallError

__all__ = ["DEFAULT_FREE_SPACE_MARGIN", "DEFAULT_HOOK_TIMEOUT", "HOOK_ACTIONS", "ArchiveInstaller"]

log = logging.getLogger(__name__)

#: The actions a package may attach a hook to.
HOOK_ACTIONS = ("install", "activate", "deactivate", "remove")
#: Seconds a hook may run before it is killed (with its process group) and the step fails.
DEFAULT_HOOK_TIMEOUT = 300.0
#: Bytes kept free beyond the component's size: a full disk breaks more than this install.
DEFAULT_FREE_SPACE_MARGIN = 16 * 1024 * 1024

_STATE_FILE = "state.json"
_FORMAT = 1
_TAIL_LINES = 20
_TAIL_CHARS = 2000
_MAX_NAME = 200

# Temporary names start with a dot: component and version directories never do (encoding).
_STAGING = ".staging-"
_TMP_LINK = ".current-"
_TMP_STATE = ".state.json."
_TRASH = ".trash-"
_NEW = ".new-"

_Record = dict[str, Any]


class _HookFailed(Exception):
    """A hook exited non-zero, timed out or could not be started."""


def _segment(text: str) -> str:
    """``text`` as one safe directory name: percent-encoded, never starting with a dot."""
    encoded = quote(text, safe="")
    if encoded.startswith("."):
        encoded = "%2E" + encoded[1:]
    return encoded


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    """Make a freshly written tree durable before anything points at it."""
    for dirpath, _dirnames, filenames in os.walk(path):
        for filename in filenames:
            file_path = os.path.join(dirpath, filename)
            if os.path.islink(file_path) or not os.path.isfile(file_path):
                continue
            fd = os.open(file_path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirnames, filenames in os.walk(path):
        for filename in filenames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, filename)).st_size
    return total


def _tail(output: str) -> str:
    lines = output.strip().splitlines()[-_TAIL_LINES:]
    text = "\n".join(lines)
    return text[-_TAIL_CHARS:]


class ArchiveInstaller:
    """Components as plain directory trees with script hooks (EnvType ``archive``).

    Args:
        root: the installer's directory (created if missing).
        hook_timeout: seconds before a hook is killed and its step fails.
        free_space_margin: bytes that must stay free after an install (else result 1406).
        env_type: the EnvType served (``archive``; another name lets one class serve two roots).
    """

    def __init__(
        self,
        root: Path,
        *,
        hook_timeout: float = DEFAULT_HOOK_TIMEOUT,
        free_space_margin: int = DEFAULT_FREE_SPACE_MARGIN,
        env_type: str = DEFAULT_ENV_TYPE,
    ) -> None:
        self.root = Path(root)
        self.hook_timeout = hook_timeout
        self.free_space_margin = free_space_margin
        self.env_type = env_type
        self._lock = threading.RLock()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"ArchiveInstaller({str(self.root)!r}, env_type={self.env_type!r})"

    # -- reading -------------------------------------------------------------------------

    def component_dir(self, component_id: str) -> Path:
        """Where the component with that id lives (whether or not it is installed)."""
        return self.root / _segment(component_id)

    def get(self, component_id: str) -> InstalledComponent | None:
        """The installed component, as last committed (a step in progress does not show)."""
        with self._lock:
            comp = self.component_dir(component_id)
            try:
                record = self._read(comp)
            except InstallError as exc:
                log.warning("%s", exc)
                return None
            return None if record is None else self._component(record, comp)

    def inventory(self) -> list[InstalledComponent]:
        """Every committed component under the root, sorted by id.

        A directory without ``state.json`` (or with an unreadable one) is not a component:
        it is skipped with a log line, never deleted, since someone may be building it by hand.
        A hand-written ``state.json`` needs only ``version``; the rest has defaults.
        """
        found: list[InstalledComponent] = []
        with self._lock:
            for comp in sorted(self.root.iterdir()):
                if comp.name.startswith(".") or not comp.is_dir():
                    continue
                try:
                    record = self._read(comp)
                except InstallError as exc:
                    log.warning("%s; not listed", exc)
                    continue
                if record is None:
                    if not (comp / _STATE_FILE).exists():
                        log.info("%s has no %s: not a component, ignored", comp, _STATE_FILE)
                    continue
                component = self._component(record, comp)
                if component is not None:
                    found.append(component)
        return sorted(found, key=lambda c: c.id)

    # -- install / upgrade -----------------------------------------------------------------

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
        """Install ``source_dir`` as ``version`` of the component (a new one, or an upgrade in place).

        Steps, each recorded before it is taken: move the files to ``versions/<version>``,
        run the new ``install`` hook, run the old version's ``deactivate`` hook (upgrade of an
        active component), switch ``current``, run the new ``activate`` hook (if ``active``),
        commit. Any failure undoes what was done (the old version is switched back and
        re-activated if it was active; a new component disappears) and raises.

        Raises:
            InstallError: 1405 (bad arguments, a failed hook or step), 1406 (no space),
                1409 (the activate hook failed).
        """
        self._check_name("component id", component_id)
        self._check_name("version", version)
        hook_map = self._check_hooks(hooks)
        source = Path(source_dir)
        if not source.is_dir():
            raise InstallError(ScomoResult.INSTALL_FAILED, f"{source} is not a directory of component files")
        with self._lock:
            comp = self.component_dir(component_id)
            if (comp / _STATE_FILE).exists():
                self._recover_component(comp)  # a step a crash left behind goes first
            self._check_space(source, component_id)
            record = self._read(comp)
            fresh = record is None or record.get("version") is None
            if record is None or fresh:
                record = {
                    "format": _FORMAT,
                    "id": component_id,
                    "name": name,
                    "env_type": self.env_type,
                    "version": None,
                    "dir": None,
                    "state": None,
                    "pkg_id": pkg_id,
                    "description": description,
                    "hooks": {},
                    "params": params,
                    "previous_version": None,
                    "previous": None,
                    "pending": None,
                }
            record["pending"] = {
                "action": "install",
                "step": "stage",
                "fresh": fresh,
                "was_active": not fresh and record.get("state") == "active",
                "version": version,
                "dir": self._free_dir_name(comp, version),
                "active": active,
                "name": name,
                "pkg_id": pkg_id,
                "description": description,
                "hooks": hook_map,
                "params": params,
            }
            try:
                if (comp / _STATE_FILE).exists():
                    self._write(comp, record)
                else:
                    self._create(comp, record)
            except OSError as exc:
                raise self._as_install_error(exc, component_id, version) from exc
            try:
                self._run_install(comp, record, source)
            except Exception as exc:
                failure = self._as_install_error(exc, component_id, version)
                self._undo_quietly(comp, record)
                after = "" if fresh else f"; {component_id} is back at {record.get('version')}"
                raise InstallError(failure.result, f"{failure.message}{after}") from exc
            component = self._component(record, comp)
            assert component is not None
            return component

    def _run_install(self, comp: Path, record: _Record, source: Path) -> None:
        pending = record["pending"]
        versions = comp / "versions"
        staging = versions / f"{_STAGING}{pending['dir']}"
        target = versions / pending["dir"]
        shutil.rmtree(staging, ignore_errors=True)
        try:
            os.rename(source, staging)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            shutil.copytree(source, staging, symlinks=True)
            shutil.rmtree(source, ignore_errors=True)
        _fsync_tree(staging)
        os.rename(staging, target)
        _fsync_dir(versions)

        self._step(comp, record, "install-hook")
        self._hook(comp, record, "install", pending, ScomoResult.INSTALL_FAILED)
        if pending["was_active"]:
            self._step(comp, record, "deactivate-old")
            self._hook(comp, record, "deactivate", record, ScomoResult.INSTALL_FAILED)
        self._step(comp, record, "switch")
        self._switch(comp, pending["dir"])
        if pending["active"]:
            self._step(comp, record, "activate")
            self._hook(comp, record, "activate", pending, ScomoResult.ACTIVATE_FAILED)
        self._step(comp, record, "commit")
        self._commit_install(comp, record)

    def _create(self, comp: Path, record: _Record) -> None:
        """Make a new component directory appear whole: built under a temporary name, then renamed."""
        if comp.exists():
            try:
                comp.rmdir()  # an empty leftover is harmless
            except OSError:
                raise InstallError(
                    ScomoResult.INSTALL_FAILED,
                    f"{comp} exists but holds no {_STATE_FILE}: it is not ours, so it is left alone",
                ) from None
        new = self.root / f"{_NEW}{secrets.token_hex(4)}"
        for sub in ("versions", "state"):
            (new / sub).mkdir(parents=True)
        self._write(new, record)
        os.rename(new, comp)
        _fsync_dir(self.root)

    def _commit_install(self, comp: Path, record: _Record) -> None:
        pending = record["pending"]
        if not pending["fresh"]:
            record["previous"] = {
                key: record.get(key)
                for key in ("version", "dir", "name", "pkg_id", "description", "hooks", "params")
            }
            record["previous_version"] = record.get("version")
        for key in ("version", "dir", "name", "pkg_id", "description", "hooks", "params"):
            record[key] = pending[key]
        record["state"] = "active" if pending["active"] else "inactive"
        record["pending"] = None
        self._write(comp, record)
        self._prune(comp, record)

    # -- activate / deactivate -------------------------------------------------------------

    def activate(self, component_id: str) -> InstalledComponent:
        """Run the ``activate`` hook and mark the component active (already active: nothing to do).

        Raises:
            InstallError: 1409 (unknown component or failed hook; the state stays inactive).
        """
        return self._set_state(component_id, "active")

    def deactivate(self, component_id: str) -> InstalledComponent:
        """Run the ``deactivate`` hook and mark the component inactive (already inactive: nothing to do).

        Raises:
            InstallError: 1410 (unknown component or failed hook; the state stays active).
        """
        return self._set_state(component_id, "inactive")

    def _set_state(self, component_id: str, wanted: ComponentState) -> InstalledComponent:
        action = "activate" if wanted == "active" else "deactivate"
        code = ScomoResult.ACTIVATE_FAILED if wanted == "active" else ScomoResult.DEACTIVATE_FAILED
        with self._lock:
            comp, record = self._existing(component_id, code)
            if record.get("state", "active") != wanted:
                record["pending"] = {"action": action, "step": "hook"}
                self._write(comp, record)
                try:
                    self._hook(comp, record, action, record, code)
                except Exception as exc:
                    self._undo_quietly(comp, record)
                    raise self._as_error(exc, code, f"{action} of {component_id}") from exc
                record["state"] = wanted
                record["pending"] = None
                self._write(comp, record)
            component = self._component(record, comp)
            assert component is not None
            return component

    # -- remove ----------------------------------------------------------------------------

    def remove(self, component_id: str) -> None:
        """Deactivate (if active), run the ``remove`` hook, then delete the component's directory.

        Raises:
            InstallError: 1408 (unknown component, or a hook failed: then nothing is deleted
                and an active component is re-activated).
        """
        code = ScomoResult.REMOVE_FAILED
        with self._lock:
            comp, record = self._existing(component_id, code)
            was_active = record.get("state", "active") == "active"
            record["pending"] = {
                "action": "remove",
                "step": "deactivate" if was_active else "remove-hook",
                "was_active": was_active,
            }
            self._write(comp, record)
            try:
                if was_active:
                    self._hook(comp, record, "deactivate", record, code)
                    self._step(comp, record, "remove-hook")
                self._hook(comp, record, "remove", record, code)
                self._step(comp, record, "delete")
            except Exception as exc:
                self._undo_quietly(comp, record)
                raise self._as_error(exc, code, f"removal of {component_id}") from exc
            self._delete_component(comp)

    # -- rollback --------------------------------------------------------------------------

    def rollback(self, component_id: str) -> InstalledComponent | None:
        """Switch back to the version the last upgrade replaced, and forget the newer one.

        The current version is deactivated (if active), ``current`` switched to the previous
        version, which is activated if the component was active. If that activation fails
        the component stays on the previous version, inactive (logged). Returns None (and
        changes nothing) for an unknown component or one without a previous version.
        """
        with self._lock:
            comp = self.component_dir(component_id)
            if (comp / _STATE_FILE).exists():
                self._recover_component(comp)
            record = self._read(comp)
            if record is None or record.get("version") is None or not record.get("previous"):
                return None
            if not (comp / "versions" / str(record["previous"].get("dir"))).is_dir():
                log.error("%s: the previous version's files are gone; no rollback", component_id)
                return None
            was_active = record.get("state", "active") == "active"
            record["pending"] = {"action": "rollback", "step": "deactivate", "was_active": was_active}
            self._write(comp, record)
            if was_active:
                self._best_effort(comp, record, "deactivate", record)
            self._finish_rollback(comp, record)
            return self._component(record, comp)

    def _finish_rollback(self, comp: Path, record: _Record) -> None:
        pending = record["pending"]
        previous = record["previous"]
        self._step(comp, record, "switch")
        self._switch(comp, previous["dir"])
        state: ComponentState = "inactive"
        if pending["was_active"]:
            self._step(comp, record, "activate")
            state = "active" if self._best_effort(comp, record, "activate", previous) else "inactive"
        for key in ("version", "dir", "name", "pkg_id", "description", "hooks", "params"):
            record[key] = previous.get(key)
        record["state"] = state
        record["previous"] = None
        record["previous_version"] = None
        record["pending"] = None
        self._write(comp, record)
        self._prune(comp, record)

    # -- recovery --------------------------------------------------------------------------

    def recover(self) -> None:
        """Finish or undo every step a crash interrupted, then sweep temporary leftovers.

        Idempotent: running it twice, or after a crash during recovery, is safe. Components
        whose ``state.json`` cannot be read are logged and left alone.
        """
        with self._lock:
            for entry in sorted(self.root.iterdir()):
                if entry.name.startswith((_TRASH, _NEW)):
                    shutil.rmtree(entry, ignore_errors=True)
                    continue
                if entry.name.startswith(".") or not entry.is_dir():
                    continue
                if not (entry / _STATE_FILE).exists():
                    log.info("%s has no %s: not a component, ignored", entry, _STATE_FILE)
                    continue
                try:
                    self._recover_component(entry)
                except Exception:
                    log.exception("could not recover %s; left as it is", entry)

    def _recover_component(self, comp: Path) -> None:
        record = self._read(comp)
        if record is None:
            return
        pending = record.get("pending")
        if pending:
            action, step = pending.get("action"), pending.get("step")
            log.warning("%s: %s interrupted at step %r; recovering", comp.name, action, step)
            if (action == "install" and step == "commit") or (action == "remove" and step == "delete"):
                self._finish(comp, record)
            elif action == "remove" and step == "remove-hook":
                self._finish_removal(comp, record)
            elif action == "rollback":
                self._finish_rollback(comp, record)
            else:
                self._undo(comp, record)
        if (comp / _STATE_FILE).exists():
            record = self._read(comp)
            if record is not None:
                self._sweep(comp, record)

    def _finish_removal(self, comp: Path, record: _Record) -> None:
        """A removal whose remove hook may have run partly: run it again and delete, or undo if it fails."""
        try:
            self._hook(comp, record, "remove", record, ScomoResult.REMOVE_FAILED)
        except InstallError as exc:
            log.error(
                "%s: the interrupted removal cannot be finished (%s); undoing it", record.get("id"), exc
            )
            self._undo(comp, record)
            return
        self._step(comp, record, "delete")
        self._delete_component(comp)

    def _finish(self, comp: Path, record: _Record) -> None:
        pending = record["pending"]
        if pending["action"] == "install":
            self._switch(comp, pending["dir"])
            self._commit_install(comp, record)
        else:
            self._delete_component(comp)

    def _undo(self, comp: Path, record: _Record) -> None:
        """Take back an uncommitted install, activate, deactivate or remove (also after a crash).

        Repeatable: every action is either already undone or harmless to redo, and ``pending``
        is cleared last, so a crash during the undo leads to the same undo again.
        """
        pending = record["pending"]
        action, step = pending["action"], pending["step"]
        if action == "install":
            self._undo_install(comp, record)
            return
        if action == "activate":
            self._best_effort(comp, record, "deactivate", record)
        elif action == "deactivate" or (action == "remove" and pending.get("was_active")):
            if self._best_effort(comp, record, "activate", record):
                record["state"] = "active"
            else:
                record["state"] = "inactive"
                log.error("%s: could not re-activate it after the interrupted %s", record.get("id"), action)
        elif action != "remove":
            log.error("%s: unknown pending action %r (step %r) dropped", record.get("id"), action, step)
        record["pending"] = None
        self._write(comp, record)

    def _undo_quietly(self, comp: Path, record: _Record) -> None:
        """Undo after a failure; if the undo itself fails, ``pending`` stays for :meth:`recover`."""
        action = (record.get("pending") or {}).get("action")
        try:
            self._undo(comp, record)
        except Exception:
            log.exception(
                "%s: undoing the failed %s failed too; recover() will retry", record.get("id"), action
            )

    def _undo_install(self, comp: Path, record: _Record) -> None:
        pending = record["pending"]
        step = pending["step"]
        order = ("stage", "install-hook", "deactivate-old", "switch", "activate", "commit")
        reached = order.index(step) if step in order else len(order) - 1
        if reached >= order.index("activate"):
            self._best_effort(comp, record, "deactivate", pending)
        if pending["fresh"]:
            if reached >= order.index("install-hook"):
                self._best_effort(comp, record, "remove", pending)
            self._delete_component(comp)
            return
        if reached >= order.index("switch"):
            self._switch(comp, record["dir"])
        reactivate = pending["was_active"] and reached >= order.index("deactivate-old")
        if reactivate and not self._best_effort(comp, record, "activate", record):
            record["state"] = "inactive"
            log.error("%s: the previous version could not be re-activated", record.get("id"))
        new_dir = comp / "versions" / pending["dir"]
        if pending["dir"] not in (record.get("dir"), (record.get("previous") or {}).get("dir")):
            shutil.rmtree(new_dir, ignore_errors=True)
            shutil.rmtree(comp / "versions" / f"{_STAGING}{pending['dir']}", ignore_errors=True)
        record["pending"] = None
        self._write(comp, record)

    def _sweep(self, comp: Path, record: _Record) -> None:
        """Remove temporary names and versions nothing refers to; make ``current`` match the state."""
        for entry in comp.iterdir():
            if entry.name.startswith((_TMP_LINK, _TMP_STATE)):
                entry.unlink(missing_ok=True)
        if record.get("pending"):
            return
        current = record.get("dir")
        if current is not None and (comp / "versions" / current).is_dir():
            link = comp / "current"
            if not link.is_symlink() or os.readlink(link) != f"versions/{current}":
                log.warning("%s: current did not point at %s; fixed", comp.name, current)
                self._switch(comp, current)
        self._prune(comp, record)

    def _prune(self, comp: Path, record: _Record) -> None:
        """Delete versions other than the current and the previous one (and staging leftovers)."""
        versions = comp / "versions"
        if not versions.is_dir():
            return
        keep = {record.get("dir"), (record.get("previous") or {}).get("dir")}
        pending = record.get("pending")
        if pending and pending.get("dir"):
            keep.add(pending["dir"])
        # Never raises: it runs after a commit, when there is nothing left to undo.
        try:
            for entry in versions.iterdir():
                if entry.name in keep:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("%s: could not delete old versions: %s", comp.name, exc)

    # -- the pieces ------------------------------------------------------------------------

    def _component(self, record: _Record, comp: Path) -> InstalledComponent | None:
        version = record.get("version")
        if version is None:
            return None  # a first install that has not committed
        component_id = str(record.get("id") or unquote(comp.name))
        state = record.get("state") or "active"
        return InstalledComponent(
            id=component_id,
            name=str(record.get("name") or component_id),
            version=str(version),
            env_type=self.env_type,
            state="inactive" if state == "inactive" else "active",
            pkg_id=record.get("pkg_id"),
            description=str(record.get("description") or ""),
        )

    def _existing(self, component_id: str, code: int) -> tuple[Path, _Record]:
        comp = self.component_dir(component_id)
        if (comp / _STATE_FILE).exists():
            self._recover_component(comp)
        record = self._read(comp)
        if record is None or record.get("version") is None:
            raise InstallError(
                code, f"no component {component_id!r} is installed by the {self.env_type} installer"
            )
        record.setdefault("id", component_id)
        record.setdefault("dir", _segment(str(record["version"])))
        return comp, record

    def _read(self, comp: Path) -> _Record | None:
        path = comp / _STATE_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise InstallError(ScomoResult.UNDEFINED_ERROR, f"cannot read {path}: {exc}") from exc
        try:
            record = json.loads(text)
        except ValueError as exc:
            raise InstallError(ScomoResult.UNDEFINED_ERROR, f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(record, dict):
            raise InstallError(ScomoResult.UNDEFINED_ERROR, f"{path} does not hold a JSON object")
        if record.get("version") is not None and not record.get("dir"):
            record["dir"] = _segment(str(record["version"]))  # hand-written: versions/<version>
        return record

    def _write(self, comp: Path, record: _Record) -> None:
        """Replace ``state.json`` atomically and durably (temp file, fsync, rename, fsync dir)."""
        tmp = comp / f"{_TMP_STATE}{secrets.token_hex(4)}"
        data = json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, comp / _STATE_FILE)
        _fsync_dir(comp)

    def _step(self, comp: Path, record: _Record, step: str) -> None:
        """Record the step about to be taken (write-ahead)."""
        record["pending"]["step"] = step
        self._write(comp, record)

    def _switch(self, comp: Path, version_dir: str) -> None:
        """Point ``current`` at ``versions/<version_dir>`` in one atomic rename."""
        tmp = comp / f"{_TMP_LINK}{secrets.token_hex(4)}"
        os.symlink(f"versions/{version_dir}", tmp)
        os.replace(tmp, comp / "current")
        _fsync_dir(comp)

    def _delete_component(self, comp: Path) -> None:
        """Take the whole directory away in one rename, then delete it at leisure."""
        if not comp.exists():
            return
        trash = self.root / f"{_TRASH}{comp.name}-{secrets.token_hex(4)}"
        os.rename(comp, trash)
        _fsync_dir(self.root)
        shutil.rmtree(trash, ignore_errors=True)

    def _free_dir_name(self, comp: Path, version: str) -> str:
        base = _segment(version)
        versions = comp / "versions"
        name, n = base, 0
        while (versions / name).exists() or (versions / name).is_symlink():
            n += 1
            name = f"{base}+{n}"
        return name

    def _check_space(self, source: Path, component_id: str) -> None:
        needed = _tree_size(source) + self.free_space_margin
        free = shutil.disk_usage(self.root).free
        if needed > free:
            raise InstallError(
                ScomoResult.INSTALL_FAILED_OUT_OF_MEMORY,
                f"not enough space to install {component_id}: {needed} bytes needed "
                f"(with a {self.free_space_margin}-byte margin), {free} free in {self.root}",
            )

    @staticmethod
    def _check_name(what: str, value: str) -> None:
        if not isinstance(value, str) or not value or "\x00" in value or len(_segment(value)) > _MAX_NAME:
            raise InstallError(
                ScomoResult.INSTALL_FAILED,
                f"{what} {value!r} is empty, too long or contains NUL",
            )

    @staticmethod
    def _check_hooks(hooks: Mapping[str, str]) -> dict[str, str]:
        checked: dict[str, str] = {}
        for action, path in hooks.items():
            if action not in HOOK_ACTIONS:
                raise InstallError(
                    ScomoResult.INSTALL_FAILED,
                    f"unknown hook {action!r} (hooks are {', '.join(HOOK_ACTIONS)})",
                )
            pure = PurePosixPath(path)
            if not path or pure.is_absolute() or ".." in pure.parts:
                raise InstallError(
                    ScomoResult.INSTALL_FAILED,
                    f"the {action} hook {path!r} must be a relative path inside the component",
                )
            checked[action] = str(pure)
        return checked

    def _best_effort(self, comp: Path, record: _Record, action: str, source: Mapping[str, Any]) -> bool:
        """Run a compensating hook; a failure is logged, not raised. True when it succeeded."""
        try:
            self._hook(comp, record, action, source, ScomoResult.UNDEFINED_ERROR)
        except Exception as exc:
            log.error("%s: %s hook failed while undoing: %s", record.get("id"), action, exc)
            return False
        return True

    def _hook(self, comp: Path, record: _Record, action: str, source: Mapping[str, Any], code: int) -> None:
        """Run ``action``'s hook of the version described by ``source`` (record, pending or previous)."""
        relative = (source.get("hooks") or {}).get(action)
        version = str(source.get("version"))
        version_dir = comp / "versions" / str(source.get("dir") or _segment(version))
        if not relative:
            return
        executable = (version_dir / relative).resolve()
        if not executable.is_relative_to(version_dir.resolve()):
            raise InstallError(code, f"the {action} hook {relative!r} points outside the component")
        previous = record.get("version") if source is not record else None
        env = dict(os.environ)
        env.update(
            {
                "OMADM_COMPONENT_ID": str(record.get("id")),
                "OMADM_COMPONENT_VERSION": version,
                "OMADM_COMPONENT_DIR": str(version_dir),
                "OMADM_COMPONENT_STATE_DIR": str(comp / "state"),
                "OMADM_ACTION": action,
                "OMADM_INSTALL_PARAMS": str(source.get("params") or ""),
                "OMADM_PREVIOUS_VERSION": str(previous or ""),
            }
        )
        (comp / "state").mkdir(exist_ok=True)
        where = f"{action} hook of {record.get('id')} {version}"
        try:
            self._execute(executable, version_dir, env, where)
        except _HookFailed as exc:
            raise InstallError(code, str(exc)) from exc

    def _execute(self, executable: Path, cwd: Path, env: dict[str, str], where: str) -> None:
        import subprocess  # noqa: PLC0415 - only hooks need it; an idle agent keeps what it imports

        try:
            proc = subprocess.Popen(
                [str(executable)],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a timeout kills the hook's children too
            )
        except OSError as exc:
            raise _HookFailed(f"{where} could not be started: {exc}") from exc
        try:
            out, _ = proc.communicate(timeout=self.hook_timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            output = _tail(out.decode("utf-8", "replace"))
            raise _HookFailed(f"{where} timed out after {self.hook_timeout:g} s{_output(output)}") from None
        output = _tail(out.decode("utf-8", "replace"))
        if proc.returncode != 0:
            raise _HookFailed(f"{where} exited with status {proc.returncode}{_output(output)}")
        if output:
            log.debug("%s said: %s", where, output)

    @staticmethod
    def _as_install_error(exc: Exception, component_id: str, version: str) -> InstallError:
        if isinstance(exc, InstallError):
            return exc
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return InstallError(
                ScomoResult.INSTALL_FAILED_OUT_OF_MEMORY, f"installing {component_id} {version}: {exc}"
            )
        return InstallError(ScomoResult.INSTALL_FAILED, f"installing {component_id} {version} failed: {exc}")

    @staticmethod
    def _as_error(exc: Exception, code: int, what: str) -> InstallError:
        if isinstance(exc, InstallError):
            return exc
        return InstallError(code, f"{what} failed: {exc}")


def _output(output: str) -> str:
    return f"; last output:\n{output}" if output else ""
