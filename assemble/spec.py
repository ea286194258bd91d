"""Image specs: which images a release makes, their tags, bases, layer groups and labels.

Everything here is derived from the release alone (no wheels, no lock), so a Dockerfile rendered
from a spec can be snapshot-tested for the real releases on any machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from wheelfactory.core.errors import InputError
from wheelfactory.core.grammar import (
    OCI_NAME_MAX,
    check_label_namespace,
    check_oci_registry,
    check_oci_repository,
    check_oci_tag,
    check_text,
)
from wheelfactory.cuda.cuda_arch import parse_arch_list, torch_arch_list
from wheelfactory.cuda.cuda_drivers import driver_floor, gate_env
from wheelfactory.cuda.triton_ptxas import ptxas_env
from wheelfactory.lock.one_cuda import load_cuda_wheels
from wheelfactory.planning.release import Release

from .datafiles import load_data
from .devtoolkit import DEV_CUDA_HOME

DEFAULT_NAMESPACE = "dev.wheelfactory"
VENV = "/opt/venv"

# Components and pins that get a `<namespace>.<name>_version` label, when the release has them.
VERSION_LABELS = ("nccl", "torch", "torchvision", "torchaudio", "triton", "flashinfer", "transformers", "vllm", "ray")

# Labels whose values are only known at build time: passed as build args, declared after the
# last RUN so that a new value never invalidates a cached layer (and stays out of snapshots).
BUILD_ARG_LABELS = {"org.opencontainers.image.created": "WF_CREATED",
                    "org.opencontainers.image.revision": "WF_REVISION",
                    "org.opencontainers.image.source": "WF_SOURCE",
                    # the base's registry digest (or a local base's image ID), resolved when building
                    "org.opencontainers.image.base.digest": "WF_BASE_DIGEST"}

# The build arg of a -dev image's toolkit label: "wheels:<cuda>:<identity>" of its toolkit pins (devtoolkit.py).
TOOLKIT_ARG = "WF_CUDA_TOOLKIT"

# The non-root user of vLLM images (vLLM needs no root: its caches go to $HOME/.cache). uid 1000,
# the first user of most hosts, so that a mounted cache directory is writable for both.
VLLM_USER = "vllm"
VLLM_UID = 1000


@dataclass(frozen=True)
class Settings:
    """Choices of the user that shape every image (CLI options / environment)."""

    registry: str = ""  # prefix of every tag, e.g. ghcr.io/me
    label_namespace: str = DEFAULT_NAMESPACE
    repository: str | None = None  # overrides the release's [image].repository
    base_image: str | None = None  # overrides every image's base (e.g. a local base)
    max_layer_bytes: int = 8 * 10**9  # installed bytes per layer; registries reject layers over 10 GB
    network: str = "auto"  # RUN steps that install packages: auto (host without a default bridge), host, default


@dataclass(frozen=True)
class LayerGroup:
    """A group of locked packages installed by one RUN (or several, when split)."""

    name: str
    about: str
    packages: tuple[str, ...] = ()  # claimed by exact (canonical) name
    cuda_wheels: bool = False  # claims the CUDA wheels of cuda_wheels.toml
    rest: bool = False  # claims everything no other group claims
    sibling_differences: bool = False  # claims packages locked at other versions by a sibling release


@dataclass(frozen=True)
class ImageSpec:
    """One image of a release."""

    release: str
    variant: str  # runtime | dev
    repository: str
    tag: str
    base: str
    python: str  # the release's target Python
    platform: str  # the release's target platform (linux_aarch64)
    groups: tuple[LayerGroup, ...]
    labels: Mapping[str, str]  # known from the release
    arg_labels: Mapping[str, str]  # label -> build arg
    env: Mapping[str, str] = field(default_factory=dict)  # set after the wheels are installed
    # the entrypoint that checks the host's driver (imagefiles/entrypoint.py) before `vllm serve`
    entrypoint: bool = False
    dev_tooling: bool = False  # build tooling and the release's CUDA toolkit at DEV_CUDA_HOME
    jit_home: str | None = None  # CUDA_HOME of the JIT toolkit wheels in the venv (runtime and dev images)
    user: str | None = None  # the non-root user the image runs as (vLLM images)
    transformers_major: str | None = None
    vllm_version: str | None = None

    @property
    def name(self) -> str:
        """The image's file name stem in the output directory: runtime, dev."""
        return self.variant

    def ref(self, registry: str = "") -> str:
        """The tag to build, with an optional registry prefix."""
        prefix = registry.rstrip("/") + "/" if registry else ""
        return f"{prefix}{self.repository}:{self.tag}"


def cuda_wheel_names(recipes_dir: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """From recipes/data/cuda_wheels.toml: CUDA major.minor -> library wheel names, -> JIT wheel names."""
    data = load_cuda_wheels(recipes_dir / "data" / "cuda_wheels.toml")  # its pins checked: NAME==VERSION
    libs = {v: {canonicalize_name(r.split("==")[0]) for r in t.get("requires", [])} for v, t in data.items()}
    jit = {v: {canonicalize_name(r.split("==")[0]) for r in t.get("jit", [])} for v, t in data.items()}
    return libs, jit


def load_groups(data: Mapping[str, object] | None = None) -> list[tuple[LayerGroup, dict[str, str]]]:
    """The layer groups of layers.toml with their conditions (needs_component, needs_pin)."""
    data = load_data("layers") if data is None else data
    out = []
    for g in data["group"]:  # type: ignore[union-attr]
        group = LayerGroup(g["name"], g.get("about", ""), tuple(canonicalize_name(p) for p in g.get("packages", ())),
                           bool(g.get("cuda_wheels", False)), bool(g.get("rest", False)),
                           bool(g.get("sibling_differences", False)))
        out.append((group, {k: g[k] for k in ("needs_component", "needs_pin") if k in g}))
    return out


def release_groups(release: Release, recipes_dir: Path) -> tuple[LayerGroup, ...]:
    """The layer groups a release's images have: the same for every lock of the release."""
    libs, _ = cuda_wheel_names(recipes_dir)
    out = []
    for group, needs in load_groups():
        if "needs_component" in needs and needs["needs_component"] not in release.components:
            continue
        if "needs_pin" in needs and needs["needs_pin"] not in release.pins:
            continue
        if group.cuda_wheels and cuda_minor(release.target.cuda) not in libs:
            continue
        out.append(group)
    return tuple(out)


def cuda_minor(cuda: str) -> str:
    """'13.1.0' -> '13.1'."""
    return ".".join(cuda.split(".")[:2])


def jit_env(release: Release, recipes_dir: Path) -> dict[str, str]:
    """CUDA_HOME, every ptxas variable of the release's Triton and PATH into the JIT toolkit wheels,
    when the release pins them all.

    NVIDIA's CUDA 13 wheels install into site-packages/nvidia/cu13/{bin,include,lib,nvvm}, the
    layout of a CUDA toolkit root (nvcc.profile finds nvvm/ and include/ relative to bin/). Triton
    >= 3.6 runs TRITON_PTXAS_BLACKWELL_PATH's ptxas for sm_100 and up (the Spark's sm_121a), not
    TRITON_PTXAS_PATH's (wheelfactory/cuda/data/triton_ptxas.toml).
    """
    _, jit = cuda_wheel_names(recipes_dir)
    needed = jit.get(cuda_minor(release.target.cuda), set())
    pinned = {canonicalize_name(n) for n in release.pins}
    if not needed or not needed <= pinned:
        return {}
    major = release.target.cuda.split(".")[0]
    home = f"{VENV}/lib/python{release.target.python}/site-packages/nvidia/cu{major}"
    return {"CUDA_HOME": home, **ptxas_env(release.version_of("triton"), f"{home}/bin/ptxas"),
            "PATH": f"{VENV}/bin:{home}/bin:$PATH"}


def jit_root_links(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """(link, target) pairs, relative to CUDA_HOME, that complete the JIT toolkit root of `env`.

    NVIDIA's wheels install lib/ with libcudart.so.<major> only; FlashInfer's JIT links its modules
    with `-L$CUDA_HOME/lib64 -lcudart` (so does torch's cpp_extension), which needs lib64/ and an
    unversioned libcudart.so. Without them the link fails: bench/GPU-PROOF.md.
    """
    home = env.get("CUDA_HOME")
    if not home:
        return []
    major = home.rstrip("/").rsplit("/cu", 1)[1]
    return [("lib64", "lib"), ("lib/libcudart.so", f"libcudart.so.{major}")]


def _major(version: str, what: str, release: Release) -> str:
    try:
        return str(Version(version).major)
    except InvalidVersion:
        raise InputError(f"{release.path}: {what} {version!r} is not a version") from None


def dev_env(release: Release) -> dict[str, str]:
    """The environment of a -dev image: its toolkit at DEV_CUDA_HOME and the release's arch list, so that
    torch's cpp_extension and CMake builds compile for the release's GPUs without being told."""
    return {"CUDA_HOME": DEV_CUDA_HOME, **ptxas_env(release.version_of("triton"), f"{DEV_CUDA_HOME}/bin/ptxas"),
            "PATH": f"{VENV}/bin:{DEV_CUDA_HOME}/bin:$PATH",
            "TORCH_CUDA_ARCH_LIST": torch_arch_list(parse_arch_list(release.target.cuda_arch_list))}


def _labels(release: Release, ns: str, title: str, tag: str, base: str) -> dict[str, str]:
    labels = {f"{ns}.release": release.name, f"{ns}.cuda_version": release.target.cuda}
    floor = driver_floor(release.target.cuda)
    if floor is not None:
        # the host driver the image needs (its entrypoint refuses an older one), and the one its
        # toolkit's PTX needs to be JIT-compiled (wheelfactory/cuda/data/cuda_drivers.toml)
        labels[f"{ns}.min_driver"] = floor.minimum_driver
        labels[f"{ns}.ptx_driver"] = floor.ptx_driver
    for name in VERSION_LABELS:
        version = release.version_of(name)
        if version:
            labels[f"{ns}.{name}_version"] = version
    labels["org.opencontainers.image.title"] = title
    labels["org.opencontainers.image.version"] = tag
    labels["org.opencontainers.image.base.name"] = base
    return labels


def build_key_arg(component: str) -> str:
    """The build arg carrying a component's build key: WF_TORCH_BUILD_KEY."""
    return f"WF_{component.upper().replace('-', '_')}_BUILD_KEY"


def image_specs(release: Release, recipes_dir: Path, settings: Settings = Settings()) -> list[ImageSpec]:
    """The images of a release: a vLLM runtime image, or a pytorch dev and runtime pair; each
    reference (registry, repository, tag) checked against the OCI reference grammar."""
    specs = _image_specs(release, recipes_dir, settings)
    for spec in specs:
        where = f"{release.path} [image].tag" if "tag" in release.image else f"{release.path}: the image tag derived " \
            "from the release's versions (set [image] tag)"
        check_oci_tag(spec.tag, where)
        name = spec.ref(settings.registry).rsplit(":", 1)[0]
        if len(name) > OCI_NAME_MAX:
            raise InputError(f"image name {name[:60]!r}... is {len(name)} characters; registry and repository "
                             f"together have at most {OCI_NAME_MAX}")
    return specs


def _image_specs(release: Release, recipes_dir: Path, settings: Settings) -> list[ImageSpec]:
    image = release.image
    kind = image.get("kind")
    if not kind:
        raise InputError(f"{release.path}: release {release.name!r} has no [image] kind; add [image] with "
                         "kind = 'vllm' or 'pytorch', repository and base")
    for key in ("repository", "base"):
        if key not in image:
            raise InputError(f"{release.path}: [image] needs {key!r} to build images")
    repository = settings.repository or image["repository"]
    ns = settings.label_namespace
    # Every value below becomes Dockerfile text, a bake-file string or a docker argument: each is
    # checked against its grammar, so no tag or label can add a line (`x\nRUN ...`).
    check_text(release.name, f"{release.path}: release name")
    if settings.registry:
        check_oci_registry(settings.registry, "--registry")
    check_oci_repository(repository, "--repository" if settings.repository else f"{release.path} [image].repository")
    check_label_namespace(ns, "--label-namespace")
    groups = release_groups(release, recipes_dir)
    arg_labels = dict(BUILD_ARG_LABELS) | {f"{ns}.{c}_build_key": build_key_arg(c) for c in sorted(release.components)}
    jit = jit_env(release, recipes_dir)
    common = dict(release=release.name, python=release.target.python, platform=release.target.platform,
                  groups=groups, arg_labels=arg_labels, jit_home=jit.get("CUDA_HOME"))
    if kind == "vllm":
        vllm = release.version_of("vllm")
        transformers = release.version_of("transformers")
        if "tag" in image:
            tag = image["tag"]
        elif vllm and transformers:
            tag = f"{vllm}-t{_major(transformers, 'transformers', release)}"
        else:
            raise InputError(f"{release.path}: a vllm image is tagged <vllm>-t<transformers major>; the release "
                             "needs [components.vllm] and [pins] transformers, or an explicit [image] tag")
        t_major = _major(transformers, "transformers", release) if transformers else None
        base = settings.base_image or image["base"]
        return [ImageSpec(variant="runtime", repository=repository, tag=tag, base=base,
                          labels=_labels(release, ns, repository, tag, base), transformers_major=t_major,
                          vllm_version=vllm, env={**jit, **gate_env(release.target.cuda)}, user=VLLM_USER,
                          entrypoint=True, **common)]
    torch = release.version_of("torch")
    if "tag" in image:
        tag = image["tag"]
    elif torch:
        tag = f"{torch}-cu{cuda_minor(release.target.cuda).replace('.', '')}"
    else:
        raise InputError(f"{release.path}: a pytorch image is tagged <torch>-cu<cuda>; add [components.torch]")
    specs = []
    # The dev image is the runtime image plus build tooling and the release's toolkit, on the same base
    # (a `dev_base`, e.g. a CUDA devel image, is still honoured: docs/IMAGES.md compares the two).
    for variant, base in (("dev", image.get("dev_base", image["base"])), ("runtime", image["base"])):
        repo = f"{repository}-{variant}"
        base = settings.base_image or base
        dev = variant == "dev"
        labels = {**arg_labels, **({f"{ns}.cuda_toolkit": TOOLKIT_ARG} if dev else {})}
        specs.append(ImageSpec(variant=variant, repository=repo, tag=tag, base=base,
                               labels=_labels(release, ns, repo, tag, base), dev_tooling=dev,
                               env=jit | dev_env(release) if dev else jit,
                               **(common | {"arg_labels": labels})))
    return specs
