"""One FlashInfer version per lock: constraints for uv, and the refusal of a resolution with a skew."""

from __future__ import annotations

import pytest

from wheelfactory.core.errors import BuildError
from wheelfactory.lock import closure as lockmod
from wheelfactory.lock.one_version import family_constraints, public, refuse_skew
from wheelfactory.pipeline.factory import Factory

from .test_lock_overrides import FakeUv, tiny_wheel


def test_the_release_version_holds_the_other_packages() -> None:
    # the factory built flashinfer-python 0.6.2: cubin and jit-cache are held at 0.6.2
    assert family_constraints([("flashinfer_python", "0.6.2"), ("torch", "2.11.0")]) == [
        "flashinfer-cubin==0.6.2", "flashinfer-jit-cache==0.6.2"]
    # a pin of the cubin fixes the family too; a local version tag is not part of the constraint
    assert family_constraints([("flashinfer-cubin", "0.7.2.post1"), ("flashinfer-jit-cache", "0.7.2.post1+cu130")]) \
        == ["flashinfer-python==0.7.2.post1"]
    assert family_constraints([("torch", "2.11.0")]) == []
    # a package the release overrides is its own decision
    assert family_constraints([("flashinfer-python", "0.6.2")], skip=["flashinfer-cubin"]) == [
        "flashinfer-jit-cache==0.6.2"]


def test_a_release_that_fixes_two_versions_is_refused() -> None:
    with pytest.raises(BuildError, match=r"flashinfer-python 0\.6\.2, flashinfer-cubin 0\.6\.3 in the release"):
        family_constraints([("flashinfer-python", "0.6.2"), ("flashinfer-cubin", "0.6.3")])


def test_a_skewed_resolution_is_refused_naming_packages_and_versions() -> None:
    # flashinfer#4781: flashinfer-python 0.6.2 with flashinfer-cubin 0.6.3 crash-looped vLLM on GB10
    locked = [("vllm", "0.33.0"), ("flashinfer-python", "0.6.2"), ("flashinfer-cubin", "0.6.3"),
              ("flashinfer-jit-cache", "0.6.2+cu130")]
    with pytest.raises(BuildError) as e:
        refuse_skew("r", locked)
    assert e.value.exit_code == 1
    assert ("FlashInfer's packages must share one version, but flashinfer-python 0.6.2, flashinfer-cubin 0.6.3, "
            "flashinfer-jit-cache 0.6.2+cu130") in str(e.value)
    assert "vllm" not in str(e.value)


def test_one_version_passes_local_tags_aside() -> None:
    refuse_skew("r", [("flashinfer-python", "0.6.2"), ("flashinfer-jit-cache", "0.6.2+cu130"),
                      ("flashinfer-cubin", "0.6.2")])
    refuse_skew("r", [("flashinfer-python", "0.6.2")])
    assert public("0.6.2+cu130") == "0.6.2" and public("not a version") == "not a version"


def test_lock_passes_the_constraints_to_uv_and_refuses_a_skewed_result(factory: Factory, monkeypatch) -> None:
    wh = factory.wheelhouse
    wh.root.mkdir(parents=True, exist_ok=True)
    python = tiny_wheel(wh.root, "flashinfer-python", "0.6.2")
    cubin = tiny_wheel(wh.root, "flashinfer-cubin", "0.6.3")
    plan = factory.plan(factory.release("0.15.0-t4"), ["vllm"])
    monkeypatch.setattr(lockmod, "component_wheels", lambda plan, wheelhouse: {"flashinfer": [python]})
    uv = FakeUv([python, cubin])
    with pytest.raises(BuildError, match=r"flashinfer-python 0\.6\.2, flashinfer-cubin 0\.6\.3"):
        lockmod.lock_release(plan, wh, uv, "python3.12", "https://pypi.org/simple", offline=True)
    constraints = uv.files[0]["--constraint"].splitlines()
    assert "flashinfer-cubin==0.6.2" in constraints and "flashinfer-jit-cache==0.6.2" in constraints
    assert not any(line.startswith("flashinfer-python") for line in constraints)


def test_lock_writes_a_lock_whose_flashinfer_packages_agree(factory: Factory, monkeypatch) -> None:
    wh = factory.wheelhouse
    wh.root.mkdir(parents=True, exist_ok=True)
    python = tiny_wheel(wh.root, "flashinfer-python", "0.6.2")
    cubin = tiny_wheel(wh.root, "flashinfer-cubin", "0.6.2")
    plan = factory.plan(factory.release("0.15.0-t4"), ["vllm"])
    monkeypatch.setattr(lockmod, "component_wheels", lambda plan, wheelhouse: {"flashinfer": [python]})
    lock = lockmod.lock_release(plan, wh, FakeUv([python, cubin]), "python3.12", "https://pypi.org/simple",
                                offline=True)
    assert {(p.name, p.version) for p in lock.packages} == {("flashinfer-python", "0.6.2"),
                                                             ("flashinfer-cubin", "0.6.2")}
