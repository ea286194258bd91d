"""The assembler: validate a release's lock against its images, write build files, build, check, report.

`prepare` does every check and writes every file without touching Docker, so that bad input is
refused before any engine runs.
"""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from wheelfactory.core.errors import BuildError, InputError
from wheelfactory.cuda.cuda_arch import devices_of
from wheelfactory.lock.closure import Lock, lock_paths, read_lock
from wheelfactory.lock.one_cuda import carried_cuda, load_cuda_wheels, refuse_mixed
from wheelfactory.lock.one_version import refuse_skew
from wheelfactory.pipeline.factory import Factory
from wheelfactory.planning.recipe import LoadedRecipe
from wheelfactory.planning.release import Release
from wheelfactory.store.wheelhouse import atomic_write_text
from wheelfactory.toolchain.toolkit import ToolkitCache, toolkits_dir

from .bake import oci_platform, render_bake, target_name
from .bases import BaseImage, find_base, incompatible_wheels, load_bases
from .closure import ClosureReport, check_stream
from .context import write_context
from .devtoolkit import CONTEXT_DIR, dev_toolkit, write_toolkit_context
from .docker import Docker
from .dockerfile import IMAGE_FILES, extra_runs, provision_packages, render_dockerfile
from .layers import Layer, plan_layers, sibling_differences
from .ncclnet import SCRIPT as NCCL_NET_SCRIPT
from .ncclnet import host_gpu, parse_result
from .prebuilt_cubins import left_out
from .report import SizeReport, measure
from .spec import TOOLKIT_ARG, VENV, ImageSpec, Settings, build_key_arg, cuda_wheel_names, image_specs
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
    triton: str | None = None  # the locked Triton version: the image's smoke test compiles a kernel with it
    nccl: bool = False  # the lock holds NCCL: the image's smoke test loads rdma-core (libibverbs + mlx5)
    platform: str = ""  # the lock's wheel platform (linux_aarch64): the image is built for it, whatever the host

    @property
    def oci_platform(self) -> str | None:
        """The image's platform as Docker names it (linux/arm64), or None when unknown (a preview)."""
        return oci_platform(self.platform) if self.platform else None

    @property
    def run_names(self) -> list[str]:
        """Names of the image's RUN layers, in order."""
        return (["python"] if provision_packages(self.spec, self.base) else []) + \
            (["system"] if self.system else []) + (["user"] if self.spec.user else []) + ["venv"] + \
            [x.name for x in self.layers] + \
            extra_runs(self.spec, self.base)

    @property
    def needs_network(self) -> bool:
        """Whether a RUN installs packages from the base's package manager (the others run with no network)."""
        return bool(provision_packages(self.spec, self.base) or self.system or
                    (self.spec.dev_tooling and self.base.dev_packages))


