#!/usr/bin/env bash
# vLLM with CUDA kernels, built by wheelfactory on a GPU machine with no network (the device-code
# issue's audit of a real build, the GPU-proof issue's items 2, 3 and 5).
#
#   bash bench/gpu-vllm.sh prepare [CARRY]  here (online): put into CARRY (default .gpucarry-vllm)
#                                           the vLLM sdist, its CMake dependencies (from DEPS: trees
#                                           brought in beforehand), the wheels the factory and the
#                                           build need, and the factory's flashinfer wheel
#   bash bench/gpu-vllm.sh setup [CARRY]    there: unpack, install the factory in a venv over the
#                                           machine's Python, repack its torch (with what torch
#                                           requires), NCCL and Triton as wheels
#   bash bench/gpu-vllm.sh build [CARRY]    there: a release naming all of it, then
#                                           `wheelfactory build vllm --offline` for ARCHS with the
#                                           machine's CUDA (configure with the device-code check,
#                                           compile, repair, the wheel's audit), and `inspect`
#   bash bench/gpu-vllm.sh test [CARRY]     there: tests/gpu/vllm_ops.py and vllm_generate.py with
#                                           the built wheel (needs a Hopper arch in ARCHS)
#
# Settings: DEPS (a folder holding cutlass/, flash-attention/ (with csrc/cutlass), flashmla/,
# qutlass/), VLLM (0.14.1), ARCHS (12.1a; "9.0a;12.1a" to run the wheel on a Hopper GPU), PY_TAG
# (3.12), GPU_PYTHON (/opt/torch/.venv/bin/python3), WORK (/tmp/gpu-vllm on the GPU machine),
# SYSTEM_CUDA, UNTIL and CUDA (for a dry run elsewhere; see below).
# What was run where, and the numbers: bench/GPU-PROOF.md.
set -euo pipefail
cd "$(dirname "$0")/.."

VLLM=${VLLM:-0.14.1}
ARCHS=${ARCHS:-12.1a}
PY_TAG=${PY_TAG:-3.12}
GPU_PYTHON=${GPU_PYTHON:-/opt/torch/.venv/bin/python3}
WORK=${WORK:-/tmp/gpu-vllm}
SYSTEM_CUDA=${SYSTEM_CUDA:-true}  # the GPU machine's full toolkit; false: the release's CUDA from wheels
UNTIL=${UNTIL:-}                  # e.g. configure: stop there (a dry run on a machine without a GPU)

download() {  # wheels for the GPU machine's Python; never their dependencies (each is named)
    local dest=$1; shift
    local platforms=()
    for p in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
        platforms+=(--platform "${p}_x86_64")
    done
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_TAG" --implementation cp \
        "${platforms[@]}" -d "$dest" "$@"
}

