"""Cross builds: wheels for another machine (linux_aarch64) compiled on this one (x86_64).

The heavy part of a Spark build is nvcc compiling device code, and that is the same work on any
host. With `--cross`, a release meant for another machine is built for that machine, and each
step runs one of three ways, which the plan shows:

  native    the step builds for the machine it runs on (host machine = target machine, or no
            --cross: wheels for this host, as before)
  cross     this host's nvcc and CMake, the target's GNU cross compiler (aarch64-linux-gnu-gcc/g++)
            as C/C++ compiler and as nvcc's host compiler, the target's CUDA libraries (NVIDIA's
            aarch64 wheels): for recipes whose module declares `CROSS = True` (NCCL, vLLM's CMake)
  emulated  the step has to run target code (import the target's torch, run the target Python's
            setup.py, compile torch or Triton from source): it runs under qemu in the emulated
            aarch64 build environment, not in this process

How a cross step sees its toolchain (`prepare_toolchain`): a *cross CUDA root* in its work tree,
laid out as NVIDIA's cross packages lay out a toolkit, so that nvcc and CMake need no special
flags: bin/ holds links to each of the host toolkit's programs (a real directory: nvcc finds
nvcc.profile and its TOP through the path it was started by, and a linked bin/ would lead `..` back
to the host toolkit), include/ and nvvm/ are the host's, and targets/aarch64-linux/{include,lib}
are the headers (the same on every machine) and the target's libraries. nvcc started with
`-ccbin aarch64-linux-gnu-g++` picks targets/aarch64-linux itself (its profile's _TARGET_DIR_),
so it links the target's libcudart; CMake's FindCUDAToolkit finds targets/sbsa-linux (a link to
the same) when CMAKE_SYSTEM_PROCESSOR is aarch64. A CMake toolchain file (`cmake_toolchain`)
says the rest, and CMAKE_TOOLCHAIN_FILE in the step's environment makes every CMake the build
starts (vLLM's setup.py runs its own) use it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import InputError
from .toolkit import ToolkitCache, WheelToolkit

NATIVE, CROSS, EMULATED = "native", "cross", "emulated"
MODES = (NATIVE, CROSS, EMULATED)

# GNU triplets of the cross compilers Debian and Ubuntu package (g++-aarch64-linux-gnu, ...),
# and the directory under <cuda>/targets/ that nvcc picks for each when given that host compiler.
TRIPLETS: Mapping[str, str] = {"aarch64": "aarch64-linux-gnu", "x86_64": "x86_64-linux-gnu"}
NVCC_TARGET_DIRS: Mapping[str, str] = {"aarch64": "aarch64-linux", "x86_64": "x86_64-linux"}
# CMake's CMAKE_SYSTEM_PROCESSOR per machine, and the Debian package that has each cross compiler.
CROSS_PACKAGES: Mapping[str, str] = {"aarch64": "g++-aarch64-linux-gnu gcc-aarch64-linux-gnu",
                                     "x86_64": "g++-x86-64-linux-gnu gcc-x86-64-linux-gnu"}

# Recipes known not to cross-build, and why: said in the plan and the docs, so that nobody waits
# for them to learn it from a failed build.
NATIVE_ONLY: Mapping[str, str] = {
    "torch": "PyTorch's build runs its own freshly built code (code generators, torch.utils) and has no "
             "cross-compilation support",
    "triton": "Triton builds LLVM and its Python package for the machine it runs on",
}


def machine_of(platform: str) -> str:
    """'linux_aarch64' -> 'aarch64'."""
    return platform.split("_", 1)[1] if "_" in platform else platform


def step_mode(*, building: bool, host_machine: str, target_machine: str, cross: bool,
              recipe_cross: bool) -> str | None:
    """How a step runs: None for a step that builds nothing (adopted); native when the host builds for
    itself; with --cross for another machine, cross for a recipe that declares it can, else emulated."""
    if not building:
        return None
    if not cross or host_machine == target_machine:
        return NATIVE
    return CROSS if recipe_cross else EMULATED


def key_input(mode: str, host_machine: str, target_machine: str, target_cuda: str) -> dict[str, str]:
    """What a cross or emulated step adds to its build key: the same target built another way has other
    bytes (another compiler binary), so it must not share a key with the native build."""
    out = {"mode": mode, "host": host_machine}
    if mode == CROSS:
        out |= {"compiler": f"{TRIPLETS.get(target_machine, target_machine)}-g++", "target_cuda": target_cuda}
    return out


def check_target_machine(target_machine: str, where: str) -> str:
    """The GNU triplet for a target machine, or an InputError naming where it came from."""
    if target_machine not in TRIPLETS:
        raise InputError(f"{where}: no cross toolchain is known for machine {target_machine!r} "
                         f"(known: {', '.join(sorted(TRIPLETS))})")
    return TRIPLETS[target_machine]


@dataclass(frozen=True)
class CrossToolchain:
    """The tools and files one cross step compiles with."""

    machine: str  # the target machine: aarch64
    cuda_root: Path  # the cross CUDA root (assemble_cross_root)
    sysroot: Path | None = None  # the cross compiler's target libraries, e.g. /usr/aarch64-linux-gnu
    torch_cmake_prefix: Path | None = None  # the target torch's share/cmake (vLLM's find_package(Torch))

    @property
    def triplet(self) -> str:
        return TRIPLETS[self.machine]

    @property
    def cc(self) -> str:
        return f"{self.triplet}-gcc"

    @property
    def cxx(self) -> str:
        return f"{self.triplet}-g++"

    @property
    def strip(self) -> str:
        """The binutils that read the target's ELFs (the host's strip does not know AArch64)."""
        return f"{self.triplet}-strip"

    @property
    def nvcc(self) -> Path:
        return self.cuda_root / "bin" / "nvcc"

    def find_roots(self) -> list[Path]:
        """CMAKE_FIND_ROOT_PATH: where the target's libraries and packages are."""
        roots = [self.cuda_root / "targets" / NVCC_TARGET_DIRS[self.machine]]
        roots += [p for p in (self.sysroot, self.torch_cmake_prefix) if p is not None]
        return roots

    def cmake_toolchain(self) -> str:
        """A CMake toolchain file for the target: its system and processor, the cross compilers, this
        host's nvcc with the cross g++ as host compiler, libraries only from the target's roots, programs
        only from this host."""
        def q(p: Path | str) -> str:
            return '"' + str(p).replace("\\", "/").replace('"', '\\"') + '"'

        lines = [
            "# Written by wheelfactory for a cross step: target " + self.machine + ", compiled on this host.",
            "set(CMAKE_SYSTEM_NAME Linux)",
            f"set(CMAKE_SYSTEM_PROCESSOR {self.machine})",
            f"set(CMAKE_C_COMPILER {self.cc})",
            f"set(CMAKE_CXX_COMPILER {self.cxx})",
            f"set(CMAKE_CUDA_COMPILER {q(self.nvcc)})",
            f"set(CMAKE_CUDA_HOST_COMPILER {self.cxx})",
            f"set(CUDAToolkit_ROOT {q(self.cuda_root)})",
            f"set(CMAKE_FIND_ROOT_PATH {' '.join(q(p) for p in self.find_roots())})",
            "set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)",
            "set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)",
            "set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)",
            "set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)",
        ]
        if self.torch_cmake_prefix is not None:
            # Before whatever the project appends (vLLM appends the prefix its Python's torch reports):
            # find_package(Torch) takes the first TorchConfig.cmake, the target's. Checked when CMake
            # runs: the build venv gets its torch after the toolchain file is written.
            prefix = q(self.torch_cmake_prefix)
            lines.append(f"if(EXISTS {prefix})\n  list(PREPEND CMAKE_PREFIX_PATH {prefix})\nendif()")
        return "\n".join(lines) + "\n"

    def environment(self, toolchain_file: Path) -> dict[str, str]:
        """What a cross step's commands get on top of the native step environment: the compilers for
        make-driven builds (NCCL's makefiles pass -ccbin $(CXX) to nvcc), the toolchain file for every
        CMake (CMAKE_TOOLCHAIN_FILE is read from the environment by CMake >= 3.21), the CUDA root."""
        root = str(self.cuda_root)
        return {
            "CC": self.cc, "CXX": self.cxx, "CUDAHOSTCXX": self.cxx, "NVCC_CCBIN": self.cxx,
            "CMAKE_TOOLCHAIN_FILE": str(toolchain_file),
            "CUDA_HOME": root, "CUDA_PATH": root, "CUDACXX": str(self.nvcc), "CUDAToolkit_ROOT": root,
            "CUDA_TOOLKIT_ROOT_DIR": root,
            "WHEELFACTORY_CROSS_TARGET": self.machine,
            # sysconfig.get_platform() answers this (CPython's own cross-build convention), so
            # setuptools' bdist_wheel tags a wheel with compiled code linux_<target>, not this host's.
            "_PYTHON_HOST_PLATFORM": f"linux-{self.machine}",
        }


