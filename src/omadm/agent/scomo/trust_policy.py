"""Which publisher may replace which component: a trust policy, or else the first signer's pin.

Every key in the trust directory verifies every package, so before issue 13 (point 9) any
trusted publisher could replace any other's component: publisher B's ``com.example.hello``
2.0.0 went over publisher A's 1.0.0. Component ids are now tied to the keys allowed to sign
them, in one of two ways. The decision, made for every component of a package before
anything of it is installed:

**With a policy file** (``[scomo] trust_policy``, default ``<trust_dir>/policy.toml``), the
policy alone decides, and it is an allow-list::

    # Which publisher keys may sign which component ids.
    [[publisher]]
    key = "vendor-a.pub.pem"           # a key file in the trust directory,
    components = ["com.example.*"]     # fnmatch patterns (* ? [seq]), case-sensitive

    [[publisher]]
    key = "3f2a9c0d1e4b5a67"           # or the key id `omadm package keygen/verify` print,
    components = ["org.partner.tool"]  # or the key's full 64-hex-digit SHA-256 fingerprint

A package is installed only if its signer is granted, by some entry naming that key, a
pattern matching each of its component ids. A trusted key the policy does not name may sign
nothing, and an unsigned package (only possible with ``require_signature = false``) has no
publisher to grant anything to, so it is refused. A policy that cannot be read or breaks
the format (an unknown table or field, a key file that is not in the trust directory) refuses
every install until it is fixed: a device whose operator wrote a policy must not fall back
to trusting every key because of a typo.

**Without a policy file**, the first signer is pinned: when a component is installed from
a signed package, the agent records that key's fingerprint for the component id (in the
SCOMO journal's database, see :class:`~omadm.agent.scomo.journal.Journal`). An update or a
replacement signed by another key, or not signed at all, is refused; the same key's
updates go on. A component installed before pinning existed, or from an unsigned package,
is not pinned until a signed package installs it. The pin outlives the component's
removal: otherwise Remove then Install would get around it. To hand a component over to
another publisher, write a policy that grants it; the pin then follows the new signer.

Either refusal is SCOMO result 1407 (Failed package validation), as for a signature that
does not verify: the package is not acceptable from that publisher. The reason names the
key (id and file name) and the component.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from omadm.package.errors import PackageError
from omadm.protocol.codes import ScomoResult

__all__ = [
    "POLICY_FILE",
    "Grant",
    "Signer",
    "TrustPolicy",
    "TrustPolicyError",
    "check_publisher",
    "key_names",
    "load_policy",
]

#: The policy's file name in the trust directory, when ``[scomo] trust_policy`` is empty.
POLICY_FILE = "policy.toml"

_KEY_ID = re.compile(r"[0-9a-fA-F]{16}")
_FINGERPRINT = re.compile(r"[0-9a-fA-F]{64}")
_MAX_POLICY_BYTES = 1 << 20


class TrustPolicyError(Exception):
    """The policy file cannot be read or breaks its format; every install is refused (1407)."""

    result = int(ScomoResult.FAILED_PACKAGE_VALIDATION)


@dataclass(frozen=True, slots=True)
class Signer:
    """The key that signed a package: its fingerprint, and how people know it (id, file names)."""

    fingerprint: str
    names: tuple[str, ...] = ()

    @property
    def key_id(self) -> str:
        return self.fingerprint[:16]

    def __str__(self) -> str:
        return f"key {self.key_id}" + (f" ({', '.join(self.names)})" if self.names else "")


@dataclass(frozen=True, slots=True)
class Grant:
    """One ``[[publisher]]`` entry: a key (as written, and resolved) and the ids it may sign."""

    key: str
    components: tuple[str, ...]
    fingerprint: str | None = None  # resolved from a key file or given in full
    key_id: str | None = None  # given as a 16-digit id

    def names(self, signer: Signer) -> bool:
        """Whether this entry is about ``signer``'s key."""
        if self.fingerprint is not None:
            return self.fingerprint == signer.fingerprint
        return self.key_id == signer.key_id


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    """A parsed policy file: see the module docstring for the format and its meaning."""

    path: Path
    grants: tuple[Grant, ...]

    def patterns_for(self, signer: Signer) -> tuple[str, ...]:
        """Every component id pattern the policy grants ``signer``."""
        return tuple(p for grant in self.grants if grant.names(signer) for p in grant.components)

    def allows(self, signer: Signer, component_id: str) -> bool:
        return any(fnmatch.fnmatchcase(component_id, p) for p in self.patterns_for(signer))


