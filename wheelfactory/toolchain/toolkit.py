"""The build toolkit: the release's CUDA, assembled from NVIDIA's pinned wheels.

A release says which CUDA it is built with; the host's `nvcc` is often another one (DGX OS ships
its own) and its toolkit often lacks pieces real builds need (the driver stub, NVRTC, cuSPARSE
headers). Every piece of a CUDA toolkit that a build compiles or links against is published on
PyPI as a wheel that installs into nvidia/cu13/{bin,include,lib,nvvm}. This module pins them per
(CUDA major.minor, machine) in recipes/data/cuda_wheels.toml, downloads them hash-checked, and
unpacks them into a content-addressed toolkit root shared by every build that uses it:

    <toolkits>/<identity>/
      bin/        nvcc, ptxas, nvlink, fatbinary, cudafe++, bin2c, cuobjdump, nvcc.profile, crt/
      nvvm/       bin/cicc, libdevice/  (nvcc.profile finds them relative to bin/)
      include/    cuda.h, cuda_runtime.h, crt/, cccl/, nvrtc.h, cublas*, cusparse.h, ...
      lib64/      libcudart.so.13 + libcudart.so, libnvrtc.so, ... (unversioned links for linkers)
      lib64/stubs/libcuda.so   the driver API linker stub (SONAME libcuda.so.1), generated here
      lib -> lib64, extras/CUPTI/{include,lib64}   where other build systems look
      dist-info/  the wheels' metadata and licences
      .wf-toolkit.json         identity and wheels (written last, before the atomic rename)

Only the wheels' hashes and LAYOUT_VERSION decide the identity, so the same pins give the same
root on every machine, and the build key carries that identity instead of a host nvcc version.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import tomllib
import zipfile
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import requests
from packaging.utils import canonicalize_name

from ..core.cachelayout import CacheLayout
from ..core.errors import BuildError, InputError
from ..sources.download import download_checked, index_files
from ..sources.transport import is_plain
from ..store.wheelmeta import sha256_file

# Bump when the assembled layout changes (a new link, a different stub): every root is rebuilt.
LAYOUT_VERSION = 1
MARKER = ".wf-toolkit.json"
MACHINES = ("x86_64", "aarch64")
# Wheel members under this prefix are the toolkit; everything else (dist-info) is metadata.
WHEEL_PREFIX = "nvidia/cu13/"

# What an assembled root must hold, and which wheel (or step) supplies it: checked before a root is
# published and before every build uses it, so a missing piece is named, not found by a compiler.
REQUIRED: Mapping[str, str] = {
    "bin/nvcc": "nvidia-cuda-nvcc",
    "bin/nvcc.profile": "nvidia-cuda-nvcc",
    "bin/ptxas": "nvidia-cuda-nvcc",
    "bin/nvlink": "nvidia-cuda-nvcc",
    "bin/fatbinary": "nvidia-cuda-nvcc",
    "bin/cudafe++": "nvidia-cuda-nvcc",
    "bin/bin2c": "nvidia-cuda-nvcc",
    "bin/crt/link.stub": "nvidia-cuda-nvcc",
    "nvvm/bin/cicc": "nvidia-nvvm",
    "nvvm/libdevice/libdevice.10.bc": "nvidia-nvvm",
    "include/crt/host_config.h": "nvidia-cuda-crt",
    "include/cccl/cuda/std/version": "nvidia-cuda-cccl",
    "include/cuda.h": "nvidia-cuda-runtime",
    "include/cuda_runtime.h": "nvidia-cuda-runtime",
    "lib64/libcudart.so": "nvidia-cuda-runtime",
    "lib64/libcudart_static.a": "nvidia-cuda-runtime",
    "lib64/libcudadevrt.a": "nvidia-cuda-runtime",
    "lib64/libculibos.a": "nvidia-cuda-culibos",
    "include/nvrtc.h": "nvidia-cuda-nvrtc",
    "lib64/libnvrtc.so": "nvidia-cuda-nvrtc",
    "include/cublas_v2.h": "nvidia-cublas",
    "lib64/libcublas.so": "nvidia-cublas",
    "lib64/libcublasLt.so": "nvidia-cublas",
    "include/cusparse.h": "nvidia-cusparse",
    "lib64/libcusparse.so": "nvidia-cusparse",
    "include/cusolverDn.h": "nvidia-cusolver",
    "lib64/libcusolver.so": "nvidia-cusolver",
    "include/cufft.h": "nvidia-cufft",
    "lib64/libcufft.so": "nvidia-cufft",
    "include/curand.h": "nvidia-curand",
    "lib64/libcurand.so": "nvidia-curand",
    "include/cupti.h": "nvidia-cuda-cupti",
    "lib64/libcupti.so": "nvidia-cuda-cupti",
    "include/nvtx3/nvToolsExt.h": "nvidia-nvtx",
    "include/nvJitLink.h": "nvidia-nvjitlink",
    "lib64/libnvJitLink.so": "nvidia-nvjitlink",
    "include/cuda_profiler_api.h": "nvidia-cuda-profiler-api",
    "lib64/stubs/libcuda.so": "the generated driver API linker stub",
}

# Links that build systems expect beside the wheels' own layout (path -> relative target).
FIXED_LINKS: Mapping[str, str] = {
    "lib": "lib64",  # nvcc.profile's LD_LIBRARY_PATH, cccl's lib/cmake, and tools that only try lib/
    "extras/CUPTI/include": "../../include",  # Triton's TRITON_CUPTI_INCLUDE_PATH convention
    "extras/CUPTI/lib64": "../../lib64",
}


@dataclass(frozen=True)
class WheelPin:
    name: str  # canonical project name, e.g. nvidia-cuda-nvcc
    version: str
    sha256: str  # of the wheel file for this toolkit's machine


@dataclass(frozen=True)
class WheelToolkit:
    """The pinned wheels of one CUDA toolkit for one machine; identity = their hashes + layout."""

    cuda: str  # the release's CUDA, e.g. 13.1.0
    machine: str  # x86_64 | aarch64
    wheels: tuple[WheelPin, ...]

    @property
    def identity(self) -> str:
        payload = json.dumps({"layout": LAYOUT_VERSION, "wheels": sorted(w.sha256 for w in self.wheels)},
                             separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()

    @property
    def label(self) -> str:
        """What the build key's target carries: 'wheels:13.1.0:<identity[:16]>'."""
        return f"{WHEEL_LABEL}{self.cuda}:{self.identity[:16]}"

    def pin(self, name: str) -> WheelPin | None:
        return next((w for w in self.wheels if w.name == canonicalize_name(name)), None)


