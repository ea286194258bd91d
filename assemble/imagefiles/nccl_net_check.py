"""Can this environment's NCCL reach InfiniBand/RoCE (the Sparks' ConnectX-7 link)?

NCCL's IB transport loads rdma-core with dlopen (`libibverbs.so.1`, which loads its `mlx5`
provider the same way): no DT_NEEDED names them, so an image without rdma-core passes every
closure check and NCCL falls back to TCP sockets, saying so only in its INFO log. This check:

1. loads `libibverbs.so.1` and the mlx5 provider (`libibverbs/libmlx5-rdmav*.so` beside it, as
   libibverbs itself does) and `libmlx5.so.1` with dlopen, and counts the verbs devices;
2. when a GPU is visible, starts NCCL (one-rank communicator through ctypes: ncclGetUniqueId,
   ncclCommInitRank, ncclCommDestroy) in a child process with `NCCL_DEBUG=INFO` and classifies
   its log:
     ib-device        "NET/IB : Using [0]mlx5_0:1/RoCE ..."  the IB transport is in use
     ib-no-device     "NET/IB : No device found."            rdma-core loaded, no HCA here
     ibverbs-missing  "Failed to open libibverbs.so[.1]"      no rdma-core: sockets only (NCCL < 2.30;
                      2.30 on tries each name and says "Count not open libibverbs.so.1", sic)
     no-ib-log        none of these (IB disabled, or NCCL never initialised its network)
   NCCL sets up its network transports only when a communicator is created, which needs a GPU;
   without one the NCCL part is skipped, with the reason.

`python nccl_net_check.py [--nccl PATH] [--log FILE] [--require-gpu]` prints one JSON object
(stdout's last line) and exits 0 when rdma-core loads and NCCL (if run) reports the IB plugin
with or without a device; 1 otherwise; 3 with --require-gpu and no GPU. Only the standard
library is used: it runs in any image, venv or bare Python.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import importlib.util
import json
import os
import re
import subprocess
import sys

# NCCL's own wording (src/transport/net_ib.cc, net_ib/init.cc from 2.30; src/misc/ibvsymbols.cc).
# Order matters: a log with a device may print the others too (other plugins, or the first of the
# names NCCL tries). libibverbs is missing when the last name NCCL tries does not open: up to
# 2.29.x one line, "Failed to open libibverbs.so[.1]"; from 2.30.3 (commit ed27dc32) one line per
# name, "Count not open libibverbs.so" then "... libibverbs.so.1" (the typo is upstream's; a fixed
# "Could" is accepted). "libibverbs.so" alone failing is normal: only -dev packages install it.
VERDICTS = (
    # A device is "[0]mlx5_0:1/RoCE": NCCL 2.28.9 with rdma-core and no HCA logs "No device found."
    # and then "NET/IB : Using [RO]; OOB eth0:..." with an empty device list (recorded on a GPU
    # machine, tests/data/nccl/), so the bracket must hold an index.
    ("ib-device", re.compile(r"NET/IB ?: Using \[\d+\]", re.IGNORECASE)),  # some versions say "Net/IB"
    ("ib-no-device", re.compile(r"NET/IB ?: No device found", re.IGNORECASE)),
    ("ibverbs-missing", re.compile(r"Failed to open libibverbs\.so|Cou(?:nt|ld) not open libibverbs\.so\.1(?!\d)")),
)
GOOD = {"ib-device", "ib-no-device"}
# What each verdict means for a user, for the report.
MEANING = {
    "ib-device": "NCCL uses InfiniBand/RoCE",
    "ib-no-device": "rdma-core loads; no InfiniBand/RoCE device is visible here (a Spark's ConnectX-7 would be)",
    "ibverbs-missing": "rdma-core is missing: NCCL cannot load libibverbs and falls back to TCP sockets",
    "no-ib-log": "NCCL's log says nothing of its IB plugin (NCCL_IB_DISABLE, NCCL_NET, or no network init)",
}
EXIT_GPU_MISSING = 3


def classify(log: str) -> dict:
    """The verdict on an NCCL_DEBUG=INFO log, the line that decided it, NCCL's version and the
    network NCCL chose."""
    verdict, line = "no-ib-log", None
    for name, pattern in VERDICTS:
        m = pattern.search(log)
        if m:
            start = log.rfind("\n", 0, m.start()) + 1
            end = log.find("\n", m.end())
            verdict, line = name, log[start:end if end >= 0 else len(log)].strip()
            break
    version = re.search(r"NCCL version (\S+)", log)
    network = re.search(r"Using network (\S+)", log)
    return {"verdict": verdict, "line": line, "meaning": MEANING[verdict],
            "nccl_version": version[1] if version else None, "network": network[1] if network else None}


def _loaded_path(name: str) -> str | None:
    """Where the dynamic loader found a library this process has loaded (from /proc/self/maps)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for row in f:
                path = row.split(None, 5)[-1].strip() if len(row.split()) >= 6 else ""
                if os.path.basename(path).startswith(name):
                    return path
    except OSError:
        pass
    return None