# What NCCL's IB/RoCE transport loads with dlopen (no DT_NEEDED names them): the libraries of
# the nvidia-nccl-cu13 system-library set (assemble/data/system_libraries.toml).
RDMA_CHECK = ("import ctypes\n"
              "for name in ('libibverbs.so.1', 'libmlx5.so.1', 'librdmacm.so.1'):\n"
              "    ctypes.CDLL(name)\n")


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
        cuda_table = load_cuda_wheels(self.factory.data_root("cuda_wheels.toml") / "data" / "cuda_wheels.toml")
        locked = [(x.name, x.version) for x in lock.packages]
        refuse_mixed(release.name, locked, cuda_table, release.target.cuda)  # a lock written before the rule
        refuse_skew(release.name, locked)  # likewise: FlashInfer's packages at one version
        foreign = left_out(((x.name, x.version, wh.root / x.filename) for x in lock.packages),
                           devices_of(release.target.cuda_arch_list))
        for why in foreign.values():
            self.echo(f"{release.name}: {why}")
        lock = replace(lock, packages=tuple(x for x in lock.packages if x.name not in foreign))
        carried = carried_cuda(locked, cuda_table)
        if carried:  # the CUDA the image's NVIDIA wheels really are, beside the release's cuda_version
            ns = self.settings.label_namespace
            specs = [replace(s, labels={**s.labels, f"{ns}.cuda_wheels_version": carried}) for s in specs]
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
        args = {s.name: dict(keys) for s in specs}  # per image: the build keys (+ a dev image's toolkit)
        for spec, base in zip(specs, bases, strict=True):
            if spec.dev_tooling:  # the release's toolkit, links into the venv for the wheels the lock has
                dev = dev_toolkit(self.factory.data_root("cuda_wheels.toml") / "data" / "cuda_wheels.toml",
                                  release, lock, own=set().union(*jit.values()))
                cache = ToolkitCache(toolkits_dir(self.factory.cache_dir), self.factory.index_url)
                write_toolkit_context(context / CONTEXT_DIR, dev, lock, wh.root, cache,
                                      f"{VENV}/lib/python{base.python}/site-packages", self.echo)
                args[spec.name][TOOLKIT_ARG] = dev.toolkit.label
        prepared = []
        for spec, base in zip(specs, bases, strict=True):
            system = needed_system_packages((p.name for p in lock.packages), base.family, base.ref)
            dockerfile = out / f"{spec.name}.Dockerfile"
            atomic_write_text(dockerfile, render_dockerfile(spec, base, [(x.name, x.group.about) for x in layers],
                                                            system=system))
            triton = next((x.version for x in lock.packages if x.name == "triton"), None)
            prepared.append(Prepared(spec, base, layers, dockerfile, context, args[spec.name],
                                     out / f"{spec.name}.build.log", system=system, triton=triton,
                                     platform=lock.platform,
                                     nccl=any(x.name == "nvidia-nccl-cu13" for x in lock.packages)))
        bake = render_bake(specs, self.settings.registry, {target_name(s): args[s.name] for s in specs})
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

    def network(self, p: Prepared) -> str | None:
        """The build's --network: none without a package manager to run; else the user's choice, where
        `auto` is the engine's default network, or the host's on an engine without a default bridge
        (dockerd --bridge=none, where RUN steps fail with "network bridge not found")."""
        if not p.needs_network:
            return "none"
        choice = self.settings.network
        if choice == "auto":
            return None if self.docker.has_default_bridge() else "host"
        return None if choice == "default" else choice

    def base_digest(self, p: Prepared) -> str:
        """The base's digest for the label and the FROM line: the pin of bases.toml, else the registry digest
        of the base as the engine has it (pulled when absent), else a local base's image ID."""
        if p.base.digest:
            return p.base.digest
        info = self.docker.inspect(p.base.ref)
        if info is None:
            self.docker.pull(p.base.ref)
            info = self.docker.inspect(p.base.ref) or {}
        repo = p.base.ref.rsplit(":", 1)[0] if ":" in p.base.ref.rsplit("/", 1)[-1] else p.base.ref
        for entry in info.get("RepoDigests") or []:
            name, _, digest = entry.partition("@")
            if name == repo or name.endswith("/" + repo):
                # From a registry: pin FROM to the digest the label records, for this build.
                text = p.dockerfile.read_text()
                pinned = text.replace(f"\nFROM {p.base.ref}\n", f"\nFROM {p.base.ref}@{digest}\n", 1)
                if pinned != text:
                    atomic_write_text(p.dockerfile, pinned)
                    self.echo(f"{p.spec.ref()}: base {p.base.ref} pinned to {digest} for this build; pin it for "
                              f"every build with digest = \"{digest}\" in assemble/data/bases.toml")
                return digest
        return str(info.get("Id", ""))  # a local image: no registry digest; its ID names its content

    def build(self, p: Prepared, buildx: bool) -> None:
        """Build one image (no network unless a RUN installs packages from the base's package manager)."""
        if p.preview:
            raise InputError(f"{p.dockerfile} is a preview without a lock; run `wheelfactory lock --release "
                             f"{p.spec.release}` first")
        args = self.build_args(p) | {"WF_BASE_DIGEST": self.base_digest(p)}
        cmd = self.docker.build_command(p.dockerfile, p.context, p.spec.ref(self.settings.registry),
                                        args, network=self.network(p), buildx=buildx, platform=p.oci_platform)
        started = time.monotonic()
        self.docker.build(cmd, p.log)
        p.timings["build_s"] = time.monotonic() - started

    def check_closure(self, p: Prepared) -> ClosureReport:
        """Check the image's shared-library closure, reading its files as `docker export` streams them
        (no tar on disk)."""
        ref = p.spec.ref(self.settings.registry)
        info = self.docker.inspect(ref) or {}
        env = dict(e.split("=", 1) for e in (info.get("Config", {}).get("Env") or []) if "=" in e)
        started = time.monotonic()
        with self.docker.exported(ref, p.oci_platform) as tar:
            report = check_stream(tar, env, variants=variant_sets())
        p.timings["closure_s"] = time.monotonic() - started
        return report

    def check_triton(self, p: Prepared) -> dict | None:
        """The image's Triton compiles a kernel ahead of time for sm_121a with the ptxas its environment
        names (imagefiles/triton_aot_check.py, no GPU needed); None when the image has no Triton."""
        if p.triton is None:
            return None
        argv = ["python", f"{IMAGE_FILES}/triton_aot_check.py", "--capability", "121"]
        # the toolkit wheels' ptxas, when the image has them: Triton must use it, not its bundled one
        ptxas = p.spec.env.get("TRITON_PTXAS_BLACKWELL_PATH") or p.spec.env.get("TRITON_PTXAS_PATH")
        if ptxas:
            argv += ["--expect-ptxas", ptxas]
        started = time.monotonic()
        r = self.docker.run(p.spec.ref(self.settings.registry), argv, platform=p.oci_platform)
        p.timings["triton_s"] = time.monotonic() - started
        try:
            last = r.stdout.splitlines()[-1]
            result = json.loads(last)
        except (json.JSONDecodeError, IndexError):
            return {"ok": False, "error": f"the check did not run (exit {r.returncode}): {r.stderr.strip()[-2000:]}"}
        # JSON, but not the script's object (something else printed last): the caller reads keys of it
        if not isinstance(result, dict):
            return {"ok": False, "error": f"the check printed {last.strip()[:200]} last, not its JSON object "
                                          f"(exit {r.returncode})"}
        return result

    def check_rdma(self, p: Prepared) -> str | None:
        """None when the image loads rdma-core's libraries as NCCL does (dlopen of libibverbs.so.1,
        its mlx5 provider, librdmacm.so.1); else what failed. Skipped (None) without NCCL."""
        if not p.nccl:
            return None
        r = self.docker.run(p.spec.ref(self.settings.registry), ["python", "-c", RDMA_CHECK], platform=p.oci_platform)
        return None if r.returncode == 0 else (r.stderr.strip() or r.stdout.strip())[-1000:]

    def check_nccl_net(self, p: Prepared, gpu: tuple[bool, str] | None = None) -> dict | None:
        """NCCL of the image started on the host's GPU with NCCL_DEBUG=INFO: its IB plugin must load
        (imagefiles/nccl_net_check.py). None without NCCL; {"skipped": why} without a host GPU."""
        if not p.nccl:
            return None
        have, why = gpu if gpu is not None else host_gpu()
        if not have:
            return {"skipped": why}
        r = self.docker.run(p.spec.ref(self.settings.registry),
                            ["python", f"{IMAGE_FILES}/{NCCL_NET_SCRIPT}", "--require-gpu"],
                            options=["--gpus", "all"], platform=p.oci_platform)
        return parse_result(r.returncode, r.stdout, r.stderr)

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
        # RUNs before the wheel layers (Python, system libraries, the user, venv) and after them (dev
        # tooling and toolkit) install no wheels
        after = len(extra_runs(p.spec, p.base))
        installed: list[int | None] = [None] * (len(p.run_names) - len(p.layers) - after) + \
            [x.installed_bytes for x in p.layers] + [None] * after
        return measure(self.docker, p.spec.ref(self.settings.registry), p.run_names, installed, self.sibling(p))


