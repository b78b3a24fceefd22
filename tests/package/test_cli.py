"""``omadm package ...`` through Typer's CliRunner: output, exit codes, one-line errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from omadm import cli
from omadm.package import key_id, load_private_key, open_package
from omadm.package.cli import EXIT_INVALID, EXIT_OK, EXIT_USAGE, public_key_path

from .helpers import APP

runner = CliRunner()


def invoke(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(cli.app, ["package", *map(str, args)], env=env)


def assert_clean_failure(result: Result, code: int, text: str) -> None:
    """A user error: the documented exit code, one ``error:`` line, no traceback."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1
    assert text in result.stderr
    assert "Traceback" not in result.output


def lines(result: Result) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "publisher.pem"
    path.parent.mkdir()
    assert invoke("keygen", "-o", path).exit_code == EXIT_OK
    return path


def test_package_is_listed_in_the_root_help() -> None:
    result = runner.invoke(cli.app, ["--help"])
    assert "package" in result.stdout
    result = invoke("--help")
    for command in ("keygen", "build", "sign", "verify", "inspect"):
        assert command in result.stdout


def test_public_key_path() -> None:
    assert public_key_path(Path("a/k.pem")) == Path("a/k.pub.pem")
    assert public_key_path(Path("k")) == Path("k.pub.pem")


def test_keygen(tmp_path: Path) -> None:
    key_path = tmp_path / "k.pem"
    result = invoke("keygen", "-o", key_path)
    assert result.exit_code == EXIT_OK, result.output
    out = lines(result)
    assert out["private key"] == str(key_path)
    assert out["public key"] == str(tmp_path / "k.pub.pem")
    assert out["key id"] == key_id(load_private_key(key_path))
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "k.pub.pem").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")


def test_keygen_refuses_to_overwrite(keyfile: Path) -> None:
    before = keyfile.read_bytes()
    assert_clean_failure(invoke("keygen", "-o", keyfile), EXIT_USAGE, "already exists; use --force")
    assert keyfile.read_bytes() == before
    assert invoke("keygen", "-o", keyfile, "--force").exit_code == EXIT_OK
    assert keyfile.read_bytes() != before


def test_build_sign_verify_inspect(tmp_path: Path, source: Path, keyfile: Path) -> None:
    package = tmp_path / "p.omp"
    result = invoke("build", source, "-o", package)
    assert result.exit_code == EXIT_OK, result.output
    out = lines(result)
    assert result.stdout.startswith(f"built {package}\n")
    assert out["id"] == "com.example.pkg" and out["version"] == "1.0.0"
    assert out["components"] == f"{APP} 1.0.0, com.example.lib 1.2.0"
    assert out["size"] == str(package.stat().st_size)
    assert out["sha256"] == hashlib.sha256(package.read_bytes()).hexdigest()
    assert out["signed"] == "no"

    trust = public_key_path(keyfile)
    assert_clean_failure(
        invoke("verify", package, "--trust", trust), EXIT_INVALID, f"{package}: the package is not signed"
    )
    assert invoke("verify", package, "--allow-unsigned").exit_code == EXIT_OK

    result = invoke("sign", package, "--key", keyfile)
    assert result.exit_code == EXIT_OK, result.output
    kid = key_id(load_private_key(keyfile))
    assert result.stdout.startswith(f"signed {package} with key id {kid}\n")
    assert lines(result)["sha256"] == hashlib.sha256(package.read_bytes()).hexdigest()

    digest = hashlib.sha256(package.read_bytes()).hexdigest()
    result = invoke("verify", package, "--trust", trust, "--sha256", digest)
    assert result.exit_code == EXIT_OK, result.output
    assert result.stdout == f"OK: com.example.pkg 1.0.0, 2 component(s), 5 file(s), signed by key id {kid}\n"
    # A directory trust store works the same (but one holding a private key is a mistake).
    store = tmp_path / "trust"
    store.mkdir()
    (store / "publisher.pem").write_bytes(trust.read_bytes())
    assert invoke("verify", package, "--trust", store).exit_code == EXIT_OK
    assert_clean_failure(invoke("verify", package, "--trust", trust.parent), EXIT_USAGE, "a private key")

    result = invoke("inspect", package)
    assert result.exit_code == EXIT_OK, result.output
    assert "package com.example.pkg 1.0.0: Example" in result.stdout
    assert f"component {APP} 1.0.0 (archive): App" in result.stdout
    assert "hooks: install=hooks/install" in result.stdout
    assert "depends: com.example.lib (>=1.0, <2)" in result.stdout
    assert "0755" in result.stdout and "bin/run" in result.stdout

    result = invoke("inspect", package, "--json")
    assert result.exit_code == EXIT_OK, result.output
    document = json.loads(result.stdout)
    assert document["signed"] is True
    assert document["file"]["sha256"] == digest
    assert document["manifest"] == open_package(package, [], require_signature=False).manifest.to_dict()


