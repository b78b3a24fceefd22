"""Run a list of cases against one implementation and collect their verdicts.

Role-specific set-up (the scripted server, the simulated device) lives in the runner
modules; this loop only decides verdicts: an unclaimed capability is "not applicable", a
case that returns passes, :class:`~.model.CaseFailed` fails with what was expected and
seen, any other exception fails with its type and message (a case must never pass by
accident), and a case that overruns its time limit is inconclusive.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from .ics import Ics
from .model import Case, CaseFailed, CaseResult, Exchange, Inconclusive, NotApplicable, Verdict

__all__ = ["CaseContext", "Progress", "run_cases"]


class CaseContext(Protocol):
    """What a runner gives each case; the role-specific context adds its own methods."""

    exchanges: list[Exchange]


class Progress(Protocol):
    def started(self, case: Case, encoding: str) -> None: ...

    def finished(self, result: CaseResult) -> None: ...


async def run_cases(
    cases: Iterable[Case],
    *,
    encoding: str,
    ics: Ics,
    make_context: Callable[[Case, str], Awaitable[Any]],
    close_context: Callable[[Any], Awaitable[None]] | None = None,
    timeout: float = 120.0,
    progress: Progress | None = None,
) -> list[CaseResult]:
    results: list[CaseResult] = []
    for case in cases:
        if progress is not None:
            progress.started(case, encoding)
        result = await _run_one(case, encoding, ics, make_context, close_context, timeout)
        results.append(result)
        if progress is not None:
            progress.finished(result)
    return results


async def _run_one(  # noqa: PLR0917 - the loop's own parameters, passed through
    case: Case,
    encoding: str,
    ics: Ics,
    make_context: Callable[[Case, str], Awaitable[Any]],
    close_context: Callable[[Any], Awaitable[None]] | None,
    timeout: float,
) -> CaseResult:
    if encoding not in case.encodings:
        reason = f"the case does not run in {encoding}"
        return CaseResult(case, Verdict.NOT_APPLICABLE, encoding, reason=reason)
    if not ics.claims(case.capability):
        return CaseResult(
            case, Verdict.NOT_APPLICABLE, encoding, reason=f"the ICS does not claim {case.capability!r}"
        )
    if case.run is None:
        return CaseResult(case, Verdict.INCONCLUSIVE, encoding, reason="the case has no executable steps")
    started = time.monotonic()
    context = await make_context(case, encoding)
    result = CaseResult(case, Verdict.PASS, encoding)
    try:
        await asyncio.wait_for(case.run(context), timeout)
    except CaseFailed as failed:
        result.verdict, result.expected, result.seen = Verdict.FAIL, failed.expected, failed.seen
    except Inconclusive as exc:
        result.verdict, result.reason = Verdict.INCONCLUSIVE, str(exc)
    except NotApplicable as exc:
        result.verdict, result.reason = Verdict.NOT_APPLICABLE, str(exc)
    except TimeoutError:
        result.verdict, result.reason = Verdict.INCONCLUSIVE, f"no verdict within {timeout:g} s"
    except Exception as exc:  # a broken case or implementation is a failure
        result.verdict = Verdict.FAIL
        result.expected = "the case to run to its verdict"
        result.seen = f"{type(exc).__name__}: {exc}"
    finally:
        if close_context is not None:
            await close_context(context)
    result.exchanges = list(getattr(context, "exchanges", []))
    result.seconds = round(time.monotonic() - started, 3)
    return result
