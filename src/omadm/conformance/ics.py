"""The implementation conformance statement (ICS): which optional features an implementation claims.

An ICS is a TOML file::

    [implementation]
    name = "Acme DM client"
    version = "4.2"

    [capabilities]
    wbxml = true
    hmac = false

A case that needs a capability the ICS does not claim is "not applicable", never "fail".
Without a file every capability in :data:`CAPABILITIES` counts as claimed (the runner says
so in the report), which is what a first try against an unknown implementation wants: the
failures then show what to leave out.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CAPABILITIES", "Ics", "IcsError", "load_ics"]

#: Optional capabilities a case may need, with what claiming one means. Runner modules add
#: theirs with :func:`declare` at import time.
CAPABILITIES: dict[str, str] = {}


def declare(name: str, meaning: str) -> str:
    """Declare an optional capability (idempotent); returns ``name`` for use in a case."""
    CAPABILITIES.setdefault(name, meaning)
    return name


class IcsError(ValueError):
    """The ICS file cannot be used; the message names the file and the problem."""


@dataclass
class Ics:
    name: str = "unnamed implementation"
    version: str = ""
    #: Claimed capabilities; ``None`` means no file was given (everything claimed).
    claimed: set[str] | None = field(default=None)

    def claims(self, capability: str | None) -> bool:
        return capability is None or self.claimed is None or capability in self.claimed


def load_ics(path: Path | None) -> Ics:
    if path is None:
        return Ics()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise IcsError(f"{path}: cannot read the ICS file: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise IcsError(f"{path}: not valid TOML: {exc}") from exc
    implementation = data.get("implementation", {})
    capabilities = data.get("capabilities", {})
    if not isinstance(implementation, dict) or not isinstance(capabilities, dict):
        raise IcsError(f"{path}: [implementation] and [capabilities] must be tables")
    unknown = sorted(set(capabilities) - set(CAPABILITIES))
    if unknown:
        known = ", ".join(sorted(CAPABILITIES)) or "none"
        raise IcsError(f"{path}: unknown capabilities {', '.join(unknown)} (known: {known})")
    for name, value in capabilities.items():
        if not isinstance(value, bool):
            raise IcsError(f"{path}: capabilities.{name} must be true or false, not {value!r}")
    return Ics(
        name=str(implementation.get("name", "unnamed implementation")),
        version=str(implementation.get("version", "")),
        claimed={name for name, value in capabilities.items() if value},
    )
