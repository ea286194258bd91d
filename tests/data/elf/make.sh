#!/usr/bin/env bash
# Regenerates the tiny ELF stand-ins of the ELF-machine and closure tests: one C function each, no
# libc, built for each machine by Debian's compilers (gcc, gcc-aarch64-linux-gnu), stripped. Not
# upstream code. Per machine M (x86_64, aarch64):
#   tiny-M.so        needs nothing
#   libwfdep-M.so    SONAME libwfdep.so.1, needs nothing
#   uses-dep-M.so    needs libwfdep.so.1
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo 'int wf_answer(void) { return 42; }' >"$tmp/answer.c"
echo 'int wf_dep(void) { return 7; }' >"$tmp/dep.c"
echo 'int wf_dep(void); int wf_uses(void) { return wf_dep() + 1; }' >"$tmp/uses.c"
flags=(-shared -nostdlib -fPIC -Os -s -Wl,--build-id=none,-z,max-page-size=4096,-z,noseparate-code)
for machine in x86_64 aarch64; do
    cc=gcc
    [[ $machine == aarch64 ]] && cc=aarch64-linux-gnu-gcc
    $cc "${flags[@]}" -o "tiny-$machine.so" "$tmp/answer.c"
    $cc "${flags[@]}" -Wl,-soname,libwfdep.so.1 -o "libwfdep-$machine.so" "$tmp/dep.c"
    ln -sf "$PWD/libwfdep-$machine.so" "$tmp/libwfdep.so"
    $cc "${flags[@]}" -o "uses-dep-$machine.so" "$tmp/uses.c" -L"$tmp" -lwfdep
done
