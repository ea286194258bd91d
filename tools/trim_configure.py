"""Trim a real CMake configure into test data for the device-code check (tests/data/vllm-configure/,
tests/data/sgl-kernel-configure/).

A CMake-generated build.ninja (vLLM's, sgl-kernel's) is megabytes of include paths; the check needs only each
CUDA object's build statement and the flags that decide its device code. This keeps, per CUDA
object: the `build` line (order-only dependencies dropped), the arch/feature `-D` of DEFINES
and FLAGS minus the flags that do not touch device code; and it replaces this machine's paths
with <src>, <build>, <cutlass_src>, ... so the data says nothing about where it was made.

    python tools/trim_configure.py WORK_TREE OUT_DIR --header "vLLM 0.33.0 sdist, ..." \
        --root src=WORK_TREE/src --root build=WORK_TREE/cmake-configure --root flash_attn_src=/x/fa ...

    python tools/trim_configure.py WORK_TREE OUT_DIR --component sgl_kernel --project sgl-kernel ...

WORK_TREE is a step's work tree kept by `wheelfactory build COMPONENT --until configure`; its
cmake-configure/build.ninja and the step's log (--log) are read, OUT_DIR gets
build.ninja.trimmed and cmake.log (the step log's `[COMPONENT] -- ...` CMake lines, prefix removed).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from wheelfactory.cuda.devicecode import logical_lines

# FLAGS that say nothing about device code (warnings, optimisation, language level, PIC, includes);
# -Xcudafe and -isystem take the next word with them.
# sgl-kernel spells host-compiler and front-end options -Xcompiler=... / -Xcudafe=... (warnings).
DROP_FLAGS = re.compile(r"^(-DONNX_NAMESPACE=.*|-O\d|-DNDEBUG|-std=c\+\+\d+|-Xcompiler=.*|-Xcudafe=.*|--use_fast_math|"
                        r"-use_fast_math|--expt-.*|--diag_suppress=.*|-I.*)$")
WITH_ARGUMENT = ("-Xcudafe", "-isystem", "-Xcompiler")
KEEP_DEFINE = re.compile(r"^-D\w*(ARCH|ENABLE|CUDA|SM\d|FP8|FP4|CUTLASS|QUTLASS)\w*(=.*)?$")


def trim(ninja: str) -> list[str]:
    out: list[str] = []
    keep = False
    for line in logical_lines(ninja):
        if line.startswith("build "):
            head, _, rest = line[len("build "):].partition(": ")
            keep = rest.startswith("CUDA_COMPILER")
            if keep:
                out.append("")
                out.append(f"build {head}: {rest.split(' || ')[0].split(' | ')[0]}")
        elif keep and line.startswith("  ") and " = " in line:
            name, _, value = line.strip().partition(" = ")
            if name == "DEFINES":
                out.append("  DEFINES = " + " ".join(d for d in value.split() if KEEP_DEFINE.match(d)))
            elif name == "FLAGS":
                kept, words = [], iter(value.split())
                for w in words:
                    if w in WITH_ARGUMENT:
                        next(words, None)
                    elif not DROP_FLAGS.match(w):
                        kept.append(w)
                out.append("  FLAGS = " + " ".join(kept))
    return out


def anonymise(text: str, roots: list[tuple[str, str]]) -> str:
    for label, path in sorted(roots, key=lambda r: -len(r[1])):
        path = path.rstrip("/")
        # CMake names the object of a source outside the project `<target>.dir/<absolute path>.o`
        text = text.replace(f".dir{path}/", f".dir/<{label}>/").replace(path, f"<{label}>")
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("work_tree", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--header", required=True, help="first comment line: what was configured, with what")
    ap.add_argument("--log", type=Path, required=True, help="the step's log (CMake's output)")
    ap.add_argument("--root", action="append", default=[], metavar="LABEL=PATH")
    ap.add_argument("--component", default="vllm", help="the step's component: its log lines start [COMPONENT]")
    ap.add_argument("--project", default="vLLM", help="the project's name, for the data's header")
    ap.add_argument("--build-dir", default="cmake-configure",
                    help="the configure's directory in WORK_TREE (another one for a second configure by hand)")
    args = ap.parse_args()
    roots = [tuple(r.split("=", 1)) for r in args.root]
    body = trim((args.work_tree / args.build_dir / "build.ninja").read_text())
    header = [f"# {args.header}",
              f"# Trimmed from the build.ninja of a real {args.project} configure (see cmake.log) by "
              "tools/trim_configure.py:",
              "# only the CUDA object build statements, their FLAGS (minus flags unrelated to device code) and",
              "# the arch/feature -D of DEFINES. Machine paths replaced by <src>, <build>, <flash_attn_src>, ..."]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "build.ninja.trimmed").write_text(anonymise("\n".join(header + body) + "\n", roots))
    prefix = f"[{args.component}] "
    log = [line.removeprefix(prefix) for line in args.log.read_text(errors="replace").splitlines()
           if line.startswith(prefix + "-- ") or line.startswith(prefix + "CMake ")]
    (args.out_dir / "cmake.log").write_text(anonymise("\n".join(log) + "\n", roots))


if __name__ == "__main__":
    main()
