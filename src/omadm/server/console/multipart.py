"""A streaming reader of ``multipart/form-data``: the console's package upload form.

A browser can only send a file from a form as ``multipart/form-data``, while the packages API
takes the package as the raw body. The console sits between the two, and a package can be
large: this reader hands the file part on as it arrives, chunk by chunk, so that the console
never holds a whole package in memory nor writes it anywhere (the API spools it once, as it
does for ``omadm ctl``). Parsing the whole body at once (``email``, ``cgi``) would buffer it;
Starlette's own ``request.form()`` needs ``python-multipart``, a dependency the server does
not otherwise have for a form with one file and two small fields.

Only what browsers send is read (RFC 7578): parts separated by ``--boundary`` lines, each
with a ``Content-Disposition: form-data; name=...`` header. Fields come in the form's order,
which is what lets the console check the CSRF field before it passes any file byte on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser

__all__ = ["MultipartError", "MultipartReader", "Part", "boundary_of"]

#: A part's header block: a few short lines in practice; past this the body is not a form.
MAX_HEADERS = 16 * 1024
#: Bytes before the first boundary (a preamble) that are skipped before giving up.
MAX_PREAMBLE = 16 * 1024


class MultipartError(ValueError):
    """The body is not the ``multipart/form-data`` its Content-Type announced."""


def boundary_of(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type; :class:`MultipartError` if none."""
    header = Message()
    header["content-type"] = content_type
    if header.get_content_type() != "multipart/form-data":
        raise MultipartError(f"the form must be sent as multipart/form-data, not {content_type or 'nothing'}")
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not 1 <= len(boundary) <= 70:
        raise MultipartError("the multipart/form-data body has no usable boundary")
    return boundary.encode("latin-1", "replace")


@dataclass(frozen=True)
class Part:
    """One form field: its name, and the file name the browser gave (``None``: not a file)."""

    name: str
    filename: str | None
    content_type: str


class MultipartReader:
    """The parts of one body, in order: :meth:`next_part`, then the part's data.

    The data of the current part is read with :meth:`read` (a small field, whole) or
    :meth:`chunks` (a file, as it arrives); :meth:`next_part` skips whatever of it is left.
    """

    def __init__(self, stream: AsyncIterator[bytes], boundary: bytes) -> None:
        self._stream = stream
        self._delimiter = b"\r\n--" + boundary
        # The first boundary line has no CRLF before it: pretend it had, so that every
        # boundary is found by the same search.
        self._buffer = bytearray(b"\r\n")
        self._in_data = False
        self._done = False

    async def _fill(self) -> bool:
        """Read the next piece of the body; ``False`` at its end."""
        async for chunk in self._stream:
            if chunk:
                self._buffer += chunk
                return True
        return False

    async def _need(self, size: int) -> None:
        while len(self._buffer) < size:
            if not await self._fill():
                raise MultipartError("the form's body ends in the middle of a part")

    async def next_part(self) -> Part | None:
        """The next part's headers; ``None`` after the last part."""
        if self._done:
            return None
        if self._in_data:
            async for _ in self.chunks():
                pass
        else:
            await self._skip_preamble()
        # At a delimiter: "--" after it ends the body, else a CRLF starts the part's headers.
        await self._need(len(self._delimiter) + 2)
        del self._buffer[: len(self._delimiter)]
        if self._buffer[:2] == b"--":
            self._done = True
            return None
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            if len(self._buffer) > MAX_HEADERS:
                raise MultipartError("a part of the form has headers too long to be a form field")
            await self._need(len(self._buffer) + 1)
        block = bytes(self._buffer[:end]).lstrip(b" \t").removeprefix(b"\r\n")
        del self._buffer[: end + 4]
        self._in_data = True
        return self._part(block.decode("utf-8", "replace"))

    async def _skip_preamble(self) -> None:
        while (start := self._buffer.find(self._delimiter)) < 0:
            if len(self._buffer) > MAX_PREAMBLE:
                raise MultipartError("the form's body does not start with its boundary")
            await self._need(len(self._buffer) + 1)
        del self._buffer[:start]

    @staticmethod
    def _part(block: str) -> Part:
        headers = HeaderParser().parsestr(block)
        name = headers.get_param("name", header="content-disposition")
        if headers.get_content_disposition() != "form-data" or not isinstance(name, str):
            raise MultipartError("a part of the form is not a form-data field with a name")
        filename = headers.get_filename()
        return Part(name, filename, headers.get_content_type())

    async def chunks(self) -> AsyncIterator[bytes]:
        """The current part's data, as it arrives, up to the next boundary."""
        if not self._in_data:
            return
        keep = len(self._delimiter) - 1  # a tail that may be the start of the delimiter
        while (end := self._buffer.find(self._delimiter)) < 0:
            if len(self._buffer) > keep:
                data = bytes(self._buffer[:-keep])
                del self._buffer[:-keep]
                yield data
            if not await self._fill():
                raise MultipartError("the form's body ends in the middle of a part")
        self._in_data = False
        if end:
            data = bytes(self._buffer[:end])
            del self._buffer[:end]
            yield data

    async def read(self, limit: int) -> bytes:
        """The current part's data whole; :class:`MultipartError` past ``limit`` bytes."""
        out = bytearray()
        async for chunk in self.chunks():
            out += chunk
            if len(out) > limit:
                raise MultipartError(f"a field of the form is longer than {limit} bytes")
        return bytes(out)
