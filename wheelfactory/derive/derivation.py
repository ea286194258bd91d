"""`wheelfactory release derive`: a release and its recipe data, read from upstream.

From a vLLM version (its sdist, or a git tag or commit): the CMake dependencies, requirement
edits and Rust frontend table (vLLM >= 0.33) for recipes/data/vllm.toml, the torch family and
FlashInfer pins, the transformers range;
from torch's published METADATA: the Triton range, the NCCL pin and the CUDA of its build; from
Triton's source at its tag: the LLVM hash for recipes/data/triton.toml. Every value carries the
file and line (or index entry) it came from, and what could not be read here is listed with the
reason instead of guessed. Writing never replaces what is there without --force.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from ..core.errors import FactoryError, InputError
from .cmake_deps import CmakeDep, read_cmake_deps
from .upstream import Unreachable
from .vllm_tree import CUDA_REQUIREMENTS, find_pin, requirement_edits, rust_frontend, use_existing_torch

POLICY = Path(__file__).with_name("data") / "derive.toml"

# The DGX Spark target of every shipped release, used when no --extends release gives one.
SPARK_TARGET = {"python": "3.12", "cuda_arch_list": ["12.1a"], "platform": "linux_aarch64"}
IMAGE = {"kind": "vllm", "repository": "dgx-spark-vllm"}


class Upstream(Protocol):
    def vllm_tree(self, version: str, ref: str | None, git: str | None = None) -> tuple[Path, str]: ...
    def describe(self, version: str, ref: str | None) -> str: ...
    def triton_tree(self, version: str) -> tuple[Path, str]: ...
    def versions(self, project: str) -> list[str]: ...
    def wheel_metadata(self, project: str, version: str, python: str, machine: str) -> tuple[Any, str]: ...
    def has_wheel(self, project: str, version: str, python: str, machine: str) -> str | None: ...


@dataclass
class Derivation:
    """Everything derive found, each value with its source, and what it could not find."""

    values: list[tuple[str, str, str]] = field(default_factory=list)  # (key, value, source)
    missing: list[tuple[str, str]] = field(default_factory=list)  # (key, why)
    notes: list[str] = field(default_factory=list)
    data: dict[str, dict[str, Any]] = field(default_factory=dict)  # data file -> {version key: entry}
    releases: dict[str, str] = field(default_factory=dict)  # release name -> TOML text

    def add(self, key: str, value: str, source: str) -> str:
        self.values.append((key, value, source))
        return value

    def report(self) -> str:
        shown = [(f"{k}=={v}" if re.fullmatch(r"[\w.-]+", k) and " " not in v else f"{k}: {v}", s)
                 for k, v, s in self.values]
        width = max((len(text) for text, _ in shown), default=0)
        width = min(width, 44)  # dependency lines are long; keep the short pins aligned
        lines = [f"{text:<{width}}  <- {source}" for text, source in shown]
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"NOT DERIVED {k}: {why}" for k, why in self.missing]
        return "\n".join(lines)


def _policy() -> dict[str, str]:
    with open(POLICY, "rb") as f:
        return tomllib.load(f).get("submodules", {})


def source_name(dep: CmakeDep) -> str:
    """The extra source's name in the recipe (a `${source_<name>}` placeholder, so an identifier):
    '-' becomes '_' and vLLM's own prefix goes ('vllm-flash-attn' -> 'flash_attn')."""
    return dep.name.replace("-", "_").removeprefix("vllm_")


def rust_table(tree: Path, label: str, d: Derivation) -> dict[str, Any] | None:
    """The entry's `rust` table (the Rust frontend's lock, manifest, toolchain, setup.py switch),
    each value shown with its source; None for a tree without rust/, or while a value could not
    be derived (listed in d.missing: a partial table would vendor or switch off the wrong thing)."""
    rust = rust_frontend(tree)
    if rust is None:
        return None
    for name, value, where in rust.values:
        d.add(f"vllm rust {name}", value, f"{label}/{where}")
    d.notes += [f"{label}: {n}" for n in rust.notes]
    d.missing += [(f"vllm rust {name}", why) for name, why in rust.problems]
    return rust.table


