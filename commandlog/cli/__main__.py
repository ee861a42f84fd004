"""``python -m commandlog.cli`` runs the ``cmdlog`` command line."""

from commandlog.cli import main

main()
