"""The SCOMO test packages the device runner serves itself, and how it serves them.

A SCOMO case needs packages a device can really install, and some that must fail for a
reason a test controls: a newer version (update), one whose install step refuses, one whose
bytes changed after signing (hash mismatch), one signed by nobody the device trusts, one
for an execution environment no device has. They are built at the start of a run in the
omadm package format (``omadm.package``: a signed manifest and the files), with shell hooks
that only succeed or fail, and served on the runner's own listener under ``/packages/``.

A device that checks signatures must trust the runner's signing key: pass one with
``--signing-key`` (and give the device its public half), or let the runner make one and
configure the device with ``<work dir>/signer.pub.pem`` (``--report`` copies it there too).
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
from pathlib import Path
from xml.sax.saxutils import escape

import tomli_w

from omadm.package.build import build_package
from omadm.package.signing import generate_key, load_private_key, private_key_pem, public_key_pem

from .device_http import Response

__all__ = ["COMPONENT", "PackageShelf"]

#: The component every test package installs (``Deployed/<COMPONENT>``).
COMPONENT = "org.omadm.conformance.probe"
#: The component of the package whose execution environment no device has.
ALIEN_COMPONENT = "org.omadm.conformance.alien"
_MARK = b"conformance-payload-as-signed"
PACKAGE_TYPE = "application/octet-stream"
DD_CONTENT_TYPE = "application/vnd.oma.dd+xml"
DD_NAMESPACE = "http://www.openmobilealliance.org/xmlns/dd"

_HOOK_OK = "#!/bin/sh\nexit 0\n"
_HOOK_REFUSES = "#!/bin/sh\necho 'the conformance package refuses to install' >&2\nexit 3\n"


class PackageShelf:
    """Builds the test packages in a work directory and answers ``GET /packages/<name>``."""

    NAMES = ("probe-1", "probe-2", "probe-refuses", "probe-tampered", "probe-untrusted", "alien")

    def __init__(self, base_url: str, signing_key: Path | None, work_dir: Path | None) -> None:
        self.base_url = base_url.rstrip("/")
        self._signing_key = signing_key
        self._own_dir = work_dir is None
        self.work = work_dir or Path(tempfile.mkdtemp(prefix="omadm-conformance-"))
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        #: (package name, status line) of every DLOTA install notification received.
        self.notifications: list[tuple[str, str]] = []

    @property
    def public_key_path(self) -> Path:
        return self.work / "signer.pub.pem"

    def url(self, name: str) -> str:
        return f"{self.base_url}/packages/{name}.omp"

    def build(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        if self._signing_key is not None:
            key = load_private_key(self._signing_key)
        else:
            key = generate_key()
            (self.work / "signer.pem").write_bytes(private_key_pem(key))
        self.public_key_path.write_bytes(public_key_pem(key))
        sources, dist = self.work / "src", self.work / "dist"
        shutil.rmtree(sources, ignore_errors=True)
        dist.mkdir(exist_ok=True)

        def make(
            name: str, version: str, *, component: str = COMPONENT, env: str = "archive", hook: str = _HOOK_OK
        ) -> Path:
            source = _write_source(sources / name, component, version, env, hook)
            out = dist / f"{name}.omp"
            build_package(source, out, signing_key=key if name != "probe-untrusted" else generate_key())
            return out

        built = {
            "probe-1": make("probe-1", "1.0.0"),
            "probe-2": make("probe-2", "2.0.0"),
            "probe-refuses": make("probe-refuses", "3.0.0", hook=_HOOK_REFUSES),
            "probe-tampered": make("probe-tampered", "1.0.0"),
            "probe-untrusted": make("probe-untrusted", "1.0.0"),
            "alien": make("alien", "1.0.0", component=ALIEN_COMPONENT, env="conformance-alien"),
        }
        for name, path in built.items():
            data = path.read_bytes()
            if name == "probe-tampered":
                data = _tamper(data)
            self.files[name] = data

    def bytes_of(self, name: str) -> bytes:
        return self.files[name]

    def descriptor_url(self, name: str) -> str:
        """A DLOTA download descriptor for the package ``name`` (its install-notify URI is the runner's)."""
        return f"{self.base_url}/packages/dd/{name}.dd"

    def protected_url(self, name: str) -> str:
        """The package behind HTTP Basic authentication the device has no credentials for."""
        return f"{self.base_url}/packages/auth/{name}.omp"

    def failing_url(self, name: str) -> str:
        """A URL whose server always answers 500."""
        return f"{self.base_url}/packages/error/{name}.omp"

    def serve(self, path: str, range_header: str | None, method: str = "GET", body: bytes = b"") -> Response:
        """Answer a request below ``/packages/``.

        ``<name>.omp`` is the package (a Range ``bytes=N-`` gives 206); ``auth/...`` asks for
        credentials nobody has (401); ``error/...`` fails (500); ``dd/<name>.dd`` is a DLOTA
        descriptor of the package; a POST to ``notify/<name>`` records the device's install
        notification. Anything else is 404.
        """
        self.requests.append(path)
        clean = path.split("?", 1)[0].removeprefix("/packages/")
        if method == "POST" and clean.startswith("notify/"):
            self.notifications.append(
                (clean.removeprefix("notify/"), body.decode("utf-8", "replace").strip())
            )
            return Response(200, b"")
        if clean.startswith("auth/"):
            return Response(401, b"credentials required", {"WWW-Authenticate": 'Basic realm="conformance"'})
        if clean.startswith("error/"):
            return Response(500, b"the package server fails on purpose")
        if clean.startswith("dd/") and clean.endswith(".dd"):
            name = clean.removeprefix("dd/").removesuffix(".dd")
            if name not in self.files:
                return Response(404, b"no such package")
            return Response(200, self._descriptor(name), {"Content-Type": DD_CONTENT_TYPE})
        data = self.files.get(clean.removesuffix(".omp"))
        if data is None or not clean.endswith(".omp"):
            return Response(404, b"no such package")
        headers = {"Content-Type": PACKAGE_TYPE}
        if range_header and range_header.startswith("bytes=") and range_header.endswith("-"):
            start = range_header[len("bytes=") : -1]
            if start.isdigit() and int(start) < len(data):
                first = int(start)
                headers["Content-Range"] = f"bytes {first}-{len(data) - 1}/{len(data)}"
                return Response(206, data[first:], headers)
        return Response(200, data, headers)

    def _descriptor(self, name: str) -> bytes:
        """A DLOTA 1.0 ``media`` document for the package ``name`` (the OMA DD format)."""
        fields = (
            ("DDVersion", "1.0"),
            ("name", f"Conformance package {name}"),
            ("size", str(len(self.files[name]))),
            ("type", PACKAGE_TYPE),
            ("objectURI", self.url(name)),
            ("installNotifyURI", f"{self.base_url}/packages/notify/{name}"),
        )
        body = "".join(f"<{tag}>{escape(value)}</{tag}>" for tag, value in fields)
        return (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<media xmlns="{DD_NAMESPACE}">{body}</media>'.encode()
        )

    def close(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.work, ignore_errors=True)


def _write_source(directory: Path, component: str, version: str, env: str, install_hook: str) -> Path:
    base = directory / component
    (base / "hooks").mkdir(parents=True)
    (base / "share").mkdir()
    (base / "share" / "payload").write_bytes(_MARK)
    hooks = {}
    for action in ("install", "activate", "deactivate", "remove"):
        hook = base / "hooks" / action
        hook.write_text(install_hook if action == "install" else _HOOK_OK)
        hook.chmod(0o755)
        hooks[action] = f"hooks/{action}"
    document = {
        "package": {"id": f"{component}-package", "name": "Conformance probe", "version": version},
        "component": [
            {
                "id": component,
                "name": "Conformance probe",
                "version": version,
                "env_type": env,
                "hooks": hooks,
            }
        ],
    }
    (directory / "omadm-package.toml").write_text(tomli_w.dumps(document))
    return directory


def _tamper(package: bytes) -> bytes:
    """The package with payload bytes changed after signing (manifest and signature kept)."""
    raw = gzip.decompress(package)
    if raw.count(_MARK) != 1:
        raise RuntimeError("the tamper mark is not in the package exactly once")
    return gzip.compress(raw.replace(_MARK, _MARK.upper()))
