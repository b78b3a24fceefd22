"""The one exception hierarchy of the protocol core.

::

    ProtocolError                 (never raised itself)
    ├── LocalProtocolError        we tried to do something DM 1.2 forbids
    └── RemoteProtocolError       the peer sent something we cannot accept
        ├── MalformedMessage      bytes that are not a DM message (bad XML/WBXML, caps exceeded)
        └── UnsupportedElement    a well-formed message that uses an element DM does not use

Every error carries ``status_hint``: the DM status code to answer with when the error
is about one command or message (400 by default). Decoders raise only
``RemoteProtocolError`` subclasses; anything else escaping a decoder is a bug.
"""

from __future__ import annotations

__all__ = [
    "LocalProtocolError",
    "MalformedMessage",
    "ProtocolError",
    "RemoteProtocolError",
    "UnsupportedElement",
]


class ProtocolError(Exception):
    """Base class; catch this to catch every protocol failure."""

    def __init__(self, message: str, *, status_hint: int = 400) -> None:
        if type(self) is ProtocolError:
            raise TypeError("raise LocalProtocolError or RemoteProtocolError, not ProtocolError")
        super().__init__(message)
        self.status_hint = status_hint


class LocalProtocolError(ProtocolError):
    """We were asked to build or send something that DM 1.2 does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer's bytes or behaviour break DM 1.2 in a way we cannot tolerate."""


class MalformedMessage(RemoteProtocolError):
    """The input is not a decodable SyncML message (syntax, size or depth)."""


class UnsupportedElement(RemoteProtocolError):
    """A well-formed message uses an element that SyncML DM does not use (e.g. DS ``Sync``)."""
