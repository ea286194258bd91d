#!/usr/bin/env bash
# Regenerates the tiny ELF stand-ins of the ELF-machine tests: one C function, no libc, built for
# each machine by Debian's compilers (gcc and gcc-aarch64-linux-gnu), stripped. Not upstream code.
set -euo pipefail
cd "$(dirname "$0")"
src=$(mktemp --suffix=.c)
trap 'rm -f "$src"' EXIT
echo 'int wf_answer(void) { return 42; }' >"$src"
gcc -shared -nostdlib -fPIC -Os -s -Wl,--build-id=none,-z,max-page-size=4096,-z,noseparate-code -o tiny-x86_64.so "$src"
aarch64-linux-gnu-gcc -shared -nostdlib -fPIC -Os -s -Wl,--build-id=none,-z,max-page-size=4096,-z,noseparate-code -o tiny-aarch64.so "$src"