def vllm_entry(tree: Path, label: str, d: Derivation) -> dict[str, Any] | None:
    """recipes/data/vllm.toml's entry for the tree: deps from CMake, requirement edits, the Rust
    frontend."""
    policy = _policy()
    deps: dict[str, dict[str, Any]] = {}
    for dep in read_cmake_deps(tree):
        name = source_name(dep)
        where = f"{label}/{dep.where}"
        if dep.unresolved:
            d.missing.append((f"vllm dep {name}", f"{dep.where}: GIT_REPOSITORY/GIT_TAG use a variable the CMake "
                                                  f"files never set ({dep.git}@{dep.ref})"))
            continue
        if dep.env is None:
            d.missing.append((f"vllm dep {name}", f"{dep.where}: no `if(DEFINED ENV{{..._SRC_DIR}})` override before "
                                                  "the declaration; the factory cannot hand CMake a pre-fetched tree"))
            continue
        entry: dict[str, Any] = {"git": dep.git, "ref": dep.ref, "env": dep.env}
        if dep.submodules is None:
            fetch_subs = dep.git not in policy
            why = ("FetchContent's default: all, recursively" if fetch_subs
                   else f"none: {policy[dep.git]} ({POLICY.parent.name}/{POLICY.name})")
        else:
            fetch_subs = bool(dep.submodules)
            listed = " ".join(dep.submodules) or '""'
            why = f"GIT_SUBMODULES {listed}"
        if fetch_subs:
            entry["submodules"] = True
        if dep.subdir:  # the override variable then names that directory (triton_kernels.cmake)
            entry["subdir"] = dep.subdir
        deps[name] = entry
        d.add(f"vllm dep {name}", f"{dep.git}@{dep.ref} env {dep.env}"
              + (f" subdir {dep.subdir}" if dep.subdir else "") + f"; submodules {why}", where)
    edits, notes, problems = requirement_edits(tree)
    for n in notes:
        d.notes.append(f"{label}: {n}")
    for p in problems:
        d.missing.append(("vllm requirement edits", p))
    try:
        script = use_existing_torch(tree)
        d.add("vllm use_existing_torch", script, f"{label}/{script}")
    except InputError as e:
        d.missing.append(("vllm use_existing_torch", str(e)))
    rust = rust_table(tree, label, d)
    if not deps and not edits and rust is None:
        return None
    entry = {"deps": deps}
    if edits:
        entry["requirements"] = edits
    if rust is not None:
        entry["rust"] = rust
    return entry


def _newest(versions: list[str], spec: str, major: int | None = None) -> str | None:
    req = Requirement(f"x{spec}") if spec else None
    ok = [Version(v) for v in versions
          if not Version(v).is_prerelease and (req is None or req.specifier.contains(v))
          and (major is None or Version(v).major == major)]
    return str(max(ok)) if ok else None


def _requires(metadata: Any) -> dict[str, Requirement]:
    out = {}
    for line in metadata.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is not None and "extra" in str(req.marker):
            continue
        out[canonicalize_name(req.name)] = req
    return out


def _exact(req: Requirement | None) -> str | None:
    specs = list(req.specifier) if req else []
    return specs[0].version if len(specs) == 1 and specs[0].operator == "==" else None


def _data_table(recipes_dir: Path, name: str) -> dict[str, Any]:
    path = recipes_dir / "data" / name
    if not path.is_file():
        return {}
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not valid TOML: {e}") from None