WHEEL_LABEL = "wheels:"


def is_wheel_label(toolkit: str) -> bool:
    """Whether a Target.toolkit names a wheel toolkit (else it is the host nvcc's release)."""
    return toolkit.startswith(WHEEL_LABEL)


def cuda_minor(cuda: str) -> str:
    """'13.1.0' -> '13.1'."""
    return ".".join(cuda.split(".")[:2])


def machine_of(platform: str) -> str:
    """'linux_aarch64' -> 'aarch64'."""
    return platform.split("_", 1)[1] if "_" in platform else platform


def parse_toolkit(data: Mapping[str, Any], cuda: str, platform: str, where: str) -> WheelToolkit:
    """The toolkit pins of a CUDA version for a platform from cuda_wheels.toml's parsed data."""
    minor = cuda_minor(cuda)
    machine = machine_of(platform)
    entries = data.get(minor, {}).get("toolkit")
    if not entries:
        known = sorted(v for v, t in data.items() if isinstance(t, dict) and t.get("toolkit"))
        raise InputError(f"{where} has no toolkit wheels for CUDA {minor} (known: {', '.join(known) or 'none'}); "
                         f"add [[\"{minor}\".toolkit]] entries, or build with the host's toolkit: --system-cuda")
    if machine not in MACHINES:
        raise InputError(f"{where}: no toolkit wheels for machine {machine!r} (platform {platform}); "
                         f"known: {', '.join(MACHINES)}; build with the host's toolkit: --system-cuda")
    pins = []
    for i, entry in enumerate(entries):
        at = f"{where} [\"{minor}\".toolkit][{i}]"
        spec = entry.get("wheel", "")
        name, eq, version = spec.partition("==")
        if not eq or not name or not version:
            raise InputError(f"{at}.wheel: expected NAME==VERSION, got {spec!r}")
        sha = entry.get(machine, "")
        if not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise InputError(f"{at}.{machine}: expected the wheel's sha256 (64 lowercase hex), got {sha!r}")
        pins.append(WheelPin(canonicalize_name(name), version, sha))
    return WheelToolkit(cuda, machine, tuple(pins))


