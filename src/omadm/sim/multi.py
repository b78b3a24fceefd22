"""``omadm sim run --processes P``: one fleet over P processes, one summary.

One asyncio process drives a few thousand sessions per second at most (the simulator's CPU
per session is in the summary); a bigger storm needs more cores. So the fleet file's devices
are cut into P contiguous slices and each slice runs in its own process, with its own event
loop, its own HTTP clients and ``--concurrency / P`` session workers (the total stays
``--concurrency``). Each process reports its :class:`~omadm.sim.run.Stats` through a queue
(a light copy every half second for the live display, the whole at the end), and
:func:`merge_stats` adds them up: counters are summed, session-time samples pooled, memory
summed over the processes (so ``idle_bytes_per_device`` is still RSS growth over devices),
CPU summed (so ``ms_per_session`` is still the simulator's cost per session).

Processes are started with ``fork``: the fleet and the profile (which holds key objects) are
inherited, not pickled, and the children start before any event loop exists. Linux and
macOS only; elsewhere ``--processes`` above 1 is refused.

Package #0: the registered notification addresses all name one UDP port, and a datagram
for one address can reach only one socket. So the *parent* keeps the one socket
(:class:`~omadm.sim.notify.Package0Listener`) and passes each datagram, with the device's
index in its slice, down a pipe to the process that owns the device; that process checks it
(the device's gate) exactly as when it listens itself.

Ctrl-C reaches every process of the terminal's process group: each child stops and sends
its summary; a SIGINT sent to the parent alone is passed on to the children.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import multiprocessing
import os
import queue
import random
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from .fleet import Fleet
from .notify import NotifyError, Package0Listener, parse_notify_address
from .profile import Profile
from .run import _TIME_SAMPLE, FleetRunner, RunError, RunOptions, Stats, Summary, run_fleet

__all__ = ["merge_stats", "run_processes"]

#: Session times a progress snapshot carries (the live p50 needs no more).
_SNAPSHOT_TIMES = 2000


def merge_stats(parts: list[Stats]) -> Stats:
    """One run's figures from the figures of its processes (see the module docstring)."""
    out = Stats()
    if not parts:
        return out
    for field in dataclasses.fields(Stats):
        name = field.name
        values = [getattr(p, name) for p in parts]
        if name == "session_seconds":
            pooled = [t for v in values for t in v]
            if len(pooled) > _TIME_SAMPLE:
                pooled = random.Random(0).sample(pooled, _TIME_SAMPLE)
            out.session_seconds = pooled
        elif name == "first_session":
            known = [v for v in values if v is not None]
            out.first_session = min(known) if known else None
        elif name in ("last_session", "elapsed", "retry_after_max"):
            setattr(out, name, max(values))
        elif name == "started":
            out.started = min(values)
        elif isinstance(values[0], dict):  # Counters
            total = type(values[0])()
            for v in values:
                total.update(v)
            setattr(out, name, total)
        else:
            setattr(out, name, sum(values))
    return out


def _light(stats: Stats) -> Stats:
    """A copy of ``stats`` small enough to send twice a second (recent session times only)."""
    return dataclasses.replace(stats, session_seconds=stats.session_seconds[-_SNAPSHOT_TIMES:])


