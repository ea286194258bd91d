"""Proof: FlashInfer's own ahead-of-time (AOT) compile path emits native sm_121a code for "12.1a".

What runs is the path the flashinfer-jit-cache wheel's build runs, unchanged:
`flashinfer.aot.compile_and_package_modules` (detect_sm_capabilities -> gen_all_modules ->
build_jit_specs -> ninja -> nvcc, then copy_built_kernels into the jit_cache/<name>/<name>.so layout),
in a venv made by uv holding flashinfer-python==VERSION, with FLASHINFER_CUDA_ARCH_LIST="12.1a" (so no
device is queried) and CUDA_HOME/CUDA_PATH at the toolkit. Only the module set is shrunk: FlashInfer's
config is passed with every optional group off except add_misc, fp16 only, head_dim 128, no sliding
window or soft cap, and gen_all_modules' list is then filtered down to the modules of --modules. (The
full default list for 12.1a, add_comm left out, is 558 modules / 2,346 sources in 0.7.2.post1 and
641 / 2,558 in 0.6.2: hours on a small machine.) The build directory starts empty and each module is
compiled by its own call, so its seconds are its own cold build; a last call with all of them compiles
nothing and packages them. Then every .so is audited: `cuobjdump --list-elf --list-ptx` of the
toolkit, and `python -m wheelfactory inspect --arch ARCH` on the jit_cache tree. Prints JSON with the
machine, then a table.

What it does not prove: that any kernel runs or is correct. No kernel is launched (no GB10 here); the
claim is only that the .so files FlashInfer's AOT path builds hold sm_121a SASS and no PTX, which is
what a jit-cache build for 12.1a ships. The venv's torch may be a CPU wheel: FlashInfer uses it for the
host ABI flag and dtypes here, but some optional generators need more (add_comm's: a CUDA torch's
CUDA_HOME in 0.7.2.post1, nvidia-nvshmem in 0.6.2), so they are not in any --modules set.

Measured (x86_64, 2 CPUs Intel Xeon, Debian 12, nvcc 13.0.88 from NVIDIA's wheels, cuobjdump
13.2.51, torch 2.13.0+cpu wheel, MAX_JOBS=2, FLASHINFER_NVCC_THREADS=1, `--modules all`, a fresh
--work directory, uv's cache warm; one run each, load average ~1):

| module (seconds) | 0.7.2.post1 | 0.6.2 | cubins (both) | PTX | inspect --arch 12.1a |
|---|---|---|---|---|---|
| norm | 45.2 | 25.4 | sm_121a x2 | no | native on 12.1 |
| batch decode fp16 hd128 | 22.6 | 17.5 | sm_121a x3 | no | native on 12.1 |
| batch prefill fp16 hd128 (FA2) | 76.1 | 60.7 | sm_121a x10 | no | native on 12.1 |
| page | 19.1 | 7.9 | sm_121a x2 | no | native on 12.1 |
| nvfp4_attention_sm120 | 182.7 | not in 0.6.2 | sm_121a x2 | no | native on 12.1 |
| fp4_kv_quant | 4.3 | not in 0.6.2 | sm_121a x1 | no | native on 12.1 |
| whole script (venv 4 s) | 377 | 136 | | | |

Every nvcc command in the build.ninja files carried exactly one arch flag,
-gencode=arch=compute_121a,code=sm_121a, plus FlashInfer's -DFLASHINFER_ENABLE_FP8_E8M0
-DFLASHINFER_ENABLE_FP4_E2M1 (0.7.2.post1 adds -Xfatbin=-compress-all --compress-mode=size).

    python bench/flashinfer_aot.py --cuda-home /path/to/cuda-13 \\
        [--flashinfer-version 0.7.2.post1] [--arch-list 12.1a] [--modules decode] \\
        [--torch /path/to/torch-...+cpu-....whl] [--work ./fi-aot-work] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from machine import describe  # noqa: E402  (bench/machine.py, beside this script)

from wheelfactory.host.facts import find_cuda_home  # noqa: E402

# Module names (exact, or a prefix ending in "_") as FlashInfer's gen_all_modules names them.
MODULES = {
    "norm": "norm",  # RMSNorm and friends (csrc/norm.cu)
    "decode": "batch_decode_with_kv_cache_dtype_q_f16_dtype_kv_f16_",  # FA2 batch decode, fp16, hd 128
    "prefill": "batch_prefill_with_kv_cache_dtype_q_f16_dtype_kv_f16_",  # FA2 batch prefill, fp16, hd 128
    "page": "page",  # paged KV-cache append
    "nvfp4_attention": "nvfp4_attention_sm120",  # an SM12x-only module (gen_all_modules adds it for sm121)
    "fp4_kv_quant": "fp4_kv_quant",  # FP4 KV quantization, added for sm100+/sm12x
}
MODULE_SETS = {
    "norm": ["norm"],
    "decode": ["norm", "decode"],
    "attention": ["norm", "decode", "prefill", "page"],
    "sm12x": ["nvfp4_attention", "fp4_kv_quant"],
    "all": list(MODULES),
}

# Runs inside the FlashInfer venv. argv[1]: JSON with build_dir, project_root, out_dir, modules.
DRIVER = r'''
import json, sys, time, traceback
from pathlib import Path
import torch
from flashinfer import aot

job = json.loads(sys.argv[1])
config = aot.get_default_config()
config.update({k: False for k in config if k.startswith("add_")})
config.update(add_misc=True, fa2_head_dim=[(128, 128)], f16_dtype=[torch.float16], f8_dtype=[],
              use_sliding_window=[False], use_logits_soft_cap=[False])
original, wanted, listed = aot.gen_all_modules, set(), []

def shrunk(*args, **kwargs):
    specs = original(*args, **kwargs)
    listed[:] = [s.name for s in specs]
    return [s for s in specs if s.name in wanted]

aot.gen_all_modules = shrunk

def build(names, out_dir=None):
    wanted.clear(); wanted.update(names)
    aot.compile_and_package_modules(out_dir=out_dir, build_dir=Path(job["build_dir"]),
                                    project_root=Path(job["project_root"]), config=config,
                                    verbose=False, skip_prebuilt=False)

def pick(pattern):
    hits = [n for n in listed if n == pattern or (pattern.endswith("_") and n.startswith(pattern))]
    return hits[0] if hits else None

started = time.perf_counter()
build([])  # the listing pass: everything the shrunk config would build, nothing built
result = {"listing_s": time.perf_counter() - started, "listed": list(listed),
          "sm_capabilities": sorted(k for k, v in aot.detect_sm_capabilities().items() if v), "modules": []}
for key, pattern in job["modules"]:
    name = pick(pattern)
    entry = {"key": key, "name": name}
    if name is None:
        entry["absent"] = f"no module {pattern!r} in this version's list for this arch"
    else:
        started = time.perf_counter()
        try:
            build([name])
        except Exception as e:
            entry["error"] = "".join(traceback.format_exception_only(e))[-6000:]
        entry["seconds"] = time.perf_counter() - started
    result["modules"].append(entry)
built = [m["name"] for m in result["modules"] if m["name"] and "error" not in m]
started = time.perf_counter()
build(built, Path(job["out_dir"]))  # nothing left to compile: packages the jit_cache tree
result["package_s"] = time.perf_counter() - started
print("AOT-RESULT " + json.dumps(result))
'''


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)


def checked(cmd: list[str], **kw) -> str:
    p = run(cmd, **kw)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(map(str, cmd))}\n{p.stdout[-3000:]}{p.stderr[-3000:]}")
    return p.stdout


def make_venv(work: Path, version: str, torch_req: str, python: str) -> tuple[Path, float]:
    """A uv venv with flashinfer-python==version, torch and ninja; reused if it already has that version."""
    venv = work / f"venv-{version}"
    py = venv / "bin" / "python"
    started = time.perf_counter()
    marker = venv / "flashinfer-aot.version"
    if not (marker.is_file() and marker.read_text() == version):
        shutil.rmtree(venv, ignore_errors=True)
        checked(["uv", "venv", "-q", "--python", python, venv])
        # torch first, so that flashinfer's bare `torch` requirement is met by it (a CPU wheel will do).
        checked(["uv", "pip", "install", "-q", "--python", py, torch_req])
        checked(["uv", "pip", "install", "-q", "--python", py, f"flashinfer-python=={version}", "ninja"])
        marker.write_text(version)
    return py, time.perf_counter() - started


def package_versions(py: Path) -> dict[str, str]:
    code = ("import importlib.metadata as m, json; print(json.dumps({d: m.version(d) for d in "
            "('flashinfer-python', 'torch', 'apache-tvm-ffi', 'ninja')}))")
    return json.loads(checked([py, "-c", code]))


def project_root(py: Path, work: Path) -> Path:
    """The source-checkout layout compile_and_package_modules reads (csrc, include, 3rdparty/...),
    as links into the installed wheel's flashinfer/data."""
    site = Path(checked([py, "-c", "import flashinfer.jit.env as e; print(e.FLASHINFER_DATA)"]).strip())
    root = work / "flashinfer-src"
    shutil.rmtree(root, ignore_errors=True)
    (root / "3rdparty").mkdir(parents=True)
    for link, target in {"csrc": "csrc", "include": "include", "3rdparty/cutlass": "cutlass",
                         "3rdparty/spdlog": "spdlog"}.items():
        (root / link).symlink_to(site / target)
    return root