# Host toolkit entries the cross root links as they are (bin/ is linked file by file, see above).
_SHARED = ("include", "nvvm")


def assemble_cross_root(host_cuda: Path, target_lib: Path, dest: Path, machine: str) -> Path:
    """The cross CUDA root of the module docstring at dest (made again from scratch: links only)."""
    if not (host_cuda / "bin" / "nvcc").exists():
        raise InputError(f"{host_cuda}: no bin/nvcc; a cross build needs this host's CUDA toolkit")
    if not target_lib.is_dir():
        raise InputError(f"{target_lib}: not a directory of the target's CUDA libraries")
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.exists():
        shutil.rmtree(dest)
    (dest / "bin").mkdir(parents=True)
    for entry in sorted((host_cuda / "bin").iterdir()):
        (dest / "bin" / entry.name).symlink_to(entry.resolve())
    for name in _SHARED:
        if (host_cuda / name).exists():
            (dest / name).symlink_to((host_cuda / name).resolve())
    target_dir = dest / "targets" / NVCC_TARGET_DIRS[machine]
    target_dir.mkdir(parents=True)
    (target_dir / "include").symlink_to((host_cuda / "include").resolve())
    (target_dir / "lib").symlink_to(target_lib.resolve())
    if machine == "aarch64":
        # CMake's FindCUDAToolkit looks for targets/sbsa-linux first (server aarch64, as the Spark).
        (dest / "targets" / "sbsa-linux").symlink_to(NVCC_TARGET_DIRS[machine])
    (dest / "lib64").symlink_to(Path("targets") / NVCC_TARGET_DIRS[machine] / "lib")
    (dest / "lib").symlink_to("lib64")
    return dest


