"""The closure check reads an image as a stream: `docker export` piped into tarfile, one pass, no
tar on disk (Docker.exported), checked here on a fake docker that streams a small made-up image."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from assemble import docker as dockermod
from assemble.closure import ImageTree, check_stream, check_tree
from assemble.docker import Docker
from wheelfactory.core.errors import BuildError

from .test_assemble_closure import CONF, LDSO, LIBC, LIBZ

pytestmark = pytest.mark.skipif(not all(p.exists() for p in (LIBZ, LIBC, LDSO)),
                                reason="needs x86_64 Debian libz, libc and ld.so")


class OneWay(io.RawIOBase):
    """A pipe's behaviour: read forward only, seeking and telling fail (as on docker's stdout)."""

    def __init__(self, data: bytes):
        self.data, self.pos, self.read_bytes = data, 0, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        n = min(len(b), len(self.data) - self.pos, 65536)
        b[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        self.read_bytes += n
        return n

    def seek(self, *a, **k):  # type: ignore[no-untyped-def]
        raise io.UnsupportedOperation("seek on a pipe")

    def tell(self) -> int:
        raise io.UnsupportedOperation("tell on a pipe")


def image_tar(files: dict[str, Path | str | bytes], links: dict[str, str] = {},  # noqa: B006
              hardlinks: dict[str, str] = {}) -> bytes:  # noqa: B006
    """A tar as `docker export` writes it: './'-relative names, files, symbolic and hard links."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, src in files.items():
            data = Path(os.path.realpath(src)).read_bytes() if isinstance(src, Path) else \
                src if isinstance(src, bytes) else src.encode()
            info = tarfile.TarInfo("." + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo("." + name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        for name, target in hardlinks.items():
            info = tarfile.TarInfo("." + name)
            info.type, info.linkname = tarfile.LNKTYPE, "." + target
            tar.addfile(info)
    return buf.getvalue()


LIB = "/usr/lib/x86_64-linux-gnu"
GOOD = {**CONF, f"{LIB}/libz.so.1.3": LIBZ, f"{LIB}/libc.so.6": LIBC}


def test_a_one_way_stream_is_checked_like_a_file() -> None:
    data = image_tar({**GOOD, "/usr/share/big.bin": b"\0" * 300_000, "/opt/x/notes.txt": "not ELF\n"},
                     {f"{LIB}/libz.so.1": "libz.so.1.3", "/lib": "usr/lib"},
                     {"/opt/venv/lib/libz-copy.so.1": f"{LIB}/libz.so.1.3"})
    pipe = OneWay(data)
    with tarfile.open(fileobj=pipe, mode="r|") as tar:
        tree = ImageTree(tar)
    assert pipe.pos >= len(data.rstrip(b"\0"))  # one pass past the last member, never back (seek would raise)
    # the ELF facts were kept, the bytes were not; the hard link shares its target's facts
    assert {f"{LIB}/libz.so.1.3", f"{LIB}/libc.so.6", "/opt/venv/lib/libz-copy.so.1"} <= set(tree.objects)
    assert tree.objects["/opt/venv/lib/libz-copy.so.1"].needed == ("libc.so.6",)
    assert "/usr/share/big.bin" not in tree.objects and "/opt/x/notes.txt" not in tree.texts
    assert tree.text("/etc/ld.so.conf.d/multiarch.conf") == "# multiarch\n/usr/lib/x86_64-linux-gnu\n"
    report = check_tree(tree, {}, set(), {})
    assert report.ok and not report.warnings and report.checked >= 3


def test_a_missing_library_is_found_missing_through_the_stream() -> None:
    data = image_tar({**CONF, "/opt/venv/lib/libz.so.1": LIBZ})
    with tarfile.open(fileobj=OneWay(data), mode="r|") as tar:
        report = check_stream(tar, {})
    assert [str(e) for e in report.errors] == ["/opt/venv/lib/libz.so.1: needs libc.so.6: found nowhere in the image"]


def test_a_truncated_elf_file_is_no_object_and_no_crash() -> None:
    cut = LIBZ.read_bytes()[:4096]
    data = image_tar({**GOOD, "/opt/venv/lib/libcut.so": cut})
    with tarfile.open(fileobj=OneWay(data), mode="r|") as tar:
        tree = ImageTree(tar)
    assert "/opt/venv/lib/libcut.so" not in tree.objects and f"{LIB}/libc.so.6" in tree.objects


# -- Docker.exported on a fake docker (no process: `docker` calls and the export pipe are stand-ins) -----

class FakeExport:
    """subprocess.Popen of `docker export`: stdout a one-way pipe of `data`, then `code` and `stderr`."""

    def __init__(self, data: bytes, code: int, stderr: bytes, log: list[str]):
        self.data, self.code, self.stderr, self.log = data, code, stderr, log
        self.returncode: int | None = None

    def __call__(self, argv, stdout, stderr):  # type: ignore[no-untyped-def]
        self.log.append(" ".join(argv[1:]))
        self.stdout = io.BufferedReader(OneWay(self.data))
        stderr.write(self.stderr)
        stderr.flush()
        return self

    def poll(self) -> int | None:
        # docker exits once its last byte is read
        return self.code if self.stdout.raw.pos >= len(self.data) else None  # type: ignore[attr-defined]

    def kill(self) -> None:
        self.log.append("killed")
        self.returncode = -9

    def wait(self) -> int:
        if self.returncode is None:
            self.returncode = self.code
        return self.returncode


class FakeDocker(Docker):
    def __init__(self, monkeypatch: pytest.MonkeyPatch, data: bytes, code: int = 0, stderr: bytes = b""):
        super().__init__("docker")
        self.log: list[str] = []
        monkeypatch.setattr(dockermod.subprocess, "Popen", FakeExport(data, code, stderr, self.log))

    def _run(self, args, **kw):  # type: ignore[no-untyped-def]
        self.log.append(" ".join(args))
        return subprocess.CompletedProcess(args, 0, "c0ffee\n" if args[0] == "create" else "", "")


def test_exported_streams_the_container_and_removes_it(monkeypatch) -> None:
    docker = FakeDocker(monkeypatch, image_tar({**CONF, "/opt/venv/lib/libz.so.1": LIBZ}))
    with docker.exported("img:1", "linux/amd64") as tar:
        report = check_stream(tar, {})
    assert [e.needed for e in report.errors] == ["libc.so.6"]
    assert docker.log == ["create --platform=linux/amd64 -- img:1 /nonexistent", "export -- c0ffee", "rm -- c0ffee"]


def test_a_failing_export_is_a_build_error_with_dockers_reason(monkeypatch) -> None:
    # the whole tar came through, then docker failed: the check must not pass on what it read
    docker = FakeDocker(monkeypatch, image_tar(GOOD), 1, b"Error response from daemon: no space left\n")
    with pytest.raises(BuildError, match=r"docker export img:1: exit 1: Error response from daemon: no space left"):
        with docker.exported("img:1") as tar:
            check_stream(tar, {})
    assert docker.log[-1] == "rm -- c0ffee"


def test_a_truncated_stream_is_a_build_error(monkeypatch) -> None:
    data = image_tar(GOOD)
    docker = FakeDocker(monkeypatch, data[:len(data) // 2], 1, b"unexpected EOF\n")
    with pytest.raises(BuildError, match=r"docker export img:1: unexpected EOF"):
        with docker.exported("img:1") as tar:
            check_stream(tar, {})
    assert docker.log[-1] == "rm -- c0ffee"


def test_a_reader_that_stops_early_stops_docker_and_leaves_no_container(monkeypatch) -> None:
    docker = FakeDocker(monkeypatch, image_tar(GOOD))
    with pytest.raises(KeyError):
        with docker.exported("img:1") as tar:
            next(iter(tar))
            raise KeyError("stop")
    assert docker.log[-2:] == ["killed", "rm -- c0ffee"]


# -- a real engine -------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.docker
def test_a_real_image_streams_through_docker_export() -> None:
    from .conftest import docker_or_skip

    docker = docker_or_skip()
    with docker.exported("local/debian-py:bookworm") as tar:
        tree = ImageTree(tar)
    report = check_tree(tree, {}, set(), {})
    # Debian's python3 and libc: found through /etc/ld.so.conf.d, nothing missing
    assert report.ok, report.errors
    assert report.checked > 50 and "/usr/lib/x86_64-linux-gnu/libc.so.6" in tree.objects
    assert tree.text("/etc/ld.so.conf.d/x86_64-linux-gnu.conf") is not None
