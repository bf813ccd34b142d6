"""`python -m lth` = `lth-run`."""

from lth.cli import main

main()
