"""Build an ``.omp`` component package from a source directory, reproducibly.

Source layout::

    source/
      omadm-package.toml        [package] and one [[component]] table per component
      <component-id>/...        that component's files (become components/<component-id>/...)

``omadm-package.toml``::

    [package]
    id = "com.example.hello-package"     # the SCOMO PkgID
    name = "Hello"
    version = "1.0.0"                    # PEP 440, normal form
    description = "..."                  # optional
    allow_downgrade = false              # optional

    [[component]]
    id = "com.example.hello"
    name = "Hello"
    version = "1.0.0"
    env_type = "archive"                 # optional
    description = "..."                  # optional
    hooks = { install = "hooks/install" }                    # optional; paths inside the component
    depends = [{ id = "com.example.base", min_version = "1.2" }]  # optional; max_version exclusive

Same source and same ``source_date_epoch`` give a byte-identical archive: every timestamp
is the epoch, owners are 0/root-less, members are sorted, modes are 0644 or 0755 (any
executable bit in the source gives 0755), and the manifest is canonical JSON. Symbolic
links and special files in the source are refused rather than followed or skipped, because
either choice would ship something other than what the publisher sees.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ._archive import CHUNK, atomic_output, write_archive
from .errors import ManifestError, PackageError
from .manifest import ComponentManifest, Dependency, FileEntry, PackageManifest, check_id, component_prefix

__all__ = ["SOURCE_FILE", "build_package", "load_source"]

#: The description file at the top of a package source directory.
SOURCE_FILE = "omadm-package.toml"

_TOP_KEYS = ("package", "component")
_PACKAGE_KEYS = ("id", "name", "version", "description", "allow_downgrade")
_COMPONENT_KEYS = ("id", "name", "version", "env_type", "description", "hooks", "depends")
_DEPENDENCY_KEYS = ("id", "min_version", "max_version")
_MAX_EPOCH = 0xFFFFFFFF  # the gzip header's mtime field is 32 bits


def build_package(
    source: Path,
    output: Path,
    *,
    signing_key: Ed25519PrivateKey | None = None,
    source_date_epoch: int = 0,
) -> PackageManifest:
    """Build ``output`` from ``source``; sign it if ``signing_key`` is given; return the manifest.

    The archive is written to a temporary file beside ``output`` and renamed into place, so
    ``output`` is either the previous file or the complete new package.
    """
    if isinstance(source_date_epoch, bool) or not 0 <= source_date_epoch <= _MAX_EPOCH:
        raise PackageError(f"source date epoch {source_date_epoch} is outside 0..{_MAX_EPOCH}")
    source = Path(source)
    manifest = load_source(source)
    manifest_bytes = manifest.to_json()
    signature = None if signing_key is None else signing_key.sign(manifest_bytes)
    output = Path(output)
    with atomic_output(output) as out:
        write_archive(
            out,
            manifest_bytes=manifest_bytes,
            signature=signature,
            files=_open_files(source, manifest),
            mtime=source_date_epoch,
        )
    return manifest


def load_source(source: Path) -> PackageManifest:
    """Read ``omadm-package.toml`` and hash the component files: the manifest the build will write."""
    source = Path(source)
    description = source / SOURCE_FILE
    try:
        with description.open("rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ManifestError(f"{description} not found (a package source needs {SOURCE_FILE})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{description}: not valid TOML ({exc})") from None
    where = SOURCE_FILE
    _refuse_unknown(raw, _TOP_KEYS, where)
    package = raw.get("package")
    if not isinstance(package, dict):
        raise ManifestError(f"{where}: a [package] table is required")
    _refuse_unknown(package, _PACKAGE_KEYS, f"{where}: [package]")
    tables = raw.get("component", [])
    if not isinstance(tables, list) or not tables:
        raise ManifestError(f"{where}: at least one [[component]] table is required")
    components = []
    for index, table in enumerate(tables):
        components.append(_component(source, table, f"{where}: component[{index}]"))
    try:
        return PackageManifest(
            id=_required(package, "id", f"{where}: [package]"),
            name=_required(package, "name", f"{where}: [package]"),
            version=_required(package, "version", f"{where}: [package]"),
            description=package.get("description", ""),
            allow_downgrade=package.get("allow_downgrade", False),
            components=tuple(components),
        )
    except ManifestError as exc:
        raise ManifestError(f"{where}: {exc.message}") from None


def _refuse_unknown(table: dict[str, Any], known: Sequence[str], where: str) -> None:
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ManifestError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(known)})")


def _required(table: dict[str, Any], key: str, where: str) -> Any:
    if key not in table:
        raise ManifestError(f"{where}: {key} is missing")
    return table[key]


def _component(source: Path, table: object, where: str) -> ComponentManifest:
    if not isinstance(table, dict):
        raise ManifestError(f"{where}: must be a table")
    _refuse_unknown(table, _COMPONENT_KEYS, where)
    component_id = _required(table, "id", where)
    depends = table.get("depends", [])
    if not isinstance(depends, list):
        raise ManifestError(f"{where}: depends must be an array of tables")
    try:
        dependencies = []
        for index, item in enumerate(depends):
            if not isinstance(item, dict):
                raise ManifestError(f"depends[{index}] must be a table like {{id = ..., min_version = ...}}")
            _refuse_unknown(item, _DEPENDENCY_KEYS, f"depends[{index}]")
            dependencies.append(
                Dependency(
                    _required(item, "id", f"depends[{index}]"),
                    item.get("min_version"),
                    item.get("max_version"),
                )
            )
        check_id(component_id, "component id")  # before it is used as a directory name
        files = _collect_files(source, component_id)
        return ComponentManifest(
            id=component_id,
            name=_required(table, "name", where),
            version=_required(table, "version", where),
            env_type=table.get("env_type", "archive"),
            description=table.get("description", ""),
            hooks=table.get("hooks", {}),
            depends=tuple(dependencies),
            files=tuple(files),
        )
    except ManifestError as exc:
        raise ManifestError(f"{where}: {exc.message}") from None


def _collect_files(source: Path, component_id: str) -> list[FileEntry]:
    root = source / component_id
    if root.is_symlink() or not root.is_dir():
        raise ManifestError(f"the component's files must be in the directory {root}")
    prefix = component_prefix(component_id)
    entries = []
    for path in _walk(root):
        st = path.lstat()
        relative = path.relative_to(root).as_posix()
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        mode = 0o755 if st.st_mode & 0o111 else 0o644
        entries.append(FileEntry(prefix + relative, st.st_size, digest.hexdigest(), mode))
    return entries


def _walk(directory: Path) -> Iterator[Path]:
    """Regular files below ``directory``, sorted; links and special files are errors."""
    for path in sorted(directory.iterdir(), key=lambda p: p.name):
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            raise ManifestError(f"{path} is a symbolic link; packages carry regular files only")
        if stat.S_ISDIR(mode):
            yield from _walk(path)
        elif stat.S_ISREG(mode):
            yield path
        else:
            raise ManifestError(f"{path} is not a regular file or directory")


def _open_files(source: Path, manifest: PackageManifest) -> Iterator[tuple[FileEntry, IO[bytes]]]:
    """Each payload file, opened one at a time, in archive (path) order."""
    entries = sorted(manifest.files, key=lambda e: e.path)
    for entry in entries:
        component_id = entry.path.split("/", 2)[1]
        relative = entry.path[len(component_prefix(component_id)) :]
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        with os.fdopen(os.open(source / component_id / relative, flags), "rb") as f:
            yield entry, f
