"""The one exception of the component package layer.

A device reports the outcome of a SCOMO operation as a result code (SCOMO digest section 5),
so every failure here carries the code to report instead of leaving the agent to guess it
from a message text. Almost everything this layer can find wrong with a package (format,
integrity, signature, manifest) is "1407 Failed package validation"; deciding that an
environment is unsupported (1413) or that an install failed (1405) belongs to the installer,
which may raise ``PackageError`` with those codes itself::

    PackageError              result chosen by whoever raises it (default 1407)
    ├── ManifestError         the manifest (or a package source's description) breaks a rule
    ├── SignatureError        manifest.sig missing, malformed, or by no trusted key
    └── IntegrityError        sizes, digests or archive structure differ from the manifest
"""

from __future__ import annotations

from omadm.protocol.codes import ScomoResult

__all__ = ["IntegrityError", "ManifestError", "PackageError", "SignatureError"]


class PackageError(Exception):
    """A package cannot be built, signed, verified or unpacked; ``result`` is the SCOMO code."""

    def __init__(self, message: str, result: int = ScomoResult.FAILED_PACKAGE_VALIDATION) -> None:
        super().__init__(message)
        self.message = message
        self.result = int(result)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, result={self.result})"


class ManifestError(PackageError):
    """The manifest, or the ``omadm-package.toml`` it is built from, breaks a validation rule."""


class SignatureError(PackageError):
    """The package is not signed, or its signature does not verify with any trusted key."""


class IntegrityError(PackageError):
    """The archive does not match its manifest: size, digest, members, types or paths."""
