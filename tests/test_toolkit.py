"""The build toolkit assembled from NVIDIA's CUDA wheels (wheelfactory/toolchain/toolkit.py).

Fast tests: the pins, the identity, the layout rules and the completeness check, on data and
temporary directories. Slow tests download the CUDA 13.1 wheels once per session (into the
session's shared toolkits directory, see conftest.py), assemble them, build the NCCL stand-in
and a CMake CUDA project with them, and prove the host's 13.0 toolkit is still there with
--system-cuda.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wheelfactory.cli.show import print_plan as _print_plan
from wheelfactory.core.errors import BuildError, InputError
from wheelfactory.host.facts import detect_host
from wheelfactory.pipeline.factory import Factory
from wheelfactory.toolchain.toolkit import (
    REQUIRED,
    ToolkitCache,
    WheelPin,
    check_root,
    driver_symbols,
    is_wheel_label,
    load_toolkit,
    member_destination,
    mismatch_warning,
    nvcc_version,
    parse_toolkit,
    stub_source,
    toolkits_dir,
    unversioned_links,
)

from .conftest import FIXTURES, RECIPES, SPARK, USER_TOOLKITS_DIR, needs_nvcc, run_cli, scratch

PINS = RECIPES / "data" / "cuda_wheels.toml"
# What the issue asks the toolkit to carry: the compiler, the runtime and the libraries with headers.
EXPECTED = {"nvidia-cuda-nvcc", "nvidia-nvvm", "nvidia-cuda-crt", "nvidia-cuda-cccl", "nvidia-cuda-runtime",
            "nvidia-cuda-nvrtc", "nvidia-cublas", "nvidia-cusparse", "nvidia-cusolver", "nvidia-cufft",
            "nvidia-curand", "nvidia-cuda-cupti", "nvidia-nvtx", "nvidia-nvjitlink", "nvidia-cuda-cuobjdump"}


# -- pins and identity -----------------------------------------------------------------------------

@pytest.mark.parametrize("cuda", ["13.0", "13.1.0"])
@pytest.mark.parametrize("platform", ["linux_x86_64", "linux_aarch64"])
def test_pins_cover_the_toolkit_for_each_cuda_and_machine(cuda, platform):
    tk = load_toolkit(PINS, cuda, platform)
    names = {w.name for w in tk.wheels}
    assert EXPECTED <= names
    assert {source for source in REQUIRED.values() if source.startswith("nvidia-")} <= names
    minor = ".".join(cuda.split(".")[:2])
    assert tk.pin("nvidia-cuda-nvcc").version.startswith(minor + ".")  # the compiler is the release's CUDA
    assert len({w.sha256 for w in tk.wheels}) == len(tk.wheels)


def test_each_machine_pins_its_own_files():
    x86, arm = (load_toolkit(PINS, "13.1.0", p) for p in ("linux_x86_64", "linux_aarch64"))
    assert [w.name for w in x86.wheels] == [w.name for w in arm.wheels]
    assert not {w.sha256 for w in x86.wheels} & {w.sha256 for w in arm.wheels}


def test_identity_is_the_wheel_hashes_and_nothing_else():
    tk = load_toolkit(PINS, "13.1.0", "linux_x86_64")
    assert tk.label == f"wheels:13.1.0:{tk.identity[:16]}" and is_wheel_label(tk.label)
    shuffled = dataclasses.replace(tk, wheels=tuple(reversed(tk.wheels)))
    assert shuffled.identity == tk.identity
    first = tk.wheels[0]
    changed = dataclasses.replace(tk, wheels=(WheelPin(first.name, first.version, "0" * 64),) + tk.wheels[1:])
    assert changed.identity != tk.identity
    assert load_toolkit(PINS, "13.0", "linux_x86_64").identity != tk.identity
    assert load_toolkit(PINS, "13.1.0", "linux_aarch64").identity != tk.identity


def test_a_cuda_without_pins_is_bad_input_naming_the_file_and_the_way_out():
    with pytest.raises(InputError) as e:
        load_toolkit(PINS, "12.8.1", "linux_x86_64")
    assert "cuda_wheels.toml" in str(e.value) and "12.8" in str(e.value) and "--system-cuda" in str(e.value)
    assert "13.0, 13.1" in str(e.value)


@pytest.mark.parametrize("entry, complaint", [
    ({"wheel": "nvidia-cuda-nvcc", "x86_64": "a" * 64}, "expected NAME==VERSION"),
    ({"wheel": "nvidia-cuda-nvcc==13.1.80", "x86_64": "ABC"}, "x86_64: expected the wheel's sha256"),
    ({"wheel": "nvidia-cuda-nvcc==13.1.80"}, "x86_64: expected the wheel's sha256"),
])
def test_a_malformed_pin_is_bad_input(entry, complaint):
    with pytest.raises(InputError, match=complaint):
        parse_toolkit({"13.1": {"toolkit": [entry]}}, "13.1.0", "linux_x86_64", "pins.toml")


def test_an_unknown_machine_is_bad_input():
    with pytest.raises(InputError, match="ppc64le"):
        load_toolkit(PINS, "13.1.0", "linux_ppc64le")


# -- layout ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("member, dest", [
    ("nvidia/cu13/bin/nvcc", "bin/nvcc"),
    ("nvidia/cu13/bin/crt/link.stub", "bin/crt/link.stub"),
    ("nvidia/cu13/nvvm/libdevice/libdevice.10.bc", "nvvm/libdevice/libdevice.10.bc"),
    ("nvidia/cu13/include/cusparse.h", "include/cusparse.h"),
    ("nvidia/cu13/lib/libcudart.so.13", "lib64/libcudart.so.13"),  # nvcc.profile links from lib64/
    ("nvidia/cu13/lib/cmake/cccl/cccl-config.cmake", "lib64/cmake/cccl/cccl-config.cmake"),
    ("nvidia_cuda_nvcc-13.1.80.dist-info/METADATA", "dist-info/nvidia_cuda_nvcc-13.1.80.dist-info/METADATA"),
    ("nvidia/cu13/.metadata/provenance.txt", None),
    ("nvidia/cu13/include/", None),
    ("nvidia/__init__.py", None),
])
def test_wheel_members_land_where_a_toolkit_root_has_them(member, dest):
    assert member_destination(member) == dest


def test_unversioned_links_for_linkers_and_find_library():
    files = ["libcudart.so.13", "libnvrtc.so.13", "libnvrtc-builtins.so.13.1", "libcudart_static.a",
             "libnvperf_host.so", "libnvtx3interop.so.1", "libcupti.so.13", "libcupti.so"]
    assert unversioned_links(files) == {"libcudart.so": "libcudart.so.13", "libnvrtc.so": "libnvrtc.so.13",
                                        "libnvrtc-builtins.so": "libnvrtc-builtins.so.13.1",
                                        "libnvtx3interop.so": "libnvtx3interop.so.1"}


def test_the_driver_stub_exports_declared_and_aliased_entry_points():
    header = """
    #define cuMemAlloc cuMemAlloc_v2
    #define cuMemcpy __CUDA_API_PTDS(cuMemcpy)
    CUresult CUDAAPI cuInit(unsigned int Flags);
    CUresult CUDAAPI cuMemAlloc(CUdeviceptr *dptr, size_t bytesize);
    typedef CUresult (CUDAAPI *PFN)(void);
    """
    symbols = driver_symbols([header])
    assert {"cuInit", "cuMemAlloc", "cuMemAlloc_v2"} <= set(symbols)
    assert not [s for s in symbols if not s.startswith("cu")]
    assert "void cuMemAlloc_v2(void) {}" in stub_source(symbols)


def fake_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for rel in REQUIRED:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("")
    return root


def test_a_complete_root_passes_the_check(tmp_path):
    check_root(fake_root(tmp_path))


def test_a_missing_piece_is_named_with_the_wheel_that_ships_it(tmp_path):
    root = fake_root(tmp_path)
    (root / "lib64" / "stubs" / "libcuda.so").unlink()
    (root / "lib64" / "libnvrtc.so").unlink()
    with pytest.raises(BuildError) as e:
        check_root(root)
    msg = str(e.value)
    assert "lib64/stubs/libcuda.so (the generated driver API linker stub)" in msg
    assert "lib64/libnvrtc.so (nvidia-cuda-nvrtc)" in msg
    assert "cusparse" not in msg and f"Remove {root}" in msg


def test_offline_without_the_wheels_says_to_fetch(tmp_path):
    tk = load_toolkit(PINS, "13.1.0", "linux_x86_64")
    with pytest.raises(BuildError, match=r"--offline forbids downloading; run `wheelfactory fetch`"):
        ToolkitCache(tmp_path).ensure(tk, offline=True)
    assert not ToolkitCache(tmp_path).root_of(tk).exists()


def test_toolkits_live_in_the_cache_unless_shared(tmp_path, monkeypatch):
    monkeypatch.delenv("WHEELFACTORY_TOOLKITS_DIR", raising=False)
    assert toolkits_dir(tmp_path) == tmp_path / "toolkits"
    monkeypatch.setenv("WHEELFACTORY_TOOLKITS_DIR", str(tmp_path / "shared"))
    assert toolkits_dir(tmp_path) == tmp_path / "shared"


def test_nvcc_version_is_read_from_its_banner():
    banner = "Cuda compilation tools, release 13.1, V13.1.80\nBuild cuda_13.1.r13.1/compiler.36836380_0\n"
    assert nvcc_version(banner) == "13.1.80"
    assert nvcc_version("command not found") is None


def test_mismatch_warning_only_when_the_host_differs():
    assert mismatch_warning("13.1.0", "13.1") is None
    assert "nvcc 13.0" in mismatch_warning("13.1.0", "13.0") and "13.1.0" in mismatch_warning("13.1.0", "13.0")
    assert "no nvcc" in mismatch_warning("13.1.0", "none")


# -- planning ------------------------------------------------------------------------------------------

def test_plan_keys_carry_the_wheel_toolkit_not_the_host_nvcc(tmp_path, capsys):
    rel_name = "0.15.0-t4"
    a = Factory(RECIPES, tmp_path / "wh", tmp_path / "c", host_probe=lambda: SPARK)
    other_nvcc = dataclasses.replace(SPARK, toolkit="13.0", cuda_home="/opt/cuda-13.0")
    b = Factory(RECIPES, tmp_path / "wh", tmp_path / "c", host_probe=lambda: other_nvcc)
    pa, pb = a.plan(a.release(rel_name)), b.plan(b.release(rel_name))
    assert pa.target.toolkit == load_toolkit(PINS, "13.1.0", "linux_aarch64").label
    assert pa.step("nccl").key == pb.step("nccl").key  # the host's nvcc no longer matters
    system = Factory(RECIPES, tmp_path / "wh", tmp_path / "c", host_probe=lambda: other_nvcc, system_cuda=True)
    ps = system.plan(system.release(rel_name))
    assert ps.target.toolkit == "13.0" and ps.step("nccl").key != pa.step("nccl").key
    _print_plan(pa)
    _print_plan(ps)
    out = capsys.readouterr().out
    assert "CUDA 13.1.0 (toolkit from wheels)" in out
    assert "CUDA 13.1.0 (system nvcc: 13.0)" in out
    assert "warning: --system-cuda builds with this host's nvcc 13.0" in out


def test_a_release_can_ask_for_the_system_toolkit(tmp_path):
    release = tmp_path / "r.toml"
    release.write_text("extends = '0.15.0-t4'\n[target]\nsystem_cuda = true\n")
    f = Factory(RECIPES, tmp_path / "wh", tmp_path / "c", host_probe=lambda: SPARK)
    assert f.plan(f.release(str(release))).target.toolkit == "13.1"
    release.write_text("extends = '0.15.0-t4'\n[target]\nsystem_cuda = 'yes'\n")
    with pytest.raises(InputError, match=r"\[target\].system_cuda: expected true or false"):
        f.release(str(release))


# -- slow: the real wheels ---------------------------------------------------------------------------

RELEASE_131 = """
[target]
python = "{py}"
cuda = "13.1.0"
cuda_arch_list = ["12.1a"]
platform = "linux_x86_64"
[components.nccl]
version = "2.29.2-1"
source = {{ path = "{src}" }}
"""


def host_nvcc_minor() -> str:
    return detect_host().toolkit


@pytest.fixture(scope="module")
def fetched(tmp_path_factory, shared_toolkits):
    """`wheelfactory fetch` of a CUDA 13.1 release: downloads and assembles the 13.1 toolkit. Only
    this module uses 13.1, so its ~3.3 GB go when the module is done (unless WHEELFACTORY_TOOLKITS_DIR
    was yours before the session: then it lands there to stay)."""
    with scratch(tmp_path_factory, "tk131") as tmp, pytest.MonkeyPatch.context() as mp:
        toolkits = shared_toolkits if USER_TOOLKITS_DIR else tmp / "toolkits"
        mp.setenv("WHEELFACTORY_TOOLKITS_DIR", str(toolkits))
        release = tmp / "nccl-131.toml"
        release.write_text(RELEASE_131.format(py=f"{sys.version_info.major}.{sys.version_info.minor}",
                                              src=FIXTURES / "nccl-standin"))
        common = ["--wheelhouse", str(tmp / "wh"), "--cache-dir", str(tmp / "cache")]
        r = run_cli(*common, "fetch", "-r", str(release), "nccl")
        assert r.returncode == 0, r.stderr
        tk = load_toolkit(PINS, "13.1.0", detect_host().platform)
        root = ToolkitCache(toolkits).root_of(tk)
        assert (root / ".wf-toolkit.json").exists()
        yield tmp, common, release, root


@pytest.mark.slow
@needs_nvcc
def test_nccl_standin_builds_with_nvcc_13_1_from_wheels_and_the_manifest_says_so(fetched):
    tmp, common, release, root = fetched
    r = run_cli(*common, "plan", "-r", str(release), "nccl")
    assert "CUDA 13.1.0 (toolkit from wheels)" in r.stdout
    r = run_cli(*common, "build", "-r", str(release), "nccl", "--offline")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp / "wh" / "manifest.json").read_text())["wheels"]
    (entry,) = manifest.values()
    assert entry["nvcc"].startswith("13.1.")
    assert entry["inputs"]["target"]["toolkit"].startswith("wheels:13.1.0:")
    log = Path(entry["log"]).read_text()
    assert f"nvcc {entry['nvcc']} at {root} (toolkit from wheels)" in log
    assert f"CUDA_HOME={root}" in log
    # The SASS is for sm_121, read by the toolkit's own cuobjdump.
    wheel = tmp / "wh" / next(iter(manifest))
    unpacked = tmp / "unpacked"
    shutil.unpack_archive(wheel, unpacked, "zip")
    out = subprocess.run([root / "bin" / "cuobjdump", "--list-elf", unpacked / "nvidia/nccl/lib/libnccl.so.2"],
                         capture_output=True, text=True, check=True).stdout
    assert "sm_121" in out


@pytest.mark.slow
@needs_nvcc
def test_system_cuda_builds_with_the_host_nvcc_and_warns_about_the_mismatch(fetched, tmp_path):
    _, _, release, _ = fetched
    host = host_nvcc_minor()
    if host == "13.1":
        pytest.skip("the host's nvcc is the release's CUDA: no mismatch to show")
    common = ["--wheelhouse", str(tmp_path / "wh"), "--cache-dir", str(tmp_path / "cache")]
    r = run_cli(*common, "plan", "-r", str(release), "nccl", "--system-cuda")
    assert f"CUDA 13.1.0 (system nvcc: {host})" in r.stdout
    r = run_cli(*common, "build", "-r", str(release), "nccl", "--system-cuda")
    assert r.returncode == 0, r.stderr
    warning = f"warning: --system-cuda builds with this host's nvcc {host}, but the release says CUDA 13.1.0"
    assert warning in r.stderr
    assert r.stderr.index(warning) < r.stderr.index("nccl 2.29.2-1: build")  # before the build starts
    (entry,) = json.loads((tmp_path / "wh" / "manifest.json").read_text())["wheels"].values()
    assert entry["nvcc"].startswith(host + ".") and entry["inputs"]["target"]["toolkit"] == host


def r_configure_output(build: Path) -> str:
    return (build / "configure.log").read_text()


def cmake_build(root: Path, build: Path) -> subprocess.CompletedProcess[str]:
    """Configure and build the CMake stand-in with only the toolkit root to find CUDA in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUDA")}
    env |= {"PATH": f"{root}/bin:/usr/bin:/bin", "CUDACXX": f"{root}/bin/nvcc", "CUDAToolkit_ROOT": str(root)}
    r = subprocess.run(["cmake", "-S", FIXTURES / "cmake-cuda-standin", "-B", build,
                        "-DCMAKE_CUDA_ARCHITECTURES=121"], env=env, capture_output=True, text=True)
    build.mkdir(parents=True, exist_ok=True)
    (build / "configure.log").write_text(r.stdout + r.stderr)
    if r.returncode == 0:
        r = subprocess.run(["cmake", "--build", build], env=env, capture_output=True, text=True)
    return r


