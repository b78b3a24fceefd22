"""A real S3 server process for the S3 backend's tests: moto's, started by :mod:`.s3_server`.

``s3_endpoint`` (a module-scoped fixture for the test modules that import it) starts one on
a free port of 127.0.0.1 and yields an :class:`S3Endpoint`; tests create their own bucket
(:meth:`S3Endpoint.bucket`), so modules and tests do not see each other's objects. When moto
is not installed or the process does not answer, the tests are skipped with the reason.
"""

from __future__ import annotations

import itertools
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ACCESS_KEY = "omadm-test-access"
SECRET_KEY = "omadm-test-secret-key"
REGION = "us-east-1"
_LAUNCHER = Path(__file__).with_name("s3_server.py")
_names = itertools.count()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class S3Endpoint:
    url: str
    log: Path

    def client(self) -> Any:
        """A boto3 client of this server, with the tests' keys (SigV4, as the server uses)."""
        import boto3  # noqa: PLC0415
        from botocore.config import Config  # noqa: PLC0415

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(signature_version="s3v4"),
        )

    def bucket(self, stem: str = "omadm") -> str:
        """A new, empty bucket with a name no other test uses."""
        name = f"{stem}-{next(_names)}-{int(time.time() * 1000) % 10**8}"
        self.client().create_bucket(Bucket=name)
        return name

    def requests(self) -> str:
        """What the server logged so far (one line per request: method, path, status)."""
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    try:
        import boto3  # noqa: F401, PLC0415
        import moto.server  # noqa: F401, PLC0415
    except ImportError as exc:
        pytest.skip(f"moto's S3 server cannot start: {exc} (pip install 'moto[server]' boto3)")
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    port = _free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(_LAUNCHER), str(port), SECRET_KEY], stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                httpx.get(f"{url}/moto-api/", timeout=1)
                break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"moto's S3 server did not start on port {port}:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield S3Endpoint(url, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
