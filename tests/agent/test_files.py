"""The agent's secrets on disk are its user's only (issue 13, point 5).

``tree.sqlite`` holds both DMAcc passwords in plaintext and ``alerts.sqlite`` the SCOMO
journal; under the usual umask (022) they used to be 0644 in a 0755 directory.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from omadm.agent.alerts import AlertQueue
from omadm.agent.config import AccountConfig, AgentConfig, DeviceConfig
from omadm.agent.runner import Agent
from omadm.protocol.messages import Alert
from omadm.tree.files import (
    create_private_file,
    make_private,
    prepare_private_database,
    private_opener,
    secure_data_dir,
)
from omadm.tree.store import NodeRecord, TreeStore


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """Every test runs under the umask most systems give a service: 022."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def modes(directory: Path) -> dict[str, int]:
    return {p.name: mode(p) for p in sorted(directory.iterdir()) if p.is_file()}


def write_in_both(tree: TreeStore, alerts: AlertQueue) -> None:
    """A write in each database, so that their -wal and -shm files exist."""
    with tree.transaction():
        tree.put(NodeRecord(path=".", parent=None, name="", format="node"))
    alerts.push("srv", Alert("0", data="1226"))


def test_a_fresh_data_dir_is_0700_and_both_databases_and_their_side_files_0600(tmp_path: Path) -> None:
    data = tmp_path / "var" / "omadm"
    assert secure_data_dir(data) == []
    assert mode(data) == 0o700
    tree = TreeStore(data / "tree.sqlite")
    alerts = AlertQueue(data / "alerts.sqlite")
    try:
        write_in_both(tree, alerts)
        files = modes(data)
        assert {"tree.sqlite", "tree.sqlite-wal", "tree.sqlite-shm"} <= set(files)
        assert {"alerts.sqlite", "alerts.sqlite-wal", "alerts.sqlite-shm"} <= set(files)
        assert files == dict.fromkeys(files, 0o600)
    finally:
        tree.close()
        alerts.close()
    assert mode(data) == 0o700


def test_the_agent_creates_its_databases_0600_under_umask_022(tmp_path: Path) -> None:
    config = AgentConfig(
        device=DeviceConfig(id="IMEI:1"),
        data_dir=tmp_path / "data",
        accounts=(AccountConfig("srv", "http://127.0.0.1:9/dm", "user", "secret", server_password="s2"),),
        poll_interval=0,
    )
    agent = Agent(config)
    try:
        agent.alerts.push("srv", Alert("0", data="1226"))
        files = modes(config.data_dir)
    finally:
        agent.close()
    secrets = {name: m for name, m in files.items() if name.startswith(("tree.sqlite", "alerts.sqlite"))}
    assert {"tree.sqlite", "tree.sqlite-wal", "alerts.sqlite", "alerts.sqlite-wal"} <= set(secrets)
    assert secrets == dict.fromkeys(secrets, 0o600)


