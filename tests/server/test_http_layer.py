"""The server says which event loop and HTTP parser it serves with (issue 17, point 3).

uvicorn picks uvloop and httptools when they import (the server extra installs both); without
them it serves on asyncio and h11, slower. The start-up log names what it got, so an operator
can tell a server that lost its accelerators.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from omadm.server.http_layer import HttpLayer, http_layer

from .serverproc import running_server


def test_the_server_extra_brings_uvloop_and_httptools() -> None:
    layer = http_layer()
    assert layer == HttpLayer(loop="uvloop", http="httptools")
    assert layer.fast
    text = layer.describe()
    assert text.startswith("event loop uvloop "), text
    assert "HTTP parser httptools " in text
    assert "pip install" not in text


def test_without_them_uvicorn_falls_back_and_the_line_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A None entry in sys.modules makes the import fail, as an absent package would.
    monkeypatch.setitem(sys.modules, "uvloop", None)
    monkeypatch.setitem(sys.modules, "httptools", None)
    layer = http_layer()
    assert layer == HttpLayer(loop="asyncio", http="h11")
    assert not layer.fast
    text = layer.describe()
    assert text.startswith("event loop asyncio, HTTP parser h11 ")
    assert 'pip install "omadm[server]"' in text


def test_one_missing_is_named_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "httptools", None)
    layer = http_layer()
    assert (layer.loop, layer.http, layer.fast) == ("uvloop", "h11", False)


@pytest.mark.e2e
def test_omadm_server_logs_its_http_layer(tmp_path: Path) -> None:
    with running_server(tmp_path) as (proc, _):
        log = proc.log.read_text()
    lines = [line for line in log.splitlines() if "HTTP layer: " in line]
    assert len(lines) == 1, log
    assert "event loop uvloop" in lines[0] and "HTTP parser httptools" in lines[0]
