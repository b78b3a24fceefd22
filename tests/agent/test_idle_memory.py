"""What keeps the idle agent small (issue 17, point 4; ``bench/agent_rss.py`` measures it).

An agent runs for months, and what it imported or built on its way in stays resident. These
tests pin the choices that took it under 35 MB: no TLS context for an ``http://`` server,
the downloader's client only while a download runs, and the modules only a session's work
needs (downloads, DDs, InstallParams, trust policy, TNDS, ``http.server``, ``pickle``) left
unloaded until then.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from omadm.agent.config import AgentConfig, DeviceConfig
from omadm.agent.scomo.download import Downloader
from omadm.agent.transport import HTTPTransport, PlainHTTPTransport
from omadm.tree import tnds
from omadm.tree.tree import TNDS_TYPES

#: Loaded only when a session's work needs them (the agent's modules are imported as `agent run` does).
LAZY = [
    "http.server",
    "omadm.agent.scomo.dd",
    "omadm.agent.scomo.download",
    "omadm.agent.scomo.install_params",
    "omadm.agent.scomo.trust_policy",
    "omadm.package.manifest",
    "omadm.tree.tnds",
]  # and pickle, which the server's session snapshots need: not listed, as httpx's CLI loads it with rich


@contextmanager
def reply_server(body: bytes = b"<SyncML/>") -> Iterator[str]:
    """A plain HTTP server on 127.0.0.1 answering every GET and POST with ``body``."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.syncml.dm+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def config(tmp_path: Path) -> AgentConfig:
    return AgentConfig(device=DeviceConfig(id="IMEI:490154203237518"), data_dir=tmp_path)


def test_an_http_server_gets_a_client_without_a_tls_context(tmp_path: Path) -> None:
    transport = HTTPTransport(config(tmp_path), sleep=lambda _: None)
    with reply_server() as base:
        reply = transport.post(f"{base}/dm", b"<SyncML/>", "application/vnd.syncml.dm+xml", {})
        assert reply.body == b"<SyncML/>"
        client = transport.client_for(f"{base}/dm")
        assert transport.client_for(f"{base}/other") is client  # one client per scheme
        plain = client._transport  # the default transport of the http:// client
        assert isinstance(plain, PlainHTTPTransport)
        assert plain._pool._ssl_context is None  # nothing verified, since nothing is encrypted
        assert list(transport._clients) == ["http"]
    transport.close()
    assert transport._clients == {}


def test_an_https_url_gets_its_own_verifying_client(tmp_path: Path) -> None:
    transport = HTTPTransport(config(tmp_path), sleep=lambda _: None)
    https = transport.client_for("HTTPS://dm.example.com/dm")
    assert https is transport.client_for("https://dm.example.com/other")
    assert https is not transport.client_for("http://dm.example.com/dm")
    assert not isinstance(https._transport, PlainHTTPTransport)
    transport.close()


def test_the_plain_transport_refuses_any_other_scheme_before_connecting() -> None:
    with (
        httpx.Client(transport=PlainHTTPTransport()) as client,
        pytest.raises(httpx.UnsupportedProtocol, match="http:// only"),
    ):
        client.get("https://127.0.0.1:1/")


def test_an_injected_client_carries_every_scheme(tmp_path: Path) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, content=b"<SyncML/>")

    transport = HTTPTransport(config(tmp_path), client=httpx.Client(transport=httpx.MockTransport(handler)))
    for url in ("http://a.example/dm", "https://b.example/dm"):
        transport.post(url, b"x", "application/vnd.syncml.dm+xml", {})
    assert seen == ["http://a.example/dm", "https://b.example/dm"]
    assert transport._clients == {}


def test_the_downloader_holds_a_client_only_while_it_downloads(tmp_path: Path) -> None:
    downloader = Downloader(scratch=tmp_path, retries=0, allow_local_redirects=True)
    assert downloader._owned_client is None
    with reply_server(b"package bytes") as base:
        result = downloader.download(f"{base}/pkg.omp", tmp_path / "pkg.omp")
    assert result.path.read_bytes() == b"package bytes"
    assert downloader._owned_client is None  # closed once the download ended
    downloader.close()


def test_the_tnds_types_are_the_codecs() -> None:
    assert frozenset({tnds.TNDS_XML_TYPE, tnds.TNDS_WBXML_TYPE}) == TNDS_TYPES


def test_an_idle_agent_has_not_loaded_what_only_a_sessions_work_needs() -> None:
    # What `omadm agent run` imports (omadm.agent.daemon.run), in a fresh interpreter.
    script = (
        "import json, sys\n"
        "import omadm.agent.daemon, omadm.agent.config, omadm.agent.runner, omadm.agent.listener\n"
        "import omadm.agent.scomo.operations\n"
        f"print(json.dumps([m for m in {LAZY!r} if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []
