#!/usr/bin/env bash
# FlashInfer JIT with the wheel toolkit, on a GPU machine (issue 10, item 4).
#
#   bash bench/gpu-proof.sh prepare [CARRY]   here: build the factory's flashinfer-python wheel,
#                                             download what the GPU machine lacks, pack it into
#                                             CARRY/part1, part2, ... (default .gpucarry) and print
#                                             the commands to run there
#   bash bench/gpu-proof.sh run [DIR]         there, from the repository root: reassemble the wheels
#                                             gathered in DIR (default /tmp/carry), unpack them into
#                                             one site directory, and run tests/gpu/flashinfer_jit.py
#
# Settings (environment): CUDA_JIT (13.1: the release CUDA whose `jit` pins and nvidia-cuda-runtime
# of recipes/data/cuda_wheels.toml make the toolkit root), PART_MIB (59: the most a part holds, so
# that a part plus the working tree stays under a 64 MiB transfer), RELEASE (tests/releases/ci.toml),
# WORK (${TMPDIR:-/tmp}/gpu-proof: wheelhouse, cache, downloads), WHEELFACTORY (python3 -m
# wheelfactory), WF_BUILD_ARGS (extra `build` arguments, e.g. --system-cuda), TVM_FFI (the
# apache-tvm-ffi version carried), PY_TAG (3.12: the GPU machine's Python), SITE (/tmp/fi-site) and
# PYTHON (python3) on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."

CUDA_JIT=${CUDA_JIT:-13.1}
PART_MIB=${PART_MIB:-59}
RELEASE=${RELEASE:-tests/releases/ci.toml}
WORK=${WORK:-${TMPDIR:-/tmp}/gpu-proof}
WHEELFACTORY=${WHEELFACTORY:-python3 -m wheelfactory}
TVM_FFI=${TVM_FFI:-0.1.15.post2}
PY_TAG=${PY_TAG:-3.12}

prepare() {
    local carry=${1:-.gpucarry}
    local dl="$WORK/download" wh="$WORK/wheelhouse"
    rm -rf "$dl" "$carry"
    mkdir -p "$dl" "$carry"

    # 1. The factory's flashinfer-python (FlashInfer from its PyPI sdist; py3-none-any).
    # shellcheck disable=SC2086
    $WHEELFACTORY --wheelhouse "$wh" --cache-dir "$WORK/cache" build --release "$RELEASE" ${WF_BUILD_ARGS:-} flashinfer
    local fi
    fi=$(ls "$wh"/flashinfer_python-*-py3-none-any.whl)
    cp "$fi" "$dl/"

    # 2. The toolkit root's wheels (the release CUDA's `jit` pins plus nvidia-cuda-runtime), checked
    #    against the sha256 pinned in cuda_wheels.toml, and what the GPU machine's PyTorch
    #    environment lacks of FlashInfer's requirements for these kernels (apache-tvm-ffi).
    python3 - "$CUDA_JIT" > "$WORK/pins.txt" <<'EOF'
import sys, tomllib
data = tomllib.load(open("recipes/data/cuda_wheels.toml", "rb"))[sys.argv[1]]
wanted = list(data["jit"]) + [r for r in data["requires"] if r.startswith("nvidia-cuda-runtime==")]
hashes = {t["wheel"]: t["x86_64"] for t in data["toolkit"]}
for req in wanted:
    print(req, hashes[req])
EOF
    local platforms=()
    for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux2010 manylinux_2_12 manylinux1; do
        platforms+=(--platform "${p}_x86_64")
    done
    while read -r req sha; do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_TAG" --implementation cp \
            "${platforms[@]}" -d "$dl" "$req"
        local name=${req%%==*} version=${req##*==} file
        file=$(ls "$dl"/"${name//-/_}"-"$version"-*.whl)
        echo "$sha  $file" | sha256sum -c --quiet || { echo "sha256 of $file differs from cuda_wheels.toml" >&2; exit 1; }
    done < "$WORK/pins.txt"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_TAG" --implementation cp \
        "${platforms[@]}" -d "$dl" "apache-tvm-ffi==$TVM_FFI"

    # 3. Parts of at most PART_MIB MiB; a wheel that does not fit is cut (reassembled by `run`).
    (cd "$dl" && sha256sum -- *.whl) > "$WORK/SHA256SUMS"
    python3 - "$dl" "$carry" "$PART_MIB" "$WORK/SHA256SUMS" <<'EOF'
import shutil, sys
from pathlib import Path
src, carry, budget = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) * 2**20
part, room = 1, budget
def out():
    d = carry / f"part{part}"
    d.mkdir(parents=True, exist_ok=True)
    return d
for whl in sorted(src.glob("*.whl"), key=lambda p: -p.stat().st_size):
    data, piece = whl.read_bytes(), 0
    if len(data) <= room:
        (out() / whl.name).write_bytes(data)
        room -= len(data)
        continue
    while data:
        if room < 2**20:
            part, room = part + 1, budget
        chunk, data = data[:room], data[room:]
        (out() / f"{whl.name}.part-{piece:03d}").write_bytes(chunk)
        room -= len(chunk)
        piece += 1
shutil.copy(sys.argv[4], out() / "SHA256SUMS")
EOF
    echo
    du -sh "$carry"/part* | sed 's/^/  /'
    local n
    n=$(ls -d "$carry"/part* | wc -l)
    echo
    echo "Carry ready in $carry ($n parts). On the GPU machine, from the repository root, one transfer per"
    echo "part while the machine stays up (the last call runs the check):"
    for ((i = 1; i < n; i++)); do
        echo "  mkdir -p /tmp/carry && cp $carry/part$i/* /tmp/carry/"
    done
    echo "  mkdir -p /tmp/carry && cp $carry/part$n/* /tmp/carry/ && \\"
    echo "    NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1 bash bench/gpu-proof.sh run /tmp/carry 2>&1 | tee flashinfer-jit.log"
}

