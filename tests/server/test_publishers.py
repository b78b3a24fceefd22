"""The trust store of publisher keys, and uploads checked against it (issue 15, section 5).

An unsigned package, or one signed by a key nobody trusts, used to be accepted on upload and
then failed with 1407 on every device. These tests hold the new contract: REST, ``omadm
server`` and the package list say who signed what, and only an admin may take an unsigned
package, explicitly and on the record.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from omadm.cli import app
from omadm.package.build import build_package
from omadm.package.signing import generate_key, key_id, private_key_pem, public_key_pem, save_public_key
from omadm.server.api.auth import create_token
from omadm.server.app import create_app
from omadm.server.config import ServerConfig

from .api.conftest import EXAMPLES, Api, problem
from .console import conftest as console_conftest
from .console.conftest import Console
from .serverproc import ServerProcess

console = console_conftest.console  # the console over this module's app (an empty trust store)

pytestmark = pytest.mark.anyio

RAW = {"Content-Type": "application/octet-stream"}
runner = CliRunner()


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    """The REST API over ASGI with a token per role (as in ``api/conftest.py``), on each engine."""
    app = create_app(ServerConfig(db=db_url, data_dir=tmp_path / "srv", sweep_interval=0))
    tokens = {}
    async with app.state.sessions() as db, db.begin():
        for role in ("viewer", "operator", "admin"):
            _, tokens[role] = await create_token(db, f"{role}-bot", role)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            yield Api(http, app.state.sessions, tokens, app)
    finally:
        await app.state.engine.dispose()


@pytest.fixture
def make_package(tmp_path: Path) -> Callable[..., Path]:
    def make(key: object = None, name: str = "hello.omp") -> Path:
        out = tmp_path / name
        build_package(EXAMPLES / "hello-package", out, signing_key=key)  # type: ignore[arg-type]
        return out

    return make


async def upload(api: Api, package: Path, role: str = "operator", **params: str) -> httpx.Response:
    return await api.post(
        "/packages",
        role,
        params={"filename": package.name, **params},
        content=package.read_bytes(),
        headers=RAW,
    )


async def test_publishers_are_listed_by_viewers_and_changed_by_admins_on_the_record(api: Api) -> None:
    key = generate_key()
    pem = public_key_pem(key).decode()
    assert (await api.get("/publishers")).json() == []
    problem(await api.post("/publishers", "operator", json={"name": "acme", "public_key": pem}), 403)

    created = await api.post("/publishers", "admin", json={"name": "acme", "public_key": pem})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "acme" and body["key_id"] == key_id(key) and len(body["fingerprint"]) == 64
    assert body["public_key"] == pem
    assert (await api.get("/publishers")).json() == [body]
    # The same again is not an error (setup scripts run twice); a clash is.
    again = await api.post("/publishers", "admin", json={"name": "acme", "public_key": pem})
    assert again.status_code == 200 and again.json() == body
    clash = problem(await api.post("/publishers", "admin", json={"name": "other", "public_key": pem}), 409)
    assert f"key {key_id(key)} is already trusted, as publisher 'acme'" in clash["detail"]
    other = public_key_pem(generate_key()).decode()
    clash = problem(await api.post("/publishers", "admin", json={"name": "acme", "public_key": other}), 409)
    assert "a publisher named 'acme' exists already" in clash["detail"]

    problem(await api.delete("/publishers/acme", role="operator"), 403)
    assert (await api.delete(f"/publishers/{key_id(key)}", role="admin")).status_code == 204
    assert (await api.get("/publishers")).json() == []
    gone = problem(await api.delete("/publishers/acme", role="admin"), 404)
    assert "no publisher named 'acme'" in gone["detail"]
    actions = [(r.actor, r.action, r.target, r.detail.get("key_id")) for r in await api.audit_rows()]
    assert actions == [
        ("admin-bot", "publisher.add", "publisher acme", key_id(key)),
        ("admin-bot", "publisher.delete", "publisher acme", key_id(key)),
    ]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("private", "that is a private key"),
        ("garbage", "not a PEM public key"),
        ("rsa", "omadm packages are signed with Ed25519 keys"),
    ],
)
async def test_a_bad_key_is_refused_saying_what_is_wrong(api: Api, key: str, expected: str) -> None:
    if key == "private":
        pem = private_key_pem(generate_key()).decode()
    elif key == "rsa":
        from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # noqa: PLC0415

        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
        pem = rsa_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    else:
        pem = "hello"
    body = problem(await api.post("/publishers", "admin", json={"name": "acme", "public_key": pem}), 422)
    assert expected in body["detail"]


async def test_uploads_must_be_signed_by_a_trusted_publisher(
    api: Api, make_package: Callable[..., Path]
) -> None:
    key, stranger = generate_key(), generate_key()
    unsigned = make_package(None, "unsigned.omp")
    unknown = make_package(stranger, "stranger.omp")
    signed = make_package(key, "signed.omp")

    # An empty trust store: nothing can be vouched for, and the answer says how to fix it.
    body = problem(await upload(api, signed), 422)
    assert "the trust store of publisher keys is empty" in body["detail"]
    assert "omadm ctl publishers add NAME KEY.pub.pem" in body["detail"]
    body = problem(await upload(api, unsigned), 422)
    assert "the package is not signed" in body["detail"]

    pem = public_key_pem(key).decode()
    added = await api.post("/publishers", "admin", json={"name": "acme", "public_key": pem})
    assert added.status_code == 201
    body = problem(await upload(api, unknown), 422)
    assert f"not by a publisher in the trust store (acme (key {key_id(key)}))" in body["detail"]
    problem(await upload(api, unsigned), 422)
    assert (await api.get("/packages")).json()["total"] == 0

    created = await upload(api, signed)
    assert created.status_code == 201, created.text
    listed = (await api.get("/packages")).json()["items"]
    assert [(p["signature"], p["publisher"], p["key_id"]) for p in listed] == [
        ("verified", "acme", key_id(key))
    ]


async def test_only_an_admin_may_upload_an_unsigned_package_and_it_is_recorded(
    api: Api, make_package: Callable[..., Path]
) -> None:
    unsigned = make_package(None, "unsigned.omp")
    unknown = make_package(generate_key(), "stranger.omp")
    body = problem(await upload(api, unsigned, allow_unsigned="true"), 403)
    assert "allow_unsigned=true needs the admin role" in body["detail"]

    first = await upload(api, unsigned, "admin", allow_unsigned="true")
    assert first.status_code == 201, first.text
    second = await upload(api, unknown, "admin", allow_unsigned="true")
    assert second.status_code == 201, second.text
    listed = (await api.get("/packages")).json()["items"]
    assert [(p["filename"], p["signature"], p["publisher"]) for p in listed] == [
        ("stranger.omp", "unverified", None),
        ("unsigned.omp", "unsigned", None),
    ]
    rows = [r for r in await api.audit_rows() if r.action == "package.add"]
    assert [(r.actor, r.detail["allow_unsigned"], r.detail["signature"]) for r in rows] == [
        ("admin-bot", True, "unsigned"),
        ("admin-bot", True, "unverified"),
    ]


def test_server_shell_manages_publishers_and_checks_uploads(tmp_path: Path) -> None:
    base = ["server", "--data-dir", str(tmp_path / "srv")]

    def run(*args: str) -> tuple[int, str]:
        done = runner.invoke(app, [*base, *args])
        return done.exit_code, done.output

    assert run("migrate")[0] == 0
    key = generate_key()
    save_public_key(key, tmp_path / "acme.pub.pem")
    package = tmp_path / "hello.omp"
    build_package(EXAMPLES / "hello-package", package, signing_key=key)

    code, out = run("publisher", "list")
    assert code == 0 and "no publishers" in out
    code, out = run("artifact", "add", str(package))
    assert code == 1 and "the trust store of publisher keys is empty" in out
    assert run("publisher", "add", "acme", str(tmp_path / "acme.pub.pem")) == (
        0,
        f"publisher acme trusted: key {key_id(key)}\n",
    )
    assert run("publisher", "add", "acme", str(tmp_path / "acme.pub.pem"))[1].startswith(
        "publisher acme already trusted"
    )
    (tmp_path / "junk.pem").write_text("junk")
    code, out = run("publisher", "add", "junk", str(tmp_path / "junk.pem"))
    assert code == 1 and "not a PEM public key" in out
    code, out = run("publisher", "list")
    assert out.startswith(f"acme  key {key_id(key)}  sha256 ")
    code, out = run("artifact", "add", str(package))
    assert code == 0 and f"signed by acme (key {key_id(key)})" in out

    unsigned = tmp_path / "unsigned.omp"
    build_package(EXAMPLES / "hello-package-2", unsigned)
    code, out = run("artifact", "add", str(unsigned))
    assert code == 1 and "the package is not signed" in out
    code, out = run("artifact", "add", str(unsigned), "--allow-unsigned")
    assert code == 0 and out.rstrip().endswith("unsigned)")
    assert run("publisher", "delete", "acme") == (0, f"publisher acme deleted (key {key_id(key)})\n")
    code, out = run("publisher", "delete", "acme")
    assert code == 1 and "no publisher named 'acme'" in out


async def test_the_console_lists_publishers_admins_change_them_and_packages_say_who_signed(
    console: Console, make_package: Callable[..., Path]
) -> None:
    key = generate_key()
    viewer = await console.login("viewer")
    page = (await viewer.get("/console/publishers")).text
    assert "No publishers yet" in page and 'action="/console/publishers/add"' not in page

    admin = await console.login("admin")
    assert 'action="/console/publishers/add"' in (await admin.get("/console/publishers")).text
    refused = await admin.follow(
        await admin.post("/console/publishers/add", {"name": "x", "public_key": "junk"})
    )
    assert "not a PEM public key" in refused.text
    pem = public_key_pem(key).decode()
    done = await admin.follow(
        await admin.post("/console/publishers/add", {"name": "acme", "public_key": pem})
    )
    assert f"Publisher acme trusted (key {key_id(key)})." in done.text
    assert (
        f"<td>acme</td><td><code>{key_id(key)}</code></td>" in (await viewer.get("/console/publishers")).text
    )

    signed = make_package(key, "signed.omp")
    assert (await upload(console.api, signed)).status_code == 201
    assert (
        await upload(console.api, make_package(None, "plain.omp"), "admin", allow_unsigned="true")
    ).status_code == 201
    listing = (await viewer.get("/console/packages")).text
    assert f"acme <code>{key_id(key)}</code>" in listing and "unsigned</span>" in listing
    assert 'href="/console/publishers"' in listing

    deleted = await admin.follow(await admin.post(f"/console/publishers/{key_id(key)}/delete"))
    assert f"Publisher with key {key_id(key)} deleted" in deleted.text and "No publishers yet" in deleted.text


@pytest.mark.e2e
def test_ctl_manages_publishers_and_deletes_packages(tmp_path: Path) -> None:
    """``omadm ctl publishers add|list|delete``, ``packages upload|list|delete`` against a real server."""
    proc = ServerProcess(
        f"sqlite:///{tmp_path / 'srv' / 'omadm-server.sqlite'}", tmp_path / "srv", tmp_path / "log"
    )
    proc.run("migrate")
    admin = proc.run("token", "add", "boss", "--role", "admin").split()[-1]
    operator = proc.run("token", "add", "ops", "--role", "operator").split()[-1]
    proc.start()

    def ctl(token: str, *args: str) -> tuple[int, str]:
        done = runner.invoke(app, ["ctl", "--url", proc.url, "--token", token, *args])
        return done.exit_code, done.output

    try:
        key = generate_key()
        save_public_key(key, tmp_path / "acme.pub.pem")
        signed = tmp_path / "hello.omp"
        build_package(EXAMPLES / "hello-package", signed, signing_key=key)
        code, out = ctl(operator, "publishers", "list")
        assert code == 0 and "no publishers" in out
        code, out = ctl(operator, "packages", "upload", str(signed))
        assert code == 1 and "422" in out and "the trust store of publisher keys is empty" in out
        code, out = ctl(operator, "publishers", "add", "acme", str(tmp_path / "acme.pub.pem"))
        assert code == 1 and "403" in out
        code, out = ctl(admin, "publishers", "add", "acme", str(tmp_path / "acme.pub.pem"), "--json")
        assert code == 0 and json.loads(out)["key_id"] == key_id(key)
        code, out = ctl(operator, "packages", "upload", str(signed), "--json")
        assert code == 0, out
        package_id = json.loads(out)["id"]
        code, out = ctl(operator, "packages", "list")
        assert code == 0 and "acme (key" in out and key_id(key) in out  # the table may wrap the cell

        unsigned = tmp_path / "plain.omp"
        build_package(EXAMPLES / "hello-package-2", unsigned)
        code, out = ctl(operator, "packages", "upload", str(unsigned), "--allow-unsigned")
        assert code == 1 and "403" in out and "needs the admin role" in out
        code, out = ctl(admin, "packages", "upload", str(unsigned), "--allow-unsigned", "--json")
        assert code == 0 and json.loads(out)["signature"] == "unsigned"

        code, out = ctl(operator, "packages", "delete", str(package_id), "--yes")
        assert (code, out) == (0, f"package {package_id} deleted\n")
        code, out = ctl(operator, "packages", "delete", str(package_id), "--yes")
        assert code == 1 and "404" in out
        code, out = ctl(admin, "publishers", "delete", "acme")
        assert (code, out) == (0, "publisher acme deleted\n")
        code, out = ctl(admin, "publishers", "list", "--json")
        assert code == 0 and json.loads(out) == []
    finally:
        proc.stop()
