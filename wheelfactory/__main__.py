"""`python -m wheelfactory` runs the CLI."""

from .cli.commands import main

main()
