"""One version per package family in a lock: FlashInfer's three packages move together.

flashinfer-python (the library and its JIT), flashinfer-cubin (prebuilt kernels) and
flashinfer-jit-cache (AOT-compiled modules) are one release split into wheels, and each checks the
others at import: a cubin or jit-cache package of another version than flashinfer-python
crash-looped vLLM >= 0.27 on GB10 (flashinfer-ai/flashinfer#4781). So `lock` gives uv constraints
that hold the others at the version the release fixes (a factory-built or adopted wheel, or a pin),
and refuses a resolution in which they differ (exit 1, naming the packages and versions).
Versions compare without their local part: flashinfer-jit-cache 0.6.2+cu130 is FlashInfer 0.6.2.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from ..core.errors import BuildError

# family -> its packages (canonical names), the first the one whose version names the family's
FAMILIES: Mapping[str, tuple[str, ...]] = {
    "FlashInfer": ("flashinfer-python", "flashinfer-cubin", "flashinfer-jit-cache"),
}


def public(version: str) -> str:
    """'0.6.2+cu130' -> '0.6.2' (a version that does not parse is compared as written)."""
    try:
        return Version(version).public
    except InvalidVersion:
        return version


def _members(packages: Iterable[tuple[str, str]]) -> dict[str, dict[str, str]]:
    """family -> {package: version} of the given (name, version) pairs that belong to one."""
    out: dict[str, dict[str, str]] = {}
    for name, version in packages:
        cname = canonicalize_name(name)
        for family, names in FAMILIES.items():
            if cname in names:
                out.setdefault(family, {})[cname] = version
    return out


def _skew(family: str, found: Mapping[str, str]) -> str | None:
    if len({public(v) for v in found.values()}) <= 1:
        return None
    names = FAMILIES[family]
    listed = ", ".join(f"{n} {found[n]}" for n in names if n in found)
    return f"{family}'s packages must share one version, but {listed}"


def family_constraints(fixed: Iterable[tuple[str, str]], skip: Iterable[str] = ()) -> list[str]:
    """uv constraint lines holding each family's other packages at the version the release fixes for
    one of them (`fixed`: its component wheels and pins as (name, version)); `skip`: names whose
    version the release decides otherwise ([overrides]). BuildError when the release itself fixes two
    members of a family at different versions."""
    skipped = {canonicalize_name(n) for n in skip}
    lines = []
    for family, found in sorted(_members(fixed).items()):
        if (why := _skew(family, found)) is not None:
            raise BuildError(f"{why} in the release's own wheels and pins; give them one version")
        version = public(next(iter(found.values())))
        lines += [f"{n}=={version}" for n in FAMILIES[family] if n not in found and n not in skipped]
    return lines


def refuse_skew(release: str, locked: Iterable[tuple[str, str]]) -> None:
    """BuildError (exit 1) naming the packages of a family that a resolution locked at different versions."""
    problems = [why for family, found in sorted(_members(locked).items()) if (why := _skew(family, found))]
    if problems:
        raise BuildError(f"the resolution of release {release!r} is refused: {'; '.join(problems)} "
                         "(a cubin or jit-cache package of another version than flashinfer-python fails at "
                         "run time, flashinfer-ai/flashinfer#4781). Pin them to one version in the release.")
