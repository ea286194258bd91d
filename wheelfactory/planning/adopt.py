"""Adopting an existing wheel instead of building: what is accepted, checked twice.

When the release is loaded, the adopt spec itself: a requirement must parse, name one of the
recipe's outputs and admit the release's version; a wheel path or URL must have a wheel's file
name. When the wheel is in hand (downloaded or found), before anything is published: its name,
version, Python/ABI tags and platform tag must fit the component and the target. A wrong wheel
would otherwise be published as the release's component and everything downstream built on it.

Version rule: a release version without a local label (2.13.0) accepts a wheel whose public
version is equal (2.13.0, 2.13.0+cpu, 2.13.0+cu130): local labels name builds of that version.
A release version with a local label (2.13.0+cu130) accepts exactly that version.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from ..core.errors import InputError
from ..core.grammar import check_text
from ..sources.kinds import is_local_wheel
from ..sources.transport import ADOPT_SCHEMES, check_url, scheme_of
from .recipe import Recipe, Target

_ANY_PLATFORM = "PLATFORM"  # stands for every platform tag the target accepts


def _outputs(recipe: Recipe) -> set[str]:
    return {canonicalize_name(o) for o in recipe.outputs}


def _wheel_filename(spec: str) -> str:
    return Path(spec).name if is_local_wheel(spec) else Path(unquote(urlparse(spec).path)).name


def check_adopt_spec(spec: str, recipe: Recipe, where: str, version: str | None = None) -> str:
    """The adopt spec (a URL normalised), or InputError naming where: a spec that cannot give this
    component's wheel, a URL pip would fetch over plain http, text that is no requirement."""
    outputs = ", ".join(recipe.outputs)
    check_text(spec, where)
    is_url = scheme_of(spec) is not None
    if is_url:
        spec = check_url(spec, False, where, "download the wheel yourself and adopt its path", ADOPT_SCHEMES)
    if is_url or is_local_wheel(spec):
        name = _wheel_filename(spec)
        try:
            dist = parse_wheel_filename(name)[0]
        except InvalidWheelFilename as e:
            raise InputError(f"{where}: {spec!r} is not a wheel file name: {e}") from None
        if dist not in _outputs(recipe):
            raise InputError(f"{where}: {name} is a wheel of {dist!r}; {recipe.name} adopts one of: {outputs}")
        return spec
    try:
        req = Requirement(spec)
    except InvalidRequirement as e:
        raise InputError(f"{where}: {spec!r} is neither a wheel path, a URL nor a requirement such as "
                         f"'{recipe.outputs[0]}==<version>': {e}") from None
    if canonicalize_name(req.name) not in _outputs(recipe):
        raise InputError(f"{where}: requirement {spec!r} names {req.name!r}; {recipe.name} adopts one of: {outputs}")
    if req.url:  # NAME @ URL: pip fetches it as it would any adopted URL
        check_url(req.url, False, where, "download the wheel yourself and adopt its path", ADOPT_SCHEMES)
    if version is not None and req.specifier and (wanted := _version(version, recipe)) is not None:
        if not req.specifier.contains(wanted, prereleases=True):
            raise InputError(f"{where}: requirement {spec!r} excludes the release's version {version}")
    return spec


def _version(version: str, recipe: Recipe) -> Version | None:
    # An upstream tag form such as NCCL's 2.29.2-1 carries a packaging revision after the dash
    # that its wheels (2.29.2) do not.
    text = version.split("-")[0] if recipe.version_pattern else version
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _platform_ok(platform: str, target: Target) -> bool:
    """A platform tag a wheel may have to install on the target: its own, linux_<machine>, any
    manylinux of the machine (the wheelhouse serves glibc Linux), or any."""
    machine = re.escape(target.machine)
    return (platform in ("any", target.platform)
            or re.fullmatch(rf"(linux|manylinux(1|2010|2014|_\d+_\d+))_{machine}", platform) is not None)


def _python_tags(target: Target) -> set[Tag]:
    """Interpreter/ABI combinations the target Python loads, with the platform left open."""
    major, minor = (int(p) for p in target.python.split("."))
    return (set(cpython_tags((major, minor), abis=[target.python_tag], platforms=[_ANY_PLATFORM]))
            | set(compatible_tags((major, minor), target.python_tag, platforms=[_ANY_PLATFORM])))


def check_adopted_wheel(wheel: Path, component: str, version: str, recipe: Recipe, target: Target) -> None:
    """Refuse (InputError, before anything is published) a wheel that is not this component at the
    release's version for the target's Python and platform."""
    where = f"[{component}] adopted wheel {wheel.name}"
    try:
        dist, wheel_version, _build, tags = parse_wheel_filename(wheel.name)
    except InvalidWheelFilename as e:
        raise InputError(f"{where}: not a valid wheel file name: {e}; nothing was published") from None
    if dist not in _outputs(recipe):
        raise InputError(f"{where}: is a wheel of {dist!r}; {component} adopts one of: "
                         f"{', '.join(recipe.outputs)}; nothing was published")
    wanted = _version(version, recipe)
    if wanted is None:
        raise InputError(f"{where}: the release's version {version!r} cannot be compared with a wheel's; "
                         "nothing was published")
    ok = wheel_version == wanted if wanted.local else Version(wheel_version.public) == wanted
    if not ok:
        rule = "exactly" if wanted.local else "(a local label such as +cu130 may follow)"
        raise InputError(f"{where}: version {wheel_version}, and the release's {component} is {version} {rule}; "
                         "adopt the wheel of that version or change the release's version; nothing was published")
    accepted = _python_tags(target)
    fits = [t for t in tags if _platform_ok(t.platform, target)
            and Tag(t.interpreter, t.abi, t.platform if t.platform == "any" else _ANY_PLATFORM) in accepted]
    if not fits:
        shown = ", ".join(sorted(str(t) for t in tags))
        raise InputError(f"{where}: tags {shown} do not install on the target (Python {target.python}, "
                         f"{target.platform}); nothing was published")
