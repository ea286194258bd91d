"""A release's [overrides] in `plan` and in the lock's resolution: hermetic (uv is stood in for)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
import zipfile
from pathlib import Path

import pytest

from wheelfactory.cli.show import print_plan as _print_plan
from wheelfactory.lock import closure as lockmod
from wheelfactory.pipeline.factory import Factory
from wheelfactory.toolchain.installer import find_uv

FAST = """extends = "0.33.0-t5"
[components.torch]
version = "2.14.1"
adopt = "torch==2.14.1"
[overrides]
torch = "vLLM 0.33.0 pins torch==2.14.0; this release adopts 2.14.1"
"""


def tiny_wheel(root: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A minimal valid wheel of `name` `version` (METADATA, WHEEL, RECORD)."""
    path = root / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    info = f"{name.replace('-', '_')}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + \
        "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{info}/METADATA", meta)
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path


class FakeUv:
    """Records each command and the override and requirement files it was given, and answers with a
    pylock naming the given wheelhouse files."""

    def __init__(self, resolved: list[Path]):
        self.resolved = resolved
        self.calls: list[list[str]] = []
        self.files: list[dict[str, str]] = []

    def note(self, text: str) -> None:
        pass

    def run(self, cmd, **kwargs) -> str:
        cmd = [str(c) for c in cmd]
        self.calls.append(cmd)
        given = {}
        for flag in ("--override", "--constraint"):
            given[flag] = Path(cmd[cmd.index(flag) + 1]).read_text()
        given["requirements.in"] = Path(cmd[cmd.index("--") + 1]).read_text()  # after "--": data, never an option
        self.files.append(given)
        out = Path(cmd[cmd.index("-o") + 1])
        entries = []
        for w in self.resolved:
            name, version = w.name.split("-")[:2]
            entries.append(f'[[packages]]\nname = "{name}"\nversion = "{version}"\n'
                           f'wheels = [{{ path = "{w}" }}]\n')
        out.write_text('lock-version = "1.0"\n' + "".join(entries))
        return ""


@pytest.fixture
def fast_release(tmp_path: Path) -> Path:
    path = tmp_path / "fast.toml"
    path.write_text(FAST)
    return path


def test_plan_shows_the_override_with_its_reason_and_json_carries_it(factory: Factory, fast_release: Path,
                                                                    capsys) -> None:
    plan = factory.plan(factory.release(str(fast_release)))
    _print_plan(plan)
    out = capsys.readouterr().out
    assert "overrides (win over what other packages declare; `lock` resolves with them):" in out
    assert "  torch==2.14.1 (component): vLLM 0.33.0 pins torch==2.14.0; this release adopts 2.14.1" in out
    assert plan.to_json()["overrides"] == {
        "torch": {"kind": "component", "version": "2.14.1",
                  "reason": "vLLM 0.33.0 pins torch==2.14.0; this release adopts 2.14.1"}}
    assert json.loads(json.dumps(plan.to_json()))["overrides"]["torch"]["version"] == "2.14.1"


def test_a_pin_override_is_shown_as_a_pin(factory: Factory, capsys) -> None:
    _print_plan(factory.plan(factory.release("0.15.0-t5")))
    assert "  transformers==5.0.0 (pin): vLLM 0.14/0.15 declare transformers<5" in capsys.readouterr().out


def test_a_release_without_overrides_prints_none_and_json_is_empty(factory: Factory, capsys) -> None:
    plan = factory.plan(factory.release("0.15.0-t4"))
    _print_plan(plan)
    assert "overrides" not in capsys.readouterr().out
    assert plan.to_json()["overrides"] == {}


def test_lock_resolves_with_the_components_wheel_as_override(factory: Factory, fast_release: Path,
                                                              monkeypatch, tmp_path: Path) -> None:
    wh = factory.wheelhouse
    wh.root.mkdir(parents=True, exist_ok=True)
    torch = tiny_wheel(wh.root, "torch", "2.14.1")
    vllm = tiny_wheel(wh.root, "vllm", "0.33.0", ("torch==2.14.0",))
    transformers = tiny_wheel(wh.root, "transformers", "5.20.2")
    plan = factory.plan(factory.release(str(fast_release)), ["vllm"])
    monkeypatch.setattr(lockmod, "component_wheels", lambda plan, wheelhouse: {"torch": [torch], "vllm": [vllm]})
    uv = FakeUv([torch, vllm, transformers])
    lock = lockmod.lock_release(plan, wh, uv, "python3.12", "https://pypi.org/simple", offline=True)

    (cmd,) = uv.calls
    assert cmd[:3] == [find_uv(), "pip", "compile"] and "--override" in cmd and "--no-index" in cmd
    overrides = uv.files[0]["--override"].splitlines()
    assert f"torch @ {torch.resolve().as_uri()}" in overrides
    assert "torch==2.14.0" not in uv.files[0]["--override"]
    # the top-level requirement names the same file: override and requirement agree
    assert f"torch @ {torch.resolve().as_uri()}" in uv.files[0]["requirements.in"].splitlines()
    assert lock.overrides["torch"] == "vLLM 0.33.0 pins torch==2.14.0; this release adopts 2.14.1"
    written = json.loads((wh.locks_dir / "fast.json").read_text())
    assert written["overrides"]["torch"] == lock.overrides["torch"]
    assert {p["name"]: p["version"] for p in written["packages"]}["torch"] == "2.14.1"