def check_rdma() -> dict:
    """dlopen rdma-core as NCCL does and count the verbs devices."""
    out: dict = {"ok": False}
    try:
        verbs = ctypes.CDLL("libibverbs.so.1")
    except OSError as e:
        out["error"] = f"libibverbs.so.1 does not load: {e}"
        return out
    out["libibverbs"] = _loaded_path("libibverbs.so") or "libibverbs.so.1"
    # libibverbs loads its providers from <its directory>/libibverbs/lib<name>-rdmav<ABI>.so
    providers = sorted(glob.glob(os.path.join(os.path.dirname(out["libibverbs"]), "libibverbs",
                                              "libmlx5-rdmav*.so")))
    if not providers:
        out["error"] = f"no mlx5 provider (libibverbs/libmlx5-rdmav*.so) beside {out['libibverbs']}"
        return out
    try:
        ctypes.CDLL(providers[-1])
        ctypes.CDLL("libmlx5.so.1")
    except OSError as e:
        out["error"] = f"the mlx5 provider does not load: {e}"
        return out
    out["mlx5_provider"] = providers[-1]
    verbs.ibv_get_device_list.restype = ctypes.c_void_p
    verbs.ibv_get_device_list.argtypes = [ctypes.POINTER(ctypes.c_int)]
    count = ctypes.c_int(-1)
    devices = verbs.ibv_get_device_list(ctypes.byref(count))
    if devices:
        verbs.ibv_free_device_list.argtypes = [ctypes.c_void_p]
        verbs.ibv_free_device_list(devices)
    out["verbs_devices"] = count.value
    out["ok"] = True
    return out


def gpu_count() -> tuple[int, str]:
    """(number of CUDA devices, why none) through the driver API, as NCCL sees them."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError as e:
        return 0, f"no CUDA driver (libcuda.so.1 does not load: {e})"
    rc = cuda.cuInit(0)
    if rc != 0:
        return 0, f"cuInit failed with CUresult {rc}"
    n = ctypes.c_int(0)
    rc = cuda.cuDeviceGetCount(ctypes.byref(n))
    return (n.value, "" if n.value else "cuDeviceGetCount found no GPU") if rc == 0 else \
        (0, f"cuDeviceGetCount failed with CUresult {rc}")


def find_nccl() -> str | None:
    """The NCCL a PyTorch of this environment loads: nvidia/nccl/lib/libnccl.so.2 of the nvidia
    namespace package, else the loader's libnccl.so.2."""
    spec = importlib.util.find_spec("nvidia")
    for base in (spec.submodule_search_locations or []) if spec else []:
        # nvidia-nccl-cu13 lays it out under nvidia/nccl/lib; CUDA 13 toolkit wheels use nvidia/cu13/lib
        for path in [os.path.join(base, "nccl", "lib", "libnccl.so.2"),
                     *sorted(glob.glob(os.path.join(base, "*", "lib", "libnccl.so.2")))]:
            if os.path.isfile(path):
                return path
    try:
        ctypes.CDLL("libnccl.so.2")
    except OSError:
        return None
    return _loaded_path("libnccl.so") or "libnccl.so.2"


class _UniqueId(ctypes.Structure):
    _fields_ = [("internal", ctypes.c_char * 128)]  # NCCL_UNIQUE_ID_BYTES


def _child(nccl: str) -> int:
    """Create and destroy a one-rank communicator on GPU 0 (run with NCCL_DEBUG=INFO)."""
    lib = ctypes.CDLL(nccl)
    lib.ncclGetErrorString.restype = ctypes.c_char_p
    version = ctypes.c_int(0)
    lib.ncclGetVersion(ctypes.byref(version))
    uid = _UniqueId()
    rc = lib.ncclGetUniqueId(ctypes.byref(uid))
    if rc == 0:
        comm = ctypes.c_void_p()
        rc = lib.ncclCommInitRank(ctypes.byref(comm), 1, uid, 0)
        if rc == 0:
            lib.ncclCommDestroy(comm)
    print(f"nccl_net_check: ncclGetVersion {version.value}, result {rc} "
          f"({lib.ncclGetErrorString(rc).decode()})", flush=True)
    return 0 if rc == 0 else 1


def run_nccl(nccl: str, timeout: float = 120) -> dict:
    """Start NCCL in a child process with NCCL_DEBUG=INFO; its log and the verdict on it."""
    env = dict(os.environ, NCCL_DEBUG="INFO", NCCL_DEBUG_SUBSYS="INIT,NET,ENV")
    # the question is whether NCCL *can* use IB: settings that switch it off would hide the answer
    cleared = [k for k in ("NCCL_IB_DISABLE", "NCCL_NET", "NCCL_DEBUG_FILE") if env.pop(k, None) is not None]
    try:
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", nccl], env=env,
                           capture_output=True, text=True, timeout=timeout)
        log, rc = r.stdout + r.stderr, r.returncode
    except subprocess.TimeoutExpired as e:
        log, rc = f"{e.stdout or ''}{e.stderr or ''}\nnccl_net_check: timed out after {timeout}s", -1
    out = {"library": nccl, "exit": rc, "cleared": cleared, **classify(log)}
    out["ok"] = rc == 0 and out["verdict"] in GOOD
    return out | {"log": log}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nccl", help="libnccl.so.2 to start (default: the environment's nvidia-nccl wheel)")
    ap.add_argument("--log", help="write NCCL's INFO log here")
    ap.add_argument("--require-gpu", action="store_true", help=f"exit {EXIT_GPU_MISSING} when no GPU is visible")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args.child)
    report: dict = {"rdma": check_rdma()}
    gpus, why = gpu_count()
    nccl = args.nccl or find_nccl()
    if nccl is None:
        report["nccl"] = {"skipped": "no libnccl.so.2 in this environment"}
    elif not gpus:
        report["nccl"] = {"skipped": f"NCCL sets up its network only for a communicator on a GPU: {why}",
                          "library": nccl}
    else:
        result = run_nccl(nccl)
        log = result.pop("log")
        if args.log:
            with open(args.log, "w", encoding="utf-8") as f:
                f.write(log)
        report["nccl"] = result
    nccl_ok = report["nccl"].get("ok", "skipped" in report["nccl"])
    report["ok"] = bool(report["rdma"]["ok"] and nccl_ok)
    print(json.dumps(report))
    if args.require_gpu and not gpus:
        return EXIT_GPU_MISSING
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
