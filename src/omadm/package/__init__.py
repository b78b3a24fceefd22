"""omadm component packages (``.omp``): what a publisher ships and a device verifies first.

A package is a gzip-compressed tar whose first member is a canonical JSON manifest, whose
optional second member is an Ed25519 signature over the manifest's exact bytes, and whose
other members are the component files the manifest lists with size, SHA-256 and mode. See
:mod:`.manifest` (the format), :mod:`.build` (publisher side), :mod:`.signing` (keys) and
:mod:`.verify` (device side). Every failure is a :class:`PackageError` carrying the SCOMO
result code to report (1407 for anything about format, integrity or signature).

The names below are loaded on first use (PEP 562): importing one submodule, such as
``omadm.package.errors`` for the agent's error handling, does not load the rest, and above
all not ``cryptography`` (about 7 MB of a device's memory) before a package is verified.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .build import build_package
    from .errors import IntegrityError, ManifestError, PackageError, SignatureError
    from .manifest import ComponentManifest, Dependency, FileEntry, PackageManifest, compare_versions
    from .signing import generate_key, key_id, load_private_key, load_public_keys, sign_package
    from .verify import DEFAULT_MAX_UNPACKED, VerifiedPackage, open_package

#: Public name -> the submodule that defines it.
_WHERE = {
    "build_package": "build",
    "IntegrityError": "errors",
    "ManifestError": "errors",
    "PackageError": "errors",
    "SignatureError": "errors",
    "ComponentManifest": "manifest",
    "Dependency": "manifest",
    "FileEntry": "manifest",
    "PackageManifest": "manifest",
    "compare_versions": "manifest",
    "generate_key": "signing",
    "key_id": "signing",
    "load_private_key": "signing",
    "load_public_keys": "signing",
    "sign_package": "signing",
    "DEFAULT_MAX_UNPACKED": "verify",
    "VerifiedPackage": "verify",
    "open_package": "verify",
}

__all__ = [
    "DEFAULT_MAX_UNPACKED",
    "ComponentManifest",
    "Dependency",
    "FileEntry",
    "IntegrityError",
    "ManifestError",
    "PackageError",
    "PackageManifest",
    "SignatureError",
    "VerifiedPackage",
    "build_package",
    "compare_versions",
    "generate_key",
    "key_id",
    "load_private_key",
    "load_public_keys",
    "open_package",
    "sign_package",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value  # once loaded, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
