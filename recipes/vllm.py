"""vLLM from source against the factory's torch, with every CMake FetchContent dependency
pre-fetched (so `build --offline` works) and a check that no kernel family the target arch
supports was skipped.

Steps, as the anchors do them and with their traps closed:
- use_existing_torch.py strips vLLM's torch pins so the build uses the factory's torch;
- requirements are edited so flashinfer, triton and torch are pinned to the factory's versions
  (satisfied only by the wheelhouse in a locked install), each edit failing loudly on drift;
- the CMake dependencies (CUTLASS, vllm-flash-attn, FlashMLA, ...) come from recipes/data/
  vllm.toml per version, fetched as extra sources and passed through their *_SRC_DIR variables;
- for CUDA >= 13, vLLM's CMake intersects the requested arches with its supported list and can
  rewrite 12.1a to 12.0, silently dropping NVFP4 kernels (vllm-project/vllm PRs 38126, 38484,
  41738): the build log is checked for "Not building ..." lines of families the arch supports;
- from 0.33, vLLM ships a Rust frontend (vllm-rs, a cargo workspace under rust/) that setup.py builds
  with setuptools-rust, downloading 600-odd crates from crates.io and GitHub, and skips silently when
  that fails: `fetch` vendors the crates its Cargo.lock names into the cache (wheelfactory/sources/cargo.py),
  the build runs cargo offline against them with VLLM_REQUIRE_RUST_FRONTEND=1, so a failure fails the
  step; options.rust_frontend = false leaves vllm-rs out instead (no cargo needed).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from wheelfactory.recipe_api import (
    BuildContext,
    BuildError,
    CudaArch,
    EnvSpec,
    FetchContext,
    GccNeed,
    GitSource,
    Option,
    Recipe,
    Repair,
    Source,
    cargo,
    devicecode,
    recipe_data,
    torch_arch_list,
    version_table,
)

# Cross-builds (`build --cross`): vLLM's kernels are a CMake project, and every CMake its setup.py
# starts reads the cross step's CMAKE_TOOLCHAIN_FILE (target compilers, this host's nvcc, the target's
# CUDA libraries, the target torch's CMake prefix); see crossbuild.py and README "Cross builds".
CROSS = True

RECIPE = Recipe(
    name="vllm",
    summary="vLLM with CUDA kernels for the release's arch list, against the factory's torch",
    source=GitSource("https://github.com/vllm-project/vllm.git", ref="v{version}"),
    outputs=("vllm",),
    depends_on=("torch", "nccl", "triton", "flashinfer"),
    # Only torch is needed to compile; the others are pinned runtime requirements (and enter the key).
    build_with=("torch",),
    # One nvcc process on CUTLASS-heavy translation units takes 4-6 GB (eugr/spark-vllm-docker#23).
    mem_per_job_gb=6.0,
    # Without kernels (options.kernels = false) vLLM compiles nothing.
    disk_gb=25.0,
    disk_gb_if=(("kernels", False, 3.0),),
    # vLLM's CMake tests CMAKE_CXX_COMPILER_ID STREQUAL "GNU", so a clang configures, but as nvcc's
    # host compiler clang 14 stopped on Marlin's generated kernel selector (measured on 0.33.0).
    gcc_needs=(GccNeed(">=0.33", 13, "DeepGEMM and DeepSelect host code uses C++20 <format>; vLLM's CMake "
                                     "stops below GCC 13 (vllm-project/vllm#58158)",
                       clang="a clang passes vLLM's CMake check, but clang 14 as nvcc's host compiler stops on its "
                             "Marlin kernels (\"bracket nesting level exceeded\" in "
                             "csrc/quantization/marlin/kernel_selector.h): --until configure works, a full build "
                             "needs GCC 13",
                       when=("kernels", True)),),
    repair=Repair(mode="retag", strip=True),
    smoke=("import vllm; print('vllm', vllm.__version__)",),
    options=(Option("kernels", bool, True, "false: VLLM_TARGET_DEVICE=empty, a pure-Python wheel without CUDA "
                    "kernels (CI, plan-only checks)"),
             Option("rust_frontend", bool, True, "vLLM >= 0.33: build the Rust frontend (vllm-rs) from crates "
                    "vendored at fetch, offline; false leaves it out (no cargo needed)")),
    data_files=("vllm.toml", "vllm_kernels.toml"),
    # rustup's own location, where it is not ~/.rustup: cargo and rustc are its proxies.
    pass_env=("RUSTUP_HOME",),
)


def _data(version: str) -> dict:
    """The per-version table of recipes/data/vllm.toml (CMake dependencies, requirement edits)."""
    return version_table(RECIPE, __file__, "vllm.toml", version,
                         "add the pinned CMake dependencies of that tag (cmake/external_projects/*.cmake)")


def _kernels_enabled(spec_or_options) -> bool:
    """options = { kernels = false } builds vLLM with VLLM_TARGET_DEVICE=empty: a pure-Python
    wheel with no CUDA kernels (CI, and plan-only checks)."""
    options = getattr(spec_or_options, "options", spec_or_options)
    return options["kernels"]


def _rust_table(version: str) -> dict | None:
    """The version's Rust frontend table in recipes/data/vllm.toml, if any (a version without
    kernels needs no table at all)."""
    return recipe_data(RECIPE, __file__, "vllm.toml").get(version, {}).get("rust")


def _rust(version: str, options) -> dict | None:
    """The Rust frontend table when the build compiles it: the version has one and
    options.rust_frontend is on."""
    rust = _rust_table(version)
    return rust if rust and options["rust_frontend"] else None


def _check_rust_declared(version: str, tree: Path) -> None:
    """A tree with a Cargo.lock under rust/ and no [<version>.rust] table would build (or skip)
    its Rust frontend behind the factory's back: refuse, saying what to add."""
    if _rust_table(version) is None and (tree / "rust" / "Cargo.lock").is_file():
        raise BuildError(f"vLLM {version}'s source has a Rust frontend (rust/Cargo.lock) and recipes/data/vllm.toml "
                         f"has no [\"{version}\".rust] table; add one (lock, manifest, toolchain, disable) as "
                         "0.33.0 has, so that its crates are vendored at fetch")


