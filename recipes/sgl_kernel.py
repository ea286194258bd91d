"""SGLang's kernel library (sgl-kernel, published as sglang-kernel since 0.4.0) from the
`sgl-kernel/` directory of the sglang repository, against the factory's torch, with every CMake
FetchContent dependency fetched beforehand (so `build --offline` works).

What its build does, and the traps closed here:
- sgl-kernel is a scikit-build-core project whose CMakeLists.txt clones seven repositories
  (CUTLASS, fmt, Triton, FlashInfer, sgl-attn, mscclpp, FlashMLA), and mscclpp, added with
  add_subdirectory, clones three more (nanobind, dlpack, nlohmann/json): recipes/data/sgl_kernel.toml
  pins them per version and they reach CMake as FETCHCONTENT_SOURCE_DIR_* overrides, with
  FETCHCONTENT_FULLY_DISCONNECTED so that a dependency the data file misses fails the configure
  instead of cloning;
- its device code is hard-coded (-gencode lists in CMakeLists.txt, not the arch list): with CUDA
  >= 13 every object gets sm_90, sm_90a, sm_100a, sm_103a and sm_120a, and sm_110a + sm_121a only
  when CMAKE_SYSTEM_PROCESSOR is aarch64; FlashAttention 3 (flash_ops) is sm_90a only and FlashMLA
  sm_90a/100a/103a. The configure's device-code table shows what that means for the release's arch;
- it reads CUDA_VERSION from torch's CMake (Caffe2's cuda.cmake). Against a CPU torch that variable
  is empty, every CUDA >= 12.x branch is skipped and objects get sm_90 only, silently: the configure
  fails unless torch's CMake reported CUDA;
- cmake/flashmla.cmake edits FlashMLA's sources in place at configure time, so FlashMLA is copied
  out of the shared cache first (`writable` in the data file);
- dlpack's CMakeLists asks for a CMake older than 3.5, which CMake 4 refuses without
  CMAKE_POLICY_VERSION_MINIMUM (sgl-kernel's own Makefile sets it too);
- mscclpp's CMake requires libnuma's headers and library (Debian: libnuma-dev) on the build host
  (declared in host_libraries: `doctor` and `build` say so before anything is downloaded);
- 0.4.3 compiles with -std=c++17 and torch 2.14's headers require C++20: the plan refuses a torch at
  or above the data file's `torch_below`.

The fix: recipes/patches/sgl_kernel/<version>/ adds SGL_KERNEL_CUDA_ARCHS (the release's arch list
replaces the built-in lists; FlashAttention 3 and FlashMLA only for archs they run on) and makes
mscclpp take the same list. Status: written and configured (tests/data/sgl-kernel-configure), not
compiled (two objects compiled by hand in the configured tree).
"""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

from wheelfactory.recipe_api import (
    BuildContext,
    BuildError,
    EnvSpec,
    GitSource,
    HostLibrary,
    InputError,
    Recipe,
    Repair,
    Source,
    devicecode,
    recipe_data,
    torch_arch_list,
    version_table,
)

SUBDIR = "sgl-kernel"

RECIPE = Recipe(
    name="sgl_kernel",
    summary="SGLang's CUDA kernels (sglang-kernel) from the sglang repository's sgl-kernel/, against the "
            "factory's torch",
    # sgl-kernel versions are commits of the sglang monorepo, not tags: a release pins the commit
    # (recipes/data/sgl_kernel.toml names it per version) and prepare() checks the tree's version.
    source=None,
    outputs=("sglang-kernel",),
    depends_on=("torch",),
    # CMake >= 3.26 (CMakeLists.txt); scikit-build-core is the build backend of sgl-kernel/pyproject.toml.
    build_requires=("scikit-build-core>=0.10", "cmake>=3.26", "ninja"),
    # CUTLASS-heavy translation units, each compiled for up to seven SASS targets in one nvcc.
    mem_per_job_gb=8.0,
    # A guess until a build is measured: three full common_ops variants x up to seven targets,
    # FlashAttention 3 and FlashMLA objects.
    disk_gb=40.0,
    host_libraries=(HostLibrary("numa.h", "numa", "libnuma-dev",
                                "mscclpp's CMakeLists.txt: find_package(NUMA REQUIRED), cmake/FindNUMA.cmake"),),
    repair=Repair(mode="retag", strip=True),
    smoke=("import sgl_kernel; print('sgl_kernel', sgl_kernel.__version__)",),
    data_files=("sgl_kernel.toml",),
)


