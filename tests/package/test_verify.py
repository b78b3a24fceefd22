"""open_package: the happy path and every way a package is refused; extract_component."""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from omadm.package import VerifiedPackage, build_package, key_id, open_package
from omadm.package.errors import IntegrityError, ManifestError, PackageError, SignatureError
from omadm.protocol.codes import ScomoResult

from .helpers import (
    APP,
    APP_PREFIX,
    SAMPLE_FILES,
    Member,
    craft,
    gz,
    honest_members,
    manifest_of,
    tar_bytes,
)

FILES = {
    APP_PREFIX + "bin/run": b"#!/bin/sh\necho hi\n",
    APP_PREFIX + "data/a.txt": b"alpha",
    APP_PREFIX + "data/b.txt": b"bravo",
}
MODES = {APP_PREFIX + "bin/run": 0o755}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def refused(
    path: Path,
    key: Ed25519PrivateKey,
    match: str,
    *,
    error: type[PackageError] = IntegrityError,
    **kw: object,
) -> PackageError:
    with pytest.raises(error, match=match) as caught:
        open_package(path, [key.public_key()], **kw)  # type: ignore[arg-type]
    assert caught.value.result == ScomoResult.FAILED_PACKAGE_VALIDATION
    return caught.value


# --------------------------------------------------------------------------- happy path


def test_build_sign_verify(signed: Path, key: Ed25519PrivateKey, other_key: Ed25519PrivateKey) -> None:
    package = open_package(
        signed,
        [other_key.public_key(), key.public_key()],
        expected_sha256=file_sha256(signed).upper(),
        expected_size=signed.stat().st_size,
    )
    assert isinstance(package, VerifiedPackage)
    assert package.key_id == key_id(key)
    assert package.signed
    assert package.sha256 == file_sha256(signed)
    assert package.size == signed.stat().st_size
    assert package.manifest.id == "com.example.pkg"
    assert len(package.manifest.files) == len(SAMPLE_FILES)


