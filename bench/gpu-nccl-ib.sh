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
#                                               1. without rdma-core (the machine's own libibverbs,
#                                                  if any, hidden in a private mount namespace: root);
#                                               2. with the .debs of DIR unpacked (dpkg-deb -x) into a
#                                                  scratch root and its lib dir on LD_LIBRARY_PATH.
#                                               NCCL's INFO logs and the JSON verdicts go to OUT
#                                               (default nccl-ib-out). Exit 0 when the first says
#                                               ibverbs-missing and the second ib-no-device or ib-device.
#   bash bench/gpu-nccl-ib.sh record OUT        here: copy OUT's logs into tests/data/nccl/, each as
#                                               <verdict>.log (ibverbs-missing, ib-no-device), the
#                                               machine's host name in NCCL's "host:pid:tid" prefix
#                                               replaced by "gpu-host"
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
    # A machine may have rdma-core installed (the GPU machine here had rdma-core 50): the first run
    # then hides it in a private mount namespace (root), each libibverbs file bound over by
    # /dev/null, so dlopen fails as it does where rdma-core is not installed.
    local system
    system=$(ldconfig -p | awk '/libibverbs\.so/ {print $NF}' | xargs -r readlink -f | sort -u | tr '\n' ' ')
    echo "== system's libibverbs: ${system:-none} (hidden for the first run)"
    set +e
    unshare --mount sh -c 'for f in $1; do mount --bind /dev/null "$f" || exit 9; done; shift
                           exec "$@"' sh "$system" \
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
    # each log under the verdict the check gives it, so a machine that had rdma-core installed
    # (no ibverbs-missing log then) records only what it really showed
    local out=${1:?usage: record OUT}
    local dest=tests/data/nccl log verdict
    mkdir -p "$dest"
    for log in "$out"/*.log; do
        verdict=$("$PYTHON" -c 'import sys; sys.path.insert(0, "assemble/imagefiles"); import nccl_net_check as c
print(c.classify(open(sys.argv[1]).read())["verdict"])' "$log")
        sed -E 's/^[^ :]+:([0-9]+:[0-9]+ )/gpu-host:\1/' "$log" > "$dest/$verdict.log"
        echo "$log -> $dest/$verdict.log"
    done
    wc -l "$dest"/*.log
}

case "${1:-}" in
    prepare) shift; prepare "$@" ;;
    run) shift; run "$@" ;;
    record) shift; record "$@" ;;
    *) echo "usage: $0 prepare [DIR] | run [DIR] [OUT] | record OUT" >&2; exit 2 ;;
esac
