""".ci/arm64-extracted.sh, the extract hook of .ci/arm64-env.sh: on a root where packages were only
unpacked, it records them in dpkg's database and does the maintainer scripts' work the machine needs
(users, alternatives), with nothing run under emulation. Here on a root of two tiny packages made
with dpkg-deb, one of them Multi-Arch: same."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO

HOOK = REPO / ".ci" / "arm64-extracted.sh"
pytestmark = [pytest.mark.slow,  # runs dpkg-deb and the hook (about a second)
              pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (Debian)")]


def make_deb(tmp: Path, name: str, files: dict[str, str], extra: str = "") -> Path:
    tree = tmp / f"pkg-{name}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 1.0-1\nArchitecture: arm64\nMaintainer: t <t@example.org>\n{extra}"
        f"Description: test package {name}\n")
    sums = []
    for path, text in files.items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_text(text)
        sums.append(f"{'0' * 32}  {path}")
    (tree / "DEBIAN" / "md5sums").write_text("\n".join(sums) + "\n")
    deb = tmp / f"{name}_1.0-1_arm64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", tree, deb], check=True, capture_output=True)
    return deb


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    archives = root / "var" / "cache" / "apt" / "archives"
    archives.mkdir(parents=True)
    (root / "var" / "lib" / "dpkg").mkdir(parents=True)
    # what mmdebstrap's merged-usr hook leaves: its own package already recorded
    (root / "var" / "lib" / "dpkg" / "status").write_text(
        "Package: usr-is-merged\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n\n")
    gcc = make_deb(tmp_path, "gcc", {"usr/bin/gcc": "#!/bin/sh\n"})
    lib = make_deb(tmp_path, "libfoo1", {"usr/lib/aarch64-linux-gnu/libfoo.so.1": "elf"}, "Multi-Arch: same\n")
    dup = make_deb(tmp_path, "usr-is-merged", {"usr/share/doc/usr-is-merged/x": "x"})
    for deb in (gcc, lib, dup):
        shutil.copy(deb, archives)
    # the unpacked files, as --variant=extract leaves them
    for deb in (gcc, lib):
        subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
    (root / "usr" / "share" / "base-passwd").mkdir(parents=True)
    (root / "usr" / "share" / "base-passwd" / "passwd.master").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "usr" / "share" / "base-passwd" / "group.master").write_text("root:x:0:\n")
    return root


def run_hook(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", HOOK, root], capture_output=True, text=True)


def test_each_package_is_recorded_installed_once_with_its_files(root):
    r = run_hook(root)
    assert r.returncode == 0, r.stderr
    stanzas = [s for s in (root / "var/lib/dpkg/status").read_text().split("\n\n") if s.strip()]
    by_name = {s.splitlines()[0].removeprefix("Package: "): s.splitlines() for s in stanzas}
    assert sorted(by_name) == ["gcc", "libfoo1", "usr-is-merged"]  # the recorded one not again
    assert len(stanzas) == 3
    assert by_name["gcc"][1] == "Status: install ok installed"  # dpkg's order: Package, then Status
    assert "Version: 1.0-1" in by_name["gcc"]
    info = root / "var/lib/dpkg/info"
    assert "/usr/bin/gcc" in (info / "gcc.list").read_text().splitlines()
    # a Multi-Arch: same package's files are pkg:arch
    assert "/usr/lib/aarch64-linux-gnu/libfoo.so.1" in (info / "libfoo1:arm64.list").read_text().splitlines()
    assert (info / "libfoo1:arm64.md5sums").read_text().endswith("usr/lib/aarch64-linux-gnu/libfoo.so.1\n")


def test_users_and_the_compiler_alternatives_are_made(root):
    assert run_hook(root).returncode == 0
    assert (root / "etc/passwd").read_text() == "root:x:0:0:root:/root:/bin/bash\n"
    assert (root / "etc/shadow").read_text().startswith("root:*:")
    assert (root / "etc/gshadow").read_text() == "root:*::\n"
    assert (root / "usr/bin/cc").readlink() == Path("/etc/alternatives/cc")
    assert (root / "etc/alternatives/cc").readlink() == Path("/usr/bin/gcc")
    # no g++ unpacked: no c++ link pointing nowhere
    assert not (root / "usr/bin/c++").is_symlink() and not (root / "etc/alternatives/c++").is_symlink()


def test_without_debs_it_says_where_it_looked(tmp_path):
    r = run_hook(tmp_path)
    assert r.returncode == 1
    assert f"no .deb in {tmp_path}/var/cache/apt/archives" in r.stderr