def extra_sources(spec: EnvSpec) -> dict[str, Source]:
    if not _kernels_enabled(spec):
        return {}
    return {name: GitSource(dep["git"], dep["ref"], submodules=dep.get("submodules", False))
            for name, dep in _data(spec.version)["deps"].items()}


def environment(spec: EnvSpec) -> dict[str, str]:
    env = {
        "TORCH_CUDA_ARCH_LIST": torch_arch_list(spec.target.archs),
        "VLLM_TARGET_DEVICE": "cuda" if _kernels_enabled(spec) else "empty",
        # vLLM's default is RelWithDebInfo: hundreds of MB of debug info the runtime never uses.
        "CMAKE_BUILD_TYPE": "Release",
        # The source is a copy without .git: setuptools-scm gets the version from here.
        "SETUPTOOLS_SCM_PRETEND_VERSION": spec.version,
        "FETCHCONTENT_BASE_DIR": "${work}/_deps",
    }
    if _kernels_enabled(spec):
        for name, dep in _data(spec.version)["deps"].items():
            env[dep["env"]] = "${source_" + name + "}" + (f"/{dep['subdir']}" if "subdir" in dep else "")
    if _rust(spec.version, spec.options):
        # setuptools-rust treats vllm-rs as optional and skips it when cargo fails: not here.
        env["VLLM_REQUIRE_RUST_FRONTEND"] = "1"
        # cargo's own home in the work tree (its config.toml points at the vendored crates), and
        # no network for cargo, online or not.
        env["CARGO_HOME"] = "${work}/cargo-home"
        env["CARGO_NET_OFFLINE"] = "true"
    return env


