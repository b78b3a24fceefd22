"""A typed model of the SyncML DM 1.2 elements that device management uses.

Every element is a frozen, slotted dataclass: a value that can be compared, hashed and
shared between threads, never mutated in place (use ``dataclasses.replace``).
Constructors refuse content that could not be serialized (wrong types, empty
identifiers), so a message that exists can always be encoded; DM *policy* (which
command may appear where) is the session's job, not the model's, because the decoders
must stay lenient about what peers send.

Identifiers (SessionID, MsgID, CmdID, MsgRef, CmdRef) are kept as the strings seen on
the wire: peers must echo them verbatim (pitfalls 15 and 18), and some servers use
non-numeric CmdIDs. Status and Alert codes are strings too (a peer may send ``0``);
``Status.code`` and ``Alert.code`` give the integer.

``Item.data`` is ``str`` for character data and ``bytes`` for binary data (WBXML
OPAQUE). Over XML, binary data travels as base64 text with ``Meta/Format`` ``b64``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

from ._pickling import speed_up_pickling
from .errors import LocalProtocolError

__all__ = [
    "Add",
    "Alert",
    "Anchor",
    "Atomic",
    "Chal",
    "Command",
    "Container",
    "Copy",
    "Cred",
    "Data",
    "Delete",
    "Exec",
    "Get",
    "Item",
    "ItemCommand",
    "Mem",
    "Message",
    "Meta",
    "Replace",
    "Results",
    "Sequence",
    "Source",
    "Status",
    "SyncHdr",
    "Target",
]

Data: TypeAlias = str | bytes


def _need(value: str, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise LocalProtocolError(f"{what} must be a non-empty string, got {value!r}")


def _optional_uint(value: int | None, what: str) -> None:
    if value is not None and (not isinstance(value, int) or value < 0):
        raise LocalProtocolError(f"{what} must be a non-negative integer, got {value!r}")


@dataclass(frozen=True, slots=True)
class Anchor:
    """MetInf ``Anchor`` (a SyncML DS notion, kept so that no MetInf field is lost)."""

    last: str | None = None
    next: str | None = None


@dataclass(frozen=True, slots=True)
class Mem:
    """MetInf ``Mem``: the receiver's free memory (rare in DM)."""

    shared_mem: bool = False
    free_mem: int | None = None
    free_id: int | None = None


@dataclass(frozen=True, slots=True)
class Meta:
    """MetInf children of ``Meta`` (namespace ``syncml:metinf``), in emit order.

    ``size`` is the size of the data *as transmitted* (pitfall 24); ``next_nonce`` is the
    base64 text from the wire; ``format`` is stored lower-case (pitfall 21).
    """

    format: str | None = None
    type: str | None = None
    mark: str | None = None
    size: int | None = None
    anchor: Anchor | None = None
    version: str | None = None
    next_nonce: str | None = None
    max_msg_size: int | None = None
    max_obj_size: int | None = None
    emi: tuple[str, ...] = ()
    mem: Mem | None = None
    field_level: bool = False

    def __post_init__(self) -> None:
        _optional_uint(self.size, "Meta/Size")
        _optional_uint(self.max_msg_size, "Meta/MaxMsgSize")
        _optional_uint(self.max_obj_size, "Meta/MaxObjSize")
        if not isinstance(self.emi, tuple):
            raise LocalProtocolError("Meta/EMI must be a tuple of strings")

    @property
    def is_empty(self) -> bool:
        return self == _EMPTY_META


_EMPTY_META = Meta()


@dataclass(frozen=True, slots=True)
class Target:
    """``Target``: the addressed URI (a full device URI or the server URL)."""

    loc_uri: str
    loc_name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.loc_uri, str):
            raise LocalProtocolError(f"LocURI must be a string, got {self.loc_uri!r}")


@dataclass(frozen=True, slots=True)
class Source:
    """``Source``: where the data or the message comes from."""

    loc_uri: str
    loc_name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.loc_uri, str):
            raise LocalProtocolError(f"LocURI must be a string, got {self.loc_uri!r}")


@dataclass(frozen=True, slots=True)
class Cred:
    """``Cred`` in a SyncHdr: ``meta.type`` names the scheme, ``data`` carries the credential."""

    data: str
    meta: Meta | None = None


@dataclass(frozen=True, slots=True)
class Chal:
    """``Chal`` in a Status: the scheme asked for, and for md5/MAC the next nonce."""

    meta: Meta


@dataclass(frozen=True, slots=True)
class Item:
    """``Item``: one target/source with optional data; ``more_data`` marks a non-last chunk."""

    target: Target | None = None
    source: Source | None = None
    meta: Meta | None = None
    data: Data | None = None
    more_data: bool = False

    def __post_init__(self) -> None:
        if self.data is not None and not isinstance(self.data, str | bytes):
            raise LocalProtocolError(f"Item/Data must be str or bytes, got {type(self.data).__name__}")