needs_cmake = pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")


@pytest.mark.slow
@needs_cmake
def test_a_cmake_cuda_project_configures_and_builds_against_the_wheel_toolkit(fetched, tmp_path):
    *_, root = fetched
    r = cmake_build(root, tmp_path / "b")
    assert r.returncode == 0, r.stdout + r.stderr
    cache = (tmp_path / "b" / "CMakeCache.txt").read_text()
    # Found in the root (through lib/ -> lib64/ or lib64/ itself), never on the host.
    assert re.search(rf"^CUDA_cuda_driver_LIBRARY:FILEPATH={root}/lib(64)?/stubs/libcuda\.so$", cache, re.M)
    assert re.search(rf"^CUDA_nvrtc_LIBRARY:FILEPATH={root}/lib(64)?/libnvrtc\.so$", cache, re.M)
    assert "The CUDA compiler identification is NVIDIA 13.1." in r_configure_output(tmp_path / "b")
    lib = tmp_path / "b" / "libstandin_ops.so"
    needed = subprocess.run(["readelf", "-d", lib], capture_output=True, text=True, check=True).stdout
    for soname in ("libcuda.so.1", "libnvrtc.so.13", "libcusparse.so.12", "libcublas.so.13"):
        assert f"[{soname}]" in needed
    elf = subprocess.run([root / "bin" / "cuobjdump", "--list-elf", lib], capture_output=True, text=True).stdout
    assert "sm_121" in elf