def fetch(ctx: FetchContext) -> None:
    """The Rust frontend's crates, vendored into the cache (online), or checked there (offline)."""
    _check_rust_declared(ctx.version, ctx.src)
    if (rust := _rust(ctx.version, ctx.step.options)) is None:
        return
    dest = cargo.vendor(ctx.runner, ctx.cache, ctx.src / rust["manifest"], ctx.src / rust["lock"], offline=ctx.offline)
    ctx.runner.note(f"Rust frontend crates: {dest}")


def prepare(ctx: BuildContext) -> None:
    # The anchors' first step: drop vLLM's own torch pins from requirements and pyproject. The
    # script moved to tools/ in later vLLM (0.33 has only tools/use_existing_torch.py).
    script = "tools/use_existing_torch.py" if (ctx.src / "tools" / "use_existing_torch.py").is_file() \
        else "use_existing_torch.py"
    ctx.run([ctx.python, script])
    _check_rust_declared(ctx.version, ctx.src)
    rust = _rust_table(ctx.version)
    if rust and not ctx.step.options["rust_frontend"]:
        ctx.replace_in_file(ctx.src / "setup.py", *rust["disable"])  # no vllm-rs, and no cargo run at all
    if not _kernels_enabled(ctx.step.options):
        return  # VLLM_TARGET_DEVICE=empty reads only requirements/common.txt, which pins none of them
    # Then pin what the factory builds to the factory's versions, so a locked install can only
    # take them from the wheelhouse; every edit fails loudly if upstream moved the line.
    names = {k.replace("-", "_"): v.split("-")[0] for k, v in ctx.versions.items()}
    for rel, edits in _data(ctx.version).get("requirements", {}).items():
        for pattern, replacement in edits:
            try:
                text = replacement.format(**names)
            except KeyError as e:
                raise BuildError(f"recipes/data/vllm.toml: the {rel} edit names {e}, which release "
                                 f"{ctx.step.component} does not carry") from None
            ctx.replace_in_file(ctx.src / rel, pattern, text, regex=True)


