"""`cache list` and `cache gc`: what the build cache holds, and removing what no build needs."""

from __future__ import annotations

from pathlib import Path

import click

from ..core.errors import FactoryError
from ..pipeline.factory import Factory
from ..planning.release import list_releases
from .options import (
    say,
)


@click.group("cache")
def cache_group() -> None:
    """What the build cache holds, and removing what no build needs (gc)."""


@cache_group.command("list")
@click.pass_obj
def cache_list(factory: Factory) -> None:
    """Show each area of the cache with its size, the work trees and staged copies (in use or not),
    and the wheelhouse's attic."""
    from ..pipeline.cachestore import CacheStore, busy, fmt_bytes, tree_size

    factory.wheelhouse.check_root()  # a --wheelhouse that is a file: bad input, before anything is listed
    store = CacheStore(factory.cache_dir, factory.wheelhouse)
    rows = store.usage()
    click.echo(f"cache {factory.cache_dir}: {fmt_bytes(sum(r[3] for r in rows))}")
    for label, _path, count, size in rows:
        click.echo(f"  {label:<28} {count:>5}  {fmt_bytes(size):>10}")
    for tree, lock in store.work_trees():
        click.echo(f"  work    {fmt_bytes(tree_size(tree)):>10}  {tree.name}{'  (in use)' if busy(lock) else ''}")
    for staged in sorted(store.staged.iterdir()) if store.staged.is_dir() else ():
        click.echo(f"  staged  {fmt_bytes(tree_size(staged)):>10}  {staged.name}")
    attic = store.attic_entries()
    if attic:
        gone = [p for p, superseded in attic if superseded]
        click.echo(f"wheelhouse attic {factory.wheelhouse.root / 'attic'}: {len(attic)} wheel(s), "
                   f"{fmt_bytes(sum(p.lstat().st_size for p, _ in attic))}; {len(gone)} superseded "
                   f"({fmt_bytes(sum(p.stat().st_size for p in gone))})")


@cache_group.command("gc")
@click.option("--dry-run", is_flag=True, help="Show what would be removed and the bytes freed; remove nothing.")
@click.option("--release", "-r", "releases", multiple=True, metavar="NAME|PATH",
              help="A release whose sources to keep besides the shipped and --recipes-dir ones (repeatable; "
                   "a release file kept elsewhere must be named here, or its sources are removed).")
@click.option("--keep-sources", is_flag=True, help="Leave the source trees and archives alone.")
@click.option("--keep-built-from", "built", multiple=True, type=click.Path(path_type=Path), metavar="PATH",
              help="Also keep the sources the wheels of this wheelhouse (a directory or its manifest.json) or lock "
                   "(locks/<release>.json) were built from (repeatable; the --wheelhouse in use always counts).")
@click.pass_obj
def cache_gc(factory: Factory, dry_run: bool, releases: tuple[str, ...], keep_sources: bool,
             built: tuple[Path, ...]) -> None:
    """Remove work trees, staged copies, superseded attic entries and the sources that neither a known
    release nor a wheel of the wheelhouse uses. What a running build holds is skipped with a message;
    published wheels are never touched."""
    from ..pipeline.cachestore import CacheStore, built_from, fmt_bytes, kept_by

    factory.wheelhouse.check_root()  # a --wheelhouse that is a file: bad input, before anything goes
    for name in releases:
        factory.release(name)  # a --release that does not exist is bad input (exit 2), before anything goes
    from_wheels = set().union(*(kept_by(p) for p in built))  # a bad PATH is bad input, before anything goes
    keep, note = None, "--keep-sources"
    if not keep_sources:
        names = list(dict.fromkeys([*list_releases(factory.recipes_dirs), *releases]))
        try:
            keep, planned = factory.sources_in_use(names)
            from_wheels |= built_from(factory.wheelhouse.manifest())
            keep |= from_wheels
            say(f"sources kept: those of {len(planned)} release(s) ({', '.join(planned)}) and the "
                  f"{len(from_wheels)} the wheels of {factory.wheelhouse.root}"
                  f"{' and --keep-built-from' if built else ''} were built from")
        except FactoryError as e:  # a release that cannot be planned here: its sources are unknown
            note = f"cannot tell which sources the releases use: {e}"
    store = CacheStore(factory.cache_dir, factory.wheelhouse)
    gc_plan = store.plan_gc(keep, note)
    for line in gc_plan.skipped:
        say(line)
    for item in gc_plan.remove:
        click.echo(f"{'would remove' if dry_run else 'remove'} {item.kind:<11} {fmt_bytes(item.size):>10}  "
                   f"{item.path}  ({item.why})")
    if dry_run:
        say(f"--dry-run: {len(gc_plan.remove)} item(s), {fmt_bytes(gc_plan.bytes)} would be freed; nothing removed")
        return
    freed = store.run_gc(gc_plan, say)
    say(f"freed {fmt_bytes(freed)} ({len(gc_plan.remove)} item(s))")
