"""Where `release derive` reads upstream from: vLLM's sdist on the package index (or its git tag or
commit), wheel METADATA on the index, Triton's source at its tag. Each read either returns what
it read with a label saying where from, or raises Unreachable saying why not, so derive can list
what it could not derive instead of failing on the first gap.
"""

from __future__ import annotations

import re
from email.message import Message
from pathlib import Path

from packaging.utils import parse_wheel_filename

from ..core.cachelayout import CacheLayout
from ..core.errors import BuildError, InputError
from ..run.runner import Runner
from ..sources.fetch import SourceCache
from ..sources.kinds import GitSource, PypiSource
from ..sources.pypi_index import Index

VLLM_GIT = "https://github.com/vllm-project/vllm.git"
TRITON_GIT = "https://github.com/triton-lang/triton.git"


class Unreachable(Exception):
    """An upstream source that could not be read here, with the reason."""


class LiveUpstream:
    def __init__(self, cache_dir: Path, index_url: str, vllm_git: str = VLLM_GIT, triton_git: str = TRITON_GIT):
        self.index = Index(index_url)
        self.sources = SourceCache(cache_dir, index_url)
        self.runner = Runner("derive", CacheLayout(cache_dir).log("derive"))
        self.vllm_git = vllm_git
        self.triton_git = triton_git
        self._described: dict[tuple[str, str | None], str] = {}

    def vllm_tree(self, version: str, ref: str | None, git: str | None = None) -> tuple[Path, str]:
        """vLLM's source: the sdist of `version` from the index, else the git tag v<version> or `ref`
        (of `git`, a fork, when given)."""
        why_not_sdist = ""
        if ref is None:
            try:
                tree = self.sources.fetch(PypiSource("vllm", version), self.runner)
                self._described[(version, ref)] = f"the sdist on {self.index.url}"
                return tree, f"vllm-{version}"
            except (InputError, BuildError) as e:
                why_not_sdist = f"{e}; "
        ref, git = ref or f"v{version}", git or self.vllm_git
        try:
            tree = self.sources.fetch(GitSource(git, ref, submodules=False), self.runner)
            self._described[(version, None if ref == f"v{version}" else ref)] = f"git {git}"
            return tree, f"vllm@{ref}"
        except (BuildError, InputError) as e:  # InputError: no such tag or branch there
            raise Unreachable(f"{why_not_sdist}cannot read {git}@{ref}: {_why(e)}") from None

    def describe(self, version: str, ref: str | None) -> str:
        return self._described.get((version, ref), "")

    def triton_tree(self, version: str) -> tuple[Path, str]:
        try:
            return self.sources.fetch(GitSource(self.triton_git, f"v{version}", submodules=False), self.runner), \
                f"{self.triton_git}@v{version}"
        except (BuildError, InputError) as e:  # InputError: no such tag or branch there
            raise Unreachable(f"cannot read {self.triton_git}@v{version}: {_why(e)}") from None

    def versions(self, project: str) -> list[str]:
        try:
            return [str(v) for v in self.index.versions(project)]
        except BuildError as e:
            raise Unreachable(str(e)) from None

    def wheel_metadata(self, project: str, version: str, python: str, machine: str) -> tuple[Message, str]:
        """METADATA of the project's wheel for CPython `python` on Linux `machine` (its pins can differ
        per platform), or of any Linux wheel of that version."""
        try:
            files = self.index.wheels(project, version)
        except BuildError as e:
            raise Unreachable(str(e)) from None
        if not files:
            raise Unreachable(f"{project} {version} has no wheels on {self.index.url}")
        chosen = pick_wheel(files, python, machine) or files[0]
        try:
            return self.index.metadata(chosen), chosen["filename"]
        except BuildError as e:
            raise Unreachable(str(e)) from None

    def has_wheel(self, project: str, version: str, python: str, machine: str) -> str | None:
        try:
            chosen = pick_wheel(self.index.wheels(project, version), python, machine)
        except BuildError:
            return None
        return chosen["filename"] if chosen else None


def _why(e: BuildError) -> str:
    """git's own complaint ("fatal: unable to access ...") out of the runner's failure message."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    fatal = [ln for ln in lines if "fatal:" in ln or "error:" in ln]
    return (fatal[-1] if fatal else lines[0]).split("] ", 1)[-1]


def pick_wheel(files: list[dict], python: str, machine: str) -> dict | None:
    """The Linux wheel of `machine` that CPython `python` (e.g. '3.12') can install, if any."""
    cp = "cp" + python.replace(".", "")
    for f in files:
        tags = parse_wheel_filename(f["filename"])[3]
        if any(t.platform.endswith(machine) and t.platform.startswith(("manylinux", "linux"))
               and (t.interpreter in (cp, "py3") or re.fullmatch(r"py3\d*", t.interpreter))
               for t in tags):
            return f
    return None
