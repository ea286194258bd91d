"""Repacking an installed distribution into a wheel: adopting what an interpreter already has.

NVIDIA's NGC containers carry a PyTorch built for the GB10 that is never published as a wheel;
a GPU machine may have a torch installed that the factory should build against. Either way the
distribution exists only as files in some site-packages. Its RECORD lists them with hashes and
its WHEEL file the tags it was built with, which is everything a wheel needs:

- every file of RECORD is read back and its hash checked (a file edited after installation, or
  missing, is refused: the wheel would not be what was installed);
- files outside site-packages (console scripts in bin/, data files) go to the wheel's
  `<name>.data/scripts` and `.data/data` directories, as installers expect;
- what the installer wrote (INSTALLER, REQUESTED, direct_url.json, RECORD, byte-code caches) is
  left out and RECORD written anew;
- editable installs and `.egg-info` installs are refused: they have no installed files to pack.

The interpreter is asked (in a subprocess, through the runner) where the distribution lives and
what its tags are; the files are then read directly.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from wheel.wheelfile import WheelFile

from ..core.cachelayout import CacheLayout
from ..core.errors import BuildError, InputError
from ..planning.recipe import LoadedRecipe
from ..run.runner import Runner
from ..toolchain.pydeps import pydeps_dir

# Run by the target interpreter: where the distribution is, its RECORD, WHEEL, requirements,
# and the install scheme's directories (to place files outside site-packages).
_PROBE = r"""
import json, sys, sysconfig
from importlib import metadata
name = sys.argv[1]
try:
    dist = metadata.distribution(name)
except metadata.PackageNotFoundError:
    print(json.dumps({"missing": name})); sys.exit(0)
path = getattr(dist, "_path", None)
import os, platform
# PEP 508 marker environment of this interpreter (packaging's default_environment, by hand:
# the interpreter need not have packaging installed).
env = {"implementation_name": sys.implementation.name,
       "implementation_version": "%d.%d.%d" % sys.implementation.version[:3],
       "os_name": os.name, "platform_machine": platform.machine(), "platform_release": platform.release(),
       "platform_system": platform.system(), "platform_version": platform.version(),
       "python_full_version": platform.python_version(),
       "platform_python_implementation": platform.python_implementation(),
       "python_version": "%d.%d" % sys.version_info[:2], "sys_platform": sys.platform}
print(json.dumps({
    "name": dist.metadata["Name"], "version": dist.version,
    "dist_info": str(path) if path else None,
    "record": dist.read_text("RECORD"), "wheel": dist.read_text("WHEEL"),
    "direct_url": dist.read_text("direct_url.json"),
    "requires": dist.requires or [],
    "paths": {k: sysconfig.get_path(k) for k in ("purelib", "platlib", "scripts", "data")},
    "env": env,
}))
"""

# Written by the installer, not part of the distribution.
_INSTALLER_FILES = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}


@dataclass(frozen=True)
class Installed:
    name: str
    version: str
    dist_info: Path
    record: str
    wheel: str
    requires: tuple[str, ...]
    paths: dict[str, str]
    env: dict[str, str]

    @property
    def tags(self) -> list[str]:
        return [line.split(":", 1)[1].strip() for line in self.wheel.splitlines() if line.startswith("Tag:")]

    @property
    def wheel_name(self) -> str:
        tags = self.tags
        pys = sorted({t.split("-")[0] for t in tags})
        abis = sorted({t.split("-")[1] for t in tags})
        plats = sorted({t.split("-")[2] for t in tags})
        tag = "-".join(".".join(x) for x in (pys, abis, plats))
        return f"{canonicalize_name(self.name).replace('-', '_')}-{self.version}-{tag}.whl"


def probe(python: str, name: str, runner: Runner) -> Installed:
    """Ask an interpreter about one installed distribution."""
    out = runner.run([python, "-c", _PROBE, name], capture=True)
    try:
        data = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BuildError(f"{python} did not answer about {name!r}: {out[-500:]}") from None
    if "missing" in data:
        raise InputError(f"{python} has no installed distribution {name!r}; install it there or adopt a wheel")
    if not data["dist_info"] or not data["dist_info"].endswith(".dist-info"):
        raise InputError(f"{name} in {python} is an .egg-info install ({data['dist_info']}): it has no RECORD "
                         "of its files; reinstall it with pip, or adopt a wheel")
    if data["direct_url"] and json.loads(data["direct_url"]).get("dir_info", {}).get("editable"):
        raise InputError(f"{name} in {python} is an editable install: its code lives in a source tree, not in "
                         "site-packages; build it or adopt a wheel instead")
    if not data["record"] or not data["wheel"]:
        raise InputError(f"{name} in {python} has no RECORD or WHEEL file ({data['dist_info']}); it was not "
                         "installed from a wheel")
    return Installed(data["name"], data["version"], Path(data["dist_info"]), data["record"], data["wheel"],
                     tuple(data["requires"]), data["paths"], data["env"])


def _b64_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()


def _arcname(inst: Installed, site: Path, path: Path) -> str | None:
    """Where an installed file goes in the wheel, or None to leave it out."""
    data_dir = f"{canonicalize_name(inst.name).replace('-', '_')}-{inst.version}.data"
    resolved = path.resolve()
    if site in resolved.parents:
        rel = resolved.relative_to(site)
        if "__pycache__" in rel.parts:
            return None
        if rel.parts[0] == inst.dist_info.name and rel.name in _INSTALLER_FILES:
            return None
        return rel.as_posix()
    scripts = Path(inst.paths["scripts"]).resolve()
    if scripts in resolved.parents:
        return f"{data_dir}/scripts/{resolved.relative_to(scripts).as_posix()}"
    data = Path(inst.paths["data"]).resolve()
    if data in resolved.parents:
        return f"{data_dir}/data/{resolved.relative_to(data).as_posix()}"
    raise BuildError(f"{inst.name}: installed file {path} is outside site-packages, scripts and data; "
                     "it cannot be placed in a wheel")


def repack(inst: Installed, out_dir: Path) -> Path:
    """Write the installed distribution as a wheel in out_dir, every file's hash checked."""
    site = inst.dist_info.parent.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / inst.wheel_name
    tmp_dir = Path(tempfile.mkdtemp(prefix=".repack-", dir=out_dir))
    tmp = tmp_dir / final.name  # WheelFile checks the name: a temporary directory, not a temporary name
    os.environ.setdefault("SOURCE_DATE_EPOCH", "315532800")
    problems: list[str] = []
    try:
        with WheelFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as wf:
            # Fast deflate: a repacked torch with its CUDA libraries is gigabytes, and the wheel
            # only carries an installed tree to the next install (level 1: ~3x faster, ~10 % larger).
            wf.compresslevel = 1
            for line in inst.record.splitlines():
                if not line.strip():
                    continue
                fields = line.rsplit(",", 2)
                rel, digest = fields[0].strip('"'), fields[1] if len(fields) > 1 else ""
                path = site / rel
                arc = _arcname(inst, site, path)
                if arc is None:
                    continue
                if not path.is_file():
                    problems.append(f"missing: {rel}")
                    continue
                if digest:
                    algo, _, want = digest.partition("=")
                    if algo != "sha256" or _b64_sha256(path) != want:
                        problems.append(f"changed since installation: {rel}")
                        continue
                wf.write(str(path), arc)
        if problems:
            more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
            shown = "\n  ".join(problems[:20]) + more
            raise BuildError(f"{inst.name} {inst.version} in {site} does not match its RECORD; a repacked wheel "
                             f"would not be what was installed:\n  {shown}")
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return final


