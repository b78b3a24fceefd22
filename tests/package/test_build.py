"""Building packages: layout, reproducibility, modes, source errors, atomic output."""

from __future__ import annotations

import gzip
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from omadm.package import build as build_module
from omadm.package import build_package, open_package
from omadm.package.build import load_source
from omadm.package.errors import ManifestError, PackageError

from .helpers import APP, LIB, SAMPLE_EXECUTABLE, SAMPLE_FILES, sample_description, sha256, write_source


def members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path, "r:gz") as tar:
        return tar.getmembers()


def test_layout_manifest_first_then_sorted_payload(unsigned: Path) -> None:
    names = [m.name for m in members(unsigned)]
    assert names[0] == "manifest.json"
    assert "manifest.sig" not in names
    payload = names[1:]
    assert payload == sorted(payload)
    assert set(payload) == {f"components/{path}" for path in SAMPLE_FILES}


def test_signed_build_has_the_signature_second(signed: Path, key: Ed25519PrivateKey) -> None:
    found = members(signed)
    assert [m.name for m in found[:2]] == ["manifest.json", "manifest.sig"]
    with tarfile.open(signed, "r:gz") as tar:
        manifest_file = tar.extractfile("manifest.json")
        signature_file = tar.extractfile("manifest.sig")
        assert manifest_file is not None and signature_file is not None
        manifest_bytes = manifest_file.read()
        signature = signature_file.read()
    assert len(signature) == 64
    key.public_key().verify(signature, manifest_bytes)


def test_headers_are_normalized(signed: Path) -> None:
    for member in members(signed):
        assert member.isreg()
        assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (0, 0, 0, "", "")
        assert member.mode in (0o644, 0o755)
    with signed.open("rb") as f:
        header = f.read(10)
    assert header[4:8] == b"\0\0\0\0"  # gzip mtime 0
    assert header[3] & 0x08 == 0  # no file name in the gzip header


def test_the_manifest_describes_the_source(tmp_path: Path, source: Path) -> None:
    manifest = build_package(source, tmp_path / "p.omp")
    assert manifest.id == "com.example.pkg" and manifest.version == "1.0.0"
    app = manifest.component(APP)
    assert dict(app.hooks) == {"install": "hooks/install"}
    assert [d.describe() for d in app.depends] == ["com.example.lib (>=1.0, <2)"]
    for entry in manifest.files:
        data = SAMPLE_FILES[entry.path.removeprefix("components/")]
        assert entry.size == len(data) and entry.sha256 == sha256(data)
        assert entry.mode == (0o755 if entry.path.removeprefix("components/") in SAMPLE_EXECUTABLE else 0o644)
    assert manifest.component(LIB).version == "1.2.0"
    assert open_package(tmp_path / "p.omp", [], require_signature=False).manifest == manifest


def test_same_source_and_epoch_give_identical_bytes(
    tmp_path: Path, source: Path, key: Ed25519PrivateKey
) -> None:
    a, b, c = tmp_path / "a.omp", tmp_path / "b.omp", tmp_path / "c.omp"
    build_package(source, a, signing_key=key, source_date_epoch=1_700_000_000)
    # Different file timestamps, permissions beyond the x bit and a copied tree: same bytes.
    for path in source.rglob("*"):
        os.utime(path, (1, 1))
    (source / APP / "share" / "data.txt").chmod(0o600)
    build_package(source, b, signing_key=key, source_date_epoch=1_700_000_000)
    assert a.read_bytes() == b.read_bytes()
    build_package(source, c, signing_key=key, source_date_epoch=0)
    assert a.read_bytes() != c.read_bytes()
    assert {m.mtime for m in members(a)} == {1_700_000_000}


def test_any_executable_bit_gives_0755(tmp_path: Path, source: Path) -> None:
    (source / APP / "share" / "data.txt").chmod(0o710)
    manifest = build_package(source, tmp_path / "p.omp")
    assert {e.path: e.mode for e in manifest.files}[f"components/{APP}/share/data.txt"] == 0o755


def test_empty_directories_are_not_shipped(tmp_path: Path, source: Path) -> None:
    (source / APP / "var" / "empty").mkdir(parents=True)
    manifest = build_package(source, tmp_path / "p.omp")
    assert not any("var" in e.path for e in manifest.files)


def _broken(
    tmp_path: Path, change: dict[str, Any] | None = None, component: dict[str, Any] | None = None
) -> Path:
    description = sample_description()
    description["package"].update(change or {})
    description["component"][0].update(component or {})
    return write_source(tmp_path / "src", description, SAMPLE_FILES, SAMPLE_EXECUTABLE)


