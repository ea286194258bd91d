"""The assembler: validate a release's lock against its images, write build files, build, check, report.

`prepare` does every check and writes every file without touching Docker, so that bad input is
refused before any engine runs.
"""

from __future__ import annotations

import datetime
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from wheelfactory.errors import BuildError, InputError
from wheelfactory.factory import Factory
from wheelfactory.lock import Lock, lock_paths, read_lock
from wheelfactory.recipe import LoadedRecipe
from wheelfactory.release import Release
from wheelfactory.wheelhouse import atomic_write_text

from .bake import render_bake, target_name
from .bases import BaseImage, find_base, incompatible_wheels, load_bases
from .closure import ClosureReport, check_tar
from .context import write_context
from .docker import Docker
from .dockerfile import render_dockerfile
from .layers import Layer, plan_layers, sibling_differences
from .report import SizeReport, measure
from .spec import ImageSpec, Settings, build_key_arg, cuda_wheel_names, image_specs
from .syslibs import needed_system_packages, variant_sets


@dataclass
class Prepared:
    """An image ready to build: its spec, base, layers and files."""

    spec: ImageSpec
    base: BaseImage
    layers: list[Layer]
    dockerfile: Path
    context: Path
    build_keys: dict[str, str]  # build arg -> the wheelhouse's build key
    log: Path
    timings: dict[str, float] = field(default_factory=dict)
    # (python package, why, system package names) installed before the venv (system_libraries.toml)
    system: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)
    preview: bool = False  # written from the release's pins without a lock: not buildable

    @property
    def run_names(self) -> list[str]:
        """Names of the image's RUN layers, in order."""
        return (["python"] if self.base.needs_python else []) + (["system"] if self.system else []) + \
            ["venv"] + [x.name for x in self.layers]


def _public(version: str) -> str:
    """'2.29.2-1' -> '2.29.2'; '2.13.0+cpu' -> '2.13.0'."""
    head = version.split("-")[0] if re.fullmatch(r"\d+(\.\d+)*-\d+", version) else version
    try:
        return Version(head).public
    except InvalidVersion:
        return head


def check_lock(release: Release, lock: Lock, wheel_dir: Path) -> None:
    """The lock holds every component and pin of the release at its version, and its wheels exist."""
    name = release.name
    build_cmd = f"`wheelfactory build --release {name}` then `wheelfactory lock --release {name}`"
    by_component = {p.component: p for p in lock.packages if p.component}
    for comp, spec in release.components.items():
        pkg = by_component.get(comp)
        if pkg is None:
            raise InputError(f"the lock of release {name!r} has no wheel of {comp} {spec.version}; run {build_cmd}")
        if _public(pkg.version) != _public(spec.version):
            raise InputError(f"the lock of release {name!r} has {comp} {pkg.version}, the release asks for "
                             f"{spec.version}; run {build_cmd}")
    for pin, version in release.pins.items():
        try:
            pkg = lock.package(pin)
        except KeyError:
            raise InputError(f"the lock of release {name!r} lacks the pin {pin}=={version}; run "
                             f"`wheelfactory lock --release {name}`") from None
        if _public(pkg.version) != _public(version):
            raise InputError(f"the lock of release {name!r} has {pin} {pkg.version}, the release pins {version}; "
                             f"run `wheelfactory lock --release {name}`")
    missing = [p for p in lock.packages if not (wheel_dir / p.filename).is_file()]
    if missing:
        ours = [p.filename for p in missing if p.component]
        cmd = build_cmd if ours else f"`wheelfactory lock --release {name}` (downloads them again)"
        raise InputError(f"{len(missing)} wheel(s) of the lock of release {name!r} are missing from {wheel_dir}: "
                         f"{', '.join(p.filename for p in missing[:5])}{' ...' if len(missing) > 5 else ''}; run {cmd}")


def preview_packages(release: Release, recipes: Mapping[str, LoadedRecipe]) -> set[str]:
    """The packages a release names without a lock: each component's wheels (its recipe's outputs)
    and its [pins]."""
    names = {canonicalize_name(o) for c in release.components for o in recipes[c].recipe.outputs}
    return names | {canonicalize_name(p) for p in release.pins}


def check_base(spec: ImageSpec, base: BaseImage, lock: Lock) -> None:
    """Every locked wheel installs on the base's Python and platform."""
    bad = incompatible_wheels((p.filename for p in lock.packages), base)
    if bad:
        raise InputError(
            f"{len(bad)} wheel(s) of the lock of release {spec.release!r} (python {lock.python}, {lock.platform}) "
            f"do not install on base {base.ref} (python {base.python}, {', '.join(base.platforms)}, glibc "
            f"{base.glibc}): {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}; pass --base-image with a base "
            f"for python {lock.python} on {lock.platform}, or build and lock the release for this base "
            f"(`wheelfactory build --release {spec.release}`, `wheelfactory lock --release {spec.release}`)")


