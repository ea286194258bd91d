#!/usr/bin/env bash
# NCCL's IB plugin with and without rdma-core, on a GPU machine (issue 17, item 3).
#
#   bash bench/gpu-nccl-ib.sh prepare [DIR]     here (Debian bookworm amd64, apt works): download
#                                               bookworm's rdma-core user space and what it links
#                                               (libibverbs1, ibverbs-providers, librdmacm1,
#                                               libnl-3-200, libnl-route-3-200) into DIR
#                                               (default .gpucarry-rdma), about 1 MB
#   bash bench/gpu-nccl-ib.sh run [DIR] [OUT]   there, from the repository root: run
#                                               assemble/imagefiles/nccl_net_check.py twice, with the
#                                               environment's NCCL (PyTorch's nvidia-nccl-cu13) on GPU 0:
#                                               1. as the machine is (no rdma-core expected);
#                                               2. with the .debs of DIR unpacked (dpkg-deb -x) into a
#                                                  scratch root and its lib dir on LD_LIBRARY_PATH.
#                                               NCCL's INFO logs and the JSON verdicts go to OUT
#                                               (default nccl-ib-out). Exit 0 when the first says
#                                               ibverbs-missing and the second ib-no-device or ib-device.
#   bash bench/gpu-nccl-ib.sh record OUT        here: copy OUT's two logs into tests/data/nccl/ as
#                                               ibverbs-missing.log and ib-no-device.log (the verdict
#                                               each must give), the machine's host name in NCCL's
#                                               "host:pid:tid" prefix replaced by "gpu-host"
#
# PYTHON (python3) picks the interpreter whose NCCL is started. The recorded logs of one run are
# tests/data/nccl/ (see its README.md); bench/GPU-PROOF.md has the numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PACKAGES="libibverbs1 ibverbs-providers librdmacm1 libnl-3-200 libnl-route-3-200"

prepare() {
    local dir=${1:-.gpucarry-rdma}
    mkdir -p "$dir"
    (cd "$dir" && apt-get download $PACKAGES)
    (cd "$dir" && sha256sum ./*.deb > SHA256SUMS)
    ls -l "$dir"
}

run() {
    local dir=${1:-.gpucarry-rdma} out=${2:-nccl-ib-out}
    local check=assemble/imagefiles/nccl_net_check.py root
    mkdir -p "$out"
    root=$(mktemp -d)
    (cd "$dir" && sha256sum -c SHA256SUMS)
    for deb in "$dir"/*.deb; do dpkg-deb -x "$deb" "$root"; done
    # bookworm's libnl-3-200 installs under /lib, rdma-core under /usr/lib
    local lib="$root/usr/lib/$(uname -m)-linux-gnu:$root/lib/$(uname -m)-linux-gnu"
    echo "== system's libibverbs: $(ldconfig -p | grep -c libibverbs || true) entries in ldconfig's cache"
    set +e
    "$PYTHON" "$check" --require-gpu --log "$out/without-rdma-core.log" | tee "$out/without-rdma-core.json"
    local first=${PIPESTATUS[0]}
    LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        "$PYTHON" "$check" --require-gpu --log "$out/bookworm-rdma-core.log" | tee "$out/bookworm-rdma-core.json"
    local second=${PIPESTATUS[0]}
    set -e
    rm -rf "$root"
    echo "== exit: without rdma-core $first, with bookworm rdma-core $second"
    "$PYTHON" - "$out" <<'PY'
import json, sys
out = sys.argv[1]
verdicts = [json.loads(open(f"{out}/{n}.json").read().splitlines()[-1])["nccl"].get("verdict")
            for n in ("without-rdma-core", "bookworm-rdma-core")]
print("verdicts:", verdicts)
sys.exit(0 if verdicts[0] == "ibverbs-missing" and verdicts[1] in ("ib-no-device", "ib-device") else 1)
PY
}

record() {
    local out=${1:?usage: record OUT}
    local dest=tests/data/nccl
    mkdir -p "$dest"
    sed -E 's/^[^ :]+:([0-9]+:[0-9]+ )/gpu-host:\1/' "$out/without-rdma-core.log" > "$dest/ibverbs-missing.log"
    sed -E 's/^[^ :]+:([0-9]+:[0-9]+ )/gpu-host:\1/' "$out/bookworm-rdma-core.log" > "$dest/ib-no-device.log"
    wc -l "$dest"/*.log
}

case "${1:-}" in
    prepare) shift; prepare "$@" ;;
    run) shift; run "$@" ;;
    record) shift; record "$@" ;;
    *) echo "usage: $0 prepare [DIR] | run [DIR] [OUT] | record OUT" >&2; exit 2 ;;
esac
