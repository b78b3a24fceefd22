"""The SyncML DM 1.2 protocol core: messages, codecs, authentication, Package #0, sessions.

Sans-IO: nothing here opens a socket or a file, sleeps or reads a clock. The names below
are the public surface; the modules hold the details (``omadm.protocol.session`` and so on).
"""

from .codec import Encoding, decode, encode
from .codes import AlertCode, AuthType, ScomoResult, StatusCode
from .errors import (
    LocalProtocolError,
    MalformedMessage,
    ProtocolError,
    RemoteProtocolError,
    UnsupportedElement,
)
from .session import (
    ClientConfig,
    ClientSession,
    CommandHandler,
    Credentials,
    Outcome,
    Outgoing,
    ServerConfig,
    ServerSession,
    State,
)

__all__ = [
    "AlertCode",
    "AuthType",
    "ClientConfig",
    "ClientSession",
    "CommandHandler",
    "Credentials",
    "Encoding",
    "LocalProtocolError",
    "MalformedMessage",
    "Outcome",
    "Outgoing",
    "ProtocolError",
    "RemoteProtocolError",
    "ScomoResult",
    "ServerConfig",
    "ServerSession",
    "State",
    "StatusCode",
    "UnsupportedElement",
    "decode",
    "encode",
]
