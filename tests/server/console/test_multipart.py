"""The streaming multipart/form-data reader of the upload form: the same parts whatever the
chunking (a boundary split across chunks included), and clear refusals of broken bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from omadm.server.console.multipart import MultipartError, MultipartReader, boundary_of

pytestmark = pytest.mark.anyio

BOUNDARY = "----WebKitFormBoundaryx7Hq"
FILE = bytes(range(256)) * 40 + b"\r\n--" + b"----WebKitFormBoundary"  # a boundary's start inside
BODY = (
    b"preamble to skip\r\n"
    + f"--{BOUNDARY}\r\n".encode()
    + b'Content-Disposition: form-data; name="csrf"\r\n\r\n'
    + b"abc123\r\n"
    + f"--{BOUNDARY}\r\n".encode()
    + b'Content-Disposition: form-data; name="package"; filename="h\xc3\xa9llo.omp"\r\n'
    + b"Content-Type: application/octet-stream\r\n\r\n"
    + FILE
    + f"\r\n--{BOUNDARY}--\r\nepilogue".encode()
)


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("size", [1, 7, 64, 100_000])
async def test_parts_are_the_same_whatever_the_chunks(size: int) -> None:
    reader = MultipartReader(chunked(BODY, size), BOUNDARY.encode())
    first = await reader.next_part()
    assert first is not None and (first.name, first.filename) == ("csrf", None)
    assert await reader.read(100) == b"abc123"
    second = await reader.next_part()
    assert second is not None and (second.name, second.filename) == ("package", "héllo.omp")
    assert second.content_type == "application/octet-stream"
    assert b"".join([chunk async for chunk in reader.chunks()]) == FILE
    assert await reader.next_part() is None
    assert await reader.next_part() is None


async def test_an_unread_part_is_skipped() -> None:
    reader = MultipartReader(chunked(BODY, 13), BOUNDARY.encode())
    assert (await reader.next_part()) is not None
    second = await reader.next_part()
    assert second is not None and second.name == "package"
    assert await reader.next_part() is None


async def test_broken_bodies_are_refused() -> None:
    cut = MultipartReader(chunked(BODY[: len(BODY) // 2], 50), BOUNDARY.encode())
    assert await cut.next_part() is not None
    assert await cut.next_part() is not None
    with pytest.raises(MultipartError, match="ends in the middle"):
        await cut.read(1 << 20)
    with pytest.raises(MultipartError, match="longer than 3 bytes"):
        reader = MultipartReader(chunked(BODY, 50), BOUNDARY.encode())
        await reader.next_part()
        await reader.read(3)
    with pytest.raises(MultipartError, match="does not start with its boundary"):
        await MultipartReader(chunked(b"x" * 40_000, 1000), BOUNDARY.encode()).next_part()
    no_name = f"--{BOUNDARY}\r\nContent-Disposition: attachment\r\n\r\nx\r\n--{BOUNDARY}--".encode()
    with pytest.raises(MultipartError, match="not a form-data field"):
        await MultipartReader(chunked(no_name, 10), BOUNDARY.encode()).next_part()


def test_the_boundary_comes_from_the_content_type() -> None:
    assert boundary_of(f"multipart/form-data; boundary={BOUNDARY}") == BOUNDARY.encode()
    assert boundary_of('multipart/form-data; boundary="a b"') == b"a b"
    for refused in ("application/x-www-form-urlencoded", "multipart/form-data", ""):
        with pytest.raises(MultipartError):
            boundary_of(refused)
