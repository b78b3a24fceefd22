"""The ``omadm`` command: the console script's entry point, and ``python -m omadm``.

``omadm agent run`` is a device's long-lived process, so its plain forms (``--config FILE``,
``--verbose``) start the agent without loading the command-line machinery (Typer and the
pydantic it validates with: about 17 MB resident for as long as the agent runs; see
:mod:`omadm.agent.daemon`). Every other command line, ``agent run --help`` included, goes to
:func:`omadm.cli.main`.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    """Entry point of the ``omadm`` console script."""
    args = sys.argv[1:]
    if args[:2] == ["agent", "run"]:
        from omadm.agent.daemon import parse_run_args, run  # noqa: PLC0415

        parsed = parse_run_args(args[2:])
        if parsed is not None:
            config, verbose = parsed
            sys.exit(run(config, verbose=verbose))
    from omadm.cli import main as cli_main  # noqa: PLC0415

    cli_main()


if __name__ == "__main__":
    main()