def load_toolkit(data_file: Path, cuda: str, platform: str) -> WheelToolkit:
    """The toolkit pins for a release's CUDA on a platform, from recipes/data/cuda_wheels.toml."""
    try:
        with open(data_file, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise InputError(f"cannot read the toolkit pins {data_file}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{data_file}: not valid TOML: {e}") from None
    return parse_toolkit(data, cuda, platform, str(data_file))


# -- layout (pure) ---------------------------------------------------------------------------------

def member_destination(member: str) -> str | None:
    """Where a wheel member goes in the root: nvidia/cu13/lib/x -> lib64/x, dist-info -> dist-info/...;
    None for what the toolkit does not need (the packaging's own .metadata scan reports)."""
    if member.endswith("/"):
        return None
    if member.startswith(WHEEL_PREFIX):
        rel = member[len(WHEEL_PREFIX):]
        if rel.startswith(".metadata/"):
            return None
        if rel.startswith("lib/"):
            rel = "lib64/" + rel[len("lib/"):]
        return rel
    top = member.split("/", 1)[0]
    if top.endswith(".dist-info"):
        return f"dist-info/{member}"
    return None


_SONAME = re.compile(r"^(lib[^/]+?\.so)\.(\d[\d.]*)$")


def unversioned_links(lib_files: Iterable[str]) -> dict[str, str]:
    """'libcudart.so' -> 'libcudart.so.13' for every versioned library without an unversioned name:
    linkers (-lcudart) and CMake's find_library look for the unversioned one, which no wheel ships.
    The shortest version wins (libnvrtc-builtins.so.13.1 gives libnvrtc-builtins.so)."""
    names = set(lib_files)
    links: dict[str, str] = {}
    for name in sorted(names, key=lambda n: (len(n), n)):
        m = _SONAME.match(name)
        if m and m[1] not in names and m[1] not in links:
            links[m[1]] = name
    return links


def missing_pieces(root: Path) -> list[str]:
    """The REQUIRED files an assembled root lacks, each with the wheel that supplies it."""
    return [f"{rel} ({source})" for rel, source in REQUIRED.items() if not (root / rel).exists()]


def check_root(root: Path) -> None:
    """Raise a BuildError naming every required file the toolkit root lacks."""
    missing = missing_pieces(root)
    if missing:
        raise BuildError(f"the CUDA toolkit at {root} is incomplete; missing: {', '.join(missing)}. "
                         f"Remove {root} to have it assembled again from the cached wheels")


# -- driver stub -------------------------------------------------------------------------------------

DRIVER_HEADERS = ("cuda.h", "cudaProfiler.h", "cudaGL.h", "cudaEGL.h", "cudaVDPAU.h")
_DECL = re.compile(r"\b(cu[A-Z][A-Za-z0-9_]*)\s*\(")
_ALIAS = re.compile(r"^\s*#\s*define\s+(cu[A-Z][A-Za-z0-9_]*)\s+(cu[A-Z][A-Za-z0-9_]*)\s*$", re.MULTILINE)


def driver_symbols(headers: Iterable[str]) -> list[str]:
    """Every driver API entry point the headers declare or alias to (cuMemAlloc -> cuMemAlloc_v2,
    cuMemcpy -> cuMemcpy_ptds): what a program compiled against them can ask the linker for."""
    found: set[str] = set()
    for text in headers:
        found.update(_DECL.findall(text))
        for alias, target in _ALIAS.findall(text):
            found.update((alias, target))
    return sorted(found)


def stub_source(symbols: Iterable[str]) -> str:
    """C source of the linker stub: one empty function per symbol. Never run: at run time the
    loader finds the driver's real libcuda.so.1 by the SONAME the stub carries."""
    body = "".join(f"void {s}(void) {{}}\n" for s in symbols)
    return "/* libcuda.so linker stub generated by wheelfactory; never loaded at run time */\n" + body


def make_driver_stub(root: Path, cc: str = "gcc", headers: Iterable[str] | None = None) -> Path:
    """Compile lib64/stubs/libcuda.so (SONAME libcuda.so.1, as CUDA's own stub) from the root's headers,
    or from `headers` (their texts) when the root's include/ is not readable here."""
    texts = list(headers) if headers is not None else [
        (root / "include" / h).read_text(errors="replace") for h in DRIVER_HEADERS if (root / "include" / h).exists()]
    stubs = root / "lib64" / "stubs"
    stubs.mkdir(parents=True, exist_ok=True)
    src = stubs / "libcuda-stub.c"
    src.write_text(stub_source(driver_symbols(texts)))
    out = stubs / "libcuda.so"
    cmd = [cc, "-shared", "-fPIC", "-O0", "-Wl,-soname,libcuda.so.1", "-o", str(out), str(src)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except OSError as e:
        raise BuildError(f"cannot compile the libcuda.so linker stub: {' '.join(cmd)}: {e.strerror} "
                         f"(a C compiler is needed to assemble the CUDA toolkit)") from None
    if r.returncode != 0:
        raise BuildError(f"compiling the libcuda.so linker stub failed ({' '.join(cmd)}):\n{r.stderr[-4000:]}")
    src.unlink()
    return out


# -- fetch and assemble --------------------------------------------------------------------------------

def toolkits_dir(cache_dir: Path) -> Path:
    """Where toolkits live: <cache>/toolkits, or WHEELFACTORY_TOOLKITS_DIR to share one set of
    downloads and roots between several cache directories (each root is ~2 GB unpacked)."""
    return CacheLayout(cache_dir).toolkits


class ToolkitCache:
    """<dir>/wheels/<sha256>-<file>.whl (downloads) and <dir>/<identity>/ (assembled roots)."""

    def __init__(self, root: Path, index_url: str = "https://pypi.org/simple"):
        self.root = root
        self.wheels = root / "wheels"
        self.index_url = index_url.rstrip("/")

    def root_of(self, toolkit: WheelToolkit) -> Path:
        return self.root / toolkit.identity

    def is_assembled(self, toolkit: WheelToolkit) -> bool:
        return (self.root_of(toolkit) / MARKER).exists()

    def cached_wheel(self, pin: WheelPin) -> Path | None:
        found = sorted(self.wheels.glob(f"{pin.sha256}-*.whl")) if self.wheels.exists() else []
        return found[0] if found else None

    def fetch(self, toolkit: WheelToolkit, echo: Callable[[str], None] = lambda s: None) -> list[Path]:
        """Download the toolkit's wheels not cached yet (hash-checked), in parallel."""
        todo = [p for p in toolkit.wheels if self.cached_wheel(p) is None]
        if todo:
            echo(f"downloading {len(todo)} CUDA {toolkit.cuda} toolkit wheel(s) for {toolkit.machine} "
                 f"from {self.index_url}")
            self.wheels.mkdir(parents=True, exist_ok=True)
            with ThreadPoolExecutor(max_workers=6) as pool:
                list(pool.map(self._download, todo))
        return [self.cached_wheel(p) for p in toolkit.wheels]  # type: ignore[misc]

    def _download(self, pin: WheelPin) -> Path:
        url, files = index_files(self.index_url, pin.name)
        match = [f for f in files if f.get("hashes", {}).get("sha256") == pin.sha256]
        if not match:
            raise BuildError(f"{url} publishes no file with the pinned sha256 {pin.sha256} "
                             f"({pin.name}=={pin.version}); the pins in recipes/data/cuda_wheels.toml do not "
                             "match the index")
        filename = match[0]["filename"]
        return download_checked(requests.compat.urljoin(url, match[0]["url"]), self.wheels, filename,
                                pin.sha256, what=f"{filename} (pinned in recipes/data/cuda_wheels.toml)",
                                allow_insecure=is_plain(self.index_url))

    def ensure(self, toolkit: WheelToolkit, *, offline: bool, echo: Callable[[str], None] = lambda s: None,
               cc: str = "gcc") -> Path:
        """The assembled root of a toolkit: reused if present and complete, else assembled from the
        cached wheels (downloading them first unless offline)."""
        root = self.root_of(toolkit)
        if self.is_assembled(toolkit):
            check_root(root)
            return root
        missing = [p for p in toolkit.wheels if self.cached_wheel(p) is None]
        if missing and offline:
            names = ", ".join(p.name for p in missing)
            raise BuildError(f"the CUDA {toolkit.cuda} toolkit wheels ({names}) are not in {self.wheels} and "
                             "--offline forbids downloading; run `wheelfactory fetch` while online first (or "
                             "build with --system-cuda)")
        wheels = self.fetch(toolkit, echo)
        echo(f"assembling the CUDA {toolkit.cuda} toolkit from {len(wheels)} wheels into {root}")
        return self._assemble(toolkit, wheels, cc)

    def _assemble(self, toolkit: WheelToolkit, wheels: list[Path], cc: str) -> Path:
        """Unpack into a temporary sibling, link, stub, check, then rename: a root is complete or absent."""
        root = self.root_of(toolkit)
        tmp = Path(tempfile.mkdtemp(prefix=f".assemble-{toolkit.identity[:12]}-", dir=self.root))
        try:
            for wheel, pin in zip(wheels, toolkit.wheels, strict=True):
                if sha256_file(wheel) != pin.sha256:
                    raise BuildError(f"{wheel}: sha256 differs from the pin {pin.sha256}; remove it and fetch again")
            with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
                list(pool.map(lambda w: unpack_wheel(w, tmp), wheels))
            lib64 = tmp / "lib64"
            for link, target in unversioned_links(p.name for p in lib64.iterdir()).items():
                (lib64 / link).symlink_to(target)
            for link, target in FIXED_LINKS.items():
                (tmp / link).parent.mkdir(parents=True, exist_ok=True)
                (tmp / link).symlink_to(target)
            make_driver_stub(tmp, cc)
            check_root(tmp)
            (tmp / MARKER).write_text(json.dumps({
                "cuda": toolkit.cuda, "machine": toolkit.machine, "identity": toolkit.identity,
                "layout": LAYOUT_VERSION,
                "wheels": [{"name": p.name, "version": p.version, "sha256": p.sha256} for p in toolkit.wheels],
            }, indent=2) + "\n")
            tmp.chmod(0o755)
            try:
                os.rename(tmp, root)
            except OSError:
                # Another process published the same identity first: the same bytes; use theirs.
                if not (root / MARKER).exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return root


def unpack_wheel(wheel: Path, dest: Path) -> None:
    """Extract a toolkit wheel's members to their places in the root, keeping executable bits."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            for info in zf.infolist():
                rel = member_destination(info.filename)
                if rel is None:
                    continue
                path = PurePosixPath(rel)
                if path.is_absolute() or ".." in path.parts:
                    raise BuildError(f"{wheel}: member {info.filename!r} would be written outside the toolkit root")
                target = dest / path
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                target.chmod(0o755 if (info.external_attr >> 16) & 0o111 else 0o644)
    except zipfile.BadZipFile as e:
        raise BuildError(f"{wheel}: not a valid wheel ({e}); remove it and fetch again") from None


# -- provenance ------------------------------------------------------------------------------------------

def nvcc_version(output: str) -> str | None:
    """'13.1.80' from `nvcc --version` output ('Cuda compilation tools, release 13.1, V13.1.80')."""
    m = re.search(r"release \d+\.\d+, V(\d+\.\d+\.\d+)", output)
    return m[1] if m else None


def mismatch_warning(release_cuda: str, host_nvcc: str) -> str | None:
    """The warning --system-cuda builds print when the host's nvcc is not the release's CUDA."""
    if host_nvcc == "none":
        return (f"warning: --system-cuda, and this host has no nvcc; the release says CUDA {release_cuda}. "
                "Builds that compile CUDA code will fail")
    if cuda_minor(release_cuda) != cuda_minor(host_nvcc):
        return (f"warning: --system-cuda builds with this host's nvcc {host_nvcc}, but the release says CUDA "
                f"{release_cuda}; the wheels will not be what the release says")
    return None