def _git(args: list[str], cwd: Path) -> str:
    try:
        r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except OSError:
        return ""
    return r.stdout.strip() if r.returncode == 0 else ""


class Assembler:
    """Turns releases into images with one Factory (recipes, wheelhouse) and one set of Settings."""

    def __init__(self, factory: Factory, settings: Settings, output_dir: Path, docker: Docker | None = None,
                 echo: Callable[[str], None] = print):
        self.factory = factory
        self.settings = settings
        self.output_dir = output_dir
        self.docker = docker or Docker()
        self.echo = echo
        self.bases = load_bases()

    # -- without Docker ---------------------------------------------------------------------

    def prepare(self, release_name: str, preview_without_lock: bool = False) -> list[Prepared]:
        """Check the release, its lock and bases, and write Dockerfiles, bake file and context.

        With `preview_without_lock`, a release that has no lock yet gets a preview instead: its
        Dockerfiles and bake file written from the release's pins (no context, no build keys)."""
        release = self.factory.release(release_name)
        specs = image_specs(release, self.factory.data_root("cuda_wheels.toml"), self.settings)
        bases = [find_base(s.base, self.bases) for s in specs]
        wh = self.factory.wheelhouse
        if preview_without_lock and not lock_paths(wh, release.name)[0].exists():
            return self._preview(release, specs, bases)
        lock = read_lock(wh, release.name)
        check_lock(release, lock, wh.root)
        for spec, base in zip(specs, bases, strict=True):
            check_base(spec, base, lock)
        libs, jit = cuda_wheel_names(self.factory.data_root("cuda_wheels.toml"))
        cuda_names = set().union(*libs.values(), *jit.values())
        differing = sibling_differences(lock, self._other_locks(release.name))
        if differing:
            self.echo(f"{release.name}: locked differently by a sibling, so in the last layer: "
                      f"{', '.join(sorted(differing))}")
        layers = plan_layers(lock.packages, specs[0].groups, cuda_names, wh.root, self.settings.max_layer_bytes,
                             differing)
        manifest = wh.manifest()
        keys = {build_key_arg(p.component): manifest.get(p.filename, {}).get("key", "")
                for p in lock.packages if p.component}
        for package in lock.packages:  # build keys become bake-file strings and --build-arg values
            key = keys.get(build_key_arg(package.component)) if package.component else None
            if key and not (isinstance(key, str) and re.fullmatch(r"[0-9a-f]{64}", key)):
                raise InputError(f"{wh.manifest_path}: the build key of {package.filename} is not 64 hex digits "
                                 f"({str(key)[:40]!r}); the manifest was edited outside wheelfactory: restore it or "
                                 f"rebuild the release (`wheelfactory build --release {release.name}`)")
        out = self.output_dir / release.name
        context = out / "context"
        write_context(context, layers, wh.root)
        prepared = []
        for spec, base in zip(specs, bases, strict=True):
            system = needed_system_packages((p.name for p in lock.packages), base.family, base.ref)
            dockerfile = out / f"{spec.name}.Dockerfile"
            atomic_write_text(dockerfile, render_dockerfile(spec, base, [(x.name, x.group.about) for x in layers],
                                                            system=system))
            prepared.append(Prepared(spec, base, layers, dockerfile, context, keys, out / f"{spec.name}.build.log",
                                     system=system))
        bake = render_bake(specs, self.settings.registry, {target_name(s): keys for s in specs})
        atomic_write_text(out / "docker-bake.hcl", bake)
        return prepared

    def _preview(self, release: Release, specs: list[ImageSpec], bases: list[BaseImage]) -> list[Prepared]:
        """Dockerfiles and bake file of a release with no lock, from its pins: the components'
        wheels and [pins] stand for the package set; one layer per layer group, no context."""
        names = preview_packages(release, self.factory.recipes)
        self.echo(f"{release.name}: PREVIEW: no lock in {self.factory.wheelhouse.root}; the package list is a preview "
                  f"from the release pins ({', '.join(sorted(names))}), not a locked set. No build context was "
                  f"written; the layer split and the system libraries of dependencies outside the pins come with "
                  f"`wheelfactory lock --release {release.name}`.")
        out = self.output_dir / release.name
        prepared = []
        for spec, base in zip(specs, bases, strict=True):
            system = needed_system_packages(names, base.family, base.ref)
            dockerfile = out / f"{spec.name}.Dockerfile"
            atomic_write_text(dockerfile, render_dockerfile(spec, base, [(g.name, g.about) for g in spec.groups],
                                                            system=system, preview=True))
            prepared.append(Prepared(spec, base, [], dockerfile, out / "context", {}, out / f"{spec.name}.build.log",
                                     system=system, preview=True))
        atomic_write_text(out / "docker-bake.hcl", render_bake(specs, self.settings.registry))
        return prepared

    def _other_locks(self, release: str) -> list[Lock]:
        """Every other lock of the wheelhouse (siblings are found among them)."""
        out = []
        for path in sorted(self.factory.wheelhouse.locks_dir.glob("*.json")):
            if path.stem != release:
                try:
                    out.append(read_lock(self.factory.wheelhouse, path.stem))
                except (InputError, KeyError, TypeError, ValueError):
                    continue  # another format or a broken file: not a sibling we can compare
        return out

    def build_args(self, p: Prepared) -> dict[str, str]:
        """Build-time label values: creation time, revision and source of the recipes' checkout, build keys."""
        repo = self.factory.recipes_dir
        revision = _git(["rev-parse", "HEAD"], repo)
        if revision and _git(["status", "--porcelain"], repo):
            revision += "-dirty"
        return {"WF_CREATED": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "WF_REVISION": revision, "WF_SOURCE": _git(["remote", "get-url", "origin"], repo)} | p.build_keys

    # -- with Docker ------------------------------------------------------------------------

    def require_engine(self) -> bool:
        """Whether buildx is there; BuildError when no engine answers."""
        error = self.docker.engine_error()
        if error:
            raise BuildError(f"no Docker engine answers ({self.docker.binary}: {error}); start one, or pass "
                             "--no-build to only write the Dockerfiles")
        return self.docker.has_buildx()

    def build(self, p: Prepared, buildx: bool) -> None:
        """Build one image (no network unless the base must install Python)."""
        if p.preview:
            raise InputError(f"{p.dockerfile} is a preview without a lock; run `wheelfactory lock --release "
                             f"{p.spec.release}` first")
        # The network only for a package manager: Python or system libraries to install.
        cmd = self.docker.build_command(p.dockerfile, p.context, p.spec.ref(self.settings.registry),
                                        self.build_args(p), network_none=not (p.base.needs_python or p.system),
                                        buildx=buildx)
        started = time.monotonic()
        self.docker.build(cmd, p.log)
        p.timings["build_s"] = time.monotonic() - started

    def check_closure(self, p: Prepared) -> ClosureReport:
        """Export the image's files and check its shared-library closure; BuildError when a library is missing."""
        ref = p.spec.ref(self.settings.registry)
        info = self.docker.inspect(ref) or {}
        env = dict(e.split("=", 1) for e in (info.get("Config", {}).get("Env") or []) if "=" in e)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=self.output_dir) as tmp:
            tar = Path(tmp) / "image.tar"
            self.docker.export(ref, tar)
            report = check_tar(tar, env, variants=variant_sets())
        p.timings["closure_s"] = time.monotonic() - started
        return report

    def sibling(self, p: Prepared) -> str | None:
        """An image of the same repository and vLLM version with other transformers (another major first)."""
        s = p.spec
        ns = self.settings.label_namespace
        if not s.vllm_version or f"{ns}.transformers_version" not in s.labels:
            return None
        ref = s.ref(self.settings.registry)
        repo = ref.rsplit(":", 1)[0]
        found = []
        for tag in self.docker.tags(repo):
            labels = ((self.docker.inspect(f"{repo}:{tag}") or {}).get("Config") or {}).get("Labels") or {}
            theirs = labels.get(f"{ns}.transformers_version")
            if labels.get(f"{ns}.vllm_version") == s.vllm_version and theirs and \
                    theirs != s.labels[f"{ns}.transformers_version"]:
                other_major = theirs.split(".")[0] != (s.transformers_major or "")
                found.append((not other_major, tag))
        return f"{repo}:{min(found)[1]}" if found else None

    def size_report(self, p: Prepared) -> SizeReport:
        """Sizes of a built image against the installed bytes of its wheels."""
        installed: list[int | None] = [None] * (len(p.run_names) - len(p.layers)) + [x.installed_bytes
                                                                                    for x in p.layers]
        return measure(self.docker, p.spec.ref(self.settings.registry), p.run_names, installed, self.sibling(p))


