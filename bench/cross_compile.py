"""Benchmark: CUDA objects compiled for aarch64 on this x86_64 host (cross) against the same objects
compiled for x86_64 (native), and the NCCL stand-in's build both ways.

Cross is what a cross step of `wheelfactory build --cross` runs: this host's nvcc with
aarch64-linux-gnu-g++ as its host compiler (-ccbin), through the cross CUDA root the factory makes
(crossbuild.prepare_toolchain) over NVIDIA's aarch64 nvidia-cuda-runtime wheel (the pin of the
host nvcc's CUDA in recipes/data/cuda_wheels.toml, downloaded hash-checked). Native is the same
nvcc with g++. Objects, each compiled `--runs` times per way, the ways alternating (median; `nvcc -time` splits each
compile into its phases: device = cicc + ptxas + fatbinary, host = the C++ compiler's preprocessing
and compile of the host side, front end = cudafe++):
  nccl-standin        tests/fixtures/nccl-standin/src/collectives.cu (tiny)
  cmake-ext-standin   tests/fixtures/cmake-ext-standin/csrc/kernels.cu (tiny)
  synthetic-templates a generated file of 16 instantiations of an unrolled templated kernel, a
                      stand-in for a template-heavy kernel file (not vLLM's or NCCL's code)
all for `-gencode` sm_120 and sm_121a. Then `make src.build` of the NCCL stand-in from a clean
build directory, both ways. The emulated way (the aarch64 nvcc from NVIDIA's wheels under qemu) is
measured by bench/README.md's emulated column, not here. Prints JSON with the machine.

    python bench/cross_compile.py [--runs 3] [--out results.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from machine import describe  # noqa: E402  (bench/machine.py, beside this script)

from wheelfactory.host.facts import find_cuda_home, toolkit_version  # noqa: E402
from wheelfactory.toolchain.crossbuild import prepare_toolchain  # noqa: E402
from wheelfactory.toolchain.toolkit import (  # noqa: E402
    ToolkitCache,
    WheelToolkit,
    load_toolkit,
    unpack_wheel,
    unversioned_links,
)

FIXTURES = REPO / "tests" / "fixtures"
GENCODE = ["-gencode=arch=compute_120,code=sm_120", "-gencode=arch=compute_121a,code=sm_121a"]

SYNTHETIC = """// Synthetic benchmark input (not upstream code): a templated, unrolled kernel, 16 instantiations.
#include <cuda_runtime.h>
template <int UNROLL, typename T>
__global__ void fma_chain(T* out, const T* a, const T* b, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  T acc = a[i];
#pragma unroll
  for (int k = 0; k < UNROLL; ++k) acc = acc * b[(i + k) % n] + static_cast<T>(k);
  out[i] = acc;
}
template <int UNROLL, typename T>
int launch(T* out, const T* a, const T* b, int n) {
  fma_chain<UNROLL, T><<<(n + 255) / 256, 256>>>(out, a, b, n);
  return static_cast<int>(cudaGetLastError());
}
#define INST(U) template int launch<U, float>(float*, const float*, const float*, int); \\
                template int launch<U, double>(double*, const double*, const double*, int);
