"""A build step's life beyond the happy path: a failed step resumes, a dead one starts over, the
wheelhouse lock is held only to publish, the venv installer is injectable, and the build inherits
only the allowlisted part of the factory's environment."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import pytest

from wheelfactory.core.errors import BuildError, LockedError
from wheelfactory.host.facts import Host
from wheelfactory.pipeline.buildenv import inherited_environ
from wheelfactory.pipeline.factory import Factory
from wheelfactory.pipeline.stepbuild import STATE_FILE
from wheelfactory.store.wheelhouse import Wheelhouse
from wheelfactory.toolchain.installer import PipInstaller

HOST = Host("linux_x86_64", None, "none", cpus=2, mem_available_gb=8.0)

# A recipe that "compiles" one object into its source tree (once per tree), logs every hook call
# to an events file outside the cache, and fails at the end while a flag file exists.
RECIPE = '''
import os
from pathlib import Path
from wheelfactory.core.errors import BuildError
from wheelfactory.planning.recipe import Recipe
from wheelfactory.store.wheelpack import pack_tree

RECIPE = Recipe(name="c", summary="test", source=None, outputs=("c",))
EVENTS = Path({events!r})
FAIL = Path({fail!r})

def _event(text):
    with EVENTS.open("a") as f:
        f.write(text + "\\n")

def prepare(ctx):
    _event("prepare")

def build(ctx):
    obj = ctx.src / "obj.o"
    if not obj.exists():
        obj.write_text("compiled")
        _event("compile")
    ctx.run(["sh", "-c", "env > " + str(EVENTS.parent / "build.env")])
    if FAIL.exists():
        raise BuildError("[c] the link failed")
    if FAIL.with_name("INTERRUPT").exists():
        raise KeyboardInterrupt
    tree = ctx.work / "t"
    (tree / "c").mkdir(parents=True, exist_ok=True)
    (tree / "c" / "__init__.py").write_text("")
    return [pack_tree(tree, "c", "1.0", "py3-none-any", ctx.dist, summary="t")]
'''


def setup(tmp_path: Path) -> Factory:
    recipes = tmp_path / "recipes"
    (recipes / "releases").mkdir(parents=True)
    src = tmp_path / "src"
    src.mkdir()
    (src / "README").write_text("source")
    (recipes / "c.py").write_text(RECIPE.format(events=str(tmp_path / "events"), fail=str(tmp_path / "FAIL")))
    (recipes / "releases" / "r.toml").write_text(
        "[target]\npython = '3.11'\ncuda = '13.0'\ncuda_arch_list = ['9.0']\nplatform = 'linux_x86_64'\n"
        f"[components.c]\nversion = '1.0'\nsource = {{ path = '{src}' }}\n")
    return Factory(recipes, tmp_path / "wh", tmp_path / "cache", host_probe=lambda: HOST, system_cuda=True)


def build(f: Factory, said: list[str] | None = None, installer=None, **options):
    plan = f.plan(f.release("r"))
    echo = said.append if said is not None else (lambda m: None)
    return f.executor(plan, echo=echo, installer=installer, python=shutil.which("python3"), **options).build()


def events(tmp_path: Path) -> list[str]:
    return (tmp_path / "events").read_text().split()


@pytest.mark.slow  # venvs, pip, sh
def test_a_failed_step_resumes_without_preparing_or_compiling_again(tmp_path):
    f = setup(tmp_path)
    (tmp_path / "FAIL").touch()
    with pytest.raises(BuildError, match="the next run of this step resumes it; --fresh starts over"):
        build(f)
    assert events(tmp_path) == ["prepare", "compile"]
    (tmp_path / "FAIL").unlink()
    said: list[str] = []
    build(f, said)
    assert events(tmp_path) == ["prepare", "compile"]  # neither prepared nor compiled again
    assert any("resuming the work tree a run left (failed)" in m for m in said)
    assert [e["component"] for e in f.wheelhouse.manifest().values()] == ["c"]
    assert not list((f.cache_dir / "work").glob("c-*/src"))  # a finished step's tree is removed


@pytest.mark.slow  # venvs, pip, sh
def test_an_interrupted_step_says_its_tree_is_kept_and_how_to_resume_or_drop_it(tmp_path):
    f = setup(tmp_path)
    (tmp_path / "INTERRUPT").touch()
    said: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        build(f, said)
    [line] = [m for m in said if "interrupted:" in m]
    work = next((f.cache_dir / "work").glob("c-*[!k]"))
    assert line.startswith("[c] interrupted: the work tree (") and f"is kept at {work}; the next run" in line
    assert "`--fresh` starts over, `wheelfactory cache gc` removes it" in line
    (tmp_path / "INTERRUPT").unlink()
    said.clear()
    build(f, said)
    assert any("resuming the work tree a run left (interrupted)" in m for m in said)


@pytest.mark.slow
def test_fresh_starts_over(tmp_path):
    f = setup(tmp_path)
    (tmp_path / "FAIL").touch()
    with pytest.raises(BuildError):
        build(f)
    (tmp_path / "FAIL").unlink()
    build(f, fresh=True)
    assert events(tmp_path) == ["prepare", "compile", "prepare", "compile"]


@pytest.mark.slow
def test_a_tree_whose_run_died_is_not_resumed(tmp_path):
    f = setup(tmp_path)
    (tmp_path / "FAIL").touch()
    with pytest.raises(BuildError):
        build(f)
    # What a SIGKILLed run leaves: prepared, no end recorded, its pid gone.
    state_file = next(p for p in (f.cache_dir / "work").glob("c-*") if p.is_dir()) / STATE_FILE
    state = json.loads(state_file.read_text())
    del state["stopped"]
    state["pid"] = 2**22 + 7  # above pid_max's default: no such process
    state_file.write_text(json.dumps(state))
    (tmp_path / "FAIL").unlink()
    said: list[str] = []
    build(f, said)
    assert events(tmp_path) == ["prepare", "compile", "prepare", "compile"]
    assert any("was left by a run that died; starting over" in m for m in said)


def _hold_wheelhouse(root: str, started, release) -> None:
    with Wheelhouse(Path(root)).lock():
        started.set()
        release.wait(60)


@pytest.mark.slow
def test_the_wheelhouse_lock_is_taken_only_to_publish(tmp_path):
    """A build runs while another process holds the wheelhouse lock; only publishing waits, and
    with --wait it gives up with exit 3 naming the holder, keeping the built wheels for the next run."""
    f = setup(tmp_path)
    started, release = multiprocessing.Event(), multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold_wheelhouse, args=(str(f.wheelhouse_dir), started, release))
    holder.start()
    try:
        assert started.wait(10)
        said: list[str] = []
        with pytest.raises(LockedError, match=rf"held by pid {holder.pid} .*gave up after 1s") as e:
            build(f, said, wait=1.0)
        assert e.value.exit_code == 3
        assert "the next run publishes them without building again" in str(e.value)
        assert events(tmp_path) == ["prepare", "compile"]  # it built while the lock was held
        assert any(f"waiting to publish: the wheelhouse lock is held by pid {holder.pid}" in m for m in said)
        assert not list(f.wheelhouse_dir.glob("*.whl"))
    finally:
        release.set()
        holder.join()
    said = []
    build(f, said)
    assert events(tmp_path) == ["prepare", "compile"]  # published from staged/, not built again
    assert any("publishing the wheels an earlier run built" in m for m in said)
    assert [e["component"] for e in f.wheelhouse.manifest().values()] == ["c"]
    assert not list((f.cache_dir / "staged").glob("*/*.whl"))  # the staged copy is gone once published


class RecordingInstaller(PipInstaller):
    """pip, but every call is written down."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def install(self, runner, python, requirements, find_links, env):
        self.calls.append([str(r) for r in requirements])
        super().install(runner, python, requirements, find_links, env)


