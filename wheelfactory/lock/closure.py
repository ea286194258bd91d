"""The locked dependency closure of a release: every runtime wheel, from the wheelhouse alone.

`lock_release` resolves the release's top-level packages (its built and adopted components,
named by their exact wheelhouse files, plus its PyPI pins) with uv against the wheelhouse first
and PyPI second, downloads every missing wheel into the wheelhouse (verified against the
index's hashes), resolves again with no index at all, and writes:

    wheelhouse/locks/<release>.json   name, version, file, sha256, component/origin per package
    wheelhouse/locks/<release>.txt    pip requirements with --hash, for --require-hashes installs

Components are named by file (`torch @ file://...`), never by version: PyPI may publish the
same version (torch 2.10.0 for aarch64 is a CPU build there), and only the file is unambiguous.
A release's [overrides] replace what other packages declare (vLLM 0.14/0.15 declare
transformers<5, the -t5 images run 5.x, as the reference images do; vLLM 0.33.0 pins
torch==2.14.0, a release adopting the official torch 2.14.1 overrides torch); uv resolves them
(`--override`), which pip cannot. An overridden pin becomes `name==version` in the override file,
an overridden component its wheels by file (`torch @ file://...`), the same requirement as the
top-level one, so no other copy of that version can stand in for it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from packaging.utils import canonicalize_name, parse_wheel_filename

from .. import __version__
from ..core.errors import BuildError, InputError
from ..planning.plan import Plan
from ..run.runner import Runner
from ..store.wheelhouse import Wheelhouse, atomic_write_text, check_wheel_name
from ..store.wheelmeta import read_wheel, sha256_file
from ..toolchain.installer import require_uv
from .nccl_floor import check_nccl_floor
from .one_cuda import refuse_mixed, toolkit_constraints
from .one_version import family_constraints, refuse_skew

LOCK_FORMAT = 1


@dataclass(frozen=True)
class LockedPackage:
    name: str  # canonical
    version: str
    filename: str
    sha256: str
    component: str | None  # the factory component that produced it, None for PyPI wheels
    origin: str  # built | adopted | pypi


@dataclass(frozen=True)
class Lock:
    release: str
    python: str
    platform: str
    top_level: tuple[str, ...]
    packages: tuple[LockedPackage, ...]
    overrides: Mapping[str, str] = field(default_factory=dict)  # name -> why the release overrides it
    # sha256 of everything the resolution was given (lock_inputs): the same inputs give the same lock,
    # so `lock` answers "up to date" without resolving again
    inputs_sha256: str = ""
    up_to_date: bool = field(default=False, compare=False)  # this call found it fresh (not written)

    def package(self, name: str) -> LockedPackage:
        cname = canonicalize_name(name)
        for p in self.packages:
            if p.name == cname:
                return p
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {"format": LOCK_FORMAT, "release": self.release, "python": self.python, "platform": self.platform,
                "top_level": list(self.top_level), "overrides": dict(self.overrides),
                "inputs_sha256": self.inputs_sha256, "packages": [p.__dict__ for p in self.packages]}

    def requirements_txt(self) -> str:
        lines = [f"# wheelfactory lock of release {self.release} (python {self.python}, {self.platform})",
                 "# install: pip install --no-index --find-links <wheelhouse> --require-hashes -r <this file>"]
        lines += [f"{p.name}=={p.version} --hash=sha256:{p.sha256}" for p in self.packages]
        return "\n".join(lines) + "\n"


def lock_paths(wheelhouse: Wheelhouse, release: str) -> tuple[Path, Path]:
    return wheelhouse.locks_dir / f"{release}.json", wheelhouse.locks_dir / f"{release}.txt"


def read_lock(wheelhouse: Wheelhouse, release: str) -> Lock:
    """The release's lock, or InputError saying how to make it."""
    path, _ = lock_paths(wheelhouse, release)
    if not path.exists():
        raise InputError(f"release {release!r} is not locked in {wheelhouse.root}; run "
                         f"`wheelfactory lock --release {release}` first")
    again = f"run `wheelfactory lock --release {release}` again"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: corrupt lock file ({e}); {again}") from None
    if not isinstance(data, dict) or data.get("format") != LOCK_FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise InputError(f"{path}: lock format {found} is not {LOCK_FORMAT}; {again}")
    try:
        lock = Lock(data["release"], data["python"], data["platform"], tuple(data["top_level"]),
                    tuple(LockedPackage(**p) for p in data["packages"]), data.get("overrides", {}),
                    str(data.get("inputs_sha256", "")))
    except (KeyError, TypeError) as e:  # a key missing, a package that is not an object or has odd keys
        raise InputError(f"{path}: not a lock file wheelfactory wrote ({type(e).__name__}: {e}); {again}") from None
    for p in lock.packages:  # joined to the wheelhouse path by venv and images: names, never paths
        check_wheel_name(p.filename, f"{path}: corrupt lock", again)
    return lock


