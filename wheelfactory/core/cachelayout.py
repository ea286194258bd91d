"""The build cache's layout: every directory and file under `--cache-dir`, named once.

    <cache>/sources/archives/      downloaded sdists and archives, by sha256
    <cache>/sources/trees/         unpacked source trees, ready to copy
    <cache>/sources/resolved.json  what each source name resolved to (commit, sha256)
    <cache>/sources/cargo/         vendored Rust crates, per Cargo.lock
    <cache>/pydeps/<index>/        build requirements, one directory per package index
    <cache>/work/<component>-<key12>/    a step's work tree (and its .lock beside it)
    <cache>/staged/<key12>/        a step's wheels before publishing
    <cache>/adopt/                 adopted wheels (<key12>/) and repacked installed ones (installed/)
    <cache>/configure-check/<release>/   configure-first's own wheelhouse and trees
    <cache>/toolkits/              CUDA toolkits from NVIDIA's wheels (WHEELFACTORY_TOOLKITS_DIR)
    <cache>/uv/                    uv's cache (WHEELFACTORY_UV_CACHE_DIR)
    <cache>/ccache/, tools/ccache/ the compiler cache and the ccache the factory installs
    <cache>/logs/                  one log per build step and per command
    <cache>/timings.json           the last successful build's duration per component

Four of the engine modules whose code enters build keys (stepbuild, pydeps, installer, cargo) spell
their own directory the same way instead of reading it here: their code is part of every key, so
pointing them at this class re-keys every build, which waits for the next key-format change.
tests/test_cachelayout.py holds each of them to this layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CacheLayout:
    root: Path

    # -- sources ------------------------------------------------------------------------------------
    @property
    def sources(self) -> Path:
        return self.root / "sources"

    @property
    def source_archives(self) -> Path:
        return self.sources / "archives"

    @property
    def source_trees(self) -> Path:
        return self.sources / "trees"

    @property
    def source_records(self) -> Path:
        return self.sources / "resolved.json"

    def cargo_vendor(self, lock_sha256: str) -> Path:
        return self.sources / "cargo" / f"sha256-{lock_sha256}"

    # -- builds -------------------------------------------------------------------------------------
    @property
    def pydeps(self) -> Path:
        return self.root / "pydeps"

    @property
    def work(self) -> Path:
        return self.root / "work"

    def work_tree(self, component: str, key: str) -> Path:
        return self.work / f"{component}-{key[:12]}"

    @property
    def staged(self) -> Path:
        return self.root / "staged"

    def staged_step(self, key: str) -> Path:
        return self.staged / key[:12]

    @property
    def adopt(self) -> Path:
        return self.root / "adopt"

    def adopted(self, key: str) -> Path:
        return self.adopt / key[:12]

    def installed(self, component: str) -> Path:
        """Where `adopt --from-python` repacks a component's installed distribution."""
        return self.adopt / "installed" / component

    def configure_check(self, release: str) -> Path:
        return self.root / "configure-check" / release

    # -- tools --------------------------------------------------------------------------------------
    @property
    def toolkits(self) -> Path:
        """<cache>/toolkits, or WHEELFACTORY_TOOLKITS_DIR to share one set of downloads and roots
        between several cache directories (each root is ~2 GB unpacked)."""
        return Path(os.environ.get("WHEELFACTORY_TOOLKITS_DIR") or self.root / "toolkits").expanduser()

    @property
    def uv(self) -> Path:
        """<cache>/uv, or WHEELFACTORY_UV_CACHE_DIR to share one between cache directories (it must be
        on the same file system as the venvs for hard links; uv copies otherwise)."""
        return Path(os.environ.get("WHEELFACTORY_UV_CACHE_DIR") or self.root / "uv").expanduser()

    @property
    def ccache(self) -> Path:
        return self.root / "ccache"

    @property
    def ccache_tools(self) -> Path:
        return self.root / "tools" / "ccache"

    # -- records ------------------------------------------------------------------------------------
    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def log(self, name: str) -> Path:
        """<cache>/logs/<name>.log: one per command (lock-<release>, venv-<release>, resolve, derive)."""
        return self.logs / f"{name}.log"

    @property
    def timings(self) -> Path:
        return self.root / "timings.json"

    def areas(self) -> tuple[tuple[Path, str], ...]:
        """What `cache list` shows, in order, each with its label (toolkits and uv under this cache,
        where a shared WHEELFACTORY_* directory is not counted)."""
        return ((self.work, "work trees"), (self.staged, "staged copies"), (self.source_trees, "source trees"),
                (self.source_archives, "source archives"), (self.pydeps, "build requirements (pydeps)"),
                (self.adopt, "adopted wheels"), (self.root / "toolkits", "CUDA toolkits"),
                (self.ccache, "ccache"), (self.root / "uv", "uv cache"), (self.logs, "logs"))