def test_crafted_honest_archive_verifies(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = craft(tmp_path / "p.omp", manifest_of(FILES, modes=MODES), honest_members(FILES, MODES), key=key)
    assert open_package(path, [key.public_key()]).key_id == key_id(key)


def test_directory_members_above_listed_files_are_accepted(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    dirs = [
        Member(name, type=tarfile.DIRTYPE, mode=0o755)
        for name in ("components", APP_PREFIX[:-1], APP_PREFIX + "data")
    ]
    path = craft(
        tmp_path / "p.omp", manifest_of(FILES, modes=MODES), [*dirs, *honest_members(FILES, MODES)], key=key
    )
    open_package(path, [key.public_key()])


def test_unsigned_package_accepted_only_when_allowed(unsigned: Path, key: Ed25519PrivateKey) -> None:
    refused(unsigned, key, "not signed", error=SignatureError)
    package = open_package(unsigned, [], require_signature=False)
    assert package.key_id is None and not package.signed


def test_signature_present_but_unchecked_without_keys(signed: Path) -> None:
    package = open_package(signed, [], require_signature=False)
    assert package.signed and package.key_id is None


# --------------------------------------------------------------------------- whole-file checks


def test_wrong_size(signed: Path, key: Ed25519PrivateKey) -> None:
    refused(signed, key, r"is \d+ bytes, expected 12", expected_size=12)


def test_wrong_sha256(signed: Path, key: Ed25519PrivateKey) -> None:
    refused(signed, key, "SHA-256 is .*, expected 0000", expected_sha256="0" * 64)


def test_malformed_expected_sha256(signed: Path, key: Ed25519PrivateKey) -> None:
    refused(signed, key, "not 64 hex digits", expected_sha256="abc")


def test_size_is_checked_before_the_digest(signed: Path, key: Ed25519PrivateKey) -> None:
    refused(signed, key, "expected 1$", expected_size=1, expected_sha256="0" * 64)


def test_truncated_file(signed: Path, key: Ed25519PrivateKey) -> None:
    data = signed.read_bytes()
    for cut in (len(data) - 4, len(data) // 2, 40):
        signed.write_bytes(data[:cut])
        refused(signed, key, "truncated|damaged")


def test_truncated_file_is_caught_by_the_digest_first(signed: Path, key: Ed25519PrivateKey) -> None:
    good = file_sha256(signed)
    signed.write_bytes(signed.read_bytes()[:-10])
    refused(signed, key, "SHA-256", expected_sha256=good)


def test_corrupted_gzip_stream(signed: Path, key: Ed25519PrivateKey) -> None:
    data = bytearray(signed.read_bytes())
    data[-6] ^= 0xFF  # inside the CRC32 / length trailer
    signed.write_bytes(bytes(data))
    refused(signed, key, "damaged")


def test_not_gzip(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "p.omp"
    path.write_bytes(tar_bytes([Member("manifest.json", manifest_of(FILES).to_json())]))
    refused(path, key, "not a gzip file")
    path.write_bytes(b"")
    refused(path, key, "not a gzip file")


def test_gzip_but_not_tar(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "p.omp"
    path.write_bytes(gz(b"this is not a tar archive at all" * 40))
    refused(path, key, "does not hold a tar archive")


def test_empty_tar(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "p.omp"
    path.write_bytes(gz(tar_bytes([])))
    refused(path, key, "empty")


def test_trailing_data_after_the_archive(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = craft(
        tmp_path / "p.omp",
        manifest_of(FILES, modes=MODES),
        honest_members(FILES, MODES),
        key=key,
        trailing=b"junk" * 5000,
    )
    refused(path, key, "data after the end of the tar archive")


# --------------------------------------------------------------------------- head: manifest and signature


def test_manifest_not_first(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    manifest = manifest_of(FILES, modes=MODES)
    members = [*honest_members(FILES, MODES), Member("manifest.json", manifest.to_json())]
    path = tmp_path / "p.omp"
    path.write_bytes(gz(tar_bytes(members)))
    refused(path, key, "first member is 'components/.*manifest.json must come first")


def test_manifest_not_a_regular_file(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "p.omp"
    path.write_bytes(gz(tar_bytes([Member("manifest.json", type=tarfile.SYMTYPE, linkname="/etc/passwd")])))
    refused(path, key, "manifest.json is a symbolic link")


def test_missing_signature(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = craft(tmp_path / "p.omp", manifest_of(FILES, modes=MODES), honest_members(FILES, MODES))
    refused(path, key, r"not signed \(no manifest.sig\)", error=SignatureError)


def test_garbage_signature_of_the_right_size(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = craft(
        tmp_path / "p.omp",
        manifest_of(FILES, modes=MODES),
        honest_members(FILES, MODES),
        signature=os.urandom(64),
    )
    refused(path, key, "does not verify with any trusted key", error=SignatureError)
    # Not required, but present and checkable: still refused (it means tampering).
    with pytest.raises(SignatureError):
        open_package(path, [key.public_key()], require_signature=False)


def test_garbage_signature_of_the_wrong_size(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = craft(
        tmp_path / "p.omp", manifest_of(FILES, modes=MODES), honest_members(FILES, MODES), signature=b"sig"
    )
    refused(path, key, "manifest.sig is 3 bytes; an Ed25519 signature is 64", error=SignatureError)


def test_signature_by_an_untrusted_key(signed: Path, other_key: Ed25519PrivateKey) -> None:
    error = refused(signed, other_key, "does not verify with any trusted key", error=SignatureError)
    assert key_id(other_key) in error.message


def test_no_trusted_keys(signed: Path) -> None:
    with pytest.raises(SignatureError, match="no trusted keys"):
        open_package(signed, [])


def test_manifest_tampered_after_signing(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    original = manifest_of(FILES, modes=MODES)
    signature = key.sign(original.to_json())
    tampered = manifest_of(FILES, modes=MODES, allow_downgrade=True)
    path = craft(tmp_path / "p.omp", tampered, honest_members(FILES, MODES), signature=signature)
    refused(path, key, "changed after signing", error=SignatureError)


def test_signature_is_checked_before_the_manifest_is_parsed(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = craft(tmp_path / "p.omp", b"not json", [], signature=os.urandom(64))
    refused(path, key, "does not verify", error=SignatureError)
    path = craft(tmp_path / "p.omp", b"not json", [], key=key)
    refused(path, key, "not JSON", error=ManifestError)


def test_oversized_manifest(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = craft(tmp_path / "p.omp", b" " * (9 << 20), [], key=key)
    refused(path, key, "manifest.json is 9437184 bytes, more than the limit")


def test_bomb_in_a_header_is_stopped_by_the_budget(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    # A 64 MiB PAX record that tarfile would read into memory by itself; ~64 KiB compressed.
    bomb = Member("manifest.json", b"{}", pax={"comment": "x" * (64 << 20)})
    path = tmp_path / "p.omp"
    path.write_bytes(gz(tar_bytes([bomb])))
    assert path.stat().st_size < 1 << 20
    refused(path, key, "decompression bomb")


# --------------------------------------------------------------------------- members


def test_extra_member(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    members = [*honest_members(FILES, MODES), Member(APP_PREFIX + "data/c.txt", b"charlie")]
    path = craft(tmp_path / "p.omp", manifest_of(FILES, modes=MODES), members, key=key)
    refused(path, key, "data/c.txt is not listed in the manifest")


def test_missing_member(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    members = [m for m in honest_members(FILES, MODES) if not m.name.endswith("a.txt")]
    path = craft(tmp_path / "p.omp", manifest_of(FILES, modes=MODES), members, key=key)
    refused(path, key, "data/a.txt is listed in the manifest but missing from the archive")


def test_member_size_mismatch(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    members = [
        Member(m.name, b"alpha, longer" if m.name.endswith("a.txt") else m.data, mode=m.mode)
        for m in honest_members(FILES, MODES)
    ]
    path = craft(tmp_path / "p.omp", manifest_of(FILES, modes=MODES), members, key=key)
    refused(path, key, "data/a.txt is 13 bytes; the manifest says 5")


def test_member_content_mismatch(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    members = [
        Member(m.name, b"ALPHA" if m.name.endswith("a.txt") else m.data, mode=m.mode)
        for m in honest_members(FILES, MODES)
    ]
    path = craft(tmp_path / "p.omp", manifest_of(FILES, modes=MODES), members, key=key)
    refused(path, key, "content of .*data/a.txt does not match its SHA-256")


def test_member_mode_mismatch(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = craft(
        tmp_path / "p.omp",
        manifest_of(FILES, modes=MODES),
        honest_members(FILES, {APP_PREFIX + "bin/run": 0o4755}),
        key=key,
    )
    refused(path, key, "bin/run has mode 4755; the manifest says 0755")


def test_duplicate_member(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    members = honest_members(FILES, MODES)
    path = craft(tmp_path / "p.omp", manifest_of(FILES, modes=MODES), [*members, members[1]], key=key)
    refused(path, key, "appears twice")


def test_second_signature_later_in_the_archive(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    manifest = manifest_of(FILES, modes=MODES)
    members = [*honest_members(FILES, MODES), Member("manifest.sig", key.sign(manifest.to_json()))]
    path = craft(tmp_path / "p.omp", manifest, members, key=key)
    refused(path, key, "manifest.sig appears again")


@pytest.mark.parametrize(
    ("member", "kind"),
    [
        (Member(APP_PREFIX + "data/a.txt", type=tarfile.SYMTYPE, linkname="/etc/shadow"), "symbolic link"),
        (
            Member(APP_PREFIX + "data/a.txt", type=tarfile.LNKTYPE, linkname=APP_PREFIX + "data/b.txt"),
            "hard link",
        ),
        (Member(APP_PREFIX + "data/a.txt", type=tarfile.CHRTYPE), "character device"),
        (Member(APP_PREFIX + "data/a.txt", type=tarfile.BLKTYPE), "block device"),
        (Member(APP_PREFIX + "data/a.txt", type=tarfile.FIFOTYPE), "FIFO"),
        (Member(APP_PREFIX + "data/x", type=tarfile.SYMTYPE, linkname="../../.."), "symbolic link"),
    ],
    ids=["symlink", "hardlink", "chardev", "blockdev", "fifo", "unlisted-symlink"],
)
def test_links_and_special_files_are_refused(
    tmp_path: Path, key: Ed25519PrivateKey, member: Member, kind: str
) -> None:
    members = [m for m in honest_members(FILES, MODES) if m.name != member.name]
    path = craft(tmp_path / "p.omp", manifest_of(FILES, modes=MODES), [member, *members], key=key)
    refused(path, key, f"is a {kind}; only regular files and directories are allowed")


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../evil", "escapes its directory"),
        (APP_PREFIX + "../../../../tmp/evil", "escapes its directory"),
        ("/etc/cron.d/evil", "is absolute"),
        ("components//x", "not normalized"),
        ("components\\..\\x", "backslash"),
    ],
)
def test_path_escapes_are_refused(tmp_path: Path, key: Ed25519PrivateKey, name: str, problem: str) -> None:
    members = [*honest_members(FILES, MODES), Member(name, b"evil")]
    path = craft(tmp_path / "p.omp", manifest_of(FILES, modes=MODES), members, key=key)
    refused(path, key, f"member path .* {problem}")


def test_directory_member_outside_the_components(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    members = [Member("etc", type=tarfile.DIRTYPE, mode=0o755), *honest_members(FILES, MODES)]
    path = craft(tmp_path / "p.omp", manifest_of(FILES, modes=MODES), members, key=key)
    refused(path, key, "directory member etc holds no file listed")


def test_declared_sizes_over_the_limit(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """Zip bomb, declared: refused before any payload is decompressed."""
    big = {APP_PREFIX + "zeros": bytes(4 << 20)}
    path = craft(tmp_path / "p.omp", manifest_of(big), honest_members(big), key=key)
    assert path.stat().st_size < 64 << 10
    refused(
        path, key, "declares 4194304 bytes of files, more than the limit of 1048576", max_unpacked=1 << 20
    )
    assert open_package(path, [key.public_key()], max_unpacked=4 << 20).manifest.total_size == 4 << 20


def test_member_larger_than_declared_is_refused_before_reading(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """Zip bomb, undeclared: the header's size is compared with the manifest, data never read."""
    small = {APP_PREFIX + "zeros": b"\0" * 10}
    path = craft(
        tmp_path / "p.omp", manifest_of(small), [Member(APP_PREFIX + "zeros", bytes(32 << 20))], key=key
    )
    refused(path, key, "zeros is 33554432 bytes; the manifest says 10")


def test_manifest_errors_carry_1407(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = craft(tmp_path / "p.omp", b'{"format": 2}', [], key=key)
    refused(path, key, "unsupported manifest format 2", error=ManifestError)


def test_missing_file_is_an_os_error(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    with pytest.raises(FileNotFoundError):
        open_package(tmp_path / "nope.omp", [key.public_key()])


# --------------------------------------------------------------------------- extraction


def test_extract_component(tmp_path: Path, signed: Path, key: Ed25519PrivateKey) -> None:
    package = open_package(signed, [key.public_key()])
    dest = package.extract_component(APP, tmp_path / "deep" / "out")
    assert dest == tmp_path / "deep" / "out"
    app_files = {p: d for p, d in SAMPLE_FILES.items() if p.startswith(APP + "/")}
    found = {str(p.relative_to(dest)): p for p in dest.rglob("*") if p.is_file()}
    assert set(found) == {p.removeprefix(APP + "/") for p in app_files}
    for relative, path in found.items():
        assert path.read_bytes() == SAMPLE_FILES[f"{APP}/{relative}"]
    assert found["bin/run"].stat().st_mode & 0o7777 == 0o755
    assert found["share/data.txt"].stat().st_mode & 0o7777 == 0o644
    assert (dest / "bin").stat().st_mode & 0o777 == 0o755


def test_extract_into_an_existing_empty_directory(
    tmp_path: Path, signed: Path, key: Ed25519PrivateKey
) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    open_package(signed, [key.public_key()]).extract_component("com.example.lib", dest)
    assert (dest / "lib" / "library.txt").read_bytes() == b"library\n"


def test_extract_refuses_a_non_empty_destination(
    tmp_path: Path, signed: Path, key: Ed25519PrivateKey
) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep").write_text("mine")
    package = open_package(signed, [key.public_key()])
    with pytest.raises(PackageError, match="not empty") as caught:
        package.extract_component(APP, dest)
    assert caught.value.result == ScomoResult.INSTALL_FAILED
    assert (dest / "keep").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(PackageError, match="not a directory"):
        package.extract_component(APP, tmp_path / "file")


def test_extract_unknown_component(tmp_path: Path, signed: Path, key: Ed25519PrivateKey) -> None:
    with pytest.raises(PackageError, match="has no component nope"):
        open_package(signed, [key.public_key()]).extract_component("nope", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _swap_content(path: Path, name: str, data: bytes) -> None:
    """Rewrite ``path`` keeping manifest and signature but replacing one member's bytes."""
    with tarfile.open(path, "r:gz") as tar:
        members = []
        for info in tar.getmembers():
            f = tar.extractfile(info)
            assert f is not None
            content = data if info.name == name else f.read()
            members.append(Member(info.name, content, mode=info.mode))
    path.write_bytes(gzip.compress(tar_bytes(members), mtime=0))


@pytest.mark.parametrize("created", [True, False])
def test_extract_rechecks_digests_and_cleans_up(
    tmp_path: Path, signed: Path, key: Ed25519PrivateKey, created: bool
) -> None:
    package = open_package(signed, [key.public_key()])
    # After verification, the file on disk changes: same manifest, same sizes, other bytes.
    victim = f"components/{APP}/share/data.txt"
    _swap_content(signed, victim, b"X" * len(SAMPLE_FILES[f"{APP}/share/data.txt"]))
    dest = tmp_path / "out"
    if not created:
        dest.mkdir()
    with pytest.raises(IntegrityError, match=r"share/data\.txt does not match its SHA-256") as caught:
        package.extract_component(APP, dest)
    assert caught.value.result == ScomoResult.FAILED_PACKAGE_VALIDATION
    # bin/run and hooks/install were written before the bad file; nothing is left.
    assert dest.exists() is not created
    if not created:
        assert list(dest.iterdir()) == []


def test_extract_notices_a_different_package(
    tmp_path: Path, signed: Path, source: Path, key: Ed25519PrivateKey
) -> None:
    package = open_package(signed, [key.public_key()])
    (source / APP / "share" / "data.txt").write_bytes(b"new")
    build_package(source, signed, signing_key=key)
    with pytest.raises(IntegrityError, match="changed after it was verified"):
        package.extract_component(APP, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_extract_notices_a_missing_member(tmp_path: Path, signed: Path, key: Ed25519PrivateKey) -> None:
    package = open_package(signed, [key.public_key()])
    with tarfile.open(signed, "r:gz") as tar:
        kept = []
        for info in tar.getmembers():
            f = tar.extractfile(info)
            assert f is not None
            if not info.name.endswith("share/empty"):
                kept.append(Member(info.name, f.read(), mode=info.mode))
    signed.write_bytes(gz(tar_bytes(kept)))
    with pytest.raises(IntegrityError, match="share/empty is missing from the archive"):
        package.extract_component(APP, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _sparse(sparse_map: bytes) -> Member:
    name = APP_PREFIX + "data/a.txt"
    pax = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": name,
        "GNU.sparse.realsize": "5",
    }
    return Member(name, sparse_map.ljust(512, b"\0") + b"alpha", pax=pax)


def test_sparse_member_is_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    members = [m for m in honest_members(FILES, MODES) if not m.name.endswith("a.txt")]
    path = craft(
        tmp_path / "p.omp", manifest_of(FILES, modes=MODES), [_sparse(b"1\n0\n5\n"), *members], key=key
    )
    refused(path, key, "is a sparse file; only regular files")


def test_headers_tarfile_chokes_on_are_a_damaged_archive(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """tarfile raises ValueError on a malformed sparse map; that must not escape as a crash."""
    members = [m for m in honest_members(FILES, MODES) if not m.name.endswith("a.txt")]
    path = craft(tmp_path / "p.omp", manifest_of(FILES, modes=MODES), [_sparse(b"1"), *members], key=key)
    refused(path, key, "tar archive is damaged")