def triton_toolchain(tree: Path, label: str, d: Derivation, version: str) -> dict[str, str] | None:
    """Triton's LLVM hash (cmake/llvm-hash.txt) and nlohmann/json version (setup.py) at its tag."""
    hash_file = tree / "cmake" / "llvm-hash.txt"
    if not hash_file.is_file():
        d.missing.append((f"triton {version} llvm_hash", f"{label}: no cmake/llvm-hash.txt"))
        return None
    llvm = hash_file.read_text().strip()
    if not re.fullmatch(r"[0-9a-f]{40}", llvm):
        d.missing.append((f"triton {version} llvm_hash", f"{label}: cmake/llvm-hash.txt is not a commit: {llvm!r}"))
        return None
    json_version = None
    for rel in ("setup.py", "python/setup.py"):
        if (tree / rel).is_file():
            text = (tree / rel).read_text()
            m = (re.search(r"nlohmann/json/releases/download/v(\d+\.\d+\.\d+)", text)
                 or re.search(r"def get_json_package_info\(\):\s*\n\s*url\s*=.*\n?\s*version\s*=\s*['\"]([\d.]+)['\"]",
                              text)
                 or re.search(r"get_json_package_info.*?version\s*=\s*['\"](\d+\.\d+\.\d+)['\"]", text, re.S))
            if m:
                json_version = m.group(1)
                d.add(f"triton {version} json", json_version, f"{label}: {rel}")
                break
    if json_version is None:
        d.missing.append((f"triton {version} json", f"{label}: no nlohmann/json version in setup.py"))
        return None
    d.add(f"triton {version} llvm_hash", llvm, f"{label}: cmake/llvm-hash.txt")
    return {"llvm_hash": llvm, "json": json_version}


@dataclass(frozen=True)
class Request:
    vllm: str
    transformers: int
    ref: str | None = None
    cuda: str | None = None
    nccl: str | None = None
    extends: Any = None  # a loaded Release, or None
    name: str | None = None


