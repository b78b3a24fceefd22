"""Keys on disk, trust stores, and signing packages in place."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    PrivateFormat,
    PublicFormat,
)

from omadm.package import build_package, open_package
from omadm.package.errors import PackageError, SignatureError
from omadm.package.signing import (
    generate_key,
    key_id,
    load_private_key,
    load_public_key,
    load_public_keys,
    public_key_pem,
    save_private_key,
    save_public_key,
    sign_package,
)

from .helpers import craft


def test_private_key_round_trip_and_mode(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "key.pem"
    save_private_key(key, path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert key_id(load_private_key(path)) == key_id(key)
    assert list(tmp_path.iterdir()) == [path]


def test_an_existing_key_is_not_overwritten_by_accident(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "key.pem"
    save_private_key(key, path)
    other = generate_key()
    with pytest.raises(PackageError, match="already exists"):
        save_private_key(other, path)
    assert key_id(load_private_key(path)) == key_id(key)
    save_private_key(other, path, overwrite=True)
    assert key_id(load_private_key(path)) == key_id(other)


def test_key_id_is_16_hex_of_the_raw_public_key(key: Ed25519PrivateKey) -> None:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert key_id(key) == key_id(key.public_key()) == hashlib.sha256(raw).hexdigest()[:16]


def test_public_key_files_and_trust_directories(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    other = generate_key()
    store = tmp_path / "trust"
    store.mkdir()
    save_public_key(key, store / "a.pem")
    (store / "b.pem").write_bytes(public_key_pem(other.public_key()))
    (store / "dup.pem").write_bytes(public_key_pem(key))
    (store / "notes.txt").write_text("not a key, not read")
    keys = load_public_keys(store)
    assert [key_id(k) for k in keys] == [key_id(key), key_id(other)]
    assert [key_id(k) for k in load_public_keys([store / "b.pem", str(store / "a.pem")])] == [
        key_id(other),
        key_id(key),
    ]
    (tmp_path / "empty").mkdir()
    assert load_public_keys(tmp_path / "empty") == []


def test_bad_key_files_are_explained(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    with pytest.raises(PackageError, match="not a PEM public key"):
        load_public_key(garbage)
    with pytest.raises(PackageError, match="not a PEM private key"):
        load_private_key(garbage)
    private = tmp_path / "private.pem"
    save_private_key(key, private)
    with pytest.raises(PackageError, match="a private key; trust the public key file"):
        load_public_keys(private)
    ec = generate_private_key(SECP256R1())
    ec_public = tmp_path / "ec.pem"
    ec_public.write_bytes(ec.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(PackageError, match="signed with Ed25519"):
        load_public_key(ec_public)
    ec_private = tmp_path / "ec-key.pem"
    ec_private.write_bytes(
        ec.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(b"pw"))
    )
    with pytest.raises(PackageError, match="encrypted"):
        load_private_key(ec_private)
    with pytest.raises(FileNotFoundError):
        load_public_keys(tmp_path / "missing.pem")


def test_signing_an_unsigned_build_equals_a_signed_build(
    tmp_path: Path, source: Path, unsigned: Path, key: Ed25519PrivateKey
) -> None:
    direct = tmp_path / "direct.omp"
    build_package(source, direct, signing_key=key)
    assert sign_package(unsigned, key) == key_id(key)
    assert unsigned.read_bytes() == direct.read_bytes()
    assert open_package(unsigned, [key.public_key()]).key_id == key_id(key)


def test_signing_is_idempotent(signed: Path, key: Ed25519PrivateKey) -> None:
    before = signed.read_bytes()
    mtime = signed.stat().st_mtime_ns
    sign_package(signed, key)
    assert signed.read_bytes() == before
    assert signed.stat().st_mtime_ns == mtime  # untouched, not rewritten


def test_re_signing_with_another_key_replaces_the_signature(
    signed: Path, key: Ed25519PrivateKey, other_key: Ed25519PrivateKey
) -> None:
    sign_package(signed, other_key)
    assert open_package(signed, [other_key.public_key()]).key_id == key_id(other_key)
    with pytest.raises(SignatureError):
        open_package(signed, [key.public_key()])


def test_a_damaged_package_is_not_signed(tmp_path: Path, unsigned: Path, key: Ed25519PrivateKey) -> None:
    data = unsigned.read_bytes()
    unsigned.write_bytes(data[: len(data) // 2])
    with pytest.raises(PackageError, match="truncated"):
        sign_package(unsigned, key)
    assert unsigned.read_bytes() == data[: len(data) // 2]
    bad = craft(tmp_path / "bad.omp", b"{}", [])
    with pytest.raises(PackageError, match="invalid manifest"):
        sign_package(bad, key)
