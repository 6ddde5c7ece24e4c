"""``python -m simattr``: the same command line as the ``simattr`` script."""

from simattr.cli import main

main()
