"""``python -m omadm``: the same as the ``omadm`` command."""

from omadm.cli import main

main()
