"""Campaign arithmetic, sans I/O: waves, thresholds, retries and maintenance windows.

A campaign (issue 6) applies one SCOMO operation to a set of devices in waves. Everything
that decides *what happens next* lives here as pure functions over plain values, so that the
rules can be tested exhaustively (property tests) and the database layer only records:

* :func:`split_waves` cuts the target devices into waves given as counts (``10``) or
  percentages of the whole set (``"25%"``); the last wave takes whatever remains, so every
  device is in exactly one wave, in the order given.
* :func:`decide` reads a wave's tally and says whether to wait, release the next wave, pause
  the campaign (the wave ended without reaching its success threshold) or stop it (the error
  threshold was crossed), in the spirit of hawkBit's rollout groups: the next wave starts as
  soon as enough of this one succeeded, not when the slowest device finally answers.
* :func:`should_retry` says whether a failed job deserves another attempt: transient causes
  (download server errors, timeouts, lost connections) do; a device's considered refusal
  (signature, environment, user said no) does not.
* :class:`Window` is a daily maintenance window in UTC (``"22:00-04:00"`` wraps midnight).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time
from enum import StrEnum
from typing import TypeVar

from omadm.protocol.codes import ScomoResult

__all__ = [
    "DEFAULT_ERROR_THRESHOLD",
    "DEFAULT_SUCCESS_THRESHOLD",
    "Decision",
    "Tally",
    "Window",
    "decide",
    "parse_wave",
    "should_retry",
    "split_waves",
    "wave_sizes",
]

T = TypeVar("T")

_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")

#: Results worth another attempt: the cause may be gone next time.
RETRYABLE = frozenset(
    {
        ScomoResult.DOWNLOAD_FAILED,  # 1402: lost connection, corrupt transfer
        ScomoResult.DOWNLOAD_FAILED_OUT_OF_MEMORY,  # 1404: space may be freed
        ScomoResult.ALTERNATE_DOWNLOAD_SERVER_ERROR,  # 1500
        ScomoResult.ALTERNATE_DOWNLOAD_SERVER_UNAVAILABLE,  # 1501
        ScomoResult.UNDEFINED_ERROR,  # 1412
    }
)


def parse_wave(spec: int | str) -> tuple[str, float]:
    """``10`` -> ("count", 10); ``"25%"`` -> ("percent", 25.0).

    Raises:
        ValueError: not a positive count or a percentage in (0, 100].
    """
    if isinstance(spec, bool):
        raise ValueError(f"a wave is a count or a percentage, not {spec!r}")
    if isinstance(spec, int):
        if spec < 1:
            raise ValueError(f"a wave of {spec} devices is empty")
        return "count", float(spec)
    if isinstance(spec, str):
        match = _PERCENT.match(spec)
        if match:
            value = float(match.group(1))
            if not 0 < value <= 100:
                raise ValueError(f"a wave of {spec} is not a percentage in (0, 100]")
            return "percent", value
        if spec.strip().isdigit():
            return parse_wave(int(spec))
    raise ValueError(f"a wave is a count (10) or a percentage ('25%'), not {spec!r}")


def wave_sizes(total: int, waves: Sequence[int | str]) -> list[int]:
    """How many of ``total`` devices each wave takes, in order; the last one takes the rest.

    Percentages are of the whole set, rounded up (a 1 % wave of 30 devices is 1 device); a
    wave never takes more than what remains, and waves that would be empty are dropped.
    With no waves at all, everything is one wave.

    Raises:
        ValueError: a wave spec is invalid (see :func:`parse_wave`).
    """
    specs = [parse_wave(w) for w in waves]
    sizes: list[int] = []
    start = 0
    for index, (kind, value) in enumerate(specs):
        if start >= total:
            break
        last = index == len(specs) - 1
        size = int(value) if kind == "count" else math.ceil(total * value / 100)
        end = total if last else min(total, start + size)
        sizes.append(end - start)
        start = end
    if start < total:
        if sizes:
            sizes[-1] += total - start
        else:
            sizes.append(total - start)
    return [size for size in sizes if size]


def split_waves(devices: Sequence[T], waves: Sequence[int | str]) -> list[list[T]]:
    """Cut ``devices`` into consecutive waves of :func:`wave_sizes`."""
    out: list[list[T]] = []
    start = 0
    for size in wave_sizes(len(devices), waves):
        out.append(list(devices[start : start + size]))
        start += size
    return out


@dataclass(frozen=True)
class Tally:
    """A wave's jobs by outcome (``size`` = all its devices)."""

    size: int
    succeeded: int = 0
    failed: int = 0  # failed for good (retries used up), timed out or cancelled

    def __post_init__(self) -> None:
        if self.size < 0 or self.succeeded < 0 or self.failed < 0 or self.succeeded + self.failed > self.size:
            raise ValueError(f"impossible tally {self}")

    @property
    def done(self) -> bool:
        return self.succeeded + self.failed == self.size


