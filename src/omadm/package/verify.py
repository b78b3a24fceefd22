"""Device-side verification of a component package, before anything is installed.

:func:`open_package` answers one question: may this file be installed? It checks, in this
order, and stops at the first failure with a :class:`PackageError` carrying 1407 (Failed
package validation):

1. the file size, then the SHA-256 of the whole file, against what the server announced
   (cheap checks first: a wrong download is caught before any decompression);
2. that it is a gzip stream holding a tar archive, whose first member is ``manifest.json``;
3. the signature (``manifest.sig``, the second member) against the device's trusted keys;
4. that the manifest parses and validates, and that its declared sizes fit ``max_unpacked``;
5. every other member: a safe path, a regular file or directory, listed in the manifest with
   the same size, mode and SHA-256; no member twice, none missing, nothing after the tar.

Only the signed manifest is trusted; everything else in the archive is checked against it.
Because gzip cannot be skipped through, checking every member header already means
decompressing everything, so content digests are checked here too: a ``VerifiedPackage`` is
fully verified, and a bad package is reported as 1407 at download time rather than half-way
through an install. :meth:`VerifiedPackage.extract_component` checks the digests again while
it writes, because the file on disk may change between verification and installation.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from tarfile import TarInfo
from typing import BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from omadm.protocol.codes import ScomoResult

from ._archive import (
    CHUNK,
    GZIP_MAGIC,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    SIGNATURE_NAME,
    ArchiveReader,
    describe_type,
    fsync_directory,
    is_regular,
)
from ._crypto import SIGNATURE_SIZE, find_signer, key_id, raw_public_key
from .errors import IntegrityError, PackageError, SignatureError
from .manifest import ComponentManifest, FileEntry, PackageManifest, path_problem

__all__ = ["DEFAULT_MAX_UNPACKED", "VerifiedPackage", "key_fingerprint", "open_package"]

#: Default cap on the sum of declared file sizes (1 GiB).
DEFAULT_MAX_UNPACKED = 1 << 30

_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
# Decompressed bytes allowed before the manifest is known: the manifest and signature with
# their headers.
_HEAD_BUDGET = MAX_MANIFEST_BYTES + (1 << 20)
# Per member: its header blocks, plus room for a PAX or GNU long-name header.
_MEMBER_OVERHEAD = 4096
# End-of-archive blocks and record padding.
_TAIL_BUDGET = 1 << 20


def key_fingerprint(key: Ed25519PublicKey) -> str:
    """The whole SHA-256 (64 hex digits) of the raw public key; :func:`key_id` is its first 16.

    The short id is for people to compare by eye. A device that remembers which key signed
    a component (SCOMO publisher pinning) keeps the fingerprint: 64 bits of the id could be
    matched by a key ground for the purpose, 256 bits cannot.
    """
    return hashlib.sha256(raw_public_key(key)).hexdigest()


@dataclass(frozen=True, slots=True)
class VerifiedPackage:
    """A package that passed :func:`open_package`.

    ``key_id`` names the trusted key that signed it (``None`` if unsigned or not checked)
    and ``key_fingerprint`` is that key's full :func:`key_fingerprint`; ``sha256`` and ``size``
    describe the whole file; ``manifest_sha256`` lets extraction notice that the file was
    replaced after verification. Only :func:`open_package` makes these.
    """

    path: Path
    manifest: PackageManifest
    key_id: str | None
    sha256: str
    size: int
    signed: bool
    manifest_sha256: str
    key_fingerprint: str | None = None

    def extract_component(self, component_id: str, dest: Path) -> Path:
        """Unpack one component's files into ``dest`` (missing or empty) and return ``dest``.

        Each file is written with its manifest mode (0644/0755) after its SHA-256 has been
        checked while streaming. On any failure what was written is removed (``dest`` itself
        too if this call created it), so an installer never sees a partial component. Running
        out of disk space surfaces as ``OSError`` (the installer's 1406, not a package fault).
        """
        try:
            component = self.manifest.component(component_id)
        except KeyError:
            raise PackageError(
                f"package {self.manifest.id} has no component {component_id}", ScomoResult.INSTALL_FAILED
            ) from None
        dest = Path(dest)
        created = _prepare_destination(dest)
        try:
            self._extract(component, dest)
        except BaseException:
            _clean(dest, created)
            raise
        return dest

    def _extract(self, component: ComponentManifest, dest: Path) -> None:
        wanted = {entry.path: entry for entry in component.files}
        directories = {dest}
        with self.path.open("rb") as raw:
            _check_gzip_magic(raw)
            with ArchiveReader(raw, limit=_HEAD_BUDGET) as reader:
                manifest_bytes, _signature = _read_head(reader)
                if hashlib.sha256(manifest_bytes).hexdigest() != self.manifest_sha256:
                    raise IntegrityError(
                        "the package file changed after it was verified (different manifest)"
                    )
                reader.set_limit(reader.consumed + _payload_budget(self.manifest))
                for member in reader.members():
                    if not wanted:
                        break
                    entry = wanted.pop(member.name, None)
                    if entry is None:
                        continue  # another component's file, or a directory: tarfile skips its data
                    _check_member(member, entry)
                    target = dest / component.relative_path(entry)
                    _make_directories(dest, target.parent, directories)
                    _write_file(reader, member, entry, target)
        if wanted:
            raise IntegrityError(f"{min(wanted)} is missing from the archive")
        for directory in sorted(directories, reverse=True):
            fsync_directory(directory)


def open_package(
    path: Path,
    trusted_keys: Sequence[Ed25519PublicKey],
    *,
    expected_sha256: str | None = None,
    expected_size: int | None = None,
    require_signature: bool = True,
    max_unpacked: int = DEFAULT_MAX_UNPACKED,
) -> VerifiedPackage:
    """Verify the package at ``path`` completely; see the module docstring for the checks.

    With ``require_signature=False`` an unsigned package is accepted, but a signature that is
    present is still checked against ``trusted_keys`` when any are given: a signature that
    does not verify means the manifest was changed, and that is never acceptable. I/O errors
    (missing file, unreadable) are raised as ``OSError``: they are the device's problem, not
    the package's.
    """
    path = Path(path)
    with path.open("rb") as raw:
        size = os.fstat(raw.fileno()).st_size
        if expected_size is not None and size != expected_size:
            raise IntegrityError(f"the file is {size} bytes, expected {expected_size}")
        digest = _sha256_of(raw)
        if expected_sha256 is not None:
            if not isinstance(expected_sha256, str) or not _SHA256_RE.fullmatch(expected_sha256):
                raise IntegrityError(f"expected SHA-256 {expected_sha256!r} is not 64 hex digits")
            if digest != expected_sha256.lower():
                raise IntegrityError(f"the file's SHA-256 is {digest}, expected {expected_sha256.lower()}")
        raw.seek(0)
        _check_gzip_magic(raw)
        with ArchiveReader(raw, limit=_HEAD_BUDGET) as reader:
            manifest_bytes, signature = _read_head(reader)
            signer = _check_signature(manifest_bytes, signature, trusted_keys, require=require_signature)
            manifest = PackageManifest.from_json(manifest_bytes)
            if manifest.total_size > max_unpacked:
                raise IntegrityError(
                    f"the manifest declares {manifest.total_size} bytes of files, more than the "
                    f"limit of {max_unpacked} bytes"
                )
            reader.set_limit(reader.consumed + _payload_budget(manifest))
            _check_members(reader, manifest)
            reader.finish()
    return VerifiedPackage(
        path=path,
        manifest=manifest,
        key_id=None if signer is None else key_id(signer),
        sha256=digest,
        size=size,
        signed=signature is not None,
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        key_fingerprint=None if signer is None else key_fingerprint(signer),
    )


# --------------------------------------------------------------------------- steps


def _sha256_of(raw: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := raw.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _check_gzip_magic(raw: BinaryIO) -> None:
    start = raw.read(len(GZIP_MAGIC))
    raw.seek(0)
    if start != GZIP_MAGIC:
        raise IntegrityError("not a gzip file (an .omp package is a gzip-compressed tar archive)")


def _read_head(reader: ArchiveReader) -> tuple[bytes, bytes | None]:
    """manifest.json (first member) and manifest.sig (second member, optional)."""
    first = reader.next()
    if first is None:
        raise IntegrityError("the archive is empty; manifest.json must be its first member")
    if first.name != MANIFEST_NAME:
        raise IntegrityError(f"the first member is {first.name!r}; manifest.json must come first")
    if not is_regular(first):
        raise IntegrityError(f"manifest.json is a {describe_type(first)}, not a regular file")
    if first.size > MAX_MANIFEST_BYTES:
        raise IntegrityError(
            f"manifest.json is {first.size} bytes, more than the limit of {MAX_MANIFEST_BYTES}"
        )
    manifest_bytes = reader.read_small(first)
    second = reader.next()
    if second is None or second.name != SIGNATURE_NAME:
        if second is not None:
            reader.push_back(second)
        return manifest_bytes, None
    if not is_regular(second):
        raise SignatureError(f"manifest.sig is a {describe_type(second)}, not a regular file")
    if second.size != SIGNATURE_SIZE:
        raise SignatureError(
            f"manifest.sig is {second.size} bytes; an Ed25519 signature is {SIGNATURE_SIZE} bytes"
        )
    return manifest_bytes, reader.read_small(second)


def _check_signature(
    manifest_bytes: bytes, signature: bytes | None, trusted_keys: Sequence[Ed25519PublicKey], *, require: bool
) -> Ed25519PublicKey | None:
    if signature is None:
        if require:
            raise SignatureError("the package is not signed (no manifest.sig)")
        return None
    if not trusted_keys:
        if require:
            raise SignatureError("the package is signed but no trusted keys were given to check it with")
        return None
    signer = find_signer(manifest_bytes, signature, trusted_keys)
    if signer is None:
        ids = ", ".join(key_id(k) for k in trusted_keys)
        raise SignatureError(
            "manifest.sig does not verify with any trusted key: signed by another key, or the "
            f"manifest was changed after signing (trusted key ids: {ids})"
        )
    return signer


def _implied_directories(manifest: PackageManifest) -> set[str]:
    """Every directory above a listed file: the only directory members an archive may hold."""
    directories: set[str] = set()
    for entry in manifest.files:
        parent = entry.path.rpartition("/")[0]
        while parent and parent not in directories:
            directories.add(parent)
            parent = parent.rpartition("/")[0]
    return directories


def _payload_budget(manifest: PackageManifest) -> int:
    """How many decompressed bytes a well-formed archive of this manifest can hold, generously."""
    files = manifest.files
    data = sum((f.size + 511) // 512 * 512 for f in files)
    names = sum(2 * len(f.path.encode()) for f in files)
    members = len(files) + len(_implied_directories(manifest))
    return data + names + members * _MEMBER_OVERHEAD + _TAIL_BUDGET


def _check_members(reader: ArchiveReader, manifest: PackageManifest) -> None:
    listed = {entry.path: entry for entry in manifest.files}
    directories = _implied_directories(manifest)
    seen: set[str] = set()
    for member in reader.members():
        name = member.name
        if name in (MANIFEST_NAME, SIGNATURE_NAME):
            raise IntegrityError(f"{name} appears again later in the archive")
        problem = path_problem(name)
        if problem is not None:
            raise IntegrityError(f"member path {name!r} {problem}")
        if member.isdir():
            if name not in directories:
                raise IntegrityError(f"directory member {name} holds no file listed in the manifest")
            if name in seen:
                raise IntegrityError(f"member {name} appears twice")
            seen.add(name)
            continue
        if not is_regular(member):
            raise IntegrityError(
                f"member {name} is a {describe_type(member)}; only regular files and directories are allowed"
            )
        entry = listed.get(name)
        if entry is None:
            raise IntegrityError(f"member {name} is not listed in the manifest")
        if name in seen:
            raise IntegrityError(f"member {name} appears twice")
        seen.add(name)
        _check_member(member, entry)
        if reader.stream(member) != entry.sha256:
            raise IntegrityError(f"the content of {name} does not match its SHA-256 in the manifest")
    missing = sorted(set(listed) - seen)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise IntegrityError(f"{missing[0]}{more} is listed in the manifest but missing from the archive")


def _check_member(member: TarInfo, entry: FileEntry) -> None:
    """Header checks for a listed file, made before a single byte of its data is read."""
    if not is_regular(member):
        kind = describe_type(member)
        raise IntegrityError(
            f"member {member.name} is a {kind}; only regular files and directories are allowed"
        )
    if member.size != entry.size:
        raise IntegrityError(f"member {member.name} is {member.size} bytes; the manifest says {entry.size}")
    if member.mode & 0o7777 != entry.mode:
        raise IntegrityError(
            f"member {member.name} has mode {member.mode:04o}; the manifest says {entry.mode:04o}"
        )


# --------------------------------------------------------------------------- extraction


def _prepare_destination(dest: Path) -> bool:
    """Make sure ``dest`` is an empty directory; True if this call created it."""
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise PackageError(f"{dest} exists and is not a directory", ScomoResult.INSTALL_FAILED)
    if dest.is_dir():
        if any(dest.iterdir()):
            raise PackageError(f"{dest} is not empty", ScomoResult.INSTALL_FAILED)
        return False
    dest.mkdir(parents=True)
    dest.chmod(0o755)
    return True


def _clean(dest: Path, created: bool) -> None:
    if created:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _make_directories(dest: Path, directory: Path, made: set[Path]) -> None:
    """Create ``directory`` (inside ``dest``) and its parents with mode 0755, remembering them for fsync."""
    missing = []
    while directory not in made and directory != dest:
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
        path.chmod(0o755)
        made.add(path)


def _write_file(reader: ArchiveReader, member: TarInfo, entry: FileEntry, target: Path) -> None:
    # O_EXCL | O_NOFOLLOW: never write through something that appeared in dest behind our back.
    # The file stays 0600 until its digest is checked, so a half-written hook is never executable.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(target, flags, 0o600)
    with os.fdopen(fd, "wb") as out:
        if reader.stream(member, out.write) != entry.sha256:
            raise IntegrityError(f"the content of {entry.path} does not match its SHA-256 in the manifest")
        out.flush()
        os.fchmod(out.fileno(), entry.mode)
        os.fsync(out.fileno())
