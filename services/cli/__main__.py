"""``python -m services.cli``: the ``kindred`` command line."""

from . import main

main()
