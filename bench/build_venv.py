"""How long filling one build step's venv takes, with pip and with uv (cold and warm cache).

The venv of a build step gets the dependency components' wheels from the wheelhouse and the
build requirements from the cache's pydeps/, exactly as `wheelfactory build` fills it
(stepbuild.StepBuild._install_build_venv). Run after a build of the release, so that the
wheelhouse and pydeps/ hold everything (offline, no index):

    python3 bench/build_venv.py --release tests/releases/ci.toml --component vllm \\
        --wheelhouse wheelhouse --cache-dir ~/.cache/wheelfactory --runs 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from wheelfactory.core.errors import BuildError
from wheelfactory.pipeline.factory import Factory, default_recipes_dir
from wheelfactory.pipeline.stepbuild import dependency_wheels, step_build_requirements
from wheelfactory.run.runner import Runner
from wheelfactory.toolchain.installer import PipInstaller, UvInstaller, find_uv


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--release", required=True)
    ap.add_argument("--component", required=True)
    ap.add_argument("--wheelhouse", type=Path, required=True)
    ap.add_argument("--cache-dir", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--python", default=sys.executable)
    args = ap.parse_args()

    factory = Factory(default_recipes_dir(), args.wheelhouse, args.cache_dir)
    plan = factory.plan(factory.release(args.release))
    step = plan.step(args.component)
    scratch = Path(tempfile.mkdtemp(prefix="wf-bench-venv-"))
    runner = Runner(step.component, scratch / "bench.log")
    assert step.source is not None
    tree = factory.sources.fetch(step.source, runner, offline=True)
    try:
        deps = dependency_wheels(step, plan, factory.wheelhouse)
    except BuildError:
        # The wheelhouse was built by another version of the tool (other keys): the same
        # components' wheels serve a timing just as well.
        manifest = factory.wheelhouse.manifest()
        deps = [factory.wheelhouse.root / name for name, e in manifest.items() if e.get("component") in step.build_with]
    reqs = [str(w) for w in deps]
    reqs += step_build_requirements(step, tree, factory.recipes)
    links = [d for d in (factory.wheelhouse.root, args.cache_dir / "pydeps") if d.is_dir()]
    uv = find_uv()
    print(f"{step.component}: {len(reqs)} requirements ({', '.join(Path(r).name for r in reqs)})")

    def fill(installer, fresh_uv_cache: bool) -> float:
        venv = scratch / "venv"
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([args.python, "-m", "venv", venv], check=True)
        if fresh_uv_cache and isinstance(installer, UvInstaller):
            shutil.rmtree(installer.cache, ignore_errors=True)
        started = time.monotonic()
        installer.install(runner, venv / "bin" / "python", reqs, links, env={"UV_OFFLINE": "1"})
        return time.monotonic() - started

    cases = [("pip", PipInstaller(), False)]
    if uv:
        uv_installer = UvInstaller(uv, scratch / "uv-cache")
        cases += [("uv, cold cache", uv_installer, True), ("uv, warm cache", uv_installer, False)]
    print(f"{'installer':<16} {'min':>8} {'median':>8} {'max':>8}   (seconds, {args.runs} runs)")
    for name, installer, cold in cases:
        times = [fill(installer, cold) for _ in range(args.runs)]
        print(f"{name:<16} {min(times):8.1f} {statistics.median(times):8.1f} {max(times):8.1f}")
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
