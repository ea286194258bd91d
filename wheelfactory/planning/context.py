"""What a recipe's hooks receive: fetch() a FetchContext (the fetched tree, the cache, a runner);
prepare(), configure() and build() a BuildContext (paths, target, jobs and a runner).

Hooks only call methods of this object; they never start processes or touch the wheelhouse
themselves, so a test can hand them a context whose runner records instead of running.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import BuildError
from ..cuda import devicecode
from ..run.runner import Runner
from ..toolchain.crossbuild import CrossToolchain
from .plan import Step
from .recipe import Target


@dataclass
class FetchContext:
    """A recipe's fetch() hook: the source tree is in the cache; fetch what else the build will
    need into the cache (never into the tree, which every build of that content shares). With
    offline, nothing may be downloaded: check that it is there, or fail saying what to run."""

    step: Step
    src: Path  # the fetched tree in the source cache: shared, read only
    cache: Path
    runner: Runner
    offline: bool
    echo: Callable[[str], None] = print

    @property
    def version(self) -> str:
        return self.step.version


@dataclass
class BuildContext:
    step: Step
    target: Target
    src: Path  # the component's source tree (a private copy)
    work: Path  # the step's work directory
    dist: Path  # built wheels go here
    venv: Path
    cuda_home: str | None
    jobs: int
    env: dict[str, str]  # the step's resolved build environment (plus PATH/VIRTUAL_ENV)
    runner: Runner
    offline: bool
    cache: Path
    versions: Mapping[str, str]  # every component and pin of the release, by name
    cpus: int
    echo: Callable[[str], None] = print
    device_code: dict[str, Any] | None = None  # the configure phase's device-code plan, for the manifest
    trees: dict[str, Path] = field(default_factory=dict)  # extra sources by name, as the build sees them
    # A cross step's toolchain (crossbuild.py): the target's compilers, the cross CUDA root; None natively.
    cross: CrossToolchain | None = None

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def site(self) -> Path:
        return next((self.venv / "lib").glob("python3*/site-packages"))

    @property
    def version(self) -> str:
        return self.step.version

    def run(self, cmd: Sequence[str | Path], *, cwd: Path | None = None,
            env: Mapping[str, str] | None = None, capture: bool = False) -> str:
        """Run a command in the step's environment (the venv first on PATH)."""
        return self.runner.run(cmd, cwd=cwd or self.src, env=self.env | dict(env or {}), capture=capture)

    def build_wheel(self, path: Path | None = None, *, extra_args: Sequence[str] = (),
                    env: Mapping[str, str] | None = None) -> list[Path]:
        """The default build: `python -m build --wheel --no-isolation` of a source tree into dist/.

        No isolation: the build must see the factory's own torch and friends installed in the
        step's venv, never a copy that build isolation would download.
        """
        before = set(self.dist.glob("*.whl"))
        self.run([self.python, "-m", "build", "--wheel", "--no-isolation", "--outdir", self.dist,
                  *extra_args, "--", path or self.src], env=env)
        return sorted(set(self.dist.glob("*.whl")) - before)

    def replace_in_file(self, path: Path, pattern: str, replacement: str, *, regex: bool = False,
                        count: int = 0) -> int:
        """Edit a source file; fail loudly when the pattern matches nothing (upstream drifted)."""
        text = path.read_text()
        if regex:
            new, n = re.subn(pattern, replacement, text, count=count, flags=re.MULTILINE)
        else:
            n = text.count(pattern) if not count else min(count, text.count(pattern))
            new = text.replace(pattern, replacement, count or -1)
        if n == 0:
            raise BuildError(f"[{self.step.component}] {path.relative_to(self.src)}: {pattern!r} matched nothing; "
                             "upstream changed this file, so the recipe's edit must be updated")
        path.write_text(new)
        self.runner.note(f"edit {path.relative_to(self.src)}: {pattern!r} -> {replacement!r} ({n}x)")
        return n

    def check_device_code(self, build_ninja: Path,
                          allowances: Sequence[devicecode.Allowance] = ()) -> devicecode.DeviceCodePlan:
        """Read the device code a configured build will compile, save it with the step
        (device-code.json and .txt in the work tree, the manifest), print the table and fail
        if it breaks the policy (see devicecode)."""
        if not build_ninja.is_file():
            raise BuildError(f"[{self.step.component}] the configure step wrote no {build_ninja}")
        roots = {name: str(path) for name, path in self.trees.items()}
        objects = devicecode.parse_ninja(build_ninja.read_text(errors="replace"), roots)
        plan = devicecode.evaluate(objects, self.target.cuda_arch_list, allowances)
        table = devicecode.render(plan)
        (self.work / "device-code.json").write_text(json.dumps(plan.to_json(), indent=2) + "\n")
        (self.work / "device-code.txt").write_text(table + "\n")
        self.device_code = plan.to_json()
        for line in table.splitlines():
            self.runner.note(f"device code: {line}")
        self.echo(f"[{self.step.component}] device code the build will compile "
                  f"(for {';'.join(self.target.cuda_arch_list)}):\n" + table)
        if not objects:
            raise BuildError(f"[{self.step.component}] {build_ninja} has no CUDA objects: the build would "
                             "compile no device code for the release's arch list")
        if not plan.ok:
            raise BuildError(f"[{self.step.component}] the device code breaks the release's policy:\n  "
                             + "\n  ".join(plan.errors)
                             + f"\nfull table: {self.work / 'device-code.txt'}")
        return plan