INST(8) INST(16) INST(32) INST(64) INST(96) INST(128) INST(192) INST(256)
"""


def phases(csv_path: Path) -> dict[str, float]:
    """Seconds per kind of phase from an `nvcc -time` CSV."""
    out = {"device": 0.0, "host": 0.0, "front_end": 0.0}
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    for row in rows[1:]:
        if len(row) < 8:
            continue
        phase, value = row[1].strip(), float(row[6])
        if phase.startswith(("cicc", "ptxas", "fatbinary", "nvlink")):
            out["device"] += value / 1000
        elif "g++" in phase or "gcc" in phase:
            out["host"] += value / 1000
        elif phase.startswith("cudafe"):
            out["front_end"] += value / 1000
    return out


def compile_once(nvcc: Path, cxx: str, src: Path, work: Path) -> dict[str, float]:
    obj, times = work / (src.stem + ".o"), work / (src.stem + ".csv")
    for p in (obj, times):
        p.unlink(missing_ok=True)
    started = time.perf_counter()
    # NCCL_VERSION_CODE: what the stand-in's Makefile defines (2.29.2); the other sources ignore it.
    subprocess.run([str(nvcc), "-ccbin", cxx, *GENCODE, "-Xcompiler", "-fPIC", "-DNCCL_VERSION_CODE=22902", "-time",
                    str(times), "-c", str(src), "-o", str(obj)], check=True, capture_output=True)
    wall = time.perf_counter() - started
    machine = subprocess.run(["file", "-b", str(obj)], capture_output=True, text=True).stdout.split(",")[1].strip()
    return {"wall": wall, **phases(times), "machine": machine}  # type: ignore[dict-item]


def median_of(samples: list[dict[str, float]]) -> dict[str, float | str]:
    out: dict[str, float | str] = {k: round(statistics.median(s[k] for s in samples), 2)
                                   for k in ("wall", "device", "host", "front_end")}
    out["machine"] = samples[0]["machine"]
    return out


def make_nccl(cuda_home: Path, cxx: str, work: Path) -> float:
    tree = work / "nccl-standin"
    shutil.rmtree(tree, ignore_errors=True)
    shutil.copytree(FIXTURES / "nccl-standin", tree)
    started = time.perf_counter()
    subprocess.run(["make", "-j2", "src.build", f"BUILDDIR={tree / 'build'}", f"CUDA_HOME={cuda_home}", f"CXX={cxx}",
                    f"NVCC_GENCODE={' '.join(GENCODE)}"], cwd=tree, check=True, capture_output=True)
    return time.perf_counter() - started


def target_cuda(cuda_minor: str, cache: Path, work: Path) -> tuple[Path, float]:
    """NVIDIA's aarch64 cudart wheel of the host nvcc's CUDA, as a target root; and the download time."""
    pins = load_toolkit(REPO / "recipes" / "data" / "cuda_wheels.toml", cuda_minor, "linux_aarch64")
    pin = pins.pin("nvidia-cuda-runtime")
    started = time.perf_counter()
    [wheel] = ToolkitCache(cache).fetch(WheelToolkit(cuda_minor, "aarch64", (pin,)))
    seconds = time.perf_counter() - started
    root = work / "aarch64-cudart"
    if not root.exists():
        unpack_wheel(wheel, root)
        for link, target in unversioned_links(p.name for p in (root / "lib64").iterdir()).items():
            (root / "lib64" / link).symlink_to(target)
    return root, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    ap.add_argument("--toolkits", type=Path, help="a toolkit cache directory (wheels/<sha256>-<file>.whl) that "
                    "already holds the aarch64 cudart wheel: for a machine without network")
    args = ap.parse_args()
    cuda_home = find_cuda_home()
    if cuda_home is None or shutil.which("aarch64-linux-gnu-g++") is None:
        sys.exit("needs nvcc and aarch64-linux-gnu-g++ (apt-get install g++-aarch64-linux-gnu)")
    nvcc_release = toolkit_version(cuda_home)
    with tempfile.TemporaryDirectory(prefix="wf-cross-bench-") as tmp:
        work = Path(tmp)
        target, download_s = target_cuda(nvcc_release, args.toolkits or work / "toolkits", work)
        toolchain, _ = prepare_toolchain(Path(cuda_home), target, work, "aarch64")
        (work / "synthetic-templates.cu").write_text(SYNTHETIC)
        objects = {"nccl-standin": FIXTURES / "nccl-standin" / "src" / "collectives.cu",
                   "cmake-ext-standin": FIXTURES / "cmake-ext-standin" / "csrc" / "kernels.cu",
                   "synthetic-templates": work / "synthetic-templates.cu"}
        ways = {"native": (Path(cuda_home) / "bin" / "nvcc", "g++", Path(cuda_home)),
                "cross": (toolchain.nvcc, toolchain.cxx, toolchain.cuda_root)}
        results: dict[str, dict[str, object]] = {}
        # The ways alternate within each run, so that a change of load on a shared machine falls on both.
        for name, src in objects.items():
            samples: dict[str, list[dict[str, float]]] = {way: [] for way in ways}
            for _ in range(args.runs):
                for way, (nvcc, cxx, _) in ways.items():
                    samples[way].append(compile_once(nvcc, cxx, src, work))
            results[name] = {way: median_of(s) for way, s in samples.items()}
        make_samples: dict[str, list[float]] = {way: [] for way in ways}
        for _ in range(args.runs):
            for way, (_, cxx, root) in ways.items():
                make_samples[way].append(make_nccl(root, cxx, work))
        nccl = {way: round(statistics.median(s), 2) for way, s in make_samples.items()}
    cxx_versions = {c: subprocess.run([c, "-dumpfullversion"], capture_output=True, text=True).stdout.strip()
                    for c in ("g++", "aarch64-linux-gnu-g++")}
    report = {
        "machine": describe(**{"nvcc": nvcc_release, "g++": cxx_versions["g++"],
                                "aarch64-linux-gnu-g++": cxx_versions["aarch64-linux-gnu-g++"]}),
        "runs": args.runs, "gencode": GENCODE,
        "aarch64_cudart_download_s": round(download_s, 2),
        "objects_seconds": results,
        "nccl_standin_make_seconds": nccl,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
