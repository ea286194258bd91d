"""One CUDA per lock: constraints from cuda_wheels.toml, and the refusal of a mixed resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from wheelfactory.core.errors import BuildError, InputError
from wheelfactory.lock import closure as lockmod
from wheelfactory.lock.one_cuda import (
    carried_cuda,
    load_cuda_wheels,
    mixed_toolkit,
    refuse_mixed,
    toolkit_constraints,
    tracking_names,
)
from wheelfactory.pipeline.factory import Factory

from .conftest import RECIPES
from .test_lock_overrides import FakeUv, tiny_wheel

TABLE = load_cuda_wheels(RECIPES / "data" / "cuda_wheels.toml")
# measured: a lock of vLLM 0.33.0 from official wheels with cuda = "13.0" and no toolkit pins
MIXED = [("nvidia-cuda-runtime", "13.0.96"), ("nvidia-cuda-nvcc", "13.5.37"), ("nvidia-nvvm", "13.5.37"),
         ("nvidia-cuda-crt", "13.5.37"), ("nvidia-cuda-cccl", "13.3.5"), ("nvidia-cublas", "13.1.0.3"),
         ("torch", "2.14.0")]


def test_constraints_are_every_cuda_wheel_of_the_release_cuda() -> None:
    c130 = toolkit_constraints(TABLE, "13.0")
    assert "nvidia-cuda-nvcc==13.0.88" in c130 and "nvidia-cuda-runtime==13.0.96" in c130
    assert "nvidia-cuda-cccl==13.0.85" in c130 and "nvidia-nvvm==13.0.88" in c130
    assert "nvidia-cublas==13.1.0.3" in c130  # a library pinned too, though its version is its own
    c131 = toolkit_constraints(TABLE, "13.1.0")
    assert "nvidia-cuda-nvcc==13.1.80" in c131 and "nvidia-cuda-cccl==13.1.78" in c131
    assert toolkit_constraints(TABLE, "12.4") == []


def test_tracking_wheels_are_those_versioned_as_their_cuda() -> None:
    names = tracking_names(TABLE)
    assert {"nvidia-cuda-nvcc", "nvidia-nvvm", "nvidia-cuda-crt", "nvidia-cuda-cccl", "nvidia-cuda-runtime",
            "nvidia-cuda-nvrtc", "nvidia-nvjitlink"} <= names
    assert "nvidia-cublas" not in names and "nvidia-cudnn-cu13" not in names


def test_the_measured_mixed_resolution_is_refused_naming_packages_and_versions() -> None:
    assert mixed_toolkit(MIXED, TABLE, "13.0") == [("nvidia-cuda-cccl", "13.3.5"), ("nvidia-cuda-crt", "13.5.37"),
                                                   ("nvidia-cuda-nvcc", "13.5.37"), ("nvidia-nvvm", "13.5.37")]
    with pytest.raises(BuildError) as e:
        refuse_mixed("r", MIXED, TABLE, "13.0")
    assert e.value.exit_code == 1
    msg = str(e.value)
    assert "nvidia-cuda-nvcc 13.5.37" in msg and "nvidia-cuda-cccl 13.3.5" in msg
    assert "beside nvidia-cuda-runtime 13.0.96" in msg and "torch" not in msg
    assert carried_cuda(MIXED, TABLE) is None


def test_one_cuda_passes_and_is_carried() -> None:
    ok = [("nvidia-cuda-runtime", "13.1.80"), ("nvidia-cuda-nvcc", "13.1.80"), ("nvidia-cuda-cccl", "13.1.78"),
          ("nvidia-cublas", "13.2.0.9")]
    refuse_mixed("r", ok, TABLE, "13.1.0")
    assert carried_cuda(ok, TABLE) == "13.1" and carried_cuda([("torch", "2.13.0")], TABLE) is None


def test_lock_passes_the_constraints_to_uv_and_refuses_a_mixed_result(factory: Factory, monkeypatch,
                                                                       tmp_path: Path) -> None:
    wh = factory.wheelhouse
    wh.root.mkdir(parents=True, exist_ok=True)
    vllm = tiny_wheel(wh.root, "vllm", "0.15.0", ("nvidia-cuda-nvcc",))
    runtime = tiny_wheel(wh.root, "nvidia-cuda-runtime", "13.1.80")
    nvcc = tiny_wheel(wh.root, "nvidia-cuda-nvcc", "13.5.37")
    plan = factory.plan(factory.release("0.15.0-t4"), ["vllm"])  # CUDA 13.1
    monkeypatch.setattr(lockmod, "component_wheels", lambda plan, wheelhouse: {"vllm": [vllm]})
    uv = FakeUv([vllm, runtime, nvcc])
    with pytest.raises(BuildError, match=r"mixes CUDA toolkit versions.*nvidia-cuda-nvcc 13\.5\.37"):
        lockmod.lock_release(plan, wh, uv, "python3.12", "https://pypi.org/simple", offline=True, cuda_wheels=TABLE)
    constraints = uv.files[0]["--constraint"].splitlines()
    assert "nvidia-cuda-nvcc==13.1.80" in constraints and "nvidia-cuda-runtime==13.1.80" in constraints
    assert not (wh.locks_dir / "0.15.0-t4.json").exists()  # no lock written


def test_a_cuda_wheel_the_release_overrides_is_not_held_to_the_toolkit_pin(factory: Factory, monkeypatch,
                                                                           tmp_path: Path) -> None:
    """An adopted torch's own cuBLAS ([pins] + [overrides], as tests/releases/ci-dev.toml does): the lock
    gives uv no constraint for it, and keeps every other CUDA wheel's."""
    release = tmp_path / "r.toml"
    release.write_text('extends = "0.15.0-t4"\n[pins]\nnvidia-cublas = "13.2.1.0"\n'
                       '[overrides]\nnvidia-cublas = "the adopted torch requires it"\n')
    wh = factory.wheelhouse
    wh.root.mkdir(parents=True, exist_ok=True)
    vllm = tiny_wheel(wh.root, "vllm", "0.15.0", ())
    cublas = tiny_wheel(wh.root, "nvidia-cublas", "13.2.1.0")
    plan = factory.plan(factory.release(str(release)), ["vllm"])
    monkeypatch.setattr(lockmod, "component_wheels", lambda plan, wheelhouse: {"vllm": [vllm]})
    uv = FakeUv([vllm, cublas])
    lockmod.lock_release(plan, wh, uv, "python3.12", "https://pypi.org/simple", offline=True, cuda_wheels=TABLE)
    constraints = uv.files[0]["--constraint"].splitlines()
    assert not any(c.startswith("nvidia-cublas==") for c in constraints)
    assert "nvidia-cuda-runtime==13.1.80" in constraints


