"""Write ``docs/mo/<Name>.ddf`` for every registered management object.

The DDF documents in ``docs/`` are derived from the declarations (DESIGN rule 3), never
edited by hand: run ``scripts/gen-ddf`` after changing an MO, and commit the result. A test
compares the committed files with :func:`render`, so the docs cannot drift; ``--check``
does the same from the command line (exit 1 when a file is missing or stale).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .registry import all_mos

__all__ = ["DEFAULT_DIR", "main", "render"]

#: Where the documents go, relative to the project root (the working directory of scripts/).
DEFAULT_DIR = Path("docs/mo")


def render() -> dict[str, bytes]:
    """File name -> DDF bytes for every registered MO (no Man/Mod: these describe the MO, not a device)."""
    return {f"{mo.name}.ddf": mo.to_ddf() for mo in all_mos()}


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="gen-ddf", description="Generate the DDF documents of the registered management objects."
    )
    parser.add_argument(
        "directory",
        nargs="?",
        type=Path,
        default=DEFAULT_DIR,
        help=f"output directory (default {DEFAULT_DIR})",
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is missing or differs"
    )
    args = parser.parse_args(argv)
    out: Path = args.directory
    stale = []
    for name, data in render().items():
        target = out / name
        current = target.read_bytes() if target.is_file() else None
        if current == data:
            continue
        stale.append(target)
        if not args.check:
            out.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            print(f"wrote {target}")
    if args.check and stale:
        for target in stale:
            print(f"stale: {target} (run scripts/gen-ddf)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
