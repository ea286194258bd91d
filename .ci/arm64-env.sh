#!/usr/bin/env bash
# Idempotent emulated aarch64 build machine on an x86_64 Debian 12 host (root, no Docker Hub):
#
#   1. installs qemu-user-static, binfmt-support and mmdebstrap (or debootstrap)
#   2. mounts binfmt_misc and enables qemu-aarch64 (flag F: works inside containers and chroots)
#   3. makes an arm64 rootfs from Debian's packages (python3 + what the factory's builds use)
#   4. builds the arm64 base image local/debian-py-arm64:bookworm from it: FROM scratch + ADD rootfs.tar,
#      built with --platform linux/arm64 so the image is labelled arm64 (`docker import --platform`
#      on the 20.10 engine labels it amd64, and BuildKit then tries to pull it from a registry)
#
# The rootfs (ARM64_BOOTSTRAP):
#   extract      (default) `mmdebstrap --variant=extract`: apt resolves and downloads on the host and the
#                packages are only unpacked, so nothing runs under qemu; what their maintainer scripts
#                would have done and the machine needs is done here instead (dpkg's database, so apt
#                works in images built on it; users and groups; the compilers' alternatives links;
#                ld.so.cache). About half a minute where debootstrap's second stage under qemu took
#                15-30 min on a loaded 2-core host (bench/README.md, "aarch64 under emulation").
#   debootstrap  `debootstrap --arch=arm64 --variant=minbase`: every maintainer script and Python's
#                byte-compilation run under qemu.
#
# Needs the engine of .ci/docker-engine.sh. Safe to run repeatedly: each part is skipped when done.
# ARM64_ROOTFS=DIR keeps the rootfs there too (for `chroot DIR`); by default it is removed once imaged.
set -euo pipefail

DOCKER=/usr/bin/docker
IMAGE=${ARM64_BASE_IMAGE:-local/debian-py-arm64:bookworm}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
# python3-dev: the headers pip needs for sdists with C parts; make/gcc/g++/binutils/git/patch:
# what the factory's build steps call; ca-certificates: PyPI over HTTPS; patchelf: wheel repair.
INCLUDE=${ARM64_INCLUDE:-python3,python3-venv,python3-pip,python3-dev,make,gcc,g++,binutils,git,patch,ca-certificates,patchelf,xz-utils,zstd}
ROOTFS=${ARM64_ROOTFS:-}
BOOTSTRAP=${ARM64_BOOTSTRAP:-extract}
case $BOOTSTRAP in
    extract) BOOTSTRAP_TOOL=mmdebstrap ;;
    debootstrap) BOOTSTRAP_TOOL=debootstrap ;;
    *) printf 'ARM64_BOOTSTRAP=%s: expected extract or debootstrap\n' "$BOOTSTRAP" >&2; exit 2 ;;
esac

