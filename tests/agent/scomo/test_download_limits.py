"""The package downloader against rogue download servers: bounded on disk, no local redirects.

Issue 13 found that an endless package body (no Content-Length, no expected size, no DD)
grew a ``.part`` to 1.2 GiB, that ``reserve_bytes`` was not kept while streaming, and that
redirects to loopback and link-local addresses were followed. The servers here are real
HTTP servers on 127.0.0.1 (and 127.0.0.2) that do those things; an endless body gives up
after ``BUDGET`` bytes so that a downloader without caps fails the test instead of filling
the disk.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import pytest

from omadm.agent.config import AgentConfig, DeviceConfig, ScomoConfig
from omadm.agent.scomo.dd import DD_CONTENT_TYPE, DownloadDescriptor, InstallNotifyStatus, parse_descriptor
from omadm.agent.scomo.download import Downloader, DownloadError, meta_path, part_path
from omadm.protocol.codes import ScomoResult

MiB = 1024 * 1024
#: What an endless body sends at most before the server gives up.
BUDGET = 64 * MiB
#: What a bounded downloader lets through: its cap plus what the socket buffers hold.
BOUNDED = 24 * MiB
PACKAGE = b"package bytes " * 1000
OCTETS = "application/octet-stream"

Route = Callable[[BaseHTTPRequestHandler], None]


class Hit(NamedTuple):
    method: str
    path: str
    body: bytes


class ScriptedServer:
    """An HTTP server on ``host`` whose every path answers as scripted; see the helpers."""

    __test__ = False

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.routes: dict[str, Route] = {}
        self.hits: list[Hit] = []
        self._sent: dict[str, int] = {}
        self._lock = threading.Condition()
        self._http = _QuietServer((host, 0), _handler(self))
        self.port = self._http.server_address[1]
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def paths(self, method: str = "GET") -> list[str]:
        with self._lock:
            return [hit.path for hit in self.hits if hit.method == method]

    def sent(self, path: str) -> int:
        """What the endless body at ``path`` sent, once it stopped (the client hung up)."""
        with self._lock:
            assert self._lock.wait_for(lambda: path in self._sent, timeout=10), f"{path} is still sending"
            return self._sent[path]

    def serve(self, path: str, body: bytes, content_type: str = OCTETS) -> None:
        def route(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)

        self.routes[path] = route

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        def route(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(status)
            handler.send_header("Location", location)
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        self.routes[path] = route

    def endless(self, path: str, *, content_length: int | None = None) -> None:
        """A body that never ends (until ``BUDGET``); ``sent[path]`` counts what went out."""

        def route(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", OCTETS)
            if content_length is not None:
                handler.send_header("Content-Length", str(content_length))
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.close_connection = True
            piece = b"\xa5" * 65536
            sent = 0
            try:
                while sent < BUDGET:
                    handler.wfile.write(piece)
                    sent += len(piece)
            except OSError:
                pass  # the downloader hung up
            finally:
                with self._lock:
                    self._sent[path] = sent
                    self._lock.notify_all()

        self.routes[path] = route

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients hanging up mid-body is the point of these tests


def _handler(server: ScriptedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._answer(b"")

        def do_POST(self) -> None:
            self._answer(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

        def _answer(self, body: bytes) -> None:
            path = urlsplit(self.path).path
            with server._lock:
                server.hits.append(Hit(self.command, path, body))
            route = server.routes.get(path)
            if route is None:
                self.send_response(404 if self.command == "GET" else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            route(self)

    return Handler


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


@pytest.fixture
def elsewhere() -> Iterator[ScriptedServer]:
    """Another loopback address: a local service the download server should not reach."""
    with ScriptedServer("127.0.0.2") as srv:
        yield srv


def downloader(tmp_path: Path, **scomo: object) -> Downloader:
    config = AgentConfig(
        device=DeviceConfig(id="dev"),
        data_dir=tmp_path,
        retries=0,
        timeout=5,
        scomo=ScomoConfig(**scomo),  # type: ignore[arg-type]
    )
    return Downloader.from_config(config, sleep=Sleeps())


def leftovers(dest: Path) -> list[Path]:
    return [p for p in (dest, part_path(dest), meta_path(dest)) if p.exists()]


def descriptor(object_url: str, size: int, notify: str | None = None) -> bytes:
    return DownloadDescriptor(
        object_uri=object_url, size=size, types=(OCTETS,), install_notify_uri=notify
    ).to_xml()


# ---------------------------------------------------------------------------------------
# An endless body fills the disk (point 6)


class TestSizeCaps:
    def test_an_endless_body_without_length_stops_at_max_package_bytes(
        self, server: ScriptedServer, tmp_path: Path
    ) -> None:
        server.endless("/pkg")
        seen: list[int] = []
        dest = tmp_path / "pkgs" / "pkg"
        with downloader(tmp_path, max_package_bytes=MiB) as d, pytest.raises(DownloadError) as caught:
            d.download(server.url("/pkg"), dest, progress=lambda done, total: seen.append(done))
        assert caught.value.result == ScomoResult.DOWNLOAD_FAILED and not caught.value.retryable
        assert f"max_package_bytes of {MiB} bytes" in str(caught.value)
        assert max(seen) <= MiB  # nothing past the cap was written
        assert leftovers(dest) == []
        assert server.sent("/pkg") < BOUNDED

    def test_a_content_length_over_the_cap_is_refused_before_the_body(
        self, server: ScriptedServer, tmp_path: Path
    ) -> None:
        server.endless("/pkg", content_length=10 * 1024**3)
        dest = tmp_path / "pkg"
        with downloader(tmp_path, max_package_bytes=MiB) as d, pytest.raises(DownloadError) as caught:
            d.download(server.url("/pkg"), dest)
        assert caught.value.result == 1402 and "has 10737418240 bytes, over this device's" in str(
            caught.value
        )
        assert leftovers(dest) == []
        assert server.sent("/pkg") < BOUNDED

    def test_an_expected_size_over_the_cap_needs_no_request(
        self, server: ScriptedServer, tmp_path: Path
    ) -> None:
        server.serve("/pkg", PACKAGE)
        with downloader(tmp_path, max_package_bytes=1000) as d, pytest.raises(DownloadError) as caught:
            d.download(server.url("/pkg"), tmp_path / "pkg", expected_size=len(PACKAGE))
        assert caught.value.result == 1402 and server.paths() == []

    def test_a_descriptor_size_over_the_cap_is_refused_before_the_object(
        self, server: ScriptedServer, tmp_path: Path
    ) -> None:
        server.endless("/pkg")
        server.serve("/pkg.dd", descriptor("/pkg", 5 * MiB, notify="/notify"), DD_CONTENT_TYPE)
        with downloader(tmp_path, max_package_bytes=MiB) as d, pytest.raises(DownloadError) as caught:
            d.download(server.url("/pkg.dd"), tmp_path / "pkg")
        assert caught.value.result == 1402 and "the descriptor announces 5242880 bytes" in str(caught.value)
        assert server.paths() == ["/pkg.dd"]  # the object was never asked for
        assert [hit.body for hit in server.hits if hit.method == "POST"] == [b"952 Device Aborted"]

    def test_more_bytes_than_the_descriptor_declared_is_905_and_nothing_past_it_is_written(
        self, server: ScriptedServer, tmp_path: Path
    ) -> None:
        server.endless("/pkg")
        server.serve("/pkg.dd", descriptor("/pkg", 100_000, notify="/notify"), DD_CONTENT_TYPE)
        seen: list[int] = []
        dest = tmp_path / "pkg"
        with (
            downloader(tmp_path) as d,
            pytest.raises(DownloadError, match="more than the 100000 bytes") as caught,
        ):
            d.download(server.url("/pkg.dd"), dest, progress=lambda done, total: seen.append(done))
        assert caught.value.result == 1402 and max(seen) <= 100_000
        assert [hit.body for hit in server.hits if hit.method == "POST"] == [b"905 Attribute mismatch"]
        assert leftovers(dest) == [] and server.sent("/pkg") < BOUNDED

    def test_more_bytes_than_expected_is_1402(self, server: ScriptedServer, tmp_path: Path) -> None:
        server.endless("/pkg")
        dest = tmp_path / "pkg"
        with (
            downloader(tmp_path) as d,
            pytest.raises(DownloadError, match="more than the 200000 bytes") as caught,
        ):
            d.download(server.url("/pkg"), dest, expected_size=200_000)
        assert caught.value.result == 1402 and not caught.value.retryable
        assert leftovers(dest) == [] and server.sent("/pkg") < BOUNDED

    def test_an_endless_body_stops_when_the_disk_comes_down_to_the_reserve(
        self, server: ScriptedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The disk has the reserve plus 3 MiB; every byte of the ``.part`` takes from it."""
        reserve = 64 * MiB
        downloads = tmp_path / "downloads"
        real_usage = shutil.disk_usage

        def disk_usage(path: str | Path) -> object:
            usage = real_usage(path)
            written = sum(p.stat().st_size for p in downloads.glob("*.part"))
            return usage._replace(free=reserve + 3 * MiB - written)

        monkeypatch.setattr(shutil, "disk_usage", disk_usage)
        server.endless("/pkg")
        seen: list[int] = []
        with downloader(tmp_path, reserve_bytes=reserve) as d, pytest.raises(DownloadError) as caught:
            d.download(server.url("/pkg"), "pkg", progress=lambda done, total: seen.append(done))
        assert caught.value.result == ScomoResult.DOWNLOAD_FAILED_OUT_OF_MEMORY and not caught.value.retryable
        assert "reserved free space" in str(caught.value)
        assert 3 * MiB <= max(seen) <= 4 * MiB + 65536  # checked every MiB, not every chunk
        assert leftovers(downloads / "pkg") == []
        assert server.sent("/pkg") < BOUNDED

    def test_a_reserve_larger_than_the_disk_refuses_an_unannounced_body_at_once(
        self, server: ScriptedServer, tmp_path: Path
    ) -> None:
        server.endless("/pkg")
        with downloader(tmp_path, reserve_bytes=2**62) as d, pytest.raises(DownloadError) as caught:
            d.download(server.url("/pkg"), "pkg")
        assert caught.value.result == 1404
        assert "after 0 bytes" in str(caught.value)
        assert leftovers(tmp_path / "downloads" / "pkg") == []

    def test_within_every_cap_the_download_completes(self, server: ScriptedServer, tmp_path: Path) -> None:
        server.serve("/pkg", PACKAGE)
        with downloader(tmp_path, max_package_bytes=len(PACKAGE)) as d:
            result = d.download(server.url("/pkg"), "pkg")
        assert result.path.read_bytes() == PACKAGE


