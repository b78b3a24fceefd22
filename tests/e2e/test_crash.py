"""Power loss at any instant: kill -9 the writer many times, the tree reopens valid each time."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from omadm.tree.store import TreeStore

pytestmark = pytest.mark.crash

WRITER = Path(__file__).with_name("crash_writer.py")
KILLS = 40


def _start(db: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(db)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", f"writer did not start: {line!r}"
    return proc


def _check(db: Path) -> int:
    store = TreeStore(db)
    try:
        assert store.integrity_problems() == []
        a, b, big = (store.get(f"./Vendor/{n}") for n in ("A", "B", "Big"))
        assert a is not None and b is not None and big is not None
        assert a.value == b.value, "an Atomic was half applied"
        value = big.value or b""
        assert value == b"0" or (len(value) == 20000 and len(set(value)) == 1), "a value was half written"
        for node in store.children("./Vendor/Churn"):  # each Add whole: name and value agree
            assert node.format == "int" and node.value == node.name[1:].encode(), node
        return int(a.value or b"0")
    finally:
        store.close()


def test_killing_the_writer_at_random_instants_never_corrupts_the_tree(tmp_path: Path) -> None:
    db = tmp_path / "tree.sqlite"
    rng = random.Random(42)
    progress = []
    for _ in range(KILLS):
        proc = _start(db)
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        progress.append(_check(db))
    assert progress[-1] > progress[0], "the writer made no progress between kills"
