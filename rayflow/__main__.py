"""``python -m rayflow`` is the ``rayflow`` command."""

from rayflow.cli import main

main()
