"""Compile a real Triton kernel ahead of time for the DGX Spark (GB10, sm_121a), with no GPU.

Runs with only Triton installed (in an image, a venv, a CI job): `python triton_aot_check.py
[--expect-ptxas PATH] [--capability 121]`. It prints one JSON object (stdout's last line; what
Triton prints goes to stderr) and exits 0 when Triton
produced a cubin for the target, compiled by the ptxas it was pointed at; 1 otherwise, with the
error. Triton compiles for a given GPUTarget without a driver: `triton.compile` with an ASTSource
only runs LLVM and ptxas.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import re
import struct
import sys
import traceback

EM_CUDA = 190


def elf_section(elf: bytes, wanted: str) -> bytes:
    """The bytes of a 64-bit little-endian ELF file's section by name (b'' when absent)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    if struct.unpack_from("<H", elf, 18)[0] != EM_CUDA:
        raise ValueError("not a CUDA cubin (ELF machine is not EM_CUDA)")
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", elf, shoff + i * shentsize) for i in range(shnum)]
    strtab = headers[shstrndx]
    names = elf[strtab[4]:strtab[4] + strtab[5]]
    for name, _type, _flags, _addr, offset, size, *_ in headers:
        if names[name:names.index(b"\0", name)].decode() == wanted:
            return elf[offset:offset + size]
    return b""


def cubin_toolkit_note(cubin: bytes) -> tuple[str | None, str | None]:
    """(arch, ptxas release) a cubin's .note.nv.tkinfo names: ('sm_121a', '13.1.80').

    The `a` of sm_121a is in this note only: the cubin's e_flags are those of plain sm_121."""
    note = elf_section(cubin, ".note.nv.tkinfo")
    arch = re.search(rb"-arch (sm_\d+[af]?)\b", note)
    release = re.search(rb"release \d+\.\d+, V([\d.]+)", note)
    return (arch[1].decode() if arch else None, release[1].decode() if release else None)


def _kernel_source():
    import triton
    import triton.language as tl

    @triton.jit
    def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < n
        tl.store(out_ptr + offsets, tl.load(x_ptr + offsets, mask=mask) + tl.load(y_ptr + offsets, mask=mask),
                 mask=mask)

    return add_kernel


def _ptxas_used(capability: int) -> str:
    """The ptxas Triton resolves for the target (Triton >= 3.6 picks ptxas-blackwell for arch >= 100)."""
    from triton.backends.nvidia import compiler

    try:
        tool = compiler.get_ptxas(capability)
    except TypeError:  # Triton < 3.6: one ptxas for every arch
        tool = compiler.get_ptxas()
    return os.path.realpath(tool.path)


def run(capability: int, expect_ptxas: str | None) -> dict:
    """Compile the kernel; the result as a dict (ok, error, ptxas, cubin arch)."""
    out: dict = {"triton": importlib.metadata.version("triton"), "target": f"cuda:{capability}", "ok": False,
                 "knobs": {k: v for k, v in sorted(os.environ.items()) if k.startswith("TRITON_") and "PTXAS" in k}}
    try:
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource

        out["ptxas"] = _ptxas_used(capability)
        if expect_ptxas and out["ptxas"] != os.path.realpath(expect_ptxas):
            out["error"] = (f"Triton resolves ptxas {out['ptxas']} for sm_{capability}, not the toolkit's "
                            f"{expect_ptxas}: a TRITON_*PTXAS*_PATH knob this Triton reads is unset or unusable")
            return out
        signature = {"x_ptr": "*fp32", "y_ptr": "*fp32", "out_ptr": "*fp32", "n": "i32", "BLOCK": "constexpr"}
        src = ASTSource(fn=_kernel_source(), signature=signature, constexprs={"BLOCK": 1024})
        # whatever Triton prints (a failing ptxas's PTX) goes to stderr: stdout is the JSON result only
        with contextlib.redirect_stdout(sys.stderr):
            compiled = triton.compile(src, target=GPUTarget("cuda", capability, 32))
    except Exception as e:  # noqa: BLE001 - the check reports any failure of Triton as its result
        out["error"] = f"{type(e).__name__}: {e}"[-3000:]
        out["traceback"] = traceback.format_exc()[-3000:]
        return out
    ptx = compiled.asm.get("ptx", "")
    target = next((line.split()[1] for line in ptx.splitlines() if line.startswith(".target")), None)
    arch, ptxas_release = cubin_toolkit_note(compiled.asm["cubin"])
    out.update(ptx_target=target, cubin_sm=arch, cubin_ptxas=ptxas_release, cubin_bytes=len(compiled.asm["cubin"]))
    want = f"sm_{capability}a"
    out["ok"] = out["cubin_sm"] == want and target == want
    if not out["ok"]:
        out["error"] = f"expected a cubin and PTX for {want}, got cubin {out['cubin_sm']}, PTX target {target}"
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: print the JSON result, exit 0 when the cubin is for sm_<capability>a."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capability", type=int, default=121)
    parser.add_argument("--expect-ptxas", help="the ptxas Triton must use (the toolkit wheels')")
    args = parser.parse_args(argv)
    result = run(args.capability, args.expect_ptxas)
    print(json.dumps(result))  # one line, the last of stdout
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
