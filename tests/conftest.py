"""Isolation every test gets, whatever its directory.

Commands run in-process (Typer's CliRunner) configure logging as the real program does: a
handler on the root logger bound to the ``sys.stderr`` of that moment, which is the runner's
capture stream, closed when the command returns. Left in place, every later INFO line of the
same test process (httpx logs each request) fails on the closed stream and prints "--- Logging
error ---" into whatever is captured next, e.g. another command's JSON output. The root
logger's handlers and levels are put back after each test.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in ("httpx", "alembic", "omadm")}
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)
