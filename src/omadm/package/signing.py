"""Publisher keys and package signatures (Ed25519).

A publisher keeps one private key (PEM, PKCS8, unencrypted, file mode 0600) and hands the
public key to devices; a device's trust store is a directory of ``*.pem`` public keys. A key
is named by :func:`key_id` (16 hex digits) so people can compare what ``keygen`` printed with
what ``verify`` reports without reading PEM.

:func:`sign_package` verifies the archive's structure first (signing vouches for the content,
so it must never sign a damaged package), then rewrites it with ``manifest.sig`` as the second
member. Ed25519 signatures are deterministic, so signing twice with the same key gives the
same file, and signing an unsigned build gives exactly the bytes a signed build would have.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from ._archive import MANIFEST_NAME, SIGNATURE_NAME, ArchiveReader, atomic_output, decoding, write_archive
from ._crypto import key_id
from .errors import IntegrityError, PackageError
from .manifest import FileEntry
from .verify import open_package

__all__ = [
    "generate_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "load_public_keys",
    "private_key_pem",
    "public_key_pem",
    "save_private_key",
    "save_public_key",
    "sign_manifest",
    "sign_package",
]

_MAX_KEY_FILE = 64 << 10


def generate_key() -> Ed25519PrivateKey:
    """A new random publisher key."""
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The public key (of a private key: its public half) as SubjectPublicKeyInfo PEM."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def save_private_key(key: Ed25519PrivateKey, path: Path, *, overwrite: bool = False) -> None:
    """Write the key as PKCS8 PEM, readable by the owner only (0600), atomically.

    Refuses to replace an existing file unless ``overwrite``: losing a signing key means
    every device must be given a new trust anchor.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise PackageError(f"{path} already exists; refusing to overwrite a key")
    # The temp file is created 0600 by mkstemp, so the key is never readable by others, even briefly.
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(private_key_pem(key))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def save_public_key(key: Ed25519PrivateKey | Ed25519PublicKey, path: Path) -> None:
    """Write the public key as PEM (mode 0644): the file to copy into devices' trust stores."""
    with atomic_output(Path(path)) as out:
        out.write(public_key_pem(key))


def _read_key_file(path: Path) -> bytes:
    path = Path(path)
    if path.stat().st_size > _MAX_KEY_FILE:
        raise PackageError(f"{path}: too large to be a PEM key")
    return path.read_bytes()


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Load an unencrypted PEM (PKCS8) Ed25519 private key; ``PackageError`` says what is wrong."""
    data = _read_key_file(path)
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:
        raise PackageError(f"{path}: the key is encrypted; omadm expects an unencrypted PKCS8 key") from None
    except ValueError:
        raise PackageError(f"{path}: not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise PackageError(f"{path}: a {type(key).__name__} key; omadm packages are signed with Ed25519")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load one PEM Ed25519 public key; a private key file is refused (trust stores hold public keys)."""
    data = _read_key_file(path)
    if b"PRIVATE KEY-----" in data:
        raise PackageError(f"{path}: a private key; trust the public key file (.pub.pem) instead")
    try:
        key = load_pem_public_key(data)
    except ValueError:
        raise PackageError(f"{path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise PackageError(f"{path}: a {type(key).__name__} key; omadm packages are signed with Ed25519")
    return key


def load_public_keys(paths_or_dir: Path | str | Iterable[Path | str]) -> list[Ed25519PublicKey]:
    """A trust store: PEM files and/or directories of ``*.pem`` files, duplicates dropped.

    An empty directory gives an empty list; :func:`~omadm.package.verify.open_package` then
    refuses signed packages with a message saying no keys are trusted.
    """
    sources = [paths_or_dir] if isinstance(paths_or_dir, str | Path) else list(paths_or_dir)
    keys: dict[str, Ed25519PublicKey] = {}
    for source in sources:
        path = Path(source)
        files = sorted(p for p in path.glob("*.pem") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            key = load_public_key(file)
            keys.setdefault(key_id(key), key)
    return list(keys.values())


def sign_manifest(manifest_bytes: bytes, key: Ed25519PrivateKey) -> bytes:
    """The 64-byte signature over the exact manifest bytes."""
    return key.sign(manifest_bytes)


def sign_package(path: Path, key: Ed25519PrivateKey) -> str:
    """Sign (or re-sign) the package at ``path`` in place, atomically; returns the key id.

    The package is verified first (everything but trust). A package already signed by this
    key is left untouched; one signed by another key gets the new signature instead.
    """
    path = Path(path)
    package = open_package(path, [], require_signature=False, max_unpacked=1 << 62)
    with path.open("rb") as raw, ArchiveReader(raw, limit=1 << 62) as reader:
        head = reader.next()
        if head is None or head.name != MANIFEST_NAME:
            raise IntegrityError("the package changed while being signed")
        manifest_bytes = reader.read_small(head)
        mtime = int(head.mtime)
        signature = sign_manifest(manifest_bytes, key)
        second = reader.next()
        if second is not None and second.name == SIGNATURE_NAME:
            if reader.read_small(second) == signature:
                return key_id(key)
        elif second is not None:
            reader.push_back(second)
        listed = {entry.path: entry for entry in package.manifest.files}
        with decoding(), atomic_output(path) as out:
            write_archive(
                out,
                manifest_bytes=manifest_bytes,
                signature=signature,
                files=_payload(reader, listed),
                mtime=mtime,
            )
    return key_id(key)


def _payload(reader: ArchiveReader, listed: dict[str, FileEntry]) -> Iterator[tuple[FileEntry, IO[bytes]]]:
    """The payload members of a verified archive, in archive order (directory members dropped).

    Each member's data streams straight from the old archive into the new one; the writer
    checks size and SHA-256 again on the way.
    """
    for member in reader.members():
        if member.isdir():
            continue
        entry = listed.get(member.name)
        if entry is None:
            raise IntegrityError(f"the package changed while being signed ({member.name})")
        with reader.open_member(member) as data:
            yield entry, data