def component_wheels(plan: Plan, wheelhouse: Wheelhouse) -> dict[str, list[Path]]:
    """Each component's published wheels for the plan's keys; InputError naming what is missing."""
    out = {}
    for step in plan.steps:
        files = wheelhouse.files_for_key(step.key)
        if files is None and (changed := wheelhouse.mismatches(step.key)):
            raise InputError(f"{step.component} {step.version} (key {step.key[:12]}) is in the wheelhouse, but "
                             f"{'; '.join(m.describe() for m in changed)}; run `wheelfactory build --release "
                             f"{plan.release.name}` (it moves the changed wheel to attic/ and builds it again)")
        if files is None:
            raise InputError(f"{step.component} {step.version} (key {step.key[:12]}) is not in the wheelhouse; "
                             f"run `wheelfactory build --release {plan.release.name}` first")
        out[step.component] = files
    return out


def _top_level(plan: Plan, dists: Mapping[Path, str]) -> list[str]:
    """The requirements to resolve: each component wheel by file, then the pins."""
    return [f"{dist} @ {w.resolve().as_uri()}" for w, dist in dists.items()] + \
        [f"{name}=={version}" for name, version in sorted(plan.pins.items())]


def override_requirements(plan: Plan, dists: Mapping[Path, str], wheels: Mapping[str, list[Path]]) -> list[str]:
    """The lines of uv's override file: each overridden pin at its version, each overridden component's
    wheels by file."""
    lines = []
    for name, o in sorted(plan.overrides.items()):
        if o["kind"] == "component":
            lines += [f"{dists[w]} @ {w.resolve().as_uri()}" for w in wheels.get(name, [])]
        else:
            lines.append(f"{name}=={o['version']}")
    return lines


def override_reasons(plan: Plan, dists: Mapping[Path, str], wheels: Mapping[str, list[Path]]) -> dict[str, str]:
    """The lock's overrides: package name -> why (a component's reason under each of its wheels' names)."""
    out = {}
    for name, o in sorted(plan.overrides.items()):
        names = [dists[w] for w in wheels.get(name, [])] if o["kind"] == "component" else [name]
        out |= dict.fromkeys((canonicalize_name(n) for n in names), o["reason"])
    return out


def _uv_compile(runner: Runner, python: str, workdir: Path, name: str, sources: list[str]) -> list[dict[str, Any]]:
    """`uv pip compile` of workdir/requirements.in (with overrides.txt and constraints.txt) into a PEP 751
    pylock; its packages."""
    out = workdir / f"pylock.{name}.toml"
    # --no-cache: uv unpacks every find-links wheel into its cache to read it (gigabytes for a
    # CUDA stack, again for each wheelhouse path); a throw-away cache keeps the disk as it was.
    runner.run([require_uv(), "pip", "compile", "--override", workdir / "overrides.txt",
                "--constraint", workdir / "constraints.txt",
                "--python", python, "--only-binary", ":all:", "--format", "pylock.toml", "--quiet",
                "--no-header", "--no-cache", "-o", out, *sources, "--", workdir / "requirements.in"],
               env={"UV_NO_CONFIG": "1", "UV_PYTHON_DOWNLOADS": "never"})
    with open(out, "rb") as f:
        return tomllib.load(f)["packages"]


