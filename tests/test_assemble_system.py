"""System libraries per package, variant sets in the closure check, and `images --no-build` without a lock."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from assemble.bases import load_bases
from assemble.cli import images
from assemble.closure import ClosureReport, Finding, accept_variants, check_tree, host_libraries
from assemble.syslibs import load_system_libraries, needed_system_packages, variant_sets
from wheelfactory.core.errors import InputError

from .test_assemble_bad_input import setup, write_lock  # noqa: F401  (setup is a fixture)
from .test_assemble_closure import CONF, LIBC, LIBDIR, LIBZ, make_tree

TORCHCODEC = re.compile(r"/torchcodec/libtorchcodec_[a-z_]+?(\d+)\.so$")
LIBSSL = LIBDIR / "libssl.so.3"  # needs libcrypto.so.3 and libc.so.6


def out_dir(factory) -> Path:
    return factory.wheelhouse_dir.parent / "out"


def run_images(factory, docker: Path, *args: str):
    return CliRunner().invoke(images, [*args, "--output-dir", str(out_dir(factory)), "--docker", str(docker)],
                              obj=factory)


# -- the data ---------------------------------------------------------------------------------

def test_torchcodec_needs_ffmpeg_from_apt_and_declares_its_variants() -> None:
    libs = load_system_libraries()["torchcodec"]
    assert libs.packages == {"debian": ("ffmpeg", "libheif1")}  # libheif1: its HEIC module links libheif.so.1
    pattern = variant_sets()["torchcodec"]
    # file names of the torchcodec 0.17.0 wheel
    site = "/opt/venv/lib/python3.12/site-packages/torchcodec"
    assert pattern.search(f"{site}/libtorchcodec_core6.so").group(1) == "6"
    assert pattern.search(f"{site}/libtorchcodec_custom_ops6.so").group(1) == "6"
    assert pattern.search(f"{site}/libtorchcodec_pybind_ops.so") is None
    assert pattern.search(f"{site}/libtorchcodec_heic.so") is None


def test_the_libraries_that_vllm_images_load_are_installed() -> None:
    # vLLM 0.33.0's lock (official wheels) holds numba, NVSHMEM and NCCL beside torchcodec
    lock = ["vllm", "numba", "nvidia-nvshmem-cu13", "nvidia-nccl-cu13", "torchcodec", "numpy"]
    got = {name: pkgs for name, _, pkgs in needed_system_packages(lock, "debian", "ubuntu:24.04")}
    assert got["numba"] == ("libtbb12",)  # numba/np/ufunc/tbbpool links libtbb.so.12
    rdma = ("libibverbs1", "ibverbs-providers", "librdmacm1")
    # NVSHMEM's ibdevx transport links libmlx5.so.1 (ibverbs-providers): the rdma-core set serves it
    assert got["nvidia-nvshmem-cu13"] == rdma and got["nvidia-nccl-cu13"] == rdma
    assert sorted(got) == ["numba", "nvidia-nccl-cu13", "nvidia-nvshmem-cu13", "torchcodec"]


def test_optional_plugins_match_the_real_layouts_and_ibdevx_is_not_one() -> None:
    _, optional = host_libraries()

    def why(path: str) -> str | None:
        return next((w for g, w in optional.items() if fnmatch.fnmatch(path, g)), None)

    site = "/opt/venv/lib/python3.12/site-packages"
    # CUDA 13 wheels (nvidia-cufile 1.15) put cuFile under nvidia/cu13/lib
    assert "rdma-core" in why(f"{site}/nvidia/cu13/lib/libcufile_rdma.so.1")
    # libcaca0's OpenGL driver, as Debian installs it (dpkg -c libcaca0 0.99.beta20-3+deb12u1)
    assert "libGLU" in why("/usr/lib/x86_64-linux-gnu/caca/libgl_plugin.so.0.0.0")
    assert why("/usr/lib/x86_64-linux-gnu/caca/libx11_plugin.so.0.0.0") is None
    assert why(f"{site}/nvidia/nvshmem/lib/nvshmem_transport_ibdevx.so.3") is None
    assert why(f"{site}/nvidia/cu13/lib/libcufile.so.0") is None


def test_every_known_base_has_a_family_with_names() -> None:
    for ref, base in load_bases().items():
        assert base.family == "debian", ref
        assert needed_system_packages(["torchcodec", "numpy"], base.family, ref)[0][2] == ("ffmpeg", "libheif1")


def test_a_base_without_names_for_a_needed_package_is_refused() -> None:
    with pytest.raises(InputError, match="torchcodec needs system libraries .* base example/alpine:3 "
                                         r"\(family alpine\)"):
        needed_system_packages(["torchcodec"], "alpine", "example/alpine:3")
    assert needed_system_packages(["numpy"], "alpine", "example/alpine:3") == []


def test_bad_data_names_the_key() -> None:
    with pytest.raises(InputError, match=r"\[packages.x\]: unknown key\(s\) \['apk'\]"):
        load_system_libraries({"packages": {"x": {"apk": ["y"]}}})
    with pytest.raises(InputError, match=r"\[packages.x\].variants: needs a group"):
        load_system_libraries({"packages": {"x": {"debian": ["y"], "variants": "core\\d+"}}})


# -- the Dockerfile, from a lock ----------------------------------------------------------------

def test_locked_torchcodec_gets_one_apt_layer_before_the_venv(setup) -> None:  # noqa: F811
    factory, release, docker = setup
    write_lock(factory.wheelhouse_dir, ["transformers-4.57.6-py3-none-any.whl",
                                        "torchcodec-0.17.0-py3-none-any.whl"])
    result = run_images(factory, docker, "--release", str(release), "--no-build")
    assert result.exit_code == 0, result.output
    text = (out_dir(factory) / "tiny" / "runtime.Dockerfile").read_text()
    runs = [line for line in text.splitlines() if line.startswith("RUN")]
    assert runs[0] == "RUN apt-get update \\"
    assert "apt-get install -y --no-install-recommends ffmpeg" in text
    assert text.index("ffmpeg") < text.index("-m venv") < text.index("pip install")
    assert text.count("apt-get update") == 1  # the local base provisions no Python: one apt layer only
    assert not (docker.parent / "docker-ran").exists()


def test_without_torchcodec_in_the_lock_there_is_no_apt_layer(setup) -> None:  # noqa: F811
    factory, release, docker = setup
    write_lock(factory.wheelhouse_dir, ["transformers-4.57.6-py3-none-any.whl"])
    result = run_images(factory, docker, "--release", str(release), "--no-build")
    assert result.exit_code == 0, result.output
    text = (out_dir(factory) / "tiny" / "runtime.Dockerfile").read_text()
    assert "apt-get" not in text and "ffmpeg" not in text


# -- images --no-build without a lock -----------------------------------------------------------

def test_no_build_without_a_lock_writes_a_marked_preview(setup) -> None:  # noqa: F811
    factory, release, docker = setup
    result = run_images(factory, docker, "--release", str(release), "--no-build")
    assert result.exit_code == 0, result.output
    assert "tiny: PREVIEW: no lock in" in result.output
    assert "the package list is a preview from the release pins (transformers), not a locked set" in result.output
    assert "wheelfactory lock --release tiny" in result.output
    out = out_dir(factory) / "tiny"
    text = (out / "runtime.Dockerfile").read_text()
    assert text.splitlines()[1].startswith("# PREVIEW, not buildable: no lock of the release yet.")
    assert "RUN --mount=type=bind,source=layers/stack,target=/wheels" in text
    assert "RUN --mount=type=bind,source=layers/transformers,target=/wheels" in text
    assert 'target "runtime-tiny"' in (out / "docker-bake.hcl").read_text()
    assert not (out / "context").exists()
    assert not (docker.parent / "docker-ran").exists()


def test_preview_of_a_shipped_release_lists_its_components_and_pins(setup) -> None:  # noqa: F811
    factory, _, docker = setup
    result = run_images(factory, docker, "--release", "0.33.0-t5-fast", "--no-build")
    assert result.exit_code == 0, result.output
    for name in ("torch", "torchvision", "vllm", "flashinfer-python", "nvidia-nccl-cu13", "transformers", "ray"):
        assert re.search(rf"[ (]{re.escape(name)}[,)]", result.output), name
    text = (out_dir(factory) / "0.33.0-t5-fast" / "runtime.Dockerfile").read_text()
    assert "dgx-spark-vllm:0.33.0-t5-fast" in text and "PREVIEW" in text
    assert 'dev.wheelfactory.torch_version="2.14.1"' in text


def test_a_build_without_a_lock_is_still_refused(setup) -> None:  # noqa: F811
    factory, release, docker = setup
    result = run_images(factory, docker, "--release", str(release))
    assert isinstance(result.exception, InputError)
    assert "release 'tiny' is not locked" in str(result.exception)
    assert not (out_dir(factory) / "tiny" / "runtime.Dockerfile").exists()
    assert not (docker.parent / "docker-ran").exists()


# -- variant sets in the closure check ----------------------------------------------------------

def _report(*errors: tuple[str, str]) -> ClosureReport:
    return ClosureReport(checked=10, errors=[Finding(p, n, "found nowhere in the image") for p, n in errors])


TC = "/opt/venv/lib/python3.12/site-packages/torchcodec"


def test_one_resolving_variant_accepts_the_set_and_keeps_other_errors() -> None:
    report = _report((f"{TC}/libtorchcodec_core4.so", "libavutil.so.56"),
                     (f"{TC}/libtorchcodec_custom_ops4.so", "libavutil.so.56"),
                     (f"{TC}/libtorchcodec_core7.so", "libavutil.so.59"),
                     ("/opt/venv/lib/other.so", "libfoo.so.1"))
    paths = [f"{TC}/libtorchcodec_{kind}{n}.so" for kind in ("core", "custom_ops") for n in (4, 6, 7)]
    accept_variants(report, "torchcodec", TORCHCODEC, paths + ["/opt/venv/lib/other.so"])
    assert [(e.path, e.needed) for e in report.errors] == [("/opt/venv/lib/other.so", "libfoo.so.1")]
    assert report.notes == ["torchcodec: variant 6 of 4, 6, 7 resolves; variants 4, 7 do not (2 libraries not on "
                            "the loader's search path, e.g. libavutil.so.56, libavutil.so.59) and are accepted as "
                            "unused alternatives"]


def test_no_resolving_variant_keeps_every_error() -> None:
    report = _report((f"{TC}/libtorchcodec_core4.so", "libavutil.so.56"),
                     (f"{TC}/libtorchcodec_core5.so", "libavutil.so.57"))
    accept_variants(report, "torchcodec", TORCHCODEC, [f"{TC}/libtorchcodec_core4.so", f"{TC}/libtorchcodec_core5.so"])
    assert len(report.errors) == 2 and not report.ok
    assert report.notes == ["torchcodec: none of its variants 4, 5 resolves through the loader's search path "
                            "(any one would do); its errors stand"]


def test_a_variant_missing_one_of_its_files_libraries_does_not_count() -> None:
    # core5 resolves but custom_ops5 does not: variant 5 is not usable; nor is 4
    report = _report((f"{TC}/libtorchcodec_core4.so", "libavutil.so.56"),
                     (f"{TC}/libtorchcodec_custom_ops5.so", "libavcodec.so.59"))
    paths = [f"{TC}/libtorchcodec_{kind}{n}.so" for kind in ("core", "custom_ops") for n in (4, 5)]
    accept_variants(report, "torchcodec", TORCHCODEC, paths)
    assert not report.ok and "none of its variants 4, 5" in report.notes[0]


needs_libs = pytest.mark.skipif(not all(p.exists() for p in (LIBZ, LIBC, LIBSSL, Path("/lib64/ld-linux-x86-64.so.2"))),
                                reason="needs x86_64 Debian libz, libssl, libc and ld.so")


@needs_libs
def test_check_tree_accepts_a_variant_set_with_one_resolving_member(tmp_path: Path) -> None:
    # variant 4 needs libcrypto.so.3, which the image lacks; variant 6 needs only libc
    tree = make_tree(tmp_path, {**CONF, "/usr/lib/x86_64-linux-gnu/libc.so.6": LIBC,
                                f"{TC}/libtorchcodec_core4.so": LIBSSL, f"{TC}/libtorchcodec_core6.so": LIBZ}, {})
    assert not check_tree(tree, {}, set(), {}).ok  # without the variant set: libcrypto.so.3 is an error
    report = check_tree(tree, {}, set(), {}, variants={"torchcodec": TORCHCODEC})
    assert report.ok, report.errors
    assert report.notes and report.notes[0].startswith("torchcodec: variant 6 of 4, 6 resolves")


@needs_libs
def test_check_tree_refuses_a_variant_set_with_no_resolving_member(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, {**CONF, "/usr/lib/x86_64-linux-gnu/libc.so.6": LIBC,
                                f"{TC}/libtorchcodec_core4.so": LIBSSL, f"{TC}/libtorchcodec_core5.so": LIBSSL}, {})
    report = check_tree(tree, {}, set(), {}, variants={"torchcodec": TORCHCODEC})
    assert not report.ok
    assert sorted((e.path.rsplit("/", 1)[1], e.needed) for e in report.errors) == [
        ("libtorchcodec_core4.so", "libcrypto.so.3"), ("libtorchcodec_core5.so", "libcrypto.so.3")]


# -- a variant resolves through the loader's search path only ----------------------------------

LIBCRYPTO = LIBDIR / "libcrypto.so.3"
LIBXML2 = LIBDIR / "libxml2.so.2"  # needs libicuuc.so.72, libz, liblzma, libm, libc
NVC = "/opt/venv/lib/python3.12/site-packages/PyNvVideoCodec"


def test_a_variant_whose_library_is_only_off_the_search_path_does_not_resolve() -> None:
    # variant 8's library exists in the image, but only where the loader does not look (a warning);
    # variant 6 has an error: no variant resolves, and variant 8's finding becomes an error too
    report = ClosureReport(checked=4,
                           errors=[Finding(f"{TC}/libtorchcodec_core6.so", "libavutil.so.58", "found nowhere")],
                           warnings=[Finding(f"{TC}/libtorchcodec_core8.so", "libavutil.so.60", f"only at {NVC}/x",
                                             off_path=True),
                                     Finding("/opt/venv/bin/tool", "libtorch.so", "only at /t", off_path=True)])
    accept_variants(report, "torchcodec", TORCHCODEC, [f"{TC}/libtorchcodec_core6.so", f"{TC}/libtorchcodec_core8.so"])
    assert sorted((e.path.rsplit("/", 1)[1], e.needed) for e in report.errors) == [
        ("libtorchcodec_core6.so", "libavutil.so.58"), ("libtorchcodec_core8.so", "libavutil.so.60")]
    assert "a variant counts only when the loader's search path finds its libraries" in report.errors[1].detail
    # a plain object's off-path library stays a warning
    assert [w.path for w in report.warnings] == ["/opt/venv/bin/tool"]


@needs_libs
def test_check_tree_does_not_accept_a_variant_through_another_packages_bundled_copy(tmp_path: Path) -> None:
    # variant 8 (libssl's bytes) needs libcrypto.so.3, which only PyNvVideoCodec bundles, off the
    # loader's search path; variant 4 (libxml2's) needs libraries the image lacks: the set must fail
    # (before, variant 8 had a warning only, and it passed)
    files = {**CONF, "/usr/lib/x86_64-linux-gnu/libc.so.6": LIBC, f"{TC}/libtorchcodec_core8.so": LIBSSL,
             f"{NVC}/libcrypto.so.3": LIBCRYPTO, f"{TC}/libtorchcodec_core4.so": LIBXML2}
    report = check_tree(make_tree(tmp_path, files, {}), {}, set(), {}, variants={"torchcodec": TORCHCODEC})
    assert not report.ok
    assert ("libtorchcodec_core8.so", "libcrypto.so.3") in {(e.path.rsplit("/", 1)[1], e.needed) for e in report.errors}
    assert "resolves through the loader's search path" in report.notes[0]


def test_a_variant_may_reach_its_own_files_and_a_common_library_off_the_path() -> None:
    # torchcodec 0.17.0 as installed: custom_ops<N> needs core<N> (its own variant, loaded first) and
    # libtorch.so (every variant needs it; `import torch` loads it); variant 8's FFmpeg only in
    # PyNvVideoCodec; Debian 12's FFmpeg 5 satisfies variant 5 on the search path
    torch_lib = "/opt/venv/lib/python3.11/site-packages/torch/lib/libtorch.so"
    off = [Finding(f"{TC}/libtorchcodec_custom_ops{n}.so", "libtorch.so", "off", off_path=True, elsewhere=torch_lib)
           for n in (5, 8)]
    off += [Finding(f"{TC}/libtorchcodec_custom_ops{n}.so", f"libtorchcodec_core{n}.so", "off", off_path=True,
                    elsewhere=f"{TC}/libtorchcodec_core{n}.so") for n in (5, 8)]
    off.append(Finding(f"{TC}/libtorchcodec_core8.so", "libavutil.so.60", "off", off_path=True,
                       elsewhere=f"{NVC}/libavutil.so"))
    report = ClosureReport(checked=4, warnings=list(off))
    paths = [f"{TC}/libtorchcodec_{kind}{n}.so" for kind in ("core", "custom_ops") for n in (5, 8)]
    accept_variants(report, "torchcodec", TORCHCODEC, paths)
    assert report.ok and report.notes[0].startswith("torchcodec: variant 5 of 5, 8 resolves; variants 8 do not")
    assert "libavutil.so.60" in report.notes[0]
    # variant 5's provided libraries stay warnings (they hold once torch is imported)
    assert sorted(w.needed for w in report.warnings) == ["libtorch.so", "libtorch.so", "libtorchcodec_core5.so",
                                                         "libtorchcodec_core8.so"]
    # a core<N> found only as another variant's file is no proof: variant 5 does not resolve, 6 does
    wrong = Finding(f"{TC}/libtorchcodec_custom_ops5.so", "libtorchcodec_core5.so", "off", off_path=True,
                    elsewhere=f"{TC}/libtorchcodec_core6.so")
    report = ClosureReport(checked=2, warnings=[wrong])
    accept_variants(report, "torchcodec", TORCHCODEC, [f"{TC}/libtorchcodec_custom_ops5.so",
                                                       f"{TC}/libtorchcodec_core6.so"])
    assert report.notes[0].startswith("torchcodec: variant 6 of 5, 6 resolves; variants 5 do not")
    report = ClosureReport(checked=1, errors=[Finding(f"{TC}/libtorchcodec_core6.so", "libavutil.so.58", "nowhere")],
                           warnings=[wrong])
    accept_variants(report, "torchcodec", TORCHCODEC, [f"{TC}/libtorchcodec_custom_ops5.so",
                                                       f"{TC}/libtorchcodec_core6.so"])
    assert not report.ok


@needs_libs
def test_check_tree_accepts_the_variant_once_the_loader_finds_its_library(tmp_path: Path) -> None:
    files = {**CONF, "/usr/lib/x86_64-linux-gnu/libc.so.6": LIBC, f"{TC}/libtorchcodec_core8.so": LIBSSL,
             f"{NVC}/libcrypto.so.3": LIBCRYPTO, f"{TC}/libtorchcodec_core4.so": LIBSSL}
    # the same image with the library on the loader's path: through the image's LD_LIBRARY_PATH ...
    report = check_tree(make_tree(tmp_path, files, {}), {"LD_LIBRARY_PATH": NVC}, set(), {},
                        variants={"torchcodec": TORCHCODEC})
    assert report.ok and report.notes[0].startswith("torchcodec: variant 4, 8 of 4, 8 resolves")
    # ... or installed in a system directory
    files["/usr/lib/x86_64-linux-gnu/libcrypto.so.3"] = LIBCRYPTO
    report = check_tree(make_tree(tmp_path, files, {}), {}, set(), {}, variants={"torchcodec": TORCHCODEC})
    assert report.ok and not report.warnings
