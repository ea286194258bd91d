"""What each source's name resolved to when it was fetched: a git ref's commit, an sdist's or
archive's sha256. The build key uses the recorded content, so a moved tag or a re-uploaded sdist
can never be served under the key of what was built before.

    <cache>/sources/resolved.json
    {"version": 1, "sources": {
        "git https://github.com/NVIDIA/nccl.git v2.29.2-1": {"commit": "...", "kind": "tag", "recorded": "..."},
        "pypi https://pypi.org/simple vllm==0.14.1": {"sha256": "...", "filename": "...", "recorded": "..."},
        "url https://.../llvm.tar.gz": {"sha256": "...", "recorded": "..."}}}

The file is the lock of the source names: `fetch` writes it, `plan` and `build` only read it
(a build resolves what was never recorded, so that it can key what it builds). Deleting it
means every source is resolved again at the next fetch.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..core.errors import BuildError

FORMAT_VERSION = 1


class SourceRecords:
    """The resolved.json file; every change is read-modify-write under a lock, written atomically."""

    def __init__(self, path: Path):
        self.path = path
        self._entries: dict[str, dict[str, Any]] | None = None

    def get(self, key: str) -> dict[str, Any] | None:
        if self._entries is None:
            self._entries = self._read()
        return self._entries.get(key)

    def entries(self) -> dict[str, dict[str, Any]]:
        """Every entry, as the file holds it now."""
        return self._read()

    def put(self, key: str, entry: dict[str, Any]) -> None:
        """Record an entry (stamped with the time it was recorded), keeping other processes' entries."""
        with self._locked():
            entries = self._read()
            entries[key] = entry | {"recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            fd, tmp = tempfile.mkstemp(prefix=".resolved-", dir=self.path.parent)
            with os.fdopen(fd, "w") as f:
                json.dump({"version": FORMAT_VERSION, "sources": entries}, f, indent=2, sort_keys=True)
                f.write("\n")
            os.replace(tmp, self.path)
            self._entries = entries

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
            sources = data["sources"]
            if data.get("version") != FORMAT_VERSION or not isinstance(sources, dict):
                raise ValueError(f"version {data.get('version')!r}")
            return sources
        except FileNotFoundError:
            return {}
        except (ValueError, KeyError, TypeError) as e:
            raise BuildError(f"{self.path}: not a source record this wheelfactory reads ({e}); delete it to "
                             "resolve every source again at the next `wheelfactory fetch`") from None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.parent / ".resolved.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
