"""The locked dependency closure of a release: every runtime wheel, from the wheelhouse alone.

`lock_release` resolves the release's top-level packages (its built and adopted components,
named by their exact wheelhouse files, plus its PyPI pins) against the wheelhouse first and
PyPI second, downloads every missing wheel into the wheelhouse, then resolves again with
`--no-index` and writes:

    wheelhouse/locks/<release>.json   name, version, file, sha256, component/origin per package
    wheelhouse/locks/<release>.txt    pip requirements with --hash, for --require-hashes installs

Components are named by file (`torch @ file://...`), never by version: PyPI may publish the
same version (torch 2.10.0 for aarch64 is a CPU build there), and only the file is unambiguous.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from packaging.utils import canonicalize_name

from .errors import BuildError, InputError
from .plan import Plan
from .runner import Runner
from .wheelhouse import Wheelhouse, atomic_write_text
from .wheelmeta import read_wheel, sha256_file

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

    def package(self, name: str) -> LockedPackage:
        cname = canonicalize_name(name)
        for p in self.packages:
            if p.name == cname:
                return p
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {"format": LOCK_FORMAT, "release": self.release, "python": self.python, "platform": self.platform,
                "top_level": list(self.top_level), "packages": [p.__dict__ for p in self.packages]}

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
    data = json.loads(path.read_text())
    if data.get("format") != LOCK_FORMAT:
        raise InputError(f"{path}: lock format {data.get('format')} is not {LOCK_FORMAT}; run `wheelfactory lock` again")
    return Lock(data["release"], data["python"], data["platform"], tuple(data["top_level"]),
                tuple(LockedPackage(**p) for p in data["packages"]))


def component_wheels(plan: Plan, wheelhouse: Wheelhouse) -> dict[str, list[Path]]:
    """Each component's published wheels for the plan's keys; InputError naming what is missing."""
    out = {}
    for step in plan.steps:
        files = wheelhouse.files_for_key(step.key)
        if files is None:
            raise InputError(f"{step.component} {step.version} (key {step.key[:12]}) is not in the wheelhouse; "
                             f"run `wheelfactory build --release {plan.release.name}` first")
        out[step.component] = files
    return out


def _top_level(plan: Plan, wheels: Mapping[str, list[Path]]) -> list[str]:
    reqs = [f"{read_wheel(w).dist} @ {w.resolve().as_uri()}" for files in wheels.values() for w in files]
    return reqs + [f"{name}=={version}" for name, version in sorted(plan.pins.items())]


def lock_release(plan: Plan, wheelhouse: Wheelhouse, runner: Runner, python: str, index_url: str,
                 offline: bool = False) -> Lock:
    """Resolve, download what is missing into the wheelhouse, verify and write the lock."""
    wheels = component_wheels(plan, wheelhouse)
    reqs = _top_level(plan, wheels)
    if not offline:
        _download_missing(wheelhouse, runner, python, index_url, reqs)
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "report.json"
        runner.run([python, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed", "--report", report_path,
                    "--only-binary", ":all:", "--no-index", "--find-links", wheelhouse.root, *reqs])
        report = json.loads(report_path.read_text())
    manifest = wheelhouse.manifest()
    owned = {p.resolve(): comp for comp, files in wheels.items() for p in files}
    packages = []
    for item in report["install"]:
        path = Path(unquote(urlparse(item["download_info"]["url"]).path)).resolve()
        if path.parent != wheelhouse.root.resolve():
            raise BuildError(f"the lock resolved {item['metadata']['name']} to {path}, outside the wheelhouse")
        entry = manifest.get(path.name, {})
        sha = sha256_file(path)
        if entry.get("sha256") and entry["sha256"] != sha:
            raise BuildError(f"{path.name}: sha256 {sha} differs from the manifest's {entry['sha256']}; "
                             "the wheelhouse was modified outside wheelfactory")
        packages.append(LockedPackage(canonicalize_name(item["metadata"]["name"]), item["metadata"]["version"],
                                      path.name, sha, owned.get(path), entry.get("origin", "pypi")))
    locked_files = {p.filename for p in packages}
    for comp, files in wheels.items():
        for f in files:
            if f.name not in locked_files:
                raise BuildError(f"the resolution left out {comp}'s wheel {f.name}; a PyPI copy may have replaced it")
    top = [canonicalize_name(read_wheel(w).dist) for fs in wheels.values() for w in fs] + \
        [canonicalize_name(n) for n in sorted(plan.pins)]
    lock = Lock(plan.release.name, plan.target.python, plan.target.platform, tuple(top),
                tuple(sorted(packages, key=lambda p: p.name)))
    json_path, txt_path = lock_paths(wheelhouse, plan.release.name)
    atomic_write_text(json_path, json.dumps(lock.to_json(), indent=2) + "\n")
    atomic_write_text(txt_path, lock.requirements_txt())
    return lock


def _download_missing(wheelhouse: Wheelhouse, runner: Runner, python: str, index_url: str, reqs: list[str]) -> None:
    """pip download the closure (binary wheels only) and move in the wheels the wheelhouse lacks."""
    with tempfile.TemporaryDirectory(dir=wheelhouse.root) as tmp:
        runner.run([python, "-m", "pip", "download", "-q", "--only-binary", ":all:", "-d", tmp,
                    "--find-links", wheelhouse.root, "--index-url", index_url, *reqs])
        have = set(wheelhouse.manifest())
        entries = {}
        for f in sorted(Path(tmp).glob("*.whl")):
            if f.name in have or (wheelhouse.root / f.name).exists():
                continue
            info = read_wheel(f)
            shutil.move(str(f), wheelhouse.root / f.name)
            final = wheelhouse.root / f.name
            entries[f.name] = {"component": None, "origin": "pypi", "from": index_url, "dist": info.dist,
                               "version": str(info.version), "tags": sorted(info.tags), "sha256": sha256_file(final),
                               "size": final.stat().st_size, "requires_python": info.requires_python}
        if entries:
            runner.note(f"added {len(entries)} wheel(s) from {index_url}")
            wheelhouse.add_entries(entries)