@dataclass(frozen=True, slots=True)
class SyncHdr:
    """``SyncHdr``: version, session and message identity, addressing, credentials, limits."""

    session_id: str
    msg_id: str
    target: Target
    source: Source
    ver_dtd: str = "1.2"
    ver_proto: str = "DM/1.2"
    resp_uri: str | None = None
    no_resp: bool = False
    cred: Cred | None = None
    meta: Meta | None = None

    def __post_init__(self) -> None:
        _need(self.session_id, "SyncHdr/SessionID")
        _need(self.msg_id, "SyncHdr/MsgID")


class Command:
    """Base of every element allowed in ``SyncBody`` (and inside Atomic/Sequence).

    ``name`` is the element name on the wire. Do not subclass outside this module.
    """

    __slots__ = ()
    name: str = ""
    cmd_id: str


def _check_cmd_id(cmd: Command) -> None:
    _need(cmd.cmd_id, f"{cmd.name}/CmdID")


@dataclass(frozen=True, slots=True)
class ItemCommand(Command):
    """Fields shared by Add, Replace, Copy, Delete, Get and Exec."""

    cmd_id: str
    items: tuple[Item, ...] = ()
    meta: Meta | None = None
    cred: Cred | None = None
    no_resp: bool = False

    def __post_init__(self) -> None:
        _check_cmd_id(self)
        if not isinstance(self.items, tuple):
            raise LocalProtocolError(f"{self.name}/Item must be a tuple of Item")


@dataclass(frozen=True, slots=True)
class Add(ItemCommand):
    name = "Add"


@dataclass(frozen=True, slots=True)
class Replace(ItemCommand):
    name = "Replace"


@dataclass(frozen=True, slots=True)
class Copy(ItemCommand):
    name = "Copy"


@dataclass(frozen=True, slots=True)
class Delete(ItemCommand):
    name = "Delete"
    archive: bool = False
    sft_del: bool = False


@dataclass(frozen=True, slots=True)
class Get(ItemCommand):
    name = "Get"
    lang: str | None = None


@dataclass(frozen=True, slots=True)
class Exec(ItemCommand):
    """``Exec``; ``correlator`` asks for the asynchronous outcome in a Generic Alert."""

    name = "Exec"
    correlator: str | None = None


@dataclass(frozen=True, slots=True)
class Alert(Command):
    """``Alert``: ``data`` is the alert code as sent (see ``AlertCode``)."""

    name = "Alert"
    cmd_id: str
    data: str | None = None
    items: tuple[Item, ...] = ()
    correlator: str | None = None
    cred: Cred | None = None
    no_resp: bool = False

    def __post_init__(self) -> None:
        _check_cmd_id(self)

    @property
    def code(self) -> int | None:
        """The alert code as an integer, or None when absent or not a number."""
        return _to_int(self.data)


@dataclass(frozen=True, slots=True)
class Container(Command):
    """Fields shared by Atomic and Sequence: commands nested inside one command."""

    cmd_id: str
    commands: tuple[Command, ...] = ()
    meta: Meta | None = None
    no_resp: bool = False

    def __post_init__(self) -> None:
        _check_cmd_id(self)
        if not isinstance(self.commands, tuple):
            raise LocalProtocolError(f"{self.name} commands must be a tuple")


@dataclass(frozen=True, slots=True)
class Atomic(Container):
    """``Atomic``: all-or-nothing container."""

    name = "Atomic"


@dataclass(frozen=True, slots=True)
class Sequence(Container):
    """``Sequence``: ordered container."""

    name = "Sequence"


@dataclass(frozen=True, slots=True)
class Status(Command):
    """``Status``: the outcome of one command (``cmd_ref`` ``0`` = the SyncHdr)."""

    name = "Status"
    cmd_id: str
    msg_ref: str
    cmd_ref: str
    cmd: str
    data: str
    target_refs: tuple[str, ...] = ()
    source_refs: tuple[str, ...] = ()
    cred: Cred | None = None
    chal: Chal | None = None
    items: tuple[Item, ...] = ()

    def __post_init__(self) -> None:
        _check_cmd_id(self)
        if not isinstance(self.data, str):
            raise LocalProtocolError(f"Status/Data must be a string code, got {self.data!r}")

    @property
    def code(self) -> int:
        """The status code as an integer (0 when the peer sent something unparsable)."""
        return _to_int(self.data) or 0


@dataclass(frozen=True, slots=True)
class Results(Command):
    """``Results``: the data asked for by a Get."""

    name = "Results"
    cmd_id: str
    cmd_ref: str
    msg_ref: str | None = None
    items: tuple[Item, ...] = ()
    meta: Meta | None = None
    target_ref: str | None = None
    source_ref: str | None = None

    def __post_init__(self) -> None:
        _check_cmd_id(self)


@dataclass(frozen=True, slots=True)
class Message:
    """One ``<SyncML>`` document: a header, the body's commands in order, and ``Final``."""

    header: SyncHdr
    commands: tuple[Command, ...] = field(default=())
    final: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.commands, tuple):
            raise LocalProtocolError("Message.commands must be a tuple")


def _to_int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


speed_up_pickling(list(globals().values()))  # sessions are pickled per message (snapshot)