def _artifacts(pkg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The files a pylock package entry names: its wheels, or the one archive of a direct reference."""
    return list(pkg.get("wheels", [])) + ([pkg["archive"]] if "archive" in pkg else [])


def _local_path(artifact: Mapping[str, Any]) -> Path | None:
    if "path" in artifact:
        return Path(artifact["path"])
    url = artifact.get("url", "")
    return Path(unquote(urlparse(url).path)) if url.startswith("file://") else None


def lock_inputs(plan: Plan, wheelhouse: Wheelhouse, requirements: str, overrides: str, index_url: str,
                offline: bool) -> str:
    """sha256 of what a resolution is given: the requirements and overrides (component wheels by
    file), the sha256 of each component wheel as published, the target, the index (online), the lock
    format and the versions of wheelfactory and uv. Equal inputs resolve to the same lock."""
    manifest = wheelhouse.manifest()
    wheels = sorted((name, manifest.get(name, {}).get("sha256")) for files in
                    component_wheels(plan, wheelhouse).values() for name in (f.name for f in files))
    try:
        uv_version = importlib.metadata.version("uv")
    except importlib.metadata.PackageNotFoundError:
        uv_version = None
    body = {"format": LOCK_FORMAT, "wheelfactory": __version__, "uv": uv_version, "python": plan.target.python,
            "platform": plan.target.platform, "requirements": requirements, "overrides": overrides,
            "wheels": wheels, "index": None if offline else index_url, "pins": dict(sorted(plan.pins.items()))}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def fresh_lock(wheelhouse: Wheelhouse, release: str, inputs_sha256: str) -> Lock | None:
    """The release's lock when it was made from these inputs and every wheel it names is still the
    file it recorded (the manifest's sha256 and size, the file there); else None (resolve again)."""
    json_path, txt_path = lock_paths(wheelhouse, release)
    if not (json_path.is_file() and txt_path.is_file()):
        return None
    try:
        lock = read_lock(wheelhouse, release)
    except InputError:
        return None
    if lock.inputs_sha256 != inputs_sha256:
        return None
    manifest = wheelhouse.manifest()
    for p in lock.packages:
        entry, path = manifest.get(p.filename) or {}, wheelhouse.root / p.filename
        if entry.get("sha256") != p.sha256 or not path.is_file() or path.stat().st_size != entry.get("size"):
            return None
    return dataclasses.replace(lock, up_to_date=True)


def lock_release(plan: Plan, wheelhouse: Wheelhouse, runner: Runner, python: str, index_url: str,
                 offline: bool = False, refresh: bool = False, cuda_wheels: Mapping[str, Any] | None = None) -> Lock:
    """Resolve, download what is missing into the wheelhouse, resolve offline, verify, write the lock;
    or, unless refresh, the lock as it is when its inputs have not changed (up_to_date).

    `cuda_wheels` (cuda_wheels.toml's table) constrains every CUDA wheel to the release's CUDA and
    refuses a resolution that mixes toolkit versions (one_cuda.py); FlashInfer's packages are held at
    one version and a resolution where they differ is refused (one_version.py); an NCCL older than
    the one the locked torch was built against is refused, naming the symbols it lacks (nccl_floor.py)."""
    wheels = component_wheels(plan, wheelhouse)
    infos = {w: read_wheel(w) for files in wheels.values() for w in files}
    dists = {w: info.dist for w, info in infos.items()}
    overrides = override_reasons(plan, dists, wheels)
    root = wheelhouse.root.resolve()
    requirements = "\n".join(_top_level(plan, dists)) + "\n"
    override_lines = "".join(f"{line}\n" for line in override_requirements(plan, dists, wheels))
    # a CUDA wheel the release overrides ([pins] + [overrides]: an adopted torch's own cuDNN, say) is the
    # release's decision, not the toolkit's pin
    constraint_lines = "".join(f"{line}\n" for line in toolkit_constraints(cuda_wheels or {}, plan.target.cuda)
                               if canonicalize_name(line.split("==")[0]) not in overrides)
    # FlashInfer's packages at the one version the release fixes for any of them (one_version.py)
    fixed = [(info.dist, str(info.version)) for info in infos.values()] + sorted(plan.pins.items())
    constraint_lines += "".join(f"{line}\n" for line in family_constraints(fixed, skip=overrides))
    # the constraints are inputs of the resolution as much as the overrides are
    inputs = lock_inputs(plan, wheelhouse, requirements, override_lines + constraint_lines, index_url, offline)
    if not refresh and (fresh := fresh_lock(wheelhouse, plan.release.name, inputs)) is not None:
        return fresh
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "requirements.in").write_text(requirements)
        (work / "overrides.txt").write_text(override_lines)
        (work / "constraints.txt").write_text(constraint_lines)
        if not offline:
            online = _uv_compile(runner, python, work, "online", ["--find-links", str(root), "--index-url", index_url])
            _download_missing(wheelhouse, runner, python, index_url, online, work)
        final = _uv_compile(runner, python, work, "final", ["--no-index", "--find-links", str(root)])
    manifest = wheelhouse.manifest()
    owned = {p.resolve(): comp for comp, files in wheels.items() for p in files}
    packages = []
    for pkg in final:
        local = [p for a in _artifacts(pkg) if (p := _local_path(a)) is not None and p.resolve().parent == root]
        if not local:
            raise BuildError(f"the lock resolved {pkg['name']} {pkg['version']} to no file of the wheelhouse")
        path = _pick_for_platform(local, plan.target.platform).resolve()
        sha = sha256_file(path)
        entry = manifest.get(path.name, {})
        if entry.get("sha256") and entry["sha256"] != sha:
            raise BuildError(f"{path.name}: sha256 {sha} differs from the manifest's {entry['sha256']}; "
                             "the wheelhouse was modified outside wheelfactory")
        packages.append(LockedPackage(canonicalize_name(pkg["name"]), str(pkg["version"]), path.name, sha,
                                      owned.get(path), entry.get("origin", "pypi")))
    refuse_mixed(plan.release.name, ((p.name, p.version) for p in packages), cuda_wheels or {}, plan.target.cuda)
    refuse_skew(plan.release.name, ((p.name, p.version) for p in packages))
    # an NCCL older than the locked torch's own passes every later step and fails at `import torch`
    check_nccl_floor(plan.release.name, ((p.name, p.version, p.filename) for p in packages), root)
    locked_files = {p.filename for p in packages}
    for comp, files in wheels.items():
        for f in files:
            if f.name not in locked_files:
                raise BuildError(f"the resolution left out {comp}'s wheel {f.name}; a PyPI copy may have replaced it")
    top = [canonicalize_name(d) for d in dists.values()] + [canonicalize_name(n) for n in sorted(plan.pins)]
    lock = Lock(plan.release.name, plan.target.python, plan.target.platform, tuple(top),
                tuple(sorted(packages, key=lambda p: p.name)), overrides, inputs)
    json_path, txt_path = lock_paths(wheelhouse, plan.release.name)
    atomic_write_text(json_path, json.dumps(lock.to_json(), indent=2) + "\n")
    atomic_write_text(txt_path, lock.requirements_txt())
    return lock


def _pick_for_platform(paths: list[Path], platform: str) -> Path:
    """Of several files of one version, the one built for the target platform (else a pure wheel)."""
    def score(p: Path) -> int:
        tags = {t.platform for t in parse_wheel_filename(p.name)[3]}
        return 2 if any(platform.split("_", 1)[-1] in t for t in tags) else (1 if "any" in tags else 0)
    return max(sorted(paths), key=score)


def _download_missing(wheelhouse: Wheelhouse, runner: Runner, python: str, index_url: str,
                      resolved: list[dict[str, Any]], work: Path) -> None:
    """pip download (binary, hash-checked) the resolved packages the wheelhouse lacks, and move them in."""
    root = wheelhouse.root.resolve()
    lines = []
    for pkg in resolved:
        artifacts = _artifacts(pkg)
        if any((p := _local_path(a)) is not None and p.resolve().parent == root for a in artifacts):
            continue
        hashes = sorted({a["hashes"]["sha256"] for a in artifacts if "sha256" in a.get("hashes", {})})
        lines.append(f"{pkg['name']}=={pkg['version']} " + " ".join(f"--hash=sha256:{h}" for h in hashes))
    if not lines:
        return
    (work / "download.txt").write_text("\n".join(lines) + "\n")
    dest = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
    try:
        runner.run([python, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:", "--require-hashes",
                    "-d", dest, "--index-url", index_url, "-r", work / "download.txt"])
        entries = {}
        for f in sorted(dest.glob("*.whl")):
            info = read_wheel(f)
            final = root / f.name
            os.replace(f, final)
            entries[f.name] = {"component": None, "origin": "pypi", "from": index_url, "dist": info.dist,
                               "version": str(info.version), "tags": sorted(info.tags),
                               "sha256": sha256_file(final), "size": final.stat().st_size,
                               "requires_python": info.requires_python}
        runner.note(f"added {len(entries)} wheel(s) from {index_url}")
        wheelhouse.add_entries(entries)
    finally:
        shutil.rmtree(dest, ignore_errors=True)
