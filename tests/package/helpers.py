"""Builders for package tests: source directories, manifests, and hand-crafted (hostile) archives.

The crafting helpers write tar members exactly as asked, bypassing the builder, so the
verifier can be shown archives no honest publisher would produce.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from omadm.package.manifest import ComponentManifest, FileEntry, PackageManifest

APP = "com.example.app"
LIB = "com.example.lib"
APP_PREFIX = f"components/{APP}/"


def write_source(
    root: Path, description: Mapping[str, Any], files: Mapping[str, bytes], executable: Sequence[str] = ()
) -> Path:
    """A package source directory: ``omadm-package.toml`` plus files (paths relative to ``root``)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "omadm-package.toml").write_text(tomli_w.dumps(dict(description)))
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o755 if relative in executable else 0o644)
    return root


def sample_description(**package: Any) -> dict[str, Any]:
    return {
        "package": {"id": "com.example.pkg", "name": "Example", "version": "1.0.0", **package},
        "component": [
            {
                "id": APP,
                "name": "App",
                "version": "1.0.0",
                "description": "The application.",
                "hooks": {"install": "hooks/install"},
                "depends": [{"id": LIB, "min_version": "1.0", "max_version": "2"}],
            },
            {"id": LIB, "name": "Lib", "version": "1.2.0", "env_type": "archive"},
        ],
    }


SAMPLE_FILES = {
    f"{APP}/bin/run": b"#!/bin/sh\necho run\n",
    f"{APP}/hooks/install": b"#!/bin/sh\nexit 0\n",
    f"{APP}/share/data.txt": b"some data\n" * 50,
    f"{APP}/share/empty": b"",
    f"{LIB}/lib/library.txt": b"library\n",
}
SAMPLE_EXECUTABLE = (f"{APP}/bin/run", f"{APP}/hooks/install")


def sample_source(root: Path) -> Path:
    return write_source(root, sample_description(), SAMPLE_FILES, SAMPLE_EXECUTABLE)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry(path: str, data: bytes, mode: int = 0o644) -> FileEntry:
    return FileEntry(path, len(data), sha256(data), mode)


def manifest_of(
    files: Mapping[str, bytes], *, modes: Mapping[str, int] | None = None, **package: Any
) -> PackageManifest:
    """A one-component (``com.example.app``) manifest listing ``files`` (full archive paths)."""
    modes = modes or {}
    component = ComponentManifest(
        id=APP,
        name="App",
        version="1.0.0",
        files=tuple(entry(path, data, modes.get(path, 0o644)) for path, data in files.items()),
    )
    fields: dict[str, Any] = {"id": "com.example.pkg", "name": "Example", "version": "1.0.0", **package}
    return PackageManifest(components=(component,), **fields)


@dataclass
class Member:
    """One tar member as written, no questions asked."""

    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    mode: int = 0o644
    linkname: str = ""
    pax: dict[str, str] = field(default_factory=dict)


def tar_bytes(members: Sequence[Member]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.type = member.type
            info.mode = member.mode
            info.linkname = member.linkname
            info.pax_headers = dict(member.pax)
            if member.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
                info.size = len(member.data)
                tar.addfile(info, io.BytesIO(member.data))
            else:
                tar.addfile(info)
    return buffer.getvalue()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def craft(
    path: Path,
    manifest: PackageManifest | bytes,
    members: Sequence[Member],
    *,
    key: Ed25519PrivateKey | None = None,
    signature: bytes | None = None,
    trailing: bytes = b"",
) -> Path:
    """Write a gzip tar: manifest.json, manifest.sig (signed by ``key`` or given raw), then ``members``."""
    manifest_bytes = manifest if isinstance(manifest, bytes) else manifest.to_json()
    head = [Member("manifest.json", manifest_bytes)]
    if key is not None:
        signature = key.sign(manifest_bytes)
    if signature is not None:
        head.append(Member("manifest.sig", signature))
    path.write_bytes(gz(tar_bytes([*head, *members]) + trailing))
    return path


def honest_members(files: Mapping[str, bytes], modes: Mapping[str, int] | None = None) -> list[Member]:
    modes = modes or {}
    return [Member(name, data, mode=modes.get(name, 0o644)) for name, data in sorted(files.items())]
