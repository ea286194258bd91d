"""NCCL in the closure check: symbols resolved like `ldd -r`, one libnccl per image, no /etc/nccl.conf.

Fixtures (tests/data/nccl-symbols, build.sh): a stand-in NCCL with and without the point-to-point
API, and a library that calls it (as libtorch_cuda.so does).
"""

from __future__ import annotations

from pathlib import Path

from assemble.closure import check_tree

from .test_assemble_closure import make_tree

FIX = Path(__file__).resolve().parent / "data" / "nccl-symbols"
LIB = "/opt/venv/lib/python3.12/site-packages/nvidia/nccl/lib"
NEW = {f"{LIB}/libnccl.so.2": FIX / "libnccl-new.so.2", f"{LIB}/libuser.so": FIX / "libuser.so"}
OLD = {f"{LIB}/libnccl.so.2": FIX / "libnccl-old.so.2", f"{LIB}/libuser.so": FIX / "libuser.so"}


def test_nccl_with_every_symbol_passes(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, NEW, {})
    report = check_tree(tree, {}, set(), {})
    assert report.ok, [str(e) for e in report.errors]


def test_older_nccl_is_refused_naming_the_missing_symbols(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, OLD, {})
    report = check_tree(tree, {}, set(), {})
    [error] = report.errors
    assert error.path == f"{LIB}/libuser.so" and error.needed == "libnccl.so.2"
    assert "lacks 2 symbol(s) it needs: ncclRecv, ncclSend" in error.detail


def test_a_second_libnccl_is_an_error(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, {**NEW, "/opt/venv/lib/python3.12/site-packages/torch/lib/libnccl.so.2":
                                     FIX / "libnccl-new.so.2"}, {})
    report = check_tree(tree, {}, set(), {})
    [error] = report.errors
    assert error.path == "/opt/venv/lib/python3.12/site-packages/torch/lib/libnccl.so.2"
    assert f"a second copy (besides {LIB}/libnccl.so.2)" in error.detail


def test_a_symlink_to_the_one_libnccl_is_no_second_copy(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, NEW, {f"{LIB}/libnccl.so": "libnccl.so.2"})
    assert check_tree(tree, {}, set(), {}).ok


def test_etc_nccl_conf_is_an_error(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, {**NEW, "/etc/nccl.conf": "NCCL_P2P_DISABLE=1\n"}, {})
    [error] = check_tree(tree, {}, set(), {}).errors
    assert error.path == "/etc/nccl.conf" and "must not be in an image" in error.detail