def test_build_with_key_and_default_output(
    tmp_path: Path, source: Path, keyfile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("build", source, "--key", keyfile)
    assert result.exit_code == EXIT_OK, result.output
    package = tmp_path / "com.example.pkg-1.0.0.omp"
    assert package.exists()
    assert lines(result)["signed"] == f"key id {key_id(load_private_key(keyfile))}"
    assert invoke("verify", package, "--trust", public_key_path(keyfile)).exit_code == EXIT_OK


def test_build_honours_source_date_epoch(tmp_path: Path, source: Path) -> None:
    a, b, c = tmp_path / "a.omp", tmp_path / "b.omp", tmp_path / "c.omp"
    assert invoke("build", source, "-o", a, env={"SOURCE_DATE_EPOCH": "1700000000"}).exit_code == EXIT_OK
    assert invoke("build", source, "-o", b, env={"SOURCE_DATE_EPOCH": "1700000000"}).exit_code == EXIT_OK
    assert invoke("build", source, "-o", c).exit_code == EXIT_OK
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    assert_clean_failure(
        invoke("build", source, "-o", c, env={"SOURCE_DATE_EPOCH": "yesterday"}),
        EXIT_USAGE,
        "SOURCE_DATE_EPOCH",
    )


def test_build_errors(tmp_path: Path, source: Path) -> None:
    description = source / "omadm-package.toml"
    description.write_text(description.read_text().replace('id = "com.example.pkg"', 'id = "x y"'))
    assert_clean_failure(invoke("build", source, "-o", tmp_path / "p.omp"), EXIT_INVALID, "may only contain")
    assert_clean_failure(invoke("build", tmp_path / "nowhere"), EXIT_INVALID, "omadm-package.toml not found")


def test_bad_key_files(tmp_path: Path, source: Path, keyfile: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("junk")
    assert_clean_failure(invoke("build", source, "--key", junk), EXIT_USAGE, "not a PEM private key")
    assert_clean_failure(
        invoke("sign", tmp_path / "p.omp", "--key", tmp_path / "none.pem"), EXIT_USAGE, "none.pem"
    )
    package = tmp_path / "p.omp"
    invoke("build", source, "-o", package, "--key", keyfile)
    assert_clean_failure(invoke("verify", package, "--trust", keyfile), EXIT_USAGE, "a private key")
    assert_clean_failure(invoke("verify", package, "--trust", junk), EXIT_USAGE, "not a PEM public key")
    assert_clean_failure(invoke("verify", package), EXIT_USAGE, "give --trust")


def test_verify_failures(tmp_path: Path, source: Path, keyfile: Path) -> None:
    package = tmp_path / "p.omp"
    invoke("build", source, "-o", package, "--key", keyfile)
    trust = public_key_path(keyfile)
    assert_clean_failure(
        invoke("verify", package, "--trust", trust, "--sha256", "0" * 64), EXIT_INVALID, "SHA-256"
    )
    assert_clean_failure(
        invoke("verify", package, "--trust", trust, "--size", "3"), EXIT_INVALID, "expected 3"
    )
    other = tmp_path / "other.pem"
    invoke("keygen", "-o", other)
    assert_clean_failure(
        invoke("verify", package, "--trust", public_key_path(other)),
        EXIT_INVALID,
        "does not verify with any trusted key",
    )
    data = package.read_bytes()
    package.write_bytes(data[: len(data) // 2])
    assert_clean_failure(invoke("verify", package, "--trust", trust), EXIT_INVALID, "truncated")
    assert_clean_failure(invoke("inspect", package), EXIT_INVALID, "truncated")
    assert_clean_failure(invoke("sign", package, "--key", keyfile), EXIT_INVALID, "truncated")
    assert_clean_failure(
        invoke("verify", tmp_path / "missing.omp", "--trust", trust), EXIT_USAGE, "missing.omp"
    )
    assert_clean_failure(invoke("inspect", tmp_path / "missing.omp"), EXIT_USAGE, "No such file")
