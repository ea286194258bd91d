"""A build beside a rebuild: a build venv reads its dependency wheels under the wheelhouse's read
lock, so a concurrent `build --rebuild` of a dependency publishes only after (it once pulled the
old torch into attic/ from under a flashinfer build: FileNotFoundError); every exception inside a
step is the step's failure message; a stop signal that arrives once a publish finished says so."""

from __future__ import annotations

import errno
import json
import shutil
import threading
from pathlib import Path

import pytest

from tests.test_executor import OK_BODY, setup
from wheelfactory.core.errors import BuildError, LockedError
from wheelfactory.pipeline.stepbuild import (
    BuiltStep,
    StepBuild,
    StepServices,
    dependency_wheels,
    step_build_requirements,
    step_failure,
)
from wheelfactory.store.wheelpack import pack_tree
from wheelfactory.toolchain.installer import PipInstaller
from wheelfactory.toolchain.pydeps import record_pins


class FakeRunner:
    """Runs nothing: the steps under test start no command of their own before they fail."""

    def __init__(self):
        self.commands: list[list[str]] = []
        self.groups_file = None

    def run(self, cmd, **_kw):
        self.commands.append([str(c) for c in cmd])
        if "venv" in cmd:
            (Path(str(cmd[-1])) / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
        return ""

    def note(self, _text):
        pass


def _services(f, plan, **kw) -> StepServices:
    return StepServices(plan=plan, recipes=f.recipes, host=f.host, wheelhouse=f.wheelhouse, sources=f.sources,
                        installer=kw.pop("installer", None), cache_dir=f.cache_dir, python="python3",
                        index_url=f.index_url, echo=lambda m: None, **kw)


def _publish(f, plan, component: str, tmp: Path) -> Path:
    tree = tmp / f"tree-{component}"
    (tree / component).mkdir(parents=True)
    (tree / component / "__init__.py").write_text("")
    wheel = pack_tree(tree, component, "1.0", "py3-none-any", tmp / "dist", summary="t")
    with f.wheelhouse.lock():
        f.wheelhouse.publish([wheel], {"component": component, "key": plan.step(component).key})
    return f.wheelhouse.root / wheel.name


def test_readers_share_the_wheelhouse_and_only_a_publish_that_moves_a_wheel_out_waits(tmp_path):
    f, _ = setup(tmp_path, {"a": (OK_BODY, ())})
    plan = f.plan(f.release("r"))
    _publish(f, plan, "a", tmp_path)
    said: list[str] = []

    def publish(dist: str, key: str) -> None:
        tree = tmp_path / f"t-{dist}-{key}"
        (tree / dist).mkdir(parents=True, exist_ok=True)
        (tree / dist / "__init__.py").write_text(key)  # other bytes: another build of it
        wheel = pack_tree(tree, dist, "1.0", "py3-none-any", tmp_path / f"d-{key}", summary="t")
        try:
            with f.wheelhouse.lock(timeout=0.6):
                f.wheelhouse.publish([wheel], {"component": dist, "key": key})
            said.append(f"published {dist}")
        except LockedError as e:
            said.append(str(e))

    with f.wheelhouse.reading(), f.wheelhouse.reading():  # two readers at once
        for args in (("b", "kb"), ("a", "k-rebuilt")):  # a new wheel; a rebuild replacing a's wheel
            t = threading.Thread(target=publish, args=args)
            t.start()
            t.join()
    assert said[0] == "published b"  # adding a wheel moves nothing: readers do not hold it up
    assert said[1].startswith(f"{f.wheelhouse.root}: builds installing from the wheelhouse (.readers.lock): held by "
                              "another process; gave up after 1s")
    publish("a", "k-rebuilt")
    assert said[2] == "published a" and len(list((f.wheelhouse.root / "attic").glob("a-*.whl"))) == 1


def test_a_build_venv_installs_its_dependency_wheels_under_the_read_lock(tmp_path):
    f, _ = setup(tmp_path, {"a": (OK_BODY, ()), "b": (OK_BODY, ("a",))})
    plan = f.plan(f.release("r"))
    dep = _publish(f, plan, "a", tmp_path)
    seen: dict[str, object] = {}

    class RebuildDuringInstall:
        """While the venv installs, a --rebuild of the dependency tries to publish (it must wait)."""

        name = "fake"

        def create_venv(self, runner, python, venv, *, offline, index_url):
            PipInstaller().create_venv(runner, python, venv, offline=offline, index_url=index_url)

        def install(self, runner, python, requirements, find_links, env):
            try:
                with f.wheelhouse.lock(timeout=0.6):
                    f.wheelhouse.quarantine([dep.name])  # what --rebuild's publish does first
                seen["rebuild"] = "published during the install"
            except LockedError:
                seen["rebuild"] = "waited"
            seen["dep there"] = dep.is_file()
            seen["links"] = [str(p) for p in find_links]
            dist = Path(python).parent.parent / "lib" / "python3.11" / "site-packages" / "a-1.0.dist-info"
            dist.mkdir(parents=True)
            (dist / "direct_url.json").write_text(json.dumps({"url": dep.as_uri()}))

    services = _services(f, plan, installer=RebuildDuringInstall(), offline=True)
    step = plan.step("b")
    sb = StepBuild(step, FakeRunner(), services)
    ctx = sb._context()
    ctx.env = {"PATH": "/usr/bin"}
    FakeRunner().run(["python3", "-m", "venv", ctx.venv])
    ctx.src.mkdir(parents=True)
    reqs = [str(p) for p in dependency_wheels(step, plan, f.wheelhouse)] + step_build_requirements(step, ctx.src,
                                                                                                   f.recipes)
    record_pins(services.pydeps, reqs, {})
    t = threading.Thread(target=lambda: sb._install_build_venv(ctx))
    t.start()
    t.join()
    assert seen == {"rebuild": "waited", "dep there": True,
                    "links": [str(f.wheelhouse.root), str(sb.work / "build-requirements")]}


@pytest.mark.parametrize("exc", [FileExistsError(17, "File exists", "/w/wheel-tree/nvidia/nccl/lib"),
                                 RuntimeError("a recipe bug"), KeyError("x")])
def test_any_exception_of_a_hook_is_the_steps_failure(tmp_path, exc):
    f, _ = setup(tmp_path, {"a": (OK_BODY, ())})
    (f.recipes_dir / "a.py").write_text((f.recipes_dir / "a.py").read_text()
                                        + "\ndef prepare(ctx):\n    raise EXC\n")
    recipe_module = f.recipes["a"].module
    recipe_module.EXC = exc
    plan = f.plan(f.release("r"))
    sb = StepBuild(plan.step("a"), FakeRunner(), _services(f, plan, installer=PipInstaller()))
    with pytest.raises(BuildError) as e:
        sb.run()
    first = str(e.value).splitlines()[0]
    assert first == f"[a] build failed: {type(exc).__name__}: {exc}"
    assert f"the work tree is kept at {sb.work}" in str(e.value)


def test_a_full_disk_is_said_plainly():
    e = OSError(errno.ENOSPC, "No space left on device", "/wh/.incoming-x/torch.whl")
    assert step_failure("torch", "publish", e) == ("[torch] publish: no space left on the device writing "
                                                  "/wh/.incoming-x/torch.whl; free some space and run again")


def test_a_full_wheelhouse_is_a_clean_failure_and_the_wheels_stay_staged(tmp_path, monkeypatch):
    f, _ = setup(tmp_path, {"a": (OK_BODY, ())})
    plan = f.plan(f.release("r"))
    ex = f.executor(plan, echo=lambda m: None, python="python3")
    staged = ex._staged_dir(plan.step("a"))
    staged.mkdir(parents=True)
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    wheel = pack_tree(tree, "a", "1.0", "py3-none-any", staged, summary="t")

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device", str(f.wheelhouse.root / wheel.name))
    monkeypatch.setattr(shutil, "copyfile", full)
    with pytest.raises(BuildError) as e:
        ex._publish(plan.step("a"), BuiltStep([wheel], 0, {"origin": "built"}), False, tmp_path / "log")
    assert str(e.value).startswith("[a] publish: no space left on the device writing ")
    assert f"the built wheels stay in {staged}" in str(e.value)
    assert wheel.is_file() and f.wheelhouse.manifest() == {}


def test_an_interrupt_arriving_once_the_publish_finished_says_so_and_leaves_nothing_staged(tmp_path, monkeypatch):
    f, _ = setup(tmp_path, {"a": (OK_BODY, ())})
    plan = f.plan(f.release("r"))
    said: list[str] = []
    ex = f.executor(plan, echo=said.append, python="python3")
    staged = ex._staged_dir(plan.step("a"))
    staged.mkdir(parents=True)
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    wheel = pack_tree(tree, "a", "1.0", "py3-none-any", staged, summary="t")
    real = type(f.wheelhouse).publish

    def publish_then_sigint(self, *a, **k):
        real(self, *a, **k)
        raise KeyboardInterrupt  # the deferred SIGINT, delivered as the publish ends
    monkeypatch.setattr(type(f.wheelhouse), "publish", publish_then_sigint)
    with pytest.raises(KeyboardInterrupt):
        ex._publish(plan.step("a"), BuiltStep([wheel], 0, {"origin": "built"}), False, tmp_path / "log")
    assert said[-1] == f"[a] published {wheel.name} before the interrupt took effect"
    assert not staged.exists() and f.wheelhouse.is_cached(plan.step("a").key)


def test_staged_wheels_already_published_are_not_published_again_by_a_rebuild(tmp_path):
    f, _ = setup(tmp_path, {"a": (OK_BODY, ())})
    plan = f.plan(f.release("r"))
    wheel = _publish(f, plan, "a", tmp_path)
    ex = f.executor(plan, echo=lambda m: None, python="python3")
    step = plan.step("a")
    staged = ex._staged_dir(step)
    staged.mkdir(parents=True)
    shutil.copyfile(wheel, staged / wheel.name)
    (staged / "step.json").write_text(json.dumps({"key": step.key, "wheels": [wheel.name], "origin": {}}))
    assert ex._staged(step) is not None and ex._published(step, ex._staged(step))


def test_an_exception_while_adopting_is_the_steps_failure(tmp_path, monkeypatch):
    import wheelfactory.pipeline.executor as executor_mod

    f, _ = setup(tmp_path, {"a": (OK_BODY, ())})
    plan = f.plan(f.release("r"), adopt=["a=a==1.0"])

    def unreadable(*_a, **_k):
        raise PermissionError(13, "Permission denied", "/cache/adopt/x.whl")
    monkeypatch.setattr(executor_mod, "adopted_wheel", unreadable)
    with pytest.raises(BuildError, match=r"^\[a\] adopt failed: PermissionError: \[Errno 13\] Permission denied: "
                                         r"'/cache/adopt/x\.whl'$"):
        f.executor(plan, echo=lambda m: None, python="python3").build()
