#!/usr/bin/env python3
"""The runtime wheels vLLM needs on a GPU machine without network (tests/gpu/vllm_runtime_deps.txt),
packed into parts small enough to carry, and joined again on the other side. Standard library only.

  vllm_deps.py pack CARRY [--part-bytes N] [--with-t4]
        here (network): download the listed wheels for cp312 manylinux x86_64 (no dependencies:
        each one is listed), and write CARRY/deps-part1, deps-part2, ... of at most N bytes
        (default 50,000,000) each. A wheel too large for any part is cut into NAME.whl.part-000,
        -001, ... across parts. CARRY/deps-SHA256SUMS and CARRY/deps-MANIFEST.md describe every
        wheel (and why it is needed); both are copied into each part. --with-t4 adds
        CARRY/deps-t4: transformers 4.57.6, tokenizers 0.22.2 and huggingface-hub 0.36.0, for a
        machine whose transformers 5 vLLM 0.14.1 refuses (it did not in the checks made here).
  vllm_deps.py join OUT PART_DIR...
        there: copy the wheels of the given part directories into OUT, join cut wheels, check every
        wheel against SHA256SUMS; exit 1 on any mismatch or missing piece.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
LIST = HERE / "vllm_runtime_deps.txt"
PLATFORMS = ("manylinux_2_28", "manylinux_2_27", "manylinux_2_26", "manylinux_2_17", "manylinux2014",
             "manylinux_2_5", "manylinux1")
T4 = {"transformers==4.57.6": "vLLM 0.14.1 declares transformers<5 (fallback only)",
      "tokenizers==0.22.2": "transformers 4.57 wants tokenizers<=0.23.0",
      "huggingface-hub==0.36.0": "transformers 4.57 wants huggingface-hub<1.0"}


def read_list() -> list[tuple[str, str]]:
    out = []
    for line in LIST.read_text().splitlines():
        req, _, why = line.partition("#")
        if req.strip():
            out.append((req.strip(), why.strip()))
    return out


def download(reqs: list[str], dest: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "cp", "-d", str(dest)]
    for p in PLATFORMS:
        cmd += ["--platform", f"{p}_x86_64"]
    subprocess.run(cmd + reqs, check=True)


def dist_key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pack(args: argparse.Namespace) -> int:
    carry: Path = args.carry
    reqs = read_list()
    why = {dist_key(r.split("==")[0]): w for r, w in reqs}
    with tempfile.TemporaryDirectory() as tmp:
        dl = Path(tmp)
        download([r for r, _ in reqs], dl)
        wheels = sorted(dl.glob("*.whl"), key=lambda p: p.stat().st_size, reverse=True)
        if len(wheels) != len(reqs):
            print(f"expected {len(reqs)} wheels, got {len(wheels)}", file=sys.stderr)
            return 1
        for old in carry.glob("deps-part*"):
            shutil.rmtree(old)
        cap = args.part_bytes - 200_000  # room for the manifest and checksums in every part
        parts: list[list[tuple[Path, int, int]]] = []  # (wheel, offset, length)
        free: list[int] = []
        big = [w for w in wheels if w.stat().st_size > cap]
        for w in [w for w in wheels if w not in big]:  # first fit, largest first
            size = w.stat().st_size
            i = next((i for i, f in enumerate(free) if f >= size), None)
            if i is None:
                parts.append([])
                free.append(cap)
                i = len(parts) - 1
            parts[i].append((w, 0, size))
            free[i] -= size
        for w in big:  # cut into the free space left, then into new parts
            size, offset = w.stat().st_size, 0
            for i in range(len(parts) + (size + cap - 1) // cap):
                if offset >= size:
                    break
                if i == len(parts):
                    parts.append([])
                    free.append(cap)
                take = min(free[i], size - offset)
                if take < 1_000_000:
                    continue
                parts[i].append((w, offset, take))
                free[i] -= take
                offset += take
        sums, rows = [], []
        for w in sorted(wheels, key=lambda p: p.name.lower()):
            digest = sha256(w)
            sums.append(f"{digest}  {w.name}")
            name = dist_key(w.name.split("-")[0])
            where = [f"deps-part{i + 1}" for i, part in enumerate(parts) for pw, _, _ in part if pw == w]
            rows.append(f"| {w.name} | {w.stat().st_size / 1e6:.2f} MB | {', '.join(where)} | {why.get(name, '')} |")
        carry.mkdir(parents=True, exist_ok=True)
        (carry / "deps-SHA256SUMS").write_text("\n".join(sums) + "\n")
        manifest = ["# vLLM 0.14.1 runtime wheels for the GPU machine (cp312, manylinux x86_64)", "",
                    f"From {LIST.relative_to(HERE.parent.parent)}; made by tests/gpu/vllm_deps.py pack.", "",
                    "| wheel | size | part | needed by |", "|---|---|---|---|", *rows, ""]
        (carry / "deps-MANIFEST.md").write_text("\n".join(manifest))
        for i, part in enumerate(parts):
            d = carry / f"deps-part{i + 1}"
            d.mkdir(parents=True)
            shutil.copy(carry / "deps-SHA256SUMS", d / "SHA256SUMS")
            shutil.copy(carry / "deps-MANIFEST.md", d / "MANIFEST.md")
            for w, offset, length in part:
                if length == w.stat().st_size:
                    shutil.copy(w, d / w.name)
                    continue
                piece = sum(1 for j in range(i) for pw, _, _ in parts[j] if pw == w)
                with w.open("rb") as f:
                    f.seek(offset)
                    (d / f"{w.name}.part-{piece:03d}").write_bytes(f.read(length))
            total = sum(p.stat().st_size for p in d.iterdir())
            print(f"{d}: {total / 1e6:.1f} MB, {len(list(d.iterdir()))} files")
    if args.with_t4:
        d = carry / "deps-t4"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        download(list(T4), d)
        (d / "SHA256SUMS").write_text("".join(f"{sha256(w)}  {w.name}\n" for w in sorted(d.glob("*.whl"))))
        print(f"{d}: {sum(p.stat().st_size for p in d.iterdir()) / 1e6:.1f} MB")
    return 0


def join(args: argparse.Namespace) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    sums: dict[str, str] = {}
    for d in args.parts:
        for line in (d / "SHA256SUMS").read_text().splitlines() if (d / "SHA256SUMS").exists() else []:
            digest, _, name = line.partition("  ")
            sums[name] = digest
        for f in d.iterdir():
            if f.name.endswith(".whl") or ".whl.part-" in f.name:
                shutil.copy(f, out / f.name)
    for first in sorted(out.glob("*.whl.part-000")):
        wheel = out / first.name[: -len(".part-000")]
        pieces = sorted(out.glob(wheel.name + ".part-*"))
        with wheel.open("wb") as dst:
            for p in pieces:
                dst.write(p.read_bytes())
                p.unlink()
        print(f"joined {wheel.name} from {len(pieces)} pieces")
    bad = 0
    for name, digest in sorted(sums.items()):
        w = out / name
        if not w.exists():
            print(f"MISSING {name}", file=sys.stderr)
            bad += 1
        elif sha256(w) != digest:
            print(f"SHA256 MISMATCH {name}", file=sys.stderr)
            bad += 1
    leftover = sorted(p.name for p in out.glob("*.part-*"))
    if leftover:
        print(f"pieces without a first piece: {leftover}", file=sys.stderr)
        bad += 1
    print(f"{len(list(out.glob('*.whl')))} wheels in {out}; {len(sums)} checked against SHA256SUMS")
    return 1 if bad or not sums else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("carry", type=Path)
    p.add_argument("--part-bytes", type=int, default=50_000_000)
    p.add_argument("--with-t4", action="store_true")
    j = sub.add_parser("join")
    j.add_argument("out", type=Path)
    j.add_argument("parts", type=Path, nargs="+")
    args = ap.parse_args()
    return pack(args) if args.cmd == "pack" else join(args)


if __name__ == "__main__":
    sys.exit(main())
