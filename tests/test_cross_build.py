"""Cross builds for real (slow): on an x86_64 host, the factory cross-compiles the NCCL stand-in
(the shipped nccl recipe) and a vLLM-style CMake extension stand-in (tests/data/cross/cmakeext.py)
for linux_aarch64 with the real nvcc, aarch64-linux-gnu-g++ as its host compiler and the cudart of
NVIDIA's aarch64 nvidia-cuda-runtime wheel (the 13.0 pin of recipes/data/cuda_wheels.toml, downloaded
once per session). The wheels must hold only AArch64 ELFs (e_machine EM_AARCH64) with native code for
12.1 and 12.0 as the factory's device-code audit judges it (`wheelfactory inspect --arch 12.1a`), and
the cross-built libnccl.so.2 must load and answer ncclGetVersion in an aarch64 program under qemu."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from packaging.utils import parse_wheel_filename

from tests.conftest import RECIPES, needs_nvcc, run_cli, scratch
from wheelfactory.cuda import audit
from wheelfactory.toolchain.toolkit import ToolkitCache, WheelToolkit, load_toolkit, unpack_wheel, unversioned_links

CROSS_RECIPES = Path(__file__).resolve().parent / "data" / "cross"
QEMU = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")

pytestmark = [
    pytest.mark.slow, needs_nvcc,
    pytest.mark.skipif(shutil.which("aarch64-linux-gnu-g++") is None,
                       reason="needs aarch64-linux-gnu-g++ (apt-get install g++-aarch64-linux-gnu; .ci/run does)"),
]


@pytest.fixture(scope="session")
def aarch64_cuda(tmp_path_factory) -> Path:
    """The target's CUDA libraries: NVIDIA's aarch64 nvidia-cuda-runtime wheel of the 13.0 pins,
    downloaded hash-checked into the session's toolkit directory and laid out as a toolkit's lib64/."""
    pins = load_toolkit(RECIPES / "data" / "cuda_wheels.toml", "13.0", "linux_aarch64")
    pin = pins.pin("nvidia-cuda-runtime")
    assert pin is not None
    cache = ToolkitCache(Path(os.environ["WHEELFACTORY_TOOLKITS_DIR"]))
    started = time.monotonic()
    [wheel] = cache.fetch(WheelToolkit("13.0", "aarch64", (pin,)))
    print(f"\naarch64 {pin.name}=={pin.version}: {wheel.stat().st_size / 1e6:.1f} MB, "
          f"{time.monotonic() - started:.1f} s to download (0 when cached)")
    root = tmp_path_factory.mktemp("aarch64-cuda")
    unpack_wheel(wheel, root)
    for link, target in unversioned_links(p.name for p in (root / "lib64").iterdir()).items():
        (root / "lib64" / link).symlink_to(target)
    return root


@pytest.fixture(scope="module")
def cross_built(tmp_path_factory, aarch64_cuda):
    """One cross build of both stand-ins, with this host's nvcc (--system-cuda)."""
    with scratch(tmp_path_factory, "cross-build") as tmp:
        started = time.monotonic()
        r = run_cli("--recipes-dir", str(CROSS_RECIPES), "--cache-dir", str(tmp / "cache"),
                    "--wheelhouse", str(tmp / "wheelhouse"), "build", "--release", "cross-standins", "--cross",
                    "--system-cuda", "--target-cuda", str(aarch64_cuda))
        print(f"\ncross build of both stand-ins: {time.monotonic() - started:.1f} s")
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        yield tmp, r


def _wheels(wheelhouse: Path) -> dict[str, Path]:
    return {str(parse_wheel_filename(w.name)[0]): w for w in wheelhouse.glob("*.whl")}


def _elf(zf: zipfile.ZipFile, name: str) -> ELFFile:
    return ELFFile(io.BytesIO(zf.read(name)))


def _elf_machines(wheel: Path) -> dict[str, str]:
    """e_machine of every ELF file in a wheel, by member name."""
    with zipfile.ZipFile(wheel) as zf:
        return {name: _elf(zf, name).header["e_machine"] for name in zf.namelist()
                if zf.read(name)[:4] == b"\x7fELF"}