@pytest.mark.slow
def test_the_installer_is_injected_and_the_build_env_is_an_allowlist(tmp_path, monkeypatch):
    monkeypatch.setenv("WF_UNLISTED_SETTING", "leaks-if-seen")
    monkeypatch.setenv("LC_MEASUREMENT", "en_GB.UTF-8")
    monkeypatch.setenv("HF_TOKEN", "hf_canary_0123")
    f = setup(tmp_path)
    installer = RecordingInstaller()
    build(f, installer=installer)
    assert installer.calls == [["build", "wheel", "setuptools"]]
    env = dict(line.split("=", 1) for line in (tmp_path / "build.env").read_text().splitlines() if "=" in line)
    assert "WF_UNLISTED_SETTING" not in env and "HF_TOKEN" not in env
    assert env["LC_MEASUREMENT"] == "en_GB.UTF-8"
    assert env["SOURCE_DATE_EPOCH"] == "315532800" and env["PIP_CONFIG_FILE"] == os.devnull


def test_inherited_environment_is_the_allowlist_plus_what_the_recipe_declares():
    parent = {"PATH": "/usr/bin", "HOME": "/home/u", "LANG": "C.UTF-8", "LC_ALL": "C", "https_proxy": "http://p:3128",
              "SSL_CERT_FILE": "/etc/ca.pem", "CCACHE_MAXSIZE": "80G", "PIP_INDEX_URL": "http://evil/simple",
              "PYTHONPATH": "/tmp/x", "AWS_SECRET_ACCESS_KEY": "s", "GITHUB_TOKEN": "t", "TORCH_CUDA_ARCH_LIST": "8.0",
              "MY_CACHE": "/big", "MY_API_TOKEN": "t2"}
    env = inherited_environ(parent, pass_env=("MY_CACHE", "MY_API_TOKEN"))
    assert set(env) == {"PATH", "HOME", "LANG", "LC_ALL", "https_proxy", "SSL_CERT_FILE", "CCACHE_MAXSIZE",
                        "MY_CACHE", "PIP_CONFIG_FILE", "PIP_DISABLE_PIP_VERSION_CHECK"}
    # a stray TORCH_CUDA_ARCH_LIST in the shell would change what is compiled without changing the key
    assert "TORCH_CUDA_ARCH_LIST" not in env
    assert env["PIP_CONFIG_FILE"] == os.devnull


