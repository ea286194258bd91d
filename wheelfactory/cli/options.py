"""The options several commands share, and how the command line speaks: messages go above the
live status rows of a build, never over them."""

from __future__ import annotations

import math
from pathlib import Path

import click

from ..pipeline.factory import DEFAULT_RELEASE, Factory
from ..run.progress import BOARD

ALLOW_INSECURE_INDEX = "--allow-insecure-index"


def say(msg: str) -> None:
    # While live status rows are up (a build on a terminal), a message goes above them, never over
    # them: the toolkit's download lines, a waiting lock, a step's summary.
    if BOARD.active():
        BOARD.print(msg)
    else:
        click.echo(msg, err=True)


def say_warnings(msg: str) -> None:
    """`build --quiet`'s echo: warnings only (errors are raised, and main prints them)."""
    if msg.lstrip().lower().startswith(("warning", "error")):
        say(msg)


def say_lock_holder(holder: str) -> None:
    say(f"waiting for the wheelhouse lock, held by {holder} ...")


release_option = click.option("--release", "-r", default=DEFAULT_RELEASE, show_default=True,
                              envvar="WHEELFACTORY_RELEASE",
                              help="Release name (recipes/releases/NAME.toml) or path to a release TOML file.")


env_option = click.option("--env", "env", multiple=True, metavar="COMPONENT:KEY=VALUE",
                          help="Extra build environment for one component (repeatable; enters the build key). "
                               "For non-secret values: pass tokens with --secret-env (a KEY that looks secret, "
                               "such as *TOKEN*, *SECRET*, *PASSWORD*, *KEY, is treated as one and shown as ***).")


def _secret_env(ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> None:
    # On the Factory, as --system-cuda: every planning command sees it without a new parameter.
    if value:
        ctx.find_object(Factory).secret_env = value


secret_env_option = click.option(
    "--secret-env", multiple=True, metavar="COMPONENT:NAME", expose_value=False, callback=_secret_env,
    help="Pass the environment variable NAME (a token) to COMPONENT's build (repeatable). Its value is read "
         "from this environment, shown as *** in plans, logs, build_env.sh and the manifest, and does not "
         "enter the build key (its name does). Other secrets of this environment are not passed to builds.")


source_dir_option = click.option("--source-dir", "source_dirs", multiple=True,
                                 metavar="COMPONENT[.EXTRA]=PATH",
                                 help="Build a component from a local checkout instead of its release source; "
                                      "COMPONENT.EXTRA=PATH replaces one of its extra sources "
                                      "(vllm.cutlass=~/cutlass).")


adopt_option = click.option("--adopt", "adopt", multiple=True, metavar="COMPONENT=WHEEL|REQUIREMENT",
                            help="Take a component as an existing wheel instead of building it (repeatable).")


targets_argument = click.argument("targets", nargs=-1)


def _use_system_cuda(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    # Set on the Factory (made by the group before any subcommand option is parsed), so that
    # every command that plans sees it without one more parameter in each signature.
    if value:
        ctx.find_object(Factory).system_cuda = True


system_cuda_option = click.option(
    "--system-cuda", is_flag=True, expose_value=False, callback=_use_system_cuda, envvar="WHEELFACTORY_SYSTEM_CUDA",
    help="Build with this host's CUDA toolkit instead of the release's CUDA assembled from NVIDIA's wheels "
         "(enters the build key; give it to lock too, or set WHEELFACTORY_SYSTEM_CUDA=1).")


def _use_cross(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    # On the Factory, as --system-cuda.
    if value:
        ctx.find_object(Factory).cross = True


def _use_target_cuda(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.find_object(Factory).target_cuda = value.expanduser().absolute()


cross_option = click.option(
    "--cross", is_flag=True, expose_value=False, callback=_use_cross, envvar="WHEELFACTORY_CROSS",
    help="Build a release meant for another machine (platform = 'linux_aarch64' on an x86_64 host) for that "
         "machine: steps whose recipe can cross-compile run this host's nvcc with the target's GNU cross "
         "compiler and CUDA libraries; the plan shows each step's mode (native, cross, emulated).")


target_cuda_option = click.option(
    "--target-cuda", type=click.Path(path_type=Path), default=None, expose_value=False, callback=_use_target_cuda,
    envvar="WHEELFACTORY_TARGET_CUDA", metavar="DIR",
    help="With --cross: the target's CUDA libraries (DIR/lib64 or DIR/lib, e.g. a cross toolkit's "
         "targets/sbsa-linux) instead of the release's CUDA wheels for the target machine.")


def _verify_cached(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    # On the Factory, as --system-cuda: the executor it makes hashes every cached wheel in full.
    if value:
        ctx.find_object(Factory).verify = True


verify_option = click.option(
    "--verify", is_flag=True, expose_value=False, callback=_verify_cached,
    help="Hash every cached wheel in full before trusting it (default: size and mtime as published, a full "
         "hash when they differ); a wheel that changed is moved to attic/ and built again.")


def plan_inputs(command):
    """The options every planning command takes: release, targets, --env, --source-dir, --adopt."""
    for decorate in reversed((release_option, targets_argument, env_option, secret_env_option, source_dir_option,
                              adopt_option, system_cuda_option, cross_option, target_cuda_option)):
        command = decorate(command)
    return command


def finite_wait(_ctx: click.Context, _param: click.Parameter, value: float | None) -> float | None:
    # FloatRange(min=0) lets nan (every comparison false: a wait without end) and inf through.
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number of seconds; give a finite number >= 0")
    return value