def _data(version: str) -> dict:
    return version_table(RECIPE, __file__, "sgl_kernel.toml", version,
                         "add the sglang commit of that version and the FetchContent pins of its "
                         "sgl-kernel/CMakeLists.txt and cmake/*.cmake")


def _deps(version: str) -> dict[str, dict]:
    return _data(version)["deps"]


def _tree_arg(name: str, dep: dict) -> str:
    """Where CMake finds the dependency: the fetched tree, or the step's private copy of it."""
    return f"${{work}}/deps/{name}" if dep.get("writable") else "${source_" + name + "}"


def extra_sources(spec: EnvSpec) -> dict[str, Source]:
    return {name: GitSource(dep["git"], dep["ref"], submodules=dep.get("submodules", False))
            for name, dep in _deps(spec.version).items()}


def _sgl_kernel_archs(archs) -> str:
    """The arch list as recipes/patches/sgl_kernel/<version>/0001 reads it (SGL_KERNEL_CUDA_ARCHS):
    MAJOR.MINOR with the a/f suffix, one -gencode each, SASS only."""
    ptx = [str(a) for a in archs if a.ptx]
    if ptx:
        raise InputError(f"sgl_kernel compiles SASS only (one -gencode=arch=compute_X,code=sm_X per arch); "
                         f"drop '+PTX' from {', '.join(ptx)} in the release's cuda_arch_list")
    return ";".join(f"{a.major}.{a.minor}{a.suffix}" for a in archs)


def _major_minor(version: str) -> tuple[int, int]:
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def _check_torch(spec: EnvSpec) -> None:
    """The release's torch must accept the C++ standard this version compiles with (data file)."""
    below = _data(spec.version).get("torch_below")
    torch = spec.component_versions.get("torch")
    if below and torch and _major_minor(torch) >= _major_minor(below):
        raise InputError(f"sgl_kernel {spec.version} compiles with -std=c++17 and torch {torch}'s headers require "
                         f"C++20: give the release a torch below {below} (recipes/data/sgl_kernel.toml; sglang "
                         f"commit {_data(spec.version)['commit'][:8]} pins 2.11.0)")


def environment(spec: EnvSpec) -> dict[str, str]:
    _check_torch(spec)
    overrides = [f"-DFETCHCONTENT_SOURCE_DIR_{dep['fetchcontent'].upper()}={_tree_arg(name, dep)}"
                 for name, dep in _deps(spec.version).items()]
    return {
        # Read by scikit-build-core (the build) and by configure() below. SGL_KERNEL_CUDA_ARCHS exists
        # with the version's patch only (recipes/data/patches.toml); without it CMake ignores it, and
        # the device-code check shows the built-in lists.
        "CMAKE_ARGS": " ".join([*overrides, "-DFETCHCONTENT_FULLY_DISCONNECTED=ON",
                                f"-DSGL_KERNEL_CUDA_ARCHS={_sgl_kernel_archs(spec.target.archs)}"]),
        "CMAKE_POLICY_VERSION_MINIMUM": "3.5",
        # torch's CMake turns it into -gencode flags that sgl-kernel then strips (clear_cuda_arches);
        # set so that torch does not guess from a GPU that the build host may not have.
        "TORCH_CUDA_ARCH_LIST": torch_arch_list(spec.target.archs),
    }


def prepare(ctx: BuildContext) -> None:
    project = ctx.src / SUBDIR / "pyproject.toml"
    if not project.is_file():
        raise BuildError(f"the source has no {SUBDIR}/pyproject.toml: give the sglang repository "
                         f"(commit {_data(ctx.version)['commit']} for {ctx.version}), not sgl-kernel/ alone")
    found = tomllib.loads(project.read_text())["project"]
    if found["name"] != RECIPE.outputs[0]:
        raise BuildError(f"{SUBDIR}/pyproject.toml of the source builds {found['name']}, and the recipe declares "
                         f"{RECIPE.outputs[0]} (sgl-kernel was renamed in 0.4.0): versions before 0.4.0 are not "
                         "supported")
    if found["version"] != ctx.version:
        raise BuildError(f"{SUBDIR}/pyproject.toml of the source says {found['name']} {found['version']}, and the "
                         f"release builds {ctx.version}; pin sglang commit {_data(ctx.version)['commit']}")
    for name, dep in _deps(ctx.version).items():
        if dep.get("writable"):
            copy = ctx.work / "deps" / name
            if not copy.exists():
                shutil.copytree(ctx.trees[name], copy, symlinks=True, ignore=shutil.ignore_patterns(".git"))


