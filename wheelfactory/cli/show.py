"""`list` and `plan`: what the recipes, releases and wheelhouse hold, and what a build would do."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..pipeline.factory import Factory
from ..planning.plan import CACHED, Plan
from ..planning.release import list_releases
from ..toolchain.crossbuild import CROSS, EMULATED, NATIVE_ONLY
from ..toolchain.toolkit import is_wheel_label, mismatch_warning
from .options import (
    plan_inputs,
)


@click.command("list")
@click.option("--options", "show_options", is_flag=True,
              help="Also show each recipe's options (what a release may set under options = { ... }).")
@click.pass_obj
def list_cmd(factory: Factory, show_options: bool) -> None:
    """Show recipes, releases and what the wheelhouse holds."""
    click.echo("recipes:")
    loaded_recipes = list(factory.recipes.items())
    rows = [(name, ", ".join(lr.recipe.outputs), ", ".join(lr.recipe.depends_on)) for name, lr in loaded_recipes]
    lines = table(("component", "wheels", "after"), rows)
    click.echo(f"  {lines[0]}")
    for line, (_name, loaded) in zip(lines[1:], loaded_recipes, strict=True):
        r = loaded.recipe
        click.echo(f"  {line}")
        for o in r.options if show_options else ():
            default = str(o.default).lower() if o.type is bool else repr(o.default)
            click.echo(f"      options.{o.name} ({o.type.__name__}, default {default}): {o.help}")
    click.echo("releases:")
    for name in list_releases(factory.recipes_dirs):
        click.echo(f"  {name}")
    from ..pipeline.cachestore import fmt_bytes

    manifest = factory.wheelhouse.manifest()
    ours = {f: e for f, e in manifest.items() if e.get("component")}
    deps = {f: e for f, e in manifest.items() if not e.get("component")}
    click.echo(f"wheelhouse {factory.wheelhouse.root}: {len(ours)} factory wheel(s) "
               f"({fmt_bytes(sum(e['size'] for e in ours.values()))}), {len(deps)} dependency wheel(s) from the index "
               f"({fmt_bytes(sum(e['size'] for e in deps.values()))})")
    if ours:
        rows = [(e["component"], e["version"], e.get("origin", "?"), fmt_bytes(e["size"]), f)
                for f, e in sorted(ours.items(), key=lambda fe: (fe[1]["component"], fe[0]))]
        for line in table(("component", "version", "origin", "size", "file"), rows, right=(3,)):
            click.echo(f"  {line}")
    if deps:
        click.echo("dependency wheels (locks' runtime closure, downloaded by `lock`):")
        rows = [(e.get("dist") or f.split("-")[0], e["version"], fmt_bytes(e["size"]), f)
                for f, e in sorted(deps.items())]
        for line in table(("name", "version", "size", "file"), rows, right=(2,)):
            click.echo(f"  {line}")


def table(header: tuple[str, ...], rows: list[tuple[str, ...]], right: tuple[int, ...] = ()) -> list[str]:
    """A header line and one line per row, each column as wide as its widest value (the last one
    left ragged), columns in `right` aligned right."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        cells = [str(v).rjust(w) if i in right else str(v).ljust(w)
                 for i, (v, w) in enumerate(zip(row, widths, strict=True))]
        return ("  ".join(cells[:-1] + [str(row[-1])])).rstrip()

    return [line(header), *(line(r) for r in rows)]


def print_plan(plan: Plan) -> None:
    t = plan.target
    cuda = "toolkit from wheels" if is_wheel_label(t.toolkit) else f"system nvcc: {t.toolkit}"
    click.echo(f"release {plan.release.name}: python {t.python}, CUDA {t.cuda} ({cuda}), "
               f"arch {';'.join(t.cuda_arch_list)}, platform {t.platform}")
    if not is_wheel_label(t.toolkit) and (warning := mismatch_warning(t.cuda, t.toolkit)):
        click.echo(f"  {warning}")
    if t.platform != plan.release.target.platform:
        click.echo(f"  note: the release is meant for {plan.release.target.platform}; wheels built here are "
                   f"{t.platform} (--cross builds them for {plan.release.target.platform})")
    host = plan.build_host
    if host is not None and host.cross and host.machine != t.machine:
        click.echo(f"  cross build on {host.machine} for {t.machine}: target CUDA libraries {host.cross_cuda}; "
                   "mode per step: native, cross (this host's nvcc, the target's compilers and libraries) or "
                   "emulated (runs target code: not in this process)")
    rows = [(f"{i}.", s.action, s.mode or "-", s.component, s.version, s.key[:12],
             f"adopt {s.adopt}" if s.adopt else (s.source.describe() if s.source else ""))
            for i, s in enumerate(plan.steps, 1)]
    lines = table(("#", "action", "mode", "component", "version", "key", "source"), rows, right=(0,))
    click.echo(lines[0])
    for line, s in zip(lines[1:], plan.steps, strict=True):
        click.echo(line)
        if s.mode == EMULATED:
            click.echo(f"      emulated: {NATIVE_ONLY.get(s.component, 'its recipe does not declare CROSS')}")
        elif s.mode == CROSS and s.build_with:
            click.echo(f"      cross: its build venv also needs the target's {', '.join(s.build_with)} wheels "
                       "(imported by its build): not wired yet, a cross build stops before it")
        for tree, patches in s.patches.items():
            click.echo(f"      patches ({tree}): {', '.join(Path(p.name).name for p in patches)}")
        if s.unchecked_archs and s.action != CACHED:
            click.echo(f"      device code NOT CHECKED for {' '.join(s.unchecked_archs)}: {s.component} {s.version}'s "
                       f"configure was never judged for it, so the build may stop there with the device-code table; "
                       f"find out in minutes, before its dependencies' hours: wheelfactory build --release "
                       f"{plan.release.name} {s.component} --until configure (README, Releases)")
        if s.unresolved:
            # Keyed by name until fetch records the commit or sha256; the key changes then.
            click.echo(f"      unresolved: run fetch (keyed by name until fetch records the commit or sha256 of: "
                       f"{', '.join(s.unresolved)}; the key changes then)")
        for k, v in sorted(s.env.items()):
            click.echo(f"      {k}={v}")
    if plan.pins:
        click.echo("pinned from PyPI: " + ", ".join(f"{n}=={v}" for n, v in sorted(plan.pins.items())))
    if plan.overrides:
        click.echo("overrides (win over what other packages declare; `lock` resolves with them):")
        for name, o in plan.overrides.items():
            click.echo(f"  {name}=={o['version']} ({o['kind']}): {o['reason']}")


@click.command()
@plan_inputs
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (the stable contract).")
@click.pass_obj
def plan(factory: Factory, release: str, targets: tuple[str, ...], env: tuple[str, ...],
         source_dirs: tuple[str, ...], adopt: tuple[str, ...], as_json: bool) -> None:
    """Show what would be built for TARGETS (default: the whole release), in order, and what is cached."""
    p = factory.plan(factory.release(release), targets, env, source_dirs, adopt)
    if as_json:
        click.echo(json.dumps(p.to_json(), indent=2))
    else:
        print_plan(p)