def compile_modules(py: Path, env: dict[str, str], work: Path, root: Path, keys: list[str]) -> dict:
    """FlashInfer's AOT entry in the venv, one call per module; the driver's JSON result."""
    build_dir, out_dir = work / "build", work / "jit_cache"
    for d in (build_dir, out_dir, work / ".cache"):
        shutil.rmtree(d, ignore_errors=True)  # cold: no object of an earlier run is reused
    job = {"build_dir": str(build_dir), "project_root": str(root), "out_dir": str(out_dir),
           "modules": [[k, MODULES[k]] for k in keys]}
    (work / "aot_driver.py").write_text(DRIVER)
    p = run([py, work / "aot_driver.py", json.dumps(job)], env=env, cwd=work)
    (work / "aot_driver.log").write_text(p.stdout + p.stderr)
    lines = [line for line in p.stdout.splitlines() if line.startswith("AOT-RESULT ")]
    if p.returncode != 0 or not lines:
        sys.exit(f"FlashInfer's AOT driver failed ({p.returncode}); see {work / 'aot_driver.log'}\n"
                 f"{(p.stdout + p.stderr)[-4000:]}")
    return json.loads(lines[-1].removeprefix("AOT-RESULT "))


def nvcc_command(py: Path, module_dir: Path) -> str | None:
    """The first nvcc command of a module's build.ninja, as ninja runs it."""
    ninja = py.parent / "ninja"
    out = run([ninja, "-C", module_dir, "-f", "build.ninja", "-t", "commands"]).stdout
    return next((line.strip() for line in out.splitlines() if "nvcc" in line and " -c " in line), None)


