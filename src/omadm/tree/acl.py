"""Node ACLs (OMA DM TND 1.2; digest section 7.5): grammar, canonical text, checks, inheritance.

An ``ACL`` maps the five ACL commands to the ServerIDs they are granted to; ``*`` grants a
command to every server. The empty ACL is not "nobody": it means "inherit from the nearest
ancestor with a non-empty ACL" (``effective_acl``), and the root's ACL is never empty.

Parsing is strict about the grammar but lenient about case and duplicates:

* command names match in any case and are written back canonically (``get=*`` -> ``Get=*``);
* a command listed twice (``Get=a&Get=b``) is merged (``Get=a+b``): the meaning is clear;
* ``*`` next to ids (``Get=a+*``) normalizes to ``Get=*`` (digest: "if ``*`` is present for a
  command, other ids for that command are overridden");
* surrounding white space and trailing NULs of the whole text are dropped (pitfall 35:
  "tolerate trailing ``\\0`` in received strings"), but white space inside is an error;
* everything else that breaks the grammar (``Get=``, ``Foo=x``, ``Get=a b``, ``Get``,
  ``Get=*&``, ``Get=a++b``) raises ``InvalidACL`` with status 400.

The canonical text orders commands Add, Delete, Exec, Get, Replace and sorts ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from omadm.protocol.codes import StatusCode

from .errors import TreeError

__all__ = [
    "ACL",
    "ANY",
    "COMMANDS",
    "ROOT_DEFAULT_ACL",
    "InvalidACL",
    "check_server_id",
    "effective_acl",
    "normalize_command",
    "parse_acl",
]

#: The commands an ACL can grant, in canonical order (digest 7.5 grammar:
#: ``command = "Add" | "Delete" | "Exec" | "Get" | "Replace"``). Copy has no entry: it
#: needs Get on the source and Add or Replace on the target, which the tree checks.
COMMANDS: tuple[str, ...] = ("Add", "Delete", "Exec", "Get", "Replace")
#: The server id that stands for every server.
ANY = "*"

_BY_LOWER = {name.lower(): name for name in COMMANDS}
_FORBIDDEN_IN_ID = frozenset("=&*+")


class InvalidACL(TreeError):
    """An ACL text or value breaks the grammar of digest 7.5 (status 400)."""

    def __init__(self, message: str, status: int = StatusCode.BAD_REQUEST) -> None:
        super().__init__(message, status)


def normalize_command(name: str) -> str:
    """The canonical ACL command for ``name`` in any case; ``InvalidACL`` for anything else
    (including ``Copy``, which has no ACL entry)."""
    canonical = _BY_LOWER.get(name.lower())
    if canonical is None:
        raise InvalidACL(f"{name!r} is not an ACL command ({', '.join(COMMANDS)})")
    return canonical


def check_server_id(server_id: str) -> None:
    """Refuse a ServerID the ACL grammar cannot carry.

    Digest 7.5: ``server-id = 1*(printable chars except "=", "&", "*", "+" and white space)``.
    """
    if not server_id:
        raise InvalidACL("empty server id")
    for ch in server_id:
        if ch in _FORBIDDEN_IN_ID or ch.isspace() or not ch.isprintable():
            raise InvalidACL(f"server id {server_id!r} contains {ch!r}, which the ACL grammar does not allow")


def _normalize_ids(command: str, ids: Iterable[str]) -> frozenset[str]:
    if isinstance(ids, str):
        raise TypeError(f"the ids of {command} must be a collection of str, not one str")
    out = frozenset(ids)
    if ANY in out:
        # Digest 7.5: "if * is present for a command, other ids for that command are overridden".
        return frozenset((ANY,))
    for sid in out:
        check_server_id(sid)
    return out


def _empty_entries() -> Mapping[str, frozenset[str]]:
    return MappingProxyType({})


@dataclass(frozen=True)
class ACL:
    """An immutable, normalized ACL: command -> ServerIDs (``{"*"}`` = any server).

    Build one with ``parse_acl(text)`` or ``ACL.from_entries({"Get": ["*"]})``; the
    constructor normalizes too (canonical command names and order, ``*`` wins, commands
    without ids dropped) and raises ``InvalidACL`` for bad commands or ids.
    """

    entries: Mapping[str, frozenset[str]] = field(default_factory=_empty_entries)

    def __post_init__(self) -> None:
        merged: dict[str, frozenset[str]] = {}
        for command, given in self.entries.items():
            canonical = normalize_command(command)
            merged[canonical] = merged.get(canonical, frozenset()) | _normalize_ids(canonical, given)
        ordered: dict[str, frozenset[str]] = {}
        for command in COMMANDS:
            ids = merged.get(command, frozenset())
            if ids:
                ordered[command] = frozenset((ANY,)) if ANY in ids else ids
        object.__setattr__(self, "entries", MappingProxyType(ordered))

    def __hash__(self) -> int:
        return hash(tuple(self.entries.items()))

    @classmethod
    def from_entries(cls, entries: Mapping[str, Iterable[str]]) -> ACL:
        """An ACL from any command -> ids mapping (lists, sets, tuples of ids)."""
        return cls({command: _normalize_ids(command, ids) for command, ids in entries.items()})

    @property
    def is_empty(self) -> bool:
        """True for the empty ACL, which means "inherit" (digest 7.5)."""
        return not self.entries

    @property
    def commands(self) -> tuple[str, ...]:
        """The commands granted to anyone, in canonical order."""
        return tuple(self.entries)

    def servers(self, command: str) -> frozenset[str]:
        """The ids ``command`` is granted to (``{"*"}`` for any server, empty for none)."""
        return self.entries.get(normalize_command(command), frozenset())

    def allows(self, command: str, server_id: str) -> bool:
        """Whether this ACL grants ``command`` to ``server_id``.

        Checks this ACL only: call it on ``effective_acl(...)``, since an empty ACL grants
        nothing by itself (it defers to an ancestor).
        """
        ids = self.entries.get(normalize_command(command))
        if not ids:
            return False
        return ANY in ids or server_id in ids

    def with_granted(self, command: str, server_id: str) -> ACL:
        """A copy that also grants ``command`` to ``server_id`` (``*`` for everyone)."""
        canonical = normalize_command(command)
        entries = dict(self.entries)
        entries[canonical] = entries.get(canonical, frozenset()) | {server_id}
        return ACL(entries)

    def grant_all_to(self, server_id: str, commands: Iterable[str] = COMMANDS) -> ACL:
        """A copy that grants every command in ``commands`` to ``server_id``.

        E.g. the automatic ACL of digest 7.5 for an interior node added without Replace
        on the parent: ``ACL().grant_all_to(sid, ("Add", "Delete", "Replace"))``.
        """
        entries = dict(self.entries)
        for command in commands:
            canonical = normalize_command(command)
            entries[canonical] = entries.get(canonical, frozenset()) | {server_id}
        return ACL(entries)

    def without_server(self, server_id: str, *, fill_emptied_with_any: bool = False) -> ACL:
        """A copy with ``server_id`` removed from every command.

        Digest 7.5: "Deleting a ServerID: remove it from every ACL; drop commands left
        without ids; root commands left empty become ``*``" — pass
        ``fill_emptied_with_any=True`` for the root. ``*`` entries are kept (removing one
        server does not revoke a grant to everyone) unless ``server_id`` is ``*`` itself.
        """
        entries: dict[str, frozenset[str]] = {}
        for command, ids in self.entries.items():
            left = ids - {server_id}
            if left:
                entries[command] = left
            elif fill_emptied_with_any:
                entries[command] = frozenset((ANY,))
        return ACL(entries)

    def format(self) -> str:
        """Canonical text, e.g. ``Add=a+b&Get=*``; ``""`` for the empty ACL."""
        return "&".join(f"{command}={'+'.join(sorted(ids))}" for command, ids in self.entries.items())

    def __str__(self) -> str:
        return self.format()

    def __repr__(self) -> str:
        return f"ACL({self.format()!r})"


#: The root's ACL when nothing else is configured (digest 7.5: "Root ACL default
#: ``Add=*&Get=*``"). The root's ACL must never be empty.
ROOT_DEFAULT_ACL = ACL(MappingProxyType({"Add": frozenset((ANY,)), "Get": frozenset((ANY,))}))


def parse_acl(text: str) -> ACL:
    """Parse the ACL property text (grammar of digest 7.5); ``""`` gives the empty ACL.

    ::

        acl       = "" | entry *("&" entry)
        entry     = command "=" servers
        servers   = server-id *("+" server-id) | "*"
        command   = "Add" | "Delete" | "Exec" | "Get" | "Replace"

    Raises ``InvalidACL`` (400) naming the offending entry.
    """
    if not isinstance(text, str):
        raise TypeError(f"an ACL must be str, got {type(text).__name__}")
    body = text.strip().rstrip("\x00").strip()
    if not body:
        return ACL()
    merged: dict[str, set[str]] = {}
    for entry in body.split("&"):
        if not entry:
            raise InvalidACL(f"empty entry in ACL {text!r} (a stray '&')")
        command, eq, servers = entry.partition("=")
        if not eq:
            raise InvalidACL(f"ACL entry {entry!r} has no '=' (need Command=ServerID)")
        canonical = _BY_LOWER.get(command.lower())
        if canonical is None:
            raise InvalidACL(
                f"ACL entry {entry!r}: {command!r} is not an ACL command ({', '.join(COMMANDS)})"
            )
        if not servers:
            # Digest 7.5: "A command with no server ids must not appear (Get= is malformed)."
            raise InvalidACL(f"ACL entry {entry!r} grants {canonical} to no server")
        ids = merged.setdefault(canonical, set())
        for sid in servers.split("+"):
            if sid == ANY:
                ids.add(ANY)
                continue
            try:
                check_server_id(sid)
            except InvalidACL as exc:
                raise InvalidACL(f"ACL entry {entry!r}: {exc.message}") from None
            ids.add(sid)
    return ACL({command: frozenset(ids) for command, ids in merged.items()})


def effective_acl(path_acls: Sequence[ACL]) -> ACL:
    """The ACL that governs a node, given the ACLs from the node up to the root.

    Digest 7.5: "Inheritance: only when the node's ACL is completely empty; then walk up to
    the nearest ancestor with a non-empty ACL (root always has one). No per-command
    merging." If every ACL in the chain is empty (a store that broke the root rule), the
    root default applies.
    """
    for acl in path_acls:
        if not acl.is_empty:
            return acl
    return ROOT_DEFAULT_ACL
