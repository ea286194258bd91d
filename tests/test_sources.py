"""Sources: git (tag, commit, submodules), URL archives with sha256, safe extraction, offline."""

from __future__ import annotations

import hashlib
import http.server
import io
import subprocess
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from wheelfactory.core.errors import BuildError
from wheelfactory.run.runner import Runner
from wheelfactory.sources.fetch import SourceCache, extract_archive
from wheelfactory.sources.kinds import GitSource, UrlSource


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "-c", "protocol.file.allow=always",
                           *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def runner(tmp_path):
    return Runner("test", tmp_path / "log.txt")


@pytest.fixture
def repo(tmp_path):
    """A git repository with a submodule, a tag v1.0 and a later commit."""
    sub = tmp_path / "sub"
    sub.mkdir()
    git(sub, "init", "-q")
    (sub / "lib.h").write_text("// submodule\n")
    git(sub, "add", ".")
    git(sub, "commit", "-qm", "sub")
    main = tmp_path / "main"
    main.mkdir()
    git(main, "init", "-q")
    (main / "a.txt").write_text("one\n")
    git(main, "-c", "protocol.file.allow=always", "submodule", "add", "-q", sub.as_uri(), "third_party/sub")
    git(main, "add", ".")
    git(main, "commit", "-qm", "one")
    git(main, "tag", "v1.0")
    first = git(main, "rev-parse", "HEAD")
    (main / "a.txt").write_text("two\n")
    git(main, "commit", "-qam", "two")
    return main, first


@pytest.mark.slow  # runs git
def test_git_tag_with_submodules(tmp_path, repo, runner):
    # git refuses file:// submodules unless told; a real https URL needs nothing.
    runner.base_env.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "protocol.file.allow",
                            "GIT_CONFIG_VALUE_0": "always"})
    main, first = repo
    cache = SourceCache(tmp_path / "cache")
    tree = cache.fetch(GitSource(main.as_uri(), "v1.0"), runner)
    assert (tree / "a.txt").read_text() == "one\n"
    assert (tree / "third_party" / "sub" / "lib.h").exists()
    assert first in (tree / ".wf-source.json").read_text()
    # A commit id names the same content, so the same tree of the cache (trees are keyed by commit).
    tree2 = cache.fetch(GitSource(main.as_uri(), first), runner)
    assert tree2 == tree and tree.name == f"git-{first}"
    assert cache.fetch(GitSource(main.as_uri(), "v1.0"), runner, offline=True) == tree


def test_offline_fetch_of_a_missing_source_says_what_to_run(tmp_path, runner):
    with pytest.raises(BuildError, match="run `wheelfactory fetch"):
        SourceCache(tmp_path / "c").fetch(GitSource("https://example.invalid/x.git", "v1"), runner, offline=True)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def make_tar(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return buf.getvalue()


@pytest.mark.slow  # an HTTP server on the loopback
def test_url_archive_verified_and_unpacked(tmp_path, server, runner):
    root, base = server
    data = make_tar({"pkg-1.0/setup.py": b"# hi\n", "pkg-1.0/src/x.c": b"int x;\n"})
    (root / "pkg-1.0.tar.gz").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    tree = SourceCache(tmp_path / "c").fetch(UrlSource(f"{base}/pkg-1.0.tar.gz", sha, allow_insecure=True), runner)
    assert (tree / "src" / "x.c").read_text() == "int x;\n"


@pytest.mark.slow  # an HTTP server on the loopback
def test_url_archive_with_wrong_sha_is_refused(tmp_path, server, runner):
    root, base = server
    (root / "pkg.tar.gz").write_bytes(make_tar({"pkg/a": b"a"}))
    cache = SourceCache(tmp_path / "c")
    with pytest.raises(BuildError, match="refusing to use it"):
        cache.fetch(UrlSource(f"{base}/pkg.tar.gz", "0" * 64, allow_insecure=True), runner)
    assert not list(cache.trees.glob("pkg*")) and not list(cache.archives.glob("*pkg*"))


@pytest.fixture(params=["data filter", "without it"])
def tar_filter(request, monkeypatch):
    """Both ways archives are extracted: tarfile's 'data' filter, and the same checks by hand on a
    Python that lacks it (3.11.2, Debian 12's, on its arm64 machines)."""
    if request.param == "without it":
        monkeypatch.delattr(tarfile, "data_filter")
    return request.param


@pytest.mark.parametrize("members, links", [
    ({"../escape.txt": b"x"}, None),
    ({"ok/a": b"x"}, {"ok/link": "/etc/passwd"}),
    ({"ok/a": b"x"}, {"ok/link": "../../outside"}),
])
def test_tar_escapes_are_refused(tmp_path, members, links, tar_filter):
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(make_tar(members, links))
    with pytest.raises(BuildError, match="refusing to extract"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_zip_slip_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../evil.txt", "x")
    with pytest.raises(BuildError, match="outside the tree"):
        extract_archive(archive, tmp_path / "out")


def test_absolute_member_lands_inside_the_tree(tmp_path, tar_filter):
    archive = tmp_path / "abs.tar.gz"
    archive.write_bytes(make_tar({"/abs-wf-test.txt": b"x"}))
    top = extract_archive(archive, tmp_path / "out")
    assert (top / "abs-wf-test.txt").exists() and not Path("/abs-wf-test.txt").exists()


def test_a_plain_archive_extracts_with_its_links_without_the_filter(tmp_path, tar_filter):
    archive = tmp_path / "pkg.tar.gz"
    archive.write_bytes(make_tar({"pkg/a/b.txt": b"hello"}, {"pkg/link": "a/b.txt"}))
    top = extract_archive(archive, tmp_path / "out")
    assert top.name == "pkg" and (top / "link").read_text() == "hello" and (top / "link").is_symlink()
