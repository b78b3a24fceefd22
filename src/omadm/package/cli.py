"""``omadm package``: publisher keys, build, sign, verify and inspect ``.omp`` packages.

Glue only: every decision is in :mod:`omadm.package`. Errors end with one ``error: ...``
line on stderr, never a traceback.

Exit codes: 0 done (``verify``: the package is valid); 1 the package or its source is
invalid (``error: PATH: reason``); 2 the command could not run (unreadable or missing files,
bad key files, bad options, refusing to overwrite a key).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .build import build_package, load_source
from .errors import PackageError
from .manifest import PackageManifest
from .signing import (
    generate_key,
    key_id,
    load_private_key,
    load_public_keys,
    save_private_key,
    save_public_key,
    sign_package,
)
from .verify import VerifiedPackage, open_package

__all__ = ["EXIT_INVALID", "EXIT_OK", "EXIT_USAGE", "package_app", "public_key_path"]

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2

package_app = typer.Typer(
    help="Component packages (.omp): publisher keys, build, sign, verify, inspect.",
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def public_key_path(private_key: Path) -> Path:
    """Where ``keygen`` puts the public key: ``KEY.pem`` -> ``KEY.pub.pem``."""
    name = private_key.name
    stem = name[: -len(".pem")] if name.endswith(".pem") else name
    return private_key.with_name(stem + ".pub.pem")


def _fail(code: int, message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(code)


@contextmanager
def _reporting(subject: object) -> Iterator[None]:
    """Package problems exit 1, I/O problems exit 2; both as one ``error:`` line."""
    try:
        yield
    except PackageError as exc:
        _fail(EXIT_INVALID, f"error: {subject}: {exc.message}")
    except OSError as exc:  # name the file the OS complained about, not just the subject
        _fail(EXIT_USAGE, f"error: {exc.filename or subject}: {exc.strerror or exc}")


def _load_key(path: Path) -> Ed25519PrivateKey:
    """The private key at ``path``; a missing or unusable key file ends the command (exit 2)."""
    try:
        return load_private_key(path)
    except PackageError as exc:
        _fail(EXIT_USAGE, f"error: {exc.message}")
    except OSError as exc:
        _fail(EXIT_USAGE, f"error: {path}: {exc.strerror or exc}")


def _source_date_epoch() -> int:
    text = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not text:
        return 0
    try:
        return int(text)
    except ValueError:
        _fail(EXIT_USAGE, f"error: SOURCE_DATE_EPOCH={text!r} is not an integer")


def _file_summary(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of the whole file: what a server announces for the download."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 16):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


@package_app.command("keygen")
def keygen_command(
    output: Annotated[
        Path,
        typer.Option("--output", "-o", metavar="KEY.pem", help="Private key file to write (mode 0600)."),
    ],
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing key files.")] = False,
) -> None:
    """Create a publisher signing key (Ed25519).

    Writes the private key to KEY.pem (keep it secret) and the public key next to it as
    KEY.pub.pem (copy it into devices' trust stores), then prints the key id that verify
    reports, so both sides can compare it.
    """
    public = public_key_path(output)
    for path in (output, public):
        if path.exists() and not force:
            _fail(EXIT_USAGE, f"error: {path} already exists; use --force to replace it")
    key = generate_key()
    with _reporting(output):
        save_private_key(key, output, overwrite=force)
        save_public_key(key, public)
    typer.echo(f"private key: {output}")
    typer.echo(f"public key: {public}")
    typer.echo(f"key id: {key_id(key)}")


@package_app.command("build")
def build_command(
    source: Annotated[
        Path,
        typer.Argument(metavar="SOURCE_DIR", help="Directory with omadm-package.toml.", show_default=False),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="OUT.omp",
            help="Package file to write. Default: ID-VERSION.omp in the current directory.",
            show_default=False,
        ),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option("--key", metavar="KEY.pem", help="Sign with this private key.", show_default=False),
    ] = None,
) -> None:
    """Build a package from a source directory (reproducibly; honours SOURCE_DATE_EPOCH).

    \b
    Exit codes: 0 built
                1 the source is invalid (error: SOURCE_DIR: reason)
                2 unreadable files, bad key file or bad options
    """
    epoch = _source_date_epoch()
    signing_key = None if key is None else _load_key(key)
    with _reporting(source):
        if output is None:
            described = load_source(source)
            output = Path(f"{described.id}-{described.version}.omp")
        output.parent.mkdir(parents=True, exist_ok=True)  # like other build tools' dist/
        manifest = build_package(source, output, signing_key=signing_key, source_date_epoch=epoch)
    with _reporting(output):
        size, sha256 = _file_summary(output)
    typer.echo(f"built {output}")
    typer.echo(f"id: {manifest.id}")
    typer.echo(f"version: {manifest.version}")
    typer.echo("components: " + ", ".join(f"{c.id} {c.version}" for c in manifest.components))
    typer.echo(f"size: {size}")
    typer.echo(f"sha256: {sha256}")
    typer.echo(f"signed: key id {key_id(signing_key)}" if signing_key is not None else "signed: no")


@package_app.command("sign")
def sign_command(
    package: Annotated[Path, typer.Argument(metavar="PACKAGE", help="The .omp file to sign in place.")],
    key: Annotated[Path, typer.Option("--key", metavar="KEY.pem", help="Private key to sign with.")],
) -> None:
    """Sign a package in place (replacing any previous signature).

    The package is verified first; its size and SHA-256 change, so publish the new ones.

    \b
    Exit codes: 0 signed
                1 the package is invalid (error: PACKAGE: reason)
                2 unreadable files, bad key file or bad options
    """
    signing_key = _load_key(key)
    with _reporting(package):
        signed_by = sign_package(package, signing_key)
        size, sha256 = _file_summary(package)
    typer.echo(f"signed {package} with key id {signed_by}")
    typer.echo(f"size: {size}")
    typer.echo(f"sha256: {sha256}")


@package_app.command("verify")
def verify_command(
    package: Annotated[Path, typer.Argument(metavar="PACKAGE", help="The .omp file to verify.")],
    trust: Annotated[
        list[Path] | None,
        typer.Option(
            "--trust",
            metavar="KEYDIR_OR_PEM",
            help="Trusted public key (.pem) or directory of them; repeatable.",
            show_default=False,
        ),
    ] = None,
    sha256: Annotated[
        str | None,
        typer.Option(
            "--sha256", metavar="HEX", help="Expected SHA-256 of the whole file.", show_default=False
        ),
    ] = None,
    size: Annotated[
        int | None,
        typer.Option("--size", metavar="BYTES", help="Expected size of the whole file.", show_default=False),
    ] = None,
    allow_unsigned: Annotated[
        bool, typer.Option("--allow-unsigned", help="Accept a package without a signature.")
    ] = False,
) -> None:
    """Verify a package as a device would before installing it.

    Checks size and SHA-256 (if given), the archive structure, the signature against the
    trusted keys, the manifest, and every member's path, type, size, mode and digest.

    \b
    Exit codes: 0 valid (OK: ...)
                1 invalid (error: PACKAGE: the first problem found)
                2 unreadable files, bad trusted key files or bad options
    """
    if not trust and not allow_unsigned:
        _fail(EXIT_USAGE, "error: give --trust KEYDIR_OR_PEM (or --allow-unsigned)")
    keys = []
    if trust:
        try:
            keys = load_public_keys(trust)
        except PackageError as exc:
            _fail(EXIT_USAGE, f"error: {exc.message}")
        except OSError as exc:
            _fail(EXIT_USAGE, f"error: {exc.filename or 'trusted keys'}: {exc.strerror or exc}")
    with _reporting(package):
        verified = open_package(
            package, keys, expected_sha256=sha256, expected_size=size, require_signature=not allow_unsigned
        )
    manifest = verified.manifest
    if verified.key_id is not None:
        signature = f"signed by key id {verified.key_id}"
    else:
        signature = "signature not checked" if verified.signed else "unsigned"
    typer.echo(
        f"OK: {manifest.id} {manifest.version}, {len(manifest.components)} component(s), "
        f"{len(manifest.files)} file(s), {signature}"
    )


@package_app.command("inspect")
def inspect_command(
    package: Annotated[Path, typer.Argument(metavar="PACKAGE", help="The .omp file to describe.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (file facts and the manifest).")
    ] = False,
) -> None:
    """Describe a package: its manifest, components, hooks, dependencies and files.

    The archive is checked for integrity, but the signature is not checked against any key
    (use verify for that).

    \b
    Exit codes: 0 done
                1 the package is invalid (error: PACKAGE: reason)
                2 unreadable file
    """
    with _reporting(package):
        verified = open_package(package, [], require_signature=False, max_unpacked=1 << 62)
    if as_json:
        document = {
            "file": {"path": str(package), "size": verified.size, "sha256": verified.sha256},
            "signed": verified.signed,
            "manifest": verified.manifest.to_dict(),
        }
        typer.echo(json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False))
        return
    for line in _describe(verified, package):
        typer.echo(line)


def _describe(verified: VerifiedPackage, path: Path) -> Iterator[str]:
    manifest: PackageManifest = verified.manifest
    yield f"package {manifest.id} {manifest.version}: {manifest.name}"
    if manifest.description:
        yield f"  {manifest.description}"
    yield f"  file: {path} ({verified.size} bytes, sha256 {verified.sha256})"
    yield "  signed: " + ("yes (not checked here; use verify --trust)" if verified.signed else "no")
    yield f"  allow_downgrade: {'yes' if manifest.allow_downgrade else 'no'}"
    for component in manifest.components:
        yield f"component {component.id} {component.version} ({component.env_type}): {component.name}"
        if component.description:
            yield f"  {component.description}"
        hooks = ", ".join(f"{name}={path}" for name, path in component.hooks.items())
        yield f"  hooks: {hooks or '(none)'}"
        depends = ", ".join(d.describe() for d in component.depends)
        yield f"  depends: {depends or '(none)'}"
        yield f"  files: {len(component.files)}, {component.total_size} bytes"
        for entry in component.files:
            yield f"    {entry.mode:04o} {entry.size:>10}  {component.relative_path(entry)}"
