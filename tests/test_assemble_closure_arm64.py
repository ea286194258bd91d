"""The closure check on arm64 image trees, from the AArch64 stand-ins of tests/data/elf (make.sh):
an image's machine is its /bin/sh's, and only libraries of that machine satisfy a DT_NEEDED."""

from __future__ import annotations

from pathlib import Path

from assemble.closure import check_tree

from .test_assemble_closure import make_tree

ELF = Path(__file__).parent / "data" / "elf"
LIBDIR = "/usr/lib/aarch64-linux-gnu"
# An arm64 image: its /bin/sh is AArch64 (the stand-in needs no libc, so the tree stays tiny).
ARM_IMAGE: dict[str, Path | str] = {"/usr/bin/dash": ELF / "tiny-aarch64.so",
                                    "/etc/ld.so.conf.d/aarch64-linux-gnu.conf": f"{LIBDIR}\n",
                                    "/etc/ld.so.conf": "include /etc/ld.so.conf.d/*.conf\n"}
SH = {"/bin/sh": "/usr/bin/dash"}


def test_an_aarch64_object_finds_its_aarch64_library(tmp_path):
    tree = make_tree(tmp_path, {**ARM_IMAGE, "/opt/venv/lib/ext.so": ELF / "uses-dep-aarch64.so",
                                f"{LIBDIR}/libwfdep.so.1": ELF / "libwfdep-aarch64.so"}, SH)
    report = check_tree(tree, {}, set(), {})
    assert report.ok and not report.warnings and not report.notes
    assert report.checked == 3  # dash, ext.so, libwfdep


def test_an_x86_64_library_does_not_satisfy_an_aarch64_object(tmp_path):
    tree = make_tree(tmp_path, {**ARM_IMAGE, "/opt/venv/lib/ext.so": ELF / "uses-dep-aarch64.so",
                                f"{LIBDIR}/libwfdep.so.1": ELF / "libwfdep-x86_64.so"}, SH)
    report = check_tree(tree, {}, set(), {})
    assert [str(e) for e in report.errors] == ["/opt/venv/lib/ext.so: needs libwfdep.so.1: found nowhere in the image"]
    assert report.notes == [f"1 ELF file(s) built for another machine than the image's AArch64 (/bin/sh), not "
                            f"checked: e.g. {LIBDIR}/libwfdep.so.1 (x86-64)"]


def test_an_aarch64_library_off_the_search_path_is_a_warning(tmp_path):
    tree = make_tree(tmp_path, {**ARM_IMAGE, "/opt/venv/lib/ext.so": ELF / "uses-dep-aarch64.so",
                                "/opt/venv/lib/other/libwfdep.so.1": ELF / "libwfdep-aarch64.so"}, SH)
    report = check_tree(tree, {}, set(), {})
    assert report.ok
    assert [str(w) for w in report.warnings] == [
        "/opt/venv/lib/ext.so: needs libwfdep.so.1: only at /opt/venv/lib/other/libwfdep.so.1, off the loader's "
        "search path: works only when a library loaded earlier (e.g. by `import torch`) provides it"]


def test_an_image_is_built_for_its_locks_platform():
    from assemble.assembler import Prepared
    from assemble.docker import Docker

    prepared = Prepared(None, None, [], Path("x.Dockerfile"), Path("ctx"), {}, Path("log"),  # type: ignore[arg-type]
                        platform="linux_aarch64")
    assert prepared.oci_platform == "linux/arm64"
    docker = Docker("/usr/bin/docker")
    cmd = docker.build_command(Path("x.Dockerfile"), Path("ctx"), "r:t", {}, network="none", buildx=False,
                               platform=prepared.oci_platform)
    assert cmd == ["/usr/bin/docker", "build", "--progress=plain", "-f", "x.Dockerfile", "-t", "r:t",
                   "--platform=linux/arm64", "--network=none", "--", "ctx"]
    assert "--platform" not in " ".join(docker.build_command(Path("x"), Path("c"), "r:t", {}, None, False))
