"""InstallParams: the grammar omadm gives the SCOMO leaf, and the one setting the device reads from it.

SCOMO leaves ``Download/<X>/InstallParams`` and ``Inventory/Delivered/<X>/InstallParams``
undefined ("opaque install parameters handed to the installer", SCOMO digest 2.2/2.3). The
device reads one setting from them itself, ``allow-downgrade``, and so must parse them:
looking for the substring ``allow-downgrade`` let ``no-allow-downgrade`` allow a downgrade
(issue 13, point 7). The grammar (names case-insensitive)::

    params    = *sep [ token *( 1*sep token ) *sep ]
    sep       = ";" / "," / SP / HTAB / CR / LF
    token     = name [ "=" value ]
    name      = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )
    value     = 1*( any character but sep, "=" and control characters )

Settings the device knows:

``allow-downgrade``, ``allow-downgrade=true`` (or ``yes``, ``on``, ``1``)
    this install may put an older version over a newer one (``=false``, ``no``, ``off``,
    ``0``: it may not; the default). The device's ``[scomo] refuse_downgrades`` wins over it.

Every other token is ignored here, and the whole text is handed to installers unchanged,
as before (``params`` of :meth:`~omadm.agent.scomo.installers.base.Installer.install`,
``OMADM_INSTALL_PARAMS`` for archive hooks). Text that does not follow the grammar (an
empty name or value, a second ``=``, a control character, a known setting with a value it
does not take, or given twice with different values) is refused as a whole with
:class:`InstallParamsError`: guessing what a malformed list meant is how the substring bug
happened. The SCOMO result is 1405 (Install Failed): the device refuses to start the install,
as for a refused downgrade; 1407 is for the package, which is not at fault.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from omadm.protocol.codes import ScomoResult

__all__ = ["ALLOW_DOWNGRADE", "InstallParams", "InstallParamsError", "parse_install_params"]

#: The name of the setting that lets an install downgrade a component.
ALLOW_DOWNGRADE = "allow-downgrade"

_SPLIT = re.compile(r"[;, \t\r\n]+")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


class InstallParamsError(ValueError):
    """InstallParams that do not follow the grammar; ``result`` is the SCOMO code to report (1405)."""

    result = int(ScomoResult.INSTALL_FAILED)


@dataclass(frozen=True, slots=True)
class InstallParams:
    """Parsed InstallParams: every token in order, plus the settings the device acts on.

    ``tokens`` are ``(name folded to lower case, value or None)``; ``raw`` is the text as the
    server wrote it (what installers get).
    """

    raw: str
    tokens: tuple[tuple[str, str | None], ...]
    allow_downgrade: bool = False

    def get(self, name: str) -> tuple[str | None, ...]:
        """The values given to ``name`` (case-insensitive), in order; a bare name gives None."""
        wanted = name.lower()
        return tuple(value for key, value in self.tokens if key == wanted)


def parse_install_params(text: str | None) -> InstallParams:
    """Parse InstallParams (None or blank: no parameters); see the module docstring for the grammar.

    Raises:
        InstallParamsError: the text breaks the grammar; the message says where.
    """
    raw = text or ""
    control = _CONTROL.search(raw.replace("\t", " ").replace("\r", " ").replace("\n", " "))
    if control is not None:
        raise InstallParamsError(
            f"InstallParams holds a control character ({control.group()!r}) at offset {control.start()}"
        )
    tokens: list[tuple[str, str | None]] = []
    for token in _SPLIT.split(raw):
        if not token:
            continue  # separators at the ends
        name, equals, value = token.partition("=")
        if not _NAME.fullmatch(name):
            raise InstallParamsError(
                f"InstallParams token {token!r}: {name!r} is not a name (a letter, then letters, "
                "digits, '-', '_' or '.')"
            )
        if equals and not value:
            raise InstallParamsError(f"InstallParams token {token!r} has '=' but no value")
        if "=" in value:
            raise InstallParamsError(f"InstallParams token {token!r} has more than one '='")
        tokens.append((name.lower(), value if equals else None))
    return InstallParams(raw=raw, tokens=tuple(tokens), allow_downgrade=_flag(tokens, ALLOW_DOWNGRADE))


def _flag(tokens: list[tuple[str, str | None]], name: str) -> bool:
    """A boolean setting: False when absent; the same answer each time it is given, or an error."""
    answers: set[bool] = set()
    for key, value in tokens:
        if key != name:
            continue
        if value is None or value.lower() in _TRUE:
            answers.add(True)
        elif value.lower() in _FALSE:
            answers.add(False)
        else:
            raise InstallParamsError(
                f"InstallParams {name}={value!r}: the value must be true or false (or yes/no, on/off, 1/0)"
            )
    if len(answers) > 1:
        raise InstallParamsError(f"InstallParams gives {name} twice, once true and once false")
    return answers == {True}
