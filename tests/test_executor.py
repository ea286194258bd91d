"""The executor on small recipes of its own: failures leave the wheelhouse as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from wheelfactory.core.errors import BuildError
from wheelfactory.host.facts import Host
from wheelfactory.pipeline.factory import Factory
from wheelfactory.store.wheelhouse import READERS_LOCK
from wheelfactory.toolchain.installer import check_installed_from

HOST = Host("linux_x86_64", None, "none", cpus=2, mem_available_gb=8.0)

RECIPE = '''
from pathlib import Path
from wheelfactory.planning.recipe import Recipe
from wheelfactory.sources.kinds import LocalSource
from wheelfactory.store.wheelpack import pack_tree

RECIPE = Recipe(name={name!r}, summary="test", source=None, outputs=({name!r},), depends_on={deps!r})

def build(ctx):
    {body}
'''

OK_BODY = ("tree = ctx.work / 't'; (tree / 'pkg').mkdir(parents=True); (tree / 'pkg' / '__init__.py').write_text('')\n"
           "    return [pack_tree(tree, ctx.step.component, '1.0', 'py3-none-any', ctx.dist, summary='t')]")


def setup(tmp_path: Path, bodies: dict[str, tuple[str, tuple[str, ...]]]) -> tuple[Factory, Path]:
    recipes = tmp_path / "recipes"
    (recipes / "releases").mkdir(parents=True)
    src = tmp_path / "src"
    src.mkdir()
    (src / "README").write_text("source")
    release = "[target]\npython = '3.11'\ncuda = '13.0'\ncuda_arch_list = ['9.0']\nplatform = 'linux_x86_64'\n"
    for name, (body, deps) in bodies.items():
        (recipes / f"{name}.py").write_text(RECIPE.format(name=name, deps=deps, body=body))
        release += f"[components.{name}]\nversion = '1.0'\nsource = {{ path = '{src}' }}\n"
    (recipes / "releases" / "r.toml").write_text(release)
    # These recipes compile nothing: the host's (absent) toolkit, not 1 GB of CUDA wheels.
    f = Factory(recipes, tmp_path / "wh", tmp_path / "cache", host_probe=lambda: HOST, system_cuda=True)
    return f, src


def build(f: Factory, *targets: str):
    plan = f.plan(f.release("r"), targets)
    return f.executor(plan, echo=lambda m: None, python=shutil.which("python3")).build()


def snapshot(root: Path) -> dict[str, bytes]:
    # the lock files (the publish lock, the readers' lock a build takes to read its dependencies) are
    # not the wheelhouse's content
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.name not in (".lock", READERS_LOCK)}


@pytest.mark.slow  # runs a build: venv, pip, sh
def test_failed_build_shows_command_exit_code_tail_and_log_and_changes_nothing(tmp_path):
    body = ("(ctx.dist / 'b-1.0-py3-none-any.whl').write_text('partial')\n"
            "    ctx.run(['sh', '-c', 'for i in $(seq 1 60); do echo line $i; done; exit 3'])")
    f, _ = setup(tmp_path, {"a": (OK_BODY, ()), "b": (body, ("a",))})
    build(f, "a")
    before = snapshot(f.wheelhouse.root)
    with pytest.raises(BuildError) as e:
        build(f, "b")
    msg = str(e.value)
    assert "exit code 3" in msg and "$ sh -c" in msg
    assert "line 60" in msg and "line 20" not in msg  # the last 40 lines only
    log = next((f.cache_dir / "logs").glob("b-*.log"))
    assert f"full log: {log}" in msg
    assert all(line.startswith("[b] ") for line in log.read_text().splitlines())
    assert "re-enter it with `source" in msg and (f.cache_dir / "work").is_dir()
    assert snapshot(f.wheelhouse.root) == before  # the partial wheel never became visible


@pytest.mark.slow  # runs a build: venv, pip, sh
def test_interrupted_build_publishes_nothing(tmp_path):
    f, _ = setup(tmp_path, {"a": ("raise KeyboardInterrupt", ())})
    with pytest.raises(KeyboardInterrupt):
        build(f, "a")
    assert not f.wheelhouse.manifest_path.exists()
    assert not list(f.wheelhouse.root.glob("*.whl"))


@pytest.mark.slow  # runs a build: venv, pip
def test_undeclared_output_is_refused(tmp_path):
    body = OK_BODY.replace("ctx.step.component", "'surprise'")
    f, _ = setup(tmp_path, {"a": (body, ())})
    with pytest.raises(BuildError, match="does not declare"):
        build(f, "a")
    assert not f.wheelhouse.manifest_path.exists()


@pytest.mark.slow  # runs builds: venv, pip
def test_success_then_noop_then_rebuild_on_source_change(tmp_path):
    f, src = setup(tmp_path, {"a": (OK_BODY, ()), "b": (OK_BODY, ("a",))})
    assert [r.action for r in build(f, "b")] == ["build", "build"]
    assert [r.action for r in build(f, "b")] == ["cached", "cached"]
    manifest = f.wheelhouse.manifest()
    assert {e["component"] for e in manifest.values()} == {"a", "b"}
    assert all(Path(e["log"]).exists() for e in manifest.values())
    (src / "README").write_text("changed")
    assert [r.action for r in build(f, "b")] == ["build", "build"]


@pytest.mark.slow  # runs a build: venv, pip
def test_a_dependency_installed_from_elsewhere_is_caught(tmp_path):
    f, _ = setup(tmp_path, {"a": (OK_BODY, ())})
    build(f, "a")
    wheel = next(f.wheelhouse.root.glob("a-1.0-*.whl"))
    site = tmp_path / "site"
    dist_info = site / "a-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "direct_url.json").write_text('{"url": "https://pypi.org/a-1.0-py3-none-any.whl"}')
    with pytest.raises(BuildError, match="not the wheelhouse file"):
        check_installed_from(site, wheel)
    (dist_info / "direct_url.json").write_text(f'{{"url": "{wheel.as_uri()}", "archive_info": {{}}}}')
    check_installed_from(site, wheel)
    (dist_info / "direct_url.json").unlink()
    with pytest.raises(BuildError, match="no direct_url.json"):
        check_installed_from(site, wheel)