log() { printf '[arm64-env +%ss] %s\n' "$SECONDS" "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    log "must run as root"; exit 1
fi

# --- (a) packages ----------------------------------------------------------
missing=()
[[ -x /usr/bin/qemu-aarch64-static ]] || missing+=(qemu-user-static)
command -v update-binfmts >/dev/null 2>&1 || missing+=(binfmt-support)
command -v "$BOOTSTRAP_TOOL" >/dev/null 2>&1 || missing+=("$BOOTSTRAP_TOOL")
if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    log "packages present"
fi

# --- (b) binfmt ------------------------------------------------------------
# A fresh machine has binfmt_misc unmounted; update-binfmts then registers nothing.
if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
    log "mounting binfmt_misc"
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
entry=/proc/sys/fs/binfmt_misc/qemu-aarch64
if [[ ! -e $entry ]] || ! grep -qx enabled "$entry"; then
    log "enabling qemu-aarch64"
    update-binfmts --enable qemu-aarch64
fi
flags=$(sed -n 's/^flags: //p' "$entry")
if [[ $flags != *F* ]]; then
    # Without F the interpreter is looked up inside the container's root, where it is not.
    log "qemu-aarch64 is registered without the F flag ($flags): containers cannot run aarch64 programs"
    exit 1
fi
log "qemu-aarch64 registered (flags $flags)"

# --- (c) rootfs + base image -----------------------------------------------
# Bumped when the image's recipe below changes: an image with another value is built again.
RECIPE_VERSION=3-$BOOTSTRAP
have=$($DOCKER image inspect -f '{{index .Config.Labels "dev.wheelfactory.arm64-env"}}' "$IMAGE" 2>/dev/null || true)
if [[ $have == "$RECIPE_VERSION" ]] && [[ -z $ROOTFS || -x $ROOTFS/usr/bin/python3 ]]; then
    log "base image $IMAGE present"
else
    keep=1
    if [[ -z $ROOTFS ]]; then
        ROOTFS=$(mktemp -d /tmp/debian-arm64-rootfs.XXXXXX)
        keep=0
    fi
    ctx=$(mktemp -d /tmp/debian-arm64-ctx.XXXXXX)
    trap 'rm -rf "$ctx"; ((keep)) || rm -rf "$ROOTFS"' EXIT
    if [[ ! -x $ROOTFS/usr/bin/python3 ]]; then
        if [[ $BOOTSTRAP == extract ]]; then
            log "mmdebstrap --variant=extract --architectures=arm64 $SUITE into $ROOTFS (include=$INCLUDE; nothing runs under qemu)"
            # ?essential and apt: debootstrap's minbase. extract installs only what --include names (and
            # its dependencies), not Debian's essential set (coreutils, bash, dpkg, ...) that every
            # package assumes, nor apt (the assembler's system-library RUN calls apt-get).
            # The extract hook runs while the downloaded .debs are still there.
            mmdebstrap --quiet --variant=extract --architectures=arm64 \
                --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
                --include='?essential' --include=apt --include="$INCLUDE" \
                --extract-hook="bash $(realpath "$(dirname "$0")")/arm64-extracted.sh \"\$1\"" \
                "$SUITE" "$ROOTFS" "$MIRROR"
            # The libraries' cache, as libc-bin's trigger would have made it: the image's own
            # ldconfig, one short program under qemu.
            chroot "$ROOTFS" /sbin/ldconfig
        else
            log "debootstrap --arch=arm64 $SUITE into $ROOTFS (include=$INCLUDE; second stage runs under qemu)"
            debootstrap --arch=arm64 --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOTFS" "$MIRROR" >/dev/null
        fi
        rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
               "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/log/*.log
        # The host's resolver, so a chroot reaches PyPI (a container gets its own from the engine).
        cp -L /etc/resolv.conf "$ROOTFS"/etc/resolv.conf 2>/dev/null || true
        log "rootfs ready: $(du -sh "$ROOTFS" | cut -f1)"
    fi
    [[ $(file -b "$ROOTFS"/usr/bin/python3.* 2>/dev/null || true) != *x86-64* ]] || {
        log "$ROOTFS holds x86_64 binaries, not arm64"; exit 1; }
    tar -C "$ROOTFS" --numeric-owner -cf "$ctx"/rootfs.tar .
    # The host's trust store (Debian's CAs plus any local one, e.g. a TLS-intercepting proxy's): the
    # machine reaches PyPI the way the host does. pip, requests and uv each bring their own CA list
    # unless told to use the system's, hence the variables.
    cp /etc/ssl/certs/ca-certificates.crt "$ctx"/ca-certificates.crt
    cat >"$ctx"/Dockerfile <<DOCKERFILE
FROM scratch
ADD rootfs.tar /
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \\
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt \\
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
LABEL dev.wheelfactory.arm64-env=$RECIPE_VERSION
CMD ["/bin/bash"]
DOCKERFILE
    log "building $IMAGE"
    DOCKER_BUILDKIT=1 $DOCKER build -q --platform linux/arm64 -t "$IMAGE" "$ctx" >/dev/null
    log "built $IMAGE ($($DOCKER image inspect -f '{{.Os}}/{{.Architecture}} {{.Size}}' "$IMAGE") bytes)"
fi

# --- (d) check -------------------------------------------------------------
arch=$($DOCKER run --rm --platform linux/arm64 --network none "$IMAGE" uname -m)
if [[ $arch != aarch64 ]]; then
    log "$IMAGE runs as $arch, not aarch64"; exit 1
fi
log "ok: $IMAGE runs aarch64 under emulation"
