"""Real downloads of simulated devices: resume, size and hash checks, the signed manifest, result codes.

The package is a real one (``examples/hello-package`` built and signed with
``omadm.package.build``); the HTTP server is an ``httpx.MockTransport`` that answers Range
requests the way the omadm artifact route does (strong ETag = SHA-256), and can cut a body.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from omadm.package.build import build_package
from omadm.package.signing import generate_key
from omadm.protocol.codes import ScomoResult
from omadm.sim.download import FetchError, PackageFetcher, Partial, read_package_head

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
URL = "http://files.test/hello.omp"


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return generate_key()


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory, key: Ed25519PrivateKey) -> bytes:
    path = tmp_path_factory.mktemp("pkg") / "hello.omp"
    build_package(EXAMPLES / "hello-package", path, signing_key=key)
    return path.read_bytes()


class _Cut(httpx.AsyncByteStream):
    """A body that stops with a transport error after ``keep`` bytes (a dropped connection)."""

    def __init__(self, data: bytes, keep: int) -> None:
        self.data, self.keep = data, keep

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data[: self.keep]
        raise httpx.ReadError("connection reset")


class Files:
    """Serves one file with Range/If-Range like ``omadm.server.artifacts.routes``; can cut bodies."""

    def __init__(self, data: bytes, *, etag: str | None = None) -> None:
        self.data = data
        self.etag = etag if etag is not None else f'"{hashlib.sha256(data).hexdigest()}"'
        self.cuts: list[int] = []  # bytes to send before cutting, one per request
        self.requests: list[httpx.Request] = []
        self.status: int | None = None

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.status is not None:
            return httpx.Response(self.status)
        size = len(self.data)
        start = 0
        headers = {"ETag": self.etag, "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        status = 200
        wanted = request.headers.get("range")
        if wanted and request.headers.get("if-range") == self.etag:
            start = int(wanted.removeprefix("bytes=").rstrip("-"))
            status = 206
            headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
        body = self.data[start:]
        headers["Content-Length"] = str(len(body))
        if self.cuts:
            return httpx.Response(status, headers=headers, stream=_Cut(body, self.cuts.pop(0)))
        return httpx.Response(status, headers=headers, content=body)


async def _no_sleep(seconds: float) -> None:
    return None


def fetch(files: Files, partial: Partial | None = None, **options: object) -> tuple[object, Partial]:
    async def main() -> tuple[object, Partial]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(files.handle)) as client:
            fetcher = PackageFetcher(client, sleep=_no_sleep, **options)  # type: ignore[arg-type]
            state = partial or Partial()
            try:
                return await fetcher.fetch(URL, state), state
            except FetchError as exc:
                return exc, state

    return asyncio.run(main())


def test_a_download_reads_the_signed_manifest(package: bytes, key: Ed25519PrivateKey) -> None:
    got, partial = fetch(Files(package), trusted_keys=[key.public_key()], require_signature=True)
    assert not isinstance(got, FetchError), got
    assert got.id == "com.example.hello-package"  # type: ignore[attr-defined]
    assert [(c.id, c.version, c.env_type) for c in got.components] == [  # type: ignore[attr-defined]
        ("com.example.hello", "1.0.0", "archive")
    ]
    assert got.signer is not None  # type: ignore[attr-defined]
    assert partial.head is None  # the compressed prefix is dropped once the manifest is read


def test_a_cut_connection_resumes_with_range_and_if_range(package: bytes) -> None:
    files = Files(package)
    files.cuts = [len(package) // 3]
    got, partial = fetch(files)
    assert not isinstance(got, FetchError), got
    assert len(files.requests) == 2
    second = files.requests[1]
    assert second.headers["range"] == f"bytes={len(package) // 3}-"
    assert second.headers["if-range"] == files.etag
    assert (
        partial.offset == len(package) and partial.hasher.hexdigest() == hashlib.sha256(package).hexdigest()
    )


def test_a_resumed_partial_survives_between_calls(package: bytes) -> None:
    """What a power cut leaves (the .part): the next fetch asks only for the rest."""
    files = Files(package)
    files.cuts = [100]
    got, partial = fetch(files, retries=0)
    assert isinstance(got, FetchError) and got.result == ScomoResult.DOWNLOAD_FAILED and got.retryable
    assert partial.offset == 100
    got, partial = fetch(files, partial, retries=0)
    assert not isinstance(got, FetchError), got
    assert files.requests[-1].headers["range"] == "bytes=100-"


def test_a_wrong_hash_is_1402(package: bytes) -> None:
    got, _ = fetch(Files(package, etag='"' + "0" * 64 + '"'))
    assert isinstance(got, FetchError) and got.result == ScomoResult.DOWNLOAD_FAILED
    assert "SHA-256" in str(got)


def test_a_signature_by_an_unknown_key_is_1407(package: bytes) -> None:
    other = generate_key().public_key()
    got, _ = fetch(Files(package), trusted_keys=[other], require_signature=True)
    assert isinstance(got, FetchError) and got.result == ScomoResult.FAILED_PACKAGE_VALIDATION


def test_an_unsigned_package_is_1407_when_a_signature_is_required(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    build_package(EXAMPLES / "hello-package", tmp_path / "u.omp")
    unsigned = (tmp_path / "u.omp").read_bytes()
    got, _ = fetch(Files(unsigned), trusted_keys=[key.public_key()], require_signature=True)
    assert isinstance(got, FetchError) and got.result == ScomoResult.FAILED_PACKAGE_VALIDATION
    got, _ = fetch(Files(unsigned))
    assert not isinstance(got, FetchError)


def test_not_a_package_is_1407() -> None:
    got, _ = fetch(Files(b"<html>hello</html>"))
    assert isinstance(got, FetchError) and got.result == ScomoResult.FAILED_PACKAGE_VALIDATION


@pytest.mark.parametrize(
    ("status", "result"),
    [
        (404, ScomoResult.DOWNLOAD_FAILED),
        (403, ScomoResult.ALTERNATE_DOWNLOAD_AUTHENTICATION_FAILURE),
        (503, ScomoResult.ALTERNATE_DOWNLOAD_SERVER_ERROR),
    ],
)
def test_http_statuses_map_to_the_agents_result_codes(package: bytes, status: int, result: int) -> None:
    files = Files(package)
    files.status = status
    got, _ = fetch(files, retries=1)
    assert isinstance(got, FetchError) and got.result == result
    assert len(files.requests) == (2 if status == 503 else 1)  # only 5xx is retried


def test_an_unreachable_server_is_1501() -> None:
    async def main() -> FetchError:
        async with httpx.AsyncClient() as client:
            fetcher = PackageFetcher(client, retries=0)
            with pytest.raises(FetchError) as info:
                await fetcher.fetch("http://127.0.0.1:9/p.omp", Partial())
            return info.value

    assert asyncio.run(main()).result == ScomoResult.ALTERNATE_DOWNLOAD_SERVER_UNAVAILABLE


def test_the_head_is_read_only_when_it_is_there(package: bytes, key: Ed25519PrivateKey) -> None:
    keys = [key.public_key()]
    assert read_package_head(package[:20], keys, require_signature=True, complete=False) is None
    with pytest.raises(FetchError):
        read_package_head(package[:20], keys, require_signature=True, complete=True)
    assert read_package_head(package, keys, require_signature=True, complete=True) is not None
