"""`python -m wheelfactory` runs the CLI."""

from .cli.app import main

main()
