"""Global options on either side of the subcommand (`wheelfactory plan --cache-dir X` as well as
`wheelfactory --cache-dir X plan`), as uv, pip and cibuildwheel accept them.

The group's own options stay declared on the group, where they are parsed before the subcommand
and make the Factory. `accept_after_subcommand` then gives every subcommand (and every subgroup's
subcommand) a hidden copy of each of them: given on the command line after the subcommand's name,
the copy's callback sets the value on the Factory the group made, before the command runs (click
runs the group's callback before it parses the subcommand's options). The copy has no default and
no environment variable, so only what is typed after the subcommand overrides; each command's own
options are left where they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

# Group option name -> how a value given after the subcommand is applied to the Factory.
Apply = Callable[[click.Context, Any], None]


def _copy(option: click.Option, apply: Apply) -> click.Option:
    """A hidden copy of a group option, for a subcommand, that applies its value when typed there."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if param.name is None:
            return
        source = ctx.get_parameter_source(param.name)
        # click before 8.5 records no source for an option with expose_value=False: there, a value
        # other than "not given" (None, an unset flag, an empty multiple) can only come from the
        # command line, since the copy has no default and no environment variable.
        if source is ParameterSource.COMMANDLINE or (source is None and value not in (None, False, ())):
            apply(ctx, value)

    return click.Option(option.opts, type=option.type, is_flag=option.is_flag, multiple=option.multiple,
                        default=None, expose_value=False, hidden=True, callback=callback, help=option.help,
                        # eager: a flag such as --allow-insecure-index is applied before the option whose
                        # value it judges (--index-url), wherever each was typed
                        is_eager=option.is_flag, allow_from_autoenv=False)


AFTER_COMMAND = "wheelfactory.after_command"


class GlobalOptionsGroup(click.Group):
    """A group that keeps what follows the subcommand's name in ctx.meta for its own callback: a
    flag typed after the subcommand (--allow-insecure-index) may decide how the group's own option
    (--index-url) is judged there."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        rest = super().parse_args(ctx, args)
        ctx.meta[AFTER_COMMAND] = [*getattr(ctx, "_protected_args", ()), *ctx.args]
        return rest


def accept_after_subcommand(group: click.Group, apply: dict[str, Apply]) -> None:
    """Give every subcommand below `group` a hidden copy of each group option named in `apply`."""
    options = [p for p in group.params if isinstance(p, click.Option) and p.name in apply]

    def visit(command: click.Command) -> None:
        taken = {opt for p in command.params for opt in p.opts}
        for option in options:
            if not taken & set(option.opts):  # a command's own option of that name wins
                command.params.append(_copy(option, apply[option.name]))  # type: ignore[index]
        if isinstance(command, click.Group):
            for sub in command.commands.values():
                visit(sub)

    for command in group.commands.values():
        visit(command)


def show_envvars(command: click.Command) -> None:
    """`[env var: NAME]` in --help for every option of the command tree that has an environment variable."""
    for p in command.params:
        if isinstance(p, click.Option) and p.envvar:
            p.show_envvar = True
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            show_envvars(sub)