def cuobjdump(tool: str, so: Path) -> dict:
    """SASS cubins per SM and PTX entries of one shared object."""
    elf = run([tool, "--list-elf", so]).stdout
    ptx = run([tool, "--list-ptx", so]).stdout
    cubins: dict[str, int] = {}
    for sm in re.findall(r"\.(sm_\d+[a-z]?)\.cubin", elf):
        cubins[sm] = cubins.get(sm, 0) + 1
    return {"cubins": dict(sorted(cubins.items())), "ptx": re.findall(r"\S+\.ptx", ptx)}


def inspect(jit_cache: Path, arch_list: str) -> tuple[dict[str, dict], str]:
    """`python -m wheelfactory inspect --arch` on the jit_cache tree: verdict per .so, and its text form."""
    arch = ";".join(arch_list.split())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    data = json.loads(run([sys.executable, "-m", "wheelfactory", "inspect", "--json", "--arch", arch, jit_cache],
                          env=env, cwd=REPO).stdout)
    text = run([sys.executable, "-m", "wheelfactory", "inspect", "--arch", arch, jit_cache], env=env, cwd=REPO)
    verdict = data["wheels"][0]["verdict"]["objects"]
    return {Path(p).name: v for p, v in verdict.items()}, text.stdout + text.stderr


def toolkit(cuda_home: Path) -> dict:
    out = checked([cuda_home / "bin" / "nvcc", "--version"])
    tool = str(cuda_home / "bin" / "cuobjdump") if (cuda_home / "bin" / "cuobjdump").exists() \
        else shutil.which("cuobjdump")
    tool_version = re.search(r"V[\d.]+", run([tool, "--version"]).stdout) if tool else None
    return {"cuda_home": str(cuda_home), "nvcc": re.search(r"V[\d.]+", out)[0], "cuobjdump": tool,
            "cuobjdump_version": tool_version[0] if tool_version else None,
            "headers": {h: (cuda_home / "include" / h).exists()
                        for h in ("cuda_runtime.h", "cublasLt.h", "curand_kernel.h")}}


def build_env(cuda_home: Path, work: Path, arch_list: str, jobs: int, nvcc_threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "FLASHINFER_CUDA_ARCH_LIST": arch_list,  # no device is queried when this is set
        "CUDA_HOME": str(cuda_home), "CUDA_PATH": str(cuda_home),  # some generators read CUDA_PATH or PATH
        "PATH": f"{cuda_home / 'bin'}:{env.get('PATH', '')}",
        "MAX_JOBS": str(jobs), "FLASHINFER_NVCC_THREADS": str(nvcc_threads),
        "FLASHINFER_WORKSPACE_BASE": str(work),  # FlashInfer's ~/.cache/flashinfer goes here instead
    })
    return env


def table(rows: list[dict]) -> str:
    head = ["module", "seconds", "cubins per SM", "PTX", "inspect"]
    body = [[r["key"], f"{r['seconds']:.1f}" if "seconds" in r else "-",
             ", ".join(f"{sm} x{n}" for sm, n in r.get("cubins", {}).items()) or "-",
             ("yes" if r["ptx"] else "no") if "ptx" in r else "-", r.get("verdict") or _failure(r)]
            for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=False)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)) for line in [head, *body])


