"""omadm component packages (``.omp``): what a publisher ships and a device verifies first.

A package is a gzip-compressed tar whose first member is a canonical JSON manifest, whose
optional second member is an Ed25519 signature over the manifest's exact bytes, and whose
other members are the component files the manifest lists with size, SHA-256 and mode. See
:mod:`.manifest` (the format), :mod:`.build` (publisher side), :mod:`.signing` (keys) and
:mod:`.verify` (device side). Every failure is a :class:`PackageError` carrying the SCOMO
result code to report (1407 for anything about format, integrity or signature).
"""

from __future__ import annotations

from .build import build_package
from .errors import IntegrityError, ManifestError, PackageError, SignatureError
from .manifest import ComponentManifest, Dependency, FileEntry, PackageManifest, compare_versions
from .signing import generate_key, key_id, load_private_key, load_public_keys, sign_package
from .verify import DEFAULT_MAX_UNPACKED, VerifiedPackage, open_package

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
