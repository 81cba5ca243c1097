"""``python -m razard`` is ``razard``."""

from razard.launch import main

main()
