"""The base exception of the management tree.

Every failure in ``omadm.tree`` is a ``TreeError`` that carries the DM status code to
answer the command with (``omadm.protocol.codes.StatusCode``), so the layer that builds
the Status never has to guess a code from a message text::

    TreeError                 (status chosen by whoever raises it)
    ├── uri.InvalidURI        400; 414 for a DevDetail/URI limit; 406 for an unknown ?list=
    ├── acl.InvalidACL        400
    └── tnds.InvalidTNDS      400; 415 for an unsupported TNDS version or Format; 413 too large
"""

from __future__ import annotations

__all__ = ["TreeError"]


class TreeError(Exception):
    """A tree operation failed; ``status`` is the DM status code that says why."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = int(status)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status})"
