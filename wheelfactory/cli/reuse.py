"""`lock` and `venv`: the release's locked closure, and a virtual environment installed from it."""

from __future__ import annotations

from pathlib import Path

import click

from ..lock.closure import lock_paths, lock_release
from ..lock.one_cuda import load_cuda_wheels
from ..lock.venv import create_venv
from ..pipeline.executor import find_python
from ..pipeline.factory import Factory
from ..run.runner import Runner
from ..toolchain.installer import uv_cache_dir
from .options import (
    release_option,
    say,
    say_lock_holder,
    system_cuda_option,
)


@click.command()
@release_option
@system_cuda_option
@click.option("--offline", is_flag=True, envvar="WHEELFACTORY_OFFLINE",
              help="Resolve from the wheelhouse alone; download nothing.")
@click.option("--python", help="Interpreter of the target Python version (default: python<release version>).")
@click.option("--verbose", "-v", is_flag=True, help="Echo pip's output as well as logging it.")
@click.option("--refresh", is_flag=True, help="Resolve again although nothing the lock was made from changed "
                                               "(newer versions of dependencies on the index).")
@click.pass_obj
def lock(factory: Factory, release: str, offline: bool, python: str | None, verbose: bool, refresh: bool) -> None:
    """Resolve the release's complete runtime closure into the wheelhouse and write its lock file."""
    rel = factory.release(release)
    p = factory.plan(rel)
    runner = Runner("lock", factory.cache.log(f"lock-{rel.name}"), verbose=verbose)
    with factory.wheelhouse.lock(on_wait=say_lock_holder):
        locked = lock_release(p, factory.wheelhouse, runner, find_python(rel.target.python, python),
                              factory.index_url, offline=offline, refresh=refresh,
                              cuda_wheels=load_cuda_wheels(factory.data_root("cuda_wheels.toml") / "data" /
                                                           "cuda_wheels.toml"))
    json_path, txt_path = lock_paths(factory.wheelhouse, rel.name)
    if locked.up_to_date:
        say(f"lock of {rel.name} up to date ({len(locked.packages)} packages; nothing it was made from changed): "
              f"{txt_path}; --refresh resolves again")
        return
    ours = sum(1 for pkg in locked.packages if pkg.component)
    say(f"locked {len(locked.packages)} packages ({ours} from the factory, {len(locked.packages) - ours} from "
          f"PyPI) -> {txt_path}")


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@release_option
@click.option("--python", help="Interpreter of the target Python version (default: python<release version>).")
@click.option("--verbose", "-v", is_flag=True, help="Echo pip's output as well as logging it.")
@click.option("--pip", "use_pip", is_flag=True, help="Install with pip instead of uv (the default; pip when no "
                                                      "uv is found).")
@click.option("--clear", is_flag=True, help="Replace a virtual environment already at PATH (as `python -m venv "
                                            "--clear`; a directory that is not a venv is left alone).")
@click.pass_obj
def venv(factory: Factory, path: Path, release: str, python: str | None, verbose: bool, use_pip: bool,
         clear: bool) -> None:
    """Create a virtual environment at PATH from the release's lock, offline, and smoke-test it."""
    rel = factory.release(release)
    runner = Runner("venv", factory.cache.log(f"venv-{rel.name}"), verbose=verbose)
    ran = create_venv(path.expanduser().absolute(), rel.name, factory.wheelhouse, factory.recipes,
                      find_python(rel.target.python, python), runner, use_uv=not use_pip,
                      uv_cache=uv_cache_dir(factory.cache_dir), clear=clear)
    say(f"venv ready at {path} ({len(ran)} smoke check(s) and pip check passed); "
          f"activate with: source {path}/bin/activate")
