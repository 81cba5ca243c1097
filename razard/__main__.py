"""``python -m razard`` is ``razard``."""

from razard.cli import main

main()
