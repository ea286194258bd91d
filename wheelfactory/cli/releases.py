"""`release derive`, `release check` and `release schema`."""

from __future__ import annotations

import json

import click

from ..core.errors import FactoryError
from ..core.grammar import check_git_ref, check_git_url, check_release_name, check_version_text
from ..pipeline.factory import Factory
from ..planning.release import list_releases
from ..sources.transport import check_git_transport
from .options import (
    say,
)


@click.group("release")
def release_group() -> None:
    """Derive releases from upstream, check shipped ones against it, print the release file schema."""


def _check_upstream_gits(vllm_git: str, triton_git: str) -> None:
    """--vllm-git and --triton-git of `release derive` and `release check`, checked as a release
    file's git source is (exit 2 before anything is fetched). They have no allow_insecure, so a
    plain http:// or git:// repository is refused, as fetching it would be later."""
    for option, url in (("--vllm-git", vllm_git), ("--triton-git", triton_git)):
        check_git_transport(check_git_url(url, option), False, option, "clone it yourself and pass its path")


def _upstream(factory: Factory, vllm_git: str, triton_git: str):
    from ..derive.upstream import LiveUpstream  # imported here: only these commands read upstream

    return LiveUpstream(factory.cache_dir, factory.index_url, vllm_git, triton_git)


@release_group.command("derive")
@click.option("--vllm", "vllm_version", required=True, metavar="VERSION", help="vLLM version, e.g. 0.33.0.")
@click.option("--transformers", "transformers_major", type=click.IntRange(4, 5), default=5, show_default=True,
              help="Transformers major of the release (-t4 or -t5); refused if vLLM's range excludes it.")
@click.option("--ref", help="Read vLLM at this git tag or commit instead of the version's sdist (needs the git "
                            "repository to be reachable).")
@click.option("--cuda", help="The release's CUDA, e.g. 13.1.0 (default: the --extends release's, else the CUDA of "
                             "torch's own build).")
@click.option("--nccl", help="NCCL version in its tag form, e.g. 2.30.7-1 (default: torch's nvidia-nccl-cu13 pin).")
@click.option("--extends", "extends", help="Write the release as a child of this one (only what differs).")
@click.option("--name", help="Release name (default: <vllm>-t<transformers major>).")
@click.option("--vllm-git", default="https://github.com/vllm-project/vllm.git", show_default=True)
@click.option("--triton-git", default="https://github.com/triton-lang/triton.git", show_default=True)
@click.option("--force", is_flag=True, help="Replace existing data entries and release files that differ.")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.option("--data-only", is_flag=True, help="Write the recipe data entries only, no release file.")
@click.pass_obj
def release_derive(factory: Factory, vllm_version: str, transformers_major: int, ref: str | None, cuda: str | None,
                   nccl: str | None, extends: str | None, name: str | None, vllm_git: str, triton_git: str,
                   force: bool, dry_run: bool, data_only: bool) -> None:
    """Derive a release of vLLM VERSION and its recipe data from upstream, printing every value with
    its source; writes recipes/releases/<name>.toml and appends to recipes/data/*.toml."""
    # Each value becomes a file name, TOML text or a git argument: checked like a release's own.
    for option, version in (("--vllm", vllm_version), ("--cuda", cuda), ("--nccl", nccl)):
        if version is not None:
            check_version_text(version, option)
    if name:
        check_release_name(name, "--name")
    if ref:
        check_git_ref(ref, "--ref")
    _check_upstream_gits(vllm_git, triton_git)
    from ..derive.derivation import Request, derive, plan_writes
    from ..planning.release import releases_dir

    parent = factory.release(extends) if extends else None
    # The data goes where the recipes that read it live (the shipped data/ unless --recipes-dir has
    # its own); the release file goes into the top recipes directory (--recipes-dir when given).
    d = derive(_upstream(factory, vllm_git, triton_git), factory.data_root("vllm.toml"),
               Request(vllm_version, transformers_major, ref, cuda, nccl, parent, name))
    click.echo(d.report())
    if data_only:
        d.releases.clear()
    writes = plan_writes(d, factory.data_root("vllm.toml"), releases_dir(factory.recipes_dir), force)
    blocked = []
    for w in writes:
        if w.status == "same":
            click.echo(f"unchanged: {w.path}")
            continue
        click.echo(w.diff(), nl=False)
        if w.status == "differs":
            blocked.append(w.path)
        elif not dry_run:
            w.path.parent.mkdir(parents=True, exist_ok=True)
            w.path.write_text(w.new)
            click.echo(f"wrote {w.path}")
    if dry_run:
        say("--dry-run: nothing written")
    if blocked:
        raise FactoryError(f"not written, they differ from what was derived (diff above): "
                           f"{', '.join(map(str, blocked))}; pass --force to replace them")
    if d.missing:
        say(f"{len(d.missing)} value(s) NOT DERIVED (listed above, with why)")


@release_group.command("check")
@click.argument("releases", nargs=-1)
@click.option("--vllm-git", default="https://github.com/vllm-project/vllm.git", show_default=True)
@click.option("--triton-git", default="https://github.com/triton-lang/triton.git", show_default=True)
@click.pass_obj
def release_check(factory: Factory, releases: tuple[str, ...], vllm_git: str, triton_git: str) -> None:
    """Re-derive the upstream data of RELEASES (default: every shipped release) and report drift:
    exit 1 on drift, 0 when everything that could be read matches."""
    _check_upstream_gits(vllm_git, triton_git)
    from ..derive.derivation import check_release

    up = _upstream(factory, vllm_git, triton_git)
    drift = unverified = 0
    for name in releases or list_releases(factory.recipes_dirs):
        result = check_release(up, factory.data_root("vllm.toml"), factory.release(name))
        for line in result.checked:
            click.echo(f"{name}: ok      {line}")
        for line in result.drift:
            click.echo(f"{name}: DRIFT   {line}")
        for line in result.unverified:
            click.echo(f"{name}: UNREAD  {line}")
        drift += len(result.drift)
        unverified += len(result.unverified)
    summary = f"{drift} drift, {unverified} not readable here"
    if drift:
        raise FactoryError(f"release check: {summary}")
    say(f"release check: clean ({summary})")


@release_group.command("schema")
@click.pass_obj
def release_schema_cmd(factory: Factory) -> None:
    """Print the JSON Schema of release files for the recipes in use (the shipped ones and
    --recipes-dir): keys, source tables, each component's version form and declared options.
    Editors check a release against it with `#:schema PATH` on its first line (taplo, Even Better TOML)."""
    from ..planning.release_schema import release_schema

    click.echo(json.dumps(release_schema(factory.recipes), indent=2))
