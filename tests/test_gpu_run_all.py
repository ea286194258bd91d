"""tests/gpu/run_all.py's logic (selection, skips, exit status, summary) with a stand-in executor:
no GPU and no check is run here."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("run_all", Path(__file__).resolve().parent / "gpu" / "run_all.py")
run_all = importlib.util.module_from_spec(_spec)
sys.modules["run_all"] = run_all  # dataclasses look their module up there
_spec.loader.exec_module(run_all)  # type: ignore[union-attr]

GPU = (True, "")
NO_GPU = (False, "the CUDA driver sees no GPU")
ALL_MODULES = {"triton", "torch", "flashinfer", "vllm"}


class Executor:
    """Answers each check with the exit status given for its script, writing its log and report."""

    def __init__(self, codes: dict[str, int]):
        self.codes = codes
        self.argvs: list[list[str]] = []

    def __call__(self, argv: list[str], log: Path, timeout: float) -> int:
        self.argvs.append(argv)
        script = Path(argv[1]).name
        code = self.codes.get(script, 0)
        log.write_text(f"working\n{script} says {'all good' if code == 0 else 'FAIL rms_norm bf16'}\n\n")
        if "--json" in argv:
            Path(argv[argv.index("--json") + 1]).write_text(json.dumps({"script": script, "exit": code}))
        return code


def run(tmp_path: Path, codes: dict[str, int], gpu=GPU, modules=ALL_MODULES, environ=None, only=None, skip=None):
    ex = Executor(codes)
    checks = run_all.select(run_all.CHECKS, only, skip)
    outcomes = run_all.run_checks(checks, tmp_path / "out", gpu, lambda m: m in modules,
                                  {"CUDA_HOME": "/cuda"} if environ is None else environ, ex, "py",
                                  echo=lambda s: None)
    return outcomes, ex


def test_every_check_runs_with_the_gpu_and_packages_and_all_pass(tmp_path: Path) -> None:
    outcomes, ex = run(tmp_path, {})
    assert [o.status for o in outcomes] == ["pass"] * 6
    assert run_all.exit_status(outcomes) == 0
    assert [Path(a[1]).name for a in ex.argvs] == ["triton_kernels.py", "triton_kernels.py", "flashinfer_jit.py",
                                                   "nccl_net_check.py", "vllm_ops.py", "vllm_generate.py"]
    aot = ex.argvs[1]
    assert aot[0] == "py" and aot[2:5] == ["aot", "--target", "cuda:121"]
    assert aot[aot.index("--json") + 1] == str(tmp_path / "out" / "triton-aot.json")
    assert outcomes[1].report == {"script": "triton_kernels.py", "exit": 0}


def test_one_failure_fails_the_run_and_names_the_last_line(tmp_path: Path) -> None:
    outcomes, _ = run(tmp_path, {"vllm_ops.py": 1})
    failed = [o for o in outcomes if o.status == "fail"]
    assert [o.name for o in failed] == ["vllm-ops"]
    assert failed[0].reason == "exit 1: vllm_ops.py says FAIL rms_norm bf16"
    assert run_all.exit_status(outcomes) == 1
    assert run_all.summary(outcomes)[-1] == "5 passed, 1 failed, 0 skipped: FAILED"


def test_without_a_gpu_only_the_ahead_of_time_compile_runs(tmp_path: Path) -> None:
    outcomes, ex = run(tmp_path, {}, gpu=NO_GPU)
    assert {o.name: o.status for o in outcomes if o.status != "skip"} == {"triton-aot": "pass"}
    assert {o.reason for o in outcomes if o.status == "skip"} == {"the CUDA driver sees no GPU"}
    assert len(ex.argvs) == 1 and run_all.exit_status(outcomes) == 0


def test_missing_packages_and_cuda_home_are_skip_reasons(tmp_path: Path) -> None:
    outcomes, _ = run(tmp_path, {}, modules={"triton", "torch", "flashinfer"}, environ={})
    reasons = {o.name: o.reason for o in outcomes if o.status == "skip"}
    assert reasons == {"flashinfer": "CUDA_HOME not set", "vllm-ops": "vllm not installed",
                       "vllm-generate": "vllm not installed"}


def test_nothing_ran_is_its_own_status(tmp_path: Path) -> None:
    outcomes, ex = run(tmp_path, {}, gpu=NO_GPU, modules=set())
    assert ex.argvs == [] and run_all.exit_status(outcomes) == 2
    assert run_all.summary(outcomes)[-1] == "0 passed, 0 failed, 6 skipped: NOTHING RAN"


def test_only_and_skip_select_by_name_and_refuse_unknown_names(tmp_path: Path) -> None:
    outcomes, _ = run(tmp_path, {}, only="triton-run,nccl-net,vllm-ops", skip="vllm-ops")
    assert [o.name for o in outcomes] == ["triton-run", "nccl-net"]
    with pytest.raises(ValueError, match="unknown check.s. trition-run; known: triton-run, triton-aot"):
        run_all.select(run_all.CHECKS, "trition-run", None)


def test_main_exits_2_naming_an_unknown_check(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        run_all.main(["--only", "nccl"])
    assert e.value.code == 2 and "unknown check(s) nccl" in capsys.readouterr().err
