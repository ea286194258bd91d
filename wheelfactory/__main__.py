"""`python -m wheelfactory` runs the CLI."""

from .cli import main

main()
