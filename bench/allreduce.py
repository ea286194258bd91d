"""Benchmark: NCCL all-reduce through torch.distributed, reporting which libnccl the process
actually loaded (path and ncclGetVersion) next to the bus bandwidth.

Run one process per GPU with torchrun, e.g. on one host with two GPUs:

    NCCL_NVLS_ENABLE=0 torchrun --nproc-per-node 2 bench/allreduce.py

or across Sparks (one process each) with torchrun's --nnodes/--rdzv options. Rank 0 prints JSON.
busbw = algbw * 2 * (n - 1) / n, as nccl-tests reports it.
"""

from __future__ import annotations

import ctypes
import json
import os
import time

import torch
import torch.distributed as dist

SIZES_MB = (1, 16, 64, 256)
WARMUP, ITERS = 5, 20


def loaded_nccl() -> dict[str, object]:
    """The libnccl mapped into this process and the version it reports."""
    paths = sorted({line.split()[-1] for line in open("/proc/self/maps") if "libnccl.so" in line})
    out: dict[str, object] = {"paths": paths}
    if paths:
        v = ctypes.c_int()
        if ctypes.CDLL(paths[-1]).ncclGetVersion(ctypes.byref(v)) == 0:
            out["version"] = v.value
    return out


def main() -> None:
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    results = []
    for mb in SIZES_MB:
        x = torch.ones(mb * (1 << 20) // 4, device="cuda", dtype=torch.float32)
        for _ in range(WARMUP):
            dist.all_reduce(x)
        torch.cuda.synchronize()
        dist.barrier()
        t = time.perf_counter()
        for _ in range(ITERS):
            dist.all_reduce(x)
        torch.cuda.synchronize()
        seconds = (time.perf_counter() - t) / ITERS
        algbw = x.numel() * 4 / seconds / 1e9
        ok = bool(torch.isfinite(x).all())
        results.append({"size_mb": mb, "time_us": round(seconds * 1e6, 1), "algbw_gbs": round(algbw, 2),
                        "busbw_gbs": round(algbw * 2 * (world - 1) / world, 2), "finite": ok})
    if rank == 0:
        print(json.dumps({"world": world, "device": torch.cuda.get_device_name(), "torch": torch.__version__,
                          "torch_compiled_nccl": list(torch.cuda.nccl.version()), "loaded_nccl": loaded_nccl(),
                          "results": results}, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
