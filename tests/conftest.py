"""Shared fixtures: the repository's recipes, a fixed fake host, and factories on temp dirs."""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import click.testing
import pytest

import wheelfactory.cli.app
from wheelfactory.host.facts import Host, detect_host
from wheelfactory.pipeline.factory import Factory

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "recipes"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
FATBIN_SOURCES = Path(__file__).resolve().parent / "data" / "fatbin"
CI_RELEASES = Path(__file__).resolve().parent / "releases"

# A Spark-like host, fixed so plan tests do not depend on the machine running them.
# The smallest complete release: a target and one component; tests add what they need below it.
MINIMAL_RELEASE = """
[target]
python = "3.12"
cuda = "13.1.0"
cuda_arch_list = ["12.1a"]
platform = "linux_aarch64"
[components.nccl]
version = "2.29.2-1"
"""
SPARK = Host(platform="linux_aarch64", cuda_home="/usr/local/cuda", toolkit="13.1", cpus=20, mem_available_gb=110.0)


class HermeticGuard:
    """The fast tier is hermetic: a test not marked `slow` may neither reach the network (a socket
    connect to anything but an AF_UNIX path) nor start a process (subprocess.Popen, os.posix_spawn,
    os.fork, os.system). A test that needs either is marked slow, or calls the CLI in-process
    (`invoke` below) instead of through `run_cli`.

    The guard is installed around each phase (setup, call, teardown) of every fast test, so it also
    covers the fixtures that test sets up. A violation fails the test with pytest.fail (a
    BaseException, so no `except OSError` in the code under test can swallow it) and is recorded, so
    a violation that something swallowed anyway still fails the test when its phase ends.
    """

    def __init__(self) -> None:
        self.test = ""
        self.violations: list[str] = []
        self._saved: list[tuple[object, str, object]] = []

    def _refuse(self, what: str) -> None:
        message = (f"{self.test}: {what}. Tests not marked `slow` are hermetic (no network, no subprocess): "
                   "call the CLI in-process with tests.conftest.invoke, or mark the test @pytest.mark.slow "
                   "if it really runs an external tool")
        self.violations.append(message)
        pytest.fail(message, pytrace=True)

    def _patch(self, owner: object, name: str, replacement: object) -> None:
        if hasattr(owner, name):
            self._saved.append((owner, name, getattr(owner, name)))
            setattr(owner, name, replacement)

    def install(self, test: str) -> None:
        self.test, self.violations = test, []
        guard = self
        real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

        def connect(sock, address):
            if sock.family != socket.AF_UNIX:
                guard._refuse(f"network access: socket connect to {address!r}")
            return real_connect(sock, address)

        def connect_ex(sock, address):
            if sock.family != socket.AF_UNIX:
                guard._refuse(f"network access: socket connect_ex to {address!r}")
            return real_connect_ex(sock, address)

        real_getaddrinfo = socket.getaddrinfo

        def getaddrinfo(host, *args, **kwargs):
            # A name lookup asks a DNS server; a numeric address or localhost asks nobody.
            name = host.decode() if isinstance(host, bytes) else host
            if name not in (None, "", "localhost") and not _numeric(name):
                guard._refuse(f"network access: name lookup of {name!r}")
            return real_getaddrinfo(host, *args, **kwargs)

        def execute_child(popen, args, *rest, **kwargs):
            guard._refuse(f"subprocess start: {args!r}")

        def refused(what: str):
            def call(*args, **kwargs):
                guard._refuse(f"process start: {what}({', '.join(repr(a) for a in args[:2])})")
            return call

        self._patch(socket.socket, "connect", connect)
        self._patch(socket.socket, "connect_ex", connect_ex)
        self._patch(socket, "getaddrinfo", getaddrinfo)
        self._patch(subprocess.Popen, "_execute_child", execute_child)
        for name in ("posix_spawn", "posix_spawnp", "fork", "forkpty", "system"):
            self._patch(os, name, refused(f"os.{name}"))

    def remove(self) -> list[str]:
        while self._saved:
            owner, name, original = self._saved.pop()
            setattr(owner, name, original)
        return self.violations


def pytest_sessionstart(session):
    """The host's facts are read once per process (detect_host is cached), with `nvcc --version`
    where a CUDA toolkit is installed: read them here, before any test, so that a fast test planning
    through the CLI in-process sees the real host as a subprocess of the CLI did, and starts nothing."""
    detect_host()