run() {
    local dir=${1:-/tmp/carry}
    local site=${SITE:-/tmp/fi-site} py=${PYTHON:-python3}
    local out=${OUT:-.}
    # Reassemble cut wheels and check every file.
    for first in "$dir"/*.part-000; do
        [ -e "$first" ] || continue
        local whl=${first%.part-000}
        cat "$whl".part-* > "$whl"
        rm -f "$whl".part-*
    done
    (cd "$dir" && sha256sum -c --quiet SHA256SUMS)

    # Another toolkit must not be found through the environment (flashinfer_jit.py checks again).
    unset CUDA_PATH CUDA_ROOT CUDACXX LIBRARY_PATH CPATH C_INCLUDE_PATH CPLUS_INCLUDE_PATH
    PATH=$(echo "$PATH" | tr ':' '\n' | grep -Ev '^/usr/local/cuda|/cuda-[0-9]' | paste -sd:)
    LD_LIBRARY_PATH=$(echo "${LD_LIBRARY_PATH:-}" | tr ':' '\n' | grep -Ev '^/usr/local/cuda|/cuda-[0-9]' | paste -sd: || true)
    export PATH LD_LIBRARY_PATH

    # One pip run: a second `pip install --target` into the same directory skips (or, with
    # --upgrade, replaces) the nvidia/ folder the first one made.
    rm -rf "$site"
    "$py" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check --target "$site" "$dir"/*.whl
    # FlashInfer's headers include cublasLt.h and curand_kernel.h: the image installs nvidia-cublas
    # and nvidia-curand (torch's requirements) into the same nvidia/cu13 root. Here they are the
    # ones the machine's PyTorch environment already has, linked file by file from their RECORD.
    "$py" tests/gpu/flashinfer_jit.py link-dists "$site" nvidia-cublas nvidia-curand
    export CUDA_HOME="$site/nvidia/cu13" PYTHONPATH="$site"
    echo "== toolkit root $CUDA_HOME =="
    ls "$CUDA_HOME" "$CUDA_HOME/bin" "$CUDA_HOME/lib"

    # -lcuda: the driver's libcuda.so, as the NVIDIA container runtime links it into a container
    # (libcuda.so -> libcuda.so.1). Where the machine has no unversioned link, make one.
    if [ "$(c++ -print-file-name=libcuda.so)" = libcuda.so ]; then
        local libcuda
        libcuda=$("$py" -c 'import ctypes; ctypes.CDLL("libcuda.so.1"); print(next(l.split()[-1] for l in open("/proc/self/maps") if "libcuda.so" in l))')
        mkdir -p /tmp/fi-libcuda && ln -sf "$libcuda" /tmp/fi-libcuda/libcuda.so
        export FLASHINFER_EXTRA_LDFLAGS="-L/tmp/fi-libcuda"
        echo "libcuda.so: none on the linker's path; linking against $libcuda through /tmp/fi-libcuda"
    else
        echo "libcuda.so: $(c++ -print-file-name=libcuda.so)"
    fi

    echo "== probe: the root exactly as the wheels lay it out =="
    local probe=0
    "$py" tests/gpu/flashinfer_jit.py probe || probe=$?
    if [ "$probe" -ne 0 ]; then
        echo "== the root as the image recipe completes it: lib64 -> lib, lib/libcudart.so -> libcudart.so.13 =="
        [ -e "$CUDA_HOME/lib64" ] || ln -s lib "$CUDA_HOME/lib64"
        [ -e "$CUDA_HOME/lib/libcudart.so" ] || ln -s libcudart.so.13 "$CUDA_HOME/lib/libcudart.so"
    fi
    "$py" tests/gpu/flashinfer_jit.py check --json "$out/flashinfer_jit.json"
}

case ${1:-} in
    prepare) shift; prepare "$@" ;;
    run) shift; run "$@" ;;
    *) sed -n '2,20p' "$0"; exit 2 ;;
esac