def test_the_wait_for_a_lock_is_bounded_and_names_the_holder(tmp_path):
    """--wait: a lock file held by this very process through another descriptor times out."""
    import fcntl

    from wheelfactory.core.interrupt import file_lock

    path = tmp_path / "x.lock"
    path.write_text("pid 4242 (wheelfactory build torch) since 2026-11-27 10:00:00\n")
    with open(path, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        told: list[str] = []
        t0 = time.monotonic()
        with pytest.raises(LockedError, match=r"held by pid 4242 \(wheelfactory build torch\).*gave up after 1s"):
            with file_lock(path, told.append, timeout=1.0):
                pass
        assert time.monotonic() - t0 < 5
        assert told == ["pid 4242 (wheelfactory build torch) since 2026-11-27 10:00:00"]


def test_the_build_commands_options_reach_the_executor(tmp_path, monkeypatch):
    from wheelfactory.pipeline.factory import Factory as FactoryClass

    from .conftest import CI_RELEASES, invoke

    seen: dict[str, object] = {}

    class NoBuild:
        def build(self):
            return []

    def capture(self, plan, echo, installer=None, **options):
        seen.update(options)
        return NoBuild()

    monkeypatch.setattr(FactoryClass, "executor", capture)
    r = invoke("--wheelhouse", str(tmp_path / "wh"), "--cache-dir", str(tmp_path / "cache"), "build", "--offline",
               "--no-host-check", "--fresh", "--wait", "90", "--pip", "-r", str(CI_RELEASES / "ci.toml"), "nccl")
    assert r.returncode == 0, r.stderr
    assert (seen["fresh"], seen["wait"], seen["use_pip"], seen["offline"]) == (True, 90.0, True, True)
    r = invoke("build", "--wait", "-1", "-r", str(CI_RELEASES / "ci.toml"))
    assert r.returncode == 2 and "--wait" in r.stderr


# A recipe whose build starts a long command and reports its process group, for kill tests.
LONG_RECIPE = '''
from pathlib import Path
from wheelfactory.planning.recipe import Recipe
from wheelfactory.store.wheelpack import pack_tree

RECIPE = Recipe(name="c", summary="test", source=None, outputs=("c",))

def build(ctx):
    if not Path("{marker}").exists():
        # the leader ignores SIGTERM (so the parent-death signal does not end it)
        ctx.run(["sh", "-c", "trap '' TERM; echo $$ > {marker}; sleep 300 & wait"])
    tree = ctx.work / "t"
    (tree / "c").mkdir(parents=True, exist_ok=True)
    (tree / "c" / "__init__.py").write_text("")
    return [pack_tree(tree, "c", "1.0", "py3-none-any", ctx.dist, summary="t")]
'''


@pytest.mark.slow
def test_commands_a_killed_factory_left_are_stopped_by_the_next_run(tmp_path):
    """SIGKILL of the factory process alone: its command's group is recorded in the work tree,
    and the next run of the step stops what is still alive before it starts over."""
    import signal
    import subprocess
    import sys

    from .conftest import REPO

    f = setup(tmp_path)
    marker = tmp_path / "leader.pid"
    (f.recipes_dirs[0] / "c.py").write_text(LONG_RECIPE.replace("{marker}", str(marker)))
    release = f.recipes_dirs[0] / "releases" / "r.toml"
    argv = [sys.executable, "-m", "wheelfactory", "--recipes-dir", str(f.recipes_dirs[0]), "--wheelhouse",
            str(f.wheelhouse_dir), "--cache-dir", str(f.cache_dir), "build", "--no-host-check", "--system-cuda",
            "-r", str(release)]
    factory = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), "the build's long command never started"
    leader = int(marker.read_text())
    os.kill(factory.pid, signal.SIGKILL)
    factory.wait()
    time.sleep(0.5)
    assert _running(leader)  # it survived: it ignores the parent-death SIGTERM
    r = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300, input="")
    assert r.returncode == 0, r.stderr
    assert "stopped 1 command(s) a dead run left running" in r.stdout + r.stderr
    assert not _running(leader)


