#!/usr/bin/env bash
# Idempotent local Docker engine setup for wheelfactory CI/dev boxes
# (Debian 12, root, no Docker Hub access).
#
#   1. installs docker.io (dockerd 20.10 + /usr/bin/docker) and debootstrap
#   2. starts dockerd in the background unless `docker info` already answers
#   3. builds the offline base image local/debian-py:bookworm via debootstrap
#
# Safe to run repeatedly. Always use /usr/bin/docker (the docker on PATH may be
# a different client without BuildKit/buildx).
set -euo pipefail

DOCKER=/usr/bin/docker
DOCKERD=/usr/sbin/dockerd   # docker.io puts the daemon in sbin
BASE_IMAGE=${BASE_IMAGE:-local/debian-py:bookworm}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
INCLUDE=${INCLUDE:-python3,python3-venv,python3-pip}
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
WAIT_S=${WAIT_S:-60}

log() { printf '[docker-engine +%ss] %s\n' "$SECONDS" "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    log "must run as root"; exit 1
fi

# --- (a) packages ----------------------------------------------------------
missing=()
[[ -x $DOCKERD && -x $DOCKER ]] || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    log "packages present"
fi

# --- (b) daemon ------------------------------------------------------------
if $DOCKER info >/dev/null 2>&1; then
    log "dockerd already running"
else
    # A stale pidfile from a dead daemon makes dockerd refuse to start.
    if [[ -f /var/run/docker.pid ]] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
        rm -f /var/run/docker.pid
    fi
    if ! pgrep -x dockerd >/dev/null 2>&1; then
        log "starting dockerd (log: $DOCKERD_LOG)"
        setsid nohup "$DOCKERD" --iptables=false --ip6tables=false --bridge=none \
            >"$DOCKERD_LOG" 2>&1 </dev/null &
    else
        log "dockerd process exists but not answering yet; waiting"
    fi
    for ((i = 0; i < WAIT_S; i++)); do
        $DOCKER info >/dev/null 2>&1 && break
        ((i < 3)) || pgrep -x dockerd >/dev/null || break  # daemon died
        sleep 1
    done
    if ! $DOCKER info >/dev/null 2>&1; then
        log "dockerd did not answer within ${WAIT_S}s; last log lines:"
        tail -n 20 "$DOCKERD_LOG" >&2 || true
        exit 1
    fi
    log "dockerd ready after ~${i}s"
fi

# --- (c) base image --------------------------------------------------------
if $DOCKER image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "base image $BASE_IMAGE present"
else
    log "building $BASE_IMAGE (debootstrap $SUITE, include=$INCLUDE)"
    rootfs=$(mktemp -d /tmp/debian-py-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$rootfs" "$MIRROR" >/dev/null
    # Slim down: apt lists and caches are not needed in the image.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
           "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log
    tar -C "$rootfs" --numeric-owner -c . | $DOCKER import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        --message "debootstrap --variant=minbase --include=$INCLUDE $SUITE" \
        - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    log "built $BASE_IMAGE ($($DOCKER image inspect -f '{{.Size}}' "$BASE_IMAGE") bytes)"
fi
log "ok: $($DOCKER version -f 'server {{.Server.Version}}, API {{.Server.APIVersion}}')"
