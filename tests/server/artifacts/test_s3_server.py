"""A real ``omadm server`` with ``[artifacts] backend = "s3"``, moto's S3 server and a real agent.

The operator uploads through the REST API; the package lands in the bucket (the database
keeps its metadata); the device is sent a presigned URL of the bucket when its job is sent
and downloads from moto, not from the server, both by URL and through a DLOTA descriptor
whose ``objectURI`` is such a URL (on 127.0.0.1, so the agent runs with
``[scomo] allow_local_redirects``, the local-address allowance the other e2e tests use).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest

from omadm.agent.config import load_config, save_config
from omadm.package.build import build_package
from omadm.package.signing import generate_key, save_public_key

from ..serverproc import SERVER_PASSWORD, ServerProcess, agent_config, agent_connect
from .s3proc import ACCESS_KEY, REGION, SECRET_KEY, S3Endpoint, s3_endpoint

pytestmark = pytest.mark.e2e
__all__ = ["s3_endpoint"]  # the fixture, imported for pytest

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
DEVICE = "IMEI:490154203237599"
PREFIX = "omadm/"


@dataclass
class World:
    server: ServerProcess
    token: str
    bucket: str
    s3: S3Endpoint
    packages: dict[str, Path]

    def upload(self, name: str) -> dict[str, object]:
        response = httpx.post(
            f"{self.server.url}/api/v1/packages",
            params={"filename": self.packages[name].name},
            content=self.packages[name].read_bytes(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/octet-stream"},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        body: dict[str, object] = response.json()
        return body


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: S3Endpoint) -> Iterator[World]:
    base = tmp_path_factory.mktemp("s3-e2e")
    key = generate_key()
    save_public_key(key.public_key(), base / "publisher.pub.pem")
    packages = {"key": base / "publisher.pub.pem"}
    for name, source in (("v1", "hello-package"), ("v2", "hello-package-2")):
        packages[name] = base / f"{source}.omp"
        build_package(EXAMPLES / source, packages[name], signing_key=key)

    bucket = s3_endpoint.bucket("omadm-e2e")
    config = base / "omadm-server.toml"
    config.write_text(
        "[server]\nsweep_interval = 0.5\n\n"
        f'[artifacts]\nbackend = "s3"\nbucket = "{bucket}"\nprefix = "{PREFIX}"\n'
        f'endpoint_url = "{s3_endpoint.url}"\nregion = "{REGION}"\n'
        f'access_key_id = "{ACCESS_KEY}"\nsecret_access_key = "{SECRET_KEY}"\npresign_expiry = 900\n'
    )
    db = f"sqlite:///{base / 'srv' / 'omadm-server.sqlite'}"
    server = ServerProcess(db, base / "srv", base / "server.log", extra=("--config", str(config)))
    server.run("migrate")
    token = server.run("token", "add", "ops", "--role", "operator").split()[-1]
    server.run("publisher", "add", "tests", str(packages["key"]))
    server.run(
        "device", "add", DEVICE, "--username", "dev", "--password", "secret",
        "--server-password", SERVER_PASSWORD,
    )  # fmt: skip
    server.start()
    try:
        yield World(server, token, bucket, s3_endpoint, packages)
    finally:
        server.stop()


def agent(tmp_path: Path, world: World) -> Path:
    path = agent_config(tmp_path, f"{world.server.url}/dm", DEVICE, world.packages["key"])
    config = load_config(path)
    save_config(replace(config, scomo=replace(config.scomo, allow_local_redirects=True)), path)
    return path


def hello(tmp_path: Path) -> str:
    program = tmp_path / "agent/components/archive/com.example.hello/current/bin/hello"
    return subprocess.run([str(program)], capture_output=True, text=True, check=True).stdout


def object_gets(world: World, sha256: str) -> list[str]:
    """moto's log lines of GETs of this blob (werkzeug logs one per request, with its status)."""
    pattern = re.compile(rf'"GET /{world.bucket}/{PREFIX}blobs/{sha256}\?[^"]*X-Amz-Signature=[^"]*" (\d+)')
    return pattern.findall(world.s3.requests())


def test_devices_install_from_presigned_bucket_urls(world: World, tmp_path: Path) -> None:
    v1 = world.upload("v1")
    v2 = world.upload("v2")
    # The bytes are in the bucket, under the prefix, named by their SHA-256.
    client = world.s3.client()
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=world.bucket)["Contents"]}
    assert keys == {f"{PREFIX}blobs/{v1['sha256']}", f"{PREFIX}blobs/{v2['sha256']}"}
    stored = client.get_object(Bucket=world.bucket, Key=f"{PREFIX}blobs/{v1['sha256']}")["Body"].read()
    assert stored == world.packages["v1"].read_bytes()
    # And the metadata in the database, as the API lists it.
    listed = httpx.get(
        f"{world.server.url}/api/v1/packages",
        headers={"Authorization": f"Bearer {world.token}"},
        timeout=10,
    ).json()
    assert {item["id"] for item in listed["items"]} == {v1["id"], v2["id"]}

    config = agent(tmp_path, world)
    assert object_gets(world, str(v1["sha256"])) == []
    world.server.run("job", "add", DEVICE, "install", "--artifact", str(v1["id"]))
    agent_connect(config)
    job = world.server.jobs()[-1]
    assert job[2:5] == ["install", "succeeded", "1200"], job
    assert "(version 1.0.0)" in hello(tmp_path)
    # The device fetched the package from the bucket with the presigned URL.
    assert object_gets(world, str(v1["sha256"])) in (["200"], ["206"]), world.s3.requests()[-2000:]

    # Through a download descriptor: the DD (from the server) names the bucket's URL.
    world.server.run("job", "add", DEVICE, "update", "--artifact", str(v2["id"]), "--descriptor")
    agent_connect(config)
    job = world.server.jobs()[-1]
    assert job[2:5] == ["update", "succeeded", "1200"], job
    assert "(version 2.0.0)" in hello(tmp_path)
    assert object_gets(world, str(v2["sha256"])) in (["200"], ["206"]), world.s3.requests()[-2000:]
