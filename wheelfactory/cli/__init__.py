"""The `wheelfactory` command line."""
