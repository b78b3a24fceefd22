"""A fork server for ``omadm agent run``, used by test_scomo_crash.py.

Python needs ~0.5 s to import the agent, and the crash test starts it hundreds of times. So
this process imports it once, then, for every ``go`` line on stdin, forks a child that
runs exactly what the ``omadm`` console script runs (``omadm.cli.main()`` with ``agent run
--config CONFIG``) in a session of its own, says ``pid N``, waits for the child to end and
says ``exit STATUS`` (the raw wait status). The children are the agent processes the test
kills; ``quit`` (or end of input) ends the server.

While it carries out SCOMO jobs (``ScomoService.work``, after the start-up recovery), the
child logs every durable write it makes (a tree write, a journal step, an alert queued, the
installer's state file, symlink switch and deletions, a rename); ``go N`` also makes it
freeze itself (SIGSTOP) right after the Nth, for the test to kill. Random instants seldom
fall into the few milliseconds between two such writes; this finds those gaps too. The code
under test is unchanged: the writes are only counted.

Usage: ``python scomo_crash_agent.py CONFIG LOG`` (stdout: ``ready``, then ``pid``/``exit`` lines).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import signal
import sys

# What 'omadm agent run' imports on its way, loaded once, before any power-on.
import omadm.agent.alerts
import omadm.agent.cli
import omadm.agent.listener
import omadm.agent.scomo.installers.archive
import omadm.agent.scomo.journal
import omadm.agent.scomo.operations
import omadm.cli
import omadm.tree.tree

#: Imported lazily on the way to Agent.run (the CLI's option parsing, the HTTP clients).
LAZY = (
    "typer._adapters",
    "typer._click.decorators",
    "pydantic",
    "anyio",
    "httpcore",
    "h11",
    "certifi",
    "zoneinfo",
)


#: The calls after which something durable has changed, by owner.
DURABLE_WRITES: tuple[tuple[object, tuple[str, ...]], ...] = (
    (omadm.tree.tree.DMTree, ("system_set", "system_delete", "system_add_interior")),
    (omadm.agent.scomo.journal.Journal, ("add", "advance", "finish")),
    (omadm.agent.alerts.AlertQueue, ("push", "done")),
    (omadm.agent.scomo.installers.archive.ArchiveInstaller, ("_write", "_switch", "_delete_component")),
    (os, ("replace", "rename")),
)


def arm(freeze_after: int) -> None:
    """Log the durable writes SCOMO jobs make; freeze right after the ``freeze_after``-th."""
    counting = False
    count = 0

    def wrap(owner: object, name: str) -> None:
        original = getattr(owner, name)
        label = f"{getattr(owner, '__name__', owner)}.{name}"

        @functools.wraps(original)
        def counted(*args: object, **kwargs: object) -> object:
            nonlocal count
            result = original(*args, **kwargs)
            if counting:
                count += 1
                os.write(2, f"--- durable write {count}: {label}\n".encode())
                if count == freeze_after:
                    os.kill(os.getpid(), signal.SIGSTOP)
            return result

        setattr(owner, name, counted)

    for owner, names in DURABLE_WRITES:
        for name in names:
            wrap(owner, name)
    service = omadm.agent.scomo.operations.ScomoService
    original_work = service.work

    def work(self: omadm.agent.scomo.operations.ScomoService) -> int:
        nonlocal counting
        counting = True
        try:
            return original_work(self)
        finally:
            counting = False

    service.work = work  # type: ignore[method-assign]


def child(config: str, log: str, freeze_after: int) -> None:
    """The agent process: never returns."""
    code = 70
    try:
        os.setsid()  # its own process group: the test kills it and nothing else
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        print(f"=== agent pid {os.getpid()} starts", flush=True)
        arm(freeze_after)
        sys.argv = ["omadm", "agent", "run", "--config", config]
        try:
            omadm.cli.main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def main(config: str, log: str) -> None:
    for name in LAZY:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] != "go":
            break
        pid = os.fork()
        if pid == 0:
            child(config, log, int(words[1]) if len(words) > 1 else 0)
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exit {status}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
