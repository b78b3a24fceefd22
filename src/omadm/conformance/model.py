"""The conformance catalogue's data model: test cases as data, their verdicts and results.

A case is data first (id, title, the rule it checks, the role under test, preconditions,
steps, pass criteria, the optional capability it needs) and code second: ``run`` is an
async callable that drives the implementation under test through a role-specific context
(:mod:`omadm.conformance.device` plays a DM server against a device, and
:mod:`omadm.conformance.server` plays a device against a DM server). A case signals its
verdict by returning (pass) or raising :class:`CaseFailed`, :class:`Inconclusive` or
:class:`NotApplicable`; the runner turns anything else into a failure that names the
exception, so a bug in a case never passes silently.

Case ids follow OMA's habit of a prefix per enabler and role: ``DM-CLI-*`` (a DM client
under test), ``DM-SRV-*`` (a DM server under test), ``MO-CLI-*`` (the standard MOs on a
client), ``SCOMO-DEV-*``, ``SCOMO-SRV-*`` and ``IOP-*`` (interoperability scenarios that
span both roles). The second part names the area (``AUTH``, ``PKG``, ``LO``, ``DL``...),
the last a three-digit number.
"""

from __future__ import annotations

import fnmatch
import importlib
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "CATALOGUE",
    "Case",
    "CaseFailed",
    "CaseResult",
    "Exchange",
    "Inconclusive",
    "NotApplicable",
    "Role",
    "Verdict",
    "case",
    "cases_for",
    "check",
    "select",
]


class Role(StrEnum):
    """Which implementation a case tests."""

    #: A DM client (a device, an agent): omadm plays the DM server.
    DEVICE = "device"
    #: A DM server: omadm plays the device.
    SERVER = "server"


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    #: The case could not decide (the implementation did not come, a precondition the runner
    #: cannot establish did not hold); neither a pass nor a failure.
    INCONCLUSIVE = "inconclusive"
    #: The case needs an optional capability the implementation does not claim in its ICS.
    NOT_APPLICABLE = "not applicable"


class CaseFailed(Exception):
    """The implementation under test broke the case's rule."""

    def __init__(self, expected: str, seen: str) -> None:
        super().__init__(f"expected {expected}; seen {seen}")
        self.expected = expected
        self.seen = seen


class Inconclusive(Exception):
    """The case could not reach a verdict; the message says why."""


class NotApplicable(Exception):
    """The case does not apply to this implementation; the message says why."""


def check(condition: bool, expected: str, seen: object) -> None:
    """Fail the case with ``expected``/``seen`` unless ``condition`` holds."""
    if not condition:
        raise CaseFailed(expected, str(seen))


@dataclass(frozen=True)
class Exchange:
    """One message as the runner sent or received it, kept for the report."""

    #: "sent" (by omadm, the tester) or "received" (from the implementation under test).
    direction: str
    #: The message as readable text (XML; WBXML is rendered as its XML form).
    text: str
    #: Seconds since the case started.
    at: float = 0.0


@dataclass(frozen=True)
class Case:
    id: str
    title: str
    #: The rule checked: a section of the digests, e.g. ``"oma-dm-1.2.md §6.3"``.
    rule: str
    role: Role
    steps: tuple[str, ...]
    pass_criteria: tuple[str, ...]
    preconditions: tuple[str, ...] = ()
    #: An optional capability (a key of :data:`omadm.conformance.ics.CAPABILITIES`) the case
    #: needs; ``None`` for mandatory behaviour.
    capability: str | None = None
    #: The encodings the case runs in (a case about XML text only lists ``("xml",)``).
    encodings: tuple[str, ...] = ("xml", "wbxml")
    run: Callable[[Any], Awaitable[None]] | None = field(default=None, compare=False, repr=False)

    @property
    def executable(self) -> bool:
        return self.run is not None


@dataclass
class CaseResult:
    case: Case
    verdict: Verdict
    encoding: str
    #: For failures: what the rule asks for and what happened; for other verdicts, why.
    expected: str = ""
    seen: str = ""
    reason: str = ""
    exchanges: list[Exchange] = field(default_factory=list)
    seconds: float = 0.0


#: Every case, by id, in registration order.
CATALOGUE: dict[str, Case] = {}


def case(
    id: str,
    title: str,
    *,
    rule: str,
    role: Role,
    steps: Iterable[str],
    pass_criteria: Iterable[str],
    preconditions: Iterable[str] = (),
    capability: str | None = None,
    encodings: Iterable[str] = ("xml", "wbxml"),
) -> Callable[[Callable[[Any], Awaitable[None]]], Callable[[Any], Awaitable[None]]]:
    """Register the decorated coroutine function as the case ``id``."""

    def register(run: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
        if id in CATALOGUE:
            raise ValueError(f"conformance case {id} is defined twice")
        CATALOGUE[id] = Case(
            id=id,
            title=title,
            rule=rule,
            role=role,
            steps=tuple(steps),
            pass_criteria=tuple(pass_criteria),
            preconditions=tuple(preconditions),
            capability=capability,
            encodings=tuple(encodings),
            run=run,
        )
        return run

    return register


def load_all() -> dict[str, Case]:
    """Import every module that defines cases and return the catalogue."""
    importlib.import_module(f"{__package__}.cases")  # registers the cases on import
    return CATALOGUE


def cases_for(role: Role) -> list[Case]:
    return [c for c in load_all().values() if c.role is role]


def select(cases: Iterable[Case], pattern: str | None) -> list[Case]:
    """The cases whose id matches one of the comma-separated glob patterns (case-insensitive)."""
    if not pattern:
        return list(cases)
    patterns = [p.strip().upper() for p in pattern.split(",") if p.strip()]
    return [c for c in cases if any(fnmatch.fnmatchcase(c.id.upper(), p) for p in patterns)]


class Clock:
    """Seconds since construction, for :class:`Exchange` timestamps."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def __call__(self) -> float:
        return round(time.monotonic() - self._start, 3)
