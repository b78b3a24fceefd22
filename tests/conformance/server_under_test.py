"""A real ``omadm server`` set up for ``omadm conformance server``: devices, a package, triggers.

Shared by the end-to-end and the planted-fault tests: the server runs on SQLite in a temporary
directory with an operator token; the devices are registered with the credentials the runner
presents; a signed package is uploaded so that the install triggers have an artifact; the
triggers are the example file shipped for omadm's own server (``examples/conformance``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from omadm.conformance.model import CaseResult, Verdict
from omadm.conformance.server import ServerOptions
from omadm.package.build import build_package
from omadm.package.signing import generate_key, save_public_key

from ..server import serverproc
from ..server.serverproc import ServerProcess, running_server

ROOT = Path(__file__).resolve().parents[2]
TRIGGERS = ROOT / "examples" / "conformance" / "omadm-server-triggers.toml"
PLANTED = Path(__file__).resolve().parent / "planted"
PASSWORD = "secret"
SERVER_PASSWORD = "srv-secret"


@dataclass
class Setup:
    proc: ServerProcess
    token: str
    artifact: str

    def options(self, device_id: str, *, auth: str = "md5", encoding: str = "xml", only: str | None = None,
                server_password: str = SERVER_PASSWORD) -> ServerOptions:  # fmt: skip
        return ServerOptions(
            f"{self.proc.url}/dm",
            device_id=device_id,
            username="dev",
            password=PASSWORD,
            auth=auth,
            server_password=server_password,
            trigger_file=TRIGGERS,
            # The token as a value, not in the environment: [vars] token = "{env:...}" is overridden.
            values={"artifact_id": self.artifact, "api": f"{self.proc.url}/api/v1", "token": self.token},
            only=only,
            encoding=encoding,
            timeout=60,
        )

    def add_device(self, device_id: str, *, auth: str = "md5", server_password: str = SERVER_PASSWORD) -> str:
        """Register a device through the REST API (a CLI process per device costs seconds)."""
        body = {"device_id": device_id, "username": "dev", "password": PASSWORD, "auth": auth,
                "server_password": server_password}  # fmt: skip
        response = httpx.post(
            f"{self.proc.url}/api/v1/devices",
            json=body,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        return device_id


@contextmanager
def conformance_server(directory: Path, faults: Path | None = None) -> Iterator[Setup]:
    """A started server and a package uploaded.

    ``faults``: the control file of the planted faults (``planted/sitecustomize.py``); the
    server process then has every fault patched in, each dormant until the file names it.
    """
    saved = dict(serverproc.ENV)
    if faults is not None:
        serverproc.ENV["PYTHONPATH"] = os.pathsep.join([str(PLANTED), *sys.path])
        serverproc.ENV["OMADM_PLANTED_FAULT_FILE"] = str(faults)
    try:
        key = generate_key()
        save_public_key(key.public_key(), directory / "publisher.pub.pem")
        build_package(ROOT / "examples" / "hello-package", directory / "hello-1.0.0.omp", signing_key=key)
        with running_server(directory) as (proc, token):
            proc.run("publisher", "add", "tests", str(directory / "publisher.pub.pem"))
            artifact = proc.run("artifact", "add", str(directory / "hello-1.0.0.omp")).split()[1].rstrip(":")
            yield Setup(proc, token, artifact)
    finally:
        serverproc.ENV.clear()
        serverproc.ENV.update(saved)


def explain(results: list[CaseResult]) -> str:
    """What went wrong, case by case, with the last messages: the assertion message."""
    lines = []
    for result in results:
        if result.verdict in (Verdict.FAIL, Verdict.INCONCLUSIVE):
            lines.append(f"{result.verdict.value}: {result.case.id} [{result.encoding}] {result.case.title}")
            lines.append(
                f"  expected: {result.expected}\n  seen:     {result.seen}\n  reason:   {result.reason}"
            )
            for exchange in result.exchanges[-4:]:
                lines.append(f"  -- {exchange.direction}: {exchange.text[:1500]}")
    return "\n".join(lines)