@pytest.mark.parametrize("pin", ["nvidia-cuda-nvcc>=13.0", "nvidia-cuda-nvcc", "==13.0.88", "nvidia-cuda-nvcc==",
                                 "nvidia-cuda-nvcc==13.0==1", "nvidia cuda==13.0.88", 13])
def test_a_pin_without_name_and_version_is_bad_input_naming_file_key_and_value(tmp_path: Path, pin) -> None:
    """A --recipes-dir may replace cuda_wheels.toml: a pin that is not NAME==VERSION is refused where
    the file is read, naming it (was: IndexError, or a wrong constraint, where the pins were split)."""
    data = tmp_path / "cuda_wheels.toml"
    value = f'"{pin}"' if isinstance(pin, str) else str(pin)
    data.write_text(f'["13.0"]\nrequires = ["nvidia-cuda-runtime==13.0.96"]\njit = ["nvidia-nvvm==13.0.88", {value}]\n')
    with pytest.raises(InputError) as e:
        load_cuda_wheels(data)
    assert str(e.value) == (f"{data} [\"13.0\"].jit[1]: {pin!r} is not a pin NAME==VERSION, "
                            "e.g. nvidia-cuda-nvcc==13.0.88")
    # a table made in code is judged the same way where its pins are read
    with pytest.raises(InputError, match=r"^cuda_wheels.toml \[\"13.0\"\].jit\[0\]: "):
        toolkit_constraints({"13.0": {"jit": [pin]}}, "13.0.2")


@pytest.mark.parametrize("text, says", [
    ('"13.0" = "nvidia-cuda-nvcc==13.0.88"\n', "[\"13.0\"]: expected a table of requires = [...] and jit = [...], "
                                                "got 'nvidia-cuda-nvcc==13.0.88'"),
    ('["13.0"]\njit = "nvidia-cuda-nvcc==13.0.88"\n', "[\"13.0\"].jit: expected a list of NAME==VERSION, "
                                                       "got 'nvidia-cuda-nvcc==13.0.88'"),
])
def test_a_cuda_entry_or_pin_list_of_another_shape_is_bad_input(tmp_path: Path, text, says) -> None:
    data = tmp_path / "cuda_wheels.toml"
    data.write_text(text)
    with pytest.raises(InputError) as e:
        load_cuda_wheels(data)
    assert str(e.value) == f"{data} {says}"
