"""The agent's transport against a rogue DM server: a reply is bounded before it is in memory.

The server here is a raw socket on 127.0.0.1 that says what it likes and counts how many
body bytes it managed to push before the agent hung up. Before the fix the agent read the
whole body (``response.content``) first, so an endless reply grew without bound (3.6 GiB
seen in issue 13); these tests give the rogue a budget of 64 MiB so that the old code
fails them quickly instead of exhausting the machine.
"""

from __future__ import annotations

import gzip
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from omadm.agent.config import AgentConfig, DeviceConfig
from omadm.agent.transport import HTTPTransport, TransportError, reply_limit

DM_TYPE = "application/vnd.syncml.dm+xml"
#: What the rogue may send in all; a bounded agent stops it long before.
BUDGET = 64 * 1024 * 1024
#: What a bounded agent lets through: its limit plus what the two sockets' buffers hold.
BOUNDED = 32 * 1024 * 1024
_PIECE = 64 * 1024


class RogueServer:
    """Answers one POST with ``head`` then ``body()``'s pieces until the client hangs up.

    ``sent`` counts the body bytes that went out; ``request_head`` is what the client sent
    (lower-cased). The server gives up (closing the connection) after ``BUDGET`` bytes.
    """

    def __init__(self, head: bytes, body: Callable[[], Iterator[bytes]]) -> None:
        self.head = head
        self.body = body
        self.sent = 0
        self.request_head = b""
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(5)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/dm"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            try:
                self._read_request(conn)
                conn.sendall(self.head)
                for piece in self.body():
                    if self.sent >= BUDGET:
                        break
                    conn.sendall(piece)
                    self.sent += len(piece)
            except OSError:
                pass  # the agent hung up: what we want

    def _read_request(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(4096)
        head, _, rest = data.partition(b"\r\n\r\n")
        self.request_head = head.lower()
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in self.request_head.split(b"\r\n")
                if line.startswith(b"content-length:")
            ),
            0,
        )
        while len(rest) < length:
            rest += conn.recv(4096)

    def finish(self) -> int:
        """Wait for the server to stop; the body bytes it sent."""
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the rogue server is still sending"
        self._listener.close()
        return self.sent


def endless_chunks() -> Iterator[bytes]:
    piece = b"%x\r\n" % _PIECE + b"<" * _PIECE + b"\r\n"
    while True:
        yield piece


def endless_bytes() -> Iterator[bytes]:
    piece = b"<" * _PIECE
    while True:
        yield piece


def transport(tmp_path: Path, *, max_obj_size: int = 4 * 1024 * 1024) -> HTTPTransport:
    config = AgentConfig(
        device=DeviceConfig(id="dev"), data_dir=tmp_path, retries=0, timeout=5, max_obj_size=max_obj_size
    )
    return HTTPTransport(config, sleep=lambda seconds: None)


def post(agent: HTTPTransport, url: str) -> bytes:
    return agent.post(url, b"<SyncML/>", DM_TYPE, {}).body


def test_the_reply_limit_is_a_message_plus_a_base64_object_plus_slack(tmp_path: Path) -> None:
    assert reply_limit(16384, 4 * 1024 * 1024) == 16384 + 5592406 + 65536  # about 5.4 MiB
    assert transport(tmp_path, max_obj_size=3000).reply_limit == 16384 + 4000 + 65536


def test_an_endless_chunked_reply_is_refused_at_the_limit_without_reading_on(tmp_path: Path) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: " + DM_TYPE.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    rogue = RogueServer(head, endless_chunks)
    agent = transport(tmp_path, max_obj_size=64 * 1024)
    with pytest.raises(TransportError, match=rf"more than {agent.reply_limit} bytes") as caught:
        post(agent, rogue.url)
    assert not caught.value.retryable  # asking again would get the same answer
    assert "max_msg_size" in str(caught.value)
    assert rogue.finish() < BOUNDED


def test_an_endless_reply_with_the_default_limits_stays_bounded(tmp_path: Path) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: " + DM_TYPE.encode() + b"\r\nConnection: close\r\n\r\n"
    rogue = RogueServer(head, endless_bytes)  # close-delimited: no length, no chunks
    agent = transport(tmp_path)
    with pytest.raises(TransportError, match="more than 5674326 bytes") as caught:
        post(agent, rogue.url)
    assert not caught.value.retryable
    assert rogue.finish() < BOUNDED


def test_a_huge_content_length_is_refused_before_the_body(tmp_path: Path) -> None:
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: " + DM_TYPE.encode() + b"\r\nContent-Length: 10737418240\r\n\r\n"
    )
    rogue = RogueServer(head, endless_bytes)
    agent = transport(tmp_path)
    with pytest.raises(TransportError, match=r"announced a reply of 10737418240 bytes") as caught:
        post(agent, rogue.url)
    assert not caught.value.retryable
    assert rogue.finish() < BOUNDED


def test_a_compressed_bomb_is_refused_without_expanding(tmp_path: Path) -> None:
    bomb = gzip.compress(b"\0" * BUDGET, compresslevel=9)  # 64 MiB in about 64 KiB
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: " + DM_TYPE.encode() + b"\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: %d\r\n\r\n" % len(bomb)
    )
    rogue = RogueServer(head, lambda: iter([bomb]))
    agent = transport(tmp_path)
    with pytest.raises(TransportError, match=rf"more than {agent.reply_limit} bytes") as caught:
        post(agent, rogue.url)
    assert not caught.value.retryable
    rogue.finish()
    assert b"accept-encoding: identity" in rogue.request_head  # compression is not asked for


def test_a_compressed_reply_within_the_limit_is_decoded(tmp_path: Path) -> None:
    document = b"<SyncML>" + b"<Status/>" * 1000 + b"</SyncML>"
    packed = gzip.compress(document)
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: " + DM_TYPE.encode() + b"\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: %d\r\n\r\n" % len(packed)
    )
    rogue = RogueServer(head, lambda: iter([packed]))
    assert post(transport(tmp_path), rogue.url) == document
    rogue.finish()


def test_an_unsplit_large_object_over_max_msg_size_is_still_accepted(tmp_path: Path) -> None:
    """Lenient by design: a server that does not split a large object is not cut off."""
    document = b"<SyncML>" + b"A" * 200_000 + b"</SyncML>"  # twelve times MaxMsgSize
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: "
        + DM_TYPE.encode()
        + b"\r\nContent-Length: %d\r\n\r\n" % len(document)
    )
    rogue = RogueServer(head, lambda: iter([document]))
    assert post(transport(tmp_path), rogue.url) == document
    assert rogue.finish() == len(document)