def _numeric(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return True
    except ValueError:
        return False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    yield from _hermetic(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    yield from _hermetic(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    if nextitem is None:
        # The session's last teardown also finalizes session-scoped fixtures that slow tests set up
        # (images to remove, servers to stop): not this test's doing, so not held to its guard.
        yield
        return
    yield from _hermetic(item)


def _hermetic(item):
    if item.get_closest_marker("slow") is not None:
        yield
        return
    guard = HermeticGuard()
    guard.install(item.nodeid)
    try:
        outcome = yield
    finally:
        violations = guard.remove()
    if violations and outcome.excinfo is None:
        # Refused, and the refusal swallowed on the way (an `except BaseException`): still a failure.
        outcome.force_exception(pytest.fail.Exception(violations[0], pytrace=False))


@pytest.fixture
def factory(tmp_path: Path) -> Factory:
    return Factory(RECIPES, tmp_path / "wheelhouse", tmp_path / "cache", host_probe=lambda: SPARK)


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    """Run the real `wheelfactory` entry point in a subprocess."""
    full_env = dict(os.environ) | (env or {})
    return subprocess.run([sys.executable, "-m", "wheelfactory", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def invoke(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the `wheelfactory` entry point in this process, as `run_cli` runs it in a subprocess:
    the same `main()` (its error messages and exit codes), given `args` as the command line, with
    `env` added to the environment and `cwd` as the working directory for the call. Only the signal
    handlers main() installs are left out (pytest's own must stay). Returns what run_cli returns:
    returncode, stdout and stderr."""
    runner = click.testing.CliRunner()
    code = 0
    with contextlib.ExitStack() as stack:
        stdout, stderr, _ = stack.enter_context(runner.isolation(input=input, env=env))
        if cwd is not None:
            stack.enter_context(contextlib.chdir(cwd))
        stack.enter_context(_patched(sys, "argv", ["wheelfactory", *args]))
        stack.enter_context(_patched(wheelfactory.cli.app, "install_handlers", lambda: None))
        try:
            wheelfactory.cli.app.main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if e.code is not None and not isinstance(e.code, int):
                print(e.code, file=sys.stderr)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        out, err = stdout.getvalue().decode(), stderr.getvalue().decode()
    return subprocess.CompletedProcess(["wheelfactory", *args], code, out, err)


@contextlib.contextmanager
def _patched(owner: object, name: str, value: object):
    saved = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, saved)


needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").exists(),
                                reason="needs nvcc (CUDA toolkit)")


@contextlib.contextmanager
def scratch(tmp_path_factory, name: str):
    """A directory for a module's fixture, removed when the module is done (CI's disk is small and
    shared: a session's leftovers add up to more than it has). WHEELFACTORY_TEST_KEEP=1 keeps it."""
    path = tmp_path_factory.mktemp(name)
    yield path
    if not os.environ.get("WHEELFACTORY_TEST_KEEP"):
        shutil.rmtree(path, ignore_errors=True)


# Set before the session (to keep them across sessions), or None: the tests then make their own.
USER_TOOLKITS_DIR = os.environ.get("WHEELFACTORY_TOOLKITS_DIR")
USER_UV_CACHE_DIR = os.environ.get("WHEELFACTORY_UV_CACHE_DIR")


def _session_dir(tmp_path_factory, variable: str, name: str):
    """A directory for the whole session through an environment variable the factory reads; a
    variable already set (yours, to keep the directory across sessions) is used as it is."""
    if os.environ.get(variable):
        yield Path(os.environ[variable])
        return
    shared = tmp_path_factory.mktemp(name)
    os.environ[variable] = str(shared)
    yield shared
    del os.environ[variable]


@pytest.fixture(scope="session", autouse=True)
def shared_toolkits(tmp_path_factory):
    """One directory of CUDA toolkit wheels and assembled roots for the whole session (~1.3 GB of
    wheels and ~2 GB unpacked per CUDA version), shared by every build's cache directory through
    WHEELFACTORY_TOOLKITS_DIR."""
    yield from _session_dir(tmp_path_factory, "WHEELFACTORY_TOOLKITS_DIR", "toolkits")


@pytest.fixture(scope="module", autouse=True)
def module_uv_cache(tmp_path_factory):
    """A uv cache per test module for its build venvs and `venv` installs (WHEELFACTORY_UV_CACHE_DIR),
    removed with the module. Per module, not per session: uv keys a wheel installed from a local
    wheelhouse by its path, so each test wheelhouse's torch is unpacked anew (700 MB each), and one
    session-wide cache grew to 6.8 GB on CI's small disk; PyPI downloads repeat per module instead
    (small ones: torch comes from a local wheel). A WHEELFACTORY_UV_CACHE_DIR of yours is used as it is."""
    if USER_UV_CACHE_DIR:
        yield Path(USER_UV_CACHE_DIR)
        return
    with scratch(tmp_path_factory, "uv-cache") as cache, pytest.MonkeyPatch.context() as mp:
        mp.setenv("WHEELFACTORY_UV_CACHE_DIR", str(cache))
        yield cache


@pytest.fixture(scope="session")
def ci_wheelhouse(tmp_path_factory) -> tuple[Path, Path]:
    """The CI release built and locked (with its -t5 sibling) through the real CLI, once per session.

    WHEELFACTORY_TEST_WHEELHOUSE / WHEELFACTORY_TEST_CACHE reuse an existing wheelhouse and cache
    (the build and lock steps then find everything cached).
    """
    root = tmp_path_factory.mktemp("ci")
    wheelhouse = Path(os.environ.get("WHEELFACTORY_TEST_WHEELHOUSE", root / "wheelhouse"))
    cache = Path(os.environ.get("WHEELFACTORY_TEST_CACHE", root / "cache"))
    common = ["--wheelhouse", str(wheelhouse), "--cache-dir", str(cache)]
    # A uv cache of its own, gone once built: the module that first asks for this fixture (the
    # image tests) would otherwise carry the build venvs' ~3 GB of unpacked wheels to its end.
    with scratch(tmp_path_factory, "ci-uv") as uv_cache, pytest.MonkeyPatch.context() as mp:
        if not USER_UV_CACHE_DIR:
            mp.setenv("WHEELFACTORY_UV_CACHE_DIR", str(uv_cache))
        for args in (["build", "-r", str(CI_RELEASES / "ci.toml"), "vllm"],
                     ["lock", "-r", str(CI_RELEASES / "ci.toml")],
                     ["lock", "-r", str(CI_RELEASES / "ci-t5.toml")]):
            r = run_cli(*common, *args)
            assert r.returncode == 0, f"wheelfactory {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
    return wheelhouse, cache


@functools.cache
def _built_fatbin_dir() -> Path | None:
    # The toolkit's own path first, as cuobjdump.txt was recorded: nvcc's device-link stub (in
    # nvcc_shared.so) embeds where nvcc was started from, so a wrapper elsewhere changes its size.
    default = "/usr/local/cuda/bin/nvcc"
    nvcc = os.environ.get("NVCC") or (default if Path(default).exists() else shutil.which("nvcc"))
    if not nvcc or not Path(nvcc).exists():
        return None
    out = Path(tempfile.mkdtemp(prefix="wf-fatbin-"))
    subprocess.run(["bash", str(FATBIN_SOURCES / "make_fixtures.sh"), str(out)], check=True,
                   env=dict(os.environ) | {"NVCC": nvcc}, capture_output=True)
    return out


def fatbin_fixture(name: str) -> Path:
    """A small ELF file with device code, built from tests/data/fatbin/ by its make_fixtures.sh with
    the real nvcc, once per session (the binaries are generated, never committed); skips without nvcc."""
    built = _built_fatbin_dir()
    if built is None:
        pytest.skip("needs nvcc to build the fatbin fixtures")
    return built / name


def docker_or_skip(base: str = "local/debian-py:bookworm", setup: str = ".ci/docker-engine.sh"):
    """A Docker client whose engine answers and has `base`, else skip the caller saying what to run."""
    from assemble.docker import Docker  # only the docker-marked modules need it

    d = Docker()
    if error := d.engine_error():
        pytest.skip(f"no Docker engine answers ({d.binary}: {error}); run .ci/docker-engine.sh")
    if d.inspect(base) is None:
        pytest.skip(f"base image {base} is missing; run {setup}")
    return d