def target_lib_dir(root: Path) -> Path:
    """The libraries of a target CUDA root: <root>/lib64 (a toolkit from wheels), else <root>/lib."""
    for name in ("lib64", "lib"):
        if (root / name).is_dir():
            return root / name
    raise InputError(f"{root}: no lib64/ or lib/ with the target's CUDA libraries (libcudart.so)")


def torch_cmake_prefix(site: Path) -> Path:
    """Where CMake finds the torch of a build venv's site-packages: torch/share/cmake (the target's
    torch, from its aarch64 wheel: found by path, never imported)."""
    return site / "torch" / "share" / "cmake"


def prepare_toolchain(host_cuda: Path, target_cuda: Path, work: Path, machine: str,
                      site: Path | None = None) -> tuple[CrossToolchain, Path]:
    """A cross step's toolchain in its work tree: the cross CUDA root and the CMake toolchain file."""
    root = assemble_cross_root(host_cuda, target_lib_dir(target_cuda), work / "cross-cuda", machine)
    sysroot = Path("/usr") / TRIPLETS[machine]
    toolchain = CrossToolchain(machine, root, sysroot if sysroot.is_dir() else None,
                               torch_cmake_prefix(site) if site is not None else None)
    toolchain_file = work / "cross-toolchain.cmake"
    toolchain_file.write_text(toolchain.cmake_toolchain())
    return toolchain, toolchain_file