@pytest.mark.parametrize(
    ("package", "component", "message"),
    [
        ({"version": "one"}, None, "omadm-package.toml: package version 'one' is not a PEP 440"),
        ({"colour": "red"}, None, r"\[package\]: unknown key 'colour'"),
        (None, {"hooks": {"install": "hooks/nope"}}, "component\\[0\\]: .*hooks/nope, which is not one of"),
        (None, {"hooks": {"install": "share/data.txt"}}, "share/data.txt is not executable"),
        (None, {"depends": [{"id": LIB, "minimum": "1"}]}, r"depends\[0\]: unknown key 'minimum'"),
        (None, {"depends": "com.example.lib"}, "depends must be an array of tables"),
        (None, {"id": "../evil"}, "component id '../evil' may only contain"),
        (None, {"id": "com.example.missing"}, "must be in the directory"),
    ],
)
def test_source_errors_name_the_problem(
    tmp_path: Path, package: dict[str, Any] | None, component: dict[str, Any] | None, message: str
) -> None:
    source = _broken(tmp_path, package, component)
    with pytest.raises(ManifestError, match=message):
        build_package(source, tmp_path / "p.omp")
    assert not (tmp_path / "p.omp").exists()


def test_a_missing_required_key_is_named(tmp_path: Path) -> None:
    description = sample_description()
    del description["component"][0]["name"]
    source = write_source(tmp_path / "src", description, SAMPLE_FILES, SAMPLE_EXECUTABLE)
    with pytest.raises(ManifestError, match=r"omadm-package.toml: component\[0\]: name is missing"):
        build_package(source, tmp_path / "p.omp")


def test_missing_and_invalid_description(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match=r"omadm-package\.toml not found"):
        load_source(tmp_path / "empty")
    (tmp_path / "empty" / "omadm-package.toml").write_text("[package\n")
    with pytest.raises(ManifestError, match="not valid TOML"):
        load_source(tmp_path / "empty")
    (tmp_path / "empty" / "omadm-package.toml").write_text('[package]\nid = "x"\nname = "X"\nversion = "1"\n')
    with pytest.raises(ManifestError, match=r"at least one \[\[component\]\]"):
        load_source(tmp_path / "empty")


def test_symbolic_links_in_the_source_are_refused(tmp_path: Path, source: Path) -> None:
    (source / APP / "bin" / "link").symlink_to("run")
    with pytest.raises(ManifestError, match="bin/link is a symbolic link"):
        build_package(source, tmp_path / "p.omp")


def test_special_files_in_the_source_are_refused(tmp_path: Path, source: Path) -> None:
    os.mkfifo(source / APP / "pipe")
    with pytest.raises(ManifestError, match="pipe is not a regular file"):
        build_package(source, tmp_path / "p.omp")


def test_output_is_replaced_atomically_and_a_failed_build_keeps_the_old_one(
    tmp_path: Path, source: Path
) -> None:
    output = tmp_path / "out" / "p.omp"
    output.parent.mkdir()
    build_package(source, output)
    before = output.read_bytes()
    (source / "omadm-package.toml").write_text(
        (source / "omadm-package.toml").read_text().replace("1.0.0", "x")
    )
    with pytest.raises(PackageError):
        build_package(source, output)
    assert output.read_bytes() == before
    assert sorted(p.name for p in output.parent.iterdir()) == ["p.omp"]  # no temp file left behind
    assert output.stat().st_mode & 0o777 == 0o644


def test_a_file_changing_during_the_build_is_detected(
    tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = build_module.load_source

    def load_then_change(path: Path) -> Any:
        manifest = real(path)
        (source / APP / "share" / "data.txt").write_bytes(b"changed!" * 63)
        return manifest

    monkeypatch.setattr(build_module, "load_source", load_then_change)
    with pytest.raises(PackageError, match=r"share/data\.txt changed while the package was being written"):
        build_package(source, tmp_path / "p.omp")
    assert list(tmp_path.glob("*.omp")) == [] and list(tmp_path.glob(".*")) == []


def test_source_date_epoch_must_fit_the_gzip_header(tmp_path: Path, source: Path) -> None:
    with pytest.raises(PackageError, match="outside"):
        build_package(source, tmp_path / "p.omp", source_date_epoch=-1)
    with pytest.raises(PackageError, match="outside"):
        build_package(source, tmp_path / "p.omp", source_date_epoch=1 << 32)


def test_the_archive_is_plain_gzip(unsigned: Path) -> None:
    with gzip.open(unsigned) as f:
        assert f.read(512)[:13] == b"manifest.json"
