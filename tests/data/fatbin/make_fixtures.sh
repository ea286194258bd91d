#!/usr/bin/env bash
# Builds the fatbin fixtures with the real nvcc into OUTDIR (the tests do this once per session:
# the binaries are generated, never committed). With RECORD=1 it also records what NVIDIA's
# cuobjdump says about each of them in cuobjdump.txt here, which tests/test_fatbin.py compares
# wheelfactory.cuda.fatbin against: bash tests/data/fatbin/make_fixtures.sh OUTDIR
# cuobjdump comes from `pip install nvidia-cuda-cuobjdump` (CUOBJDUMP=path overrides).
set -euo pipefail
src=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:?usage: make_fixtures.sh OUTDIR}" && cd "$1" && pwd)
cp "$src"/kernel.cu "$src"/other.cu "$src"/host.c "$out/"
cd "$out"
here=$PWD
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
CUOBJDUMP=${CUOBJDUMP:-cuobjdump}
G() { for a in "$@"; do printf -- '-gencode=arch=%s,code=%s ' "${a%%:*}" "${a##*:}"; done; }
# nvcc -c, then the host linker, like a CMake build: one fatbin container per translation unit.
so() { # so NAME "NVCC FLAGS" SOURCES...
    local name=$1 flags=$2; shift 2
    local objs=()
    for f in "$@"; do
        $NVCC -c -Xcompiler -fPIC -Xcompiler -Os $flags -o "$out/$name.${f%.cu}.o" "$f"
        objs+=("$out/$name.${f%.cu}.o")
    done
    g++ -shared -s -Wl,-z,noseparate-code -o "$name" "${objs[@]}"
    rm -f "${objs[@]}"
}
so sass_ptx.so "$(G compute_80:sm_80 compute_80:compute_80)" kernel.cu
so arch_specific.so "-Xfatbin -compress-all $(G compute_121:sm_121 compute_121a:sm_121a compute_120a:sm_120a compute_121a:compute_121a)" kernel.cu
so family.so "-Xfatbin -compress-all $(G compute_100f:sm_100f compute_120f:sm_120f compute_120f:compute_120f)" kernel.cu
so uncompressed.so "-Xfatbin -compress=false $(G compute_90a:sm_90a compute_80:compute_80)" kernel.cu
so lz4.so "-compress-mode=speed -Xfatbin -compress-all $(G compute_89:sm_89 compute_89:compute_89)" kernel.cu
so zstd_size.so "-compress-mode=size -Xfatbin -compress-all $(G compute_121a:sm_121a compute_121a:compute_121a)" kernel.cu
# two translation units with different arch lists in one shared object
$NVCC -c -Xcompiler -fPIC -Xcompiler -Os -Xfatbin -compress-all $(G compute_121a:sm_121a) -o tm.a.o kernel.cu
$NVCC -c -Xcompiler -fPIC -Xcompiler -Os -Xfatbin -compress-all $(G compute_80:sm_80) -o tm.b.o other.cu
g++ -shared -s -Wl,-z,noseparate-code -o two_modules.so tm.a.o tm.b.o && rm -f tm.a.o tm.b.o
# nvcc's own link: adds the device-link stub container (an empty cubin per SASS arch)
$NVCC -shared -Xcompiler -fPIC -cudart shared -Xlinker -s -Xlinker -z,noseparate-code \
    $(G compute_80:sm_80 compute_80:compute_80) -o nvcc_shared.so kernel.cu
# relocatable device code: the fatbin lives in __nv_relfatbin; and LTO-IR entries
$NVCC -c -rdc=true -Xfatbin -compress-all $(G compute_80:sm_80 compute_120a:sm_120a compute_120a:compute_120a) -o rdc.o kernel.cu
$NVCC -c -rdc=true $(G compute_90:lto_90 compute_121a:lto_121a) -o lto.o kernel.cu
gcc -shared -fPIC -Os -s -o host_only.so host.c
rm -f kernel.cu other.cu host.c
[ "${RECORD:-0}" = 1 ] || exit 0
{
    echo "# $($NVCC --version | tail -1)"
    echo "# $($CUOBJDUMP --version | tail -1)"
    echo "# cuobjdump -all -elf -ptx FILE, the header of each fatbin entry (arch, code version, compressed)"
    for f in *.so *.o; do
        echo "== $f"
        $CUOBJDUMP -all -elf -ptx "$f" 2>/dev/null \
            | grep -E '^(Fatbin (elf|ptx|lto|nvvm)[a-z ]*code:|arch = |code version = |compressed$)' || true
        # the size of each cubin and PTX text as cuobjdump extracts it (PTX without its NUL)
        tmp=$(mktemp -d)
        (cd "$tmp" && { $CUOBJDUMP -all -xelf all "$here/$f"; $CUOBJDUMP -all -xptx all "$here/$f"; } >/dev/null 2>&1 || true)
        for x in $(ls "$tmp" | sort -t. -k1,1 -k2,2n); do echo "extracted ${x#*.} $(stat -c %s "$tmp/$x")"; done
        rm -rf "$tmp"
    done
} > "$src/cuobjdump.txt"
ls -l *.so *.o
