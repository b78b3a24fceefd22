"""Admission control for DM messages: a bounded number in flight, the rest told when to come back.

A fleet arrives at once after an outage or a Package #0 wave. A worker that takes every
message queues them on its database pool until the pool times out (HTTP 500 after 30 s,
long after the devices themselves gave up and came back, adding load). Instead a worker
admits at most ``limit`` messages at a time and answers the others at once with HTTP 503
and a ``Retry-After`` that the devices honour (the agent and the simulator do, with jitter).

Two choices make the shed load finish sooner:

* **Sessions under way come first.** A message that continues a session (its URL carries
  the session token from ``RespURI``) is admitted up to ``limit + limit // 2``; only new
  sessions are refused at ``limit``. Work already spent on a session is not thrown away,
  and a device that got in finishes and leaves.
* **Retry-After is an appointment.** The worker keeps a book of slots, one per refused
  new session, spaced at the rate it has been admitting new sessions: the first refused
  device is told to come back in a second, the next a little later, and so on, so a storm
  comes back spread over the time the worker needs to serve it, at about the pace it can
  serve it, instead of all together a second later (and instead of long waits while the
  worker sits idle). A message of a session under way refused at the reserve's end is told
  one second. Bounded to ``[1, max_retry_after]`` seconds; the devices add a little jitter
  of their own.

Pure logic with an injected clock and random source, so the tests need no server and no
sleeps; ``DMEndpoint`` calls it on every POST.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

__all__ = ["DEFAULT_LIMIT", "Admission"]

#: Messages in flight per worker when the configuration does not say (``dm_max_in_flight = 0``).
#: A general-path message holds a database connection for its whole transaction (~5 ms on the
#: project's machine), so the messages past the pool's connections wait at most about
#: ``64 / connections x 5 ms`` (0.3 s on SQLite's single connection): far below the pool's
#: 30 s timeout and the agents' own timeout, while one worker is never idle for want of work.
DEFAULT_LIMIT = 64


class Admission:
    """Counts DM messages in flight on one worker and decides whether the next one may enter."""

    def __init__(
        self,
        limit: int = DEFAULT_LIMIT,
        *,
        max_retry_after: int = 60,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError(f"the in-flight limit must be at least 1, not {limit}")
        self.limit = limit
        #: Continuing sessions may use this many more places than new ones.
        self.reserve = max(1, limit // 2)
        self.max_retry_after = max(1, max_retry_after)
        self.in_flight = 0
        self.shed = 0  # refusals since the worker started (bench and logs read it)
        self._clock = clock
        self._rng = rng or random.Random()
        # New sessions admitted: in the current one-second window, and per second (moving
        # average of the windows before). Until a storm has shown the real pace, the guess
        # is the limit itself: a new session's first message takes a few ms, so a worker
        # admits at least its limit per second when busy.
        self._window = math.floor(clock())
        self._admitted_now = 0
        self._rate = float(limit)
        self._next_slot = 0.0  # the clock time of the last appointment given

    def enter(self, *, continuing: bool) -> bool:
        """Take a place for one message; False: refuse it (answer 503 with ``retry_after``)."""
        self._roll()
        bound = self.limit + self.reserve if continuing else self.limit
        if self.in_flight >= bound:
            self.shed += 1
            return False
        self.in_flight += 1
        if not continuing:
            self._admitted_now += 1
        return True

    def leave(self) -> None:
        """The message's place is free again (answered, refused later, or failed)."""
        self.in_flight -= 1

    def retry_after(self, *, continuing: bool = False) -> int:
        """Seconds a refused device should wait: its appointment (see the module's docstring)."""
        if continuing:
            return 1  # its session is under way: a place comes free in milliseconds
        self._roll()
        now = self._clock()
        pace = max(self._rate, float(self._admitted_now), 1.0)  # new sessions per second
        self._next_slot = max(self._next_slot, now + 1.0) + 1.0 / pace
        wait = self._next_slot - now
        if wait > self.max_retry_after:
            # Booked beyond the bound: the book restarts at the bound (these devices will
            # meet the ones booked last; a bound exists so that nobody waits for ever).
            self._next_slot = now + self.max_retry_after
            wait = float(self.max_retry_after)
        # Integer seconds on the wire: round up or down at random, so that a second's
        # appointments do not all land at its start.
        whole = math.floor(wait) + (self._rng.random() < wait - math.floor(wait))
        return min(self.max_retry_after, max(1, whole))

    def _roll(self) -> None:
        now = math.floor(self._clock())
        if now == self._window:
            return
        if self._admitted_now >= 1:
            # Only windows that admitted anything teach the pace (an idle second says nothing
            # about how fast a busy worker admits).
            self._rate = 0.5 * self._rate + 0.5 * self._admitted_now
        self._window = now
        self._admitted_now = 0