def _failure(row: dict) -> str:
    if "absent" in row:
        return "absent in this version"
    lines = row.get("error", "").strip().splitlines()
    return f"FAILED: {lines[-1][:70]}" if lines else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flashinfer-version", default="0.7.2.post1")
    ap.add_argument("--cuda-home", type=Path, help="toolkit root (bin/nvcc, include/ with cuda_runtime.h, "
                    "cublasLt.h, curand_kernel.h); default CUDA_HOME, /usr/local/cuda or the nvcc on PATH")
    ap.add_argument("--arch-list", default="12.1a", help="FLASHINFER_CUDA_ARCH_LIST (space-separated)")
    ap.add_argument("--modules", choices=sorted(MODULE_SETS), default="decode",
                    help=" ".join(f"{k}={'+'.join(v)}" for k, v in MODULE_SETS.items()))
    ap.add_argument("--torch", default="torch", help="torch requirement or wheel for the venv (a CPU wheel "
                    "will do and is far smaller than PyPI's CUDA build)")
    ap.add_argument("--python", default=f"{sys.version_info.major}.{sys.version_info.minor}")
    ap.add_argument("--work", type=Path, default=Path("fi-aot-work"), help="scratch directory")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="MAX_JOBS (ninja -j)")
    ap.add_argument("--nvcc-threads", type=int, default=1, help="FLASHINFER_NVCC_THREADS")
    ap.add_argument("--json", type=Path, help="also write the JSON here")
    args = ap.parse_args()
    cuda_home = args.cuda_home or (Path(h) if (h := find_cuda_home()) else None)
    if cuda_home is None or not (cuda_home / "bin" / "nvcc").exists():
        sys.exit("needs a CUDA toolkit with bin/nvcc (--cuda-home)")
    if shutil.which("uv") is None:
        sys.exit("needs uv on PATH")
    started = time.perf_counter()
    work = args.work.resolve() / args.flashinfer_version
    work.mkdir(parents=True, exist_ok=True)
    tk = toolkit(cuda_home.resolve())
    if tk["cuobjdump"] is None:
        sys.exit(f"no cuobjdump in {cuda_home}/bin or on PATH")
    py, venv_s = make_venv(work, args.flashinfer_version, args.torch, args.python)
    root = project_root(py, work)
    env = build_env(cuda_home.resolve(), work, args.arch_list, args.jobs, args.nvcc_threads)
    keys = MODULE_SETS[args.modules]
    result = compile_modules(py, env, work, root, keys)
    out_dir = work / "jit_cache"
    verdicts, inspect_text = inspect(out_dir, args.arch_list)
    rows = []
    for m in result["modules"]:
        row = {**m}
        if m["name"] and "error" not in m:
            so = out_dir / m["name"] / f"{m['name']}.so"
            row.update(cuobjdump(tk["cuobjdump"], so), so=str(so), size=so.stat().st_size,
                       nvcc=nvcc_command(py, work / "build" / "cached_ops" / m["name"]))
            v = verdicts.get(so.name)
            row["verdict"] = (f"{v['status']} on {', '.join(v['devices'])}" + (" (foreign)" if v["foreign"] else "")
                              if v else "no device code")
        rows.append(row)
    report = {
        "machine": describe(),
        "toolkit": tk, "packages": package_versions(py), "arch_list": args.arch_list,
        "jobs": args.jobs, "nvcc_threads": args.nvcc_threads, "module_set": args.modules,
        "sm_capabilities": result["sm_capabilities"], "listed_by_shrunk_config": result["listed"],
        "venv_s": round(venv_s, 1), "listing_s": round(result["listing_s"], 1),
        "package_s": round(result["package_s"], 1), "modules": rows, "inspect": inspect_text,
        "total_s": round(time.perf_counter() - started, 1),
    }
    for r in rows:
        if "seconds" in r:
            r["seconds"] = round(r["seconds"], 1)
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    print()
    print(f"FlashInfer {report['packages']['flashinfer-python']}, FLASHINFER_CUDA_ARCH_LIST={args.arch_list!r}, "
          f"nvcc {tk['nvcc']} ({tk['cuda_home']}), MAX_JOBS={args.jobs}, {os.cpu_count()} CPUs {platform.machine()}")
    print(table(rows))
    print(f"venv {report['venv_s']} s, listing {report['listing_s']} s, packaging {report['package_s']} s, "
          f"total {report['total_s']} s")
    if any("error" in r for r in rows) or any(r.get("ptx") for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