def requirement_names(inst: Installed, extras: frozenset[str] = frozenset()) -> list[tuple[str, frozenset[str]]]:
    """What an installed distribution requires in its interpreter, markers evaluated, with the
    extras asked of it (torch requires cuda-toolkit[cublas,cudart,...]: the extras bring the
    NVIDIA libraries)."""
    names = []
    for text in inst.requires:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is None or any(req.marker.evaluate(inst.env | {"extra": e}) for e in extras | {""}):
            names.append((req.name, frozenset(req.extras)))
    return names


def repack_installed(python: str, name: str, out_dir: Path, runner: Runner, *,
                     with_requires: bool = False) -> list[Path]:
    """Repack `name` (and, with_requires, every installed distribution it requires, transitively)."""
    done: dict[str, Path] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[str, frozenset[str]]] = [(name, frozenset())]
    while todo:
        current, extras = todo.pop(0)
        current = canonicalize_name(current)
        if (current, extras) in seen:
            continue
        seen.add((current, extras))
        inst = probe(python, current, runner)
        if current not in done:
            done[current] = repack(inst, out_dir)
            runner.note(f"repacked {inst.name} {inst.version} from {inst.dist_info} -> {done[current].name}")
        if with_requires:
            todo += requirement_names(inst, extras)
    return list(done.values())


def repack_for_adoption(python: str, component: str, recipes: Mapping[str, LoadedRecipe], cache: CacheLayout,
                        index_url: str, with_requires: bool, echo: Callable[[str], None]) -> Path:
    """`adopt --from-python`: COMPONENT's first output as installed in PYTHON, repacked into the cache;
    with_requires, the installed distributions it requires too, into the build requirements of
    INDEX_URL's builds (pydeps/), so that builds against it need no index."""
    if shutil.which(python) is None and not Path(python).is_file():
        raise InputError(f"--from-python {python!r}: no such interpreter")
    outputs = recipes[component].recipe.outputs if component in recipes else ()
    if not outputs:
        raise InputError(f"unknown component {component!r}; known: {', '.join(sorted(recipes))}")
    runner = Runner(component, cache.log(f"adopt-{component}"))
    wheels = repack_installed(python, outputs[0], cache.installed(component), runner, with_requires=with_requires)
    main_wheel, requires = wheels[0], wheels[1:]
    pydeps = pydeps_dir(cache.root, index_url)  # offered to builds against this index only
    pydeps.mkdir(parents=True, exist_ok=True)
    for wheel in requires:
        shutil.move(str(wheel), pydeps / wheel.name)
    echo(f"repacked {main_wheel.name} from {python}" + (f" and {len(requires)} installed requirement(s) into "
                                                       f"{pydeps}" if requires else ""))
    return main_wheel
