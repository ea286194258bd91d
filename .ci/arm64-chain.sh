#!/usr/bin/env bash
# The aarch64 CI chain, run ON an aarch64 machine: in CI the emulated one of .ci/arm64-env.sh:
#
#   docker run --rm --platform linux/arm64 --network host -v "$PWD":/src:ro -v DIR:/wf \
#       local/debian-py-arm64:bookworm bash /src/.ci/arm64-chain.sh build
#   docker run --rm --platform linux/arm64 --network none -v "$PWD":/src:ro -v DIR:/wf \
#       local/debian-py-arm64:bookworm bash /src/.ci/arm64-chain.sh install
#
# (or `chroot ROOTFS` with the same directories bound). `build` installs wheelfactory from /src into
# a venv, then: fetch, build each component of the release, lock. `install` (no network needed)
# makes a venv from the lock and imports the stack's modules in it.
# Under /wf: wheelhouse/, cache/, work/ (the factory's venv, the stack venv), timings.tsv (each step's
# seconds and exit status), imports.txt (the machine, then each module and its __version__, or - ).
# Env: SRC, WF (default /src, /wf); RELEASE (a path under SRC; default the full chain,
# tests/releases/ci-arm64.toml), COMPONENTS (built in this order) and IMPORTS (default the full
# chain's), RECIPES_DIR (a --recipes-dir under SRC, for a release of test recipes).
set -euo pipefail

SRC=${SRC:-/src}
WF=${WF:-/wf}
RELEASE=${RELEASE:-tests/releases/ci-arm64.toml}
COMPONENTS=${COMPONENTS:-nccl torch flashinfer vllm}
IMPORTS=${IMPORTS:-vllm torch flashinfer}
RECIPES_DIR=${RECIPES_DIR:-}
WORK=$WF/work
PHASE=${1:-}

log() { printf '[arm64-chain +%ss] %s\n' "$SECONDS" "$*" >&2; }
[[ $PHASE == build || $PHASE == install ]] || { log "usage: arm64-chain.sh build|install"; exit 2; }
[[ $(uname -m) == aarch64 ]] || { log "this is $(uname -m), not aarch64"; exit 2; }
mkdir -p "$WF/wheelhouse" "$WF/cache" "$WORK"

# step NAME CMD...: run CMD and append "NAME<TAB>seconds<TAB>exit status" to timings.tsv.
step() {
    local name=$1 start=$EPOCHREALTIME rc=0
    shift
    log "$name: $*"
    "$@" || rc=$?
    python3 -c "import sys; print(f'{sys.argv[1]}\t{float(sys.argv[3]) - float(sys.argv[2]):.1f}\t{sys.argv[4]}')" \
        "$name" "$start" "$EPOCHREALTIME" "$rc" >>"$WF/timings.tsv"
    if ((rc)); then log "$name failed (exit $rc)"; exit "$rc"; fi
}
wf() {
    (cd "$WORK/src" && "$WORK/venv/bin/wheelfactory" ${RECIPES_DIR:+--recipes-dir "$RECIPES_DIR"} \
        --wheelhouse "$WF/wheelhouse" --cache-dir "$WF/cache" "$@")
}

if [[ $PHASE == build ]]; then
    : >"$WF/timings.tsv"
    # A writable copy of the checkout without the host's venv and git objects (the mount is read-only).
    copy_source() {
        rm -rf "$WORK/src" && mkdir -p "$WORK/src"
        tar -C "$SRC" --exclude=./.venv --exclude=./.git --exclude=./wheelhouse -c . | tar -C "$WORK/src" -x
    }
    install_factory() {
        # An editable install: a venv left by an earlier run serves as long as the dependencies are the same.
        if [[ -x $WORK/venv/bin/wheelfactory ]] && cmp -s "$WORK/src/pyproject.toml" "$WORK/venv/pyproject.toml"; then
            return 0
        fi
        rm -rf "$WORK/venv"
        # uv installs it: pip resolving and installing its ~25 wheels took 440 s under qemu, and
        # ensurepip alone ~2.5 min. The system's pip puts uv (one wheel) into a venv without pip; pip
        # comes in with the rest, for the factory's own `pip download`s.
        python3 -m venv --without-pip "$WORK/venv"
        python3 -m pip --python "$WORK/venv/bin/python" install -q --disable-pip-version-check "uv>=0.6"
        "$WORK/venv/bin/uv" pip install -q --python "$WORK/venv/bin/python" -e "$WORK/src" pip
        cp "$WORK/src/pyproject.toml" "$WORK/venv/pyproject.toml"
    }
    step copy-source copy_source
    step install-wheelfactory install_factory
    step plan wf plan -r "$RELEASE"
    step fetch wf fetch -r "$RELEASE"
    for component in $COMPONENTS; do
        step "build-$component" wf build -r "$RELEASE" "$component"
    done
    step lock wf lock -r "$RELEASE"
else
    rm -rf "$WORK/stack"
    step venv wf venv "$WORK/stack" -r "$RELEASE"
    imports() {
        # One process, as a user's would: the machine, then each module with its version.
        "$WORK/stack/bin/python" -c "import importlib, platform, sys
words = [platform.machine()]
for name in sys.argv[1:]:
    words += [name, getattr(importlib.import_module(name), '__version__', '-')]
print(*words)" $IMPORTS >"$WF/imports.txt"
    }
    step import imports
    cat "$WF/imports.txt"
fi
log "done ($PHASE); timings in $WF/timings.tsv"
