#!/bin/sh
# Rebuild the fixtures of tests/test_nccl_closure.py (x86_64 gcc): two NCCL stand-ins and a user.
set -eu
cd "$(dirname "$0")"
gcc -shared -fPIC -O1 -s -Wl,-soname,libnccl.so.2 -o libnccl-new.so.2 nccl.c
gcc -shared -fPIC -O1 -s -DOLD -Wl,-soname,libnccl.so.2 -o libnccl-old.so.2 nccl.c
ln -sf libnccl-new.so.2 libnccl.so.2
gcc -shared -fPIC -O1 -s -Wl,-rpath,'$ORIGIN' -o libuser.so user.c -L. -l:libnccl.so.2
rm libnccl.so.2
