"""The `wheelfactory` command line: the group and its global options, every command, and the one
place that turns errors into messages and exit codes. Each command parses its options, makes one
library call and prints what came of it."""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from pathlib import Path

import click

from assemble.cli import images  # the image assembler; it only reads releases, plans and locks

from .. import __version__
from ..core.errors import FactoryError, InputError
from ..core.grammar import check_path_length
from ..core.interrupt import Interrupted, install_handlers
from ..pipeline.factory import Factory, default_recipes_dir
from ..sources.transport import INDEX_SCHEMES, check_url
from .building import adopt, build, doctor, fetch
from .cache import cache_group
from .globalopts import AFTER_COMMAND, GlobalOptionsGroup, accept_after_subcommand, show_envvars
from .options import (
    ALLOW_INSECURE_INDEX,
    say,
)
from .releases import release_group
from .reuse import lock, venv
from .show import list_cmd, plan
from .wheels import inspect, serve, verify

# No auto_envvar_prefix: the environment variables are the ones declared on options (and shown in
# --help), not a WHEELFACTORY_<COMMAND>_<OPTION> for every option (--force included) behind the user's back.
CONTEXT = {"help_option_names": ["-h", "--help"]}


def _checked_cache_dir(path: Path) -> Path:
    """--cache-dir as the Factory keeps it (absolute), refused when it names a file: every command
    keeps logs or sources there. Checked wherever the option was typed, before or after the command."""
    cache = path.expanduser()
    if cache.exists() and not cache.is_dir():
        raise InputError(f"--cache-dir {cache} is a file, not a directory; pass a directory")
    return cache.absolute()


@click.group(cls=GlobalOptionsGroup, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="wheelfactory")
@click.option("--wheelhouse", type=click.Path(path_type=Path), default=Path("wheelhouse"), show_default=True,
              envvar="WHEELFACTORY_WHEELHOUSE", help="The wheelhouse directory (wheels, simple/, manifest).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=Path("~/.cache/wheelfactory"),
              show_default=True, envvar="WHEELFACTORY_CACHE_DIR",
              help="Sources, build requirements, work trees and logs.")
@click.option("--recipes-dir", type=click.Path(path_type=Path), default=None, envvar="WHEELFACTORY_RECIPES_DIR",
              help="Your own recipe modules, releases/ and data/, added on top of the shipped ones; a recipe, "
                   "release or data file with a shipped name replaces the shipped one.")
@click.option("--index-url", default="https://pypi.org/simple", show_default=True, envvar="WHEELFACTORY_INDEX_URL",
              help="Package index for sdists, build requirements and PyPI pins.")
@click.option("--allow-insecure-index", is_flag=True, envvar="WHEELFACTORY_ALLOW_INSECURE_INDEX",
              help="Accept a plain http:// --index-url (anyone on the network path can swap what it serves).")
@click.pass_context
def cli(ctx: click.Context, wheelhouse: Path, cache_dir: Path, recipes_dir: Path | None, index_url: str,
        allow_insecure_index: bool) -> None:
    """Build the DGX Spark inference stack into wheels built against each other, and assemble
    thin runtime images from them.

    The options below are also accepted after the command (`wheelfactory plan --cache-dir DIR`)."""
    # the flag counts after the command's name as well (see globalopts.py)
    allowed = allow_insecure_index or ALLOW_INSECURE_INDEX in ctx.meta.get(AFTER_COMMAND, ())
    ctx.meta[ALLOW_INSECURE_INDEX] = allowed
    index_url = check_url(index_url, allowed, "--index-url", "pass --allow-insecure-index", INDEX_SCHEMES)
    for option, path in (("--wheelhouse", wheelhouse), ("--cache-dir", cache_dir), ("--recipes-dir", recipes_dir)):
        if path is not None:
            check_path_length(path.expanduser(), option)
    shipped = default_recipes_dir()
    ctx.obj = Factory(recipes_dir.expanduser().absolute() if recipes_dir else shipped,
                      wheelhouse.expanduser().absolute(), _checked_cache_dir(cache_dir), index_url=index_url,
                      shipped_recipes_dir=shipped)


for command in (list_cmd, plan, fetch, build, doctor, adopt, lock, venv, inspect, verify, serve, release_group,
                cache_group):
    cli.add_command(command)
# The image assembler lives in its own package; it only reads releases, plans and locks.
cli.add_command(images)


def _late_path(attr: str, option: str, checked: Callable[[Path], Path] = lambda p: p.expanduser().absolute()):
    # `checked` is what the group's own callback does with the value, so both places agree
    def apply(ctx: click.Context, value: Path) -> None:
        check_path_length(value.expanduser(), option)
        setattr(ctx.find_object(Factory), attr, checked(value))
    return apply


def _late_index_url(ctx: click.Context, value: str) -> None:
    ctx.find_object(Factory).index_url = check_url(value, ctx.find_root().meta.get(ALLOW_INSECURE_INDEX, False),
                                                   "--index-url", "pass --allow-insecure-index", INDEX_SCHEMES)


def _late_allow_insecure(ctx: click.Context, value: bool) -> None:
    ctx.find_root().meta[ALLOW_INSECURE_INDEX] = ctx.find_root().meta.get(ALLOW_INSECURE_INDEX) or value


# Last, once every command is declared: the group's options after any subcommand too, and every
# environment variable in --help.
accept_after_subcommand(cli, {"wheelhouse": _late_path("wheelhouse_dir", "--wheelhouse"),
                              "cache_dir": _late_path("cache_dir", "--cache-dir", _checked_cache_dir),
                              "recipes_dir": _late_path("recipes_dir", "--recipes-dir"), "index_url": _late_index_url,
                              "allow_insecure_index": _late_allow_insecure})
show_envvars(cli)


def main() -> None:
    """Entry point: one place turns errors into messages and exit codes."""
    # SIGTERM/SIGHUP (kill PID, a closed terminal) end the factory like Ctrl-C does: an exception,
    # so the running command's process group is killed and locks are released on the way out.
    install_handlers()
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort as e:
        say("interrupted")
        # click turns KeyboardInterrupt into Abort; 128+signal number, as a shell reports it.
        sys.exit(128 + e.__cause__.signum if isinstance(e.__cause__, Interrupted) else 130)
    except click.ClickException as e:
        e.show()
        sys.exit(2 if e.exit_code == 2 else e.exit_code)
    except FactoryError as e:
        say(f"error: {e}")
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        say("interrupted; nothing partial was published")
        sys.exit(130)
    except OSError as e:  # a full disk or a file in the way, outside any step: a message, not a traceback
        if e.errno == errno.ENOSPC:
            say(f"error: no space left on the device{f' writing {e.filename}' if e.filename else ''}; "
                  "free some space and run again")
        else:
            say(f"error: {e.strerror or e}{f': {e.filename}' if e.filename else ''}")
        sys.exit(1)