def _threads(ctx: BuildContext) -> int:
    # sgl-kernel passes --threads=SGL_KERNEL_COMPILE_THREADS (default 32) to every nvcc: with the
    # memory-aware process count that is jobs x 32 threads; give each nvcc the spare cores only.
    return max(1, ctx.cpus // max(ctx.jobs, 1))


def _cmake_args(ctx: BuildContext) -> list[str]:
    args = [*ctx.env["CMAKE_ARGS"].split(), f"-DSGL_KERNEL_COMPILE_THREADS={_threads(ctx)}"]
    if ctx.env.get("CUDA_HOME"):
        args += [f"-DCMAKE_CUDA_COMPILER={ctx.env['CUDA_HOME']}/bin/nvcc",
                 f"-DCUDA_TOOLKIT_ROOT_DIR={ctx.env['CUDA_HOME']}"]
    return args


def configure(ctx: BuildContext) -> None:
    """CMake's configure with what scikit-build-core passes (stable ABI 3.10, the venv's
    site-packages as prefix for torch's CMake config), in a directory of its own; then the check
    that torch's CMake found CUDA, and the device-code plan of build.ninja."""
    build_dir = ctx.work / "cmake-configure"
    build_dir.mkdir(exist_ok=True)
    args = ["cmake", str(ctx.src / SUBDIR), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
            f"-DPython_EXECUTABLE={ctx.python}", "-DSKBUILD=2",
            "-DSKBUILD_SABI_COMPONENT=Development.SABIModule", "-DSKBUILD_SABI_VERSION=3.10",
            f"-DCMAKE_PREFIX_PATH={ctx.site}", *_cmake_args(ctx)]
    log = ctx.runner.log_path
    started = log.stat().st_size if log.exists() else 0
    ctx.run(args, cwd=build_dir)
    if log.exists():
        with open(log, "rb") as f:
            f.seek(started)
            _check_torch_found_cuda(f.read().decode(errors="replace"))
    # The device-code table names objects of a dependency by the dependency (<flashmla>/csrc/...):
    # for the private copies that is the copy, not the cache tree.
    for name, dep in _deps(ctx.version).items():
        if dep.get("writable"):
            ctx.trees[name] = ctx.work / "deps" / name
    ctx.check_device_code(build_dir / "build.ninja", _allowances())


# Caffe2's public/cuda.cmake prints this once it has found the toolkit and set CUDA_VERSION.
TORCH_CUDA_RE = re.compile(r"PyTorch: CUDA detected: (?P<version>\d+\.\d+)")


def _check_torch_found_cuda(log: str) -> str:
    """sgl-kernel's arch branches test CUDA_VERSION, which only torch's CMake sets: without it
    they all fall through to sm_90 alone. The CUDA version torch's CMake found, or a BuildError."""
    m = TORCH_CUDA_RE.search(log)
    if m is None:
        raise BuildError("torch's CMake did not report CUDA (no 'PyTorch: CUDA detected' line): sgl-kernel reads "
                         "CUDA_VERSION from it and, without it, compiles sm_90 code only. Build against a CUDA "
                         "build of torch, with the toolkit in CUDA_HOME")
    return m["version"]


def _allowances() -> list:
    """Families recipes/data/sgl_kernel.toml accepts with less than native code (none so far)."""
    return devicecode.allowances_from(recipe_data(RECIPE, __file__, "sgl_kernel.toml"),
                                      "recipes/data/sgl_kernel.toml")


def build(ctx: BuildContext) -> list[Path]:
    env = {"CMAKE_BUILD_PARALLEL_LEVEL": str(ctx.jobs),
           # scikit-build-core reads CMAKE_ARGS; the thread count is the host's, so it is added here,
           # outside the key
           "CMAKE_ARGS": " ".join(_cmake_args(ctx))}
    return ctx.build_wheel(ctx.src / SUBDIR, env=env)