class Decision(StrEnum):
    WAIT = "wait"  # jobs are still running and no threshold decides yet
    NEXT_WAVE = "next-wave"  # enough succeeded: release the next wave
    FINISH = "finish"  # the last wave reached its threshold (its stragglers still finish)
    PAUSE = "pause"  # the wave ended below its success threshold: an operator decides
    STOP = "stop"  # too many failures: stop the campaign, send nothing more


#: A wave must succeed whole to release the next one: any failure pauses the campaign once
#: the wave has ended, for an operator to look (hawkBit's default success threshold too).
DEFAULT_SUCCESS_THRESHOLD = 1.0
#: More than half of a wave failed stops the campaign at once: something is broken for
#: everyone. Below that a failure pauses instead (an error threshold of 0 stopped a campaign
#: at its first failure, where operators expect a pause).
DEFAULT_ERROR_THRESHOLD = 0.5


def decide(tally: Tally, *, success_threshold: float, error_threshold: float, last_wave: bool) -> Decision:
    """What the campaign does after a change in one wave's tally.

    Thresholds are fractions in [0, 1] of the wave's size. The error threshold is checked
    first: crossing it stops the campaign even if the success threshold was met too (a wave
    of 10 with a 0.5 success and 0.2 error threshold: 6 successes and 3 failures stop it).
    An empty wave has succeeded.
    """
    if not 0 <= success_threshold <= 1 or not 0 <= error_threshold <= 1:
        raise ValueError("thresholds are fractions between 0 and 1")
    if tally.size == 0:
        return Decision.FINISH if last_wave else Decision.NEXT_WAVE
    if tally.failed / tally.size > error_threshold:
        return Decision.STOP
    if tally.succeeded / tally.size >= success_threshold:
        return Decision.FINISH if last_wave else Decision.NEXT_WAVE
    return Decision.PAUSE if tally.done else Decision.WAIT


def should_retry(result_code: int | None, attempts: int, max_retries: int) -> bool:
    """Whether a failed job gets another attempt (``attempts`` made so far, retries allowed).

    ``result_code`` None means no report came (timed out, session lost): retried too.
    """
    if attempts > max_retries:
        return False
    return result_code is None or result_code in RETRYABLE


@dataclass(frozen=True)
class Window:
    """A daily maintenance window in UTC, start inclusive, end exclusive; may wrap midnight."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> Window:
        """``"22:00-04:00"``.

        Raises:
            ValueError: the text is not ``HH:MM-HH:MM`` with valid times, or is empty.
        """
        match = _WINDOW.match(text)
        if match is None:
            raise ValueError(f"a maintenance window is HH:MM-HH:MM (UTC), not {text!r}")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        try:
            window = cls(time(h1, m1), time(h2, m2))
        except ValueError:
            raise ValueError(f"{text!r} names a time that does not exist") from None
        if window.start == window.end:
            raise ValueError(f"the window {text!r} is empty")
        return window

    def contains(self, moment: datetime) -> bool:
        """Whether ``moment`` (aware; converted to UTC) is inside the window."""
        if moment.tzinfo is None:
            raise ValueError("give an aware datetime: windows are in UTC")
        now = moment.utctimetuple()
        current = time(now.tm_hour, now.tm_min, now.tm_sec)
        if self.start < self.end:
            return self.start <= current < self.end
        return current >= self.start or current < self.end
