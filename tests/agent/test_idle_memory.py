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
from omadm.agent.scomo.installers.base import ENTRY_POINT_GROUP, load_installers, may_publish_entry_points
from omadm.agent.transport import HTTPTransport, PlainHTTPTransport
from omadm.tree import tnds
from omadm.tree.tree import TNDS_TYPES

#: Loaded only when a session's work needs them (the agent's modules are imported as `agent run` does).
LAZY = [
    "http.server",
    "importlib.metadata",
    "omadm.agent.scomo.dd",
    "omadm.agent.scomo.download",
    "omadm.agent.scomo.install_params",
    "omadm.agent.scomo.trust_policy",
    "omadm.package.manifest",
    "omadm.tree.tnds",
    "subprocess",
    "tomli_w",
    "xml.sax",
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
        "from pathlib import Path\n"
        "import tempfile\n"
        "from omadm.agent.scomo.installers.base import load_installers\n"
        "load_installers(Path(tempfile.mkdtemp()))  # as ScomoService does at start\n"
        f"print(json.dumps([m for m in {LAZY!r} if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


def site_with(tmp_path: Path, name: str, entry_points: str | None) -> Path:
    """A site directory with one distribution's metadata (and its entry_points.txt if given)."""
    site = tmp_path / "site"
    dist = site / f"{name}-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    if entry_points is not None:
        (dist / "entry_points.txt").write_text(entry_points)
    return site


def test_no_distribution_with_the_group_means_no_plug_in(tmp_path: Path) -> None:
    site = site_with(tmp_path, "other", "[console_scripts]\nother = other:main\n")
    (site / "plain-2.0.dist-info").mkdir()  # no entry points at all
    assert not may_publish_entry_points(ENTRY_POINT_GROUP, [str(site), str(tmp_path / "missing")])


def test_a_distribution_naming_the_group_is_looked_at(tmp_path: Path) -> None:
    site = site_with(tmp_path, "plugin", f"[ {ENTRY_POINT_GROUP} ]\ndeb = plugin:make\n")
    assert may_publish_entry_points(ENTRY_POINT_GROUP, [str(site)])


def test_what_cannot_be_listed_cheaply_is_left_to_importlib_metadata(tmp_path: Path) -> None:
    archive = tmp_path / "plugins.zip"
    archive.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip file on the path
    assert may_publish_entry_points(ENTRY_POINT_GROUP, [str(archive)])
    eggs = tmp_path / "eggs"
    (eggs / "plugin-1.0-py3.11.egg").mkdir(parents=True)
    assert may_publish_entry_points(ENTRY_POINT_GROUP, [str(eggs)])


def test_a_plug_in_is_found_in_a_fresh_interpreter(tmp_path: Path) -> None:
    """Where importlib.metadata was not loaded yet (the agent): the pre-check lets it find the plug-in."""
    site = site_with(
        tmp_path, "omadm_idle_plugin", f"[{ENTRY_POINT_GROUP}]\ntarball = omadm_idle_plugin:make\n"
    )
    (site / "omadm_idle_plugin.py").write_text(
        "from omadm.agent.scomo.installers import ArchiveInstaller\n\n"
        "def make(data_dir):\n"
        "    return ArchiveInstaller(data_dir / 'tarball', env_type='tarball')\n"
    )
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(site)!r})\n"
        "from pathlib import Path\n"
        "from omadm.agent.scomo.installers.base import load_installers\n"
        f"print(sorted(load_installers(Path({str(tmp_path / 'data')!r}))))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['archive', 'tarball']"


def test_without_plug_ins_the_builtin_installer_alone(tmp_path: Path) -> None:
    assert sorted(load_installers(tmp_path)) == ["archive"]
