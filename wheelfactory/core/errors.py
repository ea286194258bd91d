"""Typed errors, each carrying the exit code the CLI reports.

Exit codes (documented in the README):
  0  success
  1  a build, fetch or image step failed (the message shows the command and log)
  2  bad input: a release file, option or argument is wrong; nothing was built
  3  the wheelhouse is locked by another wheelfactory process
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FactoryError(Exception):
    """Base of every error the CLI turns into a message and an exit code."""

    exit_code = 1


class InputError(FactoryError):
    """Something the user gave is wrong; raised before any work starts."""

    exit_code = 2


class BuildError(FactoryError):
    """A build, fetch or packaging step failed."""

    exit_code = 1


class LockedError(FactoryError):
    """Another process holds the wheelhouse lock."""

    exit_code = 3


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """A ' (did you mean X?)' suffix naming the closest known word, or ''."""
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""