@pytest.mark.slow
@needs_cmake
@pytest.mark.parametrize("piece", ["lib64/stubs/libcuda.so", "lib64/libnvrtc.so"])
def test_a_toolkit_missing_a_piece_is_named_and_cmake_fails_on_it(fetched, tmp_path, piece):
    *_, root = fetched
    # A copy made of links to the shared root, less one piece: the shared root stays whole.
    broken = tmp_path / "broken"
    broken.mkdir()
    for top in root.iterdir():
        if top.name != "lib64":
            # lib -> lib64 stays relative, so it leads to the broken copy's lib64
            (broken / top.name).symlink_to(os.readlink(top) if top.is_symlink() else top)
    for path in (root / "lib64").rglob("*"):
        rel = path.relative_to(root)
        if path.is_dir() and not path.is_symlink():
            (broken / rel).mkdir(parents=True, exist_ok=True)
        elif rel.as_posix() != piece:
            (broken / rel).parent.mkdir(parents=True, exist_ok=True)
            (broken / rel).symlink_to(path)
    with pytest.raises(BuildError, match=piece.replace(".", r"\.")):
        check_root(broken)
    r = cmake_build(broken, tmp_path / "b")
    assert r.returncode != 0
    target = {"lib64/stubs/libcuda.so": "CUDA::cuda_driver", "lib64/libnvrtc.so": "CUDA::nvrtc"}[piece]
    assert f"the CUDA toolkit provides no {target} target" in r.stdout + r.stderr
