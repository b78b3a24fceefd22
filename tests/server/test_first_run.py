"""The operator's first hour with ``omadm server``: a new database, an older one, the way in, the docs.

Each database test runs on SQLite and on a PostgreSQL database of its own (``empty_db_url``).
"""

from __future__ import annotations

import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest
from sqlalchemy import create_engine, text

from omadm.server.app import create_app
from omadm.server.config import ServerConfig
from omadm.server.store.engine import SchemaError, mask_url, sync_url
from omadm.server.store.migrate import (
    MigrationError,
    current_revision,
    head_revision,
    migrate,
    prepare_database,
)
from tests.server.serverproc import ENV, ServerProcess


def start(db_url: str, tmp_path: Path, *extra: str) -> ServerProcess:
    return ServerProcess(db_url, tmp_path / "srv", tmp_path / "server.log", extra=extra).start()


def test_a_new_database_gets_its_schema_and_the_server_says_where_everything_is(
    empty_db_url: str, tmp_path: Path
) -> None:
    server = start(empty_db_url, tmp_path)
    try:
        log = server.log.read_text()
        assert current_revision(empty_db_url) == head_revision()
        assert f"created the omadm schema (revision {head_revision()})" in log
        assert f"DM endpoint: {server.url}/dm" in log
        assert f"web console: {server.url}/console" in log
        assert f"its docs: {server.url}/api/docs" in log
        hint = re.search(r"first API token \(console login too\): omadm server (.*) token add NAME", log)
        assert hint is not None, log
        assert "Traceback" not in log
        assert " INFO alembic" not in log  # "setup plugin ...", "Context impl ...": not at INFO
        # The hint's command works as printed: it opens the server's database.
        token = server.run("token", "add", "first-admin", "--role", "admin").strip()
        me = httpx.get(f"{server.url}/api/v1/devices", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, me.text
    finally:
        server.stop()


def test_an_older_schema_is_refused_in_one_line_or_upgraded_with_migrate(
    empty_db_url: str, tmp_path: Path
) -> None:
    migrate(empty_db_url, "0001")
    server = ServerProcess(empty_db_url, tmp_path / "srv", tmp_path / "server.log")
    done = subprocess.run(
        [*server.base, "--port", str(server.port)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=ENV,
    )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if not re.match(r"\d{4}-\d\d-\d\d ", line)]
    assert errors == [
        f"error: the database at {mask_url(empty_db_url)} is at revision 0001, this omadm needs "
        f"{head_revision()}: back it up, then run 'omadm server migrate' or start with --migrate"
    ]
    assert current_revision(empty_db_url) == "0001"  # untouched
    server = start(empty_db_url, tmp_path, "--migrate")
    try:
        assert f"from revision 0001 to {head_revision()}" in server.log.read_text()
        assert current_revision(empty_db_url) == head_revision()
    finally:
        server.stop()


def test_prepare_database_creates_once_and_refuses_what_it_must_not_touch(empty_db_url: str) -> None:
    assert prepare_database(empty_db_url) is not None
    assert prepare_database(empty_db_url) is None  # at head: nothing to do
    engine = create_engine(sync_url(empty_db_url) or "")
    try:
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(SchemaError, match="at revision 9999, unknown to this omadm"):
            prepare_database(empty_db_url, upgrade=True)
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE alembic_version"))
        with pytest.raises(SchemaError, match="has tables but no omadm schema"):
            prepare_database(empty_db_url)
    finally:
        engine.dispose()


def test_an_unreachable_database_is_one_line() -> None:
    with pytest.raises(
        MigrationError, match=r"^cannot open the database at postgresql://u:\*\*\*@127\.0\.0\.1:9/none: "
    ):
        prepare_database("postgresql://u:secret@127.0.0.1:9/none")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [value for name, value in attrs if name in ("src", "href") and value]


@pytest.mark.anyio
async def test_the_api_docs_work_without_internet(db_url: str, tmp_path: Path) -> None:
    app = create_app(ServerConfig(db=db_url, data_dir=tmp_path / "srv", sweep_interval=0))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://omadm.test") as http,
    ):
        page = await http.get("/api/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "://" not in page.text and "cdn" not in page.text.lower()  # no other host, whatever the form
        parser = _Links()
        parser.feed(page.text)
        assets = {urljoin("/api/docs", link) for link in parser.links}
        assert {"/api/docs/static/swagger-ui-bundle.js", "/api/docs/static/swagger-ui.css"} <= assets
        for asset in assets:
            response = await http.get(asset)
            assert response.status_code == 200, asset
            assert len(response.content) > 100, asset
        assert "'/api/openapi.json'" in page.text
        assert (await http.get("/api/openapi.json")).json()["info"]["title"] == "omadm server"
