"""The manifest of an omadm component package: what it contains and what each part needs.

The manifest is the one document a device trusts: the publisher signs its exact bytes, and
every size and SHA-256 in it vouches for a payload file. So it is built and read with two
guarantees:

* **Reproducible bytes.** :meth:`PackageManifest.to_json` writes canonical JSON (sorted
  keys, UTF-8, separators ``,`` and ``:`` without spaces, files sorted by path), so the same
  source gives the same manifest, the same signature and the same archive.
* **Strict reading.** :meth:`PackageManifest.from_json` refuses anything it does not
  understand (unknown keys, duplicate keys, floats, unknown hook names, versions that are not
  PEP 440 in normal form, unsafe paths) with a message that names the field. The dataclasses
  validate themselves on construction, so a builder cannot make a manifest a device would
  refuse.

Versions are PEP 440 (:class:`packaging.version.Version`) because one total order is needed
for upgrades, downgrade protection and dependency ranges, and PEP 440 is the order Python
people already know. They must be written in normal form (``1.0rc1``, not ``1.0-RC1``) so
that what the server shows, what the device stores in ``Inventory/Deployed/<X>/Version`` and
what the manifest says are the same string.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from packaging.version import InvalidVersion, Version

from .errors import ManifestError

__all__ = [
    "COMPONENTS_DIR",
    "FORMAT",
    "HOOK_NAMES",
    "ID_MAX_LENGTH",
    "MODES",
    "ComponentManifest",
    "Dependency",
    "FileEntry",
    "PackageManifest",
    "check_id",
    "compare_versions",
    "component_prefix",
    "parse_version",
    "path_problem",
]

#: The manifest format this code reads and writes.
FORMAT = 1
#: Payload files live under ``components/<component-id>/`` in the archive.
COMPONENTS_DIR = "components"
#: Hook names a component may declare; the installer runs them at these moments.
HOOK_NAMES = ("install", "activate", "deactivate", "remove")
#: The only file modes a package may carry: no setuid, no group/world write, no surprises.
MODES = (0o644, 0o755)
ID_MAX_LENGTH = 128

_ID_RE = re.compile(r"[A-Za-z0-9._+-]+")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_NAME_MAX = 256
_DESCRIPTION_MAX = 4096
_PATH_MAX_BYTES = 4096
_PATH_PART_MAX_BYTES = 255


# --------------------------------------------------------------------------- helpers


def parse_version(text: str, what: str = "version") -> Version:
    """Parse a PEP 440 version that is written in normal form, or raise ``ManifestError``."""
    if not isinstance(text, str):
        raise ManifestError(f"{what} must be a string, not {type(text).__name__}")
    try:
        version = Version(text)
    except InvalidVersion:
        raise ManifestError(
            f"{what} {text!r} is not a PEP 440 version (examples: 1.0, 2.1.3, 1.0rc1, 1.0.post2)"
        ) from None
    if str(version) != text:
        raise ManifestError(f"{what} {text!r} is not in PEP 440 normal form; write {str(version)!r}")
    return version


def compare_versions(a: str | Version, b: str | Version) -> int:
    """-1, 0 or 1 as version ``a`` is older than, equal to or newer than ``b`` (PEP 440 order)."""
    va = a if isinstance(a, Version) else parse_version(a)
    vb = b if isinstance(b, Version) else parse_version(b)
    return (va > vb) - (va < vb)


def component_prefix(component_id: str) -> str:
    """The archive directory of a component's files, with a trailing slash."""
    return f"{COMPONENTS_DIR}/{component_id}/"


def path_problem(path: str) -> str | None:
    """Why ``path`` is not a safe relative archive path, or ``None`` if it is.

    Shared by manifest validation and by the verifier, which applies it to tar member names
    before anything else: a path that could escape the extraction directory must be refused
    whatever the manifest says.
    """
    if not path:
        return "is empty"
    if path.startswith("/"):
        return "is absolute"
    if "\\" in path:
        return "contains a backslash"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return "contains a control character"
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    parts = path.split("/")
    if ".." in parts:
        return "escapes its directory (contains '..')"
    if any(part in ("", ".") for part in parts):
        return "is not normalized (empty or '.' component)"
    if unicodedata.normalize("NFC", path) != path:
        return "is not NFC-normalized Unicode"
    if len(encoded) > _PATH_MAX_BYTES:
        return f"is longer than {_PATH_MAX_BYTES} bytes"
    if any(len(part.encode("utf-8")) > _PATH_PART_MAX_BYTES for part in parts):
        return f"has a name longer than {_PATH_PART_MAX_BYTES} bytes"
    return None


