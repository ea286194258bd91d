"""`wheelfactory images`: build the runtime images of releases from the wheelhouse."""

from __future__ import annotations

from pathlib import Path

import click

from wheelfactory.core.errors import BuildError, InputError
from wheelfactory.lock.closure import lock_paths
from wheelfactory.pipeline.factory import Factory
from wheelfactory.planning.release import list_releases

from .assembler import Assembler, Prepared
from .docker import Docker
from .ncclnet import describe as describe_nccl_net
from .spec import DEFAULT_NAMESPACE, Settings


def _echo(msg: str) -> None:
    click.echo(msg, err=True)


def _releases(factory: Factory, names: tuple[str, ...], all_: bool) -> list[str]:
    """The releases to build: those named, or with --all every shipped release that is locked."""
    if names and all_:
        raise InputError("pass --release or --all, not both")
    if names:
        return list(names)
    if not all_:
        raise InputError("name a release with --release (repeatable), or pass --all")
    chosen = []
    for name in list_releases(factory.recipes_dirs):
        if not factory.release(name).image.get("kind"):
            continue
        if not lock_paths(factory.wheelhouse, name)[0].exists():
            _echo(f"skipping {name}: not locked in {factory.wheelhouse.root}; run `wheelfactory lock --release {name}`")
            continue
        chosen.append(name)
    if not chosen:
        raise InputError(f"no release is locked in {factory.wheelhouse.root}; run `wheelfactory build --release R` "
                         "and `wheelfactory lock --release R` first")
    return chosen


@click.command("images")
@click.option("--release", "-r", "releases", multiple=True,
              help="Release name or path to a release TOML file (repeatable).")
@click.option("--all", "all_", is_flag=True, help="Every release of recipes/releases that is locked in the wheelhouse.")
@click.option("--output-dir", type=click.Path(path_type=Path), default=Path("assemble/out"), show_default=True,
              help="Where Dockerfiles, docker-bake.hcl, build contexts and logs go.")
@click.option("--registry", envvar="WHEELFACTORY_REGISTRY", default="", show_default=True,
              help="Registry prefix of every tag, e.g. ghcr.io/me.")
@click.option("--label-namespace", envvar="WHEELFACTORY_LABEL_NAMESPACE", default=DEFAULT_NAMESPACE,
              show_default=True, help="Namespace of the version and build-key labels.")
@click.option("--repository", help="Repository name instead of the release's [image] repository.")
@click.option("--base-image", help="Build on this base instead of the release's (known in assemble/data/bases.toml).")
@click.option("--max-layer-gb", type=click.FloatRange(min=0.001), default=8.0, show_default=True,
              help="Split a layer group whose wheels install more than this (registries reject layers over 10 GB).")
@click.option("--no-build", is_flag=True, help="Only write the Dockerfiles, bake file and build contexts; a release "
              "without a lock gets a preview from its pins (Dockerfiles and bake file only).")
@click.option("--no-check", is_flag=True, help="Skip the shared-library closure check of the built images.")
@click.option("--network", type=click.Choice(["auto", "host", "default"]), default="auto", show_default=True,
              envvar="WHEELFACTORY_DOCKER_NETWORK", help="The network of RUN steps that install packages (apt); "
              "auto: the engine's default, or the host's on an engine without a default bridge network. Steps "
              "that install only wheels always run with no network.")
@click.option("--docker", "docker_bin", envvar="WHEELFACTORY_DOCKER", default=None,
              help="The docker client (default: /usr/bin/docker when present, else docker on PATH).")
@click.pass_obj
def images(factory: Factory, releases: tuple[str, ...], all_: bool, output_dir: Path, registry: str,
           label_namespace: str, repository: str | None, base_image: str | None, max_layer_gb: float,
           no_build: bool, no_check: bool, network: str, docker_bin: str | None) -> None:
    """Build the runtime images of releases: Dockerfiles that only pip-install the locked wheels."""
    settings = Settings(registry, label_namespace, repository, base_image, int(max_layer_gb * 1e9), network)
    asm = Assembler(factory, settings, output_dir.expanduser().absolute(), Docker(docker_bin), _echo)
    names = _releases(factory, releases, all_)
    prepared: list[Prepared] = []
    for name in names:  # every release is checked before Docker runs
        prepared += asm.prepare(name, preview_without_lock=no_build)
    for p in prepared:
        if p.preview:
            _echo(f"wrote PREVIEW {p.dockerfile} ({len(p.spec.groups)} layer groups, from the release pins, not a "
                  f"locked set) and {p.dockerfile.parent / 'docker-bake.hcl'}")
        else:
            _echo(f"wrote {p.dockerfile} ({len(p.layers)} wheel layers) and {p.dockerfile.parent / 'docker-bake.hcl'}")
    if no_build:
        return
    buildx = asm.require_engine()
    for p in prepared:
        ref = p.spec.ref(settings.registry)
        net = asm.network(p)
        _echo(f"building {ref} on {p.base.ref} ({'buildx' if buildx else 'DOCKER_BUILDKIT=1 ' + asm.docker.binary}, "
              f"network {net or 'default'}{': RUN steps install packages' if p.needs_network else ''})")
        asm.build(p, buildx)
        _echo(f"built {ref} in {p.timings['build_s']:.1f}s (log: {p.log})")
    failed = []
    for p in prepared:
        ref = p.spec.ref(settings.registry)
        if not no_check:
            closure = asm.check_closure(p)
            for w in closure.warnings:
                _echo(f"  warning: {w}")
            for e in closure.errors:
                _echo(f"  error: {e}")
            for note in closure.notes:
                _echo(f"  {note}")
            _echo(f"closure of {ref}: {closure.checked} ELF objects, {len(closure.errors)} missing, "
                  f"{len(closure.warnings)} warning(s) ({p.timings['closure_s']:.1f}s)")
            if not closure.ok:
                failed.append(ref)
            rdma = asm.check_rdma(p)
            if rdma is not None:
                _echo(f"  error: {ref} cannot load rdma-core's libraries as NCCL does: {rdma}")
                failed.append(ref)
            net = asm.check_nccl_net(p)
            if net is not None:
                if "skipped" in net and len(net) == 1:
                    _echo(f"nccl over IB/RoCE of {ref}: skipped: {net['skipped']}")
                else:
                    _echo(f"nccl over IB/RoCE of {ref}: {describe_nccl_net(net)}")
                    if not net.get("ok"):
                        failed.append(ref)
            triton = asm.check_triton(p)
            if triton is not None:
                if triton.get("ok"):
                    what = (f"compiles for sm_121a: cubin {triton.get('cubin_sm')} by ptxas "
                            f"{triton.get('cubin_ptxas')} ({triton.get('ptxas')})")
                else:
                    what = f"FAILED: {triton.get('error')}"
                _echo(f"triton {p.triton} of {ref}: {what} ({p.timings['triton_s']:.1f}s)")
                if not triton.get("ok"):
                    failed.append(ref)
        for line in asm.size_report(p).lines():
            click.echo(line)
    if failed:
        raise BuildError(f"the image checks failed for {', '.join(failed)}: a shared library is missing from "
                         "the image, NCCL's rdma-core or IB plugin does not load, or its Triton cannot compile "
                         "for sm_121a (see the errors above)")