def run_processes(
    fleet: Fleet,
    profile: Profile,
    options: RunOptions,
    *,
    on_progress: Callable[[Stats], None] | None = None,
) -> Summary:
    """Run ``fleet`` over ``options.processes`` processes; the merged summary at the end.

    With one process this is ``asyncio.run(run_fleet(...))``. Call it outside any event loop.
    """
    options.check(profile)
    count = min(options.processes, len(fleet.devices))
    if count <= 1:
        return asyncio.run(run_fleet(fleet, profile, options, on_progress=on_progress))
    if "fork" not in multiprocessing.get_all_start_methods():
        raise RunError("--processes above 1 needs the fork start method (Linux, macOS)")
    chunk = math.ceil(len(fleet.devices) / count)
    slices = [fleet.devices[k * chunk : (k + 1) * chunk] for k in range(count)]
    slices = [s for s in slices if s]
    count = len(slices)
    pipes: list[Connection] = []  # to each process, for the Package #0 of its devices

    def forward(index: int, data: bytes) -> None:
        pipes[index // chunk].send((index % chunk, data))

    try:
        addresses = [
            (i, parse_notify_address(d.notify_address))
            for i, d in enumerate(fleet.devices)
            if d.notify_address
        ]
        listener = Package0Listener(addresses, forward) if addresses else None
    except NotifyError as exc:
        raise RunError(str(exc)) from None
    base_seed = options.seed if options.seed is not None else profile.seed
    per_process = max(1, math.ceil(options.concurrency / count))
    context = multiprocessing.get_context("fork")
    results: multiprocessing.Queue[tuple[int, str, Stats]] = context.Queue()
    children = []
    for k, devices in enumerate(slices):
        child_options = dataclasses.replace(
            options,
            concurrency=per_process,
            processes=1,
            seed=None if base_seed is None else base_seed + k,
        )
        receive: Connection | None = None
        if listener is not None:
            receive, send = context.Pipe(duplex=False)
            pipes.append(send)
        child = context.Process(
            target=_child,
            args=(k, Fleet(fleet.dm_url, fleet.server_id, devices), profile, child_options),
            kwargs={"results": results, "triggers": receive},
            name=f"omadm-sim-{k}",
            daemon=True,
        )
        child.start()
        children.append(child)
    final = asyncio.run(_collect(children, results, listener, on_progress))
    merged = merge_stats([final[k] for k in sorted(final)])
    merged.package0_ignored += listener.unknown if listener is not None else 0
    if on_progress is not None:
        on_progress(merged)
    return Summary(merged, options.duration, options.concurrency, profile.name)


def _child(
    k: int,
    fleet: Fleet,
    profile: Profile,
    options: RunOptions,
    *,
    results: multiprocessing.Queue[tuple[int, str, Stats]],
    triggers: Connection | None,
) -> None:
    """One process: its slice of the fleet, reporting to ``results``."""

    async def main() -> Summary:
        runner = FleetRunner(
            fleet,
            profile,
            options,
            on_progress=lambda stats: results.put((k, "progress", _light(stats))),
            triggers=triggers,
        )
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, runner.stop)
        return await runner.run()

    summary = asyncio.run(main())
    results.put((k, "done", summary.stats))


async def _collect(
    children: list[Any],
    results: multiprocessing.Queue[tuple[int, str, Stats]],
    listener: Package0Listener | None,
    on_progress: Callable[[Stats], None] | None,
) -> dict[int, Stats]:
    """Listen for Package #0 (if any) and gather the children's figures until all are done."""
    loop = asyncio.get_running_loop()
    if listener is not None:
        try:
            listener.start(loop)
        except NotifyError as exc:
            for child in children:
                child.kill()
            raise RunError(str(exc)) from None

    def interrupt() -> None:
        for child in children:
            if child.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGINT)

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, interrupt)
    latest: dict[int, Stats] = {}
    done: dict[int, Stats] = {}
    try:
        while len(done) < len(children):
            try:
                k, what, stats = results.get_nowait()
            except queue.Empty:
                k, what = -1, ""
            if k < 0:
                for n, child in enumerate(children):
                    if n not in done and child.exitcode is not None and child.exitcode != 0:
                        raise RunError(f"simulator process {n} ended with exit code {child.exitcode}")
                await asyncio.sleep(0.05)
                continue
            if what == "done":
                done[k] = stats
            latest[k] = stats
            if on_progress is not None:
                on_progress(merge_stats(list(latest.values())))
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
        if listener is not None:
            listener.close(loop)
        for child in children:
            child.join(timeout=5)
    return done
