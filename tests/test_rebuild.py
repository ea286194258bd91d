"""build --rebuild COMPONENT / --force: a cached step runs again, the old wheels go to attic/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from wheelfactory.core.errors import InputError
from wheelfactory.pipeline.factory import Factory
from wheelfactory.planning.rebuild import components_to_rebuild
from wheelfactory.run.progress import Timings
from wheelfactory.store.wheelpack import pack_tree

from .test_executor import HOST, OK_BODY, setup

RECIPE = '''
from wheelfactory.planning.recipe import Recipe
RECIPE = Recipe(name="a", summary="test", source=None, outputs=("a",))
'''


def adopt_setup(tmp_path: Path) -> tuple[Factory, Path]:
    """A release whose one component is adopted from a local wheel: no venv, no subprocess."""
    recipes = tmp_path / "recipes"
    (recipes / "releases").mkdir(parents=True)
    (recipes / "a.py").write_text(RECIPE)
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "__init__.py").write_text("")
    wheel = pack_tree(tree, "a", "1.0", "py3-none-any", tmp_path / "dist", summary="t")
    (recipes / "releases" / "r.toml").write_text(
        "[target]\npython = '3.11'\ncuda = '13.0'\ncuda_arch_list = ['9.0']\nplatform = 'linux_x86_64'\n"
        f"[components.a]\nversion = '1.0'\nadopt = '{wheel}'\n")
    return Factory(recipes, tmp_path / "wh", tmp_path / "cache", host_probe=lambda: HOST, system_cuda=True), wheel


def run(f: Factory, rebuild: frozenset[str] = frozenset()):
    return f.executor(f.plan(f.release("r")), echo=lambda m: None, python=shutil.which("python3"),
                      rebuild=rebuild).build()


def test_rebuild_runs_a_cached_step_again_and_moves_the_old_wheel_to_the_attic(tmp_path):
    f, wheel = adopt_setup(tmp_path)
    assert [r.action for r in run(f)] == ["adopt"]
    assert [r.action for r in run(f)] == ["cached"]
    first = f.wheelhouse.manifest()[wheel.name]["published"]
    assert [r.action for r in run(f, frozenset({"a"}))] == ["adopt"]
    # the rebuild's wheel is the same bytes (an adopted file): the attic keeps no copy of them
    assert not (f.wheelhouse.root / "attic").exists()
    assert (f.wheelhouse.root / wheel.name).is_file() and f.wheelhouse.is_cached(f.plan(f.release("r")).steps[0].key)
    assert set(f.wheelhouse.manifest()) == {wheel.name}
    assert f.wheelhouse.manifest()[wheel.name]["published"] >= first


def test_rebuild_names_are_checked_against_the_recipes_and_the_plan(tmp_path):
    f, _ = adopt_setup(tmp_path)
    plan = f.plan(f.release("r"))
    assert components_to_rebuild(plan, ["a"], False, f.recipes) == {"a"}
    assert components_to_rebuild(plan, [], True, f.recipes) == {"a"}
    assert components_to_rebuild(plan, [], False, f.recipes) == frozenset()
    with pytest.raises(InputError, match=r"--rebuild 'aa': unknown component \(did you mean 'a'\?\); known: a"):
        components_to_rebuild(plan, ["aa"], False, f.recipes)
    with pytest.raises(InputError, match=r"--rebuild 'torch': not part of this build \(.* builds a\)"):
        components_to_rebuild(plan, ["torch"], False, ["a", "torch"])


@pytest.mark.slow
def test_a_forced_build_records_its_duration_for_the_next_estimate(tmp_path):
    f, _ = setup(tmp_path, {"a": (OK_BODY, ())})
    plan = f.plan(f.release("r"))
    msgs: list[str] = []
    f.executor(plan, echo=msgs.append, python=shutil.which("python3")).build()
    assert Timings(f.cache_dir).previous("a") is not None
    msgs.clear()
    results = f.executor(plan, echo=msgs.append, python=shutil.which("python3"), rebuild=frozenset({"a"})).build()
    assert [r.action for r in results] == ["build"]
    assert any(": build (--rebuild)" in m and "previous build took" in m for m in msgs), msgs
    # the attic keeps the old build only where its bytes differ from the new one (one copy of any bytes)
    published = next(f.wheelhouse.root.glob("a-1.0-*.whl")).read_bytes()
    assert all(old.read_bytes() != published for old in (f.wheelhouse.root / "attic").glob("*a-1.0-*.whl"))


@pytest.mark.slow
def test_the_recorded_duration_leaves_out_waiting_for_the_wheelhouse_lock(tmp_path):
    import threading

    f, _ = setup(tmp_path, {"a": (OK_BODY, ())})
    plan = f.plan(f.release("r"))
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with f.wheelhouse.lock():
            held.set()
            release.wait(60)

    def echo(msg: str) -> None:  # once the build waits to publish, keep it waiting 4 s more
        if "waiting to publish" in msg:
            threading.Timer(4, release.set).start()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    [result] = f.executor(plan, echo=echo, python=shutil.which("python3")).build()
    holder.join()
    recorded = Timings(f.cache_dir).previous("a")
    assert result.seconds >= 4 and recorded is not None
    # timings.json keeps tenths of a second: 11.48 s of building is recorded as 11.5
    assert recorded <= round(result.seconds - 4, 1) + 0.05


@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
@pytest.mark.parametrize("same_bytes", [False, True], ids=["other-bytes", "the-rebuilds-bytes"])
def test_rebuild_moves_a_symlinked_wheel_to_the_attic_as_the_link_itself(tmp_path, relative, same_bytes):
    """A published wheel replaced by a link to a file kept elsewhere: the rebuild moves the link into
    attic/, still naming the same file, and leaves that file as it was (even when its bytes are the
    rebuild's, which for a plain file would leave no copy in the attic)."""
    f, wheel = adopt_setup(tmp_path)
    run(f)
    content = wheel.read_bytes() if same_bytes else b"the user's own file, not a wheel"
    kept = tmp_path / "elsewhere" / wheel.name
    kept.parent.mkdir()
    kept.write_bytes(content)
    published = f.wheelhouse.root / wheel.name
    published.unlink()
    published.symlink_to(Path("..") / "elsewhere" / wheel.name if relative else kept)
    assert [r.action for r in run(f, frozenset({"a"}))] == ["adopt"]
    moved = f.wheelhouse.root / "attic" / wheel.name
    assert moved.is_symlink() and moved.resolve() == kept.resolve()
    assert kept.read_bytes() == content
    assert published.is_file() and not published.is_symlink()
    assert published.read_bytes() == wheel.read_bytes()


def test_a_dangling_symlinked_wheel_goes_to_the_attic_as_it_is(tmp_path):
    """A link to nothing: moved as it is, never opened (opening it failed the publish)."""
    f, wheel = adopt_setup(tmp_path)
    run(f)
    published = f.wheelhouse.root / wheel.name
    published.unlink()
    published.symlink_to(tmp_path / "gone.whl")
    assert [r.action for r in run(f, frozenset({"a"}))] == ["adopt"]
    moved = f.wheelhouse.root / "attic" / wheel.name
    assert moved.is_symlink() and moved.readlink() == tmp_path / "gone.whl"
    assert published.read_bytes() == wheel.read_bytes()
