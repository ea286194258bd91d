#!/usr/bin/env bash
# mmdebstrap's extract hook for .ci/arm64-env.sh: ROOT holds Debian's arm64 packages unpacked, and
# their .debs are still in ROOT/var/cache/apt/archives. Nothing here runs an arm64 program: it does,
# on the host, the part of what the packages' maintainer scripts and dpkg would have done that the
# machine needs:
#
#   - dpkg's database: each package recorded as installed (status, file list, md5sums), so that apt
#     in an image built on this base (the assembler's system-library RUN) installs only what is
#     missing, instead of every dependency again with its maintainer scripts under qemu
#   - /etc/passwd and /etc/group from base-passwd's masters (its preinst copies them), their shadows
#   - the alternatives links the builds call: cc and c++ (gcc's and g++'s postinst), awk (mawk's),
#     which (debianutils')
#
# Not done, on purpose: Python's byte-compilation (modules compile on first import) and
# update-ca-certificates (the image gets the host's CA bundle).
set -euo pipefail

ROOT=${1:?usage: arm64-extracted.sh ROOT}
archives=$ROOT/var/cache/apt/archives
status=$ROOT/var/lib/dpkg/status
info=$ROOT/var/lib/dpkg/info
mkdir -p "$info"

shopt -s nullglob
debs=("$archives"/*.deb)
if ((${#debs[@]} == 0)); then
    echo "arm64-extracted.sh: no .deb in $archives (run as mmdebstrap's --extract-hook)" >&2
    exit 1
fi
for deb in "${debs[@]}"; do
    control=$(dpkg-deb -f "$deb")
    pkg=$(sed -n 's/^Package: //p' <<<"$control")
    # Already recorded (mmdebstrap's merged-usr hook records its own usr-is-merged): one stanza each.
    if grep -qx "Package: $pkg" "$status"; then
        continue
    fi
    # dpkg names a Multi-Arch: same package's files pkg:arch (several architectures may hold it).
    name=$pkg
    if grep -qx 'Multi-Arch: same' <<<"$control"; then
        name=$pkg:$(sed -n 's/^Architecture: //p' <<<"$control")
    fi
    # The stanza as dpkg writes it: Package, then Status, then the rest of the control file.
    {
        sed -n '1{/^Package: /p}' <<<"$control"
        echo "Status: install ok installed"
        sed '1{/^Package: /d}' <<<"$control"
        echo
    } >>"$status"
    # The file list dpkg keeps (paths as installed: "./usr/bin/x" -> "/usr/bin/x", "./" -> "/.").
    dpkg-deb --fsys-tarfile "$deb" | tar -t | sed -e 's|^\./$|/.|' -e 's|^\.||' -e 's|/$||' >"$info/$name.list"
    # ... and the files' checksums (dpkg --audit asks for them; debsums reads them).
    dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./md5sums >"$info/$name.md5sums" 2>/dev/null || rm -f "$info/$name.md5sums"
done
echo "arm64-extracted.sh: $(grep -c '^Package: ' "$status") packages recorded in dpkg's status" >&2

for f in passwd group; do
    [[ -e $ROOT/etc/$f ]] || install -D -m 644 "$ROOT/usr/share/base-passwd/$f.master" "$ROOT/etc/$f"
done
# base-passwd ships no shadow masters: an entry per user with a locked password, as shadowconfig makes.
if [[ ! -e $ROOT/etc/shadow ]]; then
    cut -d: -f1 "$ROOT/etc/passwd" | sed 's/$/:*:19000:0:99999:7:::/' >"$ROOT/etc/shadow"
    chmod 640 "$ROOT/etc/shadow"
fi
if [[ ! -e $ROOT/etc/gshadow ]]; then
    cut -d: -f1 "$ROOT/etc/group" | sed 's/$/:*::/' >"$ROOT/etc/gshadow"
    chmod 640 "$ROOT/etc/gshadow"
fi

# link name -> target, through /etc/alternatives as update-alternatives makes them (when the target
# was unpacked).
alternative() {
    local link=$1 name=$2 target=$3
    [[ -e $ROOT$target ]] || return 0
    mkdir -p "$ROOT/etc/alternatives"
    ln -sfn "$target" "$ROOT/etc/alternatives/$name"
    [[ -e $ROOT$link || -L $ROOT$link ]] || ln -s "/etc/alternatives/$name" "$ROOT$link"
}
alternative /usr/bin/cc cc /usr/bin/gcc
alternative /usr/bin/c++ c++ /usr/bin/g++
alternative /usr/bin/awk awk /usr/bin/mawk
alternative /usr/bin/which which /usr/bin/which.debianutils
