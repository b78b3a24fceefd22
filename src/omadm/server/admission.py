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
* **Retry-After follows the load.** It is the time the worker needs to serve what was
  refused in the last second at the rate it has been completing messages, bounded to
  ``[1, max_retry_after]`` seconds and spread by a random factor in [1, 2): a storm is spread
  out over the time it takes to serve it instead of coming back all together a second later.

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
        # One-second windows: what was completed and what was refused.
        self._window = math.floor(clock())
        self._done_now = 0
        self._shed_now = 0
        self._rate = 0.0  # messages completed per second (moving average)
        self._shed_rate = 0.0  # messages refused per second (last full second)

    def enter(self, *, continuing: bool) -> bool:
        """Take a place for one message; False: refuse it (answer 503 with ``retry_after()``)."""
        self._roll()
        bound = self.limit + self.reserve if continuing else self.limit
        if self.in_flight >= bound:
            self.shed += 1
            self._shed_now += 1
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        """The message's place is free again (answered, refused later, or failed)."""
        self._roll()
        self.in_flight -= 1
        self._done_now += 1

    def retry_after(self) -> int:
        """Seconds a refused device should wait: the backlog over the service rate, with jitter."""
        self._roll()
        rate = max(self._rate, float(self._done_now), 1.0)
        backlog = max(self._shed_rate, float(self._shed_now)) + self.in_flight
        base = min(max(backlog / rate, 1.0), float(self.max_retry_after))
        return min(self.max_retry_after, max(1, round(base * (1.0 + self._rng.random()))))

    def _roll(self) -> None:
        now = math.floor(self._clock())
        if now == self._window:
            return
        idle = now - self._window - 1  # whole seconds with nothing counted
        self._rate = 0.5 * self._rate + 0.5 * self._done_now
        self._shed_rate = float(self._shed_now)
        if idle > 0:
            self._rate *= 0.5 ** min(idle, 30)
            self._shed_rate = 0.0
        self._window = now
        self._done_now = 0
        self._shed_now = 0
