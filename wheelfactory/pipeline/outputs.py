"""What a step hands to the wheelhouse, checked: the wheels a recipe declares (no more, no fewer),
their device code against the release's arch list, and the wheel an adopting release names."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from packaging.utils import canonicalize_name

from ..core.cachelayout import CacheLayout
from ..core.errors import BuildError, InputError
from ..cuda.audit import audit_wheel, judge
from ..cuda.audit import render as render_audit
from ..planning.adopt import check_adopted_wheel
from ..planning.plan import Step
from ..planning.recipe import Recipe, Target
from ..run.runner import Runner
from ..sources.kinds import is_local_wheel
from ..store.wheelmeta import read_wheel


def check_outputs(step: Step, allowed: Sequence[str], required: Sequence[str], wheels: Sequence[Path]) -> None:
    """The wheels' distribution names against the recipe's declared outputs."""
    names = {read_wheel(w).dist for w in wheels}
    extra = names - {canonicalize_name(n) for n in allowed}
    if extra:
        raise BuildError(f"[{step.component}] produced {sorted(extra)}, which the recipe does not declare "
                         f"(outputs: {', '.join(allowed)})")
    missing = {canonicalize_name(n) for n in required} - names
    if missing:
        raise BuildError(f"[{step.component}] declared output(s) {sorted(missing)} were not produced")


def audit_wheels(step: Step, wheels: Sequence[Path], arch_list: Sequence[str], runner: Runner, *,
                 strict: bool, echo: Callable[[str], None]) -> dict[str, object]:
    """Per wheel with device code: bytes per arch and shared object (for the manifest), judged
    against the release's arch list. A built wheel that contradicts it fails (strict); an
    adopted one is the user's choice, so it is reported."""
    found: dict[str, object] = {}
    for wheel in wheels:
        result = audit_wheel(wheel)
        if not result.objects:
            continue
        verdict = judge(result, arch_list)
        found[wheel.name] = result.to_json() | {"verdict": verdict.to_json()}
        for line in render_audit(result, verdict).splitlines():
            runner.note(f"audit: {line}")
        if not verdict.ok:
            problems = "; ".join(f"{o.path}: {', '.join(o.problems())}" for o in verdict.failures)
            message = (f"[{step.component}] {wheel.name} contradicts the release's arch list "
                       f"{';'.join(arch_list)}: {problems}")
            if strict:
                raise BuildError(message + f"\n(`wheelfactory inspect {wheel} --arch "
                                 f"{' --arch '.join(arch_list)}` shows the table)")
            echo(f"warning: {message}")
    return found


def adopted_wheel(step: Step, recipe: Recipe, target: Target, runner: Runner, *, python: str, cache_dir: Path,
                  index_url: str, offline: bool) -> Path:
    """The wheel a release adopts instead of building (a local file, a URL or a requirement),
    downloaded once into <cache>/adopt/<key>/ and checked against the component and target."""
    assert step.adopt is not None
    spec = step.adopt
    if is_local_wheel(spec):
        wheel = Path(spec)
        if not wheel.is_file():
            raise InputError(f"[{step.component}] adopt = {spec!r}: no such wheel file")
    else:
        dest = CacheLayout(cache_dir).adopted(step.key)
        have = list(dest.glob("*.whl")) if dest.exists() else []
        if not have:
            if offline:
                raise BuildError(f"[{step.component}] adopted wheel {spec!r} is not in the cache and --offline "
                                 "forbids downloading; run `wheelfactory fetch` first")
            dest.mkdir(parents=True, exist_ok=True)
            runner.run([python, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                        "--index-url", index_url, "-d", dest, "--", spec])
            have = list(dest.glob("*.whl"))
        if len(have) != 1:
            raise BuildError(f"[{step.component}] adopting {spec!r} gave {len(have)} wheels, expected one")
        wheel = have[0]
    check_outputs(step, recipe.outputs, (), [wheel])
    check_adopted_wheel(wheel, step.component, step.version, recipe, target)
    return wheel