# ---------------------------------------------------------------------------------------
# Redirects to local addresses (point 11)


class TestRedirects:
    def test_a_redirect_to_another_loopback_address_is_refused(
        self, server: ScriptedServer, elsewhere: ScriptedServer, tmp_path: Path
    ) -> None:
        elsewhere.serve("/admin", PACKAGE)
        server.redirect("/pkg", elsewhere.url("/admin"))
        with downloader(tmp_path) as d, pytest.raises(DownloadError) as caught:
            d.download(server.url("/pkg"), tmp_path / "pkg")
        assert caught.value.result == ScomoResult.DOWNLOAD_FAILED and not caught.value.retryable
        message = str(caught.value)
        assert "redirecting to http://127.0.0.2:" in message and "127.0.0.2 is a loopback address" in message
        assert "allow_local_redirects" in message
        assert elsewhere.paths() == []  # never contacted
        assert leftovers(tmp_path / "pkg") == []

    def test_local_redirects_are_followed_when_allowed(
        self, server: ScriptedServer, elsewhere: ScriptedServer, tmp_path: Path
    ) -> None:
        elsewhere.serve("/pkg", PACKAGE)
        server.redirect("/pkg", elsewhere.url("/pkg"), status=307)
        with downloader(tmp_path, allow_local_redirects=True) as d:
            result = d.download(server.url("/pkg"), tmp_path / "pkg")
        assert result.path.read_bytes() == PACKAGE and result.url == server.url("/pkg")
        assert elsewhere.paths() == ["/pkg"]

    @pytest.mark.parametrize(
        ("location", "kind"),
        [
            ("http://[::1]:9/pkg", "::1 is a loopback address"),
            ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
            ("http://0.0.0.0:9/pkg", "0.0.0.0 is an unspecified address"),
            ("http://[::ffff:127.0.0.1]:9/pkg", "is a loopback address"),
            ("http://localhost:9/pkg", "is a loopback address"),
        ],
    )
    def test_every_kind_of_local_target_is_refused_before_connecting(
        self, server: ScriptedServer, tmp_path: Path, location: str, kind: str
    ) -> None:
        server.redirect("/pkg", location)
        with downloader(tmp_path) as d, pytest.raises(DownloadError, match="refused") as caught:
            d.download(server.url("/pkg"), tmp_path / "pkg")
        assert caught.value.result == 1402 and not caught.value.retryable
        assert kind in str(caught.value)

    def test_a_redirect_chain_is_checked_at_every_hop(
        self, server: ScriptedServer, elsewhere: ScriptedServer, tmp_path: Path
    ) -> None:
        server.redirect("/pkg", "/moved/pkg", status=301)  # same server: followed
        server.redirect("/moved/pkg", elsewhere.url("/pkg"))
        with downloader(tmp_path) as d, pytest.raises(DownloadError, match=r"127\.0\.0\.2 is a loopback"):
            d.download(server.url("/pkg"), tmp_path / "pkg")
        assert server.paths() == ["/pkg", "/moved/pkg"] and elsewhere.paths() == []

    def test_a_redirect_on_the_same_server_is_followed(self, server: ScriptedServer, tmp_path: Path) -> None:
        server.redirect("/latest", "/v2/pkg")
        server.serve("/v2/pkg", PACKAGE)
        with downloader(tmp_path) as d:
            result = d.download(server.url("/latest"), tmp_path / "pkg")
        assert result.path.read_bytes() == PACKAGE

    def test_a_redirect_loop_is_1402(self, server: ScriptedServer, tmp_path: Path) -> None:
        server.redirect("/pkg", "/pkg")
        with (
            downloader(tmp_path) as d,
            pytest.raises(DownloadError, match="redirects too many times") as caught,
        ):
            d.download(server.url("/pkg"), tmp_path / "pkg")
        assert caught.value.result == 1402
        assert len(server.paths()) == 21  # the first request and httpx's 20 redirects

    def test_a_descriptor_object_on_another_local_address_is_refused(
        self, server: ScriptedServer, elsewhere: ScriptedServer, tmp_path: Path
    ) -> None:
        elsewhere.serve("/pkg", PACKAGE)
        server.serve(
            "/pkg.dd", descriptor(elsewhere.url("/pkg"), len(PACKAGE), notify="/notify"), DD_CONTENT_TYPE
        )
        with downloader(tmp_path) as d, pytest.raises(DownloadError) as caught:
            d.download(server.url("/pkg.dd"), tmp_path / "pkg")
        assert caught.value.result == 1402 and "points at http://127.0.0.2:" in str(caught.value)
        assert elsewhere.paths() == []
        assert [hit.body for hit in server.hits if hit.method == "POST"] == [b"906 Invalid descriptor"]

    def test_install_notify_to_another_local_address_is_not_sent(
        self, server: ScriptedServer, elsewhere: ScriptedServer, tmp_path: Path
    ) -> None:
        server.serve("/pkg", PACKAGE)
        server.serve(
            "/pkg.dd", descriptor("/pkg", len(PACKAGE), notify=elsewhere.url("/hook")), DD_CONTENT_TYPE
        )
        with downloader(tmp_path) as d:
            result = d.download(server.url("/pkg.dd"), tmp_path / "pkg")
            assert result.descriptor is not None
            assert not d.report_install(result.descriptor, InstallNotifyStatus.SUCCESS)
        assert elsewhere.hits == []

    def test_install_notify_redirects_are_not_followed(
        self, server: ScriptedServer, elsewhere: ScriptedServer, tmp_path: Path
    ) -> None:
        server.serve("/pkg", PACKAGE)
        server.serve("/pkg.dd", descriptor("/pkg", len(PACKAGE), notify="/notify"), DD_CONTENT_TYPE)
        server.redirect("/notify", elsewhere.url("/hook"), status=307)  # would re-POST the report
        with downloader(tmp_path) as d:
            result = d.download(server.url("/pkg.dd"), tmp_path / "pkg")
            assert result.descriptor is not None
            assert not d.report_install(result.descriptor, InstallNotifyStatus.SUCCESS)
        assert server.paths("POST") == ["/notify"] and elsewhere.hits == []

    def test_a_refused_object_does_not_let_its_server_hear_the_failure(
        self, server: ScriptedServer, elsewhere: ScriptedServer, tmp_path: Path
    ) -> None:
        document = descriptor(elsewhere.url("/pkg"), len(PACKAGE), notify=elsewhere.url("/hook"))
        server.serve("/pkg.dd", document, DD_CONTENT_TYPE)
        with downloader(tmp_path) as d, pytest.raises(DownloadError, match="points at"):
            d.download(server.url("/pkg.dd"), tmp_path / "pkg")
        assert elsewhere.hits == []

    def test_a_stored_descriptor_still_reports_to_the_server_of_its_object(
        self, server: ScriptedServer, tmp_path: Path
    ) -> None:
        """The journal keeps the DD as XML, parsed again without its own URL: still same origin."""
        server.serve("/pkg", PACKAGE)
        server.serve("/pkg.dd", descriptor("/pkg", len(PACKAGE), notify="/notify"), DD_CONTENT_TYPE)
        with downloader(tmp_path) as d:
            result = d.download(server.url("/pkg.dd"), tmp_path / "pkg")
            assert result.descriptor is not None
            stored = parse_descriptor(result.descriptor.to_xml())
            assert stored.source_url is None
            assert d.report_install(stored, InstallNotifyStatus.SUCCESS)
        assert [hit.body for hit in server.hits if hit.method == "POST"] == [b"900 Success"]