def derive(up: Upstream, recipes_dir: Path, req: Request) -> Derivation:
    d = Derivation()
    try:
        tree, label = up.vllm_tree(req.vllm, req.ref)
    except Unreachable as e:
        raise FactoryError(f"cannot read vLLM {req.ref or req.vllm}: {e}") from None
    d.add("vllm", req.vllm, f"{label} ({up.describe(req.vllm, req.ref)})")
    entry = vllm_entry(tree, label, d)
    if entry is not None:
        d.data["vllm.toml"] = {req.vllm: entry}

    parent = req.extends
    target = dict(SPARK_TARGET)
    if parent is not None:
        target = {"python": parent.target.python, "cuda_arch_list": list(parent.target.cuda_arch_list),
                  "platform": parent.target.platform}
    machine = target["platform"].split("_", 1)[1]

    versions: dict[str, str] = {"vllm": req.vllm}
    for project, component in (("torch", "torch"), ("torchvision", "torchvision"), ("torchaudio", "torchaudio"),
                               ("flashinfer-python", "flashinfer")):
        pin = find_pin(tree, project)
        if pin is None or pin.exact is None:
            d.missing.append((component, f"{label}: {CUDA_REQUIREMENTS} pins no exact {project}"))
            continue
        versions[component] = d.add(component, pin.exact, f"{label}/{pin.where}")

    # transformers: the newest release of the asked major inside vLLM's range
    pins: dict[str, str] = {}
    t_pin = find_pin(tree, "transformers")
    spec = str(t_pin.requirement.specifier) if t_pin else ""
    try:
        available = up.versions("transformers")
    except Unreachable as e:
        available = []
        d.missing.append(("transformers", str(e)))
    chosen = _newest(available, spec, req.transformers) if available else None
    where = f"{label}/{t_pin.where} ({t_pin.line.strip()})" if t_pin else "vLLM declares no range"
    if available and chosen is None:
        allowed = sorted({Version(v).major for v in available if Requirement(f"x{spec}").specifier.contains(v)})
        raise InputError(f"--transformers {req.transformers}: vLLM {req.vllm} requires transformers {spec} ({where}); "
                         f"no transformers {req.transformers}.x release satisfies it (allowed majors: "
                         f"{', '.join(map(str, allowed)) or 'none'})")
    if chosen:
        pins["transformers"] = d.add("transformers", chosen, f"newest {req.transformers}.x on the index within {where}")
        others = [m for m in (4, 5) if m != req.transformers and _newest(available, spec, m)]
        d.notes.append(f"vLLM {req.vllm} allows transformers {spec}: "
                       + (f"a -t{others[0]} sibling is possible too" if others
                          else f"only -t{req.transformers} (no other major satisfies it)"))

    # torch's published METADATA: Triton, NCCL and the CUDA of its build
    torch_cuda = None
    triton_spec = nccl_pin = None
    if "torch" in versions:
        try:
            meta, wheel = up.wheel_metadata("torch", versions["torch"], target["python"], machine)
            requires = _requires(meta)
            triton_spec = requires.get("triton")
            nccl_pin = _exact(requires.get("nvidia-nccl-cu13"))
            toolkit = _exact(requires.get("cuda-toolkit")) or _exact(requires.get("nvidia-cuda-runtime"))
            if toolkit:
                torch_cuda = d.add("torch's CUDA", toolkit,
                                   f"{wheel} METADATA (cuda-toolkit / nvidia-cuda-runtime pin)")
            if nccl_pin:
                d.add("nvidia-nccl-cu13", nccl_pin, f"{wheel} METADATA")
            if triton_spec is not None:
                d.add("torch's triton", str(triton_spec.specifier), f"{wheel} METADATA")
        except Unreachable as e:
            d.missing.append(("torch METADATA (triton, NCCL, CUDA)", str(e)))

    # NCCL: the release's component version is NCCL's tag form X.Y.Z-R.
    if req.nccl:
        versions["nccl"] = d.add("nccl", req.nccl, "--nccl")
    elif nccl_pin:
        versions["nccl"] = d.add("nccl", f"{nccl_pin}-1", f"torch's nvidia-nccl-cu13=={nccl_pin}; NCCL tags each "
                                                         "release v<X.Y.Z>-1")
    elif parent is not None and "nccl" in parent.components:
        versions["nccl"] = d.add("nccl", parent.components["nccl"].version, f"--extends {parent.name}")
    else:
        d.missing.append(("nccl", "torch's METADATA pins no nvidia-nccl-cu13; pass --nccl"))

    # CUDA: asked for, else the parent's, else the CUDA of torch's own build
    cuda = req.cuda or (parent.target.cuda if parent is not None else None) or torch_cuda
    if cuda:
        d.add("cuda", cuda, "--cuda" if req.cuda else (f"--extends {parent.name}" if parent is not None
                                                        else "torch's CUDA"))
        if torch_cuda and cuda.split(".")[:2] != torch_cuda.split(".")[:2]:
            d.notes.append(f"the release builds with CUDA {cuda}; torch {versions.get('torch')}'s official wheels "
                           f"use {torch_cuda} (the factory's torch is built against the release's CUDA)")
        minor = ".".join(cuda.split(".")[:2])
        wheels = _data_table(recipes_dir, "cuda_wheels.toml").get(minor)
        if wheels is None:
            d.missing.append((f"cuda_wheels.toml [\"{minor}\"]", f"recipes/data/cuda_wheels.toml has no CUDA {minor} "
                              "pins; add its requires/jit/toolkit wheels (cuda-toolkit=={cuda} on the index lists "
                              "them) or pass --cuda with a CUDA it has"))
        else:
            for spec_ in wheels.get("jit", []):
                name, _, version = spec_.partition("==")
                pins[name] = d.add(name, version, f"recipes/data/cuda_wheels.toml [\"{minor}\"].jit")
    else:
        d.missing.append(("cuda", "no --cuda, no --extends, and torch's CUDA unknown"))

    # Triton: built from source when its LLVM hash is known, else adopted from the index
    triton_adopt = None
    if triton_spec is not None:
        try:
            triton_v = _newest(up.versions("triton"), str(triton_spec.specifier))
        except Unreachable as e:
            triton_v = None
            d.missing.append(("triton", str(e)))
        if triton_v:
            versions["triton"] = d.add("triton", triton_v, f"newest on the index within torch's "
                                                            f"triton{triton_spec.specifier}")
            shipped = _data_table(recipes_dir, "triton.toml").get(triton_v)
            try:
                ttree, tlabel = up.triton_tree(triton_v)
                toolchain = triton_toolchain(ttree, tlabel, d, triton_v)
                if toolchain:
                    d.data["triton.toml"] = {triton_v: toolchain}
            except Unreachable as e:
                if shipped is None:
                    wheel = up.has_wheel("triton", triton_v, target["python"], machine)
                    if wheel:
                        triton_adopt = f"triton=={triton_v}"
                        d.notes.append(f"triton {triton_v} is adopted ({wheel} from the index), not built: its "
                                       f"LLVM hash (cmake/llvm-hash.txt at v{triton_v}) could not be read ({e}); "
                                       "derive again where that repository is reachable to build it")
                    d.missing.append((f"triton {triton_v} llvm_hash", str(e)))
                else:
                    d.notes.append(f"triton {triton_v}: recipes/data/triton.toml has an entry; not re-read ({e})")

    try:
        ray = _newest(up.versions("ray"), "")
        if ray:
            pins["ray"] = d.add("ray", ray, "newest on the index (multi-node tensor parallelism, as the reference "
                                             "images ship it; vLLM's CUDA requirements do not pin it)")
    except Unreachable as e:
        d.missing.append(("ray", str(e)))

    name = req.name or f"{req.vllm}-t{req.transformers}"
    d.releases[name] = render_release(name, req, versions, pins, target, cuda, triton_adopt, parent)
    return d


