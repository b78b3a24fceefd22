"""``omadm server backup``: an online copy of the SQLite database while a real server writes to it.

A thread registers devices through the REST API as fast as the server takes them while
backups are made; each copy must pass SQLite's integrity check, hold the schema revision,
be one file (no ``-wal`` beside it), and hold every device acknowledged before the backup
began and none that was not acknowledged by the time it ended: a snapshot of one moment.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from omadm.server.store.migrate import head_revision

from ..server.serverproc import ENV, running_server

pytestmark = pytest.mark.e2e


def _backup(server_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    db = f"sqlite:///{server_dir / 'srv' / 'omadm-server.sqlite'}"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "omadm",
            "server",
            "--db",
            db,
            "--data-dir",
            str(server_dir / "srv"),
            "backup",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=ENV,
    )


def test_backups_taken_while_the_server_writes_are_consistent_snapshots(tmp_path: Path) -> None:
    acknowledged = 0
    stop = threading.Event()
    errors: list[str] = []

    with running_server(tmp_path) as (proc, token):

        def write() -> None:
            nonlocal acknowledged
            with httpx.Client(
                base_url=proc.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
            ) as api:
                i = 0
                while not stop.is_set():
                    body = {"device_id": f"IMEI:3520990000{i:05d}", "username": f"u{i}", "password": "secret"}
                    response = api.post("/api/v1/devices", json=body)
                    if response.status_code != 201:
                        errors.append(response.text)
                        return
                    i += 1
                    acknowledged = i

        writer = threading.Thread(target=write)
        writer.start()
        copies: list[tuple[int, Path, int]] = []  # (acknowledged before, copy, acknowledged after)
        try:
            while acknowledged < 20 and not errors:
                stop.wait(0.05)
            for n in range(3):
                before = acknowledged
                copy = tmp_path / f"copy{n}.sqlite"
                done = _backup(tmp_path, str(copy))
                assert done.returncode == 0, done.stderr
                assert f"to {copy}" in done.stdout and "copy them too" in done.stdout
                copies.append((before, copy, acknowledged))
        finally:
            stop.set()
            writer.join(timeout=30)
        assert not errors, errors
        # The server is still running: a second backup to the same file is refused, then forced.
        (tmp_path / "old.sqlite").write_bytes(b"an older copy")
        again = _backup(tmp_path, str(tmp_path / "old.sqlite"))
        assert again.returncode == 1 and "already exists (give --overwrite" in again.stderr
        assert _backup(tmp_path, str(tmp_path / "old.sqlite"), "--overwrite").returncode == 0
        with closing(sqlite3.connect(tmp_path / "old.sqlite")) as replaced:
            assert replaced.execute("PRAGMA quick_check").fetchone() == ("ok",)

    counts = []
    for before, copy, after in copies:
        assert not Path(f"{copy}-wal").exists()
        db = sqlite3.connect(copy)
        try:
            assert db.execute("PRAGMA quick_check").fetchone() == ("ok",)
            assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
            assert db.execute("SELECT version_num FROM alembic_version").fetchone() == (head_revision(),)
            count = db.execute("SELECT count(*) FROM devices").fetchone()[0]
        finally:
            db.close()
        assert before <= count <= after, (before, count, after)
        counts.append(count)
    assert counts == sorted(counts) and counts[-1] > counts[0], counts  # the server kept writing


def test_a_backup_into_a_directory_gets_a_time_stamped_name_and_postgresql_is_sent_to_pg_dump(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner  # noqa: PLC0415

    from omadm.server.cli import server_app  # noqa: PLC0415
    from omadm.server.store.engine import database_url  # noqa: PLC0415
    from omadm.server.store.migrate import migrate  # noqa: PLC0415

    data = tmp_path / "srv"
    data.mkdir()
    migrate(database_url(None, data))
    runner = CliRunner()

    def backup(*args: str) -> tuple[int, str]:
        done = runner.invoke(server_app, [*args], catch_exceptions=False)
        return done.exit_code, done.output

    (tmp_path / "backups").mkdir()
    code, out = backup("--data-dir", str(data), "backup", str(tmp_path / "backups"))
    assert code == 0, out
    (copy,) = (tmp_path / "backups").iterdir()
    assert copy.name.startswith("omadm-server-") and copy.suffix == ".sqlite"
    assert copy.stat().st_mode & 0o777 == 0o600  # it holds device credentials

    code, out = backup("--data-dir", str(data), "backup", str(tmp_path / "nowhere" / "x.sqlite"))
    assert code == 1 and "is not a directory" in out
    code, out = backup("--data-dir", str(tmp_path / "empty"), "backup", str(tmp_path / "y.sqlite"))
    assert code == 1 and "no database at" in out
    code, out = backup("--data-dir", str(data), "backup", str(data / "omadm-server.sqlite"), "--overwrite")
    assert code == 1 and "is the database itself" in out

    code, out = backup("--db", "postgresql://omadm:pw@db.example/omadm", "backup", "x")
    assert code == 1
    assert "the database is PostgreSQL (postgresql://omadm:***@db.example/omadm)" in out
    assert "pg_dump --format=custom" in out and ":pw@" not in out
