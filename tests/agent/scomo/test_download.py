"""The package downloader against a real HTTP server: resume, DDs, faults and result codes."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from omadm.agent.config import AgentConfig, DeviceConfig, TLSConfig
from omadm.agent.scomo.dd import DD_CONTENT_TYPE, DownloadDescriptor, InstallNotifyStatus
from omadm.agent.scomo.download import Downloader, DownloadError, DownloadResult, meta_path, part_path
from omadm.protocol.codes import ScomoResult

from .pkgserver import PackageServer, self_signed_cert

DATA = os.urandom(300_000) + b"tail"  # several chunks, not a multiple of the chunk size
SHA = hashlib.sha256(DATA).hexdigest()
OMP = "application/vnd.omadm.package"


class Sleeps(list[float]):
    """An injectable ``sleep`` that records the delays instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def server() -> Iterator[PackageServer]:
    with PackageServer() as srv:
        yield srv


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def downloader(tmp_path: Path, sleeps: Sleeps) -> Iterator[Downloader]:
    with Downloader(scratch=tmp_path / "scratch", timeout=5, retries=3, retry_backoff=0.5, sleep=sleeps) as d:
        yield d


def leftovers(dest: Path) -> list[Path]:
    return [p for p in (dest, part_path(dest), meta_path(dest)) if p.exists()]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestPlain:
    def test_happy_path_with_size_and_hash(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/app.omp", DATA, content_type=OMP)
        dest = tmp_path / "pkgs" / "app.omp"
        result = downloader.download(
            server.url("/app.omp"), dest, expected_size=len(DATA), expected_sha256=SHA
        )
        assert result == DownloadResult(dest, len(DATA), SHA, OMP, None, server.url("/app.omp"))
        assert dest.read_bytes() == DATA
        assert leftovers(dest) == [dest]
        (request,) = server.requests_for("/app.omp")
        assert "range" not in request.headers
        assert request.headers["accept-encoding"] == "identity"
        assert request.headers["user-agent"].startswith("omadm-agent/")

    def test_hash_is_case_insensitive_and_optional(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/a", DATA)
        assert (
            downloader.download(server.url("/a"), tmp_path / "a", expected_sha256=SHA.upper()).sha256 == SHA
        )
        assert downloader.download(server.url("/a"), tmp_path / "b").sha256 == SHA

    def test_progress_callback(self, server: PackageServer, downloader: Downloader, tmp_path: Path) -> None:
        server.add("/a", DATA)
        calls: list[tuple[int, int | None]] = []
        downloader.download(
            server.url("/a"), tmp_path / "a", progress=lambda done, total: calls.append((done, total))
        )
        assert calls[0] == (0, len(DATA)) and calls[-1] == (len(DATA), len(DATA))
        assert [done for done, _ in calls] == sorted(done for done, _ in calls)
        assert len(calls) > 3

    def test_body_without_content_length(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/a", DATA, send_length=False)
        calls: list[tuple[int, int | None]] = []
        result = downloader.download(
            server.url("/a"), tmp_path / "a", progress=lambda d, t: calls.append((d, t))
        )
        assert result.size == len(DATA) and calls[-1] == (len(DATA), None)

    def test_relative_dest_goes_to_scratch(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/a", b"x")
        result = downloader.download(server.url("/a"), Path("sub/a.bin"))
        assert result.path == tmp_path / "scratch" / "sub" / "a.bin" and result.path.read_bytes() == b"x"

    def test_an_existing_dest_is_replaced_only_by_a_verified_file(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        dest = tmp_path / "a"
        dest.write_bytes(b"old")
        server.add("/a", DATA)
        with pytest.raises(DownloadError):
            downloader.download(server.url("/a"), dest, expected_sha256="0" * 64)
        assert dest.read_bytes() == b"old"
        downloader.download(server.url("/a"), dest, expected_sha256=SHA)
        assert dest.read_bytes() == DATA

    def test_credentials_in_the_url(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/a", DATA, auth=("dev", "s3cret"))
        url = server.url("/a").replace("http://", "http://dev:s3cret@")
        assert downloader.download(url, tmp_path / "a").size == len(DATA)

    def test_files_from_a_directory(self, downloader: Downloader, tmp_path: Path) -> None:
        root = tmp_path / "www"
        (root / "pkgs").mkdir(parents=True)
        (root / "pkgs" / "app.zip").write_bytes(DATA)
        descriptor = DownloadDescriptor("app.zip", len(DATA), ("application/zip",), install_notify_uri="/n")
        (root / "pkgs" / "app.dd").write_bytes(descriptor.to_xml())
        with PackageServer(directory=root) as srv:
            result = downloader.download(srv.url("/pkgs/app.dd"), tmp_path / "out" / "app.zip")
            assert result.url == srv.url("/pkgs/app.zip") and result.content_type == "application/zip"
            assert result.descriptor is not None and result.sha256 == SHA

    def test_from_config(self, tmp_path: Path) -> None:
        config = AgentConfig(
            device=DeviceConfig(id="dev"),
            data_dir=tmp_path,
            retries=5,
            retry_backoff=0.1,
            timeout=7,
            tls=TLSConfig(verify=False),
        )
        with Downloader.from_config(config, retries=1) as d:
            assert (d.scratch, d.retries, d.retry_backoff, d.timeout) == (tmp_path / "downloads", 1, 0.1, 7)


class TestResume:
    def test_dropped_connection_resumes_with_range(
        self, server: PackageServer, downloader: Downloader, sleeps: Sleeps, tmp_path: Path
    ) -> None:
        resource = server.add("/a", DATA, drop_after=100_000, drop_times=1)
        dest = tmp_path / "a"
        result = downloader.download(server.url("/a"), dest, expected_size=len(DATA), expected_sha256=SHA)
        assert result.sha256 == SHA and dest.read_bytes() == DATA
        first, second = server.requests_for("/a")
        assert "range" not in first.headers
        assert second.headers["range"] == "bytes=100000-"
        assert second.headers["if-range"] == resource.etag
        assert second.status == 206
        assert sleeps == [0.5]
        assert leftovers(dest) == [dest]

    def test_last_modified_is_the_validator_without_etag(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        resource = server.add("/a", DATA, drop_after=5000, drop_times=1, send_etag=False)
        downloader.download(server.url("/a"), tmp_path / "a", expected_sha256=SHA)
        assert server.requests_for("/a")[1].headers["if-range"] == resource.last_modified

    def test_dropped_too_often_fails_1402_and_keeps_the_part(
        self, server: PackageServer, downloader: Downloader, sleeps: Sleeps, tmp_path: Path
    ) -> None:
        server.add("/a", DATA, drop_after=1000, drop_times=10)
        dest = tmp_path / "a"
        with pytest.raises(DownloadError) as caught:
            downloader.download(server.url("/a"), dest)
        assert caught.value.result == ScomoResult.DOWNLOAD_FAILED and caught.value.retryable
        assert "lost after" in str(caught.value)
        assert sleeps == [0.5, 1.0, 2.0]  # exponential backoff, 3 retries
        ranges = [r.headers.get("range") for r in server.requests_for("/a")]
        assert ranges == [None, "bytes=1000-", "bytes=2000-", "bytes=3000-"]
        assert not dest.exists() and part_path(dest).stat().st_size == 4000

    def test_resume_across_a_crash(self, server: PackageServer, tmp_path: Path, sleeps: Sleeps) -> None:
        server.add("/a", DATA, drop_after=123_456, drop_times=1)
        dest = tmp_path / "a"
        with Downloader(retries=0, sleep=sleeps) as first, pytest.raises(DownloadError):
            first.download(server.url("/a"), dest)
        assert not dest.exists() and part_path(dest).stat().st_size == 123_456
        assert json.loads(meta_path(dest).read_text())["url"] == server.url("/a")
        with Downloader(retries=0, sleep=sleeps) as second:  # a new process, as after a reboot
            result = second.download(server.url("/a"), dest, expected_sha256=SHA)
        assert result.size == len(DATA) and dest.read_bytes() == DATA
        assert server.requests_for("/a")[-1].headers["range"] == "bytes=123456-"
        assert leftovers(dest) == [dest]

    def test_a_part_without_meta_is_not_trusted(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/a", DATA)
        dest = tmp_path / "a"
        part_path(dest).write_bytes(b"garbage from somewhere")
        assert downloader.download(server.url("/a"), dest, expected_sha256=SHA).size == len(DATA)
        assert "range" not in server.requests_for("/a")[0].headers

    def test_a_part_for_another_url_is_not_continued(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/old", DATA)
        server.add("/new", DATA[::-1])
        dest = tmp_path / "a"
        with pytest.raises(RuntimeError):
            downloader.download(server.url("/old"), dest, progress=_abort_after(500))
        assert part_path(dest).exists()
        result = downloader.download(server.url("/new"), dest)
        assert dest.read_bytes() == DATA[::-1] and result.sha256 == hashlib.sha256(DATA[::-1]).hexdigest()
        assert "range" not in server.requests_for("/new")[0].headers

    def test_resume_false_starts_again(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/a", DATA)
        dest = tmp_path / "a"
        with pytest.raises(RuntimeError):
            downloader.download(server.url("/a"), dest, progress=_abort_after(10_000))
        downloader.download(server.url("/a"), dest, resume=False)
        assert "range" not in server.requests_for("/a")[1].headers and dest.read_bytes() == DATA

    def test_server_ignoring_range_restarts_from_zero(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/a", DATA, drop_after=50_000, drop_times=1, ignore_range=True)
        dest = tmp_path / "a"
        calls: list[int] = []
        result = downloader.download(
            server.url("/a"), dest, expected_sha256=SHA, progress=lambda done, _total: calls.append(done)
        )
        assert result.sha256 == SHA and dest.read_bytes() == DATA
        second = server.requests_for("/a")[1]
        assert second.headers["range"] == "bytes=50000-" and second.status == 200
        assert 0 in calls[1:]  # progress went back to zero for the restart

    def test_changed_file_if_range_restarts(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/a", DATA)
        dest = tmp_path / "a"
        with pytest.raises(RuntimeError):
            downloader.download(server.url("/a"), dest, progress=_abort_after(100_000))
        new = b"version 2 " * 20_000
        server.update("/a", new)
        result = downloader.download(server.url("/a"), dest, expected_sha256=hashlib.sha256(new).hexdigest())
        assert dest.read_bytes() == new and result.size == len(new)
        second = server.requests_for("/a")[1]
        assert second.headers["range"].startswith("bytes=") and second.status == 200

    def test_416_with_a_complete_part_is_accepted(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/a", DATA, content_type=OMP)
        dest = tmp_path / "a"
        with pytest.raises(RuntimeError):  # all bytes written, then "crash" before the rename
            downloader.download(server.url("/a"), dest, progress=_abort_after(len(DATA) - 1))
        assert part_path(dest).stat().st_size == len(DATA) and not dest.exists()
        calls: list[tuple[int, int | None]] = []
        result = downloader.download(
            server.url("/a"), dest, expected_sha256=SHA, progress=lambda d, t: calls.append((d, t))
        )
        assert result == DownloadResult(dest, len(DATA), SHA, OMP, None, server.url("/a"))
        assert server.requests_for("/a")[1].status == 416
        assert calls == [(len(DATA), len(DATA))]
        assert leftovers(dest) == [dest]

    def test_416_with_a_wrong_size_restarts(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        # No validators at all: resuming is allowed only because a hash will check the result.
        server.add("/a", DATA, send_etag=False, send_last_modified=False)
        dest = tmp_path / "a"
        with pytest.raises(RuntimeError):
            downloader.download(
                server.url("/a"), dest, expected_sha256=SHA, progress=_abort_after(len(DATA) - 1)
            )
        short = DATA[:1000]
        server.update("/a", short)
        result = downloader.download(
            server.url("/a"), dest, expected_sha256=hashlib.sha256(short).hexdigest()
        )
        assert dest.read_bytes() == short and result.size == 1000
        statuses = [(r.headers.get("range"), r.status) for r in server.requests_for("/a")[1:]]
        assert statuses == [(f"bytes={len(DATA)}-", 416), (None, 200)]

    def test_no_validator_and_no_hash_means_no_resume(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/a", DATA, send_etag=False, send_last_modified=False, drop_after=1000, drop_times=1)
        dest = tmp_path / "a"
        assert downloader.download(server.url("/a"), dest).size == len(DATA)
        assert "range" not in server.requests_for("/a")[1].headers

    def test_progress_exception_keeps_a_resumable_part(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/a", DATA)
        dest = tmp_path / "a"
        with pytest.raises(RuntimeError, match="cancelled"):
            downloader.download(server.url("/a"), dest, progress=_abort_after(70_000))
        assert not dest.exists() and part_path(dest).stat().st_size >= 70_000
        downloader.download(server.url("/a"), dest, expected_sha256=SHA)
        assert server.requests_for("/a")[1].status == 206


def _abort_after(limit: int):  # type: ignore[no-untyped-def]
    """A progress callback that "cancels" (raises) once more than ``limit`` bytes are in."""

    def progress(done: int, total: int | None) -> None:
        if done > limit:
            raise RuntimeError("cancelled by the test")

    return progress


class TestErrors:
    def test_401_is_1403(
        self, server: PackageServer, downloader: Downloader, sleeps: Sleeps, tmp_path: Path
    ) -> None:
        server.add("/a", DATA, auth=("dev", "pw"))
        with pytest.raises(DownloadError) as caught:
            downloader.download(server.url("/a"), tmp_path / "a")
        assert caught.value.result == ScomoResult.ALTERNATE_DOWNLOAD_AUTHENTICATION_FAILURE
        assert not caught.value.retryable and caught.value.http_status == 401 and sleeps == []

    def test_wrong_credentials_are_1403_and_not_logged(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/a", DATA, auth=("dev", "pw"))
        url = server.url("/a").replace("http://", "http://dev:wrong@")
        with pytest.raises(DownloadError) as caught:
            downloader.download(url, tmp_path / "a")
        assert caught.value.result == 1403 and "wrong" not in str(caught.value)

    @pytest.mark.parametrize("status", [403, 407])
    def test_forbidden_is_1403(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path, status: int
    ) -> None:
        server.add("/a", DATA, fail_status=status, fail_times=1)
        with pytest.raises(DownloadError) as caught:
            downloader.download(server.url("/a"), tmp_path / "a")
        assert caught.value.result == 1403 and not caught.value.retryable

    @pytest.mark.parametrize("status", [404, 410, 400])
    def test_client_errors_are_1402(
        self, server: PackageServer, downloader: Downloader, sleeps: Sleeps, tmp_path: Path, status: int
    ) -> None:
        if status != 404:
            server.add("/a", DATA, fail_status=status, fail_times=1)
        with pytest.raises(DownloadError) as caught:
            downloader.download(server.url("/a"), tmp_path / "a")
        assert caught.value.result == ScomoResult.DOWNLOAD_FAILED
        assert not caught.value.retryable and caught.value.http_status == status
        assert f"HTTP {status}" in str(caught.value)
        assert len(server.requests_for("/a")) == 1 and sleeps == []
        assert leftovers(tmp_path / "a") == []

    def test_unreachable_host_is_1501_after_retries(
        self, downloader: Downloader, sleeps: Sleeps, tmp_path: Path
    ) -> None:
        url = f"http://127.0.0.1:{closed_port()}/a"
        with pytest.raises(DownloadError) as caught:
            downloader.download(url, tmp_path / "a")
        assert caught.value.result == ScomoResult.ALTERNATE_DOWNLOAD_SERVER_UNAVAILABLE
        assert caught.value.retryable and caught.value.http_status is None
        assert sleeps == [0.5, 1.0, 2.0]
        assert leftovers(tmp_path / "a") == []

    def test_unknown_host_is_1501(self, tmp_path: Path, sleeps: Sleeps) -> None:
        with Downloader(retries=0, sleep=sleeps) as d, pytest.raises(DownloadError) as caught:
            d.download("http://no-such-host.invalid/a", tmp_path / "a")
        assert caught.value.result == 1501

    def test_timeout_is_1501(self, server: PackageServer, tmp_path: Path, sleeps: Sleeps) -> None:
        server.add("/slow", DATA, delay=2.0)
        with Downloader(timeout=0.2, retries=0, sleep=sleeps) as d, pytest.raises(DownloadError) as caught:
            d.download(server.url("/slow"), tmp_path / "a")
        assert caught.value.result == 1501 and caught.value.retryable

    def test_503_twice_then_success(
        self, server: PackageServer, downloader: Downloader, sleeps: Sleeps, tmp_path: Path
    ) -> None:
        server.add("/a", DATA, fail_status=503, fail_times=2)
        assert downloader.download(server.url("/a"), tmp_path / "a", expected_sha256=SHA).size == len(DATA)
        assert [r.status for r in server.requests_for("/a")] == [503, 503, 200]
        assert sleeps == [0.5, 1.0]

    def test_persistent_500_is_1500(
        self, server: PackageServer, downloader: Downloader, sleeps: Sleeps, tmp_path: Path
    ) -> None:
        server.add("/a", DATA, fail_status=500, fail_times=100)
        with pytest.raises(DownloadError) as caught:
            downloader.download(server.url("/a"), tmp_path / "a")
        assert caught.value.result == ScomoResult.ALTERNATE_DOWNLOAD_SERVER_ERROR and caught.value.retryable
        assert len(server.requests_for("/a")) == 4 and len(sleeps) == 3

    def test_wrong_sha256_is_1402_with_no_leftovers(
        self, server: PackageServer, downloader: Downloader, sleeps: Sleeps, tmp_path: Path
    ) -> None:
        server.add("/a", DATA)
        dest = tmp_path / "a"
        with pytest.raises(DownloadError) as caught:
            downloader.download(server.url("/a"), dest, expected_sha256="ab" * 32)
        assert caught.value.result == ScomoResult.DOWNLOAD_FAILED and not caught.value.retryable
        assert SHA in str(caught.value)
        assert leftovers(dest) == [] and sleeps == []
        assert list(tmp_path.iterdir()) == []  # nothing else either

    def test_malformed_expected_sha256(self, downloader: Downloader, tmp_path: Path) -> None:
        with pytest.raises(DownloadError, match="64 hexadecimal"):
            downloader.download("http://127.0.0.1:9/a", tmp_path / "a", expected_sha256="abc")

    def test_announced_size_mismatch_fails_before_the_body(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/a", DATA)
        calls: list[int] = []
        with pytest.raises(DownloadError) as caught:
            downloader.download(
                server.url("/a"), tmp_path / "a", expected_size=10, progress=lambda d, t: calls.append(d)
            )
        assert caught.value.result == 1402 and not caught.value.retryable and calls == []
        assert leftovers(tmp_path / "a") == []

    def test_longer_body_than_expected_without_length(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/a", DATA, send_length=False)
        with pytest.raises(DownloadError, match="more than the 1000 bytes") as caught:
            downloader.download(server.url("/a"), tmp_path / "a", expected_size=1000)
        assert caught.value.result == 1402 and leftovers(tmp_path / "a") == []

    @pytest.mark.parametrize(
        "url", ["file:///etc/passwd", "ftp://127.0.0.1/a", "/relative/path", "http:///x"]
    )
    def test_unsupported_urls_are_1402(self, downloader: Downloader, tmp_path: Path, url: str) -> None:
        with pytest.raises(DownloadError, match="only http:// and https://") as caught:
            downloader.download(url, tmp_path / "a")
        assert caught.value.result == 1402 and not caught.value.retryable

    def test_out_of_space_from_content_length_is_1404(
        self, server: PackageServer, sleeps: Sleeps, tmp_path: Path
    ) -> None:
        server.add("/a", DATA)
        seen: list[Path] = []

        def free_space(path: Path) -> int:
            seen.append(path)
            return 1000

        with Downloader(free_space=free_space, sleep=sleeps) as d, pytest.raises(DownloadError) as caught:
            d.download(server.url("/a"), tmp_path / "pkgs" / "a")
        assert caught.value.result == ScomoResult.DOWNLOAD_FAILED_OUT_OF_MEMORY and not caught.value.retryable
        assert seen == [tmp_path / "pkgs"] and sleeps == []
        assert not (tmp_path / "pkgs" / "a").exists()

    def test_out_of_space_from_expected_size_needs_no_request(
        self, server: PackageServer, tmp_path: Path
    ) -> None:
        server.add("/a", DATA)
        with Downloader(free_space=lambda p: 10) as d, pytest.raises(DownloadError) as caught:
            d.download(server.url("/a"), tmp_path / "a", expected_size=len(DATA))
        assert caught.value.result == 1404 and server.requests_for("/a") == []

    def test_disk_full_while_writing_is_1404(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/a.omp", DATA, content_type=OMP)
        server.add_descriptor("/a.dd", "/a.omp")

        def disk_full(done: int, total: int | None) -> None:
            if done > 100_000:  # as if the write had failed: another process filled the disk
                raise OSError(errno.ENOSPC, "No space left on device")

        with pytest.raises(DownloadError) as caught:
            downloader.download(server.url("/a.dd"), tmp_path / "a", progress=disk_full)
        assert caught.value.result == 1404 and not caught.value.retryable
        assert [n.body for n in server.notifications] == ["901 Insufficient memory"]
        assert part_path(tmp_path / "a").exists()  # resumable once there is room again

    def test_unwritable_destination_is_1402(self, downloader: Downloader, tmp_path: Path) -> None:
        (tmp_path / "file").write_bytes(b"")
        with pytest.raises(DownloadError, match="cannot write") as caught:
            downloader.download("http://127.0.0.1:9/a", tmp_path / "file" / "a")
        assert caught.value.result == 1402 and not caught.value.retryable

    def test_resume_needs_only_the_missing_bytes(self, server: PackageServer, tmp_path: Path) -> None:
        server.add("/a", DATA, drop_after=len(DATA) - 100, drop_times=1)
        dest = tmp_path / "a"
        with Downloader(retries=0) as d, pytest.raises(DownloadError):
            d.download(server.url("/a"), dest)
        with Downloader(free_space=lambda p: 150) as d:  # room for the rest, not for the whole
            assert d.download(server.url("/a"), dest, expected_size=len(DATA)).sha256 == SHA


class TestDescriptor:
    def test_dd_flow_and_install_notify(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/objects/app.omp", DATA, content_type=OMP)
        server.add_descriptor("/jobs/app.dd", "/objects/app.omp", name="App", dd_version="1.0")
        dest = tmp_path / "app.omp"
        result = downloader.download(server.url("/jobs/app.dd"), dest, expected_sha256=SHA)
        assert result.url == server.url("/objects/app.omp") and result.content_type == OMP
        assert dest.read_bytes() == DATA and leftovers(dest) == [dest]
        descriptor = result.descriptor
        assert descriptor is not None
        assert (descriptor.name, descriptor.size, descriptor.types) == ("App", len(DATA), (OMP,))
        assert descriptor.install_notify_uri == server.url("/notify/jobs/app.dd")
        assert descriptor.source_url == server.url("/jobs/app.dd")
        assert server.notifications == []  # success is reported after the install, not now
        assert downloader.report_install(descriptor, InstallNotifyStatus.SUCCESS)
        (note,) = server.notifications
        assert (note.path, note.body, note.content_type) == (
            "/notify/jobs/app.dd",
            "900 Success",
            "text/plain",
        )

    def test_report_install_without_notify_uri(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/a.omp", DATA, content_type=OMP)
        server.add_descriptor("/a.dd", "/a.omp", notify_path=None, absolute=True)
        result = downloader.download(server.url("/a.dd"), tmp_path / "a")
        assert result.descriptor is not None and result.descriptor.install_notify_uri is None
        assert not downloader.report_install(result.descriptor, InstallNotifyStatus.SUCCESS)

    def test_dd_sniffed_from_a_dd_url_with_a_generic_type(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/a.omp", DATA, content_type=OMP)
        server.add_descriptor("/a.dd", "/a.omp", content_type="text/plain")
        result = downloader.download(server.url("/a.dd"), tmp_path / "a")
        assert result.descriptor is not None and result.size == len(DATA)

    def test_a_dd_url_that_is_not_a_dd_is_the_package(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/firmware.dd", b"<not-a-descriptor/>", content_type="application/octet-stream")
        result = downloader.download(server.url("/firmware.dd"), tmp_path / "a")
        assert result.descriptor is None and (tmp_path / "a").read_bytes() == b"<not-a-descriptor/>"

    @pytest.mark.parametrize(
        ("dd_options", "needle"),
        [({"size": 12345}, "descriptor says 12345"), ({"types": ("application/zip",)}, "descriptor says")],
    )
    def test_size_or_type_mismatch_is_905_and_1402(
        self,
        server: PackageServer,
        downloader: Downloader,
        tmp_path: Path,
        dd_options: dict[str, object],
        needle: str,
    ) -> None:
        server.add("/a.omp", DATA, content_type=OMP)
        server.add_descriptor("/a.dd", "/a.omp", **dd_options)  # type: ignore[arg-type]
        dest = tmp_path / "a"
        with pytest.raises(DownloadError) as caught:
            downloader.download(server.url("/a.dd"), dest)
        assert caught.value.result == ScomoResult.DOWNLOAD_FAILED and not caught.value.retryable
        assert caught.value.notify_status is InstallNotifyStatus.ATTRIBUTE_MISMATCH
        assert needle in str(caught.value) and caught.value.descriptor is not None
        assert [n.body for n in server.notifications] == ["905 Attribute mismatch"]
        assert leftovers(dest) == []

    def test_wrong_content_type_is_905(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/a.omp", DATA, content_type="text/html")  # a captive portal, say
        server.add_descriptor("/a.dd", "/a.omp", types=(OMP,))
        with pytest.raises(DownloadError) as caught:
            downloader.download(server.url("/a.dd"), tmp_path / "a")
        assert caught.value.notify_status is InstallNotifyStatus.ATTRIBUTE_MISMATCH
        assert "text/html" in str(caught.value)

    def test_invalid_descriptor_is_906_and_1402(
        self, server: PackageServer, downloader: Downloader, sleeps: Sleeps, tmp_path: Path
    ) -> None:
        body = b'<media xmlns="http://www.openmobilealliance.org/xmlns/dd"><installNotifyURI>/n</installNotifyURI>'
        server.add("/bad.dd", body + b"<size>many</size></media>", content_type=DD_CONTENT_TYPE)
        with pytest.raises(DownloadError) as caught:
            downloader.download(server.url("/bad.dd"), tmp_path / "a")
        assert caught.value.result == 1402 and not caught.value.retryable
        assert caught.value.notify_status is InstallNotifyStatus.INVALID_DESCRIPTOR
        assert "many" in str(caught.value)
        assert [(n.path, n.body) for n in server.notifications] == [("/n", "906 Invalid descriptor")]
        assert sleeps == []

    def test_unsupported_ddversion_is_951(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/a.omp", DATA, content_type=OMP)
        server.add_descriptor("/a.dd", "/a.omp", dd_version="7.0")
        with pytest.raises(DownloadError) as caught:
            downloader.download(server.url("/a.dd"), tmp_path / "a")
        assert caught.value.notify_status is InstallNotifyStatus.INVALID_DD_VERSION
        assert [n.body for n in server.notifications] == ["951 Invalid DDVersion"]

    def test_dd_size_over_free_space_is_901_and_1404(self, server: PackageServer, tmp_path: Path) -> None:
        server.add("/a.omp", DATA, content_type=OMP)
        server.add_descriptor("/a.dd", "/a.omp")
        with Downloader(free_space=lambda p: len(DATA) - 1) as d, pytest.raises(DownloadError) as caught:
            d.download(server.url("/a.dd"), tmp_path / "a")
        assert caught.value.result == ScomoResult.DOWNLOAD_FAILED_OUT_OF_MEMORY
        assert [n.body for n in server.notifications] == ["901 Insufficient memory"]
        assert server.requests_for("/a.omp") == []  # refused before fetching the object

    def test_object_errors_are_reported_as_loader_error(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/a.omp", DATA, content_type=OMP, fail_status=404, fail_times=1)
        server.add_descriptor("/a.dd", "/a.omp")
        with pytest.raises(DownloadError) as caught:
            downloader.download(server.url("/a.dd"), tmp_path / "a")
        assert caught.value.result == 1402 and caught.value.http_status == 404
        assert [n.body for n in server.notifications] == ["954 Loader Error"]

    def test_notify_failures_can_be_left_to_the_caller(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/a.omp", DATA, content_type=OMP)
        server.add_descriptor("/a.dd", "/a.omp", size=1)
        with pytest.raises(DownloadError) as caught:
            downloader.download(server.url("/a.dd"), tmp_path / "a", notify_failures=False)
        assert server.notifications == [] and caught.value.descriptor is not None
        assert caught.value.notify_status is InstallNotifyStatus.ATTRIBUTE_MISMATCH

    def test_unacceptable_types_are_953_and_1413(self, server: PackageServer, tmp_path: Path) -> None:
        server.add("/a.omp", DATA, content_type="application/java-archive")
        server.add_descriptor("/a.dd", "/a.omp")
        with Downloader(accept_types=[OMP]) as d, pytest.raises(DownloadError) as caught:
            d.download(server.url("/a.dd"), tmp_path / "a")
        assert caught.value.result == ScomoResult.UNSUPPORTED_ENVIRONMENT
        assert [n.body for n in server.notifications] == ["953 Non-Acceptable Content"]

    def test_object_download_resumes_after_a_drop(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/a.omp", DATA, content_type=OMP, drop_after=200_000, drop_times=1)
        server.add_descriptor("/a.dd", "/a.omp")
        result = downloader.download(server.url("/a.dd"), tmp_path / "a", expected_sha256=SHA)
        assert result.sha256 == SHA and len(server.requests_for("/a.dd")) == 2
        assert server.requests_for("/a.omp")[1].headers["range"] == "bytes=200000-"

    def test_descriptor_expected_size_disagreement(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/a.omp", DATA, content_type=OMP)
        server.add_descriptor("/a.dd", "/a.omp")
        with pytest.raises(DownloadError, match="descriptor announces") as caught:
            downloader.download(server.url("/a.dd"), tmp_path / "a", expected_size=5)
        assert caught.value.notify_status is InstallNotifyStatus.ATTRIBUTE_MISMATCH

    def test_a_descriptor_pointing_at_a_descriptor_is_not_followed(
        self, server: PackageServer, downloader: Downloader, tmp_path: Path
    ) -> None:
        server.add("/a.omp", DATA, content_type=OMP)
        server.add_descriptor("/inner.dd", "/a.omp")
        server.add_descriptor("/outer.dd", "/inner.dd", types=(OMP,))
        with pytest.raises(DownloadError) as caught:
            downloader.download(server.url("/outer.dd"), tmp_path / "a")
        assert caught.value.notify_status is InstallNotifyStatus.ATTRIBUTE_MISMATCH
        assert server.requests_for("/a.omp") == []


class TestTLS:
    @pytest.fixture
    def tls_server(self, tmp_path: Path) -> Iterator[tuple[PackageServer, Path]]:
        try:
            cert, key = self_signed_cert(tmp_path)
        except (FileNotFoundError, subprocess.CalledProcessError) as exc:
            pytest.skip(f"cannot make a test certificate: {exc}")
        with PackageServer({"/a": DATA}, tls=(cert, key)) as srv:
            yield srv, cert

    def test_trusted_by_ca_file(self, tls_server: tuple[PackageServer, Path], tmp_path: Path) -> None:
        srv, cert = tls_server
        with Downloader(ca_file=str(cert)) as d:
            assert d.download(srv.url("/a"), tmp_path / "a", expected_sha256=SHA).size == len(DATA)

    def test_untrusted_server_is_1403(
        self, tls_server: tuple[PackageServer, Path], tmp_path: Path, sleeps: Sleeps
    ) -> None:
        srv, _cert = tls_server
        with Downloader(sleep=sleeps) as d, pytest.raises(DownloadError) as caught:
            d.download(srv.url("/a"), tmp_path / "a")
        assert caught.value.result == ScomoResult.ALTERNATE_DOWNLOAD_AUTHENTICATION_FAILURE
        assert not caught.value.retryable and sleeps == [] and "TLS" in str(caught.value)

    def test_verification_can_be_disabled(
        self, tls_server: tuple[PackageServer, Path], tmp_path: Path
    ) -> None:
        srv, _cert = tls_server
        with Downloader(verify=False) as d:
            assert d.download(srv.url("/a"), tmp_path / "a").sha256 == SHA

    def test_unreadable_tls_files_fail_at_construction(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match=r"cannot load the CA bundle .*missing\.pem"):
            Downloader(ca_file=str(tmp_path / "missing.pem"))
