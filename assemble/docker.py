"""The Docker CLI: builds go through it (BuildKit), inspection through it too."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from wheelfactory.core.errors import BuildError

# The docker of the distribution's docker.io package has BuildKit built in; a client elsewhere on
# PATH may be a newer one that needs the buildx plugin for BuildKit.
SYSTEM_DOCKER = "/usr/bin/docker"


def find_docker() -> str:
    """/usr/bin/docker when present, else `docker` on PATH."""
    if os.access(SYSTEM_DOCKER, os.X_OK):
        return SYSTEM_DOCKER
    return shutil.which("docker") or "docker"


class Docker:
    """A thin wrapper over the docker command line."""

    def __init__(self, binary: str | None = None):
        self.binary = binary or find_docker()

    def _run(self, args: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.binary, *args], capture_output=True, text=True, **kw)

    def engine_error(self) -> str | None:
        """None when an engine answers, else why not."""
        try:
            r = self._run(["version", "--format", "{{.Server.Version}}"], timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"{self.binary}: {e}"
        if r.returncode != 0:
            return (r.stderr.strip() or r.stdout.strip()).splitlines()[-1] if (r.stderr or r.stdout) else "no answer"
        return None

    def has_buildx(self) -> bool:
        """Whether `docker buildx` is installed (preferred: it builds with any BuildKit builder)."""
        try:
            return self._run(["buildx", "version"], timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def has_default_bridge(self) -> bool:
        """Whether the engine has its default bridge network (not with `dockerd --bridge=none`)."""
        try:
            return self._run(["network", "inspect", "bridge"], timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def pull(self, ref: str) -> None:
        """Pull an image from its registry; BuildError with the engine's reason."""
        r = self._run(["pull", "--", ref])
        if r.returncode != 0:
            raise BuildError(f"docker pull {ref}: {(r.stderr or r.stdout).strip()[-2000:]}")

    def build_command(self, dockerfile: Path, context: Path, tag: str, build_args: Mapping[str, str],
                      network: str | None, buildx: bool, platform: str | None = None) -> list[str]:
        """The build command line (BuildKit through buildx, or the classic client with DOCKER_BUILDKIT=1);
        `network` is the RUN steps' network (none, host), None for the engine's default; `platform`
        (linux/arm64) the image's: on another host its RUN steps run under emulation (binfmt)."""
        cmd = [self.binary, "buildx", "build", "--load"] if buildx else [self.binary, "build"]
        cmd += ["--progress=plain", "-f", str(dockerfile), "-t", tag]
        if platform:
            cmd.append(f"--platform={platform}")
        for k, v in build_args.items():
            cmd += ["--build-arg", f"{k}={v}"]
        if network:
            cmd.append(f"--network={network}")
        return cmd + ["--", str(context)]  # `--`: a path or reference is never an option

    def build(self, cmd: Sequence[str], log: Path) -> None:
        """Run a build command, logging its output; BuildError with the log's tail on failure."""
        log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, DOCKER_BUILDKIT="1")
        with open(log, "w") as f:
            f.write("$ " + " ".join(cmd) + "\n")
            f.flush()
            r = subprocess.run(list(cmd), stdout=f, stderr=subprocess.STDOUT, env=env)
        if r.returncode != 0:
            tail = "".join(log.read_text().splitlines(keepends=True)[-25:])
            raise BuildError(f"docker build failed (exit {r.returncode}); log: {log}\n{tail}")

    def inspect(self, ref: str) -> dict[str, Any] | None:
        """`docker image inspect` of a reference, or None when the image is absent."""
        r = self._run(["image", "inspect", "--", ref])
        return json.loads(r.stdout)[0] if r.returncode == 0 else None

    def history(self, ref: str) -> list[tuple[int, str]]:
        """(size, created by) of each history entry, oldest first."""
        r = self._run(["history", "--no-trunc", "--human=false", "--format", "{{.Size}}\t{{.CreatedBy}}", "--", ref])
        if r.returncode != 0:
            raise BuildError(f"docker history {ref}: {r.stderr.strip()}")
        rows = [line.split("\t", 1) for line in r.stdout.splitlines()]
        return [(int(size), by) for size, by in reversed(rows)]

    @contextlib.contextmanager
    def exported(self, ref: str, platform: str | None = None) -> Iterator[tarfile.TarFile]:
        """The image's file system as a tar stream: `docker export` of a created, never started,
        container piped into `tarfile.open(mode="r|")`. Members come in order, each readable once
        while it is the current one; nothing is written to disk (a vLLM image's export is ~10 GB).
        BuildError when docker fails, also when it fails after the reader has finished."""
        r = self._run(["create", *([f"--platform={platform}"] if platform else []), "--", ref, "/nonexistent"])
        if r.returncode != 0:
            raise BuildError(f"docker create {ref}: {r.stderr.strip()}")
        cid = r.stdout.strip()
        try:
            with tempfile.TemporaryFile() as err:  # stderr to a file: a full pipe would stall docker
                proc = subprocess.Popen([self.binary, "export", "--", cid], stdout=subprocess.PIPE, stderr=err)
                assert proc.stdout is not None
                finished = False
                try:
                    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                        yield tar
                    finished = True
                    while proc.stdout.read(1 << 20):  # the padding docker writes after the end-of-archive blocks
                        pass
                except tarfile.TarError as e:  # a truncated or garbled stream: docker's reason, if it gave one
                    proc.kill()
                    proc.wait()
                    err.seek(0)
                    why = err.read().decode(errors="replace").strip() or str(e)
                    raise BuildError(f"docker export {ref}: {why}") from None
                finally:
                    if not finished and proc.poll() is None:
                        proc.kill()  # the reader failed: docker must not keep writing into a pipe nobody reads
                    proc.stdout.close()
                    code = proc.wait()
                if code != 0:
                    err.seek(0)
                    raise BuildError(f"docker export {ref}: exit {code}: {err.read().decode(errors='replace').strip()}")
        finally:
            self._run(["rm", "--", cid])

    def tags(self, repository: str) -> list[str]:
        """Tags of a repository in the engine."""
        r = self._run(["image", "ls", "--format", "{{.Tag}}", "--", repository])
        return [t for t in r.stdout.split() if t != "<none>"] if r.returncode == 0 else []

    def run(self, ref: str, argv: Sequence[str], network: str = "none", timeout: float = 600,
            options: Sequence[str] = (), platform: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command in a throw-away container (no network by default; another platform's under
        emulation); `options` go before the image."""
        plat = [f"--platform={platform}"] if platform else []
        return self._run(["run", "--rm", f"--network={network}", *plat, *options, "--", ref, *argv], timeout=timeout)
