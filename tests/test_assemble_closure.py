"""The closure check on small image trees built from this machine's real ELF libraries."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from assemble.closure import ImageTree, check_tree, host_libraries

LIBDIR = Path("/usr/lib/x86_64-linux-gnu")
LIBZ = LIBDIR / "libz.so.1"
LIBC = LIBDIR / "libc.so.6"
pytestmark = pytest.mark.skipif(not all(p.exists() for p in (LIBZ, LIBC, Path("/lib64/ld-linux-x86-64.so.2"))),
                                reason="needs x86_64 Debian libz, libc and ld.so")


def make_tree(tmp_path: Path, files: dict[str, Path | str], links: dict[str, str]) -> ImageTree:
    """A tar with real files (Path) or text (str) at image paths, and symbolic links."""
    path = tmp_path / "image.tar"
    with tarfile.open(path, "w") as tar:
        for name, src in files.items():
            data = Path(os.path.realpath(src)).read_bytes() if isinstance(src, Path) else src.encode()
            info = tarfile.TarInfo("." + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo("." + name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return ImageTree(tarfile.open(path))


LDSO = Path("/lib64/ld-linux-x86-64.so.2")
# ld.so.conf with an include, and the dynamic loader libc itself needs
CONF: dict[str, Path | str] = {"/etc/ld.so.conf": "include /etc/ld.so.conf.d/*.conf\n",
                               "/etc/ld.so.conf.d/multiarch.conf": "# multiarch\n/usr/lib/x86_64-linux-gnu\n",
                               "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2": LDSO}


def test_everything_found_through_ld_so_conf_and_symlinks(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, {**CONF, "/usr/lib/x86_64-linux-gnu/libz.so.1.3": LIBZ,
                                "/usr/lib/x86_64-linux-gnu/libc.so.6": LIBC},
                     {"/usr/lib/x86_64-linux-gnu/libz.so.1": "libz.so.1.3", "/lib": "usr/lib"})
    report = check_tree(tree, {}, set(), {})
    assert report.ok and not report.warnings and report.checked >= 2


def test_missing_library_fails(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, {**CONF, "/opt/venv/lib/libz.so.1": LIBZ}, {})
    report = check_tree(tree, {}, set(), {})
    assert not report.ok
    assert [str(e) for e in report.errors] == ["/opt/venv/lib/libz.so.1: needs libc.so.6: found nowhere in the image"]


def test_host_injected_library_counts_as_found(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, {**CONF, "/opt/venv/lib/libz.so.1": LIBZ}, {})
    assert check_tree(tree, {}, {"libc.so.6"}, {}).ok
    injected, optional = host_libraries()
    assert {"libcuda.so.1", "libnvidia-ml.so.1"} <= injected and optional


def test_library_off_the_search_path_is_a_warning(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, {**CONF, "/opt/venv/lib/libz.so.1": LIBZ, "/opt/other/libc.so.6": LIBC}, {})
    report = check_tree(tree, {}, set(), {})
    assert report.ok and len(report.warnings) == 1 and "only at /opt/other/libc.so.6" in str(report.warnings[0])


def test_ld_library_path_of_the_image_env(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, {**CONF, "/opt/venv/lib/libz.so.1": LIBZ, "/opt/other/libc.so.6": LIBC}, {})
    report = check_tree(tree, {"LD_LIBRARY_PATH": "/opt/other"}, set(), {})
    assert report.ok and not report.warnings


def test_optional_plugin_is_a_warning(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, {**CONF, "/opt/nvshmem/lib/nvshmem_bootstrap_mpi.so.3": LIBZ}, {})
    report = check_tree(tree, {}, set(), {"*/nvshmem/lib/nvshmem_bootstrap_mpi.so*": "needs MPI"})
    assert report.ok and "optional plugin (needs MPI)" in str(report.warnings[0])