PARENT = '''
import sys
from pathlib import Path
from wheelfactory.run.runner import Runner
Runner("t", Path(sys.argv[1])).run(["sh", "-c", "echo $$ > " + sys.argv[2] + "; exec sleep 300"])
'''


@pytest.mark.slow
def test_a_command_dies_with_the_factory_even_on_sigkill(tmp_path):
    import signal
    import subprocess
    import sys

    from .conftest import REPO

    pidfile = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path / "log"), str(pidfile)], cwd=REPO)
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(pidfile.read_text())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 5
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(child)  # the parent-death signal ended it


def _running(pid: int) -> bool:
    """Alive and not a zombie (a container's pid 1 may be slow to reap an orphan)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


MAKE_RECIPE = '''
from pathlib import Path
from wheelfactory.planning.recipe import Recipe
from wheelfactory.store.wheelpack import pack_tree

RECIPE = Recipe(name="c", summary="test", source=None, outputs=("c",))

def build(ctx):
    ctx.run(["make", "-j1", "-C", str(ctx.src), "FAILFLAG={fail}", "EVENTS={events}"])
    tree = ctx.work / "t"
    (tree / "c").mkdir(parents=True, exist_ok=True)
    (tree / "c" / "__init__.py").write_text("")
    return [pack_tree(tree, "c", "1.0", "py3-none-any", ctx.dist, summary="t")]
'''

MAKEFILE = """all: a.o b.o c.o
%.o: %.c
\t@if [ "$@" = c.o ] && [ -e "$(FAILFLAG)" ]; then echo "$@: injected failure"; exit 1; fi
\tgcc -c $< -o $@
\techo $@ >> $(EVENTS)
"""


@pytest.mark.slow  # gcc and make
def test_a_failed_make_build_resumes_without_recompiling_finished_objects(tmp_path):
    f = setup(tmp_path)
    src = tmp_path / "src"
    (src / "Makefile").write_text(MAKEFILE)
    for name in "abc":
        (src / f"{name}.c").write_text(f"int {name}(void) {{ return 1; }}\n")
    (f.recipes_dirs[0] / "c.py").write_text(MAKE_RECIPE.format(fail=tmp_path / "FAIL", events=tmp_path / "objects"))
    (tmp_path / "FAIL").touch()
    with pytest.raises(BuildError, match="c.o: injected failure"):
        build(f)
    assert (tmp_path / "objects").read_text().split() == ["a.o", "b.o"]
    (tmp_path / "FAIL").unlink()
    build(f)
    assert (tmp_path / "objects").read_text().split() == ["a.o", "b.o", "c.o"]  # a.o and b.o kept


def test_the_step_environment_points_every_compiler_launcher_at_the_ccache_it_was_given(factory, monkeypatch):
    from wheelfactory.pipeline.buildenv import StepPaths, step_environment

    from .conftest import CI_RELEASES

    monkeypatch.delenv("CCACHE_MAXSIZE", raising=False)
    step = factory.plan(factory.release(str(CI_RELEASES / "ci.toml"))).step("nccl")
    paths = StepPaths(src=Path("/w/src"), work=Path("/w"), venv=Path("/w/venv"), site=Path("/w/site"),
                      cache=Path("/c"))
    env = step_environment(step, paths, cuda_home="/cuda", jobs=3, offline=False, ccache="/t/ccache", trees={},
                           parent_path="/usr/bin")
    assert {k: env[k] for k in env if "CCACHE" in k or k.endswith("_LAUNCHER")} == {
        "CCACHE_DIR": "/c/ccache", "CCACHE_MAXSIZE": "40G", "CCACHE_BASEDIR": "/w", "CCACHE_NOHASHDIR": "1",
        "CMAKE_C_COMPILER_LAUNCHER": "/t/ccache", "CMAKE_CXX_COMPILER_LAUNCHER": "/t/ccache",
        "CMAKE_CUDA_COMPILER_LAUNCHER": "/t/ccache"}
    assert env["PATH"] == "/w/venv/bin:/cuda/bin:/usr/bin" and env["MAX_JOBS"] == "3"
    without = step_environment(step, paths, cuda_home=None, jobs=3, offline=True, ccache=None, trees={},
                               parent_path="/usr/bin")
    assert not [k for k in without if "CCACHE" in k or k.endswith("_LAUNCHER")]
    assert without["UV_OFFLINE"] == "1" and "CUDA_HOME" not in without


def test_until_configure_stops_without_announcing_a_build_phase(tmp_path, capsys, factory):
    from types import SimpleNamespace

    from wheelfactory.pipeline.stepbuild import StepBuild, StoppedAfter
    from wheelfactory.run.progress import PLAIN
    from wheelfactory.run.runner import Runner

    step = factory.plan(factory.release("0.33.0-t5"), ["nccl"]).steps[0]
    runner = Runner("nccl", tmp_path / "log", output=PLAIN)
    sb = StepBuild(step, runner, SimpleNamespace(work_dir=lambda s: tmp_path / "work"), until="configure")
    runner.set_phase("configure")
    with pytest.raises(StoppedAfter):
        sb._done("configure")
    err = capsys.readouterr().err
    assert "[nccl] phase configure" in err and "phase build" not in err
    assert "phase configure done; stopping here (--until configure)" in (tmp_path / "log").read_text()
    sb.until = None
    sb._done("configure")  # without --until the status moves on to the build
    assert "[nccl] phase build" in capsys.readouterr().err