def key_names(trust_dir: Path) -> dict[str, tuple[str, ...]]:
    """The file names of the trust directory's keys, by fingerprint (for messages and the policy).

    Read as :func:`~omadm.package.signing.load_public_keys` reads the directory (``*.pem``);
    a file that is not a public key is skipped here (the verifier reports it).
    """
    from omadm.package.signing import load_public_key  # noqa: PLC0415 - brings cryptography
    from omadm.package.verify import key_fingerprint  # noqa: PLC0415

    names: dict[str, list[str]] = {}
    if not trust_dir.is_dir():
        return {}
    for path in sorted(p for p in trust_dir.glob("*.pem") if p.is_file()):
        try:
            fingerprint = key_fingerprint(load_public_key(path))
        except (PackageError, OSError):
            continue
        names.setdefault(fingerprint, []).append(path.name)
    return {fingerprint: tuple(files) for fingerprint, files in names.items()}


def load_policy(path: Path, trust_dir: Path) -> TrustPolicy | None:
    """Read the policy at ``path``; None when there is no such file (then pins decide).

    Raises:
        TrustPolicyError: the file exists but cannot be read, is not TOML, or breaks the
            format; the message says what and where.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TrustPolicyError(f"the trust policy {path} cannot be read: {exc}") from None
    if len(data) > _MAX_POLICY_BYTES:
        raise TrustPolicyError(f"the trust policy {path} is larger than {_MAX_POLICY_BYTES} bytes")
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TrustPolicyError(f"the trust policy {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(document) - {"publisher"})
    if unknown:
        raise TrustPolicyError(f"the trust policy {path} has unknown entries: {', '.join(unknown)}")
    entries = document.get("publisher", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise TrustPolicyError(f"the trust policy {path}: 'publisher' must be an array of tables")
    files = {name: fingerprint for fingerprint, names in key_names(trust_dir).items() for name in names}
    grants = tuple(_grant(entry, i + 1, path, trust_dir, files) for i, entry in enumerate(entries))
    return TrustPolicy(path=path, grants=grants)


def _grant(
    entry: dict[str, object], number: int, path: Path, trust_dir: Path, files: Mapping[str, str]
) -> Grant:
    where = f"the trust policy {path}, [[publisher]] #{number}"
    unknown = sorted(set(entry) - {"key", "components"})
    if unknown:
        raise TrustPolicyError(f"{where}: unknown fields {', '.join(unknown)} (known: key, components)")
    key, components = entry.get("key"), entry.get("components")
    if not isinstance(key, str) or not key:
        raise TrustPolicyError(
            f"{where}: 'key' must name a key file in {trust_dir}, a key id or a fingerprint"
        )
    if not isinstance(components, list) or not all(isinstance(c, str) and c for c in components):
        raise TrustPolicyError(f"{where}: 'components' must be a list of component id patterns")
    patterns = tuple(str(c) for c in components)
    if _FINGERPRINT.fullmatch(key):
        return Grant(key, patterns, fingerprint=key.lower())
    if _KEY_ID.fullmatch(key):
        return Grant(key, patterns, key_id=key.lower())
    fingerprint = files.get(key)
    if fingerprint is None:
        raise TrustPolicyError(
            f"{where}: {key!r} is not a public key file in {trust_dir} (nor a 16-digit key id or a "
            "64-digit fingerprint)"
        )
    return Grant(key, patterns, fingerprint=fingerprint)


def check_publisher(
    component_ids: Iterable[str],
    signer: Signer | None,
    *,
    policy: TrustPolicy | None,
    pins: Mapping[str, str],
    policy_path: Path,
) -> str | None:
    """Why ``signer`` may not publish these components here, or None when it may.

    ``policy`` is the loaded policy (None: there is no policy file at ``policy_path``), and
    ``pins`` the fingerprint each pinned component id was signed with. Pure: the caller
    reports the refusal (1407) and records new pins after a successful install.
    """
    ids = list(component_ids)
    if policy is not None:
        if signer is None:
            return (
                f"the package is unsigned, and the trust policy {policy.path} lets only the keys it "
                f"names publish components ({', '.join(ids)})"
            )
        for component_id in ids:
            if not policy.allows(signer, component_id):
                granted = policy.patterns_for(signer)
                grants = f"only {', '.join(granted)}" if granted else "nothing: it does not name that key"
                return (
                    f"{signer} may not publish {component_id}: the trust policy {policy.path} grants it "
                    f"{grants}"
                )
        return None
    for component_id in ids:
        pinned = pins.get(component_id)
        if pinned is None or (signer is not None and signer.fingerprint == pinned):
            continue
        by = "an unsigned package" if signer is None else f"a package signed by {signer}"
        return (
            f"{component_id} is pinned to key {pinned[:16]}, which signed it first; it may not be "
            f"replaced by {by} unless a trust policy ({policy_path}) grants that"
        )
    return None