prepare() {
    local carry=${1:-.gpucarry-vllm}
    : "${DEPS:?set DEPS to the folder holding cutlass/, flash-attention/, flashmla/, qutlass/}"
    mkdir -p "$carry/wheels" "$carry/src"
    # The sdist as PyPI serves it, checked against the index's sha256.
    python3 - "$VLLM" "$carry/src" <<'PY'
import hashlib, sys, requests
version, dest = sys.argv[1], sys.argv[2]
index = requests.get("https://pypi.org/simple/vllm/", headers={"Accept": "application/vnd.pypi.simple.v1+json"},
                     timeout=60).json()
[f] = [f for f in index["files"] if f["filename"] == f"vllm-{version}.tar.gz"]
data = requests.get(f["url"], timeout=600).content
assert hashlib.sha256(data).hexdigest() == f["hashes"]["sha256"], "sdist hash mismatch"
open(f"{dest}/vllm-{version}.tar.gz", "wb").write(data)
PY
    # The CMake dependencies without docs, tests and ROCm code. CUTLASS's examples/ stays: vLLM's MLA
    # kernels include examples/common and examples/77_blackwell_fmha/common (found on the GPU machine).
    tar -C "$DEPS" --exclude=.git --exclude='./*/docs' --exclude='./*/test' \
        --exclude='./flash-attention/csrc/cutlass/docs' --exclude='./flash-attention/csrc/cutlass/test' \
        --exclude='./flash-attention/csrc/cutlass/examples' --exclude='./flash-attention/csrc/composable_kernel' \
        --exclude='./flashmla/csrc/cutlass' -cJf "$carry/src/deps.tar.xz" ./cutlass ./flash-attention ./flashmla ./qutlass
    # What the factory and vLLM's build need that the GPU machine's Python lacks.
    download "$carry/wheels" click build pyproject_hooks wheel auditwheel pyelftools "cmake>=3.26.1" ninja \
        requests urllib3 idna certifi charset_normalizer \
        "setuptools>=77.0.3,<81" "setuptools-scm>=8,<9" "packaging>=24.2" jinja2 markupsafe \
        "grpcio-tools>=1.76.0" grpcio "protobuf>=6.33.2"  # vLLM 0.14.1's [build-system] requires
    # The factory's flashinfer-python (vLLM's release carries it; a pure-Python wheel from the sdist).
    python3 -m wheelfactory --wheelhouse "$carry/wh" --cache-dir "${TMPDIR:-/tmp}/gpu-vllm-cache" \
        build --release tests/releases/ci.toml flashinfer
    mv "$carry"/wh/flashinfer_python-*.whl "$carry/wheels/"
    du -sh "$carry"/*
    echo "carry $CARRY in parts of at most 60 MiB, then on the GPU machine: bash bench/gpu-vllm.sh setup|build"
}

setup() {
    local carry=${1:-.gpucarry-vllm}
    export PYTHONUNBUFFERED=1
    rm -rf "$WORK"
    mkdir -p "$WORK/src" "$WORK/deps/triton_kernels/python/triton_kernels/triton_kernels" "$WORK/adopted" \
        "$WORK/cache/pydeps"
    # triton_kernels is Triton's python/triton_kernels (not carried): vLLM's CMake only copies it.
    echo "# stand-in for Triton's triton_kernels package" \
        > "$WORK/deps/triton_kernels/python/triton_kernels/triton_kernels/__init__.py"
    tar -C "$WORK/src" -xzf "$carry/src/vllm-$VLLM.tar.gz"
    tar -C "$WORK/deps" -xJf "$carry/src/deps.tar.xz"
    # The factory, in a venv that sees the machine's packages (requests, ...).
    "$GPU_PYTHON" -m venv --system-site-packages "$WORK/wf"
    "$WORK/wf/bin/pip" install -q --no-index --find-links "$carry/wheels" --no-deps click build \
        pyproject_hooks wheel auditwheel pyelftools requests urllib3 idna certifi charset_normalizer
    "$WORK/wf/bin/pip" install -q --no-index --no-deps --no-build-isolation -e .
    cp "$carry"/wheels/*.whl "$WORK/cache/pydeps/"
    local started=$SECONDS dist
    for dist in torch nvidia-nccl-cu13 triton; do
        "$WORK/wf/bin/python" bench/repack_installed.py "$GPU_PYTHON" "$dist" "$WORK/adopted/$dist"
        # What the adopted wheel requires goes where the build venv's offline pip looks.
        find "$WORK/adopted/$dist" -name '*.whl' ! -samefile "$(cat "$WORK/adopted/$dist/main.txt")" \
            -exec cp {} "$WORK/cache/pydeps/" \;
    done
    echo "repacked the machine's torch (with its requirements), NCCL and Triton in $((SECONDS - started)) s"
}

write_release() {
    local carry=$1
    local nccl triton torch_version cuda python
    nccl=$("$GPU_PYTHON" -c 'from importlib.metadata import version; print(version("nvidia-nccl-cu13"))')
    triton=$("$GPU_PYTHON" -c 'from importlib.metadata import version; print(version("triton"))')
    torch_version=$("$GPU_PYTHON" -c 'from importlib.metadata import version; print(version("torch").split("+")[0])')
    python=$("$GPU_PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    cuda=${CUDA:-$(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')}
    local fi
    fi=$(ls "$carry"/wheels/flashinfer_python-*.whl)
    cat > "$WORK/release.toml" <<EOF
extends = "$VLLM-t4"

[target]
python = "$python"
cuda = "$cuda"
cuda_arch_list = ["$ARCHS"]
platform = "linux_x86_64"
system_cuda = $SYSTEM_CUDA

[components.nccl]
version = "${nccl}-1"
adopt = "$(cat "$WORK/adopted/nvidia-nccl-cu13/main.txt")"

[components.torch]
version = "$torch_version"
adopt = "$(cat "$WORK/adopted/torch/main.txt")"

[components.triton]
version = "$triton"
adopt = "$(cat "$WORK/adopted/triton/main.txt")"

[components.flashinfer]
version = "$(basename "$fi" | cut -d- -f2)"
adopt = "$(realpath "$fi")"

[components.vllm]
version = "$VLLM"
source = { path = "$WORK/src/vllm-$VLLM" }

[components.vllm.extra_sources]
cutlass = { path = "$WORK/deps/cutlass" }
flash_attn = { path = "$WORK/deps/flash-attention" }
flashmla = { path = "$WORK/deps/flashmla" }
qutlass = { path = "$WORK/deps/qutlass" }
triton_kernels = { path = "$WORK/deps/triton_kernels" }
EOF
}

build() {
    local carry=${1:-.gpucarry-vllm}
    export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1
    write_release "$carry"
    cp "$carry"/wheels/*.whl "$WORK/cache/pydeps/" 2>/dev/null || true
    local wf=("$WORK/wf/bin/wheelfactory" --cache-dir "$WORK/cache" --wheelhouse "$WORK/wh")
    local started=$SECONDS
    # shellcheck disable=SC2086
    "${wf[@]}" build --release "$WORK/release.toml" vllm --offline --keep-work ${UNTIL:+--until "$UNTIL"} ${WF_BUILD_ARGS:-}
    echo "vLLM step (adopt steps, venv, configure, compile, repair, audit): $((SECONDS - started)) s"
    [ -z "$UNTIL" ] || return 0
    local wheel
    wheel=$(ls "$WORK"/wh/vllm-*.whl)
    ls -l "$wheel"
    local archs=()
    IFS=';' read -ra list <<< "$ARCHS"
    for a in "${list[@]}"; do archs+=(--arch "$a"); done
    "${wf[@]}" inspect "$wheel" "${archs[@]}" || true
}

test_wheel() {
    local carry=${1:-.gpucarry-vllm}
    export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1
    python3 tests/gpu/vllm_deps.py join "$WORK/deps-wheels" "$carry"/deps-part*  # rejoins split wheels, checks sha256
    "$GPU_PYTHON" -m pip install -q --no-index --no-deps --target "$WORK/site" "$WORK"/wh/vllm-*.whl \
        "$WORK"/deps-wheels/*.whl
    PYTHONPATH="$WORK/site" "$GPU_PYTHON" tests/gpu/vllm_ops.py
    PYTHONPATH="$WORK/site" "$GPU_PYTHON" tests/gpu/vllm_generate.py
}

case "${1:-}" in
    prepare) shift; prepare "$@" ;;
    setup) shift; setup "$@" ;;
    build) shift; build "$@" ;;
    test) shift; test_wheel "$@" ;;
    *) echo "usage: bash bench/gpu-vllm.sh prepare|setup|build|test [CARRY]" >&2; exit 2 ;;
esac