def _toml_str(s: str) -> str:
    return json.dumps(s)  # JSON's string escapes are TOML's basic-string escapes


def _toml_literal(s: str) -> str:
    """A literal string where TOML allows one (regexes stay readable), else a basic string."""
    return f"'{s}'" if "'" not in s and "\n" not in s else json.dumps(s)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return _toml_str(str(v))


BUILT_ORDER = ("nccl", "torch", "torchvision", "torchaudio", "triton", "flashinfer", "vllm")


def render_release(name: str, req: Request, versions: dict[str, str], pins: dict[str, str], target: dict[str, Any],
                   cuda: str | None, triton_adopt: str | None, parent: Any) -> str:
    built = [c for c in BUILT_ORDER if c in versions and not (c == "triton" and triton_adopt)]
    args = f"--vllm {req.vllm} --transformers {req.transformers}" + (f" --ref {req.ref}" if req.ref else "") \
        + (f" --cuda {req.cuda}" if req.cuda else "") + (f" --nccl {req.nccl}" if req.nccl else "") \
        + (f" --extends {parent.name}" if parent is not None else "")
    lines = [f"# vLLM {req.vllm} with transformers {pins.get('transformers', '?')} on PyTorch "
             f"{versions.get('torch', '?')} / CUDA {cuda or '?'} / NCCL {versions.get('nccl', '?')}, "
             f"for {', '.join(target['cuda_arch_list'])} ({target['platform']}).",
             f"# Built from source: {', '.join(built)}."]
    if triton_adopt:
        lines.append(f"# Adopted: triton (the official wheel, {triton_adopt}): its LLVM pin could not be read where "
                     "this was derived.")
    lines += [f"# Derived from upstream by `wheelfactory release derive {args}`;",
              "# `wheelfactory release check` re-derives it and reports drift.",
              ""]
    torch_part = " / ".join(versions.get(c, "?") for c in ("torch", "torchvision", "torchaudio"))
    description = (f"vLLM {req.vllm} with transformers {req.transformers}, on PyTorch {torch_part} / CUDA {cuda} / "
                   f"NCCL {versions.get('nccl', '?')}")
    lines.append(f"description = {_toml_str(description)}")
    if parent is not None:
        lines.append(f"extends = {_toml_str(parent.name)}")
    lines.append("")
    p_target = parent.target if parent is not None else None
    target_table = {"python": target["python"], "cuda": cuda, "cuda_arch_list": target["cuda_arch_list"],
                    "platform": target["platform"]}
    if p_target is None or p_target.cuda != cuda:
        keys = target_table if p_target is None else {"cuda": cuda}
        lines.append("[target]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in keys.items()]
        lines.append("")
    if parent is None or parent.image.get("kind") != "vllm" or (p_target and p_target.cuda != cuda):
        image = dict(IMAGE) | {"base": f"nvidia/cuda:{cuda}-base-ubuntu24.04"}
        lines.append("[image]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in image.items()]
        lines.append("")
    for c in BUILT_ORDER:
        if c not in versions:
            continue
        adopt = triton_adopt if c == "triton" else None
        if parent is not None and c in parent.components and parent.components[c].version == versions[c] \
                and parent.components[c].adopt == adopt:
            continue
        lines.append(f"[components.{c}]")
        lines.append(f"version = {_toml_str(versions[c])}")
        if adopt:
            lines.append(f"adopt = {_toml_str(adopt)}")
        lines.append("")
    changed = {k: v for k, v in pins.items() if parent is None or parent.pins.get(k) != v}
    if changed:
        lines.append("[pins]")
        lines += [f"{k} = {_toml_str(v)}" for k, v in changed.items()]
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


# -- data files: render, locate, compare, write ---------------------------------------------

def render_entry(file: str, key: str, entry: dict[str, Any]) -> str:
    if file == "vllm.toml":
        lines = []
        for name, dep in entry["deps"].items():
            lines.append(f"[{json.dumps(key)}.deps.{name}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in dep.items()]
        for rel, edits in entry.get("requirements", {}).items():
            lines.append(f"[{json.dumps(key)}.requirements]")
            lines.append(f"{json.dumps(rel)} = [")
            lines += [f"    [{_toml_literal(p)}, {_toml_literal(r)}]," for p, r in edits]
            lines.append("]")
        if "rust" in entry:
            lines.append(f"[{json.dumps(key)}.rust]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in entry["rust"].items()]
        return "\n".join(lines) + "\n"
    lines = [f"[{json.dumps(key)}]"] + [f"{k} = {_toml_value(v)}" for k, v in entry.items()]
    return "\n".join(lines) + "\n"


_HEADER = re.compile(r'^\[\[?"([^"]+)"')


def entry_span(text: str, key: str) -> tuple[int, int] | None:
    """The [start, end) line range of a version key's tables in a data file, if present."""
    lines = text.splitlines()
    start = end = None
    for i, line in enumerate(lines):
        m = _HEADER.match(line)
        if m and m.group(1) == key and start is None:
            start = i
        elif m and start is not None and m.group(1) != key:
            end = i
            break
    if start is None:
        return None
    end = len(lines) if end is None else end
    while end > start and not lines[end - 1].strip():
        end -= 1
    return start, end


def normalize_vllm_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """Equal meaning, equal value: an absent `submodules` is false in the recipe; no `rust` table
    is None."""
    deps = {n: {k: v for k, v in d.items() if not (k == "submodules" and v is False)}
            for n, d in entry.get("deps", {}).items()}
    return {"deps": deps, "requirements": entry.get("requirements", {}), "rust": entry.get("rust")}


def rust_differences(shipped: dict[str, Any] | None, derived: dict[str, Any] | None) -> list[str]:
    """The `rust` table's differences, field by field."""
    if shipped == derived:
        return []
    if shipped is None:
        return [f"rust: no table shipped | upstream {derived}"]
    if derived is None:
        return [f"rust: shipped {shipped} | upstream none (no rust/ directory, or a value not derived)"]
    return [f"rust.{k}: shipped {shipped.get(k)!r} | upstream {derived.get(k)!r}"
            for k in [*derived, *(k for k in shipped if k not in derived)] if shipped.get(k) != derived.get(k)]


def entry_differences(file: str, shipped: dict[str, Any] | None, derived: dict[str, Any]) -> list[str]:
    if shipped is None:
        return ["no entry"]
    if file == "vllm.toml":
        shipped, derived = normalize_vllm_entry(shipped), normalize_vllm_entry(derived)
        out = []
        for name in sorted(set(shipped["deps"]) | set(derived["deps"])):
            a, b = shipped["deps"].get(name), derived["deps"].get(name)
            if a != b:
                out.append(f"dep {name}: shipped {a} | upstream {b}")
        if shipped["requirements"] != derived["requirements"]:
            out.append(f"requirements: shipped {shipped['requirements']} | upstream {derived['requirements']}")
        return out + rust_differences(shipped["rust"], derived["rust"])
    return [f"{k}: shipped {shipped.get(k)!r} | upstream {v!r}" for k, v in derived.items() if shipped.get(k) != v]


@dataclass
class Write:
    path: Path
    old: str
    new: str
    status: str  # "new", "same", "differs"

    def diff(self) -> str:
        return "".join(difflib.unified_diff(self.old.splitlines(keepends=True), self.new.splitlines(keepends=True),
                                            str(self.path), str(self.path)))


def plan_writes(d: Derivation, recipes_dir: Path, releases_dir: Path, force: bool) -> list[Write]:
    """What writing the derivation would change, file by file. An entry or release file that is
    there and differs is replaced only with force ("differs-forced"); otherwise it is "differs"
    and nothing of that file is written."""
    writes = []
    for file, entries in d.data.items():
        path = recipes_dir / "data" / file
        old = path.read_text() if path.exists() else ""
        shipped = _data_table(recipes_dir, file)
        new, differs = old, False
        for key, entry in entries.items():
            text = render_entry(file, key, entry)
            span = entry_span(new, key)
            if span is None:
                new = new.rstrip("\n") + "\n\n" + f"# {key}: derived by `wheelfactory release derive`\n" + text
            elif entry_differences(file, shipped.get(key), entry):
                differs = True
                lines = new.splitlines(keepends=True)
                new = "".join(lines[:span[0]]) + text + "".join(lines[span[1]:])
        status = ("differs-forced" if force else "differs") if differs else ("same" if new == old else "new")
        writes.append(Write(path, old, new, status))
    for name, text in d.releases.items():
        path = releases_dir / f"{name}.toml"
        old = path.read_text() if path.exists() else ""
        status = ("new" if not path.exists() else "same" if old == text
                  else "differs-forced" if force else "differs")
        writes.append(Write(path, old, text, status))
    return writes


# -- release check --------------------------------------------------------------------------

@dataclass
class CheckResult:
    release: str
    checked: list[str] = field(default_factory=list)  # what matched upstream
    drift: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)  # could not be read here, with why


def check_release(up: Upstream, recipes_dir: Path, rel: Any) -> CheckResult:
    """Re-derive what a release's data entries copied from upstream and compare."""

    result = CheckResult(rel.name)
    vllm = rel.components.get("vllm")
    if vllm is None:
        result.checked.append("no vLLM component: no upstream data to compare")
        return result
    try:
        source = vllm.source  # None: the recipe's own (the version's sdist)
        if source is not None and (here := source.in_place()) is not None:
            tree, label = here, source.describe()
        elif source is not None and (checkout := source.checkout()) is not None:
            url, ref = checkout
            tree, label = up.vllm_tree(vllm.version, ref, url)
        else:
            tree, label = up.vllm_tree(vllm.version, None)
    except Unreachable as e:
        result.unverified.append(f"vllm.toml [\"{vllm.version}\"]: {e}")
    else:
        d = Derivation()
        entry = vllm_entry(tree, label, d) or {"deps": {}}
        shipped = _data_table(recipes_dir, "vllm.toml").get(vllm.version)
        diffs = entry_differences("vllm.toml", shipped, entry)
        diffs += [f"{k}: {why}" for k, why in d.missing]
        if diffs:
            result.drift += [f"vllm.toml [\"{vllm.version}\"] vs {label}: {x}" for x in diffs]
        else:
            rust = ", the Rust frontend table" if entry.get("rust") else ""
            result.checked.append(f"vllm.toml [\"{vllm.version}\"] matches {label} ({len(entry['deps'])} CMake deps, "
                                  f"requirement edits{rust})")
    triton = rel.components.get("triton")
    if triton is not None and triton.adopt is None:
        shipped = _data_table(recipes_dir, "triton.toml").get(triton.version)
        try:
            ttree, tlabel = up.triton_tree(triton.version)
        except Unreachable as e:
            result.unverified.append(f"triton.toml [\"{triton.version}\"]: {e}")
        else:
            d = Derivation()
            toolchain = triton_toolchain(ttree, tlabel, d, triton.version)
            diffs = entry_differences("triton.toml", shipped, toolchain) if toolchain else \
                [f"{k}: {why}" for k, why in d.missing]
            if diffs:
                result.drift += [f"triton.toml [\"{triton.version}\"] vs {tlabel}: {x}" for x in diffs]
            else:
                result.checked.append(f"triton.toml [\"{triton.version}\"] matches {tlabel}")
    return result
