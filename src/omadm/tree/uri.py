"""DM URIs (OMA DM TND 1.2; digest section 7.1) and command targets with ``?prop=`` / ``?list=``.

A ``URI`` holds decoded node names; its canonical text (``URI.path``) always starts with
``./`` (``.`` for the root) and %-escapes every character outside the set libdmclient
accepts unescaped, so two spellings of one node (``A/B``, ``./A/B``, ``./%41/B``) give one
key in the tree store.

Parsing is lenient where the meaning is unambiguous and strict where it is not:

* accepted: ``A/B`` as ``./A/B``; ``./`` as the root; raw non-ASCII, spaces and ``#`` in
  names (re-escaped in the canonical form); lower-case hex in escapes;
* refused with 400: an empty URI, a leading ``/``, a trailing ``/``, empty segments,
  ``.`` or ``..`` segments (also when written ``%2E``), a ``/`` or control character in a
  decoded name, a bad ``%`` escape or escapes that are not UTF-8;
* refused with 414: a DevDetail/URI limit (MaxDepth, MaxTotLen, MaxSegLen).

``parse_target`` adds the suffixes ``?prop=<Name>`` and
``?list=Struct|StructData|TNDS[+Prop...|-Prop...]``; see ``parse_target`` for the codes.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property

from omadm.protocol.codes import StatusCode

from .errors import TreeError

__all__ = [
    "PROPERTY_NAMES",
    "ROOT",
    "TNDS_PROPERTIES",
    "UNLIMITED",
    "URI",
    "InvalidURI",
    "ListMode",
    "Target",
    "URILimits",
    "escape_segment",
    "join",
    "normalize_property",
    "parse_target",
    "parse_uri",
    "unescape_segment",
]


class InvalidURI(TreeError):
    """A URI or target string breaks the TND rules (400), a URI limit (414) or names an
    unsupported ``?list=`` form (406)."""

    def __init__(self, message: str, status: int = StatusCode.BAD_REQUEST) -> None:
        super().__init__(message, status)


#: Characters that stay unescaped in the canonical form. Digest 7.1: "libdmclient accepts
#: per segment: alnum, ``- _ . ! ~ * ' ( ) : @ & = + $ ,`` and ``%HH``". Everything else
#: (including ``%`` itself, spaces, ``#``, ``?`` and non-ASCII) is written as %HH of UTF-8.
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'():@&=+$,")
_HEX = frozenset("0123456789abcdefABCDEF")

#: The node properties of TND 1.2 (digest 7.4), in the order the spec lists them.
PROPERTY_NAMES: tuple[str, ...] = ("ACL", "Format", "Name", "Size", "Title", "TStamp", "Type", "VerNo")
#: What ``?list=TNDS+...`` / ``-...`` may name. Digest 7.6: "valid names: the RTProperties
#: names plus ``Value``".
TNDS_PROPERTIES: frozenset[str] = frozenset((*PROPERTY_NAMES, "Value"))
_TNDS_ORDER = (*PROPERTY_NAMES, "Value")
_PROPERTY_BY_LOWER = {name.lower(): name for name in _TNDS_ORDER}


def normalize_property(name: str) -> str | None:
    """The canonical spelling of a property name, matched case-insensitively (``acl`` ->
    ``ACL``), or None when it is not a TND property. ``Value`` counts (for TNDS lists)."""
    return _PROPERTY_BY_LOWER.get(name.lower())


# ---------------------------------------------------------------------------------------
# Segments


def _check_name(name: str) -> None:
    """Refuse a decoded node name that no URI can address.

    Digest 7.1: "a node name never contains ``/``"; "MUST NOT contain ``../``; ``./`` only as
    prefix" (so ``.`` and ``..`` are never names); libdmclient "rejects empty segments".
    Control characters and lone surrogates cannot travel in XML or UTF-8, so no peer can
    name such a node either.
    """
    if not isinstance(name, str):
        raise TypeError(f"a node name must be str, got {type(name).__name__}")
    if not name:
        raise InvalidURI("empty node name (a URI must not contain '//' or end with '/')")
    if name in (".", ".."):
        raise InvalidURI(f"{name!r} is not a node name ('./' is only allowed as the URI prefix, '..' never)")
    if "/" in name:
        raise InvalidURI(f"node name {name!r} contains '/', which only separates segments")
    for ch in name:
        if unicodedata.category(ch) in ("Cc", "Cs"):
            raise InvalidURI(f"node name {name!r} contains the control character U+{ord(ch):04X}")


def escape_segment(name: str) -> str:
    """The canonical text of one node name: safe characters as they are, the rest %HH.

    Digest 7.1: "UTF-8; reserved characters %-escaped (RFC 2396)". Raises ``InvalidURI``
    for a string that cannot be a node name (empty, ``.``, ``..``, contains ``/``).
    """
    _check_name(name)
    if all(ch in _SAFE for ch in name):
        return name
    out: list[str] = []
    for ch in name:
        if ch in _SAFE:
            out.append(ch)
        else:
            out.extend(f"%{byte:02X}" for byte in ch.encode("utf-8"))
    return "".join(out)


def unescape_segment(text: str) -> str:
    """Decode one segment as received (``%HH`` escapes of UTF-8) into a node name.

    Raises ``InvalidURI`` (400) for a bad escape, escapes that are not UTF-8, a raw ``?``
    (it starts a property suffix, never a name), or a decoded name that is not a name.
    """
    if "%" not in text:
        name = text
    else:
        raw = bytearray()
        i, n = 0, len(text)
        while i < n:
            ch = text[i]
            if ch == "%":
                pair = text[i + 1 : i + 3]
                if len(pair) != 2 or not all(c in _HEX for c in pair):
                    raise InvalidURI(f"bad %-escape {text[i : i + 3]!r} in segment {text!r} (need %HH)")
                raw.append(int(pair, 16))
                i += 3
            else:
                raw += ch.encode("utf-8", "surrogatepass")
                i += 1
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidURI(f"the %-escapes in segment {text!r} are not UTF-8") from None
    if "?" in text:
        raise InvalidURI(f"segment {text!r} contains '?', which starts a ?prop= or ?list= suffix")
    _check_name(name)
    return name


# ---------------------------------------------------------------------------------------
# URIs


@dataclass(frozen=True, repr=False)
class URI:
    """A node address: the decoded names from the root down (``()`` is the root ``.``).

    Names are case-preserved and compared case-sensitively (digest 7.1: "case of dynamic
    names must be preserved"). Construction checks every name, so a ``URI`` always has a
    valid canonical form.
    """

    segments: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Accept any iterable of names at run time (a list from a caller), store a tuple.
        object.__setattr__(self, "segments", tuple(self.segments))
        for name in self.segments:
            _check_name(name)

    @classmethod
    def _trusted(cls, segments: tuple[str, ...]) -> URI:
        """A URI from names already checked (a parent's, or freshly unescaped ones)."""
        uri = object.__new__(cls)
        object.__setattr__(uri, "segments", segments)
        return uri

    @cached_property
    def path(self) -> str:
        """Canonical text: ``.`` for the root, else ``./`` + escaped names joined by ``/``."""
        if not self.segments:
            return "."
        return "./" + "/".join(escape_segment(s) for s in self.segments)

    @property
    def parent(self) -> URI | None:
        """The parent node's URI; None for the root."""
        if not self.segments:
            return None
        return URI._trusted(self.segments[:-1])

    @property
    def name(self) -> str:
        """The decoded last name; ``.`` for the root (TND names the root ``.``)."""
        return self.segments[-1] if self.segments else "."

    @property
    def depth(self) -> int:
        """Number of names below the root (``.`` is 0, ``./A/B`` is 2): what MaxDepth limits."""
        return len(self.segments)

    @property
    def is_root(self) -> bool:
        return not self.segments

    def child(self, name: str) -> URI:
        """The URI of the child called ``name`` (a decoded name, not escaped text)."""
        _check_name(name)
        return URI._trusted((*self.segments, name))

    def resolve(self, relative: str) -> URI:
        """Append a relative URI text (escaped, ``/``-separated, e.g. a TNDS ``Path``).

        An empty text (or ``.``) gives ``self``; a leading ``./`` is tolerated.
        """
        if relative in ("", ".", "./"):
            return self
        return URI._trusted(self.segments + parse_uri(relative).segments)

    def is_ancestor_of(self, other: URI) -> bool:
        """True when ``other`` lies strictly below this node (a node is not its own ancestor)."""
        n = len(self.segments)
        return len(other.segments) > n and other.segments[:n] == self.segments

    def contains(self, other: URI) -> bool:
        """True when ``other`` is this node or lies below it (a sub-tree test)."""
        return other == self or self.is_ancestor_of(other)

    def relative_to(self, ancestor: URI) -> str:
        """This URI's escaped text relative to ``ancestor`` (``""`` when equal)."""
        if not ancestor.contains(self):
            raise ValueError(f"{self.path} is not under {ancestor.path}")
        return "/".join(escape_segment(s) for s in self.segments[len(ancestor.segments) :])

    def __str__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"URI({self.path!r})"


#: The root node ``.``.
ROOT = URI(())


def join(parent: URI, name: str) -> URI:
    """``parent.child(name)``: the URI of the decoded name ``name`` under ``parent``."""
    return parent.child(name)


# ---------------------------------------------------------------------------------------
# Limits


@dataclass(frozen=True)
class URILimits:
    """``./DevDetail/URI/MaxDepth``, ``MaxTotLen`` and ``MaxSegLen``; ``0`` = unlimited.

    Digest 7.1: "each is a 16-bit decimal string, ``0`` = unlimited. Violation -> 414."
    ``MaxDepth`` counts names below the root (``./A/B`` has depth 2), ``MaxTotLen`` the
    characters of the whole URI text as received including a ``?prop=``/``?list=``
    suffix, ``MaxSegLen`` the characters of one segment as received (escapes count as
    written). ``check`` applies the same limits to the canonical text of a ``URI`` the
    tree is about to create (e.g. a rename or a TNDS import).
    """

    max_depth: int = 0
    max_tot_len: int = 0
    max_seg_len: int = 0

    def __post_init__(self) -> None:
        for name in ("max_depth", "max_tot_len", "max_seg_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFF:
                raise ValueError(
                    f"URILimits.{name} must be an int in 0..65535 (0 = unlimited), got {value!r}"
                )

    @classmethod
    def from_devdetail(
        cls, max_depth: str = "0", max_tot_len: str = "0", max_seg_len: str = "0"
    ) -> URILimits:
        """Build from the three DevDetail leaf values (decimal strings). Raises ValueError."""
        return cls(int(max_depth.strip() or 0), int(max_tot_len.strip() or 0), int(max_seg_len.strip() or 0))

    @property
    def unlimited(self) -> bool:
        return not (self.max_depth or self.max_tot_len or self.max_seg_len)

    def check_text(self, text: str, segments: list[str] | tuple[str, ...]) -> None:
        """Check a URI as received: its whole text and its raw (escaped) segments."""
        if self.max_tot_len and len(text) > self.max_tot_len:
            raise InvalidURI(
                f"URI of {len(text)} characters exceeds MaxTotLen {self.max_tot_len}", StatusCode.URI_TOO_LONG
            )
        if self.max_depth and len(segments) > self.max_depth:
            raise InvalidURI(
                f"URI {text!r} has {len(segments)} segments, more than MaxDepth {self.max_depth}",
                StatusCode.URI_TOO_LONG,
            )
        if self.max_seg_len:
            for seg in segments:
                if len(seg) > self.max_seg_len:
                    raise InvalidURI(
                        f"segment {seg[:40]!r} of {len(seg)} characters exceeds MaxSegLen {self.max_seg_len}",
                        StatusCode.URI_TOO_LONG,
                    )

    def check(self, target: URI | Target) -> None:
        """Check the canonical text of a URI or target; raises ``InvalidURI`` (414)."""
        uri = target.uri if isinstance(target, Target) else target
        self.check_text(str(target), [escape_segment(s) for s in uri.segments])


#: No limits at all.
UNLIMITED = URILimits()


# ---------------------------------------------------------------------------------------
# Parsing


def _raw_segments(text: str) -> list[str]:
    """Split a URI text into its raw segments, enforcing the TND shape rules."""
    if not text:
        raise InvalidURI("empty URI (the root is '.')")
    if text in (".", "./"):
        # "./" is tolerated as the root: the digest says root = "." (never "./"), but
        # the intent is unambiguous and nothing else can be meant.
        return []
    if text.startswith("/"):
        raise InvalidURI(f"URI {text!r} starts with '/': DM URIs are relative to the root ('./A' or 'A')")
    body = text[2:] if text.startswith("./") else text
    if body.endswith("/"):
        # Digest 7.1: "MUST NOT end with /".
        raise InvalidURI(f"URI {text!r} ends with '/', which DM URIs must not do")
    raw = body.split("/")
    for seg in raw:
        if seg == "":
            raise InvalidURI(f"URI {text!r} has an empty segment ('//')")
        if seg in (".", ".."):
            raise InvalidURI(f"URI {text!r} has a {seg!r} segment ('./' is only allowed as the prefix)")
    return raw


def parse_uri(text: str, *, limits: URILimits | None = None) -> URI:
    """Parse a node URI (no ``?`` suffix; use ``parse_target`` for command targets).

    Raises ``InvalidURI``: 400 for syntax (naming the problem), 414 for a limit.
    """
    if not isinstance(text, str):
        raise TypeError(f"a URI must be str, got {type(text).__name__}")
    if limits is not None and limits.max_tot_len and len(text) > limits.max_tot_len:
        limits.check_text(text, ())  # raises 414 before doing any other work
    if "?" in text:
        raise InvalidURI(f"URI {text!r} has a '?' suffix; only a command target may carry ?prop= or ?list=")
    raw = _raw_segments(text)
    if limits is not None:
        limits.check_text(text, raw)
    return URI._trusted(tuple(unescape_segment(seg) for seg in raw))


class ListMode(StrEnum):
    """``?list=`` modes (digest 7.6)."""

    STRUCT = "Struct"
    STRUCT_DATA = "StructData"
    TNDS = "TNDS"


_LIST_MODES = {mode.value.lower(): mode for mode in ListMode}


@dataclass(frozen=True)
class Target:
    """A command target: a node URI plus at most one suffix.

    * ``prop``: the property of ``?prop=<Name>``; canonical spelling when it is a TND
      property in any case (``acl`` -> ``ACL``), else the text as received (the tree
      answers 406 for an unknown property, digest 7.4);
    * ``list_mode``: the mode of ``?list=``;
    * ``tnds_include`` / ``tnds_exclude``: the property selection of ``?list=TNDS+A+B``
      (only these) or ``?list=TNDS-A-B`` (all but these), canonical names from
      ``TNDS_PROPERTIES``; both None for a plain ``?list=TNDS``.
    """

    uri: URI
    prop: str | None = None
    list_mode: ListMode | None = None
    tnds_include: frozenset[str] | None = field(default=None)
    tnds_exclude: frozenset[str] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.prop is not None and self.list_mode is not None:
            raise ValueError("a target has either ?prop= or ?list=, not both")
        if (
            self.tnds_include is not None or self.tnds_exclude is not None
        ) and self.list_mode is not ListMode.TNDS:
            raise ValueError("a TNDS property selection needs list_mode TNDS")
        if self.tnds_include is not None and self.tnds_exclude is not None:
            raise ValueError("'+' and '-' property selections cannot be combined")
        for selection in (self.tnds_include, self.tnds_exclude):
            if selection is not None and not selection <= TNDS_PROPERTIES:
                raise ValueError(f"unknown TNDS properties {sorted(selection - TNDS_PROPERTIES)}")

    def tnds_selection(self, default: frozenset[str] = TNDS_PROPERTIES) -> frozenset[str]:
        """The TNDS properties to include: the ``+`` set, everything but the ``-`` set, or
        ``default`` for a plain ``?list=TNDS`` (the spec copy names no default; we give
        everything unless the caller says otherwise)."""
        if self.tnds_include is not None:
            return self.tnds_include
        if self.tnds_exclude is not None:
            return TNDS_PROPERTIES - self.tnds_exclude
        return default

    @property
    def text(self) -> str:
        """Canonical target text: ``uri.path`` plus the suffix."""
        if self.prop is not None:
            return f"{self.uri.path}?prop={self.prop}"
        if self.list_mode is None:
            return self.uri.path
        suffix = ""
        for sign, selection in (("+", self.tnds_include), ("-", self.tnds_exclude)):
            if selection is not None:
                suffix = "".join(sign + name for name in _TNDS_ORDER if name in selection)
        return f"{self.uri.path}?list={self.list_mode.value}{suffix}"

    def __str__(self) -> str:
        return self.text


def _parse_list(value: str, text: str) -> tuple[ListMode, frozenset[str] | None, frozenset[str] | None]:
    if not value:
        raise InvalidURI(f"empty ?list= in {text!r} (Struct, StructData or TNDS)")
    cut = min((i for i in (value.find("+"), value.find("-")) if i >= 0), default=len(value))
    mode_text, rest = value[:cut], value[cut:]
    mode = _LIST_MODES.get(mode_text.lower())
    if mode is None:
        # Digest 7.6: "Unsupported -> 406".
        raise InvalidURI(
            f"unsupported ?list={mode_text!r} in {text!r} (Struct, StructData or TNDS)",
            StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED,
        )
    if not rest:
        return mode, None, None
    if mode is not ListMode.TNDS:
        raise InvalidURI(
            f"a property selection ({rest!r}) is only defined for ?list=TNDS, not {mode.value}",
            StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED,
        )
    signs: set[str] = set()
    names: set[str] = set()
    i = 0
    while i < len(rest):
        sign = rest[i]
        j = i + 1
        while j < len(rest) and rest[j] not in "+-":
            j += 1
        word = rest[i + 1 : j]
        if not word:
            raise InvalidURI(f"empty property name after {sign!r} in {text!r}")
        canonical = normalize_property(word)
        if canonical is None:
            raise InvalidURI(
                f"unknown TNDS property {word!r} in {text!r} (valid: {', '.join(_TNDS_ORDER)})",
                StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED,
            )
        signs.add(sign)
        names.add(canonical)
        i = j
    if len(signs) > 1:
        # Digest 7.6: "+ and - not combinable".
        raise InvalidURI(f"'+' and '-' property selections cannot be combined in {text!r}")
    selection = frozenset(names)
    return (mode, selection, None) if signs == {"+"} else (mode, None, selection)


def parse_target(text: str, *, limits: URILimits | None = None) -> Target:
    """Parse a command target: a URI with an optional ``?prop=`` or ``?list=`` suffix.

    Status codes of the ``InvalidURI`` it raises:

    * 414: a limit (MaxTotLen counts the suffix too);
    * 400: bad URI syntax; an empty suffix, a suffix without ``=``, an empty property
      name, several parameters (``?prop=A&list=B``), or ``+`` combined with ``-``;
    * 406: an unknown list mode, an unknown TNDS property name, a selection on
      Struct/StructData, or a parameter other than ``prop``/``list``.

    The suffix is not %-decoded: property names and list modes are plain ASCII tokens.
    Keys, modes and TNDS property names match case-insensitively.
    """
    if not isinstance(text, str):
        raise TypeError(f"a target must be str, got {type(text).__name__}")
    if limits is not None and limits.max_tot_len and len(text) > limits.max_tot_len:
        limits.check_text(text, ())
    base, sep, query = text.partition("?")
    raw = _raw_segments(base)
    if limits is not None:
        limits.check_text(text, raw)
    uri = URI._trusted(tuple(unescape_segment(seg) for seg in raw))
    if not sep:
        return Target(uri)
    key, eq, value = query.partition("=")
    if not eq:
        raise InvalidURI(f"suffix {'?' + query!r} of {text!r} is not ?prop=<Name> or ?list=<Mode>")
    if "&" in value or "?" in value:
        raise InvalidURI(f"{text!r} carries more than one parameter; use one ?prop= or ?list=")
    key = key.lower()
    if key == "prop":
        if not value:
            raise InvalidURI(f"empty property name in {text!r}")
        return Target(uri, prop=normalize_property(value) or value)
    if key == "list":
        mode, include, exclude = _parse_list(value, text)
        return Target(uri, list_mode=mode, tnds_include=include, tnds_exclude=exclude)
    raise InvalidURI(
        f"unsupported URI parameter {key!r} in {text!r} (only ?prop= and ?list=)",
        StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED,
    )
