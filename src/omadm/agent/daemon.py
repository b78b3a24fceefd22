"""``omadm agent run`` without the command-line machinery: the agent's long-lived process.

A device runs ``omadm agent run`` for months, and what that process imported on its way in
stays resident all that time. Typer and the pydantic it validates options with cost about
17 MB of a ~60 MB agent (``bench/agent_rss.py``), for parsing two options once. So the
``omadm`` entry point (:mod:`omadm.__main__`) recognises the plain forms of ``agent run``
(``--config``/``-c FILE``, ``--verbose``/``-v``) and calls :func:`run` directly; anything else
(``--help``, a mistake, a newer option) goes through Typer as before, whose ``run`` command
calls the same function. What is imported here is what the agent needs anyway.

Exit codes are those of :mod:`omadm.agent.cli`: 0 stopped by a signal, 1 a problem with the
configuration or the data directory (one ``error:`` line), 7 a server failed the TLS checks.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["CONFIG_ENV", "DEFAULT_CONFIG", "EXIT_CONFIG", "EXIT_OK", "EXIT_TLS", "parse_run_args", "run"]

EXIT_OK = 0
EXIT_CONFIG = 1
EXIT_TLS = 7
#: Where ``--config`` is read from when not given (as ``omadm agent ... --config``).
DEFAULT_CONFIG = Path("omadm.toml")
CONFIG_ENV = "OMADM_AGENT_CONFIG"


def configure_logging(verbose: bool, *, quiet: bool = False) -> None:
    """The agent's log format on standard error (INFO; DEBUG with --verbose)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def parse_run_args(args: Sequence[str]) -> tuple[Path, bool] | None:
    """``(config, verbose)`` for the plain forms of ``agent run``'s options, else None.

    None hands the command line to Typer (help, usage errors, any other option), so that
    nothing a user types behaves differently on this path.
    """
    config: str | None = None
    verbose = False
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg in ("-v", "--verbose"):
            verbose = True
        elif arg in ("-c", "--config") and rest and not rest[0].startswith("-"):
            config = rest.pop(0)
        elif arg.startswith("--config=") and len(arg) > len("--config="):
            config = arg.partition("=")[2]
        else:
            return None
    if config is None:
        config = os.environ.get(CONFIG_ENV) or str(DEFAULT_CONFIG)
    return Path(config), verbose


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def run(config_path: Path, *, verbose: bool = False) -> int:
    """Run the agent until SIGINT/SIGTERM: poll, answer Package #0, deliver pending alerts.

    Returns the exit code; a problem is one ``error:`` line on standard error.
    """
    from omadm.tree.store import TreeStoreError  # noqa: PLC0415 - see the module docstring

    from .config import ConfigError, load_config  # noqa: PLC0415
    from .listener import HTTPNotificationListener, UDPNotificationListener, parse_address  # noqa: PLC0415
    from .runner import Agent  # noqa: PLC0415

    configure_logging(verbose)
    try:
        agent = Agent(load_config(config_path))
    except (ConfigError, TreeStoreError, OSError) as exc:
        _error(str(exc))
        return EXIT_CONFIG
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    closers: list[Callable[[], None]] = []
    log = logging.getLogger("omadm.agent")
    try:
        if agent.config.listen_udp:
            udp = UDPNotificationListener(agent, parse_address(agent.config.listen_udp), stop)
            udp.start()
            log.info("listening for Package #0 on udp %s", udp.address)
        if agent.config.listen_http:
            http = HTTPNotificationListener(agent, parse_address(agent.config.listen_http))
            http.start()
            closers.append(http.close)
            log.info("listening for Package #0 on http %s", http.address)
        agent.run(stop)
    except (ValueError, OSError) as exc:
        _error(str(exc))
        return EXIT_CONFIG
    finally:
        for close in closers:
            close()
        agent.close()
    if agent.tls_failure is not None:
        _error(f"stopped: {agent.tls_failure.reason}")
        return EXIT_TLS
    return EXIT_OK
