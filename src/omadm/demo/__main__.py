"""``python -m omadm.demo``: the rollout demo, or ``--protocol`` for the protocol core alone."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--protocol" in args:
        args.remove("--protocol")
        from .protocol import main as protocol_demo  # noqa: PLC0415

        return protocol_demo(args)
    from .rollout import main as rollout_demo  # noqa: PLC0415

    return rollout_demo(args)


if __name__ == "__main__":
    sys.exit(main())