def test_an_overridden_pin_goes_to_the_override_file_at_its_version(factory: Factory, monkeypatch) -> None:
    wh = factory.wheelhouse
    wh.root.mkdir(parents=True, exist_ok=True)
    vllm = tiny_wheel(wh.root, "vllm", "0.15.0", ("transformers<5",))
    transformers = tiny_wheel(wh.root, "transformers", "5.0.0")
    plan = factory.plan(factory.release("0.15.0-t5"), ["vllm"])
    monkeypatch.setattr(lockmod, "component_wheels", lambda plan, wheelhouse: {"vllm": [vllm]})
    uv = FakeUv([vllm, transformers])
    lockmod.lock_release(plan, wh, uv, "python3.12", "https://pypi.org/simple", offline=True)
    assert uv.files[0]["--override"] == "transformers==5.0.0\n"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv")
def test_real_uv_accepts_a_component_override_by_file_and_fails_without_it(tmp_path: Path) -> None:
    """uv itself, offline: vLLM's own torch==2.14.0 pin fails the resolution of a torch 2.14.1 wheel
    unless the override file names that wheel, as lock_release writes it."""
    wh = tmp_path / "wh"
    wh.mkdir()
    torch = tiny_wheel(wh, "torch", "2.14.1")
    vllm = tiny_wheel(wh, "vllm", "0.33.0", ("torch==2.14.0",))
    (tmp_path / "requirements.in").write_text(f"torch @ {torch.as_uri()}\nvllm @ {vllm.as_uri()}\n")
    env = os.environ | {"UV_NO_CONFIG": "1", "UV_PYTHON_DOWNLOADS": "never"}

    def compile_with(overrides: str, name: str) -> subprocess.CompletedProcess[str]:
        (tmp_path / "overrides.txt").write_text(overrides)
        return subprocess.run(["uv", "pip", "compile", str(tmp_path / "requirements.in"), "--override",
                               str(tmp_path / "overrides.txt"), "--no-index", "--find-links", str(wh),
                               "--only-binary", ":all:", "--format", "pylock.toml", "--quiet", "--no-header",
                               "--no-cache", "-o", str(tmp_path / f"pylock.{name}.toml")],
                              capture_output=True, text=True, env=env)

    without = compile_with("", "without")
    assert without.returncode != 0 and "torch==2.14.0" in without.stderr
    with_override = compile_with(f"torch @ {torch.as_uri()}\n", "with")
    assert with_override.returncode == 0, with_override.stderr
    locked = {p["name"]: p for p in tomllib.loads((tmp_path / "pylock.with.toml").read_text())["packages"]}
    assert locked["torch"]["version"] == "2.14.1" and locked["torch"]["archive"]["path"] == str(torch)


def test_a_lock_whose_inputs_did_not_change_is_up_to_date_without_resolving(factory: Factory, fast_release: Path,
                                                                           monkeypatch, tmp_path: Path) -> None:
    import dataclasses

    from .test_wheelhouse import make_wheel

    wh = factory.wheelhouse
    wh.root.mkdir(parents=True, exist_ok=True)
    made = {n: make_wheel(tmp_path / n, n, v) for n, v in (("torch", "2.14.1"), ("vllm", "0.33.0"),
                                                            ("transformers", "5.20.2"))}
    with wh.lock():
        for n, w in made.items():
            wh.publish([w], {"component": None if n == "transformers" else n, "key": f"k-{n}", "origin": "built"})
    torch, vllm, transformers = (wh.root / made[n].name for n in ("torch", "vllm", "transformers"))
    plan = factory.plan(factory.release(str(fast_release)), ["vllm"])
    monkeypatch.setattr(lockmod, "component_wheels", lambda plan, wheelhouse: {"torch": [torch], "vllm": [vllm]})
    uv = FakeUv([torch, vllm, transformers])

    def lock(p=plan, **kw):
        return lockmod.lock_release(p, wh, uv, "python3.12", "https://pypi.org/simple", offline=True, **kw)

    first = lock()
    assert len(uv.calls) == 1 and not first.up_to_date and len(first.inputs_sha256) == 64
    again = lock()
    assert len(uv.calls) == 1 and again.up_to_date and again.packages == first.packages
    assert not lock(refresh=True).up_to_date and len(uv.calls) == 2
    assert not lock(dataclasses.replace(plan, pins={**plan.pins, "transformers": "5.20.1"})).up_to_date  # a pin
    assert len(uv.calls) == 3
    inputs = lock().inputs_sha256  # written again with the release's own pins
    assert len(uv.calls) == 4 and lockmod.fresh_lock(wh, "fast", inputs) is not None
    transformers.unlink()  # a locked wheel gone from the wheelhouse: not fresh, resolve again
    assert lockmod.fresh_lock(wh, "fast", inputs) is None