def check_id(value: object, what: str) -> None:
    """Refuse an id that is not 1-128 of ``[A-Za-z0-9._+-]`` (or is ``.``/``..``): ids name directories."""
    if not isinstance(value, str):
        raise ManifestError(f"{what} must be a string, not {type(value).__name__}")
    if not value:
        raise ManifestError(f"{what} is empty")
    if len(value) > ID_MAX_LENGTH:
        raise ManifestError(f"{what} {value[:20]!r}... is longer than {ID_MAX_LENGTH} characters")
    if not _ID_RE.fullmatch(value):
        raise ManifestError(f"{what} {value!r} may only contain letters, digits and . _ + -")
    if value in (".", ".."):
        # Ids name directories on the device; these two would name the wrong one.
        raise ManifestError(f"{what} {value!r} is not allowed")


def _check_text(value: object, what: str, *, max_length: int, required: bool, multiline: bool) -> None:
    if not isinstance(value, str):
        raise ManifestError(f"{what} must be a string, not {type(value).__name__}")
    if required and not value.strip():
        raise ManifestError(f"{what} is empty")
    if len(value) > max_length:
        raise ManifestError(f"{what} is longer than {max_length} characters")
    allowed = "\n\t" if multiline else ""
    if any((ord(c) < 0x20 and c not in allowed) or ord(c) == 0x7F for c in value):
        raise ManifestError(f"{what} contains a control character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ManifestError(f"{what} is not valid UTF-8 text") from None


def _check_int(value: object, what: str) -> None:
    # bool is an int in Python; a manifest saying "size": true is a bug, not a size of 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ManifestError(f"{what} must be an integer, not {type(value).__name__}")


def _mode_text(mode: int) -> str:
    return f"{mode:04o}"


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One payload file: its archive path, size in bytes, SHA-256 (lowercase hex) and mode."""

    path: str
    size: int
    sha256: str
    mode: int = 0o644

    def __post_init__(self) -> None:
        if not isinstance(self.path, str):
            raise ManifestError(f"file path must be a string, not {type(self.path).__name__}")
        problem = path_problem(self.path)
        if problem is not None:
            raise ManifestError(f"file path {self.path!r} {problem}")
        _check_int(self.size, f"file {self.path}: size")
        if self.size < 0:
            raise ManifestError(f"file {self.path}: size {self.size} is negative")
        if not isinstance(self.sha256, str) or not _SHA256_RE.fullmatch(self.sha256):
            raise ManifestError(f"file {self.path}: sha256 must be 64 lowercase hex digits")
        _check_int(self.mode, f"file {self.path}: mode")
        if self.mode not in MODES:
            raise ManifestError(f"file {self.path}: mode {self.mode:o} is not allowed (only 0644 and 0755)")

    @property
    def executable(self) -> bool:
        return self.mode == 0o755


@dataclass(frozen=True, slots=True)
class Dependency:
    """A component this one needs: ``min_version <= installed < max_version`` (either bound optional).

    Inclusive minimum and exclusive maximum, the way ``>=1.2,<2`` reads in a requirements
    file: "at least the version with the feature, below the next breaking one". As in PEP
    440, pre-releases of the maximum itself (``2.0rc1`` for a maximum of ``2``) are excluded.
    """

    id: str
    min_version: str | None = None
    max_version: str | None = None

    def __post_init__(self) -> None:
        check_id(self.id, "dependency id")
        low = None if self.min_version is None else parse_version(self.min_version, f"{self.id}: min_version")
        high = (
            None if self.max_version is None else parse_version(self.max_version, f"{self.id}: max_version")
        )
        if low is not None and high is not None and not low < high:
            raise ManifestError(
                f"dependency {self.id}: min_version {self.min_version} is not below "
                f"max_version {self.max_version} (the maximum is exclusive)"
            )

    def satisfied_by(self, version: str | Version) -> bool:
        """Whether an installed ``version`` is in range; an invalid version raises ``ManifestError``."""
        v = version if isinstance(version, Version) else parse_version(version, f"{self.id} version")
        if self.min_version is not None and v < Version(self.min_version):
            return False
        if self.max_version is None:
            return True
        high = Version(self.max_version)
        if v >= high:
            return False
        # As in PEP 440's "<V": a pre-release of V itself (2.0rc1 for "<2") is not below it.
        return not (v.is_prerelease and not high.is_prerelease and Version(v.base_version) == high)

    def describe(self) -> str:
        """``id (>=1.0, <2)`` for messages and listings."""
        bounds = []
        if self.min_version is not None:
            bounds.append(f">={self.min_version}")
        if self.max_version is not None:
            bounds.append(f"<{self.max_version}")
        return f"{self.id} ({', '.join(bounds)})" if bounds else self.id


def _empty_hooks() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ComponentManifest:
    """One deployment component (SCOMO ``Inventory/Deployed/<X>``) and its files.

    ``hooks`` maps a hook name (:data:`HOOK_NAMES`) to a path relative to the component's
    directory; the file must be in ``files`` with mode 0755, so the installer never runs
    something the manifest does not vouch for. ``files`` are kept sorted by path.
    """

    id: str
    name: str
    version: str
    env_type: str = "archive"
    description: str = ""
    hooks: Mapping[str, str] = field(default_factory=_empty_hooks, hash=False)
    depends: tuple[Dependency, ...] = ()
    files: tuple[FileEntry, ...] = ()

    def __post_init__(self) -> None:
        check_id(self.id, "component id")
        what = f"component {self.id}"
        _check_text(self.name, f"{what}: name", max_length=_NAME_MAX, required=True, multiline=False)
        parse_version(self.version, f"{what}: version")
        check_id(self.env_type, f"{what}: env_type")
        _check_text(
            self.description,
            f"{what}: description",
            max_length=_DESCRIPTION_MAX,
            required=False,
            multiline=True,
        )
        if any(not isinstance(entry, FileEntry) for entry in self.files):
            raise ManifestError(f"{what}: files must be FileEntry objects")
        files = tuple(sorted(self.files, key=lambda f: f.path))
        object.__setattr__(self, "files", files)
        object.__setattr__(self, "depends", tuple(self.depends))
        prefix = component_prefix(self.id)
        seen: dict[str, FileEntry] = {}
        for entry in files:
            if not entry.path.startswith(prefix):
                raise ManifestError(f"{what}: file {entry.path} is not under {prefix}")
            if entry.path in seen:
                raise ManifestError(f"{what}: file {entry.path} is listed twice")
            seen[entry.path] = entry
        for entry in files:
            # A path cannot be both a file and a directory on the device.
            parent = entry.path.rpartition("/")[0]
            while len(parent) >= len(prefix):
                if parent in seen:
                    raise ManifestError(f"{what}: {parent} is a file but {entry.path} puts a file inside it")
                parent = parent.rpartition("/")[0]
        if not isinstance(self.hooks, Mapping):
            raise ManifestError(f"{what}: hooks must be a mapping of hook name to path")
        hooks: dict[str, str] = {}
        for name in sorted(self.hooks):
            path = self.hooks[name]
            if name not in HOOK_NAMES:
                raise ManifestError(f"{what}: unknown hook {name!r} (known: {', '.join(HOOK_NAMES)})")
            if not isinstance(path, str):
                raise ManifestError(f"{what}: hook {name} must be a path string")
            problem = path_problem(path)
            if problem is not None:
                raise ManifestError(f"{what}: hook {name} path {path!r} {problem}")
            entry_for_hook = seen.get(prefix + path)
            if entry_for_hook is None:
                raise ManifestError(
                    f"{what}: hook {name} names {path}, which is not one of the component's files"
                )
            if not entry_for_hook.executable:
                raise ManifestError(f"{what}: hook {name} file {path} is not executable (mode 0644)")
            hooks[name] = path
        object.__setattr__(self, "hooks", MappingProxyType(hooks))
        dep_ids: set[str] = set()
        for dep in self.depends:
            if not isinstance(dep, Dependency):
                raise ManifestError(f"{what}: depends must be Dependency objects")
            if dep.id == self.id:
                raise ManifestError(f"{what}: a component cannot depend on itself")
            if dep.id in dep_ids:
                raise ManifestError(f"{what}: dependency {dep.id} is listed twice")
            dep_ids.add(dep.id)

    @property
    def prefix(self) -> str:
        """``components/<id>/``: where this component's files live in the archive."""
        return component_prefix(self.id)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def relative_path(self, entry: FileEntry) -> str:
        """The path of ``entry`` inside the component's directory (``bin/hello``)."""
        return entry.path[len(self.prefix) :]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "env_type": self.env_type,
            "description": self.description,
            "hooks": dict(self.hooks),
            "depends": [
                {
                    "id": d.id,
                    **({} if d.min_version is None else {"min_version": d.min_version}),
                    **({} if d.max_version is None else {"max_version": d.max_version}),
                }
                for d in self.depends
            ],
            "files": [
                {"path": f.path, "size": f.size, "sha256": f.sha256, "mode": _mode_text(f.mode)}
                for f in self.files
            ],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PackageManifest:
    """A delivery package (SCOMO ``Download/<X>`` / ``Inventory/Delivered/<X>``): ``id`` is the PkgID.

    ``allow_downgrade`` lets the installer replace a newer deployed component with this
    package's older one; without it a downgrade is refused, which protects devices from
    replayed old (but validly signed) packages.
    """

    format: int = FORMAT
    id: str
    name: str
    version: str
    description: str = ""
    components: tuple[ComponentManifest, ...]
    allow_downgrade: bool = False

    def __post_init__(self) -> None:
        _check_int(self.format, "format")
        if self.format != FORMAT:
            raise ManifestError(
                f"unsupported manifest format {self.format}; this omadm reads format {FORMAT}"
            )
        check_id(self.id, "package id")
        _check_text(self.name, "package name", max_length=_NAME_MAX, required=True, multiline=False)
        parse_version(self.version, "package version")
        _check_text(
            self.description,
            "package description",
            max_length=_DESCRIPTION_MAX,
            required=False,
            multiline=True,
        )
        if not isinstance(self.allow_downgrade, bool):
            raise ManifestError("allow_downgrade must be true or false")
        components = tuple(self.components)
        object.__setattr__(self, "components", components)
        if not components:
            raise ManifestError("a package needs at least one component")
        ids: set[str] = set()
        for component in components:
            if not isinstance(component, ComponentManifest):
                raise ManifestError("components must be ComponentManifest objects")
            if component.id in ids:
                raise ManifestError(f"component {component.id} is listed twice")
            ids.add(component.id)

    def component(self, component_id: str) -> ComponentManifest:
        """The component with this id; ``KeyError`` if the package has none."""
        for component in self.components:
            if component.id == component_id:
                return component
        raise KeyError(component_id)

    @property
    def files(self) -> tuple[FileEntry, ...]:
        """Every payload file of every component."""
        return tuple(f for c in self.components for f in c.files)

    @property
    def total_size(self) -> int:
        """The sum of declared file sizes: what unpacking everything would write."""
        return sum(c.total_size for c in self.components)

    def to_dict(self) -> dict[str, Any]:
        """The manifest as plain JSON data (what ``to_json`` serializes)."""
        return {
            "format": self.format,
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "allow_downgrade": self.allow_downgrade,
            "components": [c.to_dict() for c in self.components],
        }

    def to_json(self) -> bytes:
        """Canonical JSON bytes: the same manifest always gives the same bytes (and signature)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> PackageManifest:
        """Parse and validate manifest bytes; every problem is a ``ManifestError`` naming the field."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestError(f"invalid manifest: not UTF-8 ({exc.reason} at byte {exc.start})") from None
        try:
            raw = json.loads(
                text,
                object_pairs_hook=_no_duplicate_keys,
                parse_float=_no_float,
                parse_constant=_no_constant,
            )
        except json.JSONDecodeError as exc:
            raise ManifestError(f"invalid manifest: not JSON ({exc.msg} at line {exc.lineno})") from None
        except _JSONRefused as exc:
            raise ManifestError(f"invalid manifest: {exc}") from None
        with _context("invalid manifest: "):
            return _package_from(raw)


# --------------------------------------------------------------------------- JSON reading


_REQUIRED = object()


class _JSONRefused(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _JSONRefused(f"key {key!r} appears twice in one object")
        result[key] = value
    return result


def _no_float(text: str) -> Any:
    raise _JSONRefused(f"number {text} is not an integer (a manifest has no fractional numbers)")


def _no_constant(text: str) -> Any:
    raise _JSONRefused(f"{text} is not allowed")


@contextmanager
def _context(where: str) -> Iterator[None]:
    """Prefix any ``ManifestError`` raised inside with the location being read."""
    try:
        yield
    except ManifestError as exc:
        raise ManifestError(f"{where}{exc.message}") from None


class _Fields:
    """Typed access to one JSON object that refuses unknown keys at the end."""

    def __init__(self, raw: object, where: str, known: tuple[str, ...], noun: str = "the manifest") -> None:
        if not isinstance(raw, dict):
            raise ManifestError(f"{where or noun} must be a JSON object, not {_json_type(raw)}")
        self.prefix = f"{where}: " if where else ""
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ManifestError(f"{self.prefix}unknown key {unknown[0]!r} (known: {', '.join(known)})")
        self.raw: dict[str, Any] = raw

    def _get(self, key: str, kind: type, kind_name: str, default: object) -> Any:
        if key not in self.raw:
            if default is _REQUIRED:
                raise ManifestError(f"{self.prefix}{key} is missing")
            return default
        value = self.raw[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ManifestError(f"{self.prefix}{key} must be {kind_name}, not {_json_type(value)}")
        return value

    def text(self, key: str, default: object = _REQUIRED) -> str:
        value: str = self._get(key, str, "a string", default)
        return value

    def optional_text(self, key: str) -> str | None:
        value: str | None = self._get(key, str, "a string", None)
        return value

    def integer(self, key: str) -> int:
        value: int = self._get(key, int, "an integer", _REQUIRED)
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value: bool = self._get(key, bool, "true or false", default)
        return value

    def array(self, key: str, *, required: bool = False) -> list[Any]:
        value: list[Any] = self._get(key, list, "an array", _REQUIRED if required else [])
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        value: dict[str, Any] = self._get(key, dict, "an object", {})
        return value


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {str: "a string", int: "an integer", list: "an array", dict: "an object"}.get(
        type(value), type(value).__name__
    )


_PACKAGE_KEYS = ("format", "id", "name", "version", "description", "allow_downgrade", "components")
_COMPONENT_KEYS = ("id", "name", "version", "env_type", "description", "hooks", "depends", "files")
_DEPENDENCY_KEYS = ("id", "min_version", "max_version")
_FILE_KEYS = ("path", "size", "sha256", "mode")


def _package_from(raw: object) -> PackageManifest:
    top = _Fields(raw, "", _PACKAGE_KEYS)
    fmt = top.integer("format")
    if fmt != FORMAT:
        # Checked before anything else: a newer format may legitimately break every other rule.
        raise ManifestError(f"unsupported manifest format {fmt}; this omadm reads format {FORMAT}")
    package_id = top.text("id")
    name = top.text("name")
    version = top.text("version")
    description = top.text("description", "")
    allow_downgrade = top.boolean("allow_downgrade", False)
    components = []
    for index, item in enumerate(top.array("components", required=True)):
        with _context(f"components[{index}]: "):
            components.append(_component_from(item))
    return PackageManifest(
        format=fmt,
        id=package_id,
        name=name,
        version=version,
        description=description,
        components=tuple(components),
        allow_downgrade=allow_downgrade,
    )


def _component_from(raw: object) -> ComponentManifest:
    fields = _Fields(raw, "", _COMPONENT_KEYS, noun="a component")
    hooks = fields.mapping("hooks")
    for name, path in hooks.items():
        if not isinstance(path, str):
            raise ManifestError(f"hook {name} must be a path string, not {_json_type(path)}")
    depends = []
    for index, item in enumerate(fields.array("depends")):
        dep = _Fields(item, f"depends[{index}]", _DEPENDENCY_KEYS)
        with _context(f"depends[{index}]: "):
            depends.append(
                Dependency(dep.text("id"), dep.optional_text("min_version"), dep.optional_text("max_version"))
            )
    files = []
    for index, item in enumerate(fields.array("files")):
        entry = _Fields(item, f"files[{index}]", _FILE_KEYS)
        mode_text = entry.text("mode")
        modes = {_mode_text(m): m for m in MODES}
        if mode_text not in modes:
            raise ManifestError(f"files[{index}]: mode {mode_text!r} is not allowed (only '0644' and '0755')")
        with _context(f"files[{index}]: "):
            files.append(
                FileEntry(entry.text("path"), entry.integer("size"), entry.text("sha256"), modes[mode_text])
            )
    return ComponentManifest(
        id=fields.text("id"),
        name=fields.text("name"),
        version=fields.text("version"),
        env_type=fields.text("env_type", "archive"),
        description=fields.text("description", ""),
        hooks=hooks,
        depends=tuple(depends),
        files=tuple(files),
    )
