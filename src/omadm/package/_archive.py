"""Reading and writing the ``.omp`` container: a gzip-compressed tar, manifest first.

Both directions avoid the conveniences of :mod:`tarfile` on purpose:

* **Writing** sets every header field itself (mtime, uid/gid 0, empty owner names, mode
  0644/0755, regular files only, no directory entries) and writes the gzip header with a fixed
  mtime and no file name, so the same inputs give the same bytes on any machine.
* **Reading** goes through :class:`ArchiveReader`, which streams (``r|``: one pass, never
  seeks), counts every decompressed byte against a budget (a decompression bomb stops at the
  budget instead of filling memory or disk, even inside headers ``tarfile`` reads on its own),
  and turns every decoding failure into an :class:`IntegrityError`. It never extracts
  anything: callers read member data and decide where it goes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import struct
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, BinaryIO

from .errors import IntegrityError, PackageError
from .manifest import FileEntry

__all__ = [
    "CHUNK",
    "GZIP_MAGIC",
    "MANIFEST_NAME",
    "MAX_MANIFEST_BYTES",
    "SIGNATURE_NAME",
    "ArchiveReader",
    "atomic_output",
    "decoding",
    "describe_type",
    "fsync_directory",
    "is_regular",
    "write_archive",
]

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
GZIP_MAGIC = b"\x1f\x8b"
#: A manifest larger than this is refused before it is read (it would list ~50k files).
MAX_MANIFEST_BYTES = 8 << 20
CHUNK = 1 << 16
_COMPRESS_LEVEL = 9
_REGULAR_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE)
_TYPE_NAMES = {
    tarfile.SYMTYPE: "symbolic link",
    tarfile.LNKTYPE: "hard link",
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "FIFO",
    tarfile.CONTTYPE: "contiguous file",
    tarfile.GNUTYPE_SPARSE: "sparse file",
    tarfile.DIRTYPE: "directory",
}


def is_regular(member: tarfile.TarInfo) -> bool:
    """A plain regular file (not sparse, not contiguous, not a link)."""
    return member.type in _REGULAR_TYPES and not member.issparse()


def describe_type(member: tarfile.TarInfo) -> str:
    """What a member is, in words, for messages."""
    if member.issparse():
        return "sparse file"
    if is_regular(member):
        return "regular file"
    return _TYPE_NAMES.get(member.type, f"member of tar type {member.type!r}")


# --------------------------------------------------------------------------- writing


@contextmanager
def atomic_output(path: Path) -> Iterator[BinaryIO]:
    """A file that appears at ``path`` complete or not at all (temp file, fsync, rename).

    A reader (a web server handing out the package, a device picking it up) must never see a
    half-written archive, and a failed build must not destroy the previous good one.
    """
    path = Path(path)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fchmod(out.fileno(), 0o644)
            os.fsync(out.fileno())
        temp.replace(path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename or a new entry in ``directory`` durable (best effort where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on directories; the rename itself is done
    finally:
        os.close(fd)


class _CheckedSource(io.RawIOBase):
    """Feeds a payload file to ``tarfile`` while hashing it, to catch a file that changes under us.

    The manifest was written from a first pass over the files; if the bytes going into the
    archive differ from that pass, the archive would contradict its own (signed) manifest.
    """

    def __init__(self, source: IO[bytes], entry: FileEntry) -> None:
        super().__init__()
        self._source = source
        self._entry = entry
        self._hash = hashlib.sha256()
        self._count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self._source.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self._hash.update(data)
        self._count += n
        return n

    def check(self) -> None:
        if (
            self._source.read(1)
            or self._count != self._entry.size
            or self._hash.hexdigest() != self._entry.sha256
        ):
            raise PackageError(f"{self._entry.path} changed while the package was being written")


def _header(name: str, size: int, mode: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = mode
    info.mtime = mtime
    info.type = tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_archive(
    out: BinaryIO,
    *,
    manifest_bytes: bytes,
    signature: bytes | None,
    files: Iterable[tuple[FileEntry, IO[bytes]]],
    mtime: int,
) -> None:
    """Write the whole ``.omp`` stream: manifest.json, [manifest.sig], then the payload in order.

    ``files`` yields each entry with an open stream of its content; it is consumed lazily so
    only one payload file is open at a time.
    """
    with (
        gzip.GzipFile(filename="", mode="wb", compresslevel=_COMPRESS_LEVEL, fileobj=out, mtime=mtime) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        tar.addfile(_header(MANIFEST_NAME, len(manifest_bytes), 0o644, mtime), io.BytesIO(manifest_bytes))
        if signature is not None:
            tar.addfile(_header(SIGNATURE_NAME, len(signature), 0o644, mtime), io.BytesIO(signature))
        for entry, source in files:
            checked = _CheckedSource(source, entry)
            tar.addfile(_header(entry.path, entry.size, entry.mode, mtime), checked)
            checked.check()


# --------------------------------------------------------------------------- reading


class _Budget(io.RawIOBase):
    """The decompressed stream, refusing to produce more than ``limit`` bytes in total."""

    def __init__(self, inner: gzip.GzipFile, limit: int) -> None:
        super().__init__()
        self._inner = inner
        self.limit = limit
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        room = self.limit - self.consumed
        if room <= 0:
            raise IntegrityError(
                "the archive expands beyond what its manifest declares (refusing a decompression bomb)"
            )
        view = memoryview(buffer)[: min(len(buffer), room + 1)]
        n = self._inner.readinto(view)
        self.consumed += n
        if self.consumed > self.limit:
            raise IntegrityError(
                "the archive expands beyond what its manifest declares (refusing a decompression bomb)"
            )
        return n


@contextmanager
def decoding() -> Iterator[None]:
    """Every way gzip, zlib or tar can fail to decode becomes a 1407 with a readable reason."""
    try:
        yield
    except EOFError as exc:
        raise IntegrityError(f"the archive is truncated ({exc})") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise IntegrityError(f"the gzip stream is damaged ({exc})") from None
    except tarfile.TarError as exc:
        raise IntegrityError(f"the tar archive is damaged ({exc})") from None
    except (ValueError, IndexError, OverflowError, struct.error) as exc:
        # tarfile's header parsers (PAX records, GNU sparse maps, numeric fields) raise these
        # on some malformed input; from untrusted bytes they mean "damaged", not "bug".
        raise IntegrityError(f"the tar archive is damaged ({type(exc).__name__}: {exc})") from None


class ArchiveReader:
    """One streaming pass over an ``.omp`` file opened by the caller (no seeking, bounded output)."""

    def __init__(self, raw: BinaryIO, *, limit: int) -> None:
        self._gzip = gzip.GzipFile(fileobj=raw, mode="rb")
        self._budget = _Budget(self._gzip, limit)
        self._tar: tarfile.TarFile | None = None
        self._pending: tarfile.TarInfo | None = None

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
        self._gzip.close()

    @property
    def consumed(self) -> int:
        """Decompressed bytes read so far."""
        return self._budget.consumed

    def set_limit(self, limit: int) -> None:
        """Raise or lower the budget once the manifest says how much data to expect."""
        self._budget.limit = limit

    def next(self) -> tarfile.TarInfo | None:
        """The next member header, or ``None`` at the end of the archive."""
        if self._pending is not None:
            member, self._pending = self._pending, None
            return member
        with decoding():
            if self._tar is None:
                try:
                    self._tar = tarfile.open(fileobj=self._budget, mode="r|")  # noqa: SIM115 (closed in close())
                except tarfile.ReadError as exc:
                    raise IntegrityError(f"the gzip stream does not hold a tar archive ({exc})") from None
            return self._tar.next()

    def push_back(self, member: tarfile.TarInfo) -> None:
        """Return a member to the stream so the next ``next()`` gives it again."""
        self._pending = member

    def members(self) -> Iterator[tarfile.TarInfo]:
        while (member := self.next()) is not None:
            yield member

    def stream(self, member: tarfile.TarInfo, sink: Callable[[bytes], object] | None = None) -> str:
        """Read a member's data (exactly ``member.size`` bytes), feed it to ``sink``; its SHA-256 hex.

        The caller has already compared ``member.size`` with the manifest, so this never reads
        past what the manifest declares.
        """
        assert self._tar is not None
        digest = hashlib.sha256()
        remaining = member.size
        with decoding():
            data = self._tar.extractfile(member)
            if data is None:
                raise IntegrityError(f"member {member.name} has no data")
            with data:
                while remaining > 0:
                    chunk = data.read(min(CHUNK, remaining))
                    if not chunk:
                        raise IntegrityError(f"the archive is truncated inside {member.name}")
                    remaining -= len(chunk)
                    digest.update(chunk)
                    if sink is not None:
                        sink(chunk)
        return digest.hexdigest()

    def open_member(self, member: tarfile.TarInfo) -> IO[bytes]:
        """A stream of the current member's data that ends after ``member.size`` bytes."""
        assert self._tar is not None
        with decoding():
            data = self._tar.extractfile(member)
        if data is None:
            raise IntegrityError(f"member {member.name} has no data")
        return data

    def read_small(self, member: tarfile.TarInfo) -> bytes:
        """The data of a member already known to be small (manifest, signature)."""
        parts: list[bytes] = []
        self.stream(member, parts.append)
        return b"".join(parts)

    def finish(self) -> None:
        """Read to the end of the gzip stream: checks its CRC and length, refuses data after the tar."""
        with decoding():
            while True:
                chunk = self._budget.read(CHUNK)
                if not chunk:
                    return
                if chunk.count(0) != len(chunk):
                    raise IntegrityError("the archive has data after the end of the tar archive")