def test_cross_built_wheels_are_aarch64_with_native_12x_code(cross_built):
    tmp, r = cross_built
    wheels = _wheels(tmp / "wheelhouse")
    assert set(wheels) == {"nvidia-nccl-cu13", "cmake-ext-standin"}
    for name, wheel in wheels.items():
        tags = parse_wheel_filename(wheel.name)[3]
        assert {t.platform.rsplit("_", 1)[-1] for t in tags} == {"aarch64"}, wheel.name
        machines = _elf_machines(wheel)
        assert machines, f"{wheel.name} holds no ELF"
        assert set(machines.values()) == {"EM_AARCH64"}, machines
        # The factory's device-code audit, as `wheelfactory inspect --arch 12.1a --arch 12.0` runs it
        # (the release's arch list: one alone would call the other's code foreign).
        a = audit.audit_wheel(wheel)
        verdict = audit.judge(a, ["12.1a", "12.0"]).to_json()
        assert verdict["ok"], (name, verdict)
        assert {o["devices"]["12.1"] for o in verdict["objects"].values()} == {"native"}, verdict
        assert {o["devices"]["12.0"] for o in verdict["objects"].values()} == {"native"}, verdict
        sass = {arch for obj in a.objects for arch in obj.sizes if arch.startswith("sm_")}
        assert {"sm_120"} <= sass and sass & {"sm_121", "sm_121a"}, (name, sass)
    plan_lines = run_cli("--recipes-dir", str(CROSS_RECIPES), "--cache-dir", str(tmp / "cache"), "--wheelhouse",
                         str(tmp / "wheelhouse"), "plan", "--release", "cross-standins", "--cross", "--system-cuda",
                         "--target-cuda", str(tmp)).stdout
    # Both cached now, both cross steps.
    assert [line.split()[1:4] for line in plan_lines.splitlines() if line[:3].strip().rstrip(".").isdigit()] == \
        [["cached", "cross", "nccl"], ["cached", "cross", "cmakeext"]]


def test_the_cmake_extension_linked_the_targets_cudart(cross_built):
    tmp, _ = cross_built
    wheel = _wheels(tmp / "wheelhouse")["cmake-ext-standin"]
    with zipfile.ZipFile(wheel) as zf:
        elf = _elf(zf, "standin_ext/_C.abi3.so")
        needed = {t.needed for t in elf.get_section_by_name(".dynamic").iter_tags() if t.entry.d_tag == "DT_NEEDED"}
    assert "libcudart.so.13" in needed
    log = next((tmp / "cache" / "logs").glob("cmakeext-*.log")).read_text()
    assert "host compiler /usr/bin/aarch64-linux-gnu-g++" in log
    assert "/cross-cuda/targets/aarch64-linux/lib/libcudart.so" in log


@pytest.mark.skipif(QEMU is None, reason="needs qemu-user-static (aarch64 emulation)")
def test_cross_built_nccl_loads_under_emulation(cross_built, tmp_path):
    tmp, _ = cross_built
    wheel = _wheels(tmp / "wheelhouse")["nvidia-nccl-cu13"]
    with zipfile.ZipFile(wheel) as zf:
        zf.extract("nvidia/nccl/lib/libnccl.so.2", tmp_path)
    program = tmp_path / "load.c"
    program.write_text('#include <dlfcn.h>\n#include <stdio.h>\nint main(int c, char** v) {\n'
                       '  void* h = dlopen(v[1], RTLD_NOW); if (!h) { puts(dlerror()); return 2; }\n'
                       '  int (*get)(int*) = (int (*)(int*))dlsym(h, "ncclGetVersion"); int n = 0;\n'
                       '  if (!get || get(&n) != 0) return 3; printf("%d\\n", n); return 0; }\n')
    subprocess.run(["aarch64-linux-gnu-gcc", "-o", tmp_path / "load", program, "-ldl"], check=True)
    r = subprocess.run([QEMU, tmp_path / "load", tmp_path / "nvidia/nccl/lib/libnccl.so.2"], capture_output=True,
                       text=True, env=dict(os.environ, QEMU_LD_PREFIX="/usr/aarch64-linux-gnu"), timeout=120)
    assert (r.returncode, r.stdout.strip()) == (0, "22902"), r.stdout + r.stderr