def missing_cross_tools(machine: str, which: Callable[[str], str | None] = shutil.which) -> list[str]:
    """The cross compilers a cross step for machine needs and this host lacks."""
    triplet = TRIPLETS[machine]
    return [tool for tool in (f"{triplet}-gcc", f"{triplet}-g++", f"{triplet}-strip") if which(tool) is None]


def cross_tools_hint(machine: str) -> str:
    """What to install for the cross compilers of a machine."""
    return f"install them: apt-get install {CROSS_PACKAGES[machine]} (Debian, Ubuntu)"


def emulated_steps_message(components: list[str], platform: str) -> str:
    """Why a cross build stops before an emulated step, and what to do instead."""
    why = "; ".join(f"{c}: {NATIVE_ONLY[c]}" for c in components if c in NATIVE_ONLY)
    why = why or "the recipe does not declare CROSS"
    return (f"{', '.join(components)} cannot cross-compile for {platform} ({why}): "
            "they run emulated. Build them natively (on the target, or in the emulated aarch64 build environment), "
            "adopt them (--adopt COMPONENT=WHEEL), or cross-build only the others (name them as targets)")


def cross_with_target_deps_message(component: str, deps: tuple[str, ...], platform: str) -> str:
    """Why a cross step whose build venv needs the target's dependency wheels stops (vLLM: torch)."""
    return (f"{component} cross-compiles its kernels, and its build also needs the {platform} wheels of "
            f"{', '.join(deps)} in its build venv, which this host can neither install nor import (vLLM's CMake "
            f"imports torch for its CMake prefix and flags): that part must run emulated and is not wired yet. "
            f"Build {component} natively on the target or in the emulated aarch64 build environment")


def cross_blockers(steps: Iterable[Any], platform: str) -> list[str]:
    """What stops a cross build before any work: steps that run emulated, and cross steps that need
    the target's dependency wheels in their build venv. Empty: every building step can run here."""
    building = [s for s in steps if s.action == "build"]
    out = []
    emulated = [s.component for s in building if s.mode == EMULATED]
    if emulated:
        out.append(emulated_steps_message(emulated, platform))
    out += [cross_with_target_deps_message(s.component, s.build_with, platform)
            for s in building if s.mode == CROSS and s.build_with]
    return out


@dataclass(frozen=True)
class CrossSetup:
    """A cross build's target CUDA libraries: NVIDIA's wheels for the target machine (the release's
    pins in cuda_wheels.toml, assembled as a toolkit whose driver stub the cross gcc compiles), or a
    directory given with --target-cuda (NVIDIA's targets/sbsa-linux of a cross toolkit, say)."""

    machine: str  # the target machine
    toolkit: WheelToolkit | None = None
    directory: Path | None = None

    @property
    def identity(self) -> str:
        """What cross steps' keys carry for the target's libraries: the wheels' identity, or for a
        directory only that it is one (as --system-cuda keys the host's nvcc by its release)."""
        return self.toolkit.label if self.toolkit is not None else "directory"

    def root(self, toolkits: ToolkitCache) -> Path:
        if self.directory is not None:
            return self.directory
        assert self.toolkit is not None
        return toolkits.root_of(self.toolkit)

    def ensure(self, toolkits: ToolkitCache, *, offline: bool, echo: Callable[[str], None]) -> Path:
        """The target root, assembled from its wheels if need be (the driver stub for the target)."""
        if self.toolkit is None:
            return self.root(toolkits)
        return toolkits.ensure(self.toolkit, offline=offline, echo=echo, cc=f"{TRIPLETS[self.machine]}-gcc")