def old_layout(data: Path) -> None:
    """What an agent before issue 13 left: a 0755 directory of 0644 files (side files too)."""
    data.mkdir(mode=0o755)
    for name in ("tree.sqlite", "alerts.sqlite"):
        db = sqlite3.connect(data / name, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t (x)")
        db.close()
        for side in ("-wal", "-shm"):
            (data / f"{name}{side}").write_bytes(b"")
    (data / "omadm.toml").write_text('[device]\nid = "IMEI:1"\n')
    (data / "agent.lock").write_text("123")
    (data / "packages").mkdir()
    (data / "packages" / "hello.omp").write_bytes(b"not secret")
    (data / "components").mkdir()
    for path in (data, *data.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)


def test_an_old_0755_data_dir_with_0644_files_is_repaired_and_the_repair_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    old_layout(data)
    with caplog.at_level(logging.WARNING, logger="omadm.tree.files"):
        repaired = secure_data_dir(data)
    assert mode(data) == 0o700
    assert modes(data) == {
        "agent.lock": 0o600,
        "alerts.sqlite": 0o600,
        "alerts.sqlite-shm": 0o600,
        "alerts.sqlite-wal": 0o600,
        "omadm.toml": 0o600,
        "tree.sqlite": 0o600,
        "tree.sqlite-shm": 0o600,
        "tree.sqlite-wal": 0o600,
    }
    assert f"{data} 0755 -> 0700" in repaired
    assert f"{data / 'tree.sqlite'} 0644 -> 0600" in repaired
    assert f"{data / 'alerts.sqlite-wal'} 0644 -> 0600" in repaired
    assert len(repaired) == 9
    (line,) = [r.getMessage() for r in caplog.records]
    assert f"the data directory {data} was readable by other users; made private" in line
    assert "tree.sqlite 0644 -> 0600" in line
    # Nothing secret below: installed components and packages keep their modes.
    assert mode(data / "packages" / "hello.omp") == 0o644
    assert mode(data / "components") == 0o755
    assert secure_data_dir(data) == []  # idempotent


def test_a_shared_directory_keeps_its_mode_but_the_agents_files_in_it_are_made_private(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """data_dir defaults to the configuration's directory: /etc must not become 0700."""
    shared = tmp_path / "etc"
    shared.mkdir(mode=0o755)
    for name in ("passwd", "tree.sqlite", "alerts.sqlite-wal", "omadm.toml"):
        (shared / name).write_bytes(b"")
        (shared / name).chmod(0o644)
    shared.chmod(0o755)
    with caplog.at_level(logging.WARNING, logger="omadm.tree.files"):
        repaired = secure_data_dir(shared)
    assert mode(shared) == 0o755
    assert modes(shared) == {
        "alerts.sqlite-wal": 0o600,
        "omadm.toml": 0o644,  # the name may be another program's; save_config writes it 0600 anyway
        "passwd": 0o644,
        "tree.sqlite": 0o600,
    }
    assert len(repaired) == 2
    assert any("also holds passwd" in r.getMessage() for r in caplog.records)


def test_the_tree_store_repairs_its_own_database_and_side_files_wherever_they_are(tmp_path: Path) -> None:
    data = tmp_path / "elsewhere"
    old_layout(data)
    store = TreeStore(data / "tree.sqlite")
    try:
        assert {n: m for n, m in modes(data).items() if n.startswith("tree")} == {
            "tree.sqlite": 0o600,
            "tree.sqlite-shm": 0o600,
            "tree.sqlite-wal": 0o600,
        }
    finally:
        store.close()  # (SQLite deletes the side files when the last connection closes)


def test_the_alert_queue_repairs_its_database_and_side_files(tmp_path: Path) -> None:
    data = tmp_path / "elsewhere"
    old_layout(data)
    queue = AlertQueue(data / "alerts.sqlite")
    try:
        assert {n: m for n, m in modes(data).items() if n.startswith("alerts")} == {
            "alerts.sqlite": 0o600,
            "alerts.sqlite-shm": 0o600,
            "alerts.sqlite-wal": 0o600,
        }
    finally:
        queue.close()


def test_private_files_are_born_0600(tmp_path: Path) -> None:
    assert create_private_file(tmp_path / "a") == []
    assert mode(tmp_path / "a") == 0o600
    with open(tmp_path / "agent.lock", "a+", encoding="ascii", opener=private_opener) as handle:
        handle.write("1")
    assert mode(tmp_path / "agent.lock") == 0o600
    assert prepare_private_database(":memory:") == []
    assert not (tmp_path / ":memory:").exists()


def test_a_symlink_is_not_followed_when_repairing(tmp_path: Path) -> None:
    target = tmp_path / "someone-elses"
    target.write_bytes(b"")
    target.chmod(0o644)
    data = tmp_path / "data"
    data.mkdir()
    (data / "tree.sqlite").symlink_to(target)
    assert make_private(data / "tree.sqlite") is None
    secure_data_dir(data)
    assert mode(target) == 0o644