def _nvcc_threads(ctx: BuildContext) -> int:
    # Each nvcc runs NVCC_THREADS threads and vLLM runs MAX_JOBS // NVCC_THREADS of them, so the
    # memory-aware process count sets MAX_JOBS and the spare cores go to NVCC_THREADS.
    return max(1, min(4, ctx.cpus // max(ctx.jobs, 1)))


def _rust_env(ctx: BuildContext) -> dict[str, str]:
    """cargo's config (the vendored crates, offline) written into the step's CARGO_HOME, and the
    toolchain chosen without rustup downloading one; {} when the build compiles no Rust."""
    rust = _rust(ctx.version, ctx.step.options)
    if rust is None:
        return {}
    summary, vendor_dir = cargo.vendored(ctx.cache, ctx.src / rust["lock"])
    cargo_home = Path(ctx.env["CARGO_HOME"])
    cargo.write_config(cargo_home, summary, vendor_dir)
    env = cargo.build_env(cargo_home, ctx.jobs)
    return env | cargo.select_toolchain(ctx.runner, ctx.src, ctx.work, ctx.env | env)


def configure(ctx: BuildContext) -> None:
    """vLLM's own CMake configure, with the arguments its setup.py passes (cmake_build_ext.configure
    in 0.13-0.16), in a directory of its own; then the device-code plan from its build.ninja. The
    Rust toolchain and crates are checked first, before minutes of CMake."""
    _rust_env(ctx)
    if not _kernels_enabled(ctx.step.options):
        return  # VLLM_TARGET_DEVICE=empty: no CMake, no device code
    build_dir = ctx.work / "cmake-configure"
    build_dir.mkdir(exist_ok=True)
    threads = _nvcc_threads(ctx)
    python_path = ctx.run([ctx.python, "-c", "import sys; print(':'.join(sys.path))"], capture=True).strip()
    args = ["cmake", str(ctx.src), "-G", "Ninja",
            f"-DCMAKE_BUILD_TYPE={ctx.env.get('CMAKE_BUILD_TYPE', 'RelWithDebInfo')}",
            "-DVLLM_TARGET_DEVICE=cuda",
            f"-DVLLM_PYTHON_EXECUTABLE={ctx.python}",
            f"-DVLLM_PYTHON_PATH={python_path}",
            f"-DFETCHCONTENT_BASE_DIR={ctx.env['FETCHCONTENT_BASE_DIR']}",
            f"-DNVCC_THREADS={threads}",
            "-DCMAKE_JOB_POOL_COMPILE:STRING=compile",
            f"-DCMAKE_JOB_POOLS:STRING=compile={ctx.jobs}"]
    if ctx.env.get("CUDA_HOME"):
        args.append(f"-DCMAKE_CUDA_COMPILER={ctx.env['CUDA_HOME']}/bin/nvcc")
    args += ctx.env.get("CMAKE_ARGS", "").split()
    log = ctx.runner.log_path
    started = log.stat().st_size if log.exists() else 0
    ctx.run(args, cwd=build_dir)
    if log.exists():  # CMake's "Not building X" lines, known before any compile
        with open(log, "rb") as f:
            f.seek(started)
            _check_no_skipped_kernels(f.read().decode(errors="replace"), ctx.target.archs)
    ctx.check_device_code(build_dir / "build.ninja", _allowances())


def _allowances() -> list:
    """Kernel families recipes/data/vllm_kernels.toml accepts with less than native code, and why."""
    return devicecode.allowances_from(recipe_data(RECIPE, __file__, "vllm_kernels.toml"),
                                         "recipes/data/vllm_kernels.toml")


def build(ctx: BuildContext) -> list[Path]:
    threads = _nvcc_threads(ctx)
    env = {"NVCC_THREADS": str(threads), "MAX_JOBS": str(ctx.jobs * threads)} | _rust_env(ctx)
    wheels = ctx.build_wheel(env=env)
    if _kernels_enabled(ctx.step.options):
        _check_no_skipped_kernels(ctx.runner.log_path.read_text(errors="replace"), ctx.target.archs)
    if _rust(ctx.version, ctx.step.options):
        _check_rust_frontend(wheels)
    return wheels


def _check_rust_frontend(wheels: list[Path]) -> None:
    """The wheel carries vllm/vllm-rs (VLLM_REQUIRE_RUST_FRONTEND already fails a failed cargo)."""
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            if "vllm/vllm-rs" in zf.namelist():
                return
    raise BuildError(f"the Rust frontend was built, and no wheel carries vllm/vllm-rs "
                     f"({', '.join(w.name for w in wheels)})")


# vLLM's CMake words it "... as no compatible archs were found." or "... as no compatible archs found
# in CUDA target architectures", and skips for an old nvcc with "... as CUDA Compiler version is not".
SKIP_RE = re.compile(r"Not building (?P<what>.+?) as (?:no compatible archs|CUDA Compiler version is not)")
# vLLM prints the same family name for its per-arch variants ("Building NVFP4 for archs: 12.0f",
# then "Not building NVFP4 as no compatible archs were found." for the 10.0f variant): a skip is
# harmless when the family was built for some arch of the release.
BUILT_RE = re.compile(r"Building (?P<what>.+?) for archs:")


def _check_no_skipped_kernels(log: str, archs: tuple[CudaArch, ...]) -> None:
    """Fail if vLLM's CMake skipped a kernel family that the target arches support."""
    table = recipe_data(RECIPE, __file__, "vllm_kernels.toml")
    expected_skips = []
    for arch in archs:
        expected_skips += table.get(str(arch), {}).get("expected_skips", [])
    built = {m["what"].strip().lower() for m in BUILT_RE.finditer(log)}
    bad = [m["what"] for m in SKIP_RE.finditer(log)
           if m["what"].strip().lower() not in built
           and not any(s.lower() in m["what"].lower() for s in expected_skips)]
    if bad:
        raise BuildError("vLLM's CMake skipped kernel families the target arch supports (the 12.1a -> 12.0 "
                         f"rewrite trap?): {'; '.join(sorted(set(bad)))}. See the log; if a skip is truly "
                         "expected for this arch, add it to recipes/data/vllm_kernels.toml")
