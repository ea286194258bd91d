"""The image checks after a build (Triton ahead-of-time compile, rdma-core load) on a stand-in engine."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from assemble.assembler import RDMA_CHECK, Assembler, Prepared
from assemble.spec import Settings, image_specs
from wheelfactory.pipeline.factory import Factory

from .conftest import RECIPES


class FakeDocker:
    """Answers `run` with a recorded result and remembers the argv."""

    def __init__(self, stdout: str = "", returncode: int = 0, stderr: str = ""):
        self.result = subprocess.CompletedProcess([], returncode, stdout, stderr)
        self.argv: list[list[str]] = []

    def run(self, ref: str, argv: list[str], **kw) -> subprocess.CompletedProcess[str]:
        self.argv.append(list(argv))
        return self.result


def prepared(factory: Factory, triton: str | None, nccl: bool) -> Prepared:
    [spec] = image_specs(factory.release("0.33.0-t5"), RECIPES)
    return Prepared(spec, None, [], Path("x"), Path("c"), {}, Path("l"), triton=triton, nccl=nccl)  # type: ignore[arg-type]


def test_triton_check_runs_the_image_script_against_the_toolkit_ptxas(factory: Factory, tmp_path: Path) -> None:
    ok = {"ok": True, "cubin_sm": "sm_121a", "cubin_ptxas": "13.1.80"}
    docker = FakeDocker("some noise\n" + json.dumps(ok) + "\n")
    asm = Assembler(factory, Settings(), tmp_path, docker)  # type: ignore[arg-type]
    assert asm.check_triton(prepared(factory, None, False)) is None and docker.argv == []
    assert asm.check_triton(prepared(factory, "3.8.0", False)) == ok
    [argv] = docker.argv
    assert argv[:2] == ["python", "/opt/wheelfactory/triton_aot_check.py"]
    assert argv[argv.index("--expect-ptxas") + 1] == "/opt/venv/lib/python3.12/site-packages/nvidia/cu13/bin/ptxas"


def test_triton_check_that_did_not_run_is_a_failure(factory: Factory, tmp_path: Path) -> None:
    no_triton = FakeDocker("", 1, "ModuleNotFoundError: No module named 'triton'")
    asm = Assembler(factory, Settings(), tmp_path, no_triton)  # type: ignore[arg-type]
    result = asm.check_triton(prepared(factory, "3.8.0", False))
    assert result["ok"] is False and "No module named 'triton'" in result["error"]


def test_rdma_check_loads_libibverbs_and_the_mlx5_provider(factory: Factory, tmp_path: Path) -> None:
    assert "libibverbs.so.1" in RDMA_CHECK and "libmlx5.so.1" in RDMA_CHECK
    ok = Assembler(factory, Settings(), tmp_path, FakeDocker())  # type: ignore[arg-type]
    assert ok.check_rdma(prepared(factory, None, True)) is None
    missing = FakeDocker("", 1, "OSError: libibverbs.so.1: cannot open shared object file")
    bad = Assembler(factory, Settings(), tmp_path, missing)  # type: ignore[arg-type]
    assert "libibverbs.so.1" in bad.check_rdma(prepared(factory, None, True))
    assert bad.check_rdma(prepared(factory, None, False)) is None  # no NCCL, no check


def test_triton_check_whose_last_line_is_json_but_no_object_is_a_failure(factory: Factory, tmp_path: Path) -> None:
    """A last line such as `[]`, `null` or `42` (something else printed last) is a failed check naming
    that line, not an AttributeError where the result is read."""
    for line in ("[]", "null", "42", '"ok"'):
        asm = Assembler(factory, Settings(), tmp_path, FakeDocker(f"noise\n{line}\n"))  # type: ignore[arg-type]
        result = asm.check_triton(prepared(factory, "3.8.0", False))
        assert result == {"ok": False, "error": f"the check printed {line} last, not its JSON object (exit 0)"}
